//! `q2c bench`: the orchestrator end to end under load (intake over HTTP,
//! Postgres, RabbitMQ, simulated connectors answering at once), with its
//! figures read from what it committed, checked before they are printed,
//! and set beside the floors of the same database and broker.
//!
//! # Layout
//!
//! - [`environment`]: the run's own database and queues.
//! - [`durability`]: the settings the figures rest on.
//! - [`orchestrator`]: the `q2c serve` process under test.
//! - [`load`]: the closed-loop load and the serial one.
//! - [`figures`]: times from server timestamps, and percentiles.
//! - [`verify`]: every workflow ended right, every effect once.
//! - [`floors`]: the bare transaction and round trip, measured.
//! - [`report`]: the table and the JSON.

pub mod durability;
pub mod environment;
pub mod figures;
pub mod floors;
pub mod load;
pub mod orchestrator;
pub mod report;
pub mod scale;
pub mod verify;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use q2c_core::definition::Definition;
use q2c_sim::{LedgerEntry, LedgerEvent, Sim, SimSettings};
use sqlx::PgPool;
use uuid::Uuid;

use crate::durability::Durability;
use crate::environment::Environment;
use crate::load::Load;
use crate::orchestrator::{Launch, Orchestrator};
use crate::report::{Machine, Phase, Ratios, Report, RunShape};
use crate::verify::Stored;

pub use report::Report as BenchReport;

/// How Postgres (15) counts commits: a backend publishes its counts at
/// most once a second, and one that goes idle within a second of its last
/// report holds them for ten seconds. Counters are read this long after
/// the work they should include; the orchestrator's idle polling meanwhile
/// (its relay and timer loops, a few commits a second) is counted too.
const STATS_SETTLE: Duration = Duration::from_secs(11);

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Workflows in the throughput phase (0 skips it).
    #[arg(long, default_value_t = 2000)]
    pub workflows: u32,
    /// Workflows in flight at most in the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Workflows run first and left out of every figure.
    #[arg(long, default_value_t = 200)]
    pub warm_up: u32,
    /// Workflows run one at a time after the throughput phase, for latency
    /// without queueing (0 skips it).
    #[arg(long, default_value_t = 200)]
    pub serial: u32,
    /// Also measure the floors (bare transition transaction at 1 and 16
    /// clients, bare confirmed request/reply) and print ratios to them.
    #[arg(long)]
    pub floors: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The orchestrator's RUST_LOG during the run.
    #[arg(long, default_value = "warn")]
    pub orchestrator_log: String,
    /// Keep the run's database and queues for a look afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Instead: run the throughput phase beside 1,000 workflows waiting on
    /// a long timer, then beside this many, and compare the orchestrator's
    /// memory; time and explain the timer scan and operator queries.
    #[arg(long, value_name = "WAITING")]
    pub scale: Option<u64>,
}

/// What the bench runs against.
pub struct Target<'a> {
    /// The `q2c` executable (the one running the bench).
    pub exe: &'a Path,
    /// The directory of workflow definitions.
    pub workflows_dir: &'a Path,
    /// The definition the intake starts.
    pub definition: &'a Definition,
    /// A Postgres URL whose role may create databases.
    pub database_url: &'a str,
    /// The broker.
    pub amqp_url: &'a str,
}

