//! What a local Salesforce is started with.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use crate::Error;

/// The org id (`tenantid`) a local Salesforce has unless told otherwise.
pub const DEFAULT_ORG_ID: &str = "00DLOCAL000000Q2CA";
/// The id of the user that tokens are issued to and that events are created by.
pub const DEFAULT_USER_ID: &str = "005LOCAL000000Q2CA";
/// The username the JWT bearer flow expects as `sub`.
pub const DEFAULT_USERNAME: &str = "integration@q2c.local";
/// The connected app's client id (consumer key) unless told otherwise.
pub const DEFAULT_CLIENT_ID: &str = "q2c-local-client";
/// The connected app's client secret unless told otherwise: a development
/// value, printed nowhere.
pub const DEFAULT_CLIENT_SECRET: &str = "q2c-local-secret";
/// Where `serve` listens for gRPC by default (Salesforce's Pub/Sub port).
pub const DEFAULT_GRPC_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7443);
/// Where `serve` listens for HTTP (token endpoint and console) by default.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7080);

/// A secret that Debug output never shows, so a logged config leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Everything a local Salesforce is started with: where it listens, who the
/// org, user and connected app are, and its timings (shortened in tests so
/// keepalives, idle streams and token expiry can be seen in milliseconds).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the Pub/Sub API (gRPC) listens; port 0 picks a free port.
    pub grpc_addr: SocketAddr,
    /// Where the token endpoint and the console (HTTP) listen; port 0 picks
    /// a free port. Its base URL is the org's instance URL and login URL.
    pub http_addr: SocketAddr,
    /// The org id: what `tenantid` must be.
    pub org_id: String,
    /// The user tokens are issued to and events are created by.
    pub user_id: String,
    /// The username the JWT bearer flow expects as `sub`.
    pub username: String,
    /// The connected app's client id: `client_id`, and `iss` of a JWT.
    pub client_id: String,
    /// The connected app's client secret for the client-credentials flow.
    pub client_secret: Secret,
    /// The RSA public key (PEM) that JWT assertions must be signed for; the
    /// JWT bearer flow is refused without one.
    pub jwt_public_key_pem: Option<String>,
    /// How long an access token lives.
    pub token_ttl: Duration,
    /// How often a stream with events requested but none to deliver gets an
    /// empty keepalive response.
    pub keepalive_interval: Duration,
    /// How long a stream with nothing requested may go without a
    /// FetchRequest before the server ends it.
    pub idle_timeout: Duration,
    /// How long published events are kept (and their replay ids valid).
    pub retention: Duration,
    /// The org's daily API budget: REST calls allowed before they are
    /// refused with `REQUEST_LIMIT_EXCEEDED` (it never resets by itself).
    pub api_daily_limit: u64,
}

/// The daily API budget unless told otherwise (a Developer Edition org's).
pub const DEFAULT_API_DAILY_LIMIT: u64 = 15_000;

impl Default for Config {
    /// Salesforce's own timings, on the default local ports.
    fn default() -> Self {
        Self {
            grpc_addr: DEFAULT_GRPC_ADDR,
            http_addr: DEFAULT_HTTP_ADDR,
            org_id: DEFAULT_ORG_ID.to_owned(),
            user_id: DEFAULT_USER_ID.to_owned(),
            username: DEFAULT_USERNAME.to_owned(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            client_secret: Secret::new(DEFAULT_CLIENT_SECRET),
            jwt_public_key_pem: None,
            token_ttl: Duration::from_secs(2 * 60 * 60),
            keepalive_interval: Duration::from_secs(270),
            idle_timeout: Duration::from_secs(60),
            retention: Duration::from_secs(72 * 60 * 60),
            api_daily_limit: DEFAULT_API_DAILY_LIMIT,
        }
    }
}

impl Config {
    /// The defaults on free ports of 127.0.0.1, so parallel tests never
    /// collide; tests shorten the timings they exercise.
    pub fn for_tests() -> Self {
        let any_port = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self {
            grpc_addr: any_port,
            http_addr: any_port,
            ..Self::default()
        }
    }

    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<(), Error> {
        let nonzero = [
            ("token_ttl", self.token_ttl),
            ("keepalive_interval", self.keepalive_interval),
            ("idle_timeout", self.idle_timeout),
        ];
        for (setting, value) in nonzero {
            if value.is_zero() {
                return Err(Error::Config {
                    setting,
                    reason: "must be longer than zero".to_owned(),
                });
            }
        }
        let nonempty = [
            ("org_id", &self.org_id),
            ("user_id", &self.user_id),
            ("username", &self.username),
            ("client_id", &self.client_id),
        ];
        for (setting, value) in nonempty {
            if value.trim().is_empty() {
                return Err(Error::Config {
                    setting,
                    reason: "must not be empty".to_owned(),
                });
            }
            // Metadata values must be visible ASCII, or no client can send them.
            if !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::Config {
                    setting,
                    reason: "must be printable ASCII without spaces".to_owned(),
                });
            }
        }
        if self.api_daily_limit == 0 {
            return Err(Error::Config {
                setting: "api_daily_limit",
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.client_secret.expose().is_empty() {
            return Err(Error::Config {
                setting: "client_secret",
                reason: "must not be empty".to_owned(),
            });
        }
        Ok(())
    }
}
