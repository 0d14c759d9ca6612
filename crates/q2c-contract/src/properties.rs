//! A message's AMQP properties as JSON and back, exactly, so that a
//! message kept outside the broker (a dead letter) can be published again
//! as it came.
//!
//! The JSON is a stored format, written by [`record`] and read by
//! [`restore`], and its names are pinned here rather than derived from
//! lapin's types:
//!
//! ```json
//! {"properties": {"content_type": "application/json", "delivery_mode": 2,
//!                 "message_id": "…", "type": "erp.create_order.succeeded",
//!                 "headers": {"x-q2c-workflow-id": {"long_string": "…"}}},
//!  "redelivered": false}
//! ```
//!
//! Each property present is a member (`content_type`, `content_encoding`,
//! `headers`, `delivery_mode`, `priority`, `correlation_id`, `reply_to`,
//! `expiration`, `message_id`, `timestamp`, `type`, `user_id`, `app_id`,
//! `cluster_id`). A header value is an object with one member naming its
//! AMQP type: `bool`, `i8`, `u8`, `i16`, `u16`, `i32`, `u32`, `i64`,
//! `f32_bits`, `f64_bits` (floats by their bits, so they come back
//! exactly), `decimal` (`{"scale", "value"}`), `short_string`,
//! `long_string`, `byte_array`, `array`, `timestamp`, `table`, `void`.
//! Text is a JSON string unless it is not UTF-8 or holds a NUL character
//! (which Postgres `jsonb` refuses); then it is `{"base64": "…"}`. A table
//! is a JSON object, or, when a key cannot be a JSON key for that reason,
//! an array of `[key, value]` pairs.
//!
//! Letters kept before this format (their `headers` were a debug string)
//! restore only `message_id`, `type`, `correlation_id` and `content_type`;
//! [`Restored::complete`] says so.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lapin::BasicProperties;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use serde_json::{Map, Value, json};

/// Headers the broker adds while a message sits on queues (delivery
/// counting, dead-lettering). They are kept for people to read, but not
/// published again: a replayed message starts afresh, or a consumer that
/// counts deliveries would give up on it at once.
pub const BROKER_HEADERS: &[&str] = &[
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// Why kept properties cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The JSON does not have the shape [`record`] writes.
    #[error("the kept properties are unreadable at `{at}`: {problem}")]
    Malformed {
        /// Where in the JSON.
        at: String,
        /// What is wrong there.
        problem: String,
    },
}

/// Properties restored from their JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Restored {
    /// The properties, without the [`BROKER_HEADERS`].
    pub properties: BasicProperties,
    /// False when the JSON predates this format and only some properties
    /// could be restored.
    pub complete: bool,
    /// The broker's headers that were left out.
    pub dropped: Vec<String>,
}

/// The JSON kept for a message's properties, and whether the broker had
/// delivered it before.
pub fn record(properties: &BasicProperties, redelivered: bool) -> Value {
    let mut members = Map::new();
    let mut text = |name: &str, value: &Option<ShortString>| {
        if let Some(value) = value {
            members.insert(name.to_owned(), text_value(value.as_str().as_bytes()));
        }
    };
    text("content_type", properties.content_type());
    text("content_encoding", properties.content_encoding());
    text("correlation_id", properties.correlation_id());
    text("reply_to", properties.reply_to());
    text("expiration", properties.expiration());
    text("message_id", properties.message_id());
    text("type", properties.kind());
    text("user_id", properties.user_id());
    text("app_id", properties.app_id());
    text("cluster_id", properties.cluster_id());
    if let Some(mode) = properties.delivery_mode() {
        members.insert("delivery_mode".into(), json!(mode));
    }
    if let Some(priority) = properties.priority() {
        members.insert("priority".into(), json!(priority));
    }
    if let Some(timestamp) = properties.timestamp() {
        members.insert("timestamp".into(), json!(timestamp));
    }
    if let Some(headers) = properties.headers() {
        members.insert("headers".into(), table_value(headers));
    }
    json!({"properties": members, "redelivered": redelivered})
}

