//! The saga state machine, built with `statig`.
//!
//! This module is the only place that decides transitions and effects, and,
//! apart from the mapping to and from the persisted record, the only code
//! that looks at the state. It is pure: state and event in, new state and
//! effects out; the time comes with the event.
//!
//! # States
//!
//! | state | meaning | status |
//! |---|---|---|
//! | `executing(step, attempt)` | the step's command is in flight | running |
//! | `waiting_to_retry(step, attempt, step)` | a step's backoff timer runs | running |
//! | `waiting_to_retry(step, attempt, compensation)` | a compensation's backoff runs | compensating |
//! | `compensating(step, attempt)` | the step's compensation is in flight | compensating |
//! | `suspended(step, phase, reason)` | an operator is needed | suspended |
//! | `completed`, `compensated`, `failed`, `cancelled` | finished (superstate `finished`) | the outcome |
//! | `terminated` | stopped by an operator (superstate `finished`) | terminated |
//!
//! `not_started` exists only between [`Saga::start`](super::Saga::start)
//! creating the machine and handing it the start signal; it is never stored.
//!
//! # Transitions
//!
//! | from | event | to |
//! |---|---|---|
//! | executing | success (any attempt of this revision) | next step, end of money flow, compensating (cancel pending) |
//! | executing | failure of the attempt in flight, retryable | waiting_to_retry, or as definitive when out of attempts |
//! | executing | failure, not retryable | the failure policy: compensating / suspended; suspended for a notification |
//! | executing | timeout of the attempt in flight | as a retryable failure; the step is now *possibly done* |
//! | executing | deadline | flag; with `suspend`, suspended once the command settles |
//! | executing | cancel | recorded; applied when the command settles |
//! | waiting_to_retry | backoff timer | executing / compensating the next attempt |
//! | waiting_to_retry | late success | as in executing |
//! | waiting_to_retry | late non-retryable failure of the last attempt | as in executing |
//! | waiting_to_retry (step) | cancel | compensating, or the end of the money flow |
//! | waiting_to_retry (step) | deadline with `suspend` | suspended |
//! | compensating | success | the next compensation, or the end of the money flow |
//! | compensating | failure or timeout | waiting_to_retry, or suspended when out of attempts |
//! | suspended | resume: retry / retry with input / skip | executing, compensating or onwards |
//! | suspended (action step) | cancel | compensating, or the end of the money flow |
//! | suspended | late success of the halted command | onwards, as if it had come in time |
//! | waiting_to_retry | retry now | executing / compensating the next attempt |
//! | any live state | terminate | terminated: timers dropped, unpublished commands withdrawn |
//! | any live state | pause | the same state, paused: timers frozen |
//! | paused | reply or timer | held, in arrival order |
//! | paused | unpause | timers re-armed with their remaining time, then the held events applied |
//! | finished | anything | nothing; requests are refused |
//!
//! Which operator actions a state allows is [`allowed_actions`]; the
//! handlers refuse the same ones. A workflow that ends while paused is no
//! longer paused.
//!
//! A failure reply counts only for the attempt sent last. A retry keeps the
//! idempotency key, and connectors replay non-retryable failures for a key,
//! so the attempt in flight will get the same answer; a failure of an
//! earlier attempt is therefore stale, and waiting for the attempt in flight
//! keeps one command in flight. A success of any attempt of the key counts:
//! the effect happened.
//!
//! The end of the money flow sets the outcome and runs the notification
//! steps in order; the last one finishing leads to the terminal state named
//! after the outcome. The first notification's input is built in that same
//! transition, so it alone can carry the outcome's time
//! (`workflow.outcome_at`), which the record does not keep. Everything else
//! (duplicates, other steps' replies, earlier revisions, stale timers) is
//! ignored and changes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use statig::prelude::*;

use super::action::{Action, merge_patch};
use super::effect::{Command, CommandRole, Effect, HistoryEntry, HistoryKind, TimerId, TimerKind};
use super::event::{Event, Reply, ReplyResult, Resume};
use super::held::HeldEvent;
use super::progress::{
    Attention, CompensationStatus, Outcome as FlowOutcome, Phase, Status, StepProgress, StepStatus,
    SuspendReason,
};
use crate::definition::{
    CommandSpec, Definition, Escalation, FailurePolicy, InputContext, StepDefinition, StepKind,
};
use crate::domain::ids::{CommandId, IdempotencyKey, WorkflowId};
use crate::domain::quote::Quote;

/// The machine's shared storage: everything about a workflow but its state.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Machine {
    pub definition: Arc<Definition>,
    pub workflow_id: WorkflowId,
    pub quote: Quote,
    pub steps: Vec<StepProgress>,
    pub outcome: Option<FlowOutcome>,
    pub cancel_requested: bool,
    /// A deadline with the `suspend` escalation passed while a command was
    /// in flight: suspend instead of retrying once it settles.
    pub suspend_pending: bool,
    pub attention: Option<Attention>,
    /// Paused by an operator: replies and timers are held, not applied.
    pub paused: bool,
    /// What arrived while paused, in arrival order.
    pub held: Vec<HeldEvent>,
}

/// What the machine is handed: the start signal, or an event from outside.
#[derive(Debug, Clone)]
pub(super) enum Signal {
    Start,
    Event(Event),
}

/// Why a state ignores pause requests: [`Machine::pause_control`] answers
/// them before any state sees them.
const PAUSE_HANDLED: &str = "pause requests are answered before the state";

/// Collects what one event leads to.
#[derive(Debug)]
pub(super) struct Ctx {
    now: DateTime<Utc>,
    /// Set when this event ended the money flow: the outcome's time, which
    /// only the input built in this same transition can know.
    outcome_set_at: Option<DateTime<Utc>>,
    pub effects: Vec<Effect>,
    pub verdict: Verdict,
    /// Events an unpause released, to apply after it.
    pub released: Vec<HeldEvent>,
}

/// Whether an event was used. Set by handlers that do not apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Applied,
    Ignored(String),
    Refused(String),
}

impl Ctx {
    pub fn new(now: DateTime<Utc>) -> Self {
        Self {
            now,
            outcome_set_at: None,
            effects: Vec::new(),
            verdict: Verdict::Applied,
            released: Vec::new(),
        }
    }

    fn ignore(&mut self, reason: impl Into<String>) -> Outcome<State> {
        self.verdict = Verdict::Ignored(reason.into());
        Handled
    }

    fn refuse(&mut self, reason: impl Into<String>) -> Outcome<State> {
        self.verdict = Verdict::Refused(reason.into());
        Handled
    }

    fn history(
        &mut self,
        kind: HistoryKind,
        step: Option<&str>,
        command: Option<&str>,
        detail: String,
    ) {
        self.effects.push(Effect::RecordHistory(HistoryEntry {
            at: self.now,
            kind,
            step: step.map(str::to_owned),
            command: command.map(str::to_owned),
            detail,
        }));
    }

