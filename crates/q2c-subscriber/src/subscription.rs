//! One topic's stream: opened from the stored position, fed requests only as
//! fast as events commit, watched for silence, and replaced when it ends.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use q2c_core::definition::Definition;
use q2c_pubsub::pub_sub_client::PubSubClient;
use q2c_pubsub::{FetchRequest, FetchResponse, ReplayPreset};
use q2c_salesforce::flow::Flow;
use q2c_salesforce::recovery::{Recovery, Watchdog};
use q2c_store::Store;
use q2c_store::intake::StreamPoint;
use q2c_store::positions::Position;
use q2c_store::topic_locks::TopicLock;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::connection::{authorised, error_code};
use crate::event::{self, Handled, hex};
use crate::schemas::{Lookup, Schemas};
use crate::settings::{ReplayIdPolicy, Settings, Topic};
use crate::status::{StreamState, Subscriptions};
use q2c_salesforce_auth::{AuthError, Session, Tokens};

/// The largest response accepted: up to 100 events of up to 1 MB each.
const MAX_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// How often a stopped subscription looks for an operator's move, and a
/// standby for the topic's lock.
const RECHECK: Duration = Duration::from_secs(2);

/// Why a stream ended.
enum Ended {
    Shutdown,
    Stalled,
    /// An operator moved the position: start again from there.
    PositionMoved,
    /// The server closed the stream without an error.
    Closed,
    Failed(tonic::Status),
    Store(q2c_store::Error),
    Auth(AuthError),
    /// A setting or session makes streaming impossible.
    Broken(String),
    /// The topic's lock was lost (its connection failed): another process
    /// may follow the topic now.
    LockLost,
}

/// One topic's subscription.
pub(crate) struct Subscription {
    pub(crate) topic: Topic,
    pub(crate) settings: Arc<Settings>,
    pub(crate) store: Store,
    pub(crate) definition: Arc<Definition>,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) channel: Channel,
    pub(crate) subscriptions: Subscriptions,
    pub(crate) schemas: Schemas,
    pub(crate) origin: Instant,
    /// The session and start of the current stream.
    pub(crate) session: Option<Arc<Session>>,
    pub(crate) started_from: Option<(Position, i64)>,
    /// The topic's lock across processes, while this one follows it.
    pub(crate) lock: Option<TopicLock>,
}

