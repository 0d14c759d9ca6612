//! What each topic's stream is doing, for `GET /api/v1/salesforce/subscriptions`
//! and `/metrics`: an operator sees at once whether q2c is hearing from
//! Salesforce, how far behind it is, and why it last reconnected.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// Another q2c process follows the topic; this one takes over when it
    /// goes away.
    Standby,
    /// Logging in or opening the stream.
    Connecting,
    /// The stream is open.
    Streaming,
    /// Waiting before the next attempt.
    Backoff,
    /// Given up until an operator acts (see `detail`).
    Stopped,
}

impl StreamState {
    /// Every state, for gauges that must reset the others.
    pub const ALL: [StreamState; 5] = [
        StreamState::Standby,
        StreamState::Connecting,
        StreamState::Streaming,
        StreamState::Backoff,
        StreamState::Stopped,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standby => "standby",
            Self::Connecting => "connecting",
            Self::Streaming => "streaming",
            Self::Backoff => "backoff",
            Self::Stopped => "stopped",
        }
    }
}

/// One topic's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicStatus {
    /// The topic.
    pub topic: String,
    /// What its stream is doing.
    pub state: StreamState,
    /// Why it is backing off or stopped.
    pub detail: Option<String>,
    /// Events received on it since start (duplicates included).
    pub events_received: u64,
    /// Of those, events set aside as dead letters.
    pub dead_letters: u64,
    /// Reconnects by cause since start.
    pub reconnects: BTreeMap<String, u64>,
    /// Seconds from the last started workflow's event creation in
    /// Salesforce to its commit here.
    pub last_lag_seconds: Option<f64>,
    /// The stored position (a replay id in hex, or a preset).
    pub position: Option<String>,
    /// When the stored position last moved.
    pub position_updated_at: Option<DateTime<Utc>>,
    /// Seconds since then, at the time of reading.
    pub position_age_seconds: Option<f64>,
}

/// Every topic's status, shared between the streams and the readers.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions(Arc<Mutex<BTreeMap<String, TopicStatus>>>);

impl Subscriptions {
    /// Every topic's status as of now.
    pub fn snapshot(&self) -> Vec<TopicStatus> {
        let now = Utc::now();
        let topics = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        topics
            .values()
            .cloned()
            .map(|mut status| {
                status.position_age_seconds = status
                    .position_updated_at
                    .map(|at| (now - at).num_milliseconds() as f64 / 1000.0);
                status
            })
            .collect()
    }

    pub(crate) fn update(&self, topic: &str, change: impl FnOnce(&mut TopicStatus)) {
        let mut topics = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let status = topics
            .entry(topic.to_owned())
            .or_insert_with(|| TopicStatus {
                topic: topic.to_owned(),
                state: StreamState::Connecting,
                detail: None,
                events_received: 0,
                dead_letters: 0,
                reconnects: BTreeMap::new(),
                last_lag_seconds: None,
                position: None,
                position_updated_at: None,
                position_age_seconds: None,
            });
        change(status);
    }

    pub(crate) fn set_state(&self, topic: &str, state: StreamState, detail: Option<String>) {
        for each in StreamState::ALL {
            metrics::gauge!("q2c_salesforce_stream_state", "topic" => topic.to_owned(), "state" => each.as_str())
                .set(if each == state { 1.0 } else { 0.0 });
        }
        self.update(topic, |status| {
            status.state = state;
            status.detail = detail;
        });
    }

    pub(crate) fn reconnected(&self, topic: &str, cause: &'static str) {
        metrics::counter!("q2c_salesforce_reconnects_total", "topic" => topic.to_owned(), "cause" => cause)
            .increment(1);
        self.update(topic, |status| {
            *status.reconnects.entry(cause.to_owned()).or_default() += 1;
        });
    }

    pub(crate) fn position_stored(&self, topic: &str, position: String, at: DateTime<Utc>) {
        self.update(topic, |status| {
            status.position = Some(position);
            status.position_updated_at = Some(at);
        });
    }
}
