//! Durable execution end to end: the real `q2c serve` binary, real Postgres
//! and RabbitMQ, a test connector keeping a ledger; crashes injected at the
//! four most telling instants, duplicates, poison messages, two processes,
//! and timers that come due while nothing runs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::connector::{Behaviour, Connector};
use support::{World, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_flow_through_every_step_once() {
    let world = World::new().await;
    let connector = Connector::start(&world, Behaviour::default()).await;
    let serve = world.serve(&[]).await;
    for n in 0..10 {
        world.start_workflow(n).await;
    }
    world.all_reach("completed", 10, DEADLINE).await;
    assert_eq!(world.unsent().await, 0);
    let ledger = connector.ledger();
    ledger.assert_no_effect_twice();
    assert_eq!(ledger.effects_of("erp.create_order"), 10);
    assert_eq!(ledger.effects_of("salesforce.report_status"), 10);
    assert!(serve.terminate().await.success(), "a clean exit on SIGTERM");
    connector.stop();
    world.cleanup().await;
}

/// A crash at `point` loses nothing and performs nothing twice: after a
/// restart every workflow completes, the outbox drains, and the ledger shows
/// one key per step and one effect per key.
async fn survives_a_crash_at(point: &str) {
    let world = World::new().await;
    let connector = Connector::start(&world, Behaviour::default()).await;
    let marker = world.directory.path().join("crashed");
    let marker_text = marker.display().to_string();
    let mut crashing = world
        .serve(&[
            ("Q2C_CRASH_AT", point),
            ("Q2C_CRASH_MARKER", &marker_text),
            ("Q2C_OUTBOX_LEASE", "2s"),
        ])
        .await;
    for n in 0..10 {
        world.start_workflow(n).await;
    }
    let status = crashing.exited(DEADLINE).await;
    assert!(!status.success(), "the process crashed ({status})");
    assert!(marker.exists(), "it crashed at the injected point");

    let restarted = world.serve(&[("Q2C_OUTBOX_LEASE", "2s")]).await;
    world.all_reach("completed", 10, DEADLINE).await;
    // Rows published but not marked sent before the crash are published
    // again once their lease runs out, even though they were answered.
    eventually("the outbox to drain", DEADLINE, || async {
        world.unsent().await == 0
    })
    .await;
    let ledger = connector.ledger();
    ledger.assert_no_effect_twice();
    for command in [
        "erp.create_order",
        "billing.issue_invoice",
        "payment.collect",
        "salesforce.report_status",
    ] {
        assert_eq!(ledger.effects_of(command), 10, "{command} once per quote");
    }
    assert!(
        restarted.terminate().await.success(),
        "a clean exit on SIGTERM"
    );
    connector.stop();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_commit_before_publish_loses_nothing() {
    survives_a_crash_at("after_commit_before_publish").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_publish_before_confirm_loses_nothing() {
    survives_a_crash_at("after_publish_before_confirm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_confirm_before_marking_sent_loses_nothing() {
    survives_a_crash_at("after_confirm_before_marking_sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_commit_before_ack_loses_nothing() {
    survives_a_crash_at("after_commit_before_ack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_reply_delivered_twice_makes_one_transition() {
    let world = World::new().await;
    let connector = Connector::start(
        &world,
        Behaviour {
            duplicate_replies: true,
            ..Behaviour::default()
        },
    )
    .await;
    let serve = world.serve(&[]).await;
    for n in 0..5 {
        world.start_workflow(n).await;
    }
    world.all_reach("completed", 5, DEADLINE).await;
    assert_eq!(
        world
            .count("SELECT count(*) FROM workflow_history WHERE kind = 'reply_received'")
            .await,
        20,
        "one applied reply per step"
    );
    eventually("every copy to reach the inbox", DEADLINE, || async {
        world.count("SELECT count(*) FROM inbox").await == 20
    })
    .await;
    connector.ledger().assert_no_effect_twice();
    assert!(serve.terminate().await.success(), "a clean exit on SIGTERM");
    connector.stop();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_next_message_is_processed() {
    let world = World::new().await;
    let connector = Connector::start(&world, Behaviour::default()).await;
    let serve = world.serve(&[]).await;

    let channel = support::connector::channel(&world.amqp_url).await.unwrap();
    let unknown_workflow = serde_json::json!({
        "message_id": uuid::Uuid::now_v7(), "type": "erp.create_order.succeeded",
        "schema_version": 1, "workflow_id": uuid::Uuid::now_v7(), "step": "create_order",
        "attempt": 1, "idempotency_key": "nobody:create_order:r1",
        "correlation_id": uuid::Uuid::now_v7(), "sent_at": "2026-11-27T10:00:00Z",
        "payload": {"order_id": "ORD-0"}
    });
    let mut bad_failure = unknown_workflow.clone();
    bad_failure["type"] = "erp.create_order.failed".into();
    bad_failure["message_id"] = uuid::Uuid::now_v7().to_string().into();
    bad_failure["payload"] = serde_json::json!({"why": "no retryable flag"});
    for (routing_key, body) in [
        ("erp.create_order.succeeded", b"{not json".to_vec()),
        (
            "erp.create_order.succeeded",
            serde_json::to_vec(&unknown_workflow).unwrap(),
        ),
        (
            "erp.create_order.failed",
            serde_json::to_vec(&bad_failure).unwrap(),
        ),
    ] {
        channel
            .basic_publish(
                world.topology.replies_exchange().as_str().into(),
                routing_key.into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    world.start_workflow(1).await;
    world.all_reach("completed", 1, DEADLINE).await;
    eventually("three dead letters", DEADLINE, || async {
        world.count("SELECT count(*) FROM dead_letters").await == 3
    })
    .await;
    let reasons: Vec<(String,)> = sqlx::query_as("SELECT reason FROM dead_letters ORDER BY id")
        .fetch_all(&world.pool)
        .await
        .unwrap();
    let reasons: Vec<&str> = reasons.iter().map(|(reason,)| reason.as_str()).collect();
    for expected in ["not a q2c envelope", "no workflow", "needs `retryable`"] {
        assert!(
            reasons.iter().any(|reason| reason.contains(expected)),
            "no dead letter says `{expected}`: {reasons:?}"
        );
    }
    assert!(serve.terminate().await.success(), "a clean exit on SIGTERM");
    connector.stop();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_on_one_database_complete_every_workflow_once() {
    let world = World::new().await;
    let connector = Connector::start(&world, Behaviour::default()).await;
    let first = world.serve(&[]).await;
    let second = world.serve(&[]).await;
    for n in 0..20 {
        world.start_workflow(n).await;
    }
    world.all_reach("completed", 20, DEADLINE).await;
    assert_eq!(world.unsent().await, 0);
    let ledger = connector.ledger();
    ledger.assert_no_effect_twice();
    assert_eq!(ledger.effects_of("payment.collect"), 20);
    assert!(first.terminate().await.success(), "a clean exit on SIGTERM");
    assert!(
        second.terminate().await.success(),
        "a clean exit on SIGTERM"
    );
    connector.stop();
    world.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_due_while_the_process_is_down_fires_after_restart() {
    let world = World::new().await;
    let connector = Connector::start(
        &world,
        Behaviour {
            ignore_first_attempt_of: vec!["erp.create_order".into()],
            ..Behaviour::default()
        },
    )
    .await;
    let serve = world.serve(&[]).await;
    world.start_workflow(1).await;
    eventually("the first attempt to be delivered", DEADLINE, || async {
        !connector
            .ledger()
            .deliveries_of("erp.create_order")
            .is_empty()
    })
    .await;
    serve.kill().await;

    let due = world
        .store
        .next_timer_due()
        .await
        .unwrap()
        .expect("a timeout is scheduled");
    eventually(
        "the timeout to come due while nothing runs",
        DEADLINE,
        || async { chrono::Utc::now() > due + chrono::TimeDelta::milliseconds(200) },
    )
    .await;
    assert_eq!(
        connector.ledger().deliveries_of("erp.create_order").len(),
        1
    );

    let restarted = world.serve(&[]).await;
    world.all_reach("completed", 1, DEADLINE).await;
    let ledger = connector.ledger();
    let attempts: Vec<u32> = ledger
        .deliveries_of("erp.create_order")
        .iter()
        .map(|delivery| delivery.attempt)
        .collect();
    assert_eq!(attempts, [1, 2], "retried after the restart");
    ledger.assert_no_effect_twice();
    assert!(
        restarted.terminate().await.success(),
        "a clean exit on SIGTERM"
    );
    connector.stop();
    world.cleanup().await;
}
