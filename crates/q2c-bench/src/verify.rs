//! Whether the run did what it should: every workflow reached the expected
//! outcome, every effect happened exactly once, nothing was left unsent or
//! dead-lettered. Figures from a run that fails here are not printed.

use std::collections::{BTreeMap, HashMap};

use q2c_sim::{LedgerEntry, LedgerEvent};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Error;

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Workflows that reached the expected outcome.
    pub workflows: usize,
    /// The outcome every one reached.
    pub outcome: String,
    /// Effects in the connectors' ledger: exactly one per step and workflow.
    pub effects: usize,
    /// Command deliveries the connectors saw (more than the commands when
    /// the broker redelivered).
    pub deliveries: usize,
    /// Of those, persistent (delivery mode 2).
    pub persistent_deliveries: usize,
    /// Replies the connectors published (confirmed by the broker).
    pub replies: usize,
}

/// What the database says about the run's workflows.
pub struct Stored {
    /// Every workflow's status.
    pub statuses: HashMap<Uuid, String>,
    /// Commands not confirmed by the broker.
    pub unsent: i64,
    /// Messages that could not be processed.
    pub dead_letters: i64,
}

impl Stored {
    /// Reads it, for every workflow in the database (`only: None`) or for
    /// those given.
    pub async fn read(pool: &PgPool, only: Option<&[Uuid]>) -> Result<Self, Error> {
        let database = |source| Error::Database {
            doing: "reading the run's outcome",
            source,
        };
        let statuses: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, status FROM workflows WHERE $1::uuid[] IS NULL OR id = ANY($1)",
        )
        .bind(only)
        .fetch_all(pool)
        .await
        .map_err(database)?;
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await
            .map_err(database)?;
        let dead_letters: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(pool)
            .await
            .map_err(database)?;
        Ok(Self {
            statuses: statuses.into_iter().collect(),
            unsent,
            dead_letters,
        })
    }
}

