//! Works through running bulk jobs, one workflow at a time at each job's
//! rate, so a bulk resume of hundreds of quotes does not flood a connector.
//!
//! A job is held under a lease renewed with every workflow; a process that
//! dies leaves a lease that runs out, and another process (or this one,
//! restarted) carries on from the first workflow not yet dealt with.

use std::sync::Arc;
use std::time::Duration;

use q2c_store::Store;
use q2c_store::bulk::{Job, Step};
use tokio::sync::Notify;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::clock::Clock;

/// How bulk jobs are worked through.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkSettings {
    /// How long a job stays this process's without progress.
    pub lease: Duration,
    /// How often to look for jobs when no notification comes.
    pub poll: Duration,
}

impl Default for BulkSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            poll: Duration::from_secs(5),
        }
    }
}

/// Runs until shutdown. `wake` is notified when a job is started.
pub async fn run<C: Clock>(
    store: Store,
    clock: C,
    settings: BulkSettings,
    owner: Uuid,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<(), q2c_store::Error> {
    loop {
        match store.claim_bulk(owner, settings.lease, clock.now()).await? {
            Some(job) => work(&store, &clock, &settings, owner, &job, &shutdown).await?,
            None => {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = wake.notified() => {}
                    () = tokio::time::sleep(settings.poll) => {}
                }
            }
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

async fn work<C: Clock>(
    store: &Store,
    clock: &C,
    settings: &BulkSettings,
    owner: Uuid,
    job: &Job,
    shutdown: &CancellationToken,
) -> Result<(), q2c_store::Error> {
    tracing::info!(
        job = job.id,
        action = %job.action,
        rate = job.rate_per_second,
        "working through a bulk job"
    );
    let mut pace = pace(job.rate_per_second);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = pace.tick() => {}
        }
        match store
            .bulk_step(job, owner, settings.lease, clock.now())
            .await?
        {
            Step::Acted { item } => {
                metrics::counter!(
                    "q2c_bulk_workflows_total",
                    "action" => job.action.clone(),
                    "result" => item.result.clone(),
                )
                .increment(1);
                tracing::info!(
                    job = job.id,
                    workflow_id = %item.workflow_id,
                    result = %item.result,
                    "bulk action"
                );
            }
            Step::Finished => {
                tracing::info!(job = job.id, "bulk job finished");
                return Ok(());
            }
            Step::NotMine => {
                tracing::info!(
                    job = job.id,
                    "bulk job no longer held (cancelled, or taken over)"
                );
                return Ok(());
            }
        }
    }
}

/// Ticks at `rate` per second: the first at once, then evenly spaced; a
/// slow step delays the next tick instead of causing a burst to catch up.
fn pace(rate_per_second: f64) -> Interval {
    let period = if rate_per_second.is_finite() && rate_per_second > 0.0 {
        Duration::from_secs_f64(1.0 / rate_per_second)
    } else {
        Duration::from_secs(1)
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn steps_are_spaced_at_the_rate_and_never_burst_to_catch_up() {
        let start = Instant::now();
        let mut pace = pace(4.0);
        pace.tick().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the first at once");
        pace.tick().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        // A step that took a whole second: the next tick comes at once,
        // and the one after a full period later, not four at once.
        tokio::time::sleep(Duration::from_secs(1)).await;
        pace.tick().await;
        let late = start.elapsed();
        assert_eq!(late, Duration::from_millis(1250));
        pace.tick().await;
        assert_eq!(start.elapsed(), late + Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_that_makes_no_sense_paces_at_one_per_second() {
        for rate in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            let start = Instant::now();
            let mut pace = pace(rate);
            pace.tick().await;
            pace.tick().await;
            assert_eq!(start.elapsed(), Duration::from_secs(1), "rate {rate}");
        }
    }
}
