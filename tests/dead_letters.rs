//! Dead letters end to end: the real `q2c serve` and its reply consumer,
//! `q2c sim` as the connectors, RabbitMQ and Postgres, and an admin on the
//! HTTP API.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use q2c_contract::{Envelope, SCHEMA_VERSION};
use serde_json::{Value, json};
use support::product::{Api, Sim, accepted_event};
use support::{TOKEN, World, eventually, fast_definition};

/// Generous: the test asserts outcomes, not times.
const DEADLINE: Duration = Duration::from_secs(60);

/// An admin's POST, with the server's admin token.
async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("the API answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// The open dead letters, newest first.
async fn open_letters(api: &Api) -> Vec<Value> {
    let answer = api.get("/api/v1/dead-letters").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body["items"].as_array().unwrap().clone()
}

/// A dead-lettered reply is replayed after its cause is fixed and the
/// workflow continues; a discarded one is gone and audited.
///
/// The cause: a permissions change took `INSERT` on the `inbox` table away
/// from q2c's database role (a hardening script run against the wrong
/// database, say). The ERP connector's reply to `erp.create_order` is
/// well-formed and expected, but every attempt to apply it fails; the
/// consumer hands it back to the broker four times and dead-letters it on
/// its fifth delivery, and the workflow waits at `create_order` (its
/// timeout is five minutes here, so no retry can answer in the reply's
/// place: the test checks that the order was asked for once and that the
/// letter's own message id was applied). The DBA
/// grants the privilege back, an admin finds the letter by its reason and
/// replays it: the same message, with its message id, goes back to the
/// replies exchange, is applied, and the quote runs to completion.
///
/// Meanwhile a stray reply arrives for a workflow this deployment never
/// had (a connector of another environment publishing to the wrong
/// broker). Replaying it would only dead-letter it again: the admin
/// discards it, and it leaves the list of open letters but stays on
/// record, with the audit trail saying who discarded it and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_reply_is_replayed_after_its_cause_is_fixed_and_a_discarded_one_is_gone() {
    let world = World::new().await;
    // No retry of `create_order` may answer in the replay's place.
    let definition = fast_definition().replacen("timeout = \"2s\"", "timeout = \"5m\"", 1);
    assert!(definition.contains("timeout = \"5m\""));
    std::fs::write(
        world.directory.path().join("quote-to-cash.toml"),
        &definition,
    )
    .unwrap();
    sqlx::query("REVOKE INSERT ON inbox FROM CURRENT_USER")
        .execute(&world.pool)
        .await
        .unwrap();
    let sim = Sim::start(&world, &[]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);

    let started = api
        .post_event(&accepted_event(1, "Acme Corp", "pm_card_visa"))
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
    let workflow = started.body["workflow_id"].as_str().unwrap().to_owned();

    eventually("the order reply to be dead-lettered", DEADLINE, || async {
        !open_letters(&api).await.is_empty()
    })
    .await;
    let letters = open_letters(&api).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reply = letters[0]["id"].as_i64().unwrap();
    assert_eq!(letters[0]["type"], "erp.create_order.succeeded");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("failed on 5 deliveries"), "{reason}");
    assert!(
        reason.contains("permission denied for table inbox"),
        "{reason}"
    );
    let waiting = api.get(&format!("/api/v1/workflows/{workflow}")).await.body;
    assert_eq!(waiting["status"], "running");
    assert_eq!(waiting["step"], "create_order");
    assert!(waiting["steps"][0]["output"].is_null(), "{waiting}");

    // The cause is fixed; the reply is replayed and the quote moves on.
    sqlx::query("GRANT INSERT ON inbox TO CURRENT_USER")
        .execute(&world.pool)
        .await
        .unwrap();
    // A reply for no workflow of this deployment, once replies can be
    // recorded again: it is kept as a dead letter with its reason.
    // Published as a connector publishes replies.
    let channel = support::connector::channel(&world.amqp_url).await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let stray = Envelope {
        message_id: uuid::Uuid::now_v7(),
        message_type: "erp.create_order.succeeded".into(),
        schema_version: SCHEMA_VERSION,
        workflow_id: uuid::Uuid::now_v7(),
        step: "create_order".into(),
        attempt: 1,
        idempotency_key: "elsewhere:create_order:r1".into(),
        undoes: None,
        correlation_id: uuid::Uuid::now_v7(),
        sent_at: chrono::Utc::now(),
        traceparent: None,
        payload: json!({"order_id": "ORD-ELSEWHERE"}),
    };
    q2c_contract::reply::publish(&channel, &world.topology, &stray)
        .await
        .unwrap();
    eventually("the stray reply to be dead-lettered", DEADLINE, || async {
        open_letters(&api).await.len() == 2
    })
    .await;
    let strays = api
        .get("/api/v1/dead-letters?reason=no%20workflow")
        .await
        .body;
    let stray_letter = strays["items"][0]["id"].as_i64().unwrap();
    assert_eq!(strays["items"].as_array().unwrap().len(), 1, "{strays}");
    assert_eq!(
        strays["items"][0]["message_id"],
        stray.message_id.to_string()
    );

    let (status, replayed) = post(
        &serve.http,
        &format!("/api/v1/dead-letters/{reply}/replay"),
        &json!({"reason": "inbox INSERT granted back (CHG-1234)"}),
    )
    .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["state"], "replayed");
    assert_eq!(replayed["replay_count"], 1);
    assert_eq!(replayed["properties"], "complete");
    assert_eq!(replayed["dropped_headers"], json!(["x-delivery-count"]));
    let done = api
        .workflow_until(&workflow, "the workflow to complete", DEADLINE, |view| {
            view["status"] == "completed"
        })
        .await;
    let order = done["steps"][0]["output"]["order_id"].as_str().unwrap();
    assert!(order.starts_with("SO-"), "the connector's order: {order}");
    let orders: Vec<u32> = sim
        .deliveries()
        .iter()
        .filter(|delivery| delivery.command_type == "erp.create_order")
        .map(|delivery| delivery.attempt)
        .collect();
    assert_eq!(orders, [1], "the replayed reply answered the first attempt");
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(letters[0]["message_id"].as_str().unwrap())
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(applied, 1, "the dead letter's own message was applied");
    sim.assert_each_effect_once();

    // The stray one is discarded: gone from the open list, kept, audited.
    let (status, discarded) = post(
        &serve.http,
        &format!("/api/v1/dead-letters/{stray_letter}/discard"),
        &json!({"reason": "reply from another environment's connector"}),
    )
    .await;
    assert_eq!(status, 200, "{discarded}");
    assert!(open_letters(&api).await.is_empty());
    let kept = api
        .get(&format!("/api/v1/dead-letters/{stray_letter}"))
        .await
        .body;
    assert_eq!(kept["state"], "discarded");
    assert_eq!(kept["discarded_by"], "api-token");
    assert_eq!(kept["body"]["json"]["payload"]["order_id"], "ORD-ELSEWHERE");
    let (status, refused) = post(
        &serve.http,
        &format!("/api/v1/dead-letters/{stray_letter}/replay"),
        &json!({"reason": "changed my mind"}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");

    let audit = api.get("/api/v1/audit").await.body;
    let rows: Vec<(i64, &str, &str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["dead_letter_id"].as_i64().unwrap(),
                row["action"].as_str().unwrap(),
                row["result"].as_str().unwrap(),
                row["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                reply,
                "replay",
                "applied",
                "inbox INSERT granted back (CHG-1234)"
            ),
            (
                stray_letter,
                "discard",
                "applied",
                "reply from another environment's connector"
            ),
            (stray_letter, "replay", "not_allowed", "changed my mind"),
        ]
    );
    let metrics = api.get_without_token("/metrics").await.body;
    let metrics = metrics.as_str().unwrap();
    for line in [
        "q2c_dead_letter_actions_total{action=\"replay\",result=\"applied\"} 1",
        "q2c_dead_letter_actions_total{action=\"discard\",result=\"applied\"} 1",
        "q2c_dead_letter_actions_total{action=\"replay\",result=\"not_allowed\"} 1",
        "q2c_dead_letter_actions_total{action=\"replay\",result=\"failed\"} 0",
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }

    assert!(serve.terminate().await.success());
    sim.stop();
}
