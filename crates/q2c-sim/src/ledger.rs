//! The ledger: every delivery, effect and reply of the simulated connectors.
//!
//! Tests use it to prove the contract's promises from the connector's side:
//! no idempotency key took effect twice, a lost attempt was redelivered, a
//! tombstoned command was never performed. It is kept in memory
//! ([`crate::Sim::ledger`]) and, when asked, appended to a file as JSON Lines
//! (one object per line, written whole) so that a test driving a `q2c sim`
//! process can read it with [`read_ledger`] while the simulator runs:
//!
//! ```text
//! {"at":"…","kind":"delivery","persistent":true,"connector":"erp","message_id":"…","type":"erp.create_order","idempotency_key":"…","attempt":1,"workflow_id":"…","step":"create_order","undoes":null}
//! {"at":"…","kind":"effect",…,"effect":"order_created"}
//! {"at":"…","kind":"effect",…,"effect":"status_reported","outcome":"completed"}
//! {"at":"…","kind":"reply",…,"reply_type":"erp.create_order.succeeded","retryable":null,"cached":false}
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use q2c_contract::Envelope;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// One line of the ledger: what happened, to which command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// When the connector recorded it.
    pub at: DateTime<Utc>,
    /// What happened: a delivery, an effect or a reply.
    #[serde(flatten)]
    pub event: LedgerEvent,
    /// The connector's domain (`erp`, `billing`, `payment`, `salesforce`).
    pub connector: String,
    /// The command's message id (the same for a redelivery, new per attempt).
    pub message_id: Uuid,
    /// The command type.
    #[serde(rename = "type")]
    pub command_type: String,
    /// The command's idempotency key: at most one effect per key.
    pub idempotency_key: String,
    /// The command's attempt.
    pub attempt: u32,
    /// The command's workflow.
    pub workflow_id: Uuid,
    /// The command's step.
    pub step: String,
    /// On a compensation, the key it undoes; null otherwise.
    pub undoes: Option<String>,
}

/// What a ledger line records, told apart by its `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LedgerEvent {
    /// A command was delivered (every delivery, even one left unanswered).
    Delivery {
        /// Whether it came with delivery mode 2 (persistent), as the
        /// contract asks; ledgers written before this field read as true.
        #[serde(default = "persistent_by_default")]
        persistent: bool,
    },
    /// The command took effect in the simulated system; at most once per key.
    Effect {
        /// Which effect.
        effect: EffectKind,
        /// For `status_reported`: the outcome Salesforce was told.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<String>,
    },
    /// A reply was published and confirmed by the broker.
    Reply {
        /// `<command>.succeeded` or `<command>.failed`.
        reply_type: String,
        /// On a failure, whether it may succeed if sent again; null on a
        /// success.
        retryable: Option<bool>,
        /// Whether it was served from the key's cached reply.
        cached: bool,
    },
}

/// The effects the simulated systems perform, one per command type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EffectKind {
    /// `erp.create_order`
    OrderCreated,
    /// `erp.cancel_order`, undoing a created order.
    OrderCancelled,
    /// `billing.issue_invoice`
    InvoiceIssued,
    /// `billing.void_invoice`, undoing an issued invoice.
    InvoiceVoided,
    /// `payment.collect`
    PaymentCollected,
    /// `payment.refund`, undoing a collected payment.
    PaymentRefunded,
    /// `salesforce.report_status`
    StatusReported,
}

fn persistent_by_default() -> bool {
    true
}

impl LedgerEntry {
    /// An entry about `command`, as seen by `connector`, recorded now.
    pub(crate) fn about(connector: &str, command: &Envelope, event: LedgerEvent) -> Self {
        Self {
            at: Utc::now(),
            event,
            connector: connector.to_owned(),
            message_id: command.message_id,
            command_type: command.message_type.clone(),
            idempotency_key: command.idempotency_key.clone(),
            attempt: command.attempt,
            workflow_id: command.workflow_id,
            step: command.step.clone(),
            undoes: command.undoes.clone(),
        }
    }
}

/// Why the ledger file cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Opening, writing or reading the file failed.
    #[error("ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// A line is not a ledger entry.
    #[error("ledger {path}, line {line}: {source}")]
    Parse {
        /// The ledger file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        source: serde_json::Error,
    },
}

