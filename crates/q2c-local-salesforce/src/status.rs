//! What `GET /local/status` answers: enough for a test to assert how a
//! client behaved (how many streams it held open at once, how often it
//! subscribed, how many tokens it asked for, how many REST calls it spent
//! and what it wrote).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The state of a local Salesforce, for tests and for a person watching it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The org id.
    pub org_id: String,
    /// Access tokens issued so far (both flows).
    pub tokens_issued: u64,
    /// Subscribe calls so far, including refused ones and those that never
    /// named a topic.
    pub subscribe_calls: u64,
    /// Per topic name (`/event/...`).
    pub topics: BTreeMap<String, TopicStatus>,
    /// The REST API: calls, budget, writes.
    pub rest: RestStatus,
    /// The fault switches now.
    pub faults: FaultStatus,
}

/// What the REST API was asked, so a test can assert how many calls a
/// client spent and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestStatus {
    /// REST calls counted against the budget since start (a composite is
    /// one), however the budget was set meanwhile.
    pub api_calls: u64,
    /// The budget's calls used, as `Sforce-Limit-Info` reports it.
    pub api_usage: u64,
    /// The budget's calls allowed.
    pub api_max: u64,
    /// REST calls refused before they were read, by error code
    /// (`SERVER_UNAVAILABLE`, `INVALID_SESSION_ID`, `REQUEST_LIMIT_EXCEEDED`).
    pub refused: BTreeMap<String, u64>,
    /// Record writes made over REST per object (those rolled back by an
    /// all-or-none composite not counted).
    pub writes: BTreeMap<String, u64>,
    /// Records kept per object, however they were made.
    pub records: BTreeMap<String, u64>,
    /// Platform events published over REST per event.
    pub published: BTreeMap<String, u64>,
}

/// One topic's events and streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStatus {
    /// The id of the topic's schema.
    pub schema_id: String,
    /// Events retained now.
    pub events: u64,
    /// Events published since start, retained or not.
    pub published: u64,
    /// The latest replay id given out, in hex; `None` before the first event.
    pub latest_replay_id: Option<String>,
    /// Streams open on the topic now.
    pub open_streams: u32,
    /// The most streams ever open on the topic at once: a client that never
    /// holds two subscriptions keeps this at 1.
    pub max_open_streams: u32,
    /// Subscribe calls that named this topic.
    pub subscribe_calls: u64,
}

/// The fault switches, as `/local/faults/*` set them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStatus {
    /// Streams send nothing at all.
    pub stall: bool,
    /// Every delivered event is delivered twice.
    pub duplicate: bool,
    /// Events published now get a payload cut short.
    pub garble: bool,
    /// How many more Subscribe calls will be refused as unavailable.
    pub refuse_subscribes: u32,
    /// How many more REST calls will answer 503.
    pub rest_unavailable: u32,
    /// Every REST call answers 503.
    pub rest_down: bool,
    /// How many more REST record writes will fail as locked.
    pub lock_row: u32,
    /// Objects whose REST writes a validation rule refuses, with its message.
    pub validation: BTreeMap<String, String>,
}
