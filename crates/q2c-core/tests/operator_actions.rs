//! What an operator's actions do to a saga: pause and unpause (replies and
//! timers held, timers re-armed with their remaining time), retry now,
//! terminate, resume with a merge patch, and skip with the operator's
//! output. Which actions each state allows is checked for every reachable
//! state in `properties.rs`; these tests pin the effects.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use chrono::TimeDelta;
use q2c_core::saga::{
    Action, Disposition, Event, Request, StateRecord, Status, StepStatus, TimerKind,
};
use serde_json::json;
use support::*;

fn act(driver: &mut Driver, request: Request) -> Vec<Fx> {
    driver.apply(request.event())
}

fn shipped() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/quote-to-cash.toml"
    ))
    .unwrap()
}

/// The quote-to-cash definition with `create_order` suspending on failure.
fn suspend_at_order() -> std::sync::Arc<q2c_core::definition::Definition> {
    definition(&shipped().replacen("on_failure = \"compensate\"", "on_failure = \"suspend\"", 1))
}

/// The quote-to-cash definition with `collect_payment` suspending on
/// failure, as an operator who wants to fix payments by hand would set it.
fn suspend_at_payment() -> std::sync::Arc<q2c_core::definition::Definition> {
    let text = shipped().replace(
        "on_failure = \"compensate\"\ndeadline",
        "on_failure = \"suspend\"\ndeadline",
    );
    assert!(text.contains("on_failure = \"suspend\""));
    definition(&text)
}

#[test]
fn a_paused_workflow_holds_a_reply_and_applies_it_on_unpause() {
    let mut driver = Driver::start(quote_to_cash());
    assert_eq!(
        driver.saga.allowed_actions(),
        [Action::Cancel, Action::Terminate, Action::Pause]
    );
    let effects = act(&mut driver, Request::Pause);
    assert_eq!(effects, [Fx::Freeze]);
    assert!(driver.saga.paused());
    assert_eq!(
        driver.saga.allowed_actions(),
        [Action::Cancel, Action::Terminate, Action::Unpause]
    );

    let before = driver.saga.steps().to_vec();
    let effects = fx(&driver.succeed_current().effects);
    assert!(effects.is_empty(), "a held reply does nothing: {effects:?}");
    assert_eq!(driver.saga.steps(), before.as_slice());
    assert_eq!(driver.saga.held().len(), 1);
    assert_eq!(driver.commands.len(), 1, "no command while paused");

    let effects = act(&mut driver, Request::Unpause);
    assert_eq!(effects[0], Fx::Thaw);
    assert!(
        effects.iter().any(|effect| matches!(effect,
            Fx::Send { command_type, .. } if command_type == "billing.issue_invoice")),
        "the held success moved the workflow on: {effects:?}"
    );
    assert_eq!(driver.saga.steps()[0].status, StepStatus::Succeeded);
    assert!(driver.saga.held().is_empty());
}

#[test]
fn a_paused_workflows_timer_resumes_with_its_remaining_time() {
    let mut driver = Driver::start(quote_to_cash());
    // create_order times out after 30 s; pause 10 s in.
    driver.advance(10);
    act(&mut driver, Request::Pause);
    assert!(driver.timers.is_empty());
    assert_eq!(driver.frozen.len(), 1);
    assert_eq!(driver.frozen[0].1, TimeDelta::seconds(20));

    // An hour later, unpaused: 20 s are left.
    driver.advance(3600);
    act(&mut driver, Request::Unpause);
    let (timer, due_at) = driver.timers[0].clone();
    assert_eq!(timer.kind, TimerKind::StepTimeout);
    assert_eq!(due_at, driver.now + TimeDelta::seconds(20));
}

#[test]
fn a_timer_that_races_a_pause_is_held_like_a_reply() {
    let mut driver = Driver::start(quote_to_cash());
    act(&mut driver, Request::Pause);
    let timeout = timer_id(TimerKind::StepTimeout, "create_order", 1, 1);
    let decision = driver.handle(Event::TimerFired(timeout));
    assert_eq!(decision.disposition, Disposition::Applied);
    assert_eq!(
        driver.saga.record().state,
        StateRecord::Executing {
            step: "create_order".into(),
            attempt: 1
        }
    );
    let effects = act(&mut driver, Request::Unpause);
    assert!(
        effects.iter().any(|effect| matches!(effect,
            Fx::Schedule { timer, .. } if timer.kind == TimerKind::StepBackoff)),
        "the held timeout was applied: {effects:?}"
    );
}

