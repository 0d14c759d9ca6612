//! A broker prefix of its own for each test, command envelopes built from
//! `docs/samples`, replies read back from the orchestrator's queue, and the
//! JSON Schemas of `docs/schemas` to validate them.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use jsonschema::{Registry, Validator};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use q2c_contract::{Envelope, Topology};
use q2c_sim::{EffectKind, LedgerEntry, LedgerEvent, Sim, SimSettings};
use serde_json::Value;
use uuid::Uuid;

/// How long a test waits for anything the simulator should do.
pub const DEADLINE: Duration = Duration::from_secs(15);

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One test's broker objects, deleted when it is dropped (even on failure).
pub struct Broker {
    pub amqp_url: String,
    pub topology: Topology,
    pub channel: Channel,
    connection: Connection,
    pub directory: tempfile::TempDir,
}

impl Broker {
    /// A fresh prefix `sim_{uuid}.`, its topology declared.
    pub async fn new() -> Broker {
        let amqp_url = std::env::var("AMQP_URL").expect("AMQP_URL is set (deploy/test.sh sets it)");
        let topology =
            Topology::new(&format!("sim_{}.", Uuid::new_v4().simple())).expect("valid prefix");
        let connection = Connection::connect(&amqp_url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        topology.declare(&channel).await.expect("declare topology");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Broker {
            amqp_url,
            topology,
            channel,
            connection,
            directory: tempfile::tempdir().expect("temporary directory"),
        }
    }

    /// Settings for a simulator on this prefix: every connector, no knobs.
    pub fn settings(&self) -> SimSettings {
        SimSettings::new(self.amqp_url.clone(), self.topology.clone())
    }

    /// Starts a simulator with `settings`.
    pub async fn sim(&self, settings: SimSettings) -> Sim {
        Sim::start(settings).await.expect("the simulator starts")
    }

    /// Publishes a command as q2c does: persistent, mandatory, confirmed.
    pub async fn send(&self, command: &Envelope) {
        self.publish_raw(
            &command.message_type,
            &command.encode(),
            command.properties(),
        )
        .await;
    }

    /// Publishes any body to the commands exchange.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let confirmation = self
            .channel
            .basic_publish(
                self.topology.commands_exchange().as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
        assert!(confirmation.is_ack(), "command refused");
        assert!(confirmation.take_message().is_none(), "command unroutable");
    }

    /// Takes one message from `queue`, if there is one.
    pub async fn take(&self, queue: &str) -> Option<BasicGetMessage> {
        self.channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
    }

    /// The next message of `queue`, failing the test after [`DEADLINE`].
    pub async fn next(&self, queue: &str) -> BasicGetMessage {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(message) = self.take(queue).await {
                return message;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "nothing in {queue} within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The next reply, failing the test after [`DEADLINE`].
    pub async fn reply(&self) -> Reply {
        Reply::of(&self.next(&self.topology.replies_queue()).await)
    }

    /// The next `n` replies.
    pub async fn replies(&self, n: usize) -> Vec<Reply> {
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(self.reply().await);
        }
        replies
    }

    /// The reply answering `command` among the next `n` replies.
    pub fn answer<'r>(replies: &'r [Reply], command: &Envelope) -> &'r Reply {
        let answers: Vec<&Reply> = replies
            .iter()
            .filter(|reply| reply.envelope.correlation_id == command.message_id)
            .collect();
        assert_eq!(answers.len(), 1, "one reply to {}", command.message_type);
        answers[0]
    }

    /// Asserts nothing more waits in the replies queue.
    pub async fn assert_no_more_replies(&self) {
        let extra = self.take(&self.topology.replies_queue()).await;
        assert!(
            extra.is_none(),
            "unexpected reply: {}",
            String::from_utf8_lossy(&extra.unwrap().data)
        );
    }

    /// Ready messages and consumers of `queue`.
    pub async fn depth(&self, queue: &str) -> (u32, u32) {
        let queue = self
            .channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        (queue.message_count(), queue.consumer_count())
    }

