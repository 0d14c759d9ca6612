//! Live workflows counted by status and step, for dashboards and
//! `GET /api/v1/workflows/counts`.
//!
//! Counting on every request would read the table under load, and keeping
//! counters in every transition would make all transitions contend for the
//! same rows. Instead one task counts from the index on live workflows every
//! so often; the answer says how old the counts are.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use q2c_store::Store;
use q2c_store::queries::Count;
use serde_json::json;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::openapi::Refusals;
use crate::problem::Problem;

/// The latest counts; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct LiveCounts {
    latest: Arc<RwLock<Option<Snapshot>>>,
}

#[derive(Debug, Clone)]
struct Snapshot {
    at: DateTime<Utc>,
    counts: Vec<Count>,
    /// The (status, step) gauges set so far, to zero the ones that emptied.
    labels: BTreeSet<(String, String)>,
}

impl LiveCounts {
    /// Counts again now, and publishes the counts as the
    /// `q2c_workflows_live{status, step}` gauges.
    pub async fn refresh(&self, store: &Store) -> Result<(), q2c_store::Error> {
        let counts = store.live_counts().await?;
        let mut latest = self.latest.write().await;
        let mut labels = BTreeSet::new();
        for count in &counts {
            let key = (count.status.clone(), count.step.clone().unwrap_or_default());
            metrics::gauge!("q2c_workflows_live", "status" => key.0.clone(), "step" => key.1.clone())
                .set(count.count as f64);
            labels.insert(key);
        }
        if let Some(previous) = latest.as_ref() {
            for (status, step) in previous.labels.difference(&labels) {
                metrics::gauge!("q2c_workflows_live", "status" => status.clone(), "step" => step.clone())
                    .set(0.0);
            }
        }
        *latest = Some(Snapshot {
            at: Utc::now(),
            counts,
            labels,
        });
        Ok(())
    }

    /// Refreshes every `every` until shutdown; a failed count is logged and
    /// the previous one kept (its age shows it).
    pub async fn refresh_every(self, store: Store, every: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.refresh(&store).await {
                tracing::warn!(%error, "counting live workflows failed; the last counts stay");
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// `GET /api/v1/workflows/counts`: live workflows by status and step, with
/// when they were counted and how long ago.
#[utoipa::path(
    get,
    path = "/api/v1/workflows/counts",
    operation_id = "counts_live",
    tag = "workflows",
    responses(
        (status = 200, description = "Live workflows by status and step, with their age", body = serde_json::Value),
        Refusals
    )
)]
pub async fn live(State(state): State<AppState>) -> Response {
    if state.counts.latest.read().await.is_none()
        && let Err(error) = state.counts.refresh(&state.store).await
    {
        return Problem::internal(&error).into_response();
    }
    let latest = state.counts.latest.read().await;
    let Some(snapshot) = latest.as_ref() else {
        return Problem::internal(&std::io::Error::other("no counts after a refresh"))
            .into_response();
    };
    let age = (Utc::now() - snapshot.at).num_milliseconds().max(0) as f64 / 1000.0;
    axum::Json(json!({
        "counted_at": snapshot.at,
        "age_seconds": age,
        "items": snapshot.counts.iter().map(|count| json!({
            "status": count.status,
            "step": count.step,
            "count": count.count,
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}
