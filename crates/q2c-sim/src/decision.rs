//! The contract's rules for connectors, as a pure function: one command and
//! what the connector remembers in, what to do (and remember) out.
//!
//! Deciding and recording happen in one call on `&mut Memory`, so a caller
//! holding the memory's lock decides each key's fate atomically: two
//! concurrent deliveries of one key can never both perform its effect.

use std::collections::{HashMap, HashSet};

use q2c_contract::{Envelope, Failure, ReplyKind};
use serde_json::{Value, json};

use crate::ledger::EffectKind;
use crate::sandbox::{self, Command, Outcome};

/// Why a random failure happened, for the people reading the reply.
pub(crate) const SIMULATED_OUTAGE: &str = "simulated outage (failure_rate): try again";
/// Why a command whose key was compensated first is refused.
pub(crate) const TOMBSTONED: &str = "compensated before it arrived";
/// Why a command type nobody knows is refused.
pub(crate) const UNKNOWN_TYPE: &str = "unknown command type";

/// What one connector remembers between deliveries.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// Successes and non-retryable failures, by idempotency key.
    replies: HashMap<String, Reply>,
    /// Keys whose effect was performed and not undone.
    performed: HashSet<String>,
    /// Keys compensated before they were performed: never perform them.
    tombstones: HashSet<String>,
}

/// The misbehaviours the decision applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Knobs {
    /// Probability of a retryable failure instead of performing.
    pub failure_rate: f64,
    /// Leave attempt 1 of every command unanswered.
    pub ignore_first_attempt: bool,
}

/// A reply's type and payload, as cached.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub kind: ReplyKind,
    pub payload: Value,
}

impl Reply {
    fn success(payload: Value) -> Self {
        Self {
            kind: ReplyKind::Succeeded,
            payload,
        }
    }

    fn failure(retryable: bool, reason: impl Into<String>) -> Self {
        let failure = Failure {
            retryable,
            reason: reason.into(),
        };
        Self {
            kind: ReplyKind::Failed,
            payload: serde_json::to_value(failure).unwrap_or_else(|_| json!({})),
        }
    }

    /// On a failure, whether it is retryable; `None` on a success.
    pub(crate) fn retryable(&self) -> Option<bool> {
        match self.kind {
            ReplyKind::Succeeded => None,
            ReplyKind::Failed => Some(self.payload["retryable"].as_bool().unwrap_or(false)),
        }
    }
}

/// An effect performed by this delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Effect {
    pub kind: EffectKind,
    /// For a status report, the outcome reported.
    pub outcome: Option<String>,
}

/// What to do with one delivery.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Ack it without a reply (a lost first attempt).
    Ignore,
    /// Publish this reply, then ack.
    Reply {
        reply: Reply,
        /// Served from the key's cached reply.
        cached: bool,
        /// The effect this delivery performed, if any.
        effect: Option<Effect>,
    },
}

impl Memory {
    /// Decides what to do with `command`, delivered to the `domain`
    /// connector, and remembers it. `roll` is a uniform draw from `[0, 1)`:
    /// below `knobs.failure_rate`, an action that would be performed answers
    /// a retryable failure instead.
    pub(crate) fn decide(
        &mut self,
        domain: &str,
        command: &Envelope,
        knobs: Knobs,
        roll: f64,
    ) -> Decision {
        if knobs.ignore_first_attempt && command.attempt == 1 {
            return Decision::Ignore;
        }
        let key = command.idempotency_key.as_str();
        if let Some(reply) = self.replies.get(key) {
            return Decision::Reply {
                reply: reply.clone(),
                cached: true,
                effect: None,
            };
        }
        if self.tombstones.contains(key) {
            return self.settle(key, Reply::failure(false, TOMBSTONED), None);
        }
        let Some(kind) = Command::parse(domain, &command.message_type) else {
            return self.settle(key, Reply::failure(false, UNKNOWN_TYPE), None);
        };
        if kind.is_compensation() {
            return self.compensate(kind, command);
        }
        if roll < knobs.failure_rate {
            // Not cached: a retry of the key is performed again.
            return Decision::Reply {
                reply: Reply::failure(true, SIMULATED_OUTAGE),
                cached: false,
                effect: None,
            };
        }
        match sandbox::perform(kind, key, &command.payload) {
            Outcome::Done { output, reported } => {
                self.performed.insert(key.to_owned());
                let effect = Effect {
                    kind: kind.effect(),
                    outcome: reported,
                };
                self.settle(key, Reply::success(output), Some(effect))
            }
            Outcome::Refused(reason) => self.settle(key, Reply::failure(false, reason), None),
        }
    }

