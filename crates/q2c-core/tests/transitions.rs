//! One test per state × event pair of the saga state machine, including the
//! pairs that must change nothing.
//!
//! States are reached through real events from `Saga::start`, mostly with
//! the small `tiny` definition below: two action steps with compensations
//! and tiny retry budgets, then a notification step. Applied events pin the
//! exact commands and timers; ignored and refused events must leave the
//! record exactly as it was and produce no effects.

#![allow(clippy::expect_used)]

mod support;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use q2c_core::definition::Definition;
use q2c_core::saga::{
    Command, CompensationStatus, Earlier, Event, Happened, Outcome, Phase, ReplyResult, Request,
    Resume, StateRecord, Status, StepStatus, SuspendReason, TimerKind,
};
use serde_json::{Value, json};
use support::*;

// ---- definitions -----------------------------------------------------------

/// reserve: 2 attempts, 10s timeout, 1s backoff; its compensation
/// `stock.release`: 3 attempts, 20s timeout, 3s backoff.
/// charge: 3 attempts, 15s timeout, 2s backoff; its compensation
/// `card.refund` inherits those.
/// notify: notification, 2 attempts, 30s timeout, 5s backoff, a 1h deadline
/// that suspends.
const TINY: &str = r##"
name = "tiny"

[[steps]]
name = "reserve"
command = "stock.reserve"
timeout = "10s"
retry = { max_attempts = 2, initial_backoff = "1s", max_backoff = "1s" }
on_failure = "compensate"
output = { reservation_id = "string" }
input = { quote_id = "quote.quote_id" }
#RESERVE_EXTRA#

[steps.compensation]
command = "stock.release"
timeout = "20s"
retry = { max_attempts = 3, initial_backoff = "3s", max_backoff = "3s" }
input = { reservation_id = "steps.reserve.output.reservation_id?" }

[[steps]]
name = "charge"
command = "card.charge"
timeout = "15s"
retry = { max_attempts = 3, initial_backoff = "2s", max_backoff = "2s" }
on_failure = "#CHARGE_POLICY#"
output = { charge_id = "string" }
input = { reservation_id = "steps.reserve.output.reservation_id" }
#CHARGE_EXTRA#

[steps.compensation]
command = "card.refund"
input = { charge_id = "steps.charge.output.charge_id?" }

[[steps]]
name = "notify"
kind = "notification"
command = "crm.notify"
timeout = "30s"
retry = { max_attempts = 2, initial_backoff = "5s", max_backoff = "5s" }
deadline = { after = "1h", escalation = "suspend" }
input = { outcome = "workflow.outcome" }
"##;

fn tiny(charge_policy: &str, reserve_extra: &str, charge_extra: &str) -> Arc<Definition> {
    definition(
        &TINY
            .replace("#CHARGE_POLICY#", charge_policy)
            .replace("#RESERVE_EXTRA#", reserve_extra)
            .replace("#CHARGE_EXTRA#", charge_extra),
    )
}

/// Both action steps compensate on failure; no action deadlines.
fn basic() -> Arc<Definition> {
    tiny("compensate", "", "")
}

/// `charge` suspends on failure.
fn suspending() -> Arc<Definition> {
    tiny("suspend", "", "")
}

/// `reserve` has a 1m deadline that flags, `charge` a 2m one that suspends.
fn deadlines() -> Arc<Definition> {
    tiny(
        "compensate",
        r#"deadline = { after = "1m", escalation = "flag" }"#,
        r#"deadline = { after = "2m", escalation = "suspend" }"#,
    )
}

// ---- events ----------------------------------------------------------------

fn output_of(command_type: &str) -> Value {
    match command_type {
        "stock.reserve" => json!({"reservation_id": "RES-1"}),
        "card.charge" => json!({"charge_id": "CH-1"}),
        _ => json!({}),
    }
}

fn ok(command: &Command) -> Event {
    success(command, output_of(&command.command_type))
}

/// A success whose reply type is not the command's success reply.
fn ok_wrong_type(command: &Command) -> Event {
    reply(
        command.idempotency_key.clone(),
        command.attempt,
        &format!("{}.accepted", command.command_type),
        ReplyResult::Succeeded {
            output: output_of(&command.command_type),
        },
    )
}

/// A success result under the failure reply type.
fn ok_under_failure_type(command: &Command) -> Event {
    reply(
        command.idempotency_key.clone(),
        command.attempt,
        &format!("{}.failed", command.command_type),
        ReplyResult::Succeeded {
            output: output_of(&command.command_type),
        },
    )
}

fn retryable(command: &Command) -> Event {
    failure(command, true)
}

fn fatal(command: &Command) -> Event {
    failure(command, false)
}

fn fired(kind: TimerKind, step: &str, revision: u32, attempt: u32) -> Event {
    Event::TimerFired(timer_id(kind, step, revision, attempt))
}

fn resume(resume: Resume) -> Event {
    Event::ResumeRequested(resume)
}

fn skip(output: Value) -> Event {
    skip_with(output, None)
}

fn skip_with(output: Value, earlier: Option<Earlier>) -> Event {
    resume(Resume::Skip { output, earlier })
}

/// Every kind of resume request, valid or not for an action step.
fn every_resume(valid_output: Value) -> Vec<Event> {
    vec![
        resume(Resume::Retry),
        resume(Resume::RetryWithInput {
            input: json!({"reservation_id": "RES-9"}),
            earlier: None,
        }),
        resume(Resume::RetryWithInput {
            input: json!("not an object"),
            earlier: None,
        }),
        skip(valid_output),
        skip(json!({})),
    ]
}

/// Successes for the keys of other steps, other revisions and the
/// compensations, none of which belongs to `except`'s current command.
fn foreign_replies(except: &str) -> Vec<Event> {
    let succeeded = |command_type: &str| ReplyResult::Succeeded {
        output: output_of(command_type),
    };
    let all = [
        ("reserve", false, "stock.reserve"),
        ("charge", false, "card.charge"),
        ("notify", false, "crm.notify"),
        ("reserve", true, "stock.release"),
        ("charge", true, "card.refund"),
    ];
    let mut events = Vec::new();
    for (step, compensation, command_type) in all {
        for revision in [1, 2] {
            let key = if compensation {
                compensation_key(step, revision)
            } else {
                step_key(step, revision)
            };
            if key.as_str() == except {
                continue;
            }
            events.push(reply(
                key.clone(),
                1,
                &format!("{command_type}.succeeded"),
                succeeded(command_type),
            ));
            events.push(reply(
                key,
                1,
                &format!("{command_type}.failed"),
                ReplyResult::Failed {
                    retryable: false,
                    reason: "declined".to_owned(),
                },
            ));
        }
    }
    events
}

// ---- reaching states -------------------------------------------------------

fn after(driver: &Driver, seconds: i64) -> DateTime<Utc> {
    driver.now + TimeDelta::seconds(seconds)
}

fn state(driver: &Driver) -> StateRecord {
    driver.saga.record().state
}

fn succeed(driver: &mut Driver) -> Vec<Fx> {
    let command = driver.last_command().clone();
    driver.apply(ok(&command))
}

fn fail(driver: &mut Driver, retry: bool) -> Vec<Fx> {
    let command = driver.last_command().clone();
    driver.apply(failure(&command, retry))
}

/// Fires the earliest live timer of `kind`; it must be applied.
fn fire(driver: &mut Driver, kind: TimerKind) -> Vec<Fx> {
    let (timer, due_at) = driver
        .timers
        .iter()
        .filter(|(timer, _)| timer.kind == kind)
        .min_by_key(|(_, due_at)| *due_at)
        .cloned()
        .unwrap_or_else(|| panic!("no live {kind:?} timer"));
    driver.now = driver.now.max(due_at);
    driver.timers.retain(|(live, _)| *live != timer);
    driver.apply(Event::TimerFired(timer))
}

/// `executing(charge, 1)`: reserve succeeded.
fn executing_charge(definition: Arc<Definition>) -> Driver {
    let mut driver = Driver::start(definition);
    succeed(&mut driver);
    driver
}

/// `executing(charge, attempt)` after retryable failures.
fn executing_charge_attempt(definition: Arc<Definition>, attempt: u32) -> Driver {
    let mut driver = executing_charge(definition);
    for _ in 1..attempt {
        fail(&mut driver, true);
        fire(&mut driver, TimerKind::StepBackoff);
    }
    assert_eq!(
        state(&driver),
        StateRecord::Executing {
            step: "charge".to_owned(),
            attempt
        }
    );
    driver
}

/// `executing(notify, 1)`: the money flow completed.
fn executing_notify() -> Driver {
    let mut driver = executing_charge(basic());
    succeed(&mut driver);
    driver
}

/// `waiting_to_retry(charge, 1, step)`.
fn waiting_charge(definition: Arc<Definition>) -> Driver {
    let mut driver = executing_charge(definition);
    fail(&mut driver, true);
    driver
}

/// `compensating(reserve, 1)`: charge failed for good.
fn compensating_reserve(definition: Arc<Definition>) -> Driver {
    let mut driver = executing_charge(definition);
    fail(&mut driver, false);
    assert_eq!(
        state(&driver),
        StateRecord::Compensating {
            step: "reserve".to_owned(),
            attempt: 1
        }
    );
    driver
}

/// `waiting_to_retry(reserve, 1, compensation)`.
fn waiting_release() -> Driver {
    let mut driver = compensating_reserve(basic());
    fail(&mut driver, true);
    driver
}

/// `suspended(charge, step, step_failed)` under the suspend policy.
fn suspended_step_failed() -> Driver {
    let mut driver = executing_charge(suspending());
    fail(&mut driver, false);
    driver
}

/// `suspended(charge, step, deadline_exceeded)`: charge's deadline passed
/// while it waited to retry.
fn suspended_deadline() -> Driver {
    let mut driver = waiting_charge(deadlines());
    fire(&mut driver, TimerKind::Deadline);
    assert_eq!(
        state(&driver),
        StateRecord::Suspended {
            step: "charge".to_owned(),
            phase: Phase::Step,
            reason: SuspendReason::DeadlineExceeded
        }
    );
    driver
}

/// `suspended(reserve, compensation, compensation_failed)`.
fn suspended_compensation() -> Driver {
    let mut driver = compensating_reserve(basic());
    fail(&mut driver, false);
    driver
}

/// `suspended(notify, step, notification_failed)` after a completed flow.
fn suspended_notification() -> Driver {
    let mut driver = executing_notify();
    fail(&mut driver, false);
    driver
}

fn completed() -> Driver {
    let mut driver = executing_notify();
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Completed);
    driver
}

fn compensated() -> Driver {
    let mut driver = compensating_reserve(basic());
    succeed(&mut driver);
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Compensated);
    driver
}

fn failed() -> Driver {
    let mut driver = Driver::start(basic());
    fail(&mut driver, false);
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Failed);
    driver
}

fn cancelled() -> Driver {
    let mut driver = waiting_charge(basic());
    driver.apply(Event::CancelRequested);
    succeed(&mut driver);
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Cancelled);
    driver
}

/// The effects of the money flow ending: the notification's run begins.
fn notify_starts(driver: &Driver) -> Vec<Fx> {
    vec![
        schedule(
            timer_id(TimerKind::Deadline, "notify", 1, 1),
            after(driver, 3600),
        ),
        send_step("notify", "crm.notify", 1, 1),
        schedule(
            timer_id(TimerKind::StepTimeout, "notify", 1, 1),
            after(driver, 30),
        ),
    ]
}

fn suspended_state(step: &str, phase: Phase, reason: SuspendReason) -> StateRecord {
    StateRecord::Suspended {
        step: step.to_owned(),
        phase,
        reason,
    }
}

