//! The persisted record: records written by earlier versions load and carry
//! on; names in stored data are pinned, not derived from Rust code; and an
//! instance keeps the definition it started with when the file changes.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use q2c_core::definition::Definition;
use q2c_core::domain::quote::fixtures;
use q2c_core::saga::{
    Action, CompensationStatus, Disposition, Event, Happened, Phase, RECORD_VERSION, RecordError,
    Reply, ReplyResult, Resume, Saga, SagaRecord, Status, StepStatus,
};
use serde_json::{Value, json};
use support::*;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/records/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).expect("fixtures are JSON")
}

fn restore(value: &Value) -> Saga {
    let record: SagaRecord = serde_json::from_value(value.clone()).expect("fixture is a record");
    Saga::restore(record).expect("fixture restores")
}

/// Each fixture round-trips to exactly the stored JSON while the record
/// version it was written with is current.
fn assert_round_trips(value: &Value, saga: &Saga) {
    if value["record_version"] == json!(RECORD_VERSION) {
        let again = serde_json::to_value(saga.record()).expect("records serialize");
        assert_eq!(&again, value, "re-recording changed stored data");
    }
}

#[test]
fn v1_executing_record_resumes_with_its_command_in_flight() {
    let value = fixture("v1-executing");
    assert_eq!(
        value["state"],
        json!({"name": "executing", "step": "create_order", "attempt": 1})
    );
    let mut saga = restore(&value);
    assert_round_trips(&value, &saga);
    assert_eq!(saga.status(), Status::Running);
    let flight = saga.in_flight().expect("a command is in flight");
    assert_eq!(flight.step, "create_order");
    assert_eq!(
        flight.key.as_str(),
        "00000000-0000-0000-0000-000000000001:create_order:r1"
    );

    let decision = saga.handle(
        &Event::ReplyReceived(Reply {
            key: flight.key,
            attempt: 1,
            reply_type: "erp.create_order.succeeded".into(),
            result: ReplyResult::Succeeded {
                output: json!({"order_id": "ORD-9"}),
            },
        }),
        t0(),
    );
    assert_eq!(decision.disposition, Disposition::Applied);
    assert_eq!(
        saga.in_flight().map(|f| f.step),
        Some("issue_invoice".into())
    );
}

#[test]
fn v1_waiting_to_retry_record_keeps_its_attempt_count() {
    let value = fixture("v1-waiting-to-retry");
    assert_eq!(value["state"]["name"], "waiting_to_retry");
    assert_eq!(value["state"]["phase"], "step");
    let saga = restore(&value);
    assert_round_trips(&value, &saga);
    assert_eq!(saga.status(), Status::Running);
    assert_eq!(saga.in_flight(), None);
    let invoice = &saga.steps()[1];
    assert_eq!(invoice.attempts, 1);
    assert!(invoice.possibly_done);
    assert_eq!(saga.steps()[0].status, StepStatus::Succeeded);
}

#[test]
fn v1_suspended_compensation_record_resumes_undoing() {
    let value = fixture("v1-suspended-compensation");
    assert_eq!(
        value["state"],
        json!({
            "name": "suspended",
            "step": "issue_invoice",
            "phase": "compensation",
            "reason": "compensation_failed"
        })
    );
    let mut saga = restore(&value);
    assert_round_trips(&value, &saga);
    assert_eq!(saga.status(), Status::Suspended);
    assert_eq!(
        saga.steps()[1].compensation.status,
        CompensationStatus::Failed
    );

    let decision = saga.handle(&Event::ResumeRequested(Resume::Retry), t0());
    assert_eq!(decision.disposition, Disposition::Applied);
    let flight = saga.in_flight().expect("the compensation is retried");
    assert_eq!(flight.phase, Phase::Compensation);
    assert_eq!(
        flight.key.as_str(),
        "00000000-0000-0000-0000-000000000001:issue_invoice:r1:compensate"
    );
    assert_eq!(flight.attempt, 2, "attempt numbers are never reused");
}

#[test]
fn v1_completed_record_is_terminal() {
    let value = fixture("v1-completed");
    assert_eq!(value["state"], json!({"name": "completed"}));
    assert_eq!(value["outcome"], "completed");
    let mut saga = restore(&value);
    assert_round_trips(&value, &saga);
    assert_eq!(saga.status(), Status::Completed);
    let decision = saga.handle(&Event::CancelRequested, t0());
    assert!(matches!(decision.disposition, Disposition::Refused { .. }));
}

