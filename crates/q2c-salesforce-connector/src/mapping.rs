//! A workflow's outcome as the write Salesforce receives: which record (the
//! Opportunity by id, a record upserted by an external id, or a status
//! platform event), and which field carries what. Salesforce owns its field
//! names, so they are settings with documented defaults.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Where statuses go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Update the quote's Opportunity (its id is in the event).
    Opportunity,
    /// Upsert a record of `object` whose `external_id_field` holds the
    /// quote id.
    Upsert {
        /// e.g. `Q2C_Quote_Status__c`.
        object: String,
        /// e.g. `Q2C_Quote_Id__c`.
        external_id_field: String,
    },
    /// Publish a platform event, e.g. `Q2C_Order_Status__e`.
    PlatformEvent {
        /// The event's API name.
        event: String,
    },
}

/// The Salesforce field of each part of a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    /// How the workflow ended: `completed`, `failed`, `compensated`, `cancelled`.
    pub status: String,
    /// The ERP order number.
    pub order_number: String,
    /// The invoice number.
    pub invoice_number: String,
    /// The payment reference.
    pub payment_reference: String,
    /// Why it failed.
    pub failure_reason: String,
    /// When the outcome was set.
    pub updated_at: String,
    /// The ordering number the org's validation rule compares.
    pub sequence: String,
    /// The workflow's id, to find it in q2c.
    pub workflow_id: String,
}

impl Fields {
    /// The custom fields of q2c's setup on a record (Opportunity or the
    /// status object).
    pub fn record_defaults() -> Self {
        Self {
            status: "Q2C_Status__c".into(),
            order_number: "Q2C_ERP_Order_Number__c".into(),
            invoice_number: "Q2C_Invoice_Number__c".into(),
            payment_reference: "Q2C_Payment_Reference__c".into(),
            failure_reason: "Q2C_Failure_Reason__c".into(),
            updated_at: "Q2C_Status_Updated_At__c".into(),
            sequence: "Q2C_Status_Sequence__c".into(),
            workflow_id: "Q2C_Workflow_Id__c".into(),
        }
    }

    /// The fields of the `Q2C_Order_Status__e` platform event.
    pub fn event_defaults() -> Self {
        Self {
            status: "Status__c".into(),
            order_number: "ERP_Order_Number__c".into(),
            invoice_number: "Invoice_Number__c".into(),
            payment_reference: "Payment_Reference__c".into(),
            failure_reason: "Failure_Reason__c".into(),
            updated_at: "Status_Updated_At__c".into(),
            sequence: "Sequence__c".into(),
            workflow_id: "Workflow_Id__c".into(),
        }
    }
}

/// A `salesforce.report_status` command's payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Report {
    /// The workflow.
    pub workflow_id: String,
    /// The quote.
    pub quote_id: String,
    /// Its Opportunity.
    pub opportunity_id: String,
    /// How the money flow ended.
    pub outcome: String,
    /// The ERP order, if one was created.
    #[serde(default)]
    pub order_id: Option<String>,
    /// The invoice, if one was issued.
    #[serde(default)]
    pub invoice_id: Option<String>,
    /// The payment, if one was collected.
    #[serde(default)]
    pub payment_id: Option<String>,
    /// Why it failed, if it did.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// When the outcome was set: also the write's sequence number, so a
    /// later status always outranks an earlier one and a retry of the same
    /// status carries the same number.
    pub outcome_at: DateTime<Utc>,
}

/// Why a command's payload is not a status report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a salesforce.report_status payload: {0}")]
pub struct NotAReport(pub String);

impl Report {
    /// Reads a command's payload, naming what is missing or malformed.
    pub fn from_payload(payload: &Value) -> Result<Report, NotAReport> {
        Report::deserialize(payload).map_err(|error| NotAReport(error.to_string()))
    }
}

/// One REST write, relative to `/services/data/vXX.X`.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// `PATCH` or `POST`.
    pub method: &'static str,
    /// e.g. `/sobjects/Opportunity/006…`.
    pub path: String,
    /// The fields.
    pub body: Value,
}

/// The write that carries `report` to `target`.
pub fn write(report: &Report, target: &Target, fields: &Fields) -> Write {
    let mut body = Map::new();
    body.insert(fields.status.clone(), json!(report.outcome));
    body.insert(fields.order_number.clone(), json!(report.order_id));
    body.insert(fields.invoice_number.clone(), json!(report.invoice_id));
    body.insert(fields.payment_reference.clone(), json!(report.payment_id));
    body.insert(fields.failure_reason.clone(), json!(report.failure_reason));
    body.insert(
        fields.updated_at.clone(),
        json!(
            report
                .outcome_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ),
    );
    body.insert(
        fields.sequence.clone(),
        json!(report.outcome_at.timestamp_millis()),
    );
    body.insert(fields.workflow_id.clone(), json!(report.workflow_id));
    match target {
        Target::Opportunity => Write {
            method: "PATCH",
            path: format!("/sobjects/Opportunity/{}", segment(&report.opportunity_id)),
            body: Value::Object(body),
        },
        Target::Upsert {
            object,
            external_id_field,
        } => Write {
            method: "PATCH",
            path: format!(
                "/sobjects/{object}/{external_id_field}/{}",
                segment(&report.quote_id)
            ),
            body: Value::Object(body),
        },
        Target::PlatformEvent { event } => {
            body.insert("Quote_Id__c".into(), json!(report.quote_id));
            body.insert("Opportunity_Id__c".into(), json!(report.opportunity_id));
            Write {
                method: "POST",
                path: format!("/sobjects/{event}"),
                body: Value::Object(body),
            }
        }
    }
}

