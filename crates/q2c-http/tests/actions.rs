//! Operator actions through the real router, against workflows seeded in a
//! real database and driven there by real replies: every action in every
//! status, paused and not, with the allowed actions written out by hand;
//! conditional requests; idempotency keys; and the audit export.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use axum::http::{StatusCode, header};
use q2c_core::definition::Definition;
use q2c_store::Store;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::*;
use uuid::Uuid;

use Say::{Declined as No, Ok as Yes, Retryable as Later};

/// A status to seed: its name, the definition and replies that reach it,
/// and the actions it allows, as the table says.
struct Case {
    name: &'static str,
    definition: fn() -> Arc<Definition>,
    script: &'static [Say],
    allowed: &'static [&'static str],
}

const ACTIONS: [&str; 7] = [
    "resume",
    "retry",
    "skip",
    "cancel",
    "terminate",
    "pause",
    "unpause",
];

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        Case { name: "running: command in flight", definition: compensating, script: &[],
               allowed: &["cancel", "terminate", "pause"] },
        Case { name: "running: waiting to retry", definition: compensating, script: &[Later],
               allowed: &["retry", "cancel", "terminate", "pause"] },
        Case { name: "running: notification after the outcome", definition: compensating, script: &[Yes, Yes, Yes],
               allowed: &["terminate", "pause"] },
        Case { name: "compensating: compensation in flight", definition: compensating, script: &[Yes, No],
               allowed: &["terminate", "pause"] },
        Case { name: "compensating: waiting to retry", definition: compensating, script: &[Yes, No, Later],
               allowed: &["retry", "terminate", "pause"] },
        Case { name: "suspended at a step", definition: suspending_at_payment, script: &[Yes, Yes, No],
               allowed: &["resume", "skip", "cancel", "terminate", "pause"] },
        Case { name: "suspended while compensating", definition: compensating, script: &[Yes, No, No],
               allowed: &["resume", "skip", "terminate", "pause"] },
        Case { name: "completed", definition: compensating, script: &[Yes, Yes, Yes, Yes], allowed: &[] },
        Case { name: "compensated", definition: compensating, script: &[Yes, No, Yes, Yes], allowed: &[] },
        Case { name: "failed", definition: compensating, script: &[No, Yes], allowed: &[] },
    ]
}

