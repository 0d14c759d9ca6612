//! `POST /api/v1/events`: a Salesforce platform event, validated and
//! transformed at the edge, admitted once by its event id.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use q2c_core::domain::ids::WorkflowId;
use q2c_salesforce::QuoteAccepted;
use q2c_store::intake::{Admission, Outcome, Source};
use serde_json::json;

use crate::AppState;
use crate::problem::Problem;

/// 202 with the new workflow's id; 200 with the first answer for an event id
/// seen before (checked first, before validation); 409 with the live
/// workflow's id when the quote already has one; 422 naming every bad field,
/// with nothing stored.
pub async fn accept(State(state): State<AppState>, body: Bytes) -> Response {
    if let Some(event_uuid) = event_uuid_of(&body) {
        match state.store.earlier_admission(&event_uuid).await {
            Ok(Some(admission)) => return answer(&event_uuid, &admission).0,
            Ok(None) => {}
            Err(error) => return Problem::internal(&error).into_response(),
        }
    }
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
    let (response, started) = answer(&event.event_uuid, &admission);
    if started {
        metrics::counter!("q2c_workflows_started_total").increment(1);
        tracing::info!(workflow_id = %admission.workflow_id, quote_id = %admission.quote_id, event_uuid = %event.event_uuid, "workflow started");
    }
    response
}

/// The answer to an admission, built only from what is stored about the
/// event, so a repeat gets exactly the first answer (with status 200).
/// Also says whether this call started a workflow.
fn answer(event_uuid: &str, admission: &Admission) -> (Response, bool) {
    let workflow_id = admission.workflow_id.to_string();
    let quote_id = &admission.quote_id;
    let (status, body, started) = match admission.outcome {
        Outcome::Started => (
            StatusCode::ACCEPTED,
            json!({
                "workflow_id": workflow_id,
                "event_uuid": event_uuid,
                "quote_id": quote_id,
                "outcome": admission.outcome.as_str(),
            }),
            true,
        ),
        Outcome::QuoteHasLiveWorkflow => {
            let problem = Problem::new(
                StatusCode::CONFLICT,
                "quote-has-live-workflow",
                "Quote already has a live workflow",
                format!("quote {quote_id} is already being processed by workflow {workflow_id}"),
            )
            .with("workflow_id", json!(workflow_id))
            .with("event_uuid", json!(event_uuid));
            if !admission.repeated {
                return (problem.into_response(), false);
            }
            (StatusCode::CONFLICT, json!(problem), false)
        }
    };
    if admission.repeated {
        ((StatusCode::OK, axum::Json(body)).into_response(), false)
    } else {
        ((status, axum::Json(body)).into_response(), started)
    }
}

/// The event id, if the body carries one where Salesforce puts it.
fn event_uuid_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["data"]["event"]["EventUuid"]
        .as_str()
        .filter(|uuid| !uuid.trim().is_empty())
        .map(str::to_owned)
}
