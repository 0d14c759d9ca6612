//! The persisted form of a saga: a versioned record with explicit names.
//!
//! The statig state enum is an implementation detail whose variant names
//! follow function names; what is stored is [`StateRecord`], whose names are
//! pinned here, so renaming Rust code never changes stored data. Steps are
//! referred to by name, not position. The definition text and its hash go
//! with every record, so an instance keeps running the definition it started
//! with even after the file changes.
//!
//! Compatibility rule: a record written by any released version must load.
//! `tests/fixtures/records/` holds records as earlier versions wrote them.
//!
//! Versions:
//! - 1: the first.
//! - 2: the `terminated` state, the `paused` flag with the events `held`
//!   while paused, and each step's `earlier_revisions`. A version 1 record
//!   reads as not paused, holding nothing, with no earlier revisions.
//! - 3: what each earlier revision is known to have done (`happened`), its
//!   late `output`, its own `compensation` and what the operator who
//!   replaced it `declared` of it; each step's `done_late`; the
//!   `undoing` of a compensation outside the plain reverse walk; a
//!   deadline-less `attention`. A version 2 earlier revision reads as
//!   possibly done if it sent anything, not done otherwise, and not undone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use super::Saga;
use super::held::HeldEvent;
use super::machine::{Machine, State, Then, Undo};
use super::progress::{Attention, Happened, Outcome, Phase, StepProgress, SuspendReason};
use crate::definition::{self, Definition, DefinitionHash};
use crate::domain::ids::WorkflowId;
use crate::domain::quote::Quote;

/// The record version this code writes; it reads this one and all earlier.
pub const RECORD_VERSION: u32 = 3;

/// Everything needed to resume a saga, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRecord {
    /// Format version of this record.
    pub record_version: u32,
    /// The workflow.
    pub workflow_id: WorkflowId,
    /// The definition the workflow runs, pinned at its start.
    pub definition: DefinitionRecord,
    /// The quote being fulfilled.
    pub quote: Quote,
    /// Where the machine stands.
    pub state: StateRecord,
    /// How the money flow ended, once it has.
    pub outcome: Option<Outcome>,
    /// A cancel was requested and is applied or pending.
    pub cancel_requested: bool,
    /// A deadline asked to suspend once the command in flight settles.
    pub suspend_pending: bool,
    /// Flagged for an operator's attention by a deadline.
    pub attention: Option<Attention>,
    /// Paused by an operator (since version 2).
    #[serde(default)]
    pub paused: bool,
    /// Replies and timers that arrived while paused (since version 2).
    #[serde(default)]
    pub held: Vec<HeldEvent>,
    /// The compensation under way when it is not the current revision's in
    /// the reverse walk (since version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoing: Option<UndoingRecord>,
    /// Progress of each step, in definition order.
    pub steps: Vec<StepProgress>,
}

/// A compensation of an earlier revision, or one run outside the
/// compensation of the whole workflow: the revision it undoes (of the step
/// the state names) and where the workflow goes once it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UndoingRecord {
    /// The revision undone.
    pub revision: u32,
    /// What follows its success.
    pub then: ThenRecord,
}

/// Where a workflow goes once such a compensation is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to")]
pub enum ThenRecord {
    /// On with the compensation of the whole workflow.
    #[serde(rename = "compensate")]
    Compensate,
    /// Send the attempt of this step that was about to leave.
    #[serde(rename = "send_step")]
    SendStep {
        /// The step.
        step: String,
    },
    /// Back to the step an operator is needed for.
    #[serde(rename = "suspend")]
    Suspend {
        /// The halted step.
        step: String,
        /// Why it halted.
        reason: SuspendReason,
    },
    /// Back to the end the workflow had reached.
    #[serde(rename = "finish")]
    Finish,
    /// On to the end the workflow was reaching.
    #[serde(rename = "end")]
    End,
}

/// The definition a record runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefinitionRecord {
    /// Its name.
    pub name: String,
    /// SHA-256 of `source`.
    pub hash: DefinitionHash,
    /// The full TOML text. A store that keeps it elsewhere (once per hash)
    /// may leave it out (empty, not written) and restore with
    /// [`Saga::restore_with`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// The machine's state under stable names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name")]
