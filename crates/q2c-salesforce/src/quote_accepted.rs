//! `Q2C_Quote_Accepted__e`, in the JSON shape of Salesforce's streaming API:
//!
//! ```json
//! {"channel": "/event/Q2C_Quote_Accepted__e",
//!  "data": {"schema": "...", "event": {"replayId": 42, "EventUuid": "..."},
//!           "payload": {"Quote_Id__c": "...", "Net_Amount__c": 11300.00, "Lines__c": "[...]", ...}}}
//! ```

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use q2c_core::domain::quote::{Quote, QuoteDraft, QuoteLineDraft};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The channel quote-accepted events arrive on.
pub const QUOTE_ACCEPTED_CHANNEL: &str = "/event/Q2C_Quote_Accepted__e";

/// A valid quote-accepted event.
#[derive(Debug, Clone, PartialEq)]
pub struct QuoteAccepted {
    /// The channel it came on.
    pub channel: String,
    /// Salesforce's unique id of the event: the deduplication key.
    pub event_uuid: String,
    /// Its position in the event stream, where given.
    pub replay_id: Option<i64>,
    /// When Salesforce created it.
    pub created_date: DateTime<Utc>,
    /// Who caused it (a Salesforce user id).
    pub created_by_id: String,
    /// The accepted quote.
    pub quote: Quote,
}

/// One thing wrong with an event, under the field name it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// e.g. `Net_Amount__c` or `Lines__c[1].net_total`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in an event; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<FieldProblem>);

#[derive(Deserialize)]
struct Wire {
    channel: Option<String>,
    data: Option<WireData>,
}

#[derive(Deserialize)]
struct WireData {
    event: Option<WireEvent>,
    payload: Option<HashMap<String, Box<RawValue>>>,
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "replayId")]
    replay_id: Option<i64>,
    #[serde(rename = "EventUuid")]
    event_uuid: Option<String>,
}

/// Salesforce field names of the quote's fields, in the core's order.
const FIELDS: &[(&str, &str)] = &[
    ("quote_id", "Quote_Id__c"),
    ("quote_number", "Quote_Number__c"),
    ("account_id", "Account_Id__c"),
    ("account_name", "Account_Name__c"),
    ("opportunity_id", "Opportunity_Id__c"),
    ("currency", "Currency_Iso_Code__c"),
    ("net_amount", "Net_Amount__c"),
    ("payment_terms", "Payment_Terms__c"),
    ("payment_method", "Payment_Method__c"),
    ("lines", "Lines__c"),
];

const LINE_FIELDS: &[&str] = &[
    "product_code",
    "description",
    "quantity",
    "unit_price",
    "discount_percent",
    "net_total",
];

impl QuoteAccepted {
    /// Parses and validates an event body, reporting every problem at once.
    pub fn from_json(body: &[u8]) -> Result<QuoteAccepted, Invalid> {
        let wire: Wire = serde_json::from_slice(body).map_err(|error| {
            Invalid(vec![FieldProblem {
                field: "body".into(),
                message: format!("not a platform event in JSON: {error}"),
            }])
        })?;
        let mut problems = Problems::default();

        let channel = wire.channel.unwrap_or_default();
        if channel != QUOTE_ACCEPTED_CHANNEL {
            problems.add(
                "channel",
                format!("expected `{QUOTE_ACCEPTED_CHANNEL}`, got `{channel}`"),
            );
        }
        let Some(data) = wire.data else {
            problems.add("data", "is required".into());
            return Err(problems.into_invalid());
        };
        let (event_uuid, replay_id) = match data.event {
            Some(event) => (event.event_uuid, event.replay_id),
            None => (None, None),
        };
        let Some(payload) = data.payload else {
            if event_uuid.is_none() {
                problems.add("data.event.EventUuid", "is required".into());
            }
            problems.add("data.payload", "is required".into());
            return Err(problems.into_invalid());
        };
        Self::from_payload(channel, event_uuid, replay_id, &payload, problems)
    }

