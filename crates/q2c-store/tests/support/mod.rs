//! What the store's test files share: the shipped definition, a fixed
//! clock, and workflow ids by number.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use uuid::Uuid;

/// The shipped quote-to-cash definition.
pub fn definition() -> Arc<Definition> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../workflows/quote-to-cash.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    Arc::new(Definition::parse(path, &text).unwrap())
}

/// The tests' "now".
pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Workflow number `n`.
pub fn workflow(n: u128) -> WorkflowId {
    WorkflowId::new(Uuid::from_u128(n))
}