// ---- keys ------------------------------------------------------------------

#[test]
fn keys_have_the_documented_shape() {
    assert_eq!(
        step_key("charge", 2).as_str(),
        "00000000-0000-0000-0000-000000000001:charge:r2"
    );
    assert_eq!(
        compensation_key("reserve", 1).as_str(),
        "00000000-0000-0000-0000-000000000001:reserve:r1:compensate"
    );
}

#[test]
fn start_sends_the_first_command_with_revision_1() {
    let driver = Driver::start(basic());
    assert_eq!(
        fx(&driver.effects),
        [
            send_step("reserve", "stock.reserve", 1, 1),
            schedule(
                timer_id(TimerKind::StepTimeout, "reserve", 1, 1),
                after(&driver, 10)
            ),
        ]
    );
    assert_eq!(
        driver.last_command().idempotency_key.as_str(),
        "00000000-0000-0000-0000-000000000001:reserve:r1"
    );
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(driver.saga.outcome(), None);
}

// ---- executing (action step) -----------------------------------------------

#[test]
fn executing_success_starts_the_next_step() {
    let mut driver = Driver::start(basic());
    let effects = succeed(&mut driver);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "reserve", 1, 1)),
            send_step("charge", "card.charge", 1, 1),
            schedule(
                timer_id(TimerKind::StepTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(driver.saga.outcome(), None);
    assert_eq!(driver.saga.steps()[0].status, StepStatus::Succeeded);
    assert_eq!(
        driver.saga.steps()[0].output,
        Some(json!({"reservation_id": "RES-1"}))
    );
    assert_eq!(
        driver.last_command().input,
        json!({"reservation_id": "RES-1"})
    );
}

#[test]
fn executing_success_of_the_last_action_step_ends_the_money_flow() {
    let mut driver = executing_charge(basic());
    let effects = succeed(&mut driver);
    let mut expected = vec![cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(driver.last_command().input, json!({"outcome": "completed"}));
}

#[test]
fn executing_success_of_an_earlier_attempt_is_applied() {
    let mut driver = executing_charge_attempt(basic(), 2);
    let first = driver.commands[1].clone();
    assert_eq!(first.attempt, 1);
    let effects = driver.apply(ok(&first));
    let mut expected = vec![cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 2))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
}

#[test]
fn executing_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = executing_charge(basic());
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
    driver.assert_ignored(reply(
        command.idempotency_key.clone(),
        1,
        "card.charge.succeeded",
        ReplyResult::Failed {
            retryable: false,
            reason: "declined".to_owned(),
        },
    ));
}

#[test]
fn executing_retryable_failure_schedules_a_backoff() {
    let mut driver = executing_charge(basic());
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1)),
            schedule(
                timer_id(TimerKind::StepBackoff, "charge", 1, 1),
                after(&driver, 2)
            ),
        ]
    );
    assert_eq!(
        state(&driver),
        StateRecord::WaitingToRetry {
            step: "charge".to_owned(),
            attempt: 1,
            phase: Phase::Step
        }
    );
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(driver.saga.in_flight(), None);
    assert!(!driver.saga.steps()[1].possibly_done);
}

#[test]
fn executing_retryable_failure_of_the_last_attempt_applies_the_failure_policy() {
    let mut driver = executing_charge_attempt(basic(), 3);
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 3)),
            send_compensation("reserve", "stock.release", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1),
                after(&driver, 20)
            ),
        ]
    );
    assert_eq!(driver.saga.status(), Status::Compensating);
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Failed);
    assert_eq!(driver.saga.outcome(), None);
}

#[test]
fn executing_non_retryable_failure_compensates_the_completed_steps() {
    let mut driver = executing_charge(basic());
    let effects = fail(&mut driver, false);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1)),
            send_compensation("reserve", "stock.release", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1),
                after(&driver, 20)
            ),
        ]
    );
    assert_eq!(
        state(&driver),
        StateRecord::Compensating {
            step: "reserve".to_owned(),
            attempt: 1
        }
    );
    assert_eq!(driver.saga.status(), Status::Compensating);
    assert_eq!(driver.saga.outcome(), None);
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Failed);
    assert_eq!(
        driver.last_command().input,
        json!({"reservation_id": "RES-1"})
    );
}

#[test]
fn executing_non_retryable_failure_with_nothing_to_undo_ends_failed() {
    let mut driver = Driver::start(basic());
    let effects = fail(&mut driver, false);
    let mut expected = vec![cancel(timer_id(TimerKind::StepTimeout, "reserve", 1, 1))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Failed));
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(driver.last_command().input, json!({"outcome": "failed"}));
}

#[test]
fn executing_non_retryable_failure_under_the_suspend_policy_suspends() {
    let mut driver = executing_charge(suspending());
    let effects = fail(&mut driver, false);
    assert_eq!(
        effects,
        [cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1))]
    );
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::StepFailed)
    );
    assert_eq!(driver.saga.status(), Status::Suspended);
    assert_eq!(driver.saga.outcome(), None);
    assert_eq!(driver.saga.in_flight(), None);
}

#[test]
fn executing_failure_of_an_earlier_attempt_is_ignored() {
    let mut driver = executing_charge_attempt(basic(), 2);
    let current = driver.last_command().clone();
    driver.assert_ignored(failure_of_attempt(&current, 1, true));
    driver.assert_ignored(failure_of_attempt(&current, 1, false));
}

#[test]
fn executing_replies_for_other_steps_or_revisions_are_ignored() {
    let mut driver = executing_charge(basic());
    for event in foreign_replies(step_key("charge", 1).as_str()) {
        driver.assert_ignored(event);
    }
}

#[test]
fn executing_timeout_schedules_a_backoff_and_marks_the_step_possibly_done() {
    let mut driver = executing_charge(basic());
    let effects = fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(
        effects,
        [schedule(
            timer_id(TimerKind::StepBackoff, "charge", 1, 1),
            after(&driver, 2)
        )]
    );
    assert!(driver.saga.steps()[1].possibly_done);
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(driver.saga.in_flight(), None);
}

#[test]
fn executing_timeout_on_every_attempt_compensates_the_possibly_done_step_first() {
    let mut driver = executing_charge(basic());
    for _ in 1..3 {
        fire(&mut driver, TimerKind::StepTimeout);
        let effects = fire(&mut driver, TimerKind::StepBackoff);
        // A timer retry keeps the key.
        assert!(matches!(
            &effects[0],
            Fx::Send { key, .. } if *key == step_key("charge", 1).to_string()
        ));
    }
    let effects = fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(
        effects,
        [
            send_compensation("charge", "card.refund", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Failed);
    assert!(driver.saga.steps()[1].possibly_done);
    assert_eq!(driver.saga.status(), Status::Compensating);
    // Reverse order: then reserve.
    let effects = succeed(&mut driver);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::CompensationTimeout, "charge", 1, 1)),
            send_compensation("reserve", "stock.release", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1),
                after(&driver, 20)
            ),
        ]
    );
    let effects = succeed(&mut driver);
    let mut expected = vec![cancel(timer_id(
        TimerKind::CompensationTimeout,
        "reserve",
        1,
        1,
    ))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
}

#[test]
fn executing_timeout_on_every_attempt_under_the_suspend_policy_suspends() {
    let mut driver = executing_charge(suspending());
    fire(&mut driver, TimerKind::StepTimeout);
    fire(&mut driver, TimerKind::StepBackoff);
    fire(&mut driver, TimerKind::StepTimeout);
    fire(&mut driver, TimerKind::StepBackoff);
    let effects = fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(effects, []);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::StepFailed)
    );
    assert!(driver.saga.steps()[1].possibly_done);
    // A later cancel undoes the possibly done step too, newest first.
    let effects = driver.apply(Event::CancelRequested);
    assert_eq!(
        effects,
        [
            send_compensation("charge", "card.refund", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
}

#[test]
fn executing_stale_timers_are_ignored() {
    let mut driver = executing_charge_attempt(basic(), 2);
    for event in [
        fired(TimerKind::StepTimeout, "charge", 1, 1),
        fired(TimerKind::StepBackoff, "charge", 1, 1),
        fired(TimerKind::StepBackoff, "charge", 1, 2),
        fired(TimerKind::StepTimeout, "charge", 2, 2),
        fired(TimerKind::StepTimeout, "reserve", 1, 1),
        fired(TimerKind::Deadline, "charge", 1, 1),
        fired(TimerKind::CompensationTimeout, "charge", 1, 2),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn executing_deadline_with_flag_only_flags() {
    let mut driver = Driver::start(deadlines());
    assert!(driver.timers.iter().any(|(timer, due)| *timer
        == timer_id(TimerKind::Deadline, "reserve", 1, 1)
        && *due == after(&driver, 60)));
    let effects = fire(&mut driver, TimerKind::Deadline);
    assert_eq!(effects, []);
    let attention = driver.saga.attention().expect("flagged").clone();
    assert_eq!(attention.step, "reserve");
    assert_eq!(attention.since, driver.now);
    assert_eq!(
        state(&driver),
        StateRecord::Executing {
            step: "reserve".to_owned(),
            attempt: 1
        }
    );
    assert_eq!(driver.saga.status(), Status::Running);
    assert!(!driver.saga.record().suspend_pending);
    // The step goes on as usual.
    let effects = succeed(&mut driver);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "reserve", 1, 1)),
            cancel(timer_id(TimerKind::Deadline, "reserve", 1, 1)),
            schedule(
                timer_id(TimerKind::Deadline, "charge", 1, 1),
                after(&driver, 120)
            ),
            send_step("charge", "card.charge", 1, 1),
            schedule(
                timer_id(TimerKind::StepTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
}

#[test]
fn executing_deadline_with_suspend_waits_for_the_command_to_settle() {
    let mut driver = executing_charge(deadlines());
    let effects = fire(&mut driver, TimerKind::Deadline);
    assert_eq!(effects, []);
    assert_eq!(
        state(&driver),
        StateRecord::Executing {
            step: "charge".to_owned(),
            attempt: 1
        }
    );
    assert_eq!(driver.saga.status(), Status::Running);
    assert!(driver.saga.record().suspend_pending);
    assert!(driver.saga.in_flight().is_some());
    // The retryable failure suspends instead of retrying; nothing fails or
    // compensates.
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1))]
    );
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::DeadlineExceeded)
    );
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Running);
    assert_eq!(
        driver.saga.steps()[0].compensation.status,
        CompensationStatus::NotStarted
    );
    assert_eq!(driver.saga.outcome(), None);
}

#[test]
fn executing_deadline_with_suspend_then_timeout_suspends() {
    let mut driver = executing_charge(deadlines());
    driver.apply(fired(TimerKind::Deadline, "charge", 1, 1));
    let effects = fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(effects, []);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::DeadlineExceeded)
    );
    assert!(driver.saga.steps()[1].possibly_done);
}

#[test]
fn executing_deadline_with_suspend_then_success_moves_on() {
    let mut driver = executing_charge(deadlines());
    driver.apply(fired(TimerKind::Deadline, "charge", 1, 1));
    let effects = succeed(&mut driver);
    let mut expected = vec![
        cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1)),
        cancel(timer_id(TimerKind::Deadline, "charge", 1, 1)),
    ];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
}

#[test]
fn executing_duplicate_deadline_timer_is_ignored() {
    let mut driver = Driver::start(deadlines());
    driver.apply(fired(TimerKind::Deadline, "reserve", 1, 1));
    driver.advance(30);
    driver.assert_ignored(fired(TimerKind::Deadline, "reserve", 1, 1));
}