    /// Undoes the key `undoes` names if it was performed; otherwise keeps a
    /// tombstone for it. Either way there is nothing left to undo: success.
    fn compensate(&mut self, kind: Command, command: &Envelope) -> Decision {
        let key = command.idempotency_key.as_str();
        let Some(undone) = command.undoes.as_deref() else {
            let reason = format!("{} without `undoes`: nothing to undo", command.message_type);
            return self.settle(key, Reply::failure(false, reason), None);
        };
        let effect = if self.performed.remove(undone) {
            Some(Effect {
                kind: kind.effect(),
                outcome: None,
            })
        } else {
            self.tombstones.insert(undone.to_owned());
            None
        };
        let Outcome::Done { output, .. } = sandbox::perform(kind, key, &command.payload) else {
            return self.settle(
                key,
                Reply::failure(false, "the sandbox refused to undo"),
                None,
            );
        };
        self.settle(key, Reply::success(output), effect)
    }

    /// Caches `reply` for `key` (only ever a success or a non-retryable
    /// failure) and answers with it.
    fn settle(&mut self, key: &str, reply: Reply, effect: Option<Effect>) -> Decision {
        self.replies.insert(key.to_owned(), reply.clone());
        Decision::Reply {
            reply,
            cached: false,
            effect,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;
    use chrono::DateTime;
    use uuid::Uuid;

    const CALM: Knobs = Knobs {
        failure_rate: 0.0,
        ignore_first_attempt: false,
    };
    const KEY: &str = "w:create_order:r1";

    fn command(command_type: &str, key: &str, attempt: u32, payload: Value) -> Envelope {
        Envelope {
            message_id: Uuid::from_u128(u128::from(attempt)),
            message_type: command_type.into(),
            schema_version: 1,
            workflow_id: Uuid::from_u128(7),
            step: "create_order".into(),
            attempt,
            idempotency_key: key.into(),
            undoes: None,
            correlation_id: Uuid::from_u128(u128::from(attempt)),
            sent_at: DateTime::UNIX_EPOCH,
            traceparent: None,
            payload,
        }
    }

    fn create(attempt: u32) -> Envelope {
        command(
            "erp.create_order",
            KEY,
            attempt,
            json!({"account_name": "Acme"}),
        )
    }

    fn cancel(attempt: u32) -> Envelope {
        let mut cancel = command(
            "erp.cancel_order",
            "w:create_order:r1:compensate",
            attempt,
            json!({"quote_id": "a0q5e00000ABCDEFGH", "order_id": null}),
        );
        cancel.undoes = Some(KEY.into());
        cancel
    }

    fn reply(decision: Decision) -> (Reply, bool, Option<Effect>) {
        match decision {
            Decision::Reply {
                reply,
                cached,
                effect,
            } => (reply, cached, effect),
            Decision::Ignore => panic!("no reply"),
        }
    }

    #[test]
    fn a_key_is_performed_once_then_answered_from_the_cache() {
        let mut memory = Memory::default();
        let first = memory.decide("erp", &create(1), CALM, 0.5);
        let (success, cached, effect) = reply(first);
        assert_eq!(success.kind, ReplyKind::Succeeded);
        assert!(!cached);
        assert_eq!(effect.unwrap().kind, EffectKind::OrderCreated);

        for attempt in [1, 2] {
            let again = memory.decide("erp", &create(attempt), CALM, 0.5);
            let (replayed, cached, effect) = reply(again);
            assert_eq!(replayed, success);
            assert!(cached);
            assert_eq!(effect, None);
        }
    }

    #[test]
    fn non_retryable_failures_are_cached() {
        let mut memory = Memory::default();
        let held = command(
            "erp.create_order",
            KEY,
            1,
            json!({"account_name": "Credit Hold Inc"}),
        );
        let (failure, cached, effect) = reply(memory.decide("erp", &held, CALM, 0.5));
        assert_eq!(failure.retryable(), Some(false));
        assert_eq!(failure.payload["reason"], "credit hold");
        assert!(!cached && effect.is_none());
        let again = memory.decide("erp", &held, CALM, 0.5);
        assert_eq!(reply(again), (failure, true, None));
    }

    #[test]
    fn retryable_failures_are_not_cached_and_perform_nothing() {
        let mut memory = Memory::default();
        let flaky = Knobs {
            failure_rate: 0.5,
            ..CALM
        };
        let failed = memory.decide("erp", &create(1), flaky, 0.49);
        let (failure, cached, effect) = reply(failed);
        assert_eq!(failure.retryable(), Some(true));
        assert_eq!(failure.payload["reason"], SIMULATED_OUTAGE);
        assert!(!cached && effect.is_none());

        let performed = memory.decide("erp", &create(2), flaky, 0.5);
        let (success, cached, effect) = reply(performed);
        assert_eq!(success.kind, ReplyKind::Succeeded);
        assert!(!cached && effect.is_some());

        // Once settled, the cache answers whatever the roll.
        let replayed = memory.decide("erp", &create(3), flaky, 0.0);
        assert!(reply(replayed).1);
    }

    #[test]
    fn compensations_never_fail_at_random() {
        let mut memory = Memory::default();
        let always = Knobs {
            failure_rate: 1.0,
            ..CALM
        };
        let (undone, _, _) = reply(memory.decide("erp", &cancel(1), always, 0.0));
        assert_eq!(undone.kind, ReplyKind::Succeeded);
        assert_eq!(undone.payload, json!({}));
    }

    #[test]
    fn a_compensation_undoes_what_was_performed() {
        let mut memory = Memory::default();
        memory.decide("erp", &create(1), CALM, 0.5);
        let undone = memory.decide("erp", &cancel(1), CALM, 0.5);
        let (success, cached, effect) = reply(undone);
        assert_eq!(success.kind, ReplyKind::Succeeded);
        assert!(!cached);
        assert_eq!(effect.unwrap().kind, EffectKind::OrderCancelled);
        // Its retry is answered from the cache, undoing nothing twice.
        assert_eq!(reply(memory.decide("erp", &cancel(2), CALM, 0.5)).2, None);
        // The command itself still answers its own cached success.
        let (forward, cached, _) = reply(memory.decide("erp", &create(2), CALM, 0.5));
        assert_eq!(forward.kind, ReplyKind::Succeeded);
        assert!(cached);
    }

    #[test]
    fn a_compensation_first_tombstones_the_command() {
        let mut memory = Memory::default();
        let undone = memory.decide("erp", &cancel(1), CALM, 0.5);
        let (success, _, effect) = reply(undone);
        assert_eq!(success.kind, ReplyKind::Succeeded);
        assert_eq!(effect, None);

        let late = memory.decide("erp", &create(1), CALM, 0.5);
        let (failure, cached, effect) = reply(late);
        assert_eq!(failure.retryable(), Some(false));
        assert_eq!(failure.payload["reason"], TOMBSTONED);
        assert!(!cached && effect.is_none());
        let again = memory.decide("erp", &create(2), CALM, 0.5);
        assert_eq!(reply(again), (failure, true, None));
    }

    #[test]
    fn a_compensation_of_a_failed_command_tombstones_it() {
        let mut memory = Memory::default();
        let flaky = Knobs {
            failure_rate: 1.0,
            ..CALM
        };
        memory.decide("erp", &create(1), flaky, 0.0);
        let (_, _, effect) = reply(memory.decide("erp", &cancel(1), CALM, 0.5));
        assert_eq!(effect, None);
        let late = memory.decide("erp", &create(2), CALM, 0.5);
        assert_eq!(reply(late).0.payload["reason"], TOMBSTONED);
    }

    #[test]
    fn unknown_types_fail_for_good() {
        let mut memory = Memory::default();
        for (domain, command_type) in [("erp", "erp.teleport_order"), ("erp", "payment.collect")] {
            let unknown = command(command_type, "k", 1, json!({}));
            let (failure, _, effect) = reply(memory.decide(domain, &unknown, CALM, 0.5));
            assert_eq!(failure.retryable(), Some(false));
            assert_eq!(failure.payload["reason"], UNKNOWN_TYPE);
            assert!(effect.is_none());
            memory = Memory::default();
        }
    }

    #[test]
    fn a_compensation_without_undoes_fails_for_good() {
        let mut memory = Memory::default();
        let mut orphan = cancel(1);
        orphan.undoes = None;
        let (failure, _, effect) = reply(memory.decide("erp", &orphan, CALM, 0.5));
        assert_eq!(failure.retryable(), Some(false));
        assert!(effect.is_none());
    }

    #[test]
    fn the_first_attempt_can_be_lost() {
        let mut memory = Memory::default();
        let lossy = Knobs {
            ignore_first_attempt: true,
            ..CALM
        };
        assert_eq!(
            memory.decide("erp", &create(1), lossy, 0.5),
            Decision::Ignore
        );
        let (success, cached, effect) = reply(memory.decide("erp", &create(2), lossy, 0.5));
        assert_eq!(success.kind, ReplyKind::Succeeded);
        assert!(!cached && effect.is_some());
    }

    #[test]
    fn status_reports_record_their_outcome() {
        let mut memory = Memory::default();
        let report = command(
            "salesforce.report_status",
            "w:report_status:r1",
            1,
            json!({"outcome": "failed"}),
        );
        let (success, _, effect) = reply(memory.decide("salesforce", &report, CALM, 0.5));
        assert_eq!(success.payload, json!({}));
        assert_eq!(
            effect,
            Some(Effect {
                kind: EffectKind::StatusReported,
                outcome: Some("failed".into())
            })
        );
    }
}
