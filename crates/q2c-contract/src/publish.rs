//! Publishing one message so that it is known to sit on a queue: with the
//! caller's properties, `mandatory`, and confirmed and routed by the broker.
//!
//! Connectors answer commands this way ([`crate::reply::publish`]), and
//! the orchestrator replays a dead letter this way: whoever acts on the
//! publish (acks a command, marks a letter replayed) needs to know that
//! the broker took the message and that some queue holds it, not merely
//! that it left the socket.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};

/// Why a message may not sit on a queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The channel failed (for instance, the exchange does not exist and
    /// the broker closed the channel).
    #[error("the broker failed while {doing}: {source}")]
    Broker {
        /// What was being done.
        doing: &'static str,
        /// The broker's error.
        source: lapin::Error,
    },
    /// No confirmation in time: the message may or may not have been taken.
    #[error("the broker did not confirm the message within {0:?}")]
    ConfirmTimeout(Duration),
    /// The broker refused (nacked) it.
    #[error("the broker refused the message (nack)")]
    Refused,
    /// It was returned unroutable: no queue is bound for its routing key.
    #[error("the message was returned unroutable: {code} {text}")]
    Returned {
        /// The broker's reply code.
        code: u16,
        /// The broker's reason.
        text: String,
    },
}

/// Publishes `body` with `properties` to `exchange` under `routing_key` on
/// `channel`, which must be in confirm mode, and waits (at most `timeout`)
/// until the broker has confirmed and routed it.
pub async fn confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), Error> {
    let publishing = channel.basic_publish(
        exchange.into(),
        routing_key.into(),
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        body,
        properties,
    );
    // A blocked connection (a broker alarm) would hold the publish itself.
    let confirm = tokio::time::timeout(timeout, publishing)
        .await
        .map_err(|_| Error::ConfirmTimeout(timeout))?
        .map_err(|source| Error::Broker {
            doing: "publishing",
            source,
        })?;
    let confirmation = tokio::time::timeout(timeout, confirm)
        .await
        .map_err(|_| Error::ConfirmTimeout(timeout))?
        .map_err(|source| Error::Broker {
            doing: "awaiting the broker's confirmation",
            source,
        })?;
    if confirmation.is_nack() {
        return Err(Error::Refused);
    }
    if let Some(returned) = confirmation.take_message() {
        return Err(Error::Returned {
            code: returned.reply_code,
            text: returned.reply_text.to_string(),
        });
    }
    Ok(())
}
