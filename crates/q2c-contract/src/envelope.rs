//! The envelope: one JSON object per message, commands and replies alike.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The envelope format this crate writes. Readers accept this version and
/// ignore fields they do not know, so minor additions need no new version.
pub const SCHEMA_VERSION: u32 = 1;

/// A command or reply, as it travels as the message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message; receivers deduplicate deliveries on it.
    pub message_id: Uuid,
    /// The message type, also the routing key: `erp.create_order`, or for a
    /// reply `erp.create_order.succeeded` / `erp.create_order.failed`.
    #[serde(rename = "type")]
    pub message_type: String,
    /// Format version of the envelope.
    pub schema_version: u32,
    /// The workflow the message belongs to.
    pub workflow_id: Uuid,
    /// The workflow step it concerns.
    pub step: String,
    /// The attempt of the command (a reply repeats the command's).
    pub attempt: u32,
    /// Connectors perform each key's effect once (a reply repeats the
    /// command's key).
    pub idempotency_key: String,
    /// On a compensation: the key of the command it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<String>,
    /// On a command, its own message id; on a reply, the message id of the
    /// command it answers.
    pub correlation_id: Uuid,
    /// When the sender created the message.
    pub sent_at: DateTime<Utc>,
    /// W3C trace context, when the sender traces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The command's input, the success reply's output, or a [`Failure`].
    pub payload: Value,
}

/// The payload of a failure reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Whether the same command (same key) may succeed if sent again.
    pub retryable: bool,
    /// Why it failed, for people.
    pub reason: String,
}

/// What a reply's type says about the command it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `<command>.succeeded`
    Succeeded,
    /// `<command>.failed`
    Failed,
}

impl ReplyKind {
    /// The reply type answering `command_type`.
    pub fn reply_type(self, command_type: &str) -> String {
        match self {
            Self::Succeeded => format!("{command_type}.succeeded"),
            Self::Failed => format!("{command_type}.failed"),
        }
    }

    /// Splits a reply type into the command type it answers and its kind.
    pub fn parse(reply_type: &str) -> Option<(&str, Self)> {
        if let Some(command) = reply_type.strip_suffix(".succeeded") {
            Some((command, Self::Succeeded))
        } else {
            reply_type
                .strip_suffix(".failed")
                .map(|command| (command, Self::Failed))
        }
    }
}

/// Why a message body is not a usable envelope.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON, or not an envelope.
    #[error("the body is not a q2c envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A newer envelope format, or none.
    #[error(
        "envelope schema_version {0} is not supported (this build reads 1 to {SCHEMA_VERSION})"
    )]
    UnsupportedVersion(u32),
    /// Attempts count from 1.
    #[error("envelope attempt 0: attempts count from 1")]
    ZeroAttempt,
}

impl Envelope {
    /// The reply to `command`, with a fresh message id.
    pub fn reply_to(
        command: &Envelope,
        kind: ReplyKind,
        message_id: Uuid,
        sent_at: DateTime<Utc>,
        payload: Value,
    ) -> Envelope {
        Envelope {
            message_id,
            message_type: kind.reply_type(&command.message_type),
            schema_version: SCHEMA_VERSION,
            workflow_id: command.workflow_id,
            step: command.step.clone(),
            attempt: command.attempt,
            idempotency_key: command.idempotency_key.clone(),
            undoes: command.undoes.clone(),
            correlation_id: command.message_id,
            sent_at,
            traceparent: command.traceparent.clone(),
            payload,
        }
    }

    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing a struct of strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a body, refusing formats newer than this build reads.
    pub fn decode(body: &[u8]) -> Result<Envelope, Error> {
        let envelope: Envelope = serde_json::from_slice(body)?;
        if envelope.schema_version == 0 || envelope.schema_version > SCHEMA_VERSION {
            return Err(Error::UnsupportedVersion(envelope.schema_version));
        }
        if envelope.attempt == 0 {
            return Err(Error::ZeroAttempt);
        }
        Ok(envelope)
    }

    /// AMQP properties mirroring the envelope, so broker tools show what a
    /// message is without parsing its body: persistent delivery, JSON.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("x-q2c-workflow-id"),
            AMQPValue::LongString(LongString::from(self.workflow_id.to_string())),
        );
        headers.insert(
            ShortString::from("x-q2c-idempotency-key"),
            AMQPValue::LongString(LongString::from(self.idempotency_key.clone())),
        );
        BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(self.message_id.to_string()))
            .with_correlation_id(ShortString::from(self.correlation_id.to_string()))
            .with_type(ShortString::from(self.message_type.clone()))
            .with_timestamp(u64::try_from(self.sent_at.timestamp()).unwrap_or_default())
            .with_headers(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn command() -> Envelope {
        Envelope {
            message_id: Uuid::from_u128(1),
            message_type: "erp.create_order".into(),
            schema_version: SCHEMA_VERSION,
            workflow_id: Uuid::from_u128(2),
            step: "create_order".into(),
            attempt: 1,
            idempotency_key: "k:create_order:r1".into(),
            undoes: None,
            correlation_id: Uuid::from_u128(1),
            sent_at: DateTime::UNIX_EPOCH,
            traceparent: None,
            payload: json!({"quote_id": "a0q5e00000ABCDEFGH"}),
        }
    }

    #[test]
    fn round_trips_and_names_fields_as_documented() {
        let envelope = command();
        let value: Value = serde_json::from_slice(&envelope.encode()).unwrap();
        assert_eq!(value["type"], "erp.create_order");
        assert_eq!(value["schema_version"], 1);
        assert!(value.get("undoes").is_none());
        assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
    }

    #[test]
    fn a_reply_echoes_the_command() {
        let reply = Envelope::reply_to(
            &command(),
            ReplyKind::Failed,
            Uuid::from_u128(9),
            DateTime::UNIX_EPOCH,
            json!({"retryable": false, "reason": "credit hold"}),
        );
        assert_eq!(reply.message_type, "erp.create_order.failed");
        assert_eq!(reply.correlation_id, Uuid::from_u128(1));
        assert_eq!(reply.idempotency_key, "k:create_order:r1");
        assert_eq!(
            ReplyKind::parse(&reply.message_type),
            Some(("erp.create_order", ReplyKind::Failed))
        );
    }

    #[test]
    fn newer_versions_and_garbage_are_refused() {
        let mut envelope = command();
        envelope.schema_version = SCHEMA_VERSION + 1;
        assert!(matches!(
            Envelope::decode(&envelope.encode()),
            Err(Error::UnsupportedVersion(2))
        ));
        assert!(matches!(
            Envelope::decode(b"not json"),
            Err(Error::Malformed(_))
        ));
        let mut envelope = command();
        envelope.schema_version = 0;
        assert!(matches!(
            Envelope::decode(&envelope.encode()),
            Err(Error::UnsupportedVersion(0))
        ));
        let mut envelope = command();
        envelope.attempt = 0;
        assert!(matches!(
            Envelope::decode(&envelope.encode()),
            Err(Error::ZeroAttempt)
        ));
    }
}
