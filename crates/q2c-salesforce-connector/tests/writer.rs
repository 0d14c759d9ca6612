//! Status writes against the local Salesforce's REST side: the ordering
//! rule, the API budget, passing failures, and expired tokens.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use q2c_local_salesforce::{Config, DEFAULT_CLIENT_SECRET, Fault, LocalSalesforce};
use q2c_salesforce_auth::{Credentials, Secret, Tokens};
use q2c_salesforce_connector::limits::Reserve;
use q2c_salesforce_connector::mapping::{Fields, Report, Target, write};
use q2c_salesforce_connector::writer::{Writer, Written};
use serde_json::json;

async fn local() -> (LocalSalesforce, String) {
    let local = q2c_local_salesforce::start(Config::for_tests())
        .await
        .unwrap();
    let id = local
        .create_record(
            "Opportunity",
            &json!({"Name": "Q-00042", "StageName": "Closed Won"}),
        )
        .unwrap();
    (local, id)
}

fn writer(local: &LocalSalesforce, reserve: f64) -> Writer {
    let tokens = Tokens::new(
        &local.login_url(),
        Credentials::ClientCredentials {
            client_id: local.client_id().to_owned(),
            client_secret: Secret::new(DEFAULT_CLIENT_SECRET),
        },
    )
    .unwrap();
    Writer::new(
        Arc::new(tokens),
        "v62.0",
        "Q2C_Status_Sequence__c",
        Reserve {
            share: reserve,
            window: q2c_salesforce_connector::limits::DAY,
        },
    )
    .unwrap()
}

fn report(opportunity: &str, outcome: &str, at: &str) -> Report {
    Report::from_payload(&json!({
        "workflow_id": "01a2b3c4-0000-7000-8000-000000000001",
        "quote_id": "a0q5e00000ABCDEFGH",
        "opportunity_id": opportunity,
        "outcome": outcome,
        "order_id": "SO-1",
        "failure_reason": null,
        "outcome_at": at,
    }))
    .unwrap()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn to_opportunity(report: &Report) -> Vec<q2c_salesforce_connector::mapping::Write> {
    vec![write(
        report,
        &Target::Opportunity,
        &Fields::record_defaults(),
    )]
}

#[tokio::test]
async fn a_retried_older_status_does_not_overwrite_a_newer_one() {
    let (local, id) = local().await;
    let writer = writer(&local, 0.0);
    let newer = report(&id, "completed", "2026-11-27T10:00:02.000Z");
    let older = report(&id, "failed", "2026-11-27T10:00:01.000Z");
    assert_eq!(
        writer.write(&to_opportunity(&newer), soon()).await,
        Written::Done
    );
    assert_eq!(
        writer.write(&to_opportunity(&older), soon()).await,
        Written::Done,
        "refused as older, which is what the sequence is for"
    );
    let record = local.record("Opportunity", &id).unwrap();
    assert_eq!(record["Q2C_Status__c"], "completed");
}

#[tokio::test]
async fn inside_the_reserve_writes_are_paced_and_handed_back_not_lost() {
    let (local, id) = local().await;
    local.set_limits(Some(800), Some(1000));
    let writer = writer(&local, 0.1);
    let first = report(&id, "completed", "2026-11-27T10:00:01.000Z");
    assert_eq!(
        writer.write(&to_opportunity(&first), soon()).await,
        Written::Done
    );
    let calls = local.status().rest.api_calls;

    local.set_limits(Some(905), Some(1000));
    let second = report(&id, "completed", "2026-11-27T10:00:02.000Z");
    assert_eq!(
        writer.write(&to_opportunity(&second), soon()).await,
        Written::Done,
        "still above the reserve"
    );

    let third = report(&id, "completed", "2026-11-27T10:00:03.000Z");
    let paced = writer.write(&to_opportunity(&third), soon()).await;
    assert!(
        matches!(&paced, Written::Retryable(reason) if reason.contains("budget is low")),
        "{paced:?}"
    );
    assert_eq!(
        local.status().rest.api_calls,
        calls + 1,
        "the paced write made no call"
    );
    assert_eq!(
        writer.usage().unwrap().remaining(),
        94,
        "inside the reserve of 100"
    );
}

#[tokio::test]
async fn locked_rows_and_expired_tokens_are_worked_through() {
    let (local, id) = local().await;
    let writer = writer(&local, 0.0);
    let status = report(&id, "completed", "2026-11-27T10:00:01.000Z");
    assert_eq!(
        writer.write(&to_opportunity(&status), soon()).await,
        Written::Done
    );
    local.apply(Fault::LockRow { count: 2 });
    local.apply(Fault::ExpireTokens);
    let later = report(&id, "compensated", "2026-11-27T10:00:02.000Z");
    assert_eq!(
        writer.write(&to_opportunity(&later), soon()).await,
        Written::Done
    );
    assert_eq!(
        local.record("Opportunity", &id).unwrap()["Q2C_Status__c"],
        "compensated"
    );
}

#[tokio::test]
async fn an_outage_longer_than_the_step_allows_is_a_retryable_failure() {
    let (local, id) = local().await;
    let writer = writer(&local, 0.0);
    local.apply(Fault::RestDown { on: true });
    let status = report(&id, "completed", "2026-11-27T10:00:01.000Z");
    let answer = writer
        .write(
            &to_opportunity(&status),
            Instant::now() + Duration::from_millis(500),
        )
        .await;
    assert!(
        matches!(&answer, Written::Retryable(reason) if reason.contains("SERVER_UNAVAILABLE")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn an_unknown_field_is_definitive_with_salesforces_words() {
    let (local, id) = local().await;
    let writer = writer(&local, 0.0);
    let status = report(&id, "completed", "2026-11-27T10:00:01.000Z");
    let mut fields = Fields::record_defaults();
    fields.status = "Q2C_Stage__c".into();
    let answer = writer
        .write(&[write(&status, &Target::Opportunity, &fields)], soon())
        .await;
    assert!(
        matches!(&answer, Written::Definitive(reason) if reason.contains("INVALID_FIELD") && reason.contains("Q2C_Stage__c")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_record_and_an_event_go_in_one_composite_call() {
    let (local, id) = local().await;
    let writer = writer(&local, 0.0);
    let status = report(&id, "completed", "2026-11-27T10:00:01.000Z");
    let calls = local.status().rest.api_calls;
    let writes = vec![
        write(&status, &Target::Opportunity, &Fields::record_defaults()),
        write(
            &status,
            &Target::PlatformEvent {
                event: "Q2C_Order_Status__e".into(),
            },
            &Fields::event_defaults(),
        ),
    ];
    assert_eq!(writer.write(&writes, soon()).await, Written::Done);
    assert_eq!(local.status().rest.api_calls, calls + 1);
    assert_eq!(local.published("Q2C_Order_Status__e").len(), 1);
    assert_eq!(
        local.record("Opportunity", &id).unwrap()["Q2C_Status__c"],
        "completed"
    );
}

#[tokio::test]
async fn a_spent_budget_hands_the_write_back_as_retryable() {
    let (local, id) = local().await;
    local.set_limits(Some(1000), Some(1000));
    let writer = writer(&local, 0.0);
    let status = report(&id, "completed", "2026-11-27T10:00:01.000Z");
    let answer = writer.write(&to_opportunity(&status), soon()).await;
    assert!(
        matches!(&answer, Written::Retryable(reason) if reason.contains("used up")),
        "{answer:?}"
    );
    assert_eq!(
        local.record("Opportunity", &id).unwrap()["Q2C_Status__c"],
        serde_json::Value::Null
    );
}
