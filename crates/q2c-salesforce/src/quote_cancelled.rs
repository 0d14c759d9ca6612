//! `Q2C_Quote_Cancelled__e`: a quote withdrawn in Salesforce. It names the
//! quote and, optionally, why; the orchestrator decides what that means for
//! the quote's workflow.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use q2c_core::domain::QuoteId;
use serde_json::value::RawValue;

use crate::quote_accepted::{Invalid, Problems};

/// The channel quote-cancelled events arrive on.
pub const QUOTE_CANCELLED_CHANNEL: &str = "/event/Q2C_Quote_Cancelled__e";

/// A valid quote-cancelled event.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteCancelled {
    /// Salesforce's unique id of the event: the deduplication key.
    pub event_uuid: String,
    /// When Salesforce created it.
    pub created_date: DateTime<Utc>,
    /// Who caused it (a Salesforce user id).
    pub created_by_id: String,
    /// The quote withdrawn.
    pub quote_id: QuoteId,
    /// Why, as the user gave it.
    pub reason: Option<String>,
}

impl QuoteCancelled {
    /// Validates a payload given as raw JSON fields (see [`crate::avro`]),
    /// reporting every problem at once under its Salesforce field name.
    pub(crate) fn from_payload(
        event_uuid: &str,
        payload: &HashMap<String, Box<RawValue>>,
        mut problems: Problems,
    ) -> Result<QuoteCancelled, Invalid> {
        let event_uuid = Some(event_uuid.to_owned()).filter(|uuid| !uuid.trim().is_empty());
        if event_uuid.is_none() {
            problems.add("event.id", "is required".into());
        }
        let created_date = problems.created_date(payload);
        let created_by_id = problems.text(payload, "CreatedById");
        let quote_id = problems
            .text(payload, "Quote_Id__c")
            .and_then(|text| match QuoteId::parse(&text) {
                Ok(id) => Some(id),
                Err(error) => {
                    problems.add("Quote_Id__c", error.to_string());
                    None
                }
            });
        let reason = payload
            .get("Reason__c")
            .and_then(|raw| serde_json::from_str::<Option<String>>(raw.get()).ok())
            .flatten()
            .filter(|reason| !reason.trim().is_empty());
        match (event_uuid, created_date, created_by_id, quote_id) {
            (Some(event_uuid), Some(created_date), Some(created_by_id), Some(quote_id))
                if problems.is_empty() =>
            {
                Ok(QuoteCancelled {
                    event_uuid,
                    created_date,
                    created_by_id,
                    quote_id,
                    reason,
                })
            }
            _ => Err(problems.into_invalid()),
        }
    }
}
