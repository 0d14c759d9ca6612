//! The settings the CLI passes: which connectors run, the ledger file,
//! latency, and refusals of settings that cannot work.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use q2c_sim::{Error, LedgerEvent, SettingsError, Sim, SimSettings, read_ledger};
use serde_json::Value;
use support::{Broker, Workflow, eventually};

#[tokio::test]
async fn without_salesforce_its_commands_stay_queued_for_a_real_connector() {
    let broker = Broker::new().await;
    let settings = broker.settings().without(&["salesforce"]).unwrap();
    let sim = broker.sim(settings).await;
    let workflow = Workflow::new();

    let report = workflow.command("salesforce.report_status", 1);
    broker.send(&report).await;
    let order = workflow.command("erp.create_order", 1);
    broker.send(&order).await;
    let reply = broker.reply().await;
    reply.assert_answers(&order);
    broker.assert_no_more_replies().await;

    let queue = broker.topology.command_queue("salesforce");
    eventually("the report waits in its queue", || async {
        broker.depth(&queue).await == (1, 0)
    })
    .await;
    assert!(
        sim.ledger()
            .iter()
            .all(|entry| entry.connector != "salesforce")
    );
    sim.shutdown().await.unwrap();
    assert_eq!(broker.depth(&queue).await, (1, 0));
}

#[tokio::test]
async fn the_ledger_file_has_a_line_per_delivery_effect_and_reply() {
    let broker = Broker::new().await;
    let path = broker.ledger_path();
    let settings = SimSettings {
        ledger: Some(path.clone()),
        ..broker.settings()
    };
    let sim = broker.sim(settings).await;
    let workflow = Workflow::new();

    let mut report = workflow.command("salesforce.report_status", 1);
    report.payload["outcome"] = "compensated".into();
    let cancel = workflow.command("erp.cancel_order", 1);
    for command in [&report, &cancel] {
        broker.send(command).await;
    }
    broker.replies(2).await;
    // Readable while the simulator runs: both replies are on file.
    eventually("both replies on file", || async {
        read_ledger(&path)
            .unwrap()
            .iter()
            .filter(|entry| matches!(entry.event, LedgerEvent::Reply { .. }))
            .count()
            == 2
    })
    .await;
    sim.shutdown().await.unwrap();

    // 2 deliveries, 1 effect (the cancel had nothing to undo), 2 replies.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{text}");
    for line in &lines {
        chrono::DateTime::parse_from_rfc3339(line["at"].as_str().unwrap()).unwrap();
        for field in [
            "kind",
            "connector",
            "message_id",
            "type",
            "idempotency_key",
            "attempt",
            "workflow_id",
            "step",
            "undoes",
        ] {
            assert!(line.get(field).is_some(), "{field} missing: {line}");
        }
        assert_eq!(line["workflow_id"], workflow.id.to_string());
    }
    let kinds = |kind: &str| lines.iter().filter(|line| line["kind"] == kind).count();
    assert_eq!(
        (kinds("delivery"), kinds("effect"), kinds("reply")),
        (2, 1, 2)
    );
    let effect = lines.iter().find(|line| line["kind"] == "effect").unwrap();
    assert_eq!(effect["effect"], "status_reported");
    assert_eq!(effect["outcome"], "compensated");
    assert_eq!(effect["connector"], "salesforce");
    assert_eq!(effect["undoes"], Value::Null);
    let undo = lines
        .iter()
        .find(|line| line["kind"] == "reply" && line["type"] == "erp.cancel_order")
        .unwrap();
    assert_eq!(undo["reply_type"], "erp.cancel_order.succeeded");
    assert_eq!(undo["retryable"], Value::Null);
    assert_eq!(undo["cached"], false);
    assert_eq!(undo["undoes"], cancel.undoes.clone().unwrap());

    assert_eq!(read_ledger(&path).unwrap().len(), 5);
}

#[tokio::test]
async fn latency_comes_before_every_reply() {
    let broker = Broker::new().await;
    let latency = Duration::from_millis(400);
    let sim = broker
        .sim(SimSettings {
            latency,
            ..broker.settings()
        })
        .await;
    let command = Workflow::new().command("billing.issue_invoice", 1);
    let sent = Instant::now();
    broker.send(&command).await;
    broker.reply().await.assert_answers(&command);
    assert!(
        sent.elapsed() >= latency,
        "replied after {:?}",
        sent.elapsed()
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_before_connecting() {
    let topology = q2c_contract::Topology::new("sim_unused.").unwrap();
    // Nothing listens there: a refusal proves no connection was tried.
    let settings = SimSettings::new("amqp://127.0.0.1:1/%2f", topology);
    let refused = |settings: SimSettings| async {
        match Sim::start(settings).await {
            Err(Error::Settings(error)) => error,
            Err(other) => panic!("refused for the wrong reason: {other}"),
            Ok(_) => panic!("started"),
        }
    };
    let rate = refused(SimSettings {
        failure_rate: 1.5,
        ..settings.clone()
    })
    .await;
    assert_eq!(rate, SettingsError::FailureRate(1.5));
    assert!(rate.to_string().contains("failure_rate"));
    let unknown = refused(SimSettings {
        connectors: vec!["erp".into(), "crm".into()],
        ..settings.clone()
    })
    .await;
    assert!(unknown.to_string().contains("connectors"), "{unknown}");
    assert!(unknown.to_string().contains("crm"), "{unknown}");
    assert_eq!(
        refused(SimSettings {
            prefetch: 0,
            ..settings
        })
        .await,
        SettingsError::Prefetch
    );
}
