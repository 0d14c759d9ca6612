//! What every test needs: a local Salesforce on free ports, a token, a
//! Pub/Sub client that sends the auth metadata, and a subscription whose
//! next message is awaited with a deadline (never a sleep).

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)]

use std::time::Duration;

use q2c_local_salesforce::{Config, LocalSalesforce};
use q2c_pubsub::{
    FetchRequest, FetchResponse, ReplayPreset, TopicRequest, pub_sub_client::PubSubClient,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming, transport::Channel};

/// How long a test waits for something that should happen.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How long a test watches for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(600);

pub const ACCEPTED: &str = "/event/Q2C_Quote_Accepted__e";
pub const CANCELLED: &str = "/event/Q2C_Quote_Cancelled__e";

pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A local Salesforce with the test key, changed by `adjust`.
pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> LocalSalesforce {
    let mut config = Config::for_tests();
    config.jwt_public_key_pem = Some(fixture("jwt-public.pem"));
    adjust(&mut config);
    q2c_local_salesforce::start(config).await.unwrap()
}

pub async fn start() -> LocalSalesforce {
    start_with(|_| {}).await
}

/// Posts a token request form and answers the status and JSON body.
pub async fn token_request(sf: &LocalSalesforce, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", sf.login_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A token by the client-credentials flow.
pub async fn token(sf: &LocalSalesforce) -> String {
    let (status, body) = token_request(
        sf,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", q2c_local_salesforce::DEFAULT_CLIENT_ID),
            ("client_secret", q2c_local_salesforce::DEFAULT_CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// The metadata every RPC carries.
#[derive(Clone)]
pub struct Auth {
    pub token: String,
    pub instance_url: String,
    pub tenant_id: String,
}

impl Auth {
    pub async fn new(sf: &LocalSalesforce) -> Self {
        Self {
            token: token(sf).await,
            instance_url: sf.instance_url(),
            tenant_id: sf.org_id().to_owned(),
        }
    }

    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if !self.token.is_empty() {
            metadata.insert("accesstoken", self.token.parse().unwrap());
        }
        metadata.insert("instanceurl", self.instance_url.parse().unwrap());
        metadata.insert("tenantid", self.tenant_id.parse().unwrap());
        request
    }
}

pub async fn client(sf: &LocalSalesforce) -> PubSubClient<Channel> {
    PubSubClient::connect(sf.grpc_url()).await.unwrap()
}

/// The Pub/Sub error code a status carries in its trailers, without the
/// common prefix.
pub fn error_code(status: &Status) -> String {
    let code = status
        .metadata()
        .get("error-code")
        .unwrap_or_else(|| panic!("no error-code in {status:?}"))
        .to_str()
        .unwrap();
    assert!(
        status.metadata().get("rpc-id").is_some(),
        "no rpc-id in {status:?}"
    );
    code.strip_prefix(q2c_local_salesforce::ERROR_CODE_PREFIX)
        .unwrap_or_else(|| panic!("unexpected error code {code}"))
        .to_owned()
}

/// A local Salesforce changed by `adjust`, a token for it and a Pub/Sub
/// client: the start of most Pub/Sub tests.
pub async fn connect_with(
    adjust: impl FnOnce(&mut Config),
) -> (LocalSalesforce, Auth, PubSubClient<Channel>) {
    let sf = start_with(adjust).await;
    let auth = Auth::new(&sf).await;
    let client = client(&sf).await;
    (sf, auth, client)
}

pub async fn connect() -> (LocalSalesforce, Auth, PubSubClient<Channel>) {
    connect_with(|_| {}).await
}

/// A connected local Salesforce with one accepted event, and a stream from
/// the earliest that has received it: the start of the tests that break a
/// stream in flight.
pub async fn streaming() -> (LocalSalesforce, Auth, PubSubClient<Channel>, Sub) {
    let (sf, auth, mut client) = connect().await;
    publish_accepted(&sf, 1);
    let mut sub = subscribe(&mut client, &auth, accepted_earliest(5)).await;
    sub.events().await;
    (sf, auth, client, sub)
}

pub fn topic_request(name: &str) -> TopicRequest {
    TopicRequest {
        topic_name: name.to_owned(),
    }
}

pub fn fetch(topic: &str, preset: ReplayPreset, replay_id: Vec<u8>, n: i32) -> FetchRequest {
    FetchRequest {
        topic_name: topic.to_owned(),
        replay_preset: preset.into(),
        replay_id,
        num_requested: n,
        auth_refresh: String::new(),
    }
}

/// A first request for the accepted events from the earliest, `n` of them.
pub fn accepted_earliest(n: i32) -> FetchRequest {
    fetch(ACCEPTED, ReplayPreset::Earliest, Vec::new(), n)
}

/// A first request for the accepted events published from now on, `n` of
/// them.
pub fn accepted_latest(n: i32) -> FetchRequest {
    fetch(ACCEPTED, ReplayPreset::Latest, Vec::new(), n)
}

/// Opens a stream whose Subscribe call the server accepts (it may still end
/// the stream with an error); `first` is its first request.
pub async fn subscribe(
    client: &mut PubSubClient<Channel>,
    auth: &Auth,
    first: FetchRequest,
) -> Sub {
    Sub::open(client, auth, first)
        .await
        .expect("the server refused the Subscribe call")
}

/// An open Subscribe stream: requests go in through `requests`.
pub struct Sub {
    pub requests: mpsc::Sender<FetchRequest>,
    pub responses: Streaming<FetchResponse>,
}

impl Sub {
    /// Opens a stream and sends its first FetchRequest.
    pub async fn open(
        client: &mut PubSubClient<Channel>,
        auth: &Auth,
        first: FetchRequest,
    ) -> Result<Self, Status> {
        let (requests, rx) = mpsc::channel(16);
        requests.send(first).await.unwrap();
        let responses = client
            .subscribe(auth.request(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    pub async fn request(&self, n: i32) {
        self.requests
            .send(FetchRequest {
                num_requested: n,
                ..FetchRequest::default()
            })
            .await
            .unwrap();
    }

    /// The next message, which must come before the deadline.
    pub async fn next(&mut self) -> Result<Option<FetchResponse>, Status> {
        tokio::time::timeout(DEADLINE, self.responses.message())
            .await
            .expect("no message from the stream before the deadline")
    }

    /// The next response, which must be one.
    pub async fn response(&mut self) -> FetchResponse {
        self.next()
            .await
            .expect("the stream failed")
            .expect("the stream ended")
    }

    /// The next response that carries events (keepalives skipped).
    pub async fn events(&mut self) -> FetchResponse {
        loop {
            let response = self.response().await;
            if !response.events.is_empty() {
                return response;
            }
        }
    }

    /// The error that ends the stream (responses before it skipped).
    pub async fn error(&mut self) -> Status {
        loop {
            match self.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => return status,
            }
        }
    }

    /// Asserts nothing arrives for a while.
    pub async fn quiet(&mut self) {
        if let Ok(message) = tokio::time::timeout(QUIET, self.responses.message()).await {
            panic!("expected silence, got {message:?}");
        }
    }
}

/// Fields of a quote-accepted event.
pub fn accepted_fields(quote: &str) -> Value {
    json!({
        "Quote_Id__c": quote,
        "Quote_Number__c": "Q-00042",
        "Account_Id__c": "001LOCAL",
        "Currency_Iso_Code__c": "EUR",
        "Net_Amount__c": 1250.5,
        "Lines__c": "[{\"product_code\":\"SKU-1\",\"quantity\":1,\"net_total\":1250.50}]",
    })
}

/// Publishes `n` accepted events through the handle; answers their ids.
pub fn publish_accepted(sf: &LocalSalesforce, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            sf.publish(
                "Q2C_Quote_Accepted__e",
                &accepted_fields(&format!("a0q{i}")),
                None,
            )
            .unwrap()
            .id
        })
        .collect()
}

pub fn replay(counter: u64) -> Vec<u8> {
    counter.to_be_bytes().to_vec()
}

/// The event ids in a response.
pub fn ids(response: &FetchResponse) -> Vec<String> {
    response
        .events
        .iter()
        .map(|e| e.event.as_ref().unwrap().id.clone())
        .collect()
}

/// The replay ids (as counters) in a response.
pub fn replays(response: &FetchResponse) -> Vec<u64> {
    response
        .events
        .iter()
        .map(|e| u64::from_be_bytes(e.replay_id.as_slice().try_into().unwrap()))
        .collect()
}
