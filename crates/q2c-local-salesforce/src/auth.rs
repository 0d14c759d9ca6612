//! Access tokens and the two OAuth flows Salesforce offers an integration:
//! client credentials and the JWT bearer flow.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use tokio::time::Instant;

use crate::{Secret, bus::lock};

/// The grant types Salesforce names in the token request.
const CLIENT_CREDENTIALS: &str = "client_credentials";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The audiences a JWT assertion may name besides this server's own URL.
const LOGIN_AUDIENCES: [&str; 2] = [
    "https://login.salesforce.com",
    "https://test.salesforce.com",
];

/// The access tokens issued, each with when it stops being valid.
#[derive(Default)]
pub(crate) struct Tokens {
    expiry: Mutex<HashMap<String, Instant>>,
    issued: AtomicU64,
}

impl Tokens {
    /// Issues a token for `org_id` living `ttl`. Its shape follows
    /// Salesforce's: the org id, `!`, then random text.
    pub fn issue(&self, org_id: &str, ttl: Duration) -> String {
        let token = format!(
            "{org_id}!{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires = Instant::now() + ttl;
        lock(&self.expiry).insert(token.clone(), expires);
        self.issued.fetch_add(1, Ordering::Relaxed);
        token
    }

    /// When a token expires, if this server issued it and it has not.
    pub fn valid_until(&self, token: &str) -> Option<Instant> {
        let expiry = lock(&self.expiry).get(token).copied()?;
        (expiry > Instant::now()).then_some(expiry)
    }

    /// Every token issued so far expires now.
    pub fn expire_all(&self) {
        let now = Instant::now();
        for expiry in lock(&self.expiry).values_mut() {
            *expiry = now;
        }
    }

    /// How many tokens were issued.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }
}

/// An OAuth error as Salesforce answers it (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    /// `invalid_grant`, `invalid_client` or `unsupported_grant_type`.
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
        }
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }
}

/// Who may get a token, and how.
pub(crate) struct Authority {
    pub client_id: String,
    pub client_secret: Secret,
    pub username: String,
    /// The server's own base URL, also a valid JWT audience.
    pub base_url: String,
    pub jwt_key: Option<DecodingKey>,
}

/// A JWT `aud`: one audience or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
}

impl Authority {
    /// Checks a token request's form; `Ok` means a token may be issued.
    pub fn check(&self, form: &HashMap<String, String>) -> Result<(), OAuthError> {
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        match field("grant_type") {
            CLIENT_CREDENTIALS => {
                if field("client_id") == self.client_id
                    && field("client_secret") == self.client_secret.expose()
                {
                    Ok(())
                } else {
                    Err(OAuthError::new(
                        "invalid_client",
                        "invalid client credentials",
                    ))
                }
            }
            JWT_BEARER => self.check_assertion(field("assertion")),
            _ => Err(OAuthError::new(
                "unsupported_grant_type",
                "grant type not supported",
            )),
        }
    }

    fn check_assertion(&self, assertion: &str) -> Result<(), OAuthError> {
        let Some(key) = &self.jwt_key else {
            return Err(OAuthError::invalid_grant(
                "the JWT bearer flow needs a public key: start the local Salesforce with one",
            ));
        };
        if assertion.is_empty() {
            return Err(OAuthError::invalid_grant("invalid assertion"));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = jsonwebtoken::decode::<Claims>(assertion, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    OAuthError::invalid_grant("expired authorization code")
                }
                _ => OAuthError::invalid_grant("invalid assertion"),
            })?
            .claims;
        if claims.iss != self.client_id {
            return Err(OAuthError::new(
                "invalid_client",
                "client identifier invalid",
            ));
        }
        if claims.sub != self.username {
            return Err(OAuthError::invalid_grant(
                "user hasn't approved this consumer",
            ));
        }
        let audiences = match claims.aud {
            Audience::One(aud) => vec![aud],
            Audience::Many(auds) => auds,
        };
        let own = self.base_url.trim_end_matches('/');
        let valid = |aud: &String| {
            let aud = aud.trim_end_matches('/');
            aud == own || LOGIN_AUDIENCES.contains(&aud)
        };
        if audiences.iter().any(valid) {
            Ok(())
        } else {
            Err(OAuthError::invalid_grant("audience is invalid"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_expire_by_ttl_and_by_switch() {
        let tokens = Tokens::default();
        let short = tokens.issue("00D", Duration::ZERO);
        let long = tokens.issue("00D", Duration::from_secs(60));
        assert!(short.starts_with("00D!"));
        assert!(tokens.valid_until(&short).is_none());
        assert!(tokens.valid_until(&long).is_some());
        assert!(tokens.valid_until("made-up").is_none());
        tokens.expire_all();
        assert!(tokens.valid_until(&long).is_none());
        assert_eq!(tokens.issued(), 2);
    }

    #[test]
    fn client_credentials_must_match() {
        let authority = Authority {
            client_id: "id".into(),
            client_secret: Secret::new("secret"),
            username: "u".into(),
            base_url: "http://127.0.0.1:1".into(),
            jwt_key: None,
        };
        let form = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let good = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "id"),
            ("client_secret", "secret"),
        ]);
        assert_eq!(authority.check(&good), Ok(()));
        let bad = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "id"),
            ("client_secret", "nope"),
        ]);
        assert_eq!(authority.check(&bad).unwrap_err().error, "invalid_client");
        let password = form(&[("grant_type", "password")]);
        assert_eq!(
            authority.check(&password).unwrap_err().error,
            "unsupported_grant_type"
        );
        let jwt = form(&[("grant_type", JWT_BEARER), ("assertion", "x.y.z")]);
        assert_eq!(authority.check(&jwt).unwrap_err().error, "invalid_grant");
    }
}
