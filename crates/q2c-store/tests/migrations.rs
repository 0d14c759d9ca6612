//! Upgrading a database that already holds workflows: the migration that
//! adds the search columns and the business references fills them in for
//! the workflows already there, and their state, once jsonb, still loads.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::path::Path;

use q2c_core::domain::quote::fixtures;
use q2c_core::saga::{Event, Reply, ReplyResult, Saga};
use serde_json::json;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use support::{definition, t0, workflow};

/// The last migration before the search columns existed.
const BEFORE_SEARCH: &str = "20261127000006";

#[sqlx::test(migrations = false)]
async fn workflows_stored_before_the_search_columns_are_found_after(pool: PgPool) {
    // The schema as it was: the migrations up to BEFORE_SEARCH.
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let earlier = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let version = name.split('_').next().unwrap_or_default();
        if name.ends_with(".sql") && version <= BEFORE_SEARCH {
            std::fs::copy(&path, earlier.path().join(&name)).unwrap();
        }
    }
    Migrator::new(earlier.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();

    // A workflow at issue_invoice, its order created, stored as that schema
    // stored it.
    let (mut saga, effects) = Saga::start(workflow(1), definition(), fixtures::quote(), t0());
    let order = effects
        .iter()
        .find_map(|effect| match effect {
            q2c_core::saga::Effect::SendCommand(command) => Some(command.clone()),
            _ => None,
        })
        .unwrap();
    saga.handle(
        &Event::ReplyReceived(Reply {
            key: order.idempotency_key.clone(),
            attempt: 1,
            reply_type: "erp.create_order.succeeded".into(),
            result: ReplyResult::Succeeded {
                output: json!({"order_id": "ORD-OLD-7"}),
            },
        }),
        t0(),
    );
    let mut state = serde_json::to_value(saga.record()).unwrap();
    state["definition"]
        .as_object_mut()
        .unwrap()
        .remove("source");
    sqlx::query("INSERT INTO workflow_definitions (hash, name, source) VALUES ($1, $2, $3)")
        .bind(saga.definition().hash().as_str())
        .bind(saga.definition().name())
        .bind(saga.definition().source())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO workflows (id, definition_hash, definition_name, quote_id, quote_number, \
         account_id, opportunity_id, status, outcome, state, version, created_at, updated_at) \
         VALUES ($1, $2, 'quote-to-cash', 'a0q5e00000ABCDEFGH', 'Q-00042', '0015e00000ABCDEFGH', \
         '0065e00000ABCDEFGH', 'running', NULL, $3, 2, $4, $4)",
    )
    .bind(workflow(1).as_uuid())
    .bind(saga.definition().hash().as_str())
    .bind(&state)
    .bind(t0())
    .execute(&pool)
    .await
    .unwrap();

    q2c_store::migrate(&pool).await.unwrap();

    let (step, since): (Option<String>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT current_step, state_since FROM workflows")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(step.as_deref(), Some("issue_invoice"));
    assert_eq!(since, t0());
    let references: Vec<(String, String, String)> =
        sqlx::query_as("SELECT step, field, value FROM workflow_references")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        references,
        [(
            "create_order".to_owned(),
            "order_id".to_owned(),
            "ORD-OLD-7".to_owned()
        )]
    );

    // The state, stored as jsonb then, loads from the text it is now.
    let loaded = q2c_store::Store::new(pool.clone())
        .load(workflow(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.saga.record(), saga.record());
    assert_eq!(loaded.version, 2);
}
