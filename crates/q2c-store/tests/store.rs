//! The Postgres store against a real database, each test in its own.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::TimeDelta;
use q2c_contract::Envelope;
use q2c_core::domain::ids::IdempotencyKey;
use q2c_core::domain::quote::fixtures;
use q2c_core::saga::{Event, Reply, ReplyResult, Status};
use q2c_store::dead_letters::DeadLetter;
use q2c_store::{Applied, Error, Store, Trigger};
use serde_json::json;
use sqlx::PgPool;
use support::{definition, t0, workflow};
use uuid::Uuid;

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
    n
}

/// The success reply to the only unsent command in the outbox.
async fn answer_pending(store: &Store, owner: Uuid) -> (Event, String) {
    let pending = store
        .claim_outbox(owner, Duration::from_secs(30), 10, t0())
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "one command in flight");
    store.mark_sent(&[pending[0].id], t0()).await.unwrap();
    let envelope: &Envelope = &pending[0].envelope;
    let output = match envelope.message_type.as_str() {
        "erp.create_order" => json!({"order_id": "ORD-1"}),
        "billing.issue_invoice" => json!({"invoice_id": "INV-1"}),
        "payment.collect" => json!({"payment_id": "PAY-1"}),
        _ => json!({}),
    };
    let event = Event::ReplyReceived(Reply {
        key: IdempotencyKey::parse(&envelope.idempotency_key).unwrap(),
        attempt: envelope.attempt,
        reply_type: format!("{}.succeeded", envelope.message_type),
        result: ReplyResult::Succeeded { output },
    });
    (event, envelope.message_type.clone())
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn starting_a_workflow_writes_state_history_outbox_and_timers_together(pool: PgPool) {
    let store = Store::new(pool.clone());
    let started = store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    assert_eq!(started.status, Status::Running);
    assert_eq!(count(&pool, "SELECT count(*) FROM workflows").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await,
        1
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM timers").await, 1);
    assert!(count(&pool, "SELECT count(*) FROM workflow_history").await >= 3);

    let (state, status): (String, String) = sqlx::query_as("SELECT state, status FROM workflows")
        .fetch_one(&pool)
        .await
        .unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(status, "running");
    assert!(
        state["definition"].get("source").is_none(),
        "text lives once, by hash"
    );
    let loaded = store.load(workflow(1)).await.unwrap().unwrap();
    assert_eq!(loaded.saga.definition().source(), definition().source());
    assert_eq!(loaded.version, 1);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_quote_has_one_live_workflow_at_a_time(pool: PgPool) {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    let error = store
        .start_workflow(workflow(2), definition(), fixtures::quote(), t0())
        .await
        .unwrap_err();
    match error {
        Error::QuoteHasLiveWorkflow { workflow_id, .. } => {
            assert_eq!(workflow_id, Uuid::from_u128(1));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM workflows").await, 1);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox").await,
        1,
        "nothing of the refused start remains"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM timers").await, 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT workflow_id) FROM workflow_history"
        )
        .await,
        1
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM workflow_definitions").await,
        1
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn the_same_reply_delivered_twice_makes_one_transition(pool: PgPool) {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    let (reply, _) = answer_pending(&store, Uuid::from_u128(99)).await;
    let trigger = Trigger::Message {
        message_id: "reply-1".into(),
    };
    let first = store
        .apply(workflow(1), &reply, &trigger, t0())
        .await
        .unwrap();
    assert!(
        matches!(
            first,
            Applied::Applied {
                version: 2,
                commands: 1,
                ..
            }
        ),
        "{first:?}"
    );
    let second = store
        .apply(workflow(1), &reply, &trigger, t0())
        .await
        .unwrap();
    assert_eq!(second, Applied::Duplicate);

    // The same reply under another message id is a duplicate by content:
    // the saga ignores it, and the message is still recorded as seen.
    let again = store
        .apply(
            workflow(1),
            &reply,
            &Trigger::Message {
                message_id: "reply-1-bis".into(),
            },
            t0(),
        )
        .await
        .unwrap();
    assert!(matches!(again, Applied::Ignored { .. }), "{again:?}");
    assert_eq!(store.load(workflow(1)).await.unwrap().unwrap().version, 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM inbox").await, 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 2);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_timer_fires_once(pool: PgPool) {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    assert!(store.due_timers(t0(), 10).await.unwrap().is_empty());
    let next = store.next_timer_due().await.unwrap().unwrap();
    assert_eq!(
        next,
        t0() + TimeDelta::seconds(30),
        "create_order times out after 30s"
    );

    let due = store.due_timers(next, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let event = Event::TimerFired(due[0].timer.clone());
    let trigger = Trigger::Timer(due[0].timer.clone());
    let fired = store
        .apply(workflow(1), &event, &trigger, next)
        .await
        .unwrap();
    assert!(
        matches!(
            fired,
            Applied::Applied {
                status: Status::Running,
                ..
            }
        ),
        "{fired:?}"
    );
    let again = store
        .apply(workflow(1), &event, &trigger, next)
        .await
        .unwrap();
    assert_eq!(again, Applied::Duplicate);
    let backoff = store
        .due_timers(next + TimeDelta::minutes(5), 10)
        .await
        .unwrap();
    assert_eq!(backoff.len(), 1);
    assert_eq!(
        backoff[0].timer.kind,
        q2c_core::saga::TimerKind::StepBackoff
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn outbox_rows_are_leased_and_taken_over_when_the_lease_runs_out(pool: PgPool) {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    let lease = Duration::from_secs(10);
    let crashed = Uuid::from_u128(1);
    let survivor = Uuid::from_u128(2);

    let claimed = store.claim_outbox(crashed, lease, 10, t0()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].envelope.message_type, "erp.create_order");
    assert!(
        store
            .claim_outbox(crashed, lease, 10, t0())
            .await
            .unwrap()
            .is_empty(),
        "a row under a live lease is its holder's, even for the holder's next claim"
    );
    assert!(
        store
            .claim_outbox(survivor, lease, 10, t0())
            .await
            .unwrap()
            .is_empty()
    );

    let later = t0() + TimeDelta::seconds(11);
    let taken_over = store
        .claim_outbox(survivor, lease, 10, later)
        .await
        .unwrap();
    assert_eq!(taken_over.len(), 1);
    assert_eq!(taken_over[0].publish_attempts, 2);
    assert_eq!(store.outbox_backlog().await.unwrap().unsent, 1);

    assert_eq!(
        store.mark_sent(&[taken_over[0].id], later).await.unwrap(),
        1
    );
    assert_eq!(store.outbox_backlog().await.unwrap().unsent, 0);
    let much_later = later + TimeDelta::hours(1);
    assert!(
        store
            .claim_outbox(survivor, lease, 10, much_later)
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn rows_released_by_a_stopping_relay_are_claimed_at_once(pool: PgPool) {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    let (stopping, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let lease = Duration::from_secs(30);
    let claimed = store.claim_outbox(stopping, lease, 10, t0()).await.unwrap();
    let ids: Vec<i64> = claimed.iter().map(|row| row.id).collect();
    // Another owner's release changes nothing.
    store.release_leases(other, &ids).await.unwrap();
    assert!(
        store
            .claim_outbox(other, lease, 10, t0())
            .await
            .unwrap()
            .is_empty()
    );
    store.release_leases(stopping, &ids).await.unwrap();
    let taken = store.claim_outbox(other, lease, 10, t0()).await.unwrap();
    assert_eq!(taken.iter().map(|row| row.id).collect::<Vec<_>>(), ids);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_relay_attached_in_process_is_handed_its_commands_leased_to_it(pool: PgPool) {
    let store = Store::new(pool.clone());
    let relay = Uuid::from_u128(7);
    store.handoff().attach(relay, Duration::from_secs(30));
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    let handed = store.handoff().take();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].envelope.message_type, "erp.create_order");
    assert!(store.handoff().take().is_empty(), "handed over once");
    // Leased to the relay: no other relay claims it while the lease runs.
    let other = Uuid::from_u128(8);
    assert!(
        store
            .claim_outbox(other, Duration::from_secs(30), 10, t0())
            .await
            .unwrap()
            .is_empty()
    );
    let (owner,): (Option<Uuid>,) = sqlx::query_as("SELECT lease_owner FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owner, Some(relay));

    // Detached, commands are written unleased for any relay.
    assert!(store.handoff().detach().is_empty());
    let mut second = fixtures::draft();
    second.quote_id = "a0q5e0000000000ZZZ".into();
    let second = q2c_core::domain::quote::Quote::try_from_draft(second).unwrap();
    store
        .start_workflow(workflow(2), definition(), second, t0())
        .await
        .unwrap();
    assert!(store.handoff().take().is_empty());
    let claimed = store
        .claim_outbox(other, Duration::from_secs(30), 10, t0())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_released_row_is_claimed_again_once_its_retry_time_comes(pool: PgPool) {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    let owner = Uuid::from_u128(1);
    let claimed = store
        .claim_outbox(owner, Duration::from_secs(60), 10, t0())
        .await
        .unwrap();
    let retry_after = t0() + TimeDelta::seconds(5);
    store
        .release_outbox(owner, claimed[0].id, "returned: NO_ROUTE", retry_after)
        .await
        .unwrap();
    let early = store
        .claim_outbox(owner, Duration::from_secs(60), 10, t0())
        .await
        .unwrap();
    assert!(early.is_empty(), "not before its retry time");
    let again = store
        .claim_outbox(
            owner,
            Duration::from_secs(60),
            10,
            retry_after + TimeDelta::milliseconds(1),
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    let (error,): (Option<String>,) = sqlx::query_as("SELECT last_error FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(error.as_deref(), Some("returned: NO_ROUTE"));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_whole_saga_runs_through_the_store(pool: PgPool) {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    let mut sent = Vec::new();
    for n in 0..4 {
        let (reply, command) = answer_pending(&store, Uuid::from_u128(7)).await;
        sent.push(command);
        let trigger = Trigger::Message {
            message_id: format!("reply-{n}"),
        };
        store
            .apply(workflow(1), &reply, &trigger, t0())
            .await
            .unwrap();
    }
    assert_eq!(
        sent,
        [
            "erp.create_order",
            "billing.issue_invoice",
            "payment.collect",
            "salesforce.report_status"
        ]
    );
    let loaded = store.load(workflow(1)).await.unwrap().unwrap();
    assert_eq!(loaded.saga.status(), Status::Completed);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM timers").await,
        0,
        "no timer outlives the workflow"
    );
    let (status, outcome): (String, Option<String>) =
        sqlx::query_as("SELECT status, outcome FROM workflows")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), outcome.as_deref()),
        ("completed", Some("completed"))
    );

    // A finished workflow frees its quote for a new one.
    store
        .start_workflow(workflow(2), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn concurrent_replies_to_one_workflow_are_serialized(pool: PgPool) {
    let store = Store::new(pool.clone());
    store
        .start_workflow(workflow(1), definition(), fixtures::quote(), t0())
        .await
        .unwrap();
    let (reply, _) = answer_pending(&store, Uuid::from_u128(7)).await;
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let store = store.clone();
            let reply = reply.clone();
            tokio::spawn(async move {
                let trigger = Trigger::Message {
                    message_id: format!("copy-{n}"),
                };
                store
                    .apply(workflow(1), &reply, &trigger, t0())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), Applied::Applied { .. }) {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "exactly one copy moves the workflow on");
    assert_eq!(store.load(workflow(1)).await.unwrap().unwrap().version, 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 2);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn an_unknown_workflow_is_an_error(pool: PgPool) {
    let store = Store::new(pool);
    let error = store
        .apply(
            workflow(5),
            &Event::CancelRequested,
            &Trigger::Request,
            t0(),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UnknownWorkflow(id) if id == Uuid::from_u128(5)));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn dead_letters_keep_the_message_whole(pool: PgPool) {
    let store = Store::new(pool);
    let letter = DeadLetter {
        message_id: Some("m-1".into()),
        reason: "the body is not a q2c envelope".into(),
        exchange: "q2c.replies".into(),
        routing_key: "erp.create_order.succeeded".into(),
        headers: json!({"content_type": "application/json"}),
        body: b"\x00not json".to_vec(),
    };
    assert!(
        store
            .record_dead_letter(&letter, t0())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.record_dead_letter(&letter, t0()).await.unwrap(),
        None,
        "a redelivered message is kept once"
    );
    let stored = store.dead_letters(10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].letter, letter);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn an_operator_moves_a_position_and_the_move_is_recorded(pool: PgPool) {
    use q2c_store::positions::Position;
    let store = Store::new(pool);
    let topic = "/event/Q2C_Quote_Accepted__e";
    assert_eq!(store.position(topic).await.unwrap(), None);

    let replay = Position::After(vec![0, 0, 0, 0, 0, 0, 0, 42]);
    store
        .move_position(topic, &replay, "ops-anna", t0())
        .await
        .unwrap();
    let moved = store
        .move_position(topic, &Position::Earliest, "ops-ben", t0())
        .await
        .unwrap();
    assert_eq!(moved.from, Some(replay.clone()));
    assert_eq!(
        store.position(topic).await.unwrap(),
        Some(Position::Earliest)
    );

    let moves = store.position_moves(topic).await.unwrap();
    let summary: Vec<(Option<Position>, Position, &str)> = moves
        .iter()
        .map(|change| {
            (
                change.from.clone(),
                change.to.clone(),
                change.moved_by.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (None, replay.clone(), "ops-anna"),
            (Some(replay), Position::Earliest, "ops-ben")
        ]
    );
    assert!(store.position("/event/Other__e").await.unwrap().is_none());
}
