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
//! | any live state | late success: of a replaced revision, or of a command given up | recorded and flagged; the undo it owes leaves before the next command (at once when suspended, then suspended again) |
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
//! | suspended | resume: retry / retry with input / skip | executing, compensating or onwards; a new revision of a possibly done step needs `earlier` (undo: its compensation first) |
//! | suspended (action step) | cancel | compensating, or the end of the money flow |
//! | suspended | late success of the halted command | onwards, as if it had come in time |
//! | waiting_to_retry | retry now | executing / compensating the next attempt |
//! | any live state | terminate | terminated: timers dropped, unpublished commands withdrawn |
//! | any live state | pause | the same state, paused: timers frozen |
//! | paused | reply or timer | held, in arrival order |
//! | paused | unpause | timers re-armed with their remaining time, then the held events applied |
//! | finished | late success not part of the outcome | recorded and flagged; compensating it, then the same end again |
//! | terminated | late reply | recorded and flagged; nothing is undone |
//! | finished | anything else | nothing; requests are refused |
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
//! (`workflow.outcome_at`), which the record does not keep.
//!
//! A reply for a key the workflow no longer waits on is late, not stale: a
//! success shows an effect happened, so it is recorded, flags the workflow,
//! and, when it is not part of the outcome, owes an undo with that
//! revision's own key ([`Undo`]). An owed undo is interjected before the
//! next command leaves ([`Then`] says where the workflow goes afterwards),
//! and the reverse walk undoes every revision done or possibly done, newest
//! first within a step. Everything else (duplicates, replies that teach
//! nothing new, commands never sent, stale timers) is ignored and changes
//! nothing.

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
use super::progress::Earlier;
use super::progress::{
    Attention, CompensationProgress, CompensationStatus, Happened, Outcome as FlowOutcome, Phase,
    Status, StepProgress, StepStatus, SuspendReason,
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
    /// Set while a compensation runs that is not the current revision's in
    /// the reverse walk: an earlier revision's, or one interjected before
    /// the workflow goes on.
    pub undoing: Option<Undo>,
}

/// A compensation of a given revision of the step the state names, and
/// where the workflow goes once it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Undo {
    pub revision: u32,
    pub then: Then,
}

/// Where the workflow goes once an [`Undo`] is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// On with the compensation of the whole workflow.
    Compensate,
    /// Send the attempt of this step that was about to leave.
    SendStep(usize),
    /// Back to this step, halted for an operator.
    Suspend(usize, SuspendReason),
    /// Back to the end the workflow had reached (it had ended, and a late
    /// success reopened it).
    Finish,
    /// On to the end the workflow was reaching when the undo was owed.
    End,
}

/// What a reply's idempotency key names in this workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Addressee {
    step: usize,
    phase: Phase,
    revision: u32,
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

/// Where a workflow rests when a late reply comes, which decides whether
/// an undo it owes can start at once.
#[derive(Debug, Clone, Copy)]
enum Rest {
    /// A command is in flight or a timer runs: the undo waits for the next
    /// command to leave, or for the reverse walk.
    Busy,
    /// Halted for an operator.
    Suspended(usize, Phase, SuspendReason),
    /// Ended with an outcome.
    Finished,
    /// Terminated: nothing is undone.
    Terminated,
}

