//! Every command type gets the reply its sandbox gives, valid against
//! `docs/schemas` and echoing its command as the contract asks.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use q2c_sim::{EffectKind, LedgerEvent};
use support::{Broker, Workflow, effects};

const ACTIONS: &[(&str, Option<&str>)] = &[
    ("erp.create_order", Some("order_id")),
    ("billing.issue_invoice", Some("invoice_id")),
    ("payment.collect", Some("payment_id")),
    ("salesforce.report_status", None),
];
const COMPENSATIONS: &[(&str, EffectKind)] = &[
    ("payment.refund", EffectKind::PaymentRefunded),
    ("billing.void_invoice", EffectKind::InvoiceVoided),
    ("erp.cancel_order", EffectKind::OrderCancelled),
];

#[tokio::test]
async fn every_command_type_succeeds_with_a_valid_reply() {
    let broker = Broker::new().await;
    let sim = broker.sim(broker.settings()).await;
    let workflow = Workflow::new();

    let mut actions = Vec::new();
    for (command_type, _) in ACTIONS {
        let mut command = workflow.command(command_type, 1);
        command.traceparent =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        broker.send(&command).await;
        actions.push(command);
    }
    let replies = broker.replies(actions.len()).await;
    for ((command_type, output), command) in ACTIONS.iter().zip(&actions) {
        let reply = Broker::answer(&replies, command);
        reply.assert_answers(command);
        assert!(reply.succeeded(), "{command_type}: {:?}", reply.envelope);
        match output {
            Some(field) => assert!(reply.envelope.payload[field].is_string(), "{command_type}"),
            None => assert_eq!(reply.envelope.payload, serde_json::json!({})),
        }
    }

    // Compensations after their commands: each undoes what was done.
    let mut compensations = Vec::new();
    for (command_type, _) in COMPENSATIONS {
        let command = workflow.command(command_type, 1);
        broker.send(&command).await;
        compensations.push(command);
    }
    let replies = broker.replies(compensations.len()).await;
    for command in &compensations {
        let reply = Broker::answer(&replies, command);
        reply.assert_answers(command);
        assert!(reply.succeeded(), "{:?}", reply.envelope);
        assert_eq!(reply.envelope.payload, serde_json::json!({}));
    }
    broker.assert_no_more_replies().await;

    let ledger = sim.ledger();
    let expected = [
        EffectKind::OrderCreated,
        EffectKind::InvoiceIssued,
        EffectKind::PaymentCollected,
        EffectKind::StatusReported,
    ];
    for (command, effect) in actions.iter().zip(expected) {
        assert_eq!(effects(&ledger, &command.idempotency_key), [effect]);
    }
    for (command, (_, effect)) in compensations.iter().zip(COMPENSATIONS) {
        assert_eq!(effects(&ledger, &command.idempotency_key), [*effect]);
    }
    let reported = ledger.iter().find_map(|entry| match &entry.event {
        LedgerEvent::Effect {
            effect: EffectKind::StatusReported,
            outcome,
        } => outcome.clone(),
        _ => None,
    });
    assert_eq!(reported.as_deref(), Some("completed"));
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_account_on_credit_hold_gets_no_order() {
    let broker = Broker::new().await;
    let sim = broker.sim(broker.settings()).await;

    let held = Workflow::new();
    let mut command = held.command("erp.create_order", 1);
    command.payload["account_name"] = "Globex Credit Hold Division".into();
    broker.send(&command).await;
    let reply = broker.reply().await;
    reply.assert_answers(&command);
    assert_eq!(reply.envelope.message_type, "erp.create_order.failed");
    assert_eq!(reply.retryable(), Some(false));
    assert_eq!(reply.reason(), "credit hold");

    // Case-sensitive: "credit hold" in lowercase is just a name.
    let lower = Workflow::new();
    let mut fine = lower.command("erp.create_order", 1);
    fine.payload["account_name"] = "The credit hold company".into();
    broker.send(&fine).await;
    let reply = broker.reply().await;
    reply.assert_answers(&fine);
    assert!(reply.succeeded());

    let ledger = sim.ledger();
    assert!(effects(&ledger, &command.idempotency_key).is_empty());
    assert_eq!(
        effects(&ledger, &fine.idempotency_key),
        [EffectKind::OrderCreated]
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_declined_card_and_unknown_methods_are_declined_for_good() {
    let broker = Broker::new().await;
    let sim = broker.sim(broker.settings()).await;

    let mut commands = Vec::new();
    for method in ["pm_card_chargeDeclined", "pm_card_unknown_to_the_sandbox"] {
        let mut command = Workflow::new().command("payment.collect", 1);
        command.payload["payment_method"] = method.into();
        broker.send(&command).await;
        commands.push(command);
    }
    let replies = broker.replies(commands.len()).await;
    let ledger = sim.ledger();
    for command in &commands {
        let reply = Broker::answer(&replies, command);
        reply.assert_answers(command);
        assert_eq!(reply.envelope.message_type, "payment.collect.failed");
        assert_eq!(reply.retryable(), Some(false));
        assert!(reply.reason().contains("declined"), "{}", reply.reason());
        assert!(effects(&ledger, &command.idempotency_key).is_empty());
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_command_type_fails_for_good_and_the_connector_goes_on() {
    let broker = Broker::new().await;
    let sim = broker.sim(broker.settings()).await;

    let mut unknown = Workflow::new().command("erp.create_order", 1);
    unknown.message_type = "erp.teleport_order".into();
    broker.send(&unknown).await;
    let reply = broker.reply().await;
    reply.assert_answers(&unknown);
    assert_eq!(reply.envelope.message_type, "erp.teleport_order.failed");
    assert_eq!(reply.retryable(), Some(false));
    assert_eq!(reply.reason(), "unknown command type");

    let known = Workflow::new().command("erp.create_order", 1);
    broker.send(&known).await;
    assert!(broker.reply().await.succeeded());
    assert!(effects(&sim.ledger(), &unknown.idempotency_key).is_empty());
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_body_that_is_no_envelope_is_dead_lettered() {
    let broker = Broker::new().await;
    let sim = broker.sim(broker.settings()).await;

    let properties = lapin::BasicProperties::default().with_delivery_mode(2);
    broker
        .publish_raw("erp.create_order", b"not json", properties.clone())
        .await;
    let mut newer = serde_json::to_value(Workflow::new().command("erp.create_order", 1)).unwrap();
    newer["schema_version"] = 2.into();
    broker
        .publish_raw(
            "erp.create_order",
            &serde_json::to_vec(&newer).unwrap(),
            properties,
        )
        .await;

    let dead_letters = broker.topology.dead_letter_queue();
    let first = broker.next(&dead_letters).await;
    let second = broker.next(&dead_letters).await;
    assert_eq!(first.data, b"not json");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&second.data).unwrap(),
        newer
    );

    // Neither was answered, and the connector still serves.
    let command = Workflow::new().command("erp.create_order", 1);
    broker.send(&command).await;
    let reply = broker.reply().await;
    reply.assert_answers(&command);
    broker.assert_no_more_replies().await;
    assert!(
        sim.ledger()
            .iter()
            .all(|entry| entry.idempotency_key == command.idempotency_key)
    );
    sim.shutdown().await.unwrap();
}