/// Why a run printed no figures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work.
    #[error("{0}")]
    Setting(String),
    /// Postgres failed.
    #[error("Postgres failed while {doing}: {source}")]
    Database {
        /// What was being done.
        doing: &'static str,
        /// Its error.
        source: sqlx::Error,
    },
    /// RabbitMQ failed.
    #[error("RabbitMQ failed while {doing}: {source}")]
    Broker {
        /// What was being done.
        doing: &'static str,
        /// Its error.
        source: lapin::Error,
    },
    /// The simulated connectors failed.
    #[error("the simulated connectors failed: {0}")]
    Sim(#[from] q2c_sim::Error),
    /// HTTP to the orchestrator failed.
    #[error("HTTP failed while {doing}: {source}")]
    Http {
        /// What was being done.
        doing: &'static str,
        /// Its error.
        source: reqwest::Error,
    },
    /// A file or process failed.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done.
        doing: &'static str,
        /// Its error.
        source: std::io::Error,
    },
    /// `/proc` did not say what it should.
    #[error("cannot read {0}")]
    Proc(String),
    /// The orchestrator failed.
    #[error("the orchestrator {problem}; the end of its log:\n{log}")]
    Orchestrator {
        /// What went wrong.
        problem: String,
        /// The end of its log.
        log: String,
    },
    /// Something answered in a way the run cannot go on from.
    #[error("{0}")]
    Refused(String),
    /// Workflows stopped ending.
    #[error("{waiting} workflow(s) did not end within {after:?}")]
    Stalled {
        /// How many were still running.
        waiting: usize,
        /// How long the bench waited.
        after: Duration,
    },
    /// The bench fell behind the connectors' ledger.
    #[error("the bench missed {0} ledger entries; run with less concurrency")]
    LedgerLagged(u64),
    /// A task of the bench's failed.
    #[error("{0} failed")]
    Panicked(&'static str),
    /// A durability setting is off: no figures.
    #[error("no figures: durability is not at its safe settings:\n  - {}", .0.join("\n  - "))]
    Unsafe(Vec<String>),
    /// The run did not do what it should: no figures.
    #[error("no figures: the run did not do what it should:\n  - {}", .0.join("\n  - "))]
    Unverified(Vec<String>),
}

/// Runs the bench in a database and queues of its own, removed afterwards
/// unless `keep` is set.
pub async fn run(args: &BenchArgs, target: &Target<'_>) -> Result<Report, Error> {
    if args.concurrency == 0 {
        return Err(Error::Setting("--concurrency must be at least 1".into()));
    }
    if args.workflows == 0 && args.serial == 0 {
        return Err(Error::Setting(
            "nothing to measure: --workflows and --serial are both 0".into(),
        ));
    }
    if args.scale.is_some_and(|waiting| waiting < SCALE_SMALL) {
        return Err(Error::Setting(format!(
            "--scale must be at least {SCALE_SMALL}, the size it is compared with"
        )));
    }
    let environment = Environment::create(target.database_url, target.amqp_url).await?;
    let outcome = match args.scale {
        Some(waiting) => run_scale(&environment, args, target, waiting).await,
        None => run_in(&environment, args, target).await,
    };
    if args.keep {
        tracing::info!(
            database = environment.database,
            prefix = environment.topology.prefix(),
            "kept the run's database and queues"
        );
    } else {
        environment.remove().await;
    }
    outcome
}

/// The workflows of one measured phase and the counters around it.
struct Measured {
    ids: Vec<Uuid>,
    commits: i64,
    cpu_seconds: f64,
}

