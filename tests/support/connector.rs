//! A connector for tests: it speaks only the message contract, follows its
//! rules (dedupe on the idempotency key, cache successes and non-retryable
//! failures, tombstones for compensations that arrive first), and keeps a
//! ledger of every delivery and every effect so tests can prove that no
//! effect happened twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use q2c_contract::{DOMAINS, Envelope, ReplyKind, Topology};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::World;

/// Opens a channel on a new connection.
pub async fn channel(amqp_url: &str) -> Result<Channel, lapin::Error> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    connection.create_channel().await
}

/// How the connector misbehaves, when asked to.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Command types whose first attempt gets no reply at all.
    pub ignore_first_attempt_of: Vec<String>,
    /// Command types declined for good.
    pub decline: Vec<String>,
    /// Publish every reply twice, with the same message id.
    pub duplicate_replies: bool,
    /// Replies to commands whose key ends with this are held back (the
    /// effect still happens) until [`Connector::release_held`].
    pub hold_replies_to: Option<String>,
}

/// One command as it was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub workflow_id: uuid::Uuid,
    pub command_type: String,
    pub step: String,
    pub key: String,
    pub attempt: u32,
}

/// One effect the connector performed (or undid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub workflow_id: uuid::Uuid,
    pub command_type: String,
    pub key: String,
}

/// Everything the connector saw and did.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub deliveries: Vec<Delivered>,
    pub effects: Vec<Effect>,
}

impl Ledger {
    /// Asserts each key's effect happened at most once, and each step of
    /// each workflow used one key.
    pub fn assert_no_effect_twice(&self) {
        let mut seen = HashSet::new();
        for effect in &self.effects {
            assert!(
                seen.insert(&effect.key),
                "effect of {} performed twice",
                effect.key
            );
        }
        let mut keys: HashMap<(uuid::Uuid, &str, bool), HashSet<&str>> = HashMap::new();
        for delivery in &self.deliveries {
            let compensation = delivery.key.ends_with(":compensate");
            keys.entry((delivery.workflow_id, delivery.step.as_str(), compensation))
                .or_default()
                .insert(delivery.key.as_str());
        }
        for ((workflow, step, _), keys) in keys {
            assert_eq!(
                keys.len(),
                1,
                "workflow {workflow} step {step} used keys {keys:?}"
            );
        }
    }

    pub fn effects_of(&self, command_type: &str) -> usize {
        self.effects
            .iter()
            .filter(|effect| effect.command_type == command_type)
            .count()
    }

    pub fn deliveries_of(&self, command_type: &str) -> Vec<&Delivered> {
        self.deliveries
            .iter()
            .filter(|delivery| delivery.command_type == command_type)
            .collect()
    }
}

#[derive(Default)]
struct Memory {
    ledger: Ledger,
    replies: HashMap<String, (ReplyKind, Value)>,
    performed: HashSet<String>,
    tombstones: HashSet<String>,
    /// Replies held back, in the order they were made.
    held: Vec<Envelope>,
}

/// A running test connector serving every domain.
pub struct Connector {
    memory: Arc<Mutex<Memory>>,
    task: JoinHandle<()>,
}

