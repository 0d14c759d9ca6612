//! The outbox: commands committed with their transition, waiting for the
//! relay to publish them.
//!
//! A relay claims rows with a lease, publishes them with publisher confirms,
//! and marks them sent only once the broker has confirmed. A relay that
//! dies holding a lease loses it when the lease runs out, and another relay
//! takes the rows over; the worst case is a second publish of the same
//! message id, which connectors deduplicate on its idempotency key.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use q2c_contract::Envelope;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{Error, Store};

/// A claimed outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Row id: rows are published in id order.
    pub id: i64,
    /// The envelope to publish.
    pub envelope: Envelope,
    /// How often a relay has claimed it (1 on the first claim).
    pub publish_attempts: i32,
}

/// How far behind publishing is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Rows not yet confirmed by the broker.
    pub unsent: i64,
    /// When the oldest of them was committed.
    pub oldest: Option<DateTime<Utc>>,
}

impl Store {
    /// Claims up to `limit` unsent rows whose lease is free, expired, or
    /// already `owner`'s (taken before a reconnect), for `lease`. Rows locked
    /// by another claim in progress are skipped, and so are the commands of
    /// paused workflows: they leave once their workflow is unpaused.
    pub async fn claim_outbox(
        &self,
        owner: Uuid,
        lease: Duration,
        limit: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<Pending>, Error> {
        let lease_until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX / 2);
        let rows: Vec<(i64, Json<Envelope>, i32)> = sqlx::query_as(
            "UPDATE outbox SET lease_owner = $1, lease_until = $2, \
                 publish_attempts = publish_attempts + 1 \
             WHERE id IN ( \
                 SELECT id FROM outbox \
                 WHERE sent_at IS NULL \
                   AND (lease_until IS NULL OR lease_until < $3 OR lease_owner = $1) \
                   AND workflow_id NOT IN (SELECT id FROM workflows WHERE paused) \
                 ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id, body, publish_attempts",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut pending: Vec<Pending> = rows
            .into_iter()
            .map(|(id, Json(envelope), publish_attempts)| Pending {
                id,
                envelope,
                publish_attempts,
            })
            .collect();
        pending.sort_by_key(|row| row.id);
        Ok(pending)
    }

    /// Marks rows sent once the broker has confirmed them.
    pub async fn mark_sent(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64, Error> {
        let updated = sqlx::query(
            "UPDATE outbox SET sent_at = $2, lease_owner = NULL, lease_until = NULL \
             WHERE id = ANY($1) AND sent_at IS NULL",
        )
        .bind(ids)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(updated)
    }

    /// Hands a claimed row back after a failed publish, with the reason; it
    /// can be claimed again from `retry_after` on.
    pub async fn release_outbox(
        &self,
        owner: Uuid,
        id: i64,
        error: &str,
        retry_after: DateTime<Utc>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE outbox SET lease_owner = NULL, lease_until = $4, last_error = $3 \
             WHERE id = $1 AND lease_owner = $2 AND sent_at IS NULL",
        )
        .bind(id)
        .bind(owner)
        .bind(error)
        .bind(retry_after)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Unsent rows and the age of the oldest; commands held by a pause are
    /// not behind, so they do not count.
    pub async fn outbox_backlog(&self) -> Result<Backlog, Error> {
        let (unsent, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL \
                 AND workflow_id NOT IN (SELECT id FROM workflows WHERE paused)",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(Backlog { unsent, oldest })
    }
}
