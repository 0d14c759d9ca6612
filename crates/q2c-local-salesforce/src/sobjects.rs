//! The org's sObjects as its REST API knows them: the records q2c writes
//! workflow statuses to and the platform event it may publish instead. This
//! is the one place they are defined; the REST API, the console and the
//! handle all read it.
//!
//! | sObject | kind | id prefix | fields |
//! |---|---|---|---|
//! | `Opportunity` | standard object | `006` | `Name`, `StageName` (text), `Amount` (number), and the status fields |
//! | `Q2C_Quote_Status__c` | custom object | `a1S` | the status fields, and `Q2C_Quote_Id__c` (text, external id, unique) |
//! | `Q2C_Order_Status__e` | platform event | `e00` | `Quote_Id__c`, `Opportunity_Id__c`, `Status__c`, `ERP_Order_Number__c`, `Invoice_Number__c`, `Payment_Reference__c`, `Failure_Reason__c`, `Workflow_Id__c` (text), `Sequence__c` (number), `Status_Updated_At__c` (date-time) |
//!
//! The status fields are the custom fields q2c's setup adds to both
//! objects: `Q2C_Status__c`, `Q2C_ERP_Order_Number__c`,
//! `Q2C_Invoice_Number__c`, `Q2C_Payment_Reference__c`,
//! `Q2C_Failure_Reason__c`, `Q2C_Workflow_Id__c` (text),
//! `Q2C_Status_Sequence__c` (number) and `Q2C_Status_Updated_At__c`
//! (date-time). Both objects carry the ordering rule on
//! `Q2C_Status_Sequence__c` (see `org`).
//!
//! Names are matched without regard to case, as Salesforce matches them;
//! records keep the names as defined here.

/// What a field holds, which decides the JSON a write may give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    /// A JSON string.
    Text,
    /// A JSON number.
    Number,
    /// A date-time in ISO 8601 text, read back as Salesforce writes it
    /// (`2026-11-27T10:00:00.000+0000`).
    DateTime,
}

/// One field of an sObject.
#[derive(Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: FieldType,
}

const fn field(name: &'static str, ty: FieldType) -> Field {
    Field { name, ty }
}

/// What kind of sObject a name stands for: records are kept and can be
/// read and written; platform events are only published.
#[derive(Debug)]
pub(crate) enum Kind {
    /// An object whose records are stored.
    Object {
        /// The first three characters of its records' ids.
        key_prefix: &'static str,
        /// Fields that are external ids (unique, usable to upsert).
        external_ids: &'static [&'static str],
        /// Whether the org's ordering rule on [`SEQUENCE_FIELD`] guards it.
        sequence_rule: bool,
    },
    /// A platform event, published by `POST /sobjects/<name>`.
    PlatformEvent,
}

/// An sObject: its API name, kind and fields (besides `Id`).
#[derive(Debug)]
pub(crate) struct SObject {
    pub name: &'static str,
    pub kind: Kind,
    /// The fields in groups, so the status fields are written down once.
    groups: &'static [&'static [Field]],
}

/// The field the ordering rule compares.
pub(crate) const SEQUENCE_FIELD: &str = "Q2C_Status_Sequence__c";

/// The id prefix of published platform events.
pub(crate) const EVENT_KEY_PREFIX: &str = "e00";

/// The custom fields q2c's setup adds to the Opportunity and to
/// `Q2C_Quote_Status__c`.
const STATUS_FIELDS: [Field; 8] = [
    field("Q2C_Status__c", FieldType::Text),
    field("Q2C_ERP_Order_Number__c", FieldType::Text),
    field("Q2C_Invoice_Number__c", FieldType::Text),
    field("Q2C_Payment_Reference__c", FieldType::Text),
    field("Q2C_Failure_Reason__c", FieldType::Text),
    field("Q2C_Status_Updated_At__c", FieldType::DateTime),
    field(SEQUENCE_FIELD, FieldType::Number),
    field("Q2C_Workflow_Id__c", FieldType::Text),
];

const OPPORTUNITY_FIELDS: [Field; 3] = [
    field("Name", FieldType::Text),
    field("StageName", FieldType::Text),
    field("Amount", FieldType::Number),
];

const QUOTE_KEY_FIELDS: [Field; 1] = [field("Q2C_Quote_Id__c", FieldType::Text)];