/// The properties kept by [`record`] (or by the format before it), minus
/// the [`BROKER_HEADERS`].
pub fn restore(kept: &Value) -> Result<Restored, Error> {
    let Some(members) = kept.get("properties") else {
        return Ok(restore_legacy(kept));
    };
    let Value::Object(members) = members else {
        return Err(malformed("properties", "not an object"));
    };
    let mut properties = BasicProperties::default();
    for (name, value) in members {
        let at = format!("properties.{name}");
        properties = match name.as_str() {
            "content_type" => properties.with_content_type(short_string(value, &at)?),
            "content_encoding" => properties.with_content_encoding(short_string(value, &at)?),
            "correlation_id" => properties.with_correlation_id(short_string(value, &at)?),
            "reply_to" => properties.with_reply_to(short_string(value, &at)?),
            "expiration" => properties.with_expiration(short_string(value, &at)?),
            "message_id" => properties.with_message_id(short_string(value, &at)?),
            "type" => properties.with_type(short_string(value, &at)?),
            "user_id" => properties.with_user_id(short_string(value, &at)?),
            "app_id" => properties.with_app_id(short_string(value, &at)?),
            "cluster_id" => properties.with_cluster_id(short_string(value, &at)?),
            "delivery_mode" => properties.with_delivery_mode(number(value, &at)?),
            "priority" => properties.with_priority(number(value, &at)?),
            "timestamp" => properties.with_timestamp(number(value, &at)?),
            "headers" => properties.with_headers(table(value, &at)?),
            _ => return Err(malformed(&at, "not an AMQP property")),
        };
    }
    let mut dropped = Vec::new();
    if let Some(headers) = properties.headers().clone() {
        let mut kept = FieldTable::default();
        for (name, value) in headers.inner() {
            if BROKER_HEADERS.contains(&name.as_str()) {
                dropped.push(name.to_string());
            } else {
                kept.insert(name.clone(), value.clone());
            }
        }
        properties = properties.with_headers(kept);
    }
    Ok(Restored {
        properties,
        complete: true,
        dropped,
    })
}

/// The format before [`record`]: a few properties as plain strings.
fn restore_legacy(kept: &Value) -> Restored {
    let text = |name: &str| {
        kept.get(name)
            .and_then(Value::as_str)
            .and_then(|text| ShortString::try_new(text).ok())
    };
    let mut properties = BasicProperties::default();
    if let Some(value) = text("message_id") {
        properties = properties.with_message_id(value);
    }
    if let Some(value) = text("type") {
        properties = properties.with_type(value);
    }
    if let Some(value) = text("correlation_id") {
        properties = properties.with_correlation_id(value);
    }
    if let Some(value) = text("content_type") {
        properties = properties.with_content_type(value);
    }
    Restored {
        properties,
        complete: false,
        dropped: Vec::new(),
    }
}

/// Text as a JSON string when `jsonb` can hold it, else as base64.
fn text_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Value::String(text.to_owned()),
        _ => json!({"base64": STANDARD.encode(bytes)}),
    }
}

fn table_value(table: &FieldTable) -> Value {
    let plain = table
        .inner()
        .keys()
        .all(|key| matches!(text_value(key.as_str().as_bytes()), Value::String(_)));
    if plain {
        Value::Object(
            table
                .inner()
                .iter()
                .map(|(key, value)| (key.to_string(), header_value(value)))
                .collect(),
        )
    } else {
        Value::Array(
            table
                .inner()
                .iter()
                .map(|(key, value)| {
                    json!([text_value(key.as_str().as_bytes()), header_value(value)])
                })
                .collect(),
        )
    }
}

