//! The settings that decide whether a commit and a published message
//! survive a crash. Figures are printed only when every one is safe, and
//! always with them, so a fast number can never come from a switched-off
//! guarantee.

use serde::Serialize;
use sqlx::PgPool;

use crate::Error;

/// What the run's durability rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Durability {
    /// Postgres `fsync`: must be `on`.
    pub fsync: String,
    /// Postgres `synchronous_commit` as the orchestrator's role sees it in
    /// the run's database: anything but `off` waits for the WAL flush.
    pub synchronous_commit: String,
    /// Postgres `full_page_writes`: must be `on`, or a torn page after a
    /// crash corrupts the data.
    pub full_page_writes: String,
    /// Postgres `wal_sync_method`, for the reader.
    pub wal_sync_method: String,
    /// Publisher confirms on every publish (the relay's commands, the
    /// connectors' replies): q2c has no switch to turn them off.
    pub publisher_confirms: String,
    /// Whether every command the connectors received came persistent
    /// (delivery mode 2), as observed by the simulated connectors.
    pub persistent_delivery: String,
    /// The queues' durability and type, as every process declares them
    /// (the broker refuses a declaration that differs from the queue).
    pub queues: String,
}

impl Durability {
    /// Reads Postgres's settings through `pool`, a connection made with
    /// the orchestrator's own URL.
    pub async fn read(pool: &PgPool) -> Result<Self, Error> {
        let (fsync, synchronous_commit, full_page_writes, wal_sync_method): (
            String,
            String,
            String,
            String,
        ) = sqlx::query_as(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'), \
                 current_setting('full_page_writes'), current_setting('wal_sync_method')",
        )
        .fetch_one(pool)
        .await
        .map_err(|source| Error::Database {
            doing: "reading the durability settings",
            source,
        })?;
        Ok(Self {
            fsync,
            synchronous_commit,
            full_page_writes,
            wal_sync_method,
            publisher_confirms: "on".into(),
            persistent_delivery: "not yet observed".into(),
            queues: "durable, quorum".into(),
        })
    }

    /// Records what the connectors saw of the commands' delivery mode.
    pub fn observed_deliveries(&mut self, persistent: usize, transient: usize) {
        self.persistent_delivery = if transient == 0 {
            format!("on ({persistent} of {persistent} deliveries persistent)")
        } else {
            format!(
                "OFF ({transient} of {} deliveries transient)",
                persistent + transient
            )
        };
    }

    /// Every setting that is not safe, said plainly; empty when all are.
    pub fn unsafe_settings(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.fsync != "on" {
            problems.push(format!("Postgres fsync is `{}`, not `on`", self.fsync));
        }
        if self.synchronous_commit == "off" {
            problems.push(
                "Postgres synchronous_commit is `off`: a commit may be lost in a crash".to_owned(),
            );
        }
        if self.full_page_writes != "on" {
            problems.push(format!(
                "Postgres full_page_writes is `{}`, not `on`",
                self.full_page_writes
            ));
        }
        if !self.persistent_delivery.starts_with("on") {
            problems.push(format!(
                "persistent delivery is {}",
                self.persistent_delivery
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe() -> Durability {
        let mut durability = Durability {
            fsync: "on".into(),
            synchronous_commit: "on".into(),
            full_page_writes: "on".into(),
            wal_sync_method: "fdatasync".into(),
            publisher_confirms: "on".into(),
            persistent_delivery: String::new(),
            queues: "durable, quorum".into(),
        };
        durability.observed_deliveries(8, 0);
        durability
    }

    #[test]
    fn safe_settings_raise_nothing() {
        assert_eq!(safe().unsafe_settings(), Vec::<String>::new());
        let mut local = safe();
        local.synchronous_commit = "local".into();
        assert!(local.unsafe_settings().is_empty());
    }

    #[test]
    fn each_unsafe_setting_is_named() {
        let mut durability = safe();
        durability.fsync = "off".into();
        durability.synchronous_commit = "off".into();
        durability.full_page_writes = "off".into();
        durability.observed_deliveries(7, 1);
        let problems = durability.unsafe_settings().join("\n");
        for name in [
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "persistent delivery",
        ] {
            assert!(problems.contains(name), "{name} not named in {problems}");
        }
    }
}
