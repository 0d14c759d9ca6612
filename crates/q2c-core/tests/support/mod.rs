//! Shared helpers for the core's integration tests: a driver that plays the
//! connectors' and the timer table's part, so tests read as stories.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_core::domain::quote::fixtures;
use q2c_core::saga::{
    Command, Decision, Disposition, Effect, Event, Reply, ReplyResult, Saga, TimerId, TimerKind,
};
use serde_json::{Value, json};

/// The definition shipped in `workflows/`.
pub fn quote_to_cash() -> Arc<Definition> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/quote-to-cash.toml"
    );
    let text = std::fs::read_to_string(path).expect("workflows/quote-to-cash.toml is readable");
    Arc::new(Definition::parse(path, &text).expect("quote-to-cash.toml is valid"))
}

/// Parses a definition written inline in a test.
pub fn definition(text: &str) -> Arc<Definition> {
    Arc::new(Definition::parse("test.toml", text).expect("test definition is valid"))
}

/// A fixed start time, so histories and due dates are reproducible.
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
        .expect("valid timestamp")
        .with_timezone(&Utc)
}

pub fn workflow_id(n: u128) -> WorkflowId {
    WorkflowId::new(uuid::Uuid::from_u128(n))
}

/// Drives one saga, remembering every effect and the live timers.
pub struct Driver {
    pub saga: Saga,
    pub now: DateTime<Utc>,
    pub commands: Vec<Command>,
    pub timers: Vec<(TimerId, DateTime<Utc>)>,
    /// Timers frozen by a pause, with the time each had left.
    pub frozen: Vec<(TimerId, TimeDelta)>,
    /// How many times commands not yet published were withdrawn.
    pub withdrawals: usize,
    pub effects: Vec<Effect>,
}

impl Driver {
    pub fn start(definition: Arc<Definition>) -> Self {
        let (saga, effects) = Saga::start(workflow_id(1), definition, fixtures::quote(), t0());
        let mut driver = Self {
            saga,
            now: t0(),
            commands: Vec::new(),
            timers: Vec::new(),
            frozen: Vec::new(),
            withdrawals: 0,
            effects: Vec::new(),
        };
        driver.absorb(effects);
        driver
    }

    fn absorb(&mut self, effects: Vec<Effect>) {
        for effect in &effects {
            match effect {
                Effect::SendCommand(command) => self.commands.push(command.clone()),
                Effect::ScheduleTimer { timer, due_at } => {
                    self.timers.push((timer.clone(), *due_at))
                }
                Effect::CancelTimer(timer) => {
                    self.timers.retain(|(live, _)| live != timer);
                    self.frozen.retain(|(frozen, _)| frozen != timer);
                }
                Effect::RecordHistory(_) => {}
                Effect::FreezeTimers => {
                    let now = self.now;
                    self.frozen.extend(
                        self.timers
                            .drain(..)
                            .map(|(timer, due_at)| (timer, due_at - now)),
                    );
                }
                Effect::ThawTimers => {
                    let now = self.now;
                    self.timers.extend(
                        self.frozen
                            .drain(..)
                            .map(|(timer, remaining)| (timer, now + remaining)),
                    );
                }
                Effect::ClearTimers => {
                    self.timers.clear();
                    self.frozen.clear();
                }
                Effect::WithdrawCommands => self.withdrawals += 1,
            }
        }
        self.effects.extend(effects);
    }

    /// Hands an event to the saga and records what it asked for.
    pub fn handle(&mut self, event: Event) -> Decision {
        let decision = self.saga.handle(&event, self.now);
        if decision.disposition == Disposition::Applied {
            self.absorb(decision.effects.clone());
        } else {
            assert!(
                decision.effects.is_empty(),
                "an event that was not applied produced effects: {decision:?}"
            );
        }
        decision
    }

    /// The last command sent.
    pub fn last_command(&self) -> &Command {
        self.commands.last().expect("a command was sent")
    }

    /// The type of the command in flight.
    pub fn in_flight_type(&self) -> Option<String> {
        self.saga
            .in_flight()
            .map(|_| self.last_command().command_type.clone())
    }

    pub fn succeed(&mut self, output: Value) -> Decision {
        let command = self.last_command().clone();
        self.handle(success(&command, output))
    }

    pub fn fail(&mut self, retryable: bool) -> Decision {
        let command = self.last_command().clone();
        self.handle(failure(&command, retryable))
    }

    /// Fires the live timer of the given kind (the earliest due).
    pub fn fire(&mut self, kind: TimerKind) -> Decision {
        let (timer, due_at) = self
            .timers
            .iter()
            .filter(|(timer, _)| timer.kind == kind)
            .min_by_key(|(_, due_at)| *due_at)
            .cloned()
            .unwrap_or_else(|| panic!("no live {kind:?} timer in {:?}", self.timers));
        self.now = self.now.max(due_at);
        self.timers.retain(|(live, _)| *live != timer);
        self.handle(Event::TimerFired(timer))
    }

