//! `q2c`: the quote-to-cash workflow orchestrator.

mod settings;
mod workflows;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Run the orchestrator: relay commands, apply replies, fire timers.
    Serve {
        /// Directory of `*.toml` workflow definitions.
        #[arg(long, env = "Q2C_WORKFLOWS_DIR", default_value = "workflows")]
        workflows: PathBuf,
        /// Do not apply the database schema at start.
        #[arg(long)]
        no_migrate: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Check { workflows } => check(&workflows),
        Command::Migrate => with_runtime(migrate()),
        Command::Serve {
            workflows,
            no_migrate,
        } => with_runtime(serve(workflows, no_migrate)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("q2c: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn with_runtime(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(work)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = settings::optional("Q2C_LOG_FORMAT").is_some_and(|format| format == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn check(directory: &Path) -> anyhow::Result<()> {
    let definitions = workflows::load_dir(directory)?;
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

async fn connect() -> anyhow::Result<sqlx::PgPool> {
    let url = settings::required(
        "DATABASE_URL",
        "set it to a Postgres URL, e.g. postgres://q2c:q2c@127.0.0.1:5432/q2c (deploy/services.sh prints one)",
    )?;
    PgPoolOptions::new()
        .max_connections(16)
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
    let definitions = workflows::load_dir(&directory)?;
    for (path, definition) in &definitions {
        check_routes(path, definition)?;
    }
    let amqp_url = settings::required(
        "AMQP_URL",
        "set it to a RabbitMQ URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2f",
    )?;
    let prefix = settings::optional("Q2C_AMQP_PREFIX").unwrap_or_default();
    let topology =
        Topology::new(&prefix).map_err(|error| settings::invalid("Q2C_AMQP_PREFIX", error))?;
    let crash =
        CrashSwitch::from_env().map_err(|error| settings::invalid("Q2C_CRASH_AT", error))?;

    let pool = connect().await?;
    if !no_migrate {
        q2c_store::migrate(&pool).await?;
    }
    let mut relay = q2c_runtime::relay::RelaySettings::default();
    if let Some(lease) = settings::optional("Q2C_OUTBOX_LEASE") {
        relay.lease = humantime::parse_duration(&lease)
            .map_err(|error| settings::invalid("Q2C_OUTBOX_LEASE", error))?;
    }
    let settings = q2c_runtime::Settings {
        amqp_url,
        topology,
        relay,
        consumer: Default::default(),
        timers: Default::default(),
        crash,
        ready_file: settings::optional_path("Q2C_READY_FILE"),
    };

    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    tracing::info!(workflows = definitions.len(), "q2c serving");
    q2c_runtime::serve(Store::new(pool), settings, shutdown).await;
    tracing::info!("q2c stopped");
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
