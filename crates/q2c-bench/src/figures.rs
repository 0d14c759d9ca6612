//! The run's times, read from what the orchestrator committed: when each
//! workflow was accepted and when its terminal transition was, when each
//! reply was consumed and when the command it led to was confirmed. Server
//! timestamps, so the bench's own scheduling never shows in them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Error;

/// The spread of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 95th percentile, in milliseconds.
    pub p95_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
    /// The slowest, in milliseconds.
    pub max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples` (milliseconds); `None` when
    /// there are none.
    pub fn of(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let rank = |percent: f64| {
            let index = (percent / 100.0 * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1]
        };
        Some(Self {
            count: samples.len(),
            p50_ms: rank(50.0),
            p95_ms: rank(95.0),
            p99_ms: rank(99.0),
            max_ms: rank(100.0),
        })
    }
}

/// One phase's times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseTimes {
    /// From the first acceptance to the last terminal transition, seconds.
    pub seconds: f64,
    /// Commands the phase's workflows sent: one per step performed.
    pub steps: i64,
    /// Acceptance to terminal transition, per workflow. Both instants are
    /// the timestamps their transactions took just before committing.
    pub workflow: Percentiles,
    /// A reply consumed to the command it led to confirmed by the broker.
    pub handoff: Percentiles,
    /// A command confirmed to its reply consumed: the broker both ways and
    /// the connector, the part of a step outside the orchestrator.
    pub round_trip: Percentiles,
    /// Acceptance to the first command confirmed: the intake's
    /// transaction and the first publish.
    pub intake: Percentiles,
}

/// Reads the times of the workflows `ids`.
pub async fn phase_times(pool: &PgPool, ids: &[Uuid]) -> Result<PhaseTimes, Error> {
    let database = |source| Error::Database {
        doing: "reading the run's times",
        source,
    };
    let latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM updated_at - created_at) * 1000)::float8 \
         FROM workflows WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(database)?;
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM max(updated_at) - min(created_at))::float8 \
         FROM workflows WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
    .map_err(database)?;
    // Commands written by a reply's transition: those after the first,
    // which the acceptance itself wrote.
    let handoffs: Vec<f64> = sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM o.sent_at - o.created_at) * 1000)::float8 \
         FROM outbox o JOIN workflows w ON w.id = o.workflow_id \
         WHERE o.workflow_id = ANY($1) AND o.created_at > w.created_at AND o.sent_at IS NOT NULL",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(database)?;
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE workflow_id = ANY($1)")
        .bind(ids)
        .fetch_one(pool)
        .await
        .map_err(database)?;
    let (round_trips, intakes) = round_trips(pool, ids).await?;
    let none = || Error::Refused("a phase with no workflows has no figures".into());
    Ok(PhaseTimes {
        seconds: seconds.ok_or_else(none)?,
        steps,
        workflow: Percentiles::of(latencies).ok_or_else(none)?,
        handoff: Percentiles::of(handoffs).ok_or_else(none)?,
        round_trip: Percentiles::of(round_trips).ok_or_else(none)?,
        intake: Percentiles::of(intakes).ok_or_else(none)?,
    })
}

/// Commands confirmed to their replies consumed (the first reply a
/// workflow consumed after the command was written: one command is in
/// flight at a time), and acceptances to their first command confirmed.
async fn round_trips(pool: &PgPool, ids: &[Uuid]) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let database = |source| Error::Database {
        doing: "reading the run's round trips",
        source,
    };
    type Sent = (Uuid, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);
    let commands: Vec<Sent> = sqlx::query_as(
        "SELECT o.workflow_id, w.created_at, o.created_at, o.sent_at \
         FROM outbox o JOIN workflows w ON w.id = o.workflow_id \
         WHERE o.workflow_id = ANY($1) AND o.sent_at IS NOT NULL ORDER BY o.id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(database)?;
    let consumed: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT workflow_id, received_at FROM inbox WHERE workflow_id = ANY($1) ORDER BY received_at",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .map_err(database)?;
    let mut replies: HashMap<Uuid, Vec<DateTime<Utc>>> = HashMap::new();
    for (workflow, at) in consumed {
        replies.entry(workflow).or_default().push(at);
    }
    let millis = |delta: chrono::TimeDelta| delta.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    let (mut round_trips, mut intakes) = (Vec::new(), Vec::new());
    for (workflow, accepted, created, sent) in commands {
        if created == accepted {
            intakes.push(millis(sent - accepted));
        }
        // Its reply is the workflow's first consumed after it was written.
        // Under load the relay takes `sent_at` once its whole batch is
        // confirmed, which can be after a quick reply was consumed: such a
        // round trip counts as 0.
        let reply = replies
            .get(&workflow)
            .and_then(|times| times.iter().find(|at| **at > created));
        if let Some(reply) = reply {
            round_trips.push(millis(*reply - sent).max(0.0));
        }
    }
    Ok((round_trips, intakes))
}

/// The average size of a workflow's stored state and of a command, in
/// bytes: the floors use rows of the same size.
pub async fn row_sizes(pool: &PgPool) -> Result<(usize, usize), Error> {
    let (state, command): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT (SELECT avg(octet_length(state::text))::float8 FROM workflows), \
                (SELECT avg(octet_length(body::text))::float8 FROM outbox)",
    )
    .fetch_one(pool)
    .await
    .map_err(|source| Error::Database {
        doing: "measuring row sizes",
        source,
    })?;
    Ok((
        state.unwrap_or(2048.0) as usize,
        command.unwrap_or(1024.0) as usize,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let spread = Percentiles::of(samples).unwrap();
        assert_eq!(spread.count, 100);
        assert_eq!(spread.p50_ms, 50.0);
        assert_eq!(spread.p95_ms, 95.0);
        assert_eq!(spread.p99_ms, 99.0);
        assert_eq!(spread.max_ms, 100.0);

        let one = Percentiles::of(vec![7.0]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(Percentiles::of(Vec::new()), None);
    }
}
