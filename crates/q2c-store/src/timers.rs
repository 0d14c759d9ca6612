//! Timers are rows: they survive restarts and cost nothing while they wait,
//! however many days that is. Firing one is a transition like any other
//! (see [`Trigger::Timer`](crate::Trigger::Timer)), which deletes the row.

use chrono::{DateTime, Utc};
use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::TimerId;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{Error, Store};

/// A timer whose time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The workflow it belongs to.
    pub workflow_id: WorkflowId,
    /// Which timer.
    pub timer: TimerId,
    /// When it was due.
    pub due_at: DateTime<Utc>,
}

impl Store {
    /// Up to `limit` timers due at `now`, earliest first.
    pub async fn due_timers(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Due>, Error> {
        let rows: Vec<(Uuid, Json<TimerId>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT workflow_id, timer, due_at FROM timers WHERE due_at <= $1 \
             AND remaining IS NULL ORDER BY due_at LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(workflow_id, Json(timer), due_at)| Due {
                workflow_id: WorkflowId::new(workflow_id),
                timer,
                due_at,
            })
            .collect())
    }

    /// When the next timer is due, if any is scheduled.
    pub async fn next_timer_due(&self) -> Result<Option<DateTime<Utc>>, Error> {
        let (next,): (Option<DateTime<Utc>>,) =
            sqlx::query_as("SELECT min(due_at) FROM timers WHERE remaining IS NULL")
                .fetch_one(self.pool())
                .await?;
        Ok(next)
    }

    /// Moves a timer that could not be fired to `until`, so it does not
    /// hold up the timers behind it while someone looks into it.
    pub async fn postpone_timer(
        &self,
        workflow_id: WorkflowId,
        timer: &TimerId,
        until: DateTime<Utc>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE timers SET due_at = $3 \
             WHERE workflow_id = $1 AND timer_key = $2 AND remaining IS NULL",
        )
        .bind(workflow_id.as_uuid())
        .bind(timer.to_string())
        .bind(until)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