#[test]
fn executing_cancel_waits_for_the_reply_then_compensates() {
    let mut driver = executing_charge(basic());
    let effects = driver.apply(Event::CancelRequested);
    assert_eq!(effects, []);
    assert!(driver.saga.cancel_requested());
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(
        state(&driver),
        StateRecord::Executing {
            step: "charge".to_owned(),
            attempt: 1
        }
    );
    // A duplicate cancel changes nothing.
    driver.assert_ignored(Event::CancelRequested);
    // The success settles it: everything done is undone, newest first.
    let effects = succeed(&mut driver);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1)),
            send_compensation("charge", "card.refund", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.last_command().input, json!({"charge_id": "CH-1"}));
    assert_eq!(driver.saga.status(), Status::Compensating);
    assert_eq!(driver.saga.outcome(), None);
    let effects = succeed(&mut driver);
    assert_eq!(
        effects[1],
        send_compensation("reserve", "stock.release", 1, 1)
    );
    succeed(&mut driver);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Cancelled);
}

#[test]
fn executing_cancel_then_retryable_failure_compensates_without_retrying() {
    let mut driver = executing_charge(basic());
    driver.apply(Event::CancelRequested);
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1)),
            send_compensation("reserve", "stock.release", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1),
                after(&driver, 20)
            ),
        ]
    );
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Cancelled);
    succeed(&mut driver);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
}

#[test]
fn executing_cancel_then_timeout_compensates_the_possibly_done_step() {
    let mut driver = executing_charge(basic());
    driver.apply(Event::CancelRequested);
    let effects = fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(
        effects,
        [
            send_compensation("charge", "card.refund", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Cancelled);
    assert!(driver.saga.steps()[1].possibly_done);
    assert_eq!(driver.last_command().input, json!({"charge_id": null}));
}

#[test]
fn executing_cancel_then_non_retryable_failure_with_nothing_done_ends_cancelled() {
    let mut driver = Driver::start(basic());
    driver.apply(Event::CancelRequested);
    let effects = fail(&mut driver, false);
    let mut expected = vec![cancel(timer_id(TimerKind::StepTimeout, "reserve", 1, 1))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
    assert_eq!(driver.saga.status(), Status::Running);
}

#[test]
fn executing_refuses_every_resume() {
    let mut driver = executing_charge(basic());
    for event in every_resume(json!({"charge_id": "CH-9"})) {
        driver.assert_refused(event);
    }
}

// ---- executing (notification step) -----------------------------------------

#[test]
fn notification_success_finishes_with_the_outcome() {
    let mut driver = executing_notify();
    assert_eq!(driver.saga.status(), Status::Running);
    let effects = succeed(&mut driver);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "notify", 1, 1)),
            cancel(timer_id(TimerKind::Deadline, "notify", 1, 1)),
        ]
    );
    assert_eq!(state(&driver), StateRecord::Completed);
    assert_eq!(driver.saga.status(), Status::Completed);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
}

#[test]
fn notification_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = executing_notify();
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
}

#[test]
fn notification_retryable_failure_schedules_a_backoff() {
    let mut driver = executing_notify();
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "notify", 1, 1)),
            schedule(
                timer_id(TimerKind::StepBackoff, "notify", 1, 1),
                after(&driver, 5)
            ),
        ]
    );
    assert_eq!(driver.saga.status(), Status::Running);
    let effects = fire(&mut driver, TimerKind::StepBackoff);
    assert_eq!(
        effects,
        [
            send_step("notify", "crm.notify", 1, 2),
            schedule(
                timer_id(TimerKind::StepTimeout, "notify", 1, 2),
                after(&driver, 30)
            ),
        ]
    );
}

#[test]
fn notification_out_of_attempts_suspends() {
    let mut driver = executing_notify();
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::StepBackoff);
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "notify", 1, 2)),
            cancel(timer_id(TimerKind::Deadline, "notify", 1, 1)),
        ]
    );
    assert_eq!(
        state(&driver),
        suspended_state("notify", Phase::Step, SuspendReason::NotificationFailed)
    );
    assert_eq!(driver.saga.status(), Status::Suspended);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
}

#[test]
fn notification_timing_out_on_every_attempt_suspends() {
    let mut driver = executing_notify();
    fire(&mut driver, TimerKind::StepTimeout);
    fire(&mut driver, TimerKind::StepBackoff);
    let effects = fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(
        effects,
        [cancel(timer_id(TimerKind::Deadline, "notify", 1, 1))]
    );
    assert_eq!(
        state(&driver),
        suspended_state("notify", Phase::Step, SuspendReason::NotificationFailed)
    );
}

#[test]
fn notification_non_retryable_failure_suspends() {
    let mut driver = executing_notify();
    let effects = fail(&mut driver, false);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "notify", 1, 1)),
            cancel(timer_id(TimerKind::Deadline, "notify", 1, 1)),
        ]
    );
    assert_eq!(
        state(&driver),
        suspended_state("notify", Phase::Step, SuspendReason::NotificationFailed)
    );
    assert_eq!(driver.saga.status(), Status::Suspended);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
}

#[test]
fn notification_failure_of_an_earlier_attempt_is_ignored() {
    let mut driver = executing_notify();
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::StepBackoff);
    let current = driver.last_command().clone();
    assert_eq!(current.attempt, 2);
    driver.assert_ignored(failure_of_attempt(&current, 1, true));
    driver.assert_ignored(failure_of_attempt(&current, 1, false));
}

#[test]
fn notification_replies_for_other_steps_or_revisions_are_ignored() {
    let mut driver = executing_notify();
    for event in foreign_replies(step_key("notify", 1).as_str()) {
        driver.assert_ignored(event);
    }
}

#[test]
fn notification_timeout_schedules_a_backoff() {
    let mut driver = executing_notify();
    let effects = fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(
        effects,
        [schedule(
            timer_id(TimerKind::StepBackoff, "notify", 1, 1),
            after(&driver, 5)
        )]
    );
    assert_eq!(driver.saga.status(), Status::Running);
}

#[test]
fn notification_deadline_suspends_once_the_attempt_settles() {
    let mut driver = executing_notify();
    let effects = fire(&mut driver, TimerKind::Deadline);
    assert_eq!(effects, []);
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(
        driver.saga.attention().map(|a| a.step.as_str()),
        Some("notify")
    );
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [cancel(timer_id(TimerKind::StepTimeout, "notify", 1, 1))]
    );
    assert_eq!(
        state(&driver),
        suspended_state("notify", Phase::Step, SuspendReason::DeadlineExceeded)
    );
}

#[test]
fn notification_stale_timers_are_ignored() {
    let mut driver = executing_notify();
    for event in [
        fired(TimerKind::StepTimeout, "charge", 1, 1),
        fired(TimerKind::StepBackoff, "notify", 1, 1),
        fired(TimerKind::StepTimeout, "notify", 1, 2),
        fired(TimerKind::StepTimeout, "notify", 2, 1),
        fired(TimerKind::Deadline, "notify", 1, 2),
        fired(TimerKind::CompensationTimeout, "reserve", 1, 1),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn notification_cancel_is_refused() {
    let mut driver = executing_notify();
    driver.assert_refused(Event::CancelRequested);
    driver.assert_refused(Event::CancelRequested);
}

#[test]
fn notification_refuses_every_resume() {
    let mut driver = executing_notify();
    for event in every_resume(json!({})) {
        driver.assert_refused(event);
    }
}

// ---- waiting_to_retry (step) -----------------------------------------------

#[test]
fn waiting_backoff_timer_sends_the_next_attempt_with_the_same_key() {
    let mut driver = waiting_charge(basic());
    let effects = fire(&mut driver, TimerKind::StepBackoff);
    assert_eq!(
        effects,
        [
            send_step("charge", "card.charge", 1, 2),
            schedule(
                timer_id(TimerKind::StepTimeout, "charge", 1, 2),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.commands[2].input, driver.commands[1].input);
    assert_eq!(
        state(&driver),
        StateRecord::Executing {
            step: "charge".to_owned(),
            attempt: 2
        }
    );
}

#[test]
fn waiting_late_success_moves_on() {
    let mut driver = waiting_charge(basic());
    let effects = succeed(&mut driver);
    let mut expected = vec![cancel(timer_id(TimerKind::StepBackoff, "charge", 1, 1))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
    assert_eq!(driver.saga.status(), Status::Running);
}

#[test]
fn waiting_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = waiting_charge(basic());
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
}

#[test]
fn waiting_retryable_failure_of_the_failed_attempt_is_ignored() {
    let mut driver = waiting_charge(basic());
    let command = driver.last_command().clone();
    driver.assert_ignored(retryable(&command));
}

#[test]
fn waiting_late_non_retryable_failure_applies_the_failure_policy() {
    let mut driver = executing_charge(basic());
    fire(&mut driver, TimerKind::StepTimeout);
    let command = driver.last_command().clone();
    let effects = driver.apply(fatal(&command));
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepBackoff, "charge", 1, 1)),
            send_compensation("reserve", "stock.release", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1),
                after(&driver, 20)
            ),
        ]
    );
    // The failure settles the timed-out attempt: charge is not undone.
    assert!(!driver.saga.steps()[1].possibly_done);
    assert_eq!(driver.saga.status(), Status::Compensating);
}

#[test]
fn waiting_failure_of_an_earlier_attempt_is_ignored() {
    let mut driver = executing_charge_attempt(basic(), 2);
    fail(&mut driver, true);
    let current = driver.last_command().clone();
    driver.assert_ignored(failure_of_attempt(&current, 1, false));
    driver.assert_ignored(failure_of_attempt(&current, 1, true));
}

#[test]
fn waiting_replies_for_other_steps_or_revisions_are_ignored() {
    let mut driver = waiting_charge(basic());
    for event in foreign_replies(step_key("charge", 1).as_str()) {
        driver.assert_ignored(event);
    }
}

#[test]
fn waiting_stale_timers_are_ignored() {
    let mut driver = waiting_charge(basic());
    for event in [
        fired(TimerKind::StepTimeout, "charge", 1, 1),
        fired(TimerKind::StepBackoff, "charge", 2, 1),
        fired(TimerKind::StepBackoff, "charge", 1, 2),
        fired(TimerKind::StepTimeout, "reserve", 1, 1),
        fired(TimerKind::Deadline, "charge", 1, 1),
        fired(TimerKind::CompensationBackoff, "charge", 1, 1),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn waiting_deadline_with_flag_only_flags() {
    let mut driver = Driver::start(deadlines());
    fail(&mut driver, true);
    driver.now = t0() + TimeDelta::seconds(60);
    let effects = driver.apply(fired(TimerKind::Deadline, "reserve", 1, 1));
    assert_eq!(effects, []);
    assert_eq!(driver.saga.attention().map(|a| a.since), Some(driver.now));
    assert_eq!(
        state(&driver),
        StateRecord::WaitingToRetry {
            step: "reserve".to_owned(),
            attempt: 1,
            phase: Phase::Step
        }
    );
    assert_eq!(driver.saga.status(), Status::Running);
    let effects = fire(&mut driver, TimerKind::StepBackoff);
    assert_eq!(effects[0], send_step("reserve", "stock.reserve", 1, 2));
}

#[test]
fn waiting_deadline_with_suspend_suspends_at_once() {
    let mut driver = waiting_charge(deadlines());
    let effects = fire(&mut driver, TimerKind::Deadline);
    assert_eq!(
        effects,
        [cancel(timer_id(TimerKind::StepBackoff, "charge", 1, 1))]
    );
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::DeadlineExceeded)
    );
    assert_eq!(driver.saga.status(), Status::Suspended);
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Running);
    assert_eq!(driver.saga.outcome(), None);
    assert_eq!(
        driver.saga.attention().map(|a| a.step.as_str()),
        Some("charge")
    );
}

