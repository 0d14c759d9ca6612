//! What a notification learns of how the money flow ended: the inputs
//! `workflow.outcome`, `workflow.failure_reason` and `workflow.outcome_at`
//! as the saga builds them for every outcome, and kept unchanged on every
//! later attempt of the same command.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use q2c_core::definition::Definition;
use q2c_core::saga::{
    Disposition, Event, Outcome, ReplyResult, Resume, Saga, SagaRecord, Status, TimerKind,
};
use serde_json::{Value, json};
use support::*;

/// A flow whose `charge` step suspends on failure, with two notifications:
/// the first may know when the outcome was set, the second only why.
const SUSPENDING: &str = r#"
name = "suspending"

[[steps]]
name = "reserve"
command = "stock.reserve"
timeout = "10s"
retry = { max_attempts = 2, initial_backoff = "1s", max_backoff = "1s" }
on_failure = "compensate"
output = { reservation_id = "string" }
compensation = { command = "stock.release", input = { id = "steps.reserve.output.reservation_id?" } }

[[steps]]
name = "charge"
command = "card.charge"
timeout = "15s"
retry = { max_attempts = 2, initial_backoff = "2s", max_backoff = "2s" }
on_failure = "suspend"
output = { charge_id = "string" }

[[steps]]
name = "notify"
kind = "notification"
command = "crm.notify"
timeout = "30s"
retry = { max_attempts = 2, initial_backoff = "5s", max_backoff = "5s" }
input = { outcome = "workflow.outcome", why = "workflow.failure_reason", at = "workflow.outcome_at" }

[[steps]]
name = "archive"
kind = "notification"
command = "crm.archive"
timeout = "30s"
retry = { max_attempts = 2, initial_backoff = "5s", max_backoff = "5s" }
input = { why = "workflow.failure_reason" }
"#;

fn suspending() -> Arc<Definition> {
    definition(SUSPENDING)
}

/// `t0` plus a number of microseconds, so times carry sub-millisecond
/// digits that the payload must drop.
fn at(micros: i64) -> DateTime<Utc> {
    t0() + TimeDelta::microseconds(micros)
}

/// Answers the command in flight with a failure for good, in the
/// connector's words.
fn refuse(driver: &mut Driver, reason: &str) {
    let command = driver.last_command().clone();
    let decision = driver.handle(reply(
        command.idempotency_key.clone(),
        command.attempt,
        &format!("{}.failed", command.command_type),
        ReplyResult::Failed {
            retryable: false,
            reason: reason.to_owned(),
        },
    ));
    assert_eq!(decision.disposition, Disposition::Applied);
}

fn applied(driver: &mut Driver, event: Event) {
    let decision = driver.handle(event);
    assert_eq!(decision.disposition, Disposition::Applied, "{decision:?}");
}

/// The payload of every `command_type` command sent, in order.
fn payloads(driver: &Driver, command_type: &str) -> Vec<Value> {
    driver
        .commands
        .iter()
        .filter(|command| command.command_type == command_type)
        .map(|command| command.input.clone())
        .collect()
}

/// The one status report sent, with what the tests compare.
fn report(driver: &Driver) -> Value {
    let reports = payloads(driver, "salesforce.report_status");
    assert_eq!(reports.len(), 1, "one report: {reports:?}");
    let report = &reports[0];
    json!({
        "outcome": report["outcome"],
        "failure_reason": report["failure_reason"],
        "outcome_at": report["outcome_at"],
    })
}

// ---- each outcome, through the shipped definition ---------------------------

#[test]
fn a_completed_flow_reports_no_reason_and_the_time_of_its_last_success() {
    let mut driver = Driver::start(quote_to_cash());
    driver.succeed_current();
    driver.succeed_current();
    driver.now = at(61_234_567);
    driver.succeed_current();
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
    assert_eq!(
        report(&driver),
        json!({
            "outcome": "completed",
            "failure_reason": null,
            "outcome_at": "2026-11-27T10:01:01.234Z"
        })
    );
    // The whole payload, as the contract lists it.
    let payload = &payloads(&driver, "salesforce.report_status")[0];
    let fields: Vec<&str> = payload
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "failure_reason",
            "invoice_id",
            "opportunity_id",
            "order_id",
            "outcome",
            "outcome_at",
            "payment_id",
            "quote_id",
            "quote_number",
            "workflow_id"
        ]
    );
}

