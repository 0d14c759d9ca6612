//! The reply consumer: applies connectors' replies to their workflows.
//!
//! Deliveries come with bounded prefetch and are acked only after the
//! transaction that applied them has committed; the inbox makes a second
//! delivery of the same message change nothing. Under load, the replies at
//! hand are applied in one transaction (workflows locked in id order); if
//! that fails, each is applied on its own so one bad reply cannot hold up
//! the others. Several such transactions run at once (`appliers`), so a
//! commit's wait for the disk overlaps the next batch's work.
//!
//! A message that cannot be processed (not an envelope, not a reply, an
//! invalid payload, an unknown workflow, or one that keeps failing) is
//! written whole to the dead-letter table with its reason, then acked: it
//! is never lost and never blocks the queue.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};
use q2c_contract::{Envelope, Topology};
use q2c_core::domain::ids::WorkflowId;
use q2c_core::saga::Event;
use q2c_store::dead_letters::DeadLetter;
use q2c_store::workflows::apply_in;
use q2c_store::{Applied, Store, Trigger};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::clock::Clock;
use crate::crash::{CrashPoint, CrashSwitch};
use crate::replies::reply_event;

/// How the consumer paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// Unacked deliveries the broker may hand over at once.
    pub prefetch: u16,
    /// Replies applied in one transaction at most.
    pub batch: usize,
    /// Transactions applying replies at once at most.
    pub appliers: usize,
    /// Deliveries of one message after which it is dead-lettered.
    pub max_deliveries: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            prefetch: 64,
            batch: 32,
            appliers: 4,
            max_deliveries: 5,
        }
    }
}

/// A delivery that parsed into an event for a workflow.
struct Parsed {
    delivery: Delivery,
    message_id: String,
    workflow_id: WorkflowId,
    event: Event,
}

/// Applies replies until shutdown.
pub struct ReplyConsumer<C> {
    store: Store,
    channel: Channel,
    topology: Topology,
    settings: ConsumerSettings,
    crash: CrashSwitch,
    clock: C,
}