    pub fn has_timer(&self, kind: TimerKind) -> bool {
        self.timers.iter().any(|(timer, _)| timer.kind == kind)
    }

    /// Types of the commands sent so far, in order.
    pub fn sent_types(&self) -> Vec<String> {
        self.commands
            .iter()
            .map(|c| c.command_type.clone())
            .collect()
    }

    pub fn advance(&mut self, seconds: i64) {
        self.now += TimeDelta::seconds(seconds);
    }

    /// Answers each command with success, with outputs the definition needs.
    pub fn succeed_current(&mut self) -> Decision {
        let output = output_for(&self.last_command().command_type);
        self.succeed(output)
    }
}

/// A plausible success output for the quote-to-cash commands.
pub fn output_for(command_type: &str) -> Value {
    match command_type {
        "erp.create_order" => json!({"order_id": "ORD-1"}),
        "billing.issue_invoice" => json!({"invoice_id": "INV-1"}),
        "payment.collect" => json!({"payment_id": "PAY-1"}),
        _ => json!({}),
    }
}

pub fn success(command: &Command, output: Value) -> Event {
    Event::ReplyReceived(Reply {
        key: command.idempotency_key.clone(),
        attempt: command.attempt,
        reply_type: format!("{}.succeeded", command.command_type),
        result: ReplyResult::Succeeded { output },
    })
}

pub fn failure(command: &Command, retryable: bool) -> Event {
    Event::ReplyReceived(Reply {
        key: command.idempotency_key.clone(),
        attempt: command.attempt,
        reply_type: format!("{}.failed", command.command_type),
        result: ReplyResult::Failed {
            retryable,
            reason: if retryable { "try again" } else { "declined" }.to_owned(),
        },
    })
}

// ---- Helpers for the transition tests (appended; nothing above changed) ----

/// The idempotency key of `step`'s command in `revision` of workflow 1.
pub fn step_key(step: &str, revision: u32) -> q2c_core::domain::ids::IdempotencyKey {
    q2c_core::domain::ids::IdempotencyKey::for_command(workflow_id(1), step, revision)
}

/// The idempotency key of `step`'s compensation in `revision` of workflow 1.
pub fn compensation_key(step: &str, revision: u32) -> q2c_core::domain::ids::IdempotencyKey {
    q2c_core::domain::ids::IdempotencyKey::for_compensation(workflow_id(1), step, revision)
}

/// A timer of workflow 1's `step`.
pub fn timer_id(kind: TimerKind, step: &str, revision: u32, attempt: u32) -> TimerId {
    TimerId {
        kind,
        step: step.to_owned(),
        revision,
        attempt,
    }
}

/// A reply with every field chosen by the test.
pub fn reply(
    key: q2c_core::domain::ids::IdempotencyKey,
    attempt: u32,
    reply_type: &str,
    result: ReplyResult,
) -> Event {
    Event::ReplyReceived(Reply {
        key,
        attempt,
        reply_type: reply_type.to_owned(),
        result,
    })
}

/// A failure reply to `command`, but naming another attempt.
pub fn failure_of_attempt(command: &Command, attempt: u32, retryable: bool) -> Event {
    match failure(command, retryable) {
        Event::ReplyReceived(mut reply) => {
            reply.attempt = attempt;
            Event::ReplyReceived(reply)
        }
        other => other,
    }
}

/// An effect without its history noise, with the command reduced to what
/// the transition tests pin.
#[derive(Debug, Clone, PartialEq)]
pub enum Fx {
    /// A command went out.
    Send {
        step: String,
        command_type: String,
        role: q2c_core::saga::CommandRole,
        key: String,
        attempt: u32,
        undoes: Option<String>,
    },
    /// A timer was scheduled.
    Schedule {
        timer: TimerId,
        due_at: DateTime<Utc>,
    },
    /// A timer was cancelled.
    Cancel(TimerId),
    /// Every timer was frozen.
    Freeze,
    /// Every frozen timer was re-armed.
    Thaw,
    /// Every timer was dropped.
    Clear,
    /// Unpublished commands were withdrawn.
    Withdraw,
}

