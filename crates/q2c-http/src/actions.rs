//! `POST /api/v1/workflows/{id}/actions/{action}`: an operator repairs one
//! workflow.
//!
//! The body names why (`reason`, required) and, for `resume`, an optional
//! JSON merge patch to the halted step's input (`input`), for `skip`, the
//! step's output (`output`). `If-Match` with the version the operator saw
//! makes the action conditional; `Idempotency-Key` makes a retried request
//! safe. Every answer but a 4xx about the request itself is audited.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::{Action, Earlier, Request};
use q2c_store::idempotency::Key;
use q2c_store::operators::{ActionRequest, Answer, Operator, Outcome, Snapshot, names};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::openapi::Refusals;
use crate::problem::Problem;

/// The longest reason kept.
const MAX_REASON_CHARS: usize = 2000;

/// The longest idempotency key accepted.
const MAX_KEY_CHARS: usize = 255;

/// The answers:
///
/// - 200 with where the workflow now stands (and its new `ETag`);
/// - 409 `action-not-allowed` with `status`, `step`, `paused`, `version`
///   and `allowed_actions`;
/// - 412 `precondition-failed` when `If-Match` names an older version;
/// - 422 `invalid-action` when the workflow refuses what the action carries
///   (an output that does not match the definition, say), and
///   `idempotency-key-reused` when the key came with another request;
/// - 400 for a malformed request, 404 for an unknown workflow or action.
///
/// A retried request with the same `Idempotency-Key` gets the first answer,
/// marked `Idempotent-Replayed: true`.
#[utoipa::path(
    post,
    path = "/api/v1/workflows/{id}/actions/{action}",
    operation_id = "actions_act",
    tag = "operators",
    params(("id" = String, Path, description = "The workflow's id (a UUID)"), ("action" = String, Path, description = "resume, retry, skip, cancel, terminate, pause or unpause"), ("If-Match" = Option<String>, Header, description = "The version the request is based on"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request safe for 24 hours")),
    request_body = ActionRequestBody,
    responses(
        (status = 200, description = "Applied: where the workflow now stands", body = serde_json::Value),
        (status = 400, description = "Malformed request", body = Problem),
        (status = 404, description = "No such workflow or action", body = Problem),
        (status = 409, description = "Not allowed now: status, step and allowed_actions", body = Problem),
        (status = 412, description = "If-Match names an older version", body = Problem),
        (status = 422, description = "Refused content, or an Idempotency-Key reused for another request", body = Problem),
        Refusals
    )
)]
pub async fn act(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return bad_request("invalid-id", format!("`{id}` is not a UUID"));
    };
    let action = match action.parse::<Action>() {
        Ok(action) => action,
        Err(unknown) => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-action",
                "No such action",
                unknown.to_string(),
            )
            .into_response();
        }
    };
    let body = match ActionBody::parse(action, &body) {
        Ok(body) => body,
        Err(problem) => return bad_request("invalid-request", problem),
    };
    let expected_version = match if_match(&headers) {
        Ok(version) => version,
        Err(problem) => return bad_request("invalid-request", problem),
    };
    let route = format!("/api/v1/workflows/{id}/actions/{action}");
    let key = match idempotency_key(&headers) {
        Ok(key) => key.map(|key| {
            let request = json!({"body": body.canonical, "if_match": expected_version});
            Key::new(&caller.name, &route, key, request.to_string().as_bytes())
        }),
        Err(problem) => return bad_request("invalid-request", problem),
    };
    let request = ActionRequest {
        workflow_id: WorkflowId::new(id),
        request: body.request,
        reason: body.reason,
        expected_version,
        operator: Operator {
            name: caller.name.clone(),
            role: caller.role.as_str().to_owned(),
        },
        bulk_job: None,
    };
    let answer = state
        .store
        .act(
            &request,
            key.as_ref(),
            |outcome| render(id, action, outcome),
            chrono::Utc::now(),
        )
        .await;
    match answer {
        Ok(Answer::Now {
            outcome,
            status,
            body,
        }) => {
            metrics::counter!(
                "q2c_operator_actions_total",
                "action" => action.as_str(),
                "result" => outcome.result_name(),
            )
            .increment(1);
            if let Outcome::Applied {
                after,
                finished: true,
                ..
            } = outcome.as_ref()
            {
                metrics::counter!("q2c_workflows_finished_total", "outcome" => after.status.clone())
                    .increment(1);
            }
            tracing::info!(
                workflow_id = %id,
                action = action.as_str(),
                actor = %caller.name,
                role = caller.role.as_str(),
                result = outcome.result_name(),
                "operator action"
            );
            respond(status, body, false)
        }
        Ok(Answer::Replayed { status, body }) => respond(status, body, true),
        Ok(Answer::KeyReused) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different request in the last 24 hours; \
             use a new key for a new request",
        )
        .into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

/// The body of an action, as the API documents it; [`ActionBody::parse`]
/// is what reads it.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ActionRequestBody {
    /// Why, for the audit trail; required.
    reason: String,
    /// `resume` only: a JSON merge patch to the halted step's input.
    input: Option<Value>,
    /// `skip` only: the step's output, checked against the definition.
    output: Option<Value>,
    /// `resume` with `input`, and `skip`: what became of the halted step's
    /// attempt that may have taken effect (one went unanswered): `undo`
    /// (its compensation is sent first), `not_done`, or (`skip` only)
    /// `done` (it is the step's result). Required exactly then.
    earlier: Option<String>,
}

/// A checked request body.
struct ActionBody {
    request: Request,
    reason: String,
    /// The body as parsed, for the idempotency digest: the same request
    /// with other whitespace or member order is the same request.
    canonical: Value,
}