/// Several writes as one composite request: one API call for up to 25.
pub fn composite(writes: &[Write], api_version: &str) -> Value {
    let requests: Vec<Value> = writes
        .iter()
        .enumerate()
        .map(|(index, write)| {
            json!({
                "method": write.method,
                "url": format!("/services/data/{api_version}{}", write.path),
                "referenceId": format!("status{index}"),
                "body": write.body,
            })
        })
        .collect();
    json!({"allOrNone": false, "compositeRequest": requests})
}

/// An id as a URL path segment: Salesforce ids are alphanumeric, and
/// anything else is percent-encoded rather than allowed to change the path.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: &str) -> Report {
        Report::from_payload(&json!({
            "workflow_id": "01a2b3c4-0000-7000-8000-000000000001",
            "quote_id": "a0q5e00000ABCDEFGH",
            "quote_number": "Q-00042",
            "opportunity_id": "0065e00000ABCDEFGH",
            "outcome": outcome,
            "order_id": "SO-1001",
            "invoice_id": null,
            "payment_id": null,
            "failure_reason": "issue_invoice: tax service refused the address",
            "outcome_at": "2026-11-27T10:00:00.123Z"
        }))
        .unwrap()
    }

    #[test]
    fn the_opportunity_gets_every_part_of_the_status() {
        let write = write(
            &report("compensated"),
            &Target::Opportunity,
            &Fields::record_defaults(),
        );
        assert_eq!(write.method, "PATCH");
        assert_eq!(write.path, "/sobjects/Opportunity/0065e00000ABCDEFGH");
        assert_eq!(write.body["Q2C_Status__c"], "compensated");
        assert_eq!(write.body["Q2C_ERP_Order_Number__c"], "SO-1001");
        assert_eq!(write.body["Q2C_Invoice_Number__c"], Value::Null);
        assert_eq!(
            write.body["Q2C_Failure_Reason__c"],
            "issue_invoice: tax service refused the address"
        );
        assert_eq!(
            write.body["Q2C_Status_Updated_At__c"],
            "2026-11-27T10:00:00.123Z"
        );
        assert_eq!(write.body["Q2C_Status_Sequence__c"], 1_795_773_600_123_i64);
    }

    #[test]
    fn an_upsert_is_keyed_by_the_quote_and_an_event_names_it() {
        let upsert = write(
            &report("completed"),
            &Target::Upsert {
                object: "Q2C_Quote_Status__c".into(),
                external_id_field: "Q2C_Quote_Id__c".into(),
            },
            &Fields::record_defaults(),
        );
        assert_eq!(
            upsert.path,
            "/sobjects/Q2C_Quote_Status__c/Q2C_Quote_Id__c/a0q5e00000ABCDEFGH"
        );
        let event = write(
            &report("completed"),
            &Target::PlatformEvent {
                event: "Q2C_Order_Status__e".into(),
            },
            &Fields::event_defaults(),
        );
        assert_eq!(
            (event.method, event.path.as_str()),
            ("POST", "/sobjects/Q2C_Order_Status__e")
        );
        assert_eq!(event.body["Quote_Id__c"], "a0q5e00000ABCDEFGH");
        assert_eq!(event.body["Status__c"], "completed");
    }

    #[test]
    fn a_later_outcome_outranks_an_earlier_one() {
        let earlier = write(
            &report("failed"),
            &Target::Opportunity,
            &Fields::record_defaults(),
        );
        let mut later_report = report("completed");
        later_report.outcome_at += chrono::TimeDelta::milliseconds(1);
        let later = write(
            &later_report,
            &Target::Opportunity,
            &Fields::record_defaults(),
        );
        assert!(
            later.body["Q2C_Status_Sequence__c"].as_i64()
                > earlier.body["Q2C_Status_Sequence__c"].as_i64()
        );
    }

    #[test]
    fn a_payload_that_is_not_a_report_is_named() {
        let error = Report::from_payload(&json!({"quote_id": "a0q"})).unwrap_err();
        assert!(error.to_string().contains("workflow_id"), "{error}");
    }

    #[test]
    fn an_id_cannot_change_the_path() {
        let mut odd = report("completed");
        odd.opportunity_id = "006/../../limits".into();
        let write = write(&odd, &Target::Opportunity, &Fields::record_defaults());
        assert_eq!(write.path, "/sobjects/Opportunity/006%2F..%2F..%2Flimits");
    }

    #[test]
    fn writes_go_together_in_one_composite() {
        let writes = vec![
            write(
                &report("completed"),
                &Target::Opportunity,
                &Fields::record_defaults(),
            ),
            write(
                &report("completed"),
                &Target::PlatformEvent {
                    event: "Q2C_Order_Status__e".into(),
                },
                &Fields::event_defaults(),
            ),
        ];
        let request = composite(&writes, "v62.0");
        let requests = request["compositeRequest"].as_array().unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[0]["url"],
            "/services/data/v62.0/sobjects/Opportunity/0065e00000ABCDEFGH"
        );
        assert_eq!(requests[1]["method"], "POST");
    }
}
