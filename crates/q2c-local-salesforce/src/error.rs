//! The crate's one error type.

use std::{net::SocketAddr, path::PathBuf};

/// Everything that can go wrong starting, running or talking to a local
/// Salesforce, so callers can tell a busy port from a refused event.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable; names the setting so a person can fix it.
    #[error("invalid setting {setting}: {reason}")]
    Config {
        /// The setting's name, as in [`crate::Config`] or the `serve` flags.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The JWT public key is not an RSA public key in PEM.
    #[error("the JWT public key is not an RSA public key in PEM: {0}")]
    JwtKey(#[source] jsonwebtoken::errors::Error),

    /// One of the platform events' Avro schemas does not parse: a build of
    /// `q2c-pubsub` is broken.
    #[error("the Avro schema of {event} does not parse: {source}")]
    Schema {
        /// The event's API name.
        event: &'static str,
        /// Why the schema was refused.
        #[source]
        source: Box<apache_avro::Error>,
    },

    /// A listening socket could not be opened (usually: the port is taken).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why the operating system refused.
        #[source]
        source: std::io::Error,
    },

    /// The gRPC server stopped with an error.
    #[error("the Pub/Sub API server failed: {0}")]
    Grpc(#[source] tonic::transport::Error),

    /// The HTTP server (token endpoint and console) stopped with an error.
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),

    /// A server task panicked: a bug in this crate.
    #[error("a server task of the local Salesforce panicked: {0}")]
    Panicked(#[source] tokio::task::JoinError),

    /// A file named on the command line could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },

    /// The event given to publish is not a JSON object.
    #[error("the event's fields are not a JSON object: {0}")]
    NotJson(String),

    /// There is no such platform event in this org.
    #[error("unknown platform event {0:?} (known: Q2C_Quote_Accepted__e, Q2C_Quote_Cancelled__e)")]
    UnknownEvent(String),

    /// The event's fields do not fit its schema (or its id is not a UUID);
    /// the message names the fields.
    #[error("{0}")]
    InvalidEvent(String),

    /// There is no such object with records in this org.
    #[error("unknown object {0:?} (known: Opportunity, Q2C_Quote_Status__c)")]
    UnknownObject(String),

    /// A record's fields do not fit its object; the message is
    /// Salesforce's, naming the field.
    #[error("{0}")]
    InvalidRecord(String),

    /// A record of this id exists already.
    #[error("a {object} record with id {id} exists already")]
    RecordExists {
        /// The object's API name.
        object: String,
        /// The record's id.
        id: String,
    },

    /// The local Salesforce could not be reached over HTTP.
    #[error("cannot reach the local Salesforce at {url}: {source}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport failure.
        #[source]
        source: reqwest::Error,
    },

    /// The local Salesforce answered with an error.
    #[error("the local Salesforce refused ({status}): {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The answer's body, which says why.
        body: String,
    },
}
