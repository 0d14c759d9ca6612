//! Bulk actions through the real router: the dry run's answer, the job's
//! life (run, cancel, conflicts), and requests that are refused with the
//! reason. Working through a job is the runtime's, tested with the store
//! and end to end.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use q2c_store::Store;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::*;

use Say::{Declined as No, Ok as Yes};

fn resume_suspended_payments() -> Value {
    json!({
        "action": "resume",
        "reason": "the ERP is back",
        "filter": {"status": "suspended", "step": "collect_payment"},
        "rate_per_second": 2.5,
    })
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_dry_run_lists_exactly_the_workflows_and_the_job_runs_once(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let first = seed(&store, 1, suspending_at_payment(), &[Yes, Yes, No]).await;
    let second = seed(&store, 2, suspending_at_payment(), &[Yes, Yes, No]).await;
    seed(&store, 3, compensating(), &[Yes]).await;

    let planned = post_to(
        &app,
        "/api/v1/bulk-actions",
        &resume_suspended_payments(),
        ADMIN,
    )
    .await;
    assert_eq!(planned.status, StatusCode::CREATED, "{}", planned.body);
    let body = &planned.body;
    assert_eq!(body["status"], "planned");
    assert_eq!(body["action"], "resume");
    assert_eq!(body["actor"], "ada");
    assert_eq!(body["rate_per_second"], 2.5);
    assert_eq!(body["total"], 2);
    assert_eq!(body["progress"]["pending"], 2);
    let items: Vec<(String, i64)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["workflow_id"].as_str().unwrap().to_owned(),
                item["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(items, [(first.to_string(), 4), (second.to_string(), 4)]);

    let id = body["id"].as_i64().unwrap();
    let shown = get(&app, &format!("/api/v1/bulk-actions/{id}"), ADMIN, None).await;
    assert_eq!(shown.body["items"], body["items"]);
    let run = post_to(
        &app,
        &format!("/api/v1/bulk-actions/{id}/run"),
        &json!({}),
        ADMIN,
    )
    .await;
    assert_eq!(run.status, StatusCode::ACCEPTED, "{}", run.body);
    assert_eq!(run.body["status"], "running");
    let again = post_to(
        &app,
        &format!("/api/v1/bulk-actions/{id}/run"),
        &json!({}),
        ADMIN,
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["status"], "running");
    let cancel = post_to(
        &app,
        &format!("/api/v1/bulk-actions/{id}/cancel"),
        &json!({}),
        ADMIN,
    )
    .await;
    assert_eq!(cancel.status, StatusCode::OK);
    assert_eq!(cancel.body["status"], "cancelled");
    let cancel_again = post_to(
        &app,
        &format!("/api/v1/bulk-actions/{id}/cancel"),
        &json!({}),
        ADMIN,
    )
    .await;
    assert_eq!(cancel_again.status, StatusCode::CONFLICT);
    let unknown = get(&app, "/api/v1/bulk-actions/999", ADMIN, None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_dry_run_marks_the_workflows_whose_payment_may_have_been_taken(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let unanswered = [Say::Unanswered; 5];
    let uncertain = seed(
        &store,
        1,
        suspending_at_payment(),
        &[&[Yes, Yes][..], &unanswered].concat(),
    )
    .await;
    let declined = seed(&store, 2, suspending_at_payment(), &[Yes, Yes, No]).await;
    let view = get(&app, &format!("/api/v1/workflows/{uncertain}"), ADMIN, None).await;
    assert_eq!(view.body["status"], "suspended", "{}", view.body);

    let mut new_card = resume_suspended_payments();
    new_card["input"] = json!({"payment_method": "pm_card_visa"});
    let planned = post_to(&app, "/api/v1/bulk-actions", &new_card, ADMIN).await;
    assert_eq!(planned.status, StatusCode::CREATED, "{}", planned.body);
    let marks: Vec<(String, bool)> = planned.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["workflow_id"].as_str().unwrap().to_owned(),
                item["needs_earlier"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        marks,
        [(uncertain.to_string(), true), (declined.to_string(), false)]
    );
    assert_eq!(planned.body["needing_earlier"], 1);

    // The same job saying what became of the earlier attempt keeps it.
    new_card["earlier"] = json!("undo");
    let planned = post_to(&app, "/api/v1/bulk-actions", &new_card, ADMIN).await;
    assert_eq!(planned.status, StatusCode::CREATED, "{}", planned.body);
    assert_eq!(
        planned.body["input"],
        json!({"input": {"payment_method": "pm_card_visa"}, "earlier": "undo"})
    );
    // A plain retry creates no revision: nothing to mark.
    let planned = post_to(
        &app,
        "/api/v1/bulk-actions",
        &resume_suspended_payments(),
        ADMIN,
    )
    .await;
    assert!(
        planned.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["needs_earlier"] == false)
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn bad_bulk_requests_say_what_is_wrong(pool: PgPool) {
    let app = app(pool);
    let with = |change: Value| {
        let mut body = resume_suspended_payments();
        for (name, value) in change.as_object().unwrap() {
            if value.is_null() {
                body.as_object_mut().unwrap().remove(name);
            } else {
                body[name] = value.clone();
            }
        }
        body
    };
    for (body, says) in [
        (with(json!({"filter": {}})), "at least one filter"),
        (with(json!({"filter": null})), "filter"),
        (with(json!({"filter": {"stauts": "suspended"}})), "stauts"),
        (
            with(json!({"filter": {"status": "suspended", "limit": 5}})),
            "not `order`, `cursor` or `limit`",
        ),
        (
            with(json!({"filter": {"status": "stuck"}})),
            "status `stuck`",
        ),
        (
            with(json!({"action": "restart"})),
            "`restart` is not an action",
        ),
        (with(json!({"reason": " "})), "`reason` is required"),
        (
            with(json!({"action": "pause", "input": {"a": 1}})),
            "`input` goes with `resume` only",
        ),
        (
            with(json!({"action": "pause", "earlier": "undo"})),
            "`earlier` goes with `resume` and `skip` only",
        ),
        (
            with(json!({"earlier": "perhaps"})),
            "`earlier`: `perhaps` is not a statement",
        ),
        (with(json!({"rate_per_second": 0})), "rate_per_second"),
        (with(json!({"rate_per_second": 1000})), "at most 100"),
    ] {
        let answer = post_to(&app, "/api/v1/bulk-actions", &body, ADMIN).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.body
        );
        assert!(
            answer.body["detail"].as_str().unwrap().contains(says),
            "{body}: {}",
            answer.body
        );
    }
}
