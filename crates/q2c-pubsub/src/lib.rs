//! Salesforce's Pub/Sub API (package `eventbus.v1`), generated from
//! `proto/eventbus/v1/pubsub_api.proto`.
//!
//! The subscriber and the local Salesforce share this definition and nothing
//! else of each other's code.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("eventbus.v1");
}

pub use generated::*;

/// Where the `.proto` lives, for tools and tests that read it.
pub const PROTO_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
