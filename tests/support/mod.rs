//! The world end-to-end tests run in: a database of their own, a broker
//! prefix of their own, fast workflow definitions, `q2c serve` processes,
//! and a connector that keeps a ledger of every delivery and effect.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod connector;
pub mod product;
pub mod salesforce;

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use q2c_contract::Topology;
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_core::domain::quote::{Quote, QuoteDraft, fixtures};
use q2c_store::Store;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::process::{Child, Command};

/// Polls `condition` until it holds, failing the test after `deadline`.
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One test's isolated world.
pub struct World {
    pub name: String,
    pub database_url: String,
    admin_url: String,
    pub pool: PgPool,
    pub store: Store,
    pub topology: Topology,
    pub amqp_url: String,
    pub directory: tempfile::TempDir,
    pub definition: Arc<Definition>,
}

impl World {
    /// A fresh database (migrated) and a fresh broker prefix.
    pub async fn new() -> World {
        let admin_url =
            std::env::var("DATABASE_URL").expect("DATABASE_URL is set (deploy/test.sh sets it)");
        let amqp_url = std::env::var("AMQP_URL").expect("AMQP_URL is set (deploy/test.sh sets it)");
        let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .expect("connect to DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let database_url = replace_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&database_url)
            .await
            .expect("connect to the test database");
        q2c_store::migrate(&pool).await.expect("migrate");

        let directory = tempfile::tempdir().expect("temporary directory");
        let text = fast_definition();
        std::fs::write(directory.path().join("quote-to-cash.toml"), &text)
            .expect("write definition");
        let definition = Arc::new(Definition::parse("quote-to-cash.toml", &text).expect("valid"));

        World {
            topology: Topology::new(&format!("{name}.")).expect("valid prefix"),
            name,
            database_url,
            admin_url,
            store: Store::new(pool.clone()),
            pool,
            amqp_url,
            directory,
            definition,
        }
    }

    /// Starts a workflow for a quote numbered `n` (its own quote id).
    pub async fn start_workflow(&self, n: u32) -> WorkflowId {
        self.start_workflow_for(quote(n)).await
    }

    pub async fn start_workflow_for(&self, quote: Quote) -> WorkflowId {
        let id = WorkflowId::new(uuid::Uuid::now_v7());
        self.store
            .start_workflow(id, self.definition.clone(), quote, chrono::Utc::now())
            .await
            .expect("start workflow");
        id
    }

    /// Statuses of all workflows, by id.
    pub async fn statuses(&self) -> Vec<(uuid::Uuid, String)> {
        sqlx::query_as("SELECT id, status FROM workflows ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .expect("read statuses")
    }

    /// Waits until every workflow has `status`.
    pub async fn all_reach(&self, status: &str, count: usize, deadline: Duration) {
        let what = format!("{count} workflows to be {status}");
        eventually(&what, deadline, || async {
            let statuses = self.statuses().await;
            statuses.len() == count && statuses.iter().all(|(_, s)| s == status)
        })
        .await;
    }

    pub async fn unsent(&self) -> i64 {
        self.store.outbox_backlog().await.expect("backlog").unsent
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count");
        n
    }

    /// Starts `q2c serve` on this world, with extra environment.
    pub async fn serve(&self, extra: &[(&str, &str)]) -> Orchestrator {
        Orchestrator::spawn(self, extra).await
    }

    /// Drops the database and the broker objects (also done on drop, so a
    /// failing test cleans up too).
    pub async fn cleanup(self) {
        self.pool.close().await;
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let (amqp_url, topology, admin_url, name) = (
            self.amqp_url.clone(),
            self.topology.clone(),
            self.admin_url.clone(),
            self.name.clone(),
        );
        // Drop cannot await, and may run inside the test's runtime: clean up
        // on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(channel) = connector::channel(&amqp_url).await {
                    let _ = topology.delete(&channel).await;
                }
                if let Ok(admin) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin_url)
                    .await
                {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&admin)
                    .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The API token test processes use.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A `q2c serve` process.
pub struct Orchestrator {
    child: Child,
    ready_file: PathBuf,
    log: PathBuf,
    /// Where its HTTP API listens.
    pub http: String,
}

impl Orchestrator {
    async fn spawn(world: &World, extra: &[(&str, &str)]) -> Orchestrator {
        let ready_file = world
            .directory
            .path()
            .join(format!("ready-{}", uuid::Uuid::new_v4().simple()));
        let log_path = world.directory.path().join("serve.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_q2c"));
        command
            .arg("serve")
            .arg("--workflows")
            .arg(world.directory.path())
            .env("DATABASE_URL", &world.database_url)
            .env("AMQP_URL", &world.amqp_url)
            .env("Q2C_AMQP_PREFIX", world.topology.prefix())
            .env("Q2C_READY_FILE", &ready_file)
            .env("Q2C_HTTP_ADDR", "127.0.0.1:0")
            .env("Q2C_API_TOKEN", TOKEN)
            .env_remove("Q2C_API_TOKENS")
            .env_remove("Q2C_API_TOKENS_FILE")
            .env("RUST_LOG", "info")
            .env_remove("Q2C_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn q2c serve");
        let mut orchestrator = Orchestrator {
            child,
            ready_file,
            log: log_path,
            http: String::new(),
        };
        orchestrator.wait_ready().await;
        orchestrator
    }

    async fn wait_ready(&mut self) {
        let ready = self.ready_file.clone();
        let start = tokio::time::Instant::now();
        loop {
            let announced = std::fs::read_to_string(&ready)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            if let Some(http) = announced.as_ref().and_then(|ready| ready["http"].as_str()) {
                self.http = format!("http://{http}");
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "q2c serve exited before it was ready: {status}\n{}",
                    self.log_tail()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "q2c serve not ready in 30s\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the process has exited by itself (a crash), and says how.
    pub async fn exited(&mut self, deadline: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.expect("wait for q2c serve"),
            Err(_) => panic!(
                "q2c serve did not exit in {deadline:?}\n{}",
                self.log_tail()
            ),
        }
    }

    /// The whole of the processes' shared log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The end of the processes' shared log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill q2c serve");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        self.exited(Duration::from_secs(20)).await
    }
}

/// The shipped quote-to-cash definition with sub-second timing, so tests
/// that wait for timeouts and retries stay fast.
pub fn fast_definition() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/quote-to-cash.toml");
    std::fs::read_to_string(path)
        .expect("shipped definition")
        .replace("timeout = \"30s\"", "timeout = \"2s\"")
        .replace("timeout = \"2m\"", "timeout = \"2s\"")
        .replace("timeout = \"1m\"", "timeout = \"2s\"")
        .replace("initial_backoff = \"1s\"", "initial_backoff = \"100ms\"")
        .replace("initial_backoff = \"2s\"", "initial_backoff = \"100ms\"")
        .replace("initial_backoff = \"5s\"", "initial_backoff = \"100ms\"")
        .replace("max_backoff = \"1m\"", "max_backoff = \"500ms\"")
        .replace("max_backoff = \"5m\"", "max_backoff = \"500ms\"")
        .replace("max_backoff = \"10m\"", "max_backoff = \"500ms\"")
}

/// A valid quote with its own quote id and number.
pub fn quote(n: u32) -> Quote {
    let mut draft: QuoteDraft = fixtures::draft();
    draft.quote_id = format!("a0q5e{n:013}");
    draft.quote_number = format!("Q-{n:05}");
    Quote::try_from_draft(draft).expect("valid quote")
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(head, _)| head);
    format!("{base}/{name}{query}")
}
