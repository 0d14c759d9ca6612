//! Identifier newtypes.
//!
//! Every identifier that crosses a system boundary gets its own type so that a
//! quote id can never be passed where an account id is expected, and so that
//! malformed ids are rejected once, at the edge, instead of deep inside a
//! connector call.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier was rejected; each variant names the offending value so
/// the operator can find it in the source record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// A Salesforce record id had the wrong length or alphabet.
    #[error("{kind} `{value}` is not a Salesforce id: expected 15 or 18 letters and digits")]
    NotSalesforceId {
        /// Which id was being parsed, e.g. "quote id".
        kind: &'static str,
        /// The rejected text.
        value: String,
    },
    /// A UUID-based id did not parse as a UUID.
    #[error("{kind} `{value}` is not a UUID")]
    NotUuid {
        /// Which id was being parsed, e.g. "workflow id".
        kind: &'static str,
        /// The rejected text.
        value: String,
    },
    /// An idempotency key was empty.
    #[error("idempotency key must not be empty")]
    EmptyIdempotencyKey,
    /// An idempotency key exceeded the connector-side column width.
    #[error("idempotency key is {len} characters long, at most 255 are allowed")]
    IdempotencyKeyTooLong {
        /// Length of the rejected key in characters.
        len: usize,
    },
    /// An idempotency key contained characters that connectors may mangle.
    #[error("idempotency key `{value}` contains whitespace or control characters")]
    IdempotencyKeyCharacters {
        /// The rejected key.
        value: String,
    },
}

/// Identifies one workflow instance; it is the root of every derived key, so
/// it must be stable across restarts and replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkflowId(Uuid);

impl WorkflowId {
    /// Wraps a UUID minted by the caller; the core has no randomness source,
    /// so generation happens at the edge.
    #[must_use]
    pub const fn new(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// Exposes the UUID for storage layers that have a native UUID column.
    #[must_use]
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for WorkflowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for WorkflowId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| IdError::NotUuid {
            kind: "workflow id",
            value: s.to_owned(),
        })
    }
}

/// Checks the shape shared by all Salesforce record ids (15-character
/// case-sensitive or 18-character case-insensitive form).
fn validate_salesforce_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    let well_formed =
        matches!(value.len(), 15 | 18) && value.bytes().all(|b| b.is_ascii_alphanumeric());
    if well_formed {
        Ok(())
    } else {
        Err(IdError::NotSalesforceId {
            kind,
            value: value.to_owned(),
        })
    }
}

/// Defines a validated Salesforce record id newtype; one definition keeps the
/// three id types behaviourally identical.
macro_rules! salesforce_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates untrusted text; this is the only way to obtain the id.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                validate_salesforce_id($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            /// Borrows the id for building API paths and queries.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                validate_salesforce_id($kind, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

salesforce_id!(
    /// The CPQ quote that started the workflow; used to read it back and to
    /// write status updates onto it.
    QuoteId,
    "quote id"
);

salesforce_id!(
    /// The customer account; ERP and billing records are keyed off it.
    AccountId,
    "account id"
);

salesforce_id!(
    /// The opportunity the quote belongs to; closed-won updates target it.
    OpportunityId,
    "opportunity id"
);

/// Fixed namespace for deriving command ids, so every deployment derives the
/// same id from the same key.
const COMMAND_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2b7e_9a43_4d5e_8c21_7a2c_5e0d_9b31);

/// Identifies one command message. It is derived, never random: replaying the
/// same transition yields the same command id, so the outbox insert is
/// idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(Uuid);

impl CommandId {
    /// Derives the id of the `attempt`-th send of the command keyed by `key`
    /// (UUID v5), so retries get distinct ids while replays do not.
    #[must_use]
    pub fn for_attempt(key: &IdempotencyKey, attempt: u32) -> Self {
        let name = format!("{key}#{attempt}");
        Self(Uuid::new_v5(&COMMAND_NAMESPACE, name.as_bytes()))
    }

    /// Exposes the UUID for storage layers that have a native UUID column.
    #[must_use]
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// Longest idempotency key connectors are required to store.
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// The key a connector uses to deduplicate side effects; it is derived from
/// the workflow, step and revision so a retried command never acts twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Key for the forward action of `step`; `revision` changes when the
    /// workflow deliberately re-runs a step with new input.
    #[must_use]
    pub fn for_command(workflow: WorkflowId, step: &str, revision: u32) -> Self {
        Self(format!("{workflow}:{step}:r{revision}"))
    }

    /// Key for undoing `step`; distinct from the forward key so the connector
    /// does not mistake the compensation for a duplicate of the action.
    #[must_use]
    pub fn for_compensation(workflow: WorkflowId, step: &str, revision: u32) -> Self {
        Self(format!("{workflow}:{step}:r{revision}:compensate"))
    }

