//! Platform events as the Pub/Sub API delivers them: a bare Avro datum
//! written with the event's schema (fetched by id), plus the event id.
//!
//! The datum is turned into the same raw-JSON payload the streaming API
//! carries and validated by the same code, so both transports accept and
//! refuse exactly the same events. Salesforce's Number fields are Avro
//! doubles: their shortest decimal text is what is validated, so a double
//! that is not exactly a cent amount is refused, never rounded.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as Avro;
use apache_avro::writer::datum::GenericDatumWriter;
use chrono::DateTime;
use serde_json::Value as Json;
use serde_json::value::RawValue;

use crate::quote_accepted::{
    FieldProblem, Invalid, Problems, QUOTE_ACCEPTED_CHANNEL, QuoteAccepted,
};
use crate::quote_cancelled::QuoteCancelled;

/// Why an Avro payload or schema could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The schema text is not an Avro schema.
    #[error("not an Avro schema: {0}")]
    Schema(String),
    /// The value does not fit the schema.
    #[error("cannot encode the event: {0}")]
    Encode(String),
}

/// Parses a writer schema (as `GetSchema` returns it).
pub fn parse_schema(schema_json: &str) -> Result<Schema, Error> {
    Schema::parse_str(schema_json).map_err(|error| Error::Schema(error.to_string()))
}

/// Decodes and validates a quote-accepted event delivered over Pub/Sub.
pub fn quote_accepted(
    schema: &Schema,
    event_id: &str,
    datum: &[u8],
) -> Result<QuoteAccepted, Invalid> {
    let payload = payload(schema, datum)?;
    QuoteAccepted::from_payload(
        QUOTE_ACCEPTED_CHANNEL.to_owned(),
        Some(event_id.to_owned()),
        None,
        &payload,
        Problems::default(),
    )
}

/// Decodes and validates a quote-cancelled event delivered over Pub/Sub.
pub fn quote_cancelled(
    schema: &Schema,
    event_id: &str,
    datum: &[u8],
) -> Result<QuoteCancelled, Invalid> {
    let payload = payload(schema, datum)?;
    QuoteCancelled::from_payload(event_id, &payload, Problems::default())
}

/// The datum's fields as raw JSON, keyed by Salesforce field name.
fn payload(schema: &Schema, datum: &[u8]) -> Result<HashMap<String, Box<RawValue>>, Invalid> {
    let unreadable = |message: String| {
        Invalid(vec![FieldProblem {
            field: "payload".into(),
            message,
        }])
    };
    let reader = GenericDatumReader::builder(schema)
        .build()
        .map_err(|error| unreadable(format!("unusable schema: {error}")))?;
    let value = reader.read_value(&mut &datum[..]).map_err(|error| {
        unreadable(format!("not an Avro datum of this event's schema: {error}"))
    })?;
    let Avro::Record(fields) = value else {
        return Err(unreadable("the datum is not a record".into()));
    };
    let mut payload = HashMap::with_capacity(fields.len());
    for (name, value) in fields {
        let json = match (name.as_str(), unwrap_union(value)) {
            (_, Avro::Null) => continue,
            ("CreatedDate", Avro::Long(millis)) => match DateTime::from_timestamp_millis(millis) {
                Some(date) => Json::String(date.to_rfc3339()),
                None => Json::Null,
            },
            (_, Avro::String(text)) => Json::String(text),
            (_, Avro::Double(number)) if number.is_finite() => {
                // Rust prints the shortest text that reads back as the same
                // double: the digits Salesforce sent.
                serde_json::from_str(&format!("{number:?}")).unwrap_or(Json::Null)
            }
            (_, Avro::Long(number)) => Json::from(number),
            (_, Avro::Int(number)) => Json::from(number),
            (_, Avro::Boolean(flag)) => Json::Bool(flag),
            (_, other) => Json::String(format!("{other:?}")),
        };
        if let Ok(raw) = RawValue::from_string(json.to_string()) {
            payload.insert(name, raw);
        }
    }
    Ok(payload)
}

