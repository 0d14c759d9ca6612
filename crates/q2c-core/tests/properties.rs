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
//!
//! The connectors are modelled with what they really did: each step command
//! either took effect or did not, decided once (a success reply only for
//! one that did, a failure for good only for one that did not; an effect
//! may also happen with its reply lost or late). At the end every late reply
//! arrives and an operator settles what is left, and then every effect of a
//! step q2c can undo is part of the outcome or undone. No compensation is
//! ever sent for a command q2c had been told did not take effect. The same
//! property, run against the old rule (a replaced revision's late replies
//! dropped), fails.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{TestError, TestRunner};
use q2c_core::definition::{Definition, FailurePolicy, StepKind};
use q2c_core::domain::ids::IdempotencyKey;
use q2c_core::domain::quote::fixtures;
use q2c_core::saga::{
    Action, Command, CommandRole, CompensationStatus, Disposition, Earlier, Effect, Event,
    HeldEvent, HistoryKind, Outcome, Phase, Reply, ReplyResult, Request, Resume, Saga, StateRecord,
    Status, StepStatus, ThenRecord, TimerId, TimerKind,
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
    /// A connector performs a command it was sent, but its reply is lost
    /// or delayed.
    PerformSilently {
        pick: usize,
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
        2 => any::<usize>().prop_map(|pick| Op::PerformSilently { pick }),
    ]
}

/// Which rule the saga under test follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// The saga as it is.
    Current,
    /// The old rule, played by the world: a reply for a replaced revision
    /// never reaches the saga, as the old saga dropped it.
    RevisionForgets,
}

