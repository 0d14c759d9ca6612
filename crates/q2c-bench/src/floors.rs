//! The floors: what the database and the broker under the orchestrator can
//! do at best, measured on the same database and broker in the same run.
//! Absolute figures on a shared machine drift from run to run; q2c's
//! figures as ratios of these do not.
//!
//! - The transition floor is the bare transaction a saga step needs:
//!   update the workflow's state, insert its command into the outbox,
//!   delete it once sent; rows of the size this run's workflows and
//!   commands have; at 1 client and at 16.
//! - The request/reply floor is one persistent message to a quorum queue,
//!   confirmed, consumed by a responder that publishes a persistent,
//!   confirmed answer to another quorum queue and only then acks, and the
//!   answer consumed: a step's round trip with nothing of q2c in it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use q2c_contract::Topology;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::types::Json;
use tokio::task::JoinSet;

use crate::Error;
use crate::figures::Percentiles;

/// Transactions per client at 1 client, after a warm-up.
const SINGLE_CLIENT_TRANSACTIONS: usize = 500;
/// Transactions per client at 16 clients.
const MANY_CLIENTS_TRANSACTIONS: usize = 200;
/// Clients of the many-client floor.
const MANY_CLIENTS: usize = 16;
/// Round trips of the request/reply floor, after a warm-up.
const ROUND_TRIPS: usize = 500;
/// Untimed transactions and round trips first.
const WARM_UP: usize = 50;
/// How long the broker may take to confirm or deliver.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// One transaction floor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransactionFloor {
    /// Clients committing at once.
    pub clients: usize,
    /// Commits per second, all clients together.
    pub per_second: f64,
    /// One transaction, begin to commit.
    pub latency: Percentiles,
}

/// Every floor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Floors {
    /// The transition transaction at 1 client.
    pub transition_1_client: TransactionFloor,
    /// The transition transaction at 16 clients.
    pub transition_16_clients: TransactionFloor,
    /// A confirmed request and its confirmed reply.
    pub request_reply: Percentiles,
    /// Bytes of state each transaction writes (this run's average).
    pub state_bytes: usize,
    /// Bytes of command each transaction writes (this run's average).
    pub command_bytes: usize,
}

/// The floor's queues, so the run can delete them.
pub fn queue_names(topology: &Topology) -> [String; 2] {
    [
        format!("{}floor.requests", topology.prefix()),
        format!("{}floor.replies", topology.prefix()),
    ]
}

/// Measures every floor; `pool` is on the run's database with at least 16
/// connections, and nothing else should be running.
pub async fn measure(
    pool: &PgPool,
    amqp_url: &str,
    topology: &Topology,
    (state_bytes, command_bytes): (usize, usize),
) -> Result<Floors, Error> {
    let rows = Rows::create(pool, state_bytes, command_bytes).await?;
    rows.run(pool, 1, WARM_UP).await?;
    let transition_1_client = rows.run(pool, 1, SINGLE_CLIENT_TRANSACTIONS).await?;
    rows.run(pool, MANY_CLIENTS, WARM_UP).await?;
    let transition_16_clients = rows
        .run(pool, MANY_CLIENTS, MANY_CLIENTS_TRANSACTIONS)
        .await?;
    let request_reply = request_reply(amqp_url, topology).await?;
    Ok(Floors {
        transition_1_client,
        transition_16_clients,
        request_reply,
        state_bytes,
        command_bytes,
    })
}

/// The floor's tables and the values it writes.
struct Rows {
    /// JSON text, stored as the workflows' state is.
    state: String,
    command: serde_json::Value,
}

/// Rows per client, so that clients never wait on each other's locks, as
/// different workflows do not.
const ROWS_PER_CLIENT: i64 = 64;

impl Rows {
    async fn create(
        pool: &PgPool,
        state_bytes: usize,
        command_bytes: usize,
    ) -> Result<Self, Error> {
        let database = |source| Error::Database {
            doing: "creating the floor's tables",
            source,
        };
        for statement in [
            "CREATE TABLE floor_state (id bigint PRIMARY KEY, version bigint NOT NULL, \
             state text NOT NULL, updated_at timestamptz NOT NULL)",
            "CREATE TABLE floor_outbox (id bigserial PRIMARY KEY, workflow_id bigint NOT NULL, \
             body jsonb NOT NULL, created_at timestamptz NOT NULL)",
        ] {
            sqlx::query(statement)
                .execute(pool)
                .await
                .map_err(database)?;
        }
        let rows = Self {
            state: padded(state_bytes).to_string(),
            command: padded(command_bytes),
        };
        sqlx::query(
            "INSERT INTO floor_state (id, version, state, updated_at) \
             SELECT id, 1, $2, now() FROM generate_series(1, $1) AS id",
        )
        .bind(ROWS_PER_CLIENT * MANY_CLIENTS as i64)
        .bind(&rows.state)
        .execute(pool)
        .await
        .map_err(database)?;
        Ok(rows)
    }

