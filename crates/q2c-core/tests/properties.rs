//! Property tests of the saga machine over generated definitions and
//! generated event sequences (duplicates, stale and late replies, replies for
//! other steps, stale timers, cancel and resume at any point).
//!
//! After every event they check the rules the machine promises: one command
//! in flight at most; compensations in reverse order for exactly the steps
//! that completed (or may have); terminal states absorb every event;
//! duplicates and stale events change nothing; an operator's action is
//! applied exactly when the saga lists it as allowed; a paused saga only
//! holds replies and timers, and applies them when unpaused; and once
//! replies stop coming, timers alone bring every workflow to a terminal
//! status or to `suspended`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use q2c_core::definition::{Definition, FailurePolicy, StepKind};
use q2c_core::domain::quote::fixtures;
use q2c_core::saga::{
    Action, Command, CommandRole, CompensationStatus, Disposition, Effect, Event, HeldEvent,
    Outcome, Phase, Reply, ReplyResult, Request, Resume, Saga, Status, StepStatus, TimerId,
    TimerKind,
};
use serde_json::json;
use support::{t0, workflow_id};

/// One generated step: its kind and the knobs that change its paths.
#[derive(Debug, Clone)]
struct StepShape {
    notification: bool,
    compensation: bool,
    suspend_on_failure: bool,
    attempts: u32,
    deadline: Option<bool>,
}

fn step_shape(notification: bool) -> impl Strategy<Value = StepShape> {
    (
        any::<bool>(),
        any::<bool>(),
        1_u32..=3,
        prop::option::of(any::<bool>()),
    )
        .prop_map(
            move |(compensation, suspend_on_failure, attempts, deadline)| StepShape {
                notification,
                compensation: compensation && !notification,
                suspend_on_failure,
                attempts,
                deadline,
            },
        )
}

/// 1 to 6 steps: at least one action step, then at most one notification.
fn definition_shape() -> impl Strategy<Value = Vec<StepShape>> {
    (1_usize..=6, any::<bool>()).prop_flat_map(|(total, with_notification)| {
        let notifications = usize::from(with_notification && total > 1);
        let actions = total - notifications;
        (
            prop::collection::vec(step_shape(false), actions),
            prop::collection::vec(step_shape(true), notifications),
        )
            .prop_map(|(mut actions, notifications)| {
                actions.extend(notifications);
                actions
            })
    })
}

fn definition_text(shape: &[StepShape]) -> String {
    let mut text = String::from("name = \"generated\"\n");
    for (index, step) in shape.iter().enumerate() {
        text.push_str(&format!(
            "\n[[steps]]\nname = \"s{index}\"\ncommand = \"test.s{index}\"\ntimeout = \"10s\"\n\
             retry = {{ max_attempts = {}, initial_backoff = \"1s\", max_backoff = \"4s\", jitter = 0.5 }}\n",
            step.attempts
        ));
        if step.notification {
            text.push_str("kind = \"notification\"\n");
        } else if step.suspend_on_failure {
            text.push_str("on_failure = \"suspend\"\n");
        } else {
            text.push_str("on_failure = \"compensate\"\n");
        }
        if let Some(suspend) = step.deadline {
            text.push_str(&format!(
                "deadline = {{ after = \"12s\", escalation = \"{}\" }}\n",
                if suspend { "suspend" } else { "flag" }
            ));
        }
        if step.compensation {
            text.push_str(&format!(
                "[steps.compensation]\ncommand = \"test.undo_s{index}\"\n\
                 retry = {{ max_attempts = {}, initial_backoff = \"1s\", max_backoff = \"2s\" }}\n",
                step.attempts
            ));
        }
    }
    text
}