    fn schedule(&mut self, timer: TimerId, after: Duration) {
        let due_at = TimeDelta::from_std(after)
            .ok()
            .and_then(|delta| self.now.checked_add_signed(delta))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.effects.push(Effect::ScheduleTimer { timer, due_at });
    }

    fn cancel(&mut self, timer: TimerId) {
        self.effects.push(Effect::CancelTimer(timer));
    }
}

/// What a reply says, once it is known to answer the awaited command.
#[derive(Debug, Clone, Copy)]
enum Answer<'r> {
    Succeeded(&'r Value),
    Failed { retryable: bool, reason: &'r str },
}

/// What a step or compensation is waiting on when a reply comes.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// This attempt is in flight, guarded by its timeout timer.
    InFlight(u32),
    /// This attempt failed; the backoff timer runs.
    Backoff(u32),
    /// Halted for an operator; no timer runs.
    Halted,
}

impl Wait {
    fn last_attempt(self, attempts: u32) -> u32 {
        match self {
            Self::InFlight(attempt) | Self::Backoff(attempt) => attempt,
            Self::Halted => attempts,
        }
    }
}

#[state_machine(
    initial = "State::not_started()",
    state(derive(Debug, Clone, PartialEq, Eq)),
    superstate(derive(Debug)),
    after_transition = "Self::after_transition",
    visibility = "pub(super)"
)]
impl Machine {
    /// Before the start signal.
    #[state]
    fn not_started(&mut self, context: &mut Ctx, event: &Signal) -> Outcome<State> {
        match event {
            Signal::Start => {
                context.history(
                    HistoryKind::EventReceived,
                    None,
                    None,
                    format!(
                        "started `{}` for quote {}",
                        self.definition.name(),
                        self.quote.quote_id()
                    ),
                );
                Transition(self.start_run(context, 0))
            }
            Signal::Event(_) => context.refuse("the workflow has not started"),
        }
    }

    /// A step's command is in flight.
    #[state]
    fn executing(
        &mut self,
        step: &mut usize,
        attempt: &mut u32,
        context: &mut Ctx,
        event: &Signal,
    ) -> Outcome<State> {
        let (step, attempt) = (*step, *attempt);
        let Signal::Event(event) = event else {
            return context.ignore("already started");
        };
        if let Some(outcome) = self.pause_control(context, event) {
            return outcome;
        }
        match event {
            Event::ReplyReceived(reply) => {
                self.step_reply(context, step, Wait::InFlight(attempt), reply)
            }
            Event::TimerFired(timer)
                if *timer == self.timer(TimerKind::StepTimeout, step, attempt) =>
            {
                let timeout = self.spec(step).command.timeout;
                context.history(
                    HistoryKind::TimerFired,
                    Some(self.name(step)),
                    Some(&self.spec(step).command.command_type),
                    format!(
                        "attempt {attempt} went unanswered for {}",
                        humantime::format_duration(timeout)
                    ),
                );
                let progress = &mut self.steps[step];
                progress.possibly_done = true;
                progress.last_error = Some(format!(
                    "attempt {attempt} timed out after {}",
                    humantime::format_duration(timeout)
                ));
                Transition(self.attempt_failed(context, step))
            }
            Event::TimerFired(timer) if Some(timer) == self.deadline_timer(step).as_ref() => {
                self.deadline_passed(context, step, None)
            }
            Event::TimerFired(timer) => context.ignore(format!("stale timer {timer}")),
            Event::CancelRequested => self.cancel_while_in_flight(context, step),
            Event::ResumeRequested(_) => {
                context.refuse("only a suspended workflow can be resumed; this one is running")
            }
            Event::RetryRequested => context
                .refuse("only a workflow waiting to retry can retry now; a command is in flight"),
            Event::TerminateRequested => Transition(self.terminate(context, step)),
            Event::PauseRequested | Event::UnpauseRequested => context.ignore(PAUSE_HANDLED),
        }
    }

    /// Waiting for a backoff timer before the next attempt of a step or of
    /// its compensation.
    #[state]
    fn waiting_to_retry(
        &mut self,
        step: &mut usize,
        attempt: &mut u32,
        phase: &mut Phase,
        context: &mut Ctx,
        event: &Signal,
    ) -> Outcome<State> {
        let (step, attempt, phase) = (*step, *attempt, *phase);
        let Signal::Event(event) = event else {
            return context.ignore("already started");
        };
        if let Some(outcome) = self.pause_control(context, event) {
            return outcome;
        }
        match (phase, event) {
            (Phase::Step, Event::ReplyReceived(reply)) => {
                self.step_reply(context, step, Wait::Backoff(attempt), reply)
            }
            (Phase::Compensation, Event::ReplyReceived(reply)) => {
                self.compensation_reply(context, step, Wait::Backoff(attempt), reply)
            }
            (Phase::Step, Event::TimerFired(timer))
                if *timer == self.timer(TimerKind::StepBackoff, step, attempt) =>
            {
                context.history(
                    HistoryKind::TimerFired,
                    Some(self.name(step)),
                    Some(&self.spec(step).command.command_type),
                    format!("retrying after attempt {attempt}"),
                );
                Transition(self.send_step_attempt(context, step))
            }
            (Phase::Step, Event::TimerFired(timer))
                if Some(timer) == self.deadline_timer(step).as_ref() =>
            {
                self.deadline_passed(context, step, Some(attempt))
            }
            (Phase::Compensation, Event::TimerFired(timer))
                if *timer == self.timer(TimerKind::CompensationBackoff, step, attempt) =>
            {
                context.history(
                    HistoryKind::TimerFired,
                    Some(self.name(step)),
                    self.compensation_type(step),
                    format!("retrying the compensation after attempt {attempt}"),
                );
                Transition(self.send_compensation_attempt(context, step))
            }
            (_, Event::TimerFired(timer)) => context.ignore(format!("stale timer {timer}")),
            (Phase::Step, Event::CancelRequested) => {
                match self.cancel_refusal(step) {
                    Some(reason) => return context.refuse(reason),
                    None if self.cancel_requested => {
                        return context.ignore("cancel already requested");
                    }
                    None => {}
                }
                self.cancel_requested = true;
                context.history(
                    HistoryKind::EventReceived,
                    Some(self.name(step)),
                    None,
                    "cancel requested".to_owned(),
                );
                context.cancel(self.timer(TimerKind::StepBackoff, step, attempt));
                self.end_run(context, step);
                self.steps[step].status = StepStatus::Cancelled;
                Transition(self.compensate(context))
            }
            (Phase::Compensation, Event::CancelRequested) => {
                context.refuse("the workflow is already being undone")
            }
            (_, Event::ResumeRequested(_)) => context
                .refuse("only a suspended workflow can be resumed; this one is waiting to retry"),
            (Phase::Step, Event::RetryRequested) => {
                context.history(
                    HistoryKind::EventReceived,
                    Some(self.name(step)),
                    Some(&self.spec(step).command.command_type),
                    format!("retry now, skipping the rest of the backoff after attempt {attempt}"),
                );
                context.cancel(self.timer(TimerKind::StepBackoff, step, attempt));
                Transition(self.send_step_attempt(context, step))
            }
            (Phase::Compensation, Event::RetryRequested) => {
                context.history(
                    HistoryKind::EventReceived,
                    Some(self.name(step)),
                    self.compensation_type(step),
                    format!(
                        "retry the compensation now, skipping the rest of the backoff after attempt {attempt}"
                    ),
                );
                context.cancel(self.timer(TimerKind::CompensationBackoff, step, attempt));
                Transition(self.send_compensation_attempt(context, step))
            }
            (_, Event::TerminateRequested) => Transition(self.terminate(context, step)),
            (_, Event::PauseRequested | Event::UnpauseRequested) => context.ignore(PAUSE_HANDLED),
        }
    }

