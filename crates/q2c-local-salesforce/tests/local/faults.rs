//! The console (publishing by a person, status) and every fault switch,
//! driven over HTTP as a test in another process would.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use q2c_local_salesforce::{Command, Error, EventKind, Fault, LocalSalesforce, PublishArgs};
use q2c_pubsub::ReplayPreset;
use serde_json::json;
use tonic::Code;

use crate::common::*;

async fn switch(sf: &LocalSalesforce, fault: Fault) {
    q2c_local_salesforce::apply_fault(&sf.http_url(), fault)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_console_publishes_events_and_refuses_bad_ones() {
    let sf = start().await;
    let url = sf.http_url();

    let published =
        q2c_local_salesforce::publish(&url, "Q2C_Quote_Accepted__e", accepted_fields("a0q1"), None)
            .await
            .unwrap();
    assert_eq!(published.topic, ACCEPTED);
    assert_eq!(published.replay_id, "0000000000000001");
    uuid_like(&published.id);

    let id = "0196f0c1-0000-7000-8000-0000000000aa";
    let published = q2c_local_salesforce::publish(
        &url,
        "Q2C_Quote_Cancelled__e",
        json!({"Quote_Id__c": "a0q1", "Reason__c": "customer withdrew", "CreatedDate": "2026-11-27T10:00:00Z"}),
        Some(id),
    )
    .await
    .unwrap();
    assert_eq!(published.id, id);
    assert_eq!(published.topic, CANCELLED);

    // Raw HTTP: the status codes and bodies a person sees.
    let http = reqwest::Client::new();
    let response = http
        .post(format!("{url}/local/events/Q2C_Quote_Accepted__e"))
        .json(&json!({"Quote_Id__c": "a0q2", "Discount__c": 5, "Colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("Discount__c") && message.contains("Colour"),
        "{body}"
    );

    let response = http
        .post(format!("{url}/local/events/Q2C_Quote_Accepted__e"))
        .json(&json!({"Net_Amount__c": "not a number"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let response = http
        .post(format!("{url}/local/events/Nope__e"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    let refused = q2c_local_salesforce::publish(
        &url,
        "Q2C_Quote_Accepted__e",
        json!({"Quote_Id__c": "a0q3"}),
        Some("not-a-uuid"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, Error::Refused { status: 400, .. }),
        "{refused}"
    );

    let refused = q2c_local_salesforce::publish(&url, "Q2C_Quote_Accepted__e", json!([1]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Refused { status: 400, .. }),
        "{refused}"
    );

    let status = q2c_local_salesforce::status(&url).await.unwrap();
    assert_eq!(status.topics[ACCEPTED].published, 1);
    assert_eq!(status.topics[CANCELLED].published, 1);
    assert_eq!(
        status.topics[ACCEPTED].latest_replay_id.as_deref(),
        Some("0000000000000001")
    );
    assert_eq!(status.org_id, sf.org_id());
}

#[tokio::test]
async fn the_publish_command_sends_a_file() {
    let sf = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("quote.json");
    std::fs::write(&file, accepted_fields("a0qCLI").to_string()).unwrap();
    q2c_local_salesforce::run(Command::Publish(PublishArgs {
        event: EventKind::Accepted,
        file: file.clone(),
        url: sf.http_url(),
        id: Some("0196f0c1-0000-7000-8000-0000000000c1".to_owned()),
    }))
    .await
    .unwrap();
    assert_eq!(sf.status().topics[ACCEPTED].published, 1);

    std::fs::write(&file, "[1, 2]").unwrap();
    let refused = q2c_local_salesforce::run(Command::Publish(PublishArgs {
        event: EventKind::Cancelled,
        file,
        url: sf.http_url(),
        id: None,
    }))
    .await
    .unwrap_err();
    assert!(matches!(refused, Error::NotJson(_)), "{refused}");
}

fn uuid_like(id: &str) {
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
}

#[tokio::test]
async fn expire_tokens_ends_streams_and_refuses_old_tokens() {
    let (sf, auth, mut client, mut sub) = streaming().await;

    switch(&sf, Fault::ExpireTokens).await;
    let status = sub.error().await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(error_code(&status), "service.auth.error");

    let status = client
        .get_topic(auth.request(topic_request(ACCEPTED)))
        .await
        .unwrap_err();
    assert_eq!(error_code(&status), "service.auth.error");

    // A new token works again.
    let fresh = Auth::new(&sf).await;
    client
        .get_topic(fresh.request(topic_request(ACCEPTED)))
        .await
        .unwrap();
}

#[tokio::test]
async fn unavailable_ends_streams_and_refuses_the_next_subscribes() {
    let (sf, auth, mut client, mut sub) = streaming().await;

    switch(&sf, Fault::Unavailable { count: 2 }).await;
    let status = sub.error().await;
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(error_code(&status), "service.unavailable");

    for _ in 0..2 {
        let mut refused = subscribe(&mut client, &auth, accepted_earliest(5)).await;
        assert_eq!(error_code(&refused.error().await), "service.unavailable");
    }
    let mut third = subscribe(&mut client, &auth, accepted_earliest(5)).await;
    assert_eq!(replays(&third.events().await), [1]);

    let status = sf.status();
    assert_eq!(status.topics[ACCEPTED].subscribe_calls, 4);
    assert_eq!(status.subscribe_calls, 4);
    assert_eq!(status.faults.refuse_subscribes, 0);
}

#[tokio::test]
async fn stall_sends_nothing_until_cleared() {
    let (sf, auth, mut client) =
        connect_with(|c| c.keepalive_interval = Duration::from_millis(150)).await;
    let mut open = subscribe(&mut client, &auth, accepted_latest(5)).await;
    // Keepalives flow before the stall.
    assert!(open.response().await.events.is_empty());

    switch(&sf, Fault::Stall { on: true }).await;
    // A stream opened during the stall is served nothing either.
    let mut fresh = subscribe(&mut client, &auth, accepted_earliest(5)).await;
    publish_accepted(&sf, 1);
    fresh.quiet().await;
    // A keepalive sent just before the switch may still be in flight.
    while let Ok(message) =
        tokio::time::timeout(Duration::from_millis(1), open.responses.message()).await
    {
        assert!(message.unwrap().unwrap().events.is_empty());
    }
    open.quiet().await;
    assert_eq!(sf.status().topics[ACCEPTED].open_streams, 2);

    switch(&sf, Fault::Stall { on: false }).await;
    assert_eq!(replays(&fresh.events().await), [1]);
    assert_eq!(replays(&open.events().await), [1]);
}

#[tokio::test]
async fn duplicate_delivers_each_event_twice() {
    let (sf, auth, mut client) = connect().await;
    let ids_published = publish_accepted(&sf, 2);
    switch(&sf, Fault::Duplicate { on: true }).await;
    let mut sub = subscribe(&mut client, &auth, accepted_earliest(5)).await;
    let response = sub.events().await;
    assert_eq!(replays(&response), [1, 1, 2, 2]);
    assert_eq!(
        ids(&response),
        [
            ids_published[0].clone(),
            ids_published[0].clone(),
            ids_published[1].clone(),
            ids_published[1].clone()
        ]
    );
    assert_eq!(response.events[0], response.events[1]);
    // Flow control counts each event once.
    assert_eq!(response.pending_num_requested, 3);

    switch(&sf, Fault::Duplicate { on: false }).await;
    publish_accepted(&sf, 1);
    assert_eq!(replays(&sub.events().await), [3]);
}

#[tokio::test]
async fn garble_stores_payloads_that_no_longer_decode() {
    let (sf, auth, mut client) = connect().await;
    publish_accepted(&sf, 1);
    switch(&sf, Fault::Garble { on: true }).await;
    publish_accepted(&sf, 1);
    switch(&sf, Fault::Garble { on: false }).await;
    let mut sub = subscribe(&mut client, &auth, accepted_earliest(5)).await;
    let response = sub.events().await;
    assert_eq!(replays(&response), [1, 2]);
    let schema = apache_avro::Schema::parse_str(q2c_pubsub::schemas::QUOTE_ACCEPTED).unwrap();
    let decode = |payload: &[u8]| {
        apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut &payload[..])
            .is_ok()
    };
    assert!(decode(&response.events[0].event.as_ref().unwrap().payload));
    assert!(!decode(&response.events[1].event.as_ref().unwrap().payload));
}

#[tokio::test]
async fn expire_replay_ids_makes_every_earlier_id_corrupted() {
    let (sf, auth, mut client) = connect().await;
    publish_accepted(&sf, 2);
    switch(&sf, Fault::ExpireReplayIds).await;
    for counter in [1, 2] {
        let mut sub = subscribe(
            &mut client,
            &auth,
            fetch(ACCEPTED, ReplayPreset::Custom, replay(counter), 1),
        )
        .await;
        let status = sub.error().await;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(error_code(&status), "subscription.fetch.replayid.corrupted");
    }
    assert_eq!(sf.status().topics[ACCEPTED].events, 0);

    // Later events are retained as usual, and their ids are good.
    let third = publish_accepted(&sf, 1);
    let mut sub = subscribe(&mut client, &auth, accepted_earliest(5)).await;
    let response = sub.events().await;
    assert_eq!(ids(&response), third);
    assert_eq!(replays(&response), [3]);
}

#[tokio::test]
async fn clear_turns_every_switch_off() {
    let sf = start().await;
    switch(&sf, Fault::Stall { on: true }).await;
    switch(&sf, Fault::Duplicate { on: true }).await;
    switch(&sf, Fault::Unavailable { count: 3 }).await;
    let status = q2c_local_salesforce::status(&sf.http_url()).await.unwrap();
    assert!(status.faults.stall && status.faults.duplicate);
    assert_eq!(status.faults.refuse_subscribes, 3);

    switch(&sf, Fault::Clear).await;
    let status = sf.status();
    assert!(!status.faults.stall && !status.faults.duplicate);
    assert_eq!(status.faults.refuse_subscribes, 0);

    let auth = Auth::new(&sf).await;
    let mut client = client(&sf).await;
    publish_accepted(&sf, 1);
    let mut sub = subscribe(&mut client, &auth, accepted_earliest(5)).await;
    assert_eq!(replays(&sub.events().await), [1]);
}

#[tokio::test]
async fn fault_routes_refuse_unknown_names_and_bad_bodies() {
    let sf = start().await;
    let http = reqwest::Client::new();
    let url = sf.http_url();
    let response = http
        .post(format!("{url}/local/faults/meteor"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let response = http
        .post(format!("{url}/local/faults/stall"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // An unavailable switch without a body ends streams and refuses none.
    let response = http
        .post(format!("{url}/local/faults/unavailable"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn status_counts_streams_open_at_once() {
    let (sf, auth, mut client, first) = streaming().await;
    let mut second = subscribe(&mut client, &auth, accepted_earliest(5)).await;
    second.events().await;
    let status = sf.status();
    let topic = &status.topics[ACCEPTED];
    assert_eq!((topic.open_streams, topic.max_open_streams), (2, 2));
    assert_eq!(topic.subscribe_calls, 2);
    assert_eq!(status.topics[CANCELLED].max_open_streams, 0);
    assert_eq!(status.tokens_issued, 1);

    // A stream the client drops is no longer counted open.
    drop(first);
    tokio::time::timeout(DEADLINE, async {
        while sf.status().topics[ACCEPTED].open_streams > 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the dropped stream is still counted open");
    assert_eq!(sf.status().topics[ACCEPTED].max_open_streams, 2);
}