/// What the generated sequence does next; indices pick among what exists.
#[derive(Debug, Clone)]
enum Op {
    Succeed,
    Fail {
        retryable: bool,
    },
    LateReply {
        pick: usize,
        success: bool,
        retryable: bool,
    },
    Duplicate {
        pick: usize,
    },
    WrongReplyType,
    FireTimer,
    FireStaleTimer {
        pick: usize,
    },
    RefireLastTimer,
    Cancel,
    Resume {
        pick: u8,
    },
    /// An operator's action through the API's door: checked against the
    /// actions the saga allows.
    Act {
        pick: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Succeed),
        3 => any::<bool>().prop_map(|retryable| Op::Fail { retryable }),
        2 => (any::<usize>(), any::<bool>(), any::<bool>())
            .prop_map(|(pick, success, retryable)| Op::LateReply { pick, success, retryable }),
        2 => any::<usize>().prop_map(|pick| Op::Duplicate { pick }),
        1 => Just(Op::WrongReplyType),
        4 => Just(Op::FireTimer),
        2 => any::<usize>().prop_map(|pick| Op::FireStaleTimer { pick }),
        2 => Just(Op::RefireLastTimer),
        1 => Just(Op::Cancel),
        2 => any::<u8>().prop_map(|pick| Op::Resume { pick }),
        4 => any::<u8>().prop_map(|pick| Op::Act { pick }),
    ]
}

/// The world around one saga: connectors, the timer table, and what the
/// checks need to remember.
struct World {
    saga: Saga,
    definition: Arc<Definition>,
    now: DateTime<Utc>,
    sent: Vec<Command>,
    live_timers: Vec<(TimerId, DateTime<Utc>)>,
    /// Timers frozen by a pause, with the time each had left.
    frozen_timers: Vec<(TimerId, chrono::TimeDelta)>,
    dead_timers: Vec<TimerId>,
    /// Timers delivered once already, in delivery order.
    fired_timers: Vec<TimerId>,
    applied_replies: Vec<Event>,
    /// Steps (index, revision) a success reply was applied for.
    succeeded: BTreeSet<(usize, u32)>,
    /// Steps (index, revision) one of whose attempts timed out.
    timed_out: BTreeSet<(usize, u32)>,
}

impl World {
    fn new(definition: Arc<Definition>) -> Self {
        let (saga, effects) =
            Saga::start(workflow_id(7), definition.clone(), fixtures::quote(), t0());
        let mut world = Self {
            saga,
            definition,
            now: t0(),
            sent: Vec::new(),
            live_timers: Vec::new(),
            frozen_timers: Vec::new(),
            dead_timers: Vec::new(),
            fired_timers: Vec::new(),
            applied_replies: Vec::new(),
            succeeded: BTreeSet::new(),
            timed_out: BTreeSet::new(),
        };
        world.carry_out(&effects);
        world
    }

