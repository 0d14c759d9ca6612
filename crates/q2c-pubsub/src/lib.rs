//! Salesforce's Pub/Sub API (package `eventbus.v1`), generated from
//! `proto/eventbus/v1/pubsub_api.proto`.
//!
//! The subscriber and the local Salesforce share this definition and the
//! platform events' Avro schemas ([`schemas`]), and nothing else of each
//! other's code.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("eventbus.v1");
}

pub use generated::*;

/// Where the `.proto` lives, for tools and tests that read it.
pub const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");

/// The Avro schemas of q2c's platform events, as Salesforce serves them from
/// `GetSchema`: the local Salesforce encodes with them, and tests of the
/// subscriber's decoding use them.
pub mod schemas {
    /// `Q2C_Quote_Accepted__e`.
    pub const QUOTE_ACCEPTED: &str = include_str!("../avro/Q2C_Quote_Accepted__e.avsc");

    /// `Q2C_Quote_Cancelled__e`.
    pub const QUOTE_CANCELLED: &str = include_str!("../avro/Q2C_Quote_Cancelled__e.avsc");
}
