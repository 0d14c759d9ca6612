//! The platform events this org defines: their topics, Avro schemas and
//! schema ids, and the Avro encoding of an event given as JSON fields.
//!
//! The encoding is written here from the schema alone (not shared with q2c's
//! decoder), so that the two sides only agree if both follow Avro.

use apache_avro::{
    Schema, reader::datum::GenericDatumReader, types::Value as Avro,
    writer::datum::GenericDatumWriter,
};
use base64::Engine as _;
use serde_json::{Map, Value as Json};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// The API names of the platform events this org defines.
pub const EVENT_NAMES: [&str; 2] = ["Q2C_Quote_Accepted__e", "Q2C_Quote_Cancelled__e"];

/// The schema id Salesforce would give a schema text: stable across restarts
/// (same text, same id), different for a changed schema. It is the first 16
/// bytes of the text's SHA-256, base64url without padding (22 characters,
/// the length of Salesforce's own ids).
pub fn schema_id(schema_json: &str) -> String {
    let digest = Sha256::digest(schema_json.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// One platform event: its names, its schema, and its schema's id.
#[derive(Debug)]
pub(crate) struct EventDefinition {
    /// `Q2C_Quote_Accepted__e`.
    pub api_name: &'static str,
    /// `/event/Q2C_Quote_Accepted__e`.
    pub topic: String,
    /// The schema exactly as `GetSchema` serves it.
    pub schema_json: &'static str,
    pub schema: Schema,
    pub schema_id: String,
}

impl EventDefinition {
    /// The definitions of every event of the org.
    pub fn all() -> Result<Vec<Self>, Error> {
        [
            ("Q2C_Quote_Accepted__e", q2c_pubsub::schemas::QUOTE_ACCEPTED),
            (
                "Q2C_Quote_Cancelled__e",
                q2c_pubsub::schemas::QUOTE_CANCELLED,
            ),
        ]
        .into_iter()
        .map(|(api_name, schema_json)| {
            let schema = Schema::parse_str(schema_json).map_err(|source| Error::Schema {
                event: api_name,
                source: Box::new(source),
            })?;
            Ok(Self {
                api_name,
                topic: format!("/event/{api_name}"),
                schema_json,
                schema,
                schema_id: schema_id(schema_json),
            })
        })
        .collect()
    }

    /// Checks that a payload is exactly one datum of this schema: it
    /// decodes, and nothing is left over.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), String> {
        let reader = GenericDatumReader::builder(&self.schema)
            .build()
            .map_err(|e| e.to_string())?;
        let mut rest = payload;
        reader.read_value(&mut rest).map_err(|e| {
            format!(
                "the payload is not a datum of schema {}: {e}",
                self.schema_id
            )
        })?;
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the payload has {} bytes after the datum of schema {}",
                rest.len(),
                self.schema_id
            ))
        }
    }

    /// Encodes an event given as JSON fields in Salesforce names into a bare
    /// Avro datum. `CreatedDate` (RFC 3339 text or epoch milliseconds) and
    /// `CreatedById` are filled in when absent; a field the schema does not
    /// have is refused by name.
    pub fn encode_fields(
        &self,
        fields: &Map<String, Json>,
        now_millis: i64,
        user_id: &str,
    ) -> Result<Vec<u8>, String> {
        let Schema::Record(record) = &self.schema else {
            return Err(format!("the schema of {} is not a record", self.api_name));
        };
        let unknown: Vec<&str> = fields
            .keys()
            .filter(|name| !record.lookup.contains_key(name.as_str()))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "fields not in the schema of {}: {}",
                self.api_name,
                unknown.join(", ")
            ));
        }

        let mut values = Vec::with_capacity(record.fields.len());
        let mut problems = Vec::new();
        for field in &record.fields {
            let given = fields.get(&field.name).filter(|v| !v.is_null());
            let value = match (field.name.as_str(), given) {
                ("CreatedDate", None) => Ok(Avro::Long(now_millis)),
                ("CreatedDate", Some(Json::String(text))) => {
                    chrono::DateTime::parse_from_rfc3339(text)
                        .map(|t| Avro::Long(t.timestamp_millis()))
                        .map_err(|_| "an RFC 3339 date-time or epoch milliseconds".to_owned())
                }
                ("CreatedById", None) => Ok(Avro::String(user_id.to_owned())),
                (_, Some(value)) => to_avro(&field.schema, value),
                (_, None) => to_avro(&field.schema, &Json::Null),
            };
            match value {
                Ok(value) => values.push((field.name.clone(), value)),
                Err(expected) => problems.push(format!("{} must be {expected}", field.name)),
            }
        }
        if !problems.is_empty() {
            return Err(format!(
                "invalid fields for {}: {}",
                self.api_name,
                problems.join("; ")
            ));
        }

        GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|writer| writer.write_value_to_vec(Avro::Record(values)))
            .map_err(|e| format!("cannot encode {}: {e}", self.api_name))
    }
}