fn step_status_name(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Cancelled => "cancelled",
        StepStatus::Skipped => "skipped",
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
            Event::ReplyReceived(reply) if self.is_late(reply, step, Phase::Step) => {
                self.late_reply(context, reply, Rest::Busy)
            }
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
            (_, Event::ReplyReceived(reply)) if self.is_late(reply, step, phase) => {
                self.late_reply(context, reply, Rest::Busy)
            }
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
            (Phase::Compensation, Event::TimerFired(timer))
                if let Some(waiting) = self.deadline_after_undo(timer) =>
            {
                self.deadline_passed(context, waiting, None)
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
            Event::ReplyReceived(reply) if self.is_late(reply, step, Phase::Compensation) => {
                self.late_reply(context, reply, Rest::Busy)
            }
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
                self.undo_progress_mut(step).last_error = Some(format!(
                    "compensation attempt {attempt} timed out after {}",
                    humantime::format_duration(timeout.unwrap_or_default())
                ));
                Transition(self.compensation_attempt_failed(context, step))
            }
            Event::TimerFired(timer) if let Some(waiting) = self.deadline_after_undo(timer) => {
                self.deadline_passed(context, waiting, None)
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
        let (step, phase, reason) = (*step, *phase, *reason);
        let Signal::Event(event) = event else {
            return context.ignore("already started");
        };
        if let Some(outcome) = self.pause_control(context, event) {
            return outcome;
        }
        match (phase, event) {
            (_, Event::ReplyReceived(reply)) if self.is_late(reply, step, phase) => {
                self.late_reply(context, reply, Rest::Suspended(step, phase, reason))
            }
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

    /// Terminated by an operator: like the other ends, but it says so, and
    /// a late reply is recorded without anything being undone.
    #[state(superstate = "finished")]
    fn terminated(&mut self, context: &mut Ctx, event: &Signal) -> Outcome<State> {
        match event {
            Signal::Event(Event::ReplyReceived(reply)) => {
                self.late_reply(context, reply, Rest::Terminated)
            }
            Signal::Event(Event::TimerFired(_)) | Signal::Start => {
                context.ignore("the workflow was terminated")
            }
            Signal::Event(_) => {
                context.refuse("the workflow was terminated and takes no more requests")
            }
        }
    }

    /// Terminal states absorb every timer and refuse every request. A reply
    /// is late: applied to what it answers, and what it shows was done but
    /// is not part of the outcome is undone.
    #[superstate]
    fn finished(&mut self, context: &mut Ctx, event: &Signal) -> Outcome<State> {
        let outcome = self.outcome.map_or("finished", FlowOutcome::as_str);
        match event {
            Signal::Event(Event::ReplyReceived(reply)) => {
                self.late_reply(context, reply, Rest::Finished)
            }
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
    /// is paused no longer: its frozen timers are dropped, and the events
    /// it held are applied after the transition (a held reply is news of
    /// what a connector did, never dropped).
    fn after_transition(&mut self, source: &State, target: &State, context: &mut Ctx) {
        let detail = format!("{} → {}", self.describe(source), self.describe(target));
        context.history(HistoryKind::StateChanged, None, None, detail);
        if self.paused && status(target).is_terminal() {
            self.paused = false;
            context.released.extend(std::mem::take(&mut self.held));
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
            self.undo_revision(step),
        )
    }

    /// The revision the compensation of `step` undoes: the one being undone
    /// out of the plain walk, else the current one.
    pub(super) fn undo_revision(&self, step: usize) -> u32 {
        match &self.undoing {
            Some(undo) => undo.revision,
            None => self.steps[step].revision,
        }
    }

    /// How undoing that revision is going.
    fn undo_progress(&self, step: usize) -> &CompensationProgress {
        let revision = self.undo_revision(step);
        let progress = &self.steps[step];
        match progress.earlier(revision) {
            Some(earlier) if revision != progress.revision => &earlier.compensation,
            _ => &progress.compensation,
        }
    }

    fn undo_progress_mut(&mut self, step: usize) -> &mut CompensationProgress {
        let revision = self.undo_revision(step);
        let progress = &mut self.steps[step];
        if revision != progress.revision
            && let Some(position) = progress
                .earlier_revisions
                .iter()
                .position(|earlier| earlier.revision == revision)
        {
            return &mut progress.earlier_revisions[position].compensation;
        }
        &mut progress.compensation
    }

    /// A timer of `step`: a compensation's carries the revision it undoes.
    fn timer(&self, kind: TimerKind, step: usize, attempt: u32) -> TimerId {
        let revision = match kind {
            TimerKind::CompensationTimeout | TimerKind::CompensationBackoff => {
                self.undo_revision(step)
            }
            TimerKind::StepTimeout | TimerKind::StepBackoff | TimerKind::Deadline => {
                self.steps[step].revision
            }
        };
        TimerId {
            kind,
            step: self.name(step).to_owned(),
            revision,
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

    /// Sends the step's next attempt, unless an undo is owed: that leaves
    /// first, and the attempt once it is done.
    fn send_step_attempt(&mut self, context: &mut Ctx, step: usize) -> State {
        if let Some(state) = self.undo_owed_first(context, Then::SendStep(step)) {
            return state;
        }
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
                self.undo_progress(step).attempts,
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
            return self.halt(context, step, SuspendReason::DeadlineExceeded);
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
                self.halt(context, step, SuspendReason::NotificationFailed)
            }
            (StepKind::Action, _) if self.cancel_requested => self.compensate(context),
            (StepKind::Action, FailurePolicy::Compensate) => self.compensate(context),
            (StepKind::Action, FailurePolicy::Suspend) => {
                self.halt(context, step, SuspendReason::StepFailed)
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
            (StepKind::Notification, None) => self.finish(context),
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
            .is_some_and(|attention| attention.deadline.as_ref() == Some(&timer))
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
            deadline: Some(timer),
        });
        match (deadline.escalation, waiting) {
            (Escalation::Flag, _) => Handled,
            (Escalation::Suspend, None) => {
                self.suspend_pending = true;
                Handled
            }
            (Escalation::Suspend, Some(attempt)) => {
                context.cancel(self.timer(TimerKind::StepBackoff, step, attempt));
                Transition(self.halt(context, step, SuspendReason::DeadlineExceeded))
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
    ///
    /// Events held while paused are applied after it: a held reply is late
    /// news of what a connector did, and is recorded as such.
    fn terminate(&mut self, context: &mut Ctx, step: usize) -> State {
        let held = std::mem::take(&mut self.held);
        self.paused = false;
        self.suspend_pending = false;
        self.undoing = None;
        context.history(
            HistoryKind::EventReceived,
            Some(self.name(step)),
            None,
            if held.is_empty() {
                "terminated: nothing is undone and no one is notified".to_owned()
            } else {
                format!(
                    "terminated: nothing is undone and no one is notified; {} held event(s) \
                     applied after it",
                    held.len()
                )
            },
        );
        context.released.extend(held);
        context.effects.push(Effect::ClearTimers);
        context.effects.push(Effect::WithdrawCommands);
        State::terminated()
    }

    /// Halts for an operator. The state change itself is the history entry.
    fn suspend(&mut self, step: usize, phase: Phase, reason: SuspendReason) -> State {
        self.suspend_pending = false;
        State::suspended(step, phase, reason)
    }

    /// Halts a step for an operator, once any undo it owes is done: a
    /// refund owed must not wait for an operator.
    fn halt(&mut self, context: &mut Ctx, step: usize, reason: SuspendReason) -> State {
        self.suspend_pending = false;
        if let Some(state) = self.undo_owed_first(context, Then::Suspend(step, reason)) {
            return state;
        }
        self.suspend(step, Phase::Step, reason)
    }

    fn resume_step(&mut self, context: &mut Ctx, step: usize, resume: &Resume) -> Outcome<State> {
        let patched;
        let resume = match resume {
            Resume::Patch { patch, earlier } => {
                let Some(current) = self.steps[step].input.clone() else {
                    return context.refuse(format!(
                        "`{}` has no input to patch (it could not be built); resume without \
                         `input` to build it again",
                        self.name(step)
                    ));
                };
                let merged = merge_patch(&current, patch);
                if merged == current {
                    if earlier.is_some() {
                        return context.refuse(
                            "`earlier` applies only to a new revision; this resume retries the \
                             same attempt with the same key (its input does not change)",
                        );
                    }
                    &Resume::Retry
                } else {
                    patched = Resume::RetryWithInput {
                        input: merged,
                        earlier: *earlier,
                    };
                    &patched
                }
            }
            other => other,
        };
        let earlier = match resume {
            Resume::Retry | Resume::Patch { .. } => None,
            Resume::RetryWithInput { earlier, .. } | Resume::Skip { earlier, .. } => {
                if self.paused && !self.held.is_empty() {
                    // A new revision replaces the current one; a held reply
                    // may say it took effect. The operator must see it first.
                    return context.refuse(format!(
                        "unpause first: {} held event(s) may show that `{}` took effect, and \
                         a new revision would be decided without them",
                        self.held.len(),
                        self.name(step)
                    ));
                }
                let skip = matches!(resume, Resume::Skip { .. });
                if let Err(reason) = self.earlier_statement(step, *earlier, skip) {
                    return context.refuse(reason);
                }
                *earlier
            }
        };
        let said = earlier.map_or(String::new(), |earlier| {
            format!("; the earlier attempt: {}", earlier.as_str())
        });
        let detail = match resume {
            Resume::Retry | Resume::Patch { .. } => "resume: retry".to_owned(),
            Resume::RetryWithInput { input, .. } => {
                if !input.is_object() {
                    return context.refuse("the new input must be a JSON object");
                }
                let progress = &mut self.steps[step];
                progress.next_revision(context.now);
                progress.input = Some(input.clone());
                let detail = format!(
                    "resume: retry with new input (revision {}){said}",
                    progress.revision
                );
                self.declare_earlier(step, earlier, None);
                detail
            }
            Resume::Skip { output, .. } => {
                if let Err(problem) = self.spec(step).output.check(output) {
                    return context.refuse(format!("cannot skip `{}`: {problem}", self.name(step)));
                }
                let progress = &mut self.steps[step];
                progress.next_revision(context.now);
                progress.status = StepStatus::Skipped;
                progress.output = Some(output.clone());
                let detail = format!("resume: skip (revision {}){said}", progress.revision);
                self.declare_earlier(step, earlier, Some(output));
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

    /// Checks what an operator says of the halted step's current revision
    /// as a new one replaces it: needed exactly when an attempt went
    /// unanswered (it may have taken effect), `undo` only where q2c can
    /// undo, `done` only for a skip.
    fn earlier_statement(
        &self,
        step: usize,
        earlier: Option<Earlier>,
        skip: bool,
    ) -> Result<(), String> {
        let name = self.name(step);
        let progress = &self.steps[step];
        // As `Saga::needs_earlier` tells callers beforehand.
        let uncertain = progress.possibly_done && progress.status != StepStatus::Succeeded;
        if progress.done_late && earlier == Some(Earlier::NotDone) {
            return Err(format!(
                "`earlier: not_done` contradicts what q2c knows: a success of revision {} of \
                 `{name}` came; say `undo`{}",
                progress.revision,
                if skip { " or `done`" } else { "" }
            ));
        }
        let choices = if skip {
            "`undo` (its compensation is sent first), `not_done` (you checked: it did not \
             happen) or `done` (it happened, and is the step's result)"
        } else {
            "`undo` (its compensation is sent, and must succeed, before the new input's \
             command) or `not_done` (you checked: it did not happen)"
        };
        match earlier {
            None if uncertain => Err(format!(
                "`earlier` is required: an attempt of `{name}` went unanswered, so revision {} \
                 may have taken effect; say what became of it: {choices}",
                progress.revision
            )),
            None => Ok(()),
            Some(_) if !uncertain => Err(format!(
                "`earlier` means nothing here: revision {} of `{name}` is known not to have \
                 taken effect (no attempt went unanswered); leave it out",
                progress.revision
            )),
            Some(Earlier::Done) if !skip => Err(
                "`earlier: done` takes the attempt as the step's result, which only a skip \
                 does; with a new input say `undo` or `not_done`"
                    .to_owned(),
            ),
            Some(Earlier::Undo) if !self.compensable(step) => Err(format!(
                "`{name}` has no compensation, so q2c cannot undo it: check the system it \
                 acts on, then say `not_done`{}",
                if skip { " or `done`" } else { "" }
            )),
            Some(_) => Ok(()),
        }
    }

    /// Records the operator's statement on the revision just replaced:
    /// `undo` leaves it possibly done and owed an undo, `not_done` makes it
    /// not done (a success that still comes is undone), `done` makes it
    /// done with the skip's output as its own.
    fn declare_earlier(&mut self, step: usize, earlier: Option<Earlier>, output: Option<&Value>) {
        let Some(earlier) = earlier else {
            return;
        };
        let Some(replaced) = self.steps[step].earlier_revisions.last_mut() else {
            return;
        };
        replaced.declared = Some(earlier);
        match earlier {
            Earlier::Undo => {}
            Earlier::NotDone => replaced.happened = Happened::NotDone,
            Earlier::Done => {
                replaced.happened = Happened::Done;
                replaced.output = output.cloned();
            }
        }
    }

    // ---- late replies ------------------------------------------------------

    /// The step command or compensation a key names, and of which revision.
    fn addressee(&self, key: &IdempotencyKey) -> Option<Addressee> {
        (0..self.steps.len()).find_map(|step| {
            let name = self.name(step);
            (1..=self.steps[step].revision).find_map(|revision| {
                if *key == IdempotencyKey::for_command(self.workflow_id, name, revision) {
                    Some(Addressee {
                        step,
                        phase: Phase::Step,
                        revision,
                    })
                } else if *key == IdempotencyKey::for_compensation(self.workflow_id, name, revision)
                {
                    Some(Addressee {
                        step,
                        phase: Phase::Compensation,
                        revision,
                    })
                } else {
                    None
                }
            })
        })
    }

    /// Whether a live workflow at `step` in `phase` takes `reply` as late: a
    /// step command's reply of a replaced revision, or of a current revision
    /// the workflow is not waiting on.
    fn is_late(&self, reply: &Reply, step: usize, phase: Phase) -> bool {
        self.addressee(&reply.key)
            .is_some_and(|addressee| match addressee.phase {
                Phase::Step => {
                    addressee.revision != self.steps[addressee.step].revision
                        || addressee.step != step
                        || phase != Phase::Step
                }
                Phase::Compensation => {
                    phase != Phase::Compensation
                        || addressee.step != step
                        || addressee.revision != self.undo_revision(step)
                }
            })
    }

    /// Applies a reply that came for a replaced revision, for a command the
    /// workflow had given up, or after the workflow ended: to what it
    /// answers, with a history line and the workflow flagged for an
    /// operator. What it shows was done but is not part of the outcome is
    /// undone with its own key: at once when nothing else is under way,
    /// else before the next command leaves (or by the reverse walk). A
    /// terminated workflow undoes nothing. A reply that teaches nothing new
    /// (another success of a command known done, a failure that leaves the
    /// effect as uncertain as it was) changes nothing.
    fn late_reply(&mut self, context: &mut Ctx, reply: &Reply, rest: Rest) -> Outcome<State> {
        let Some(addressee) = self.addressee(&reply.key) else {
            return context.ignore(format!("{} is not a command of this workflow", reply.key));
        };
        let (step, revision) = (addressee.step, addressee.revision);
        let spec = match addressee.phase {
            Phase::Step => Some(&self.spec(step).command),
            Phase::Compensation => self.compensation_spec(step),
        };
        let Some(spec) = spec else {
            return context.ignore("the step has no compensation");
        };
        let expected = match reply.result {
            ReplyResult::Succeeded { .. } => &spec.success_reply,
            ReplyResult::Failed { .. } => &spec.failure_reply,
        };
        if reply.reply_type != *expected {
            return context.ignore(format!(
                "`{}` is not the expected `{expected}`",
                reply.reply_type
            ));
        }
        let command_type = spec.command_type.clone();
        let learned = match addressee.phase {
            Phase::Step if revision == self.steps[step].revision => {
                self.late_current_reply(step, reply)
            }
            Phase::Step => self.late_earlier_reply(step, revision, reply),
            Phase::Compensation => self.late_compensation_reply(step, revision, reply),
        };
        let Some(learned) = learned else {
            return context.ignore(format!(
                "late reply for {} (attempt {}) changes nothing known",
                reply.key, reply.attempt
            ));
        };
        let detail = format!(
            "late reply for {} (attempt {}): {learned}",
            reply.key, reply.attempt
        );
        context.history(
            HistoryKind::LateReply,
            Some(self.name(step)),
            Some(&command_type),
            detail.clone(),
        );
        // A deadline that flagged the workflow before stays handled: its
        // timer delivered again must not flag it anew.
        let deadline = self
            .attention
            .as_ref()
            .and_then(|attention| attention.deadline.clone());
        self.attention = Some(Attention {
            step: self.name(step).to_owned(),
            since: context.now,
            reason: detail,
            deadline,
        });
        let then = match rest {
            Rest::Busy | Rest::Terminated | Rest::Suspended(_, Phase::Compensation, _) => {
                return Handled;
            }
            Rest::Suspended(step, Phase::Step, reason) => Then::Suspend(step, reason),
            Rest::Finished => Then::Finish,
        };
        match self.undo_owed_first(context, then) {
            Some(state) => Transition(state),
            None => Handled,
        }
    }

    /// A late success of the current revision of a step the workflow gave
    /// up: the effect happened after all.
    fn late_current_reply(&mut self, step: usize, reply: &Reply) -> Option<String> {
        if !matches!(reply.result, ReplyResult::Succeeded { .. }) {
            return None;
        }
        let progress = &self.steps[step];
        let sent = (1..=progress.attempts).contains(&reply.attempt);
        if !sent || progress.status == StepStatus::Succeeded || progress.done_late {
            return None;
        }
        let fate = self.fate(step, &progress.compensation);
        let usable = match &reply.result {
            ReplyResult::Succeeded { output } => self
                .spec(step)
                .output
                .check(output)
                .is_ok()
                .then(|| output.clone()),
            ReplyResult::Failed { .. } => None,
        };
        let progress = &mut self.steps[step];
        progress.done_late = true;
        progress.possibly_done = true;
        if usable.is_some() {
            progress.output = usable;
        }
        Some(format!(
            "succeeded after the step was given up ({}); {fate}",
            step_status_name(progress.status)
        ))
    }

    /// A late reply of a replaced revision: a success makes it done; a
    /// failure for good of its last attempt makes it known not done.
    fn late_earlier_reply(&mut self, step: usize, revision: u32, reply: &Reply) -> Option<String> {
        let checked = match &reply.result {
            ReplyResult::Succeeded { output } => Some(
                self.spec(step)
                    .output
                    .check(output)
                    .map(|()| output.clone()),
            ),
            ReplyResult::Failed { .. } => None,
        };
        let earlier = self.steps[step].earlier(revision)?;
        if !(1..=earlier.attempts).contains(&reply.attempt) {
            return None;
        }
        match (&reply.result, checked) {
            (ReplyResult::Succeeded { .. }, Some(checked)) => {
                if earlier.happened == Happened::Done {
                    return None;
                }
                let fate = self.fate(step, &earlier.compensation);
                let earlier = self.steps[step].earlier_mut(revision)?;
                earlier.happened = Happened::Done;
                let unusable = match checked {
                    Ok(output) => {
                        earlier.output = Some(output);
                        String::new()
                    }
                    Err(problem) => format!(" (its output is unusable: {problem})"),
                };
                Some(format!(
                    "revision {revision}, replaced by an operator, took effect{unusable}; {fate}"
                ))
            }
            (ReplyResult::Failed { retryable, reason }, _) => {
                let declared_done = earlier.declared == Some(Earlier::Done);
                let settles = !retryable
                    && reply.attempt == earlier.attempts
                    && (earlier.happened == Happened::PossiblyDone
                        || (declared_done && earlier.happened == Happened::Done));
                if !settles {
                    return None;
                }
                self.steps[step].earlier_mut(revision)?.happened = Happened::NotDone;
                Some(if declared_done {
                    format!(
                        "revision {revision} did not take effect ({reason}), though an operator \
                         declared it done and the workflow went on with their output: check"
                    )
                } else {
                    format!(
                        "revision {revision}, replaced by an operator, did not take effect: {reason}"
                    )
                })
            }
            (ReplyResult::Succeeded { .. }, None) => None,
        }
    }

    /// A late success of a compensation the workflow no longer waits on
    /// (given up, declared done by hand, or cut off by a termination).
    fn late_compensation_reply(
        &mut self,
        step: usize,
        revision: u32,
        reply: &Reply,
    ) -> Option<String> {
        if !matches!(reply.result, ReplyResult::Succeeded { .. }) {
            return None;
        }
        let progress = &mut self.steps[step];
        let compensation = if revision == progress.revision {
            &mut progress.compensation
        } else {
            &mut progress.earlier_mut(revision)?.compensation
        };
        let before = compensation.status;
        if !(1..=compensation.attempts).contains(&reply.attempt) {
            return None;
        }
        if matches!(
            before,
            CompensationStatus::Compensated | CompensationStatus::NotStarted
        ) {
            return None;
        }
        compensation.status = CompensationStatus::Compensated;
        Some(match before {
            CompensationStatus::Skipped => format!(
                "the compensation of revision {revision} took effect, though an operator had \
                 declared it done by hand: check that it was not undone twice"
            ),
            _ => format!("the compensation of revision {revision} took effect after all"),
        })
    }

    /// What becomes of an effect found done, given how undoing it stands.
    fn fate(&self, step: usize, compensation: &CompensationProgress) -> &'static str {
        if !self.compensable(step) {
            return "q2c cannot undo it: an operator must check";
        }
        match compensation.status {
            CompensationStatus::NotStarted => "it is undone with its own key",
            CompensationStatus::Running => "the compensation under way undoes it",
            CompensationStatus::Compensated => "its compensation has already run",
            CompensationStatus::Skipped => "its compensation was declared done by hand",
            CompensationStatus::Failed => "its compensation failed: an operator must check",
        }
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

    /// Whether `step` is an action step q2c knows how to undo.
    fn compensable(&self, step: usize) -> bool {
        self.spec(step).kind == StepKind::Action && self.compensation_spec(step).is_some()
    }

    /// The next revision the reverse walk undoes: the latest step first
    /// and, within a step, its current revision, then every replaced one
    /// that is done or possibly done, newest first (`None`: the current).
    fn next_in_walk(&self) -> Option<(usize, Option<u32>)> {
        (0..self.steps.len()).rev().find_map(|step| {
            if self.needs_compensation(step) {
                return Some((step, None));
            }
            if !self.compensable(step) {
                return None;
            }
            self.steps[step]
                .earlier_revisions
                .iter()
                .rev()
                .find(|earlier| {
                    earlier.happened.may_have_happened()
                        && earlier.compensation.status == CompensationStatus::NotStarted
                })
                .map(|earlier| (step, Some(earlier.revision)))
        })
    }

    /// An undo the workflow owes outside its reverse walk: of a replaced
    /// revision known done (unless an operator took it as the step's
    /// result) or that an operator asked to undo, or, once the money flow has ended without
    /// completing, of a step whose success came after it was given up.
    /// The latest step first, its newest revision first.
    fn owed_undo(&self) -> Option<(usize, u32)> {
        let undone_flow = matches!(
            self.outcome,
            Some(FlowOutcome::Compensated | FlowOutcome::Cancelled | FlowOutcome::Failed)
        );
        (0..self.steps.len())
            .rev()
            .filter(|&step| self.compensable(step))
            .find_map(|step| {
                let progress = &self.steps[step];
                if undone_flow && self.needs_compensation(step) {
                    return Some((step, progress.revision));
                }
                progress
                    .earlier_revisions
                    .iter()
                    .rev()
                    .find(|earlier| {
                        let owed = match earlier.declared {
                            Some(Earlier::Done) => false,
                            Some(Earlier::Undo) => earlier.happened.may_have_happened(),
                            Some(Earlier::NotDone) | None => earlier.happened == Happened::Done,
                        };
                        owed && earlier.compensation.status == CompensationStatus::NotStarted
                    })
                    .map(|earlier| (step, earlier.revision))
            })
    }

    /// The step whose attempt waits for the undo under way, if `timer` is
    /// that step's deadline: it still counts (flagging the workflow, or
    /// halting it once the undo is done).
    fn deadline_after_undo(&self, timer: &TimerId) -> Option<usize> {
        match &self.undoing {
            Some(Undo {
                then: Then::SendStep(step),
                ..
            }) if self.deadline_timer(*step).as_ref() == Some(timer) => Some(*step),
            _ => None,
        }
    }

    /// Starts the undo owed, if there is one, to be followed by `then`.
    fn undo_owed_first(&mut self, context: &mut Ctx, then: Then) -> Option<State> {
        let (step, revision) = self.owed_undo()?;
        self.undoing = Some(Undo { revision, then });
        Some(self.start_compensation_run(context, step))
    }

    /// Where the workflow goes once a compensation is done (or declared
    /// done by an operator).
    fn after_undo(&mut self, context: &mut Ctx) -> State {
        match self.undoing.take().map(|undo| undo.then) {
            None | Some(Then::Compensate) => self.compensate(context),
            Some(Then::SendStep(step) | Then::Suspend(step, _))
                if self.succeeded_meanwhile(step) =>
            {
                self.take_late_success(context, step)
            }
            Some(Then::SendStep(step)) if self.suspend_pending => {
                self.halt(context, step, SuspendReason::DeadlineExceeded)
            }
            Some(Then::SendStep(step)) => self.send_step_attempt(context, step),
            Some(Then::Suspend(step, reason)) => self.halt(context, step, reason),
            Some(Then::Finish | Then::End) => self.finish(context),
        }
    }

    /// Whether the step the workflow returns to after an undo got a usable
    /// success for its current revision while the undo ran.
    fn succeeded_meanwhile(&self, step: usize) -> bool {
        let progress = &self.steps[step];
        progress.done_late && progress.output.is_some() && progress.status != StepStatus::Succeeded
    }

    /// Takes that success as if it had come in time: the step succeeded.
    fn take_late_success(&mut self, context: &mut Ctx, step: usize) -> State {
        self.end_run(context, step);
        let progress = &mut self.steps[step];
        progress.status = StepStatus::Succeeded;
        progress.possibly_done = false;
        progress.done_late = false;
        progress.last_error = None;
        context.history(
            HistoryKind::ReplyReceived,
            Some(self.name(step)),
            Some(&self.spec(step).command.command_type),
            "the success that came during the undo moves the step on".to_owned(),
        );
        self.after_step(context, step)
    }

    /// Undoes the next completed revision in reverse order, or ends the
    /// money flow when nothing is left to undo.
    fn compensate(&mut self, context: &mut Ctx) -> State {
        if let Some((step, revision)) = self.next_in_walk() {
            self.undoing = revision.map(|revision| Undo {
                revision,
                then: Then::Compensate,
            });
            return self.start_compensation_run(context, step);
        }
        let undone = |compensation: &CompensationProgress| {
            matches!(
                compensation.status,
                CompensationStatus::Compensated | CompensationStatus::Skipped
            )
        };
        let undid_something = self.steps.iter().any(|step| {
            undone(&step.compensation)
                || step
                    .earlier_revisions
                    .iter()
                    .any(|earlier| undone(&earlier.compensation))
        });
        let outcome = match (self.cancel_requested, undid_something) {
            (true, _) => FlowOutcome::Cancelled,
            (false, true) => FlowOutcome::Compensated,
            (false, false) => FlowOutcome::Failed,
        };
        self.end_money_flow(context, outcome)
    }

    /// Begins a run of the compensation of the revision being undone. Its
    /// input sees that revision's output as the step's.
    fn start_compensation_run(&mut self, context: &mut Ctx, step: usize) -> State {
        let compensation = self.undo_progress_mut(step);
        compensation.status = CompensationStatus::Running;
        compensation.run_started_after = compensation.attempts;
        if self.undo_progress(step).input.is_none() {
            let revision = self.undo_revision(step);
            let mut outputs = self.input_context_outputs();
            if let Some(earlier) = self.steps[step].earlier(revision)
                && revision != self.steps[step].revision
            {
                outputs[step] = earlier.output.as_ref();
            }
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
                Some(Ok(input)) => self.undo_progress_mut(step).input = Some(input),
                Some(Err(message)) => {
                    let compensation = self.undo_progress_mut(step);
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
        self.undo_progress_mut(step).attempts += 1;
        let attempt = self.undo_progress(step).attempts;
        let key = self.compensation_key(step);
        let undoes = IdempotencyKey::for_command(
            self.workflow_id,
            self.name(step),
            self.undo_revision(step),
        );
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
            input: self
                .undo_progress(step)
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
        let compensation = self.undo_progress_mut(step);
        match answer {
            Answer::Succeeded(_) => {
                compensation.status = CompensationStatus::Compensated;
                compensation.last_error = None;
                Transition(self.after_undo(context))
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
        let compensation = self.undo_progress(step);
        let used = compensation.attempts - compensation.run_started_after;
        let attempt = compensation.attempts;
        let Some(retry) = self.compensation_spec(step).map(|spec| spec.retry) else {
            return self.suspend(step, Phase::Compensation, SuspendReason::CompensationFailed);
        };
        if used >= retry.max_attempts {
            let compensation = self.undo_progress_mut(step);
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
            Resume::RetryWithInput { .. } | Resume::Patch { .. } => context.refuse(
                "a compensation's input cannot be changed: retry it, or skip it once undone by hand",
            ),
            Resume::Skip {
                earlier: Some(_), ..
            } => context.refuse(
                "`earlier` means nothing for a compensation: skipping it declares it undone by hand",
            ),
            Resume::Skip { .. } => {
                self.undo_progress_mut(step).status = CompensationStatus::Skipped;
                context.history(
                    HistoryKind::EventReceived,
                    Some(self.name(step)),
                    self.compensation_type(step),
                    "resume: skip the compensation (undone by hand)".to_owned(),
                );
                Transition(self.after_undo(context))
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
            None => self.finish(context),
        }
    }

    /// The terminal state named after the outcome, once any undo owed is
    /// done.
    fn finish(&mut self, context: &mut Ctx) -> State {
        if let Some(state) = self.undo_owed_first(context, Then::End) {
            return state;
        }
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
            match phase {
                Phase::Step => self.steps[step].revision,
                Phase::Compensation => self.undo_revision(step),
            }
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