fn unwrap_union(value: Avro) -> Avro {
    match value {
        Avro::Union(_, inner) => unwrap_union(*inner),
        other => other,
    }
}

/// Encodes a payload given in Salesforce field names (JSON) as an Avro
/// datum of `schema`: what Salesforce does when an event is published.
/// Fields the JSON lacks are null; `CreatedDate` is an RFC 3339 string.
pub fn encode(schema: &Schema, payload: &Json) -> Result<Vec<u8>, Error> {
    let Schema::Record(record) = schema else {
        return Err(Error::Encode("the schema is not a record".into()));
    };
    let mut fields = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let given = payload.get(&field.name).cloned().unwrap_or(Json::Null);
        fields.push((
            field.name.clone(),
            avro_value(&field.name, &field.schema, given)?,
        ));
    }
    let writer = GenericDatumWriter::builder(schema)
        .build()
        .map_err(|error| Error::Encode(error.to_string()))?;
    writer
        .write_value_to_vec(Avro::Record(fields))
        .map_err(|error| Error::Encode(error.to_string()))
}

fn avro_value(name: &str, schema: &Schema, given: Json) -> Result<Avro, Error> {
    let wrong = || Error::Encode(format!("{name}: {given} does not fit {schema:?}"));
    Ok(match (schema, &given) {
        (Schema::Union(union), _) => {
            let variants = union.variants();
            match (
                &given,
                variants.iter().position(|v| matches!(v, Schema::Null)),
            ) {
                (Json::Null, Some(null)) => Avro::Union(null as u32, Box::new(Avro::Null)),
                _ => {
                    let (index, inner) = variants
                        .iter()
                        .enumerate()
                        .find(|(_, variant)| !matches!(variant, Schema::Null))
                        .ok_or_else(wrong)?;
                    Avro::Union(
                        index as u32,
                        Box::new(avro_value(name, inner, given.clone())?),
                    )
                }
            }
        }
        (Schema::Long, Json::String(text)) if name == "CreatedDate" => {
            let date = DateTime::parse_from_rfc3339(text).map_err(|_| wrong())?;
            Avro::Long(date.timestamp_millis())
        }
        (Schema::Long, Json::Number(number)) => Avro::Long(number.as_i64().ok_or_else(wrong)?),
        (Schema::String, Json::String(text)) => Avro::String(text.clone()),
        (Schema::Double, Json::Number(number)) => Avro::Double(number.as_f64().ok_or_else(wrong)?),
        (Schema::Double, Json::String(text)) => Avro::Double(text.parse().map_err(|_| wrong())?),
        _ => return Err(wrong()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use q2c_pubsub::schemas::{
        QUOTE_ACCEPTED as QUOTE_ACCEPTED_SCHEMA, QUOTE_CANCELLED as QUOTE_CANCELLED_SCHEMA,
    };
    use serde_json::json;

    fn sample() -> Json {
        json!({
            "CreatedDate": "2026-11-27T10:00:00Z",
            "CreatedById": "0055e00000ABCDEFGH",
            "Quote_Id__c": "a0q5e00000ABCDEFGH",
            "Quote_Number__c": "Q-00042",
            "Account_Id__c": "0015e00000ABCDEFGH",
            "Account_Name__c": "Acme Corp",
            "Opportunity_Id__c": "0065e00000ABCDEFGH",
            "Currency_Iso_Code__c": "USD",
            "Net_Amount__c": 11300.0,
            "Payment_Terms__c": "Net 30",
            "Payment_Method__c": "pm_card_visa",
            "Lines__c": "[{\"product_code\": \"PLAT-ANNUAL\", \"description\": \"Platform\", \"quantity\": 10, \"unit_price\": \"1200.00\", \"discount_percent\": \"10\", \"net_total\": \"10800.00\"}, {\"product_code\": \"ONBOARD\", \"description\": \"Onboarding\", \"quantity\": 1, \"unit_price\": 500.0, \"discount_percent\": 0, \"net_total\": 500.0}]"
        })
    }

    #[test]
    fn an_avro_event_becomes_the_same_quote_as_its_json_twin() {
        let schema = parse_schema(QUOTE_ACCEPTED_SCHEMA).unwrap();
        let datum = encode(&schema, &sample()).unwrap();
        let accepted = quote_accepted(&schema, "evt-1", &datum).unwrap();
        assert_eq!(accepted.event_uuid, "evt-1");
        assert_eq!(accepted.quote.net_amount().to_string(), "11300.00 USD");
        assert_eq!(
            accepted.created_date.to_rfc3339(),
            "2026-11-27T10:00:00+00:00"
        );

        let streamed = json!({
            "channel": QUOTE_ACCEPTED_CHANNEL,
            "data": {"event": {"replayId": 1, "EventUuid": "evt-1"}, "payload": sample()}
        });
        let from_json = QuoteAccepted::from_json(streamed.to_string().as_bytes()).unwrap();
        assert_eq!(from_json.quote, accepted.quote);
    }

    #[test]
    fn a_double_that_is_not_a_cent_amount_is_refused_not_rounded() {
        let schema = parse_schema(QUOTE_ACCEPTED_SCHEMA).unwrap();
        let mut payload = sample();
        payload["Net_Amount__c"] = json!(0.1 + 11299.9 + 0.0000001);
        let datum = encode(&schema, &payload).unwrap();
        let invalid = quote_accepted(&schema, "evt-2", &datum).unwrap_err();
        assert!(
            invalid.0.iter().any(|p| p.field == "Net_Amount__c"),
            "{invalid}"
        );
    }

    #[test]
    fn missing_fields_and_garbage_are_named() {
        let schema = parse_schema(QUOTE_ACCEPTED_SCHEMA).unwrap();
        let mut payload = sample();
        payload.as_object_mut().unwrap().remove("Quote_Id__c");
        let datum = encode(&schema, &payload).unwrap();
        let invalid = quote_accepted(&schema, "evt-3", &datum).unwrap_err();
        assert!(
            invalid.0.iter().any(|p| p.field == "Quote_Id__c"),
            "{invalid}"
        );

        let invalid = quote_accepted(&schema, "evt-4", &[0xff, 0x01]).unwrap_err();
        assert_eq!(invalid.0[0].field, "payload");
        assert!(parse_schema("{\"type\": \"nope\"}").is_err());
    }

    #[test]
    fn a_cancellation_names_its_quote_and_reason() {
        let schema = parse_schema(QUOTE_CANCELLED_SCHEMA).unwrap();
        let datum = encode(
            &schema,
            &json!({"CreatedDate": "2026-11-27T10:00:00Z", "CreatedById": "0055e00000ABCDEFGH", "Quote_Id__c": "a0q5e00000ABCDEFGH", "Reason__c": "customer withdrew"}),
        )
        .unwrap();
        let cancelled = quote_cancelled(&schema, "evt-5", &datum).unwrap();
        assert_eq!(cancelled.quote_id.as_str(), "a0q5e00000ABCDEFGH");
        assert_eq!(cancelled.reason.as_deref(), Some("customer withdrew"));
        assert_eq!(cancelled.event_uuid, "evt-5");
    }

    #[test]
    fn a_cancellation_without_a_quote_is_refused_by_field() {
        let schema = parse_schema(QUOTE_CANCELLED_SCHEMA).unwrap();
        let datum = encode(
            &schema,
            &json!({"CreatedDate": "2026-11-27T10:00:00Z", "CreatedById": "0055e00000ABCDEFGH"}),
        )
        .unwrap();
        let invalid = quote_cancelled(&schema, "", &datum).unwrap_err();
        let fields: Vec<_> = invalid.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["event.id", "Quote_Id__c"], "{invalid}");
    }
}
