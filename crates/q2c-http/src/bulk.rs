//! `/api/v1/bulk-actions`: one operator action over many workflows.
//!
//! `POST /api/v1/bulk-actions` is the dry run: it answers with exactly the
//! workflows (ids and versions) the action would touch, stored as a job.
//! `POST /api/v1/bulk-actions/{id}/run` acts on exactly that list, at the
//! job's rate, skipping and reporting every workflow that changed since;
//! `GET /api/v1/bulk-actions/{id}` shows the progress, and
//! `POST /api/v1/bulk-actions/{id}/cancel` stops what is left.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use q2c_core::saga::{Action, Earlier, Request};
use q2c_store::bulk::{Job, JobView, Moved, Plan, Planned};
use q2c_store::operators::Operator;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::openapi::Refusals;
use crate::problem::Problem;
use crate::workflows::ListQuery;

/// How large and how fast bulk jobs may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkLimits {
    /// The most workflows one job may touch.
    pub max_workflows: i64,
    /// Workflows per second when the request names no rate.
    pub default_rate: f64,
    /// The fastest rate a request may ask for.
    pub max_rate: f64,
}

impl Default for BulkLimits {
    fn default() -> Self {
        Self {
            max_workflows: 1000,
            default_rate: 5.0,
            max_rate: 100.0,
        }
    }
}

/// The dry run's request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    action: String,
    reason: String,
    filter: Value,
    input: Option<Value>,
    output: Option<Value>,
    /// `resume` with `input`, or `skip`: what became of each workflow's
    /// earlier attempt where it may have taken effect: `undo`, `not_done`
    /// or (`skip` only) `done`. The dry run marks the workflows that need it.
    earlier: Option<String>,
    rate_per_second: Option<f64>,
}

/// `POST /api/v1/bulk-actions`: the dry run. 201 with the job and exactly
/// the workflows it would touch; 422 when the filter matches more than a
/// job may touch; 400 for a malformed request.
#[utoipa::path(
    post,
    path = "/api/v1/bulk-actions",
    operation_id = "bulk_plan",
    tag = "bulk actions",
    request_body = PlanBody,
    responses(
        (status = 201, description = "The dry run: the job and exactly the workflows it would touch", body = serde_json::Value),
        (status = 400, description = "Malformed request", body = Problem),
        (status = 422, description = "The filter matches too many workflows", body = Problem),
        Refusals
    )
)]
pub async fn plan(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let plan = match parse(&state, &caller, &body) {
        Ok(plan) => plan,
        Err(problem) => return bad_request(problem),
    };
    match state.store.plan_bulk(&plan, Utc::now()).await {
        Ok(Planned::Job(job)) => match state.store.bulk_job(job.id).await {
            Ok(Some(view)) => (StatusCode::CREATED, axum::Json(render(&view))).into_response(),
            Ok(None) => {
                Problem::internal(&std::io::Error::other("a planned job vanished")).into_response()
            }
            Err(error) => Problem::internal(&error).into_response(),
        },
        Ok(Planned::TooMany { cap }) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-many-workflows",
            "Too many workflows",
            format!("the filter matches more than {cap} workflows; narrow it down"),
        )
        .with("max_workflows", json!(cap))
        .into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

fn parse(state: &AppState, caller: &Caller, body: &[u8]) -> Result<Plan, String> {
    let body: PlanBody = serde_json::from_slice(body).map_err(|error| {
        format!("the body must be a JSON object with `action`, `reason` and `filter`: {error}")
    })?;
    let action: Action = body.action.parse().map_err(|error| format!("{error}"))?;
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() {
        return Err("`reason` is required: say why, for the audit trail".to_owned());
    }
    let asked: ListQuery = serde_json::from_value(body.filter.clone())
        .map_err(|error| format!("`filter`: {error}"))?;
    if asked.pages() {
        return Err("`filter` takes the list's filters, not `order`, `cursor` or `limit`".into());
    }
    if body.filter.as_object().is_none_or(Map::is_empty) {
        return Err(
            "`filter` must name at least one filter: a bulk action never means \
                    every workflow"
                .to_owned(),
        );
    }
    let filter = asked.filter(Utc::now())?;
    let object = |name: &str, value: Option<Value>| match value {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value)),
        Some(_) => Err(format!("`{name}` must be a JSON object")),
    };
    let (input, output) = (object("input", body.input)?, object("output", body.output)?);
    if input.is_some() && action != Action::Resume {
        return Err("`input` goes with `resume` only".to_owned());
    }
    if output.is_some() && action != Action::Skip {
        return Err("`output` goes with `skip` only".to_owned());
    }
    let earlier = body
        .earlier
        .as_deref()
        .map(|name| {
            name.parse::<Earlier>()
                .map_err(|error| format!("`earlier`: {error}"))
        })
        .transpose()?;
    if earlier.is_some() && !matches!(action, Action::Resume | Action::Skip) {
        return Err("`earlier` goes with `resume` and `skip` only".to_owned());
    }
    let request = match action {
        Action::Resume => Request::Resume {
            input_patch: input,
            earlier,
        },
        Action::Skip => Request::Skip {
            output: output.unwrap_or_else(|| Value::Object(Map::new())),
            earlier,
        },
        Action::Retry => Request::Retry,
        Action::Cancel => Request::Cancel,
        Action::Terminate => Request::Terminate,
        Action::Pause => Request::Pause,
        Action::Unpause => Request::Unpause,
    };
    let limits = state.bulk;
    let rate = body.rate_per_second.unwrap_or(limits.default_rate);
    if !(rate > 0.0 && rate <= limits.max_rate) {
        return Err(format!(
            "`rate_per_second` must be above 0 and at most {}",
            limits.max_rate
        ));
    }
    Ok(Plan {
        request,
        reason,
        filter,
        filter_as_asked: body.filter,
        operator: Operator {
            name: caller.name.clone(),
            role: caller.role.as_str().to_owned(),
        },
        rate_per_second: rate,
        cap: limits.max_workflows,
    })
}