    /// Validates a payload however it arrived (streaming JSON, or an Avro
    /// datum turned into JSON text by [`crate::avro`]): field values are raw
    /// JSON, so amounts keep their digits.
    pub(crate) fn from_payload(
        channel: String,
        event_uuid: Option<String>,
        replay_id: Option<i64>,
        payload: &HashMap<String, Box<RawValue>>,
        mut problems: Problems,
    ) -> Result<QuoteAccepted, Invalid> {
        let event_uuid = event_uuid.filter(|uuid| !uuid.trim().is_empty());
        if event_uuid.is_none() {
            problems.add("data.event.EventUuid", "is required".into());
        }
        let created_date = problems.created_date(payload);
        let created_by_id = problems.text(payload, "CreatedById");
        let draft = draft(payload, &mut problems);

        let quote = match Quote::try_from_draft(draft) {
            Ok(quote) => Some(quote),
            Err(errors) => {
                for error in errors.errors() {
                    let field = salesforce_field(&error.field);
                    // A field already reported (missing, unreadable) need
                    // not be reported again for being empty.
                    if !problems.names(&field) {
                        problems.add(&field, error.message.clone());
                    }
                }
                None
            }
        };
        match (event_uuid, created_date, created_by_id, quote) {
            (Some(event_uuid), Some(created_date), Some(created_by_id), Some(quote))
                if problems.is_empty() =>
            {
                Ok(QuoteAccepted {
                    channel,
                    event_uuid,
                    replay_id,
                    created_date,
                    created_by_id,
                    quote,
                })
            }
            _ => Err(problems.into_invalid()),
        }
    }
}

/// The quote's fields as text, ready for the core's validation.
fn draft(payload: &HashMap<String, Box<RawValue>>, problems: &mut Problems) -> QuoteDraft {
    let mut draft = QuoteDraft::default();
    for (core, salesforce) in FIELDS {
        if *core == "lines" {
            continue;
        }
        let value = problems.scalar(payload, salesforce).unwrap_or_default();
        match *core {
            "quote_id" => draft.quote_id = value,
            "quote_number" => draft.quote_number = value,
            "account_id" => draft.account_id = value,
            "account_name" => draft.account_name = value,
            "opportunity_id" => draft.opportunity_id = value,
            "currency" => draft.currency = value,
            "net_amount" => draft.net_amount = value,
            "payment_terms" => draft.payment_terms = value,
            _ => draft.payment_method = value,
        }
    }
    draft.lines = problems
        .text(payload, "Lines__c")
        .map(|text| lines(&text, problems))
        .unwrap_or_default();
    draft
}

fn lines(text: &str, problems: &mut Problems) -> Vec<QuoteLineDraft> {
    let parsed: Vec<HashMap<String, Box<RawValue>>> = match serde_json::from_str(text) {
        Ok(lines) => lines,
        Err(error) => {
            problems.add(
                "Lines__c",
                format!("is not a JSON array of line objects: {error}"),
            );
            return Vec::new();
        }
    };
    parsed
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let mut field = |name: &str| {
                let place = format!("Lines__c[{index}].{name}");
                match line.get(name) {
                    Some(raw) => scalar_text(raw).unwrap_or_else(|message| {
                        problems.add(&place, message);
                        String::new()
                    }),
                    None if name == "description" => String::new(),
                    None => {
                        problems.add(&place, "is required".into());
                        String::new()
                    }
                }
            };
            QuoteLineDraft {
                product_code: field(LINE_FIELDS[0]),
                description: field(LINE_FIELDS[1]),
                quantity: field(LINE_FIELDS[2]),
                unit_price: field(LINE_FIELDS[3]),
                discount_percent: field(LINE_FIELDS[4]),
                net_total: field(LINE_FIELDS[5]),
            }
        })
        .collect()
}

/// A JSON string's content, or a number's literal text (so `11300.00`
/// keeps its digits and never becomes a float).
fn scalar_text(raw: &RawValue) -> Result<String, String> {
    let text = raw.get().trim();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|error| format!("unreadable string: {error}"))
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        Ok(text.to_owned())
    } else if text == "null" {
        Err("is required".into())
    } else {
        Err(format!("expected a string or a number, got `{text}`"))
    }
}