    /// A compensation is in flight.
    #[state]
    fn compensating(
        &mut self,
        step: &mut usize,
        attempt: &mut u32,
        context: &mut Ctx,
        event: &Signal,
    ) -> Outcome<State> {
        let (step, attempt) = (*step, *attempt);
        let Signal::Event(event) = event else {
            return context.ignore("already started");
        };
        if let Some(outcome) = self.pause_control(context, event) {
            return outcome;
        }
        match event {
            Event::ReplyReceived(reply) => {
                self.compensation_reply(context, step, Wait::InFlight(attempt), reply)
            }
            Event::TimerFired(timer)
                if *timer == self.timer(TimerKind::CompensationTimeout, step, attempt) =>
            {
                let timeout = self.compensation_spec(step).map(|spec| spec.timeout);
                context.history(
                    HistoryKind::TimerFired,
                    Some(self.name(step)),
                    self.compensation_type(step),
                    format!("compensation attempt {attempt} went unanswered"),
                );
                self.steps[step].compensation.last_error = Some(format!(
                    "compensation attempt {attempt} timed out after {}",
                    humantime::format_duration(timeout.unwrap_or_default())
                ));
                Transition(self.compensation_attempt_failed(context, step))
            }
            Event::TimerFired(timer) => context.ignore(format!("stale timer {timer}")),
            Event::CancelRequested => context.refuse("the workflow is already being undone"),
            Event::ResumeRequested(_) => {
                context.refuse("only a suspended workflow can be resumed; this one is compensating")
            }
            Event::RetryRequested => context.refuse(
                "only a workflow waiting to retry can retry now; a compensation is in flight",
            ),
            Event::TerminateRequested => Transition(self.terminate(context, step)),
            Event::PauseRequested | Event::UnpauseRequested => context.ignore(PAUSE_HANDLED),
        }
    }

    /// Halted for an operator.
    #[state]
    fn suspended(
        &mut self,
        step: &mut usize,
        phase: &mut Phase,
        reason: &mut SuspendReason,
        context: &mut Ctx,
        event: &Signal,
    ) -> Outcome<State> {
        let (step, phase) = (*step, *phase);
        let _ = reason;
        let Signal::Event(event) = event else {
            return context.ignore("already started");
        };
        if let Some(outcome) = self.pause_control(context, event) {
            return outcome;
        }
        match (phase, event) {
            (Phase::Step, Event::ReplyReceived(reply)) => {
                self.step_reply(context, step, Wait::Halted, reply)
            }
            (Phase::Compensation, Event::ReplyReceived(reply)) => {
                self.compensation_reply(context, step, Wait::Halted, reply)
            }
            (_, Event::TimerFired(timer)) => context.ignore(format!("stale timer {timer}")),
            (Phase::Step, Event::CancelRequested) => {
                if let Some(reason) = self.cancel_refusal(step) {
                    return context.refuse(reason);
                }
                if self.cancel_requested {
                    return context.ignore("cancel already requested");
                }
                self.cancel_requested = true;
                context.history(
                    HistoryKind::EventReceived,
                    Some(self.name(step)),
                    None,
                    "cancel requested".to_owned(),
                );
                if self.steps[step].status == StepStatus::Running {
                    self.steps[step].status = StepStatus::Cancelled;
                }
                Transition(self.compensate(context))
            }
            (Phase::Compensation, Event::CancelRequested) => {
                context.refuse("the workflow is already being undone")
            }
            (Phase::Step, Event::ResumeRequested(resume)) => {
                self.resume_step(context, step, resume)
            }
            (Phase::Compensation, Event::ResumeRequested(resume)) => {
                self.resume_compensation(context, step, resume)
            }
            (_, Event::RetryRequested) => context.refuse(
                "only a workflow waiting to retry can retry now; a suspended one is resumed",
            ),
            (_, Event::TerminateRequested) => Transition(self.terminate(context, step)),
            (_, Event::PauseRequested | Event::UnpauseRequested) => context.ignore(PAUSE_HANDLED),
        }
    }

    #[state(superstate = "finished")]
    fn completed() -> Outcome<State> {
        Super
    }

    #[state(superstate = "finished")]
    fn compensated() -> Outcome<State> {
        Super
    }

    #[state(superstate = "finished")]
    fn failed() -> Outcome<State> {
        Super
    }

    #[state(superstate = "finished")]
    fn cancelled() -> Outcome<State> {
        Super
    }

    /// Terminated by an operator: like the other ends, but it says so.
    #[state(superstate = "finished")]
    fn terminated(&mut self, context: &mut Ctx, event: &Signal) -> Outcome<State> {
        match event {
            Signal::Event(Event::ReplyReceived(_) | Event::TimerFired(_)) | Signal::Start => {
                context.ignore("the workflow was terminated")
            }
            Signal::Event(_) => {
                context.refuse("the workflow was terminated and takes no more requests")
            }
        }
    }

    /// Terminal states absorb everything: replies and timers are ignored,
    /// requests refused.
    #[superstate]
    fn finished(&mut self, context: &mut Ctx, event: &Signal) -> Outcome<State> {
        let outcome = self.outcome.map_or("finished", FlowOutcome::as_str);
        match event {
            Signal::Event(
                Event::CancelRequested
                | Event::ResumeRequested(_)
                | Event::RetryRequested
                | Event::TerminateRequested
                | Event::PauseRequested
                | Event::UnpauseRequested,
            ) => context.refuse(format!(
                "the workflow has finished ({outcome}) and takes no more requests"
            )),
            Signal::Event(_) | Signal::Start => {
                context.ignore(format!("the workflow has finished ({outcome})"))
            }
        }
    }
}

impl Machine {
    /// Records every change of state in the history, under the state's
    /// persisted name.
    ///
    /// A workflow that ends while paused (cancelled with nothing to undo)
    /// is paused no longer: nothing of it can run again, so its frozen
    /// timers and held events are dropped.
    fn after_transition(&mut self, source: &State, target: &State, context: &mut Ctx) {
        let detail = format!("{} → {}", self.describe(source), self.describe(target));
        context.history(HistoryKind::StateChanged, None, None, detail);
        if self.paused && status(target).is_terminal() {
            self.paused = false;
            self.held.clear();
            context.effects.push(Effect::ClearTimers);
        }
    }