pub enum StateRecord {
    /// A step's command is in flight.
    #[serde(rename = "executing")]
    Executing {
        /// The step.
        step: String,
        /// The attempt in flight.
        attempt: u32,
    },
    /// A backoff timer runs before the next attempt.
    #[serde(rename = "waiting_to_retry")]
    WaitingToRetry {
        /// The step.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// Whether the step or its compensation is retried.
        phase: Phase,
    },
    /// A compensation is in flight.
    #[serde(rename = "compensating")]
    Compensating {
        /// The step being undone.
        step: String,
        /// The attempt in flight.
        attempt: u32,
    },
    /// Halted for an operator.
    #[serde(rename = "suspended")]
    Suspended {
        /// The halted step.
        step: String,
        /// Whether the step or its compensation is halted.
        phase: Phase,
        /// Why.
        reason: SuspendReason,
    },
    /// Terminal.
    #[serde(rename = "completed")]
    Completed,
    /// Terminal.
    #[serde(rename = "compensated")]
    Compensated,
    /// Terminal.
    #[serde(rename = "failed")]
    Failed,
    /// Terminal.
    #[serde(rename = "cancelled")]
    Cancelled,
    /// Terminal (since version 2).
    #[serde(rename = "terminated")]
    Terminated,
}

/// Why a record cannot be turned back into a saga.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Written by a newer q2c.
    #[error("record version {found} is newer than this q2c understands (up to {RECORD_VERSION})")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// The definition text does not match its hash: the record was altered.
    #[error("definition `{name}`: its text hashes to {actual}, not to the recorded {expected}")]
    HashMismatch {
        /// The definition's name.
        name: String,
        /// The recorded hash.
        expected: DefinitionHash,
        /// The hash of the recorded text.
        actual: DefinitionHash,
    },
    /// The pinned definition no longer parses.
    #[error("the recorded definition is invalid: {0}")]
    Definition(#[from] definition::Error),
    /// The step list does not match the definition's steps.
    #[error("the record's steps ({recorded}) do not match the definition's ({defined})")]
    StepsMismatch {
        /// Step names in the record.
        recorded: String,
        /// Step names in the definition.
        defined: String,
    },
    /// The state names a step the definition does not have.
    #[error("the state refers to unknown step `{0}`")]
    UnknownStep(String),
}

impl Saga {
    /// Rebuilds a saga from its record, re-parsing the pinned definition.
    pub fn restore(record: SagaRecord) -> Result<Self, Error> {
        if record.record_version > RECORD_VERSION {
            return Err(Error::UnsupportedVersion {
                found: record.record_version,
            });
        }
        let actual = DefinitionHash::of(&record.definition.source);
        if actual != record.definition.hash {
            return Err(Error::HashMismatch {
                name: record.definition.name,
                expected: record.definition.hash,
                actual,
            });
        }
        let origin = format!("definition `{}` ({})", record.definition.name, actual);
        let definition = Arc::new(Definition::parse(&origin, &record.definition.source)?);
        Self::restore_with(record, definition)
    }

    /// Rebuilds a saga from its record and its definition, already parsed
    /// (and its text checked against its hash) when an earlier record of
    /// the same definition was restored: the record's own copy of the text
    /// is not read.
    pub fn restore_with(record: SagaRecord, definition: Arc<Definition>) -> Result<Self, Error> {
        if record.record_version > RECORD_VERSION {
            return Err(Error::UnsupportedVersion {
                found: record.record_version,
            });
        }
        if record.definition.hash != *definition.hash() {
            return Err(Error::HashMismatch {
                name: record.definition.name,
                expected: record.definition.hash,
                actual: definition.hash().clone(),
            });
        }
        let recorded: Vec<&str> = record.steps.iter().map(|step| step.name.as_str()).collect();
        let defined: Vec<&str> = definition
            .steps()
            .iter()
            .map(|step| step.name.as_str())
            .collect();
        if recorded != defined {
            return Err(Error::StepsMismatch {
                recorded: recorded.join(", "),
                defined: defined.join(", "),
            });
        }
        let state = state_from_record(&record.state, &definition)?;
        let undoing = record
            .undoing
            .as_ref()
            .map(|undoing| undo_from_record(undoing, &definition))
            .transpose()?;
        let mut steps = record.steps;
        if record.record_version < 3 {
            for earlier in steps
                .iter_mut()
                .flat_map(|step| &mut step.earlier_revisions)
            {
                if earlier.attempts == 0 {
                    earlier.happened = Happened::NotDone;
                }
            }
        }
        let machine = Machine {
            definition,
            workflow_id: record.workflow_id,
            quote: record.quote,
            steps,
            outcome: record.outcome,
            cancel_requested: record.cancel_requested,
            suspend_pending: record.suspend_pending,
            attention: record.attention,
            paused: record.paused,
            held: record.held,
            undoing,
        };
        let mut uninitialized = machine.uninitialized_state_machine();
        *uninitialized.state_mut() = state;
        // The machine has no entry actions, so initialising it emits nothing.
        let mut throwaway = super::machine::Ctx::new(chrono::DateTime::UNIX_EPOCH);
        let machine = uninitialized.init_with_context(&mut throwaway);
        Ok(Self { machine })
    }

