//! From a reply message to a saga event: the edge where the wire's shapes
//! become the core's.

use q2c_contract::{Envelope, Failure, ReplyKind};
use q2c_core::domain::ids::{IdempotencyKey, WorkflowId};
use q2c_core::saga::{Event, Reply, ReplyResult};

/// Turns a reply envelope into the event for its workflow; the error says
/// why the message is not a usable reply (it then goes to dead letters).
pub fn reply_event(envelope: &Envelope) -> Result<(WorkflowId, Event), String> {
    let Some((_, kind)) = ReplyKind::parse(&envelope.message_type) else {
        return Err(format!(
            "`{}` is not a reply type (`<command>.succeeded` or `<command>.failed`)",
            envelope.message_type
        ));
    };
    let key = IdempotencyKey::parse(&envelope.idempotency_key)
        .map_err(|error| format!("invalid idempotency_key: {error}"))?;
    let result = match kind {
        ReplyKind::Succeeded => ReplyResult::Succeeded {
            output: envelope.payload.clone(),
        },
        ReplyKind::Failed => {
            let failure: Failure =
                serde_json::from_value(envelope.payload.clone()).map_err(|error| {
                    format!("a failure reply's payload needs `retryable` and `reason`: {error}")
                })?;
            ReplyResult::Failed {
                retryable: failure.retryable,
                reason: failure.reason,
            }
        }
    };
    Ok((
        WorkflowId::new(envelope.workflow_id),
        Event::ReplyReceived(Reply {
            key,
            attempt: envelope.attempt,
            reply_type: envelope.message_type.clone(),
            result,
        }),
    ))
}
