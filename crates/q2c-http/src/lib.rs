//! The HTTP API: where events come in and where anyone can see where each
//! quote stands.
//!
//! # Layout
//!
//! - [`auth`]: named bearer tokens with roles; each `/api/v1` route is
//!   wrapped in [`auth::require`] with the [`auth::Access`] it needs.
//! - [`problem`]: RFC 9457 problem details, the one error shape.
//! - `events`: `POST /api/v1/events`, intake of Salesforce platform events.
//! - `workflows`: `GET /api/v1/workflows` (filters, cursor pages),
//!   `GET /api/v1/workflows/{id}` and its `/history`, page by page.
//! - [`counts`]: `GET /api/v1/workflows/counts`, live workflows by status
//!   and step, counted in the background.
//! - `actions`: `POST /api/v1/workflows/{id}/actions/{action}`, an
//!   operator's repair of one workflow.
//! - `audit`: `GET /api/v1/audit`, every operator action, as JSON or CSV.
//! - `dead_letters`: `/api/v1/dead-letters`, what could not be processed:
//!   list, inspect, replay to the original exchange, discard.
//! - [`bulk`]: `/api/v1/bulk-actions`, one action over many workflows: a
//!   dry run, then a durable job.
//! - `salesforce`: `GET /api/v1/salesforce/subscriptions`, the Pub/Sub
//!   streams' health.
//! - `health`: `/healthz`, `/readyz` and `/metrics`, which need no token.

mod actions;
mod audit;
pub mod auth;
pub mod bulk;
pub mod counts;
mod dead_letters;
mod events;
mod health;
pub mod openapi;
pub mod problem;
mod salesforce;
mod workflows;

use std::net::SocketAddr;
use std::sync::Arc;

use auth::Access;
use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use q2c_core::definition::Definition;
use q2c_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::Tokens;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The workflow that accepted quotes start.
    pub definition: Arc<Definition>,
    /// The tokens `/api/v1` accepts, with their roles.
    pub tokens: Tokens,
    /// The broker, for readiness.
    pub amqp_url: String,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// How large and how fast bulk jobs may be.
    pub bulk: bulk::BulkLimits,
    /// Live workflows by status and step, refreshed in the background.
    pub counts: counts::LiveCounts,
    /// The Salesforce subscriber's streams, when it runs.
    pub salesforce: Option<q2c_subscriber::Subscriptions>,
}

/// The whole API. Every `/api/v1` route goes through [`auth::require`]
/// with the access it needs; a route added without it would need no token.
pub fn router(state: AppState) -> Router {
    let tokens = &state.tokens;
    let api = Router::new()
        .route(
            "/events",
            auth::require(tokens, Access::Ingest, post(events::accept)),
        )
        .route(
            "/workflows",
            auth::require(tokens, Access::Read, get(workflows::list)),
        )
        .route(
            "/workflows/counts",
            auth::require(tokens, Access::Read, get(counts::live)),
        )
        .route(
            "/workflows/{id}",
            auth::require(tokens, Access::Read, get(workflows::detail)),
        )
        .route(
            "/workflows/{id}/history",
            auth::require(tokens, Access::Read, get(workflows::history)),
        )
        .route(
            "/workflows/{id}/actions/{action}",
            auth::require(tokens, Access::Act, post(actions::act)),
        )
        .route(
            "/bulk-actions",
            auth::require(tokens, Access::Admin, post(bulk::plan)),
        )
        .route(
            "/bulk-actions/{id}",
            auth::require(tokens, Access::Admin, get(bulk::show)),
        )
        .route(
            "/bulk-actions/{id}/run",
            auth::require(tokens, Access::Admin, post(bulk::run)),
        )
        .route(
            "/bulk-actions/{id}/cancel",
            auth::require(tokens, Access::Admin, post(bulk::cancel)),
        )
        .route(
            "/audit",
            auth::require(tokens, Access::Admin, get(audit::export)),
        )
        .route(
            "/dead-letters",
            auth::require(tokens, Access::Admin, get(dead_letters::list)),
        )
        .route(
            "/dead-letters/{id}",
            auth::require(tokens, Access::Admin, get(dead_letters::inspect)),
        )
        .route(
            "/dead-letters/{id}/replay",
            auth::require(tokens, Access::Admin, post(dead_letters::replay)),
        )
        .route(
            "/dead-letters/{id}/discard",
            auth::require(tokens, Access::Admin, post(dead_letters::discard)),
        )
        .route(
            "/salesforce/subscriptions",
            auth::require(tokens, Access::Read, get(salesforce::subscriptions)),
        );
    Router::new()
        .nest("/api/v1", api)
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> problem::Problem {
    problem::Problem::new(
        axum::http::StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("nothing at {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> problem::Problem {
    problem::Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Serves only `/metrics`, for processes without the API (a connector),
/// until shutdown.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let rendered = metrics.render();
            async move { ([("content-type", "text/plain; version=0.0.4")], rendered) }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Binds `address` (port 0 picks a free one) and says where it listens.
pub async fn bind(address: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves until shutdown; requests in progress are finished first.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
