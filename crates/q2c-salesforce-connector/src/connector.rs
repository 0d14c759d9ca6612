//! `q2c connect salesforce`: consumes `salesforce.report_status` commands
//! from the Salesforce connector's queue and answers each with a reply once
//! the status is written (or has failed). A command is acked only after the
//! broker has confirmed its reply; a command delivered again is written
//! again, which the org's ordering rule makes harmless.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use q2c_contract::{Envelope, Failure, ReplyKind, Topology};
use q2c_salesforce_auth::{Credentials, Tokens};
use tokio_util::sync::CancellationToken;

use crate::limits::Reserve;
use crate::mapping::{Fields, Report, Target, write};
use crate::writer::{Writer, Written};

/// The command this connector answers.
pub const REPORT_STATUS: &str = "salesforce.report_status";

/// Everything the connector is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// RabbitMQ.
    pub amqp_url: String,
    /// Exchange and queue names.
    pub topology: Topology,
    /// The org's login URL.
    pub login_url: String,
    /// How to log in.
    pub credentials: Credentials,
    /// REST API version, e.g. `v62.0`.
    pub api_version: String,
    /// Where statuses go (several: one composite request).
    pub targets: Vec<Target>,
    /// Record fields (Opportunity, upserted object).
    pub record_fields: Fields,
    /// Platform event fields.
    pub event_fields: Fields,
    /// The share of the daily API budget left to others.
    pub reserve: Reserve,
    /// How long one command may take before it is answered as a retryable
    /// failure: less than the step's timeout.
    pub write_within: Duration,
}

/// Why the connector stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker failed.
    #[error("RabbitMQ, {doing}: {source}")]
    Broker {
        /// What was being done.
        doing: &'static str,
        /// The broker's error.
        source: lapin::Error,
    },
    /// The topology could not be declared.
    #[error(transparent)]
    Topology(#[from] q2c_contract::topology::Error),
    /// The HTTP client could not be built.
    #[error("the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A setting is unusable.
    #[error("{0}")]
    Settings(String),
    /// A reply was not published; its command stays unacked.
    #[error(transparent)]
    Reply(#[from] q2c_contract::reply::PublishError),
}

fn broker(doing: &'static str) -> impl FnOnce(lapin::Error) -> Error {
    move |source| Error::Broker { doing, source }
}

/// Registers the connector's counters at zero, so the first call or error
/// of a series counts in `rate()` like any other.
pub fn register_metrics() {
    metrics::counter!("q2c_salesforce_api_calls_total").absolute(0);
    for outcome in ["written", "retryable", "definitive"] {
        metrics::counter!("q2c_salesforce_writes_total", "outcome" => outcome).absolute(0);
    }
}

/// Runs the connector until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), Error> {
    if settings.targets.is_empty() {
        return Err(Error::Settings("no target to write statuses to".into()));
    }
    let tokens = Arc::new(
        Tokens::new(&settings.login_url, settings.credentials.clone())
            .map_err(|error| Error::Settings(error.to_string()))?,
    );
    let writer = Writer::new(
        tokens,
        &settings.api_version,
        &settings.record_fields.sequence,
        settings.reserve,
    )?;
    let connection = Connection::connect(&settings.amqp_url, ConnectionProperties::default())
        .await
        .map_err(broker("connecting"))?;
    let declare = connection
        .create_channel()
        .await
        .map_err(broker("opening a channel"))?;
    settings.topology.declare(&declare).await?;
    let consume = connection
        .create_channel()
        .await
        .map_err(broker("opening a channel"))?;
    consume
        .basic_qos(1, BasicQosOptions::default())
        .await
        .map_err(broker("setting the prefetch"))?;
    let publish = connection
        .create_channel()
        .await
        .map_err(broker("opening a channel"))?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker("enabling publisher confirms"))?;
    let mut consumer = consume
        .basic_consume(
            settings
                .topology
                .command_queue("salesforce")
                .as_str()
                .into(),
            format!("q2c-connect-salesforce-{}", uuid::Uuid::now_v7())
                .as_str()
                .into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(broker("consuming commands"))?;
    tracing::info!(queue = %settings.topology.command_queue("salesforce"), targets = ?settings.targets, "Salesforce connector consuming");
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(source)) => return Err(Error::Broker { doing: "receiving a command", source }),
                None => break,
            },
        };
        handle(&settings, &writer, &publish, delivery).await?;
    }
    let _closing = connection.close(200, "shutting down".into()).await;
    Ok(())
}

/// Answers one command, then acks it.
async fn handle(
    settings: &Settings,
    writer: &Writer,
    publish: &Channel,
    delivery: Delivery,
) -> Result<(), Error> {
    let command = match Envelope::decode(&delivery.data) {
        Ok(command) => command,
        Err(error) => {
            tracing::error!(error = %error, "not a command envelope: rejected to the dead-letter queue");
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .map_err(broker("rejecting a message"))?;
            return Ok(());
        }
    };
    let started = Instant::now();
    let written = if command.message_type != REPORT_STATUS {
        Written::Definitive(format!(
            "the Salesforce connector does not handle `{}`",
            command.message_type
        ))
    } else {
        match Report::from_payload(&command.payload) {
            Ok(report) => {
                let writes: Vec<_> = settings
                    .targets
                    .iter()
                    .map(|target| {
                        let fields = match target {
                            Target::PlatformEvent { .. } => &settings.event_fields,
                            _ => &settings.record_fields,
                        };
                        write(&report, target, fields)
                    })
                    .collect();
                writer.write(&writes, started + settings.write_within).await
            }
            Err(error) => Written::Definitive(error.to_string()),
        }
    };
    metrics::histogram!("q2c_salesforce_write_seconds").record(started.elapsed().as_secs_f64());
    let outcome = match &written {
        Written::Done => "written",
        Written::Retryable(_) => "retryable",
        Written::Definitive(_) => "definitive",
    };
    metrics::counter!("q2c_salesforce_writes_total", "outcome" => outcome).increment(1);
    let (kind, payload) = match &written {
        Written::Done => (ReplyKind::Succeeded, serde_json::json!({})),
        Written::Retryable(reason) => (ReplyKind::Failed, failure(true, reason)),
        Written::Definitive(reason) => (ReplyKind::Failed, failure(false, reason)),
    };
    tracing::info!(workflow_id = %command.workflow_id, attempt = command.attempt, outcome = ?written, "status write answered");
    let reply = Envelope::reply_to(
        &command,
        kind,
        uuid::Uuid::now_v7(),
        chrono::Utc::now(),
        payload,
    );
    q2c_contract::reply::publish(publish, &settings.topology, &reply).await?;
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map_err(broker("acking a command"))?;
    Ok(())
}

fn failure(retryable: bool, reason: &str) -> serde_json::Value {
    serde_json::to_value(Failure {
        retryable,
        reason: reason.to_owned(),
    })
    .unwrap_or_default()
}
