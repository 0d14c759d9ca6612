//! Operators repair stuck quotes, end to end: the real `q2c serve`, the
//! simulated connectors over RabbitMQ, and Postgres.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use q2c_http::auth::{Role, entry_line};
use serde_json::{Value, json};
use support::product::{Api, Sim, accepted_event};
use support::{World, fast_definition};

/// Generous: these tests assert outcomes, not times.
const DEADLINE: Duration = Duration::from_secs(90);

const OTTO: &str = "otto-operator-token-0123456789";

/// `otto`, an operator, besides the admin token every test server has.
fn operator_tokens() -> String {
    entry_line("otto", Role::Operator, OTTO).unwrap()
}

/// Replaces the definition the server will load.
fn use_definition(world: &World, text: &str) {
    std::fs::write(world.directory.path().join("quote-to-cash.toml"), text).unwrap();
}

fn workflow_id(answer: &Value) -> String {
    answer["workflow_id"].as_str().unwrap().to_owned()
}

/// Starts quote 1 of Initech, paying with `payment_method`, and waits for
/// it to suspend at the payment step; returns its id and that view.
async fn suspend_at_payment(api: &Api, payment_method: &str) -> (String, Value) {
    let started = api
        .post_event(&accepted_event(1, "Initech", payment_method))
        .await;
    assert_eq!(started.status, 202, "{}", started.body);
    let id = workflow_id(&started.body);
    let halted = api
        .workflow_until(&id, "the payment step to suspend", DEADLINE, |view| {
            view["status"] == "suspended"
        })
        .await;
    assert_eq!(halted["step"], "collect_payment");
    (id, halted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_payment_suspends_and_an_operator_resumes_it_with_a_new_card() {
    let world = World::new().await;
    let definition = fast_definition().replace(
        "on_failure = \"compensate\"\ndeadline",
        "on_failure = \"suspend\"\ndeadline",
    );
    assert!(definition.contains("on_failure = \"suspend\""));
    use_definition(&world, &definition);
    let sim = Sim::start(&world, &[]).await;
    let tokens = operator_tokens();
    let serve = world.serve(&[("Q2C_API_TOKENS", &tokens)]).await;
    let api = Api::new(&serve.http);

    let (id, halted) = suspend_at_payment(&api, "pm_card_chargeDeclined").await;
    assert_eq!(
        halted["steps"][2]["last_error"],
        "card declined: generic_decline"
    );
    assert_eq!(
        halted["allowed_actions"],
        json!(["resume", "skip", "cancel", "terminate", "pause"])
    );

    let resumed = api
        .act(
            &id,
            "resume",
            &json!({
                "reason": "customer gave a new card on the phone",
                "input": {"payment_method": "pm_card_visa"}
            }),
            OTTO,
        )
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    let done = api
        .workflow_until(&id, "the workflow to complete", DEADLINE, |view| {
            view["status"] == "completed"
        })
        .await;

    let payments: Vec<_> = sim
        .deliveries()
        .into_iter()
        .filter(|d| d.command_type == "payment.collect")
        .collect();
    assert_eq!(payments.len(), 2);
    assert!(payments[0].idempotency_key.ends_with(":collect_payment:r1"));
    assert!(
        payments[1].idempotency_key.ends_with(":collect_payment:r2"),
        "a changed input is a new revision, so a new key"
    );
    assert_eq!(sim.effects("payment.collect").len(), 1);
    assert!(sim.effects("erp.cancel_order").is_empty(), "nothing undone");
    assert_eq!(
        done["steps"][2]["earlier_revisions"][0]["input"]["payment_method"],
        "pm_card_chargeDeclined"
    );
    let history = done["history"].to_string();
    assert!(history.contains("resume by otto (operator): customer gave a new card on the phone"));

    let audit = api.get(&format!("/api/v1/audit?workflow_id={id}")).await;
    assert_eq!(audit.status, 200);
    let entry = &audit.body["items"][0];
    assert_eq!(entry["actor"], "otto");
    assert_eq!(entry["role"], "operator");
    assert_eq!(entry["reason"], "customer gave a new card on the phone");
    assert_eq!(entry["result"], "applied");
    assert_eq!(entry["state_before"]["status"], "suspended");
    // An operator may act but not read the audit trail.
    assert_eq!(api.get_as("/api/v1/audit", OTTO).await.status, 403);

    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_workflow_holds_its_reply_and_moves_on_only_when_unpaused() {
    let world = World::new().await;
    // Shipped timing (30 s timeouts) and slow connectors, so that a reply
    // arrives while the workflow is paused.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/workflows/quote-to-cash.toml"
    ))
    .unwrap();
    use_definition(&world, &shipped);
    let sim = Sim::start(&world, &["--latency", "3s"]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);

    let paused_one = workflow_id(
        &api.post_event(&accepted_event(1, "Acme Corp", "pm_card_visa"))
            .await
            .body,
    );
    // Paused once the ERP has the order (it answers 3 s later), so the
    // command has left and its reply arrives while paused.
    support::eventually("the ERP to receive the order", DEADLINE, || async {
        sim.deliveries()
            .iter()
            .any(|delivery| delivery.workflow_id.to_string() == paused_one)
    })
    .await;
    let paused = api
        .act(
            &paused_one,
            "pause",
            &json!({"reason": "ERP team asked us to hold"}),
            support::TOKEN,
        )
        .await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    let holding = api
        .workflow_until(
            &paused_one,
            "the order reply to be held",
            DEADLINE,
            |view| view["held_events"] == 1,
        )
        .await;
    assert_eq!(
        holding["steps"][0]["status"], "running",
        "held, not applied"
    );

    // Another quote runs to the end meanwhile: the relay and the consumer
    // are working, and the paused workflow still has not moved.
    let other = workflow_id(
        &api.post_event(&accepted_event(2, "Initech", "pm_card_visa"))
            .await
            .body,
    );
    api.workflow_until(&other, "the other workflow to complete", DEADLINE, |view| {
        view["status"] == "completed"
    })
    .await;
    let sent_for_paused: Vec<String> = sim
        .deliveries()
        .into_iter()
        .filter(|d| d.workflow_id.to_string() == paused_one)
        .map(|d| d.command_type)
        .collect();
    assert_eq!(
        sent_for_paused,
        ["erp.create_order"],
        "no command left while paused"
    );
    let still = api
        .get(&format!("/api/v1/workflows/{paused_one}"))
        .await
        .body;
    assert_eq!(still["paused"], true);
    assert_eq!(still["held_events"], 1);

    let unpaused = api
        .act(
            &paused_one,
            "unpause",
            &json!({"reason": "ERP is back"}),
            support::TOKEN,
        )
        .await;
    assert_eq!(unpaused.status, 200, "{}", unpaused.body);
    let done = api
        .workflow_until(
            &paused_one,
            "the unpaused workflow to complete",
            DEADLINE,
            |view| view["status"] == "completed",
        )
        .await;
    assert!(done["steps"][0]["output"]["order_id"].is_string());
    assert_eq!(sim.effects("erp.create_order").len(), 2, "one per quote");
    sim.assert_each_effect_once();
    let history = done["history"].to_string();
    assert!(history.contains("held while paused"), "{history}");
    assert!(history.contains("unpaused"), "{history}");

    assert!(serve.terminate().await.success());
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_flags_the_workflow_and_counts_in_metrics() {
    let world = World::new().await;
    let definition = fast_definition().replacen(
        "on_failure = \"compensate\"",
        "on_failure = \"compensate\"\ndeadline = { after = \"300ms\", escalation = \"flag\" }",
        1,
    );
    use_definition(&world, &definition);
    let sim = Sim::start(&world, &["--latency", "1s"]).await;
    let serve = world.serve(&[]).await;
    let api = Api::new(&serve.http);
    let before = api.get_without_token("/metrics").await;
    assert!(
        before
            .body
            .as_str()
            .unwrap()
            .contains("q2c_deadline_escalations_total{step=\"create_order\"} 0"),
        "{}",
        before.body
    );

    let id = workflow_id(
        &api.post_event(&accepted_event(1, "Acme Corp", "pm_card_visa"))
            .await
            .body,
    );
    let flagged = api
        .workflow_until(&id, "the deadline to flag the workflow", DEADLINE, |view| {
            !view["attention"].is_null()
        })
        .await;
    assert_eq!(flagged["attention"]["step"], "create_order");
    assert!(
        flagged["attention"]["reason"]
            .as_str()
            .unwrap()
            .contains("deadline of 300ms passed")
    );
    let metrics = api.get_without_token("/metrics").await;
    assert!(
        metrics
            .body
            .as_str()
            .unwrap()
            .contains("q2c_deadline_escalations_total{step=\"create_order\"} 1"),
        "{}",
        metrics.body
    );
    // A flag changes nothing else: the workflow goes on and completes.
    api.workflow_until(&id, "the flagged workflow to complete", DEADLINE, |view| {
        view["status"] == "completed"
    })
    .await;
    assert!(serve.terminate().await.success());
    sim.stop();
}

/// The ERP goes down: orders fail retryably until their attempts run out,
/// and under the `suspend` policy the workflows halt at `create_order`. Once it is back, an operator resumes
/// them all with one bulk action: the dry run lists exactly them, one of
/// them is terminated before the run (and is skipped and reported), the
/// server is killed in the middle of the run, and the restarted one
/// finishes the job at the configured rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_resume_after_an_erp_outage_survives_a_restart() {
    let world = World::new().await;
    let definition = fast_definition()
        .replacen("on_failure = \"compensate\"", "on_failure = \"suspend\"", 1)
        .replacen("max_attempts = 5", "max_attempts = 2", 1);
    use_definition(&world, &definition);
    // Every command answered "unavailable, try again": the ERP is down.
    let erp_down = Sim::start(&world, &["--failure-rate", "1"]).await;
    let settings = [("Q2C_BULK_LEASE", "2s")];
    let serve = world.serve(&settings).await;
    let api = Api::new(&serve.http);

    let mut started = Vec::new();
    for n in 1..=6 {
        let answer = api
            .post_event(&accepted_event(n, "Acme Corp", "pm_card_visa"))
            .await;
        started.push(workflow_id(&answer.body));
    }
    support::eventually(
        "six workflows to halt at create_order",
        DEADLINE,
        || async {
            let listed = api
                .get("/api/v1/workflows?status=suspended&step=create_order")
                .await;
            listed.body["items"].as_array().map(Vec::len) == Some(6)
        },
    )
    .await;

    let planned = api
        .post_json(
            "/api/v1/bulk-actions",
            &json!({
                "action": "resume",
                "reason": "ERP is back after the outage",
                "filter": {"status": "suspended", "step": "create_order"},
                "rate_per_second": 1.0,
            }),
        )
        .await;
    assert_eq!(planned.status, 201, "{}", planned.body);
    let job = planned.body["id"].as_i64().unwrap();
    let mut listed: Vec<String> = planned.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["workflow_id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = started.clone();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the dry run lists exactly the halted ones"
    );

    // Between the dry run and the run, one of them is dealt with by hand.
    let by_hand = started[2].clone();
    let terminated = api
        .act(
            &by_hand,
            "terminate",
            &json!({"reason": "customer withdrew"}),
            support::TOKEN,
        )
        .await;
    assert_eq!(terminated.status, 200, "{}", terminated.body);

    erp_down.stop();
    let sim = Sim::start(&world, &[]).await;
    let run = api
        .post_json(&format!("/api/v1/bulk-actions/{job}/run"), &json!({}))
        .await;
    assert_eq!(run.status, 202, "{}", run.body);
    let progress = |body: &Value, name: &str| body["progress"][name].as_i64().unwrap_or(0);
    support::eventually("the job to get under way", DEADLINE, || async {
        let shown = api.get(&format!("/api/v1/bulk-actions/{job}")).await;
        progress(&shown.body, "applied") >= 1
    })
    .await;
    serve.kill().await;

    let serve = world.serve(&settings).await;
    let api = Api::new(&serve.http);
    support::eventually(
        "the restarted server to finish the job",
        DEADLINE,
        || async {
            api.get(&format!("/api/v1/bulk-actions/{job}")).await.body["status"] == "finished"
        },
    )
    .await;
    let shown = api.get(&format!("/api/v1/bulk-actions/{job}")).await.body;
    assert_eq!(progress(&shown, "applied"), 5, "{shown}");
    assert_eq!(progress(&shown, "changed"), 1, "{shown}");
    let skipped = shown["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["result"] == "changed")
        .unwrap();
    assert_eq!(skipped["workflow_id"], by_hand.as_str());
    assert!(
        skipped["detail"]
            .as_str()
            .unwrap()
            .contains("since the dry run")
    );

    for id in &started {
        let expected = if *id == by_hand {
            "terminated"
        } else {
            "completed"
        };
        api.workflow_until(id, &format!("{id} to be {expected}"), DEADLINE, |view| {
            view["status"] == expected
        })
        .await;
    }
    assert_eq!(sim.effects("erp.create_order").len(), 5);

    // Each workflow of the job has its audit row, and the job kept its rate.
    let audit = api.get("/api/v1/audit?limit=100").await.body;
    let mut applied_at: Vec<chrono::DateTime<chrono::Utc>> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["bulk_job_id"] == job && row["result"] == "applied")
        .map(|row| row["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(applied_at.len(), 5);
    applied_at.sort();
    for pair in applied_at.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 900, "resumed {gap} ms apart at 1 per second");
    }
    assert!(serve.terminate().await.success());
    sim.stop();
}

/// The payment step suspends once its attempts go unanswered, after two.
fn payments_that_suspend() -> String {
    let definition = fast_definition()
        .replace(
            "on_failure = \"compensate\"\ndeadline = { after = \"1h\"",
            "on_failure = \"suspend\"\ndeadline = { after = \"1h\"",
        )
        .replace(
            "retry = { max_attempts = 5, initial_backoff = \"100ms\"",
            "retry = { max_attempts = 2, initial_backoff = \"100ms\"",
        );
    assert!(definition.contains("on_failure = \"suspend\"\ndeadline = { after = \"1h\""));
    definition
}

/// The first charge is made but its reply is held back: the payment step
/// times out and suspends, an operator resumes it with a new card saying
/// what became of the first charge (`earlier`), and then the held reply
/// arrives. Returns the workflow's final view and the connector's ledger.
async fn resume_with_a_new_card_while_the_first_charge_is_held(
    earlier: &str,
) -> (Value, support::connector::Ledger) {
    use support::connector::{Behaviour, Connector};
    let world = World::new().await;
    use_definition(&world, &payments_that_suspend());
    let connector = Connector::start(
        &world,
        Behaviour {
            hold_replies_to: Some(":collect_payment:r1".to_owned()),
            ..Behaviour::default()
        },
    )
    .await;
    let tokens = operator_tokens();
    let serve = world.serve(&[("Q2C_API_TOKENS", &tokens)]).await;
    let api = Api::new(&serve.http);

    let (id, _) = suspend_at_payment(&api, "pm_card_visa").await;
    assert_eq!(
        connector.ledger().effects_of("payment.collect"),
        1,
        "charged once"
    );

    let new_card = json!({
        "reason": "the first charge never confirmed; the customer gave another card",
        "input": {"payment_method": "pm_card_mastercard"},
    });
    let refused = api.act(&id, "resume", &new_card, OTTO).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.starts_with("`earlier` is required"), "{detail}");

    let mut with_earlier = new_card.clone();
    with_earlier["earlier"] = json!(earlier);
    let resumed = api.act(&id, "resume", &with_earlier, OTTO).await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    api.workflow_until(&id, "the workflow to complete", DEADLINE, |view| {
        view["status"] == "completed"
    })
    .await;

    assert!(connector.release_held(&world).await >= 1);
    let done = api
        .workflow_until(&id, "the late success to be applied", DEADLINE, |view| {
            view["status"] == "completed"
                && view["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|entry| entry["kind"] == "late_reply")
                && view["steps"][2]["earlier_revisions"][0]["compensation"]["status"]
                    == "compensated"
        })
        .await;
    assert_eq!(
        done["steps"][2]["earlier_revisions"][0]["happened"], "done",
        "the held reply showed the first charge happened"
    );
    assert!(
        done["attention"]["reason"]
            .as_str()
            .unwrap()
            .contains(":collect_payment:r1"),
        "{}",
        done["attention"]
    );

    let audit = api.get(&format!("/api/v1/audit?workflow_id={id}")).await;
    let applied = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["result"] == "applied")
        .cloned()
        .unwrap();
    assert_eq!(applied["input"]["earlier"], earlier, "{applied}");

    let metrics = reqwest::get(format!("{}/metrics", serve.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("q2c_late_replies_total") && !line.ends_with(" 0")),
        "{metrics}"
    );

    assert!(serve.terminate().await.success());
    let ledger = connector.ledger();
    connector.stop();
    (done, ledger)
}

