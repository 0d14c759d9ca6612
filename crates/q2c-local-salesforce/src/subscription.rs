//! One Subscribe stream, served by its own task: the preset from the first
//! FetchRequest, additive flow control (at most 100 outstanding), prompt
//! delivery of new events, keepalives while events are requested but none
//! come, the idle close while nothing is requested, and the fault switches.

use std::{future, sync::Arc};

use q2c_pubsub::{FetchRequest, FetchResponse, ReplayPreset};
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep_until},
};
use tonic::{Status, Streaming};

use crate::{
    bus::{Expired, StartError, Topic, encode_replay_id},
    faults::FaultState,
    grpc::Sfdc,
    server::Shared,
};

/// The most events a stream may have requested and not yet received.
pub const MAX_OUTSTANDING: i32 = 100;

/// Who opened the stream.
pub(crate) struct Caller {
    pub token: String,
    pub token_valid_until: Instant,
    pub rpc_id: String,
}

type Outbound = mpsc::Sender<Result<FetchResponse, Status>>;

/// Serves one stream until it ends; an error ends it with that status.
pub(crate) async fn run(
    shared: Arc<Shared>,
    caller: Caller,
    inbound: Streaming<FetchRequest>,
    tx: Outbound,
) {
    let mut faults = shared.faults.subscribe();
    let seen = faults.borrow_and_update().clone();
    let mut stream = Stream {
        shared,
        caller,
        tx,
        faults,
        seen,
    };
    if let Err(status) = stream.serve(inbound).await {
        tracing::debug!(rpc_id = %stream.caller.rpc_id, %status, "subscription ended");
        // A client that stopped reading gets no status; the transport ends.
        let _ = stream.tx.try_send(Err(status));
    }
}

/// What one stream needs between its steps.
struct Stream {
    shared: Arc<Shared>,
    caller: Caller,
    tx: Outbound,
    faults: watch::Receiver<FaultState>,
    /// The switches as this stream last looked at them.
    seen: FaultState,
}

/// What happened while waiting for the first FetchRequest.
enum First {
    Request(FetchRequest),
    Gone,
}

impl Stream {
    async fn serve(&mut self, mut inbound: Streaming<FetchRequest>) -> Result<(), Status> {
        let first = match self.first_request(&mut inbound).await? {
            First::Request(request) => request,
            First::Gone => return Ok(()),
        };
        let topic = self.shared.topic(&first.topic_name).ok_or_else(|| {
            self.error(
                Sfdc::TopicNotFound,
                format!("no topic {:?} in this org", first.topic_name),
            )
        })?;
        topic.count_subscribe_call();
        if self.shared.take_refusal() {
            return Err(self.error(
                Sfdc::Unavailable,
                "the service is unavailable (local fault switch)",
            ));
        }

        let preset = ReplayPreset::try_from(first.replay_preset).map_err(|_| {
            self.error(
                Sfdc::ReplayIdValidationFailed,
                format!("unknown replay preset {}", first.replay_preset),
            )
        })?;
        let cursor = topic
            .start_position(preset, &first.replay_id)
            .map_err(|e| match e {
                StartError::MissingReplayId => self.error(
                    Sfdc::ReplayIdValidationFailed,
                    "a CUSTOM subscription needs a replay id",
                ),
                StartError::Corrupted(why) => self.error(Sfdc::ReplayIdCorrupted, why),
            })?;
        let pending = self.add_requested(0, first.num_requested)?;
        // Counted open from here on: placed and serving.
        let _open = topic.open_stream();
        self.deliver(&topic, cursor, pending, inbound).await
    }