#[test]
fn waiting_cancel_compensates_at_once() {
    let mut driver = waiting_charge(basic());
    let effects = driver.apply(Event::CancelRequested);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepBackoff, "charge", 1, 1)),
            send_compensation("reserve", "stock.release", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1),
                after(&driver, 20)
            ),
        ]
    );
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Cancelled);
    assert_eq!(driver.saga.status(), Status::Compensating);
    // A second cancel finds the workflow being undone.
    driver.assert_refused(Event::CancelRequested);
    succeed(&mut driver);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
}

#[test]
fn waiting_cancel_after_a_timeout_compensates_the_possibly_done_step() {
    let mut driver = executing_charge(deadlines());
    fire(&mut driver, TimerKind::StepTimeout);
    let effects = driver.apply(Event::CancelRequested);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepBackoff, "charge", 1, 1)),
            cancel(timer_id(TimerKind::Deadline, "charge", 1, 1)),
            send_compensation("charge", "card.refund", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
}

#[test]
fn waiting_cancel_with_nothing_to_undo_ends_cancelled() {
    let mut driver = Driver::start(basic());
    fail(&mut driver, true);
    let effects = driver.apply(Event::CancelRequested);
    let mut expected = vec![cancel(timer_id(TimerKind::StepBackoff, "reserve", 1, 1))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(driver.last_command().input, json!({"outcome": "cancelled"}));
}

#[test]
fn waiting_on_a_notification_refuses_cancel() {
    let mut driver = executing_notify();
    fail(&mut driver, true);
    driver.assert_refused(Event::CancelRequested);
    driver.assert_refused(Event::CancelRequested);
}

#[test]
fn waiting_refuses_every_resume() {
    let mut driver = waiting_charge(basic());
    for event in every_resume(json!({"charge_id": "CH-9"})) {
        driver.assert_refused(event);
    }
}

// ---- waiting_to_retry (compensation) ---------------------------------------

#[test]
fn waiting_compensation_backoff_timer_resends_with_the_same_key() {
    let mut driver = waiting_release();
    assert_eq!(driver.saga.status(), Status::Compensating);
    let effects = fire(&mut driver, TimerKind::CompensationBackoff);
    assert_eq!(
        effects,
        [
            send_compensation("reserve", "stock.release", 1, 2),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 2),
                after(&driver, 20)
            ),
        ]
    );
    assert_eq!(
        state(&driver),
        StateRecord::Compensating {
            step: "reserve".to_owned(),
            attempt: 2
        }
    );
}

#[test]
fn waiting_compensation_late_success_moves_on() {
    let mut driver = waiting_release();
    let effects = succeed(&mut driver);
    let mut expected = vec![cancel(timer_id(
        TimerKind::CompensationBackoff,
        "reserve",
        1,
        1,
    ))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
    assert_eq!(
        driver.saga.steps()[0].compensation.status,
        CompensationStatus::Compensated
    );
}

#[test]
fn waiting_compensation_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = waiting_release();
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
}

#[test]
fn waiting_compensation_retryable_failure_of_the_failed_attempt_is_ignored() {
    let mut driver = waiting_release();
    let command = driver.last_command().clone();
    driver.assert_ignored(retryable(&command));
}

#[test]
fn waiting_compensation_late_non_retryable_failure_suspends() {
    let mut driver = waiting_release();
    let command = driver.last_command().clone();
    let effects = driver.apply(fatal(&command));
    assert_eq!(
        effects,
        [cancel(timer_id(
            TimerKind::CompensationBackoff,
            "reserve",
            1,
            1
        ))]
    );
    assert_eq!(
        state(&driver),
        suspended_state(
            "reserve",
            Phase::Compensation,
            SuspendReason::CompensationFailed
        )
    );
    assert_eq!(driver.saga.outcome(), None);
}

#[test]
fn waiting_compensation_failure_of_an_earlier_attempt_is_ignored() {
    let mut driver = waiting_release();
    fire(&mut driver, TimerKind::CompensationBackoff);
    fail(&mut driver, true);
    let current = driver.last_command().clone();
    assert_eq!(current.attempt, 2);
    driver.assert_ignored(failure_of_attempt(&current, 1, false));
    driver.assert_ignored(failure_of_attempt(&current, 1, true));
}

#[test]
fn waiting_compensation_replies_for_other_keys_are_ignored_but_a_given_up_success_is_late() {
    let mut driver = waiting_release();
    assert_foreign_replies_ignored_but_late(&mut driver, compensation_key("reserve", 1).as_str());
}

#[test]
fn waiting_compensation_stale_timers_and_the_deadline_are_ignored() {
    let mut driver = compensating_reserve(deadlines());
    fail(&mut driver, true);
    for event in [
        fired(TimerKind::CompensationTimeout, "reserve", 1, 1),
        fired(TimerKind::CompensationBackoff, "reserve", 1, 2),
        fired(TimerKind::StepBackoff, "reserve", 1, 1),
        fired(TimerKind::StepTimeout, "charge", 1, 1),
        fired(TimerKind::Deadline, "charge", 1, 1),
        fired(TimerKind::Deadline, "reserve", 1, 1),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn waiting_compensation_refuses_cancel() {
    let mut driver = waiting_release();
    driver.assert_refused(Event::CancelRequested);
    driver.assert_refused(Event::CancelRequested);
}

#[test]
fn waiting_compensation_refuses_every_resume() {
    let mut driver = waiting_release();
    for event in every_resume(json!({"reservation_id": "RES-9"})) {
        driver.assert_refused(event);
    }
}

// ---- compensating ----------------------------------------------------------

#[test]
fn compensating_success_ends_the_money_flow_compensated() {
    let mut driver = compensating_reserve(basic());
    let effects = succeed(&mut driver);
    let mut expected = vec![cancel(timer_id(
        TimerKind::CompensationTimeout,
        "reserve",
        1,
        1,
    ))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(
        driver.last_command().input,
        json!({"outcome": "compensated"})
    );
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Compensated);
}

#[test]
fn compensating_success_of_an_earlier_attempt_is_applied() {
    let mut driver = waiting_release();
    fire(&mut driver, TimerKind::CompensationBackoff);
    let first = driver.commands[2].clone();
    assert_eq!(
        (first.command_type.as_str(), first.attempt),
        ("stock.release", 1)
    );
    let effects = driver.apply(ok(&first));
    assert_eq!(
        effects[0],
        cancel(timer_id(TimerKind::CompensationTimeout, "reserve", 1, 2))
    );
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
}

#[test]
fn compensating_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = compensating_reserve(basic());
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
}

#[test]
fn compensating_retryable_failure_schedules_a_backoff() {
    let mut driver = compensating_reserve(basic());
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1)),
            schedule(
                timer_id(TimerKind::CompensationBackoff, "reserve", 1, 1),
                after(&driver, 3)
            ),
        ]
    );
    assert_eq!(
        state(&driver),
        StateRecord::WaitingToRetry {
            step: "reserve".to_owned(),
            attempt: 1,
            phase: Phase::Compensation
        }
    );
    assert_eq!(driver.saga.status(), Status::Compensating);
}

#[test]
fn compensating_out_of_attempts_suspends_and_never_reaches_compensated() {
    let mut driver = compensating_reserve(basic());
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::CompensationBackoff);
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::CompensationBackoff);
    let effects = fail(&mut driver, true);
    assert_eq!(
        effects,
        [cancel(timer_id(
            TimerKind::CompensationTimeout,
            "reserve",
            1,
            3
        ))]
    );
    assert_eq!(
        state(&driver),
        suspended_state(
            "reserve",
            Phase::Compensation,
            SuspendReason::CompensationFailed
        )
    );
    assert_eq!(driver.saga.status(), Status::Suspended);
    assert_eq!(driver.saga.outcome(), None);
    assert_eq!(
        driver.saga.steps()[0].compensation.status,
        CompensationStatus::Failed
    );
}

#[test]
fn compensating_non_retryable_failure_suspends() {
    let mut driver = compensating_reserve(basic());
    let effects = fail(&mut driver, false);
    assert_eq!(
        effects,
        [cancel(timer_id(
            TimerKind::CompensationTimeout,
            "reserve",
            1,
            1
        ))]
    );
    assert_eq!(
        state(&driver),
        suspended_state(
            "reserve",
            Phase::Compensation,
            SuspendReason::CompensationFailed
        )
    );
    assert_eq!(driver.saga.outcome(), None);
}

#[test]
fn compensation_failing_for_good_halts_before_earlier_compensations() {
    // charge timed out on every attempt, so it is undone first; its refund
    // fails for good and reserve's release is never sent.
    let mut driver = executing_charge(basic());
    for _ in 1..3 {
        fire(&mut driver, TimerKind::StepTimeout);
        fire(&mut driver, TimerKind::StepBackoff);
    }
    fire(&mut driver, TimerKind::StepTimeout);
    let effects = fail(&mut driver, false);
    assert_eq!(
        effects,
        [cancel(timer_id(
            TimerKind::CompensationTimeout,
            "charge",
            1,
            1
        ))]
    );
    assert_eq!(
        state(&driver),
        suspended_state(
            "charge",
            Phase::Compensation,
            SuspendReason::CompensationFailed
        )
    );
    assert!(!driver.sent_types().contains(&"stock.release".to_owned()));
    assert_eq!(driver.saga.outcome(), None);
}

#[test]
fn compensating_failure_of_an_earlier_attempt_is_ignored() {
    let mut driver = waiting_release();
    fire(&mut driver, TimerKind::CompensationBackoff);
    let current = driver.last_command().clone();
    assert_eq!(current.attempt, 2);
    driver.assert_ignored(failure_of_attempt(&current, 1, true));
    driver.assert_ignored(failure_of_attempt(&current, 1, false));
}

#[test]
fn compensating_replies_for_other_keys_are_ignored_but_a_given_up_success_is_late() {
    let mut driver = compensating_reserve(basic());
    assert_foreign_replies_ignored_but_late(&mut driver, compensation_key("reserve", 1).as_str());
}

#[test]
fn compensating_timeout_schedules_a_backoff() {
    let mut driver = compensating_reserve(basic());
    let effects = fire(&mut driver, TimerKind::CompensationTimeout);
    assert_eq!(
        effects,
        [schedule(
            timer_id(TimerKind::CompensationBackoff, "reserve", 1, 1),
            after(&driver, 3)
        )]
    );
    assert_eq!(driver.saga.status(), Status::Compensating);
}

#[test]
fn compensating_timeout_on_the_last_attempt_suspends() {
    let mut driver = compensating_reserve(basic());
    for _ in 1..3 {
        fire(&mut driver, TimerKind::CompensationTimeout);
        fire(&mut driver, TimerKind::CompensationBackoff);
    }
    let effects = fire(&mut driver, TimerKind::CompensationTimeout);
    assert_eq!(effects, []);
    assert_eq!(
        state(&driver),
        suspended_state(
            "reserve",
            Phase::Compensation,
            SuspendReason::CompensationFailed
        )
    );
    assert_eq!(driver.saga.outcome(), None);
}

