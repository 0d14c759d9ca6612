//! `/api/v1/dead-letters`: what could not be processed, for an admin to
//! read, replay or discard.
//!
//! A replay publishes the message again, its body byte for byte and its
//! properties as they were kept, to its original exchange and routing key,
//! persistent and `mandatory`, and marks the letter replayed only once the
//! broker has confirmed and routed it. The letter stays locked meanwhile,
//! so two admins cannot replay it at once, and a message that is
//! dead-lettered again re-opens it instead of being lost. Every attempt,
//! whatever came of it, is audited.

use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta, Utc};
use lapin::options::ConfirmSelectOptions;
use lapin::{Connection, ConnectionProperties};
use q2c_contract::properties::{self, Restored};
use q2c_contract::publish;
use q2c_store::dead_letters::{
    Discarded, Filter, Handling, Refusal, Replay, Request, State as LetterState, Stored, Summary,
};
use q2c_store::operators::{AuditEntry, Operator};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::openapi::Refusals;
use crate::problem::Problem;

/// Letters per page unless the query asks for another number.
const DEFAULT_LIMIT: i64 = 100;

/// The most letters one page holds.
const MAX_LIMIT: i64 = 1000;

/// The longest reason kept, as for workflow actions.
const MAX_REASON_CHARS: usize = 2000;

/// How long connecting to the broker may take before a replay gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the broker has to confirm a replayed message.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Query parameters of the list. Unknown ones are refused, so a mistyped
/// filter never silently lists everything.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `open` (the default), `replayed`, `discarded` or `all`.
    state: Option<String>,
    /// A part of the reason, any case.
    reason: Option<String>,
    /// The message type: the routing key.
    #[serde(rename = "type")]
    message_type: Option<String>,
    /// Set aside longer ago than this (`2h`).
    older_than: Option<String>,
    /// Set aside more recently than this (`30m`).
    newer_than: Option<String>,
    received_from: Option<DateTime<Utc>>,
    received_until: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// The body of a replay or a discard, as the API documents it.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ReasonBody {
    /// Why, for the audit trail; required.
    reason: String,
}

/// `GET /api/v1/dead-letters`: open letters unless `state` says otherwise,
/// newest first, a page at a time (`next_cursor` goes into the next
/// request's `cursor`).
#[utoipa::path(
    get,
    path = "/api/v1/dead-letters",
    operation_id = "dead_letters_list",
    tag = "dead letters",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of dead letters and the next cursor", body = serde_json::Value),
        (status = 400, description = "Malformed query", body = Problem),
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
    let letter_state = match query.state.as_deref() {
        None => Some(LetterState::Open),
        Some("all") => None,
        Some(name) => match LetterState::parse(name) {
            Some(known) => Some(known),
            None => {
                return invalid_query(format!(
                    "state `{name}` is not one of open, replayed, discarded, all"
                ));
            }
        },
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return invalid_query(format!("limit must be from 1 to {MAX_LIMIT}, not {limit}"));
    }
    let cursor = match query.cursor.as_deref() {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(id) if id > 0 => Some(id),
            _ => return invalid_query(format!("`{text}` is not a cursor from a previous page")),
        },
    };
    let now = Utc::now();
    let ago = |name: &str, value: &Option<String>| match value.as_deref() {
        None => Ok(None),
        Some(text) => humantime::parse_duration(text)
            .map(|duration| {
                Some(
                    TimeDelta::from_std(duration)
                        .ok()
                        .and_then(|delta| now.checked_sub_signed(delta))
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                )
            })
            .map_err(|error| {
                format!("{name} `{text}` is not a duration such as `2h` or `30m`: {error}")
            }),
    };
    let older_than = match ago("older_than", &query.older_than) {
        Ok(at) => at,
        Err(problem) => return invalid_query(problem),
    };
    let newer_than = match ago("newer_than", &query.newer_than) {
        Ok(at) => at,
        Err(problem) => return invalid_query(problem),
    };
    let filter = Filter {
        state: letter_state,
        reason: query.reason.filter(|reason| !reason.is_empty()),
        routing_key: query.message_type,
        // Both bounds may come twice (as a time and as a duration): the
        // narrower one holds.
        received_from: query.received_from.max(newer_than),
        received_until: match (query.received_until, older_than) {
            (Some(until), Some(older)) => Some(until.min(older)),
            (until, older) => until.or(older),
        },
    };
    match state.store.list_dead_letters(&filter, cursor, limit).await {
        Ok(page) => axum::Json(json!({
            "items": page.items.iter().map(summary).collect::<Vec<_>>(),
            "next_cursor": page.next.map(|id| id.to_string()),
        }))
        .into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

/// `GET /api/v1/dead-letters/{id}`: one letter whole: where it was
/// published, its properties and headers, its body (as JSON when it is,
/// and always as base64), its state and its history.
#[utoipa::path(
    get,
    path = "/api/v1/dead-letters/{id}",
    operation_id = "dead_letters_inspect",
    tag = "dead letters",
    params(("id" = i64, Path, description = "The dead letter")),
    responses(
        (status = 200, description = "The letter whole, with its history", body = serde_json::Value),
        (status = 400, description = "Malformed id", body = Problem),
        (status = 404, description = "No such letter", body = Problem),
        Refusals
    )
)]
pub async fn inspect(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(id) = letter_id(&id) else {
        return invalid_id(&id);
    };
    let letter = match state.store.dead_letter(id).await {
        Ok(Some(letter)) => letter,
        Ok(None) => return unknown_letter(id),
        Err(error) => return Problem::internal(&error).into_response(),
    };
    let history = match state.store.dead_letter_history(id).await {
        Ok(history) => history,
        Err(error) => return Problem::internal(&error).into_response(),
    };
    let mut view = standing(&letter);
    view.insert("headers".into(), letter.letter.headers.clone());
    view.insert("body".into(), body(&letter.letter.body));
    view.insert(
        "history".into(),
        history.iter().map(history_entry).collect::<Value>(),
    );
    axum::Json(Value::Object(view)).into_response()
}