impl ActionBody {
    fn parse(action: Action, bytes: &[u8]) -> Result<Self, String> {
        let canonical: Value = serde_json::from_slice(bytes)
            .map_err(|error| format!("the body must be a JSON object with a `reason`: {error}"))?;
        let Value::Object(members) = &canonical else {
            return Err("the body must be a JSON object with a `reason`".to_owned());
        };
        let allowed: &[&str] = match action {
            Action::Resume => &["reason", "input", "earlier"],
            Action::Skip => &["reason", "output", "earlier"],
            _ => &["reason"],
        };
        if let Some(unknown) = members
            .keys()
            .find(|name| !allowed.contains(&name.as_str()))
        {
            return Err(format!(
                "`{unknown}` is not a member of a `{action}` request; it takes {}",
                allowed
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let reason = match members.get("reason") {
            Some(Value::String(reason)) if !reason.trim().is_empty() => reason.trim().to_owned(),
            Some(Value::String(_)) | None => {
                return Err("`reason` is required: say why, for the audit trail".to_owned());
            }
            Some(_) => return Err("`reason` must be a string".to_owned()),
        };
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(format!(
                "`reason` is longer than {MAX_REASON_CHARS} characters"
            ));
        }
        let object = |name: &str| match members.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value @ Value::Object(_)) => Ok(Some(value.clone())),
            Some(_) => Err(format!("`{name}` must be a JSON object")),
        };
        let earlier = match members.get("earlier") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(
                name.parse::<Earlier>()
                    .map_err(|error| format!("`earlier`: {error}"))?,
            ),
            Some(_) => {
                return Err("`earlier` must be a string: `undo`, `not_done` or `done`".to_owned());
            }
        };
        let request = match action {
            Action::Resume => Request::Resume {
                input_patch: object("input")?,
                earlier,
            },
            Action::Skip => Request::Skip {
                output: object("output")?.unwrap_or_else(|| Value::Object(Map::new())),
                earlier,
            },
            Action::Retry => Request::Retry,
            Action::Cancel => Request::Cancel,
            Action::Terminate => Request::Terminate,
            Action::Pause => Request::Pause,
            Action::Unpause => Request::Unpause,
        };
        Ok(Self {
            request,
            reason,
            canonical: canonical.clone(),
        })
    }
}

/// The version in `If-Match` (`"7"`, `W/"7"`, or `7`); `*` asks for no
/// check.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, String> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "If-Match must be visible ASCII".to_owned())?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let tag = tag
        .strip_prefix('"')
        .and_then(|tag| tag.strip_suffix('"'))
        .unwrap_or(tag);
    tag.parse::<i64>().map(Some).map_err(|_| {
        format!(
            "If-Match `{text}` is not a workflow version (the ETag of GET /api/v1/workflows/{{id}})"
        )
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, String> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| "Idempotency-Key must be visible ASCII".to_owned())?
        .trim();
    if key.is_empty() || key.len() > MAX_KEY_CHARS {
        return Err(format!(
            "Idempotency-Key must have 1 to {MAX_KEY_CHARS} characters"
        ));
    }
    Ok(Some(key))
}

/// The answer to an outcome, as it is stored for an idempotency key.
fn render(id: Uuid, action: Action, outcome: &Outcome) -> (u16, Value) {
    let problem = match outcome {
        Outcome::Applied { after, .. } => {
            let mut body = standing(after);
            body.insert("workflow_id".into(), json!(id));
            body.insert("action".into(), json!(action.as_str()));
            body.insert("result".into(), json!("applied"));
            return (200, Value::Object(body));
        }
        Outcome::NotAllowed { current, allowed } => {
            let mut problem = Problem::new(
                StatusCode::CONFLICT,
                "action-not-allowed",
                "Action not allowed",
                format!(
                    "`{action}` is not allowed while the workflow is {}{}{}; allowed: {}",
                    current.status,
                    current
                        .step
                        .as_ref()
                        .map(|step| format!(" at `{step}`"))
                        .unwrap_or_default(),
                    if current.paused { " and paused" } else { "" },
                    names(allowed)
                ),
            );
            for (name, value) in standing(current) {
                problem = problem.with(&name, value);
            }
            problem.with(
                "allowed_actions",
                json!(allowed.iter().map(|a| a.as_str()).collect::<Vec<_>>()),
            )
        }
        Outcome::StaleVersion { current, expected } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "Workflow changed",
            format!(
                "the request was based on version {expected}, but the workflow is at version {}; \
                 read it again and decide anew",
                current.version
            ),
        )
        .with("version", json!(current.version))
        .with("status", json!(current.status)),
        Outcome::Invalid { reason, current } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-action",
            "Action refused",
            reason.clone(),
        )
        .with("status", json!(current.status))
        .with("step", json!(current.step)),
        Outcome::UnknownWorkflow => Problem::unknown_workflow(id),
    };
    let status = problem.status;
    (
        status,
        serde_json::to_value(&problem).unwrap_or(Value::Null),
    )
}

/// Where a workflow stands, as answers show it.
fn standing(snapshot: &Snapshot) -> Map<String, Value> {
    let mut members = Map::new();
    members.insert("status".into(), json!(snapshot.status));
    members.insert("step".into(), json!(snapshot.step));
    members.insert("phase".into(), json!(snapshot.phase));
    members.insert("paused".into(), json!(snapshot.paused));
    members.insert("version".into(), json!(snapshot.version));
    members.insert("outcome".into(), json!(snapshot.outcome));
    members
}

fn respond(status: u16, body: Value, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let version = body.get("version").and_then(Value::as_i64);
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if !status.is_success() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
    } else if let Some(etag) = version.and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok())
    {
        headers.insert(header::ETAG, etag);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn bad_request(slug: &str, detail: impl Into<String>) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, slug, "Invalid request", detail).into_response()
}
