//! The runtime around the saga core: everything that makes decisions happen.
//!
//! # Layout
//!
//! - [`relay`]: publishes committed commands from the outbox, with
//!   publisher confirms.
//! - [`consumer`]: applies replies, acked only after their transaction
//!   commits; dead-letters what cannot be processed.
//! - [`timers`]: fires timeouts, backoffs and deadlines when they are due.
//! - [`replies`]: turns reply envelopes into saga events.
//! - [`bulk`]: works through running bulk jobs at their rate.
//! - [`clock`], [`crash`]: the time source, and crash injection for tests.
//!
//! [`run`] wires them to one broker connection and one shutdown token, and
//! [`serve`] keeps them running across broker outages until shutdown.

pub mod bulk;
pub mod clock;
pub mod consumer;
pub mod crash;
pub mod relay;
pub mod replies;
pub mod timers;

use std::sync::Arc;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use q2c_contract::Topology;
use q2c_store::bulk::BULK_CHANNEL;
use q2c_store::{OUTBOX_CHANNEL, Store, TIMERS_CHANNEL};
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bulk::BulkSettings;
use crate::clock::SystemClock;
use crate::consumer::{ConsumerSettings, ReplyConsumer};
use crate::crash::CrashSwitch;
use crate::relay::{Relay, RelaySettings};
use crate::timers::TimerSettings;

/// What the runtime needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker.
    pub amqp_url: String,
    /// Names of exchanges and queues.
    pub topology: Topology,
    /// The outbox relay's pacing.
    pub relay: RelaySettings,
    /// The reply consumer's pacing.
    pub consumer: ConsumerSettings,
    /// The timer loop's pacing.
    pub timers: TimerSettings,
    /// How bulk jobs are worked through.
    pub bulk: BulkSettings,
    /// Crash injection (tests only).
    pub crash: CrashSwitch,
    /// This process's identity, e.g. as the owner of outbox leases.
    pub instance: uuid::Uuid,
    /// Set to true once the runtime is consuming, so that whoever started
    /// it knows when it is ready.
    pub ready: Arc<tokio::sync::watch::Sender<bool>>,
}

/// What stops the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] q2c_store::Error),
    /// The broker failed.
    #[error("broker error while {doing}: {source}")]
    Broker {
        /// What was being done.
        doing: &'static str,
        /// The broker's error.
        source: lapin::Error,
    },
    /// The topology could not be declared.
    #[error(transparent)]
    Topology(#[from] q2c_contract::topology::Error),
    /// The broker did not confirm published messages in time.
    #[error("the broker did not confirm published commands in time")]
    ConfirmTimeout,
    /// The broker cancelled the reply consumer (queue deleted?).
    #[error("the broker cancelled the reply consumer")]
    ConsumerCancelled,
    /// Connecting to the broker and declaring the topology took too long.
    #[error("connecting to the broker took longer than {SETUP_TIMEOUT:?}")]
    SetupTimeout,
    /// A task panicked or stopped when it should not have.
    #[error("a runtime task failed: {0}")]
    TaskFailed(String),
    /// Listening for database notifications failed.
    #[error("listening for database notifications failed: {0}")]
    Listen(sqlx::Error),
}

