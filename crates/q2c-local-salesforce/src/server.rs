//! Starting and stopping a local Salesforce, and the state its gRPC and HTTP
//! servers share.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jsonwebtoken::DecodingKey;
use q2c_pubsub::{ProducerEvent, pub_sub_server::PubSubServer};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::{
    Config, Error, Fault, Published, StatusReport,
    auth::{Authority, Tokens},
    bus::{Topic, encode_replay_id, hex, lock},
    catalog::EventDefinition,
    faults::{DEFAULT_VALIDATION_MESSAGE, FaultState},
    grpc, http,
    limits::Budget,
    org::{Hazards, Org},
    sobjects::{self, OPPORTUNITY},
    status::{FaultStatus, RestStatus},
};

/// The event whose publishing through the console also creates its
/// Opportunity, so a status can later be written to it.
const QUOTE_ACCEPTED: &str = "Q2C_Quote_Accepted__e";

/// What the gRPC service, the streams and the HTTP routes share.
pub(crate) struct Shared {
    pub org_id: String,
    pub user_id: String,
    /// The HTTP base URL: instance URL and login URL at once.
    pub instance_url: String,
    pub token_ttl: Duration,
    pub keepalive_interval: Duration,
    pub idle_timeout: Duration,
    pub authority: Authority,
    pub topics: Vec<Arc<Topic>>,
    pub tokens: Tokens,
    pub faults: watch::Sender<FaultState>,
    subscribe_calls: AtomicU64,
    /// Records and events of the REST API.
    pub org: Mutex<Org>,
    /// The daily API budget.
    pub budget: Budget,
    /// REST calls refused before they were read, by error code.
    rest_refused: Mutex<BTreeMap<&'static str, u64>>,
    pub shutdown: CancellationToken,
}

