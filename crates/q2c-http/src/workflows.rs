//! Reading workflows: a filtered list, and one workflow with its steps and
//! history.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::{Phase, Saga, Status};
use q2c_store::queries::{Filter, Summary};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::problem::Problem;

/// Query parameters of the list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    quote_id: Option<String>,
    status: Option<String>,
    paused: Option<bool>,
    limit: Option<i64>,
}

/// `GET /api/v1/workflows?quote_id=...&status=...&paused=true`
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    if let Some(status) = &query.status
        && !Status::ALL.iter().any(|known| known.as_str() == status)
    {
        let known: Vec<&str> = Status::ALL.iter().map(|known| known.as_str()).collect();
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "Invalid query",
            format!("status `{status}` is not one of {}", known.join(", ")),
        )
        .into_response();
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let filter = Filter {
        quote_id: query.quote_id,
        status: query.status,
        paused: query.paused,
    };
    match state.store.list_workflows(&filter, limit).await {
        Ok(rows) => axum::Json(json!({"items": rows.iter().map(summary).collect::<Vec<_>>()}))
            .into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

/// `GET /api/v1/workflows/{id}`
pub async fn detail(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-id",
            "Invalid workflow id",
            format!("`{id}` is not a UUID"),
        )
        .into_response();
    };
    let loaded = match state.store.load(WorkflowId::new(id)).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                "No such workflow",
                format!("no workflow {id}"),
            )
            .into_response();
        }
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
        "history": history.iter().map(|entry| json!({
            "at": entry.at,
            "kind": entry.kind,
            "step": entry.step,
            "command": entry.command,
            "detail": entry.detail,
        })).collect::<Vec<_>>(),
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
        "status": row.status,
        "outcome": row.outcome,
        "paused": row.paused,
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