/// `POST /api/v1/dead-letters/{id}/replay` with `{"reason": "…"}`. The
/// answers:
///
/// - 200 with the letter now `replayed` and its `replay_count` (more than
///   1 says it was replayed before: the consumer applies a message id
///   once, so a repeat changes nothing if the first was applied);
/// - 409 `action-not-allowed` for a discarded letter or a Salesforce event;
/// - 502 `replay-failed` when the broker refused it or returned it
///   unroutable (or the exchange is gone), 503 `broker-unavailable` when
///   the broker cannot be reached or did not confirm in time; the letter
///   is unchanged, and the failure audited;
/// - 400 for a malformed request, 404 for an unknown letter.
#[utoipa::path(
    post,
    path = "/api/v1/dead-letters/{id}/replay",
    operation_id = "dead_letters_replay",
    tag = "dead letters",
    params(("id" = i64, Path, description = "The dead letter")),
    request_body = ReasonBody,
    responses(
        (status = 200, description = "Replayed and confirmed by the broker", body = serde_json::Value),
        (status = 400, description = "Malformed request", body = Problem),
        (status = 404, description = "No such letter", body = Problem),
        (status = 409, description = "Discarded, or not a broker message", body = Problem),
        (status = 422, description = "Its kept properties are unreadable", body = Problem),
        (status = 502, description = "The broker refused or could not route it", body = Problem),
        (status = 503, description = "The broker is unreachable", body = Problem),
        Refusals
    )
)]
pub async fn replay(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(id) = letter_id(&id) else {
        return invalid_id(&id);
    };
    let reason = match reason(&body) {
        Ok(reason) => reason,
        Err(problem) => return invalid_request(problem),
    };
    // Run to the end even if the client goes away: a message the broker
    // confirmed must be marked replayed, and every attempt audited.
    let replaying = tokio::spawn(replay_to_end(state, caller, id, reason));
    match replaying.await {
        Ok(response) => response,
        Err(error) => Problem::internal(&error).into_response(),
    }
}