impl Connector {
    /// Starts consuming every domain's command queue of `world`.
    pub async fn start(world: &World, behaviour: Behaviour) -> Connector {
        let connection = Connection::connect(&world.amqp_url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let consume = connection.create_channel().await.expect("channel");
        world
            .topology
            .declare(&consume)
            .await
            .expect("declare topology");
        let publish = connection.create_channel().await.expect("channel");
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut streams = Vec::new();
        for domain in DOMAINS {
            let consumer = consume
                .basic_consume(
                    world.topology.command_queue(domain).as_str().into(),
                    format!("test-connector-{domain}").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            streams.push(consumer);
        }
        let memory = Arc::new(Mutex::new(Memory::default()));
        let topology = world.topology.clone();
        let task = tokio::spawn({
            let memory = memory.clone();
            async move {
                let _connection = connection;
                let mut deliveries = futures_util::stream::select_all(streams);
                while let Some(Ok(delivery)) = deliveries.next().await {
                    let envelope =
                        Envelope::decode(&delivery.data).expect("commands are envelopes");
                    let reply = respond(&memory, &behaviour, &envelope);
                    if let Some((kind, payload)) = reply {
                        let reply = Envelope::reply_to(
                            &envelope,
                            kind,
                            uuid::Uuid::now_v7(),
                            chrono::Utc::now(),
                            payload,
                        );
                        let hold = behaviour
                            .hold_replies_to
                            .as_deref()
                            .is_some_and(|suffix| envelope.idempotency_key.ends_with(suffix));
                        if hold {
                            memory.lock().expect("memory").held.push(reply);
                        } else {
                            let copies = if behaviour.duplicate_replies { 2 } else { 1 };
                            for _ in 0..copies {
                                publish_reply(&publish, &topology, &reply).await;
                            }
                        }
                    }
                    delivery.ack(BasicAckOptions::default()).await.expect("ack");
                }
            }
        });
        Connector { memory, task }
    }

    /// A copy of the ledger as it stands.
    pub fn ledger(&self) -> Ledger {
        self.memory.lock().expect("ledger").ledger.clone()
    }

    /// Publishes the replies held back, in order; returns how many.
    pub async fn release_held(&self, world: &World) -> usize {
        let held = std::mem::take(&mut self.memory.lock().expect("memory").held);
        let channel = channel(&world.amqp_url).await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        for reply in &held {
            publish_reply(&channel, &world.topology, reply).await;
        }
        held.len()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

async fn publish_reply(channel: &Channel, topology: &Topology, reply: &Envelope) {
    q2c_contract::reply::publish(channel, topology, reply)
        .await
        .expect("reply confirmed and routed");
}

/// The contract's rules for one command; `None` means no reply.
fn respond(
    memory: &Mutex<Memory>,
    behaviour: &Behaviour,
    command: &Envelope,
) -> Option<(ReplyKind, Value)> {
    let mut memory = memory.lock().expect("memory");
    let key = command.idempotency_key.clone();
    memory.ledger.deliveries.push(Delivered {
        workflow_id: command.workflow_id,
        command_type: command.message_type.clone(),
        step: command.step.clone(),
        key: key.clone(),
        attempt: command.attempt,
    });
    if command.attempt == 1
        && behaviour
            .ignore_first_attempt_of
            .contains(&command.message_type)
    {
        return None;
    }
    if let Some(cached) = memory.replies.get(&key) {
        return Some(cached.clone());
    }
    let reply = if memory.tombstones.contains(&key) {
        (
            ReplyKind::Failed,
            json!({"retryable": false, "reason": "already compensated before it arrived"}),
        )
    } else if let Some(undoes) = &command.undoes {
        if memory.performed.contains(undoes) {
            record_effect(&mut memory, command);
        } else {
            memory.tombstones.insert(undoes.clone());
        }
        (ReplyKind::Succeeded, json!({}))
    } else if behaviour.decline.contains(&command.message_type) {
        (
            ReplyKind::Failed,
            json!({"retryable": false, "reason": "declined"}),
        )
    } else {
        record_effect(&mut memory, command);
        memory.performed.insert(key.clone());
        (ReplyKind::Succeeded, output_for(command))
    };
    memory.replies.insert(key, reply.clone());
    Some(reply)
}

fn record_effect(memory: &mut Memory, command: &Envelope) {
    memory.ledger.effects.push(Effect {
        workflow_id: command.workflow_id,
        command_type: command.message_type.clone(),
        key: command.idempotency_key.clone(),
    });
}

fn output_for(command: &Envelope) -> Value {
    let short = &command.workflow_id.simple().to_string()[..8];
    match command.message_type.as_str() {
        "erp.create_order" => json!({"order_id": format!("ORD-{short}")}),
        "billing.issue_invoice" => json!({"invoice_id": format!("INV-{short}")}),
        "payment.collect" => json!({"payment_id": format!("PAY-{short}")}),
        _ => json!({}),
    }
}