/// The Salesforce name of a core field path (`lines[1].net_total` becomes
/// `Lines__c[1].net_total`).
fn salesforce_field(core: &str) -> String {
    let (head, rest) = match core.find(['[', '.']) {
        Some(position) => core.split_at(position),
        None => (core, ""),
    };
    FIELDS.iter().find(|(name, _)| *name == head).map_or_else(
        || core.to_owned(),
        |(_, salesforce)| format!("{salesforce}{rest}"),
    )
}

/// Problems found so far in one event.
#[derive(Default)]
pub(crate) struct Problems(Vec<FieldProblem>);

impl Problems {
    pub(crate) fn add(&mut self, field: &str, message: String) {
        self.0.push(FieldProblem {
            field: field.to_owned(),
            message,
        });
    }

    /// `CreatedDate`, required, as an ISO 8601 date-time.
    pub(crate) fn created_date(
        &mut self,
        payload: &HashMap<String, Box<RawValue>>,
    ) -> Option<DateTime<Utc>> {
        let text = self.text(payload, "CreatedDate")?;
        match DateTime::parse_from_rfc3339(&text) {
            Ok(date) => Some(date.with_timezone(&Utc)),
            Err(error) => {
                self.add(
                    "CreatedDate",
                    format!("`{text}` is not an ISO 8601 date-time: {error}"),
                );
                None
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn names(&self, field: &str) -> bool {
        self.0.iter().any(|problem| problem.field == field)
    }

    pub(crate) fn into_invalid(self) -> Invalid {
        Invalid(self.0)
    }

    /// A required field as text (strings, or numbers by their literal).
    fn scalar(&mut self, payload: &HashMap<String, Box<RawValue>>, name: &str) -> Option<String> {
        match payload.get(name) {
            Some(raw) => match scalar_text(raw) {
                Ok(text) => Some(text),
                Err(message) => {
                    self.add(name, message);
                    None
                }
            },
            None => {
                self.add(name, "is required".into());
                None
            }
        }
    }

    /// A required string field.
    pub(crate) fn text(
        &mut self,
        payload: &HashMap<String, Box<RawValue>>,
        name: &str,
    ) -> Option<String> {
        match payload
            .get(name)
            .map(|raw| serde_json::from_str::<Option<String>>(raw.get()))
        {
            Some(Ok(Some(text))) if !text.trim().is_empty() => Some(text),
            Some(Ok(_)) | None => {
                self.add(name, "is required".into());
                None
            }
            Some(Err(_)) => {
                self.add(name, "must be a string".into());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(payload: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "channel": QUOTE_ACCEPTED_CHANNEL,
            "data": {
                "schema": "Q2C_Quote_Accepted__e-1",
                "event": {"replayId": 42, "EventUuid": "c5f1e3a2-0d5b-4d3b-9d8e-2f7d6d1f2a10"},
                "payload": payload,
            }
        }))
        .unwrap()
    }

    fn payload() -> serde_json::Value {
        json!({
            "Quote_Id__c": "a0q5e00000ABCDEFGH",
            "Quote_Number__c": "Q-00042",
            "Account_Id__c": "0015e00000ABCDEFGH",
            "Account_Name__c": "Acme Corp",
            "Opportunity_Id__c": "0065e00000ABCDEFGH",
            "Currency_Iso_Code__c": "USD",
            "Net_Amount__c": 11300.00,
            "Payment_Terms__c": "Net 30",
            "Payment_Method__c": "pm_card_visa",
            "Lines__c": "[{\"product_code\": \"PLAT-ANNUAL\", \"description\": \"Platform, annual\", \"quantity\": 10, \"unit_price\": \"1200.00\", \"discount_percent\": \"10\", \"net_total\": \"10800.00\"}, {\"product_code\": \"ONBOARD\", \"description\": \"Onboarding\", \"quantity\": 1, \"unit_price\": 500.00, \"discount_percent\": 0, \"net_total\": 500.00}]",
            "CreatedDate": "2026-11-27T10:00:00.000Z",
            "CreatedById": "0055e00000ABCDEFGH"
        })
    }

    #[test]
    fn a_valid_event_becomes_a_quote() {
        let accepted = QuoteAccepted::from_json(&event(payload())).unwrap();
        assert_eq!(accepted.event_uuid, "c5f1e3a2-0d5b-4d3b-9d8e-2f7d6d1f2a10");
        assert_eq!(accepted.replay_id, Some(42));
        assert_eq!(accepted.quote.net_amount().to_string(), "11300.00 USD");
        assert_eq!(accepted.quote.lines().len(), 2);
        assert_eq!(accepted.created_by_id, "0055e00000ABCDEFGH");
    }

    #[test]
    fn amounts_keep_their_digits_whether_strings_or_numbers() {
        let mut payload = payload();
        payload["Net_Amount__c"] = json!("11300.00");
        assert!(QuoteAccepted::from_json(&event(payload)).is_ok());
        // A number that is not exactly a cent amount is refused, not rounded.
        let mut payload = self::payload();
        payload["Net_Amount__c"] = serde_json::from_str("11300.004").unwrap();
        let invalid = QuoteAccepted::from_json(&event(payload)).unwrap_err();
        assert!(
            invalid.0.iter().any(|p| p.field == "Net_Amount__c"),
            "{invalid}"
        );
    }

    #[test]
    fn every_bad_field_is_named_as_salesforce_names_it() {
        let mut payload = payload();
        payload.as_object_mut().unwrap().remove("Quote_Id__c");
        payload["Currency_Iso_Code__c"] = json!("XXX");
        payload["Lines__c"] = json!(
            "[{\"product_code\": \"A\", \"quantity\": 1, \"unit_price\": \"5.00\", \"discount_percent\": \"0\", \"net_total\": \"6.00\"}]"
        );
        payload.as_object_mut().unwrap().remove("CreatedById");
        let invalid = QuoteAccepted::from_json(&event(payload)).unwrap_err();
        let fields: Vec<&str> = invalid.0.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"Quote_Id__c"), "{fields:?}");
        assert_eq!(
            fields
                .iter()
                .filter(|field| **field == "Quote_Id__c")
                .count(),
            1,
            "a missing field is reported once: {fields:?}"
        );
        assert!(fields.contains(&"Currency_Iso_Code__c"), "{fields:?}");
        assert!(fields.contains(&"CreatedById"), "{fields:?}");
    }

    #[test]
    fn lines_that_do_not_add_up_name_the_line() {
        let mut payload = payload();
        payload["Net_Amount__c"] = json!("11300.00");
        payload["Lines__c"] = json!(
            "[{\"product_code\": \"A\", \"description\": \"\", \"quantity\": 2, \"unit_price\": \"5.00\", \"discount_percent\": \"0\", \"net_total\": \"11.00\"}]"
        );
        let invalid = QuoteAccepted::from_json(&event(payload)).unwrap_err();
        let fields: Vec<&str> = invalid.0.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"Lines__c[0].net_total"), "{fields:?}");
        assert!(fields.contains(&"Net_Amount__c"), "{fields:?}");
    }

    #[test]
    fn a_missing_event_id_or_wrong_channel_is_refused() {
        let mut body: serde_json::Value = serde_json::from_slice(&event(payload())).unwrap();
        body["channel"] = json!("/event/Other__e");
        body["data"]["event"] = json!({"replayId": 1});
        let invalid = QuoteAccepted::from_json(&serde_json::to_vec(&body).unwrap()).unwrap_err();
        let fields: Vec<&str> = invalid.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["channel", "data.event.EventUuid"]);
        assert!(QuoteAccepted::from_json(b"{oops").is_err());
    }

    #[test]
    fn core_field_paths_map_to_salesforce_names() {
        assert_eq!(salesforce_field("net_amount"), "Net_Amount__c");
        assert_eq!(
            salesforce_field("lines[3].quantity"),
            "Lines__c[3].quantity"
        );
        assert_eq!(salesforce_field("lines"), "Lines__c");
    }
}
