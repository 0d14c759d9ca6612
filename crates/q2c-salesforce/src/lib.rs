//! The Salesforce edge: platform events as Salesforce delivers them,
//! validated and transformed into the core's quote model.
//!
//! Salesforce owns the shapes here (`Quote_Id__c`, `Lines__c` as JSON text,
//! amounts as numbers or strings); nothing past this crate sees them. Amounts
//! are read from their JSON text, never through floating point, and every
//! problem is reported under the Salesforce field name it came from. Events
//! arrive as streaming-API JSON ([`quote_accepted`]) or as Pub/Sub Avro
//! ([`avro`]); both go through the same validation.

pub mod avro;
pub mod flow;
pub mod quote_accepted;
pub mod quote_cancelled;
pub mod recovery;

pub use quote_accepted::{FieldProblem, Invalid, QUOTE_ACCEPTED_CHANNEL, QuoteAccepted};
pub use quote_cancelled::{QUOTE_CANCELLED_CHANNEL, QuoteCancelled};