/// The non-history effects, checking what every command must satisfy
/// (deterministic command id, workflow id) on the way.
pub fn fx(effects: &[Effect]) -> Vec<Fx> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::SendCommand(command) => {
                assert_eq!(
                    command.command_id,
                    q2c_core::domain::ids::CommandId::for_attempt(
                        &command.idempotency_key,
                        command.attempt
                    ),
                    "command id derives from key and attempt"
                );
                assert_eq!(command.workflow_id, workflow_id(1));
                Some(Fx::Send {
                    step: command.step.clone(),
                    command_type: command.command_type.clone(),
                    role: command.role,
                    key: command.idempotency_key.to_string(),
                    attempt: command.attempt,
                    undoes: command.undoes.as_ref().map(ToString::to_string),
                })
            }
            Effect::ScheduleTimer { timer, due_at } => Some(Fx::Schedule {
                timer: timer.clone(),
                due_at: *due_at,
            }),
            Effect::CancelTimer(timer) => Some(Fx::Cancel(timer.clone())),
            Effect::RecordHistory(_) => None,
            Effect::FreezeTimers => Some(Fx::Freeze),
            Effect::ThawTimers => Some(Fx::Thaw),
            Effect::ClearTimers => Some(Fx::Clear),
            Effect::WithdrawCommands => Some(Fx::Withdraw),
        })
        .collect()
}

/// The step command `Fx` for attempt `attempt` of `step`'s `revision`.
pub fn send_step(step: &str, command_type: &str, revision: u32, attempt: u32) -> Fx {
    Fx::Send {
        step: step.to_owned(),
        command_type: command_type.to_owned(),
        role: q2c_core::saga::CommandRole::Step,
        key: step_key(step, revision).to_string(),
        attempt,
        undoes: None,
    }
}

/// The compensation `Fx` undoing `step`'s `revision`.
pub fn send_compensation(step: &str, command_type: &str, revision: u32, attempt: u32) -> Fx {
    Fx::Send {
        step: step.to_owned(),
        command_type: command_type.to_owned(),
        role: q2c_core::saga::CommandRole::Compensation,
        key: compensation_key(step, revision).to_string(),
        attempt,
        undoes: Some(step_key(step, revision).to_string()),
    }
}

pub fn schedule(timer: TimerId, due_at: DateTime<Utc>) -> Fx {
    Fx::Schedule { timer, due_at }
}

pub fn cancel(timer: TimerId) -> Fx {
    Fx::Cancel(timer)
}

impl Driver {
    /// Hands over an event that must be applied; returns its effects as `Fx`
    /// and checks that it sent at most one command.
    pub fn apply(&mut self, event: Event) -> Vec<Fx> {
        let decision = self.handle(event);
        assert_eq!(
            decision.disposition,
            Disposition::Applied,
            "expected the event to be applied"
        );
        let effects = fx(&decision.effects);
        let sent = effects
            .iter()
            .filter(|effect| matches!(effect, Fx::Send { .. }))
            .count();
        assert!(sent <= 1, "more than one command sent at once: {effects:?}");
        effects
    }

    /// Hands over a reply that must be applied as late: a `late_reply`
    /// history line and the workflow flagged for an operator. Returns its
    /// effects as `Fx`.
    pub fn assert_late(&mut self, event: Event) -> Vec<Fx> {
        let decision = self.handle(event);
        assert_eq!(
            decision.disposition,
            Disposition::Applied,
            "expected the late reply to be applied"
        );
        let late = decision.effects.iter().any(|effect| {
            matches!(effect, Effect::RecordHistory(entry)
                if entry.kind == q2c_core::saga::HistoryKind::LateReply)
        });
        assert!(late, "no late_reply history line: {:?}", decision.effects);
        let attention = self
            .saga
            .attention()
            .expect("a late reply flags the workflow");
        assert!(
            attention.reason.starts_with("late reply for"),
            "{attention:?}"
        );
        fx(&decision.effects)
    }

    /// Hands over an event that must be ignored without any change.
    pub fn assert_ignored(&mut self, event: Event) {
        self.assert_unchanged(event, false);
    }

    /// Hands over a request that must be refused without any change.
    pub fn assert_refused(&mut self, event: Event) {
        self.assert_unchanged(event, true);
    }

    fn assert_unchanged(&mut self, event: Event, refused: bool) {
        let record = self.saga.record();
        let status = self.saga.status();
        let in_flight = self.saga.in_flight();
        let decision = self.saga.handle(&event, self.now);
        match (&decision.disposition, refused) {
            (Disposition::Ignored { .. }, false) | (Disposition::Refused { .. }, true) => {}
            (other, _) => panic!(
                "expected {} for {event:?}, got {other:?}",
                if refused { "Refused" } else { "Ignored" }
            ),
        }
        assert!(
            decision.effects.is_empty(),
            "{event:?} produced effects: {:?}",
            decision.effects
        );
        assert_eq!(self.saga.record(), record, "{event:?} changed the record");
        assert_eq!(self.saga.status(), status);
        assert_eq!(self.saga.in_flight(), in_flight);
    }

    /// The last command of the given type.
    pub fn last_of(&self, command_type: &str) -> Command {
        self.commands
            .iter()
            .rev()
            .find(|command| command.command_type == command_type)
            .cloned()
            .unwrap_or_else(|| panic!("no {command_type} command was sent"))
    }
}