async fn run_in(
    environment: &Environment,
    args: &BenchArgs,
    target: &Target<'_>,
) -> Result<Report, Error> {
    let Prepared {
        pool,
        mut durability,
        machine,
        commands,
        last_reply,
        sim,
        mut tap,
    } = prepare(environment, target, 20).await?;
    let launch = launch(args, target);
    let mut orchestrator = Orchestrator::start(environment, &launch).await?;
    let mut load = Load::new(&orchestrator.api, &orchestrator.token, last_reply)?;
    let progress = progress_bar(args);

    let mut started = Vec::new();
    if args.warm_up > 0 {
        progress.set_message("warm-up");
        progress.set_length(u64::from(args.warm_up));
        progress.set_position(0);
        let ids = load
            .run(&mut tap, args.warm_up, args.concurrency, &progress)
            .await?;
        load.await_terminal(&pool, &ids).await?;
        started.extend(ids);
    }
    let mut throughput = None;
    // The counters where the last phase ended, if one did.
    let mut settled = None;
    if args.workflows > 0 {
        progress.set_message(format!("throughput, concurrency {}", args.concurrency));
        progress.set_length(u64::from(args.workflows));
        progress.set_position(0);
        let before = counters_before(environment, &orchestrator, &load).await?;
        let ids = load
            .run(&mut tap, args.workflows, args.concurrency, &progress)
            .await?;
        load.await_terminal(&pool, &ids).await?;
        let after = counters_after(environment, &orchestrator, &load).await?;
        settled = Some(after);
        started.extend(ids.iter().copied());
        throughput = Some(Measured {
            ids,
            commits: after.0 - before.0,
            cpu_seconds: after.1 - before.1,
        });
        orchestrator.check_running()?;
    }
    let mut serial = None;
    if args.serial > 0 {
        progress.set_message("serial");
        progress.set_length(u64::from(args.serial));
        progress.set_position(0);
        // The last phase's settled commits are where this one starts.
        let before = match settled {
            Some((commits, _)) => (commits, orchestrator.cpu_seconds()?),
            None => counters_before(environment, &orchestrator, &load).await?,
        };
        let ids = load
            .run_serially(&mut tap, &pool, args.serial, &progress)
            .await?;
        let after = counters_after(environment, &orchestrator, &load).await?;
        started.extend(ids.iter().copied());
        serial = Some(Measured {
            ids,
            commits: after.0 - before.0,
            cpu_seconds: after.1 - before.1,
        });
    }
    progress.finish_and_clear();
    orchestrator.check_running()?;
    let peak_rss = orchestrator.peak_rss_bytes()?;
    orchestrator.stop().await?;
    let ledger = sim.ledger();
    sim.shutdown().await?;

    let stored = Stored::read(&pool, None).await?;
    let verified = verify::check(&started, "completed", &commands, &stored, &ledger)
        .map_err(Error::Unverified)?;
    durability.observed_deliveries(
        verified.persistent_deliveries,
        verified.deliveries - verified.persistent_deliveries,
    );
    // Read again: a setting changed during the run counts too.
    let mut durability_after = Durability::read(&pool).await?;
    durability_after.persistent_delivery = durability.persistent_delivery.clone();
    let mut problems = durability_after.unsafe_settings();
    if durability_after != durability {
        problems.push("Postgres's durability settings changed during the run".into());
    }
    if !problems.is_empty() {
        return Err(Error::Unsafe(problems));
    }

    let throughput = match throughput {
        Some(measured) => Some(phase(&pool, &measured, &ledger).await?),
        None => None,
    };
    let serial = match serial {
        Some(measured) => Some(phase(&pool, &measured, &ledger).await?),
        None => None,
    };
    let floors = if args.floors {
        let sizes = figures::row_sizes(&pool).await?;
        Some(floors::measure(&pool, &environment.amqp_url, &environment.topology, sizes).await?)
    } else {
        None
    };
    let steps = target.definition.steps().len();
    let ratios = floors
        .as_ref()
        .map(|floors| Ratios::of(floors, steps, throughput.as_ref(), serial.as_ref()));
    pool.close().await;
    Ok(Report {
        machine,
        run: run_shape(args, target),
        durability,
        verified,
        throughput,
        serial,
        orchestrator_peak_rss_bytes: peak_rss,
        floors,
        ratios,
        scale: None,
    })
}

/// What every run sets up before its orchestrator starts.
struct Prepared {
    /// On the run's database, with the orchestrator's URL.
    pool: PgPool,
    /// Postgres's settings, checked safe; persistent delivery is observed
    /// during the run.
    durability: Durability,
    machine: Machine,
    /// Each step's command type: one effect each per workflow.
    commands: Vec<String>,
    /// The reply that ends a workflow.
    last_reply: String,
    sim: Sim,
    tap: tokio::sync::broadcast::Receiver<LedgerEntry>,
}

/// Checks the durability settings (no run without them), reads the
/// machine, and starts the simulated connectors.
async fn prepare(
    environment: &Environment,
    target: &Target<'_>,
    connections: u32,
) -> Result<Prepared, Error> {
    let pool = environment.connect(connections).await?;
    let durability = Durability::read(&pool).await?;
    let known: Vec<String> = durability
        .unsafe_settings()
        .into_iter()
        .filter(|problem| !problem.starts_with("persistent delivery"))
        .collect();
    if !known.is_empty() {
        return Err(Error::Unsafe(known));
    }
    let postgres: String = sqlx::query_scalar("SELECT current_setting('server_version')")
        .fetch_one(&pool)
        .await
        .map_err(|source| Error::Database {
            doing: "reading the server version",
            source,
        })?;
    let steps = target.definition.steps();
    let Some(last) = steps.last() else {
        return Err(Error::Setting("the workflow has no steps".into()));
    };
    let commands = steps
        .iter()
        .map(|step| step.command.command_type.clone())
        .collect();
    let sim = Sim::start(SimSettings::new(
        environment.amqp_url.clone(),
        environment.topology.clone(),
    ))
    .await?;
    let tap = sim.subscribe();
    Ok(Prepared {
        pool,
        durability,
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            postgres,
        },
        commands,
        last_reply: format!("{}.succeeded", last.command.command_type),
        sim,
        tap,
    })
}