fn header_value(value: &AMQPValue) -> Value {
    let (kind, inner) = match value {
        AMQPValue::Boolean(value) => ("bool", json!(value)),
        AMQPValue::ShortShortInt(value) => ("i8", json!(value)),
        AMQPValue::ShortShortUInt(value) => ("u8", json!(value)),
        AMQPValue::ShortInt(value) => ("i16", json!(value)),
        AMQPValue::ShortUInt(value) => ("u16", json!(value)),
        AMQPValue::LongInt(value) => ("i32", json!(value)),
        AMQPValue::LongUInt(value) => ("u32", json!(value)),
        AMQPValue::LongLongInt(value) => ("i64", json!(value)),
        AMQPValue::Float(value) => ("f32_bits", json!(value.to_bits())),
        AMQPValue::Double(value) => ("f64_bits", json!(value.to_bits())),
        AMQPValue::DecimalValue(value) => (
            "decimal",
            json!({"scale": value.scale, "value": value.value}),
        ),
        AMQPValue::ShortString(value) => ("short_string", text_value(value.as_str().as_bytes())),
        AMQPValue::LongString(value) => ("long_string", text_value(value.as_bytes())),
        AMQPValue::ByteArray(value) => (
            "byte_array",
            json!({"base64": STANDARD.encode(value.as_slice())}),
        ),
        AMQPValue::FieldArray(values) => (
            "array",
            Value::Array(values.as_slice().iter().map(header_value).collect()),
        ),
        AMQPValue::Timestamp(value) => ("timestamp", json!(value)),
        AMQPValue::FieldTable(value) => ("table", table_value(value)),
        AMQPValue::Void => ("void", Value::Null),
    };
    json!({ kind: inner })
}

fn malformed(at: &str, problem: &str) -> Error {
    Error::Malformed {
        at: at.to_owned(),
        problem: problem.to_owned(),
    }
}

fn bytes(value: &Value, at: &str) -> Result<Vec<u8>, Error> {
    match value {
        Value::String(text) => Ok(text.as_bytes().to_vec()),
        Value::Object(members) if members.len() == 1 => {
            let encoded = members
                .get("base64")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(at, "neither text nor {\"base64\": …}"))?;
            STANDARD
                .decode(encoded)
                .map_err(|error| malformed(at, &format!("bad base64: {error}")))
        }
        _ => Err(malformed(at, "neither text nor {\"base64\": …}")),
    }
}

fn short_string(value: &Value, at: &str) -> Result<ShortString, Error> {
    let text = String::from_utf8(bytes(value, at)?)
        .map_err(|_| malformed(at, "a short string must be UTF-8"))?;
    ShortString::try_new(text).map_err(|error| malformed(at, &error.to_string()))
}

fn number<N: TryFrom<u64>>(value: &Value, at: &str) -> Result<N, Error> {
    value
        .as_u64()
        .and_then(|number| N::try_from(number).ok())
        .ok_or_else(|| malformed(at, "not a number in range"))
}

fn signed<N: TryFrom<i64>>(value: &Value, at: &str) -> Result<N, Error> {
    value
        .as_i64()
        .and_then(|number| N::try_from(number).ok())
        .ok_or_else(|| malformed(at, "not a number in range"))
}

fn table(value: &Value, at: &str) -> Result<FieldTable, Error> {
    let mut table = FieldTable::default();
    let mut add = |key: &Value, value: &Value| -> Result<(), Error> {
        let key = short_string(key, at)?;
        let at = format!("{at}.{key}");
        table.insert(key, header(value, &at)?);
        Ok(())
    };
    match value {
        Value::Object(members) => {
            for (key, value) in members {
                add(&Value::String(key.clone()), value)?;
            }
        }
        Value::Array(pairs) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([key, value]) => add(key, value)?,
                    _ => return Err(malformed(at, "a table entry must be [key, value]")),
                }
            }
        }
        _ => {
            return Err(malformed(
                at,
                "a table must be an object or [key, value] pairs",
            ));
        }
    }
    Ok(table)
}

