//! The saga: one workflow instance driving a quote through its steps.
//!
//! [`Saga`] is the only door to the state machine in [`machine`]: start one,
//! hand it events with the current time, and carry out the [`Effect`]s it
//! returns. It never performs IO, reads the clock or draws random numbers,
//! so the same record and event always give the same decision.

mod action;
mod effect;
mod event;
mod held;
mod machine;
mod progress;
mod record;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use statig::prelude::*;

pub use action::{Action, Request, UnknownAction, merge_patch};
pub use effect::{Command, CommandRole, Effect, HistoryEntry, HistoryKind, TimerId, TimerKind};
pub use event::{Event, Reply, ReplyResult, Resume};
pub use held::{HeldEvent, HeldFailure};
pub use progress::{
    Attention, CompensationProgress, CompensationStatus, Earlier, EarlierRevision, Happened,
    Outcome, Phase, Status, StepProgress, StepStatus, SuspendReason, UnknownEarlier,
};
pub use record::{
    DefinitionRecord, Error as RecordError, RECORD_VERSION, SagaRecord, StateRecord, ThenRecord,
    UndoingRecord,
};

use crate::definition::Definition;
use crate::domain::ids::{IdempotencyKey, WorkflowId};
use crate::domain::quote::Quote;
use machine::{Ctx, Machine, Signal, Verdict};

/// One workflow instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Saga {
    machine: InitializedStateMachine<Machine>,
}

/// What one event led to.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the event changed anything.
    pub disposition: Disposition,
    /// What to carry out, in order; empty unless the event was applied.
    pub effects: Vec<Effect>,
}

/// Whether an event was applied. Ignored and refused events change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The saga moved on.
    Applied,
    /// A duplicate, stale or unrelated reply or timer: nothing to do.
    Ignored {
        /// Why, for logs.
        reason: String,
    },
    /// A request that cannot be honoured in the current state.
    Refused {
        /// Why, for the requester.
        reason: String,
    },
}

/// The command a saga is waiting on, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// The step.
    pub step: String,
    /// Performing or undoing it.
    pub phase: Phase,
    /// The attempt sent.
    pub attempt: u32,
    /// Its idempotency key.
    pub key: IdempotencyKey,
}

impl Saga {
    /// Starts a workflow for a quote: the first step's command goes out.
    pub fn start(
        workflow_id: WorkflowId,
        definition: Arc<Definition>,
        quote: Quote,
        now: DateTime<Utc>,
    ) -> (Self, Vec<Effect>) {
        let steps = definition
            .steps()
            .iter()
            .map(|step| StepProgress::new(&step.name))
            .collect();
        let machine = Machine {
            definition,
            workflow_id,
            quote,
            steps,
            outcome: None,
            cancel_requested: false,
            suspend_pending: false,
            attention: None,
            paused: false,
            held: Vec::new(),
            undoing: None,
        };
        let mut context = Ctx::new(now);
        let mut machine = machine
            .uninitialized_state_machine()
            .init_with_context(&mut context);
        machine.handle_with_context(&Signal::Start, &mut context);
        (Self { machine }, context.effects)
    }

    /// Applies one event at time `now`.
    ///
    /// An unpause applies the events held while paused right after it, in
    /// the same decision; those that no longer matter are ignored as they
    /// would have been on arrival. Timers scheduled while paused are frozen
    /// as soon as they are stored.
    pub fn handle(&mut self, event: &Event, now: DateTime<Utc>) -> Decision {
        let mut context = Ctx::new(now);
        self.machine
            .handle_with_context(&Signal::Event(event.clone()), &mut context);
        for held in std::mem::take(&mut context.released) {
            let verdict = std::mem::replace(&mut context.verdict, Verdict::Applied);
            self.machine
                .handle_with_context(&Signal::Event(held.event()), &mut context);
            context.verdict = verdict;
        }
        let scheduled = context
            .effects
            .iter()
            .any(|effect| matches!(effect, Effect::ScheduleTimer { .. }));
        if self.paused() && scheduled {
            context.effects.push(Effect::FreezeTimers);
        }
        let disposition = match context.verdict {
            Verdict::Applied => Disposition::Applied,
            Verdict::Ignored(reason) => Disposition::Ignored { reason },
            Verdict::Refused(reason) => Disposition::Refused { reason },
        };
        Decision {
            disposition,
            effects: context.effects,
        }
    }

