//! The fault switches: what a test (or a person) can make go wrong, the way
//! it goes wrong in real Salesforce.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A fault to inject, by HTTP (`POST /local/faults/...`) or through
/// [`crate::LocalSalesforce::apply`]: one type for both, so the two stay the
/// same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Every token issued so far is expired now; open streams end at once
    /// with `service.auth.error`.
    ExpireTokens,
    /// Every open stream ends now with `service.unavailable`, and the next
    /// `count` Subscribe calls are refused with it.
    Unavailable {
        /// How many Subscribe calls to refuse.
        count: u32,
    },
    /// While on, open and new streams send nothing at all (no events, no
    /// keepalives, no idle close) yet stay open: a silent stall.
    Stall {
        /// On or off.
        on: bool,
    },
    /// While on, each event delivered is delivered twice, side by side in
    /// the same response (same id, same replay id).
    Duplicate {
        /// On or off.
        on: bool,
    },
    /// While on, events published through the console are stored with
    /// their Avro payload cut short, so they no longer decode with their
    /// schema: what a subscriber sees when a writer and its schema disagree.
    Garble {
        /// On or off.
        on: bool,
    },
    /// Every event published so far leaves retention: a CUSTOM subscription
    /// from any of their replay ids fails with `replayid.corrupted`.
    ExpireReplayIds,
    /// The next `count` REST calls answer 503 `SERVER_UNAVAILABLE` (a
    /// composite is one call).
    RestUnavailable {
        /// How many REST calls to refuse.
        count: u32,
    },
    /// While on, every REST call answers 503 `SERVER_UNAVAILABLE`: an
    /// outage rather than a blip.
    RestDown {
        /// On or off.
        on: bool,
    },
    /// The next `count` record writes over REST (updates, upserts,
    /// creations; not platform events) fail with 400 `UNABLE_TO_LOCK_ROW`,
    /// as when another transaction holds the row.
    LockRow {
        /// How many writes to refuse.
        count: u32,
    },
    /// While on, every REST write to `object` fails with 400
    /// `FIELD_CUSTOM_VALIDATION_EXCEPTION` carrying `message`: an org's own
    /// validation rule that q2c cannot satisfy.
    Validation {
        /// The object's API name, e.g. `Opportunity`.
        object: String,
        /// The rule's error message (a generic one when empty).
        #[serde(default)]
        message: String,
        /// On or off.
        on: bool,
    },
    /// Stall, duplicate, garble, refusals and every REST switch off.
    /// (Expired tokens and replay ids stay expired; API limits stay as
    /// they are.)
    Clear,
}

impl Fault {
    /// The console path that injects this fault.
    pub fn path(&self) -> &'static str {
        match self {
            Self::ExpireTokens => "/local/faults/expire-tokens",
            Self::Unavailable { .. } => "/local/faults/unavailable",
            Self::Stall { .. } => "/local/faults/stall",
            Self::Duplicate { .. } => "/local/faults/duplicate",
            Self::Garble { .. } => "/local/faults/garble",
            Self::ExpireReplayIds => "/local/faults/expire-replay-ids",
            Self::RestUnavailable { .. } => "/local/faults/rest-unavailable",
            Self::RestDown { .. } => "/local/faults/rest-down",
            Self::LockRow { .. } => "/local/faults/lock-row",
            Self::Validation { .. } => "/local/faults/validation",
            Self::Clear => "/local/faults/clear",
        }
    }

    /// The JSON body that goes with [`Fault::path`].
    pub fn body(&self) -> serde_json::Value {
        match self {
            Self::Unavailable { count }
            | Self::RestUnavailable { count }
            | Self::LockRow { count } => serde_json::json!({ "count": count }),
            Self::Stall { on }
            | Self::Duplicate { on }
            | Self::Garble { on }
            | Self::RestDown { on } => {
                serde_json::json!({ "on": on })
            }
            Self::Validation {
                object,
                message,
                on,
            } => serde_json::json!({ "object": object, "message": message, "on": on }),
            Self::ExpireTokens | Self::ExpireReplayIds | Self::Clear => serde_json::json!({}),
        }
    }
}

/// The switches as streams see them: streams watch this and re-check
/// themselves on every change.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultState {
    pub stall: bool,
    pub duplicate: bool,
    pub garble: bool,
    /// Bumped by every `Unavailable`: streams opened before end.
    pub unavailable_epoch: u64,
    /// Bumped by every `ExpireTokens`: streams re-check their token.
    pub token_epoch: u64,
    pub refuse_subscribes: u32,
    /// REST calls still to refuse with 503.
    pub rest_unavailable: u32,
    /// Every REST call answers 503.
    pub rest_down: bool,
    /// REST record writes still to refuse as locked.
    pub lock_row: u32,
    /// Objects whose REST writes a validation rule refuses, with its message.
    pub validation: BTreeMap<String, String>,
}

/// The message of the `validation` switch when none is given.
pub(crate) const DEFAULT_VALIDATION_MESSAGE: &str =
    "This record cannot be saved: a validation rule of the org refused it";