#[test]
fn compensating_stale_timers_and_the_deadline_are_ignored() {
    let mut driver = compensating_reserve(deadlines());
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::CompensationBackoff);
    for event in [
        fired(TimerKind::CompensationTimeout, "reserve", 1, 1),
        fired(TimerKind::CompensationBackoff, "reserve", 1, 1),
        fired(TimerKind::StepTimeout, "charge", 1, 1),
        fired(TimerKind::StepBackoff, "charge", 1, 1),
        fired(TimerKind::Deadline, "charge", 1, 1),
        fired(TimerKind::Deadline, "reserve", 1, 1),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn compensating_refuses_cancel() {
    let mut driver = compensating_reserve(basic());
    driver.assert_refused(Event::CancelRequested);
    driver.assert_refused(Event::CancelRequested);
    assert!(!driver.saga.cancel_requested());
}

#[test]
fn compensating_refuses_every_resume() {
    let mut driver = compensating_reserve(basic());
    for event in every_resume(json!({"reservation_id": "RES-9"})) {
        driver.assert_refused(event);
    }
}

// ---- suspended (action step failed, policy suspend) -------------------------

#[test]
fn suspended_step_late_success_moves_on_as_if_in_time() {
    let mut driver = suspended_step_failed();
    let command = driver.last_command().clone();
    let effects = driver.apply(ok(&command));
    assert_eq!(effects, notify_starts(&driver));
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Succeeded);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
    assert_eq!(driver.saga.status(), Status::Running);
}

#[test]
fn suspended_step_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = suspended_step_failed();
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
}

#[test]
fn suspended_step_failures_are_ignored() {
    let mut driver = executing_charge_attempt(suspending(), 2);
    fail(&mut driver, false);
    let current = driver.last_command().clone();
    driver.assert_ignored(retryable(&current));
    driver.assert_ignored(fatal(&current));
    driver.assert_ignored(failure_of_attempt(&current, 1, true));
    driver.assert_ignored(failure_of_attempt(&current, 1, false));
}

#[test]
fn suspended_step_replies_for_other_steps_or_revisions_are_ignored() {
    let mut driver = suspended_step_failed();
    for event in foreign_replies(step_key("charge", 1).as_str()) {
        driver.assert_ignored(event);
    }
}

#[test]
fn suspended_step_timers_are_ignored() {
    let mut driver = suspended_step_failed();
    for event in [
        fired(TimerKind::StepTimeout, "charge", 1, 1),
        fired(TimerKind::StepBackoff, "charge", 1, 1),
        fired(TimerKind::Deadline, "charge", 1, 1),
        fired(TimerKind::StepTimeout, "reserve", 1, 1),
        fired(TimerKind::CompensationTimeout, "reserve", 1, 1),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn suspended_step_cancel_compensates_the_completed_steps() {
    let mut driver = suspended_step_failed();
    let effects = driver.apply(Event::CancelRequested);
    assert_eq!(
        effects,
        [
            send_compensation("reserve", "stock.release", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1),
                after(&driver, 20)
            ),
        ]
    );
    assert_eq!(driver.saga.status(), Status::Compensating);
    assert!(driver.saga.cancel_requested());
    assert_eq!(driver.saga.outcome(), None);
    driver.assert_refused(Event::CancelRequested);
    succeed(&mut driver);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Cancelled);
}

#[test]
fn suspended_step_retry_resends_with_the_same_key_and_a_fresh_budget() {
    let mut driver = suspended_step_failed();
    let effects = driver.apply(resume(Resume::Retry));
    assert_eq!(
        effects,
        [
            send_step("charge", "card.charge", 1, 2),
            schedule(
                timer_id(TimerKind::StepTimeout, "charge", 1, 2),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.saga.status(), Status::Running);
    assert_eq!(driver.last_command().input, driver.commands[1].input);
    // A fresh budget of three attempts: 2, 3 and 4.
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::StepBackoff);
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::StepBackoff);
    assert_eq!(driver.last_command().attempt, 4);
    fail(&mut driver, true);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::StepFailed)
    );
}

