//! The intake and stream positions against a real database, each test in
//! its own: events admitted once, cancellations, and positions committed
//! with the work of the events they follow.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::TimeDelta;
use q2c_contract::Envelope;
use q2c_core::domain::ids::{IdempotencyKey, WorkflowId};
use q2c_core::domain::quote::{Quote, fixtures};
use q2c_core::saga::{Event, Reply, ReplyResult, Status};
use q2c_store::dead_letters::DeadLetter;
use q2c_store::intake::{Admission, Outcome, Source, StreamPoint};
use q2c_store::positions::{FIRST_START, Position};
use q2c_store::{Error, Store, Trigger};
use serde_json::json;
use sqlx::PgPool;
use support::{definition, t0, workflow};
use uuid::Uuid;

const ACCEPTED: &str = "/event/Q2C_Quote_Accepted__e";
const CANCELLED: &str = "/event/Q2C_Quote_Cancelled__e";

fn quote_id() -> String {
    fixtures::quote().quote_id().as_str().to_owned()
}

fn source<'a>(event_uuid: &'a str, channel: &'a str) -> Source<'a> {
    Source {
        event_uuid,
        channel,
        replay_id: None,
    }
}

fn at<'a>(topic: &'a str, replay_id: &'a [u8], epoch: i64) -> StreamPoint<'a> {
    StreamPoint {
        topic,
        replay_id,
        epoch,
    }
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
    n
}

async fn accept(
    store: &Store,
    event_uuid: &str,
    quote: Quote,
    n: u128,
    point: Option<&StreamPoint<'_>>,
) -> Result<Admission, Error> {
    store
        .admit_quote(
            &source(event_uuid, ACCEPTED),
            definition(),
            quote,
            workflow(n),
            t0(),
            point,
        )
        .await
}

async fn cancel(
    store: &Store,
    event_uuid: &str,
    point: Option<&StreamPoint<'_>>,
) -> Result<Admission, Error> {
    store
        .admit_cancellation(
            &source(event_uuid, CANCELLED),
            &quote_id(),
            Some("customer withdrew"),
            t0(),
            point,
        )
        .await
}

