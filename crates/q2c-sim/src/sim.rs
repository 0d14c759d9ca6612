//! Starting and stopping the simulator: one broker connection, the whole
//! topology declared, and one [`Connector`] per selected domain.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::connector::{Connector, Parts};
use crate::decision::Knobs;
use crate::ledger::{Ledger, LedgerEntry};
use crate::{Error, SimSettings};

/// How long closing the connection may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running simulator. Dropping it leaves it running until its runtime
/// stops; call [`Sim::shutdown`] to stop it cleanly.
pub struct Sim {
    ledger: Arc<Ledger>,
    stop: CancellationToken,
    supervisor: JoinHandle<Result<(), Error>>,
}

/// Runs the simulator until `shutdown` is cancelled (what `q2c sim` does).
/// Returns early with the error if the broker or the ledger fails.
pub async fn run(settings: SimSettings, shutdown: CancellationToken) -> Result<(), Error> {
    Sim::start(settings).await?.run_until(shutdown).await
}

impl Sim {
    /// Validates `settings`, connects, declares the topology and starts
    /// consuming; when it returns, every selected connector is consuming.
    pub async fn start(settings: SimSettings) -> Result<Sim, Error> {
        settings.validate()?;
        let domains = settings.domains()?;
        let ledger = Arc::new(Ledger::open(settings.ledger.as_deref())?);
        let connection = Connection::connect(&settings.amqp_url, ConnectionProperties::default())
            .await
            .map_err(broker("connecting"))?;
        let declare = channel(&connection, "opening a channel").await?;
        settings.topology.declare(&declare).await?;

        let knobs = Knobs {
            failure_rate: settings.failure_rate,
            ignore_first_attempt: settings.ignore_first_attempt,
        };
        let mut connectors = Vec::with_capacity(domains.len());
        for domain in domains {
            let consume = channel(&connection, "opening a consumer channel").await?;
            consume
                .basic_qos(settings.prefetch, BasicQosOptions::default())
                .await
                .map_err(broker("setting the prefetch"))?;
            let consumer = consume
                .basic_consume(
                    settings.topology.command_queue(domain).as_str().into(),
                    format!("q2c-sim-{domain}-{}", uuid::Uuid::now_v7())
                        .as_str()
                        .into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(broker("consuming commands"))?;
            let publish = channel(&connection, "opening a reply channel").await?;
            publish
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(broker("enabling publisher confirms"))?;
            connectors.push(Connector::new(Parts {
                domain,
                topology: settings.topology.clone(),
                consume,
                consumer,
                publish,
                ledger: ledger.clone(),
                knobs,
                latency: settings.latency,
                seed: settings.seed,
            }));
        }
        tracing::info!(
            prefix = settings.topology.prefix(),
            connectors = ?settings.connectors,
            latency = ?settings.latency,
            failure_rate = settings.failure_rate,
            ignore_first_attempt = settings.ignore_first_attempt,
            ledger = ?settings.ledger,
            "simulated connectors started"
        );

        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(connection, connectors, stop.clone()));
        Ok(Sim {
            ledger,
            stop,
            supervisor,
        })
    }

    /// Every delivery, effect and reply so far, in the order recorded.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.ledger.entries()
    }

    /// Every ledger entry recorded from now on, as it is recorded: for a
    /// driver that reacts to the connectors (the benchmark starts the next
    /// workflow when one reports its status). A receiver that falls far
    /// behind is told how many entries it missed.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LedgerEntry> {
        self.ledger.subscribe()
    }

    /// Stops consuming, finishes the deliveries in hand (their replies are
    /// published and acked), and closes the connection. Returns the error
    /// that stopped the simulator earlier, if one did.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop.cancel();
        joined(self.supervisor.await)
    }

    /// Runs until `shutdown` is cancelled, then stops as [`Sim::shutdown`];
    /// returns early with the error if the simulator fails first.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Sim {
            stop,
            mut supervisor,
            ..
        } = self;
        tokio::select! {
            () = shutdown.cancelled() => {
                stop.cancel();
                joined(supervisor.await)
            }
            finished = &mut supervisor => joined(finished),
        }
    }
}

/// Runs the connectors until `stop` or the first failure (which stops the
/// others), then closes the connection.
async fn supervise(
    connection: Connection,
    connectors: Vec<Connector>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let mut tasks = JoinSet::new();
    for connector in connectors {
        tasks.spawn(connector.run(stop.clone()));
    }
    let mut outcome = Ok(());
    while let Some(finished) = tasks.join_next().await {
        let result = finished.unwrap_or(Err(Error::Panicked("connector")));
        if let Err(error) = result {
            tracing::error!(%error, "a simulated connector failed; stopping the others");
            if outcome.is_ok() {
                outcome = Err(error);
            }
        }
        stop.cancel();
    }
    let closing = connection.close(200, "simulator stopping".into());
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::warn!("the broker did not acknowledge closing the connection");
    }
    tracing::info!("simulated connectors stopped");
    outcome
}

fn joined(finished: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    finished.unwrap_or(Err(Error::Panicked("supervisor")))
}

async fn channel(connection: &Connection, doing: &'static str) -> Result<Channel, Error> {
    connection.create_channel().await.map_err(broker(doing))
}

fn broker(doing: &'static str) -> impl Fn(lapin::Error) -> Error {
    move |source| Error::Broker { doing, source }
}
