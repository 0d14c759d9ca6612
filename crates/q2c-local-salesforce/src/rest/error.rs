//! Salesforce's REST errors: an HTTP status and a JSON array of
//! `{"message", "errorCode"[, "fields"]}`, worded as Salesforce words them
//! where q2c reads them (the codes, and the messages a person sees).

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

/// Why a REST call (or one subrequest of a composite) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Error {
    /// No `Authorization` header, or a token this org did not issue or
    /// that has expired: 401 `INVALID_SESSION_ID`.
    InvalidSession,
    /// The daily API budget is spent: 403 `REQUEST_LIMIT_EXCEEDED`.
    LimitExceeded,
    /// The `rest-unavailable` or `rest-down` switch: 503
    /// `SERVER_UNAVAILABLE`.
    Unavailable,
    /// No such resource, object or record: 404 `NOT_FOUND`.
    NotFound,
    /// An upsert names a field that is not an external id: 404 `NOT_FOUND`.
    NotAnExternalId(String),
    /// The resource exists, the method does not: 405.
    MethodNotAllowed {
        /// The method asked for.
        method: String,
        /// The methods the resource has, as Salesforce lists them.
        allowed: &'static str,
    },
    /// The body is not the JSON the resource takes: 400 `JSON_PARSER_ERROR`.
    JsonParser(String),
    /// A field the object does not have: 400 `INVALID_FIELD`.
    InvalidField {
        /// The field as written.
        field: String,
        /// The object's API name.
        object: &'static str,
    },
    /// A field that cannot be written (`Id`): 400
    /// `INVALID_FIELD_FOR_INSERT_UPDATE`.
    NotWritable(String),
    /// An external id value another record holds: 400 `DUPLICATE_VALUE`.
    DuplicateValue {
        /// The external id field.
        field: &'static str,
        /// The record that holds the value.
        id: String,
    },
    /// The `lock-row` switch: 400 `UNABLE_TO_LOCK_ROW`.
    LockRow,
    /// Validation rules refused the write: 400
    /// `FIELD_CUSTOM_VALIDATION_EXCEPTION`, one entry per rule.
    Validation(Vec<RuleFailure>),
    /// A composite with more subrequests than allowed: 400.
    TooManySubrequests(usize),
    /// A composite subrequest whose URL or method cannot be run: 400.
    InvalidSubrequest(String),
    /// A subrequest of an all-or-none composite whose transaction was
    /// rolled back because another one failed: 400 `PROCESSING_HALTED`.
    ProcessingHalted,
}

/// One validation rule that refused a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleFailure {
    /// The rule's error message.
    pub message: String,
    /// The fields the rule shows its error on (empty: top of the page).
    pub fields: Vec<String>,
}

/// Most subrequests a composite may carry.
pub(crate) const MAX_SUBREQUESTS: usize = 25;

#[derive(Serialize)]
struct Entry<'a> {
    message: String,
    #[serde(rename = "errorCode")]
    error_code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<Vec<String>>,
}

impl Error {
    /// The HTTP status Salesforce answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidSession => StatusCode::UNAUTHORIZED,
            Self::LimitExceeded => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFound | Self::NotAnExternalId(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::JsonParser(_)
            | Self::InvalidField { .. }
            | Self::NotWritable(_)
            | Self::DuplicateValue { .. }
            | Self::LockRow
            | Self::Validation(_)
            | Self::TooManySubrequests(_)
            | Self::InvalidSubrequest(_)
            | Self::ProcessingHalted => StatusCode::BAD_REQUEST,
        }
    }

    /// The `errorCode` of the (first) entry.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidSession => "INVALID_SESSION_ID",
            Self::LimitExceeded => "REQUEST_LIMIT_EXCEEDED",
            Self::Unavailable => "SERVER_UNAVAILABLE",
            Self::NotFound | Self::NotAnExternalId(_) => "NOT_FOUND",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::JsonParser(_) => "JSON_PARSER_ERROR",
            Self::InvalidField { .. } => "INVALID_FIELD",
            Self::NotWritable(_) => "INVALID_FIELD_FOR_INSERT_UPDATE",
            Self::DuplicateValue { .. } => "DUPLICATE_VALUE",
            Self::LockRow => "UNABLE_TO_LOCK_ROW",
            Self::Validation(_) => "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            Self::TooManySubrequests(_) => "LIMIT_EXCEEDED",
            Self::InvalidSubrequest(_) => "INVALID_INPUT",
            Self::ProcessingHalted => "PROCESSING_HALTED",
        }
    }

    /// The entries' messages, for errors that are not answered over REST.
    pub fn message(&self) -> String {
        self.body()
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|entry| entry["message"].as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    /// The JSON array Salesforce answers with.
    pub fn body(&self) -> Value {
        let code = self.code();
        let entry = |message: String, fields: Option<Vec<String>>| Entry {
            message,
            error_code: code,
            fields,
        };
        let entries = match self {
            Self::InvalidSession => vec![entry("Session expired or invalid".into(), None)],
            Self::LimitExceeded => vec![entry("TotalRequests Limit exceeded.".into(), None)],
            Self::Unavailable => vec![entry(
                "Server temporarily unavailable, please try again later.".into(),
                None,
            )],
            Self::NotFound => vec![entry("The requested resource does not exist".into(), None)],
            Self::NotAnExternalId(field) => vec![entry(
                format!("Provided external ID field does not exist or is not accessible: {field}"),
                None,
            )],
            Self::MethodNotAllowed { method, allowed } => vec![entry(
                format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
                None,
            )],
            Self::JsonParser(message) => vec![entry(message.clone(), None)],
            Self::InvalidField { field, object } => vec![entry(
                format!("No such column '{field}' on sobject of type {object}"),
                Some(Vec::new()),
            )],
            Self::NotWritable(field) => vec![entry(
                format!(
                    "Unable to create/update fields: {field}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                ),
                Some(vec![field.clone()]),
            )],
            Self::DuplicateValue { field, id } => vec![entry(
                format!("duplicate value found: {field} duplicates value on record with id: {id}"),
                Some(Vec::new()),
            )],
            Self::LockRow => vec![entry(
                "unable to obtain exclusive access to this record".into(),
                Some(Vec::new()),
            )],
            Self::Validation(failures) => failures
                .iter()
                .map(|f| entry(f.message.clone(), Some(f.fields.clone())))
                .collect(),
            Self::TooManySubrequests(n) => vec![entry(
                format!(
                    "A composite request may have at most {MAX_SUBREQUESTS} subrequests; this one has {n}"
                ),
                None,
            )],
            Self::InvalidSubrequest(message) => vec![entry(message.clone(), None)],
            Self::ProcessingHalted => vec![entry(
                "The transaction was rolled back since another operation in the same transaction failed.".into(),
                None,
            )],
        };
        serde_json::to_value(entries).unwrap_or(Value::Null)
    }
}
