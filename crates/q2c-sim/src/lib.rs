//! Simulated connectors for q2c: an ERP, a billing system, a payment
//! provider and Salesforce, each consuming its command queue and answering
//! the way the real systems' sandboxes would.
//!
//! The simulator speaks only the message contract (`docs/message-contract.md`,
//! through the `q2c-contract` crate), never the orchestrator's own crates, so
//! it exercises q2c exactly as a connector written by another team would. It
//! follows the contract's rules for connectors (deduplication on the
//! idempotency key, cached replies, tombstones, replies confirmed before the
//! command is acked) and keeps a [`ledger`] of every delivery, effect
//! and reply, so tests can prove that no effect happened twice.
//!
//! Sandbox values, as payment providers' test modes have them:
//!
//! - `payment.collect` succeeds with `payment_method` `pm_card_visa`; every
//!   other method (`pm_card_chargeDeclined` among them) is declined for good;
//! - `erp.create_order` is refused for good ("credit hold") when
//!   `account_name` contains `Credit Hold`;
//! - every other known command succeeds; an unknown command type fails for
//!   good.
//!
//! Knobs in [`SimSettings`] add latency, random retryable failures and lost
//! first attempts, to exercise the orchestrator's retries and timeouts.

mod connector;
mod decision;
mod error;
pub mod ledger;
mod sandbox;
mod settings;
mod sim;

pub use error::Error;
pub use ledger::{EffectKind, LedgerEntry, LedgerError, LedgerEvent, read_ledger};
pub use settings::{SettingsError, SimSettings};
pub use sim::{Sim, run};
