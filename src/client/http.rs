//! Talking to the API: the connection flags and settings, one request at a
//! time, and the problem details of a refusal turned into an [`Error`].

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use serde_json::Value;

use super::Error;

/// Where the API is and who is asking. Flags win over settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The API's base URL.
    #[arg(
        long,
        global = true,
        env = "Q2C_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// The API token; without it, `Q2C_CLI_TOKEN`, then `Q2C_API_TOKEN`.
    #[arg(long, global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON as it came instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// How long connecting may take: an address with nobody listening should
/// fail fast, not hang a script.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole request may take; a dead-letter replay waits for the
/// broker's confirmation (up to 15 s on the server's side).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings that may hold the token, in the order they are read.
const TOKEN_SETTINGS: [&str; 2] = ["Q2C_CLI_TOKEN", "Q2C_API_TOKEN"];

/// An API client with its base URL and token.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// A successful answer.
#[derive(Debug)]
pub struct Answer {
    /// The body as it came.
    pub body: String,
    /// The response headers (`Q2C-Next-After`, `Idempotent-Replayed`).
    pub headers: HeaderMap,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, Error> {
        serde_json::from_str(&self.body).map_err(|error| Error::Server {
            status: 200,
            detail: format!("the answer is not JSON: {error}"),
        })
    }

    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Extra headers of an action request.
#[derive(Debug, Default)]
pub struct Conditions<'a> {
    /// `If-Match`: the version the operator saw.
    pub if_match: Option<i64>,
    /// `Idempotency-Key`: makes a retried request safe.
    pub idempotency_key: Option<&'a str>,
}

impl Client {
    /// A client for the connection's URL and token; a missing token is a
    /// settings error, caught before any request.
    pub fn new(connection: &Connection) -> Result<Self, Error> {
        let token = connection
            .token
            .clone()
            .or_else(|| {
                TOKEN_SETTINGS
                    .iter()
                    .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
            })
            .ok_or_else(|| {
                Error::Usage(
                    "no API token: pass --token, or set Q2C_CLI_TOKEN (or Q2C_API_TOKEN)"
                        .to_owned(),
                )
            })?;
        let base = connection.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "Q2C_API_URL/--url: `{base}` is not an http:// or https:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| Error::Usage(format!("cannot make an HTTP client: {error}")))?;
        Ok(Self { http, base, token })
    }

    /// `GET path?query`, as JSON (`accept` names another media type).
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        accept: &str,
    ) -> Result<Answer, Error> {
        let url = self.url(path, query);
        let request = self.http.get(&url).header(ACCEPT, accept);
        self.send(url, request).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        conditions: &Conditions<'_>,
    ) -> Result<Answer, Error> {
        let url = self.url(path, &[]);
        let mut request = self
            .http
            .post(&url)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(version) = conditions.if_match {
            request = request.header("if-match", format!("\"{version}\""));
        }
        if let Some(key) = conditions.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        self.send(url, request).await
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> String {
        let mut url = format!("{}/api/v1{path}", self.base);
        if !query.is_empty() {
            let mut encoded = form_urlencoded::Serializer::new(String::new());
            for (name, value) in query {
                encoded.append_pair(name, value);
            }
            url.push('?');
            url.push_str(&encoded.finish());
        }
        url
    }

    async fn send(&self, url: String, request: reqwest::RequestBuilder) -> Result<Answer, Error> {
        let response = match request
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .send()
            .await
        {
            Ok(response) => response,
            Err(source) => {
                return Err(Error::Unreachable {
                    url,
                    source: source.without_url(),
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.text().await {
            Ok(body) => body,
            Err(source) => {
                return Err(Error::Unreachable {
                    url,
                    source: source.without_url(),
                });
            }
        };
        if status.is_success() {
            return Ok(Answer { body, headers });
        }
        let detail = problem_detail(&body).unwrap_or_else(|| {
            let text = body.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no detail").to_owned()
            } else {
                text.to_owned()
            }
        });
        if status.is_client_error() {
            Err(Error::Refused {
                status: status.as_u16(),
                detail,
            })
        } else {
            Err(Error::Server {
                status: status.as_u16(),
                detail,
            })
        }
    }
}

/// The `detail` of an RFC 9457 problem body, when it is one.
fn problem_detail(body: &str) -> Option<String> {
    let problem: Value = serde_json::from_str(body).ok()?;
    problem.get("detail")?.as_str().map(str::to_owned)
}

/// A path segment from user input, percent-encoded so that an id with a
/// `/` or `?` cannot reach another route.
pub fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_gives_its_detail() {
        let body = r#"{"type":"x","title":"t","status":409,"detail":"not now"}"#;
        assert_eq!(problem_detail(body).as_deref(), Some("not now"));
        assert_eq!(problem_detail("plain text"), None);
    }

    #[test]
    fn segments_cannot_escape_their_place() {
        assert_eq!(segment("a/b?c d"), "a%2Fb%3Fc%20d");
        assert_eq!(segment("0193-ab"), "0193-ab");
    }
}