#[test]
fn a_flow_refused_at_its_first_step_fails_with_that_reason() {
    let mut driver = Driver::start(quote_to_cash());
    driver.now = at(2_500);
    refuse(&mut driver, "credit hold");
    assert_eq!(driver.saga.outcome(), Some(Outcome::Failed));
    assert_eq!(
        report(&driver),
        json!({
            "outcome": "failed",
            "failure_reason": "create_order: credit hold",
            "outcome_at": "2026-11-27T10:00:00.002Z"
        })
    );
}

#[test]
fn a_compensated_flow_reports_the_failure_and_the_time_of_the_last_undo() {
    let mut driver = Driver::start(quote_to_cash());
    driver.succeed_current();
    driver.succeed_current();
    driver.now = at(5_000_000);
    refuse(&mut driver, "card declined: generic_decline");
    assert_eq!(driver.saga.status(), Status::Compensating);
    driver.now = at(6_000_000);
    driver.succeed_current();
    driver.now = at(7_999_999);
    driver.succeed_current();
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
    assert_eq!(
        report(&driver),
        json!({
            "outcome": "compensated",
            "failure_reason": "collect_payment: card declined: generic_decline",
            "outcome_at": "2026-11-27T10:00:07.999Z"
        })
    );
}

#[test]
fn a_step_out_of_attempts_reports_what_the_saga_wrote_when_it_gave_up() {
    // Refused retryably five times: nothing took effect, nothing to undo.
    let mut driver = Driver::start(quote_to_cash());
    for _ in 1..5 {
        driver.fail(true);
        driver.fire(TimerKind::StepBackoff);
    }
    driver.fail(true);
    assert_eq!(
        report(&driver)["failure_reason"],
        "create_order: gave up after 5 attempts: try again"
    );
    assert_eq!(driver.saga.outcome(), Some(Outcome::Failed));

    // Unanswered five times: the payment may have been taken, so it is
    // refunded along with the rest.
    let mut driver = Driver::start(quote_to_cash());
    driver.succeed_current();
    driver.succeed_current();
    for _ in 1..5 {
        driver.fire(TimerKind::StepTimeout);
        driver.fire(TimerKind::StepBackoff);
    }
    driver.fire(TimerKind::StepTimeout);
    for _ in 0..3 {
        driver.succeed_current();
    }
    assert_eq!(
        driver.sent_types()[7..],
        [
            "payment.refund",
            "billing.void_invoice",
            "erp.cancel_order",
            "salesforce.report_status"
        ]
    );
    let expected_at = driver.now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    assert_eq!(
        report(&driver),
        json!({
            "outcome": "compensated",
            "failure_reason": "collect_payment: gave up after 5 attempts: attempt 5 timed out after 2m",
            "outcome_at": expected_at
        })
    );
}

#[test]
fn a_compensation_that_failed_decides_nothing_and_an_operator_skip_ends_the_flow() {
    let mut driver = Driver::start(quote_to_cash());
    driver.succeed_current();
    driver.succeed_current();
    refuse(&mut driver, "card declined: generic_decline");
    driver.succeed_current();
    refuse(&mut driver, "order already shipped");
    assert_eq!(driver.saga.status(), Status::Suspended);
    driver.now = at(3_600_000_001);
    applied(
        &mut driver,
        Event::ResumeRequested(Resume::Skip {
            output: json!({}),
            earlier: None,
        }),
    );
    assert_eq!(
        report(&driver),
        json!({
            "outcome": "compensated",
            "failure_reason": "collect_payment: card declined: generic_decline",
            "outcome_at": "2026-11-27T11:00:00.000Z"
        })
    );
}

#[test]
fn a_cancelled_flow_reports_the_request_and_ignores_errors_that_decided_nothing() {
    // Cancelled while `issue_invoice` waited to retry: its retryable error
    // is not why the flow stopped.
    let mut driver = Driver::start(quote_to_cash());
    driver.succeed_current();
    driver.fail(true);
    applied(&mut driver, Event::CancelRequested);
    driver.now = at(42_000);
    driver.succeed_current();
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
    assert_eq!(
        report(&driver),
        json!({
            "outcome": "cancelled",
            "failure_reason": "cancelled on request",
            "outcome_at": "2026-11-27T10:00:00.042Z"
        })
    );
}

