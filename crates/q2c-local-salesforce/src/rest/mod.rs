//! The REST API on the instance URL, `/services/data/vNN.N/...`: the part of
//! Salesforce q2c writes workflow statuses to.
//!
//! Every call passes, in order: the `rest-down` and `rest-unavailable`
//! switches (503), the access token (401), and the daily API budget (403,
//! otherwise the call is counted). Only then is its path read. Every
//! answer, refusals included, carries `Sforce-Limit-Info`.
//!
//! Records and events live in `org`; `composite` runs a composite.

mod composite;
mod error;

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

pub(crate) use error::{Error, MAX_SUBREQUESTS, RuleFailure};

use crate::{
    bus::lock,
    org::Org,
    server::Shared,
    sobjects::{self, SObject},
};

/// Where the REST API lives under the instance URL.
pub(crate) const PREFIX: &str = "/services/data/";

/// One answer of the REST API, or of one composite subrequest.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// The JSON body; `None` for 204.
    body: Option<Value>,
    /// A created record's URL, for `Location`.
    location: Option<String>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            location: None,
        }
    }

    fn error(error: &Error) -> Self {
        Self::json(error.status(), error.body())
    }

    fn is_success(&self) -> bool {
        self.status.is_success()
    }

    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, Json(body)).into_response(),
            None => self.status.into_response(),
        };
        if let Some(location) = self.location
            && let Ok(value) = HeaderValue::from_str(&location)
        {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
    }
}

/// Any method on `/services/data/{*path}`.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = serve(&shared, method.as_str(), uri.path(), &headers, &body);
    let mut response = answer.into_response();
    if let Ok(value) = HeaderValue::from_str(&shared.budget.usage().header()) {
        response.headers_mut().insert("sforce-limit-info", value);
    }
    response
}

fn serve(shared: &Shared, method: &str, path: &str, headers: &HeaderMap, body: &[u8]) -> Answer {
    if let Err(error) = admit(shared, headers) {
        tracing::debug!(code = error.code(), %method, %path, "REST call refused");
        shared.count_rest_refusal(error.code());
        return Answer::error(&error);
    }
    let body = || parse_body(body);
    let (version, route) = match path.strip_prefix(PREFIX).map(route) {
        Some(Ok(routed)) => routed,
        Some(Err(error)) => return Answer::error(&error),
        None => return Answer::error(&Error::NotFound),
    };
    match route {
        Route::Composite if method == "POST" => composite::run(shared, body()),
        route => {
            let mut org = lock(&shared.org);
            execute(shared, &mut org, method, &version, route, body)
        }
    }
}

/// The switches, the token and the budget, in that order.
fn admit(shared: &Shared, headers: &HeaderMap) -> Result<(), Error> {
    if shared.take_rest_refusal() {
        return Err(Error::Unavailable);
    }
    // Salesforce takes its older `OAuth` scheme as well as `Bearer`.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("OAuth "))
        })
        .map(str::trim);
    match token {
        Some(token) if shared.tokens.valid_until(token).is_some() => {}
        _ => return Err(Error::InvalidSession),
    }
    shared
        .budget
        .spend()
        .map(|_| ())
        .map_err(|_| Error::LimitExceeded)
}

