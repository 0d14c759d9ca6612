//! Publishing a reply the way the contract asks: persistent, `mandatory`,
//! confirmed by the broker before the command is acked.

use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicPublishOptions;
use q2c_contract::{Envelope, Topology};

use crate::Error;

/// How long the broker has to confirm a reply.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes `reply` on `channel` (in confirm mode) and waits until the
/// broker has confirmed and routed it.
pub(crate) async fn publish(
    channel: &Channel,
    topology: &Topology,
    reply: &Envelope,
) -> Result<(), Error> {
    let confirm = channel
        .basic_publish(
            topology.replies_exchange().as_str().into(),
            reply.message_type.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &reply.encode(),
            reply.properties(),
        )
        .await
        .map_err(|source| Error::Broker {
            doing: "publishing a reply",
            source,
        })?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| Error::ConfirmTimeout(CONFIRM_TIMEOUT))?
        .map_err(|source| Error::Broker {
            doing: "awaiting a reply's confirmation",
            source,
        })?;
    if confirmation.is_nack() {
        return Err(Error::ReplyRefused(reply.message_type.clone()));
    }
    if let Some(returned) = confirmation.take_message() {
        return Err(Error::ReplyReturned {
            reply_type: reply.message_type.clone(),
            code: returned.reply_code,
            text: returned.reply_text.to_string(),
        });
    }
    Ok(())
}