#[test]
fn v1_records_read_as_not_paused_with_no_earlier_revisions_and_are_rewritten_as_current() {
    for name in [
        "v1-executing",
        "v1-waiting-to-retry",
        "v1-suspended-compensation",
        "v1-completed",
    ] {
        let value = fixture(name);
        assert_eq!(value["record_version"], 1, "{name}");
        assert!(value.get("paused").is_none(), "{name} predates pausing");
        let saga = restore(&value);
        assert!(!saga.paused(), "{name}");
        assert!(saga.held().is_empty(), "{name}");
        assert!(
            saga.steps()
                .iter()
                .all(|step| step.earlier_revisions.is_empty()),
            "{name}"
        );
        let rewritten = serde_json::to_value(saga.record()).expect("records serialize");
        assert_eq!(rewritten["record_version"], RECORD_VERSION, "{name}");
        assert_eq!(rewritten["paused"], false, "{name}");
        assert_eq!(rewritten["held"], json!([]), "{name}");
    }
}

#[test]
fn v2_paused_record_applies_its_held_reply_on_unpause() {
    let value = fixture("v2-paused-holding-a-reply");
    assert_eq!(value["paused"], true);
    assert_eq!(value["held"][0]["kind"], "reply");
    let mut saga = restore(&value);
    assert_round_trips(&value, &saga);
    assert!(saga.paused());
    assert_eq!(saga.status(), Status::Running);
    let payment = &saga.steps()[2];
    assert_eq!(payment.revision, 2);
    assert_eq!(
        payment.input.as_ref().unwrap()["payment_method"],
        "card-4242"
    );
    assert_eq!(payment.earlier_revisions.len(), 1);
    assert_eq!(
        payment.earlier_revisions[0].input.as_ref().unwrap()["payment_method"],
        "pm_card_visa"
    );
    assert_eq!(
        saga.allowed_actions(),
        [Action::Cancel, Action::Terminate, Action::Unpause]
    );

    let decision = saga.handle(&Event::UnpauseRequested, t0());
    assert_eq!(decision.disposition, Disposition::Applied);
    assert!(!saga.paused());
    assert!(saga.held().is_empty());
    assert_eq!(saga.steps()[2].status, StepStatus::Succeeded);
    assert_eq!(
        saga.in_flight().map(|flight| flight.step),
        Some("report_status".into()),
        "the held payment success moved the workflow on"
    );
}

#[test]
fn v2_earlier_revisions_read_as_possibly_done_if_they_sent_anything() {
    let mut value = fixture("v2-paused-holding-a-reply");
    let earlier = &value["steps"][2]["earlier_revisions"][0];
    assert_eq!(earlier["attempts"], 1);
    assert!(earlier.get("happened").is_none(), "v2 predates it");
    let saga = restore(&value);
    let earlier = &saga.steps()[2].earlier_revisions[0];
    assert_eq!(earlier.happened, Happened::PossiblyDone);
    assert_eq!(earlier.compensation.status, CompensationStatus::NotStarted);
    assert_eq!(earlier.output, None);

    value["steps"][2]["earlier_revisions"][0]["attempts"] = json!(0);
    let saga = restore(&value);
    assert_eq!(
        saga.steps()[2].earlier_revisions[0].happened,
        Happened::NotDone,
        "a revision that sent nothing did nothing"
    );
    let rewritten = serde_json::to_value(saga.record()).expect("records serialize");
    assert_eq!(
        rewritten["steps"][2]["earlier_revisions"][0]["happened"],
        "not_done"
    );
}

#[test]
fn v2_terminated_record_is_terminal_and_takes_no_action() {
    let value = fixture("v2-terminated");
    assert_eq!(value["state"], json!({"name": "terminated"}));
    let mut saga = restore(&value);
    assert_round_trips(&value, &saga);
    assert_eq!(saga.status(), Status::Terminated);
    assert!(saga.status().is_terminal());
    assert!(saga.allowed_actions().is_empty());
    let decision = saga.handle(&Event::UnpauseRequested, t0());
    assert!(matches!(decision.disposition, Disposition::Refused { .. }));
}

#[test]
fn a_newer_record_version_is_refused() {
    let mut value = fixture("v1-executing");
    value["record_version"] = json!(RECORD_VERSION + 1);
    let record: SagaRecord = serde_json::from_value(value).expect("still a record");
    let error = Saga::restore(record).expect_err("newer versions are refused");
    assert!(
        matches!(error, RecordError::UnsupportedVersion { .. }),
        "{error}"
    );
}