    fn describe(&self, state: &State) -> String {
        match state {
            State::NotStarted {} => "not_started".to_owned(),
            State::Executing { step, attempt } => {
                format!("executing({}, attempt {attempt})", self.name(*step))
            }
            State::WaitingToRetry {
                step,
                attempt,
                phase,
            } => format!(
                "waiting_to_retry({}{}, after attempt {attempt})",
                self.name(*step),
                if *phase == Phase::Compensation {
                    " compensation"
                } else {
                    ""
                }
            ),
            State::Compensating { step, attempt } => {
                format!("compensating({}, attempt {attempt})", self.name(*step))
            }
            State::Suspended {
                step,
                phase,
                reason,
            } => format!(
                "suspended({}{}, {reason:?})",
                self.name(*step),
                if *phase == Phase::Compensation {
                    " compensation"
                } else {
                    ""
                }
            ),
            State::Completed {} => "completed".to_owned(),
            State::Compensated {} => "compensated".to_owned(),
            State::Failed {} => "failed".to_owned(),
            State::Cancelled {} => "cancelled".to_owned(),
            State::Terminated {} => "terminated".to_owned(),
        }
    }

    // ---- reading the definition ------------------------------------------

    /// Step indices only ever come from the definition, so indexing is sound.
    fn spec(&self, step: usize) -> &StepDefinition {
        &self.definition.steps()[step]
    }

    fn name(&self, step: usize) -> &str {
        &self.spec(step).name
    }

    fn compensation_spec(&self, step: usize) -> Option<&CommandSpec> {
        self.spec(step).compensation.as_ref()
    }

    fn compensation_type(&self, step: usize) -> Option<&str> {
        self.compensation_spec(step)
            .map(|spec| spec.command_type.as_str())
    }

    fn step_key(&self, step: usize) -> IdempotencyKey {
        IdempotencyKey::for_command(self.workflow_id, self.name(step), self.steps[step].revision)
    }

    fn compensation_key(&self, step: usize) -> IdempotencyKey {
        IdempotencyKey::for_compensation(
            self.workflow_id,
            self.name(step),
            self.steps[step].revision,
        )
    }

    fn timer(&self, kind: TimerKind, step: usize, attempt: u32) -> TimerId {
        TimerId {
            kind,
            step: self.name(step).to_owned(),
            revision: self.steps[step].revision,
            attempt,
        }
    }

    /// The deadline timer of the step's current run, if it has a deadline.
    fn deadline_timer(&self, step: usize) -> Option<TimerId> {
        self.spec(step).deadline.map(|_| {
            self.timer(
                TimerKind::Deadline,
                step,
                self.steps[step].run_started_after + 1,
            )
        })
    }

    /// Why a cancel cannot be taken while `step` is the current step.
    fn cancel_refusal(&self, step: usize) -> Option<String> {
        match (self.spec(step).kind, self.outcome) {
            (StepKind::Notification, Some(outcome)) => Some(format!(
                "the money flow has already ended ({}); only notifications remain",
                outcome.as_str()
            )),
            _ => None,
        }
    }

    fn input_context_outputs(&self) -> Vec<Option<&Value>> {
        self.steps.iter().map(|step| step.output.as_ref()).collect()
    }

    /// Why the money flow did not complete, for the people notifications
    /// reach; `None` until it has ended, and when it completed.
    ///
    /// The deciding failure is the action step that failed for good: at
    /// most one has that status once the flow has ended, since a failed step
    /// either ends the flow or halts it until an operator retries it (it runs
    /// again), skips it, or cancels. Its last error is the reason as it came
    /// (a connector's words, or what the saga wrote when it gave up). Steps
    /// that were skipped or cancelled keep stale errors that decided nothing,
    /// and compensations never decide the outcome, so neither is looked at.
    fn failure_reason(&self) -> Option<String> {
        let failed = self
            .definition
            .steps()
            .iter()
            .zip(&self.steps)
            .find(|(spec, progress)| {
                spec.kind == StepKind::Action && progress.status == StepStatus::Failed
            })
            .map(|(spec, progress)| match &progress.last_error {
                Some(error) => format!("{}: {error}", spec.name),
                None => format!("{}: failed", spec.name),
            });
        match (self.outcome?, failed) {
            (FlowOutcome::Completed, _) => None,
            (FlowOutcome::Cancelled, None) => Some("cancelled on request".to_owned()),
            (FlowOutcome::Cancelled, Some(failed)) => {
                Some(format!("cancelled on request; {failed}"))
            }
            (FlowOutcome::Failed | FlowOutcome::Compensated, Some(failed)) => Some(failed),
            // Only a step failing for good ends the flow this way; say so
            // rather than nothing if a record ever disagrees.
            (outcome @ (FlowOutcome::Failed | FlowOutcome::Compensated), None) => Some(format!(
                "{} without a recorded step failure",
                outcome.as_str()
            )),
        }
    }

    // ---- running steps ---------------------------------------------------

    /// Begins a run of a step: its first, or again after an operator's
    /// resume. The run's input is built once per revision.
    fn start_run(&mut self, context: &mut Ctx, step: usize) -> State {
        self.suspend_pending = false;
        let progress = &mut self.steps[step];
        progress.status = StepStatus::Running;
        progress.run_started_after = progress.attempts;
        if self.steps[step].input.is_none() {
            let outputs = self.input_context_outputs();
            let failure_reason = self.failure_reason();
            let built = self.spec(step).command.input.build(&InputContext {
                workflow_id: self.workflow_id,
                quote: &self.quote,
                outcome: self.outcome.map(FlowOutcome::as_str),
                failure_reason: failure_reason.as_deref(),
                outcome_at: context.outcome_set_at,
                outputs: &outputs,
            });
            match built {
                Ok(input) => self.steps[step].input = Some(input),
                Err(message) => {
                    self.steps[step].last_error = Some(message);
                    return self.failed_for_good(context, step);
                }
            }
        }
        if let (Some(deadline), Some(timer)) = (self.spec(step).deadline, self.deadline_timer(step))
        {
            context.schedule(timer, deadline.after);
        }
        self.send_step_attempt(context, step)
    }

    fn send_step_attempt(&mut self, context: &mut Ctx, step: usize) -> State {
        self.steps[step].attempts += 1;
        let attempt = self.steps[step].attempts;
        let key = self.step_key(step);
        let spec = &self.spec(step).command;
        let command = Command {
            command_id: CommandId::for_attempt(&key, attempt),
            workflow_id: self.workflow_id,
            step: self.name(step).to_owned(),
            role: CommandRole::Step,
            command_type: spec.command_type.clone(),
            idempotency_key: key,
            undoes: None,
            attempt,
            input: self.steps[step].input.clone().unwrap_or(Value::Null),
        };
        let timeout = spec.timeout;
        context.history(
            HistoryKind::CommandSent,
            Some(self.name(step)),
            Some(&spec.command_type),
            format!("attempt {attempt}, key {}", command.idempotency_key),
        );
        context.effects.push(Effect::SendCommand(command));
        context.schedule(self.timer(TimerKind::StepTimeout, step, attempt), timeout);
        State::executing(step, attempt)
    }

