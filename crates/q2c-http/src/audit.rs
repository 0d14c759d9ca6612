//! `GET /api/v1/audit`: the operator actions, for auditors, as JSON or CSV.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use q2c_store::operators::{AuditEntry, AuditFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::openapi::Refusals;
use crate::problem::Problem;

/// Rows per page unless the query asks for another number.
const DEFAULT_LIMIT: i64 = 500;

/// The most rows one page holds.
const MAX_LIMIT: i64 = 10_000;

/// Query parameters: filters and paging.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    workflow_id: Option<Uuid>,
    actor: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    after: Option<i64>,
    limit: Option<i64>,
}

/// Oldest first. JSON has `items` and, when the page is full, `next_after`
/// to pass as `after` for the next page (also the `Q2C-Next-After` header);
/// with `Accept: text/csv` the same rows come as CSV with a header line.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    operation_id = "audit_export",
    tag = "operators",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit rows, oldest first, as JSON or (Accept: text/csv) CSV", content((serde_json::Value = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Malformed query", body = Problem),
        Refusals
    )
)]
pub async fn export(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return Problem::invalid_query(rejection.body_text()).into_response();
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Problem::invalid_query(format!("limit must be from 1 to {MAX_LIMIT}, not {limit}"))
            .into_response();
    }
    let filter = AuditFilter {
        workflow_id: query.workflow_id,
        actor: query.actor,
        since: query.since,
        until: query.until,
        after_id: query.after,
    };
    let rows = match state.store.audit(&filter, limit).await {
        Ok(rows) => rows,
        Err(error) => return Problem::internal(&error).into_response(),
    };
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit;
    let next_after = rows.last().filter(|_| full).map(|row| row.id);
    let mut response = if wants_csv(&headers) {
        let mut response = csv(&rows).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        response
    } else {
        axum::Json(json!({"items": rows, "next_after": next_after})).into_response()
    };
    // CSV has no room for the cursor: both formats carry it as a header, so
    // an export that stopped at the limit never passes for the whole trail.
    if let Some(next) = next_after.and_then(|id| HeaderValue::from_str(&id.to_string()).ok()) {
        response.headers_mut().insert(NEXT_AFTER, next);
    }
    response
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|kind| kind.trim().starts_with("text/csv"))
        })
}

/// The header naming the `after` of the next page, when there is one.
const NEXT_AFTER: &str = "q2c-next-after";

/// The columns, in order.
const COLUMNS: [&str; 24] = [
    "id",
    "at",
    "actor",
    "role",
    "workflow_id",
    "bulk_job_id",
    "dead_letter_id",
    "action",
    "reason",
    "input",
    "result",
    "detail",
    "status_before",
    "status_after",
    "step_before",
    "step_after",
    "phase_before",
    "phase_after",
    "paused_before",
    "paused_after",
    "version_before",
    "version_after",
    "outcome_before",
    "outcome_after",
];

/// RFC 4180 CSV, one line per row.
fn csv(rows: &[AuditEntry]) -> String {
    let mut out = COLUMNS.join(",");
    out.push_str("\r\n");
    for row in rows {
        let member = |state: &Option<Value>, name: &str| match state.as_ref().map(|s| &s[name]) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        };
        let optional = |value: Option<String>| value.unwrap_or_default();
        let fields = [
            row.id.to_string(),
            row.at.to_rfc3339(),
            row.actor.clone(),
            row.role.clone(),
            optional(row.workflow_id.map(|id| id.to_string())),
            optional(row.bulk_job_id.map(|id| id.to_string())),
            optional(row.dead_letter_id.map(|id| id.to_string())),
            row.action.clone(),
            row.reason.clone(),
            row.input.as_ref().map(Value::to_string).unwrap_or_default(),
            row.result.clone(),
            row.detail.clone().unwrap_or_default(),
            member(&row.state_before, "status"),
            member(&row.state_after, "status"),
            member(&row.state_before, "step"),
            member(&row.state_after, "step"),
            member(&row.state_before, "phase"),
            member(&row.state_after, "phase"),
            member(&row.state_before, "paused"),
            member(&row.state_after, "paused"),
            member(&row.state_before, "version"),
            member(&row.state_after, "version"),
            member(&row.state_before, "outcome"),
            member(&row.state_after, "outcome"),
        ];
        let line: Vec<String> = fields.iter().map(|field| cell(field)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One CSV cell: quoted when it holds a separator, a quote or a line
/// break; and text that a spreadsheet would run as a formula starts with
/// a quote mark, so an operator's reason never executes on an auditor's
/// machine.
fn cell(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{field}")
    } else {
        field.to_owned()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_when_needed_and_formulas_are_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a, b"), "\"a, b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-1"), "'-1");
    }
}
