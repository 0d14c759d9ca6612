//! What the saga knows beyond its current state: per-step progress, the
//! outcome, and pending requests. These types are persisted as they are, so
//! every enum variant carries an explicit, stable name.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::effect::TimerId;

/// How the money flow ended. Set once, when the last action step succeeds
/// or the last compensation is done; notification steps run after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Every action step succeeded.
    #[serde(rename = "completed")]
    Completed,
    /// A step failed for good and every completed step was undone.
    #[serde(rename = "compensated")]
    Compensated,
    /// A step failed for good before anything needed undoing.
    #[serde(rename = "failed")]
    Failed,
    /// Cancelled on request, and whatever was done was undone.
    #[serde(rename = "cancelled")]
    Cancelled,
}

impl Outcome {
    /// The outcome's stable name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where a workflow stands, for people and queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// A step (notifications included) is in flight or waiting to retry.
    #[serde(rename = "running")]
    Running,
    /// A compensation is in flight or waiting to retry.
    #[serde(rename = "compensating")]
    Compensating,
    /// An operator is needed.
    #[serde(rename = "suspended")]
    Suspended,
    /// Terminal: see [`Outcome::Completed`].
    #[serde(rename = "completed")]
    Completed,
    /// Terminal: see [`Outcome::Compensated`].
    #[serde(rename = "compensated")]
    Compensated,
    /// Terminal: see [`Outcome::Failed`].
    #[serde(rename = "failed")]
    Failed,
    /// Terminal: see [`Outcome::Cancelled`].
    #[serde(rename = "cancelled")]
    Cancelled,
    /// Terminal: stopped by an operator without undoing anything and
    /// without notifications, whatever the outcome was.
    #[serde(rename = "terminated")]
    Terminated,
}

impl Status {
    /// Every status, in the order people read them.
    pub const ALL: [Self; 8] = [
        Self::Running,
        Self::Compensating,
        Self::Suspended,
        Self::Completed,
        Self::Compensated,
        Self::Failed,
        Self::Cancelled,
        Self::Terminated,
    ];

    /// The status's stable name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Suspended => "suspended",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Terminated => "terminated",
        }
    }

    /// Whether the workflow will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Compensated | Self::Failed | Self::Cancelled | Self::Terminated
        )
    }
}

impl From<Outcome> for Status {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Completed => Self::Completed,
            Outcome::Compensated => Self::Compensated,
            Outcome::Failed => Self::Failed,
            Outcome::Cancelled => Self::Cancelled,
        }
    }
}

/// Progress of one step, kept for every step of the definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    /// The step's name in the definition.
    pub name: String,
    /// Where the step stands.
    pub status: StepStatus,
    /// Input revision: part of the idempotency key. 1 on the first run; an
    /// operator's changed input or skip starts the next.
    pub revision: u32,
    /// Attempts sent in this revision; attempt numbers are never reused.
    pub attempts: u32,
    /// `attempts` when the current run began: an operator's retry grants a
    /// fresh budget without reusing attempt numbers.
    pub run_started_after: u32,
    /// An attempt went unanswered, so the step may have taken effect even
    /// though it is not known to have succeeded: a compensation includes it.
    pub possibly_done: bool,
    /// The input of this revision, built when it was first sent (or given by
    /// an operator), so every retry sends exactly the same payload.
    pub input: Option<Value>,
    /// The checked output of a success (or an operator's skip).
    pub output: Option<Value>,
    /// The most recent failure, for people.
    pub last_error: Option<String>,
    /// How undoing the step is going.
    pub compensation: CompensationProgress,
    /// The revisions an operator replaced (new input or skip), oldest
    /// first, so what was sent before stays on record.
    #[serde(default)]
    pub earlier_revisions: Vec<EarlierRevision>,
    /// A success of this revision came after the workflow had given the
    /// step up (since record version 3): the effect happened.
    #[serde(default)]
    pub done_late: bool,
}