#[test]
fn suspended_step_retry_with_input_starts_revision_2() {
    let mut driver = suspended_step_failed();
    let input = json!({"reservation_id": "RES-9"});
    let effects = driver.apply(resume(Resume::RetryWithInput {
        input: input.clone(),
        earlier: None,
    }));
    assert_eq!(
        effects,
        [
            send_step("charge", "card.charge", 2, 1),
            schedule(
                timer_id(TimerKind::StepTimeout, "charge", 2, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(
        driver.last_command().idempotency_key.as_str(),
        "00000000-0000-0000-0000-000000000001:charge:r2"
    );
    assert_eq!(driver.last_command().input, input);
    assert_eq!(driver.saga.steps()[1].revision, 2);
    // Timers of revision 1 are now stale; its replies are late (below).
    driver.assert_ignored(fired(TimerKind::StepTimeout, "charge", 1, 1));
    // Timer retries keep r2, and undoing it names r2.
    for attempt in 2..=3 {
        fire(&mut driver, TimerKind::StepTimeout);
        let effects = fire(&mut driver, TimerKind::StepBackoff);
        assert_eq!(effects[0], send_step("charge", "card.charge", 2, attempt));
    }
    fire(&mut driver, TimerKind::StepTimeout);
    let effects = driver.apply(Event::CancelRequested);
    assert_eq!(effects[0], send_compensation("charge", "card.refund", 2, 1));
    assert_eq!(
        driver
            .last_command()
            .undoes
            .as_ref()
            .map(|key| key.as_str()),
        Some("00000000-0000-0000-0000-000000000001:charge:r2")
    );
}

#[test]
fn suspended_step_retry_with_non_object_input_is_refused() {
    let mut driver = suspended_step_failed();
    for input in [json!("RES-9"), json!(["RES-9"]), json!(null), json!(9)] {
        driver.assert_refused(resume(Resume::RetryWithInput {
            input,
            earlier: None,
        }));
    }
}

#[test]
fn suspended_step_skip_with_valid_output_starts_revision_2_and_moves_on() {
    let mut driver = suspended_step_failed();
    let effects = driver.apply(skip(json!({"charge_id": "CH-9"})));
    assert_eq!(effects, notify_starts(&driver));
    let charge = &driver.saga.steps()[1];
    assert_eq!(charge.status, StepStatus::Skipped);
    assert_eq!(charge.revision, 2);
    assert_eq!(charge.output, Some(json!({"charge_id": "CH-9"})));
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
}

#[test]
fn suspended_step_skip_with_invalid_output_is_refused() {
    let mut driver = suspended_step_failed();
    for output in [json!({}), json!({"charge_id": 9}), json!("CH-9")] {
        driver.assert_refused(skip(output));
    }
}

// ---- suspended (deadline exceeded) -----------------------------------------

#[test]
fn suspended_deadline_late_success_moves_on() {
    let mut driver = suspended_deadline();
    let command = driver.last_command().clone();
    let effects = driver.apply(ok(&command));
    let mut expected = vec![cancel(timer_id(TimerKind::Deadline, "charge", 1, 1))];
    expected.extend(notify_starts(&driver));
    assert_eq!(effects, expected);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
}

#[test]
fn suspended_deadline_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = suspended_deadline();
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
}

#[test]
fn suspended_deadline_failures_are_ignored() {
    let mut driver = suspended_deadline();
    let command = driver.last_command().clone();
    driver.assert_ignored(retryable(&command));
    driver.assert_ignored(fatal(&command));
    driver.assert_ignored(failure_of_attempt(&command, 2, false));
}

#[test]
fn suspended_deadline_replies_for_other_steps_or_revisions_are_ignored() {
    let mut driver = suspended_deadline();
    for event in foreign_replies(step_key("charge", 1).as_str()) {
        driver.assert_ignored(event);
    }
}

#[test]
fn suspended_deadline_timers_are_ignored() {
    let mut driver = suspended_deadline();
    for event in [
        fired(TimerKind::StepBackoff, "charge", 1, 1),
        fired(TimerKind::Deadline, "charge", 1, 1),
        fired(TimerKind::StepTimeout, "charge", 1, 1),
        fired(TimerKind::StepTimeout, "charge", 1, 2),
        fired(TimerKind::Deadline, "reserve", 1, 1),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn suspended_deadline_cancel_compensates_the_completed_steps() {
    let mut driver = suspended_deadline();
    let effects = driver.apply(Event::CancelRequested);
    assert_eq!(
        effects,
        [
            send_compensation("reserve", "stock.release", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 1),
                after(&driver, 20)
            ),
        ]
    );
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Cancelled);
    assert_eq!(driver.saga.status(), Status::Compensating);
    driver.assert_refused(Event::CancelRequested);
    succeed(&mut driver);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
}

#[test]
fn suspended_deadline_retry_starts_a_new_run_with_a_new_deadline() {
    let mut driver = suspended_deadline();
    let effects = driver.apply(resume(Resume::Retry));
    assert_eq!(
        effects,
        [
            schedule(
                timer_id(TimerKind::Deadline, "charge", 1, 2),
                after(&driver, 120)
            ),
            send_step("charge", "card.charge", 1, 2),
            schedule(
                timer_id(TimerKind::StepTimeout, "charge", 1, 2),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.saga.attention(), None);
    assert_eq!(driver.saga.status(), Status::Running);
    assert!(!driver.saga.record().suspend_pending);
}

#[test]
fn suspended_deadline_retry_with_input_starts_revision_2() {
    let mut driver = suspended_deadline();
    let input = json!({"reservation_id": "RES-9"});
    let effects = driver.apply(resume(Resume::RetryWithInput {
        input: input.clone(),
        earlier: None,
    }));
    assert_eq!(
        effects,
        [
            schedule(
                timer_id(TimerKind::Deadline, "charge", 2, 1),
                after(&driver, 120)
            ),
            send_step("charge", "card.charge", 2, 1),
            schedule(
                timer_id(TimerKind::StepTimeout, "charge", 2, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.last_command().input, input);
}

#[test]
fn suspended_deadline_retry_with_non_object_input_is_refused() {
    let mut driver = suspended_deadline();
    driver.assert_refused(resume(Resume::RetryWithInput {
        input: json!("RES-9"),
        earlier: None,
    }));
    driver.assert_refused(resume(Resume::RetryWithInput {
        input: json!(null),
        earlier: None,
    }));
}

#[test]
fn suspended_deadline_skip_with_valid_output_moves_on() {
    let mut driver = suspended_deadline();
    let effects = driver.apply(skip(json!({"charge_id": "CH-9"})));
    assert_eq!(effects, notify_starts(&driver));
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Skipped);
    assert_eq!(driver.saga.steps()[1].revision, 2);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
}

#[test]
fn suspended_deadline_skip_with_invalid_output_is_refused() {
    let mut driver = suspended_deadline();
    driver.assert_refused(skip(json!({"reservation_id": "RES-1"})));
    driver.assert_refused(skip(json!(["CH-9"])));
}

// ---- suspended (compensation failed) ---------------------------------------

#[test]
fn suspended_compensation_late_success_moves_on() {
    let mut driver = suspended_compensation();
    let command = driver.last_command().clone();
    let effects = driver.apply(ok(&command));
    assert_eq!(effects, notify_starts(&driver));
    assert_eq!(
        driver.saga.steps()[0].compensation.status,
        CompensationStatus::Compensated
    );
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
}

#[test]
fn suspended_compensation_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = suspended_compensation();
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
}

#[test]
fn suspended_compensation_failures_are_ignored() {
    let mut driver = suspended_compensation();
    let command = driver.last_command().clone();
    driver.assert_ignored(retryable(&command));
    driver.assert_ignored(fatal(&command));
    driver.assert_ignored(failure_of_attempt(&command, 2, false));
}

#[test]
fn suspended_compensation_replies_for_other_keys_are_ignored_but_a_given_up_success_is_late() {
    let mut driver = suspended_compensation();
    assert_foreign_replies_ignored_but_late(&mut driver, compensation_key("reserve", 1).as_str());
}

#[test]
fn suspended_compensation_timers_are_ignored() {
    let mut driver = suspended_compensation();
    for event in [
        fired(TimerKind::CompensationTimeout, "reserve", 1, 1),
        fired(TimerKind::CompensationBackoff, "reserve", 1, 1),
        fired(TimerKind::StepTimeout, "charge", 1, 1),
        fired(TimerKind::Deadline, "charge", 1, 1),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn suspended_compensation_refuses_cancel() {
    let mut driver = suspended_compensation();
    driver.assert_refused(Event::CancelRequested);
    driver.assert_refused(Event::CancelRequested);
}

#[test]
fn suspended_compensation_retry_resends_with_the_same_key_and_a_fresh_budget() {
    let mut driver = suspended_compensation();
    let effects = driver.apply(resume(Resume::Retry));
    assert_eq!(
        effects,
        [
            send_compensation("reserve", "stock.release", 1, 2),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "reserve", 1, 2),
                after(&driver, 20)
            ),
        ]
    );
    assert_eq!(driver.saga.status(), Status::Compensating);
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::CompensationBackoff);
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::CompensationBackoff);
    assert_eq!(driver.last_command().attempt, 4);
    fail(&mut driver, true);
    assert_eq!(
        state(&driver),
        suspended_state(
            "reserve",
            Phase::Compensation,
            SuspendReason::CompensationFailed
        )
    );
    assert_eq!(driver.saga.outcome(), None);
}

#[test]
fn suspended_compensation_refuses_retry_with_input() {
    let mut driver = suspended_compensation();
    driver.assert_refused(resume(Resume::RetryWithInput {
        input: json!({"reservation_id": "RES-9"}),
        earlier: None,
    }));
    driver.assert_refused(resume(Resume::RetryWithInput {
        input: json!("RES-9"),
        earlier: None,
    }));
}

#[test]
fn suspended_compensation_skip_counts_it_as_undone_by_hand() {
    let mut driver = suspended_compensation();
    let effects = driver.apply(skip(json!({})));
    assert_eq!(effects, notify_starts(&driver));
    assert_eq!(
        driver.saga.steps()[0].compensation.status,
        CompensationStatus::Skipped
    );
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
}

#[test]
fn suspended_compensation_skip_does_not_check_an_output() {
    // A compensation has no output: whatever the operator sends is accepted.
    let mut driver = suspended_compensation();
    let effects = driver.apply(skip(json!("undone by hand")));
    assert_eq!(effects, notify_starts(&driver));
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
}

// ---- suspended (notification failed) ---------------------------------------

#[test]
fn suspended_notification_late_success_finishes() {
    let mut driver = suspended_notification();
    let command = driver.last_command().clone();
    let effects = driver.apply(ok(&command));
    assert_eq!(
        effects,
        [cancel(timer_id(TimerKind::Deadline, "notify", 1, 1))]
    );
    assert_eq!(state(&driver), StateRecord::Completed);
    assert_eq!(driver.saga.status(), Status::Completed);
}

#[test]
fn suspended_notification_success_with_a_wrong_reply_type_is_ignored() {
    let mut driver = suspended_notification();
    let command = driver.last_command().clone();
    driver.assert_ignored(ok_wrong_type(&command));
    driver.assert_ignored(ok_under_failure_type(&command));
}

#[test]
fn suspended_notification_failures_are_ignored() {
    let mut driver = suspended_notification();
    let command = driver.last_command().clone();
    driver.assert_ignored(retryable(&command));
    driver.assert_ignored(fatal(&command));
    driver.assert_ignored(failure_of_attempt(&command, 2, true));
}

#[test]
fn suspended_notification_replies_for_other_steps_or_revisions_are_ignored() {
    let mut driver = suspended_notification();
    for event in foreign_replies(step_key("notify", 1).as_str()) {
        driver.assert_ignored(event);
    }
}

#[test]
fn suspended_notification_timers_are_ignored() {
    let mut driver = suspended_notification();
    for event in [
        fired(TimerKind::StepTimeout, "notify", 1, 1),
        fired(TimerKind::StepBackoff, "notify", 1, 1),
        fired(TimerKind::Deadline, "notify", 1, 1),
        fired(TimerKind::StepTimeout, "charge", 1, 1),
    ] {
        driver.assert_ignored(event);
    }
}

#[test]
fn suspended_notification_refuses_cancel() {
    let mut driver = suspended_notification();
    driver.assert_refused(Event::CancelRequested);
    driver.assert_refused(Event::CancelRequested);
}

#[test]
fn suspended_notification_retry_resends_with_the_same_key() {
    let mut driver = suspended_notification();
    let effects = driver.apply(resume(Resume::Retry));
    assert_eq!(
        effects,
        [
            schedule(
                timer_id(TimerKind::Deadline, "notify", 1, 2),
                after(&driver, 3600)
            ),
            send_step("notify", "crm.notify", 1, 2),
            schedule(
                timer_id(TimerKind::StepTimeout, "notify", 1, 2),
                after(&driver, 30)
            ),
        ]
    );
    assert_eq!(driver.saga.status(), Status::Running);
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Completed);
}

#[test]
fn suspended_notification_retry_with_input_starts_revision_2() {
    let mut driver = suspended_notification();
    let input = json!({"outcome": "completed", "note": "resent"});
    let effects = driver.apply(resume(Resume::RetryWithInput {
        input: input.clone(),
        earlier: None,
    }));
    assert_eq!(
        effects,
        [
            schedule(
                timer_id(TimerKind::Deadline, "notify", 2, 1),
                after(&driver, 3600)
            ),
            send_step("notify", "crm.notify", 2, 1),
            schedule(
                timer_id(TimerKind::StepTimeout, "notify", 2, 1),
                after(&driver, 30)
            ),
        ]
    );
    assert_eq!(driver.last_command().input, input);
}

#[test]
fn suspended_notification_retry_with_non_object_input_is_refused() {
    let mut driver = suspended_notification();
    driver.assert_refused(resume(Resume::RetryWithInput {
        input: json!("again"),
        earlier: None,
    }));
}

#[test]
fn suspended_notification_skip_with_valid_output_finishes() {
    let mut driver = suspended_notification();
    let effects = driver.apply(skip(json!({})));
    assert_eq!(effects, []);
    assert_eq!(driver.saga.status(), Status::Completed);
    assert_eq!(driver.saga.steps()[2].status, StepStatus::Skipped);
    assert_eq!(driver.saga.steps()[2].revision, 2);
}

#[test]
fn suspended_notification_skip_with_invalid_output_is_refused() {
    let mut driver = suspended_notification();
    driver.assert_refused(skip(json!("done")));
    driver.assert_refused(skip(json!(null)));
}

// ---- terminal states -------------------------------------------------------

/// Every reply and timer a finished workflow might still receive.
/// Every reply and timer a finished workflow may still get, but the
/// successes of step commands it gave up (those are late, not stale).
fn late_arrivals(driver: &Driver) -> Vec<Event> {
    let mut events = Vec::new();
    for command in &driver.commands {
        events.push(ok(command));
        events.push(ok_wrong_type(command));
        events.push(retryable(command));
        events.push(fatal(command));
        events.push(failure_of_attempt(command, command.attempt + 1, false));
    }
    events.extend(foreign_replies(""));
    for step in ["reserve", "charge", "notify"] {
        for kind in [
            TimerKind::StepTimeout,
            TimerKind::StepBackoff,
            TimerKind::Deadline,
            TimerKind::CompensationTimeout,
            TimerKind::CompensationBackoff,
        ] {
            events.push(fired(kind, step, 1, 1));
        }
    }
    events.retain(|event| !is_given_up_success(driver, event));
    events
}

fn assert_finished_ignores_late_arrivals(mut driver: Driver, outcome: Outcome) {
    assert_eq!(driver.saga.outcome(), Some(outcome));
    assert_eq!(driver.saga.status(), Status::from(outcome));
    assert_eq!(driver.saga.in_flight(), None);
    for event in late_arrivals(&driver) {
        driver.assert_ignored(event);
    }
}

fn assert_finished_refuses_requests(mut driver: Driver) {
    driver.assert_refused(Event::CancelRequested);
    driver.assert_refused(Event::CancelRequested);
    for event in every_resume(json!({"charge_id": "CH-9"})) {
        driver.assert_refused(event);
    }
    driver.assert_refused(skip(json!({})));
}

#[test]
fn completed_ignores_replies_and_timers() {
    assert_finished_ignores_late_arrivals(completed(), Outcome::Completed);
}

#[test]
fn completed_refuses_cancel_and_resume() {
    assert_finished_refuses_requests(completed());
}

#[test]
fn compensated_ignores_replies_and_timers() {
    assert_finished_ignores_late_arrivals(compensated(), Outcome::Compensated);
}

#[test]
fn compensated_refuses_cancel_and_resume() {
    assert_finished_refuses_requests(compensated());
}

#[test]
fn failed_ignores_replies_and_timers() {
    assert_finished_ignores_late_arrivals(failed(), Outcome::Failed);
}

#[test]
fn failed_refuses_cancel_and_resume() {
    assert_finished_refuses_requests(failed());
}

#[test]
fn cancelled_ignores_replies_and_timers() {
    assert_finished_ignores_late_arrivals(cancelled(), Outcome::Cancelled);
}

#[test]
fn cancelled_refuses_cancel_and_resume() {
    assert_finished_refuses_requests(cancelled());
}

// ---- more pairs: output checks, deadlines across attempts, other shapes -----

/// `reserve` has a 1m deadline that suspends.
fn reserve_deadline_suspends() -> Arc<Definition> {
    tiny(
        "compensate",
        r#"deadline = { after = "1m", escalation = "suspend" }"#,
        "",
    )
}

/// `suspended(reserve, step, deadline_exceeded)`: nothing is done yet.
fn suspended_first_step() -> Driver {
    let mut driver = Driver::start(reserve_deadline_suspends());
    fail(&mut driver, true);
    fire(&mut driver, TimerKind::Deadline);
    assert_eq!(
        state(&driver),
        suspended_state("reserve", Phase::Step, SuspendReason::DeadlineExceeded)
    );
    driver
}

#[test]
fn executing_success_with_an_unusable_output_fails_the_step_as_possibly_done() {
    let mut driver = executing_charge(basic());
    let command = driver.last_command().clone();
    let effects = driver.apply(success(&command, json!({"charge_id": 7})));
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "charge", 1, 1)),
            send_compensation("charge", "card.refund", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Failed);
    assert!(driver.saga.steps()[1].possibly_done);
}

#[test]
fn suspended_step_duplicate_of_an_unusable_success_is_ignored() {
    let mut driver = executing_charge(suspending());
    let command = driver.last_command().clone();
    let unusable = success(&command, json!({}));
    driver.apply(unusable.clone());
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::StepFailed)
    );
    driver.assert_ignored(unusable);
}

#[test]
fn executing_deadline_of_the_run_applies_at_a_later_attempt() {
    let mut driver = executing_charge_attempt(deadlines(), 2);
    let effects = driver.apply(fired(TimerKind::Deadline, "charge", 1, 1));
    assert_eq!(effects, []);
    assert!(driver.saga.record().suspend_pending);
    fail(&mut driver, true);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::DeadlineExceeded)
    );
}

#[test]
fn waiting_duplicate_deadline_timer_is_ignored() {
    let mut driver = Driver::start(deadlines());
    driver.apply(fired(TimerKind::Deadline, "reserve", 1, 1));
    fail(&mut driver, true);
    driver.advance(1);
    driver.assert_ignored(fired(TimerKind::Deadline, "reserve", 1, 1));
}