#[test]
fn a_cancel_pending_when_the_step_fails_for_good_reports_both() {
    let mut driver = Driver::start(quote_to_cash());
    applied(&mut driver, Event::CancelRequested);
    driver.now = at(1_000);
    refuse(&mut driver, "credit hold");
    assert_eq!(
        report(&driver),
        json!({
            "outcome": "cancelled",
            "failure_reason": "cancelled on request; create_order: credit hold",
            "outcome_at": "2026-11-27T10:00:00.001Z"
        })
    );
}

// ---- an operator's decisions, and later notifications -----------------------

#[test]
fn a_failed_step_cancelled_by_an_operator_reports_the_failure_too() {
    let mut driver = Driver::start(suspending());
    driver.succeed(json!({"reservation_id": "RES-1"}));
    refuse(&mut driver, "insufficient funds");
    assert_eq!(driver.saga.status(), Status::Suspended);
    applied(&mut driver, Event::CancelRequested);
    driver.now = at(9_000);
    driver.succeed_current();
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
    let reason = "cancelled on request; charge: insufficient funds";
    assert_eq!(
        payloads(&driver, "crm.notify"),
        [json!({"outcome": "cancelled", "why": reason, "at": "2026-11-27T10:00:00.009Z"})]
    );
    // The second notification starts later and knows the same reason.
    driver.advance(60);
    driver.succeed_current();
    assert_eq!(payloads(&driver, "crm.archive"), [json!({"why": reason})]);
}

#[test]
fn a_failed_step_skipped_by_an_operator_no_longer_counts() {
    let mut driver = Driver::start(suspending());
    driver.succeed(json!({"reservation_id": "RES-1"}));
    refuse(&mut driver, "insufficient funds");
    driver.now = at(30_000);
    applied(
        &mut driver,
        Event::ResumeRequested(Resume::Skip {
            output: json!({"charge_id": "paid by wire"}),
            earlier: None,
        }),
    );
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
    assert_eq!(
        payloads(&driver, "crm.notify"),
        [json!({"outcome": "completed", "why": null, "at": "2026-11-27T10:00:00.030Z"})]
    );
    driver.succeed_current();
    assert_eq!(payloads(&driver, "crm.archive"), [json!({"why": null})]);
}

// ---- retries ------------------------------------------------------------------

#[test]
fn every_attempt_of_the_report_carries_the_values_of_the_first() {
    let mut driver = Driver::start(quote_to_cash());
    driver.succeed_current();
    driver.succeed_current();
    driver.now = at(1_500_000);
    refuse(&mut driver, "card declined: generic_decline");
    driver.succeed_current();
    driver.now = at(2_250_000);
    driver.succeed_current();
    let first = payloads(&driver, "salesforce.report_status")[0].clone();
    assert_eq!(first["outcome_at"], "2026-11-27T10:00:02.250Z");
    assert_eq!(
        first["failure_reason"],
        "collect_payment: card declined: generic_decline"
    );

    // Retried after a retryable failure, then after a timeout.
    driver.advance(60);
    driver.fail(true);
    driver.fire(TimerKind::StepBackoff);
    driver.fire(TimerKind::StepTimeout);
    driver.fire(TimerKind::StepBackoff);
    // Then refused for good, and retried by an operator on a saga
    // restored from its stored record, hours later.
    driver.fail(false);
    assert_eq!(driver.saga.status(), Status::Suspended);
    let stored = serde_json::to_value(driver.saga.record()).unwrap();
    let record: SagaRecord = serde_json::from_value(stored).unwrap();
    driver.saga = Saga::restore(record).unwrap();
    driver.advance(6 * 3600);
    applied(&mut driver, Event::ResumeRequested(Resume::Retry));

    let attempts: Vec<u32> = driver
        .commands
        .iter()
        .filter(|command| command.command_type == "salesforce.report_status")
        .map(|command| command.attempt)
        .collect();
    assert_eq!(attempts, [1, 2, 3, 4]);
    for payload in payloads(&driver, "salesforce.report_status") {
        assert_eq!(payload, first);
    }
    driver.succeed_current();
    assert_eq!(driver.saga.status(), Status::Compensated);
}