#[test]
fn an_altered_definition_text_is_detected() {
    let mut value = fixture("v1-executing");
    let source = value["definition"]["source"]
        .as_str()
        .expect("source is text")
        .replace("timeout = \"30s\"", "timeout = \"31s\"");
    value["definition"]["source"] = json!(source);
    let record: SagaRecord = serde_json::from_value(value).expect("still a record");
    let error = Saga::restore(record).expect_err("hash mismatch");
    assert!(matches!(error, RecordError::HashMismatch { .. }), "{error}");
    assert!(error.to_string().contains("quote-to-cash"), "{error}");
}

#[test]
fn a_state_naming_an_unknown_step_is_refused() {
    let mut value = fixture("v1-executing");
    value["state"]["step"] = json!("ship_goods");
    let record: SagaRecord = serde_json::from_value(value).expect("still a record");
    let error = Saga::restore(record).expect_err("unknown step");
    assert!(error.to_string().contains("ship_goods"), "{error}");
}

#[test]
fn an_unknown_state_name_does_not_deserialize() {
    let mut value = fixture("v1-executing");
    value["state"]["name"] = json!("Executing");
    let error = serde_json::from_value::<SagaRecord>(value).expect_err("names are exact");
    assert!(error.to_string().contains("Executing"), "{error}");
}

#[test]
fn an_invalid_quote_in_a_record_does_not_deserialize() {
    let mut value = fixture("v1-executing");
    value["quote"]["net_amount"] = json!("11300.01");
    let error = serde_json::from_value::<SagaRecord>(value).expect_err("quotes are re-validated");
    assert!(error.to_string().contains("net_amount"), "{error}");
}

/// A definition file edited while an instance is in flight changes only the
/// instances started afterwards.
#[test]
fn editing_the_definition_file_mid_flight_keeps_the_instance_on_its_path() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("quote-to-cash.toml");
    let original = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/quote-to-cash.toml"
    ))
    .expect("shipped definition");
    std::fs::write(&path, &original).expect("write definition");
    let load = || {
        let text = std::fs::read_to_string(&path).expect("read definition");
        Arc::new(Definition::parse(&path.display().to_string(), &text).expect("valid"))
    };

    let (mut in_flight, _) = Saga::start(workflow_id(3), load(), fixtures::quote(), t0());
    answer_in_flight(&mut in_flight);
    let stored = serde_json::to_string(&in_flight.record()).expect("serialize");

    // Someone drops the invoice step and renames the payment command.
    let edited = drop_step(&original, "issue_invoice").replace("payment.collect", "payment.charge");
    std::fs::write(&path, &edited).expect("edit definition");
    assert!(load().step_index("issue_invoice").is_none());
    assert_ne!(load().hash(), in_flight.definition().hash());

    let mut resumed =
        Saga::restore(serde_json::from_str(&stored).expect("record")).expect("restore");
    assert_eq!(
        walk_to_the_end(&mut resumed),
        [
            "billing.issue_invoice",
            "payment.collect",
            "salesforce.report_status"
        ]
    );
    assert_eq!(resumed.status(), Status::Completed);

    let (mut started_later, _) = Saga::start(workflow_id(4), load(), fixtures::quote(), t0());
    assert_eq!(
        walk_to_the_end(&mut started_later),
        [
            "erp.create_order",
            "payment.charge",
            "salesforce.report_status"
        ]
    );
}

/// Answers the command in flight with a success, as its connector would;
/// returns the command type answered.
fn answer_in_flight(saga: &mut Saga) -> Option<String> {
    let flight = saga.in_flight()?;
    let index = saga.definition().step_index(&flight.step)?;
    let spec = &saga.definition().steps()[index];
    let command = match flight.phase {
        Phase::Step => spec.command.clone(),
        Phase::Compensation => spec.compensation.clone()?,
    };
    let decision = saga.handle(
        &Event::ReplyReceived(Reply {
            key: flight.key,
            attempt: flight.attempt,
            reply_type: command.success_reply.clone(),
            result: ReplyResult::Succeeded {
                output: output_for(&command.command_type.replace("charge", "collect")),
            },
        }),
        t0(),
    );
    assert_eq!(decision.disposition, Disposition::Applied);
    Some(command.command_type)
}

fn walk_to_the_end(saga: &mut Saga) -> Vec<String> {
    std::iter::from_fn(|| answer_in_flight(saga))
        .take(20)
        .collect()
}

/// Removes one `[[steps]]` block from definition text, and the references
/// to its output.
fn drop_step(text: &str, name: &str) -> String {
    let marker = format!("name = \"{name}\"");
    text.split("[[steps]]")
        .filter(|block| !block.contains(&marker))
        .collect::<Vec<_>>()
        .join("[[steps]]")
        .lines()
        .filter(|line| !line.contains(&format!("steps.{name}.output")))
        .map(|line| format!("{line}\n"))
        .collect()
}