    /// The workflow's id.
    pub fn workflow_id(&self) -> WorkflowId {
        self.machine.inner().workflow_id
    }

    /// The definition this instance runs (pinned at its start).
    pub fn definition(&self) -> &Definition {
        &self.machine.inner().definition
    }

    /// The same definition, shared: for restoring other instances of it
    /// without parsing it again ([`Saga::restore_with`]).
    pub fn shared_definition(&self) -> &Arc<Definition> {
        &self.machine.inner().definition
    }

    /// The quote being fulfilled.
    pub fn quote(&self) -> &Quote {
        &self.machine.inner().quote
    }

    /// Where the workflow stands.
    pub fn status(&self) -> Status {
        machine::status(self.machine.state())
    }

    /// How the money flow ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.machine.inner().outcome
    }

    /// Progress of every step, in definition order.
    pub fn steps(&self) -> &[StepProgress] {
        &self.machine.inner().steps
    }

    /// Whether a cancel was requested.
    pub fn cancel_requested(&self) -> bool {
        self.machine.inner().cancel_requested
    }

    /// Whether an operator paused the workflow.
    pub fn paused(&self) -> bool {
        self.machine.inner().paused
    }

    /// Replies and timers that arrived while paused, to apply on unpause.
    pub fn held(&self) -> &[HeldEvent] {
        &self.machine.inner().held
    }

    /// What an operator may do now; the saga refuses the other actions.
    pub fn allowed_actions(&self) -> Vec<Action> {
        machine::allowed_actions(self.machine.inner(), self.machine.state())
    }

    /// The step the workflow is at (performing or undoing it), until it
    /// ends.
    pub fn current_step(&self) -> Option<(&str, Phase)> {
        let (step, phase) = machine::current_step(self.machine.state())?;
        let name = self.machine.inner().definition.step(step)?.name.as_str();
        Some((name, phase))
    }

    /// Whether the workflow had ended and is undoing an effect found done
    /// since (a late success): it ends again, with the same outcome, once
    /// that is undone.
    pub fn reopened_after_end(&self) -> bool {
        self.machine
            .inner()
            .undoing
            .as_ref()
            .is_some_and(|undo| undo.then == machine::Then::Finish)
    }

    /// Whether a new revision of the step the workflow is at (a resume
    /// with a changed input, or a skip) needs the operator to say what
    /// became of its current attempt: one went unanswered, so it may have
    /// taken effect.
    pub fn needs_earlier(&self) -> bool {
        let inner = self.machine.inner();
        let halted = self.status() == Status::Suspended;
        match machine::current_step(self.machine.state()) {
            Some((step, Phase::Step)) if halted => inner.steps.get(step).is_some_and(|progress| {
                progress.possibly_done && progress.status != StepStatus::Succeeded
            }),
            _ => false,
        }
    }

    /// Set when a deadline or a late reply flagged the workflow for an
    /// operator.
    pub fn attention(&self) -> Option<&Attention> {
        self.machine.inner().attention.as_ref()
    }

    /// The command the workflow is waiting on, if one is in flight.
    pub fn in_flight(&self) -> Option<InFlight> {
        let (step, phase, attempt) = machine::in_flight(self.machine.state())?;
        let inner = self.machine.inner();
        let name = inner.definition.step(step)?.name.clone();
        let key = match phase {
            Phase::Step => {
                let revision = inner.steps.get(step)?.revision;
                IdempotencyKey::for_command(inner.workflow_id, &name, revision)
            }
            Phase::Compensation => IdempotencyKey::for_compensation(
                inner.workflow_id,
                &name,
                inner.undo_revision(step),
            ),
        };
        Some(InFlight {
            step: name,
            phase,
            attempt,
            key,
        })
    }
}