/// A revision of a step that an operator replaced.
///
/// Replacing a revision does not make its commands unsent: a connector may
/// have performed one and answer late. So the revision keeps what is known
/// of its effect, and its own compensation, undone with its own key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlierRevision {
    /// Its number.
    pub revision: u32,
    /// The input it sent, if it got as far as building one.
    pub input: Option<Value>,
    /// Attempts it sent.
    pub attempts: u32,
    /// Its last failure.
    pub last_error: Option<String>,
    /// When it was replaced.
    pub replaced_at: DateTime<Utc>,
    /// Whether it took effect, as far as q2c knows (since record version
    /// 3; a revision recorded before reads as possibly done if it sent
    /// anything).
    #[serde(default = "Happened::unrecorded")]
    pub happened: Happened,
    /// The output of a success that came after it was replaced.
    #[serde(default)]
    pub output: Option<Value>,
    /// How undoing it is going (since record version 3).
    #[serde(default)]
    pub compensation: CompensationProgress,
    /// What the operator who replaced it said became of it, where it may
    /// have taken effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<Earlier>,
}

/// What an operator says became of a halted step's attempt that may have
/// taken effect (one went unanswered), when replacing it with a new
/// revision: only they can know, from the system it acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Earlier {
    /// Undo it, with its own key, before anything else is sent.
    #[serde(rename = "undo")]
    Undo,
    /// It did not take effect. A success that still comes is undone.
    #[serde(rename = "not_done")]
    NotDone,
    /// It took effect, and is the step's result (a skip only).
    #[serde(rename = "done")]
    Done,
}

impl Earlier {
    /// Every statement, in the order the API lists them.
    pub const ALL: [Self; 3] = [Self::Undo, Self::NotDone, Self::Done];

    /// The stable name, as the API takes it and records store it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undo => "undo",
            Self::NotDone => "not_done",
            Self::Done => "done",
        }
    }
}

/// A name that is not a statement about the earlier attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a statement about the earlier attempt; say `undo`, `not_done` or `done`")]
pub struct UnknownEarlier(pub String);

impl std::str::FromStr for Earlier {
    type Err = UnknownEarlier;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|earlier| earlier.as_str() == name)
            .ok_or_else(|| UnknownEarlier(name.to_owned()))
    }
}

/// What is known of whether a revision's command took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Happened {
    /// A success reply came: the effect happened.
    #[serde(rename = "done")]
    Done,
    /// An attempt went unanswered: the effect may have happened.
    #[serde(rename = "possibly_done")]
    PossiblyDone,
    /// Nothing was sent, or the connector said it did not take effect.
    #[serde(rename = "not_done")]
    NotDone,
}

impl Happened {
    /// The stable name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::PossiblyDone => "possibly_done",
            Self::NotDone => "not_done",
        }
    }

    /// Whether undoing the revision may be needed.
    pub fn may_have_happened(self) -> bool {
        matches!(self, Self::Done | Self::PossiblyDone)
    }

    /// What a revision recorded before version 3 is read as: it may have
    /// happened, the safe answer (undoing what never happened is harmless,
    /// as connectors keep a tombstone for it).
    fn unrecorded() -> Self {
        Self::PossiblyDone
    }
}