    /// A ledger file in this test's directory.
    pub fn ledger_path(&self) -> PathBuf {
        self.directory.path().join("ledger.jsonl")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let (amqp_url, topology) = (self.amqp_url.clone(), self.topology.clone());
        // Drop cannot await and may run inside the test's runtime: delete on
        // a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(connection) =
                    Connection::connect(&amqp_url, ConnectionProperties::default()).await
                    && let Ok(channel) = connection.create_channel().await
                {
                    let _ = topology.delete(&channel).await;
                    let _ = connection.close(200, "test done".into()).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A reply as read from the queue.
#[derive(Debug, Clone)]
pub struct Reply {
    pub envelope: Envelope,
    pub properties: BasicProperties,
    pub routing_key: String,
    pub body: Value,
}

impl Reply {
    fn of(message: &BasicGetMessage) -> Reply {
        Reply {
            envelope: Envelope::decode(&message.data).expect("a reply is an envelope"),
            properties: message.properties.clone(),
            routing_key: message.routing_key.to_string(),
            body: serde_json::from_slice(&message.data).expect("JSON"),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.envelope.message_type.ends_with(".succeeded")
    }

    pub fn retryable(&self) -> Option<bool> {
        self.envelope.payload["retryable"].as_bool()
    }

    pub fn reason(&self) -> &str {
        self.envelope.payload["reason"].as_str().unwrap_or_default()
    }

    /// Asserts it is a valid, well-formed answer to `command`.
    pub fn assert_answers(&self, command: &Envelope) {
        SCHEMAS.assert_valid_message(&self.body);
        let reply = &self.envelope;
        assert_eq!(self.routing_key, reply.message_type, "routed by its type");
        assert!(
            reply.message_type == format!("{}.succeeded", command.message_type)
                || reply.message_type == format!("{}.failed", command.message_type),
            "{} answers {}",
            reply.message_type,
            command.message_type
        );
        assert_eq!(reply.workflow_id, command.workflow_id);
        assert_eq!(reply.step, command.step);
        assert_eq!(reply.attempt, command.attempt);
        assert_eq!(reply.idempotency_key, command.idempotency_key);
        assert_eq!(reply.undoes, command.undoes);
        assert_eq!(reply.traceparent, command.traceparent);
        assert_eq!(reply.correlation_id, command.message_id);
        assert_ne!(reply.message_id, command.message_id);
        assert_eq!(reply.schema_version, 1);
        let properties = &self.properties;
        assert_eq!(
            properties.content_type().as_ref().map(|t| t.as_str()),
            Some("application/json")
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.message_id().as_ref().map(|id| id.to_string()),
            Some(reply.message_id.to_string())
        );
    }
}

/// The schemas of `docs/schemas`, resolved among themselves only.
pub struct Schemas {
    validators: BTreeMap<String, Validator>,
}

pub static SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| {
    let mut schemas = BTreeMap::new();
    for entry in fs::read_dir(docs().join("schemas")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if let Some(stem) = name.strip_suffix(".schema.json") {
            let schema: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
            schemas.insert(stem.to_owned(), schema);
        }
    }
    let mut registry = Registry::new();
    for schema in schemas.values() {
        let id = schema["$id"].as_str().unwrap();
        registry = registry.add(id, schema.clone()).unwrap();
    }
    let registry = registry.prepare().unwrap();
    let validators = schemas
        .iter()
        .map(|(name, schema)| {
            let validator = jsonschema::options()
                .with_registry(&registry)
                .offline()
                .should_validate_formats(true)
                .build(schema)
                .unwrap_or_else(|e| panic!("{name}.schema.json: {e}"));
            (name.clone(), validator)
        })
        .collect();
    Schemas { validators }
});

impl Schemas {
    /// Asserts `message` is a valid envelope whose payload is valid against
    /// the schema named after its type.
    pub fn assert_valid_message(&self, message: &Value) {
        self.assert_valid("envelope", message);
        let message_type = message["type"].as_str().unwrap();
        let schema = if message_type.ends_with(".failed") {
            "failed"
        } else {
            message_type
        };
        self.assert_valid(schema, &message["payload"]);
    }

    fn assert_valid(&self, schema: &str, value: &Value) {
        let validator = self
            .validators
            .get(schema)
            .unwrap_or_else(|| panic!("docs/schemas/{schema}.schema.json is missing"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{value} breaks {schema}.schema.json:\n{}",
            errors.join("\n")
        );
    }
}

/// One workflow's commands, built from the samples with ids of its own.
#[derive(Debug, Clone, Copy)]
pub struct Workflow {
    pub id: Uuid,
}

impl Workflow {
    pub fn new() -> Workflow {
        Workflow { id: Uuid::now_v7() }
    }

    /// The sample command of `command_type`, for this workflow, attempt
    /// `attempt`, with a message id of its own.
    pub fn command(&self, command_type: &str, attempt: u32) -> Envelope {
        let path = docs().join(format!("samples/{command_type}.json"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut command = Envelope::decode(text.as_bytes()).expect("samples decode");
        let forward = format!("{}:{}:r1", self.id, command.step);
        if command.undoes.is_some() {
            command.idempotency_key = format!("{forward}:compensate");
            command.undoes = Some(forward);
        } else {
            command.idempotency_key = forward;
        }
        if command.payload.get("workflow_id").is_some() {
            command.payload["workflow_id"] = Value::String(self.id.to_string());
        }
        command.workflow_id = self.id;
        command.attempt = attempt;
        command.message_id = Uuid::new_v4();
        command.correlation_id = command.message_id;
        command.sent_at = chrono::Utc::now();
        SCHEMAS.assert_valid_message(&serde_json::to_value(&command).unwrap());
        command
    }

    /// The same command's next attempt: same key and payload, new message.
    pub fn retry(command: &Envelope) -> Envelope {
        let mut retry = command.clone();
        retry.attempt += 1;
        retry.message_id = Uuid::new_v4();
        retry.correlation_id = retry.message_id;
        retry.sent_at = chrono::Utc::now();
        retry
    }
}

/// The ledger entries about `key`.
pub fn about<'l>(ledger: &'l [LedgerEntry], key: &str) -> Vec<&'l LedgerEntry> {
    ledger
        .iter()
        .filter(|entry| entry.idempotency_key == key)
        .collect()
}

/// The effects recorded for `key`.
pub fn effects(ledger: &[LedgerEntry], key: &str) -> Vec<EffectKind> {
    about(ledger, key)
        .into_iter()
        .filter_map(|entry| match &entry.event {
            LedgerEvent::Effect { effect, .. } => Some(*effect),
            _ => None,
        })
        .collect()
}

/// `(attempt, cached)` of every reply recorded for `key`.
pub fn replies(ledger: &[LedgerEntry], key: &str) -> Vec<(u32, bool)> {
    about(ledger, key)
        .into_iter()
        .filter_map(|entry| match &entry.event {
            LedgerEvent::Reply { cached, .. } => Some((entry.attempt, *cached)),
            _ => None,
        })
        .collect()
}

/// Asserts no key took effect twice.
pub fn assert_no_effect_twice(ledger: &[LedgerEntry]) {
    let mut seen = std::collections::HashSet::new();
    for entry in ledger {
        if let LedgerEvent::Effect { effect, .. } = &entry.event {
            assert!(
                seen.insert(&entry.idempotency_key),
                "{effect:?} of {} performed twice",
                entry.idempotency_key
            );
        }
    }
}
