//! A faithful local Salesforce for development and tests: the Pub/Sub API
//! (gRPC, `eventbus.v1.PubSub`), the OAuth token endpoint, and a console to
//! publish platform events and inject the faults real Salesforce shows.
//!
//! It shares only the `.proto` and the events' Avro schemas (both from
//! `q2c-pubsub`) with q2c's subscriber, so the subscriber is tested against
//! an independent reading of Salesforce's contract, not against itself.
//!
//! # Layout
//!
//! - `config`: [`Config`], what a local Salesforce is started with.
//! - `catalog`: the org's platform events, their schemas, stable schema ids
//!   ([`schema_id`]) and the Avro encoding of events given as JSON.
//! - `bus`: one log per topic: replay ids, retention, wake-ups, counters.
//! - `auth`: access tokens, client-credentials and JWT bearer flows.
//! - `grpc`: the service: metadata checks, GetTopic, GetSchema, Publish, and
//!   Salesforce-shaped errors. `subscription`: one Subscribe stream.
//! - `faults`: [`Fault`], the switches. `status`: [`StatusReport`].
//! - `http`: the token endpoint and the console. `client`: a Rust client of
//!   the console. `cli`: `serve` and `publish`. `server`: [`start`] and the
//!   [`LocalSalesforce`] handle.
//!
//! # The Pub/Sub API
//!
//! Topics `/event/Q2C_Quote_Accepted__e` and `/event/Q2C_Quote_Cancelled__e`.
//! Every RPC needs metadata `accesstoken` (issued here, not expired),
//! `instanceurl` (the HTTP base URL) and `tenantid` (the org id), or fails
//! with `service.auth.error`. Errors are a status whose trailers carry
//! `error-code: sfdc.platform.eventbus.grpc.<code>` and `rpc-id`.
//!
//! Replay ids are 8-byte big-endian counters per topic from 1. Subscribe
//! reads the preset from the first FetchRequest only: LATEST delivers what is
//! published after subscribing, EARLIEST starts at the oldest retained event,
//! CUSTOM after the given replay id (none: `replayid.validation.failed`; not
//! 8 bytes, never given out, or left retention: `replayid.corrupted`).
//! `num_requested` adds up to at most 100 outstanding
//! (`fetch.requested.events.invalid` otherwise). A stream with events
//! requested and none to deliver gets an empty response carrying the topic's
//! latest replay id every keepalive interval; one with nothing requested and
//! no FetchRequest for the idle timeout is closed (it ends without an error). A stream ends with
//! `service.auth.error` when its token expires, and with
//! `subscription.fetch.replayid.corrupted` if the events it was about to
//! receive left retention. The `unavailable` switch refuses a Subscribe call
//! once its first FetchRequest has named the topic (the call itself
//! succeeds; its stream's first item is the error). `GetSchema` of an unknown
//! id answers `NotFound` with code `schema.not.found`. `PublishStream` and
//! `ManagedSubscribe` answer `Unimplemented`.
//!
//! # HTTP
//!
//! - `POST /services/oauth2/token`: form `grant_type=client_credentials`
//!   with `client_id` and `client_secret`, or
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an RS256
//!   `assertion` (`iss` client id, `sub` username, `aud`
//!   `https://login.salesforce.com`, `https://test.salesforce.com` or the
//!   server's own URL, `exp` in the future). 200 with `access_token`,
//!   `instance_url`, `id`, `token_type`, `issued_at`, `scope`; 400 with
//!   `error` (`invalid_grant`, `invalid_client`, `unsupported_grant_type`)
//!   and `error_description`.
//!
//! The console needs no token:
//!
//! - `POST /local/events/{event}[?id=<uuid>]` with a JSON object of fields
//!   in Salesforce names: 201 `{"id", "replay_id", "topic"}`; a field not in
//!   the schema is a 400 naming it. `CreatedDate` (RFC 3339) and
//!   `CreatedById` are filled in when absent.
//! - `GET /local/status`: per topic, events retained and published, latest
//!   replay id, open streams and the most ever open at once, Subscribe calls;
//!   tokens issued; the switches.
//!
//! # Fault switches
//!
//! `POST /local/faults/<name>` (or [`LocalSalesforce::apply`] with a
//! [`Fault`]):
//!
//! | name | body | effect |
//! |---|---|---|
//! | `expire-tokens` | | every token issued so far expires; open streams end with `service.auth.error` |
//! | `unavailable` | `{"count": n}` | open streams end with `service.unavailable`; the next n Subscribe calls are refused with it |
//! | `stall` | `{"on": bool}` | streams send nothing (no events, keepalives or idle close) yet stay open |
//! | `duplicate` | `{"on": bool}` | each delivered event comes twice in its response (same id, same replay id) |
//! | `garble` | `{"on": bool}` | events published meanwhile are stored with their Avro payload cut short (they no longer decode) |
//! | `expire-replay-ids` | | every event so far leaves retention: CUSTOM from their ids is `replayid.corrupted` |
//! | `clear` | | stall, duplicate, garble and refusals off |

mod auth;
mod bus;
mod catalog;
mod cli;
mod client;
mod config;
mod error;
mod faults;
mod grpc;
mod http;
mod server;
mod status;
mod subscription;

pub use bus::{decode_replay_id, encode_replay_id};
pub use catalog::{EVENT_NAMES, schema_id};
pub use cli::{Args, Command, EventKind, PublishArgs, run};
pub use client::{Published, apply_fault, publish, status};
pub use config::{
    Config, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR,
    DEFAULT_ORG_ID, DEFAULT_USER_ID, DEFAULT_USERNAME, Secret,
};
pub use error::Error;
pub use faults::Fault;
pub use grpc::ERROR_CODE_PREFIX;
pub use server::{LocalSalesforce, start};
pub use status::{FaultStatus, StatusReport, TopicStatus};
pub use subscription::MAX_OUTSTANDING;