    /// The record to store after a transition.
    pub fn record(&self) -> SagaRecord {
        let machine = self.machine.inner();
        SagaRecord {
            record_version: RECORD_VERSION,
            workflow_id: machine.workflow_id,
            definition: DefinitionRecord {
                name: machine.definition.name().to_owned(),
                hash: machine.definition.hash().clone(),
                source: machine.definition.source().to_owned(),
            },
            quote: machine.quote.clone(),
            state: state_to_record(self.machine.state(), &machine.definition),
            outcome: machine.outcome,
            cancel_requested: machine.cancel_requested,
            suspend_pending: machine.suspend_pending,
            attention: machine.attention.clone(),
            paused: machine.paused,
            held: machine.held.clone(),
            undoing: machine
                .undoing
                .as_ref()
                .map(|undo| undo_to_record(undo, &machine.definition)),
            steps: machine.steps.clone(),
        }
    }
}

fn step_name(definition: &Definition, step: usize) -> String {
    definition
        .step(step)
        .map(|spec| spec.name.clone())
        .unwrap_or_default()
}

fn undo_to_record(undo: &Undo, definition: &Definition) -> UndoingRecord {
    UndoingRecord {
        revision: undo.revision,
        then: match undo.then {
            Then::Compensate => ThenRecord::Compensate,
            Then::SendStep(step) => ThenRecord::SendStep {
                step: step_name(definition, step),
            },
            Then::Suspend(step, reason) => ThenRecord::Suspend {
                step: step_name(definition, step),
                reason,
            },
            Then::Finish => ThenRecord::Finish,
            Then::End => ThenRecord::End,
        },
    }
}

fn undo_from_record(record: &UndoingRecord, definition: &Definition) -> Result<Undo, Error> {
    let index = |step: &String| {
        definition
            .step_index(step)
            .ok_or_else(|| Error::UnknownStep(step.clone()))
    };
    Ok(Undo {
        revision: record.revision,
        then: match &record.then {
            ThenRecord::Compensate => Then::Compensate,
            ThenRecord::SendStep { step } => Then::SendStep(index(step)?),
            ThenRecord::Suspend { step, reason } => Then::Suspend(index(step)?, *reason),
            ThenRecord::Finish => Then::Finish,
            ThenRecord::End => Then::End,
        },
    })
}

fn state_to_record(state: &State, definition: &Definition) -> StateRecord {
    let name = |step: &usize| {
        definition
            .step(*step)
            .map(|spec| spec.name.clone())
            .unwrap_or_default()
    };
    match state {
        // `Saga::start` hands the start signal over before returning, and no
        // transition leads back, so a saga is never observed in this state.
        State::NotStarted {} => unreachable!("a saga is started before it can be recorded"),
        State::Executing { step, attempt } => StateRecord::Executing {
            step: name(step),
            attempt: *attempt,
        },
        State::WaitingToRetry {
            step,
            attempt,
            phase,
        } => StateRecord::WaitingToRetry {
            step: name(step),
            attempt: *attempt,
            phase: *phase,
        },
        State::Compensating { step, attempt } => StateRecord::Compensating {
            step: name(step),
            attempt: *attempt,
        },
        State::Suspended {
            step,
            phase,
            reason,
        } => StateRecord::Suspended {
            step: name(step),
            phase: *phase,
            reason: *reason,
        },
        State::Completed {} => StateRecord::Completed,
        State::Compensated {} => StateRecord::Compensated,
        State::Failed {} => StateRecord::Failed,
        State::Cancelled {} => StateRecord::Cancelled,
        State::Terminated {} => StateRecord::Terminated,
    }
}

fn state_from_record(record: &StateRecord, definition: &Definition) -> Result<State, Error> {
    let index = |step: &String| {
        definition
            .step_index(step)
            .ok_or_else(|| Error::UnknownStep(step.clone()))
    };
    Ok(match record {
        StateRecord::Executing { step, attempt } => State::Executing {
            step: index(step)?,
            attempt: *attempt,
        },
        StateRecord::WaitingToRetry {
            step,
            attempt,
            phase,
        } => State::WaitingToRetry {
            step: index(step)?,
            attempt: *attempt,
            phase: *phase,
        },
        StateRecord::Compensating { step, attempt } => State::Compensating {
            step: index(step)?,
            attempt: *attempt,
        },
        StateRecord::Suspended {
            step,
            phase,
            reason,
        } => State::Suspended {
            step: index(step)?,
            phase: *phase,
            reason: *reason,
        },
        StateRecord::Completed => State::Completed {},
        StateRecord::Compensated => State::Compensated {},
        StateRecord::Failed => State::Failed {},
        StateRecord::Cancelled => State::Cancelled {},
        StateRecord::Terminated => State::Terminated {},
    })
}