    /// Accepts a key carried back in a connector reply; keys are compared, not
    /// decomposed, so only the transport-safety rules are checked.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        if value.is_empty() {
            return Err(IdError::EmptyIdempotencyKey);
        }
        let len = value.chars().count();
        if len > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(IdError::IdempotencyKeyTooLong { len });
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(IdError::IdempotencyKeyCharacters {
                value: value.to_owned(),
            });
        }
        Ok(Self(value.to_owned()))
    }

    /// Borrows the key for headers and database columns.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IdempotencyKey {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn workflow() -> WorkflowId {
        "7c9e6679-7425-40de-944b-e07fc1f90ae7".parse().unwrap()
    }

    #[test]
    fn workflow_id_round_trips_through_text_and_json() {
        let id = workflow();
        assert_eq!(id.to_string(), "7c9e6679-7425-40de-944b-e07fc1f90ae7");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"7c9e6679-7425-40de-944b-e07fc1f90ae7\"");
        assert_eq!(serde_json::from_str::<WorkflowId>(&json).unwrap(), id);
        assert_eq!(WorkflowId::new(*id.as_uuid()), id);
    }

    #[test]
    fn workflow_id_rejects_non_uuid() {
        let err = "nope".parse::<WorkflowId>().unwrap_err();
        assert_eq!(err.to_string(), "workflow id `nope` is not a UUID");
    }

    #[test]
    fn salesforce_ids_accept_15_and_18_characters() {
        assert_eq!(
            QuoteId::parse("a0q5e00000ABCDE").unwrap().as_str(),
            "a0q5e00000ABCDE"
        );
        let id = AccountId::parse("0015e00000ABCDEFGH").unwrap();
        assert_eq!(id.to_string(), "0015e00000ABCDEFGH");
        assert!(OpportunityId::parse("0065e00000ABCDEFGH").is_ok());
    }

    #[test]
    fn salesforce_ids_reject_bad_shapes_naming_the_kind() {
        for bad in [
            "",
            "a0q5e00000ABCD",
            "a0q5e00000ABCDEF",
            "a0q5e00000ABCD-FGH",
            "a0q5e00000ABCDEFGHI",
            "a0q5e00000ABCDEFGé",
        ] {
            assert!(QuoteId::parse(bad).is_err(), "{bad}");
        }
        let err = AccountId::parse("short").unwrap_err();
        assert_eq!(
            err.to_string(),
            "account id `short` is not a Salesforce id: expected 15 or 18 letters and digits"
        );
        let err = OpportunityId::parse("x").unwrap_err();
        assert!(err.to_string().starts_with("opportunity id `x`"));
    }

    #[test]
    fn salesforce_ids_serialize_as_strings_and_validate_on_deserialize() {
        let id = QuoteId::parse("a0q5e00000ABCDEFGH").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"a0q5e00000ABCDEFGH\"");
        assert_eq!(serde_json::from_str::<QuoteId>(&json).unwrap(), id);
        let err = serde_json::from_str::<QuoteId>("\"bad id\"").unwrap_err();
        assert!(err.to_string().contains("quote id `bad id`"), "{err}");
    }

    #[test]
    fn idempotency_key_formats() {
        let wf = workflow();
        let key = IdempotencyKey::for_command(wf, "create_invoice", 2);
        assert_eq!(
            key.as_str(),
            "7c9e6679-7425-40de-944b-e07fc1f90ae7:create_invoice:r2"
        );
        let comp = IdempotencyKey::for_compensation(wf, "create_invoice", 2);
        assert_eq!(
            comp.to_string(),
            "7c9e6679-7425-40de-944b-e07fc1f90ae7:create_invoice:r2:compensate"
        );
        assert_eq!(
            serde_json::to_string(&key).unwrap(),
            "\"7c9e6679-7425-40de-944b-e07fc1f90ae7:create_invoice:r2\""
        );
        assert_eq!(IdempotencyKey::parse(key.as_str()).unwrap(), key);
    }

    #[test]
    fn idempotency_key_parse_rules() {
        assert!(IdempotencyKey::parse("abc:def").is_ok());
        assert_eq!(IdempotencyKey::parse(""), Err(IdError::EmptyIdempotencyKey));
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(256)),
            Err(IdError::IdempotencyKeyTooLong { len: 256 })
        );
        for bad in ["a b", "a\tb", "a\nb", "a\u{7}b"] {
            assert!(matches!(
                IdempotencyKey::parse(bad),
                Err(IdError::IdempotencyKeyCharacters { .. })
            ));
        }
    }

    #[test]
    fn command_id_is_deterministic_per_key_and_attempt() {
        let key = IdempotencyKey::for_command(workflow(), "create_order", 0);
        let first = CommandId::for_attempt(&key, 1);
        assert_eq!(first, CommandId::for_attempt(&key, 1));
        assert_ne!(first, CommandId::for_attempt(&key, 2));
        let other = IdempotencyKey::for_compensation(workflow(), "create_order", 0);
        assert_ne!(first, CommandId::for_attempt(&other, 1));
        assert_eq!(first.as_uuid().get_version_num(), 5);
        assert_eq!(
            *first.as_uuid(),
            Uuid::new_v5(&COMMAND_NAMESPACE, format!("{key}#1").as_bytes())
        );
        let json = serde_json::to_string(&first).unwrap();
        assert_eq!(json, format!("\"{first}\""));
        assert_eq!(serde_json::from_str::<CommandId>(&json).unwrap(), first);
    }

    #[test]
    fn command_id_is_stable_across_releases() {
        // Pinned value (cross-checked with Python's uuid.uuid5): changing the namespace or the name format would break
        // outbox idempotency for workflows in flight during an upgrade.
        let key = IdempotencyKey::parse("wf:step:r0").unwrap();
        let id = CommandId::for_attempt(&key, 0);
        assert_eq!(id.to_string(), "e99b9f93-9399-572e-a7d5-102e1b342fd7");
    }
}
