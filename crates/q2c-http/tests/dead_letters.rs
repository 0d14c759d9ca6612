//! The dead-letters admin API through the real router, against a real
//! database and, for replays, a real RabbitMQ (`AMQP_URL`): each replay
//! test declares an exchange and a queue of its own, keeps a message that
//! went through them as the consumer keeps a dead letter, replays it, and
//! reads it back from the queue.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use chrono::{TimeDelta, Utc};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, DecimalValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use q2c_store::Store;
use q2c_store::dead_letters::{DeadLetter, SALESFORCE_EXCHANGE};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::*;

fn letter(message_id: &str, reason: &str, routing_key: &str) -> DeadLetter {
    DeadLetter {
        message_id: Some(message_id.to_owned()),
        reason: reason.to_owned(),
        exchange: "q2c.replies".into(),
        routing_key: routing_key.to_owned(),
        headers: json!({"properties": {"message_id": message_id}, "redelivered": false}),
        body: format!(r#"{{"message_id": "{message_id}"}}"#).into_bytes(),
    }
}

/// Keeps `letter` as received `ago` before now; its id.
async fn keep(store: &Store, letter: &DeadLetter, ago: TimeDelta) -> i64 {
    store
        .record_dead_letter(letter, Utc::now() - ago)
        .await
        .unwrap()
        .expect("a new letter")
}

async fn list(app: &axum::Router, query: &str) -> Answer {
    get(app, &format!("/api/v1/dead-letters{query}"), ADMIN, None).await
}

/// The ids of a list answer, in order.
fn ids(answer: &Answer) -> Vec<i64> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}

async fn act(app: &axum::Router, id: i64, action: &str, body: &Value) -> Answer {
    post_json(
        app,
        &format!("/api/v1/dead-letters/{id}/{action}"),
        ADMIN,
        body,
    )
    .await
}

fn why(text: &str) -> Value {
    json!({"reason": text})
}

