//! The fault switches: what a test (or a person) can make go wrong, the way
//! it goes wrong in real Salesforce.

use serde::{Deserialize, Serialize};

/// A fault to inject, by HTTP (`POST /local/faults/...`) or through
/// [`crate::LocalSalesforce::apply`]: one type for both, so the two stay the
/// same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Stall, duplicate, garble and refusals off. (Expired tokens and replay ids
    /// stay expired.)
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
            Self::Clear => "/local/faults/clear",
        }
    }

    /// The JSON body that goes with [`Fault::path`].
    pub fn body(&self) -> serde_json::Value {
        match self {
            Self::Unavailable { count } => serde_json::json!({ "count": count }),
            Self::Stall { on } | Self::Duplicate { on } | Self::Garble { on } => {
                serde_json::json!({ "on": on })
            }
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
}