impl<C: Clock + 'static> ReplyConsumer<C> {
    /// A consumer on `channel`.
    pub fn new(
        store: Store,
        channel: Channel,
        topology: Topology,
        settings: ConsumerSettings,
        crash: CrashSwitch,
        clock: C,
    ) -> Self {
        Self {
            store,
            channel,
            topology,
            settings,
            crash,
            clock,
        }
    }

    /// Consumes until shutdown; the batch in hand is finished first. `ready`
    /// is set once the broker has accepted the consumer.
    pub async fn run(
        self,
        ready: Arc<tokio::sync::watch::Sender<bool>>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let broker = |doing| move |source| Error::Broker { doing, source };
        self.channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await
            .map_err(broker("setting the prefetch"))?;
        let mut consumer: Consumer = self
            .channel
            .basic_consume(
                self.topology.replies_queue().as_str().into(),
                format!("q2c-{}", uuid::Uuid::now_v7()).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(broker("consuming replies"))?;
        ready.send_replace(true);

        let this = Arc::new(self);
        let mut applying: JoinSet<Result<(), Error>> = JoinSet::new();
        let outcome = loop {
            // A free applier first, so a failure is seen before more is taken.
            while applying.len() >= this.settings.appliers.max(1) {
                match applying.join_next().await {
                    Some(Ok(Ok(()))) | None => {}
                    Some(Ok(Err(error))) => return Err(error),
                    Some(Err(error)) => return Err(Error::TaskFailed(error.to_string())),
                }
            }
            let first = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                Some(done) = applying.join_next(), if !applying.is_empty() => {
                    match done {
                        Ok(Ok(())) => continue,
                        Ok(Err(error)) => break Err(error),
                        Err(error) => break Err(Error::TaskFailed(error.to_string())),
                    }
                }
                next = consumer.next() => next,
            };
            let Some(first) = first else {
                break Err(Error::ConsumerCancelled);
            };
            let mut deliveries = match first {
                Ok(first) => vec![first],
                Err(source) => break Err(broker("receiving a reply")(source)),
            };
            while deliveries.len() < this.settings.batch {
                match consumer.next().now_or_never() {
                    Some(Some(Ok(next))) => deliveries.push(next),
                    Some(Some(Err(source))) => return Err(broker("receiving a reply")(source)),
                    _ => break,
                }
            }
            let applier = this.clone();
            applying.spawn(async move { applier.handle(deliveries).await });
        };
        // The batches in hand are finished (applied and acked) first.
        while let Some(done) = applying.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                Err(error) => return Err(Error::TaskFailed(error.to_string())),
            }
        }
        outcome
    }

    async fn handle(&self, deliveries: Vec<Delivery>) -> Result<(), Error> {
        let mut parsed = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match parse(&delivery) {
                Ok((message_id, workflow_id, event)) => parsed.push(Parsed {
                    delivery,
                    message_id,
                    workflow_id,
                    event,
                }),
                Err((message_id, reason)) => {
                    self.dead_letter(&delivery, message_id, &reason).await?;
                }
            }
        }
        if parsed.is_empty() {
            return Ok(());
        }
        parsed.sort_by_key(|reply| *reply.workflow_id.as_uuid());

        match self.apply_together(&parsed).await {
            Ok(_commands) => {
                self.crash.check(CrashPoint::AfterCommitBeforeAck);
                for reply in &parsed {
                    ack(&reply.delivery).await?;
                }
            }
            Err(error) => {
                if parsed.len() > 1 {
                    tracing::warn!(%error, replies = parsed.len(), "batch failed; applying replies one at a time");
                }
                for reply in &parsed {
                    self.apply_alone(reply).await?;
                }
            }
        }
        Ok(())
    }

    /// All replies in one transaction; the number of commands queued.
    async fn apply_together(&self, parsed: &[Parsed]) -> Result<usize, q2c_store::Error> {
        let now = self.clock.now();
        let mut tx = self.store.pool().begin().await?;
        let mut out = self.store.handoff().outgoing(now);
        let mut results = Vec::with_capacity(parsed.len());
        for reply in parsed {
            let trigger = Trigger::Message {
                message_id: reply.message_id.clone(),
            };
            results.push(
                apply_in(
                    &mut tx,
                    &mut out,
                    reply.workflow_id,
                    &reply.event,
                    &trigger,
                    now,
                )
                .await?,
            );
        }
        tx.commit().await?;
        self.store.handoff().hand_over(out);
        // Logged and counted only once committed: a failed batch is applied
        // again one reply at a time, and must not count twice.
        Ok(parsed
            .iter()
            .zip(&results)
            .map(|(reply, applied)| log_applied(reply, applied))
            .sum())
    }

    async fn apply_alone(&self, reply: &Parsed) -> Result<(), Error> {
        let trigger = Trigger::Message {
            message_id: reply.message_id.clone(),
        };
        match self
            .store
            .apply(reply.workflow_id, &reply.event, &trigger, self.clock.now())
            .await
        {
            Ok(applied) => {
                self.crash.check(CrashPoint::AfterCommitBeforeAck);
                log_applied(reply, &applied);
                ack(&reply.delivery).await
            }
            Err(
                error @ (q2c_store::Error::UnknownWorkflow(_)
                | q2c_store::Error::UnknownReplyType { .. }
                | q2c_store::Error::CorruptRecord { .. }),
            ) => {
                self.dead_letter(
                    &reply.delivery,
                    Some(reply.message_id.clone()),
                    &error.to_string(),
                )
                .await
            }
            Err(error) => {
                let deliveries = delivery_count(&reply.delivery);
                if deliveries >= self.settings.max_deliveries {
                    let reason = format!("failed on {deliveries} deliveries; last error: {error}");
                    self.dead_letter(&reply.delivery, Some(reply.message_id.clone()), &reason)
                        .await
                } else {
                    tracing::warn!(%error, message_id = %reply.message_id, deliveries, "reply not applied; it will be redelivered");
                    // Give a passing fault (a deadlock, a failover) time to
                    // pass before the delivery comes back and counts again.
                    let pause = Duration::from_millis(500)
                        .saturating_mul(u32::try_from(deliveries).unwrap_or(u32::MAX));
                    tokio::time::sleep(pause.min(Duration::from_secs(5))).await;
                    reply
                        .delivery
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        })
                        .await
                        .map(|_| ())
                        .map_err(|source| Error::Broker {
                            doing: "handing a reply back",
                            source,
                        })
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        message_id: Option<String>,
        reason: &str,
    ) -> Result<(), Error> {
        tracing::error!(message_id = message_id.as_deref().unwrap_or("-"), routing_key = %delivery.routing_key, reason, "reply dead-lettered");
        metrics::counter!("q2c_dead_letters_total").increment(1);
        let letter = DeadLetter {
            message_id,
            reason: reason.to_owned(),
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            headers: properties_json(delivery),
            body: delivery.data.clone(),
        };
        self.store
            .record_dead_letter(&letter, self.clock.now())
            .await?;
        ack(delivery).await
    }
}