async fn replay_to_end(state: AppState, caller: Caller, id: i64, reason: String) -> Response {
    let operator = operator(&caller);
    let replay = match state.store.begin_replay(id).await {
        Ok(Some(replay)) => replay,
        Ok(None) => return unknown_letter(id),
        Err(error) => return Problem::internal(&error).into_response(),
    };
    let request = Request {
        operator: &operator,
        reason: &reason,
        at: Utc::now(),
    };
    if let Some(refusal) = replay.refusal() {
        let letter = replay.letter().clone();
        return match replay.refused(&request, refusal).await {
            Ok(()) => {
                counted("replay", "not_allowed");
                not_allowed("replay", &letter, refusal)
            }
            Err(error) => Problem::internal(&error).into_response(),
        };
    }
    let restored = match properties::restore(&replay.letter().letter.headers) {
        Ok(restored) => restored,
        Err(unreadable) => {
            let problem = Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "properties-unreadable",
                "Properties unreadable",
                format!("the letter cannot be published again: {unreadable}"),
            );
            return failed(replay, &request, problem).await;
        }
    };
    match publish_again(&state.amqp_url, replay.letter(), &restored).await {
        Ok(()) => {}
        Err(problem) => return failed(replay, &request, problem).await,
    }
    let request = Request {
        at: Utc::now(),
        ..request
    };
    match replay.published(&request).await {
        Ok(letter) => {
            counted("replay", "applied");
            tracing::info!(
                dead_letter_id = id,
                exchange = %letter.letter.exchange,
                routing_key = %letter.letter.routing_key,
                message_id = letter.letter.message_id.as_deref().unwrap_or("-"),
                replay_count = letter.handling.replay_count,
                actor = %caller.name,
                "dead letter replayed"
            );
            let mut answer = standing(&letter);
            answer.insert(
                "properties".into(),
                json!(if restored.complete {
                    "complete"
                } else {
                    "partial"
                }),
            );
            answer.insert("dropped_headers".into(), json!(restored.dropped));
            if letter.handling.replay_count > 1 {
                answer.insert(
                    "note".into(),
                    json!(format!(
                        "replayed {} times: the consumer applies a message id once, so this \
                         replay changes nothing if an earlier one was applied",
                        letter.handling.replay_count
                    )),
                );
            }
            axum::Json(Value::Object(answer)).into_response()
        }
        Err(error) => {
            // The broker has the message but the letter is not marked: a
            // second replay is harmless (the consumer dedupes), so say so.
            tracing::error!(dead_letter_id = id, %error, "replayed, but not marked replayed");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "replay-not-recorded",
                "Replay not recorded",
                "the broker confirmed the message, but the letter could not be marked replayed \
                 (the error is logged); replaying again is harmless: the consumer applies a \
                 message id once",
            )
            .into_response()
        }
    }
}

/// Publishing failed: the attempt is audited, the letter unchanged.
async fn failed(replay: Replay, request: &Request<'_>, problem: Problem) -> Response {
    tracing::warn!(
        dead_letter_id = replay.letter().id,
        detail = %problem.detail,
        "dead letter not replayed"
    );
    match replay.failed(request, &problem.detail).await {
        Ok(()) => {
            counted("replay", "failed");
            problem.into_response()
        }
        Err(error) => Problem::internal(&error).into_response(),
    }
}

/// Publishes the letter to its original exchange and routing key, on a
/// connection of its own (replays are rare; a shared one would have to
/// survive broker restarts between them).
async fn publish_again(
    amqp_url: &str,
    letter: &Stored,
    restored: &Restored,
) -> Result<(), Problem> {
    let unavailable = |detail: String| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker-unavailable",
            "Broker unavailable",
            detail,
        )
    };
    let connecting = Connection::connect(amqp_url, ConnectionProperties::default());
    let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => return Err(unavailable(format!("cannot reach the broker: {error}"))),
        Err(_) => {
            return Err(unavailable(format!(
                "cannot reach the broker within {CONNECT_TIMEOUT:?}"
            )));
        }
    };
    let published = async {
        let channel = connection
            .create_channel()
            .await
            .map_err(|error| unavailable(format!("cannot open a channel: {error}")))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| unavailable(format!("cannot enable publisher confirms: {error}")))?;
        // The contract asks for persistent messages; a replay is one too.
        let properties = restored.properties.clone().with_delivery_mode(2);
        publish::confirmed(
            &channel,
            &letter.letter.exchange,
            &letter.letter.routing_key,
            &letter.letter.body,
            properties,
            CONFIRM_TIMEOUT,
        )
        .await
        .map_err(|error| publish_problem(&error, letter))
    }
    .await;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        connection.close(200, "replayed".into()),
    )
    .await;
    published
}

