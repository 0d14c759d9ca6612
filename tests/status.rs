//! Statuses back to Salesforce end to end: `q2c connect salesforce` answers
//! the report step by writing each workflow's outcome to the quote's
//! Opportunity in the local Salesforce, over REST.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use q2c_local_salesforce::Fault;
use serde_json::{Value, json};
use support::product::{Api, Sim, accepted_fields};
use support::salesforce::{ACCEPTED, Login, Salesforce, StatusConnector};
use support::{World, eventually};

const DEADLINE: Duration = Duration::from_secs(60);

fn opportunity_id(n: u32) -> String {
    format!("0065e{n:013}")
}

/// Publishes quote `n`'s acceptance for `account` paying with `method`,
/// with an Opportunity of its own.
fn accept(salesforce: &Salesforce, n: u32, account: &str, method: &str) {
    let mut fields = accepted_fields(n, account, method);
    fields["Opportunity_Id__c"] = json!(opportunity_id(n));
    salesforce.publish(ACCEPTED, &fields, None);
}

fn opportunity(salesforce: &Salesforce, n: u32) -> Value {
    salesforce
        .local
        .record("Opportunity", &opportunity_id(n))
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_reaches_the_opportunity_with_its_references() {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let sim = Sim::start(&world, &["--without", "salesforce"]).await;
    let connector = StatusConnector::start(&world, &salesforce, &[]).await;
    let env = salesforce.env(Login::ClientCredentials);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let serve = world.serve(&env).await;
    let api = Api::new(&serve.http);

    accept(&salesforce, 0, "Acme Corp", "pm_card_visa");
    accept(&salesforce, 1, "Hooli [Credit Hold]", "pm_card_visa");
    accept(&salesforce, 2, "Acme Corp", "pm_card_chargeDeclined");
    eventually("three workflows to end", DEADLINE, || async {
        let mut statuses = api.statuses().await;
        statuses.sort();
        statuses == ["compensated", "completed", "failed"]
    })
    .await;

    let completed = opportunity(&salesforce, 0);
    assert_eq!(completed["Q2C_Status__c"], "completed", "{completed}");
    let workflow = api
        .get(&format!(
            "/api/v1/workflows/{}",
            completed["Q2C_Workflow_Id__c"].as_str().unwrap_or_default()
        ))
        .await
        .body;
    let output = |step: &str, field: &str| {
        workflow["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|each| each["name"] == step))
            .map(|each| each["output"][field].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        completed["Q2C_ERP_Order_Number__c"],
        output("create_order", "order_id"),
        "{workflow}"
    );
    assert_eq!(
        completed["Q2C_Invoice_Number__c"],
        output("issue_invoice", "invoice_id")
    );
    assert_eq!(
        completed["Q2C_Payment_Reference__c"],
        output("collect_payment", "payment_id")
    );
    assert!(
        completed["Q2C_Invoice_Number__c"].is_string(),
        "{completed}"
    );
    assert_eq!(
        completed["Q2C_Failure_Reason__c"],
        Value::Null,
        "{completed}"
    );
    assert!(
        completed["Q2C_Status_Sequence__c"].is_number(),
        "{completed}"
    );

    let failed = opportunity(&salesforce, 1);
    assert_eq!(failed["Q2C_Status__c"], "failed", "{failed}");
    assert_eq!(failed["Q2C_ERP_Order_Number__c"], Value::Null, "{failed}");
    assert!(
        failed["Q2C_Failure_Reason__c"]
            .as_str()
            .is_some_and(|reason| reason.contains("credit hold")),
        "{failed}"
    );

    let metrics = connector.metrics().await;
    assert!(
        metrics.contains("q2c_salesforce_writes_total{outcome=\"written\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("q2c_salesforce_api_calls_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("q2c_salesforce_api_remaining"),
        "{metrics}"
    );
    assert!(
        metrics.contains("q2c_salesforce_write_seconds"),
        "{metrics}"
    );

    let compensated = opportunity(&salesforce, 2);
    assert_eq!(compensated["Q2C_Status__c"], "compensated", "{compensated}");
    assert!(
        compensated["Q2C_Failure_Reason__c"]
            .as_str()
            .is_some_and(|reason| reason.contains("declined")),
        "{compensated}"
    );
    assert!(serve.terminate().await.success());
    connector.stop();
    sim.stop();
}

/// The world of these tests: q2c serve subscribed to the local Salesforce,
/// the simulated ERP, billing and payment, and the Salesforce connector
/// writing within `write_within`.
async fn running(write_within: &str) -> Running {
    running_with(&[("Q2C_SALESFORCE_WRITE_WITHIN", write_within)]).await
}

type Running = (
    World,
    Salesforce,
    Sim,
    StatusConnector,
    support::Orchestrator,
);

async fn running_with(connector_env: &[(&str, &str)]) -> Running {
    let world = World::new().await;
    let salesforce = Salesforce::start(|_| {}).await;
    let sim = Sim::start(&world, &["--without", "salesforce"]).await;
    let connector = StatusConnector::start(&world, &salesforce, connector_env).await;
    let env = salesforce.env(Login::ClientCredentials);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let serve = world.serve(&env).await;
    (world, salesforce, sim, connector, serve)
}

/// The one workflow's detail.
async fn the_workflow(api: &Api) -> Value {
    let list = api.get("/api/v1/workflows").await.body;
    let id = list["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    api.get(&format!("/api/v1/workflows/{id}")).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_down_never_holds_up_or_undoes_the_money_flow() {
    let (_world, salesforce, sim, connector, serve) = running("300ms").await;
    let api = Api::new(&serve.http);
    salesforce.fault(Fault::RestDown { on: true });
    accept(&salesforce, 0, "Acme Corp", "pm_card_visa");
    eventually("the money flow to complete", DEADLINE, || async {
        let workflow = the_workflow(&api).await;
        workflow["outcome"] == "completed"
            && workflow["steps"][3]["attempts"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let workflow = the_workflow(&api).await;
    assert_eq!(workflow["status"], "running", "{workflow}");
    assert_eq!(workflow["steps"][3]["name"], "report_status");
    assert_eq!(sim.effects("payment.collect").len(), 1);
    for undo in ["payment.refund", "billing.void_invoice", "erp.cancel_order"] {
        assert!(sim.effects(undo).is_empty(), "{undo} was sent");
    }
    assert_eq!(opportunity(&salesforce, 0)["Q2C_Status__c"], Value::Null);
    let metrics = connector.metrics().await;
    assert!(
        metrics.contains("q2c_salesforce_write_errors_total{code=\"SERVER_UNAVAILABLE\"}"),
        "{metrics}"
    );

    salesforce.fault(Fault::RestDown { on: false });
    eventually(
        "the status to be written once Salesforce is back",
        DEADLINE,
        || async { api.statuses().await == ["completed"] },
    )
    .await;
    assert_eq!(opportunity(&salesforce, 0)["Q2C_Status__c"], "completed");
    assert!(serve.terminate().await.success());
    connector.stop();
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_rule_suspends_the_workflow_with_salesforces_message() {
    let (_world, salesforce, sim, connector, serve) = running("2s").await;
    let api = Api::new(&serve.http);
    salesforce.fault(Fault::Validation {
        object: "Opportunity".into(),
        message: "Closed opportunities need a close reason".into(),
        on: true,
    });
    accept(&salesforce, 0, "Acme Corp", "pm_card_visa");
    eventually("the workflow to be suspended", DEADLINE, || async {
        api.statuses().await == ["suspended"]
    })
    .await;
    let workflow = the_workflow(&api).await;
    assert_eq!(workflow["outcome"], "completed", "{workflow}");
    let report = &workflow["steps"][3];
    assert_eq!(report["name"], "report_status");
    assert!(
        report["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("Closed opportunities need a close reason")),
        "{workflow}"
    );
    assert!(
        sim.effects("payment.refund").is_empty(),
        "it never compensates"
    );
    assert!(serve.terminate().await.success());
    connector.stop();
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_budget_nearly_spent_writes_slow_down_and_none_is_lost() {
    // 5 calls left of 100, inside a reserve of 20: they are spread over a
    // 2 s window (a day, in production), so each waits for the one before.
    let (_world, salesforce, sim, connector, serve) = running_with(&[
        ("Q2C_SALESFORCE_WRITE_WITHIN", "3s"),
        ("Q2C_SALESFORCE_API_RESERVE", "0.2"),
        ("Q2C_SALESFORCE_API_WINDOW", "2s"),
    ])
    .await;
    let api = Api::new(&serve.http);
    salesforce.local.set_limits(Some(95), Some(100));
    let started = std::time::Instant::now();
    for n in 0..3 {
        accept(&salesforce, n, "Acme Corp", "pm_card_visa");
    }
    eventually("every status to be written", DEADLINE, || async {
        api.statuses().await == ["completed", "completed", "completed"]
    })
    .await;
    for n in 0..3 {
        assert_eq!(opportunity(&salesforce, n)["Q2C_Status__c"], "completed");
    }
    // After the first call (96 used) the next waits 2 s / 4, the third
    // 2 s / 3: together at least 1.1 s, however fast the machine.
    assert!(
        started.elapsed() >= Duration::from_millis(1100),
        "writes were not paced: {:?}",
        started.elapsed()
    );
    let metrics = connector.metrics().await;
    assert!(
        metrics.contains("q2c_salesforce_api_remaining 2"),
        "{metrics}"
    );
    assert!(serve.terminate().await.success());
    connector.stop();
    sim.stop();
}
