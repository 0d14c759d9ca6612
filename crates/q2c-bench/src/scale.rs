//! Scale: the throughput test beside a great many workflows waiting on a
//! long timer, as invoices wait for payment. Memory must not grow with them
//! (nothing of a waiting workflow is held in memory), and the queries that
//! run while they wait (the timer scan, an operator's searches) must stay
//! index-backed and fast.
//!
//! The waiting workflows are bulk-inserted: each is the saga the intake
//! would have started for a quote, waiting for its first reply, with its
//! timer moved thirty days out.

use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::{Effect, Saga};
use serde::Serialize;
use sqlx::PgPool;

use crate::Error;
use crate::figures::Percentiles;

/// Workflows seeded per transaction.
const SEED_BATCH: u64 = 50_000;
/// Times each query is run for its percentiles.
const QUERY_RUNS: usize = 200;
/// The bound the issue sets on a query's p99, in milliseconds.
pub const QUERY_P99_LIMIT_MS: f64 = 50.0;

/// What the scale test found.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    /// Workflows waiting beside the load, at the small size.
    pub waiting_small: u64,
    /// Workflows waiting beside the load, at the large size.
    pub waiting_large: u64,
    /// The orchestrator's peak RSS through the throughput test with the
    /// small number waiting, bytes.
    pub peak_rss_small_bytes: u64,
    /// The same with the large number waiting, bytes.
    pub peak_rss_large_bytes: u64,
    /// large / small.
    pub rss_ratio: f64,
    /// Workflows per second at each size.
    pub workflows_per_second_small: f64,
    /// Workflows per second at each size.
    pub workflows_per_second_large: f64,
    /// The queries, timed and explained at the large size.
    pub queries: Vec<QueryFigure>,
}

/// One query at scale.
#[derive(Debug, Clone, Serialize)]
pub struct QueryFigure {
    /// What it is for.
    pub name: String,
    /// Its timings, from the client.
    pub latency: Percentiles,
    /// Whether its plan reads only through indexes (no sequential scan).
    pub index_backed: bool,
    /// `EXPLAIN ANALYZE`, as Postgres printed it.
    pub plan: String,
}

/// Seeds waiting workflows until `total` exist besides those of the load.
pub async fn seed(
    pool: &PgPool,
    definition: &Arc<Definition>,
    from: u64,
    total: u64,
) -> Result<(), Error> {
    let now = Utc::now();
    let (saga, effects) = Saga::start(
        WorkflowId::new(uuid::Uuid::nil()),
        definition.clone(),
        q2c_core::domain::quote::fixtures::quote(),
        now,
    );
    let mut state = serde_json::to_value(saga.record())
        .map_err(|error| Error::Setting(format!("the waiting saga's record: {error}")))?;
    if let Some(definition) = state.get_mut("definition").and_then(|d| d.as_object_mut()) {
        definition.remove("source");
    }
    let Some(timer) = effects.iter().find_map(|effect| match effect {
        Effect::ScheduleTimer { timer, .. } => Some(timer.clone()),
        _ => None,
    }) else {
        return Err(Error::Setting("the first step schedules no timer".into()));
    };
    let timer_json = serde_json::to_value(&timer)
        .map_err(|error| Error::Setting(format!("the waiting saga's timer: {error}")))?;
    sqlx::query(
        "INSERT INTO workflow_definitions (hash, name, source) VALUES ($1, $2, $3) \
         ON CONFLICT (hash) DO NOTHING",
    )
    .bind(definition.hash().as_str())
    .bind(definition.name())
    .bind(definition.source())
    .execute(pool)
    .await
    .map_err(|source| Error::Database {
        doing: "storing the waiting workflows' definition",
        source,
    })?;
    // They have waited two days already, and wait thirty more.
    let since = now - TimeDelta::days(2);
    let due = now + TimeDelta::days(30);
    let step = saga.current_step().map(|(step, _)| step.to_owned());
    let mut next = from;
    while next < total {
        let last = (next + SEED_BATCH).min(total);
        sqlx::query(
            "WITH seeded AS ( \
                 INSERT INTO workflows (id, definition_hash, definition_name, quote_id, quote_number, \
                     account_id, opportunity_id, status, outcome, state, version, created_at, \
                     updated_at, current_step, state_since) \
                 SELECT id, $3, $4, 'a0qWAIT' || lpad(n::text, 11, '0'), 'W-' || n, \
                     '0015e00000WAITING', '0065e00000WAITING', 'running', NULL, \
                     jsonb_set($5::jsonb, '{workflow_id}', to_jsonb(id::text))::text, 1, $6, $6, \
                     $7, $6 \
                 FROM (SELECT gen_random_uuid() AS id, n FROM generate_series($1, $2) AS n) AS new \
                 RETURNING id) \
             INSERT INTO timers (workflow_id, timer_key, timer, due_at) \
             SELECT id, $8, $9, $10 FROM seeded",
        )
        .bind(i64::try_from(next + 1).unwrap_or(i64::MAX))
        .bind(i64::try_from(last).unwrap_or(i64::MAX))
        .bind(definition.hash().as_str())
        .bind(definition.name())
        .bind(&state)
        .bind(since)
        .bind(&step)
        .bind(timer.to_string())
        .bind(&timer_json)
        .bind(due)
        .execute(pool)
        .await
        .map_err(|source| Error::Database {
            doing: "seeding waiting workflows",
            source,
        })?;
        next = last;
    }
    for table in ["workflows", "timers"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
            .execute(pool)
            .await
            .map_err(|source| Error::Database {
                doing: "analysing the seeded tables",
                source,
            })?;
    }
    Ok(())
}

