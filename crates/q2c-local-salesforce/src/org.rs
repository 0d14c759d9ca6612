//! The org's data behind the REST API: the records of the objects in
//! `sobjects`, the platform events published over REST, and the rules a
//! write meets on its way in.
//!
//! A write is checked in Salesforce's order: the body's fields (names,
//! then types), the record it names, then, at the database, a locked row
//! (the `lock-row` switch), validation rules (the `validation` switch and
//! the ordering rule, every one that fails reported together), and unique
//! external ids. Nothing is changed unless all pass.
//!
//! # The ordering rule
//!
//! On `Opportunity` and `Q2C_Quote_Status__c`, an update must leave
//! `Q2C_Status_Sequence__c` greater than the value stored: otherwise it fails
//! with `FIELD_CUSTOM_VALIDATION_EXCEPTION` on that field, so an older
//! status delivered late (or a retry of the same one) never overwrites a
//! newer one. A new record, or one whose stored value is blank, passes; so
//! does an update that leaves the field out or writes the stored value again
//! (it does not change it); blanking it is refused like an older value.
//!
//! A real org gets this from the validation rule shipped with q2c's setup,
//! on both objects, with the error shown on `Q2C_Status_Sequence__c`:
//!
//! ```text
//! AND(
//!   NOT(ISNEW()),
//!   NOT(ISBLANK(PRIORVALUE(Q2C_Status_Sequence__c))),
//!   ISCHANGED(Q2C_Status_Sequence__c),
//!   OR(
//!     ISBLANK(Q2C_Status_Sequence__c),
//!     Q2C_Status_Sequence__c < PRIORVALUE(Q2C_Status_Sequence__c)
//!   )
//! )
//! ```
//!
//! The heart of it is `Q2C_Status_Sequence__c < PRIORVALUE(Q2C_Status_Sequence__c)`;
//! the guards keep it off inserts, off records q2c has not written yet, and
//! off edits that do not touch the sequence (a person changing the stage).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{
    rest::{Error, RuleFailure},
    sobjects::{FieldType, SEQUENCE_FIELD, SObject},
};

/// The API version in the `attributes.url` of records read through the
/// handle or the console (REST reads use the version asked for).
pub(crate) const API_VERSION: &str = "v62.0";

/// The ordering rule's error message.
pub(crate) const SEQUENCE_RULE_MESSAGE: &str =
    "Q2C_Status_Sequence__c: an older status cannot overwrite a newer one";

/// The fault switches a write meets. They are asked for only once a write
/// reaches the database (its fields accepted, its record found), so a
/// `lock-row` count is spent on writes that would otherwise happen.
#[derive(Debug, Default)]
pub(crate) struct Hazards {
    /// The row is locked: the write fails with `UNABLE_TO_LOCK_ROW`.
    pub lock_row: bool,
    /// A validation rule of this message refuses the write.
    pub validation: Option<String>,
}

/// A record's fields by API name, without `Id`.
type Fields = Map<String, Value>;

/// What an upsert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upserted {
    /// The record's id.
    pub id: String,
    /// Whether the record is new.
    pub created: bool,
}

/// Records, published events and the counters `/local/status` shows. It
/// is cloned to take a snapshot an all-or-none composite rolls back to.
#[derive(Debug, Clone, Default)]
pub(crate) struct Org {
    /// Per object, records by id.
    records: BTreeMap<&'static str, BTreeMap<String, Fields>>,
    /// Per platform event, what was published, oldest first.
    events: BTreeMap<&'static str, Vec<Value>>,
    /// Per object, writes made through the API.
    writes: BTreeMap<&'static str, u64>,
    /// The counter in the last id given out.
    next_id: u64,
}

impl Org {
    /// A record as `GET /sobjects/{object}/{id}` answers it.
    pub fn get(&self, object: &'static SObject, id: &str, version: &str) -> Result<Value, Error> {
        let id = normalize_id(id);
        self.stored(object, &id)
            .map(|fields| render(object, &id, fields, version))
            .ok_or(Error::NotFound)
    }

    /// A record by an external id (or `Id`), as
    /// `GET /sobjects/{object}/{field}/{value}` answers it.
    pub fn get_by(
        &self,
        object: &'static SObject,
        field: &str,
        value: &str,
        version: &str,
    ) -> Result<Value, Error> {
        let id = self.lookup(object, field, value)?.ok_or(Error::NotFound)?;
        self.get(object, &id, version)
    }

