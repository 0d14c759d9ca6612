//! Reading workflows: a filtered list, and one workflow with its steps and
//! history.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::{Phase, Saga, Status};
use q2c_store::queries::{Cursor, Filter, HistoryRow, Order, Summary, stuck_since};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::openapi::Refusals;
use crate::problem::Problem;

/// Query parameters of the list. Unknown ones are refused, so a mistyped
/// filter never silently lists everything.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    quote_id: Option<String>,
    account_id: Option<String>,
    status: Option<String>,
    step: Option<String>,
    paused: Option<bool>,
    reference: Option<String>,
    reference_field: Option<String>,
    created_from: Option<DateTime<Utc>>,
    created_until: Option<DateTime<Utc>>,
    updated_from: Option<DateTime<Utc>>,
    updated_until: Option<DateTime<Utc>>,
    /// A duration such as `2h` or `30m`.
    stuck: Option<String>,
    order: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

impl ListQuery {
    /// The filter the query asks for, or what is wrong with it; `now` is
    /// what "stuck for" counts back from.
    pub(crate) fn filter(&self, now: DateTime<Utc>) -> Result<Filter, String> {
        if let Some(status) = &self.status
            && !Status::ALL.iter().any(|known| known.as_str() == status)
        {
            let known: Vec<&str> = Status::ALL.iter().map(|known| known.as_str()).collect();
            return Err(format!(
                "status `{status}` is not one of {}",
                known.join(", ")
            ));
        }
        let stuck = match self.stuck.as_deref().map(humantime::parse_duration) {
            None => None,
            Some(Ok(duration)) => Some(stuck_since(now, duration)),
            Some(Err(error)) => {
                return Err(format!(
                    "stuck `{}` is not a duration such as `2h` or `30m`: {error}",
                    self.stuck.as_deref().unwrap_or_default()
                ));
            }
        };
        if self.reference_field.is_some() && self.reference.is_none() {
            return Err("reference_field needs a reference to look for".to_owned());
        }
        Ok(Filter {
            quote_id: self.quote_id.clone(),
            account_id: self.account_id.clone(),
            status: self.status.clone(),
            step: self.step.clone(),
            paused: self.paused,
            reference: self.reference.clone(),
            reference_field: self.reference_field.clone(),
            created_from: self.created_from,
            created_until: self.created_until,
            updated_from: self.updated_from,
            updated_until: self.updated_until,
            stuck_since: stuck,
        })
    }

    /// Whether it asks for paging, which only a list has.
    pub(crate) fn pages(&self) -> bool {
        self.order.is_some() || self.cursor.is_some() || self.limit.is_some()
    }
}

/// The most workflows one page holds.
const MAX_PAGE: i64 = 1000;

/// `GET /api/v1/workflows`: filtered by any of the query's fields, newest
/// first unless `order=oldest`, a page at a time (`next_cursor` goes into
/// the next request's `cursor`).
#[utoipa::path(
    get,
    path = "/api/v1/workflows",
    operation_id = "workflows_list",
    tag = "workflows",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of workflows and the next cursor", body = serde_json::Value),
        (status = 400, description = "An unknown or malformed filter", body = Problem),
        Refusals
    )
)]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return invalid_query(rejection.body_text()),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return invalid_query(format!("limit must be from 1 to {MAX_PAGE}, not {limit}"));
    }
    let order = match query.order.as_deref() {
        None | Some("newest") => Order::Newest,
        Some("oldest") => Order::Oldest,
        Some(other) => {
            return invalid_query(format!("order `{other}` is not `newest` or `oldest`"));
        }
    };
    let cursor = match query.cursor.as_deref().map(str::parse::<Cursor>) {
        None => None,
        Some(Ok(cursor)) => Some(cursor),
        Some(Err(bad)) => return invalid_query(bad.to_string()),
    };
    let filter = match query.filter(Utc::now()) {
        Ok(filter) => filter,
        Err(problem) => return invalid_query(problem),
    };
    match state
        .store
        .list_workflows(&filter, order, cursor, limit)
        .await
    {
        Ok(page) => axum::Json(json!({
            "items": page.items.iter().map(summary).collect::<Vec<_>>(),
            "next_cursor": page.next.map(|cursor| cursor.to_string()),
        }))
        .into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

/// Query parameters of a history page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

/// `GET /api/v1/workflows/{id}/history?after=...&limit=...`: a long
/// history a page at a time, oldest first; `next_after` goes into the next
/// request's `after`.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}/history",
    operation_id = "workflows_history",
    tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id (a UUID)"), HistoryQuery),
    responses(
        (status = 200, description = "A page of the history and the next `after`", body = serde_json::Value),
        (status = 400, description = "Malformed id or query", body = Problem),
        (status = 404, description = "No such workflow", body = Problem),
        Refusals
    )
)]
pub async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return invalid_id(&id);
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => return invalid_query(rejection.body_text()),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return invalid_query(format!("limit must be from 1 to {MAX_PAGE}, not {limit}"));
    }
    match state.store.workflow_exists(id).await {
        Ok(true) => {}
        Ok(false) => return Problem::unknown_workflow(id).into_response(),
        Err(error) => return Problem::internal(&error).into_response(),
    }
    match state.store.history_page(id, query.after, limit).await {
        Ok(page) => axum::Json(json!({
            "items": page.items.iter().map(history_entry).collect::<Vec<_>>(),
            "next_after": page.next,
        }))
        .into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

fn history_entry(entry: &HistoryRow) -> Value {
    json!({
        "id": entry.id,
        "at": entry.at,
        "kind": entry.kind,
        "step": entry.step,
        "command": entry.command,
        "detail": entry.detail,
    })
}

/// The 400 for a path id that is not a workflow id.
fn invalid_id(id: &str) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-id",
        "Invalid workflow id",
        format!("`{id}` is not a UUID"),
    )
    .into_response()
}