/// What each action visibly did, checked on the workflow afterwards.
fn assert_effect(case: &str, action: &str, before: &Value, after: &Value) {
    let label = format!("{action} in `{case}`");
    assert!(
        after["version"].as_i64() > before["version"].as_i64(),
        "{label}: version not bumped"
    );
    let last = after["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "operator_action", "{label}");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{action} by otto (operator): on-call repair")),
        "{label}: {last}"
    );
    let history = after["history"].to_string();
    match action {
        "pause" => assert_eq!(after["paused"], true, "{label}"),
        "unpause" => assert_eq!(after["paused"], false, "{label}"),
        "terminate" => assert_eq!(after["status"], "terminated", "{label}"),
        "cancel" => assert!(history.contains("cancel requested"), "{label}"),
        "retry" => assert!(history.contains("retry"), "{label}"),
        "resume" | "skip" => assert_ne!(after["status"], "suspended", "{label}"),
        other => panic!("unexpected action {other}"),
    }
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn every_action_in_every_status_paused_and_not(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let mut n = 0;
    let mut wrong = Vec::new();
    let mut checked = 0;
    for case in cases() {
        for paused in [false, true] {
            let terminal = case.allowed.is_empty();
            if paused && terminal {
                continue;
            }
            let mut allowed: Vec<&str> = case.allowed.to_vec();
            if paused {
                allowed.retain(|action| *action != "pause");
                allowed.push("unpause");
            }
            for action in ACTIONS {
                n += 1;
                let id = seed(&store, n, (case.definition)(), case.script).await;
                if paused {
                    let answer = post(&app, id, "pause", &reason(), &[]).await;
                    assert_eq!(
                        answer.status,
                        StatusCode::OK,
                        "{}: {}",
                        case.name,
                        answer.body
                    );
                }
                let before = detail(&app, id).await;
                let shown: Vec<&str> = before["allowed_actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                let mut sorted_shown = shown.clone();
                sorted_shown.sort_unstable();
                let mut sorted_expected = allowed.clone();
                sorted_expected.sort_unstable();
                assert_eq!(
                    sorted_shown, sorted_expected,
                    "`{}` (paused: {paused}) shows other allowed actions",
                    case.name
                );
                let body = if action == "skip" {
                    json!({"reason": "on-call repair", "output": {"payment_id": "PAY-BY-HAND"}})
                } else {
                    reason()
                };
                let answer = post(&app, id, action, &body, &[]).await;
                let after = detail(&app, id).await;
                checked += 1;
                if allowed.contains(&action) {
                    if answer.status != StatusCode::OK {
                        wrong.push(format!(
                            "{action} in `{}` (paused: {paused}) is allowed but got {} {}",
                            case.name, answer.status, answer.body
                        ));
                        continue;
                    }
                    assert_effect(case.name, action, &before, &after);
                } else {
                    let listed: Vec<&str> = answer.body["allowed_actions"]
                        .as_array()
                        .map(|list| list.iter().map(|a| a.as_str().unwrap()).collect())
                        .unwrap_or_default();
                    let mut listed_sorted = listed.clone();
                    listed_sorted.sort_unstable();
                    if answer.status != StatusCode::CONFLICT
                        || listed_sorted != sorted_expected
                        || answer.body["status"] != before["status"]
                        || answer.body["step"] != before["step"]
                        || after["version"] != before["version"]
                    {
                        wrong.push(format!(
                            "{action} in `{}` (paused: {paused}) must be 409 with the allowed actions \
                             and change nothing; got {} {}",
                            case.name, answer.status, answer.body
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(checked, (7 * 2 + 3) * ACTIONS.len());
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn cancelled_and_terminated_workflows_take_no_action(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    // Cancelled: asked while create_order was in flight, applied when it
    // succeeded, the order cancelled, Salesforce told.
    let cancelled = seed(&store, 1, compensating(), &[]).await;
    assert_eq!(
        post(&app, cancelled, "cancel", &reason(), &[]).await.status,
        StatusCode::OK
    );
    for index in 0..3 {
        answer(&store, cancelled, Yes, &format!("c-{index}"), t0()).await;
    }
    let terminated = seed(&store, 2, compensating(), &[]).await;
    assert_eq!(
        post(&app, terminated, "terminate", &reason(), &[])
            .await
            .status,
        StatusCode::OK
    );
    for (id, status) in [(cancelled, "cancelled"), (terminated, "terminated")] {
        assert_eq!(detail(&app, id).await["status"], status);
        for action in ACTIONS {
            let answer = post(&app, id, action, &reason(), &[]).await;
            assert_eq!(
                answer.status,
                StatusCode::CONFLICT,
                "{action} when {status}"
            );
            assert_eq!(answer.body["allowed_actions"], json!([]));
            assert_eq!(answer.body["status"], status);
        }
    }
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_stale_version_is_refused_and_the_current_one_accepted(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let id = seed(&store, 1, compensating(), &[]).await;
    let etag = get(&app, &format!("/api/v1/workflows/{id}"), OPERATOR, None)
        .await
        .headers[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(etag, "\"1\"");
    let stale = post(&app, id, "pause", &reason(), &[("if-match", "\"0\"")]).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert_eq!(stale.body["version"], 1);
    let fresh = post(&app, id, "pause", &reason(), &[("if-match", &etag)]).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    assert_eq!(fresh.headers[header::ETAG], "\"2\"");
    // The pause moved the version on: the same ETag is stale now.
    let again = post(&app, id, "unpause", &reason(), &[("if-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::PRECONDITION_FAILED);
    let bad = post(&app, id, "unpause", &reason(), &[("if-match", "yesterday")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["detail"].as_str().unwrap().contains("yesterday"));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_repeated_idempotency_key_acts_once_and_another_body_is_refused(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool.clone());
    let id = seed(&store, 1, compensating(), &[]).await;
    let key = [("idempotency-key", "pause-1")];
    let first = post(&app, id, "pause", &reason(), &key).await;
    assert_eq!(first.status, StatusCode::OK);
    // The same request again, with members in another order.
    let again = post(
        &app,
        id,
        "pause",
        &json!({"reason": "on-call repair"}),
        &key,
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "not a 409: the first answer");
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "one effect, one audit row");

    let other = post(
        &app,
        id,
        "pause",
        &json!({"reason": "something else"}),
        &key,
    )
    .await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        other.body["type"]
            .as_str()
            .unwrap()
            .ends_with("/idempotency-key-reused")
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn bad_requests_name_what_is_wrong(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let id = seed(&store, 1, suspending_at_order(), &[No]).await;
    let cases = [
        (
            "pause",
            json!({}),
            StatusCode::BAD_REQUEST,
            "`reason` is required",
        ),
        (
            "pause",
            json!({"reason": "  "}),
            StatusCode::BAD_REQUEST,
            "`reason` is required",
        ),
        (
            "pause",
            json!({"reason": 7}),
            StatusCode::BAD_REQUEST,
            "must be a string",
        ),
        (
            "pause",
            json!({"reason": "x", "input": {}}),
            StatusCode::BAD_REQUEST,
            "`input` is not a member",
        ),
        (
            "resume",
            json!({"reason": "x", "input": [1]}),
            StatusCode::BAD_REQUEST,
            "`input` must be a JSON object",
        ),
        (
            "restart",
            reason(),
            StatusCode::NOT_FOUND,
            "`restart` is not an action",
        ),
        (
            "skip",
            json!({"reason": "x", "output": {"order": "by hand"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "order_id",
        ),
        (
            "resume",
            json!({"reason": "x", "input": {"a": 1}, "earlier": "maybe"}),
            StatusCode::BAD_REQUEST,
            "`earlier`: `maybe` is not a statement",
        ),
        (
            "resume",
            json!({"reason": "x", "earlier": 1}),
            StatusCode::BAD_REQUEST,
            "`earlier` must be a string",
        ),
        (
            "cancel",
            json!({"reason": "x", "earlier": "undo"}),
            StatusCode::BAD_REQUEST,
            "`earlier` is not a member",
        ),
        (
            // The order step was declined: nothing is uncertain.
            "resume",
            json!({"reason": "x", "input": {"a": 1}, "earlier": "not_done"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "`earlier` means nothing here",
        ),
        (
            "resume",
            json!({"reason": "x", "earlier": "undo"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "applies only to a new revision",
        ),
    ];
    for (action, body, status, says) in cases {
        let answer = post(&app, id, action, &body, &[]).await;
        assert_eq!(answer.status, status, "{action} {body}: {}", answer.body);
        assert!(
            answer.body["detail"].as_str().unwrap().contains(says),
            "{action} {body}: {}",
            answer.body
        );
    }
    let unknown = post(&app, Uuid::from_u128(9), "pause", &reason(), &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(detail(&app, id).await["version"], 2, "nothing changed");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn skip_hands_the_operators_output_to_the_next_command(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool.clone());
    let id = seed(&store, 1, suspending_at_order(), &[No]).await;
    let answer = post(
        &app,
        id,
        "skip",
        &json!({"reason": "order ORD-BY-HAND created in the ERP by hand", "output": {"order_id": "ORD-BY-HAND"}}),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["step"], "issue_invoice");
    let (body,): (Value,) = sqlx::query_as(
        "SELECT body FROM outbox WHERE workflow_id = $1 AND message_type = 'billing.issue_invoice'",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(body["payload"]["order_id"], "ORD-BY-HAND");
    let shown = detail(&app, id).await;
    assert_eq!(shown["steps"][0]["status"], "skipped");
    assert_eq!(shown["steps"][0]["output"]["order_id"], "ORD-BY-HAND");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn the_audit_export_names_who_did_what_and_why_as_json_and_csv(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let id = seed(&store, 1, suspending_at_payment(), &[Yes, Yes, No]).await;
    let patch = json!({"reason": "customer gave a new card, \"4242\"", "input": {"payment_method": "pm_card_4242"}});
    assert_eq!(
        post(&app, id, "resume", &patch, &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post(&app, id, "resume", &reason(), &[]).await.status,
        StatusCode::CONFLICT
    );

    let json = get(
        &app,
        &format!("/api/v1/audit?workflow_id={id}"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(json.status, StatusCode::OK, "{}", json.body);
    let items = json.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["actor"], "otto");
    assert_eq!(items[0]["role"], "operator");
    assert_eq!(items[0]["action"], "resume");
    assert_eq!(items[0]["reason"], "customer gave a new card, \"4242\"");
    assert_eq!(items[0]["input"]["input"]["payment_method"], "pm_card_4242");
    assert_eq!(items[0]["state_before"]["status"], "suspended");
    assert_eq!(items[0]["state_after"]["status"], "running");
    assert_eq!(items[0]["result"], "applied");
    assert_eq!(items[1]["result"], "not_allowed");

    let csv = get(&app, "/api/v1/audit", ADMIN, Some("text/csv")).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let lines: Vec<&str> = csv
        .text
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(lines.len(), 3, "{}", csv.text);
    assert!(
        lines[0]
            .starts_with("id,at,actor,role,workflow_id,bulk_job_id,dead_letter_id,action,reason,")
    );
    assert!(
        lines[1].contains(",otto,operator,")
            && lines[1].contains("\"customer gave a new card, \"\"4242\"\"\""),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains(",applied,,suspended,running,collect_payment,collect_payment,"),
        "{}",
        lines[1]
    );

    assert!(
        lines[1].ends_with(",step,step,false,false,4,5,,"),
        "phase, paused, version and outcome before and after: {}",
        lines[1]
    );
    let page = get(&app, "/api/v1/audit?limit=1", ADMIN, None).await;
    let next = page.body["next_after"].as_i64().unwrap();
    assert_eq!(page.headers["q2c-next-after"], next.to_string().as_str());
    let csv_page = get(&app, "/api/v1/audit?limit=1", ADMIN, Some("text/csv")).await;
    assert_eq!(
        csv_page.headers["q2c-next-after"],
        next.to_string().as_str()
    );
    let rest = get(&app, &format!("/api/v1/audit?after={next}"), ADMIN, None).await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["next_after"], Value::Null);

    assert!(rest.headers.get("q2c-next-after").is_none());
    let bad = get(&app, "/api/v1/audit?since=yesterday", ADMIN, None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let zero = get(&app, "/api/v1/audit?limit=0", ADMIN, None).await;
    assert_eq!(zero.status, StatusCode::BAD_REQUEST);
    assert!(zero.body["detail"].as_str().unwrap().contains("limit"));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn the_list_shows_and_filters_paused_workflows(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let paused = seed(&store, 1, compensating(), &[]).await;
    let running = seed(&store, 2, compensating(), &[]).await;
    assert_eq!(
        post(&app, paused, "pause", &reason(), &[]).await.status,
        StatusCode::OK
    );
    let ids = |answer: &Answer| -> Vec<(String, bool)> {
        answer.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                (
                    item["id"].as_str().unwrap().to_owned(),
                    item["paused"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let only_paused = get(&app, "/api/v1/workflows?paused=true", OPERATOR, None).await;
    assert_eq!(ids(&only_paused), [(paused.to_string(), true)]);
    let others = get(&app, "/api/v1/workflows?paused=false", OPERATOR, None).await;
    assert_eq!(ids(&others), [(running.to_string(), false)]);
    let bad = get(&app, "/api/v1/workflows?paused=maybe", OPERATOR, None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