const ORDER_STATUS_FIELDS: [Field; 10] = [
    field("Quote_Id__c", FieldType::Text),
    field("Opportunity_Id__c", FieldType::Text),
    field("Status__c", FieldType::Text),
    field("ERP_Order_Number__c", FieldType::Text),
    field("Invoice_Number__c", FieldType::Text),
    field("Payment_Reference__c", FieldType::Text),
    field("Failure_Reason__c", FieldType::Text),
    field("Sequence__c", FieldType::Number),
    field("Workflow_Id__c", FieldType::Text),
    field("Status_Updated_At__c", FieldType::DateTime),
];

/// The `Opportunity` API name, which a quote-accepted event published
/// through the console creates a record of.
pub(crate) const OPPORTUNITY: &str = "Opportunity";

/// Every sObject of the org.
pub(crate) static SOBJECTS: [SObject; 3] = [
    SObject {
        name: OPPORTUNITY,
        kind: Kind::Object {
            key_prefix: "006",
            external_ids: &[],
            sequence_rule: true,
        },
        groups: &[&OPPORTUNITY_FIELDS, &STATUS_FIELDS],
    },
    SObject {
        name: "Q2C_Quote_Status__c",
        kind: Kind::Object {
            key_prefix: "a1S",
            external_ids: &["Q2C_Quote_Id__c"],
            sequence_rule: true,
        },
        groups: &[&QUOTE_KEY_FIELDS, &STATUS_FIELDS],
    },
    SObject {
        name: "Q2C_Order_Status__e",
        kind: Kind::PlatformEvent,
        groups: &[&ORDER_STATUS_FIELDS],
    },
];

/// An sObject by API name, in any case.
pub(crate) fn find(name: &str) -> Option<&'static SObject> {
    SOBJECTS.iter().find(|o| o.name.eq_ignore_ascii_case(name))
}

/// The API names of the objects whose records are stored, for messages.
pub(crate) fn object_names() -> Vec<&'static str> {
    SOBJECTS
        .iter()
        .filter(|o| !o.is_event())
        .map(|o| o.name)
        .collect()
}

impl SObject {
    /// Its fields besides `Id`, in definition order.
    pub fn fields(&self) -> impl Iterator<Item = &'static Field> + use<> {
        self.groups.iter().flat_map(|group| group.iter())
    }

    /// A field by name, in any case.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Whether this is a platform event rather than an object with records.
    pub fn is_event(&self) -> bool {
        matches!(self.kind, Kind::PlatformEvent)
    }

    /// The external id field of this name, if the object has one.
    pub fn external_id(&self, name: &str) -> Option<&'static str> {
        match &self.kind {
            Kind::Object { external_ids, .. } => external_ids
                .iter()
                .copied()
                .find(|f| f.eq_ignore_ascii_case(name)),
            Kind::PlatformEvent => None,
        }
    }

    /// The external id fields (none for an event).
    pub fn external_ids(&self) -> &'static [&'static str] {
        match &self.kind {
            Kind::Object { external_ids, .. } => external_ids,
            Kind::PlatformEvent => &[],
        }
    }

    /// Whether the ordering rule guards this object.
    pub fn has_sequence_rule(&self) -> bool {
        matches!(
            self.kind,
            Kind::Object {
                sequence_rule: true,
                ..
            }
        )
    }

    /// The prefix of the ids of its records (or published events).
    pub fn key_prefix(&self) -> &'static str {
        match &self.kind {
            Kind::Object { key_prefix, .. } => key_prefix,
            Kind::PlatformEvent => EVENT_KEY_PREFIX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_any_case_and_fields_are_complete() {
        let opportunity = find("opportunity").unwrap();
        assert_eq!(opportunity.name, "Opportunity");
        assert_eq!(opportunity.fields().count(), 11);
        assert_eq!(
            opportunity.field("q2c_status_sequence__c").unwrap().ty,
            FieldType::Number
        );
        let status = find("Q2C_Quote_Status__c").unwrap();
        assert_eq!(status.fields().count(), 9);
        assert_eq!(
            status.external_id("q2c_quote_id__c"),
            Some("Q2C_Quote_Id__c")
        );
        assert!(status.has_sequence_rule());
        let event = find("Q2C_Order_Status__e").unwrap();
        assert!(event.is_event() && !event.has_sequence_rule());
        assert_eq!(event.fields().count(), 10);
        assert_eq!(event.key_prefix(), "e00");
        assert!(find("Account").is_none());
        assert_eq!(object_names(), ["Opportunity", "Q2C_Quote_Status__c"]);
    }
}
