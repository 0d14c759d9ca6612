//! Salesforce's Pub/Sub API end to end: events published on a local
//! Salesforce reach `q2c serve` over gRPC, start and cancel workflows, and
//! each topic's position commits with the work, through crashes, duplicate
//! deliveries, token expiry, stalls and expired replay ids.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use q2c_local_salesforce::Fault;
use q2c_store::positions::Position;
use serde_json::json;
use support::product::{Api, Sim, accepted_fields};
use support::salesforce::{
    ACCEPTED, ACCEPTED_TOPIC, CANCELLED_TOPIC, Login, Salesforce, quote_id, reconnects,
    subscription,
};
use support::{Orchestrator, World, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

async fn serve_on(
    world: &World,
    salesforce: &Salesforce,
    login: Login,
    extra: &[(&str, &str)],
) -> Orchestrator {
    let env = salesforce.env(login);
    let mut all: Vec<(&str, &str)> = env
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    all.extend_from_slice(extra);
    world.serve(&all).await
}

/// `q2c serve` with both topics' streams open.
async fn streaming(world: &World, salesforce: &Salesforce) -> (Orchestrator, Api) {
    let serve = serve_on(world, salesforce, Login::ClientCredentials, &[]).await;
    let api = Api::new(&serve.http);
    eventually("both streams to open", DEADLINE, || async {
        subscription(&api, ACCEPTED_TOPIC).await["state"] == "streaming"
            && subscription(&api, CANCELLED_TOPIC).await["state"] == "streaming"
    })
    .await;
    (serve, api)
}

/// An operator sends the accepted topic back to its oldest retained event.
async fn operator_moves_to_earliest(world: &World) {
    world
        .store
        .move_position(
            ACCEPTED_TOPIC,
            &Position::Earliest,
            "test operator",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
}

async fn admitted(world: &World) -> i64 {
    world.count("SELECT count(*) FROM intake_events").await
}

async fn workflows(world: &World) -> i64 {
    world.count("SELECT count(*) FROM workflows").await
}

/// Waits until the stored position of `topic` is the latest event's.
async fn position_reaches_latest(world: &World, salesforce: &Salesforce, topic: &str) {
    let latest = salesforce.local.status().topics[topic]
        .latest_replay_id
        .clone()
        .expect("events were published");
    eventually(
        "the position to reach the latest event",
        DEADLINE,
        || async {
            world
                .store
                .position(topic)
                .await
                .unwrap()
                .is_some_and(|position| position.to_string() == latest)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_on_salesforce_become_workflows_that_complete() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let sim = Sim::start(&world, &[]).await;
    for n in 0..3 {
        salesforce.accept(n);
    }
    let serve = serve_on(&world, &salesforce, Login::JwtBearer, &[]).await;
    let api = Api::new(&serve.http);
    api.all_reach("completed", 3, DEADLINE).await;
    for n in 3..5 {
        salesforce.accept(n);
    }
    api.all_reach("completed", 5, DEADLINE).await;
    position_reaches_latest(&world, &salesforce, ACCEPTED_TOPIC).await;

    let accepted = subscription(&api, ACCEPTED_TOPIC).await;
    assert_eq!(accepted["state"], "streaming", "{accepted}");
    assert_eq!(accepted["events_received"], 5, "{accepted}");
    assert!(
        accepted["last_lag_seconds"].as_f64().is_some(),
        "{accepted}"
    );
    eventually("the other topic to go on streaming", DEADLINE, || async {
        subscription(&api, CANCELLED_TOPIC).await["state"] == "streaming"
    })
    .await;
    let metrics = api.get_without_token("/metrics").await.body;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains(
            "q2c_salesforce_events_received_total{topic=\"/event/Q2C_Quote_Accepted__e\"} 5"
        ),
        "{metrics}"
    );
    assert_eq!(sim.effects("payment.collect").len(), 5);
    assert_eq!(salesforce.max_open_streams(ACCEPTED_TOPIC), 1);
    assert_eq!(salesforce.max_open_streams(CANCELLED_TOPIC), 1);
    let key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/local-salesforce/jwt-private.pem"
    ))
    .unwrap();
    let key_line = key.lines().nth(1).unwrap();
    assert!(
        !serve.log().contains(key_line),
        "the private key is in the log"
    );
    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_that_does_not_exist_stops_alone_and_no_secret_is_logged() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let serve = serve_on(
        &world,
        &salesforce,
        Login::ClientCredentials,
        &[(
            "Q2C_SALESFORCE_CANCELLED_TOPIC",
            "/event/Q2C_Quote_Withdrawn__e",
        )],
    )
    .await;
    let api = Api::new(&serve.http);
    eventually("the unknown topic to stop", DEADLINE, || async {
        subscription(&api, "/event/Q2C_Quote_Withdrawn__e").await["state"] == "stopped"
    })
    .await;
    let stopped = subscription(&api, "/event/Q2C_Quote_Withdrawn__e").await;
    assert!(
        stopped["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("the topic does not exist"),
        "{stopped}"
    );
    salesforce.accept(0);
    eventually("the other topic to go on", DEADLINE, || async {
        admitted(&world).await == 1
    })
    .await;
    let log = serve.log();
    assert!(
        log.contains("stopped following the topic"),
        "the stop is logged"
    );
    assert!(
        !log.contains(q2c_local_salesforce::DEFAULT_CLIENT_SECRET),
        "the client secret is in the log"
    );
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_while_200_events_are_delivered_starts_each_workflow_once() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let sim = Sim::start(&world, &[]).await;
    for n in 0..200 {
        salesforce.accept(n);
    }
    let serve = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    eventually("some events to be admitted", DEADLINE, || async {
        admitted(&world).await >= 20
    })
    .await;
    serve.kill().await;
    let before_restart = admitted(&world).await;
    assert!(
        before_restart < 200,
        "the kill came too late to prove anything"
    );

    let restarted = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    eventually("all 200 events to be admitted", DEADLINE, || async {
        admitted(&world).await == 200
    })
    .await;
    let api = Api::new(&restarted.http);
    api.all_reach("completed", 200, Duration::from_secs(180))
        .await;
    assert_eq!(workflows(&world).await, 200);
    assert_eq!(
        world
            .count("SELECT count(DISTINCT state::jsonb->'quote'->>'quote_id') FROM workflows")
            .await,
        200
    );
    assert_eq!(sim.effects("erp.create_order").len(), 200);
    sim.assert_each_effect_once();
    position_reaches_latest(&world, &salesforce, ACCEPTED_TOPIC).await;
    assert!(restarted.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_and_an_older_position_start_nothing_twice() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    salesforce.fault(Fault::Duplicate { on: true });
    for n in 0..3 {
        salesforce.accept(n);
    }
    let serve = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    let api = Api::new(&serve.http);
    eventually("three events admitted", DEADLINE, || async {
        admitted(&world).await == 3
    })
    .await;
    position_reaches_latest(&world, &salesforce, ACCEPTED_TOPIC).await;
    assert_eq!(
        subscription(&api, ACCEPTED_TOPIC).await["events_received"],
        6
    );

    // An operator sends the running subscriber back to the start.
    operator_moves_to_earliest(&world).await;
    eventually("every event to be delivered again", DEADLINE, || async {
        subscription(&api, ACCEPTED_TOPIC).await["events_received"]
            .as_u64()
            .unwrap_or(0)
            >= 12
    })
    .await;
    position_reaches_latest(&world, &salesforce, ACCEPTED_TOPIC).await;
    assert!(reconnects(&api, ACCEPTED_TOPIC, "position_moved").await >= 1);
    assert_eq!(admitted(&world).await, 3);
    assert_eq!(workflows(&world).await, 3);
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_and_the_stream_resumes_where_it_stood() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    for n in 0..2 {
        salesforce.accept(n);
    }
    let serve = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    let api = Api::new(&serve.http);
    eventually("two events admitted", DEADLINE, || async {
        admitted(&world).await == 2
    })
    .await;
    let tokens_before = salesforce.local.status().tokens_issued;
    salesforce.fault(Fault::ExpireTokens);
    for n in 2..4 {
        salesforce.accept(n);
    }
    eventually("the later events admitted", DEADLINE, || async {
        admitted(&world).await == 4
    })
    .await;
    assert!(reconnects(&api, ACCEPTED_TOPIC, "auth").await >= 1);
    assert!(salesforce.local.status().tokens_issued > tokens_before);
    assert_eq!(workflows(&world).await, 4);
    assert_eq!(salesforce.max_open_streams(ACCEPTED_TOPIC), 1);
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_service_is_retried_with_backoff_until_it_answers() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let (serve, api) = streaming(&world, &salesforce).await;
    salesforce.fault(Fault::Unavailable { count: 3 });
    salesforce.accept(0);
    eventually(
        "the event admitted once the service answers",
        DEADLINE,
        || async { admitted(&world).await == 1 },
    )
    .await;
    // Both open streams ended, and three subscribes were refused.
    eventually("five reconnects after unavailable", DEADLINE, || async {
        reconnects(&api, ACCEPTED_TOPIC, "unavailable").await
            + reconnects(&api, CANCELLED_TOPIC, "unavailable").await
            >= 5
    })
    .await;
    assert_eq!(salesforce.max_open_streams(ACCEPTED_TOPIC), 1);
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_noticed_and_replaced() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let (serve, api) = streaming(&world, &salesforce).await;
    salesforce.fault(Fault::Stall { on: true });
    eventually(
        "the stall to be noticed (stall time 2s)",
        DEADLINE,
        || async { reconnects(&api, ACCEPTED_TOPIC, "stall").await >= 1 },
    )
    .await;
    salesforce.fault(Fault::Clear);
    salesforce.accept(0);
    eventually(
        "the event after the stall to be admitted",
        DEADLINE,
        || async { admitted(&world).await == 1 },
    )
    .await;
    assert_eq!(salesforce.max_open_streams(ACCEPTED_TOPIC), 1);
    assert!(serve.terminate().await.success());
}

/// One event admitted and its position stored; q2c stopped; the stored
/// replay id expired in Salesforce and one more event published; q2c started
/// again with the given policy.
async fn restarted_after_replay_ids_expired(policy: &str) -> (World, Salesforce, Orchestrator) {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    salesforce.accept(0);
    let serve = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    eventually("the first event admitted", DEADLINE, || async {
        admitted(&world).await == 1
    })
    .await;
    position_reaches_latest(&world, &salesforce, ACCEPTED_TOPIC).await;
    assert!(serve.terminate().await.success());

    salesforce.fault(Fault::ExpireReplayIds);
    salesforce.accept(1);
    let restarted = serve_on(
        &world,
        &salesforce,
        Login::ClientCredentials,
        &[("Q2C_SALESFORCE_ON_EXPIRED_REPLAY_ID", policy)],
    )
    .await;
    (world, salesforce, restarted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_stored_replay_id_starts_again_from_earliest_when_so_configured() {
    let (world, _salesforce, restarted) = restarted_after_replay_ids_expired("earliest").await;
    let api = Api::new(&restarted.http);
    eventually("the event after the expiry admitted", DEADLINE, || async {
        admitted(&world).await == 2
    })
    .await;
    assert!(reconnects(&api, ACCEPTED_TOPIC, "replay_id_unusable").await >= 1);
    let moves = world.store.position_moves(ACCEPTED_TOPIC).await.unwrap();
    assert!(
        moves
            .iter()
            .any(|change| change.to == Position::Earliest
                && change.moved_by.contains("policy earliest")),
        "{moves:?}"
    );
    let metrics = api.get_without_token("/metrics").await.body;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("q2c_salesforce_replay_id_unusable_total{topic=\"/event/Q2C_Quote_Accepted__e\",policy=\"earliest\"} 1"),
        "{metrics}"
    );
    assert!(restarted.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_stored_replay_id_stops_the_topic_until_an_operator_moves_it() {
    let (world, _salesforce, restarted) = restarted_after_replay_ids_expired("stop").await;
    let api = Api::new(&restarted.http);
    eventually("the topic to stop", DEADLINE, || async {
        subscription(&api, ACCEPTED_TOPIC).await["state"] == "stopped"
    })
    .await;
    let stopped = subscription(&api, ACCEPTED_TOPIC).await;
    assert!(
        stopped["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("expired or invalid"),
        "{stopped}"
    );
    assert_eq!(admitted(&world).await, 1, "nothing skipped silently");
    eventually("the other topic to go on streaming", DEADLINE, || async {
        subscription(&api, CANCELLED_TOPIC).await["state"] == "streaming"
    })
    .await;

    operator_moves_to_earliest(&world).await;
    eventually("the topic to resume after the move", DEADLINE, || async {
        admitted(&world).await == 2
    })
    .await;
    assert!(restarted.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_become_dead_letters_and_the_stream_goes_on() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let mut no_quote = accepted_fields(0, "Acme Corp", "pm_card_visa");
    no_quote.as_object_mut().unwrap().remove("Quote_Id__c");
    salesforce.publish(ACCEPTED, &no_quote, None);
    let mut not_adding_up = accepted_fields(1, "Acme Corp", "pm_card_visa");
    not_adding_up["Net_Amount__c"] = json!(999.0);
    salesforce.publish(ACCEPTED, &not_adding_up, None);
    salesforce.fault(Fault::Garble { on: true });
    salesforce.accept(3);
    salesforce.fault(Fault::Garble { on: false });
    salesforce.accept(2);
    let serve = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    let api = Api::new(&serve.http);
    eventually("the good event admitted", DEADLINE, || async {
        admitted(&world).await == 1
    })
    .await;
    position_reaches_latest(&world, &salesforce, ACCEPTED_TOPIC).await;
    let reasons: Vec<(String,)> =
        sqlx::query_as("SELECT reason FROM dead_letters WHERE exchange = 'salesforce' ORDER BY id")
            .fetch_all(&world.pool)
            .await
            .unwrap();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].0.contains("Quote_Id__c"), "{reasons:?}");
    assert!(reasons[1].0.contains("Net_Amount__c"), "{reasons:?}");
    assert!(
        reasons[2]
            .0
            .contains("not an Avro datum of this event's schema"),
        "{reasons:?}"
    );
    assert_eq!(subscription(&api, ACCEPTED_TOPIC).await["dead_letters"], 3);
    let (body,): (Vec<u8>,) = sqlx::query_as(
        "SELECT body FROM dead_letters WHERE exchange = 'salesforce' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&world.pool)
    .await
    .unwrap();
    assert_eq!(body.len(), 3, "the payload is kept as it came");
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_undo_live_workflows_and_record_the_rest() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let sim = Sim::start(&world, &["--latency", "300ms"]).await;
    let serve = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    let api = Api::new(&serve.http);

    // Quote 0 is cancelled after its invoice was issued.
    salesforce.accept(0);
    eventually("quote 0's invoice", DEADLINE, || async {
        !sim.effects("billing.issue_invoice").is_empty()
    })
    .await;
    salesforce.cancel(0);
    eventually("quote 0's workflow to be cancelled", DEADLINE, || async {
        api.statuses().await == ["cancelled"]
    })
    .await;
    let undone: Vec<String> = sim
        .entries()
        .into_iter()
        .filter(|entry| matches!(entry.event, q2c_sim::LedgerEvent::Effect { .. }))
        .map(|entry| entry.command_type)
        .filter(|command| {
            command.ends_with("void_invoice")
                || command.ends_with("cancel_order")
                || command.ends_with("refund")
        })
        .collect();
    assert_eq!(undone, ["billing.void_invoice", "erp.cancel_order"]);

    // Quote 1 is cancelled after it completed: recorded, no effect.
    salesforce.accept(1);
    eventually("quote 1 to complete", DEADLINE, || async {
        world
            .count("SELECT count(*) FROM workflows WHERE status = 'completed'")
            .await
            == 1
    })
    .await;
    salesforce.cancel(1);
    // Quote 2 is cancelled before it is accepted: the acceptance starts nothing.
    // (Topics are separate streams with no order between them: the test
    // waits for the cancellation before publishing the acceptance.)
    salesforce.cancel(2);
    eventually("quote 2's cancellation admitted", DEADLINE, || async {
        world
            .count("SELECT count(*) FROM intake_events WHERE quote_id = 'a0q5e0000000000002'")
            .await
            == 1
    })
    .await;
    salesforce.accept(2);
    eventually("every event admitted", DEADLINE, || async {
        admitted(&world).await == 6
    })
    .await;
    let outcomes: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT quote_id, kind, outcome FROM intake_events ORDER BY quote_id, received_at",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap();
    let expected = [
        (quote_id(0), "accepted", "started"),
        (quote_id(0), "cancelled", "cancelled"),
        (quote_id(1), "accepted", "started"),
        (quote_id(1), "cancelled", "cancellation_after_outcome"),
        (quote_id(2), "cancelled", "cancellation_before_acceptance"),
        (quote_id(2), "accepted", "quote_cancelled"),
    ];
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(quote, kind, outcome)| (quote.clone(), (*kind).to_owned(), (*outcome).to_owned()))
        .collect();
    assert_eq!(outcomes, expected);
    assert_eq!(workflows(&world).await, 2);
    assert_eq!(
        world
            .count("SELECT count(*) FROM workflows WHERE status = 'completed'")
            .await,
        1
    );
    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_hold_one_stream_per_topic_and_hand_over() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let first = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    let first_api = Api::new(&first.http);
    eventually(
        "the first process to follow the topic",
        DEADLINE,
        || async { subscription(&first_api, ACCEPTED_TOPIC).await["state"] == "streaming" },
    )
    .await;
    let second = serve_on(&world, &salesforce, Login::ClientCredentials, &[]).await;
    let second_api = Api::new(&second.http);
    eventually("the second process to stand by", DEADLINE, || async {
        subscription(&second_api, ACCEPTED_TOPIC).await["state"] == "standby"
    })
    .await;
    for n in 0..3 {
        salesforce.accept(n);
    }
    eventually("three events admitted", DEADLINE, || async {
        admitted(&world).await == 3
    })
    .await;
    assert_eq!(
        subscription(&second_api, ACCEPTED_TOPIC).await["events_received"],
        0
    );

    first.kill().await;
    eventually("the second process to take over", DEADLINE, || async {
        subscription(&second_api, ACCEPTED_TOPIC).await["state"] == "streaming"
    })
    .await;
    for n in 3..5 {
        salesforce.accept(n);
    }
    eventually("the later events admitted", DEADLINE, || async {
        admitted(&world).await == 5
    })
    .await;
    assert_eq!(workflows(&world).await, 5);
    assert_eq!(salesforce.max_open_streams(ACCEPTED_TOPIC), 1);
    assert_eq!(salesforce.max_open_streams(CANCELLED_TOPIC), 1);
    assert!(second.terminate().await.success());
}
