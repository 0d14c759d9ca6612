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
use crate::openapi::Refusals;
use crate::problem::Problem;

/// The answers, each with an `outcome`:
///
/// - 202 `started`, with the new workflow's id;
/// - 409 `quote_has_live_workflow` (problem `quote-has-live-workflow`),
///   with the live workflow's id, when the quote already has one;
/// - 409 `quote_cancelled` (problem `quote-cancelled`), with no workflow id,
///   when the quote's cancellation was recorded before this acceptance (it
///   came from Salesforce's stream); nothing is started for that quote;
/// - 200 with the first answer, body unchanged, for an event id seen before
///   (checked first, before validation), whichever transport admitted it;
/// - 422 naming every bad field, with nothing stored.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    operation_id = "events_accept",
    tag = "intake",
    request_body(content = serde_json::Value, description = "A Salesforce quote-accepted platform event"),
    responses(
        (status = 202, description = "Started a workflow", body = serde_json::Value),
        (status = 200, description = "An event id seen before: its first answer", body = serde_json::Value),
        (status = 409, description = "The quote has a live workflow, or was cancelled", body = Problem),
        (status = 422, description = "Invalid event: every bad field named", body = Problem),
        Refusals
    )
)]
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
            // Not read from a Salesforce stream: no position to move.
            None,
        )
        .await;
    let admission = match admitted {
        Ok(admission) => admission,
        Err(error) => return Problem::internal(&error).into_response(),
    };
    let (response, started) = answer(&event.event_uuid, &admission);
    if started && let Some(workflow_id) = admission.workflow_id {
        metrics::counter!("q2c_workflows_started_total").increment(1);
        tracing::info!(workflow_id = %workflow_id, quote_id = %admission.quote_id, event_uuid = %event.event_uuid, "workflow started");
    }
    response
}

/// The answer to an admission, built only from what is stored about the
/// event, so a repeat gets exactly the first answer (with status 200).
/// Also says whether this call started a workflow.
fn answer(event_uuid: &str, admission: &Admission) -> (Response, bool) {
    let workflow_id = admission.workflow_id.map(|id| id.to_string());
    let quote_id = &admission.quote_id;
    let outcome = admission.outcome.as_str();
    let (status, body, started) = match admission.outcome {
        Outcome::Started => (
            StatusCode::ACCEPTED,
            json!({
                "workflow_id": workflow_id,
                "event_uuid": event_uuid,
                "quote_id": quote_id,
                "outcome": outcome,
            }),
            true,
        ),
        Outcome::QuoteHasLiveWorkflow => {
            let live = workflow_id.unwrap_or_default();
            let problem = Problem::new(
                StatusCode::CONFLICT,
                "quote-has-live-workflow",
                "Quote already has a live workflow",
                format!("quote {quote_id} is already being processed by workflow {live}"),
            )
            .with("workflow_id", json!(live))
            .with("event_uuid", json!(event_uuid))
            .with("quote_id", json!(quote_id))
            .with("outcome", json!(outcome));
            return conflict(problem, admission.repeated);
        }
        Outcome::QuoteCancelled => {
            let problem = Problem::new(
                StatusCode::CONFLICT,
                "quote-cancelled",
                "Quote was cancelled",
                format!(
                    "quote {quote_id} was cancelled before this acceptance; no workflow was started"
                ),
            )
            .with("event_uuid", json!(event_uuid))
            .with("quote_id", json!(quote_id))
            .with("outcome", json!(outcome));
            return conflict(problem, admission.repeated);
        }
        // Cancellations come in from Salesforce's stream, never through
        // this endpoint; an event id they were admitted under still gets
        // what is stored about it.
        Outcome::Cancelled
        | Outcome::CancellationAfterOutcome
        | Outcome::CancellationRepeated
        | Outcome::CancellationBeforeAcceptance => {
            let mut body = json!({
                "event_uuid": event_uuid,
                "quote_id": quote_id,
                "outcome": outcome,
            });
            if let Some(workflow_id) = workflow_id {
                body["workflow_id"] = json!(workflow_id);
            }
            if let Some(detail) = &admission.detail {
                body["detail"] = json!(detail);
            }
            (StatusCode::OK, body, false)
        }
    };
    if admission.repeated {
        ((StatusCode::OK, axum::Json(body)).into_response(), false)
    } else {
        ((status, axum::Json(body)).into_response(), started)
    }
}

/// A refused acceptance: the problem itself the first time, its body with
/// status 200 for a repeat.
fn conflict(problem: Problem, repeated: bool) -> (Response, bool) {
    if repeated {
        (
            (StatusCode::OK, axum::Json(json!(problem))).into_response(),
            false,
        )
    } else {
        (problem.into_response(), false)
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

#[cfg(test)]
mod tests {
    use axum::http::header;
    use http_body_util::BodyExt;
    use serde_json::Value;

    use super::*;

    async fn read(response: Response) -> (StatusCode, String, Value) {
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    fn admission(outcome: Outcome, workflow_id: Option<WorkflowId>, repeated: bool) -> Admission {
        Admission {
            outcome,
            workflow_id,
            quote_id: "a0q5e00000ABCDEFGH".into(),
            detail: None,
            repeated,
        }
    }

    #[tokio::test]
    async fn an_acceptance_of_a_cancelled_quote_is_a_conflict_without_a_workflow() {
        let first = admission(Outcome::QuoteCancelled, None, false);
        let (response, started) = answer("evt-1", &first);
        assert!(!started);
        let (status, content_type, body) = read(response).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(body["type"], "https://q2c.invalid/problems/quote-cancelled");
        assert_eq!(body["outcome"], "quote_cancelled");
        assert_eq!(body["event_uuid"], "evt-1");
        assert_eq!(body["quote_id"], "a0q5e00000ABCDEFGH");
        assert!(body.get("workflow_id").is_none(), "{body}");

        let repeat = admission(Outcome::QuoteCancelled, None, true);
        let (again, started) = answer("evt-1", &repeat);
        assert!(!started);
        let (status, _, again) = read(again).await;
        assert_eq!(status, StatusCode::OK, "a repeat gets the first answer");
        assert_eq!(again, body);
    }

    #[tokio::test]
    async fn a_live_workflow_conflict_names_its_outcome_and_workflow() {
        let live = WorkflowId::new(uuid::Uuid::from_u128(7));
        let (response, started) = answer(
            "evt-2",
            &admission(Outcome::QuoteHasLiveWorkflow, Some(live), false),
        );
        assert!(!started);
        let (status, content_type, body) = read(response).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(body["outcome"], "quote_has_live_workflow");
        assert_eq!(body["workflow_id"], live.to_string());
    }

    #[tokio::test]
    async fn an_event_id_admitted_as_a_cancellation_gets_its_stored_answer() {
        let cancelled = admission(Outcome::CancellationBeforeAcceptance, None, true);
        let (response, started) = answer("evt-3", &cancelled);
        assert!(!started);
        let (status, _, body) = read(response).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["outcome"], "cancellation_before_acceptance");
        assert!(body.get("workflow_id").is_none(), "{body}");
    }
}
