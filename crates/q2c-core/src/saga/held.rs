//! Replies and timers that arrive while a workflow is paused.
//!
//! A paused workflow records what arrives instead of acting on it, and
//! applies it, in arrival order, when it is unpaused. The held events are
//! part of the stored record, so their names are pinned here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::effect::TimerId;
use super::event::{Event, Reply, ReplyResult};
use crate::domain::ids::IdempotencyKey;

/// An event held while paused, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum HeldEvent {
    /// A connector's reply.
    #[serde(rename = "reply")]
    Reply {
        /// The key of the command answered.
        key: IdempotencyKey,
        /// The attempt answered.
        attempt: u32,
        /// The reply's message type.
        reply_type: String,
        /// Its output on success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// Its failure, if it reports one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<HeldFailure>,
    },
    /// A timer that came due (only in a race with the pause itself: the
    /// timers of a paused workflow are frozen).
    #[serde(rename = "timer")]
    Timer {
        /// Which timer.
        timer: TimerId,
    },
}

/// A failure reply, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldFailure {
    /// Whether trying again may succeed.
    pub retryable: bool,
    /// The connector's words.
    pub reason: String,
}

impl HeldEvent {
    /// The stored form of an event that can be held; requests are never held.
    pub(crate) fn of(event: &Event) -> Option<Self> {
        match event {
            Event::ReplyReceived(reply) => {
                let (output, failure) = match &reply.result {
                    ReplyResult::Succeeded { output } => (Some(output.clone()), None),
                    ReplyResult::Failed { retryable, reason } => (
                        None,
                        Some(HeldFailure {
                            retryable: *retryable,
                            reason: reason.clone(),
                        }),
                    ),
                };
                Some(Self::Reply {
                    key: reply.key.clone(),
                    attempt: reply.attempt,
                    reply_type: reply.reply_type.clone(),
                    output,
                    failure,
                })
            }
            Event::TimerFired(timer) => Some(Self::Timer {
                timer: timer.clone(),
            }),
            _ => None,
        }
    }

    /// The event to apply on unpause.
    pub(crate) fn event(&self) -> Event {
        match self {
            Self::Reply {
                key,
                attempt,
                reply_type,
                output,
                failure,
            } => Event::ReplyReceived(Reply {
                key: key.clone(),
                attempt: *attempt,
                reply_type: reply_type.clone(),
                result: match failure {
                    Some(failure) => ReplyResult::Failed {
                        retryable: failure.retryable,
                        reason: failure.reason.clone(),
                    },
                    None => ReplyResult::Succeeded {
                        output: output.clone().unwrap_or(Value::Null),
                    },
                },
            }),
            Self::Timer { timer } => Event::TimerFired(timer.clone()),
        }
    }

    /// A short description for the history.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Reply {
                reply_type,
                attempt,
                ..
            } => format!("`{reply_type}` (attempt {attempt})"),
            Self::Timer { timer } => format!("timer {timer}"),
        }
    }
}