    /// `PATCH /sobjects/{object}/{id}`.
    pub fn update(
        &mut self,
        object: &'static SObject,
        id: &str,
        body: &Value,
        hazards: impl FnOnce(&str) -> Hazards,
    ) -> Result<(), Error> {
        let fields = parse_fields(object, body)?;
        let id = normalize_id(id);
        if self.stored(object, &id).is_none() {
            return Err(Error::NotFound);
        }
        self.commit(object, &id, fields, Some(hazards))
    }

    /// `PATCH /sobjects/{object}/{field}/{value}`: updates the record whose
    /// external id `field` is `value`, or creates it. The URL's value wins
    /// over one in the body. By `Id`, only an existing record is updated.
    pub fn upsert(
        &mut self,
        object: &'static SObject,
        field: &str,
        value: &str,
        body: &Value,
        hazards: impl FnOnce(&str) -> Hazards,
    ) -> Result<Upserted, Error> {
        let mut fields = parse_fields(object, body)?;
        let existing = self.lookup(object, field, value)?;
        let external_id = object.external_id(field);
        if let Some(external_id) = external_id {
            fields.insert(external_id.to_owned(), Value::String(value.to_owned()));
        }
        match existing {
            Some(id) => {
                self.commit(object, &id, fields, Some(hazards))?;
                Ok(Upserted { id, created: false })
            }
            None if external_id.is_none() => Err(Error::NotFound),
            None => {
                let id = self.new_id(object.key_prefix());
                self.commit(object, &id, fields, Some(hazards))?;
                Ok(Upserted { id, created: true })
            }
        }
    }

    /// `POST /sobjects/{object}`: creates a record, or publishes a platform
    /// event (kept, with `Id`, `CreatedDate` and `CreatedById`, for
    /// [`Org::published`]). Answers the new id.
    pub fn create(
        &mut self,
        object: &'static SObject,
        body: &Value,
        user_id: &str,
        hazards: impl FnOnce(&str) -> Hazards,
    ) -> Result<String, Error> {
        let fields = parse_fields(object, body)?;
        let id = self.new_id(object.key_prefix());
        if object.is_event() {
            let mut event = Map::new();
            event.insert("Id".into(), Value::String(id.clone()));
            event.insert(
                "CreatedDate".into(),
                Value::String(salesforce_time(chrono::Utc::now())),
            );
            event.insert("CreatedById".into(), Value::String(user_id.to_owned()));
            event.extend(fields);
            self.events
                .entry(object.name)
                .or_default()
                .push(Value::Object(event));
        } else {
            self.commit(object, &id, fields, Some(hazards))?;
        }
        Ok(id)
    }

    /// Creates a record for the console or a test: with the given id (a
    /// 15-character one gains its 18-character form) or a fresh one, past
    /// switches and validation rules, and not counted as an API write.
    /// Field names and types, and unique external ids, are still checked.
    pub fn insert(
        &mut self,
        object: &'static SObject,
        id: Option<&str>,
        body: &Value,
    ) -> Result<String, Error> {
        let fields = parse_fields(object, body)?;
        let id = match id {
            Some(id) => normalize_id(id),
            None => self.new_id(object.key_prefix()),
        };
        self.commit(object, &id, fields, None::<fn(&str) -> Hazards>)?;
        Ok(id)
    }

    /// Whether a record exists.
    pub fn exists(&self, object: &'static SObject, id: &str) -> bool {
        self.stored(object, &normalize_id(id)).is_some()
    }

    /// The first record (by id) whose `field` holds `value` (text, or a
    /// number written as text).
    pub fn find(&self, object: &'static SObject, field: &str, value: &str) -> Option<Value> {
        if field.eq_ignore_ascii_case("Id") {
            return self.get(object, value, API_VERSION).ok();
        }
        let field = object.field(field)?;
        self.records
            .get(object.name)?
            .iter()
            .find(|(_, fields)| fields.get(field.name).is_some_and(|v| matches(v, value)))
            .map(|(id, fields)| render(object, id, fields, API_VERSION))
    }