/// `GET /api/v1/bulk-actions/{id}`: the job, its progress by result, and
/// every workflow with what came of it.
#[utoipa::path(
    get,
    path = "/api/v1/bulk-actions/{id}",
    operation_id = "bulk_show",
    tag = "bulk actions",
    params(("id" = i64, Path, description = "The job")),
    responses(
        (status = 200, description = "The job, its progress and every workflow with its result", body = serde_json::Value),
        (status = 404, description = "No such job", body = Problem),
        Refusals
    )
)]
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return unknown(&id);
    };
    match state.store.bulk_job(id).await {
        Ok(Some(view)) => axum::Json(render(&view)).into_response(),
        Ok(None) => unknown(&id.to_string()),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

/// `POST /api/v1/bulk-actions/{id}/run`: 202 once the job runs; 409 unless
/// it was planned.
#[utoipa::path(
    post,
    path = "/api/v1/bulk-actions/{id}/run",
    operation_id = "bulk_run",
    tag = "bulk actions",
    params(("id" = i64, Path, description = "The job")),
    responses(
        (status = 202, description = "Running", body = serde_json::Value),
        (status = 404, description = "No such job", body = Problem),
        (status = 409, description = "Not planned", body = Problem),
        Refusals
    )
)]
pub async fn run(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return unknown(&id);
    };
    moved(
        state.store.start_bulk(id, Utc::now()).await,
        id,
        "run",
        "planned",
    )
}

/// `POST /api/v1/bulk-actions/{id}/cancel`: 200 once cancelled; 409 if it
/// has already ended.
#[utoipa::path(
    post,
    path = "/api/v1/bulk-actions/{id}/cancel",
    operation_id = "bulk_cancel",
    tag = "bulk actions",
    params(("id" = i64, Path, description = "The job")),
    responses(
        (status = 200, description = "Cancelled", body = serde_json::Value),
        (status = 404, description = "No such job", body = Problem),
        (status = 409, description = "Already ended", body = Problem),
        Refusals
    )
)]
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return unknown(&id);
    };
    moved(
        state.store.cancel_bulk(id, Utc::now()).await,
        id,
        "cancel",
        "planned or running",
    )
}

fn moved(result: Result<Moved, q2c_store::Error>, id: i64, what: &str, needs: &str) -> Response {
    match result {
        Ok(Moved::Done(job)) => {
            let status = if what == "run" {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(job_json(&job))).into_response()
        }
        Ok(Moved::Refused(job)) => Problem::new(
            StatusCode::CONFLICT,
            "bulk-job-conflict",
            "Not possible now",
            format!(
                "bulk job {id} is {}; only a job that is {needs} can {what}",
                job.status
            ),
        )
        .with("status", json!(job.status))
        .into_response(),
        Ok(Moved::Unknown) => unknown(&id.to_string()),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

fn unknown(id: &str) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such bulk job",
        format!("no bulk job {id}"),
    )
    .into_response()
}

fn job_json(job: &Job) -> Value {
    json!({
        "id": job.id,
        "action": job.action,
        "reason": job.reason,
        "input": job.input,
        "filter": job.filter,
        "actor": job.actor,
        "role": job.role,
        "status": job.status,
        "rate_per_second": job.rate_per_second,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    })
}

fn render(view: &JobView) -> Value {
    let mut body = job_json(&view.job);
    let mut progress = Map::new();
    for name in [
        "pending",
        "applied",
        "changed",
        "not_allowed",
        "invalid",
        "gone",
    ] {
        progress.insert(name.to_owned(), json!(0));
    }
    for item in &view.items {
        let count = progress.entry(item.result.clone()).or_insert(json!(0));
        *count = json!(count.as_i64().unwrap_or(0) + 1);
    }
    body["total"] = json!(view.items.len());
    body["progress"] = Value::Object(progress);
    body["needing_earlier"] = json!(view.items.iter().filter(|item| item.needs_earlier).count());
    body["items"] = json!(view.items);
    body
}

fn bad_request(detail: String) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-request",
        "Invalid request",
        detail,
    )
    .into_response()
}