/// How long connecting to the broker and declaring the topology may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs relay, consumer and timers on one broker connection until shutdown
/// or until one of them fails (then the others are stopped too).
pub async fn run(
    store: Store,
    settings: &Settings,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let setup = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        setup = tokio::time::timeout(SETUP_TIMEOUT, connect(settings)) => setup,
    };
    let (connection, channels) = setup.map_err(|_| Error::SetupTimeout)??;
    let [relay_channel, consumer_channel] = channels;

    let relay_wake = Arc::new(Notify::new());
    let timers_wake = Arc::new(Notify::new());
    let bulk_wake = Arc::new(Notify::new());
    let stop = shutdown.child_token();
    let mut tasks: JoinSet<Result<(), Error>> = JoinSet::new();

    let relay = Relay::new(
        store.clone(),
        relay_channel,
        settings.topology.clone(),
        settings.relay,
        settings.instance,
        settings.crash.clone(),
        SystemClock,
    )
    .await?;
    tasks.spawn(relay.run(relay_wake.clone(), stop.clone()));

    let consumer = ReplyConsumer::new(
        store.clone(),
        consumer_channel,
        settings.topology.clone(),
        settings.consumer,
        settings.crash.clone(),
        SystemClock,
    );
    tasks.spawn(consumer.run(settings.ready.clone(), stop.clone()));
    // Commits in this process announce new timers in process; the timer
    // loop listens to both.
    store.handoff().watch_timers(settings.timers.poll_interval);
    tasks.spawn({
        let (store, timers_wake, stop) = (store.clone(), timers_wake.clone(), stop.clone());
        async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = store.handoff().timers().notified() => timers_wake.notify_one(),
                }
            }
        }
    });

    tasks.spawn({
        let (store, settings, relay_wake, timers_wake, stop) = (
            store.clone(),
            settings.timers,
            relay_wake.clone(),
            timers_wake.clone(),
            stop.clone(),
        );
        async move {
            timers::run(store, SystemClock, settings, timers_wake, relay_wake, stop)
                .await
                .map_err(Error::from)
        }
    });
    tasks.spawn({
        let (store, settings, owner, bulk_wake, stop) = (
            store.clone(),
            settings.bulk,
            settings.instance,
            bulk_wake.clone(),
            stop.clone(),
        );
        async move {
            bulk::run(store, SystemClock, settings, owner, bulk_wake, stop)
                .await
                .map_err(Error::from)
        }
    });
    tasks.spawn(listen(
        store,
        Wakes {
            relay: relay_wake,
            timers: timers_wake,
            bulk: bulk_wake,
        },
        stop.clone(),
    ));
    tracing::info!(prefix = settings.topology.prefix(), "runtime started");

    let mut outcome = Ok(());
    while let Some(finished) = tasks.join_next().await {
        let result = match finished {
            Ok(result) => result,
            Err(error) => Err(Error::TaskFailed(error.to_string())),
        };
        let result = match result {
            // A task only returns on its own at shutdown.
            Ok(()) if !stop.is_cancelled() => Err(Error::TaskFailed("a task stopped early".into())),
            other => other,
        };
        if let Err(error) = result {
            if outcome.is_ok() {
                outcome = Err(error);
            }
            stop.cancel();
        }
    }
    // A broker that does not answer must not hold up shutdown.
    let closing = connection.close(200, "shutting down".into());
    if tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .is_err()
    {
        tracing::warn!("the broker did not acknowledge closing the connection");
    }
    outcome
}

/// Connects, declares the topology and opens the relay's and the
/// consumer's channels.
async fn connect(settings: &Settings) -> Result<(Connection, [lapin::Channel; 2]), Error> {
    let broker = |doing| move |source| Error::Broker { doing, source };
    let connection = Connection::connect(&settings.amqp_url, ConnectionProperties::default())
        .await
        .map_err(broker("connecting"))?;
    let declaring = connection
        .create_channel()
        .await
        .map_err(broker("opening a channel"))?;
    settings.topology.declare(&declaring).await?;
    let relay = connection
        .create_channel()
        .await
        .map_err(broker("opening the relay channel"))?;
    let consumer = connection
        .create_channel()
        .await
        .map_err(broker("opening the consumer channel"))?;
    Ok((connection, [relay, consumer]))
}

/// Runs the runtime until shutdown, reconnecting after failures (a broker
/// restart, a database outage) with a capped backoff. Work is never lost in
/// between: it waits in Postgres and in the broker's durable queues.
pub async fn serve(store: Store, settings: Settings, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        match run(store.clone(), &settings, shutdown.clone()).await {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(error) => {
                tracing::error!(%error, retry_in = ?backoff, "runtime stopped; restarting");
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Who to wake when a commit announces work.
struct Wakes {
    relay: Arc<Notify>,
    timers: Arc<Notify>,
    bulk: Arc<Notify>,
}

/// Forwards commits (NOTIFY, this process's and others') to the relay, the
/// timers and the bulk runner.
async fn listen(store: Store, wakes: Wakes, shutdown: CancellationToken) -> Result<(), Error> {
    let mut listener = PgListener::connect_with(store.pool())
        .await
        .map_err(Error::Listen)?;
    listener
        .listen_all([OUTBOX_CHANNEL, TIMERS_CHANNEL, BULK_CHANNEL])
        .await
        .map_err(Error::Listen)?;
    loop {
        let notification = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            notification = listener.recv() => notification.map_err(Error::Listen)?,
        };
        match notification.channel() {
            OUTBOX_CHANNEL => wakes.relay.notify_one(),
            BULK_CHANNEL => wakes.bulk.notify_one(),
            _ => wakes.timers.notify_one(),
        }
    }
}