#[test]
fn commands_and_timers_scheduled_while_paused_are_frozen_at_once() {
    let mut driver = Driver::start(suspend_at_payment());
    driver.succeed_current();
    driver.succeed_current();
    driver.fail(false);
    assert_eq!(driver.saga.status(), Status::Suspended);
    act(&mut driver, Request::Pause);
    let effects = act(
        &mut driver,
        Request::Resume {
            input_patch: None,
            earlier: None,
        },
    );
    assert!(
        effects
            .iter()
            .any(|effect| matches!(effect, Fx::Send { .. }))
    );
    assert_eq!(effects.last(), Some(&Fx::Freeze), "{effects:?}");
    assert!(driver.timers.is_empty(), "the new timeout is frozen");
}

#[test]
fn retry_skips_the_rest_of_the_backoff() {
    let mut driver = Driver::start(quote_to_cash());
    assert_eq!(
        driver.saga.allowed_actions(),
        [Action::Cancel, Action::Terminate, Action::Pause]
    );
    driver.assert_refused(Request::Retry.event());
    driver.fail(true);
    assert!(driver.has_timer(TimerKind::StepBackoff));
    assert_eq!(
        driver.saga.allowed_actions(),
        [
            Action::Retry,
            Action::Cancel,
            Action::Terminate,
            Action::Pause
        ]
    );
    let effects = act(&mut driver, Request::Retry);
    assert_eq!(
        effects,
        [
            cancel(timer_id(TimerKind::StepBackoff, "create_order", 1, 1)),
            send_step("create_order", "erp.create_order", 1, 2),
            schedule(
                timer_id(TimerKind::StepTimeout, "create_order", 1, 2),
                driver.now + TimeDelta::seconds(30)
            ),
        ]
    );
}

#[test]
fn terminate_stops_without_undoing_or_notifying() {
    let mut driver = Driver::start(quote_to_cash());
    driver.succeed_current();
    act(&mut driver, Request::Pause);
    driver.succeed_current();
    assert_eq!(driver.saga.held().len(), 1);
    let effects = act(&mut driver, Request::Terminate);
    assert_eq!(effects, [Fx::Clear, Fx::Withdraw]);
    assert_eq!(driver.saga.status(), Status::Terminated);
    assert_eq!(driver.saga.outcome(), None);
    assert!(!driver.saga.paused());
    assert!(
        driver.saga.held().is_empty(),
        "held events are applied after it"
    );
    let attention = driver
        .saga
        .attention()
        .expect("the held success is late news");
    assert!(
        attention.reason.contains(":issue_invoice:r1"),
        "{attention:?}"
    );
    assert!(driver.saga.allowed_actions().is_empty());
    assert_eq!(
        driver.sent_types(),
        ["erp.create_order", "billing.issue_invoice"],
        "nothing undone, no notification"
    );
    driver.assert_refused(Request::Unpause.event());
    driver.assert_refused(Request::Cancel.event());
}

#[test]
fn resume_with_a_patch_starts_a_new_revision_and_keeps_the_old_one() {
    let mut driver = Driver::start(suspend_at_payment());
    driver.succeed_current();
    driver.succeed_current();
    driver.fail(false);
    assert_eq!(
        driver.saga.allowed_actions(),
        [
            Action::Resume,
            Action::Skip,
            Action::Cancel,
            Action::Terminate,
            Action::Pause
        ]
    );
    act(
        &mut driver,
        Request::Resume {
            input_patch: Some(json!({"payment_method": "card-4242"})),
            earlier: None,
        },
    );
    let command = driver.last_command().clone();
    assert_eq!(command.idempotency_key, step_key("collect_payment", 2));
    assert_eq!(command.attempt, 1);
    assert_eq!(command.input["payment_method"], "card-4242");
    assert_eq!(command.input["invoice_id"], "INV-1", "the rest is kept");
    let payment = &driver.saga.steps()[2];
    assert_eq!(payment.earlier_revisions.len(), 1);
    assert_eq!(payment.earlier_revisions[0].revision, 1);
    assert_eq!(
        payment.earlier_revisions[0].last_error.as_deref(),
        Some("declined")
    );
    assert_eq!(payment.last_error, None);
}

