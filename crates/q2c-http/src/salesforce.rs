//! `GET /api/v1/salesforce/subscriptions`: whether q2c is hearing from
//! Salesforce, per topic: stream state, events received, lag, reconnects by
//! cause, and how old the stored position is.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;

/// Every topic's status; `enabled: false` when no subscriber is configured.
pub async fn subscriptions(State(state): State<AppState>) -> Json<Value> {
    Json(match &state.salesforce {
        Some(subscriptions) => json!({
            "enabled": true,
            "subscriptions": subscriptions.snapshot(),
        }),
        None => json!({"enabled": false, "subscriptions": []}),
    })
}