/// Where each command of the payment step was delivered first.
fn first_delivery(ledger: &support::connector::Ledger, key_suffix: &str) -> usize {
    ledger
        .deliveries
        .iter()
        .position(|delivery| delivery.key.ends_with(key_suffix))
        .unwrap_or_else(|| panic!("no delivery of {key_suffix}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_undo_refunds_the_first_charge_before_the_new_card_is_charged() {
    let (done, ledger) = resume_with_a_new_card_while_the_first_charge_is_held("undo").await;
    assert!(
        first_delivery(&ledger, ":collect_payment:r1:compensate")
            < first_delivery(&ledger, ":collect_payment:r2"),
        "the refund leaves before the new charge"
    );
    assert_eq!(ledger.effects_of("payment.collect"), 2);
    assert_eq!(ledger.effects_of("payment.refund"), 1, "one net charge");
    let history = done["history"].to_string();
    assert!(history.contains("the earlier attempt: undo"), "{history}");
    assert!(
        history.contains("its compensation has already run"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_not_done_refunds_the_first_charge_when_its_success_comes_late() {
    let (done, ledger) = resume_with_a_new_card_while_the_first_charge_is_held("not_done").await;
    assert!(
        first_delivery(&ledger, ":collect_payment:r2")
            < first_delivery(&ledger, ":collect_payment:r1:compensate"),
        "the new card is charged at once; the refund follows the late success"
    );
    assert_eq!(ledger.effects_of("payment.collect"), 2);
    assert_eq!(ledger.effects_of("payment.refund"), 1, "one net charge");
    let history = done["history"].to_string();
    assert!(
        history.contains("the earlier attempt: not_done"),
        "{history}"
    );
    assert!(
        history.contains("it is undone with its own key"),
        "{history}"
    );
}