async fn status_of(pool: &PgPool, workflow_id: WorkflowId) -> String {
    let (status,): (String,) = sqlx::query_as("SELECT status FROM workflows WHERE id = $1")
        .bind(workflow_id.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap();
    status
}

/// Answers the only unsent command with success; returns its type.
async fn answer_pending(store: &Store, workflow_id: WorkflowId, n: usize) -> String {
    let pending = store
        .claim_outbox(Uuid::from_u128(99), Duration::from_secs(30), 10, t0())
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
    let reply = Event::ReplyReceived(Reply {
        key: IdempotencyKey::parse(&envelope.idempotency_key).unwrap(),
        attempt: envelope.attempt,
        reply_type: format!("{}.succeeded", envelope.message_type),
        result: ReplyResult::Succeeded { output },
    });
    let trigger = Trigger::Message {
        message_id: format!("reply-{n}"),
    };
    store
        .apply(workflow_id, &reply, &trigger, t0())
        .await
        .unwrap();
    envelope.message_type.clone()
}

/// Waits until another session is blocked on an advisory lock in this
/// test's database (each test has its own), polling briefly.
async fn someone_waits_for_an_advisory_lock(pool: &PgPool) {
    for _ in 0..500 {
        let waiting = count(
            pool,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await;
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nobody waited for the quote's lock");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_streamed_acceptance_commits_its_workflow_and_the_position_together(pool: PgPool) {
    let store = Store::new(pool.clone());
    let (start, epoch) = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    assert_eq!((start, epoch), (Position::Earliest, 0));

    let admitted = accept(
        &store,
        "evt-1",
        fixtures::quote(),
        1,
        Some(&at(ACCEPTED, &[0, 1], epoch)),
    )
    .await
    .unwrap();
    assert_eq!(admitted.outcome, Outcome::Started);
    assert_eq!(admitted.workflow_id, Some(workflow(1)));
    assert!(!admitted.repeated);
    assert_eq!(
        store.position(ACCEPTED).await.unwrap(),
        Some(Position::After(vec![0, 1]))
    );
    assert_eq!(status_of(&pool, workflow(1)).await, "running");
    let (kind, outcome): (String, String) =
        sqlx::query_as("SELECT kind, outcome FROM intake_events WHERE event_uuid = 'evt-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((kind.as_str(), outcome.as_str()), ("accepted", "started"));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn an_operators_move_rolls_back_an_admission_read_before_it(pool: PgPool) {
    let store = Store::new(pool.clone());
    let (_, epoch) = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    // The subscriber is running with `epoch` when an operator moves it.
    store
        .move_position(ACCEPTED, &Position::Latest, "ops-anna", t0())
        .await
        .unwrap();

    let error = accept(
        &store,
        "evt-1",
        fixtures::quote(),
        1,
        Some(&at(ACCEPTED, &[0, 1], epoch)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, Error::PositionMoved { topic } if topic == ACCEPTED),
        "{error}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM workflows").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM intake_events").await, 0);
    assert_eq!(
        store.position(ACCEPTED).await.unwrap(),
        Some(Position::Latest),
        "the operator's move stands"
    );

    // Started again from the operator's position, the same event goes in.
    let (start, epoch) = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    assert_eq!((start, epoch), (Position::Latest, 1));
    let admitted = accept(
        &store,
        "evt-1",
        fixtures::quote(),
        1,
        Some(&at(ACCEPTED, &[0, 1], epoch)),
    )
    .await
    .unwrap();
    assert_eq!(admitted.outcome, Outcome::Started);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_repeated_event_moves_the_position_and_starts_nothing(pool: PgPool) {
    let store = Store::new(pool.clone());
    let (_, epoch) = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    let first = accept(
        &store,
        "evt-1",
        fixtures::quote(),
        1,
        Some(&at(ACCEPTED, &[1], epoch)),
    )
    .await
    .unwrap();
    // The same event, delivered again further on (say it first came in over
    // HTTP, or the stream replays it).
    let again = accept(
        &store,
        "evt-1",
        fixtures::quote(),
        2,
        Some(&at(ACCEPTED, &[2], epoch)),
    )
    .await
    .unwrap();
    assert!(again.repeated);
    assert_eq!(
        (again.outcome, again.workflow_id),
        (first.outcome, first.workflow_id)
    );
    assert_eq!(
        store.position(ACCEPTED).await.unwrap(),
        Some(Position::After(vec![2]))
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM workflows").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 1);

    // A repeat follows the epoch rule too.
    store
        .move_position(ACCEPTED, &Position::Earliest, "ops-ben", t0())
        .await
        .unwrap();
    let moved = accept(
        &store,
        "evt-1",
        fixtures::quote(),
        3,
        Some(&at(ACCEPTED, &[3], epoch)),
    )
    .await
    .unwrap_err();
    assert!(matches!(moved, Error::PositionMoved { .. }), "{moved}");
    assert_eq!(
        store.position(ACCEPTED).await.unwrap(),
        Some(Position::Earliest)
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_cancellation_cancels_the_live_workflow_which_undoes_its_steps(pool: PgPool) {
    let store = Store::new(pool.clone());
    accept(&store, "evt-1", fixtures::quote(), 1, None)
        .await
        .unwrap();
    let (_, epoch) = store
        .subscription_start(CANCELLED, &Position::Latest, t0())
        .await
        .unwrap();

    let cancelled = cancel(&store, "evt-c1", Some(&at(CANCELLED, &[7], epoch)))
        .await
        .unwrap();
    assert_eq!(cancelled.outcome, Outcome::Cancelled);
    assert_eq!(cancelled.workflow_id, Some(workflow(1)));
    assert_eq!(
        store.position(CANCELLED).await.unwrap(),
        Some(Position::After(vec![7]))
    );
    let row: (String, String, Option<Uuid>, Option<String>) = sqlx::query_as(
        "SELECT kind, outcome, workflow_id, reason FROM intake_events WHERE event_uuid = 'evt-c1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "cancelled".to_owned(),
            "cancelled".to_owned(),
            Some(Uuid::from_u128(1)),
            Some("customer withdrew".to_owned())
        )
    );

    // A second cancellation event for the quote changes nothing.
    let twice = cancel(&store, "evt-c2", None).await.unwrap();
    assert_eq!(twice.outcome, Outcome::CancellationRepeated);
    assert_eq!(twice.detail.as_deref(), Some("cancel already requested"));
    // The first event again gets its first answer.
    let repeat = cancel(&store, "evt-c1", None).await.unwrap();
    assert!(repeat.repeated);
    assert_eq!(repeat.outcome, Outcome::Cancelled);

    // The order was being created: once it is, it is cancelled, and
    // Salesforce hears that the quote ended cancelled.
    assert_eq!(status_of(&pool, workflow(1)).await, "running");
    let mut sent = vec![answer_pending(&store, workflow(1), 0).await];
    assert_eq!(status_of(&pool, workflow(1)).await, "compensating");
    sent.push(answer_pending(&store, workflow(1), 1).await);
    sent.push(answer_pending(&store, workflow(1), 2).await);
    assert_eq!(
        sent,
        [
            "erp.create_order",
            "erp.cancel_order",
            "salesforce.report_status"
        ]
    );
    let loaded = store.load(workflow(1)).await.unwrap().unwrap();
    assert_eq!(loaded.saga.status(), Status::Cancelled);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_cancellation_after_the_outcome_changes_nothing(pool: PgPool) {
    let store = Store::new(pool.clone());
    accept(&store, "evt-1", fixtures::quote(), 1, None)
        .await
        .unwrap();
    for n in 0..3 {
        answer_pending(&store, workflow(1), n).await;
    }
    // Paid: the outcome is set and only the report to Salesforce remains.
    let version = store.load(workflow(1)).await.unwrap().unwrap().version;
    let refused = cancel(&store, "evt-c1", None).await.unwrap();
    assert_eq!(refused.outcome, Outcome::CancellationAfterOutcome);
    assert_eq!(refused.workflow_id, Some(workflow(1)));
    let reason = refused.detail.clone().unwrap();
    assert!(reason.contains("completed"), "{reason}");
    assert_eq!(
        store.load(workflow(1)).await.unwrap().unwrap().version,
        version
    );
    let (stored,): (Option<String>,) =
        sqlx::query_as("SELECT detail FROM intake_events WHERE event_uuid = 'evt-c1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, Some(reason));

    answer_pending(&store, workflow(1), 3).await;
    assert_eq!(status_of(&pool, workflow(1)).await, "completed");
    let late = cancel(&store, "evt-c2", None).await.unwrap();
    assert_eq!(late.outcome, Outcome::CancellationAfterOutcome);
    assert_eq!(late.workflow_id, Some(workflow(1)));
    assert_eq!(
        late.detail.as_deref(),
        Some("the workflow had already ended: completed")
    );
    assert_eq!(status_of(&pool, workflow(1)).await, "completed");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_cancellation_before_the_acceptance_keeps_the_quote_from_starting(pool: PgPool) {
    let store = Store::new(pool.clone());
    let early = cancel(&store, "evt-c1", None).await.unwrap();
    assert_eq!(early.outcome, Outcome::CancellationBeforeAcceptance);
    assert_eq!(early.workflow_id, None);

    let late = accept(&store, "evt-1", fixtures::quote(), 1, None)
        .await
        .unwrap();
    assert_eq!(late.outcome, Outcome::QuoteCancelled);
    assert_eq!(late.workflow_id, None);
    assert_eq!(count(&pool, "SELECT count(*) FROM workflows").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 0);

    // Both answers read back with no workflow.
    let again = store.earlier_admission("evt-1").await.unwrap().unwrap();
    assert_eq!(
        (again.outcome, again.workflow_id),
        (Outcome::QuoteCancelled, None)
    );
    assert!(again.repeated);
    let again = store.earlier_admission("evt-c1").await.unwrap().unwrap();
    assert_eq!(
        (again.outcome, again.workflow_id),
        (Outcome::CancellationBeforeAcceptance, None)
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn an_acceptance_waits_for_a_cancellation_of_its_quote_in_progress(pool: PgPool) {
    let store = Store::new(pool.clone());
    // A cancellation of the quote, not yet committed, holding the quote.
    let mut cancelling = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(quote_id())
        .execute(&mut *cancelling)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO intake_events (event_uuid, channel, quote_id, kind, outcome, received_at) \
         VALUES ('evt-c1', $1, $2, 'cancelled', 'cancellation_before_acceptance', $3)",
    )
    .bind(CANCELLED)
    .bind(quote_id())
    .bind(t0())
    .execute(&mut *cancelling)
    .await
    .unwrap();

    let accepting = tokio::spawn({
        let store = store.clone();
        async move { accept(&store, "evt-1", fixtures::quote(), 1, None).await }
    });
    someone_waits_for_an_advisory_lock(&pool).await;
    cancelling.commit().await.unwrap();
    let accepted = accepting.await.unwrap().unwrap();
    assert_eq!(accepted.outcome, Outcome::QuoteCancelled);
    assert_eq!(count(&pool, "SELECT count(*) FROM workflows").await, 0);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_cancellation_waits_for_an_acceptance_of_its_quote_in_progress(pool: PgPool) {
    let store = Store::new(pool.clone());
    // An acceptance of the quote, not yet committed, holding the quote.
    let mut accepting = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(quote_id())
        .execute(&mut *accepting)
        .await
        .unwrap();
    let mut outgoing = store.handoff().outgoing(t0());
    q2c_store::workflows::start_in(
        &mut accepting,
        &mut outgoing,
        workflow(1),
        definition(),
        fixtures::quote(),
        t0(),
    )
    .await
    .unwrap();

    let cancelling = tokio::spawn({
        let store = store.clone();
        async move { cancel(&store, "evt-c1", None).await }
    });
    someone_waits_for_an_advisory_lock(&pool).await;
    accepting.commit().await.unwrap();
    let cancelled = cancelling.await.unwrap().unwrap();
    assert_eq!(cancelled.outcome, Outcome::Cancelled);
    assert_eq!(cancelled.workflow_id, Some(workflow(1)));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn an_invalid_event_is_kept_and_passed_over_in_one_transaction(pool: PgPool) {
    let store = Store::new(pool.clone());
    let (_, epoch) = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    let letter = |message_id: &str| DeadLetter {
        message_id: Some(message_id.to_owned()),
        reason: "Net_Amount__c: not a decimal".into(),
        exchange: "salesforce".into(),
        routing_key: ACCEPTED.into(),
        headers: json!({"schema_id": "abc"}),
        body: vec![0, 1, 2],
    };
    let kept = store
        .record_invalid_event(&letter("evt-1"), t0(), Some(&at(ACCEPTED, &[1], epoch)))
        .await
        .unwrap();
    assert!(kept.is_some());
    assert_eq!(
        store.position(ACCEPTED).await.unwrap(),
        Some(Position::After(vec![1]))
    );
    // Delivered again: kept once, and the position still moves.
    let again = store
        .record_invalid_event(&letter("evt-1"), t0(), Some(&at(ACCEPTED, &[2], epoch)))
        .await
        .unwrap();
    assert_eq!(again, None);
    assert_eq!(
        store.position(ACCEPTED).await.unwrap(),
        Some(Position::After(vec![2]))
    );

    // After an operator's move, neither the letter nor the position is kept.
    store
        .move_position(ACCEPTED, &Position::Latest, "ops-anna", t0())
        .await
        .unwrap();
    let moved = store
        .record_invalid_event(&letter("evt-2"), t0(), Some(&at(ACCEPTED, &[3], epoch)))
        .await
        .unwrap_err();
    assert!(matches!(moved, Error::PositionMoved { .. }), "{moved}");
    assert_eq!(count(&pool, "SELECT count(*) FROM dead_letters").await, 1);
    assert_eq!(
        store.position(ACCEPTED).await.unwrap(),
        Some(Position::Latest)
    );
    let stored = store.dead_letters(10).await.unwrap();
    assert_eq!(stored[0].letter, letter("evt-1"));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_keepalive_advances_the_position_unless_an_operator_moved_it(pool: PgPool) {
    let store = Store::new(pool.clone());
    let (_, epoch) = store
        .subscription_start(ACCEPTED, &Position::Latest, t0())
        .await
        .unwrap();
    let later = t0() + TimeDelta::minutes(5);
    store
        .advance_position(&at(ACCEPTED, &[0, 9], epoch), later)
        .await
        .unwrap();
    assert_eq!(
        store.positions().await.unwrap(),
        [(ACCEPTED.to_owned(), Position::After(vec![0, 9]), later)]
    );

    store
        .move_position(ACCEPTED, &Position::Earliest, "ops-anna", t0())
        .await
        .unwrap();
    let moved = store
        .advance_position(&at(ACCEPTED, &[0, 10], epoch), later)
        .await
        .unwrap_err();
    assert!(
        matches!(&moved, Error::PositionMoved { topic } if topic == ACCEPTED),
        "{moved}"
    );
    assert_eq!(
        store.positions().await.unwrap(),
        [(ACCEPTED.to_owned(), Position::Earliest, t0())]
    );
    // A topic the subscriber never started has nothing to advance.
    let unknown = store
        .advance_position(&at(CANCELLED, &[1], 0), later)
        .await
        .unwrap_err();
    assert!(matches!(unknown, Error::PositionMoved { .. }), "{unknown}");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn the_first_start_is_stored_and_later_starts_resume(pool: PgPool) {
    let store = Store::new(pool.clone());
    let first = store
        .subscription_start(ACCEPTED, &Position::Latest, t0())
        .await
        .unwrap();
    assert_eq!(first, (Position::Latest, 0));
    let moves = store.position_moves(ACCEPTED).await.unwrap();
    assert_eq!(moves.len(), 1);
    assert_eq!(
        (
            moves[0].from.clone(),
            moves[0].to.clone(),
            moves[0].moved_by.as_str()
        ),
        (None, Position::Latest, FIRST_START)
    );

    store
        .advance_position(&at(ACCEPTED, &[4], 0), t0())
        .await
        .unwrap();
    // A later start resumes where the last one stopped; its own first
    // start does not apply.
    let later = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    assert_eq!(later, (Position::After(vec![4]), 0));
    assert_eq!(store.position_moves(ACCEPTED).await.unwrap().len(), 1);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn every_operator_move_bumps_the_epoch(pool: PgPool) {
    let store = Store::new(pool.clone());
    assert_eq!(store.position_epoch(ACCEPTED).await.unwrap(), None);
    store
        .move_position(ACCEPTED, &Position::Latest, "ops-anna", t0())
        .await
        .unwrap();
    let (_, first) = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    assert_eq!(first, 1, "the move that created the row");
    store
        .move_position(ACCEPTED, &Position::After(vec![5]), "ops-ben", t0())
        .await
        .unwrap();
    let (position, second) = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    assert_eq!((position, second), (Position::After(vec![5]), 2));
    assert_eq!(store.position_epoch(ACCEPTED).await.unwrap(), Some(2));

    let stale = store
        .advance_position(&at(ACCEPTED, &[6], first), t0())
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::PositionMoved { .. }), "{stale}");
    store
        .advance_position(&at(ACCEPTED, &[6], second), t0())
        .await
        .unwrap();
    let (_, unchanged) = store
        .subscription_start(ACCEPTED, &Position::Earliest, t0())
        .await
        .unwrap();
    assert_eq!(
        unchanged, second,
        "the subscriber's own writes keep the epoch"
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn one_process_at_a_time_holds_a_topic_and_a_closed_holder_frees_it(pool: PgPool) {
    let store = Store::new(pool);
    let mut first = store.try_lock_topic(ACCEPTED).await.unwrap().unwrap();
    assert!(first.held().await);
    assert!(
        store.try_lock_topic(ACCEPTED).await.unwrap().is_none(),
        "a second holder of the same topic"
    );
    let other_topic = store.try_lock_topic(CANCELLED).await.unwrap();
    assert!(other_topic.is_some(), "topics are locked one by one");

    first.release().await;
    let taken_over = store.try_lock_topic(ACCEPTED).await.unwrap();
    assert!(taken_over.is_some(), "released, so free to take");
    drop(taken_over);
    // Dropping closes the connection; the server frees the lock once it
    // sees the connection end.
    let start = std::time::Instant::now();
    loop {
        if store.try_lock_topic(ACCEPTED).await.unwrap().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a dropped holder's lock stays held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
