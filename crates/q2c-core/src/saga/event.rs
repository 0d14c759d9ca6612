//! What can happen to a workflow, as the saga machine sees it.

use serde_json::Value;

use crate::domain::ids::IdempotencyKey;

use super::effect::TimerId;
use super::progress::Earlier;

/// An input to the saga machine. Time is not part of it: the current time is
/// passed beside every event, so that decisions can be replayed.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A connector answered a command or a compensation.
    ReplyReceived(Reply),
    /// A timer the machine scheduled has come due.
    TimerFired(TimerId),
    /// Someone asked for the workflow to be stopped and undone.
    CancelRequested,
    /// An operator asked a suspended workflow to go on.
    ResumeRequested(Resume),
    /// An operator asked a workflow waiting to retry to try again now.
    RetryRequested,
    /// An operator asked to stop the workflow without undoing anything.
    TerminateRequested,
    /// An operator asked to hold the workflow's commands, timers and
    /// replies.
    PauseRequested,
    /// An operator released a paused workflow.
    UnpauseRequested,
}

/// A connector's answer, already parsed from the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The idempotency key of the command being answered.
    pub key: IdempotencyKey,
    /// The attempt being answered, so a late failure of an earlier attempt
    /// is told apart from the answer to the one in flight.
    pub attempt: u32,
    /// The reply's message type, checked against the definition.
    pub reply_type: String,
    /// What the connector reports.
    pub result: ReplyResult,
}

/// Success with an output, or failure with a reason.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyResult {
    /// The command took effect.
    Succeeded {
        /// The step's output, checked against the definition before it is kept.
        output: Value,
    },
    /// The command did not take effect.
    Failed {
        /// Whether trying again with the same key may succeed.
        retryable: bool,
        /// Why, in the connector's words.
        reason: String,
    },
}

/// How an operator wants a suspended workflow to go on.
///
/// A new revision (a changed input, or a skip) replaces the current one,
/// whose commands may still take effect. Where one of its attempts went
/// unanswered, the operator says in `earlier` what became of it: undo it
/// first, it did not happen, or (skipping) it is the step's result. A
/// skipped step's own revision is the operator's and is never compensated.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// Run the halted step or compensation again, with the same idempotency
    /// key and a fresh budget of attempts.
    Retry,
    /// Run the halted step again with a new input: a new revision, so a new
    /// idempotency key.
    RetryWithInput {
        /// The new input, a JSON object.
        input: Value,
        /// What became of the revision it replaces.
        earlier: Option<Earlier>,
    },
    /// Run the halted step again with its input changed by a JSON merge
    /// patch (RFC 7386): a new revision if the input changes, a plain
    /// retry if it does not.
    Patch {
        /// The patch.
        patch: Value,
        /// What became of the revision it replaces.
        earlier: Option<Earlier>,
    },
    /// Treat the halted step as done with this output (a new revision), or
    /// the halted compensation as done by hand.
    Skip {
        /// The output later steps will see; checked against the definition.
        output: Value,
        /// What became of the revision it replaces.
        earlier: Option<Earlier>,
    },
}