    /// Decides whether a reply answers what `step` waits on in `phase`, and
    /// if so what it says. Anything else (another command's reply, a wrong
    /// reply type, a failure of an earlier attempt, a failure while halted or
    /// while a retry is already scheduled) is ignored.
    fn screen<'r>(
        &self,
        context: &mut Ctx,
        step: usize,
        phase: Phase,
        wait: Wait,
        reply: &'r Reply,
    ) -> Result<Answer<'r>, Outcome<State>> {
        let (key, spec, attempts) = match phase {
            Phase::Step => (
                self.step_key(step),
                Some(&self.spec(step).command),
                self.steps[step].attempts,
            ),
            Phase::Compensation => (
                self.compensation_key(step),
                self.compensation_spec(step),
                self.steps[step].compensation.attempts,
            ),
        };
        let Some(spec) = spec else {
            return Err(context.ignore("the step has no compensation"));
        };
        if reply.key != key {
            return Err(context.ignore(format!(
                "reply for {}, not for {key}, which `{}` waits on",
                reply.key,
                self.name(step)
            )));
        }
        let (expected_type, answer) = match &reply.result {
            ReplyResult::Succeeded { output } => (&spec.success_reply, Answer::Succeeded(output)),
            ReplyResult::Failed { retryable, reason } => (
                &spec.failure_reply,
                Answer::Failed {
                    retryable: *retryable,
                    reason,
                },
            ),
        };
        if reply.reply_type != *expected_type {
            return Err(context.ignore(format!(
                "`{}` is not the expected `{expected_type}`",
                reply.reply_type
            )));
        }
        if let Answer::Failed { retryable, .. } = answer {
            let last = wait.last_attempt(attempts);
            if reply.attempt != last {
                return Err(context.ignore(format!(
                    "failure of attempt {} arrived after attempt {last} was sent",
                    reply.attempt
                )));
            }
            match (wait, retryable) {
                (Wait::Halted, _) => return Err(context.ignore("halted for an operator")),
                (Wait::Backoff(_), true) => {
                    return Err(context.ignore("already waiting to retry"));
                }
                _ => {}
            }
        }
        Ok(answer)
    }

    /// Records a reply that is being applied and stops the timer that
    /// guarded the wait it ends.
    fn acknowledge(&self, context: &mut Ctx, step: usize, phase: Phase, wait: Wait, reply: &Reply) {
        let (command_type, what) = match phase {
            Phase::Step => (Some(self.spec(step).command.command_type.as_str()), ""),
            Phase::Compensation => (self.compensation_type(step), "compensation "),
        };
        let detail = match &reply.result {
            ReplyResult::Succeeded { .. } => {
                format!("{what}succeeded (attempt {})", reply.attempt)
            }
            ReplyResult::Failed { retryable, reason } => format!(
                "{what}failed (attempt {}, {}): {reason}",
                reply.attempt,
                if *retryable {
                    "retryable"
                } else {
                    "not retryable"
                }
            ),
        };
        context.history(
            HistoryKind::ReplyReceived,
            Some(self.name(step)),
            command_type,
            detail,
        );
        self.stop_waiting(context, step, wait, phase);
    }

    /// Applies a reply to a step's command, whatever the step is waiting on.
    fn step_reply(
        &mut self,
        context: &mut Ctx,
        step: usize,
        wait: Wait,
        reply: &Reply,
    ) -> Outcome<State> {
        let answer = match self.screen(context, step, Phase::Step, wait, reply) {
            Ok(answer) => answer,
            Err(ignored) => return ignored,
        };
        match answer {
            Answer::Succeeded(output) => {
                let checked = self.spec(step).output.check(output);
                if let (Wait::Halted, Err(problem)) = (wait, &checked) {
                    // Only a usable answer can move a halted step on; an
                    // unusable one (perhaps the very reply that halted it)
                    // changes nothing.
                    return context.ignore(format!(
                        "the step is halted and this success's output is unusable: {problem}"
                    ));
                }
                self.acknowledge(context, step, Phase::Step, wait, reply);
                self.end_run(context, step);
                let progress = &mut self.steps[step];
                match checked {
                    Ok(()) => {
                        progress.status = StepStatus::Succeeded;
                        progress.output = Some(output.clone());
                        progress.possibly_done = false;
                        progress.last_error = None;
                        Transition(self.after_step(context, step))
                    }
                    Err(problem) => {
                        progress.possibly_done = true;
                        progress.last_error =
                            Some(format!("the success reply's output is unusable: {problem}"));
                        Transition(self.failed_for_good(context, step))
                    }
                }
            }
            Answer::Failed { retryable, reason } => {
                self.acknowledge(context, step, Phase::Step, wait, reply);
                self.steps[step].last_error = Some(reason.to_owned());
                if retryable {
                    Transition(self.attempt_failed(context, step))
                } else {
                    self.steps[step].possibly_done = false;
                    self.end_run(context, step);
                    Transition(self.failed_for_good(context, step))
                }
            }
        }
    }

    /// Cancels the timer guarding what a reply has just answered.
    fn stop_waiting(&self, context: &mut Ctx, step: usize, wait: Wait, phase: Phase) {
        let kind = match (wait, phase) {
            (Wait::InFlight(_), Phase::Step) => TimerKind::StepTimeout,
            (Wait::Backoff(_), Phase::Step) => TimerKind::StepBackoff,
            (Wait::InFlight(_), Phase::Compensation) => TimerKind::CompensationTimeout,
            (Wait::Backoff(_), Phase::Compensation) => TimerKind::CompensationBackoff,
            (Wait::Halted, _) => return,
        };
        let attempt = wait.last_attempt(0);
        context.cancel(self.timer(kind, step, attempt));
    }

    /// The step's run is over: its deadline and any escalation it asked for
    /// no longer matter.
    fn end_run(&mut self, context: &mut Ctx, step: usize) {
        self.suspend_pending = false;
        if let Some(timer) = self.deadline_timer(step) {
            context.cancel(timer);
        }
    }

    /// An attempt failed in a way that trying again may cure (a retryable
    /// failure or a timeout): retry, or give up when the run is out of
    /// attempts, a cancel is pending, or a deadline asked to suspend.
    fn attempt_failed(&mut self, context: &mut Ctx, step: usize) -> State {
        let progress = &self.steps[step];
        let used = progress.attempts - progress.run_started_after;
        let retry = self.spec(step).command.retry;
        if used >= retry.max_attempts {
            self.end_run(context, step);
            let progress = &mut self.steps[step];
            let last = progress.last_error.take().unwrap_or_default();
            progress.last_error = Some(format!("gave up after {used} attempts: {last}"));
            return self.failed_for_good(context, step);
        }
        if self.cancel_requested && self.spec(step).kind == StepKind::Action {
            self.end_run(context, step);
            self.steps[step].status = StepStatus::Cancelled;
            return self.compensate(context);
        }
        if self.suspend_pending {
            return self.suspend(step, Phase::Step, SuspendReason::DeadlineExceeded);
        }
        let attempt = self.steps[step].attempts;
        let delay = retry.delay(used, self.jitter_unit(step, Phase::Step, attempt));
        context.schedule(self.timer(TimerKind::StepBackoff, step, attempt), delay);
        State::waiting_to_retry(step, attempt, Phase::Step)
    }

    /// The step failed for good: its failure policy decides what follows.
    fn failed_for_good(&mut self, context: &mut Ctx, step: usize) -> State {
        self.steps[step].status = StepStatus::Failed;
        let spec = self.spec(step);
        match (spec.kind, spec.on_failure) {
            (StepKind::Notification, _) => {
                self.suspend(step, Phase::Step, SuspendReason::NotificationFailed)
            }
            (StepKind::Action, _) if self.cancel_requested => self.compensate(context),
            (StepKind::Action, FailurePolicy::Compensate) => self.compensate(context),
            (StepKind::Action, FailurePolicy::Suspend) => {
                self.suspend(step, Phase::Step, SuspendReason::StepFailed)
            }
        }
    }

    /// The step succeeded or was skipped: run the next one, or end the
    /// money flow, or finish after the last notification.
    fn after_step(&mut self, context: &mut Ctx, step: usize) -> State {
        let next = step + 1;
        let next_kind = self.definition.step(next).map(|spec| spec.kind);
        match (self.spec(step).kind, next_kind) {
            (StepKind::Action, _) if self.cancel_requested => self.compensate(context),
            (StepKind::Action, Some(StepKind::Action)) => self.start_run(context, next),
            (StepKind::Action, _) => self.end_money_flow(context, FlowOutcome::Completed),
            (StepKind::Notification, Some(_)) => self.start_run(context, next),
            (StepKind::Notification, None) => self.finish(),
        }
    }

    /// A passed deadline: flag the workflow, and with the `suspend`
    /// escalation halt it as soon as nothing is in flight. `waiting` is the
    /// attempt whose backoff timer runs, if any.
    fn deadline_passed(
        &mut self,
        context: &mut Ctx,
        step: usize,
        waiting: Option<u32>,
    ) -> Outcome<State> {
        let (Some(deadline), Some(timer)) = (self.spec(step).deadline, self.deadline_timer(step))
        else {
            return context.ignore("the step has no deadline");
        };
        if self
            .attention
            .as_ref()
            .is_some_and(|attention| attention.deadline == timer)
        {
            return context.ignore(format!("deadline {timer} was already handled"));
        }
        let detail = format!(
            "deadline of {} passed",
            humantime::format_duration(deadline.after)
        );
        context.history(
            HistoryKind::TimerFired,
            Some(self.name(step)),
            None,
            detail.clone(),
        );
        self.attention = Some(Attention {
            step: self.name(step).to_owned(),
            since: context.now,
            reason: detail,
            deadline: timer,
        });
        match (deadline.escalation, waiting) {
            (Escalation::Flag, _) => Handled,
            (Escalation::Suspend, None) => {
                self.suspend_pending = true;
                Handled
            }
            (Escalation::Suspend, Some(attempt)) => {
                context.cancel(self.timer(TimerKind::StepBackoff, step, attempt));
                Transition(self.suspend(step, Phase::Step, SuspendReason::DeadlineExceeded))
            }
        }
    }

    fn cancel_while_in_flight(&mut self, context: &mut Ctx, step: usize) -> Outcome<State> {
        if let Some(reason) = self.cancel_refusal(step) {
            return context.refuse(reason);
        }
        if self.cancel_requested {
            return context.ignore("cancel already requested");
        }
        self.cancel_requested = true;
        context.history(
            HistoryKind::EventReceived,
            Some(self.name(step)),
            None,
            "cancel requested; it applies once the command in flight settles".to_owned(),
        );
        Handled
    }

    /// Pausing and what a pause changes, before the state looks at an
    /// event: while paused, replies and timers are held (a held reply was
    /// already deduplicated by its message id); an unpause hands them back
    /// to be applied in arrival order. `None` lets the state handle the
    /// event; pause requests never get that far.
    fn pause_control(&mut self, context: &mut Ctx, event: &Event) -> Option<Outcome<State>> {
        match event {
            Event::PauseRequested if self.paused => Some(context.refuse("already paused")),
            Event::PauseRequested => {
                self.paused = true;
                context.history(
                    HistoryKind::EventReceived,
                    None,
                    None,
                    "paused: no command leaves, timers are frozen, replies are held".to_owned(),
                );
                context.effects.push(Effect::FreezeTimers);
                Some(Handled)
            }
            Event::UnpauseRequested if !self.paused => Some(context.refuse("not paused")),
            Event::UnpauseRequested => {
                self.paused = false;
                let held = std::mem::take(&mut self.held);
                context.history(
                    HistoryKind::EventReceived,
                    None,
                    None,
                    format!(
                        "unpaused: timers re-armed with their remaining time, {} held event(s) applied",
                        held.len()
                    ),
                );
                context.effects.push(Effect::ThawTimers);
                context.released = held;
                Some(Handled)
            }
            Event::ReplyReceived(_) | Event::TimerFired(_) if self.paused => {
                let held = HeldEvent::of(event)?;
                context.history(
                    HistoryKind::EventReceived,
                    None,
                    None,
                    format!("held while paused: {}", held.describe()),
                );
                self.held.push(held);
                Some(Handled)
            }
            _ => None,
        }
    }

    /// Stops for good without undoing anything: no timer fires again, no
    /// command still waiting to be published leaves, and no notification
    /// step runs.
    fn terminate(&mut self, context: &mut Ctx, step: usize) -> State {
        let dropped = self.held.len();
        self.paused = false;
        self.held.clear();
        self.suspend_pending = false;
        context.history(
            HistoryKind::EventReceived,
            Some(self.name(step)),
            None,
            if dropped == 0 {
                "terminated: nothing is undone and no one is notified".to_owned()
            } else {
                format!(
                    "terminated: nothing is undone and no one is notified; {dropped} held event(s) dropped"
                )
            },
        );
        context.effects.push(Effect::ClearTimers);
        context.effects.push(Effect::WithdrawCommands);
        State::terminated()
    }

    /// Halts for an operator. The state change itself is the history entry.
    fn suspend(&mut self, step: usize, phase: Phase, reason: SuspendReason) -> State {
        self.suspend_pending = false;
        State::suspended(step, phase, reason)
    }

    fn resume_step(&mut self, context: &mut Ctx, step: usize, resume: &Resume) -> Outcome<State> {
        let patched;
        let resume = match resume {
            Resume::Patch(patch) => {
                let Some(current) = self.steps[step].input.clone() else {
                    return context.refuse(format!(
                        "`{}` has no input to patch (it could not be built); resume without \
                         `input` to build it again",
                        self.name(step)
                    ));
                };
                let merged = merge_patch(&current, patch);
                if merged == current {
                    &Resume::Retry
                } else {
                    patched = Resume::RetryWithInput(merged);
                    &patched
                }
            }
            other => other,
        };
        let new_revision = matches!(resume, Resume::RetryWithInput(_) | Resume::Skip { .. });
        if new_revision && self.paused && !self.held.is_empty() {
            // A new revision declares the current one dead; a held reply may
            // say it took effect. The operator must see it first.
            return context.refuse(format!(
                "unpause first: {} held event(s) may show that `{}` took effect, and a new \
                 revision would leave that unnoticed",
                self.held.len(),
                self.name(step)
            ));
        }
        let detail = match resume {
            Resume::Retry | Resume::Patch(_) => "resume: retry".to_owned(),
            Resume::RetryWithInput(input) => {
                if !input.is_object() {
                    return context.refuse("the new input must be a JSON object");
                }
                let progress = &mut self.steps[step];
                progress.next_revision(context.now);
                progress.input = Some(input.clone());
                format!(
                    "resume: retry with new input (revision {})",
                    progress.revision
                )
            }
            Resume::Skip { output } => {
                if let Err(problem) = self.spec(step).output.check(output) {
                    return context.refuse(format!("cannot skip `{}`: {problem}", self.name(step)));
                }
                let progress = &mut self.steps[step];
                progress.next_revision(context.now);
                progress.status = StepStatus::Skipped;
                progress.output = Some(output.clone());
                let detail = format!("resume: skip (revision {})", progress.revision);
                self.attention = None;
                context.history(
                    HistoryKind::EventReceived,
                    Some(self.name(step)),
                    None,
                    detail,
                );
                return Transition(self.after_step(context, step));
            }
        };
        self.attention = None;
        context.history(
            HistoryKind::EventReceived,
            Some(self.name(step)),
            None,
            detail,
        );
        Transition(self.start_run(context, step))
    }

    // ---- compensations -----------------------------------------------------

    /// Whether `step` still has to be undone: it has a compensation, it
    /// completed or may have, and nobody has undone it yet.
    fn needs_compensation(&self, step: usize) -> bool {
        let progress = &self.steps[step];
        let done_or_maybe = progress.status == StepStatus::Succeeded
            || (progress.possibly_done && progress.status != StepStatus::Skipped);
        self.spec(step).kind == StepKind::Action
            && self.compensation_spec(step).is_some()
            && done_or_maybe
            && progress.compensation.status == CompensationStatus::NotStarted
    }

    /// Undoes the next completed step in reverse order, or ends the money
    /// flow when nothing is left to undo.
    fn compensate(&mut self, context: &mut Ctx) -> State {
        let next = (0..self.steps.len())
            .rev()
            .find(|&step| self.needs_compensation(step));
        if let Some(step) = next {
            return self.start_compensation_run(context, step);
        }
        let undid_something = self.steps.iter().any(|step| {
            matches!(
                step.compensation.status,
                CompensationStatus::Compensated | CompensationStatus::Skipped
            )
        });
        let outcome = match (self.cancel_requested, undid_something) {
            (true, _) => FlowOutcome::Cancelled,
            (false, true) => FlowOutcome::Compensated,
            (false, false) => FlowOutcome::Failed,
        };
        self.end_money_flow(context, outcome)
    }

    fn start_compensation_run(&mut self, context: &mut Ctx, step: usize) -> State {
        let compensation = &mut self.steps[step].compensation;
        compensation.status = CompensationStatus::Running;
        compensation.run_started_after = compensation.attempts;
        if self.steps[step].compensation.input.is_none() {
            let outputs = self.input_context_outputs();
            let built = self.compensation_spec(step).map(|spec| {
                spec.input.build(&InputContext {
                    workflow_id: self.workflow_id,
                    quote: &self.quote,
                    outcome: None,
                    failure_reason: None,
                    outcome_at: None,
                    outputs: &outputs,
                })
            });
            match built {
                Some(Ok(input)) => self.steps[step].compensation.input = Some(input),
                Some(Err(message)) => {
                    let compensation = &mut self.steps[step].compensation;
                    compensation.status = CompensationStatus::Failed;
                    compensation.last_error = Some(message);
                    return self.suspend(
                        step,
                        Phase::Compensation,
                        SuspendReason::CompensationFailed,
                    );
                }
                None => {}
            }
        }
        self.send_compensation_attempt(context, step)
    }

    fn send_compensation_attempt(&mut self, context: &mut Ctx, step: usize) -> State {
        self.steps[step].compensation.attempts += 1;
        let attempt = self.steps[step].compensation.attempts;
        let key = self.compensation_key(step);
        let undoes = self.step_key(step);
        let Some(spec) = self.compensation_spec(step) else {
            // Only steps with a compensation are ever compensated.
            return self.suspend(step, Phase::Compensation, SuspendReason::CompensationFailed);
        };
        let command = Command {
            command_id: CommandId::for_attempt(&key, attempt),
            workflow_id: self.workflow_id,
            step: self.name(step).to_owned(),
            role: CommandRole::Compensation,
            command_type: spec.command_type.clone(),
            idempotency_key: key,
            undoes: Some(undoes),
            attempt,
            input: self.steps[step]
                .compensation
                .input
                .clone()
                .unwrap_or(Value::Null),
        };
        let timeout = spec.timeout;
        context.history(
            HistoryKind::CommandSent,
            Some(self.name(step)),
            Some(&spec.command_type),
            format!(
                "compensation attempt {attempt}, key {}",
                command.idempotency_key
            ),
        );
        context.effects.push(Effect::SendCommand(command));
        context.schedule(
            self.timer(TimerKind::CompensationTimeout, step, attempt),
            timeout,
        );
        State::compensating(step, attempt)
    }

    /// Applies a reply to a compensation, whatever it is waiting on.
    fn compensation_reply(
        &mut self,
        context: &mut Ctx,
        step: usize,
        wait: Wait,
        reply: &Reply,
    ) -> Outcome<State> {
        let answer = match self.screen(context, step, Phase::Compensation, wait, reply) {
            Ok(answer) => answer,
            Err(ignored) => return ignored,
        };
        self.acknowledge(context, step, Phase::Compensation, wait, reply);
        let compensation = &mut self.steps[step].compensation;
        match answer {
            Answer::Succeeded(_) => {
                compensation.status = CompensationStatus::Compensated;
                compensation.last_error = None;
                Transition(self.compensate(context))
            }
            Answer::Failed { retryable, reason } => {
                compensation.last_error = Some(reason.to_owned());
                if retryable {
                    Transition(self.compensation_attempt_failed(context, step))
                } else {
                    compensation.status = CompensationStatus::Failed;
                    Transition(self.suspend(
                        step,
                        Phase::Compensation,
                        SuspendReason::CompensationFailed,
                    ))
                }
            }
        }
    }

    fn compensation_attempt_failed(&mut self, context: &mut Ctx, step: usize) -> State {
        let compensation = &self.steps[step].compensation;
        let used = compensation.attempts - compensation.run_started_after;
        let attempt = compensation.attempts;
        let Some(retry) = self.compensation_spec(step).map(|spec| spec.retry) else {
            return self.suspend(step, Phase::Compensation, SuspendReason::CompensationFailed);
        };
        if used >= retry.max_attempts {
            let compensation = &mut self.steps[step].compensation;
            compensation.status = CompensationStatus::Failed;
            let last = compensation.last_error.take().unwrap_or_default();
            compensation.last_error = Some(format!("gave up after {used} attempts: {last}"));
            return self.suspend(step, Phase::Compensation, SuspendReason::CompensationFailed);
        }
        let delay = retry.delay(used, self.jitter_unit(step, Phase::Compensation, attempt));
        context.schedule(
            self.timer(TimerKind::CompensationBackoff, step, attempt),
            delay,
        );
        State::waiting_to_retry(step, attempt, Phase::Compensation)
    }

    fn resume_compensation(
        &mut self,
        context: &mut Ctx,
        step: usize,
        resume: &Resume,
    ) -> Outcome<State> {
        match resume {
            Resume::Retry => {
                context.history(
                    HistoryKind::EventReceived,
                    Some(self.name(step)),
                    self.compensation_type(step),
                    "resume: retry the compensation".to_owned(),
                );
                Transition(self.start_compensation_run(context, step))
            }
            Resume::RetryWithInput(_) | Resume::Patch(_) => context.refuse(
                "a compensation's input cannot be changed: retry it, or skip it once undone by hand",
            ),
            Resume::Skip { .. } => {
                self.steps[step].compensation.status = CompensationStatus::Skipped;
                context.history(
                    HistoryKind::EventReceived,
                    Some(self.name(step)),
                    self.compensation_type(step),
                    "resume: skip the compensation (undone by hand)".to_owned(),
                );
                Transition(self.compensate(context))
            }
        }
    }

    // ---- ending ------------------------------------------------------------

    /// Sets the outcome and runs the notification steps, if any.
    fn end_money_flow(&mut self, context: &mut Ctx, outcome: FlowOutcome) -> State {
        self.outcome = Some(outcome);
        context.outcome_set_at = Some(context.now);
        context.history(
            HistoryKind::EventReceived,
            None,
            None,
            format!("money flow ended: {}", outcome.as_str()),
        );
        let first_notification = self
            .definition
            .steps()
            .iter()
            .position(|spec| spec.kind == StepKind::Notification);
        match first_notification {
            Some(step) => self.start_run(context, step),
            None => self.finish(),
        }
    }

    /// The terminal state named after the outcome.
    fn finish(&self) -> State {
        match self.outcome {
            Some(FlowOutcome::Completed) => State::completed(),
            Some(FlowOutcome::Compensated) => State::compensated(),
            Some(FlowOutcome::Cancelled) => State::cancelled(),
            // Every path to here sets the outcome first; failing is the
            // honest answer if one ever did not.
            Some(FlowOutcome::Failed) | None => State::failed(),
        }
    }

    /// A number in `[0, 1)` derived from the attempt, so that jitter
    /// spreads workflows apart yet a decision replays identically.
    fn jitter_unit(&self, step: usize, phase: Phase, attempt: u32) -> f64 {
        let seed = format!(
            "{}:{}:{}:r{}:a{attempt}",
            self.workflow_id,
            self.name(step),
            if phase == Phase::Step {
                "step"
            } else {
                "compensation"
            },
            self.steps[step].revision
        );
        let digest = Sha256::digest(seed.as_bytes());
        let mut bytes = [0_u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(bytes) >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// The status a state stands for, given the outcome.
pub(super) fn status(state: &State) -> Status {
    match state {
        State::NotStarted {} | State::Executing { .. } => Status::Running,
        State::WaitingToRetry { phase, .. } => match phase {
            Phase::Step => Status::Running,
            Phase::Compensation => Status::Compensating,
        },
        State::Compensating { .. } => Status::Compensating,
        State::Suspended { .. } => Status::Suspended,
        State::Completed {} => Status::Completed,
        State::Compensated {} => Status::Compensated,
        State::Failed {} => Status::Failed,
        State::Cancelled {} => Status::Cancelled,
        State::Terminated {} => Status::Terminated,
    }
}

/// The command in flight in a state, if any: (step, phase, attempt).
pub(super) fn in_flight(state: &State) -> Option<(usize, Phase, u32)> {
    match state {
        State::Executing { step, attempt } => Some((*step, Phase::Step, *attempt)),
        State::Compensating { step, attempt } => Some((*step, Phase::Compensation, *attempt)),
        _ => None,
    }
}

/// The actions an operator may take in a state; the machine refuses the
/// others. Pausing changes nothing about what may be done (commands wait
/// for the unpause), except that a paused workflow can be unpaused and not
/// paused again.
pub(super) fn allowed_actions(machine: &Machine, state: &State) -> Vec<Action> {
    let cancel =
        |step: &usize| machine.cancel_refusal(*step).is_none() && !machine.cancel_requested;
    let mut allowed = match state {
        State::NotStarted {}
        | State::Completed {}
        | State::Compensated {}
        | State::Failed {}
        | State::Cancelled {}
        | State::Terminated {} => return Vec::new(),
        State::Executing { step, .. } => {
            let mut allowed = vec![Action::Terminate, Action::Pause];
            if cancel(step) {
                allowed.push(Action::Cancel);
            }
            allowed
        }
        State::WaitingToRetry { step, phase, .. } => {
            let mut allowed = vec![Action::Retry, Action::Terminate, Action::Pause];
            if *phase == Phase::Step && cancel(step) {
                allowed.push(Action::Cancel);
            }
            allowed
        }
        State::Compensating { .. } => vec![Action::Terminate, Action::Pause],
        State::Suspended { step, phase, .. } => {
            let mut allowed = vec![
                Action::Resume,
                Action::Skip,
                Action::Terminate,
                Action::Pause,
            ];
            if *phase == Phase::Step && cancel(step) {
                allowed.push(Action::Cancel);
            }
            allowed
        }
    };
    if machine.paused {
        allowed.retain(|action| *action != Action::Pause);
        allowed.push(Action::Unpause);
    }
    allowed.sort();
    allowed
}

/// The step a live state is at, and whether it is performed or undone.
pub(super) fn current_step(state: &State) -> Option<(usize, Phase)> {
    match state {
        State::Executing { step, .. } => Some((*step, Phase::Step)),
        State::WaitingToRetry { step, phase, .. } | State::Suspended { step, phase, .. } => {
            Some((*step, *phase))
        }
        State::Compensating { step, .. } => Some((*step, Phase::Compensation)),
        State::NotStarted {}
        | State::Completed {}
        | State::Compensated {}
        | State::Failed {}
        | State::Cancelled {}
        | State::Terminated {} => None,
    }
}
