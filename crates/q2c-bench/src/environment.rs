//! A database and a set of queues of the run's own, made at the start and
//! removed at the end, so a run measures nothing but itself and leaves
//! nothing behind.

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use q2c_contract::{DOMAINS, Topology};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::Error;

/// Where one run happens.
pub struct Environment {
    /// The server's database named in `DATABASE_URL`: only for creating and
    /// dropping the run's database and reading `pg_stat_database`, so that
    /// what the bench itself asks is never counted as the orchestrator's.
    pub monitor: PgPool,
    /// The run's database, as the orchestrator is given it.
    pub database_url: String,
    /// The run's database's name.
    pub database: String,
    /// The broker, as given.
    pub amqp_url: String,
    /// The run's exchanges and queues.
    pub topology: Topology,
}

impl Environment {
    /// Creates a fresh database beside the one `database_url` names, and
    /// picks a fresh prefix for exchanges and queues.
    pub async fn create(database_url: &str, amqp_url: &str) -> Result<Self, Error> {
        let run = uuid::Uuid::now_v7().simple().to_string();
        let suffix = &run[run.len() - 12..];
        let database = format!("q2c_bench_{suffix}");
        let monitor = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect(database_url)
            .await
            .map_err(|source| Error::Database {
                doing: "connecting to DATABASE_URL",
                source,
            })?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&monitor)
            .await
            .map_err(|source| Error::Database {
                doing: "creating the run's database (the role needs CREATEDB)",
                source,
            })?;
        let mut url = reqwest::Url::parse(database_url)
            .map_err(|error| Error::Setting(format!("DATABASE_URL is not a URL: {error}")))?;
        url.set_path(&format!("/{database}"));
        let topology = Topology::new(&format!("q2c-bench-{suffix}."))
            .map_err(|error| Error::Setting(format!("the run's broker prefix: {error}")))?;
        Ok(Self {
            monitor,
            database_url: url.to_string(),
            database,
            amqp_url: amqp_url.to_owned(),
            topology,
        })
    }

    /// A pool on the run's database, with the orchestrator's own URL (so
    /// the same per-role and per-database settings apply).
    pub async fn connect(&self, connections: u32) -> Result<PgPool, Error> {
        let options: PgConnectOptions =
            self.database_url
                .parse()
                .map_err(|source| Error::Database {
                    doing: "reading the run's database URL",
                    source,
                })?;
        PgPoolOptions::new()
            .max_connections(connections)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.disable_statement_logging())
            .await
            .map_err(|source| Error::Database {
                doing: "connecting to the run's database",
                source,
            })
    }

    /// Transactions committed in the run's database so far, as Postgres
    /// counts them (`pg_stat_database.xact_commit`).
    pub async fn commits(&self) -> Result<i64, Error> {
        let (commits,): (i64,) =
            sqlx::query_as("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
                .bind(&self.database)
                .fetch_one(&self.monitor)
                .await
                .map_err(|source| Error::Database {
                    doing: "reading pg_stat_database",
                    source,
                })?;
        Ok(commits)
    }

    /// Drops the database and deletes the exchanges and queues; failures
    /// are logged, not raised, so they never hide the run's own outcome.
    pub async fn remove(self) {
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        )))
        .execute(&self.monitor)
        .await;
        if let Err(error) = dropped {
            tracing::warn!(%error, database = self.database, "could not drop the run's database");
        }
        if let Err(error) = delete_topology(&self.amqp_url, &self.topology).await {
            tracing::warn!(%error, prefix = self.topology.prefix(), "could not delete the run's queues");
        }
    }
}

async fn delete_topology(amqp_url: &str, topology: &Topology) -> Result<(), lapin::Error> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut queues: Vec<String> = DOMAINS
        .iter()
        .map(|domain| topology.command_queue(domain))
        .collect();
    queues.push(topology.replies_queue());
    queues.push(topology.dead_letter_queue());
    queues.extend(crate::floors::queue_names(topology));
    for queue in queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in [
        topology.commands_exchange(),
        topology.replies_exchange(),
        topology.dead_letter_exchange(),
    ] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    connection.close(200, "bench done".into()).await
}
