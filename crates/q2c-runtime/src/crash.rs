//! Crash injection, for tests that prove a crash at any instant loses no
//! work and performs no effect twice.
//!
//! Only tests set `Q2C_CRASH_AT`; it names one [`CrashPoint`] at which the
//! process aborts, once: the marker file `Q2C_CRASH_MARKER` records that the
//! crash happened, so the restarted process runs on normally.

use std::path::PathBuf;
use std::str::FromStr;

/// The instants between two durable steps where a crash is most telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Commands are committed (and claimed) but not yet published.
    AfterCommitBeforePublish,
    /// Published, but the broker's confirmation has not been awaited.
    AfterPublishBeforeConfirm,
    /// Confirmed by the broker, but not yet marked sent.
    AfterConfirmBeforeMarkingSent,
    /// A reply's transition is committed but the delivery not yet acked.
    AfterCommitBeforeAck,
}

impl FromStr for CrashPoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "after_commit_before_publish" => Self::AfterCommitBeforePublish,
            "after_publish_before_confirm" => Self::AfterPublishBeforeConfirm,
            "after_confirm_before_marking_sent" => Self::AfterConfirmBeforeMarkingSent,
            "after_commit_before_ack" => Self::AfterCommitBeforeAck,
            other => {
                return Err(format!(
                    "Q2C_CRASH_AT `{other}` is not one of after_commit_before_publish, \
                     after_publish_before_confirm, after_confirm_before_marking_sent, \
                     after_commit_before_ack"
                ));
            }
        })
    }
}

/// Whether, and where, to crash.
#[derive(Debug, Clone, Default)]
pub struct CrashSwitch {
    armed: Option<(CrashPoint, PathBuf)>,
}

impl CrashSwitch {
    /// Never crashes.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Crashes at `point` unless `marker` exists, creating it first.
    pub fn at(point: CrashPoint, marker: PathBuf) -> Self {
        Self {
            armed: Some((point, marker)),
        }
    }

    /// Reads `Q2C_CRASH_AT` and `Q2C_CRASH_MARKER`; both or neither.
    pub fn from_env() -> Result<Self, String> {
        match (
            std::env::var("Q2C_CRASH_AT").ok(),
            std::env::var_os("Q2C_CRASH_MARKER"),
        ) {
            (None, _) => Ok(Self::disabled()),
            (Some(point), Some(marker)) => Ok(Self::at(point.parse()?, PathBuf::from(marker))),
            (Some(_), None) => Err(
                "Q2C_CRASH_AT needs Q2C_CRASH_MARKER, the file that marks the crash as done".into(),
            ),
        }
    }

    /// Aborts the process if armed for `point` and not yet crashed.
    pub fn check(&self, point: CrashPoint) {
        if let Some((armed, marker)) = &self.armed
            && *armed == point
            && !marker.exists()
            && std::fs::write(marker, format!("{point:?}\n")).is_ok()
        {
            eprintln!("q2c: crash injected at {point:?}");
            std::process::abort();
        }
    }
}