#[test]
fn resume_with_a_patch_that_changes_nothing_keeps_the_key() {
    let mut driver = Driver::start(suspend_at_payment());
    driver.succeed_current();
    driver.succeed_current();
    driver.fail(false);
    let method = driver.last_command().input["payment_method"].clone();
    act(
        &mut driver,
        Request::Resume {
            input_patch: Some(json!({"payment_method": method})),
            earlier: None,
        },
    );
    let command = driver.last_command();
    assert_eq!(command.idempotency_key, step_key("collect_payment", 1));
    assert_eq!(command.attempt, 2);
}

#[test]
fn skip_hands_the_operators_output_to_the_next_step() {
    let mut driver = Driver::start(suspend_at_order());
    driver.fail(false);
    assert_eq!(driver.saga.status(), Status::Suspended);

    let decision = driver.handle(
        Request::Skip {
            output: json!({"order": "by hand"}),
            earlier: None,
        }
        .event(),
    );
    assert!(
        matches!(&decision.disposition, Disposition::Refused { reason } if reason.contains("order_id")),
        "{decision:?}"
    );
    act(
        &mut driver,
        Request::Skip {
            output: json!({"order_id": "ORD-BY-HAND"}),
            earlier: None,
        },
    );
    assert_eq!(driver.saga.steps()[0].status, StepStatus::Skipped);
    let invoice = driver.last_command();
    assert_eq!(invoice.command_type, "billing.issue_invoice");
    assert_eq!(invoice.input["order_id"], "ORD-BY-HAND");
}

#[test]
fn a_workflow_cancelled_while_paused_notifies_once_unpaused() {
    let mut driver = Driver::start(suspend_at_order());
    driver.fail(false);
    act(&mut driver, Request::Pause);
    act(&mut driver, Request::Cancel);
    // report_status runs for the cancelled outcome; its command waits for
    // the unpause, and so does its timeout.
    assert_eq!(driver.saga.status(), Status::Running);
    assert!(driver.saga.paused());
    assert!(driver.timers.is_empty());
    act(&mut driver, Request::Unpause);
    assert!(driver.has_timer(TimerKind::StepTimeout));
}

#[test]
fn a_new_revision_waits_for_the_unpause_while_replies_are_held() {
    let mut driver = Driver::start(suspend_at_payment());
    driver.succeed_current();
    driver.succeed_current();
    // The payment times out: it may have been collected.
    for _ in 0..20 {
        if driver.saga.status() == Status::Suspended {
            break;
        }
        if driver.has_timer(TimerKind::StepBackoff) {
            driver.fire(TimerKind::StepBackoff);
        } else {
            driver.fire(TimerKind::StepTimeout);
        }
    }
    assert_eq!(driver.saga.status(), Status::Suspended);
    act(&mut driver, Request::Pause);
    // The late success of the last attempt arrives and is held.
    driver.succeed_current();
    assert_eq!(driver.saga.held().len(), 1);

    let patched = Request::Resume {
        input_patch: Some(json!({"payment_method": "card-4242"})),
        earlier: None,
    };
    for request in [
        patched.clone(),
        Request::Skip {
            output: json!({"payment_id": "PAY-BY-HAND"}),
            earlier: None,
        },
    ] {
        let decision = driver.handle(request.event());
        assert!(
            matches!(&decision.disposition, Disposition::Refused { reason } if reason.starts_with("unpause first")),
            "{decision:?}"
        );
    }
    // Unpaused, the held success moves the step on: nothing to resume.
    act(&mut driver, Request::Unpause);
    assert_eq!(driver.saga.steps()[2].status, StepStatus::Succeeded);
    assert_eq!(driver.saga.steps()[2].revision, 1);
}
