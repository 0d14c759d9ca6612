//! What Salesforce's answer to a status write means.
//!
//! Salesforce reports errors as a JSON array of `{"message", "errorCode",
//! "fields"}`. Each write carries a sequence number, and the org's
//! validation rule refuses one that is not newer than what the record holds
//! (an error on the sequence field): that refusal is the rule doing its job,
//! so it counts as success, and a retried older status never overwrites a
//! newer one.

use serde::Deserialize;

/// The meaning of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The status is written.
    Written,
    /// The record already holds a newer status; nothing to do.
    AlreadyNewer,
    /// A passing condition (a locked row, Salesforce busy or down): try
    /// again shortly, within the step's timeout.
    Retry {
        /// Salesforce's error code, or the HTTP status.
        code: String,
        /// Its message.
        message: String,
    },
    /// The access token was refused: get a new one, then write again.
    Reauthenticate,
    /// The org's daily API budget is used up: give the write back to the
    /// workflow as a retryable failure (its retry policy waits far longer
    /// than a connector should hold a message).
    OverBudget {
        /// Salesforce's message.
        message: String,
    },
    /// Salesforce will never accept this write as it is (a validation rule,
    /// an unknown field, a missing record): a person must look.
    Definitive {
        /// Salesforce's error code, or the HTTP status.
        code: String,
        /// Its message, to show the operator.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    message: String,
    #[serde(rename = "errorCode", default)]
    error_code: String,
    #[serde(default)]
    fields: Vec<String>,
}

/// Judges an answer: `status` and `body` as received, `sequence_field` the
/// field the org's ordering rule guards (e.g. `Q2C_Status_Sequence__c`).
pub fn judge(status: u16, body: &[u8], sequence_field: &str) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Written;
    }
    let errors: Vec<ApiError> = serde_json::from_slice(body).unwrap_or_default();
    let first = errors.first();
    let code = first.map_or_else(|| format!("HTTP {status}"), |e| e.error_code.clone());
    let message = first.map_or_else(
        || String::from_utf8_lossy(body).chars().take(500).collect(),
        |e| e.message.clone(),
    );
    if errors.iter().any(|error| {
        error.error_code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
            && error.fields.iter().any(|field| field == sequence_field)
    }) {
        return Verdict::AlreadyNewer;
    }
    match (status, code.as_str()) {
        (401, _) | (_, "INVALID_SESSION_ID") => Verdict::Reauthenticate,
        (_, "REQUEST_LIMIT_EXCEEDED") => Verdict::OverBudget { message },
        (_, "UNABLE_TO_LOCK_ROW") | (500..=599, _) | (429, _) => Verdict::Retry { code, message },
        _ => Verdict::Definitive { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQUENCE: &str = "Q2C_Status_Sequence__c";

    fn error(code: &str, message: &str, fields: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([
            {"message": message, "errorCode": code, "fields": fields}
        ]))
        .unwrap()
    }

    #[test]
    fn success_is_any_2xx() {
        assert_eq!(judge(204, b"", SEQUENCE), Verdict::Written);
        assert_eq!(
            judge(201, br#"{"id":"a01","success":true}"#, SEQUENCE),
            Verdict::Written
        );
    }

    #[test]
    fn an_older_status_refused_by_the_ordering_rule_counts_as_done() {
        let body = error(
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "an older status cannot overwrite a newer one",
            &[SEQUENCE],
        );
        assert_eq!(judge(400, &body, SEQUENCE), Verdict::AlreadyNewer);
    }

    #[test]
    fn another_validation_rule_is_definitive_and_keeps_salesforces_words() {
        let body = error(
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "Closed opportunities cannot change stage",
            &["StageName"],
        );
        assert_eq!(
            judge(400, &body, SEQUENCE),
            Verdict::Definitive {
                code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
                message: "Closed opportunities cannot change stage".into()
            }
        );
        let body = error("INVALID_FIELD", "No such column 'Q2C_Foo__c'", &[]);
        assert!(matches!(
            judge(400, &body, SEQUENCE),
            Verdict::Definitive { .. }
        ));
    }

    #[test]
    fn passing_conditions_are_retried_and_tokens_renewed() {
        let locked = error(
            "UNABLE_TO_LOCK_ROW",
            "unable to obtain exclusive access",
            &[],
        );
        assert!(
            matches!(judge(400, &locked, SEQUENCE), Verdict::Retry { code, .. } if code == "UNABLE_TO_LOCK_ROW")
        );
        assert!(
            matches!(judge(503, b"upstream down", SEQUENCE), Verdict::Retry { code, .. } if code == "HTTP 503")
        );
        let expired = error("INVALID_SESSION_ID", "Session expired or invalid", &[]);
        assert_eq!(judge(401, &expired, SEQUENCE), Verdict::Reauthenticate);
        let spent = error(
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
            &[],
        );
        assert_eq!(
            judge(403, &spent, SEQUENCE),
            Verdict::OverBudget {
                message: "TotalRequests Limit exceeded.".into()
            }
        );
    }
}