    fn carry_out(&mut self, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::SendCommand(command) => self.sent.push(command.clone()),
                Effect::ScheduleTimer { timer, due_at } => {
                    self.live_timers.push((timer.clone(), *due_at));
                }
                Effect::CancelTimer(timer) => {
                    if let Some(position) = self.live_timers.iter().position(|(t, _)| t == timer) {
                        self.live_timers.remove(position);
                        self.dead_timers.push(timer.clone());
                    }
                    if let Some(position) = self.frozen_timers.iter().position(|(t, _)| t == timer)
                    {
                        self.frozen_timers.remove(position);
                        self.dead_timers.push(timer.clone());
                    }
                }
                Effect::RecordHistory(_) | Effect::WithdrawCommands => {}
                Effect::FreezeTimers => {
                    let now = self.now;
                    let frozen = self
                        .live_timers
                        .drain(..)
                        .map(|(timer, due_at)| (timer, due_at - now));
                    self.frozen_timers.extend(frozen);
                }
                Effect::ThawTimers => {
                    let now = self.now;
                    let thawed = self
                        .frozen_timers
                        .drain(..)
                        .map(|(timer, remaining)| (timer, now + remaining));
                    self.live_timers.extend(thawed);
                }
                Effect::ClearTimers => {
                    let cleared = self
                        .live_timers
                        .drain(..)
                        .map(|(timer, _)| timer)
                        .chain(self.frozen_timers.drain(..).map(|(timer, _)| timer));
                    self.dead_timers.extend(cleared.collect::<Vec<_>>());
                }
            }
        }
    }

    fn step_index(&self, name: &str) -> usize {
        self.definition
            .step_index(name)
            .expect("commands name defined steps")
    }

    /// The command a reply would answer now: the one in flight, else the
    /// last one sent.
    fn current_command(&self) -> Option<Command> {
        let in_flight = self.saga.in_flight();
        self.sent
            .iter()
            .rev()
            .find(|command| {
                in_flight.as_ref().is_none_or(|flight| {
                    flight.key == command.idempotency_key && flight.attempt == command.attempt
                })
            })
            .cloned()
    }

    /// Turns an op into an event, and says whether it must change nothing.
    fn event_for(&mut self, op: &Op) -> Option<(Event, bool)> {
        match op {
            Op::Succeed => self
                .current_command()
                .map(|c| (reply(&c, true, false), false)),
            Op::Fail { retryable } => self
                .current_command()
                .map(|c| (reply(&c, false, *retryable), false)),
            Op::LateReply {
                pick,
                success,
                retryable,
            } => {
                let command = self.sent.get(pick % self.sent.len().max(1))?.clone();
                Some((reply(&command, *success, *retryable), false))
            }
            Op::Duplicate { pick } => {
                let event = self
                    .applied_replies
                    .get(pick % self.applied_replies.len().max(1))?
                    .clone();
                Some((event, true))
            }
            Op::WrongReplyType => {
                let command = self.current_command()?;
                let mut event = reply(&command, true, false);
                if let Event::ReplyReceived(reply) = &mut event {
                    reply.reply_type = format!("{}.failed", command.command_type);
                }
                Some((event, true))
            }
            Op::FireTimer => {
                let (index, _) = self
                    .live_timers
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (_, due_at))| *due_at)?;
                let (timer, due_at) = self.live_timers.remove(index);
                self.now = self.now.max(due_at);
                self.dead_timers.push(timer.clone());
                self.fired_timers.push(timer.clone());
                Some((Event::TimerFired(timer), false))
            }
            Op::FireStaleTimer { pick } => {
                let timer = self
                    .dead_timers
                    .get(pick % self.dead_timers.len().max(1))?
                    .clone();
                Some((Event::TimerFired(timer), true))
            }
            Op::RefireLastTimer => {
                let timer = self.fired_timers.last()?.clone();
                Some((Event::TimerFired(timer), true))
            }
            Op::Cancel => Some((Event::CancelRequested, false)),
            Op::Resume { pick } => Some((
                Event::ResumeRequested(match pick % 3 {
                    0 => Resume::Retry,
                    1 => Resume::RetryWithInput(json!({"operator": "changed"})),
                    _ => Resume::Skip { output: json!({}) },
                }),
                false,
            )),
            Op::Act { pick } => {
                let request = match pick % 9 {
                    0 => Request::Resume { input_patch: None },
                    1 => Request::Resume {
                        input_patch: Some(json!({"operator": "patched"})),
                    },
                    2 => Request::Retry,
                    3 => Request::Skip { output: json!({}) },
                    4 => Request::Cancel,
                    5 => Request::Terminate,
                    6 | 7 => Request::Pause,
                    _ => Request::Unpause,
                };
                Some((request.event(), false))
            }
        }
    }

    /// The action an event stands for, if it is an operator's request.
    fn action_of(event: &Event) -> Option<(Action, bool)> {
        let action = match event {
            Event::ResumeRequested(Resume::Patch(_) | Resume::RetryWithInput(_)) => {
                return Some((Action::Resume, true));
            }
            Event::ResumeRequested(Resume::Skip { .. }) => Action::Skip,
            Event::ResumeRequested(_) => Action::Resume,
            Event::RetryRequested => Action::Retry,
            Event::CancelRequested => Action::Cancel,
            Event::TerminateRequested => Action::Terminate,
            Event::PauseRequested => Action::Pause,
            Event::UnpauseRequested => Action::Unpause,
            Event::ReplyReceived(_) | Event::TimerFired(_) => return None,
        };
        Some((action, false))
    }

    /// Applies one event and checks every invariant around it.
    fn apply(&mut self, event: Event, must_change_nothing: bool) -> Result<(), TestCaseError> {
        let before_record = self.saga.record();
        let before_status = self.saga.status();
        let before_flight = self.saga.in_flight();
        let before_allowed = self.saga.allowed_actions();
        let held_before: Vec<HeldEvent> = self.saga.held().to_vec();
        let decision = self.saga.handle(&event, self.now);

        let arrival = matches!(event, Event::ReplyReceived(_) | Event::TimerFired(_));
        if before_record.paused && arrival {
            // Held, not applied: the record gains the event and nothing else.
            prop_assert_eq!(&decision.disposition, &Disposition::Applied);
            let mut expected = before_record.clone();
            expected
                .held
                .push(self.saga.held().last().cloned().expect("held"));
            prop_assert_eq!(&self.saga.record(), &expected, "a paused saga changed");
            prop_assert!(
                decision
                    .effects
                    .iter()
                    .all(|effect| matches!(effect, Effect::RecordHistory(_))),
                "a held event had effects"
            );
            return Ok(());
        }
        if let Some((action, patched)) = Self::action_of(&event) {
            let allowed = before_allowed.contains(&action);
            let compensation_halted = matches!(
                self.saga_phase_before(&before_record),
                Some(Phase::Compensation)
            );
            // What an action carries may be refused though the action is
            // allowed: a changed input for a compensation, and a new revision
            // while held events may show the current one took effect.
            let holding = before_record.paused && !before_record.held.is_empty();
            let new_revision = patched || action == Action::Skip;
            let content_refused = (patched && compensation_halted)
                || (new_revision && holding && !compensation_halted);
            if allowed && !content_refused {
                prop_assert_eq!(
                    &decision.disposition,
                    &Disposition::Applied,
                    "{} is allowed in {:?} but was not applied",
                    action,
                    before_record.state
                );
            }
            if !allowed {
                prop_assert_ne!(
                    &decision.disposition,
                    &Disposition::Applied,
                    "{} is not allowed in {:?} (allowed: {:?}) but was applied",
                    action,
                    before_record.state,
                    before_allowed
                );
            }
        }

        if before_status.is_terminal() || must_change_nothing {
            prop_assert_ne!(
                &decision.disposition,
                &Disposition::Applied,
                "{:?} must not apply (status {:?})",
                event,
                before_status
            );
        }
        if decision.disposition != Disposition::Applied {
            prop_assert!(decision.effects.is_empty(), "unapplied event had effects");
            prop_assert_eq!(
                &self.saga.record(),
                &before_record,
                "unapplied event changed the record"
            );
            return Ok(());
        }

        if event == Event::UnpauseRequested {
            self.track_released(&held_before);
            self.carry_out(&decision.effects);
            return self.check_state();
        }
        let sent: Vec<&Command> = decision
            .effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::SendCommand(command) => Some(command),
                _ => None,
            })
            .collect();
        prop_assert!(sent.len() <= 1, "one event sent {} commands", sent.len());
        if let (Some(command), Some(flight)) = (sent.first(), before_flight.as_ref()) {
            let settles = match &event {
                Event::ReplyReceived(reply) => reply.key == flight.key,
                Event::TimerFired(timer) => {
                    matches!(
                        timer.kind,
                        TimerKind::StepTimeout | TimerKind::CompensationTimeout
                    ) && timer.step == flight.step
                        && timer.attempt == flight.attempt
                }
                _ => false,
            };
            prop_assert!(
                settles,
                "sent {} while {} was in flight",
                command.idempotency_key,
                flight.key
            );
        }
        if let Some(command) = sent.first() {
            let flight = self.saga.in_flight();
            prop_assert_eq!(
                flight.map(|f| (f.key, f.attempt)),
                Some((command.idempotency_key.clone(), command.attempt)),
                "the command sent is the one in flight"
            );
        }

        match &event {
            Event::ReplyReceived(reply) => {
                self.applied_replies.push(event.clone());
                if let ReplyResult::Succeeded { .. } = reply.result
                    && let Some(command) = self.sent.iter().find(|c| c.idempotency_key == reply.key)
                    && command.role == CommandRole::Step
                {
                    let step = self.step_index(&command.step);
                    self.succeeded
                        .insert((step, self.saga.steps()[step].revision));
                }
            }
            Event::TimerFired(timer) if timer.kind == TimerKind::StepTimeout => {
                let step = self.step_index(&timer.step);
                self.timed_out.insert((step, timer.revision));
            }
            _ => {}
        }
        self.carry_out(&decision.effects);
        self.check_state()
    }

    /// The phase of the step a recorded state is at.
    fn saga_phase_before(&self, record: &q2c_core::saga::SagaRecord) -> Option<Phase> {
        match &record.state {
            q2c_core::saga::StateRecord::Suspended { phase, .. }
            | q2c_core::saga::StateRecord::WaitingToRetry { phase, .. } => Some(*phase),
            q2c_core::saga::StateRecord::Compensating { .. } => Some(Phase::Compensation),
            q2c_core::saga::StateRecord::Executing { .. } => Some(Phase::Step),
            _ => None,
        }
    }

    /// After an unpause: what the held events turned out to do, for the
    /// compensation checks.
    fn track_released(&mut self, held: &[HeldEvent]) {
        for event in held {
            match event {
                HeldEvent::Reply {
                    key, failure: None, ..
                } => {
                    let Some(command) = self
                        .sent
                        .iter()
                        .find(|c| &c.idempotency_key == key && c.role == CommandRole::Step)
                    else {
                        continue;
                    };
                    let step = self.step_index(&command.step);
                    let progress = &self.saga.steps()[step];
                    if progress.status == StepStatus::Succeeded
                        && key.as_str().ends_with(&format!(":r{}", progress.revision))
                    {
                        self.succeeded.insert((step, progress.revision));
                    }
                }
                HeldEvent::Timer { timer } if timer.kind == TimerKind::StepTimeout => {
                    let step = self.step_index(&timer.step);
                    if self.saga.steps()[step].possibly_done {
                        self.timed_out.insert((step, timer.revision));
                    }
                }
                _ => {}
            }
        }
    }

    fn check_state(&self) -> Result<(), TestCaseError> {
        let status = self.saga.status();
        let outcome = self.saga.outcome();
        if status == Status::Terminated {
            prop_assert!(!self.saga.paused(), "a terminated saga is not paused");
            prop_assert!(
                self.saga.held().is_empty(),
                "a terminated saga holds nothing"
            );
            prop_assert!(self.live_timers.is_empty() && self.frozen_timers.is_empty());
        } else if status.is_terminal() {
            prop_assert_eq!(
                outcome.map(Status::from),
                Some(status),
                "terminal status equals the outcome"
            );
        }
        if status == Status::Compensating {
            prop_assert!(outcome.is_none(), "no outcome while compensating");
        }
        self.check_compensation_order()?;
        if let Some(outcome) = outcome {
            self.check_compensated_exactly(outcome)?;
        }
        Ok(())
    }

    /// Compensations go backwards through the steps, and only steps that
    /// completed or may have are compensated.
    fn check_compensation_order(&self) -> Result<(), TestCaseError> {
        let mut previous: Option<usize> = None;
        for command in self
            .sent
            .iter()
            .filter(|c| c.role == CommandRole::Compensation)
        {
            let step = self.step_index(&command.step);
            if let Some(previous) = previous {
                prop_assert!(
                    step <= previous,
                    "compensation of step {} after step {}",
                    step,
                    previous
                );
            }
            previous = Some(step);
            let revision = self.saga.steps()[step].revision;
            prop_assert!(
                self.succeeded.contains(&(step, revision))
                    || self.timed_out.contains(&(step, revision)),
                "compensated step {} neither completed nor timed out",
                step
            );
            let undoes = command.undoes.as_ref().map(ToString::to_string);
            prop_assert_eq!(
                undoes,
                Some(format!(
                    "{}:{}:r{}",
                    self.saga.workflow_id(),
                    command.step,
                    revision
                )),
                "a compensation names the key it undoes"
            );
        }
        Ok(())
    }

    /// Once the money flow has ended through compensation, every step that
    /// completed (or may have) and has a compensation was undone.
    fn check_compensated_exactly(&self, outcome: Outcome) -> Result<(), TestCaseError> {
        for (step, progress) in self.saga.steps().iter().enumerate() {
            let spec = &self.definition.steps()[step];
            if spec.kind != StepKind::Action || spec.compensation.is_none() {
                prop_assert_eq!(progress.compensation.status, CompensationStatus::NotStarted);
                continue;
            }
            let done = self.succeeded.contains(&(step, progress.revision))
                || (self.timed_out.contains(&(step, progress.revision))
                    && progress.status != StepStatus::Skipped
                    && progress.possibly_done);
            let undone = matches!(
                progress.compensation.status,
                CompensationStatus::Compensated | CompensationStatus::Skipped
            );
            match outcome {
                Outcome::Compensated | Outcome::Cancelled => prop_assert_eq!(
                    done && progress.status != StepStatus::Skipped,
                    undone,
                    "step {} done={} but compensation {:?}",
                    step,
                    done,
                    progress.compensation.status
                ),
                Outcome::Completed => prop_assert!(!undone, "completed yet step {} undone", step),
                Outcome::Failed => prop_assert!(
                    !(done && progress.status == StepStatus::Succeeded),
                    "failed although step {} completed and could be undone",
                    step
                ),
            }
        }
        if outcome == Outcome::Compensated {
            prop_assert!(
                self.saga
                    .steps()
                    .iter()
                    .all(|step| step.compensation.status != CompensationStatus::Failed),
                "compensated despite a failed compensation"
            );
        }
        Ok(())
    }

    /// With no more replies, timers alone must end or suspend the workflow.
    fn run_out_the_clock(&mut self) -> Result<(), TestCaseError> {
        if self.saga.paused() {
            self.apply(Event::UnpauseRequested, false)?;
        }
        for _ in 0..1_000 {
            let status = self.saga.status();
            if status.is_terminal() || status == Status::Suspended {
                return Ok(());
            }
            let Some((event, _)) = self.event_for(&Op::FireTimer) else {
                prop_assert!(false, "stuck in {:?} with no live timer", status);
                unreachable!();
            };
            self.apply(event, false)?;
        }
        prop_assert!(false, "timers kept firing without an end");
        Ok(())
    }
}

