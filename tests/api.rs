//! The product end to end: Salesforce-shaped events posted to the HTTP API
//! of the real `q2c serve`, the simulated connectors of `q2c sim`, and the
//! ledger they keep.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use q2c_sim::LedgerEvent;
use serde_json::json;
use support::product::{Api, Sim, accepted_event};
use support::{World, eventually};

const DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_quotes_complete_and_every_command_takes_effect_once() {
    let world = World::new().await;
    let sim = Sim::start(&world, &[]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    for n in 0..50 {
        let answer = api
            .post_event(&accepted_event(n, "Acme Corp", "pm_card_visa"))
            .await;
        assert_eq!(answer.status, 202, "{}", answer.body);
    }
    api.all_reach("completed", 50, DEADLINE).await;
    for command in [
        "erp.create_order",
        "billing.issue_invoice",
        "payment.collect",
        "salesforce.report_status",
    ] {
        assert_eq!(sim.effects(command).len(), 50, "{command}");
    }
    sim.assert_each_effect_once();
    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_hold_fails_with_nothing_to_undo_and_salesforce_is_told() {
    let world = World::new().await;
    let sim = Sim::start(&world, &[]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let answer = api
        .post_event(&accepted_event(1, "Globex Credit Hold Ltd", "pm_card_visa"))
        .await;
    assert_eq!(answer.status, 202);
    api.all_reach("failed", 1, DEADLINE).await;

    let types: Vec<String> = sim
        .deliveries()
        .iter()
        .map(|d| d.command_type.clone())
        .collect();
    assert_eq!(
        types,
        ["erp.create_order", "salesforce.report_status"],
        "no compensation was sent"
    );
    let reported = sim.effects("salesforce.report_status");
    assert!(
        matches!(&reported[0].event, LedgerEvent::Effect { outcome: Some(outcome), .. } if outcome == "failed"),
        "{reported:?}"
    );
    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_is_compensated_in_reverse_order() {
    let world = World::new().await;
    let sim = Sim::start(&world, &[]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let answer = api
        .post_event(&accepted_event(2, "Initech", "pm_card_chargeDeclined"))
        .await;
    assert_eq!(answer.status, 202);
    api.all_reach("compensated", 1, DEADLINE).await;

    let types: Vec<String> = sim
        .deliveries()
        .iter()
        .map(|d| d.command_type.clone())
        .collect();
    assert_eq!(
        types,
        [
            "erp.create_order",
            "billing.issue_invoice",
            "payment.collect",
            "billing.void_invoice",
            "erp.cancel_order",
            "salesforce.report_status"
        ]
    );
    let reported = sim.effects("salesforce.report_status");
    assert!(
        matches!(&reported[0].event, LedgerEvent::Effect { outcome: Some(outcome), .. } if outcome == "compensated"),
        "{reported:?}"
    );
    assert!(
        sim.effects("payment.refund").is_empty(),
        "nothing was collected"
    );
    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_command_times_out_and_is_retried_with_the_same_key() {
    let world = World::new().await;
    let sim = Sim::start(&world, &["--ignore-first-attempt"]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    api.post_event(&accepted_event(3, "Acme Corp", "pm_card_visa"))
        .await;
    api.all_reach("completed", 1, DEADLINE).await;

    let orders: Vec<_> = sim
        .deliveries()
        .into_iter()
        .filter(|d| d.command_type == "erp.create_order")
        .collect();
    assert_eq!(orders.len(), 2);
    assert_eq!((orders[0].attempt, orders[1].attempt), (1, 2));
    assert_eq!(orders[0].idempotency_key, orders[1].idempotency_key);
    assert_eq!(sim.effects("erp.create_order").len(), 1);
    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_twice_starts_one_workflow() {
    let world = World::new().await;
    let sim = Sim::start(&world, &[]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let event = accepted_event(4, "Acme Corp", "pm_card_visa");
    let first = api.post_event(&event).await;
    let second = api.post_event(&event).await;
    assert_eq!(first.status, 202);
    assert_eq!(second.status, 200);
    assert_eq!(first.body, second.body, "a repeat gets the first answer");
    // The event id is looked up first: even a repeat that would no longer
    // validate gets the first answer.
    let mut altered = event.clone();
    altered["data"]["payload"]["Net_Amount__c"] = json!("1.00");
    let third = api.post_event(&altered).await;
    assert_eq!((third.status, &third.body), (200, &first.body));
    api.all_reach("completed", 1, DEADLINE).await;
    let listed = api
        .get("/api/v1/workflows?quote_id=a0q5e0000000000004")
        .await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_event_for_a_quote_with_a_live_workflow_is_a_conflict() {
    let world = World::new().await;
    // No connectors yet: the first workflow stays live.
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let first = api
        .post_event(&accepted_event(5, "Acme Corp", "pm_card_visa"))
        .await;
    let second_event = accepted_event(5, "Acme Corp", "pm_card_visa");
    let again = api.post_event(&second_event).await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.content_type, "application/problem+json");
    assert_eq!(again.body["workflow_id"], first.body["workflow_id"]);
    let conflicting = again.body["event_uuid"].as_str().unwrap().to_owned();
    assert_ne!(
        Some(conflicting.as_str()),
        first.body["event_uuid"].as_str()
    );
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_event_names_every_bad_field_and_stores_nothing() {
    let world = World::new().await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let mut event = accepted_event(6, "Acme Corp", "pm_card_visa");
    let payload = &mut event["data"]["payload"];
    payload.as_object_mut().unwrap().remove("Quote_Id__c");
    payload["Net_Amount__c"] = json!("11300.01");
    payload["Currency_Iso_Code__c"] = json!("usd");
    let answer = api.post_event(&event).await;
    assert_eq!(answer.status, 422);
    assert_eq!(answer.content_type, "application/problem+json");
    let fields: Vec<&str> = answer.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["field"].as_str().unwrap())
        .collect();
    for field in ["Quote_Id__c", "Currency_Iso_Code__c"] {
        assert!(fields.contains(&field), "{fields:?}");
    }
    assert_eq!(world.count("SELECT count(*) FROM workflows").await, 0);
    assert_eq!(world.count("SELECT count(*) FROM intake_events").await, 0);
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_its_token_and_health_and_metrics_do_not() {
    let world = World::new().await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let event = accepted_event(7, "Acme Corp", "pm_card_visa");
    assert_eq!(api.post_event_with(&event, None).await.status, 401);
    assert_eq!(
        api.post_event_with(&event, Some("wrong-token-0123456789"))
            .await
            .status,
        401
    );
    assert_eq!(api.get_without_token("/api/v1/workflows").await.status, 401);
    assert_eq!(api.get_without_token("/healthz").await.status, 200);
    let before = api
        .get_without_token("/metrics")
        .await
        .body
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for metric in [
        "q2c_dead_letters_total 0",
        "q2c_workflows_started_total 0",
        "q2c_workflows_finished_total{outcome=\"failed\"} 0",
    ] {
        assert!(
            before.contains(metric),
            "no `{metric}` at start in {before}"
        );
    }
    let ready = api.get_without_token("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body, json!({"postgres": "ok", "rabbitmq": "ok"}));
    assert_eq!(api.post_event(&event).await.status, 202);
    let metrics = api.get_without_token("/metrics").await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("q2c_workflows_started_total 1"), "{text}");
    assert!(text.contains("q2c_outbox_backlog"), "{text}");
    let _sim = Sim::start(&world, &[]).await;
    api.all_reach("completed", 1, DEADLINE).await;
    let text = api
        .get_without_token("/metrics")
        .await
        .body
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for metric in [
        "q2c_workflows_finished_total{outcome=\"completed\"} 1",
        "q2c_replies_applied_total 4",
        "q2c_step_latency_seconds_count{command=\"erp.create_order\"} 1",
    ] {
        assert!(text.contains(metric), "no `{metric}` in {text}");
    }
    assert!(serve.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_shows_its_version_steps_and_history() {
    let world = World::new().await;
    let sim = Sim::start(&world, &[]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let started = api
        .post_event(&accepted_event(8, "Acme Corp", "pm_card_visa"))
        .await;
    let id = started.body["workflow_id"].as_str().unwrap().to_owned();
    api.all_reach("completed", 1, DEADLINE).await;

    let detail = api.get(&format!("/api/v1/workflows/{id}")).await;
    assert_eq!(detail.status, 200);
    let body = &detail.body;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["outcome"], "completed");
    assert_eq!(body["definition"], "quote-to-cash");
    assert_eq!(detail.etag, Some(format!("\"{}\"", body["version"])));
    let steps: Vec<(&str, &str)> = body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["name"].as_str().unwrap(),
                step["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("create_order", "succeeded"),
            ("issue_invoice", "succeeded"),
            ("collect_payment", "succeeded"),
            ("report_status", "succeeded")
        ]
    );
    assert!(body["steps"][0]["output"]["order_id"].is_string());
    let kinds: Vec<&str> = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "event_received",
        "command_sent",
        "reply_received",
        "state_changed",
    ] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    let sent = body["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["kind"] == "command_sent")
        .unwrap();
    assert_eq!(sent["step"], "create_order");
    assert_eq!(sent["command"], "erp.create_order");

    assert_eq!(api.get("/api/v1/workflows/not-a-uuid").await.status, 400);
    let missing = api
        .get(&format!("/api/v1/workflows/{}", uuid::Uuid::nil()))
        .await;
    assert_eq!(missing.status, 404);
    let by_status = api.get("/api/v1/workflows?status=completed").await;
    assert_eq!(by_status.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(api.get("/api/v1/workflows?status=bogus").await.status, 400);
    let bad_limit = api.get("/api/v1/workflows?limit=abc").await;
    assert_eq!(
        (bad_limit.status, bad_limit.content_type.as_str()),
        (400, "application/problem+json")
    );
    let nowhere = api.get("/api/v1/nowhere").await;
    assert_eq!(
        (nowhere.status, nowhere.content_type.as_str()),
        (404, "application/problem+json")
    );
    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_in_the_middle_of_a_hundred_quotes_loses_nothing() {
    let world = World::new().await;
    let sim = Sim::start(&world, &["--latency", "5ms"]).await;
    let serve = world.serve(&[("Q2C_OUTBOX_LEASE", "2s")]).await;
    let api = Api::new(&serve.http);
    for n in 0..100 {
        assert_eq!(
            api.post_event(&accepted_event(n, "Acme Corp", "pm_card_visa"))
                .await
                .status,
            202
        );
    }
    eventually("some quotes to be paid", DEADLINE, || async {
        sim.effects("payment.collect").len() >= 10
    })
    .await;
    serve.kill().await;
    let restarted = world.serve(&[("Q2C_OUTBOX_LEASE", "2s")]).await;
    let api = Api::new(&restarted.http);
    api.all_reach("completed", 100, DEADLINE).await;
    eventually("the outbox to drain", DEADLINE, || async {
        world.unsent().await == 0
    })
    .await;
    for command in [
        "erp.create_order",
        "payment.collect",
        "salesforce.report_status",
    ] {
        assert_eq!(sim.effects(command).len(), 100, "{command}");
    }
    sim.assert_each_effect_once();
    assert!(restarted.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_complete_every_workflow_once() {
    let world = World::new().await;
    let sim = Sim::start(&world, &[]).await;
    let first = world.serve(&[]).await;
    let second = world.serve(&[]).await;
    let apis = [Api::new(&first.http), Api::new(&second.http)];
    for n in 0..30 {
        let answer = apis[(n % 2) as usize]
            .post_event(&accepted_event(n, "Acme Corp", "pm_card_visa"))
            .await;
        assert_eq!(answer.status, 202);
    }
    apis[0].all_reach("completed", 30, DEADLINE).await;
    assert_eq!(sim.effects("payment.collect").len(), 30);
    sim.assert_each_effect_once();
    assert!(first.terminate().await.success());
    assert!(second.terminate().await.success());
    sim.stop();
}
