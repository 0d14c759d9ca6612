//! What the saga machine asks the outside world to do.
//!
//! Effects are data: the machine never performs them. The durable layer
//! writes them in the same transaction as the new state (commands to the
//! outbox, timers to the timer table, history to the history table).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::ids::{CommandId, IdempotencyKey, WorkflowId};

/// One thing to do as a consequence of a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish a command to the connector that owns its domain.
    SendCommand(Command),
    /// Deliver `TimerFired(timer)` at `due_at` unless cancelled first.
    ScheduleTimer {
        /// Which timer.
        timer: TimerId,
        /// When it fires.
        due_at: DateTime<Utc>,
    },
    /// The timer is no longer wanted. Firing it anyway is harmless: the
    /// machine ignores stale timers.
    CancelTimer(TimerId),
    /// Append to the workflow's history.
    RecordHistory(HistoryEntry),
    /// The workflow is paused: stop the clock of every timer it has,
    /// keeping each one's remaining time.
    FreezeTimers,
    /// The workflow is unpaused: re-arm every frozen timer with the time it
    /// had left.
    ThawTimers,
    /// The workflow was terminated: drop all its timers.
    ClearTimers,
    /// The workflow was terminated: commands not yet published must never
    /// leave.
    WithdrawCommands,
}

/// A command message for a connector.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Unique per attempt, deterministic, so replaying a decision dedupes.
    pub command_id: CommandId,
    /// The workflow sending it.
    pub workflow_id: WorkflowId,
    /// The step it belongs to.
    pub step: String,
    /// Whether it performs or undoes the step.
    pub role: CommandRole,
    /// Message type and routing key.
    pub command_type: String,
    /// The connector deduplicates on this.
    pub idempotency_key: IdempotencyKey,
    /// For a compensation: the key of the command it undoes.
    pub undoes: Option<IdempotencyKey>,
    /// 1 for the first attempt of a revision, counting up across retries.
    pub attempt: u32,
    /// The payload.
    pub input: Value,
}

/// Whether a command performs a step or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandRole {
    /// Performs the step.
    #[serde(rename = "step")]
    Step,
    /// Undoes the step.
    #[serde(rename = "compensation")]
    Compensation,
}

/// Identifies a timer by what it guards, so a stale one is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimerId {
    /// What the timer is for.
    pub kind: TimerKind,
    /// The step it belongs to.
    pub step: String,
    /// The step's input revision.
    pub revision: u32,
    /// The attempt it guards (for a deadline: the first attempt of the run).
    pub attempt: u32,
}

/// The purposes timers serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimerKind {
    /// An attempt of a step has gone unanswered too long.
    #[serde(rename = "step_timeout")]
    StepTimeout,
    /// Time to try a step again.
    #[serde(rename = "step_backoff")]
    StepBackoff,
    /// A step has been running longer than its deadline allows.
    #[serde(rename = "deadline")]
    Deadline,
    /// An attempt of a compensation has gone unanswered too long.
    #[serde(rename = "compensation_timeout")]
    CompensationTimeout,
    /// Time to try a compensation again.
    #[serde(rename = "compensation_backoff")]
    CompensationBackoff,
}

impl TimerKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::StepTimeout => "step_timeout",
            Self::StepBackoff => "step_backoff",
            Self::Deadline => "deadline",
            Self::CompensationTimeout => "compensation_timeout",
            Self::CompensationBackoff => "compensation_backoff",
        }
    }
}

impl fmt::Display for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:r{}:a{}",
            self.kind.as_str(),
            self.step,
            self.revision,
            self.attempt
        )
    }
}

/// One line of a workflow's history, as operators read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened (the time passed with the event).
    pub at: DateTime<Utc>,
    /// What kind of thing happened.
    pub kind: HistoryKind,
    /// The step concerned, where there is one.
    pub step: Option<String>,
    /// The command type concerned, where there is one.
    pub command: Option<String>,
    /// A sentence for people.
    pub detail: String,
}

/// Kinds of history entries; their names are part of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryKind {
    /// A request or notice from outside (start, cancel, resume, deadline).
    #[serde(rename = "event_received")]
    EventReceived,
    /// A command or compensation was sent.
    #[serde(rename = "command_sent")]
    CommandSent,
    /// A reply was applied.
    #[serde(rename = "reply_received")]
    ReplyReceived,
    /// A timer fired and was applied.
    #[serde(rename = "timer_fired")]
    TimerFired,
    /// The machine moved to another state.
    #[serde(rename = "state_changed")]
    StateChanged,
    /// An operator acted on the workflow (who, why, and what came of it).
    #[serde(rename = "operator_action")]
    OperatorAction,
    /// A reply came for a revision an operator had replaced, or after the
    /// workflow had given its command up or ended: applied to what it
    /// answers, and the workflow flagged for attention.
    #[serde(rename = "late_reply")]
    LateReply,
}

impl HistoryKind {
    /// The kind's stable name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EventReceived => "event_received",
            Self::CommandSent => "command_sent",
            Self::ReplyReceived => "reply_received",
            Self::TimerFired => "timer_fired",
            Self::StateChanged => "state_changed",
            Self::OperatorAction => "operator_action",
            Self::LateReply => "late_reply",
        }
    }
}