fn reply(command: &Command, success: bool, retryable: bool) -> Event {
    Event::ReplyReceived(Reply {
        key: command.idempotency_key.clone(),
        attempt: command.attempt,
        reply_type: format!(
            "{}.{}",
            command.command_type,
            if success { "succeeded" } else { "failed" }
        ),
        result: if success {
            ReplyResult::Succeeded { output: json!({}) }
        } else {
            ReplyResult::Failed {
                retryable,
                reason: "generated".to_owned(),
            }
        },
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn every_event_sequence_keeps_the_saga_rules(
        shape in definition_shape(),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let definition = Arc::new(
            Definition::parse("generated.toml", &definition_text(&shape)).expect("generated definitions are valid"),
        );
        let mut world = World::new(definition);
        world.check_state()?;
        for op in &ops {
            if let Some((event, must_change_nothing)) = world.event_for(op) {
                world.apply(event, must_change_nothing)?;
            }
        }
        world.run_out_the_clock()?;
    }

    /// A record taken at any point restores to a saga that decides exactly
    /// as the original would.
    #[test]
    fn restored_sagas_decide_like_the_original(
        shape in definition_shape(),
        ops in prop::collection::vec(op(), 0..40),
        split in 0_usize..40,
    ) {
        let definition = Arc::new(
            Definition::parse("generated.toml", &definition_text(&shape)).expect("generated definitions are valid"),
        );
        let mut world = World::new(definition);
        let mut restored: Option<Saga> = None;
        for (index, op) in ops.iter().enumerate() {
            if index == split {
                let json = serde_json::to_string(&world.saga.record()).expect("records serialize");
                let record = serde_json::from_str(&json).expect("records deserialize");
                restored = Some(Saga::restore(record).expect("records restore"));
            }
            let Some((event, _)) = world.event_for(op) else { continue };
            if let Some(copy) = restored.as_mut() {
                let expected = world.saga.clone().handle(&event, world.now);
                let actual = copy.handle(&event, world.now);
                prop_assert_eq!(actual, expected);
            }
            let decision = world.saga.handle(&event, world.now);
            world.carry_out(&decision.effects);
            if let Some(copy) = restored.as_ref() {
                prop_assert_eq!(copy.record(), world.saga.record());
            }
        }
    }
}

#[test]
fn generated_definitions_cover_both_policies_and_kinds() {
    // Guards the generator: the properties above are only as good as the
    // definitions they run on.
    let text = definition_text(&[
        StepShape {
            notification: false,
            compensation: true,
            suspend_on_failure: false,
            attempts: 2,
            deadline: Some(true),
        },
        StepShape {
            notification: false,
            compensation: false,
            suspend_on_failure: true,
            attempts: 1,
            deadline: None,
        },
        StepShape {
            notification: true,
            compensation: false,
            suspend_on_failure: false,
            attempts: 3,
            deadline: Some(false),
        },
    ]);
    let definition = Definition::parse("generated.toml", &text).expect("valid");
    let steps = definition.steps();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0].on_failure, FailurePolicy::Compensate);
    assert!(steps[0].compensation.is_some());
    assert_eq!(steps[1].on_failure, FailurePolicy::Suspend);
    assert_eq!(steps[2].kind, StepKind::Notification);
    let _ = Phase::Step;
}
