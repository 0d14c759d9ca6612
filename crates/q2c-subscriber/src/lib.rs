//! The Salesforce Pub/Sub subscriber: platform events from Salesforce's
//! gRPC API into the same intake as `POST /api/v1/events`.
//!
//! One stream per topic. Each event's effect (a new workflow, a
//! cancellation, or a dead letter for an event that cannot be used) commits
//! in the same Postgres transaction as the topic's new position, in delivery
//! order, so the stored position never passes work that did not happen and a
//! restart resumes exactly after the last committed event. Events are
//! requested only as fast as they commit ([`q2c_salesforce::flow`]); a
//! stream that ends or goes silent is replaced with backoff
//! ([`q2c_salesforce::recovery`]).

pub mod settings;
pub mod status;

mod connection;
mod event;
mod schemas;
mod subscriber;
mod subscription;

pub use settings::{EventKind, ReplayIdPolicy, Settings, Topic};
pub use status::{StreamState, Subscriptions, TopicStatus};
pub use subscriber::{Error, Subscriber};
