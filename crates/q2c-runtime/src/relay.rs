//! The relay: publishes committed commands from the outbox.
//!
//! It claims a batch of rows with a lease, publishes them all (persistent,
//! `mandatory`) in one confirm window, awaits the broker's confirmations,
//! and marks sent only the rows the broker confirmed and routed. A returned
//! (unroutable) or refused message is not marked sent: it is released with
//! the reason and tried again later, and it is logged.
//!
//! The relay wakes when a commit in this process adds commands, when
//! another process does (LISTEN/NOTIFY), and otherwise polls: notifications
//! are hints, never the only trigger.

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

    /// Publishes until shutdown: after every wake-up, drains the outbox.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) -> Result<(), Error> {
        loop {
            while self.publish_batch().await? > 0 {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
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
        if claimed.is_empty() {
            return Ok(0);
        }
        self.crash.check(CrashPoint::AfterCommitBeforePublish);

        let exchange = self.topology.commands_exchange();
        let mut in_flight = Vec::with_capacity(claimed.len());
        for row in &claimed {
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
        Ok(claimed.len())
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
