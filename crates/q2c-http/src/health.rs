//! Liveness, readiness and metrics: for orchestrators and monitoring, so
//! none of them needs a token.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lapin::{Connection, ConnectionProperties};
use serde_json::json;

use crate::AppState;

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health_healthz",
    tag = "health",
    responses(
        (status = 200, description = "The process is alive", body = serde_json::Value)
    ),
    security(())
)]
pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

/// Postgres and RabbitMQ are reachable: 200, else 503 saying which is not.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "health_readyz",
    tag = "health",
    responses(
        (status = 200, description = "Postgres and RabbitMQ answer", body = serde_json::Value),
        (status = 503, description = "A dependency does not answer", body = serde_json::Value)
    ),
    security(())
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let postgres = sqlx::query("SELECT 1").execute(state.store.pool());
    let postgres = tokio::time::timeout(Duration::from_secs(2), postgres)
        .await
        .map(|result| result.is_ok())
        .unwrap_or(false);
    let connecting = Connection::connect(&state.amqp_url, ConnectionProperties::default());
    let rabbitmq = match tokio::time::timeout(Duration::from_secs(2), connecting).await {
        Ok(Ok(connection)) => {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                connection.close(200, "readiness check".into()),
            )
            .await;
            true
        }
        _ => false,
    };
    let status = if postgres && rabbitmq {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    (
        status,
        axum::Json(json!({"postgres": word(postgres), "rabbitmq": word(rabbitmq)})),
    )
        .into_response()
}

/// Prometheus text format. The outbox gauges are read at scrape time, so
/// they are exact whichever process is scraped.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "health_metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus metrics", body = String, content_type = "text/plain")
    ),
    security(())
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(backlog) = state.store.outbox_backlog().await {
        metrics::gauge!("q2c_outbox_backlog").set(backlog.unsent as f64);
        let age = backlog
            .oldest
            .map(|oldest| (chrono::Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("q2c_outbox_oldest_age_seconds").set(age);
    }
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