#[test]
fn suspended_first_step_cancel_ends_the_money_flow_cancelled() {
    let mut driver = suspended_first_step();
    let effects = driver.apply(Event::CancelRequested);
    assert_eq!(effects, notify_starts(&driver));
    assert_eq!(driver.saga.outcome(), Some(Outcome::Cancelled));
    assert_eq!(driver.saga.steps()[0].status, StepStatus::Cancelled);
    assert_eq!(driver.saga.status(), Status::Running);
}

#[test]
fn suspended_first_step_skip_feeds_its_output_to_the_next_step() {
    let mut driver = suspended_first_step();
    let effects = driver.apply(skip(json!({"reservation_id": "RES-9"})));
    assert_eq!(
        effects,
        [
            send_step("charge", "card.charge", 1, 1),
            schedule(
                timer_id(TimerKind::StepTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(
        driver.last_command().input,
        json!({"reservation_id": "RES-9"})
    );
    let reserve = &driver.saga.steps()[0];
    assert_eq!((reserve.status, reserve.revision), (StepStatus::Skipped, 2));
    assert_eq!(driver.saga.attention(), None);
}

const WITHOUT_NOTIFICATION: &str = r#"
name = "bare"

[[steps]]
name = "a"
command = "x.a"
timeout = "10s"
retry = { max_attempts = 1, initial_backoff = "1s", max_backoff = "1s" }
on_failure = "compensate"
compensation = { command = "x.undo_a" }

[[steps]]
name = "b"
command = "x.b"
timeout = "10s"
retry = { max_attempts = 1, initial_backoff = "1s", max_backoff = "1s" }
on_failure = "compensate"

[[steps]]
name = "c"
command = "x.c"
timeout = "10s"
retry = { max_attempts = 1, initial_backoff = "1s", max_backoff = "1s" }
on_failure = "compensate"
"#;

#[test]
fn compensation_skips_completed_steps_without_one_and_ends_without_notification() {
    let mut driver = Driver::start(definition(WITHOUT_NOTIFICATION));
    succeed(&mut driver);
    succeed(&mut driver);
    let effects = fail(&mut driver, false);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepTimeout, "c", 1, 1)),
            send_compensation("a", "x.undo_a", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "a", 1, 1),
                after(&driver, 10)
            ),
        ]
    );
    let effects = succeed(&mut driver);
    assert_eq!(
        effects,
        [cancel(timer_id(TimerKind::CompensationTimeout, "a", 1, 1))]
    );
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
    assert_eq!(driver.saga.status(), Status::Compensated);
}

#[test]
fn a_single_attempt_timing_out_fails_for_good_and_is_undone() {
    let mut driver = Driver::start(definition(WITHOUT_NOTIFICATION));
    let effects = fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(
        effects,
        [
            send_compensation("a", "x.undo_a", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "a", 1, 1),
                after(&driver, 10)
            ),
        ]
    );
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Compensated);
}

// ---- late replies, earlier revisions --------------------------------------

/// Whether `event` is a success of a step command the workflow sent and
/// then gave up: the effect happened after all, so it is taken as late.
fn is_given_up_success(driver: &Driver, event: &Event) -> bool {
    let Event::ReplyReceived(reply) = event else {
        return false;
    };
    if !matches!(reply.result, ReplyResult::Succeeded { .. }) {
        return false;
    }
    let definition = driver.saga.definition();
    driver
        .saga
        .steps()
        .iter()
        .zip(definition.steps())
        .any(|(progress, spec)| {
            step_key(&progress.name, progress.revision) == reply.key
                && spec.command.success_reply == reply.reply_type
                && progress.status != StepStatus::Succeeded
                && (1..=progress.attempts).contains(&reply.attempt)
        })
}

/// Every foreign reply is ignored but the success of `charge`, which failed
/// for good: that is late, flags the workflow and waits for the reverse walk.
fn assert_foreign_replies_ignored_but_late(driver: &mut Driver, except: &str) {
    let (late, ignored): (Vec<Event>, Vec<Event>) = foreign_replies(except)
        .into_iter()
        .partition(|event| is_given_up_success(driver, event));
    for event in ignored {
        driver.assert_ignored(event);
    }
    assert_eq!(late.len(), 1, "{late:?}");
    let before = state(driver);
    let effects = driver.assert_late(late[0].clone());
    assert!(
        !effects
            .iter()
            .any(|effect| matches!(effect, Fx::Send { .. })),
        "{effects:?}"
    );
    assert_eq!(state(driver), before, "the walk under way goes on");
    assert!(driver.saga.steps()[1].possibly_done);
    assert!(driver.saga.steps()[1].done_late);
    driver.assert_ignored(late[0].clone());
}

#[test]
fn compensating_a_late_success_of_the_failed_step_is_undone_next() {
    let mut driver = compensating_reserve(basic());
    let charge = driver.commands[1].clone();
    driver.assert_late(ok(&charge));
    let effects = succeed(&mut driver);
    assert_eq!(effects[1], send_compensation("charge", "card.refund", 1, 1));
    assert_eq!(
        driver.last_command().input,
        json!({"charge_id": "CH-1"}),
        "the refund names the charge the late success reported"
    );
    succeed(&mut driver);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
}

/// `suspended(charge, step, step_failed)` after every attempt timed out:
/// revision 1 is possibly done.
fn suspended_possibly_charged() -> Driver {
    let mut driver = executing_charge(suspending());
    for _ in 1..3 {
        fire(&mut driver, TimerKind::StepTimeout);
        fire(&mut driver, TimerKind::StepBackoff);
    }
    fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::StepFailed)
    );
    assert!(driver.saga.steps()[1].possibly_done);
    driver
}

fn new_card(earlier: Option<Earlier>) -> Event {
    resume(Resume::RetryWithInput {
        input: json!({"reservation_id": "RES-1", "card": "new"}),
        earlier,
    })
}

/// The same, resumed with a new card by an operator who says the first
/// charge did not happen: revision 2's first attempt is in flight.
fn charging_again_with_a_new_card() -> Driver {
    let mut driver = suspended_possibly_charged();
    driver.apply(new_card(Some(Earlier::NotDone)));
    assert_eq!(driver.last_command().idempotency_key, step_key("charge", 2));
    let earlier = &driver.saga.steps()[1].earlier_revisions[0];
    assert_eq!(earlier.revision, 1);
    assert_eq!(earlier.happened, Happened::NotDone);
    assert_eq!(earlier.declared, Some(Earlier::NotDone));
    driver
}

#[test]
fn a_late_success_of_a_replaced_revision_is_refunded_with_its_own_key_before_the_next_attempt() {
    let mut driver = charging_again_with_a_new_card();
    let first = driver.commands[1].clone();
    assert_eq!(first.idempotency_key, step_key("charge", 1));
    let effects = driver.assert_late(success(&first, json!({"charge_id": "CH-FIRST"})));
    assert!(
        !effects
            .iter()
            .any(|effect| matches!(effect, Fx::Send { .. })),
        "revision 2 is in flight: {effects:?}"
    );
    let earlier = &driver.saga.steps()[1].earlier_revisions[0];
    assert_eq!(earlier.happened, Happened::Done);
    assert_eq!(earlier.output, Some(json!({"charge_id": "CH-FIRST"})));
    // The same news again changes nothing.
    driver.assert_ignored(success(&first, json!({"charge_id": "CH-FIRST"})));

    // Revision 2 times out; before its next attempt leaves, revision 1 is
    // refunded, naming revision 1 and its own charge.
    fire(&mut driver, TimerKind::StepTimeout);
    let effects = fire(&mut driver, TimerKind::StepBackoff);
    assert_eq!(
        effects,
        [
            send_compensation("charge", "card.refund", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(
        driver.last_command().input,
        json!({"charge_id": "CH-FIRST"})
    );
    assert_eq!(driver.saga.status(), Status::Compensating);
    assert_eq!(
        driver.saga.in_flight().map(|flight| flight.key),
        Some(compensation_key("charge", 1))
    );
    let effects = succeed(&mut driver);
    assert_eq!(effects[1], send_step("charge", "card.charge", 2, 2));
    assert_eq!(
        driver.saga.steps()[1].earlier_revisions[0]
            .compensation
            .status,
        CompensationStatus::Compensated
    );
    succeed(&mut driver);
    assert_eq!(
        driver.saga.in_flight().map(|flight| flight.step),
        Some("notify".to_owned())
    );
}

#[test]
fn a_refund_owed_leaves_before_the_next_step_once_the_new_revision_succeeds() {
    let mut driver = charging_again_with_a_new_card();
    let first = driver.commands[1].clone();
    driver.assert_late(ok(&first));
    let effects = succeed(&mut driver);
    assert!(
        effects.contains(&send_compensation("charge", "card.refund", 1, 1)),
        "{effects:?}"
    );
    assert!(!effects.contains(&send_step("notify", "crm.notify", 1, 1)));
    let effects = succeed(&mut driver);
    assert!(
        effects.contains(&send_step("notify", "crm.notify", 1, 1)),
        "{effects:?}"
    );
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Completed);
}

#[test]
fn a_late_success_while_suspended_is_refunded_at_once_and_the_workflow_halts_again() {
    let mut driver = charging_again_with_a_new_card();
    // Revision 2 is declined: the step halts for an operator.
    fail(&mut driver, false);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::StepFailed)
    );
    let first = driver.commands[1].clone();
    let effects = driver.assert_late(ok(&first));
    assert_eq!(effects[0], send_compensation("charge", "card.refund", 1, 1));
    succeed(&mut driver);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::StepFailed)
    );
}

#[test]
fn a_late_success_after_the_workflow_completed_is_refunded_and_it_ends_completed_again() {
    let mut driver = charging_again_with_a_new_card();
    succeed(&mut driver);
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Completed);
    let first = driver.commands[1].clone();
    let effects = driver.assert_late(ok(&first));
    assert_eq!(effects[0], send_compensation("charge", "card.refund", 1, 1));
    assert_eq!(driver.saga.status(), Status::Compensating);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Completed));
    // A retry of the refund keeps its key and revision.
    fire(&mut driver, TimerKind::CompensationTimeout);
    let effects = fire(&mut driver, TimerKind::CompensationBackoff);
    assert_eq!(effects[0], send_compensation("charge", "card.refund", 1, 2));
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Completed);
    assert_eq!(driver.saga.in_flight(), None);
}

#[test]
fn a_late_success_after_compensation_is_undone_and_a_terminated_workflow_only_records_it() {
    let mut driver = compensated();
    let charge = driver.commands[1].clone();
    let effects = driver.assert_late(ok(&charge));
    assert_eq!(effects[0], send_compensation("charge", "card.refund", 1, 1));
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Compensated);

    let mut driver = waiting_charge(basic());
    driver.apply(Event::TerminateRequested);
    let charge = driver.commands[1].clone();
    let effects = driver.assert_late(ok(&charge));
    assert_eq!(effects, []);
    assert_eq!(driver.saga.status(), Status::Terminated);
    driver.assert_ignored(ok(&charge));
}

#[test]
fn a_late_failure_for_good_of_a_replaced_revision_makes_it_known_not_done() {
    let mut driver = suspended_possibly_charged();
    let effects = driver.apply(new_card(Some(Earlier::Undo)));
    assert_eq!(effects[0], send_compensation("charge", "card.refund", 1, 1));
    let last_of_first = driver.commands[3].clone();
    assert_eq!(last_of_first.idempotency_key, step_key("charge", 1));
    assert_eq!(last_of_first.attempt, 3);
    // A retryable failure leaves it as uncertain as it was.
    driver.assert_ignored(retryable(&last_of_first));
    driver.assert_late(fatal(&last_of_first));
    assert_eq!(
        driver.saga.steps()[1].earlier_revisions[0].happened,
        Happened::NotDone
    );
    driver.assert_ignored(fatal(&last_of_first));
}