    /// The events of `event` published over REST, oldest first.
    pub fn published(&self, event: &'static SObject) -> Vec<Value> {
        self.events.get(event.name).cloned().unwrap_or_default()
    }

    /// Rolls back to `snapshot`, keeping ids given out since then used.
    pub fn restore(&mut self, snapshot: Org) {
        let next_id = self.next_id.max(snapshot.next_id);
        *self = snapshot;
        self.next_id = next_id;
    }

    /// Writes through the API per object.
    pub fn writes(&self) -> BTreeMap<String, u64> {
        self.writes
            .iter()
            .map(|(name, n)| ((*name).to_owned(), *n))
            .collect()
    }

    /// Records kept per object.
    pub fn record_counts(&self) -> BTreeMap<String, u64> {
        self.records
            .iter()
            .map(|(name, records)| ((*name).to_owned(), records.len() as u64))
            .collect()
    }

    /// Events published over REST per platform event.
    pub fn published_counts(&self) -> BTreeMap<String, u64> {
        self.events
            .iter()
            .map(|(name, events)| ((*name).to_owned(), events.len() as u64))
            .collect()
    }

    fn stored(&self, object: &'static SObject, id: &str) -> Option<&Fields> {
        self.records.get(object.name)?.get(id)
    }

    /// The id of the record whose external id (or `Id`) `field` is `value`.
    fn lookup(
        &self,
        object: &'static SObject,
        field: &str,
        value: &str,
    ) -> Result<Option<String>, Error> {
        if field.eq_ignore_ascii_case("Id") {
            let id = normalize_id(value);
            return Ok(self.stored(object, &id).is_some().then_some(id));
        }
        let Some(field) = object.external_id(field) else {
            return Err(Error::NotAnExternalId(field.to_owned()));
        };
        Ok(self.holder(object, field, value))
    }

    /// The record holding `value` in external id `field`.
    fn holder(&self, object: &'static SObject, field: &str, value: &str) -> Option<String> {
        self.records
            .get(object.name)?
            .iter()
            .find(|(_, fields)| fields.get(field).and_then(Value::as_str) == Some(value))
            .map(|(id, _)| id.clone())
    }

    /// Writes `fields` to record `id` (new or existing) once the switches
    /// (`hazards`, none for the console), the validation rules and the
    /// unique external ids allow it; counts an API write.
    fn commit(
        &mut self,
        object: &'static SObject,
        id: &str,
        fields: Fields,
        hazards: Option<impl FnOnce(&str) -> Hazards>,
    ) -> Result<(), Error> {
        let through_api = hazards.is_some();
        let hazards = hazards.map(|h| h(object.name)).unwrap_or_default();
        if hazards.lock_row {
            return Err(Error::LockRow);
        }
        let mut failures = Vec::new();
        if let Some(message) = hazards.validation {
            failures.push(RuleFailure {
                message,
                fields: Vec::new(),
            });
        }
        if object.has_sequence_rule()
            && let Some(stored) = self.stored(object, id)
            && let Some(failure) = sequence_rule(stored, &fields)
        {
            failures.push(failure);
        }
        if !failures.is_empty() {
            return Err(Error::Validation(failures));
        }
        for field in object.external_ids() {
            if let Some(value) = fields.get(*field).and_then(Value::as_str)
                && let Some(holder) = self.holder(object, field, value)
                && holder != id
            {
                return Err(Error::DuplicateValue { field, id: holder });
            }
        }
        self.records
            .entry(object.name)
            .or_default()
            .entry(id.to_owned())
            .or_default()
            .extend(fields);
        if through_api {
            *self.writes.entry(object.name).or_default() += 1;
        }
        Ok(())
    }

    /// A fresh 18-character id: the prefix, `LC` (this org's "instance"),
    /// a counter in base 62, and the case checksum.
    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        let mut counter = self.next_id;
        let mut digits = [b'0'; 10];
        for digit in digits.iter_mut().rev() {
            *digit = BASE62[(counter % 62) as usize];
            counter /= 62;
        }
        let digits: String = digits.iter().map(|b| char::from(*b)).collect();
        with_checksum(&format!("{prefix}LC{digits}"))
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The ordering rule: `None` when the write may go on.
fn sequence_rule(stored: &Fields, written: &Fields) -> Option<RuleFailure> {
    let prior = stored.get(SEQUENCE_FIELD).filter(|v| !v.is_null())?;
    let new = written.get(SEQUENCE_FIELD)?;
    if new == prior || greater(new, prior) {
        None
    } else {
        Some(RuleFailure {
            message: SEQUENCE_RULE_MESSAGE.to_owned(),
            fields: vec![SEQUENCE_FIELD.to_owned()],
        })
    }
}

/// `a > b` for JSON numbers, exactly for integers; anything else is not
/// greater.
fn greater(a: &Value, b: &Value) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => a > b,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        },
    }
}