/// Converts a JSON value to the Avro value of a schema, or says what was
/// expected instead.
fn to_avro(schema: &Schema, value: &Json) -> Result<Avro, String> {
    match (schema, value) {
        (Schema::Null, Json::Null) => Ok(Avro::Null),
        (Schema::Boolean, Json::Bool(b)) => Ok(Avro::Boolean(*b)),
        (Schema::Int, Json::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Avro::Int)
            .ok_or_else(|| "a 32-bit integer".to_owned()),
        (Schema::Long, Json::Number(n)) => n
            .as_i64()
            .map(Avro::Long)
            .ok_or_else(|| "an integer".to_owned()),
        // Salesforce Number fields are doubles on the wire; a JSON number
        // becomes the nearest double, as it would in Salesforce.
        (Schema::Double, Json::Number(n)) => n
            .as_f64()
            .map(Avro::Double)
            .ok_or_else(|| "a number".to_owned()),
        (Schema::Float, Json::Number(n)) => n
            .as_f64()
            .map(|f| Avro::Float(f as f32))
            .ok_or_else(|| "a number".to_owned()),
        (Schema::String, Json::String(s)) => Ok(Avro::String(s.clone())),
        (Schema::Bytes, Json::String(s)) => Ok(Avro::Bytes(s.as_bytes().to_vec())),
        (Schema::Enum(e), Json::String(s)) => e
            .symbols
            .iter()
            .position(|symbol| symbol == s)
            .and_then(|i| u32::try_from(i).ok())
            .map(|i| Avro::Enum(i, s.clone()))
            .ok_or_else(|| format!("one of {}", e.symbols.join(", "))),
        (Schema::Array(array), Json::Array(items)) => items
            .iter()
            .map(|item| to_avro(&array.items, item))
            .collect::<Result<_, _>>()
            .map(Avro::Array),
        (Schema::Map(map), Json::Object(entries)) => entries
            .iter()
            .map(|(k, v)| to_avro(&map.types, v).map(|v| (k.clone(), v)))
            .collect::<Result<_, _>>()
            .map(Avro::Map),
        (Schema::Record(record), Json::Object(entries)) => record
            .fields
            .iter()
            .map(|field| {
                let value = entries.get(&field.name).unwrap_or(&Json::Null);
                to_avro(&field.schema, value)
                    .map(|v| (field.name.clone(), v))
                    .map_err(|expected| format!("an object whose {} is {expected}", field.name))
            })
            .collect::<Result<_, _>>()
            .map(Avro::Record),
        (Schema::Union(union), value) => {
            let mut expected = Vec::new();
            for (index, variant) in union.variants().iter().enumerate() {
                match to_avro(variant, value) {
                    Ok(v) => {
                        let index = u32::try_from(index).map_err(|e| e.to_string())?;
                        return Ok(Avro::Union(index, Box::new(v)));
                    }
                    Err(e) => expected.push(e),
                }
            }
            Err(expected.join(" or "))
        }
        (schema, _) => Err(describe(schema)),
    }
}

/// How a schema is named in an error message.
fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null",
        Schema::Boolean => "a boolean",
        Schema::Int => "a 32-bit integer",
        Schema::Long => "an integer",
        Schema::Float | Schema::Double => "a number",
        Schema::String | Schema::Bytes => "a string",
        Schema::Array(_) => "an array",
        Schema::Map(_) | Schema::Record(_) => "an object",
        _ => "a value of an unsupported Avro type",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted() -> EventDefinition {
        EventDefinition::all()
            .unwrap()
            .into_iter()
            .find(|d| d.api_name == "Q2C_Quote_Accepted__e")
            .unwrap()
    }

    #[test]
    fn schema_ids_depend_on_the_text_only() {
        let a = schema_id(q2c_pubsub::schemas::QUOTE_ACCEPTED);
        assert_eq!(a, schema_id(q2c_pubsub::schemas::QUOTE_ACCEPTED));
        assert_eq!(a.len(), 22);
        assert_ne!(a, schema_id(q2c_pubsub::schemas::QUOTE_CANCELLED));
    }

    #[test]
    fn encodes_fields_that_decode_again() {
        let def = accepted();
        let fields = serde_json::json!({
            "Quote_Id__c": "a0q1",
            "Net_Amount__c": 1250.5,
            "Lines__c": "[]",
            "CreatedDate": "2026-11-27T10:00:00.000Z",
        });
        let payload = def
            .encode_fields(fields.as_object().unwrap(), 0, "005X")
            .unwrap();
        def.check_payload(&payload).unwrap();
        let reader = GenericDatumReader::builder(&def.schema).build().unwrap();
        let Avro::Record(decoded) = reader.read_value(&mut payload.as_slice()).unwrap() else {
            panic!("not a record");
        };
        let get = |name: &str| decoded.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(get("CreatedDate"), Avro::Long(1_795_773_600_000));
        assert_eq!(get("CreatedById"), Avro::String("005X".into()));
        assert_eq!(
            get("Net_Amount__c"),
            Avro::Union(1, Box::new(Avro::Double(1250.5)))
        );
        assert_eq!(get("Account_Id__c"), Avro::Union(0, Box::new(Avro::Null)));
    }

    #[test]
    fn refuses_unknown_and_mistyped_fields_by_name() {
        let def = accepted();
        let unknown = serde_json::json!({"Quote_Id__c": "a", "Bogus__c": 1, "Other": 2});
        let err = def
            .encode_fields(unknown.as_object().unwrap(), 0, "005X")
            .unwrap_err();
        assert!(err.contains("Bogus__c") && err.contains("Other"), "{err}");

        let mistyped = serde_json::json!({"Net_Amount__c": "12.50"});
        let err = def
            .encode_fields(mistyped.as_object().unwrap(), 0, "005X")
            .unwrap_err();
        assert!(err.contains("Net_Amount__c"), "{err}");
    }

    #[test]
    fn refuses_payloads_with_trailing_bytes_or_garbage() {
        let def = accepted();
        let fields = serde_json::json!({"Quote_Id__c": "a0q1"});
        let mut payload = def
            .encode_fields(fields.as_object().unwrap(), 0, "005X")
            .unwrap();
        payload.push(0);
        assert!(def.check_payload(&payload).is_err());
        assert!(def.check_payload(&[0xff, 0xff, 0xff]).is_err());
    }
}