fn invalid_query(detail: String) -> Response {
    Problem::invalid_query(detail).into_response()
}

/// `GET /api/v1/workflows/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/workflows/{id}",
    operation_id = "workflows_detail",
    tag = "workflows",
    params(("id" = String, Path, description = "The workflow's id (a UUID)")),
    responses(
        (status = 200, description = "The workflow, its steps, allowed actions and history; the ETag is its version", body = serde_json::Value),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 404, description = "No such workflow", body = Problem),
        Refusals
    )
)]
pub async fn detail(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return invalid_id(&id);
    };
    let loaded = match state.store.load(WorkflowId::new(id)).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return Problem::unknown_workflow(id).into_response(),
        Err(error) => return Problem::internal(&error).into_response(),
    };
    let history = match state.store.history(id).await {
        Ok(history) => history,
        Err(error) => return Problem::internal(&error).into_response(),
    };
    let saga = &loaded.saga;
    let body = json!({
        "id": id,
        "quote_id": saga.quote().quote_id().as_str(),
        "quote_number": saga.quote().quote_number(),
        "account_name": saga.quote().account_name(),
        "status": saga.status().as_str(),
        "outcome": saga.outcome().map(|outcome| outcome.as_str()),
        "definition": saga.definition().name(),
        "definition_hash": saga.definition().hash().as_str(),
        "version": loaded.version,
        "created_at": loaded.created_at,
        "updated_at": loaded.updated_at,
        "attention": saga.attention().map(|attention| json!({
            "step": attention.step, "since": attention.since, "reason": attention.reason,
        })),
        "step": saga.current_step().map(|(step, _)| step),
        "phase": saga.current_step().map(|(_, phase)| match phase {
            Phase::Step => "step",
            Phase::Compensation => "compensation",
        }),
        "paused": saga.paused(),
        "held_events": saga.held().len(),
        "allowed_actions": saga.allowed_actions().iter().map(|action| action.as_str()).collect::<Vec<_>>(),
        "steps": steps(saga),
        "history": history.iter().map(history_entry).collect::<Vec<_>>(),
    });
    let mut response = axum::Json(body).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", loaded.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

fn summary(row: &Summary) -> Value {
    json!({
        "id": row.id,
        "quote_id": row.quote_id,
        "quote_number": row.quote_number,
        "account_id": row.account_id,
        "status": row.status,
        "step": row.current_step,
        "outcome": row.outcome,
        "paused": row.paused,
        "state_since": row.state_since,
        "definition": row.definition_name,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

fn steps(saga: &Saga) -> Vec<Value> {
    saga.steps()
        .iter()
        .map(|step| {
            json!({
                "name": step.name,
                "status": step_status(step.status),
                "revision": step.revision,
                "attempts": step.attempts,
                "last_error": step.last_error,
                "input": step.input,
                "output": step.output,
                "earlier_revisions": step.earlier_revisions,
                "compensation": {
                    "status": compensation_status(step.compensation.status),
                    "attempts": step.compensation.attempts,
                    "last_error": step.compensation.last_error,
                },
            })
        })
        .collect()
}

fn step_status(status: q2c_core::saga::StepStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

fn compensation_status(status: q2c_core::saga::CompensationStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}
