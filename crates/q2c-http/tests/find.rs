//! Finding workflows through the real router and a real database: by every
//! business reference a step returned, by where they stand and for how
//! long, page by page; histories page by page; live counts.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use chrono::{TimeDelta, Utc};
use q2c_store::Store;
use serde_json::Value;
use sqlx::PgPool;
use support::*;
use uuid::Uuid;

use Say::{Declined as No, Ok as Yes, Retryable as Later};

async fn ids(app: &axum::Router, query: &str) -> Vec<Uuid> {
    let answer = get(app, &format!("/api/v1/workflows?{query}"), OPERATOR, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{query}: {}", answer.body);
    answer.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn each_business_reference_finds_its_workflow(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let done = seed(&store, 1, compensating(), &[Yes, Yes, Yes, Yes]).await;
    let ordered = seed(&store, 2, compensating(), &[Yes]).await;
    let number = |id: Uuid| id.as_u128();
    for (reference, expected) in [
        (format!("ORD-{}", number(done)), vec![done]),
        (format!("INV-{}", number(done)), vec![done]),
        (format!("PAY-{}", number(done)), vec![done]),
        (format!("ORD-{}", number(ordered)), vec![ordered]),
        (format!("INV-{}", number(ordered)), vec![]),
        ("ORD-nobody".to_owned(), vec![]),
    ] {
        assert_eq!(
            ids(&app, &format!("reference={reference}")).await,
            expected,
            "{reference}"
        );
    }
    let field = format!("reference=ORD-{}&reference_field=order_id", number(done));
    assert_eq!(ids(&app, &field).await, [done]);
    let wrong_field = format!("reference=ORD-{}&reference_field=invoice_id", number(done));
    assert!(ids(&app, &wrong_field).await.is_empty());

    // And by the keys the quote brings, and by where a workflow stands.
    assert_eq!(
        ids(&app, &format!("quote_id={}", quote(2).quote_id().as_str())).await,
        [ordered]
    );
    assert_eq!(
        ids(&app, "account_id=0015e00000ABCDEFGH&status=running").await,
        [ordered]
    );
    assert_eq!(ids(&app, "step=issue_invoice").await, [ordered]);
    assert_eq!(ids(&app, "status=completed").await, [done]);
    let listed = get(&app, "/api/v1/workflows?step=issue_invoice", OPERATOR, None).await;
    let item = &listed.body["items"][0];
    assert_eq!(item["step"], "issue_invoice");
    assert_eq!(item["account_id"], "0015e00000ABCDEFGH");
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn stuck_finds_exactly_the_live_workflows_past_the_threshold(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let now = Utc::now();
    let hours = |h: i64| now - TimeDelta::hours(h);
    let minutes = |m: i64| now - TimeDelta::minutes(m);
    // At create_order for three hours: stuck.
    let waiting = seed_at(&store, 1, compensating(), &[], hours(3), hours(3)).await;
    // Retrying for three hours: the same step and status all along.
    let retrying = seed_at(&store, 2, compensating(), &[Later], hours(3), hours(3)).await;
    // Started three hours ago but moved on ten minutes ago: not stuck.
    let moving = seed_at(&store, 3, compensating(), &[Yes], hours(3), minutes(10)).await;
    // Suspended for two hours: stuck.
    let suspended = seed_at(
        &store,
        4,
        suspending_at_payment(),
        &[Yes, Yes, No],
        hours(2),
        hours(2),
    )
    .await;
    // Finished long ago: never stuck.
    seed_at(
        &store,
        5,
        compensating(),
        &[Yes, Yes, Yes, Yes],
        hours(5),
        hours(5),
    )
    .await;
    // Started half an hour ago: not yet.
    seed_at(&store, 6, compensating(), &[], minutes(30), minutes(30)).await;

    let stuck: BTreeSet<Uuid> = ids(&app, "stuck=1h").await.into_iter().collect();
    assert_eq!(stuck, BTreeSet::from([waiting, retrying, suspended]));
    let stuck_long: BTreeSet<Uuid> = ids(&app, "stuck=150m").await.into_iter().collect();
    assert_eq!(stuck_long, BTreeSet::from([waiting, retrying]));
    assert_eq!(ids(&app, "stuck=1h&status=suspended").await, [suspended]);
    let recent: BTreeSet<Uuid> = ids(&app, "stuck=5m").await.into_iter().collect();
    assert!(recent.contains(&moving), "ten minutes at issue_invoice");

    let bad = get(&app, "/api/v1/workflows?stuck=forever", OPERATOR, None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body["detail"].as_str().unwrap().contains("forever"));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn pages_return_each_workflow_once_in_order(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let now = Utc::now();
    let mut seeded = Vec::new();
    for n in 1..=23 {
        // Several share a start time, so the id must break the tie.
        let started = now - TimeDelta::minutes(i64::from(n / 3));
        seeded.push((
            started,
            seed_at(&store, n, compensating(), &[], started, started).await,
        ));
    }
    for (order, query) in [("newest", "order=newest"), ("oldest", "order=oldest")] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/api/v1/workflows?{query}&limit=5&cursor={cursor}"),
                None => format!("/api/v1/workflows?{query}&limit=5"),
            };
            let page = get(&app, &path, OPERATOR, None).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            pages += 1;
            for item in page.body["items"].as_array().unwrap() {
                seen.push(item["id"].as_str().unwrap().parse::<Uuid>().unwrap());
            }
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(pages < 10, "paging does not end");
        }
        let mut expected = seeded.clone();
        expected.sort_by_key(|(started, id)| (*started, *id));
        if order == "newest" {
            expected.reverse();
        }
        let expected: Vec<Uuid> = expected.into_iter().map(|(_, id)| id).collect();
        assert_eq!(seen, expected, "{order}: each once, in order");
        assert_eq!(pages, 5, "23 workflows in pages of 5");
    }
    let bad = get(&app, "/api/v1/workflows?cursor=abc", OPERATOR, None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let typo = get(&app, "/api/v1/workflows?stauts=running", OPERATOR, None).await;
    assert_eq!(
        typo.status,
        StatusCode::BAD_REQUEST,
        "an unknown filter is not ignored"
    );
    assert!(typo.text.contains("stauts"), "{}", typo.text);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_long_history_comes_page_by_page(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    let id = seed(&store, 1, compensating(), &[Yes, Yes, Yes, Yes]).await;
    let whole: Vec<Value> = detail(&app, id).await["history"]
        .as_array()
        .unwrap()
        .clone();
    assert!(whole.len() > 12, "{} entries", whole.len());
    let mut paged = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let path = match after {
            Some(after) => format!("/api/v1/workflows/{id}/history?limit=5&after={after}"),
            None => format!("/api/v1/workflows/{id}/history?limit=5"),
        };
        let page = get(&app, &path, OPERATOR, None).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 5);
        paged.extend(items.iter().cloned());
        match page.body["next_after"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        paged, whole,
        "the pages add up to the whole history, once each"
    );
    let unknown = get(
        &app,
        &format!("/api/v1/workflows/{}/history", Uuid::from_u128(7)),
        OPERATOR,
        None,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn live_workflows_are_counted_by_status_and_step(pool: PgPool) {
    let store = Store::new(pool.clone());
    let app = app(pool);
    seed(&store, 1, compensating(), &[]).await;
    seed(&store, 2, compensating(), &[]).await;
    seed(&store, 3, compensating(), &[Yes]).await;
    seed(&store, 4, suspending_at_payment(), &[Yes, Yes, No]).await;
    seed(&store, 5, compensating(), &[Yes, Yes, Yes, Yes]).await;
    let counts = get(&app, "/api/v1/workflows/counts", OPERATOR, None).await;
    assert_eq!(counts.status, StatusCode::OK, "{}", counts.body);
    let items: Vec<(String, String, i64)> = counts.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["status"].as_str().unwrap().to_owned(),
                item["step"].as_str().unwrap_or_default().to_owned(),
                item["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            ("running".into(), "create_order".into(), 2),
            ("running".into(), "issue_invoice".into(), 1),
            ("suspended".into(), "collect_payment".into(), 1),
        ],
        "finished workflows are not counted"
    );
    assert!(counts.body["age_seconds"].as_f64().unwrap() >= 0.0);
    assert!(counts.body["counted_at"].is_string());
}
