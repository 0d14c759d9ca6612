//! The contract's rules for connectors, seen from the broker: one effect per
//! idempotency key, cached replies with fresh message ids, retryable
//! failures not cached, tombstones, lost first attempts.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::Duration;

use q2c_sim::{EffectKind, LedgerEvent, SimSettings};
use support::{Broker, Workflow, about, assert_no_effect_twice, effects, eventually, replies};

#[tokio::test]
async fn one_key_delivered_twice_takes_effect_once_and_gets_the_same_reply() {
    let broker = Broker::new().await;
    let sim = broker.sim(broker.settings()).await;
    let command = Workflow::new().command("erp.create_order", 1);

    // A redelivery (same message) and a retry (same key, next attempt).
    broker.send(&command).await;
    let first = broker.reply().await;
    broker.send(&command).await;
    let again = broker.reply().await;
    let retry = Workflow::retry(&command);
    broker.send(&retry).await;
    let retried = broker.reply().await;

    first.assert_answers(&command);
    again.assert_answers(&command);
    retried.assert_answers(&retry);
    assert!(first.succeeded());
    assert_eq!(again.envelope.payload, first.envelope.payload);
    assert_eq!(retried.envelope.payload, first.envelope.payload);
    let ids: HashSet<_> = [&first, &again, &retried]
        .iter()
        .map(|reply| reply.envelope.message_id)
        .collect();
    assert_eq!(ids.len(), 3, "every reply has a fresh message id");

    // A reply is recorded once the broker has confirmed it, which may be
    // just after it arrived here.
    let key = &command.idempotency_key;
    eventually("the three replies recorded", || async {
        replies(&sim.ledger(), key).len() == 3
    })
    .await;
    let ledger = sim.ledger();
    assert_eq!(effects(&ledger, key), [EffectKind::OrderCreated]);
    assert_eq!(replies(&ledger, key), [(1, false), (1, true), (2, true)]);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_deliveries_of_one_key_take_effect_once() {
    let broker = Broker::new().await;
    let settings = SimSettings {
        prefetch: 32,
        latency: Duration::from_millis(200),
        ..broker.settings()
    };
    let sim = broker.sim(settings).await;
    let first = Workflow::new().command("payment.collect", 1);
    let mut commands = vec![first.clone()];
    for _ in 1..20 {
        commands.push(Workflow::retry(commands.last().unwrap()));
    }
    for command in &commands {
        broker.send(command).await;
    }
    let answers = broker.replies(commands.len()).await;
    let payment_ids: HashSet<String> = commands
        .iter()
        .map(|command| {
            let reply = Broker::answer(&answers, command);
            reply.assert_answers(command);
            assert!(reply.succeeded());
            reply.envelope.payload["payment_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(payment_ids.len(), 1, "every reply names the same payment");

    let ledger = sim.ledger();
    let key = &first.idempotency_key;
    assert_eq!(effects(&ledger, key), [EffectKind::PaymentCollected]);
    let fresh = replies(&ledger, key)
        .iter()
        .filter(|(_, cached)| !cached)
        .count();
    assert_eq!(fresh, 1, "one reply performed, the rest from the cache");
    // The deliveries overlapped: several were decided before any reply
    // went out (each reply waits 200 ms).
    let before_first_reply = about(&ledger, key)
        .iter()
        .take_while(|entry| !matches!(entry.event, LedgerEvent::Reply { .. }))
        .filter(|entry| matches!(entry.event, LedgerEvent::Delivery { .. }))
        .count();
    assert!(before_first_reply > 1, "deliveries were handled one by one");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_retryable_failure_is_not_cached() {
    let broker = Broker::new().await;
    let settings = SimSettings {
        failure_rate: 0.5,
        // With this seed the ERP connector's first draw fails.
        seed: Some(SEED),
        ..broker.settings()
    };
    let sim = broker.sim(settings).await;
    let workflow = Workflow::new();
    let mut command = workflow.command("erp.create_order", 1);
    let mut outcomes = Vec::new();
    loop {
        broker.send(&command).await;
        let reply = broker.reply().await;
        reply.assert_answers(&command);
        outcomes.push(reply.retryable());
        if reply.succeeded() {
            break;
        }
        assert_eq!(reply.retryable(), Some(true), "{}", reply.reason());
        assert!(outcomes.len() < 40, "never succeeded");
        command = Workflow::retry(&command);
    }
    assert!(outcomes.len() > 1, "the seed should make attempt 1 fail");

    // Settled now: the cache answers whatever the draws say.
    for _ in 0..5 {
        command = Workflow::retry(&command);
        broker.send(&command).await;
        assert!(broker.reply().await.succeeded());
    }
    // Compensations never fail at random.
    let cancel = workflow.command("erp.cancel_order", 1);
    broker.send(&cancel).await;
    assert!(broker.reply().await.succeeded());

    let ledger = sim.ledger();
    let key = &command.idempotency_key;
    assert_eq!(effects(&ledger, key), [EffectKind::OrderCreated]);
    let recorded = replies(&ledger, key);
    let failures = outcomes.len() - 1;
    assert!(
        recorded[..=failures].iter().all(|(_, cached)| !cached),
        "failures and the success that followed were performed, not cached: {recorded:?}"
    );
    assert!(recorded[failures + 1..].iter().all(|(_, cached)| *cached));
    sim.shutdown().await.unwrap();
}

/// A seed under which the ERP connector's first draw is below 0.5 (and the
/// second is not), with rand's `StdRng` as locked.
const SEED: u64 = 3;

#[tokio::test]
async fn a_compensation_first_tombstones_its_command() {
    let broker = Broker::new().await;
    let sim = broker.sim(broker.settings()).await;
    let workflow = Workflow::new();

    let cancel = workflow.command("erp.cancel_order", 1);
    broker.send(&cancel).await;
    let undone = broker.reply().await;
    undone.assert_answers(&cancel);
    assert!(undone.succeeded(), "nothing to undo is a success");

    let late = workflow.command("erp.create_order", 1);
    assert_eq!(
        cancel.undoes.as_deref(),
        Some(late.idempotency_key.as_str())
    );
    broker.send(&late).await;
    let refused = broker.reply().await;
    refused.assert_answers(&late);
    assert_eq!(refused.envelope.message_type, "erp.create_order.failed");
    assert_eq!(refused.retryable(), Some(false));
    assert_eq!(refused.reason(), "compensated before it arrived");

    let retry = Workflow::retry(&late);
    broker.send(&retry).await;
    let cached = broker.reply().await;
    assert_eq!(cached.envelope.payload, refused.envelope.payload);

    let ledger = sim.ledger();
    assert!(effects(&ledger, &late.idempotency_key).is_empty());
    assert!(effects(&ledger, &cancel.idempotency_key).is_empty());
    assert_eq!(
        replies(&ledger, &late.idempotency_key),
        [(1, false), (2, true)]
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lost_first_attempt_is_acked_unanswered_and_the_retry_is_answered() {
    let broker = Broker::new().await;
    let settings = SimSettings {
        ignore_first_attempt: true,
        ..broker.settings()
    };
    let sim = broker.sim(settings).await;
    let command = Workflow::new().command("billing.issue_invoice", 1);
    let key = command.idempotency_key.clone();

    broker.send(&command).await;
    eventually("attempt 1 delivered", || async {
        about(&sim.ledger(), &key)
            .iter()
            .any(|entry| matches!(entry.event, LedgerEvent::Delivery { .. }))
    })
    .await;

    let retry = Workflow::retry(&command);
    broker.send(&retry).await;
    let reply = broker.reply().await;
    reply.assert_answers(&retry);
    assert!(reply.succeeded());
    broker.assert_no_more_replies().await;

    let ledger = sim.ledger();
    assert_eq!(replies(&ledger, &key), [(2, false)]);
    assert_eq!(effects(&ledger, &key), [EffectKind::InvoiceIssued]);
    assert_no_effect_twice(&ledger);

    // Attempt 1 was acked, not left to be redelivered.
    sim.shutdown().await.unwrap();
    let queue = broker.topology.command_queue("billing");
    assert_eq!(broker.depth(&queue).await, (0, 0));
}
