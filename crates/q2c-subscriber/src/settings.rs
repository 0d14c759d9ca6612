//! What the subscriber needs to know: where Salesforce is, how to log in,
//! which topics to follow, and how patient to be.

use std::time::Duration;

use q2c_salesforce::recovery::Backoff;
use q2c_store::positions::Position;

use q2c_salesforce_auth::Credentials;

/// What a topic's events mean to q2c.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `Q2C_Quote_Accepted__e`: start a workflow.
    QuoteAccepted,
    /// `Q2C_Quote_Cancelled__e`: cancel the quote's workflow.
    QuoteCancelled,
}

/// One topic to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// e.g. `/event/Q2C_Quote_Accepted__e`.
    pub name: String,
    /// What its events mean.
    pub kind: EventKind,
}

/// What to do when Salesforce says the stored replay id is expired or
/// invalid. Never LATEST: that would skip events silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayIdPolicy {
    /// Start again from the oldest retained event; events already handled
    /// are recognised by their event id and start nothing twice.
    Earliest,
    /// Stop following the topic until an operator moves its position.
    Stop,
}

impl ReplayIdPolicy {
    /// Reads `earliest` or `stop`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "earliest" => Ok(Self::Earliest),
            "stop" => Ok(Self::Stop),
            _ => Err(format!("`{text}` is not `earliest` or `stop`")),
        }
    }

    /// The stable name shown and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Stop => "stop",
        }
    }
}

/// The subscriber's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Pub/Sub API endpoint, e.g. `https://api.pubsub.salesforce.com:7443`.
    pub pubsub_url: String,
    /// The org's login URL (its My Domain, or `https://login.salesforce.com`).
    pub login_url: String,
    /// How to obtain access tokens.
    pub credentials: Credentials,
    /// The topics to follow, each on its own stream.
    pub topics: Vec<Topic>,
    /// Where a topic with no stored position starts.
    pub first_start: Position,
    /// What an expired or invalid stored replay id leads to.
    pub on_unusable_replay_id: ReplayIdPolicy,
    /// How long a stream with events requested may stay silent (no event,
    /// no keepalive) before it is replaced. Salesforce keeps alive within
    /// 270 s.
    pub stall_after: Duration,
    /// Events requested but not yet committed, at most (1 to 100).
    pub outstanding: u32,
    /// Reconnect pacing.
    pub backoff: Backoff,
}

impl Settings {
    /// The default topics of q2c's platform events.
    pub fn default_topics() -> Vec<Topic> {
        vec![
            Topic {
                name: q2c_salesforce::QUOTE_ACCEPTED_CHANNEL.to_owned(),
                kind: EventKind::QuoteAccepted,
            },
            Topic {
                name: q2c_salesforce::QUOTE_CANCELLED_CHANNEL.to_owned(),
                kind: EventKind::QuoteCancelled,
            },
        ]
    }
}