/// The audit rows about dead letters, oldest first.
async fn letter_audit(app: &axum::Router) -> Vec<Value> {
    let audit = get(app, "/api/v1/audit", ADMIN, None).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| !row["dead_letter_id"].is_null())
        .cloned()
        .collect()
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn the_list_is_newest_first_filtered_and_paged(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let old = keep(
        &store,
        &letter(
            "m-1",
            "the body is not a q2c envelope",
            "erp.create_order.succeeded",
        ),
        TimeDelta::hours(5),
    )
    .await;
    let middle = keep(
        &store,
        &letter("m-2", "no workflow 0190", "payment.collect.failed"),
        TimeDelta::hours(3),
    )
    .await;
    let recent = keep(
        &store,
        &letter(
            "m-3",
            "failed on 5 deliveries; last error: permission DENIED",
            "erp.create_order.succeeded",
        ),
        TimeDelta::minutes(10),
    )
    .await;

    assert_eq!(ids(&list(&app, "").await), [recent, middle, old]);
    let first = &list(&app, "").await.body["items"][0];
    assert_eq!(first["type"], "erp.create_order.succeeded");
    assert_eq!(first["state"], "open");
    assert_eq!(first["replay_count"], 0);
    assert_eq!(first["replayable"], true);
    assert_eq!(first["size"], 21);
    assert!(first.get("body").is_none(), "the list leaves bodies out");

    assert_eq!(
        ids(&list(&app, "?reason=Permission%20denied").await),
        [recent]
    );
    assert_eq!(ids(&list(&app, "?reason=ENVELOPE").await), [old]);
    assert_eq!(
        ids(&list(&app, "?type=erp.create_order.succeeded").await),
        [recent, old]
    );
    assert_eq!(
        ids(&list(&app, "?type=erp.create_order").await),
        Vec::<i64>::new()
    );
    assert_eq!(ids(&list(&app, "?older_than=2h").await), [middle, old]);
    assert_eq!(ids(&list(&app, "?newer_than=4h").await), [recent, middle]);
    assert_eq!(
        ids(&list(&app, "?older_than=1h&newer_than=4h").await),
        [middle]
    );
    let from =
        (Utc::now() - TimeDelta::hours(4)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until =
        (Utc::now() - TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        ids(&list(
            &app,
            &format!("?received_from={from}&received_until={until}")
        )
        .await),
        [middle]
    );
    assert_eq!(
        ids(&list(
            &app,
            "?type=erp.create_order.succeeded&reason=envelope&older_than=1h"
        )
        .await),
        [old]
    );

    // Pages: `next_cursor` until the last page.
    let page = list(&app, "?limit=2").await;
    assert_eq!(ids(&page), [recent, middle]);
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let page = list(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(ids(&page), [old]);
    assert!(page.body["next_cursor"].is_null());

    // The states: a discarded letter leaves the default list.
    let discarded = act(&app, middle, "discard", &why("stray reply from staging")).await;
    assert_eq!(discarded.status, StatusCode::OK, "{}", discarded.body);
    assert_eq!(ids(&list(&app, "").await), [recent, old]);
    assert_eq!(ids(&list(&app, "?state=open").await), [recent, old]);
    assert_eq!(ids(&list(&app, "?state=discarded").await), [middle]);
    assert_eq!(ids(&list(&app, "?state=replayed").await), Vec::<i64>::new());
    assert_eq!(ids(&list(&app, "?state=all").await), [recent, middle, old]);

    // What the list refuses.
    for query in [
        "?status=open",
        "?state=closed",
        "?older_than=soon",
        "?newer_than=-1h",
        "?received_from=yesterday",
        "?cursor=abc",
        "?cursor=0",
        "?limit=0",
        "?limit=1001",
    ] {
        let answer = list(&app, query).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            answer.body
        );
        assert_eq!(
            answer.body["type"], "https://q2c.invalid/problems/invalid-query",
            "{query}"
        );
    }
    // Dead letters are for admins only.
    let operator = get(&app, "/api/v1/dead-letters", OPERATOR, None).await;
    assert_eq!(operator.status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_letter_is_shown_whole(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let json_body = keep(
        &store,
        &letter("m-1", "no workflow", "erp.create_order.succeeded"),
        TimeDelta::minutes(1),
    )
    .await;
    let binary = DeadLetter {
        body: vec![0xff, 0x00, b'{'],
        headers: json!({"message_id": "m-2", "headers": "Some(FieldTable({}))"}),
        ..letter(
            "m-2",
            "the body is not a q2c envelope",
            "erp.create_order.succeeded",
        )
    };
    let binary = keep(&store, &binary, TimeDelta::minutes(1)).await;

    let shown = get(
        &app,
        &format!("/api/v1/dead-letters/{json_body}"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    let view = shown.body;
    assert_eq!(view["id"], json_body);
    assert_eq!(view["reason"], "no workflow");
    assert_eq!(view["exchange"], "q2c.replies");
    assert_eq!(view["routing_key"], "erp.create_order.succeeded");
    assert_eq!(view["message_id"], "m-1");
    assert_eq!(view["state"], "open");
    assert!(view["received_at"].is_string());
    assert_eq!(
        view["headers"],
        json!({"properties": {"message_id": "m-1"}, "redelivered": false})
    );
    assert_eq!(view["body"]["json"], json!({"message_id": "m-1"}));
    assert_eq!(view["body"]["text"], r#"{"message_id": "m-1"}"#);
    assert_eq!(view["body"]["base64"], "eyJtZXNzYWdlX2lkIjogIm0tMSJ9");
    assert_eq!(view["history"], json!([]));

    let view = get(&app, &format!("/api/v1/dead-letters/{binary}"), ADMIN, None)
        .await
        .body;
    assert_eq!(view["body"]["json"], Value::Null);
    assert_eq!(view["body"]["text"], Value::Null);
    assert_eq!(view["body"]["base64"], "/wB7", "nothing lost");
    assert_eq!(view["body"]["size"], 3);

    assert_eq!(
        get(&app, "/api/v1/dead-letters/999", ADMIN, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/api/v1/dead-letters/abc", ADMIN, None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_discard_is_kept_audited_and_not_repeated(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool.clone());
    let id = keep(
        &store,
        &letter("m-1", "no workflow", "erp.create_order.succeeded"),
        TimeDelta::minutes(1),
    )
    .await;

    // Malformed requests change nothing and are not audited.
    for body in [
        json!({}),
        json!({"reason": "  "}),
        json!({"reason": 7}),
        json!({"reason": "ok", "force": true}),
        json!("just text"),
    ] {
        let answer = act(&app, id, "discard", &body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.body
        );
    }
    assert_eq!(
        act(&app, 999, "discard", &why("x")).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(letter_audit(&app).await.is_empty());

    let discarded = act(&app, id, "discard", &why("a stray reply from staging")).await;
    assert_eq!(discarded.status, StatusCode::OK, "{}", discarded.body);
    assert_eq!(discarded.body["state"], "discarded");
    assert_eq!(discarded.body["discarded_by"], "ada");
    assert_eq!(
        discarded.body["discard_reason"],
        "a stray reply from staging"
    );
    assert_eq!(discarded.body["replayable"], false);

    let again = act(&app, id, "discard", &why("once more")).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert_eq!(again.body["refusal"], "discarded");
    assert!(
        again.body["detail"]
            .as_str()
            .unwrap()
            .contains("was discarded by ada"),
        "{}",
        again.body
    );
    let replay = act(&app, id, "replay", &why("try it after all")).await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{}", replay.body);
    assert_eq!(replay.body["refusal"], "discarded");

    // Kept, not deleted.
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);

    let audit = letter_audit(&app).await;
    let summary: Vec<(&str, &str)> = audit
        .iter()
        .map(|row| {
            (
                row["action"].as_str().unwrap(),
                row["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("discard", "applied"),
            ("discard", "not_allowed"),
            ("replay", "not_allowed")
        ]
    );
    let applied = &audit[0];
    assert_eq!(applied["dead_letter_id"], id);
    assert_eq!(applied["workflow_id"], Value::Null);
    assert_eq!(applied["actor"], "ada");
    assert_eq!(applied["role"], "admin");
    assert_eq!(applied["reason"], "a stray reply from staging");
    assert_eq!(
        applied["state_before"],
        json!({"state": "open", "replay_count": 0})
    );
    assert_eq!(
        applied["state_after"],
        json!({"state": "discarded", "replay_count": 0})
    );
    assert_eq!(audit[1]["state_after"], audit[1]["state_before"]);
    assert!(audit[2]["detail"].as_str().unwrap().contains("discarded"));

    let history = get(&app, &format!("/api/v1/dead-letters/{id}"), ADMIN, None)
        .await
        .body["history"]
        .clone();
    assert_eq!(history.as_array().unwrap().len(), 3);
    assert_eq!(history[0]["action"], "discard");
    assert_eq!(history[0]["actor"], "ada");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_salesforce_event_is_never_replayed(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let event = DeadLetter {
        exchange: SALESFORCE_EXCHANGE.into(),
        routing_key: "/event/Q2C_Quote_Accepted__e".into(),
        headers: json!({"event_id": "e-1", "schema_id": "s", "replay_id": "0a"}),
        body: vec![2, 4, 6],
        ..letter("e-1", "Net_Amount__c: not a decimal", "")
    };
    let id = keep(&store, &event, TimeDelta::minutes(1)).await;
    assert_eq!(list(&app, "").await.body["items"][0]["replayable"], false);

    let replay = act(&app, id, "replay", &why("try again")).await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{}", replay.body);
    assert_eq!(replay.body["refusal"], "not_from_broker");
    let detail = replay.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("Salesforce event from topic /event/Q2C_Quote_Accepted__e"),
        "{detail}"
    );
    assert_eq!(ids(&list(&app, "").await), [id], "still open");
    let audit = letter_audit(&app).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["result"], "not_allowed");

    let discarded = act(
        &app,
        id,
        "discard",
        &why("fixed in Salesforce and sent again"),
    )
    .await;
    assert_eq!(discarded.status, StatusCode::OK, "{}", discarded.body);
}

/// A broker connection with an exchange and a queue of the test's own,
/// bound with `binding` (or not bound at all).
struct Broker {
    url: String,
    connection: Connection,
    channel: Channel,
    exchange: String,
    queue: String,
}

impl Broker {
    async fn new(binding: Option<&str>) -> Broker {
        let url = std::env::var("AMQP_URL").expect("AMQP_URL is set (deploy/test.sh sets it)");
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let name = format!("dl-test-{}", uuid::Uuid::now_v7().simple());
        let exchange = format!("{name}.exchange");
        let queue = format!("{name}.queue");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if let Some(binding) = binding {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    binding.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        Broker {
            url,
            connection,
            channel,
            exchange,
            queue,
        }
    }

    /// Publishes a message through the exchange and takes it off the
    /// queue again, as the consumer would receive it; kept the way the
    /// consumer keeps a dead letter.
    async fn dead_letter(
        &self,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> (DeadLetter, BasicProperties) {
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let delivery = self.take().await.expect("the original is on the queue");
        let letter = DeadLetter {
            message_id: delivery
                .properties
                .message_id()
                .as_ref()
                .map(ToString::to_string),
            reason: "failed on 5 deliveries; last error: permission denied for table inbox".into(),
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            headers: q2c_contract::properties::record(&delivery.properties, delivery.redelivered),
            body: delivery.data.clone(),
        };
        (letter, delivery.properties.clone())
    }

    /// The next message on the queue, acked, if there is one now.
    async fn take(&self) -> Option<lapin::message::Delivery> {
        let message = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()?;
        let delivery = message.delivery;
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        Some(delivery)
    }

    async fn close(self) {
        self.channel
            .exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
            .unwrap();
        self.connection.close(200, "done".into()).await.unwrap();
    }
}

/// Properties with a header of every type RabbitMQ keeps, and a header the
/// broker would have added on redelivery.
fn rich_properties() -> BasicProperties {
    let mut nested = FieldTable::default();
    nested.insert("attempt".into(), AMQPValue::LongLongInt(3));
    let mut headers = FieldTable::default();
    for (name, value) in [
        ("x-q2c-workflow-id", AMQPValue::LongString("0190-w".into())),
        (
            "x-q2c-idempotency-key",
            AMQPValue::LongString("w:create_order:r1".into()),
        ),
        (
            "binary",
            AMQPValue::LongString(vec![0xff, 0x00, 0x7f].into()),
        ),
        ("flag", AMQPValue::Boolean(true)),
        ("count", AMQPValue::LongInt(-42)),
        ("big", AMQPValue::LongLongInt(i64::MAX)),
        ("ratio", AMQPValue::Double(0.1)),
        (
            "amount",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1130000,
            }),
        ),
        ("at", AMQPValue::Timestamp(1_764_237_600)),
        ("nested", AMQPValue::FieldTable(nested)),
        (
            "list",
            AMQPValue::FieldArray(vec![AMQPValue::LongString("a".into()), AMQPValue::Void].into()),
        ),
        ("bytes", AMQPValue::ByteArray(vec![1, 2, 3].into())),
        ("x-delivery-count", AMQPValue::LongLongInt(4)),
    ] {
        headers.insert(name.into(), value);
    }
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id("0190-m".into())
        .with_correlation_id("0190-c".into())
        .with_type("erp.create_order.succeeded".into())
        .with_timestamp(1_764_237_600)
        .with_app_id("erp-connector".into())
        .with_headers(headers)
}

/// `properties` without the broker's delivery count.
fn without_delivery_count(properties: &BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (name, value) in properties.headers().clone().unwrap().inner() {
        if name.as_str() != "x-delivery-count" {
            headers.insert(name.clone(), value.clone());
        }
    }
    properties.clone().with_headers(headers)
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_replay_publishes_the_message_as_it_came_to_its_exchange(pool: PgPool) {
    let broker = Broker::new(Some("erp.#")).await;
    let store = Store::new(pool.clone());
    let app = app_with_broker(pool, &broker.url);
    // Not JSON, not UTF-8: a body is replayed byte for byte, whatever it is.
    let body = b"\x00\xff{\"not\": json".to_vec();
    let (letter, original) = broker
        .dead_letter("erp.create_order.succeeded", &body, rich_properties())
        .await;
    assert_eq!(letter.exchange, broker.exchange);
    let id = keep(&store, &letter, TimeDelta::minutes(1)).await;

    let replayed = act(&app, id, "replay", &why("inbox grant restored")).await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.body);
    assert_eq!(replayed.body["state"], "replayed");
    assert_eq!(replayed.body["replay_count"], 1);
    assert_eq!(replayed.body["replayed_by"], "ada");
    assert_eq!(replayed.body["properties"], "complete");
    assert_eq!(
        replayed.body["dropped_headers"],
        json!(["x-delivery-count"])
    );
    assert!(replayed.body.get("note").is_none());

    let again = broker.take().await.expect("the replay is on the queue");
    assert_eq!(again.data, body, "the body, byte for byte");
    assert_eq!(again.exchange.as_str(), broker.exchange);
    assert_eq!(again.routing_key.as_str(), "erp.create_order.succeeded");
    assert_eq!(
        again.properties,
        without_delivery_count(&original),
        "every property and header as it came, but the broker's count"
    );
    assert!(broker.take().await.is_none(), "published once");
    assert_eq!(ids(&list(&app, "").await), Vec::<i64>::new());
    assert_eq!(ids(&list(&app, "?state=replayed").await), [id]);

    // Twice is allowed, and said.
    let twice = act(&app, id, "replay", &why("to be sure")).await;
    assert_eq!(twice.status, StatusCode::OK, "{}", twice.body);
    assert_eq!(twice.body["replay_count"], 2);
    assert!(
        twice.body["note"]
            .as_str()
            .unwrap()
            .contains("applies a message id once"),
        "{}",
        twice.body
    );
    assert_eq!(broker.take().await.expect("replayed again").data, body);

    let audit = letter_audit(&app).await;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["action"], "replay");
    assert_eq!(audit[0]["result"], "applied");
    assert_eq!(audit[0]["reason"], "inbox grant restored");
    assert_eq!(
        audit[0]["input"],
        json!({"exchange": broker.exchange, "routing_key": "erp.create_order.succeeded"})
    );
    assert_eq!(
        audit[0]["state_before"],
        json!({"state": "open", "replay_count": 0})
    );
    assert_eq!(
        audit[0]["state_after"],
        json!({"state": "replayed", "replay_count": 1})
    );
    assert_eq!(
        audit[1]["state_after"],
        json!({"state": "replayed", "replay_count": 2})
    );

    // A replayed letter cannot be discarded: it is done...
    let discard = act(&app, id, "discard", &why("tidy up")).await;
    assert_eq!(discard.status, StatusCode::CONFLICT, "{}", discard.body);
    assert_eq!(discard.body["refusal"], "replayed");

    // ...until the replayed message is dead-lettered again: the cause was
    // not fixed after all, and the letter is open once more.
    let back = DeadLetter {
        reason: "failed on 5 deliveries; last error: deadlock detected".into(),
        ..letter.clone()
    };
    assert_eq!(
        store.record_dead_letter(&back, Utc::now()).await.unwrap(),
        Some(id)
    );
    assert_eq!(
        store.record_dead_letter(&back, Utc::now()).await.unwrap(),
        None,
        "redelivered before its ack: kept once"
    );
    let view = get(&app, &format!("/api/v1/dead-letters/{id}"), ADMIN, None)
        .await
        .body;
    assert_eq!(view["state"], "open");
    assert_eq!(view["replay_count"], 2);
    assert_eq!(
        view["reason"],
        "failed on 5 deliveries; last error: deadlock detected"
    );
    assert!(view["returned_at"].is_string());
    assert_eq!(view["history"].as_array().unwrap().len(), 3);
    broker.close().await;
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_replay_that_fails_changes_nothing_but_the_audit(pool: PgPool) {
    let broker = Broker::new(Some("erp.#")).await;
    let store = Store::new(pool.clone());
    let app = app_with_broker(pool.clone(), &broker.url);
    let (letter, _) = broker
        .dead_letter("erp.create_order.succeeded", b"{}", rich_properties())
        .await;
    // A routing key no queue is bound for: the replay is unroutable.
    let unroutable = DeadLetter {
        routing_key: "shipping.dispatch.succeeded".into(),
        ..letter
    };
    let id = keep(&store, &unroutable, TimeDelta::minutes(1)).await;

    let answer = act(&app, id, "replay", &why("retry")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert_eq!(
        answer.body["type"],
        "https://q2c.invalid/problems/replay-failed"
    );
    assert_eq!(answer.body["cause"], "unroutable");
    assert!(
        answer.body["detail"].as_str().unwrap().contains("NO_ROUTE"),
        "{}",
        answer.body
    );
    assert!(broker.take().await.is_none());

    // An exchange that is gone.
    let gone = DeadLetter {
        exchange: format!("{}-gone", broker.exchange),
        message_id: Some("m-gone".into()),
        ..unroutable.clone()
    };
    let gone = keep(&store, &gone, TimeDelta::minutes(1)).await;
    let answer = act(&app, gone, "replay", &why("retry")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert_eq!(answer.body["cause"], "broker_error");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("NOT_FOUND"),
        "{}",
        answer.body
    );

    // A broker that cannot be reached.
    let down = app_with_broker(pool, "amqp://guest:guest@127.0.0.1:1/%2f");
    let answer = act(&down, id, "replay", &why("retry")).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(
        answer.body["type"],
        "https://q2c.invalid/problems/broker-unavailable"
    );

    for letter in [id, gone] {
        let view = get(&app, &format!("/api/v1/dead-letters/{letter}"), ADMIN, None)
            .await
            .body;
        assert_eq!(view["state"], "open", "{view}");
        assert_eq!(view["replay_count"], 0);
        assert!(view["replayed_at"].is_null());
    }
    let audit = letter_audit(&app).await;
    let results: Vec<(i64, &str)> = audit
        .iter()
        .map(|row| {
            (
                row["dead_letter_id"].as_i64().unwrap(),
                row["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(results, [(id, "failed"), (gone, "failed"), (id, "failed")]);
    assert!(audit[0]["detail"].as_str().unwrap().contains("unroutable"));
    assert_eq!(audit[0]["state_before"], audit[0]["state_after"]);
    broker.close().await;
}
