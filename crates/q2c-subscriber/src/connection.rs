//! The gRPC channel to the Pub/Sub API, and the metadata every call carries.

use std::time::Duration;

use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use q2c_salesforce_auth::{Session, install_crypto_provider};

/// Why the channel could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the Pub/Sub URL `{url}` is unusable: {reason}")]
pub struct BadEndpoint {
    url: String,
    reason: String,
}

/// A lazily connecting channel with HTTP/2 keepalive pings, so a half-open
/// connection is noticed by the transport as well as by the watchdog.
pub(crate) fn channel(url: &str) -> Result<Channel, BadEndpoint> {
    install_crypto_provider();
    let bad = |reason: String| BadEndpoint {
        url: url.to_owned(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| bad(error.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(|error| bad(error.to_string()))?;
    }
    Ok(endpoint.connect_lazy())
}

/// Why a request could not carry the session.
#[derive(Debug, thiserror::Error)]
#[error("the Salesforce session's {0} cannot be sent as gRPC metadata")]
pub struct BadSession(&'static str);

/// Wraps `message` with the three headers Salesforce requires.
pub(crate) fn authorised<T>(message: T, session: &Session) -> Result<Request<T>, BadSession> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert(
        "accesstoken",
        MetadataValue::try_from(session.access_token.expose())
            .map_err(|_| BadSession("access token"))?,
    );
    metadata.insert(
        "instanceurl",
        MetadataValue::try_from(session.instance_url.as_str())
            .map_err(|_| BadSession("instance URL"))?,
    );
    metadata.insert(
        "tenantid",
        MetadataValue::try_from(session.tenant_id.as_str()).map_err(|_| BadSession("org id"))?,
    );
    Ok(request)
}

/// Salesforce's `error-code` trailer of a failed call, if it sent one.
pub(crate) fn error_code(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("error-code")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
