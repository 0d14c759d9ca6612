//! Dead letters in the store: what happens when a replayed message comes
//! back while its replay is still being settled, and when two operators
//! act on one letter at once.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use q2c_store::Store;
use q2c_store::dead_letters::{DeadLetter, Discarded, Refusal, Request, State};
use q2c_store::operators::Operator;
use serde_json::json;
use sqlx::PgPool;
use support::t0;

fn letter(reason: &str) -> DeadLetter {
    DeadLetter {
        message_id: Some("m-1".into()),
        reason: reason.into(),
        exchange: "q2c.replies".into(),
        routing_key: "erp.create_order.succeeded".into(),
        headers: json!({"properties": {"message_id": "m-1"}, "redelivered": true}),
        body: b"{}".to_vec(),
    }
}

fn ada() -> Operator {
    Operator {
        name: "ada".into(),
        role: "admin".into(),
    }
}

/// Waits until some session of this database waits for a row lock, or
/// `task` has finished (which it must not have, while the lock is held).
async fn until_blocked<T>(pool: &PgPool, task: &tokio::task::JoinHandle<T>) {
    let start = tokio::time::Instant::now();
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 || task.is_finished() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_message_dead_lettered_again_during_its_replay_reopens_the_letter(pool: PgPool) {
    let store = Store::new(pool.clone());
    let id = store
        .record_dead_letter(&letter("permission denied"), t0())
        .await
        .unwrap()
        .unwrap();
    let replay = store.begin_replay(id).await.unwrap().unwrap();

    // The broker has confirmed the replay, and the consumer already fails
    // the message again, before the letter is marked replayed.
    let consumer = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .record_dead_letter(&letter("deadlock detected"), t0())
                .await
        }
    });
    until_blocked(&pool, &consumer).await;
    assert!(
        !consumer.is_finished(),
        "the consumer's write waits for the replay to settle"
    );
    let operator = ada();
    let request = Request {
        operator: &operator,
        reason: "grant restored",
        at: t0(),
    };
    let replayed = replay.published(&request).await.unwrap();
    assert_eq!(replayed.handling.state(), State::Replayed);

    assert_eq!(consumer.await.unwrap().unwrap(), Some(id), "re-opened");
    let stored = store.dead_letter(id).await.unwrap().unwrap();
    assert_eq!(stored.handling.state(), State::Open);
    assert_eq!(stored.handling.replay_count, 1);
    assert_eq!(stored.letter.reason, "deadlock detected");
    assert_eq!(stored.handling.returned_at, Some(t0()));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_discard_during_a_replay_waits_and_then_finds_it_replayed(pool: PgPool) {
    let store = Store::new(pool.clone());
    let id = store
        .record_dead_letter(&letter("permission denied"), t0())
        .await
        .unwrap()
        .unwrap();
    let replay = store.begin_replay(id).await.unwrap().unwrap();
    let discard = tokio::spawn({
        let store = store.clone();
        async move {
            let operator = ada();
            let request = Request {
                operator: &operator,
                reason: "looks stale",
                at: t0(),
            };
            store.discard_dead_letter(id, &request).await
        }
    });
    until_blocked(&pool, &discard).await;
    assert!(!discard.is_finished(), "the discard waits for the replay");
    let operator = ada();
    let request = Request {
        operator: &operator,
        reason: "grant restored",
        at: t0(),
    };
    replay.published(&request).await.unwrap();

    let answer = discard.await.unwrap().unwrap().unwrap();
    assert!(
        matches!(
            answer,
            Discarded::NotAllowed {
                refusal: Refusal::Replayed,
                ..
            }
        ),
        "{answer:?}"
    );
    let history = store.dead_letter_history(id).await.unwrap();
    let results: Vec<(&str, &str)> = history
        .iter()
        .map(|row| (row.action.as_str(), row.result.as_str()))
        .collect();
    assert_eq!(results, [("replay", "applied"), ("discard", "not_allowed")]);
}