/// Checks that exactly the workflows `started` ran, each to `outcome`, and
/// that each of them caused one effect per command in `commands`.
pub fn check(
    started: &[Uuid],
    outcome: &str,
    commands: &[String],
    stored: &Stored,
    ledger: &[LedgerEntry],
) -> Result<Verified, Vec<String>> {
    let mut problems = Vec::new();
    if stored.statuses.len() != started.len() {
        problems.push(format!(
            "{} workflows were started but the database holds {}",
            started.len(),
            stored.statuses.len()
        ));
    }
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for id in started {
        let status = stored.statuses.get(id).map_or("missing", String::as_str);
        *by_status.entry(status).or_default() += 1;
    }
    let reached = by_status.get(outcome).copied().unwrap_or_default();
    if reached != started.len() {
        problems.push(format!(
            "{reached} of {} workflows reached `{outcome}`; by status: {by_status:?}",
            started.len()
        ));
    }
    if stored.unsent > 0 {
        problems.push(format!(
            "{} commands were never confirmed sent",
            stored.unsent
        ));
    }
    if stored.dead_letters > 0 {
        problems.push(format!(
            "{} messages were dead-lettered",
            stored.dead_letters
        ));
    }

    let mut effects: HashMap<(Uuid, &str), usize> = HashMap::new();
    let (mut deliveries, mut persistent, mut replies, mut total_effects) = (0, 0, 0, 0);
    for entry in ledger {
        match &entry.event {
            LedgerEvent::Delivery { persistent: is } => {
                deliveries += 1;
                persistent += usize::from(*is);
            }
            LedgerEvent::Effect { .. } => {
                total_effects += 1;
                *effects
                    .entry((entry.workflow_id, entry.command_type.as_str()))
                    .or_default() += 1;
            }
            LedgerEvent::Reply { .. } => replies += 1,
        }
    }
    let mut wrong = 0;
    for id in started {
        for command in commands {
            let count = effects.get(&(*id, command.as_str())).copied().unwrap_or(0);
            if count != 1 {
                wrong += 1;
                if wrong <= 5 {
                    problems.push(format!(
                        "workflow {id}: `{command}` took effect {count} times, not once"
                    ));
                }
            }
        }
    }
    if wrong > 5 {
        problems.push(format!("... {} more effects not exactly once", wrong - 5));
    }
    let expected = started.len() * commands.len();
    if total_effects != expected {
        problems.push(format!(
            "the ledger holds {total_effects} effects, not the {expected} expected"
        ));
    }
    if problems.is_empty() {
        Ok(Verified {
            workflows: started.len(),
            outcome: outcome.to_owned(),
            effects: total_effects,
            deliveries,
            persistent_deliveries: persistent,
            replies,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(workflow: Uuid, command: &str, event: LedgerEvent) -> LedgerEntry {
        LedgerEntry {
            at: chrono::Utc::now(),
            event,
            connector: "erp".into(),
            message_id: Uuid::now_v7(),
            command_type: command.into(),
            idempotency_key: format!("{workflow}:step:r1"),
            attempt: 1,
            workflow_id: workflow,
            step: "step".into(),
            undoes: None,
        }
    }

    fn effect(workflow: Uuid, command: &str) -> Vec<LedgerEntry> {
        vec![
            entry(
                workflow,
                command,
                LedgerEvent::Delivery { persistent: true },
            ),
            entry(
                workflow,
                command,
                LedgerEvent::Effect {
                    effect: q2c_sim::EffectKind::OrderCreated,
                    outcome: None,
                },
            ),
            entry(
                workflow,
                command,
                LedgerEvent::Reply {
                    reply_type: format!("{command}.succeeded"),
                    retryable: None,
                    cached: false,
                },
            ),
        ]
    }

    fn stored(statuses: &[(Uuid, &str)]) -> Stored {
        Stored {
            statuses: statuses
                .iter()
                .map(|(id, status)| (*id, (*status).to_owned()))
                .collect(),
            unsent: 0,
            dead_letters: 0,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let commands = vec!["erp.create_order".to_owned(), "payment.collect".to_owned()];
        let ledger: Vec<_> = [a, b]
            .iter()
            .flat_map(|id| commands.iter().flat_map(|command| effect(*id, command)))
            .collect();
        let verified = check(
            &[a, b],
            "completed",
            &commands,
            &stored(&[(a, "completed"), (b, "completed")]),
            &ledger,
        )
        .unwrap();
        assert_eq!((verified.workflows, verified.effects), (2, 4));
        assert_eq!(verified.persistent_deliveries, 4);
    }

    #[test]
    fn a_double_effect_a_missing_one_or_a_wrong_outcome_fails() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let commands = vec!["erp.create_order".to_owned()];
        let mut ledger = effect(a, "erp.create_order");
        ledger.extend(effect(a, "erp.create_order"));
        let problems = check(
            &[a, b],
            "completed",
            &commands,
            &stored(&[(a, "completed"), (b, "suspended")]),
            &ledger,
        )
        .unwrap_err()
        .join("\n");
        assert!(
            problems.contains("1 of 2 workflows reached `completed`"),
            "{problems}"
        );
        assert!(problems.contains(&format!(
            "workflow {a}: `erp.create_order` took effect 2 times"
        )));
        assert!(problems.contains(&format!(
            "workflow {b}: `erp.create_order` took effect 0 times"
        )));
    }

    #[test]
    fn leftovers_fail() {
        let a = Uuid::now_v7();
        let commands = vec!["erp.create_order".to_owned()];
        let mut leftovers = stored(&[(a, "completed")]);
        leftovers.unsent = 1;
        leftovers.dead_letters = 2;
        let problems = check(
            &[a],
            "completed",
            &commands,
            &leftovers,
            &effect(a, "erp.create_order"),
        )
        .unwrap_err()
        .join("\n");
        assert!(problems.contains("1 commands were never confirmed sent"));
        assert!(problems.contains("2 messages were dead-lettered"));
    }
}