fn publish_problem(error: &publish::Error, letter: &Stored) -> Problem {
    let target = format!(
        "exchange `{}` with routing key `{}`",
        letter.letter.exchange, letter.letter.routing_key
    );
    match error {
        publish::Error::ConfirmTimeout(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker-unavailable",
            "Broker unavailable",
            format!(
                "publishing to {target}: {error}; it may have been taken, and replaying again is \
                 safe (the consumer applies a message id once)"
            ),
        ),
        publish::Error::Returned { .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "replay-failed",
            "Replay failed",
            format!("publishing to {target}: {error}: no queue is bound for it"),
        )
        .with("cause", json!("unroutable")),
        publish::Error::Refused => Problem::new(
            StatusCode::BAD_GATEWAY,
            "replay-failed",
            "Replay failed",
            format!("publishing to {target}: {error}"),
        )
        .with("cause", json!("refused")),
        publish::Error::Broker { .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "replay-failed",
            "Replay failed",
            format!("publishing to {target}: {error}"),
        )
        .with("cause", json!("broker_error")),
    }
}

/// `POST /api/v1/dead-letters/{id}/discard` with `{"reason": "…"}`: 200
/// with the letter now `discarded` (kept, and audited); 409
/// `action-not-allowed` when it is already discarded or was replayed; 400
/// for a malformed request, 404 for an unknown letter.
#[utoipa::path(
    post,
    path = "/api/v1/dead-letters/{id}/discard",
    operation_id = "dead_letters_discard",
    tag = "dead letters",
    params(("id" = i64, Path, description = "The dead letter")),
    request_body = ReasonBody,
    responses(
        (status = 200, description = "Discarded (kept, audited)", body = serde_json::Value),
        (status = 400, description = "Malformed request", body = Problem),
        (status = 404, description = "No such letter", body = Problem),
        (status = 409, description = "Already discarded or replayed", body = Problem),
        Refusals
    )
)]
pub async fn discard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(id) = letter_id(&id) else {
        return invalid_id(&id);
    };
    let reason = match reason(&body) {
        Ok(reason) => reason,
        Err(problem) => return invalid_request(problem),
    };
    let operator = operator(&caller);
    let request = Request {
        operator: &operator,
        reason: &reason,
        at: Utc::now(),
    };
    match state.store.discard_dead_letter(id, &request).await {
        Ok(Some(Discarded::Applied { letter, .. })) => {
            counted("discard", "applied");
            tracing::info!(dead_letter_id = id, actor = %caller.name, "dead letter discarded");
            axum::Json(Value::Object(standing(&letter))).into_response()
        }
        Ok(Some(Discarded::NotAllowed { letter, refusal })) => {
            counted("discard", "not_allowed");
            not_allowed("discard", &letter, refusal)
        }
        Ok(None) => unknown_letter(id),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

fn counted(action: &'static str, result: &'static str) {
    metrics::counter!(
        "q2c_dead_letter_actions_total",
        "action" => action,
        "result" => result,
    )
    .increment(1);
}

fn operator(caller: &Caller) -> Operator {
    Operator {
        name: caller.name.clone(),
        role: caller.role.as_str().to_owned(),
    }
}

/// The reason of an action's body: `{"reason": "…"}` and nothing else.
fn reason(bytes: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ActionBody {
        reason: Option<Value>,
    }
    let body: ActionBody = serde_json::from_slice(bytes).map_err(|error| {
        format!("the body must be a JSON object with a `reason` and nothing else: {error}")
    })?;
    let reason = match body.reason {
        Some(Value::String(reason)) if !reason.trim().is_empty() => reason.trim().to_owned(),
        Some(Value::String(_) | Value::Null) | None => {
            return Err("`reason` is required: say why, for the audit trail".to_owned());
        }
        Some(_) => return Err("`reason` must be a string".to_owned()),
    };
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(format!(
            "`reason` is longer than {MAX_REASON_CHARS} characters"
        ));
    }
    Ok(reason)
}

/// A path id, if it can be a letter's.
fn letter_id(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().filter(|id| *id > 0)
}

