//! The TOML shape of a workflow definition file, exactly as written.
//!
//! These types only describe syntax; `validate` turns them into the model and
//! is the one place that decides what a well-formed workflow is.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub name: String,
    #[serde(default)]
    pub kind: RawKind,
    pub command: String,
    pub replies: Option<RawReplies>,
    pub timeout: String,
    pub retry: RawRetry,
    pub on_failure: Option<RawFailurePolicy>,
    pub compensation: Option<RawCompensation>,
    pub deadline: Option<RawDeadline>,
    #[serde(default)]
    pub input: BTreeMap<String, String>,
    #[serde(default)]
    pub output: BTreeMap<String, String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawKind {
    #[default]
    Action,
    Notification,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReplies {
    pub success: String,
    pub failure: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub max_attempts: u32,
    pub initial_backoff: String,
    pub max_backoff: String,
    #[serde(default = "default_multiplier")]
    pub multiplier: u32,
    #[serde(default)]
    pub jitter: f64,
}

fn default_multiplier() -> u32 {
    2
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawFailurePolicy {
    Compensate,
    Suspend,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCompensation {
    pub command: String,
    pub replies: Option<RawReplies>,
    pub timeout: Option<String>,
    pub retry: Option<RawRetry>,
    #[serde(default)]
    pub input: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeadline {
    pub after: String,
    pub escalation: RawEscalation,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawEscalation {
    Suspend,
    Flag,
}
