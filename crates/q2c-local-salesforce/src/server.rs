//! Starting and stopping a local Salesforce, and the state its gRPC and HTTP
//! servers share.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jsonwebtoken::DecodingKey;
use q2c_pubsub::{ProducerEvent, pub_sub_server::PubSubServer};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::{
    Config, Error, Fault, Published, StatusReport,
    auth::{Authority, Tokens},
    bus::{Topic, encode_replay_id, hex},
    catalog::EventDefinition,
    faults::FaultState,
    grpc, http,
    status::FaultStatus,
};

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
            Fault::Clear => self.faults.send_modify(|f| {
                f.stall = false;
                f.duplicate = false;
                f.garble = false;
                f.refuse_subscribes = 0;
            }),
        }
    }

    pub fn status(&self) -> StatusReport {
        let faults = self.faults.borrow().clone();
        StatusReport {
            org_id: self.org_id.clone(),
            tokens_issued: self.tokens.issued(),
            subscribe_calls: self.subscribe_calls.load(Ordering::Relaxed),
            topics: self
                .topics
                .iter()
                .map(|t| (t.def.topic.clone(), t.status()))
                .collect(),
            faults: FaultStatus {
                stall: faults.stall,
                duplicate: faults.duplicate,
                garble: faults.garble,
                refuse_subscribes: faults.refuse_subscribes,
            },
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