/// The queries that run while workflows wait, as the store makes them,
/// with the values an operator or the timer loop would give.
fn queries() -> Vec<(&'static str, String)> {
    let now = Utc::now();
    let stuck = (now - TimeDelta::hours(1)).to_rfc3339();
    let now = now.to_rfc3339();
    vec![
        (
            "timer scan: due timers",
            format!(
                "SELECT workflow_id, timer, due_at FROM timers WHERE due_at <= '{now}' \
                 AND remaining IS NULL ORDER BY due_at LIMIT 100"
            ),
        ),
        (
            "timer scan: next due",
            "SELECT min(due_at) FROM timers WHERE remaining IS NULL".to_owned(),
        ),
        (
            "operator: by status, first page",
            "SELECT id, quote_id, quote_number, account_id, status, current_step, outcome, \
             paused, definition_name, created_at, updated_at, state_since FROM workflows \
             WHERE true AND status = 'running' ORDER BY created_at DESC, id DESC LIMIT 50"
                .to_owned(),
        ),
        (
            "operator: by quote id",
            "SELECT id, quote_id, quote_number, account_id, status, current_step, outcome, \
             paused, definition_name, created_at, updated_at, state_since FROM workflows \
             WHERE true AND quote_id = 'a0qWAIT00000000500' ORDER BY created_at DESC, id DESC LIMIT 50"
                .to_owned(),
        ),
        (
            "operator: stuck longer than 1h",
            format!(
                "SELECT id, quote_id, quote_number, account_id, status, current_step, outcome, \
                 paused, definition_name, created_at, updated_at, state_since FROM workflows \
                 WHERE true AND status NOT IN ('completed', 'compensated', 'failed', 'cancelled', \
                 'terminated') AND state_since < '{stuck}' ORDER BY created_at DESC, id DESC LIMIT 50"
            ),
        ),
    ]
}

/// Times each query and explains it.
pub async fn measure_queries(pool: &PgPool) -> Result<Vec<QueryFigure>, Error> {
    let database = |source| Error::Database {
        doing: "timing the queries at scale",
        source,
    };
    let mut figures = Vec::new();
    for (name, sql) in queries() {
        let mut latencies = Vec::with_capacity(QUERY_RUNS);
        for _ in 0..QUERY_RUNS {
            let began = Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_all(pool)
                .await
                .map_err(database)?;
            latencies.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN (ANALYZE, COSTS OFF) {sql}"
        )))
        .fetch_all(pool)
        .await
        .map_err(database)?;
        let plan = plan.join("\n");
        figures.push(QueryFigure {
            name: name.to_owned(),
            latency: Percentiles::of(latencies)
                .ok_or_else(|| Error::Refused("no query timings".into()))?,
            index_backed: !plan.contains("Seq Scan"),
            plan,
        });
    }
    Ok(figures)
}