    /// Waits for the FetchRequest that names the topic and the preset.
    async fn first_request(
        &mut self,
        inbound: &mut Streaming<FetchRequest>,
    ) -> Result<First, Status> {
        let shared = Arc::clone(&self.shared);
        let idle_deadline = Instant::now() + shared.idle_timeout;
        loop {
            let idle = (!self.seen.stall).then_some(idle_deadline);
            tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => return Err(self.shutting_down()),
                () = self.tx.closed() => return Ok(First::Gone),
                changed = self.faults.changed() => {
                    if changed.is_err() {
                        return Ok(First::Gone);
                    }
                    self.check_faults()?;
                }
                () = sleep_until(self.caller.token_valid_until) => {
                    return Err(self.token_expired());
                }
                message = inbound.message() => {
                    return Ok(match message {
                        Ok(Some(request)) => First::Request(request),
                        Ok(None) | Err(_) => First::Gone,
                    });
                }
                () = at(idle) => return Ok(First::Gone),
            }
        }
    }

    /// Delivers events after `cursor` for as long as the stream lives.
    async fn deliver(
        &mut self,
        topic: &Topic,
        mut cursor: u64,
        mut pending: i32,
        mut inbound: Streaming<FetchRequest>,
    ) -> Result<(), Status> {
        let shared = Arc::clone(&self.shared);
        let mut published = topic.watch_latest();
        let mut inbound_open = true;
        let mut last_sent = Instant::now();
        let mut idle_since = Instant::now();
        loop {
            let delivering = pending > 0 && !self.seen.stall;
            if delivering {
                published.borrow_and_update();
                let max = usize::try_from(pending).unwrap_or_default();
                let events = topic.read_after(cursor, max).map_err(|Expired| {
                    self.error(
                        Sfdc::ReplayIdCorrupted,
                        format!("the events after replay id {cursor:016x} have left retention"),
                    )
                })?;
                if let Some(last) = events.last() {
                    let latest_replay_id = last.replay_id.clone();
                    cursor += events.len() as u64;
                    pending -= i32::try_from(events.len()).unwrap_or(pending);
                    let events = if self.seen.duplicate {
                        events
                            .into_iter()
                            .flat_map(|event| [event.clone(), event])
                            .collect()
                    } else {
                        events
                    };
                    self.send(FetchResponse {
                        events,
                        latest_replay_id,
                        rpc_id: self.caller.rpc_id.clone(),
                        pending_num_requested: pending,
                    })
                    .await?;
                    last_sent = Instant::now();
                    idle_since = last_sent;
                    continue;
                }
            }

            let keepalive = delivering.then_some(last_sent + shared.keepalive_interval);
            let idle =
                (pending == 0 && !self.seen.stall).then_some(idle_since + shared.idle_timeout);
            tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => return Err(self.shutting_down()),
                () = self.tx.closed() => return Ok(()),
                changed = self.faults.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let was_stalled = self.seen.stall;
                    self.check_faults()?;
                    if was_stalled && !self.seen.stall {
                        // The timers start over: a stall must not turn into
                        // an instant keepalive or idle close.
                        last_sent = Instant::now();
                        idle_since = last_sent;
                    }
                }
                () = sleep_until(self.caller.token_valid_until) => {
                    return Err(self.token_expired());
                }
                message = inbound.message(), if inbound_open => match message {
                    Ok(Some(request)) => {
                        pending = self.add_requested(pending, request.num_requested)?;
                        idle_since = Instant::now();
                    }
                    // The client sends no more requests; what it asked for
                    // is still delivered, then the idle close ends it.
                    Ok(None) => inbound_open = false,
                    Err(_) => return Ok(()),
                },
                changed = published.changed(), if delivering => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = at(keepalive) => {
                    let latest = topic.latest();
                    self.send(FetchResponse {
                        events: Vec::new(),
                        latest_replay_id: if latest == 0 { Vec::new() } else { encode_replay_id(latest) },
                        rpc_id: self.caller.rpc_id.clone(),
                        pending_num_requested: pending,
                    })
                    .await?;
                    last_sent = Instant::now();
                }
                () = at(idle) => {
                    tracing::debug!(rpc_id = %self.caller.rpc_id, "idle subscription closed");
                    return Ok(());
                }
            }
        }
    }

    /// Adds a FetchRequest's `num_requested` to what is outstanding.
    fn add_requested(&self, pending: i32, requested: i32) -> Result<i32, Status> {
        if !(1..=MAX_OUTSTANDING).contains(&requested) {
            return Err(self.error(
                Sfdc::RequestedEventsInvalid,
                format!("num_requested must be between 1 and {MAX_OUTSTANDING}, not {requested}"),
            ));
        }
        let total = pending + requested;
        if total > MAX_OUTSTANDING {
            return Err(self.error(
                Sfdc::RequestedEventsInvalid,
                format!(
                    "at most {MAX_OUTSTANDING} events may be outstanding: {pending} were and {requested} more were requested"
                ),
            ));
        }
        Ok(total)
    }

    /// Looks at the switches after they changed: some end the stream.
    fn check_faults(&mut self) -> Result<(), Status> {
        let now = self.faults.borrow_and_update().clone();
        if now.unavailable_epoch != self.seen.unavailable_epoch {
            return Err(self.error(
                Sfdc::Unavailable,
                "the service is unavailable (local fault switch)",
            ));
        }
        if now.token_epoch != self.seen.token_epoch {
            match self.shared.tokens.valid_until(&self.caller.token) {
                Some(until) => self.caller.token_valid_until = until,
                None => return Err(self.token_expired()),
            }
        }
        self.seen = now;
        Ok(())
    }

    /// Sends a response, waiting while the client is slow to read, and
    /// gives up if it is gone or the server is stopping.
    async fn send(&self, response: FetchResponse) -> Result<(), Status> {
        tokio::select! {
            biased;
            sent = self.tx.send(Ok(response)) => {
                sent.map_err(|_| Status::cancelled("the client went away"))
            }
            () = self.shared.shutdown.cancelled() => Err(self.shutting_down()),
        }
    }

    fn error(&self, error: Sfdc, message: impl Into<String>) -> Status {
        error.status(message, &self.caller.rpc_id)
    }

    fn token_expired(&self) -> Status {
        self.error(Sfdc::AuthError, "the access token has expired")
    }

    fn shutting_down(&self) -> Status {
        self.error(Sfdc::Unavailable, "the local Salesforce is shutting down")
    }
}

/// Sleeps until the deadline, or forever without one.
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => future::pending().await,
    }
}
