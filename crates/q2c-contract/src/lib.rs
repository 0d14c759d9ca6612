//! The message contract between q2c and its connectors.
//!
//! Everything a process needs to speak to the others over RabbitMQ, and
//! nothing else: the [`envelope`] every command and reply travels in, the
//! reply payloads, and the broker [`topology`] that every process declares
//! identically. It depends on neither the saga core nor the adapters, so a
//! connector can use it without pulling in the orchestrator (and a connector
//! in another language can follow `docs/message-contract.md` instead).

pub mod envelope;
pub mod reply;
pub mod topology;

pub use envelope::{Envelope, Failure, ReplyKind, SCHEMA_VERSION};
pub use topology::{DOMAINS, Topology};