fn header(value: &Value, at: &str) -> Result<AMQPValue, Error> {
    let Some((kind, inner)) = value
        .as_object()
        .filter(|members| members.len() == 1)
        .and_then(|members| members.iter().next())
    else {
        return Err(malformed(at, "a header value must be {\"<type>\": value}"));
    };
    Ok(match kind.as_str() {
        "bool" => AMQPValue::Boolean(
            inner
                .as_bool()
                .ok_or_else(|| malformed(at, "not a boolean"))?,
        ),
        "i8" => AMQPValue::ShortShortInt(signed(inner, at)?),
        "u8" => AMQPValue::ShortShortUInt(number(inner, at)?),
        "i16" => AMQPValue::ShortInt(signed(inner, at)?),
        "u16" => AMQPValue::ShortUInt(number(inner, at)?),
        "i32" => AMQPValue::LongInt(signed(inner, at)?),
        "u32" => AMQPValue::LongUInt(number(inner, at)?),
        "i64" => AMQPValue::LongLongInt(signed(inner, at)?),
        "f32_bits" => AMQPValue::Float(f32::from_bits(number(inner, at)?)),
        "f64_bits" => AMQPValue::Double(f64::from_bits(number(inner, at)?)),
        "decimal" => AMQPValue::DecimalValue(DecimalValue {
            scale: number(&inner["scale"], at)?,
            value: number(&inner["value"], at)?,
        }),
        "short_string" => AMQPValue::ShortString(short_string(inner, at)?),
        "long_string" => AMQPValue::LongString(LongString::from(bytes(inner, at)?)),
        "byte_array" => AMQPValue::ByteArray(ByteArray::from(bytes(inner, at)?)),
        "array" => {
            let values = inner
                .as_array()
                .ok_or_else(|| malformed(at, "an array must be a JSON array"))?;
            let mut array = FieldArray::default();
            for (index, value) in values.iter().enumerate() {
                array.push(header(value, &format!("{at}[{index}]"))?);
            }
            AMQPValue::FieldArray(array)
        }
        "timestamp" => AMQPValue::Timestamp(number(inner, at)?),
        "table" => AMQPValue::FieldTable(table(inner, at)?),
        "void" => AMQPValue::Void,
        other => return Err(malformed(at, &format!("`{other}` is not an AMQP type"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_type() -> FieldTable {
        let mut nested = FieldTable::default();
        nested.insert("inner".into(), AMQPValue::LongLongInt(-7));
        let mut table = FieldTable::default();
        for (name, value) in [
            ("bool", AMQPValue::Boolean(true)),
            ("i8", AMQPValue::ShortShortInt(-8)),
            ("u8", AMQPValue::ShortShortUInt(200)),
            ("i16", AMQPValue::ShortInt(-300)),
            ("u16", AMQPValue::ShortUInt(60_000)),
            ("i32", AMQPValue::LongInt(i32::MIN)),
            ("u32", AMQPValue::LongUInt(u32::MAX)),
            ("i64", AMQPValue::LongLongInt(i64::MIN)),
            ("f32", AMQPValue::Float(0.1)),
            ("f64", AMQPValue::Double(f64::NAN)),
            (
                "decimal",
                AMQPValue::DecimalValue(DecimalValue {
                    scale: 2,
                    value: 12_345,
                }),
            ),
            ("short", AMQPValue::ShortString("short".into())),
            ("text", AMQPValue::LongString("héllo".into())),
            ("nul", AMQPValue::LongString(b"a\0b".to_vec().into())),
            ("binary", AMQPValue::LongString(vec![0xff, 0xfe].into())),
            ("bytes", AMQPValue::ByteArray(vec![0, 1, 2].into())),
            (
                "array",
                AMQPValue::FieldArray(vec![AMQPValue::Void, AMQPValue::Boolean(false)].into()),
            ),
            ("timestamp", AMQPValue::Timestamp(1_764_237_600)),
            ("table", AMQPValue::FieldTable(nested)),
            ("void", AMQPValue::Void),
        ] {
            table.insert(name.into(), value);
        }
        table
    }

    fn full() -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("identity".into())
            .with_headers(every_type())
            .with_delivery_mode(2)
            .with_priority(3)
            .with_correlation_id("c-1".into())
            .with_reply_to("somewhere".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_764_237_600)
            .with_type("erp.create_order.succeeded".into())
            .with_user_id("q2c".into())
            .with_app_id("erp-connector".into())
            .with_cluster_id("c".into())
    }

    #[test]
    fn every_property_and_header_type_comes_back_exactly() {
        let kept = record(&full(), true);
        assert_eq!(kept["redelivered"], true);
        assert_eq!(kept["properties"]["type"], "erp.create_order.succeeded");
        assert_eq!(
            kept["properties"]["headers"]["text"],
            json!({"long_string": "héllo"})
        );
        assert_eq!(
            kept["properties"]["headers"]["nul"],
            json!({"long_string": {"base64": "YQBi"}}),
            "jsonb refuses NUL in text"
        );
        // Through text, as Postgres hands it back.
        let reread: Value = serde_json::from_str(&kept.to_string()).unwrap();
        let restored = restore(&reread).unwrap();
        assert!(restored.complete);
        assert!(restored.dropped.is_empty());
        // NaN != NaN: compare the bits of the one float that is NaN.
        let headers = restored.properties.headers().clone().unwrap();
        let Some(AMQPValue::Double(nan)) = headers.inner().get("f64") else {
            panic!("f64 lost: {headers:?}");
        };
        assert_eq!(nan.to_bits(), f64::NAN.to_bits());
        let without_nan = |properties: &BasicProperties| {
            let mut headers = properties.headers().clone().unwrap();
            headers.insert("f64".into(), AMQPValue::Void);
            properties.clone().with_headers(headers)
        };
        assert_eq!(without_nan(&restored.properties), without_nan(&full()));
    }

    #[test]
    fn the_brokers_headers_are_not_restored() {
        let mut headers = FieldTable::default();
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(4));
        headers.insert(
            "x-q2c-workflow-id".into(),
            AMQPValue::LongString("w".into()),
        );
        let kept = record(&BasicProperties::default().with_headers(headers), true);
        let restored = restore(&kept).unwrap();
        assert_eq!(restored.dropped, ["x-delivery-count"]);
        let headers = restored.properties.headers().clone().unwrap();
        assert_eq!(
            headers
                .inner()
                .keys()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
            ["x-q2c-workflow-id"]
        );
    }

    #[test]
    fn a_key_that_cannot_be_a_json_key_makes_the_table_a_list_of_pairs() {
        let mut headers = FieldTable::default();
        headers.insert("a\0b".into(), AMQPValue::Boolean(true));
        let properties = BasicProperties::default().with_headers(headers);
        let kept = record(&properties, false);
        assert_eq!(
            kept["properties"]["headers"],
            json!([[{"base64": "YQBi"}, {"bool": true}]])
        );
        assert_eq!(restore(&kept).unwrap().properties, properties);
    }

    #[test]
    fn letters_kept_before_this_format_restore_what_they_have() {
        let legacy = json!({
            "message_id": "m-1", "type": "erp.create_order.succeeded",
            "correlation_id": null, "content_type": "application/json",
            "headers": "Some(FieldTable({}))", "redelivered": false
        });
        let restored = restore(&legacy).unwrap();
        assert!(!restored.complete);
        assert_eq!(
            restored.properties,
            BasicProperties::default()
                .with_message_id("m-1".into())
                .with_type("erp.create_order.succeeded".into())
                .with_content_type("application/json".into())
        );
    }

    #[test]
    fn malformed_json_is_refused_with_where() {
        let bad = json!({"properties": {"headers": {"n": {"i8": 1000}}}});
        assert_eq!(
            restore(&bad).unwrap_err(),
            malformed("properties.headers.n", "not a number in range")
        );
        let bad = json!({"properties": {"colour": "red"}});
        assert!(restore(&bad).is_err());
    }
}
