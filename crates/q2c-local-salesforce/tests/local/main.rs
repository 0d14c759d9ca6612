//! The local Salesforce from the outside: a real server on free ports,
//! spoken to with the tonic client generated in `q2c-pubsub` and with
//! plain HTTP, as q2c and a developer would.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
mod faults;
mod oauth;
mod pubsub;
mod rest;