/// Whether a stored value is `value` written as text.
fn matches(stored: &Value, value: &str) -> bool {
    match stored {
        Value::String(s) => s == value,
        Value::Number(n) => n.to_string() == value,
        Value::Bool(b) => b.to_string() == value,
        _ => false,
    }
}

/// The fields of a write's body under their API names, each of its
/// field's type; `attributes` is ignored, as Salesforce ignores it.
fn parse_fields(object: &'static SObject, body: &Value) -> Result<Fields, Error> {
    let Value::Object(given) = body else {
        return Err(Error::JsonParser(format!(
            "Can not deserialize SObject out of {} token",
            token(body)
        )));
    };
    let mut fields = Map::new();
    for (name, value) in given {
        if name == "attributes" {
            continue;
        }
        if name.eq_ignore_ascii_case("Id") {
            return Err(Error::NotWritable("Id".to_owned()));
        }
        let Some(field) = object.field(name) else {
            return Err(Error::InvalidField {
                field: name.clone(),
                object: object.name,
            });
        };
        fields.insert(field.name.to_owned(), typed(field.ty, value)?);
    }
    Ok(fields)
}

/// A value checked against its field's type; date-times are kept the way
/// Salesforce returns them.
fn typed(ty: FieldType, value: &Value) -> Result<Value, Error> {
    let refuse = |kind: &str| {
        Error::JsonParser(format!(
            "Cannot deserialize instance of {kind} from {} value {value} or request may be missing a required field",
            token(value)
        ))
    };
    match (ty, value) {
        (_, Value::Null) => Ok(Value::Null),
        (FieldType::Text, Value::String(_)) | (FieldType::Number, Value::Number(_)) => {
            Ok(value.clone())
        }
        (FieldType::DateTime, Value::String(text)) => parse_time(text)
            .map(|t| Value::String(salesforce_time(t)))
            .ok_or_else(|| refuse("datetime")),
        (FieldType::Text, _) => Err(refuse("string")),
        (FieldType::Number, _) => Err(refuse("double")),
        (FieldType::DateTime, _) => Err(refuse("datetime")),
    }
}