/// Reads a ledger file written by a simulator (possibly still running: a
/// line is written whole, so every line read is complete).
pub fn read_ledger(path: impl AsRef<Path>) -> Result<Vec<LedgerEntry>, LedgerError> {
    let path = path.as_ref();
    let io = |source| LedgerError::Io {
        path: path.to_owned(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut entries = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line).map_err(|source| LedgerError::Parse {
            path: path.to_owned(),
            line: index + 1,
            source,
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// The ledger of a running simulator, shared by its connectors.
#[derive(Debug)]
pub(crate) struct Ledger {
    inner: Mutex<Inner>,
    /// Every entry as it is recorded, for whoever drives the simulator
    /// and must react to what it does (the benchmark's flow control).
    tap: broadcast::Sender<LedgerEntry>,
}

/// Entries a slow [`crate::Sim::subscribe`]r may fall behind by before it
/// is told it missed some.
const TAP_CAPACITY: usize = 1 << 16;

#[derive(Debug)]
struct Inner {
    entries: Vec<LedgerEntry>,
    file: Option<(PathBuf, File)>,
}

impl Ledger {
    /// A ledger in memory, also appended to `path` when given.
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, LedgerError> {
        let file = match path {
            Some(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| LedgerError::Io {
                        path: path.to_owned(),
                        source,
                    })?;
                Some((path.to_owned(), file))
            }
            None => None,
        };
        Ok(Self {
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                file,
            }),
            tap: broadcast::Sender::new(TAP_CAPACITY),
        })
    }

    /// Records `entry`; on return a reader of the file sees it.
    pub(crate) fn record(&self, entry: LedgerEntry) -> Result<(), LedgerError> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((path, file)) = &mut inner.file {
            // One write per line, so a concurrent reader never sees half.
            let mut line = serde_json::to_vec(&entry).unwrap_or_default();
            line.push(b'\n');
            file.write_all(&line)
                .and_then(|()| file.flush())
                .map_err(|source| LedgerError::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        if self.tap.receiver_count() > 0 {
            // Nobody listening is not an error.
            let _ = self.tap.send(entry.clone());
        }
        inner.entries.push(entry);
        Ok(())
    }

    /// Every entry recorded from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LedgerEntry> {
        self.tap.subscribe()
    }

    /// A copy of every entry so far, in the order recorded.
    pub(crate) fn entries(&self) -> Vec<LedgerEntry> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;
    use serde_json::{Value, json};

    fn command() -> Envelope {
        Envelope {
            message_id: Uuid::from_u128(1),
            message_type: "erp.cancel_order".into(),
            schema_version: 1,
            workflow_id: Uuid::from_u128(2),
            step: "create_order".into(),
            attempt: 3,
            idempotency_key: "w:create_order:r1:compensate".into(),
            undoes: Some("w:create_order:r1".into()),
            correlation_id: Uuid::from_u128(1),
            sent_at: DateTime::UNIX_EPOCH,
            traceparent: None,
            payload: json!({}),
        }
    }

    #[test]
    fn lines_have_the_documented_shape() {
        let mut forward = command();
        forward.undoes = None;
        let delivery =
            LedgerEntry::about("erp", &forward, LedgerEvent::Delivery { persistent: true });
        let line: Value = serde_json::to_value(&delivery).unwrap();
        assert_eq!(line["kind"], "delivery");
        assert_eq!(line["persistent"], true);
        assert_eq!(line["connector"], "erp");
        assert_eq!(line["type"], "erp.cancel_order");
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["undoes"], Value::Null);
        assert!(line.as_object().unwrap().contains_key("undoes"));
        assert!(DateTime::parse_from_rfc3339(line["at"].as_str().unwrap()).is_ok());

        let effect = LedgerEvent::Effect {
            effect: EffectKind::StatusReported,
            outcome: Some("completed".into()),
        };
        let line = serde_json::to_value(LedgerEntry::about("erp", &command(), effect)).unwrap();
        assert_eq!(line["kind"], "effect");
        assert_eq!(line["effect"], "status_reported");
        assert_eq!(line["outcome"], "completed");
        assert_eq!(line["undoes"], "w:create_order:r1");

        let reply = LedgerEvent::Reply {
            reply_type: "erp.cancel_order.succeeded".into(),
            retryable: None,
            cached: true,
        };
        let line = serde_json::to_value(LedgerEntry::about("erp", &command(), reply)).unwrap();
        assert_eq!(line["kind"], "reply");
        assert_eq!(line["retryable"], Value::Null);
        assert_eq!(line["cached"], true);
    }

    #[test]
    fn the_file_reads_back_as_recorded() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("ledger.jsonl");
        let ledger = Ledger::open(Some(&path)).unwrap();
        let events = [
            LedgerEvent::Delivery { persistent: false },
            LedgerEvent::Effect {
                effect: EffectKind::OrderCancelled,
                outcome: None,
            },
            LedgerEvent::Reply {
                reply_type: "erp.cancel_order.failed".into(),
                retryable: Some(false),
                cached: false,
            },
        ];
        for event in events {
            ledger
                .record(LedgerEntry::about("erp", &command(), event))
                .unwrap();
        }
        assert_eq!(read_ledger(&path).unwrap(), ledger.entries());
        assert_eq!(ledger.entries().len(), 3);

        // Appends, never truncates.
        let again = Ledger::open(Some(&path)).unwrap();
        again
            .record(LedgerEntry::about(
                "erp",
                &command(),
                LedgerEvent::Delivery { persistent: true },
            ))
            .unwrap();
        assert_eq!(read_ledger(&path).unwrap().len(), 4);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("ledger.jsonl");
        std::fs::write(&path, "\n{\"kind\": \"nope\"}\n").unwrap();
        let error = read_ledger(&path).unwrap_err();
        assert!(
            matches!(error, LedgerError::Parse { line: 2, .. }),
            "{error}"
        );
    }
}
