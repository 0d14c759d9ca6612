//! Operator actions through the store: one transaction each with the audit
//! row, idempotency keys, the append-only audit table, and what pausing and
//! terminating do to the outbox and the timers.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::TimeDelta;
use q2c_core::domain::quote::fixtures;
use q2c_core::saga::{Action, Request, Status};
use q2c_store::idempotency::Key;
use q2c_store::operators::{ActionRequest, Answer, AuditFilter, Operator, Outcome};
use q2c_store::{Applied, Store, Trigger};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{definition, t0, workflow};
use uuid::Uuid;

fn alice() -> Operator {
    Operator {
        name: "alice".into(),
        role: "operator".into(),
    }
}

fn request(n: u128, request: Request, expected_version: Option<i64>) -> ActionRequest {
    ActionRequest {
        workflow_id: workflow(n),
        request,
        reason: "ERP maintenance window".into(),
        expected_version,
        operator: alice(),
        bulk_job: None,
    }
}

/// Renders an outcome as a status and a small body, as the API would.
fn render(outcome: &Outcome) -> (u16, Value) {
    match outcome {
        Outcome::Applied { after, .. } => (200, json!({"version": after.version})),
        Outcome::NotAllowed { allowed, .. } => (
            409,
            json!({"allowed": allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>()}),
        ),
        Outcome::StaleVersion { current, .. } => (412, json!({"version": current.version})),
        Outcome::Invalid { reason, .. } => (422, json!({"detail": reason})),
        Outcome::UnknownWorkflow => (404, json!({})),
    }
}

async fn act(store: &Store, action: &ActionRequest, key: Option<&Key>) -> Answer {
    store.act(action, key, render, t0()).await.unwrap()
}

