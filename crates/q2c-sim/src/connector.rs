//! One simulated connector: consumes its domain's command queue and handles
//! deliveries concurrently (up to the prefetch), one task each.
//!
//! Each delivery is decided under the connector's lock (decide and record
//! at once, so a key's effect happens at most once however its deliveries
//! interleave), then answered after the configured latency, and acked only
//! once the broker has confirmed the reply.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicRejectOptions};
use lapin::{Channel, Consumer};
use q2c_contract::{Envelope, ReplyKind, Topology};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Error;
use crate::decision::{Decision, Knobs, Memory};
use crate::ledger::{Ledger, LedgerEntry, LedgerEvent};

/// What a connector remembers, behind one lock.
struct State {
    memory: Memory,
    rng: StdRng,
}

/// Everything a delivery task needs.
struct Shared {
    domain: &'static str,
    topology: Topology,
    /// In confirm mode; replies go out on it.
    publish: Channel,
    state: Mutex<State>,
    ledger: Arc<Ledger>,
    knobs: Knobs,
    latency: Duration,
}

/// A connector ready to run: consuming, not yet handling.
pub(crate) struct Connector {
    shared: Arc<Shared>,
    consumer: Consumer,
    /// The channel `consumer` is on, to cancel it at shutdown.
    consume: Channel,
}

/// How a connector is made.
pub(crate) struct Parts {
    pub domain: &'static str,
    pub topology: Topology,
    pub consume: Channel,
    pub consumer: Consumer,
    pub publish: Channel,
    pub ledger: Arc<Ledger>,
    pub knobs: Knobs,
    pub latency: Duration,
    pub seed: Option<u64>,
}

impl Connector {
    pub(crate) fn new(parts: Parts) -> Self {
        let rng = match parts.seed {
            // Each connector its own stream, so one domain's traffic does
            // not change another's draws.
            Some(seed) => StdRng::seed_from_u64(seed ^ domain_salt(parts.domain)),
            None => rand::make_rng(),
        };
        Self {
            shared: Arc::new(Shared {
                domain: parts.domain,
                topology: parts.topology,
                publish: parts.publish,
                state: Mutex::new(State {
                    memory: Memory::default(),
                    rng,
                }),
                ledger: parts.ledger,
                knobs: parts.knobs,
                latency: parts.latency,
            }),
            consumer: parts.consumer,
            consume: parts.consume,
        }
    }

    /// Handles deliveries until `stop`, then finishes those in hand. A
    /// failure (the broker, the ledger) stops it with the error.
    pub(crate) async fn run(mut self, stop: CancellationToken) -> Result<(), Error> {
        let domain = self.shared.domain;
        let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();
        let mut outcome = loop {
            tokio::select! {
                () = stop.cancelled() => break Ok(()),
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(error) = finished(domain, done) {
                        break Err(error);
                    }
                }
                next = self.consumer.next() => match next {
                    None => break Err(Error::ConsumerCancelled(domain)),
                    Some(Err(source)) => break Err(Error::Broker { doing: "receiving a command", source }),
                    Some(Ok(delivery)) => {
                        tasks.spawn(handle(self.shared.clone(), delivery));
                    }
                },
            }
        };
        // Take no more; what was prefetched but not started is requeued when
        // the channel closes.
        let tag = self.consumer.tag();
        if outcome.is_ok()
            && let Err(source) = self
                .consume
                .basic_cancel(tag, BasicCancelOptions::default())
                .await
        {
            tracing::warn!(domain, %source, "could not cancel the consumer");
        }
        while let Some(done) = tasks.join_next().await {
            if let Err(error) = finished(domain, done)
                && outcome.is_ok()
            {
                outcome = Err(error);
            }
        }
        // Closed here rather than dropped: a channel dropped closes in the
        // background, and the connection closing meanwhile would find it
        // half-closed.
        for channel in [&self.consume, &self.shared.publish] {
            if let Err(source) = channel.close(200, "connector stopped".into()).await {
                tracing::debug!(domain, %source, "closing a channel");
            }
        }
        tracing::info!(domain, "connector stopped");
        outcome
    }
}

