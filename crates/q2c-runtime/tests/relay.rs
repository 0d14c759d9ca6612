//! The relay against real Postgres and RabbitMQ.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use chrono::Utc;
use lapin::options::BasicGetOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use q2c_contract::{Envelope, Topology};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_core::domain::quote::fixtures;
use q2c_runtime::clock::SystemClock;
use q2c_runtime::crash::CrashSwitch;
use q2c_runtime::relay::{Relay, RelaySettings};
use q2c_store::Store;
use sqlx::PgPool;

fn definition() -> Arc<Definition> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/quote-to-cash.toml"
    );
    Arc::new(Definition::parse(path, &std::fs::read_to_string(path).unwrap()).unwrap())
}

async fn broker(prefix: &str) -> (Connection, Topology) {
    let url = std::env::var("AMQP_URL").expect("AMQP_URL is set (deploy/test.sh sets it)");
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let topology = Topology::new(prefix).unwrap();
    topology
        .declare(&connection.create_channel().await.unwrap())
        .await
        .unwrap();
    (connection, topology)
}

async fn relay(store: &Store, connection: &Connection, topology: &Topology) -> Relay<SystemClock> {
    Relay::new(
        store.clone(),
        connection.create_channel().await.unwrap(),
        topology.clone(),
        RelaySettings::default(),
        uuid::Uuid::now_v7(),
        CrashSwitch::disabled(),
        SystemClock,
    )
    .await
    .unwrap()
}

fn test_prefix() -> String {
    format!("relay_{}.", uuid::Uuid::now_v7().simple())
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn confirmed_commands_are_published_and_marked_sent(pool: PgPool) {
    let store = Store::new(pool.clone());
    let (connection, topology) = broker(&test_prefix()).await;
    for n in 0..3_u128 {
        let mut draft = fixtures::draft();
        draft.quote_id = format!("a0q5e{n:013}");
        let quote = q2c_core::domain::quote::Quote::try_from_draft(draft).unwrap();
        store
            .start_workflow(
                WorkflowId::new(uuid::Uuid::from_u128(n + 1)),
                definition(),
                quote,
                Utc::now(),
            )
            .await
            .unwrap();
    }
    let relay = relay(&store, &connection, &topology).await;

    assert_eq!(relay.publish_batch().await.unwrap(), 3);
    assert_eq!(store.outbox_backlog().await.unwrap().unsent, 0);
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        0,
        "nothing left to claim"
    );

    let channel = connection.create_channel().await.unwrap();
    let mut received = Vec::new();
    while let Some(message) = channel
        .basic_get(
            topology.command_queue("erp").as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let envelope = Envelope::decode(&message.delivery.data).unwrap();
        assert_eq!(
            message.delivery.properties.delivery_mode(),
            &Some(2),
            "persistent"
        );
        received.push(envelope.message_type);
    }
    assert_eq!(received, ["erp.create_order"; 3]);
    topology.delete(&channel).await.unwrap();
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn an_unroutable_command_is_not_marked_sent_and_is_reported(pool: PgPool) {
    let store = Store::new(pool.clone());
    let (connection, topology) = broker(&test_prefix()).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_unbind(
            topology.command_queue("erp").as_str().into(),
            topology.commands_exchange().as_str().into(),
            "erp.#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    store
        .start_workflow(
            WorkflowId::new(uuid::Uuid::from_u128(1)),
            definition(),
            fixtures::quote(),
            Utc::now(),
        )
        .await
        .unwrap();
    let relay = relay(&store, &connection, &topology).await;

    assert_eq!(relay.publish_batch().await.unwrap(), 1);
    assert_eq!(
        store.outbox_backlog().await.unwrap().unsent,
        1,
        "not marked sent"
    );
    let (error,): (Option<String>,) = sqlx::query_as("SELECT last_error FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    let error = error.expect("the reason is kept");
    assert!(
        error.contains("unroutable") && error.contains("NO_ROUTE"),
        "{error}"
    );
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        0,
        "it waits before trying again"
    );
    topology.delete(&channel).await.unwrap();
}