impl Shared {
    /// A topic by its name, `/event/Q2C_Quote_Accepted__e`.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.iter().find(|t| t.def.topic == name).cloned()
    }

    /// A topic by its event's API name (`Q2C_Quote_Accepted__e`) or its
    /// topic name.
    fn event(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .iter()
            .find(|t| t.def.api_name == name || t.def.topic == name)
            .cloned()
    }

    pub fn count_subscribe_call(&self) {
        self.subscribe_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one refusal of the `unavailable` switch, if any is left.
    pub fn take_refusal(&self) -> bool {
        let mut refused = false;
        // No stream needs waking for this, hence `false`.
        self.faults.send_if_modified(|faults| {
            if faults.refuse_subscribes > 0 {
                faults.refuse_subscribes -= 1;
                refused = true;
            }
            false
        });
        refused
    }

    /// Takes one refusal of the `rest-down` or `rest-unavailable` switch,
    /// if either refuses the next REST call.
    pub fn take_rest_refusal(&self) -> bool {
        let mut refused = false;
        self.faults.send_if_modified(|faults| {
            if faults.rest_down {
                refused = true;
            } else if faults.rest_unavailable > 0 {
                faults.rest_unavailable -= 1;
                refused = true;
            }
            false
        });
        refused
    }

    /// Counts a REST call refused before it was read.
    pub fn count_rest_refusal(&self, code: &'static str) {
        *lock(&self.rest_refused).entry(code).or_default() += 1;
    }

    /// The switches a REST write to `object` meets now; takes one
    /// `lock-row` refusal if any is left.
    pub fn write_hazards(&self, object: &str) -> Hazards {
        let mut hazards = Hazards::default();
        self.faults.send_if_modified(|faults| {
            if faults.lock_row > 0 {
                faults.lock_row -= 1;
                hazards.lock_row = true;
            }
            hazards.validation = faults.validation.get(object).cloned();
            false
        });
        hazards
    }

    /// Turns a fault switch.
    pub fn apply(&self, fault: Fault) {
        tracing::info!(?fault, "fault switch");
        match fault {
            Fault::ExpireTokens => {
                self.tokens.expire_all();
                self.faults.send_modify(|f| f.token_epoch += 1);
            }
            Fault::Unavailable { count } => self.faults.send_modify(|f| {
                f.unavailable_epoch += 1;
                f.refuse_subscribes = count;
            }),
            Fault::Stall { on } => self.faults.send_modify(|f| f.stall = on),
            Fault::Duplicate { on } => self.faults.send_modify(|f| f.duplicate = on),
            Fault::Garble { on } => self.faults.send_modify(|f| f.garble = on),
            Fault::ExpireReplayIds => {
                for topic in &self.topics {
                    topic.expire_all();
                }
            }
            Fault::RestUnavailable { count } => {
                self.faults.send_modify(|f| f.rest_unavailable = count);
            }
            Fault::RestDown { on } => self.faults.send_modify(|f| f.rest_down = on),
            Fault::LockRow { count } => self.faults.send_modify(|f| f.lock_row = count),
            Fault::Validation {
                object,
                message,
                on,
            } => {
                // Kept under the object's own spelling, which writes name.
                let object = sobjects::find(&object).map_or(object, |o| o.name.to_owned());
                let message = if message.trim().is_empty() {
                    DEFAULT_VALIDATION_MESSAGE.to_owned()
                } else {
                    message
                };
                self.faults.send_modify(|f| {
                    if on {
                        f.validation.insert(object, message);
                    } else {
                        f.validation.remove(&object);
                    }
                });
            }
            Fault::Clear => self.faults.send_modify(|f| {
                f.stall = false;
                f.duplicate = false;
                f.garble = false;
                f.refuse_subscribes = 0;
                f.rest_unavailable = 0;
                f.rest_down = false;
                f.lock_row = 0;
                f.validation.clear();
            }),
        }
    }

    pub fn status(&self) -> StatusReport {
        let faults = self.faults.borrow().clone();
        let usage = self.budget.usage();
        let rest = {
            let org = lock(&self.org);
            RestStatus {
                api_calls: self.budget.counted(),
                api_usage: usage.used,
                api_max: usage.max,
                refused: lock(&self.rest_refused)
                    .iter()
                    .map(|(code, n)| ((*code).to_owned(), *n))
                    .collect(),
                writes: org.writes(),
                records: org.record_counts(),
                published: org.published_counts(),
            }
        };
        StatusReport {
            org_id: self.org_id.clone(),
            tokens_issued: self.tokens.issued(),
            subscribe_calls: self.subscribe_calls.load(Ordering::Relaxed),
            topics: self
                .topics
                .iter()
                .map(|t| (t.def.topic.clone(), t.status()))
                .collect(),
            rest,
            faults: FaultStatus {
                stall: faults.stall,
                duplicate: faults.duplicate,
                garble: faults.garble,
                refuse_subscribes: faults.refuse_subscribes,
                rest_unavailable: faults.rest_unavailable,
                rest_down: faults.rest_down,
                lock_row: faults.lock_row,
                validation: faults.validation,
            },
        }
    }

    /// Creates a record past the API: `fields` may carry its `Id`.
    pub fn create_record(&self, object: &str, fields: &Value) -> Result<String, Error> {
        let sobject = sobjects::find(object)
            .filter(|o| !o.is_event())
            .ok_or_else(|| Error::UnknownObject(object.to_owned()))?;
        let Value::Object(fields) = fields else {
            return Err(Error::NotJson(format!("expected an object, got {fields}")));
        };
        let mut fields = fields.clone();
        let id_key = fields
            .keys()
            .find(|k| k.eq_ignore_ascii_case("Id"))
            .cloned();
        let id = match id_key.and_then(|key| fields.remove(&key)) {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.trim().is_empty() => Some(id),
            Some(other) => {
                return Err(Error::InvalidRecord(format!(
                    "Id must be a non-empty string, not {other}"
                )));
            }
        };
        let mut org = lock(&self.org);
        if let Some(id) = &id
            && org.exists(sobject, id)
        {
            return Err(Error::RecordExists {
                object: sobject.name.to_owned(),
                id: id.clone(),
            });
        }
        let id = org
            .insert(sobject, id.as_deref(), &Value::Object(fields))
            .map_err(|e| Error::InvalidRecord(e.message()))?;
        tracing::info!(object = sobject.name, %id, "record created from the console");
        Ok(id)
    }

    /// A record as the REST API shows it.
    pub fn record(&self, object: &str, id: &str) -> Option<Value> {
        let object = sobjects::find(object).filter(|o| !o.is_event())?;
        lock(&self.org)
            .get(object, id, crate::org::API_VERSION)
            .ok()
    }

    /// The first record whose `field` holds `value`.
    pub fn record_by(&self, object: &str, field: &str, value: &str) -> Option<Value> {
        let object = sobjects::find(object).filter(|o| !o.is_event())?;
        lock(&self.org).find(object, field, value)
    }

    /// The platform events of `event` published over REST, oldest first.
    pub fn published(&self, event: &str) -> Option<Vec<Value>> {
        let event = sobjects::find(event).filter(|o| o.is_event())?;
        Some(lock(&self.org).published(event))
    }

    /// Creates the Opportunity a quote-accepted event names, unless it
    /// exists: named after the quote, closed won, for its net amount.
    fn ensure_opportunity(&self, fields: &serde_json::Map<String, Value>) {
        let Some(id) = fields
            .get("Opportunity_Id__c")
            .and_then(Value::as_str)
            .filter(|id| !id.trim().is_empty())
        else {
            return;
        };
        let Some(object) = sobjects::find(OPPORTUNITY) else {
            return;
        };
        let mut org = lock(&self.org);
        if org.exists(object, id) {
            return;
        }
        let of_type = |name: &str, check: fn(&Value) -> bool| {
            fields
                .get(name)
                .filter(|v| check(v))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let record = json!({
            "Name": of_type("Quote_Number__c", Value::is_string),
            "StageName": "Closed Won",
            "Amount": of_type("Net_Amount__c", Value::is_number),
        });
        match org.insert(object, Some(id), &record) {
            Ok(id) => tracing::info!(%id, "Opportunity of an accepted quote created"),
            Err(error) => {
                tracing::warn!(error = %error.message(), "cannot create the accepted quote's Opportunity");
            }
        }
    }

    /// Publishes an event given as JSON fields in Salesforce names.
    pub fn publish_fields(
        &self,
        event: &str,
        fields: &serde_json::Value,
        id: Option<&str>,
    ) -> Result<Published, Error> {
        let topic = self
            .event(event)
            .ok_or_else(|| Error::UnknownEvent(event.to_owned()))?;
        let fields = fields
            .as_object()
            .ok_or_else(|| Error::NotJson(format!("expected an object, got {fields}")))?;
        let id = match id {
            Some(id) => uuid::Uuid::parse_str(id)
                .map_err(|_| Error::InvalidEvent(format!("the event id {id:?} is not a UUID")))?
                .to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        let mut payload = topic
            .def
            .encode_fields(fields, chrono::Utc::now().timestamp_millis(), &self.user_id)
            .map_err(Error::InvalidEvent)?;
        if self.faults.borrow().garble {
            // The first field (CreatedDate, a long) keeps its bytes; the
            // rest is gone, so the datum ends in the middle of the record.
            payload.truncate(payload.len().min(3));
        }
        let replay = topic
            .append(vec![ProducerEvent {
                id: id.clone(),
                schema_id: topic.def.schema_id.clone(),
                payload,
                headers: Vec::new(),
            }])
            .first()
            .copied()
            .unwrap_or_default();
        tracing::info!(topic = %topic.def.topic, %id, replay, "event published from the console");
        if topic.def.api_name == QUOTE_ACCEPTED {
            self.ensure_opportunity(fields);
        }
        Ok(Published {
            id,
            replay_id: hex(&encode_replay_id(replay)),
            topic: topic.def.topic.clone(),
        })
    }
}

/// A running local Salesforce. Dropping it (or [`LocalSalesforce::shutdown`])
/// stops both servers and ends every open stream.
pub struct LocalSalesforce {
    shared: Arc<Shared>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    grpc_task: Option<JoinHandle<Result<(), Error>>>,
    http_task: Option<JoinHandle<Result<(), Error>>>,
}

/// Starts a local Salesforce: binds both listeners (so the addresses are
/// known, even with port 0, when this returns) and serves in the background
/// until the handle is shut down or dropped.
pub async fn start(config: Config) -> Result<LocalSalesforce, Error> {
    config.validate()?;
    // Feature unification could enable a second jsonwebtoken backend;
    // naming the pure-Rust one keeps verification from panicking then. An
    // error only means a provider was installed already.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    // Likewise for TLS: HTTP clients in this process (the console's, a
    // subscriber's login) need a provider when reqwest is built without one.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let jwt_key = config
        .jwt_public_key_pem
        .as_deref()
        .map(|pem| DecodingKey::from_rsa_pem(pem.as_bytes()))
        .transpose()
        .map_err(Error::JwtKey)?;
    let definitions = EventDefinition::all()?;

    let bind = |addr: SocketAddr| async move {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        Ok::<_, Error>((listener, local))
    };
    let (grpc_listener, grpc_addr) = bind(config.grpc_addr).await?;
    let (http_listener, http_addr) = bind(config.http_addr).await?;
    let instance_url = format!("http://{}", reachable(http_addr));

    let shared = Arc::new(Shared {
        org_id: config.org_id,
        user_id: config.user_id,
        token_ttl: config.token_ttl,
        keepalive_interval: config.keepalive_interval,
        idle_timeout: config.idle_timeout,
        authority: Authority {
            client_id: config.client_id,
            client_secret: config.client_secret,
            username: config.username,
            base_url: instance_url.clone(),
            jwt_key,
        },
        instance_url,
        topics: definitions
            .into_iter()
            .map(|def| Arc::new(Topic::new(def, config.retention)))
            .collect(),
        tokens: Tokens::default(),
        faults: watch::Sender::new(FaultState::default()),
        subscribe_calls: AtomicU64::new(0),
        org: Mutex::default(),
        budget: Budget::new(config.api_daily_limit),
        rest_refused: Mutex::default(),
        shutdown: CancellationToken::new(),
    });

    let grpc_server = tonic::transport::Server::builder()
        .add_service(PubSubServer::new(grpc::Service {
            shared: Arc::clone(&shared),
        }))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(grpc_listener),
            shared.shutdown.clone().cancelled_owned(),
        );
    let stop = shared.shutdown.clone();
    let grpc_task = tokio::spawn(async move {
        let result = grpc_server.await.map_err(Error::Grpc);
        // One server failing stops the other: half an org helps nobody.
        stop.cancel();
        result
    });

    let http_server = axum::serve(http_listener, http::router(Arc::clone(&shared)))
        .with_graceful_shutdown(shared.shutdown.clone().cancelled_owned());
    let stop = shared.shutdown.clone();
    let http_task = tokio::spawn(async move {
        let result = http_server.await.map_err(Error::Http);
        stop.cancel();
        result
    });

    tracing::info!(%grpc_addr, %http_addr, org_id = %shared.org_id, "local Salesforce started");
    Ok(LocalSalesforce {
        shared,
        grpc_addr,
        http_addr,
        grpc_task: Some(grpc_task),
        http_task: Some(http_task),
    })
}

/// The address to put in URLs: a wildcard bind is reached over loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

impl LocalSalesforce {
    /// Where the Pub/Sub API listens, e.g. to connect a tonic channel.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The Pub/Sub API endpoint as a URL (`http://127.0.0.1:port`, plain
    /// HTTP/2: there is no TLS locally).
    pub fn grpc_url(&self) -> String {
        format!("http://{}", reachable(self.grpc_addr))
    }

    /// Where the HTTP server (token endpoint and console) listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The HTTP base URL: the console lives under `/local/`.
    pub fn http_url(&self) -> String {
        self.shared.instance_url.clone()
    }

    /// The login URL a client posts `/services/oauth2/token` to (the same
    /// base as [`LocalSalesforce::http_url`]).
    pub fn login_url(&self) -> String {
        self.shared.instance_url.clone()
    }

    /// The instance URL tokens name and `instanceurl` must carry (again the
    /// same base).
    pub fn instance_url(&self) -> String {
        self.shared.instance_url.clone()
    }

    /// The org id: what `tenantid` must carry.
    pub fn org_id(&self) -> &str {
        &self.shared.org_id
    }

    /// The user the tokens are issued to.
    pub fn user_id(&self) -> &str {
        &self.shared.user_id
    }

    /// The connected app's client id.
    pub fn client_id(&self) -> &str {
        &self.shared.authority.client_id
    }

    /// The username the JWT bearer flow expects as `sub`.
    pub fn username(&self) -> &str {
        &self.shared.authority.username
    }

    /// The schema id of an event (by API name or topic name), to compare
    /// with what `GetTopic` answers.
    pub fn schema_id(&self, event: &str) -> Option<String> {
        self.shared.event(event).map(|t| t.def.schema_id.clone())
    }

    /// Turns a fault switch, as `POST /local/faults/...` does.
    pub fn apply(&self, fault: Fault) {
        self.shared.apply(fault);
    }

    /// What `GET /local/status` answers.
    pub fn status(&self) -> StatusReport {
        self.shared.status()
    }

    /// Publishes an event given as JSON fields, as `POST /local/events/...`
    /// does; `id` sets the event id (a UUID), otherwise a fresh one is made.
    pub fn publish(
        &self,
        event: &str,
        fields: &serde_json::Value,
        id: Option<&str>,
    ) -> Result<Published, Error> {
        self.shared.publish_fields(event, fields, id)
    }

    /// A record as `GET /services/data/v62.0/sobjects/{object}/{id}` shows
    /// it (`attributes`, `Id`, every field), or `None`: how a test sees
    /// what a client wrote.
    pub fn record(&self, object: &str, id: &str) -> Option<serde_json::Value> {
        self.shared.record(object, id)
    }

    /// The first record of `object` (by id) whose `field` holds `value`
    /// (text, or a number written as text), e.g. the `Q2C_Quote_Status__c`
    /// whose `Q2C_Quote_Id__c` is a quote's id.
    pub fn record_by(&self, object: &str, field: &str, value: &str) -> Option<serde_json::Value> {
        self.shared.record_by(object, field, value)
    }

    /// The platform events of `event` (e.g. `Q2C_Order_Status__e`)
    /// published over REST, oldest first, each with `Id`, `CreatedDate`,
    /// `CreatedById` and the fields given; empty for an unknown event.
    pub fn published(&self, event: &str) -> Vec<serde_json::Value> {
        self.shared.published(event).unwrap_or_default()
    }

    /// Creates a record as `POST /local/records/{object}` does, so a test
    /// can set up what a client will write to: `fields` is a JSON object in
    /// Salesforce names, with an optional `Id` (a fresh id otherwise).
    /// Switches and validation rules do not apply, and no API call is
    /// counted. Answers the record's id.
    pub fn create_record(&self, object: &str, fields: &serde_json::Value) -> Result<String, Error> {
        self.shared.create_record(object, fields)
    }

    /// Sets the daily API budget's calls used, calls allowed, or both, as
    /// `POST /local/limits` does: to bring a client near or past the limit.
    pub fn set_limits(&self, used: Option<u64>, max: Option<u64>) {
        let usage = self.shared.budget.set(used, max);
        tracing::info!(used = usage.used, max = usage.max, "API limits set");
    }

    /// Stops both servers, ending every open stream with
    /// `service.unavailable`, and waits for them.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.shared.shutdown.cancel();
        self.join().await
    }

    /// Resolves once the servers are stopping: after [`LocalSalesforce::shutdown`]
    /// began, or after either server failed.
    pub(crate) async fn stopping(&self) {
        self.shared.shutdown.cancelled().await;
    }

    async fn join(&mut self) -> Result<(), Error> {
        let mut outcome = Ok(());
        for task in [self.grpc_task.take(), self.http_task.take()]
            .into_iter()
            .flatten()
        {
            let result = flatten(task.await);
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    }
}

fn flatten(result: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    match result {
        Ok(result) => result,
        Err(e) => Err(Error::Panicked(e)),
    }
}

impl Drop for LocalSalesforce {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
