//! Logging in to Salesforce, for every part of q2c that talks to it (the
//! Pub/Sub subscriber, the REST connector): access tokens by the OAuth 2.0
//! client-credentials or JWT bearer flow ([`tokens`]), and secrets that never
//! reach a log line ([`secret`]).

pub mod secret;
pub mod tokens;

pub use secret::Secret;
pub use tokens::{AuthError, Credentials, Session, Tokens};

/// Makes ring the process's TLS provider (the one the rest of q2c links);
/// a second call changes nothing. HTTP clients built without a provider of
/// their own (the login client here) need one installed.
pub fn install_crypto_provider() {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
}
