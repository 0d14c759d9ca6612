//! The message contract between q2c and its connectors.
//!
//! Everything a process needs to speak to the others over RabbitMQ, and
//! nothing else: the [`envelope`] every command and reply travels in, the
//! reply payloads, and the broker [`topology`] that every process declares
//! identically; [`publish`], publishing one message confirmed and routed,
//! and [`properties`], a message's AMQP properties kept as JSON and
//! restored exactly. It depends on neither the saga core nor the adapters,
//! so a connector can use it without pulling in the orchestrator (and a
//! connector in another language can follow `docs/message-contract.md`
//! instead).

pub mod envelope;
pub mod properties;
pub mod publish;
pub mod reply;
pub mod topology;

pub use envelope::{Envelope, Failure, ReplyKind, SCHEMA_VERSION};
pub use topology::{DOMAINS, Topology};
