//! The relay: publishes committed commands from the outbox.
//!
//! It claims a batch of rows with a lease, publishes them all (persistent,
//! `mandatory`) in one confirm window, awaits the broker's confirmations,
//! and marks sent only the rows the broker confirmed and routed. A returned
//! (unroutable) or refused message is not marked sent: it is released with
//! the reason and tried again later, and it is logged.
//!
//! Commands committed in this process are handed to it in memory, already
//! leased to it, and published at once without a claiming transaction
//! (`q2c_store::outbox::Handoff`). The table is claimed from when another
//! process announces commands (LISTEN/NOTIFY), when an unpause releases
//! some, and otherwise every poll interval: that is how the commands of a
//! process that died, or of one without a relay, leave. If the relay stops,
//! it releases what it was handed and had not published.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use lapin::Channel;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use q2c_contract::Topology;
use q2c_store::Store;
use q2c_store::outbox::Pending;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Error;
use crate::clock::Clock;
use crate::crash::{CrashPoint, CrashSwitch};

/// How the relay paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// Rows claimed and published per confirm window.
    pub batch: i64,
    /// How long a claim holds rows before another relay may take them.
    pub lease: Duration,
    /// How often to look for work when no notification comes.
    pub poll_interval: Duration,
    /// How long to wait for the broker's confirmations of a batch.
    pub confirm_timeout: Duration,
    /// How long a returned or refused message waits before it is retried.
    pub retry_after: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch: 100,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            confirm_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(5),
        }
    }
}

/// Publishes outbox rows over one channel with publisher confirms.
pub struct Relay<C> {
    store: Store,
    channel: Channel,
    topology: Topology,
    owner: Uuid,
    settings: RelaySettings,
    crash: CrashSwitch,
    clock: C,
}

impl<C: Clock> Relay<C> {
    /// Puts `channel` in confirm mode and makes a relay of it. `owner`
    /// names this process's leases: it stays the same across reconnects, so
    /// rows claimed before a broker failure are taken again at once.
    pub async fn new(
        store: Store,
        channel: Channel,
        topology: Topology,
        settings: RelaySettings,
        owner: Uuid,
        crash: CrashSwitch,
        clock: C,
    ) -> Result<Self, Error> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|source| Error::Broker {
                doing: "enabling publisher confirms",
                source,
            })?;
        Ok(Self {
            store,
            channel,
            topology,
            owner,
            settings,
            crash,
            clock,
        })
    }

    /// Publishes until shutdown: what is handed over as soon as it is,
    /// and claims from the table after every `wake` and poll interval.
    /// Attaches to the store's hand-over for as long as it runs.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) -> Result<(), Error> {
        let handoff = self.store.handoff();
        handoff.attach(self.owner, self.settings.lease);
        let outcome = self.publish_until(&wake, &shutdown).await;
        let unpublished: Vec<i64> = handoff.detach().iter().map(|row| row.id).collect();
        if !unpublished.is_empty()
            && let Err(error) = self.store.release_leases(self.owner, &unpublished).await
        {
            // Their leases run out instead.
            tracing::warn!(%error, rows = unpublished.len(), "could not release commands handed over");
        }
        outcome
    }

    async fn publish_until(
        &self,
        wake: &Notify,
        shutdown: &CancellationToken,
    ) -> Result<(), Error> {
        let handoff = self.store.handoff();
        let mut claim = true;
        loop {
            loop {
                let handed = handoff.take();
                if handed.is_empty() {
                    break;
                }
                self.publish(handed).await?;
            }
            if claim {
                while self.publish_batch().await? > 0 {
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                }
                claim = false;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = handoff.commands().notified() => {}
                () = handoff.claimable().notified() => claim = true,
                () = wake.notified() => claim = true,
                () = tokio::time::sleep(self.settings.poll_interval) => claim = true,
            }
        }
    }

    /// Claims, publishes and confirms one batch; returns how many rows it
    /// claimed (0 when the outbox is drained).
    pub async fn publish_batch(&self) -> Result<usize, Error> {
        let claimed = self
            .store
            .claim_outbox(
                self.owner,
                self.settings.lease,
                self.settings.batch,
                self.clock.now(),
            )
            .await?;
        let count = claimed.len();
        if count > 0 {
            self.crash.check(CrashPoint::AfterCommitBeforePublish);
            self.publish(claimed).await?;
        }
        Ok(count)
    }

    /// Publishes rows leased to this relay in one confirm window and marks
    /// sent those the broker confirmed and routed. If the broker fails
    /// meanwhile, the rows are released first, so that they leave as soon
    /// as a relay is back rather than when their lease runs out.
    async fn publish(&self, claimed: Vec<Pending>) -> Result<(), Error> {
        let published = self.publish_and_confirm(&claimed).await;
        if published.is_err() {
            let ids: Vec<i64> = claimed.iter().map(|row| row.id).collect();
            if let Err(error) = self.store.release_leases(self.owner, &ids).await {
                tracing::warn!(%error, "could not release commands after a broker failure");
            }
        }
        published
    }

    async fn publish_and_confirm(&self, claimed: &[Pending]) -> Result<(), Error> {
        let exchange = self.topology.commands_exchange();
        let mut in_flight = Vec::with_capacity(claimed.len());
        for row in claimed {
            let body = row.envelope.encode();
            let publishing = self.channel.basic_publish(
                exchange.as_str().into(),
                row.envelope.message_type.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                row.envelope.properties(),
            );
            // A blocked connection (a broker alarm) would hold this forever.
            let published = tokio::time::timeout(self.settings.confirm_timeout, publishing)
                .await
                .map_err(|_| Error::ConfirmTimeout)?
                .map_err(|source| Error::Broker {
                    doing: "publishing a command",
                    source,
                })?;
            in_flight.push((row, published));
        }
        self.crash.check(CrashPoint::AfterPublishBeforeConfirm);

        let mut confirmed = Vec::with_capacity(in_flight.len());
        for (row, published) in in_flight {
            let confirmation = tokio::time::timeout(self.settings.confirm_timeout, published)
                .await
                .map_err(|_| Error::ConfirmTimeout)?
                .map_err(|source| Error::Broker {
                    doing: "awaiting a publisher confirm",
                    source,
                })?;
            if confirmation.is_nack() {
                self.set_aside(row, "the broker refused the message (nack)")
                    .await?;
            } else if let Some(returned) = confirmation.take_message() {
                let reason = format!(
                    "returned unroutable by the broker: {} {}",
                    returned.reply_code, returned.reply_text
                );
                self.set_aside(row, &reason).await?;
            } else {
                confirmed.push(row.id);
            }
        }
        self.crash.check(CrashPoint::AfterConfirmBeforeMarkingSent);
        self.store.mark_sent(&confirmed, self.clock.now()).await?;
        tracing::debug!(
            claimed = claimed.len(),
            sent = confirmed.len(),
            "relayed outbox batch"
        );
        Ok(())
    }

    async fn set_aside(&self, row: &Pending, reason: &str) -> Result<(), Error> {
        tracing::error!(
            workflow_id = %row.envelope.workflow_id,
            message_id = %row.envelope.message_id,
            message_type = %row.envelope.message_type,
            reason,
            "command not published; it will be retried"
        );
        let retry_after = self.clock.now()
            + TimeDelta::from_std(self.settings.retry_after).unwrap_or(TimeDelta::seconds(5));
        self.store
            .release_outbox(self.owner, row.id, reason, retry_after)
            .await?;
        Ok(())
    }
}
