//! `POST /api/v1/events`: a Salesforce platform event, validated and
//! transformed at the edge, admitted once by its event id.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use q2c_core::domain::ids::WorkflowId;
use q2c_salesforce::QuoteAccepted;
use q2c_store::intake::{Outcome, Source};
use serde_json::json;

use crate::AppState;
use crate::problem::Problem;

/// 202 with the new workflow's id; 200 with the first answer for an event id
/// seen before; 409 with the live workflow's id when the quote already has
/// one; 422 naming every bad field, with nothing stored.
pub async fn accept(State(state): State<AppState>, body: Bytes) -> Response {
    let event = match QuoteAccepted::from_json(&body) {
        Ok(event) => event,
        Err(invalid) => {
            let errors: Vec<_> = invalid
                .0
                .iter()
                .map(|problem| json!({"field": problem.field, "message": problem.message}))
                .collect();
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-event",
                "Invalid event",
                format!("{} field(s) are invalid; nothing was stored", errors.len()),
            )
            .with("errors", json!(errors))
            .into_response();
        }
    };
    let source = Source {
        event_uuid: &event.event_uuid,
        channel: &event.channel,
        replay_id: event.replay_id,
    };
    let quote_id = event.quote.quote_id().to_string();
    let admitted = state
        .store
        .admit_quote(
            &source,
            state.definition.clone(),
            event.quote,
            WorkflowId::new(uuid::Uuid::now_v7()),
            chrono::Utc::now(),
        )
        .await;
    let admission = match admitted {
        Ok(admission) => admission,
        Err(error) => return Problem::internal(&error).into_response(),
    };
    let workflow_id = admission.workflow_id.to_string();
    let answer = json!({
        "workflow_id": workflow_id,
        "event_uuid": event.event_uuid,
        "quote_id": quote_id,
        "outcome": admission.outcome.as_str(),
    });
    match (admission.repeated, admission.outcome) {
        (true, _) => (StatusCode::OK, axum::Json(answer)).into_response(),
        (false, Outcome::Started) => {
            metrics::counter!("q2c_workflows_started_total").increment(1);
            tracing::info!(%workflow_id, %quote_id, event_uuid = %event.event_uuid, "workflow started");
            (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
        }
        (false, Outcome::QuoteHasLiveWorkflow) => Problem::new(
            StatusCode::CONFLICT,
            "quote-has-live-workflow",
            "Quote already has a live workflow",
            format!("quote {quote_id} is already being processed by workflow {workflow_id}"),
        )
        .with("workflow_id", json!(workflow_id))
        .into_response(),
    }
}