impl StepProgress {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            status: StepStatus::Pending,
            revision: 1,
            attempts: 0,
            run_started_after: 0,
            possibly_done: false,
            input: None,
            output: None,
            last_error: None,
            compensation: CompensationProgress::default(),
            earlier_revisions: Vec::new(),
            done_late: false,
        }
    }

    /// Ends the current revision and starts the next, keeping the one it
    /// replaces on record: a new revision means a new idempotency key.
    ///
    /// The replaced revision keeps whether it may have taken effect: a
    /// success came (done), an attempt went unanswered (possibly done), or
    /// neither (not done).
    pub(crate) fn next_revision(&mut self, now: DateTime<Utc>) {
        let happened = if self.status == StepStatus::Succeeded || self.done_late {
            Happened::Done
        } else if self.possibly_done {
            Happened::PossiblyDone
        } else {
            Happened::NotDone
        };
        self.earlier_revisions.push(EarlierRevision {
            revision: self.revision,
            input: self.input.take(),
            attempts: self.attempts,
            last_error: self.last_error.clone(),
            replaced_at: now,
            happened,
            output: self.done_late.then(|| self.output.take()).flatten(),
            compensation: std::mem::take(&mut self.compensation),
            declared: None,
        });
        self.revision += 1;
        self.attempts = 0;
        self.run_started_after = 0;
        self.possibly_done = false;
        self.output = None;
        self.last_error = None;
        self.done_late = false;
    }

    /// The replaced revision with this number, if there is one.
    pub fn earlier(&self, revision: u32) -> Option<&EarlierRevision> {
        self.earlier_revisions
            .iter()
            .find(|earlier| earlier.revision == revision)
    }

    pub(crate) fn earlier_mut(&mut self, revision: u32) -> Option<&mut EarlierRevision> {
        self.earlier_revisions
            .iter_mut()
            .find(|earlier| earlier.revision == revision)
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepStatus {
    /// Not started.
    #[serde(rename = "pending")]
    Pending,
    /// In flight, waiting to retry, or halted for an operator.
    #[serde(rename = "running")]
    Running,
    /// Succeeded; its output is kept.
    #[serde(rename = "succeeded")]
    Succeeded,
    /// Failed for good.
    #[serde(rename = "failed")]
    Failed,
    /// Stopped by a cancel request before it settled.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// Declared done by an operator.
    #[serde(rename = "skipped")]
    Skipped,
}

/// How undoing a step is going.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompensationProgress {
    /// Where the compensation stands.
    pub status: CompensationStatus,
    /// Attempts sent; numbers are never reused.
    pub attempts: u32,
    /// `attempts` when the current run began.
    pub run_started_after: u32,
    /// The payload, built when first sent.
    pub input: Option<Value>,
    /// The most recent failure, for people.
    pub last_error: Option<String>,
}

/// Where a step's compensation stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompensationStatus {
    /// Not started (and perhaps never needed).
    #[default]
    #[serde(rename = "not_started")]
    NotStarted,
    /// In flight, waiting to retry, or halted for an operator.
    #[serde(rename = "running")]
    Running,
    /// The connector confirmed the undo.
    #[serde(rename = "compensated")]
    Compensated,
    /// Declared undone by an operator.
    #[serde(rename = "skipped")]
    Skipped,
    /// Failed for good; an operator is needed.
    #[serde(rename = "failed")]
    Failed,
}

/// A passed deadline flagged the workflow for attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    /// The step whose deadline passed.
    pub step: String,
    /// When it was flagged.
    pub since: DateTime<Utc>,
    /// Why, for people.
    pub reason: String,
    /// The deadline timer that raised the flag, so a second delivery of it
    /// changes nothing (kept when a late reply flags the workflow again);
    /// none when only a late reply did.
    pub deadline: Option<TimerId>,
}

/// Why a suspended workflow needs an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuspendReason {
    /// An action step failed for good under the `suspend` policy.
    #[serde(rename = "step_failed")]
    StepFailed,
    /// A notification step failed for good.
    #[serde(rename = "notification_failed")]
    NotificationFailed,
    /// A deadline with the `suspend` escalation passed.
    #[serde(rename = "deadline_exceeded")]
    DeadlineExceeded,
    /// A compensation failed for good.
    #[serde(rename = "compensation_failed")]
    CompensationFailed,
}

/// Whether a position in the saga is a step or its compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Performing the step.
    #[serde(rename = "step")]
    Step,
    /// Undoing the step.
    #[serde(rename = "compensation")]
    Compensation,
}
