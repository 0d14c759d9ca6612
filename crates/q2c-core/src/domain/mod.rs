//! The domain layer: identifiers, money and the accepted quote.
//!
//! Parse, don't validate: every type here can only be built through a
//! constructor (or deserializer) that checks it, so code holding a value never
//! re-checks it and invalid data stops at the system boundary. Nothing here
//! does IO or reads the clock.

pub mod ids;
pub mod money;
pub mod quote;

pub use ids::{AccountId, CommandId, IdError, IdempotencyKey, OpportunityId, QuoteId, WorkflowId};
pub use money::{Currency, Money, MoneyError, parse_decimal};
pub use quote::{FieldError, Quote, QuoteDraft, QuoteErrors, QuoteLine, QuoteLineDraft};
