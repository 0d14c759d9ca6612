//! The orchestrator under test: a `q2c serve` process of its own, so its
//! CPU time and memory are its own and read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::Error;
use crate::environment::Environment;

/// How long the orchestrator may take to start (migrating a fresh
/// database included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Clock ticks per second in `/proc/<pid>/stat`: USER_HZ, fixed at 100 by
/// the Linux ABI whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// A running `q2c serve`.
pub struct Orchestrator {
    child: Child,
    pid: u32,
    /// Its HTTP API, e.g. `http://127.0.0.1:40123`.
    pub api: String,
    /// The token the bench ingests events with.
    pub token: String,
    log: PathBuf,
    _files: tempfile::TempDir,
}

/// What the orchestrator's settings are, besides the run's environment.
pub struct Launch<'a> {
    /// The `q2c` executable.
    pub exe: &'a Path,
    /// Its workflow definitions.
    pub workflows: &'a Path,
    /// Its `RUST_LOG`.
    pub log_level: &'a str,
}

impl Orchestrator {
    /// Starts it and waits until it is consuming and serving.
    pub async fn start(environment: &Environment, launch: &Launch<'_>) -> Result<Self, Error> {
        let files = tempfile::tempdir().map_err(|source| Error::Io {
            doing: "making a temporary directory",
            source,
        })?;
        let ready = files.path().join("ready.json");
        let log = files.path().join("orchestrator.log");
        let log_file = std::fs::File::create(&log).map_err(|source| Error::Io {
            doing: "creating the orchestrator's log",
            source,
        })?;
        let token = format!("bench-{}", uuid::Uuid::now_v7().simple());
        let mut command = Command::new(launch.exe);
        command
            .arg("serve")
            .env("DATABASE_URL", &environment.database_url)
            .env("AMQP_URL", &environment.amqp_url)
            .env("Q2C_AMQP_PREFIX", environment.topology.prefix())
            .env("Q2C_WORKFLOWS_DIR", launch.workflows)
            .env("Q2C_HTTP_ADDR", "127.0.0.1:0")
            .env("Q2C_READY_FILE", &ready)
            .env("Q2C_API_TOKEN", &token)
            .env("RUST_LOG", launch.log_level)
            // Nothing of the caller's deployment comes along: no Salesforce
            // stream, no other tokens, no crash injection.
            .env_remove("Q2C_SALESFORCE_PUBSUB_URL")
            .env_remove("Q2C_API_TOKENS")
            .env_remove("Q2C_API_TOKENS_FILE")
            .env_remove("Q2C_CRASH_AT")
            .env_remove("Q2C_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| Error::Io {
            doing: "starting `q2c serve`",
            source,
        })?;
        let pid = child.id().ok_or_else(|| Error::Orchestrator {
            problem: "exited at once".into(),
            log: String::new(),
        })?;
        let mut orchestrator = Self {
            child,
            pid,
            api: String::new(),
            token,
            log,
            _files: files,
        };
        orchestrator.api = orchestrator.wait_ready(&ready).await?;
        Ok(orchestrator)
    }

    /// Waits for the ready file `q2c serve` writes once it consumes.
    async fn wait_ready(&mut self, ready: &Path) -> Result<String, Error> {
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(ready)
                && let Ok(content) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(http) = content["http"].as_str()
            {
                return Ok(format!("http://{http}"));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failed(format!("exited while starting ({status})")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(self.failed(format!("not ready within {START_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The error for a failed orchestrator, with the end of its log.
    pub fn failed(&self, problem: String) -> Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        Error::Orchestrator {
            problem,
            log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        }
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.failed(format!("exited during the run ({status})"))),
            Err(source) => Err(Error::Io {
                doing: "checking on the orchestrator",
                source,
            }),
        }
    }

    /// CPU seconds (user and system, all threads) it has used so far.
    pub fn cpu_seconds(&self) -> Result<f64, Error> {
        let stat = read_proc(self.pid, "stat")?;
        cpu_seconds_of(&stat).ok_or_else(|| Error::Proc(format!("/proc/{}/stat", self.pid)))
    }

    /// Its peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Result<u64, Error> {
        self.status_bytes("VmHWM")
    }

    /// Its resident memory now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> Result<u64, Error> {
        self.status_bytes("VmRSS")
    }

    fn status_bytes(&self, field: &str) -> Result<u64, Error> {
        let status = read_proc(self.pid, "status")?;
        kilobytes_of(&status, field)
            .map(|kilobytes| kilobytes * 1024)
            .ok_or_else(|| Error::Proc(format!("{field} in /proc/{}/status", self.pid)))
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub async fn stop(mut self) -> Result<(), Error> {
        let signalled = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await
            .map_err(|source| Error::Io {
                doing: "sending SIGTERM",
                source,
            })?;
        if !signalled.success() {
            return Err(self.failed("could not be signalled to stop".into()));
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(Error::Io {
                doing: "waiting for the orchestrator to stop",
                source,
            }),
            Err(_) => Err(self.failed(format!("did not stop within {STOP_TIMEOUT:?}"))),
        }
    }
}

fn read_proc(pid: u32, file: &str) -> Result<String, Error> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|source| Error::Io {
        doing: "reading /proc (the bench needs Linux)",
        source,
    })
}

/// utime + stime from `/proc/<pid>/stat`: fields 14 and 15, counted after
/// the command name, which is in parentheses and may hold spaces.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is index 0: utime (14) is index 11.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / USER_HZ)
}

fn kilobytes_of(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_name_with_spaces() {
        let stat = "4242 (q2c (serve) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_seconds_of(stat), Some(3.25));
        assert_eq!(cpu_seconds_of("garbage"), None);
    }

    #[test]
    fn memory_fields_are_read_in_kilobytes() {
        let status = "Name:\tq2c\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(kilobytes_of(status, "VmHWM"), Some(20480));
        assert_eq!(kilobytes_of(status, "VmRSS"), Some(10240));
        assert_eq!(kilobytes_of(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let stat = read_proc(std::process::id(), "stat").unwrap();
        assert!(cpu_seconds_of(&stat).is_some());
        let status = read_proc(std::process::id(), "status").unwrap();
        assert!(kilobytes_of(&status, "VmHWM").unwrap() > 0);
    }
}
