//! `GET /api/v1/salesforce/subscriptions`: whether q2c is hearing from
//! Salesforce, per topic: stream state, events received, lag, reconnects by
//! cause, and how old the stored position is.

use crate::openapi::Refusals;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;

/// Every topic's status; `enabled: false` when no subscriber is configured.
#[utoipa::path(
    get,
    path = "/api/v1/salesforce/subscriptions",
    operation_id = "salesforce_subscriptions",
    tag = "salesforce",
    responses(
        (status = 200, description = "The Salesforce streams' state", body = serde_json::Value),
        Refusals
    )
)]
pub async fn subscriptions(State(state): State<AppState>) -> Json<Value> {
    Json(match &state.salesforce {
        Some(subscriptions) => json!({
            "enabled": true,
            "subscriptions": subscriptions.snapshot(),
        }),
        None => json!({"enabled": false, "subscriptions": []}),
    })
}
