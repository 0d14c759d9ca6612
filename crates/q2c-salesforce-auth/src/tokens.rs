//! Access tokens from Salesforce's OAuth 2.0 token endpoint, by the
//! client-credentials flow or the JWT bearer flow. Neither flow gives a
//! refresh token: a new token is obtained by running the flow again, which
//! is what happens when Salesforce reports `service.auth.error`.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::secret::Secret;

/// How q2c proves who it is.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A connected app's consumer key and secret, run as its configured user.
    ClientCredentials {
        /// Consumer key.
        client_id: String,
        /// Consumer secret.
        client_secret: Secret,
    },
    /// A JWT signed with the private key whose certificate is uploaded to
    /// the connected app: no secret is sent at all.
    JwtBearer {
        /// Consumer key (the JWT's issuer).
        client_id: String,
        /// The Salesforce user to act as (the JWT's subject).
        username: String,
        /// RSA private key, PEM.
        private_key: Secret,
        /// `https://login.salesforce.com`, `https://test.salesforce.com`,
        /// or the My Domain login URL.
        audience: String,
    },
}

/// A token and what every Pub/Sub call must send with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The `accesstoken` header.
    pub access_token: Secret,
    /// The `instanceurl` header.
    pub instance_url: String,
    /// The `tenantid` header: the org id.
    pub tenant_id: String,
}

/// Why no token could be obtained. Carries Salesforce's words, never a
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint refused the credentials.
    #[error("Salesforce refused the login ({error}): {description}")]
    Refused {
        /// OAuth error code, e.g. `invalid_client`.
        error: String,
        /// Salesforce's explanation.
        description: String,
    },
    /// The token endpoint could not be reached or answered nonsense.
    #[error("the Salesforce token endpoint failed: {0}")]
    Unavailable(String),
    /// The JWT could not be signed (the private key is unusable).
    #[error("the JWT private key is unusable: {0}")]
    Key(String),
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    instance_url: String,
    id: String,
}

#[derive(Deserialize)]
struct Refusal {
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
}

/// Hands out the current session, and a new one when Salesforce rejects it;
/// shared by every topic's stream, so one expiry costs one login.
#[derive(Debug)]
pub struct Tokens {
    token_url: String,
    credentials: Credentials,
    http: reqwest::Client,
    current: Mutex<Option<Arc<Session>>>,
}

impl Tokens {
    /// Logs in at `login_url` (e.g. `https://login.salesforce.com`).
    pub fn new(login_url: &str, credentials: Credentials) -> Result<Self, AuthError> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| AuthError::Unavailable(error.to_string()))?;
        Ok(Self {
            token_url: format!("{}/services/oauth2/token", login_url.trim_end_matches('/')),
            credentials,
            http,
            current: Mutex::new(None),
        })
    }

    /// The session in use, logging in first if there is none.
    pub async fn session(&self) -> Result<Arc<Session>, AuthError> {
        let mut current = self.current.lock().await;
        if let Some(session) = current.as_ref() {
            return Ok(session.clone());
        }
        let session = Arc::new(self.login().await?);
        *current = Some(session.clone());
        Ok(session)
    }

    /// Salesforce rejected `stale`: log in again, unless another stream
    /// already did.
    pub async fn renew(&self, stale: &Session) -> Result<Arc<Session>, AuthError> {
        let mut current = self.current.lock().await;
        if let Some(session) = current.as_ref()
            && session.as_ref() != stale
        {
            return Ok(session.clone());
        }
        *current = None;
        let session = Arc::new(self.login().await?);
        *current = Some(session.clone());
        Ok(session)
    }

    async fn login(&self) -> Result<Session, AuthError> {
        let form: Vec<(&str, String)> = match &self.credentials {
            Credentials::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.expose().to_owned()),
            ],
            Credentials::JwtBearer {
                client_id,
                username,
                private_key,
                audience,
            } => vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ),
                (
                    "assertion",
                    assertion(client_id, username, private_key, audience)?,
                ),
            ],
        };
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|error| AuthError::Unavailable(error.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| AuthError::Unavailable(error.without_url().to_string()))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<Refusal>(&body) {
                Ok(refusal) => AuthError::Refused {
                    error: refusal.error,
                    description: refusal.error_description,
                },
                Err(_) => AuthError::Unavailable(format!("HTTP {status}")),
            });
        }
        let granted: Granted = serde_json::from_slice(&body).map_err(|error| {
            AuthError::Unavailable(format!("unreadable token response: {error}"))
        })?;
        let tenant_id = tenant_of(&granted.id).ok_or_else(|| {
            AuthError::Unavailable(format!(
                "the token response's id `{}` names no org",
                granted.id
            ))
        })?;
        tracing::info!(instance_url = %granted.instance_url, tenant_id = %tenant_id, "obtained a Salesforce access token");
        Ok(Session {
            access_token: Secret::new(granted.access_token),
            instance_url: granted.instance_url,
            tenant_id,
        })
    }
}

/// A short-lived RS256 assertion for the JWT bearer flow.
fn assertion(
    client_id: &str,
    username: &str,
    private_key: &Secret,
    audience: &str,
) -> Result<String, AuthError> {
    let key = EncodingKey::from_rsa_pem(private_key.expose().as_bytes())
        .map_err(|error| AuthError::Key(error.to_string()))?;
    let claims = Claims {
        iss: client_id,
        sub: username,
        aud: audience,
        exp: chrono::Utc::now().timestamp() + 180,
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)
        .map_err(|error| AuthError::Key(error.to_string()))
}

/// The org id in the identity URL `https://…/id/<OrgId>/<UserId>`.
fn tenant_of(identity: &str) -> Option<String> {
    let mut segments = identity.trim_end_matches('/').rsplit('/');
    let _user = segments.next()?;
    let org = segments.next()?;
    (segments.next() == Some("id") && !org.is_empty()).then(|| org.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_org_is_read_from_the_identity_url() {
        assert_eq!(
            tenant_of("https://login.salesforce.com/id/00D5e000000ABCD/0055e000000WXYZ").as_deref(),
            Some("00D5e000000ABCD")
        );
        assert_eq!(
            tenant_of("https://login.salesforce.com/0055e000000WXYZ"),
            None
        );
    }

    #[test]
    fn an_unusable_key_is_named_without_its_content() {
        let error = assertion(
            "client",
            "user",
            &Secret::new("-----BEGIN PRIVATE KEY-----\nnot a key\n"),
            "https://login.salesforce.com",
        )
        .unwrap_err();
        assert!(!error.to_string().contains("not a key"), "{error}");
    }
}