/// The world around one saga: connectors, the timer table, and what the
/// checks need to remember.
struct World {
    rule: Rule,
    /// What each connector really did with each step command's key: took
    /// effect (true) or not (false), once decided.
    fates: BTreeMap<IdempotencyKey, bool>,
    /// Step command keys a failure for good was applied for, on the last
    /// attempt sent: the saga was told they did not take effect.
    told_not_done: BTreeSet<IdempotencyKey>,
    /// A late reply was applied: the reverse walk may have had to go back.
    late_applied: bool,
    /// Step command keys a success reply was handed over for.
    successes_delivered: BTreeSet<IdempotencyKey>,
    /// Compensations sent by an undo an operator asked for before the
    /// workflow went on: not part of the reverse walk.
    interjected: BTreeSet<IdempotencyKey>,
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
    fn new(definition: Arc<Definition>, rule: Rule) -> Self {
        let (saga, effects) =
            Saga::start(workflow_id(7), definition.clone(), fixtures::quote(), t0());
        let mut world = Self {
            rule,
            fates: BTreeMap::new(),
            told_not_done: BTreeSet::new(),
            late_applied: false,
            successes_delivered: BTreeSet::new(),
            interjected: BTreeSet::new(),
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

    /// A reply to `command` that agrees with what its connector did: a
    /// success only for an effect that happened, a failure for good only
    /// for one that did not; the first such reply decides. Compensations
    /// always take effect when they say so.
    fn consistent_reply(
        &mut self,
        command: &Command,
        success: bool,
        retryable: bool,
    ) -> Option<Event> {
        if command.role == CommandRole::Step && (success || !retryable) {
            let fate = *self
                .fates
                .entry(command.idempotency_key.clone())
                .or_insert(success);
            if fate != success {
                return None;
            }
        }
        Some(reply(command, success, retryable))
    }

    /// Turns an op into an event, and says whether it must change nothing.
    fn event_for(&mut self, op: &Op) -> Option<(Event, bool)> {
        match op {
            Op::Succeed => {
                let command = self.current_command()?;
                self.consistent_reply(&command, true, false)
                    .map(|event| (event, false))
            }
            Op::Fail { retryable } => {
                let command = self.current_command()?;
                self.consistent_reply(&command, false, *retryable)
                    .map(|event| (event, false))
            }
            Op::LateReply {
                pick,
                success,
                retryable,
            } => {
                let command = self.sent.get(pick % self.sent.len().max(1))?.clone();
                self.consistent_reply(&command, *success, *retryable)
                    .map(|event| (event, false))
            }
            Op::PerformSilently { pick } => {
                let steps: Vec<&Command> = self
                    .sent
                    .iter()
                    .filter(|command| command.role == CommandRole::Step)
                    .collect();
                let command = steps.get(pick % steps.len().max(1))?;
                self.fates
                    .entry(command.idempotency_key.clone())
                    .or_insert(true);
                None
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
                    1 => Resume::RetryWithInput {
                        input: json!({"operator": "changed"}),
                        earlier: earlier_of(pick / 3),
                    },
                    _ => Resume::Skip {
                        output: json!({}),
                        earlier: earlier_of(pick / 3),
                    },
                }),
                false,
            )),
            Op::Act { pick } => {
                let earlier = earlier_of(pick / 9);
                let request = match pick % 9 {
                    0 => Request::Resume {
                        input_patch: None,
                        earlier: None,
                    },
                    1 => Request::Resume {
                        input_patch: Some(json!({"operator": "patched"})),
                        earlier,
                    },
                    2 => Request::Retry,
                    3 => Request::Skip {
                        output: json!({}),
                        earlier,
                    },
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
            Event::ResumeRequested(Resume::Patch { .. } | Resume::RetryWithInput { .. }) => {
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

    /// The step and revision a step command's key names.
    fn revision_of(&self, key: &IdempotencyKey) -> Option<(usize, u32)> {
        let command = self
            .sent
            .iter()
            .find(|command| command.role == CommandRole::Step && command.idempotency_key == *key)?;
        let step = self.step_index(&command.step);
        let revision = key.as_str().rsplit(":r").next()?.parse().ok()?;
        Some((step, revision))
    }

    /// Whether a reply of this type is the success of a step command sent
    /// with this key.
    fn is_step_success(&self, key: &IdempotencyKey, reply_type: &str) -> bool {
        self.sent.iter().any(|command| {
            command.role == CommandRole::Step
                && command.idempotency_key == *key
                && reply_type == format!("{}.succeeded", command.command_type)
        })
    }

    /// Whether the old rule would have dropped `event`: a reply for a
    /// revision an operator replaced.
    fn forgotten_by_the_old_rule(&self, event: &Event) -> bool {
        let Event::ReplyReceived(reply) = event else {
            return false;
        };
        self.revision_of(&reply.key)
            .is_some_and(|(step, revision)| revision < self.saga.steps()[step].revision)
    }

    /// Applies one event and checks every invariant around it.
    fn apply(&mut self, event: Event, must_change_nothing: bool) -> Result<(), TestCaseError> {
        if let Event::ReplyReceived(reply) = &event
            && matches!(reply.result, ReplyResult::Succeeded { .. })
            && self.is_step_success(&reply.key, &reply.reply_type)
        {
            self.successes_delivered.insert(reply.key.clone());
        }
        if self.rule == Rule::RevisionForgets && self.forgotten_by_the_old_rule(&event) {
            return Ok(());
        }
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
            // And what the operator says of the replaced attempt may not fit
            // (the transition tests pin those rules).
            let earlier_refused = matches!(&decision.disposition,
                Disposition::Refused { reason } if reason.contains("`earlier")
                    || reason.contains("cannot undo it"));
            let content_refused = (patched && compensation_halted)
                || (new_revision && holding && !compensation_halted)
                || earlier_refused;
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

        let late = decision.effects.iter().any(|effect| {
            matches!(effect, Effect::RecordHistory(entry) if entry.kind == HistoryKind::LateReply)
        });
        if must_change_nothing || (before_status.is_terminal() && !late) {
            prop_assert_ne!(
                &decision.disposition,
                &Disposition::Applied,
                "{:?} must not apply (status {:?})",
                event,
                before_status
            );
        }
        if before_status.is_terminal() && late {
            prop_assert!(
                matches!(event, Event::ReplyReceived(_)),
                "only a reply is late"
            );
        }
        if before_status == Status::Terminated {
            prop_assert!(
                decision
                    .effects
                    .iter()
                    .all(|effect| matches!(effect, Effect::RecordHistory(_))),
                "a terminated workflow only records a late reply"
            );
        }
        self.late_applied |= late;
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
        if !held_before.is_empty() && !self.saga.paused() {
            // The workflow ended while paused: what it held was applied.
            self.track_released(&held_before);
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

        if let Event::TimerFired(timer) = &event
            && timer.kind == TimerKind::StepTimeout
        {
            // A later attempt went unanswered: as far as the saga can know,
            // the effect may have happened after all.
            let key =
                IdempotencyKey::for_command(self.saga.workflow_id(), &timer.step, timer.revision);
            self.told_not_done.remove(&key);
        }
        let undoing = self.saga.record().undoing;
        for command in &sent {
            if command.role == CommandRole::Compensation
                && undoing
                    .as_ref()
                    .is_some_and(|undoing| undoing.then != ThenRecord::Compensate)
            {
                self.interjected.insert(command.idempotency_key.clone());
            }
            if let Some(undoes) = &command.undoes {
                prop_assert!(
                    !self.told_not_done.contains(undoes),
                    "compensated {} after being told it did not take effect",
                    undoes
                );
            }
        }
        match &event {
            Event::ReplyReceived(reply) => {
                self.applied_replies.push(event.clone());
                match &reply.result {
                    ReplyResult::Succeeded { .. } => {
                        if let Some(revision) = self.revision_of(&reply.key) {
                            self.succeeded.insert(revision);
                        }
                    }
                    ReplyResult::Failed {
                        retryable: false, ..
                    } => {
                        let last_attempt = self
                            .sent
                            .iter()
                            .filter(|command| command.idempotency_key == reply.key)
                            .map(|command| command.attempt)
                            .max();
                        if last_attempt == Some(reply.attempt) {
                            self.told_not_done.insert(reply.key.clone());
                        }
                    }
                    ReplyResult::Failed { .. } => {}
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
                    key,
                    reply_type,
                    failure: None,
                    ..
                } => {
                    // A success is news the saga applies, in time or late.
                    if self.is_step_success(key, reply_type)
                        && let Some(revision) = self.revision_of(key)
                    {
                        self.succeeded.insert(revision);
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
            // Only an undo owed after the money flow ended runs with an
            // outcome, and it is not part of the reverse walk.
            let interjected = self
                .saga
                .record()
                .undoing
                .is_some_and(|undoing| undoing.then != ThenRecord::Compensate);
            prop_assert!(
                outcome.is_none() || interjected,
                "no outcome while the walk compensates"
            );
        }
        self.check_compensation_order()?;
        if let Some(outcome) = outcome {
            self.check_compensated_exactly(outcome)?;
        }
        Ok(())
    }

    /// Every compensation names a step command that was sent and done or
    /// possibly done. Unless a late reply sent the walk back, the reverse
    /// walk's compensations go backwards through the steps and, within a
    /// step, from the newest revision to the oldest.
    fn check_compensation_order(&self) -> Result<(), TestCaseError> {
        let mut previous: Option<(usize, u32)> = None;
        for command in self
            .sent
            .iter()
            .filter(|c| c.role == CommandRole::Compensation)
        {
            let undoes = command
                .undoes
                .as_ref()
                .expect("a compensation names its key");
            let revision = self.revision_of(undoes);
            prop_assert!(
                revision.is_some(),
                "{} undoes a key never sent",
                command.idempotency_key
            );
            let Some((step, revision)) = revision else {
                continue;
            };
            prop_assert_eq!(&self.step_index(&command.step), &step);
            prop_assert_eq!(
                command.idempotency_key.to_string(),
                format!("{undoes}:compensate"),
                "a compensation's own key names the revision it undoes"
            );
            prop_assert!(
                self.succeeded.contains(&(step, revision))
                    || self.timed_out.contains(&(step, revision)),
                "compensated revision {} of step {} neither completed nor timed out",
                revision,
                step
            );
            if self.interjected.contains(&command.idempotency_key) {
                continue;
            }
            if let Some(previous) = previous
                && !self.late_applied
            {
                prop_assert!(
                    (step, revision) <= previous,
                    "compensation of step {} revision {} after {:?}",
                    step,
                    revision,
                    previous
                );
            }
            previous = Some((step, revision));
        }
        Ok(())
    }

    /// Once the money flow has ended through compensation, every step that
    /// completed (or may have) and has a compensation was undone.
    ///
    /// A late reply may add an undo after the outcome; the end of the run
    /// checks those against what connectors really did.
    fn check_compensated_exactly(&self, outcome: Outcome) -> Result<(), TestCaseError> {
        if self.late_applied {
            return Ok(());
        }
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
            for earlier in &progress.earlier_revisions {
                let may = earlier.happened.may_have_happened();
                let undone = matches!(
                    earlier.compensation.status,
                    CompensationStatus::Compensated | CompensationStatus::Skipped
                );
                match outcome {
                    Outcome::Compensated | Outcome::Cancelled => prop_assert_eq!(
                        may,
                        undone,
                        "step {} revision {} may have happened: {}, undone: {}",
                        step,
                        earlier.revision,
                        may,
                        undone
                    ),
                    Outcome::Completed if earlier.declared == Some(Earlier::Undo) => {
                        prop_assert_ne!(
                            earlier.compensation.status,
                            CompensationStatus::NotStarted,
                            "an undo the operator asked for is done or under way"
                        );
                    }
                    Outcome::Completed => prop_assert!(
                        !undone,
                        "completed: only what the operator asked to undo is undone"
                    ),
                    Outcome::Failed => prop_assert!(!may, "failed with an undoable revision"),
                }
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

    /// Every reply still owed arrives (the success of each effect whose
    /// reply was lost or held back), then an operator settles what is left:
    /// in-flight commands are answered as their connectors would, a halted
    /// step is cancelled (or skipped where it cannot be), a halted
    /// compensation is declared undone by hand. Timers do the rest.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        if self.saga.paused() {
            self.apply(Event::UnpauseRequested, false)?;
        }
        let owed: Vec<Command> = self
            .fates
            .iter()
            .filter(|(key, done)| **done && !self.successes_delivered.contains(*key))
            .filter_map(|(key, _)| {
                self.sent
                    .iter()
                    .rev()
                    .find(|command| command.idempotency_key == *key)
                    .cloned()
            })
            .collect();
        for command in owed {
            self.apply(reply(&command, true, false), false)?;
        }
        for _ in 0..1_000 {
            let status = self.saga.status();
            if status.is_terminal() {
                return Ok(());
            }
            let event = if self.saga.in_flight().is_some() {
                let command = self.current_command().expect("a command is in flight");
                let done = command.role == CommandRole::Compensation
                    || *self
                        .fates
                        .entry(command.idempotency_key.clone())
                        .or_insert(true);
                reply(&command, done, false)
            } else if status == Status::Suspended {
                let halted_compensation = matches!(
                    self.saga.record().state,
                    StateRecord::Suspended {
                        phase: Phase::Compensation,
                        ..
                    }
                );
                let request = if halted_compensation {
                    Request::Skip {
                        output: json!({}),
                        earlier: None,
                    }
                } else if self.saga.allowed_actions().contains(&Action::Cancel) {
                    Request::Cancel
                } else {
                    let earlier = self.truthful_statement();
                    Request::Skip {
                        output: json!({}),
                        earlier,
                    }
                };
                request.event()
            } else {
                match self.event_for(&Op::FireTimer) {
                    Some((event, _)) => event,
                    None => {
                        prop_assert!(false, "stuck in {:?} with no live timer", status);
                        unreachable!();
                    }
                }
            };
            self.apply(event, false)?;
        }
        prop_assert!(false, "the workflow did not settle");
        Ok(())
    }

    /// What an operator who checked the connector's system says of the
    /// halted step's current revision, where an attempt went unanswered:
    /// done if it took effect, else not done (and then it never will).
    fn truthful_statement(&mut self) -> Option<Earlier> {
        let (step, _) = self.saga.current_step()?;
        let step = self.step_index(step);
        let progress = &self.saga.steps()[step];
        if !progress.possibly_done || progress.status == StepStatus::Succeeded {
            return None;
        }
        let key =
            IdempotencyKey::for_command(self.saga.workflow_id(), &progress.name, progress.revision);
        let done = *self.fates.entry(key).or_insert(false);
        Some(if done {
            Earlier::Done
        } else {
            Earlier::NotDone
        })
    }

    /// Once settled: every effect a connector performed for a step q2c can
    /// undo is part of the outcome or undone (a terminated workflow is the
    /// operator's).
    fn check_every_effect_accounted_for(&self) -> Result<(), TestCaseError> {
        let status = self.saga.status();
        prop_assert!(status.is_terminal(), "settled in {:?}", status);
        if status == Status::Terminated {
            return Ok(());
        }
        let outcome = self.saga.outcome();
        for (key, _) in self.fates.iter().filter(|(_, done)| **done) {
            let Some((step, revision)) = self.revision_of(key) else {
                continue;
            };
            let spec = &self.definition.steps()[step];
            if spec.kind != StepKind::Action || spec.compensation.is_none() {
                continue;
            }
            let progress = &self.saga.steps()[step];
            let taken_as_result = progress
                .earlier(revision)
                .is_some_and(|earlier| earlier.declared == Some(Earlier::Done));
            let part_of_outcome = outcome == Some(Outcome::Completed)
                && ((revision == progress.revision && progress.status == StepStatus::Succeeded)
                    || taken_as_result);
            let compensation = if revision == progress.revision {
                Some(&progress.compensation)
            } else {
                progress
                    .earlier(revision)
                    .map(|earlier| &earlier.compensation)
            };
            let undone = compensation.is_some_and(|compensation| {
                matches!(
                    compensation.status,
                    CompensationStatus::Compensated | CompensationStatus::Skipped
                )
            });
            prop_assert!(
                part_of_outcome || undone,
                "{} took effect but is neither part of the outcome ({:?}) nor undone",
                key,
                outcome
            );
        }
        Ok(())
    }
}

/// Runs one generated case under `rule`: the ops, then the clock, then
/// settling, checking every rule on the way and the effects at the end.
fn run_case(shape: &[StepShape], ops: &[Op], rule: Rule) -> Result<(), TestCaseError> {
    let definition = Arc::new(
        Definition::parse("generated.toml", &definition_text(shape))
            .expect("generated definitions are valid"),
    );
    let mut world = World::new(definition, rule);
    world.check_state()?;
    for op in ops {
        if let Some((event, must_change_nothing)) = world.event_for(op) {
            world.apply(event, must_change_nothing)?;
        }
    }
    world.run_out_the_clock()?;
    world.settle()?;
    world.check_every_effect_accounted_for()
}

/// What a generated operator says of the attempt a new revision replaces:
/// nothing half the time, else any of the three statements, true or not.
fn earlier_of(pick: u8) -> Option<Earlier> {
    match pick % 6 {
        0 => Some(Earlier::Undo),
        1 => Some(Earlier::NotDone),
        2 => Some(Earlier::Done),
        _ => None,
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
        run_case(&shape, &ops, Rule::Current)?;
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
        let mut world = World::new(definition, Rule::Current);
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

#[test]
fn the_property_catches_the_old_rule_that_a_replaced_revision_is_forgotten() {
    // The same property, with the world dropping every reply for a revision
    // an operator replaced, as the old saga did: a charge whose success
    // comes after the operator resumed with a new card is never refunded.
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (definition_shape(), prop::collection::vec(op(), 0..60));
    let result = runner.run(&strategy, |(shape, ops)| {
        run_case(&shape, &ops, Rule::RevisionForgets)
    });
    match result {
        Err(TestError::Fail(reason, _)) => assert!(
            reason.message().contains("neither part of the outcome"),
            "failed for another reason: {reason}"
        ),
        other => panic!("the old rule passed the property: {other:?}"),
    }
}
