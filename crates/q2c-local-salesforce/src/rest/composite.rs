//! `POST /services/data/vNN.N/composite`: up to 25 subrequests in one
//! call, run in order against the org while no other call can touch it.
//! With `allOrNone`, the first failure rolls back what the others did and
//! stops the rest; every other subrequest then answers `PROCESSING_HALTED`.
//! References between subrequests (`@{ref.id}`) are not supported.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, Error, MAX_SUBREQUESTS, PREFIX, Route, execute, route};
use crate::{bus::lock, server::Shared};

#[derive(Deserialize)]
struct Composite {
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
    #[serde(rename = "compositeRequest")]
    requests: Vec<SubRequest>,
}

#[derive(Deserialize)]
struct SubRequest {
    method: String,
    url: String,
    #[serde(rename = "referenceId")]
    reference_id: String,
    #[serde(default)]
    body: Option<Value>,
}

/// Runs a composite whose body is `body`.
pub(super) fn run(shared: &Shared, body: Result<Value, Error>) -> Answer {
    let composite = match body.and_then(|body| {
        serde_json::from_value::<Composite>(body)
            .map_err(|e| Error::JsonParser(format!("Invalid composite request: {e}")))
    }) {
        Ok(composite) => composite,
        Err(error) => return Answer::error(&error),
    };
    let requests = composite.requests;
    if requests.len() > MAX_SUBREQUESTS {
        return Answer::error(&Error::TooManySubrequests(requests.len()));
    }

    let answers = {
        let mut org = lock(&shared.org);
        let snapshot = composite.all_or_none.then(|| org.clone());
        let mut answers = Vec::with_capacity(requests.len());
        let mut failed = None;
        for (index, request) in requests.iter().enumerate() {
            let answer = subrequest(shared, &mut org, request);
            let success = answer.is_success();
            answers.push(answer);
            if !success && composite.all_or_none {
                failed = Some(index);
                break;
            }
        }
        if let (Some(failed), Some(snapshot)) = (failed, snapshot) {
            org.restore(snapshot);
            let halted = || Answer::error(&Error::ProcessingHalted);
            for (index, answer) in answers.iter_mut().enumerate() {
                if index != failed {
                    *answer = halted();
                }
            }
            answers.resize_with(requests.len(), halted);
        }
        answers
    };

    let responses: Vec<Value> = requests
        .iter()
        .zip(answers)
        .map(|(request, answer)| {
            let headers = match &answer.location {
                Some(location) => json!({ "Location": location }),
                None => json!({}),
            };
            json!({
                "body": answer.body,
                "httpHeaders": headers,
                "httpStatusCode": answer.status.as_u16(),
                "referenceId": request.reference_id,
            })
        })
        .collect();
    Answer::json(StatusCode::OK, json!({ "compositeResponse": responses }))
}

/// One subrequest: its URL must be a REST path of its own.
fn subrequest(shared: &Shared, org: &mut crate::org::Org, request: &SubRequest) -> Answer {
    let Some(path) = request.url.strip_prefix(PREFIX) else {
        return Answer::error(&Error::InvalidSubrequest(format!(
            "The url of subrequest {} must begin with {PREFIX}vNN.N/, not {}",
            request.reference_id, request.url
        )));
    };
    let (version, route) = match route(path) {
        Ok(routed) => routed,
        Err(error) => return Answer::error(&error),
    };
    if matches!(route, Route::Composite) {
        return Answer::error(&Error::InvalidSubrequest(format!(
            "Subrequest {} is a composite: composites cannot be nested",
            request.reference_id
        )));
    }
    let method = request.method.to_ascii_uppercase();
    let body = || {
        request
            .body
            .clone()
            .ok_or_else(|| Error::JsonParser("No content to map due to end-of-input".to_owned()))
    };
    execute(shared, org, &method, &version, route, body)
}
