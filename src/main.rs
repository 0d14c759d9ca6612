//! `q2c`: the quote-to-cash workflow orchestrator.

mod client;
mod salesforce;
mod settings;
mod workflows;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use q2c_contract::Topology;
use q2c_core::definition::Definition;
use q2c_runtime::crash::CrashSwitch;
use q2c_store::Store;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

/// Quote-to-cash workflow orchestrator: Salesforce CPQ to ERP, billing and
/// payments, as durable sagas.
#[derive(Debug, Parser)]
#[command(name = "q2c", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the workflow definitions and print what each one runs.
    Check {
        /// Directory of `*.toml` workflow definitions.
        #[arg(long, env = "Q2C_WORKFLOWS_DIR", default_value = "workflows")]
        workflows: PathBuf,
    },
    /// Apply the database schema (DATABASE_URL).
    Migrate,
    /// Run the orchestrator: the HTTP API, and relaying commands, applying
    /// replies and firing timers.
    Serve {
        /// Directory of `*.toml` workflow definitions.
        #[arg(long, env = "Q2C_WORKFLOWS_DIR", default_value = "workflows")]
        workflows: PathBuf,
        /// Do not apply the database schema at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Run simulated ERP, billing, payment and Salesforce-status connectors
    /// that speak the message contract (AMQP_URL, Q2C_AMQP_PREFIX).
    Sim(SimArgs),
    /// Measure the orchestrator end to end: a `q2c serve` of its own, the
    /// simulated connectors answering at once, workflows posted to the
    /// intake; figures printed only if every workflow ended right, every
    /// effect happened once and durability is on. Needs DATABASE_URL (a
    /// role that may create databases: the run gets one of its own) and
    /// AMQP_URL. Build with --release for figures worth reading.
    Bench {
        /// Directory of `*.toml` workflow definitions.
        #[arg(long, env = "Q2C_WORKFLOWS_DIR", default_value = "workflows")]
        workflows_dir: PathBuf,
        #[command(flatten)]
        args: q2c_bench::BenchArgs,
    },
    /// Run a connector against a real system (Q2C_SALESFORCE_*, AMQP_URL).
    Connect {
        #[command(subcommand)]
        system: ConnectCommand,
    },
    /// A local Salesforce for development and tests: the Pub/Sub API, the
    /// OAuth token endpoint, a console to publish events, fault switches.
    #[command(subcommand, name = "local-salesforce")]
    LocalSalesforce(q2c_local_salesforce::Command),
    /// Salesforce event streams.
    Salesforce {
        #[command(subcommand)]
        command: SalesforceCommand,
    },
    /// API tokens: make one, or turn one into the entry that configures it
    /// (for Q2C_API_TOKENS or Q2C_API_TOKENS_FILE). Roles: ingest, viewer,
    /// operator, admin.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Find, read and repair workflows through the running server's API
    /// (Q2C_API_URL; token from --token, Q2C_CLI_TOKEN or Q2C_API_TOKEN).
    Workflows {
        #[command(flatten)]
        connection: client::http::Connection,
        #[command(subcommand)]
        command: client::workflows::Command,
    },
    /// Bulk actions through the API: a dry run, then a run of exactly its
    /// list (admin tokens).
    Bulk {
        #[command(flatten)]
        connection: client::http::Connection,
        #[command(subcommand)]
        command: client::bulk::Command,
    },
    /// Dead letters through the API: list, show, replay, discard (admin
    /// tokens).
    #[command(name = "dead-letters")]
    DeadLetters {
        #[command(flatten)]
        connection: client::http::Connection,
        #[command(subcommand)]
        command: client::dead_letters::Command,
    },
    /// The audit trail of operator actions through the API (admin tokens).
    Audit {
        #[command(flatten)]
        connection: client::http::Connection,
        #[command(subcommand)]
        command: client::audit::Command,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a fresh random token and the entry that configures it.
    New {
        /// What the token is called in logs and the audit trail, e.g. `ci`.
        name: String,
        /// ingest, viewer, operator or admin.
        role: String,
    },
    /// Read a token from stdin and print the entry that configures it.
    Hash {
        /// What the token is called in logs and the audit trail, e.g. `ci`.
        name: String,
        /// ingest, viewer, operator or admin.
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConnectCommand {
    /// Answer `salesforce.report_status` commands by writing each
    /// workflow's outcome to Salesforce over REST (run `q2c sim --without
    /// salesforce` beside it).
    Salesforce,
}

#[derive(Debug, Subcommand)]
enum SalesforceCommand {
    /// Show or move where q2c stands in a topic's event stream.
    Position {
        #[command(subcommand)]
        command: PositionCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PositionCommand {
    /// Print a topic's stored position and the moves operators made.
    Show {
        /// e.g. /event/Q2C_Quote_Accepted__e
        topic: String,
    },
    /// Move a topic's position: EARLIEST, LATEST, or a replay id in hex.
    /// The move is recorded with who made it.
    Set {
        /// e.g. /event/Q2C_Quote_Accepted__e
        topic: String,
        /// EARLIEST, LATEST, or a replay id in hex.
        position: String,
    },
}

/// How the simulated connectors behave.
#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Connectors to leave out, e.g. `--without salesforce` when a real
    /// Salesforce connector reports statuses.
    #[arg(long, value_delimiter = ',')]
    without: Vec<String>,
    /// Added before every reply, e.g. `50ms`.
    #[arg(long, env = "Q2C_SIM_LATENCY", default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: std::time::Duration,
    /// Share of commands answered with a retryable failure (0 to 1).
    #[arg(long, env = "Q2C_SIM_FAILURE_RATE", default_value_t = 0.0)]
    failure_rate: f64,
    /// Leave the first attempt of every command unanswered (a timeout).
    #[arg(long, env = "Q2C_SIM_IGNORE_FIRST_ATTEMPT")]
    ignore_first_attempt: bool,
    /// Seed for the failure draws, for repeatable runs.
    #[arg(long, env = "Q2C_SIM_SEED")]
    seed: Option<u64>,
    /// Append every delivery, effect and reply to this JSON Lines file.
    #[arg(long, env = "Q2C_SIM_LEDGER")]
    ledger: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    q2c_salesforce_auth::install_crypto_provider();
    let outcome = match cli.command {
        Command::Check { workflows } => check(&workflows),
        Command::Migrate => with_runtime(migrate()),
        Command::Serve {
            workflows,
            no_migrate,
        } => with_runtime(serve(workflows, no_migrate)),
        Command::Sim(args) => with_runtime(sim(args)),
        Command::Bench {
            workflows_dir,
            args,
        } => with_runtime_logging(bench(workflows_dir, args), "warn"),
        Command::Connect {
            system: ConnectCommand::Salesforce,
        } => with_runtime(connect_salesforce()),
        Command::LocalSalesforce(command) => with_runtime(async {
            q2c_local_salesforce::run(command)
                .await
                .map_err(anyhow::Error::from)
        }),
        Command::Salesforce {
            command: SalesforceCommand::Position { command },
        } => with_runtime(position(command)),
        Command::Token { command } => token(command),
        Command::Workflows {
            connection,
            command,
        } => api_client(&connection, client::Command::Workflows(command)),
        Command::Bulk {
            connection,
            command,
        } => api_client(&connection, client::Command::Bulk(command)),
        Command::DeadLetters {
            connection,
            command,
        } => api_client(&connection, client::Command::DeadLetters(command)),
        Command::Audit {
            connection,
            command,
        } => api_client(&connection, client::Command::Audit(command)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("q2c: {error:#}");
            // The API client's failures have exit codes scripts rely on.
            error
                .downcast_ref::<client::Error>()
                .map_or(ExitCode::FAILURE, |error| ExitCode::from(error.exit_code()))
        }
    }
}

/// Runs an API client command on a small runtime of its own, without
/// logging, so stdout and stderr carry only what the command says.
fn api_client(
    connection: &client::http::Connection,
    command: client::Command,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(client::run(connection, command))?;
    Ok(())
}

fn with_runtime(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    with_runtime_logging(work, "info")
}

/// Runs `work` on a multi-threaded runtime, logging at `default_level`
/// unless RUST_LOG says otherwise.
fn with_runtime_logging(
    work: impl Future<Output = anyhow::Result<()>>,
    default_level: &str,
) -> anyhow::Result<()> {
    init_logging(default_level);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(work)
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let json = settings::optional("Q2C_LOG_FORMAT").is_some_and(|format| format == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn check(directory: &Path) -> anyhow::Result<()> {
    let definitions = workflows::load_dir(directory).context("Q2C_WORKFLOWS_DIR")?;
    for (path, definition) in &definitions {
        let steps: Vec<&str> = definition
            .steps()
            .iter()
            .map(|step| step.name.as_str())
            .collect();
        println!(
            "{}: workflow `{}` ({} steps: {}), sha256 {}",
            path.display(),
            definition.name(),
            steps.len(),
            steps.join(" → "),
            definition.hash()
        );
    }
    println!("{} workflow definition(s) valid", definitions.len());
    Ok(())
}

/// Registers every counter at zero, so that the first event of a series is
/// seen by `rate()` and `increase()` like any other.
fn register_metrics(intake: &Definition) {
    for name in [
        "q2c_workflows_started_total",
        "q2c_replies_applied_total",
        "q2c_dead_letters_total",
        "q2c_timers_fired_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for (action, result) in [
        ("replay", "applied"),
        ("replay", "not_allowed"),
        ("replay", "failed"),
        ("discard", "applied"),
        ("discard", "not_allowed"),
    ] {
        metrics::counter!("q2c_dead_letter_actions_total", "action" => action, "result" => result)
            .absolute(0);
    }
    for outcome in [
        "completed",
        "compensated",
        "failed",
        "cancelled",
        "terminated",
    ] {
        metrics::counter!("q2c_workflows_finished_total", "outcome" => outcome).absolute(0);
    }
    for step in intake.steps().iter().filter(|step| step.deadline.is_some()) {
        metrics::counter!("q2c_deadline_escalations_total", "step" => step.name.clone())
            .absolute(0);
    }
    metrics::counter!("q2c_late_replies_total").absolute(0);
}

/// Announces readiness; written whole under a temporary name and renamed, so
/// a reader never sees half of it.
fn write_ready_file(path: &Path, content: &serde_json::Value) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, format!("{content}\n"))
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("Q2C_READY_FILE: cannot write {}", path.display()))
}

/// The broker's URL and the topology of this deployment's prefix.
fn broker_settings() -> anyhow::Result<(String, Topology)> {
    let amqp_url = settings::required(
        "AMQP_URL",
        "set it to a RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f",
    )?;
    amqp_url
        .parse::<lapin::uri::AMQPUri>()
        .map_err(|error| settings::invalid("AMQP_URL", format!("not an AMQP URL: {error}")))?;
    let prefix = settings::optional("Q2C_AMQP_PREFIX").unwrap_or_default();
    let topology =
        Topology::new(&prefix).map_err(|error| settings::invalid("Q2C_AMQP_PREFIX", error))?;
    Ok((amqp_url, topology))
}

/// How long a pooled connection may sit idle and still be used without a
/// check first.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(1);

async fn connect() -> anyhow::Result<sqlx::PgPool> {
    let url = settings::required(
        "DATABASE_URL",
        "set it to a Postgres URL, e.g. postgres://q2c:q2c@127.0.0.1:5432/q2c (deploy/services.sh prints one)",
    )?;
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(std::time::Duration::from_secs(5))
        // A connection in steady use is known to work: pinging it before
        // each transaction would add a round trip to every one of them.
        // One left idle for a while may have been cut (a restart, a
        // failover) and is checked first, so it is replaced rather than
        // failing the work given to it.
        .test_before_acquire(false)
        .before_acquire(|connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for > IDLE_BEFORE_PING {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
        .connect(&url)
        .await
        .with_context(|| "DATABASE_URL: cannot connect to Postgres")
}

async fn migrate() -> anyhow::Result<()> {
    let pool = connect().await?;
    q2c_store::migrate(&pool).await?;
    tracing::info!("database schema is up to date");
    Ok(())
}

async fn serve(directory: PathBuf, no_migrate: bool) -> anyhow::Result<()> {
    let definitions = workflows::load_dir(&directory).context("Q2C_WORKFLOWS_DIR")?;
    for (path, definition) in &definitions {
        check_routes(path, definition)?;
    }
    let intake_name =
        settings::optional("Q2C_INTAKE_WORKFLOW").unwrap_or_else(|| "quote-to-cash".into());
    let intake = definitions
        .iter()
        .find(|(_, definition)| definition.name() == intake_name)
        .map(|(_, definition)| Arc::new(definition.clone()))
        .ok_or_else(|| {
            settings::invalid(
                "Q2C_INTAKE_WORKFLOW",
                format!(
                    "no workflow named `{intake_name}` in {}",
                    directory.display()
                ),
            )
        })?;
    let tokens = settings::api_tokens()?;
    // Names and roles only: `Tokens` never prints a token or a hash.
    tracing::info!(?tokens, "API tokens");
    let http_address =
        settings::optional("Q2C_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
    http_address
        .parse::<std::net::SocketAddr>()
        .map_err(|error| {
            settings::invalid(
                "Q2C_HTTP_ADDR",
                format!("`{http_address}` is not host:port: {error}"),
            )
        })?;
    let (amqp_url, topology) = broker_settings()?;
    let crash =
        CrashSwitch::from_env().map_err(|error| settings::invalid("Q2C_CRASH_AT", error))?;
    let mut bulk_limits = q2c_http::bulk::BulkLimits::default();
    if let Some(max) = settings::optional("Q2C_BULK_MAX_WORKFLOWS") {
        bulk_limits.max_workflows =
            max.parse::<i64>()
                .ok()
                .filter(|max| *max > 0)
                .ok_or_else(|| {
                    settings::invalid("Q2C_BULK_MAX_WORKFLOWS", "must be a positive whole number")
                })?;
    }
    for (name, rate) in [
        ("Q2C_BULK_RATE", &mut bulk_limits.default_rate),
        ("Q2C_BULK_MAX_RATE", &mut bulk_limits.max_rate),
    ] {
        if let Some(value) = settings::optional(name) {
            *rate = value
                .parse::<f64>()
                .ok()
                .filter(|rate| rate.is_finite() && *rate > 0.0)
                .ok_or_else(|| {
                    settings::invalid(name, "must be a number of workflows per second above 0")
                })?;
        }
    }
    if bulk_limits.default_rate > bulk_limits.max_rate {
        return Err(settings::invalid("Q2C_BULK_RATE", "must not exceed Q2C_BULK_MAX_RATE").into());
    }
    let mut bulk = q2c_runtime::bulk::BulkSettings::default();
    if let Some(lease) = settings::optional("Q2C_BULK_LEASE") {
        bulk.lease = humantime::parse_duration(&lease)
            .map_err(|error| settings::invalid("Q2C_BULK_LEASE", error))?;
    }
    let mut relay = q2c_runtime::relay::RelaySettings::default();
    if let Some(lease) = settings::optional("Q2C_OUTBOX_LEASE") {
        relay.lease = humantime::parse_duration(&lease)
            .map_err(|error| settings::invalid("Q2C_OUTBOX_LEASE", error))?;
    }
    let ready_file = settings::optional_path("Q2C_READY_FILE");
    let counts_every = match settings::optional("Q2C_COUNTS_REFRESH") {
        Some(every) => humantime::parse_duration(&every)
            .map_err(|error| settings::invalid("Q2C_COUNTS_REFRESH", error))?,
        None => std::time::Duration::from_secs(15),
    };
    if counts_every.is_zero() {
        return Err(settings::invalid("Q2C_COUNTS_REFRESH", "must be longer than zero").into());
    }
    let subscriber_settings = salesforce::subscriber_settings()?;

    let pool = connect().await?;
    if !no_migrate {
        q2c_store::migrate(&pool).await?;
    }
    let store = Store::new(pool);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    register_metrics(&intake);
    let (listener, address) = q2c_http::bind(&http_address).await.map_err(|error| {
        settings::invalid(
            "Q2C_HTTP_ADDR",
            format!("cannot listen on {http_address}: {error}"),
        )
    })?;

    let (ready, mut is_ready) = tokio::sync::watch::channel(false);
    let runtime_settings = q2c_runtime::Settings {
        amqp_url: amqp_url.clone(),
        topology,
        relay,
        consumer: Default::default(),
        timers: Default::default(),
        bulk,
        crash,
        instance: uuid::Uuid::now_v7(),
        ready: Arc::new(ready),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let subscriber = match subscriber_settings {
        Some(settings) => Some(
            q2c_subscriber::Subscriber::new(settings, store.clone(), intake.clone())
                .context("the Salesforce subscriber")?,
        ),
        None => {
            tracing::info!(
                "no Salesforce subscriber (Q2C_SALESFORCE_PUBSUB_URL is not set); events arrive over HTTP only"
            );
            None
        }
    };
    let state = q2c_http::AppState {
        store: store.clone(),
        definition: intake,
        tokens,
        amqp_url,
        metrics,
        counts: q2c_http::counts::LiveCounts::default(),
        bulk: bulk_limits,
        salesforce: subscriber
            .as_ref()
            .map(q2c_subscriber::Subscriber::subscriptions),
    };
    let subscriber = subscriber.map(|subscriber| tokio::spawn(subscriber.run(shutdown.clone())));
    tokio::spawn(
        state
            .counts
            .clone()
            .refresh_every(store.clone(), counts_every, shutdown.clone()),
    );
    let http = tokio::spawn(q2c_http::serve(listener, state, shutdown.clone()));
    let runtime = tokio::spawn(q2c_runtime::serve(
        store,
        runtime_settings,
        shutdown.clone(),
    ));
    tracing::info!(workflows = definitions.len(), %address, "q2c serving");

    tokio::select! {
        _ = is_ready.wait_for(|ready| *ready) => {
            if let Some(path) = &ready_file {
                let content = serde_json::json!({"pid": std::process::id(), "http": address.to_string()});
                write_ready_file(path, &content)?;
            }
        }
        () = shutdown.cancelled() => {}
    }
    runtime.await.context("the runtime task")?;
    if let Some(subscriber) = subscriber {
        subscriber.await.context("the Salesforce subscriber task")?;
    }
    // Requests in progress get a little time to finish; a client that holds
    // a connection open must not hold up the exit.
    match tokio::time::timeout(std::time::Duration::from_secs(10), http).await {
        Ok(http) => http
            .context("the HTTP server task")?
            .context("the HTTP server")?,
        Err(_) => tracing::warn!("HTTP connections still open after 10s; exiting anyway"),
    }
    tracing::info!("q2c stopped");
    Ok(())
}

async fn position(command: PositionCommand) -> anyhow::Result<()> {
    let store = Store::new(connect().await?);
    match command {
        PositionCommand::Show { topic } => {
            match store.position(&topic).await? {
                Some(position) => println!("{topic}: {position}"),
                None => println!("{topic}: no stored position"),
            }
            for change in store.position_moves(&topic).await? {
                let from = change
                    .from
                    .map_or_else(|| "none".to_owned(), |from| from.to_string());
                println!(
                    "  moved {} from {from} to {} by {}",
                    change.moved_at.to_rfc3339(),
                    change.to,
                    change.moved_by
                );
            }
        }
        PositionCommand::Set { topic, position } => {
            let target = q2c_store::positions::Position::parse(&position)
                .map_err(|problem| anyhow::anyhow!("position: {problem}"))?;
            let who = settings::optional("USER").unwrap_or_else(|| "unknown".into());
            let change = store
                .move_position(&topic, &target, &who, chrono::Utc::now())
                .await?;
            let from = change
                .from
                .map_or_else(|| "none".to_owned(), |from| from.to_string());
            println!("{topic}: moved from {from} to {} by {who}", change.to);
        }
    }
    Ok(())
}

/// `q2c token new|hash`: the entry line is computed here, so operators
/// never hash tokens by hand, and a new token is printed once, never stored.
fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::New { name, role } => {
            let role: q2c_http::auth::Role = role.parse().context("role")?;
            let token = q2c_http::auth::new_token()?;
            let entry = q2c_http::auth::entry_line(&name, role, &token)?;
            println!("token: {token}");
            println!("entry: {entry}");
        }
        TokenCommand::Hash { name, role } => {
            let role: q2c_http::auth::Role = role.parse().context("role")?;
            let token = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
            let token = token.trim();
            if token.is_empty() {
                anyhow::bail!(
                    "no token on stdin; e.g. `printf %s \"$TOKEN\" | q2c token hash {name} {role}`"
                );
            }
            println!("{}", q2c_http::auth::entry_line(&name, role, token)?);
        }
    }
    Ok(())
}

async fn connect_salesforce() -> anyhow::Result<()> {
    let (amqp_url, topology) = broker_settings()?;
    let settings = salesforce::connector_settings(amqp_url, topology)?;
    let metrics_address =
        settings::optional("Q2C_METRICS_ADDR").unwrap_or_else(|| "127.0.0.1:9102".into());
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    q2c_salesforce_connector::connector::register_metrics();
    let (listener, address) = q2c_http::bind(&metrics_address).await.map_err(|error| {
        settings::invalid(
            "Q2C_METRICS_ADDR",
            format!("cannot listen on {metrics_address}: {error}"),
        )
    })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    let served = tokio::spawn(q2c_http::serve_metrics(listener, metrics, shutdown.clone()));
    if let Some(path) = settings::optional_path("Q2C_READY_FILE") {
        let content =
            serde_json::json!({"pid": std::process::id(), "metrics": address.to_string()});
        write_ready_file(&path, &content)?;
    }
    tracing::info!(%address, "Salesforce connector starting; metrics at /metrics");
    // Losing the broker loses nothing (unacked commands are redelivered);
    // the connector connects again after a pause until it is stopped.
    let outcome = loop {
        match q2c_salesforce_connector::connector::run(settings.clone(), shutdown.clone()).await {
            Err(q2c_salesforce_connector::connector::Error::Broker { doing, source })
                if !shutdown.is_cancelled() =>
            {
                tracing::warn!(doing, error = %source, "lost RabbitMQ; connecting again in 2s");
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                }
            }
            other => break other,
        }
    };
    shutdown.cancel();
    served.await.context("the metrics server task")??;
    outcome?;
    tracing::info!("Salesforce connector stopped");
    Ok(())
}

/// `q2c bench`: runs it and prints the report, or says why it printed no
/// figures.
async fn bench(workflows_dir: PathBuf, args: q2c_bench::BenchArgs) -> anyhow::Result<()> {
    let definitions = workflows::load_dir(&workflows_dir).context("Q2C_WORKFLOWS_DIR")?;
    let intake_name =
        settings::optional("Q2C_INTAKE_WORKFLOW").unwrap_or_else(|| "quote-to-cash".into());
    let Some((_, definition)) = definitions
        .iter()
        .find(|(_, definition)| definition.name() == intake_name)
    else {
        return Err(settings::invalid(
            "Q2C_INTAKE_WORKFLOW",
            format!(
                "no workflow named `{intake_name}` in {}",
                workflows_dir.display()
            ),
        )
        .into());
    };
    let database_url = settings::required(
        "DATABASE_URL",
        "set it to a Postgres URL whose role may create databases",
    )?;
    let (amqp_url, _) = broker_settings()?;
    let exe = std::env::current_exe().context("finding the q2c executable")?;
    let target = q2c_bench::Target {
        exe: &exe,
        workflows_dir: &workflows_dir,
        definition,
        database_url: &database_url,
        amqp_url: &amqp_url,
    };
    let report = q2c_bench::run(&args, &target).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

async fn sim(args: SimArgs) -> anyhow::Result<()> {
    let (amqp_url, topology) = broker_settings()?;
    let mut sim = q2c_sim::SimSettings::new(amqp_url, topology)
        .without(&args.without)
        .context("--without")?;
    sim.latency = args.latency;
    sim.failure_rate = args.failure_rate;
    sim.ignore_first_attempt = args.ignore_first_attempt;
    sim.seed = args.seed;
    sim.ledger = args.ledger;
    sim.validate()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    tracing::info!(connectors = ?sim.connectors, "simulated connectors starting");
    let running = q2c_sim::Sim::start(sim).await?;
    if let Some(path) = settings::optional_path("Q2C_READY_FILE") {
        write_ready_file(&path, &serde_json::json!({"pid": std::process::id()}))?;
    }
    running.run_until(shutdown).await?;
    tracing::info!("simulated connectors stopped");
    Ok(())
}

/// Every command a definition sends must reach a connector's queue.
fn check_routes(path: &Path, definition: &Definition) -> anyhow::Result<()> {
    for step in definition.steps() {
        let commands = std::iter::once(&step.command).chain(step.compensation.as_ref());
        for command in commands {
            if Topology::domain_of(&command.command_type).is_none() {
                anyhow::bail!(
                    "{}: step `{}`: command `{}` routes to no connector queue (known domains: {})",
                    path.display(),
                    step.name,
                    command.command_type,
                    q2c_contract::DOMAINS.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// The first SIGTERM or Ctrl-C asks for a graceful stop; a second one
/// exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    for round in 0.. {
        if wait_for_signal().await.is_err() {
            tracing::warn!("cannot listen for signals");
            return;
        }
        if round == 0 {
            tracing::info!("shutting down; signal again to exit at once");
            shutdown.cancel();
        } else {
            std::process::exit(130);
        }
    }
}

async fn wait_for_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