/// A request body as JSON; an empty one is a parse error too.
fn parse_body(body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::JsonParser(
            "No content to map due to end-of-input".to_owned(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| Error::JsonParser(format!("Unexpected JSON: {e}")))
}

/// What a path (after `/services/data/`) names.
#[derive(Debug)]
enum Route {
    /// `sobjects/{object}`.
    Collection(&'static SObject),
    /// `sobjects/{object}/{id}`.
    Record(&'static SObject, String),
    /// `sobjects/{object}/{field}/{value}`.
    ByExternalId(&'static SObject, String, String),
    /// `composite`.
    Composite,
    /// `limits`.
    Limits,
}

/// Reads a path after `/services/data/`: the version, then the resource.
fn route(path: &str) -> Result<(String, Route), Error> {
    let path = path.split('?').next().unwrap_or_default();
    let segments = path
        .trim_end_matches('/')
        .split('/')
        .map(percent_decode)
        .collect::<Option<Vec<_>>>()
        .ok_or(Error::NotFound)?;
    let Some((version, rest)) = segments.split_first() else {
        return Err(Error::NotFound);
    };
    if !is_version(version) {
        return Err(Error::NotFound);
    }
    let route = match rest {
        [resource] if resource == "composite" => Route::Composite,
        [resource] if resource == "limits" => Route::Limits,
        [resource, object, more @ ..] if resource == "sobjects" => {
            let object = sobjects::find(object).ok_or(Error::NotFound)?;
            match more {
                [] => Route::Collection(object),
                [id] if !object.is_event() => Route::Record(object, id.clone()),
                [field, value] if !object.is_event() => {
                    Route::ByExternalId(object, field.clone(), value.clone())
                }
                _ => return Err(Error::NotFound),
            }
        }
        _ => return Err(Error::NotFound),
    };
    Ok((version.clone(), route))
}

/// `vNN.N`.
fn is_version(text: &str) -> bool {
    let Some((major, minor)) = text.strip_prefix('v').and_then(|v| v.split_once('.')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

/// A path segment with `%XX` decoded; `None` if it is not UTF-8 then.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let escaped = (byte == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Runs one call (not a composite) against the org.
fn execute(
    shared: &Shared,
    org: &mut Org,
    method: &str,
    version: &str,
    route: Route,
    body: impl FnOnce() -> Result<Value, Error>,
) -> Answer {
    let hazards = |object: &str| shared.write_hazards(object);
    let not_allowed = |allowed| {
        Answer::error(&Error::MethodNotAllowed {
            method: method.to_owned(),
            allowed,
        })
    };
    let location =
        |object: &SObject, id: &str| format!("{PREFIX}{version}/sobjects/{}/{id}", object.name);
    match (route, method) {
        (Route::Limits, "GET") => {
            let usage = shared.budget.usage();
            Answer::json(
                StatusCode::OK,
                json!({"DailyApiRequests": {
                    "Max": usage.max,
                    "Remaining": usage.max.saturating_sub(usage.used),
                }}),
            )
        }
        (Route::Limits, _) => not_allowed("GET"),
        (Route::Composite, _) => not_allowed("POST"),
        (Route::Collection(object), "POST") => {
            match body().and_then(|body| org.create(object, &body, &shared.user_id, hazards)) {
                Ok(id) => Answer {
                    location: (!object.is_event()).then(|| location(object, &id)),
                    ..Answer::json(
                        StatusCode::CREATED,
                        json!({"id": id, "success": true, "errors": []}),
                    )
                },
                Err(error) => Answer::error(&error),
            }
        }
        (Route::Collection(_), _) => not_allowed("POST"),
        (Route::Record(object, id), "GET") => match org.get(object, &id, version) {
            Ok(record) => Answer::json(StatusCode::OK, record),
            Err(error) => Answer::error(&error),
        },
        (Route::Record(object, id), "PATCH") => {
            match body().and_then(|body| org.update(object, &id, &body, hazards)) {
                Ok(()) => Answer {
                    status: StatusCode::NO_CONTENT,
                    body: None,
                    location: None,
                },
                Err(error) => Answer::error(&error),
            }
        }
        (Route::ByExternalId(object, field, value), "GET") => {
            match org.get_by(object, &field, &value, version) {
                Ok(record) => Answer::json(StatusCode::OK, record),
                Err(error) => Answer::error(&error),
            }
        }
        (Route::ByExternalId(object, field, value), "PATCH") => {
            match body().and_then(|body| org.upsert(object, &field, &value, &body, hazards)) {
                Ok(upserted) => {
                    let answer = json!({
                        "id": upserted.id,
                        "success": true,
                        "errors": [],
                        "created": upserted.created,
                    });
                    if upserted.created {
                        Answer {
                            location: Some(location(object, &upserted.id)),
                            ..Answer::json(StatusCode::CREATED, answer)
                        }
                    } else {
                        Answer::json(StatusCode::OK, answer)
                    }
                }
                Err(error) => Answer::error(&error),
            }
        }
        (Route::Record(..) | Route::ByExternalId(..), _) => not_allowed("GET,PATCH"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_versions_and_resources() {
        assert!(matches!(route("v62.0/composite"), Ok((v, Route::Composite)) if v == "v62.0"));
        assert!(matches!(route("v9.10/limits/"), Ok((_, Route::Limits))));
        assert!(matches!(
            route("v62.0/sobjects/opportunity/006%2F1"),
            Ok((_, Route::Record(o, id))) if o.name == "Opportunity" && id == "006/1"
        ));
        assert!(matches!(
            route("v62.0/sobjects/Q2C_Quote_Status__c/Q2C_Quote_Id__c/a0q"),
            Ok((_, Route::ByExternalId(_, f, v))) if f == "Q2C_Quote_Id__c" && v == "a0q"
        ));
        assert!(matches!(
            route("v62.0/sobjects/Q2C_Order_Status__e"),
            Ok((_, Route::Collection(_)))
        ));
        for missing in [
            "62.0/limits",
            "v62/limits",
            "vX.0/limits",
            "v62.0",
            "v62.0/query",
            "v62.0/sobjects/Account/001",
            "v62.0/sobjects/Q2C_Order_Status__e/e00",
            "v62.0/sobjects/Opportunity/a/b/c",
            "v62.0/sobjects/Opportunity/%FF",
        ] {
            assert!(matches!(route(missing), Err(Error::NotFound)), "{missing}");
        }
    }
}