/// `suspended(charge, step, deadline_exceeded)` under `deadlines()`, its
/// latest attempt unanswered.
fn suspended_at_the_deadline_possibly_charged(mut driver: Driver) -> Driver {
    fire(&mut driver, TimerKind::StepTimeout);
    fire(&mut driver, TimerKind::Deadline);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::DeadlineExceeded)
    );
    assert!(driver.saga.steps()[1].possibly_done);
    driver
}

#[test]
fn compensation_undoes_every_revision_newest_first_each_with_its_own_key() {
    // Revisions 1 and 2 of charge each time out and are replaced by an
    // operator who says they did not happen; both succeeded after all.
    let driver = executing_charge(deadlines());
    let mut driver = suspended_at_the_deadline_possibly_charged(driver);
    driver.apply(new_card(Some(Earlier::NotDone)));
    let mut driver = suspended_at_the_deadline_possibly_charged(driver);
    driver.apply(resume(Resume::RetryWithInput {
        input: json!({"reservation_id": "RES-1", "card": "third"}),
        earlier: Some(Earlier::NotDone),
    }));
    assert_eq!(driver.last_command().idempotency_key, step_key("charge", 3));
    let first = driver.commands[1].clone();
    let second = driver.commands[2].clone();
    assert_eq!(first.idempotency_key, step_key("charge", 1));
    assert_eq!(second.idempotency_key, step_key("charge", 2));
    driver.assert_late(success(&first, json!({"charge_id": "CH-1"})));
    driver.assert_late(success(&second, json!({"charge_id": "CH-2"})));
    // Revision 3 is declined: the walk undoes revision 2, then 1, then
    // the reservation.
    let effects = fail(&mut driver, false);
    assert!(
        effects.contains(&send_compensation("charge", "card.refund", 2, 1)),
        "{effects:?}"
    );
    assert_eq!(driver.last_command().input, json!({"charge_id": "CH-2"}));
    let effects = succeed(&mut driver);
    assert_eq!(effects[1], send_compensation("charge", "card.refund", 1, 1));
    assert_eq!(driver.last_command().input, json!({"charge_id": "CH-1"}));
    let effects = succeed(&mut driver);
    assert_eq!(
        effects[1],
        send_compensation("reserve", "stock.release", 1, 1)
    );
    succeed(&mut driver);
    assert_eq!(driver.saga.outcome(), Some(Outcome::Compensated));
    for earlier in &driver.saga.steps()[1].earlier_revisions {
        assert_eq!(earlier.compensation.status, CompensationStatus::Compensated);
    }
}

// ---- what the operator says of the earlier attempt -------------------------

#[test]
fn a_new_revision_of_a_possibly_done_step_needs_earlier_and_says_why() {
    let mut driver = suspended_possibly_charged();
    let refusal = |driver: &mut Driver, event: Event| match driver.handle(event).disposition {
        q2c_core::saga::Disposition::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let reason = refusal(&mut driver, new_card(None));
    assert!(reason.starts_with("`earlier` is required"), "{reason}");
    assert!(
        reason.contains("`undo`") && reason.contains("`not_done`"),
        "{reason}"
    );
    let reason = refusal(&mut driver, skip_with(json!({"charge_id": "CH-9"}), None));
    assert!(
        reason.contains("`done`"),
        "a skip may also say done: {reason}"
    );
    let reason = refusal(&mut driver, new_card(Some(Earlier::Done)));
    assert!(reason.contains("only a skip"), "{reason}");
    // A retry keeps the key: there is no earlier attempt to speak of.
    let reason = refusal(
        &mut driver,
        Request::Resume {
            input_patch: None,
            earlier: Some(Earlier::Undo),
        }
        .event(),
    );
    assert!(
        reason.contains("applies only to a new revision"),
        "{reason}"
    );
    assert_eq!(driver.saga.steps()[1].revision, 1, "nothing changed");
}

#[test]
fn earlier_where_nothing_is_uncertain_is_refused() {
    // The charge was declined: nothing went unanswered.
    let mut driver = suspended_step_failed();
    for earlier in Earlier::ALL {
        let decision = driver.handle(new_card(Some(earlier)));
        assert!(
            matches!(&decision.disposition,
                q2c_core::saga::Disposition::Refused { reason } if reason.contains("means nothing here")),
            "{earlier:?}: {decision:?}"
        );
    }
    driver.apply(new_card(None));
    assert_eq!(
        driver.saga.steps()[1].earlier_revisions[0].happened,
        Happened::NotDone
    );
}

#[test]
fn earlier_undo_refunds_the_first_charge_before_the_new_card_is_charged() {
    let mut driver = suspended_possibly_charged();
    let effects = driver.apply(new_card(Some(Earlier::Undo)));
    assert_eq!(
        effects,
        [
            send_compensation("charge", "card.refund", 1, 1),
            schedule(
                timer_id(TimerKind::CompensationTimeout, "charge", 1, 1),
                after(&driver, 15)
            ),
        ]
    );
    assert_eq!(driver.saga.status(), Status::Compensating);
    // The refund fails for good: the new card is not charged, an operator
    // is needed.
    fail(&mut driver, false);
    assert_eq!(
        state(&driver),
        suspended_state(
            "charge",
            Phase::Compensation,
            SuspendReason::CompensationFailed
        )
    );
    assert!(
        !driver
            .commands
            .iter()
            .any(|command| command.idempotency_key == step_key("charge", 2))
    );
    let effects = driver.apply(resume(Resume::Retry));
    assert_eq!(effects[0], send_compensation("charge", "card.refund", 1, 2));
    let effects = succeed(&mut driver);
    assert!(
        effects.contains(&send_step("charge", "card.charge", 2, 1)),
        "{effects:?}"
    );
    let earlier = &driver.saga.steps()[1].earlier_revisions[0];
    assert_eq!(earlier.declared, Some(Earlier::Undo));
    assert_eq!(earlier.compensation.status, CompensationStatus::Compensated);
}

#[test]
fn skipping_with_earlier_done_takes_the_attempt_as_the_result_and_undoes_nothing() {
    let mut driver = suspended_possibly_charged();
    let effects = driver.apply(skip_with(
        json!({"charge_id": "CH-BY-HAND"}),
        Some(Earlier::Done),
    ));
    assert!(
        effects.contains(&send_step("notify", "crm.notify", 1, 1)),
        "{effects:?}"
    );
    let earlier = &driver.saga.steps()[1].earlier_revisions[0];
    assert_eq!(earlier.happened, Happened::Done);
    assert_eq!(earlier.output, Some(json!({"charge_id": "CH-BY-HAND"})));
    // Its success, arriving late, is no news.
    let first = driver.commands[1].clone();
    driver.assert_ignored(ok(&first));
    succeed(&mut driver);
    assert_eq!(driver.saga.status(), Status::Completed);
}

#[test]
fn skipping_with_earlier_undo_refunds_before_the_next_step() {
    let mut driver = suspended_possibly_charged();
    let effects = driver.apply(skip_with(
        json!({"charge_id": "CH-BY-HAND"}),
        Some(Earlier::Undo),
    ));
    assert!(
        effects.contains(&send_compensation("charge", "card.refund", 1, 1)),
        "{effects:?}"
    );
    let effects = succeed(&mut driver);
    assert!(
        effects.contains(&send_step("notify", "crm.notify", 1, 1)),
        "{effects:?}"
    );
}

#[test]
fn earlier_undo_is_refused_where_there_is_no_compensation() {
    // The notification timed out on both attempts: it may have been sent.
    let mut driver = executing_notify();
    fire(&mut driver, TimerKind::StepTimeout);
    fire(&mut driver, TimerKind::StepBackoff);
    fire(&mut driver, TimerKind::StepTimeout);
    assert_eq!(
        state(&driver),
        suspended_state("notify", Phase::Step, SuspendReason::NotificationFailed)
    );
    let decision = driver.handle(skip_with(json!({}), Some(Earlier::Undo)));
    assert!(
        matches!(&decision.disposition,
            q2c_core::saga::Disposition::Refused { reason } if reason.contains("cannot undo it")),
        "{decision:?}"
    );
    driver.apply(skip_with(json!({}), Some(Earlier::NotDone)));
    assert_eq!(driver.saga.status(), Status::Completed);
}

#[test]
fn a_skipped_compensation_takes_no_earlier() {
    let mut driver = suspended_compensation();
    let decision = driver.handle(skip_with(json!({}), Some(Earlier::Done)));
    assert!(
        matches!(&decision.disposition,
            q2c_core::saga::Disposition::Refused { reason } if reason.contains("means nothing for a compensation")),
        "{decision:?}"
    );
}

#[test]
fn a_deadline_that_passes_during_an_undo_still_counts() {
    // charge's 2m deadline suspends. The operator resumes with a new card
    // and asks to undo the first charge; the new run's deadline passes
    // while that refund is in flight.
    let driver = executing_charge(deadlines());
    let mut driver = suspended_at_the_deadline_possibly_charged(driver);
    let effects = driver.apply(new_card(Some(Earlier::Undo)));
    assert!(
        effects.contains(&send_compensation("charge", "card.refund", 1, 1)),
        "{effects:?}"
    );
    let effects = fire(&mut driver, TimerKind::Deadline);
    assert_eq!(effects, [], "flagged; the refund goes on");
    assert_eq!(
        driver.saga.attention().unwrap().deadline,
        Some(timer_id(TimerKind::Deadline, "charge", 2, 1))
    );
    // Once refunded, the workflow halts as the deadline asked instead of
    // charging the new card.
    succeed(&mut driver);
    assert_eq!(
        state(&driver),
        suspended_state("charge", Phase::Step, SuspendReason::DeadlineExceeded)
    );
    assert!(
        !driver
            .commands
            .iter()
            .any(|command| command.idempotency_key == step_key("charge", 2))
    );
}

#[test]
fn a_success_of_the_halted_step_during_an_undo_moves_it_on_and_cannot_be_declared_not_done() {
    // Revision 1 of charge was replaced (not done, said the operator);
    // revision 2 is declined and halts the step.
    let mut driver = charging_again_with_a_new_card();
    fail(&mut driver, false);
    let first = driver.commands[1].clone();
    let second = driver.last_of("card.charge");
    assert_eq!(second.idempotency_key, step_key("charge", 2));
    // Revision 1's late success: its refund leaves at once.
    let effects = driver.assert_late(ok(&first));
    assert_eq!(effects[0], send_compensation("charge", "card.refund", 1, 1));
    // Meanwhile revision 2 turns out to have succeeded after all.
    driver.assert_late(success(&second, json!({"charge_id": "CH-2"})));
    let effects = succeed(&mut driver);
    assert!(
        effects.contains(&send_step("notify", "crm.notify", 1, 1)),
        "the refund done, the success moves the workflow on: {effects:?}"
    );
    assert_eq!(driver.saga.steps()[1].status, StepStatus::Succeeded);
    assert_eq!(
        driver.saga.steps()[1].output,
        Some(json!({"charge_id": "CH-2"}))
    );
}

#[test]
fn a_late_compensation_success_in_a_live_workflow_is_recorded() {
    // The release is declared done by hand; then the connector's own
    // release succeeds: the operator is told it may be undone twice.
    let mut driver = suspended_compensation();
    let release = driver.last_of("stock.release");
    driver.apply(skip(json!({})));
    let effects = driver.assert_late(ok(&release));
    assert_eq!(effects, []);
    assert!(
        driver
            .saga
            .attention()
            .unwrap()
            .reason
            .contains("undone twice"),
        "{:?}",
        driver.saga.attention()
    );
}
