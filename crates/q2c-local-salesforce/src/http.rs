//! The HTTP side: Salesforce's OAuth token endpoint, and the developer's
//! console (`/local/...`: publish events, fault switches, status), which
//! needs no token.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::json;

use crate::{Error, Fault, server::Shared};

/// Every route of the HTTP server.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/local/events/{event}", post(publish))
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
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "unknown_fault",
                format!(
                    "no fault {name:?}: expire-tokens, unavailable, stall, duplicate, garble, expire-replay-ids, clear"
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

/// `GET /local/status`.
async fn status(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.status()).into_response()
}

/// A console error: what went wrong, in words a developer can act on.
fn problem(status: StatusCode, error: &str, message: String) -> Response {
    (status, Json(json!({ "error": error, "message": message }))).into_response()
}