/// The 400 for a path id that cannot be a letter's.
fn invalid_id(text: &str) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-id",
        "Invalid dead letter id",
        format!("`{text}` is not a dead letter id"),
    )
    .into_response()
}

fn unknown_letter(id: i64) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "No such dead letter",
        format!("no dead letter {id}"),
    )
    .into_response()
}

fn not_allowed(action: &str, letter: &Stored, refusal: Refusal) -> Response {
    Problem::new(
        StatusCode::CONFLICT,
        "action-not-allowed",
        "Action not allowed",
        format!("cannot {action}: {}", refusal.detail(letter)),
    )
    .with("refusal", json!(refusal.as_str()))
    .with("state", json!(letter.handling.state().as_str()))
    .with("replay_count", json!(letter.handling.replay_count))
    .into_response()
}

fn invalid_query(detail: String) -> Response {
    Problem::invalid_query(detail).into_response()
}

fn invalid_request(detail: String) -> Response {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-request",
        "Invalid request",
        detail,
    )
    .into_response()
}

/// Whether a letter can be replayed where it stands.
fn replayable(from_broker: bool, handling: &Handling) -> bool {
    from_broker && handling.state() != LetterState::Discarded
}

/// What operators did with a letter, as every answer shows it.
fn handled(members: &mut Map<String, Value>, handling: &Handling) {
    members.insert("state".into(), json!(handling.state().as_str()));
    members.insert("replay_count".into(), json!(handling.replay_count));
    members.insert("replayed_at".into(), json!(handling.replayed_at));
    members.insert("replayed_by".into(), json!(handling.replayed_by));
    members.insert("returned_at".into(), json!(handling.returned_at));
    members.insert("discarded_at".into(), json!(handling.discarded_at));
    members.insert("discarded_by".into(), json!(handling.discarded_by));
    members.insert("discard_reason".into(), json!(handling.discard_reason));
}

/// One line of the list.
fn summary(letter: &Summary) -> Value {
    let mut members = Map::new();
    members.insert("id".into(), json!(letter.id));
    members.insert("received_at".into(), json!(letter.received_at));
    members.insert("message_id".into(), json!(letter.message_id));
    members.insert("type".into(), json!(letter.routing_key));
    members.insert("exchange".into(), json!(letter.exchange));
    members.insert("routing_key".into(), json!(letter.routing_key));
    members.insert("reason".into(), json!(letter.reason));
    members.insert("size".into(), json!(letter.size));
    handled(&mut members, &letter.handling);
    members.insert(
        "replayable".into(),
        json!(replayable(letter.from_broker(), &letter.handling)),
    );
    Value::Object(members)
}

/// A whole letter's standing, without headers, body and history.
fn standing(letter: &Stored) -> Map<String, Value> {
    let mut members = Map::new();
    members.insert("id".into(), json!(letter.id));
    members.insert("received_at".into(), json!(letter.received_at));
    members.insert("message_id".into(), json!(letter.letter.message_id));
    members.insert("type".into(), json!(letter.letter.routing_key));
    members.insert("exchange".into(), json!(letter.letter.exchange));
    members.insert("routing_key".into(), json!(letter.letter.routing_key));
    members.insert("reason".into(), json!(letter.letter.reason));
    members.insert("size".into(), json!(letter.letter.body.len()));
    handled(&mut members, &letter.handling);
    members.insert(
        "replayable".into(),
        json!(replayable(letter.letter.from_broker(), &letter.handling)),
    );
    members
}

/// The body three ways: parsed when it is JSON, as text when it is UTF-8,
/// and always as base64, so nothing is lost whatever it holds.
fn body(bytes: &[u8]) -> Value {
    json!({
        "size": bytes.len(),
        "json": serde_json::from_slice::<Value>(bytes).ok(),
        "text": std::str::from_utf8(bytes).ok(),
        "base64": STANDARD.encode(bytes),
    })
}

fn history_entry(entry: &AuditEntry) -> Value {
    json!({
        "audit_id": entry.id,
        "at": entry.at,
        "action": entry.action,
        "actor": entry.actor,
        "role": entry.role,
        "reason": entry.reason,
        "result": entry.result,
        "detail": entry.detail,
        "state_before": entry.state_before,
        "state_after": entry.state_after,
    })
}
