//! The HTTP side: Salesforce's OAuth token endpoint, its REST API (in
//! `rest`), and the developer's console (`/local/...`: publish events,
//! create and read records, fault switches, limits, status), which needs
//! no token.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use serde::Deserialize;
use serde_json::json;

use crate::{Error, Fault, rest, server::Shared, sobjects};

/// Every route of the HTTP server.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/data", any(rest::handle))
        .route("/services/data/", any(rest::handle))
        .route("/services/data/{*path}", any(rest::handle))
        .route("/local/events/{event}", post(publish))
        .route("/local/records/{object}", post(create_record))
        .route("/local/records/{object}/{id}", get(record))
        .route("/local/published/{event}", get(published))
        .route("/local/limits", post(limits))
        .route("/local/faults/{fault}", post(fault))
        .route("/local/status", get(status))
        .with_state(shared)
}

/// `POST /services/oauth2/token`: the client-credentials and JWT bearer
/// flows, answered as Salesforce answers them.
async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if let Err(refused) = shared.authority.check(&form) {
        tracing::info!(error = refused.error, description = %refused.description, "token refused");
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": refused.error,
                "error_description": refused.description,
            })),
        )
            .into_response();
    }
    let access_token = shared.tokens.issue(&shared.org_id, shared.token_ttl);
    let issued_at = chrono::Utc::now().timestamp_millis().to_string();
    Json(json!({
        "access_token": access_token,
        "instance_url": shared.instance_url,
        "id": format!("{}/id/{}/{}", shared.instance_url, shared.org_id, shared.user_id),
        "token_type": "Bearer",
        "issued_at": issued_at,
        "scope": "api",
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PublishQuery {
    id: Option<String>,
}

/// `POST /local/events/{event}?id=<uuid>`: publishes an event given as a
/// JSON object of its fields.
async fn publish(
    State(shared): State<Arc<Shared>>,
    Path(event): Path<String>,
    Query(query): Query<PublishQuery>,
    body: Bytes,
) -> Response {
    let fields = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(fields) => fields,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    match shared.publish_fields(&event, &fields, query.id.as_deref()) {
        Ok(published) => (StatusCode::CREATED, Json(published)).into_response(),
        Err(e @ Error::UnknownEvent(_)) => {
            problem(StatusCode::NOT_FOUND, "unknown_event", e.to_string())
        }
        Err(e) => problem(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()),
    }
}

#[derive(Deserialize)]
struct Count {
    #[serde(default)]
    count: u32,
}

#[derive(Deserialize)]
struct Switch {
    on: bool,
}

#[derive(Deserialize)]
struct ValidationSwitch {
    object: String,
    #[serde(default)]
    message: String,
    on: bool,
}

/// `POST /local/faults/{fault}`: turns a fault switch and answers the
/// status after it.
async fn fault(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    // An empty body reads as `{}`, so switches without settings need none.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    let parsed = match name.as_str() {
        "expire-tokens" => Ok(Fault::ExpireTokens),
        "expire-replay-ids" => Ok(Fault::ExpireReplayIds),
        "clear" => Ok(Fault::Clear),
        "unavailable" => serde_json::from_slice::<Count>(body)
            .map(|Count { count }| Fault::Unavailable { count }),
        "stall" => serde_json::from_slice::<Switch>(body).map(|Switch { on }| Fault::Stall { on }),
        "duplicate" => {
            serde_json::from_slice::<Switch>(body).map(|Switch { on }| Fault::Duplicate { on })
        }
        "garble" => {
            serde_json::from_slice::<Switch>(body).map(|Switch { on }| Fault::Garble { on })
        }
        "rest-unavailable" => serde_json::from_slice::<Count>(body)
            .map(|Count { count }| Fault::RestUnavailable { count }),
        "rest-down" => {
            serde_json::from_slice::<Switch>(body).map(|Switch { on }| Fault::RestDown { on })
        }
        "lock-row" => {
            serde_json::from_slice::<Count>(body).map(|Count { count }| Fault::LockRow { count })
        }
        "validation" => match serde_json::from_slice::<ValidationSwitch>(body) {
            Ok(switch) if sobjects::find(&switch.object).is_none_or(|o| o.is_event()) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "unknown_object",
                    format!(
                        "no object {:?} to refuse writes to: {}",
                        switch.object,
                        sobjects::object_names().join(", ")
                    ),
                );
            }
            parsed => parsed.map(|switch| Fault::Validation {
                object: switch.object,
                message: switch.message,
                on: switch.on,
            }),
        },
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "unknown_fault",
                format!(
                    "no fault {name:?}: expire-tokens, unavailable, stall, duplicate, garble, expire-replay-ids, rest-unavailable, rest-down, lock-row, validation, clear"
                ),
            );
        }
    };
    match parsed {
        Ok(fault) => {
            shared.apply(fault);
            Json(shared.status()).into_response()
        }
        Err(e) => problem(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()),
    }
}

/// `POST /local/records/{object}`: creates a record from a JSON object of
/// its fields (with an optional `Id`) and answers `{"id"}`.
async fn create_record(
    State(shared): State<Arc<Shared>>,
    Path(object): Path<String>,
    body: Bytes,
) -> Response {
    let fields = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(fields) => fields,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()),
    };
    match shared.create_record(&object, &fields) {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(e @ Error::UnknownObject(_)) => {
            problem(StatusCode::NOT_FOUND, "unknown_object", e.to_string())
        }
        Err(e @ Error::RecordExists { .. }) => {
            problem(StatusCode::CONFLICT, "record_exists", e.to_string())
        }
        Err(e) => problem(StatusCode::BAD_REQUEST, "invalid_record", e.to_string()),
    }
}

/// `GET /local/records/{object}/{id}`: a record as the REST API shows it.
async fn record(
    State(shared): State<Arc<Shared>>,
    Path((object, id)): Path<(String, String)>,
) -> Response {
    match shared.record(&object, &id) {
        Some(record) => Json(record).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "no_record",
            format!("no {object} record {id}"),
        ),
    }
}

/// `GET /local/published/{event}`: the platform events published over
/// REST, oldest first.
async fn published(State(shared): State<Arc<Shared>>, Path(event): Path<String>) -> Response {
    match shared.published(&event) {
        Some(events) => Json(events).into_response(),
        None => problem(
            StatusCode::NOT_FOUND,
            "unknown_event",
            format!(
                "no platform event {event:?} is published over REST (known: Q2C_Order_Status__e)"
            ),
        ),
    }
}

#[derive(Deserialize)]
struct Limits {
    used: Option<u64>,
    max: Option<u64>,
}

/// `POST /local/limits` `{"used": n, "max": m}` (either optional): sets the
/// daily API budget and answers it.
async fn limits(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    match serde_json::from_slice::<Limits>(body) {
        Ok(Limits { used, max }) => {
            let usage = shared.budget.set(used, max);
            tracing::info!(used = usage.used, max = usage.max, "API limits set");
            Json(json!({ "used": usage.used, "max": usage.max })).into_response()
        }
        Err(e) => problem(StatusCode::BAD_REQUEST, "invalid_body", e.to_string()),
    }
}

/// `GET /local/status`.
async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.status()).into_response()
}

/// A console error: what went wrong, in words a developer can act on.
fn problem(status: StatusCode, error: &str, message: String) -> Response {
    (status, Json(json!({ "error": error, "message": message }))).into_response()
}
