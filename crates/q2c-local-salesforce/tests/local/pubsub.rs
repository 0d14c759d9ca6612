//! The Pub/Sub API: auth metadata, topics and schemas, Publish, and
//! Subscribe's presets, flow control, keepalives, idle close and retention.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use apache_avro::{
    Schema, reader::datum::GenericDatumReader, types::Value as Avro,
    writer::datum::GenericDatumWriter,
};
use q2c_pubsub::{ProducerEvent, PublishRequest, ReplayPreset, SchemaRequest};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn every_rpc_needs_token_instance_url_and_tenant() {
    let (sf, good, mut client) = connect().await;
    let bad = [
        Auth {
            token: String::new(),
            ..good.clone()
        },
        Auth {
            token: format!("{}!made-up", sf.org_id()),
            ..good.clone()
        },
        Auth {
            instance_url: "https://example.my.salesforce.com".to_owned(),
            ..good.clone()
        },
        Auth {
            tenant_id: "00DOTHERORG0000AAA".to_owned(),
            ..good.clone()
        },
    ];
    for auth in &bad {
        let status = client
            .get_topic(auth.request(topic_request(ACCEPTED)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(error_code(&status), "service.auth.error");

        let status = client
            .get_schema(auth.request(SchemaRequest {
                schema_id: sf.schema_id("Q2C_Quote_Accepted__e").unwrap(),
            }))
            .await
            .unwrap_err();
        assert_eq!(error_code(&status), "service.auth.error");

        let status = client
            .publish(auth.request(PublishRequest {
                topic_name: ACCEPTED.to_owned(),
                ..PublishRequest::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(error_code(&status), "service.auth.error");

        let status = Sub::open(&mut client, auth, accepted_latest(1))
            .await
            .err()
            .expect("subscribe without proper auth");
        assert_eq!(error_code(&status), "service.auth.error");
    }
    // With the right metadata, the same calls go through.
    client
        .get_topic(good.request(topic_request(ACCEPTED)))
        .await
        .unwrap();
}

#[tokio::test]
async fn topics_and_schemas() {
    let (sf, auth, mut client) = connect().await;
    for (topic, schema) in [
        (ACCEPTED, q2c_pubsub::schemas::QUOTE_ACCEPTED),
        (CANCELLED, q2c_pubsub::schemas::QUOTE_CANCELLED),
    ] {
        let info = client
            .get_topic(auth.request(topic_request(topic)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.topic_name, topic);
        assert_eq!(info.tenant_guid, sf.org_id());
        assert!(info.can_publish && info.can_subscribe);
        assert!(!info.rpc_id.is_empty());
        assert_eq!(info.schema_id, q2c_local_salesforce::schema_id(schema));

        let schema_info = client
            .get_schema(auth.request(SchemaRequest {
                schema_id: info.schema_id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(schema_info.schema_json, schema);
        assert_eq!(schema_info.schema_id, info.schema_id);
    }

    let status = client
        .get_topic(auth.request(topic_request("/event/Nope__e")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_code(&status), "topic.not.found");

    let status = client
        .get_schema(auth.request(SchemaRequest {
            schema_id: "no-such-schema".to_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(!error_code(&status).is_empty());
}

#[tokio::test]
async fn schema_ids_are_stable_across_restarts() {
    let first = start().await;
    let id = first.schema_id("Q2C_Quote_Accepted__e").unwrap();
    first.shutdown().await.unwrap();
    let second = start().await;
    assert_eq!(second.schema_id("Q2C_Quote_Accepted__e").unwrap(), id);
    assert_ne!(second.schema_id("Q2C_Quote_Cancelled__e").unwrap(), id);
}

/// A cancelled event encoded by the test itself, independently of the
/// server's encoder.
fn cancelled_payload(quote: &str) -> Vec<u8> {
    let schema = Schema::parse_str(q2c_pubsub::schemas::QUOTE_CANCELLED).unwrap();
    let value = Avro::Record(vec![
        ("CreatedDate".into(), Avro::Long(1_795_773_600_000)),
        ("CreatedById".into(), Avro::String("005X".into())),
        (
            "Quote_Id__c".into(),
            Avro::Union(1, Box::new(Avro::String(quote.into()))),
        ),
        ("Reason__c".into(), Avro::Union(0, Box::new(Avro::Null))),
    ]);
    GenericDatumWriter::builder(&schema)
        .build()
        .unwrap()
        .write_value_to_vec(value)
        .unwrap()
}

#[tokio::test]
async fn publish_checks_each_payload_and_assigns_replay_ids() {
    let (sf, auth, mut client) = connect().await;
    let schema_id = sf.schema_id("Q2C_Quote_Cancelled__e").unwrap();
    let event = |id: &str, schema_id: &str, payload: Vec<u8>| ProducerEvent {
        id: id.to_owned(),
        schema_id: schema_id.to_owned(),
        payload,
        headers: Vec::new(),
    };
    let response = client
        .publish(auth.request(PublishRequest {
            topic_name: CANCELLED.to_owned(),
            events: vec![
                event("e1", &schema_id, cancelled_payload("a0q1")),
                event("e2", &schema_id, vec![0xff, 0x01]),
                event("e3", "other-schema", cancelled_payload("a0q3")),
                event("e4", &schema_id, cancelled_payload("a0q4")),
            ],
            auth_refresh: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.schema_id, schema_id);
    let results: Vec<_> = response
        .results
        .iter()
        .map(|r| {
            (
                r.correlation_key.as_str(),
                r.replay_id.clone(),
                r.error.is_some(),
            )
        })
        .collect();
    assert_eq!(
        results,
        vec![
            ("e1", replay(1), false),
            ("e2", Vec::new(), true),
            ("e3", Vec::new(), true),
            ("e4", replay(2), false),
        ]
    );

    let status = client
        .publish(auth.request(PublishRequest {
            topic_name: "/event/Nope__e".to_owned(),
            ..PublishRequest::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(error_code(&status), "topic.not.found");

    // What was published is what a subscriber receives.
    let mut sub = subscribe(
        &mut client,
        &auth,
        fetch(CANCELLED, ReplayPreset::Earliest, Vec::new(), 10),
    )
    .await;
    let response = sub.events().await;
    assert_eq!(ids(&response), ["e1", "e4"]);
    assert_eq!(
        response.events[0].event.as_ref().unwrap().payload,
        cancelled_payload("a0q1")
    );
}

#[tokio::test]
async fn console_events_decode_with_the_served_schema() {
    let (sf, auth, mut client) = connect().await;
    let published = sf
        .publish(
            "Q2C_Quote_Accepted__e",
            &accepted_fields("a0qDECODE"),
            Some("0196f0c1-0000-7000-8000-000000000001"),
        )
        .unwrap();
    assert_eq!(published.replay_id, "0000000000000001");

    let mut sub = subscribe(&mut client, &auth, accepted_earliest(1)).await;
    let response = sub.events().await;
    let event = response.events[0].event.clone().unwrap();
    assert_eq!(event.id, "0196f0c1-0000-7000-8000-000000000001");
    let schema_json = client
        .get_schema(auth.request(SchemaRequest {
            schema_id: event.schema_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .schema_json;
    let schema = Schema::parse_str(&schema_json).unwrap();
    let Avro::Record(fields) = GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut event.payload.as_slice())
        .unwrap()
    else {
        panic!("not a record");
    };
    let field = |name: &str| fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(
        field("Quote_Id__c"),
        Avro::Union(1, Box::new(Avro::String("a0qDECODE".into())))
    );
    assert_eq!(
        field("Net_Amount__c"),
        Avro::Union(1, Box::new(Avro::Double(1250.5)))
    );
    assert_eq!(field("CreatedById"), Avro::String(sf.user_id().into()));
    assert!(matches!(field("CreatedDate"), Avro::Long(ms) if ms > 1_700_000_000_000));
    assert_eq!(
        field("Payment_Terms__c"),
        Avro::Union(0, Box::new(Avro::Null))
    );
}

#[tokio::test]
async fn earliest_latest_and_custom() {
    let (sf, auth, mut client) = connect().await;
    let first_three = publish_accepted(&sf, 3);

    let mut earliest = subscribe(&mut client, &auth, accepted_earliest(10)).await;
    let response = earliest.events().await;
    assert_eq!(ids(&response), first_three);
    assert_eq!(replays(&response), [1, 2, 3]);
    assert_eq!(response.pending_num_requested, 7);
    assert_eq!(response.latest_replay_id, replay(3));
    assert!(!response.rpc_id.is_empty());

    // LATEST sees only what comes after it subscribed. The first keepalive
    // is far away, so anything it receives is an event.
    let mut latest = subscribe(&mut client, &auth, accepted_latest(10)).await;
    // Publish only once the server has read its first request (it then
    // counts the stream as open), or the event could predate it.
    wait_until_open(&sf, 2).await;
    let fourth = publish_accepted(&sf, 1);
    let response = latest.events().await;
    assert_eq!(ids(&response), fourth);
    assert_eq!(replays(&response), [4]);
    assert_eq!(response.pending_num_requested, 9);
    // The EARLIEST stream gets it pushed too.
    assert_eq!(replays(&earliest.events().await), [4]);

    // CUSTOM delivers what comes after the given replay id.
    let mut custom = subscribe(
        &mut client,
        &auth,
        fetch(ACCEPTED, ReplayPreset::Custom, replay(2), 10),
    )
    .await;
    assert_eq!(replays(&custom.events().await), [3, 4]);

    // The preset of a later FetchRequest is ignored.
    custom.requests.send(accepted_earliest(1)).await.unwrap();
    let fifth = publish_accepted(&sf, 1);
    assert_eq!(ids(&custom.events().await), fifth);
}

/// Waits until `n` streams are open on the accepted topic: a stream counts
/// once the server has read its first request and placed it.
async fn wait_until_open(sf: &q2c_local_salesforce::LocalSalesforce, n: u32) {
    tokio::time::timeout(DEADLINE, async {
        while sf.status().topics[ACCEPTED].open_streams < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the streams did not open");
}

#[tokio::test]
async fn custom_replay_id_errors() {
    let (sf, auth, mut client) = connect().await;
    publish_accepted(&sf, 2);
    let cases = [
        (Vec::new(), "subscription.fetch.replayid.validation.failed"),
        (vec![0, 0, 1], "subscription.fetch.replayid.corrupted"),
        (replay(3), "subscription.fetch.replayid.corrupted"),
        (replay(0), "subscription.fetch.replayid.corrupted"),
    ];
    for (replay_id, code) in cases {
        let mut sub = subscribe(
            &mut client,
            &auth,
            fetch(ACCEPTED, ReplayPreset::Custom, replay_id.clone(), 1),
        )
        .await;
        let status = sub.error().await;
        assert_eq!(status.code(), Code::InvalidArgument, "{replay_id:?}");
        assert_eq!(error_code(&status), code, "{replay_id:?}");
    }
    let mut sub = subscribe(
        &mut client,
        &auth,
        fetch("/event/Nope__e", ReplayPreset::Latest, Vec::new(), 1),
    )
    .await;
    let status = sub.error().await;
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_code(&status), "topic.not.found");
}

#[tokio::test]
async fn flow_control_is_additive() {
    let (sf, auth, mut client) = connect().await;
    publish_accepted(&sf, 5);
    let mut sub = subscribe(&mut client, &auth, accepted_earliest(2)).await;
    let response = sub.events().await;
    assert_eq!(replays(&response), [1, 2]);
    assert_eq!(response.pending_num_requested, 0);

    sub.request(1).await;
    let response = sub.events().await;
    assert_eq!(replays(&response), [3]);
    assert_eq!(response.pending_num_requested, 0);

    // Two requests add up before the server answers them, or not: either
    // way the events come in order and pending ends where it must.
    sub.request(3).await;
    sub.request(2).await;
    let mut got = Vec::new();
    let mut pending = None;
    while got.len() < 2 {
        let response = sub.events().await;
        got.extend(replays(&response));
        pending = Some(response.pending_num_requested);
    }
    assert_eq!(got, [4, 5]);
    let pending = pending.unwrap();
    assert!(pending == 1 || pending == 3, "pending {pending}");

    // A new event is pushed at once while events are requested.
    publish_accepted(&sf, 1);
    let response = sub.events().await;
    assert_eq!(replays(&response), [6]);
}

#[tokio::test]
async fn more_than_100_outstanding_is_refused() {
    let (_sf, auth, mut client) = connect().await;
    for n in [0, -1, 101] {
        let mut sub = subscribe(&mut client, &auth, accepted_latest(n)).await;
        let status = sub.error().await;
        assert_eq!(error_code(&status), "fetch.requested.events.invalid", "{n}");
    }

    let mut sub = subscribe(&mut client, &auth, accepted_latest(60)).await;
    sub.request(40).await;
    sub.request(1).await;
    let status = sub.error().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_code(&status), "fetch.requested.events.invalid");
}

#[tokio::test]
async fn keepalives_carry_the_latest_replay_id() {
    let (sf, auth, mut client) =
        connect_with(|c| c.keepalive_interval = Duration::from_millis(200)).await;

    // An empty topic: keepalives with no replay id.
    let mut empty = subscribe(
        &mut client,
        &auth,
        fetch(CANCELLED, ReplayPreset::Latest, Vec::new(), 5),
    )
    .await;
    let keepalive = empty.response().await;
    assert!(keepalive.events.is_empty());
    assert!(keepalive.latest_replay_id.is_empty());
    assert_eq!(keepalive.pending_num_requested, 5);

    publish_accepted(&sf, 3);
    let mut sub = subscribe(&mut client, &auth, accepted_latest(2)).await;
    for _ in 0..2 {
        let keepalive = sub.response().await;
        assert!(keepalive.events.is_empty());
        assert_eq!(keepalive.latest_replay_id, replay(3));
        assert_eq!(keepalive.pending_num_requested, 2);
        assert!(!keepalive.rpc_id.is_empty());
    }
}

#[tokio::test]
async fn a_stream_with_nothing_requested_is_closed_when_idle() {
    let (sf, auth, mut client) =
        connect_with(|c| c.idle_timeout = Duration::from_millis(300)).await;
    publish_accepted(&sf, 1);
    let mut sub = subscribe(&mut client, &auth, accepted_earliest(1)).await;
    assert_eq!(sub.events().await.pending_num_requested, 0);
    // Nothing more requested: the server ends the stream.
    assert!(sub.next().await.unwrap().is_none());
    assert_eq!(sf.status().topics[ACCEPTED].open_streams, 0);
}

#[tokio::test]
async fn a_stream_with_events_requested_stays_open() {
    let (_sf, auth, mut client) = connect_with(|c| {
        c.idle_timeout = Duration::from_millis(100);
        c.keepalive_interval = Duration::from_millis(150);
    })
    .await;
    let mut sub = subscribe(&mut client, &auth, accepted_latest(1)).await;
    // Several keepalives, each longer than the idle timeout apart.
    for _ in 0..3 {
        assert!(sub.response().await.events.is_empty());
    }
}

#[tokio::test]
async fn events_past_retention_are_gone_and_their_replay_ids_corrupted() {
    let (sf, auth, mut client) = connect_with(|c| {
        c.retention = Duration::ZERO;
        c.keepalive_interval = Duration::from_millis(200);
    })
    .await;
    publish_accepted(&sf, 2);
    assert_eq!(sf.status().topics[ACCEPTED].events, 0);
    assert_eq!(sf.status().topics[ACCEPTED].published, 2);

    let mut sub = subscribe(
        &mut client,
        &auth,
        fetch(ACCEPTED, ReplayPreset::Custom, replay(2), 1),
    )
    .await;
    assert_eq!(
        error_code(&sub.error().await),
        "subscription.fetch.replayid.corrupted"
    );

    // EARLIEST finds nothing left: only a keepalive comes.
    let mut sub = subscribe(&mut client, &auth, accepted_earliest(1)).await;
    let keepalive = sub.response().await;
    assert!(keepalive.events.is_empty());
    assert_eq!(keepalive.latest_replay_id, replay(2));
}

#[tokio::test]
async fn publish_stream_and_managed_subscribe_are_not_offered() {
    let (_sf, auth, mut client) = connect().await;
    let status = client
        .publish_stream(auth.request(tokio_stream::iter(Vec::<PublishRequest>::new())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let status = client
        .managed_subscribe(auth.request(tokio_stream::iter(Vec::new())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn shutdown_ends_open_streams_as_unavailable() {
    let (sf, _auth, _client, mut sub) = streaming().await;
    let stopping = tokio::spawn(sf.shutdown());
    let status = sub.error().await;
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(error_code(&status), "service.unavailable");
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
