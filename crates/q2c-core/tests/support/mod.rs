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
                Effect::CancelTimer(timer) => self.timers.retain(|(live, _)| live != timer),
                Effect::RecordHistory(_) => {}
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