fn finished(
    domain: &'static str,
    done: Result<Result<(), Error>, tokio::task::JoinError>,
) -> Result<(), Error> {
    done.unwrap_or_else(|error| {
        tracing::error!(domain, %error, "a delivery task panicked");
        Err(Error::Panicked(domain))
    })
}

/// A stable per-domain variation of the seed.
fn domain_salt(domain: &str) -> u64 {
    domain.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One delivery: decide, wait, reply, ack.
async fn handle(shared: Arc<Shared>, delivery: Delivery) -> Result<(), Error> {
    let domain = shared.domain;
    let command = match Envelope::decode(&delivery.data) {
        Ok(command) => command,
        Err(error) => {
            // Rule 7: an operator looks at it in the dead-letter queue.
            tracing::warn!(domain, %error, "rejecting a command that is not a valid envelope");
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map_err(|source| Error::Broker {
                    doing: "rejecting an invalid command",
                    source,
                })?;
            return Ok(());
        }
    };

    let persistent = delivery.properties.delivery_mode() == &Some(2);
    let decision = decide(&shared, &command, persistent)?;
    let Decision::Reply { reply, cached, .. } = decision else {
        tracing::debug!(domain, key = %command.idempotency_key, attempt = command.attempt, "first attempt left unanswered");
        return ack(&delivery).await;
    };

    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let retryable = reply.retryable();
    let envelope = Envelope::reply_to(
        &command,
        reply.kind,
        Uuid::now_v7(),
        chrono::Utc::now(),
        reply.payload,
    );
    q2c_contract::reply::publish(&shared.publish, &shared.topology, &envelope).await?;
    shared.ledger.record(LedgerEntry::about(
        domain,
        &command,
        LedgerEvent::Reply {
            reply_type: envelope.message_type.clone(),
            retryable,
            cached,
        },
    ))?;
    tracing::debug!(
        domain,
        key = %command.idempotency_key,
        attempt = command.attempt,
        reply = %envelope.message_type,
        cached,
        succeeded = reply.kind == ReplyKind::Succeeded,
        "replied"
    );
    ack(&delivery).await
}

/// Decides under the lock, recording the delivery and any effect in the
/// ledger before another delivery can decide.
fn decide(shared: &Shared, command: &Envelope, persistent: bool) -> Result<Decision, Error> {
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    let roll: f64 = state.rng.random();
    let decision = state
        .memory
        .decide(shared.domain, command, shared.knobs, roll);
    shared.ledger.record(LedgerEntry::about(
        shared.domain,
        command,
        LedgerEvent::Delivery { persistent },
    ))?;
    if let Decision::Reply {
        effect: Some(effect),
        ..
    } = &decision
    {
        tracing::info!(domain = shared.domain, key = %command.idempotency_key, effect = ?effect.kind, "effect performed");
        shared.ledger.record(LedgerEntry::about(
            shared.domain,
            command,
            LedgerEvent::Effect {
                effect: effect.kind,
                outcome: effect.outcome.clone(),
            },
        ))?;
    }
    Ok(decision)
}

async fn ack(delivery: &Delivery) -> Result<(), Error> {
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(|source| Error::Broker {
            doing: "acking a command",
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;

    fn draws(seed: u64, domain: &str) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed ^ domain_salt(domain));
        (0..8).map(|_| rng.random()).collect()
    }

    #[test]
    fn a_seed_repeats_per_domain_and_differs_between_domains() {
        assert_eq!(draws(7, "erp"), draws(7, "erp"));
        assert_ne!(draws(7, "erp"), draws(7, "payment"));
        assert_ne!(draws(7, "erp"), draws(8, "erp"));
    }
}