impl Scale {
    /// Whether memory stayed flat and every query was index-backed and fast.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.rss_ratio > 1.10 {
            problems.push(format!(
                "peak RSS grew {:.0}% from {} to {} waiting workflows",
                (self.rss_ratio - 1.0) * 100.0,
                self.waiting_small,
                self.waiting_large
            ));
        }
        for query in &self.queries {
            if !query.index_backed {
                problems.push(format!("{}: not index-backed", query.name));
            }
            if query.latency.p99_ms > QUERY_P99_LIMIT_MS {
                problems.push(format!(
                    "{}: p99 {:.1} ms over {QUERY_P99_LIMIT_MS} ms",
                    query.name, query.latency.p99_ms
                ));
            }
        }
        problems
    }

    /// The scale figures as a table, plans included.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
        let _ = writeln!(out, "scale");
        let _ = writeln!(
            out,
            "  {:<38} {:.1} MiB with {} waiting, {:.1} MiB with {} waiting ({:+.1}%)",
            "orchestrator peak RSS",
            mib(self.peak_rss_small_bytes),
            self.waiting_small,
            mib(self.peak_rss_large_bytes),
            self.waiting_large,
            (self.rss_ratio - 1.0) * 100.0
        );
        let _ = writeln!(
            out,
            "  {:<38} {:.1} with {} waiting, {:.1} with {} waiting",
            "workflows/s",
            self.workflows_per_second_small,
            self.waiting_small,
            self.workflows_per_second_large,
            self.waiting_large
        );
        for query in &self.queries {
            let _ = writeln!(
                out,
                "  {:<38} p50 {:.2} ms, p99 {:.2} ms, {}",
                query.name,
                query.latency.p50_ms,
                query.latency.p99_ms,
                if query.index_backed {
                    "index-backed"
                } else {
                    "NOT index-backed"
                }
            );
            for line in query.plan.lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
        let problems = self.problems();
        if problems.is_empty() {
            let _ = writeln!(
                out,
                "  targets met: RSS within 10%, every query index-backed with p99 under {QUERY_P99_LIMIT_MS} ms"
            );
        } else {
            for problem in problems {
                let _ = writeln!(out, "  target missed: {problem}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(p99_ms: f64, index_backed: bool) -> QueryFigure {
        QueryFigure {
            name: "q".into(),
            latency: Percentiles {
                count: 1,
                p50_ms: p99_ms,
                p95_ms: p99_ms,
                p99_ms,
                max_ms: p99_ms,
            },
            index_backed,
            plan: String::new(),
        }
    }

    fn scale(rss_ratio: f64, queries: Vec<QueryFigure>) -> Scale {
        Scale {
            waiting_small: 1_000,
            waiting_large: 1_000_000,
            peak_rss_small_bytes: 100,
            peak_rss_large_bytes: (100.0 * rss_ratio) as u64,
            rss_ratio,
            workflows_per_second_small: 1.0,
            workflows_per_second_large: 1.0,
            queries,
        }
    }

    #[test]
    fn targets_hold_within_ten_percent_and_fifty_milliseconds() {
        assert!(scale(1.10, vec![query(49.9, true)]).problems().is_empty());
    }

    #[test]
    fn each_missed_target_is_named() {
        let problems = scale(1.11, vec![query(50.1, true), query(1.0, false)])
            .problems()
            .join("\n");
        assert!(problems.contains("peak RSS grew 11%"), "{problems}");
        assert!(problems.contains("p99 50.1 ms over 50 ms"), "{problems}");
        assert!(problems.contains("not index-backed"), "{problems}");
    }
}
