//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Client errors say what is wrong, field by field; server errors are logged
//! whole and answered with an opaque 500, so internals never leak.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// A problem to answer with.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// Extension members (e.g. `errors`, `workflow_id`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem of `status` with a kind slug like `invalid-event`.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://q2c.invalid/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    /// An opaque 500 for a failure whose details stay in the log.
    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed; the error is logged",
        )
    }

    /// 400 for a query string that is malformed or names an unknown filter.
    pub fn invalid_query(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-query",
            "Invalid query",
            detail,
        )
    }

    /// 404 for a workflow id nobody started.
    pub fn unknown_workflow(id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "No such workflow",
            format!("no workflow {id}"),
        )
    }

    /// 401 for a missing or wrong token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send the API token as `Authorization: Bearer <token>`",
        )
    }

    /// 403 for a known caller whose role does not grant the access the
    /// route needs: names the role, the access and the roles that have it,
    /// so the caller knows which token to ask for (never the token itself).
    pub fn forbidden(role: &str, access: &str, granted_to: &[&str]) -> Self {
        let granted_to = match granted_to {
            [] => "no".to_owned(),
            [only] => (*only).to_owned(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        };
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!(
                "role `{role}` may not do this: the route needs `{access}` access, \
                 which {granted_to} tokens have"
            ),
        )
        .with("role", Value::from(role))
        .with("access", Value::from(access))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