    /// `per_client` transactions on each of `clients` connections at once.
    async fn run(
        &self,
        pool: &PgPool,
        clients: usize,
        per_client: usize,
    ) -> Result<TransactionFloor, Error> {
        let started = Instant::now();
        let mut tasks: JoinSet<Result<Vec<f64>, sqlx::Error>> = JoinSet::new();
        for client in 0..clients {
            let (pool, state, command) = (pool.clone(), self.state.clone(), self.command.clone());
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for n in 0..per_client {
                    let id = client as i64 * ROWS_PER_CLIENT + (n as i64 % ROWS_PER_CLIENT) + 1;
                    let began = Instant::now();
                    transition(&pool, id, &state, &command).await?;
                    latencies.push(began.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(latencies)
            });
        }
        let mut latencies = Vec::with_capacity(clients * per_client);
        while let Some(finished) = tasks.join_next().await {
            let finished = finished.map_err(|_| Error::Panicked("a floor client"))?;
            latencies.extend(finished.map_err(|source| Error::Database {
                doing: "running the transition floor",
                source,
            })?);
        }
        let seconds = started.elapsed().as_secs_f64();
        let count = latencies.len();
        let latency = Percentiles::of(latencies)
            .ok_or_else(|| Error::Refused("the floor ran no transactions".into()))?;
        Ok(TransactionFloor {
            clients,
            per_second: count as f64 / seconds,
            latency,
        })
    }
}

/// The bare transition: new state, a command in, the command out.
async fn transition(
    pool: &PgPool,
    id: i64,
    state: &str,
    command: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE floor_state SET version = version + 1, state = $2, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .execute(&mut *tx)
    .await?;
    let sent: i64 = sqlx::query_scalar(
        "INSERT INTO floor_outbox (workflow_id, body, created_at) VALUES ($1, $2, now()) RETURNING id",
    )
    .bind(id)
    .bind(Json(command))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM floor_outbox WHERE id = $1")
        .bind(sent)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A JSON object of about `bytes` bytes.
fn padded(bytes: usize) -> serde_json::Value {
    json!({"pad": "x".repeat(bytes.saturating_sub(10))})
}

/// Timed confirmed request/reply round trips on quorum queues.
async fn request_reply(amqp_url: &str, topology: &Topology) -> Result<Percentiles, Error> {
    let broker = |doing| move |source| Error::Broker { doing, source };
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .map_err(broker("connecting for the request/reply floor"))?;
    let [requests, replies] = queue_names(topology);
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(
            connection
                .create_channel()
                .await
                .map_err(broker("opening a channel"))?,
        );
    }
    let [requester, requester_replies, responder, responder_publish]: [Channel; 4] = channels
        .try_into()
        .map_err(|_| Error::Panicked("opening the floor's channels"))?;
    for queue in [&requests, &replies] {
        declare_quorum(&requester, queue).await?;
    }
    for channel in [&requester, &responder_publish] {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(broker("enabling publisher confirms"))?;
    }
    let mut request_consumer = responder
        .basic_consume(
            requests.as_str().into(),
            "floor-responder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("consuming requests"))?;
    let mut reply_consumer = requester_replies
        .basic_consume(
            replies.as_str().into(),
            "floor-requester".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("consuming replies"))?;

    let replies_queue = replies.clone();
    let responding = tokio::spawn(async move {
        let mut answered = 0;
        while answered < WARM_UP + ROUND_TRIPS {
            let Some(Ok(request)) = request_consumer.next().await else {
                return Err(Error::Panicked("the floor's responder lost its consumer"));
            };
            publish(&responder_publish, &replies_queue, &request.data).await?;
            request
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker("acking a request"))?;
            answered += 1;
        }
        close(&responder_publish).await;
        Ok(())
    });

    let mut latencies = Vec::with_capacity(ROUND_TRIPS);
    for round in 0..WARM_UP + ROUND_TRIPS {
        let began = Instant::now();
        publish(&requester, &requests, format!("request {round}").as_bytes()).await?;
        let reply = tokio::time::timeout(BROKER_TIMEOUT, reply_consumer.next())
            .await
            .map_err(|_| Error::Refused("the request/reply floor got no reply".into()))?;
        let Some(Ok(reply)) = reply else {
            return Err(Error::Panicked("the floor's requester lost its consumer"));
        };
        reply
            .ack(BasicAckOptions::default())
            .await
            .map_err(broker("acking a reply"))?;
        if round >= WARM_UP {
            latencies.push(began.elapsed().as_secs_f64() * 1000.0);
        }
    }
    responding
        .await
        .map_err(|_| Error::Panicked("the floor's responder"))??;
    for channel in [&requester, &requester_replies, &responder] {
        close(channel).await;
    }
    if let Err(error) = connection.close(200, "floor measured".into()).await {
        tracing::warn!(%error, "closing the floor's connection");
    }
    Percentiles::of(latencies).ok_or_else(|| Error::Refused("the floor ran no round trips".into()))
}

/// Closes a channel before its connection: one merely dropped closes in
/// the background, and the connection closing meanwhile finds it
/// half-closed.
async fn close(channel: &Channel) {
    if let Err(error) = channel.close(200, "floor measured".into()).await {
        tracing::debug!(%error, "closing a floor channel");
    }
}

async fn declare_quorum(channel: &Channel, queue: &str) -> Result<(), Error> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, arguments)
        .await
        .map(|_| ())
        .map_err(|source| Error::Broker {
            doing: "declaring the floor's queues",
            source,
        })
}

/// Persistent, `mandatory`, confirmed and routed, by the default exchange.
async fn publish(channel: &Channel, queue: &str, body: &[u8]) -> Result<(), Error> {
    let properties = BasicProperties::default().with_delivery_mode(2);
    q2c_contract::publish::confirmed(channel, "", queue, body, properties, BROKER_TIMEOUT)
        .await
        .map_err(|error| Error::Refused(format!("the request/reply floor: {error}")))
}
