//! One delivered event into the intake: decoded with its writer schema,
//! validated at the edge, and committed together with the topic's new
//! position; an event that cannot be used becomes a dead letter with the
//! same commit, so the stream goes on and nothing is dropped unseen.

use std::sync::Arc;

use apache_avro::Schema;
use chrono::{DateTime, Utc};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_pubsub::ProducerEvent;
use q2c_salesforce::avro;
use q2c_store::Store;
use q2c_store::dead_letters::DeadLetter;
use q2c_store::intake::{Admission, Outcome, Source, StreamPoint};
use serde_json::json;

use crate::settings::{EventKind, Topic};

/// What one event came to, for logs and figures.
pub(crate) enum Handled {
    /// Admitted (for the first time or again).
    Admitted {
        admission: Admission,
        /// When Salesforce created the event.
        created: DateTime<Utc>,
    },
    /// Set aside as a dead letter.
    DeadLettered(String),
}

/// Commits the effect of `event` with the position `at`.
pub(crate) async fn handle(
    store: &Store,
    definition: &Arc<Definition>,
    topic: &Topic,
    event: &ProducerEvent,
    schema: Result<&Schema, String>,
    at: &StreamPoint<'_>,
) -> Result<Handled, q2c_store::Error> {
    let now = Utc::now();
    let schema = match schema {
        Ok(schema) => schema,
        Err(reason) => return dead_letter(store, topic, event, reason, at, now).await,
    };
    let source = Source {
        event_uuid: &event.id,
        channel: &topic.name,
        replay_id: None,
    };
    match topic.kind {
        EventKind::QuoteAccepted => match avro::quote_accepted(schema, &event.id, &event.payload) {
            Ok(accepted) => {
                let admission = store
                    .admit_quote(
                        &source,
                        definition.clone(),
                        accepted.quote,
                        WorkflowId::new(uuid::Uuid::now_v7()),
                        now,
                        Some(at),
                    )
                    .await?;
                Ok(Handled::Admitted {
                    admission,
                    created: accepted.created_date,
                })
            }
            Err(invalid) => dead_letter(store, topic, event, invalid.to_string(), at, now).await,
        },
        EventKind::QuoteCancelled => {
            match avro::quote_cancelled(schema, &event.id, &event.payload) {
                Ok(cancelled) => {
                    let admission = store
                        .admit_cancellation(
                            &source,
                            cancelled.quote_id.as_str(),
                            cancelled.reason.as_deref(),
                            now,
                            Some(at),
                        )
                        .await?;
                    Ok(Handled::Admitted {
                        admission,
                        created: cancelled.created_date,
                    })
                }
                Err(invalid) => {
                    dead_letter(store, topic, event, invalid.to_string(), at, now).await
                }
            }
        }
    }
}

async fn dead_letter(
    store: &Store,
    topic: &Topic,
    event: &ProducerEvent,
    reason: String,
    at: &StreamPoint<'_>,
    now: DateTime<Utc>,
) -> Result<Handled, q2c_store::Error> {
    let letter = DeadLetter {
        message_id: Some(event.id.clone()).filter(|id| !id.is_empty()),
        reason: reason.clone(),
        exchange: q2c_store::dead_letters::SALESFORCE_EXCHANGE.to_owned(),
        routing_key: topic.name.clone(),
        headers: json!({
            "event_id": event.id,
            "schema_id": event.schema_id,
            "replay_id": hex(at.replay_id),
        }),
        body: event.payload.clone(),
    };
    store.record_invalid_event(&letter, now, Some(at)).await?;
    Ok(Handled::DeadLettered(reason))
}

/// A replay id as operators type it.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether an admission started a workflow this time.
pub(crate) fn started(admission: &Admission) -> bool {
    !admission.repeated && admission.outcome == Outcome::Started
}