fn parse(delivery: &Delivery) -> Result<(String, WorkflowId, Event), (Option<String>, String)> {
    let property_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(ToString::to_string);
    let envelope = Envelope::decode(&delivery.data)
        .map_err(|error| (property_id.clone(), error.to_string()))?;
    let message_id = envelope.message_id.to_string();
    let (workflow_id, event) =
        reply_event(&envelope).map_err(|reason| (Some(message_id.clone()), reason))?;
    Ok((message_id, workflow_id, event))
}

fn log_applied(reply: &Parsed, applied: &Applied) -> usize {
    match applied {
        Applied::Applied {
            status,
            commands,
            quote_id,
            answered,
            finished,
            late,
            ..
        } => {
            if *late {
                tracing::warn!(workflow_id = %reply.workflow_id, %quote_id, message_id = %reply.message_id, status = status.as_str(), "late reply applied; the workflow is flagged for an operator");
                metrics::counter!("q2c_late_replies_total").increment(1);
            } else {
                tracing::info!(workflow_id = %reply.workflow_id, %quote_id, message_id = %reply.message_id, status = status.as_str(), "reply applied");
            }
            metrics::counter!("q2c_replies_applied_total").increment(1);
            if let Some((command, latency)) = answered {
                metrics::histogram!("q2c_step_latency_seconds", "command" => command.clone())
                    .record(latency.as_secs_f64());
            }
            if *finished {
                metrics::counter!("q2c_workflows_finished_total", "outcome" => status.as_str())
                    .increment(1);
            }
            *commands
        }
        Applied::Ignored { reason } | Applied::Refused { reason } => {
            tracing::debug!(workflow_id = %reply.workflow_id, message_id = %reply.message_id, reason, "reply changed nothing");
            0
        }
        Applied::Duplicate => {
            tracing::debug!(workflow_id = %reply.workflow_id, message_id = %reply.message_id, "duplicate delivery");
            0
        }
    }
}

async fn ack(delivery: &Delivery) -> Result<(), Error> {
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(|source| Error::Broker {
            doing: "acking a reply",
            source,
        })
}

/// How often the broker has delivered this message (quorum queues count).
fn delivery_count(delivery: &Delivery) -> i64 {
    let count = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned());
    let redeliveries = match count {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => i64::from(n),
        Some(AMQPValue::ShortInt(n)) => i64::from(n),
        _ => i64::from(delivery.redelivered),
    };
    redeliveries + 1
}

/// The delivery's properties, headers included, kept so that a replay can
/// publish the message again exactly as it came.
fn properties_json(delivery: &Delivery) -> serde_json::Value {
    q2c_contract::properties::record(&delivery.properties, delivery.redelivered)
}