impl Subscription {
    /// Follows the topic until shutdown, or until it must stop for good.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            if self.lock.is_none() && !self.take_lock(&shutdown).await {
                return;
            }
            self.subscriptions
                .set_state(&self.topic.name, StreamState::Connecting, None);
            let (ended, heard) = self.stream(&shutdown).await;
            attempt = if heard { 1 } else { attempt.saturating_add(1) };
            let jitter = rand::random::<f64>();
            let backoff = self.settings.backoff;
            let topic = self.topic.name.clone();
            let wait = match ended {
                Ended::Shutdown => return,
                Ended::Stalled => {
                    tracing::warn!(topic = %topic, stall_after = ?self.settings.stall_after, "no event and no keepalive while events were requested: replacing the stream");
                    self.subscriptions.reconnected(&topic, "stall");
                    backoff.wait(attempt, jitter)
                }
                Ended::PositionMoved => {
                    tracing::info!(topic = %topic, "the stored position was moved: subscribing again from it");
                    self.subscriptions.reconnected(&topic, "position_moved");
                    Duration::ZERO
                }
                Ended::Closed => {
                    tracing::info!(topic = %topic, "Salesforce closed the stream");
                    self.subscriptions.reconnected(&topic, "closed");
                    backoff.wait(attempt, jitter)
                }
                Ended::Store(error) => {
                    tracing::warn!(topic = %topic, error = %error, "could not commit an event; it will be delivered again");
                    self.subscriptions.reconnected(&topic, "database");
                    backoff.wait(attempt, jitter)
                }
                Ended::Auth(error) => {
                    tracing::error!(topic = %topic, error = %error, "could not log in to Salesforce");
                    self.subscriptions.reconnected(&topic, "login");
                    backoff.wait(attempt, jitter)
                }
                Ended::LockLost => {
                    tracing::warn!(topic = %topic, "lost the topic's lock (its database connection failed); stream closed");
                    self.subscriptions.reconnected(&topic, "lock_lost");
                    self.lock = None;
                    backoff.wait(attempt, jitter)
                }
                Ended::Broken(reason) => {
                    self.stop(&reason);
                    return;
                }
                Ended::Failed(status) => {
                    let code = error_code(&status);
                    match backoff.recover(&code, attempt, jitter) {
                        Recovery::Resubscribe(wait) => {
                            let cause = cause_of(&code);
                            tracing::warn!(topic = %topic, code = %code, status = %status.code(), message = %status.message(), wait = ?wait, "the stream ended; subscribing again");
                            self.subscriptions.reconnected(&topic, cause);
                            wait
                        }
                        Recovery::Reauthenticate => {
                            tracing::info!(topic = %topic, "the access token was refused: logging in again and resuming from the stored position");
                            self.subscriptions.reconnected(&topic, "auth");
                            match self.renew_session().await {
                                Ok(()) => Duration::ZERO,
                                Err(error) => {
                                    tracing::error!(topic = %topic, error = %error, "could not log in to Salesforce");
                                    backoff.wait(attempt, jitter)
                                }
                            }
                        }
                        Recovery::ReplayIdUnusable => {
                            self.subscriptions.reconnected(&topic, "replay_id_unusable");
                            match self.replay_id_unusable(&shutdown).await {
                                true => Duration::ZERO,
                                false => return,
                            }
                        }
                        Recovery::Stop(reason) => {
                            self.stop(&format!("{reason} ({code}: {})", status.message()));
                            return;
                        }
                    }
                }
            };
            if !wait.is_zero() {
                self.subscriptions.set_state(
                    &topic,
                    StreamState::Backoff,
                    Some(format!("reconnecting in {} ms", wait.as_millis())),
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// Opens one stream and follows it until it ends. Also says whether the
    /// server was heard from, which resets the backoff.
    async fn stream(&mut self, shutdown: &CancellationToken) -> (Ended, bool) {
        let session = match self.tokens.session().await {
            Ok(session) => session,
            Err(error) => return (Ended::Auth(error), false),
        };
        self.session = Some(session.clone());
        let (position, epoch) = match self
            .store
            .subscription_start(&self.topic.name, &self.settings.first_start, Utc::now())
            .await
        {
            Ok(start) => start,
            Err(error) => return (Ended::Store(error), false),
        };
        self.started_from = Some((position.clone(), epoch));
        let mut flow = match Flow::new(self.settings.outstanding) {
            Ok(flow) => flow,
            Err(error) => return (Ended::Broken(error.to_string()), false),
        };
        let (preset, replay_id) = match &position {
            Position::After(id) => (ReplayPreset::Custom, id.clone()),
            Position::Earliest => (ReplayPreset::Earliest, Vec::new()),
            Position::Latest => (ReplayPreset::Latest, Vec::new()),
        };
        let first = FetchRequest {
            topic_name: self.topic.name.clone(),
            replay_preset: preset as i32,
            replay_id,
            num_requested: requested(flow.to_request()),
            auth_refresh: String::new(),
        };
        let (requests, outgoing) = mpsc::channel(4);
        if requests.try_send(first).is_err() {
            return (Ended::Closed, false);
        }
        let request = match authorised(ReceiverStream::new(outgoing), &session) {
            Ok(request) => request,
            Err(error) => return (Ended::Broken(error.to_string()), false),
        };
        let mut client =
            PubSubClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES);
        let mut responses = tokio::select! {
            () = shutdown.cancelled() => return (Ended::Shutdown, false),
            opened = client.subscribe(request) => match opened {
                Ok(response) => response.into_inner(),
                Err(status) => return (Ended::Failed(status), false),
            },
        };
        self.subscriptions
            .set_state(&self.topic.name, StreamState::Streaming, None);
        tracing::info!(topic = %self.topic.name, from = %position, "subscribed to Salesforce");

        let mut watchdog = Watchdog::new(self.settings.stall_after, self.elapsed());
        watchdog.requesting(true, self.elapsed());
        let mut tick = tokio::time::interval(
            (self.settings.stall_after / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(1)),
        );
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heard = false;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return (Ended::Shutdown, heard),
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        heard = true;
                        watchdog.heard(self.elapsed());
                        if let Err(ended) = self
                            .on_response(&mut client, &session, &mut flow, epoch, response)
                            .await
                        {
                            return (ended, heard);
                        }
                        if let Some(more) = flow.to_request() {
                            let request = FetchRequest {
                                topic_name: self.topic.name.clone(),
                                num_requested: requested(Some(more)),
                                ..FetchRequest::default()
                            };
                            if requests.send(request).await.is_err() {
                                return (Ended::Closed, heard);
                            }
                        }
                        watchdog.requesting(flow.outstanding() > 0, self.elapsed());
                    }
                    Ok(None) => return (Ended::Closed, heard),
                    Err(status) => return (Ended::Failed(status), heard),
                },
                _ = tick.tick() => {
                    if watchdog.stalled(self.elapsed()) {
                        return (Ended::Stalled, heard);
                    }
                    if let Some(lock) = self.lock.as_mut()
                        && !lock.held().await
                    {
                        return (Ended::LockLost, heard);
                    }
                    self.report_position_age();
                }
            }
        }
    }

    /// Commits every event of a response, in order, each with its position;
    /// or stores a keepalive's position once nothing before it is pending.
    async fn on_response(
        &mut self,
        client: &mut PubSubClient<Channel>,
        session: &Session,
        flow: &mut Flow,
        epoch: i64,
        response: FetchResponse,
    ) -> Result<(), Ended> {
        let pending = response.pending_num_requested;
        if response.events.is_empty() {
            if let Some(latest) = flow.keepalive(response.latest_replay_id, pending) {
                self.advance(&latest, epoch).await?;
            }
            return Ok(());
        }
        let replay_ids: Vec<_> = response
            .events
            .iter()
            .map(|event| event.replay_id.clone())
            .collect();
        flow.delivered(&replay_ids, pending);
        for delivered in response.events {
            let topic = self.topic.name.clone();
            metrics::counter!("q2c_salesforce_events_received_total", "topic" => topic.clone())
                .increment(1);
            self.subscriptions
                .update(&topic, |status| status.events_received += 1);
            let event = delivered.event.unwrap_or_default();
            let schema = match self.schemas.get(client, session, &event.schema_id).await {
                Lookup::Found(schema) => Ok(schema),
                Lookup::Unusable(reason) => Err(reason),
                Lookup::Failed(status) => return Err(Ended::Failed(status)),
            };
            let at = StreamPoint {
                topic: &topic,
                replay_id: &delivered.replay_id,
                epoch,
            };
            let handled = event::handle(
                &self.store,
                &self.definition,
                &self.topic,
                &event,
                schema.as_deref().map_err(Clone::clone),
                &at,
            )
            .await;
            match handled {
                Ok(Handled::Admitted { admission, created }) => {
                    if event::started(&admission) {
                        let lag = (Utc::now() - created).num_milliseconds().max(0) as f64 / 1000.0;
                        metrics::counter!("q2c_workflows_started_total").increment(1);
                        metrics::histogram!("q2c_salesforce_event_lag_seconds", "topic" => topic.clone())
                            .record(lag);
                        self.subscriptions
                            .update(&topic, |status| status.last_lag_seconds = Some(lag));
                    }
                    tracing::info!(
                        topic = %topic,
                        event_id = %event.id,
                        replay_id = %hex(&delivered.replay_id),
                        quote_id = %admission.quote_id,
                        workflow_id = ?admission.workflow_id.map(|id| id.to_string()),
                        outcome = admission.outcome.as_str(),
                        repeated = admission.repeated,
                        "Salesforce event admitted"
                    );
                }
                Ok(Handled::DeadLettered(reason)) => {
                    metrics::counter!("q2c_salesforce_dead_letters_total", "topic" => topic.clone())
                        .increment(1);
                    self.subscriptions
                        .update(&topic, |status| status.dead_letters += 1);
                    tracing::warn!(topic = %topic, event_id = %event.id, replay_id = %hex(&delivered.replay_id), reason = %reason, "Salesforce event set aside as a dead letter");
                }
                Err(q2c_store::Error::PositionMoved { .. }) => return Err(Ended::PositionMoved),
                Err(error) => return Err(Ended::Store(error)),
            }
            self.subscriptions
                .position_stored(&topic, hex(&delivered.replay_id), Utc::now());
            if let Some(position) = flow.committed(&delivered.replay_id)
                && position != delivered.replay_id
            {
                self.advance(&position, epoch).await?;
            }
        }
        Ok(())
    }

    /// Stores a position that no event's commit carried (a keepalive's).
    async fn advance(&self, replay_id: &[u8], epoch: i64) -> Result<(), Ended> {
        if replay_id.is_empty() {
            return Ok(());
        }
        let at = StreamPoint {
            topic: &self.topic.name,
            replay_id,
            epoch,
        };
        match self.store.advance_position(&at, Utc::now()).await {
            Ok(()) => {
                self.subscriptions
                    .position_stored(&self.topic.name, hex(replay_id), Utc::now());
                Ok(())
            }
            Err(q2c_store::Error::PositionMoved { .. }) => Err(Ended::PositionMoved),
            Err(error) => Err(Ended::Store(error)),
        }
    }

    /// Waits until this process holds the topic's lock (as a standby while
    /// another one does); returns false on shutdown.
    async fn take_lock(&mut self, shutdown: &CancellationToken) -> bool {
        let mut announced = false;
        loop {
            match self.store.try_lock_topic(&self.topic.name).await {
                Ok(Some(lock)) => {
                    if announced {
                        tracing::info!(topic = %self.topic.name, "took over the topic");
                    }
                    self.lock = Some(lock);
                    return true;
                }
                Ok(None) => {
                    if !announced {
                        tracing::info!(topic = %self.topic.name, "another q2c process follows this topic; standing by");
                        announced = true;
                    }
                    self.subscriptions.set_state(
                        &self.topic.name,
                        StreamState::Standby,
                        Some("another q2c process follows this topic".into()),
                    );
                }
                Err(error) => {
                    tracing::warn!(topic = %self.topic.name, error = %error, "could not take the topic's lock");
                    self.subscriptions.set_state(
                        &self.topic.name,
                        StreamState::Backoff,
                        Some(format!("cannot take the topic's lock: {error}")),
                    );
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    async fn renew_session(&mut self) -> Result<(), AuthError> {
        match self.session.take() {
            Some(stale) => self.tokens.renew(&stale).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Salesforce refused the stored replay id. Applies the configured
    /// policy, loudly; returns whether to go on subscribing.
    async fn replay_id_unusable(&mut self, shutdown: &CancellationToken) -> bool {
        let topic = self.topic.name.clone();
        let Some((Position::After(replay_id), epoch)) = self.started_from.clone() else {
            self.stop("Salesforce reported a replay id problem for a subscription that sent none");
            return false;
        };
        let policy = self.settings.on_unusable_replay_id;
        metrics::counter!("q2c_salesforce_replay_id_unusable_total", "topic" => topic.clone(), "policy" => policy.as_str())
            .increment(1);
        match policy {
            ReplayIdPolicy::Earliest => {
                tracing::error!(topic = %topic, replay_id = %hex(&replay_id), "the stored replay id is expired or invalid: starting again from EARLIEST as configured; events already handled are recognised by their id");
                let moved = self
                    .store
                    .move_position(
                        &topic,
                        &Position::Earliest,
                        "q2c subscriber (stored replay id expired or invalid; policy earliest)",
                        Utc::now(),
                    )
                    .await;
                if let Err(error) = moved {
                    tracing::error!(topic = %topic, error = %error, "could not move the position to EARLIEST");
                }
                true
            }
            ReplayIdPolicy::Stop => {
                self.stop(&format!(
                    "the stored replay id {} is expired or invalid; events may have been missed. Move the position with `q2c salesforce position set {topic} EARLIEST|<id>` to resume",
                    hex(&replay_id)
                ));
                self.await_operator(epoch, shutdown).await
            }
        }
    }

    /// Waits, stopped, until an operator moves the position (its epoch
    /// changes); returns false on shutdown.
    async fn await_operator(&self, epoch: i64, shutdown: &CancellationToken) -> bool {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(RECHECK) => {}
            }
            match self.store.position_epoch(&self.topic.name).await {
                Ok(Some(now)) if now != epoch => {
                    tracing::info!(topic = %self.topic.name, "the position was moved: resuming");
                    return true;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(topic = %self.topic.name, error = %error, "could not read the position");
                }
            }
        }
    }

    fn stop(&self, reason: &str) {
        tracing::error!(topic = %self.topic.name, reason = %reason, "stopped following the topic");
        self.subscriptions.set_state(
            &self.topic.name,
            StreamState::Stopped,
            Some(reason.to_owned()),
        );
    }

    fn report_position_age(&self) {
        let topic = &self.topic.name;
        if let Some(status) = self
            .subscriptions
            .snapshot()
            .into_iter()
            .find(|status| &status.topic == topic)
            && let Some(age) = status.position_age_seconds
        {
            metrics::gauge!("q2c_salesforce_position_age_seconds", "topic" => topic.clone())
                .set(age);
        }
    }

    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A request count as the wire wants it.
fn requested(count: Option<u32>) -> i32 {
    count.map_or(0, |count| i32::try_from(count).unwrap_or(i32::MAX))
}

/// The reconnect cause counted for an error code.
fn cause_of(code: &str) -> &'static str {
    match code.rsplit("grpc.").next().unwrap_or_default() {
        "" => "transport",
        "service.unavailable" => "unavailable",
        "subscription.limit.exceeded" => "limit_exceeded",
        "concurrent.client.limit.exceeded" => "concurrent_clients",
        "fetch.requested.events.invalid" => "requested_events_invalid",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_are_counted_by_a_short_cause() {
        assert_eq!(cause_of(""), "transport");
        assert_eq!(
            cause_of("sfdc.platform.eventbus.grpc.service.unavailable"),
            "unavailable"
        );
        assert_eq!(
            cause_of("sfdc.platform.eventbus.grpc.subscription.limit.exceeded"),
            "limit_exceeded"
        );
        assert_eq!(
            cause_of("sfdc.platform.eventbus.grpc.something.new"),
            "error"
        );
    }

    #[test]
    fn a_request_count_fits_the_wire() {
        assert_eq!(requested(None), 0);
        assert_eq!(requested(Some(100)), 100);
        assert_eq!(requested(Some(u32::MAX)), i32::MAX);
    }
}