/// How the orchestrator under test is started.
fn launch<'a>(args: &'a BenchArgs, target: &'a Target<'_>) -> Launch<'a> {
    Launch {
        exe: target.exe,
        workflows: target.workflows_dir,
        log_level: &args.orchestrator_log,
    }
}

/// How the run ran, for the report.
fn run_shape(args: &BenchArgs, target: &Target<'_>) -> RunShape {
    RunShape {
        workflow: target.definition.name().to_owned(),
        steps_per_workflow: target.definition.steps().len(),
        warm_up: args.warm_up,
        concurrency: args.concurrency,
        orchestrator_log: args.orchestrator_log.clone(),
        connectors: "simulated, answering at once, in the bench's process; \
                     their deduplication and ledger kept in memory"
            .into(),
    }
}

/// Workflows waiting in the scale test's small run, its point of comparison.
const SCALE_SMALL: u64 = 1_000;

/// The scale test: the throughput phase beside [`SCALE_SMALL`] waiting
/// workflows, then (a fresh orchestrator) beside `waiting`.
async fn run_scale(
    environment: &Environment,
    args: &BenchArgs,
    target: &Target<'_>,
    waiting: u64,
) -> Result<Report, Error> {
    let Prepared {
        pool,
        mut durability,
        machine,
        commands,
        last_reply,
        sim,
        mut tap,
    } = prepare(environment, target, 4).await?;
    let definition = std::sync::Arc::new(target.definition.clone());
    let launch = launch(args, target);
    let progress = progress_bar(args);
    let mut started = Vec::new();
    let mut next_quote = 1;
    // Per size: workflows waiting, workflows/s, peak RSS.
    let mut runs: Vec<(u64, f64, u64)> = Vec::new();
    for (from, to) in [(0, SCALE_SMALL), (SCALE_SMALL, waiting)] {
        // The orchestrator migrates the database before the first seeding.
        let mut orchestrator = Orchestrator::start(environment, &launch).await?;
        progress.set_message(format!("seeding {to} waiting"));
        scale::seed(&pool, &definition, from, to).await?;
        let mut load = Load::new(&orchestrator.api, &orchestrator.token, last_reply.clone())?
            .starting_at(next_quote);
        let mut rate = None;
        for (phase, count) in [("warm-up", args.warm_up), ("throughput", args.workflows)] {
            if count == 0 {
                continue;
            }
            progress.set_message(format!("{phase} beside {to} waiting"));
            progress.set_length(u64::from(count));
            progress.set_position(0);
            let ids = load
                .run(&mut tap, count, args.concurrency, &progress)
                .await?;
            load.await_terminal(&pool, &ids).await?;
            if phase == "throughput" {
                let times = figures::phase_times(&pool, &ids).await?;
                rate = Some(ids.len() as f64 / times.seconds);
            }
            started.extend(ids);
        }
        next_quote = load.next_quote();
        orchestrator.check_running()?;
        let peak = orchestrator.peak_rss_bytes()?;
        orchestrator.stop().await?;
        let rate =
            rate.ok_or_else(|| Error::Setting("--scale needs --workflows above 0".into()))?;
        runs.push((to, rate, peak));
    }
    progress.set_message("timing queries");
    let queries = scale::measure_queries(&pool).await?;
    progress.finish_and_clear();
    let ledger = sim.ledger();
    sim.shutdown().await?;

    let stored = Stored::read(&pool, Some(&started)).await?;
    let verified = verify::check(&started, "completed", &commands, &stored, &ledger)
        .map_err(Error::Unverified)?;
    let untouched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM workflows WHERE quote_id LIKE 'a0qWAIT%' \
         AND status = 'running' AND version = 1",
    )
    .fetch_one(&pool)
    .await
    .map_err(|source| Error::Database {
        doing: "counting the waiting workflows",
        source,
    })?;
    if u64::try_from(untouched).unwrap_or(0) != waiting {
        return Err(Error::Unverified(vec![format!(
            "{untouched} of {waiting} waiting workflows were left as seeded"
        )]));
    }
    durability.observed_deliveries(
        verified.persistent_deliveries,
        verified.deliveries - verified.persistent_deliveries,
    );
    let problems = durability.unsafe_settings();
    if !problems.is_empty() {
        return Err(Error::Unsafe(problems));
    }
    let [
        (small, small_rate, small_rss),
        (large, large_rate, large_rss),
    ] = runs[..]
    else {
        return Err(Error::Panicked("the scale runs"));
    };
    let scale = scale::Scale {
        waiting_small: small,
        waiting_large: large,
        peak_rss_small_bytes: small_rss,
        peak_rss_large_bytes: large_rss,
        rss_ratio: large_rss as f64 / small_rss as f64,
        workflows_per_second_small: small_rate,
        workflows_per_second_large: large_rate,
        queries,
    };
    pool.close().await;
    Ok(Report {
        machine,
        run: run_shape(args, target),
        durability,
        verified,
        throughput: None,
        serial: None,
        orchestrator_peak_rss_bytes: large_rss,
        floors: None,
        ratios: None,
        scale: Some(scale),
    })
}

