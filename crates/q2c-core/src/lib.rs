//! The pure core of q2c: what a quote is, what a workflow definition says,
//! and how a saga decides its next move.
//!
//! # Layout
//!
//! - [`domain`]: identifiers, money and the accepted quote, valid by
//!   construction.
//! - [`definition`]: declarative workflow definitions (TOML), parsed and
//!   validated into a model.
//! - [`saga`]: the saga state machine (built with `statig`) and its
//!   persisted record.
//!
//! Nothing here performs IO, reads the clock or depends on an async
//! runtime, database, broker or web framework: adapters do that around it.

pub mod definition;
pub mod domain;
pub mod saga;
