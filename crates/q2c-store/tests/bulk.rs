//! Bulk jobs through the store: the dry run lists exactly what a run will
//! touch; a run acts on exactly that list, skips what changed, audits each
//! workflow under the job, and survives its runner.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use chrono::TimeDelta;
use q2c_core::domain::quote::{Quote, fixtures};
use q2c_core::saga::Request;
use q2c_store::Store;
use q2c_store::bulk::{Moved, Plan, Planned, Step};
use q2c_store::operators::{ActionRequest, AuditFilter, Operator};
use q2c_store::queries::Filter;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{definition, t0, workflow};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(10);

fn ada() -> Operator {
    Operator {
        name: "ada".into(),
        role: "admin".into(),
    }
}

fn quote(n: u32) -> Quote {
    let mut draft = fixtures::draft();
    draft.quote_id = format!("a0q5e00000BU{n:06}");
    Quote::try_from_draft(draft).unwrap()
}

fn pause_running(cap: i64) -> Plan {
    Plan {
        request: Request::Pause,
        reason: "ERP maintenance".into(),
        filter: Filter {
            status: Some("running".into()),
            ..Filter::default()
        },
        filter_as_asked: json!({"status": "running"}),
        operator: ada(),
        rate_per_second: 50.0,
        cap,
    }
}

async fn start(store: &Store, n: u32) {
    store
        .start_workflow(workflow(u128::from(n)), definition(), quote(n), t0())
        .await
        .unwrap();
}

fn render(_: &q2c_store::operators::Outcome) -> (u16, Value) {
    (200, json!({}))
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_run_acts_on_exactly_the_dry_runs_list_and_skips_what_changed(pool: PgPool) {
    let store = Store::new(pool.clone());
    for n in 1..=4 {
        start(&store, n).await;
    }
    let Planned::Job(job) = store.plan_bulk(&pause_running(10), t0()).await.unwrap() else {
        panic!("planned")
    };
    let planned = store.bulk_job(job.id).await.unwrap().unwrap();
    assert_eq!(planned.job.status, "planned");
    let listed: Vec<(Uuid, i64)> = planned
        .items
        .iter()
        .map(|item| (item.workflow_id, item.version))
        .collect();
    assert_eq!(
        listed,
        (1..=4)
            .map(|n| (*workflow(n).as_uuid(), 1))
            .collect::<Vec<_>>()
    );

    // After the dry run: workflow 2 is paused by hand (its version moves),
    // and workflow 5 starts (the filter would match it now).
    store
        .act(
            &ActionRequest {
                workflow_id: workflow(2),
                request: Request::Pause,
                reason: "by hand".into(),
                expected_version: None,
                operator: ada(),
                bulk_job: None,
            },
            None,
            render,
            t0(),
        )
        .await
        .unwrap();
    start(&store, 5).await;

    assert!(matches!(
        store.start_bulk(job.id, t0()).await.unwrap(),
        Moved::Done(_)
    ));
    let owner = Uuid::from_u128(1);
    let claimed = store.claim_bulk(owner, LEASE, t0()).await.unwrap().unwrap();
    let mut results = Vec::new();
    loop {
        match store.bulk_step(&claimed, owner, LEASE, t0()).await.unwrap() {
            Step::Acted { item } => results.push((item.workflow_id, item.result)),
            Step::Finished => break,
            Step::NotMine => panic!("the job is this runner's"),
        }
    }
    assert_eq!(
        results,
        [
            (*workflow(1).as_uuid(), "applied".to_owned()),
            (*workflow(2).as_uuid(), "changed".to_owned()),
            (*workflow(3).as_uuid(), "applied".to_owned()),
            (*workflow(4).as_uuid(), "applied".to_owned()),
        ],
        "exactly the list, and workflow 5 untouched"
    );
    let done = store.bulk_job(job.id).await.unwrap().unwrap();
    assert_eq!(done.job.status, "finished");
    assert!(
        done.items[1]
            .detail
            .as_deref()
            .unwrap()
            .contains("version 1 to 2")
    );
    let (paused,): (i64,) = sqlx::query_as("SELECT count(*) FROM workflows WHERE paused")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(paused, 4, "1, 3 and 4 by the job, 2 by hand; not 5");

    let audit = store.audit(&AuditFilter::default(), 100).await.unwrap();
    let under_job: Vec<(Option<Uuid>, String)> = audit
        .iter()
        .filter(|row| row.bulk_job_id == Some(job.id))
        .map(|row| (row.workflow_id, row.result.clone()))
        .collect();
    assert_eq!(under_job.len(), 4, "one audit row per workflow of the job");
    assert!(under_job.contains(&(Some(*workflow(2).as_uuid()), "stale_version".to_owned())));
    assert!(matches!(
        store.start_bulk(job.id, t0()).await.unwrap(),
        Moved::Refused(_)
    ));
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_job_outlives_its_runner_and_a_cancel_stops_it(pool: PgPool) {
    let store = Store::new(pool.clone());
    for n in 1..=3 {
        start(&store, n).await;
    }
    let Planned::Job(job) = store.plan_bulk(&pause_running(10), t0()).await.unwrap() else {
        panic!("planned")
    };
    store.start_bulk(job.id, t0()).await.unwrap();
    let (first, second) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let claimed = store.claim_bulk(first, LEASE, t0()).await.unwrap().unwrap();
    assert!(matches!(
        store.bulk_step(&claimed, first, LEASE, t0()).await.unwrap(),
        Step::Acted { .. }
    ));
    // The first runner dies. While its lease holds, nobody else takes the job.
    assert_eq!(store.claim_bulk(second, LEASE, t0()).await.unwrap(), None);
    let later = t0() + TimeDelta::seconds(11);
    let taken = store
        .claim_bulk(second, LEASE, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.id, job.id);
    // The first one, back, has lost it.
    assert_eq!(
        store
            .bulk_step(&claimed, first, LEASE, later)
            .await
            .unwrap(),
        Step::NotMine
    );
    assert!(matches!(
        store.bulk_step(&taken, second, LEASE, later).await.unwrap(),
        Step::Acted { .. }
    ));
    assert!(matches!(
        store.cancel_bulk(job.id, later).await.unwrap(),
        Moved::Done(_)
    ));
    assert_eq!(
        store.bulk_step(&taken, second, LEASE, later).await.unwrap(),
        Step::NotMine
    );
    let view = store.bulk_job(job.id).await.unwrap().unwrap();
    assert_eq!(view.job.status, "cancelled");
    let results: Vec<&str> = view.items.iter().map(|item| item.result.as_str()).collect();
    assert_eq!(results, ["applied", "applied", "pending"]);
}

#[sqlx::test(migrator = "q2c_store::MIGRATOR")]
async fn a_filter_matching_more_than_the_cap_plans_nothing(pool: PgPool) {
    let store = Store::new(pool.clone());
    for n in 1..=3 {
        start(&store, n).await;
    }
    assert_eq!(
        store.plan_bulk(&pause_running(2), t0()).await.unwrap(),
        Planned::TooMany { cap: 2 }
    );
    let (jobs,): (i64,) = sqlx::query_as("SELECT count(*) FROM bulk_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}
