//! A Rust client of the console, for tests and the `publish` command that
//! talk to a local Salesforce running in another process.

use serde::{Deserialize, Serialize};

use crate::{Error, Fault, StatusReport};

/// A client for the console. Installs ring as the TLS provider first: an
/// HTTP client in a build where reqwest has no provider of its own (q2c's
/// login client needs one chosen) cannot start without it.
fn http() -> reqwest::Client {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// An event the console published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The event id (`ProducerEvent.id`, Salesforce's EventUuid).
    pub id: String,
    /// Its replay id, hex of the 8 bytes a subscriber receives.
    pub replay_id: String,
    /// The topic, `/event/...`.
    pub topic: String,
}

/// Publishes an event through the console of the local Salesforce at
/// `base_url`: `event` is the API name (`Q2C_Quote_Accepted__e`), `fields`
/// a JSON object in Salesforce field names, `id` an optional event UUID.
pub async fn publish(
    base_url: &str,
    event: &str,
    fields: serde_json::Value,
    id: Option<&str>,
) -> Result<Published, Error> {
    let mut url = format!(
        "{}/local/events/{}",
        base_url.trim_end_matches('/'),
        encode(event)
    );
    if let Some(id) = id {
        url.push_str("?id=");
        url.push_str(&encode(id));
    }
    call(&url, http().post(&url).json(&fields)).await
}

/// The status of the local Salesforce at `base_url`.
pub async fn status(base_url: &str) -> Result<StatusReport, Error> {
    let url = format!("{}/local/status", base_url.trim_end_matches('/'));
    call(&url, http().get(&url)).await
}

/// Turns a fault switch of the local Salesforce at `base_url`.
pub async fn apply_fault(base_url: &str, fault: Fault) -> Result<StatusReport, Error> {
    let url = format!("{}{}", base_url.trim_end_matches('/'), fault.path());
    call(&url, http().post(&url).json(&fault.body())).await
}

/// Creates a record through the console of the local Salesforce at
/// `base_url` (`fields` may carry its `Id`); answers the record's id.
pub async fn create_record(
    base_url: &str,
    object: &str,
    fields: serde_json::Value,
) -> Result<String, Error> {
    #[derive(Deserialize)]
    struct Created {
        id: String,
    }
    let url = format!(
        "{}/local/records/{}",
        base_url.trim_end_matches('/'),
        encode(object)
    );
    call::<Created>(&url, http().post(&url).json(&fields))
        .await
        .map(|created| created.id)
}

/// A record of the local Salesforce at `base_url`, as its REST API shows
/// it; `None` when there is no such record.
pub async fn record(
    base_url: &str,
    object: &str,
    id: &str,
) -> Result<Option<serde_json::Value>, Error> {
    let url = format!(
        "{}/local/records/{}/{}",
        base_url.trim_end_matches('/'),
        encode(object),
        encode(id)
    );
    let response = send(&url, http().get(&url)).await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    read_json(&url, response).await.map(Some)
}

/// The platform events of `event` published over REST to the local
/// Salesforce at `base_url`, oldest first.
pub async fn published(base_url: &str, event: &str) -> Result<Vec<serde_json::Value>, Error> {
    let url = format!(
        "{}/local/published/{}",
        base_url.trim_end_matches('/'),
        encode(event)
    );
    call(&url, http().get(&url)).await
}

/// Sets the daily API budget of the local Salesforce at `base_url` (calls
/// used, calls allowed, or both).
pub async fn set_limits(base_url: &str, used: Option<u64>, max: Option<u64>) -> Result<(), Error> {
    let url = format!("{}/local/limits", base_url.trim_end_matches('/'));
    let mut body = serde_json::Map::new();
    if let Some(used) = used {
        body.insert("used".into(), used.into());
    }
    if let Some(max) = max {
        body.insert("max".into(), max.into());
    }
    call::<serde_json::Value>(&url, http().post(&url).json(&body))
        .await
        .map(|_| ())
}

/// Sends a console request to `url` and reads the JSON of its answer.
async fn call<T: serde::de::DeserializeOwned>(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<T, Error> {
    let response = send(url, request).await?;
    read_json(url, response).await
}

/// Sends a console request to `url`; no answer is [`Error::Unreachable`].
async fn send(url: &str, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
    request.send().await.map_err(|source| Error::Unreachable {
        url: url.to_owned(),
        source,
    })
}

/// Reads a success's JSON, or turns an error answer into [`Error::Refused`].
async fn read_json<T: serde::de::DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, Error> {
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(Error::Refused {
            status: status.as_u16(),
            body,
        });
    }
    response.json().await.map_err(|source| Error::Unreachable {
        url: url.to_owned(),
        source,
    })
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