/// The JSON token name Salesforce's parser would report.
fn token(value: &Value) -> &'static str {
    match value {
        Value::Null => "VALUE_NULL",
        Value::Bool(true) => "VALUE_TRUE",
        Value::Bool(false) => "VALUE_FALSE",
        Value::Number(n) if n.is_f64() => "VALUE_NUMBER_FLOAT",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

/// An ISO 8601 date-time with an offset (`Z`, `+00:00` or `+0000`).
fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// A date-time as Salesforce writes it: `2026-11-27T10:00:00.000+0000`.
fn salesforce_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// A record as the REST API shows it: `attributes`, `Id`, then every field
/// (null when unset).
fn render(object: &'static SObject, id: &str, fields: &Fields, version: &str) -> Value {
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({
            "type": object.name,
            "url": format!("/services/data/{version}/sobjects/{}/{id}", object.name),
        }),
    );
    out.insert("Id".into(), Value::String(id.to_owned()));
    for field in object.fields() {
        out.insert(
            field.name.to_owned(),
            fields.get(field.name).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

/// An id as records are keyed: a 15-character id gains its 18-character
/// form, so both find the same record.
pub(crate) fn normalize_id(id: &str) -> String {
    if id.len() == 15 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        with_checksum(id)
    } else {
        id.to_owned()
    }
}

/// Salesforce's 18-character id: the 15-character one, then one character
/// per 5 that says which of them are upper case, so the id survives
/// case-insensitive systems.
fn with_checksum(id15: &str) -> String {
    const SUFFIX: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut id = id15.to_owned();
    for chunk in id15.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |bits, (i, _)| bits | (1 << i));
        id.push(char::from(SUFFIX[bits]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sobjects::find;

    fn opportunity() -> &'static SObject {
        find("Opportunity").unwrap()
    }

    fn none(_: &str) -> Hazards {
        Hazards::default()
    }

    #[test]
    fn ids_have_eighteen_characters_and_the_case_checksum() {
        assert_eq!(with_checksum("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert_eq!(normalize_id("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert_eq!(normalize_id("0065e00000ABCDEFGH"), "0065e00000ABCDEFGH");
        let mut org = Org::default();
        let first = org.new_id("006");
        let second = org.new_id("006");
        assert_eq!(first.len(), 18);
        assert!(first.starts_with("006LC"), "{first}");
        assert_ne!(first, second);
        assert_eq!(normalize_id(&first[..15]), first);
    }

    #[test]
    fn the_ordering_rule_refuses_older_and_blanked_sequences_only() {
        let mut org = Org::default();
        let id = org
            .insert(opportunity(), None, &json!({"Name": "Q-1"}))
            .unwrap();
        // A record without a sequence takes any.
        org.update(opportunity(), &id, &json!({SEQUENCE_FIELD: 10}), none)
            .unwrap();
        // Untouched or unchanged: not the rule's business.
        org.update(opportunity(), &id, &json!({"Name": "x"}), none)
            .unwrap();
        org.update(opportunity(), &id, &json!({SEQUENCE_FIELD: 10}), none)
            .unwrap();
        for refused in [json!({SEQUENCE_FIELD: 9.5}), json!({SEQUENCE_FIELD: null})] {
            let error = org.update(opportunity(), &id, &refused, none).unwrap_err();
            assert_eq!(
                error,
                Error::Validation(vec![RuleFailure {
                    message: SEQUENCE_RULE_MESSAGE.into(),
                    fields: vec![SEQUENCE_FIELD.into()],
                }]),
                "{refused}"
            );
        }
        org.update(
            opportunity(),
            &id,
            &json!({SEQUENCE_FIELD: 1_795_773_600_123_i64, "Name": "y"}),
            none,
        )
        .unwrap();
        let record = org.get(opportunity(), &id, "v62.0").unwrap();
        assert_eq!(record["Name"], "y");
        assert_eq!(org.writes()["Opportunity"], 4);
    }

    #[test]
    fn a_failed_write_changes_nothing_and_switches_come_after_the_fields() {
        let mut org = Org::default();
        let id = org
            .insert(opportunity(), None, &json!({"Name": "Q-1"}))
            .unwrap();
        let mut asked = false;
        let error = org
            .update(opportunity(), &id, &json!({"Bogus__c": 1}), |_| {
                asked = true;
                Hazards::default()
            })
            .unwrap_err();
        assert!(matches!(error, Error::InvalidField { .. }));
        assert!(!asked, "a refused body never reaches the switches");
        let error = org
            .update(opportunity(), &id, &json!({"Name": "Q-2"}), |_| Hazards {
                lock_row: false,
                validation: Some("no".into()),
            })
            .unwrap_err();
        assert!(matches!(error, Error::Validation(_)));
        assert_eq!(org.get(opportunity(), &id, "v1.0").unwrap()["Name"], "Q-1");
        assert!(org.writes().is_empty());
    }

    #[test]
    fn field_types_are_checked_and_date_times_kept_as_salesforce_writes_them() {
        let mut org = Org::default();
        let id = org
            .insert(
                opportunity(),
                None,
                &json!({"Q2C_Status_Updated_At__c": "2026-11-27T10:00:00.123Z"}),
            )
            .unwrap();
        assert_eq!(
            org.get(opportunity(), &id, "v62.0").unwrap()["Q2C_Status_Updated_At__c"],
            "2026-11-27T10:00:00.123+0000"
        );
        for bad in [
            json!({"Amount": "12"}),
            json!({"Name": 1}),
            json!({"Q2C_Status_Updated_At__c": "yesterday"}),
        ] {
            assert!(matches!(
                org.update(opportunity(), &id, &bad, none),
                Err(Error::JsonParser(_))
            ));
        }
        assert!(matches!(
            org.update(opportunity(), &id, &json!([1]), none),
            Err(Error::JsonParser(_))
        ));
    }
}