fn outcome(answer: Answer) -> Outcome {
    match answer {
        Answer::Now { outcome, .. } => *outcome,
        other => panic!("expected a fresh answer, got {other:?}"),
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
    n
}

async fn started(pool: &PgPool) -> Store {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    store
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn an_action_is_applied_with_its_audit_row_and_history_line(pool: PgPool) {
    let store = started(&pool).await;
    let applied = outcome(act(&store, &request(1, Request::Pause, Some(1)), None).await);
    let Outcome::Applied { before, after, .. } = applied else {
        panic!("{applied:?}")
    };
    assert_eq!((before.version, before.paused), (1, false));
    assert_eq!((after.version, after.paused), (2, true));
    assert_eq!(after.step.as_deref(), Some("create_order"));

    let audit = store.audit(&AuditFilter::default(), 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    let row = &audit[0];
    assert_eq!(
        (row.actor.as_str(), row.role.as_str(), row.action.as_str()),
        ("alice", "operator", "pause")
    );
    assert_eq!(row.reason, "ERP maintenance window");
    assert_eq!(row.result, "applied");
    let (before, after) = (
        row.state_before.as_ref().unwrap(),
        row.state_after.as_ref().unwrap(),
    );
    assert_eq!(before["paused"], false);
    assert_eq!(after["paused"], true);
    assert_eq!(after["version"], 2);

    let history = store.history(*workflow(1).as_uuid()).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.kind, "operator_action");
    assert_eq!(
        last.detail,
        "pause by alice (operator): ERP maintenance window"
    );
    let (paused,): (bool,) = sqlx::query_as("SELECT paused FROM workflows")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(paused, "the column the relay reads is set");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn refused_actions_change_nothing_and_are_audited(pool: PgPool) {
    let store = started(&pool).await;
    let not_allowed = outcome(act(&store, &request(1, Request::Unpause, None), None).await);
    assert_eq!(
        not_allowed,
        Outcome::NotAllowed {
            current: not_allowed_snapshot(&not_allowed),
            allowed: vec![Action::Cancel, Action::Terminate, Action::Pause],
        }
    );
    let stale = outcome(act(&store, &request(1, Request::Pause, Some(7)), None).await);
    assert!(
        matches!(&stale, Outcome::StaleVersion { expected: 7, current } if current.version == 1),
        "{stale:?}"
    );
    let unknown = outcome(act(&store, &request(9, Request::Pause, None), None).await);
    assert_eq!(unknown, Outcome::UnknownWorkflow);

    let (version,): (i64,) = sqlx::query_as("SELECT version FROM workflows")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(version, 1, "nothing changed");
    let results: Vec<String> = store
        .audit(&AuditFilter::default(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.result)
        .collect();
    assert_eq!(results, ["not_allowed", "stale_version"]);
}

fn not_allowed_snapshot(outcome: &Outcome) -> q2c_store::operators::Snapshot {
    match outcome {
        Outcome::NotAllowed { current, .. } => {
            assert_eq!(current.status, "running");
            current.clone()
        }
        other => panic!("{other:?}"),
    }
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_retried_key_gets_the_first_answer_and_a_reused_one_is_refused(pool: PgPool) {
    let store = started(&pool).await;
    let key = Key::new(
        "alice",
        "/api/v1/workflows/1/actions/pause",
        "k-1",
        b"{\"reason\":1}",
    );
    let first = act(&store, &request(1, Request::Pause, None), Some(&key)).await;
    let Answer::Now { status, body, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!((status, body.clone()), (200, json!({"version": 2})));

    // The retry: once more the same answer, and no second effect (a second
    // pause would be refused with 409).
    let again = act(&store, &request(1, Request::Pause, None), Some(&key)).await;
    assert_eq!(again, Answer::Replayed { status, body });
    assert_eq!(count(&pool, "SELECT count(*) FROM audit_log").await, 1);

    let other_body = Key::new("alice", "/api/v1/workflows/1/actions/pause", "k-1", b"{}");
    let reused = act(&store, &request(1, Request::Pause, None), Some(&other_body)).await;
    assert_eq!(reused, Answer::KeyReused);

    // Another caller's key of the same name is its own.
    let bob = Key::new("bob", "/api/v1/workflows/1/actions/pause", "k-1", b"{}");
    let bobs = outcome(act(&store, &request(1, Request::Pause, None), Some(&bob)).await);
    assert!(matches!(bobs, Outcome::NotAllowed { .. }), "{bobs:?}");

    // A day later the key is free again.
    let later = store
        .act(
            &request(1, Request::Unpause, None),
            Some(&other_body),
            render,
            t0() + TimeDelta::hours(25),
        )
        .await
        .unwrap();
    assert!(
        matches!(later, Answer::Now { status: 200, .. }),
        "{later:?}"
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn the_audit_table_refuses_update_delete_and_truncate(pool: PgPool) {
    let store = started(&pool).await;
    act(&store, &request(1, Request::Pause, None), None).await;
    for statement in [
        "UPDATE audit_log SET reason = 'nothing happened'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let error = sqlx::query(statement).execute(&pool).await.unwrap_err();
        assert!(
            error.to_string().contains("audit_log is append-only"),
            "{statement}: {error}"
        );
    }
    let (reason,): (String,) = sqlx::query_as("SELECT reason FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reason, "ERP maintenance window");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_paused_workflows_commands_stay_in_the_outbox_and_its_timers_freeze(pool: PgPool) {
    let store = started(&pool).await;
    let owner = Uuid::from_u128(0x5eed);
    // 10 s in, paused: the 30 s timeout has 20 s left.
    let paused_at = t0() + TimeDelta::seconds(10);
    store
        .act(&request(1, Request::Pause, None), None, render, paused_at)
        .await
        .unwrap();
    let claimed = store
        .claim_outbox(owner, Duration::from_secs(30), 10, paused_at)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "a paused workflow's command stays");
    assert_eq!(store.outbox_backlog().await.unwrap().unsent, 0);
    assert_eq!(store.next_timer_due().await.unwrap(), None);
    let far = t0() + TimeDelta::days(400);
    assert!(store.due_timers(far, 10).await.unwrap().is_empty());
    // A timer seen due just before the pause does not fire.
    let timeout = q2c_core::saga::TimerId {
        kind: q2c_core::saga::TimerKind::StepTimeout,
        step: "create_order".into(),
        revision: 1,
        attempt: 1,
    };
    let fired = store
        .apply(
            workflow(1),
            &q2c_core::saga::Event::TimerFired(timeout.clone()),
            &Trigger::Timer(timeout),
            far,
        )
        .await
        .unwrap();
    assert_eq!(fired, Applied::Duplicate);

    let unpaused_at = t0() + TimeDelta::hours(2);
    store
        .act(
            &request(1, Request::Unpause, None),
            None,
            render,
            unpaused_at,
        )
        .await
        .unwrap();
    assert_eq!(
        store.next_timer_due().await.unwrap(),
        Some(unpaused_at + TimeDelta::seconds(20)),
        "re-armed with the time it had left"
    );
    let claimed = store
        .claim_outbox(owner, Duration::from_secs(30), 10, unpaused_at)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the command leaves once unpaused");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_command_being_published_is_not_withdrawn_and_the_history_says_so(pool: PgPool) {
    let store = started(&pool).await;
    let claimed = store
        .claim_outbox(Uuid::from_u128(0x5eed), Duration::from_secs(30), 10, t0())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let terminated = outcome(act(&store, &request(1, Request::Terminate, None), None).await);
    assert!(
        matches!(terminated, Outcome::Applied { .. }),
        "{terminated:?}"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox").await,
        1,
        "the relay holds it under a live lease"
    );
    let history = store.history(*workflow(1).as_uuid()).await.unwrap();
    assert!(
        history.iter().any(|entry| entry.detail
            == "not withdrawn, being published at this moment, so it may have left: erp.create_order"),
        "{history:?}"
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn terminate_withdraws_unsent_commands_drops_timers_and_frees_the_quote(pool: PgPool) {
    let store = started(&pool).await;
    let terminated = outcome(act(&store, &request(1, Request::Terminate, None), None).await);
    assert!(
        matches!(&terminated, Outcome::Applied { after, .. } if after.status == "terminated"),
        "{terminated:?}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM timers").await, 0);
    let again = store
        .start_workflow(workflow(2), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    assert_eq!(again.status, Status::Running, "the quote is free again");
}
