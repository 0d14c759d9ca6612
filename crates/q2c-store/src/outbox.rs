//! The outbox: commands committed with their transition, waiting for the
//! relay to publish them.
//!
//! A relay claims rows with a lease, publishes them with publisher confirms,
//! and marks them sent only once the broker has confirmed. A relay that
//! dies holding a lease loses it when the lease runs out, and another relay
//! takes the rows over; the worst case is a second publish of the same
//! message id, which connectors deduplicate on its idempotency key.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use q2c_contract::Envelope;
use sqlx::types::Json;
use tokio::sync::Notify;
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

/// Commands committed by this process, handed straight to this process's
/// relay: no claiming transaction, no notification through Postgres, no
/// wait for a poll between a commit and its publish.
///
/// While a relay is attached, a transaction writes its commands already
/// leased to that relay, so no other relay takes them; once it has
/// committed they are handed over here. If the relay stops before
/// publishing them, their lease runs out and any relay claims them from
/// the table, as it would rows of a process that died. With no relay
/// attached, commands are written unleased and announced with `NOTIFY` for
/// relays in other processes.
#[derive(Debug, Default)]
pub struct Handoff {
    relay: Mutex<Option<(Uuid, Duration)>>,
    handed: Mutex<Vec<Pending>>,
    commands: Notify,
    claimable: Notify,
    timers: Notify,
    /// How far ahead the timer loop looks anyway: a timer due later needs
    /// no wake-up (`None`: wake for every timer).
    timers_horizon: Mutex<Option<Duration>>,
}

/// What one transaction sends on: its commands, and whether it changed
/// timers. Made before the transaction, handed over after its commit
/// (with [`Handoff::hand_over`]), dropped if it rolls back.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The relay's lease to write on new commands, while one is attached.
    pub(crate) lease: Option<(Uuid, DateTime<Utc>)>,
    /// Commands written pre-leased, to hand to the relay.
    pub(crate) commands: Vec<Pending>,
    /// Commands that became publishable without being handed over (an
    /// unpaused workflow's), for the relay to claim.
    pub(crate) released: bool,
    /// The earliest timer scheduled or re-armed.
    pub(crate) timers: Option<DateTime<Utc>>,
    /// The transaction's time.
    now: Option<DateTime<Utc>>,
}

impl Outgoing {
    /// Whether this transaction's effects are announced in process (a
    /// relay is attached) rather than by `NOTIFY`.
    pub(crate) fn in_process(&self) -> bool {
        self.lease.is_some()
    }
}

impl Handoff {
    /// Attaches this process's relay: from now on commands are written
    /// leased to `owner` for `lease` and handed over after commit.
    pub fn attach(&self, owner: Uuid, lease: Duration) {
        *self.relay.lock().unwrap_or_else(PoisonError::into_inner) = Some((owner, lease));
    }

    /// Detaches the relay (it stopped); returns the commands handed over
    /// but not taken, which the caller releases so any relay may claim them.
    pub fn detach(&self) -> Vec<Pending> {
        *self.relay.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.take()
    }

    /// Starts a transaction's [`Outgoing`].
    pub fn outgoing(&self, now: DateTime<Utc>) -> Outgoing {
        let relay = *self.relay.lock().unwrap_or_else(PoisonError::into_inner);
        Outgoing {
            lease: relay.map(|(owner, lease)| {
                (
                    owner,
                    now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(30)),
                )
            }),
            now: Some(now),
            ..Outgoing::default()
        }
    }

    /// Tells the hand-over that the timer loop looks at least `horizon`
    /// ahead every time it wakes, so a timer due later needs no wake-up.
    pub fn watch_timers(&self, horizon: Duration) {
        *self
            .timers_horizon
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(horizon);
    }

    /// After a commit: hands its commands to the relay and wakes whoever
    /// has work.
    pub fn hand_over(&self, outgoing: Outgoing) {
        if !outgoing.commands.is_empty() {
            self.handed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(outgoing.commands);
            self.commands.notify_one();
        }
        if outgoing.released {
            self.claimable.notify_one();
        }
        if let Some(earliest) = outgoing.timers {
            let horizon = *self
                .timers_horizon
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let seen_anyway = match (horizon, outgoing.now) {
                (Some(horizon), Some(now)) => {
                    earliest > now + TimeDelta::from_std(horizon).unwrap_or_default()
                }
                _ => false,
            };
            if !seen_anyway {
                self.timers.notify_one();
            }
        }
    }

    /// The commands handed over so far, oldest first; they are the
    /// caller's to publish now.
    pub fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.handed.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Woken when commands are handed over.
    pub fn commands(&self) -> &Notify {
        &self.commands
    }

    /// Woken when commands became publishable in the table without being
    /// handed over (an unpause released them): they are to be claimed.
    pub fn claimable(&self) -> &Notify {
        &self.claimable
    }

    /// Woken when a commit in this process scheduled or re-armed a timer
    /// due before the timer loop would look anyway.
    pub fn timers(&self) -> &Notify {
        &self.timers
    }
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
    /// Claims up to `limit` unsent rows whose lease is free or expired, for
    /// `lease`. Rows locked by another claim in progress are skipped, and so
    /// are the commands of paused workflows: they leave once their workflow
    /// is unpaused. Rows leased to a relay (handed to it in process, or
    /// claimed) stay its own until their lease runs out or it releases them.
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
                   AND (lease_until IS NULL OR lease_until < $3) \
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

    /// Gives up `owner`'s leases on rows it will not publish (its relay
    /// stopped): any relay may claim them at once.
    pub async fn release_leases(&self, owner: Uuid, ids: &[i64]) -> Result<(), Error> {
        sqlx::query(
            "UPDATE outbox SET lease_owner = NULL, lease_until = NULL \
             WHERE id = ANY($1) AND lease_owner = $2 AND sent_at IS NULL",
        )
        .bind(ids)
        .bind(owner)
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
