//! Publishing a reply the way the contract asks: persistent, `mandatory`,
//! and confirmed and routed by the broker before the command it answers is
//! acked. Every connector answers this way, so it is written once.

use std::time::Duration;

use lapin::Channel;

use crate::{Envelope, Topology};

/// How long the broker has to confirm a reply.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a reply was not published; its command must stay unacked.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel failed.
    #[error("the broker failed while {doing}: {source}")]
    Broker {
        /// What was being done.
        doing: &'static str,
        /// The broker's error.
        source: lapin::Error,
    },
    /// No confirmation in time.
    #[error("the broker did not confirm a reply within {0:?}")]
    ConfirmTimeout(Duration),
    /// The broker refused (nacked) it.
    #[error("the broker refused reply {0} (nack)")]
    Refused(String),
    /// It was returned unroutable: the replies queue is missing.
    #[error("reply {reply_type} was returned unroutable: {code} {text}")]
    Returned {
        /// The reply's type (its routing key).
        reply_type: String,
        /// The broker's reply code.
        code: u16,
        /// The broker's reason.
        text: String,
    },
}

/// Publishes `reply` on `channel` (in confirm mode) and waits until the
/// broker has confirmed and routed it.
pub async fn publish(
    channel: &Channel,
    topology: &Topology,
    reply: &Envelope,
) -> Result<(), PublishError> {
    let published = crate::publish::confirmed(
        channel,
        &topology.replies_exchange(),
        &reply.message_type,
        &reply.encode(),
        reply.properties(),
        CONFIRM_TIMEOUT,
    )
    .await;
    published.map_err(|error| match error {
        crate::publish::Error::Broker { doing, source } => PublishError::Broker { doing, source },
        crate::publish::Error::ConfirmTimeout(waited) => PublishError::ConfirmTimeout(waited),
        crate::publish::Error::Refused => PublishError::Refused(reply.message_type.clone()),
        crate::publish::Error::Returned { code, text } => PublishError::Returned {
            reply_type: reply.message_type.clone(),
            code,
            text,
        },
    })
}
