//! The API token: every `/api/v1` route requires `Authorization: Bearer
//! <token>`. The token is a secret type: it never prints, and comparing it
//! takes the same time whatever the guess.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::problem::Problem;

/// The bearer token the API requires.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Too short to resist guessing.
    #[error("the API token must be at least 16 characters long")]
    TooShort,
    /// Would not survive an HTTP header.
    #[error("the API token may only contain visible ASCII characters")]
    NotVisibleAscii,
}

impl ApiToken {
    /// Checks and wraps a configured token.
    pub fn new(token: &str) -> Result<Self, Error> {
        if token.len() < 16 {
            return Err(Error::TooShort);
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(Error::NotVisibleAscii);
        }
        Ok(Self(Arc::from(token)))
    }

    /// Whether `candidate` is this token, in constant time.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Middleware: 401 unless the request carries the token.
pub async fn require_token(
    State(token): State<ApiToken>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials);
    match presented {
        Some(candidate) if token.matches(candidate.trim()) => next.run(request).await,
        _ => Problem::unauthorized().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_print_and_compare_exactly() {
        let token = ApiToken::new("s3cret-token-0123456789").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(token.matches("s3cret-token-0123456789"));
        assert!(!token.matches("s3cret-token-012345678"));
        assert!(!token.matches(""));
        assert_eq!(ApiToken::new("short").unwrap_err(), Error::TooShort);
        assert_eq!(
            ApiToken::new("has a space in it ok?").unwrap_err(),
            Error::NotVisibleAscii
        );
    }
}