/// Commits in the run's database (less the bench's own queries) and the
/// orchestrator's CPU seconds where a phase starts: both once Postgres's
/// counts of what came before have settled.
async fn counters_before(
    environment: &Environment,
    orchestrator: &Orchestrator,
    load: &Load,
) -> Result<(i64, f64), Error> {
    tokio::time::sleep(STATS_SETTLE).await;
    let commits = environment.commits().await? - load.own_queries;
    Ok((commits, orchestrator.cpu_seconds()?))
}

/// The same where a phase ends: the CPU seconds at once, the commits once
/// Postgres's counts of the phase have settled.
async fn counters_after(
    environment: &Environment,
    orchestrator: &Orchestrator,
    load: &Load,
) -> Result<(i64, f64), Error> {
    let cpu_seconds = orchestrator.cpu_seconds()?;
    tokio::time::sleep(STATS_SETTLE).await;
    let commits = environment.commits().await? - load.own_queries;
    Ok((commits, cpu_seconds))
}

/// One phase's figures: times from the database, counts from the ledger.
async fn phase(pool: &PgPool, measured: &Measured, ledger: &[LedgerEntry]) -> Result<Phase, Error> {
    let times = figures::phase_times(pool, &measured.ids).await?;
    let ids: HashSet<Uuid> = measured.ids.iter().copied().collect();
    let messages = ledger
        .iter()
        .filter(|entry| ids.contains(&entry.workflow_id))
        .filter(|entry| {
            matches!(
                entry.event,
                LedgerEvent::Delivery { .. } | LedgerEvent::Reply { .. }
            )
        })
        .count();
    let workflows = measured.ids.len() as f64;
    Ok(Phase {
        workflows: measured.ids.len(),
        seconds: times.seconds,
        workflows_per_second: workflows / times.seconds,
        steps_per_second: times.steps as f64 / times.seconds,
        workflow_latency: times.workflow,
        handoff_latency: times.handoff,
        round_trip_latency: times.round_trip,
        intake_latency: times.intake,
        commits_per_workflow: measured.commits as f64 / workflows,
        broker_messages_per_workflow: messages as f64 / workflows,
        orchestrator_cpu_seconds: measured.cpu_seconds,
    })
}

/// A progress bar on a terminal; nothing otherwise, or with `--json`.
fn progress_bar(args: &BenchArgs) -> ProgressBar {
    let progress = ProgressBar::with_draw_target(
        None,
        if args.json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{msg:<28} [{bar:40}] {pos}/{len} {per_sec} ({elapsed})")
    {
        progress.set_style(style.progress_chars("=> "));
    }
    progress
}
