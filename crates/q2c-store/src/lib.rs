//! The Postgres adapter: where sagas live between events.
//!
//! Every transition is one transaction: lock the workflow row, run the saga
//! core, then write the new state, its history, the commands to publish
//! (outbox), the timers, and the id of the message that caused it (inbox),
//! and commit. A crash at any instant leaves all of it or none of it.
//!
//! # Layout
//!
//! - [`workflows`]: starting workflows and applying events to them.
//! - [`outbox`]: claiming commands to publish, with a lease, and marking
//!   them sent once the broker has confirmed them.
//! - [`timers`]: finding timers that are due.
//! - [`dead_letters`]: keeping messages that could not be processed, and
//!   marking them replayed or discarded, audited.
//! - [`intake`]: admitting platform events once each, with the stream
//!   position they came from.
//! - [`queries`]: listing workflows and reading their history.
//! - [`operators`]: operator actions on one workflow, and their audit trail.
//! - [`bulk`]: one action over many workflows, planned by a dry run and run
//!   as a durable job.
//! - [`idempotency`]: answers to requests that carried an idempotency key.
//! - [`positions`]: positions in Salesforce event streams, and their moves.
//! - [`topic_locks`]: one subscriber per Salesforce topic across processes.
//! - [`record`]: how a saga record is split between its row and the
//!   content-addressed definition table.
//!
//! Several processes may share one database: rows are locked (`FOR UPDATE`,
//! `SKIP LOCKED` where work is claimed), and every workflow row carries a
//! version bumped by each transition.

pub mod bulk;
pub mod dead_letters;
pub mod idempotency;
pub mod intake;
pub mod operators;
pub mod outbox;
pub mod positions;
pub mod queries;
mod record;
mod references;
pub mod timers;
pub mod topic_locks;
pub mod workflows;

use std::sync::Arc;

use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use workflows::{Applied, Started, Trigger};

/// The schema, embedded in every binary that links this crate.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// The channel commits notify when they add commands to the outbox, so
/// relays in other processes wake at once instead of at their next poll.
pub const OUTBOX_CHANNEL: &str = "q2c_outbox";

/// The channel commits notify when they schedule timers.
pub const TIMERS_CHANNEL: &str = "q2c_timers";

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    MIGRATOR.run(pool).await.map_err(Error::Migrate)
}

/// Handle to the database; cheap to clone. Clones share the pool and the
/// hand-over to this process's relay.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    handoff: Arc<outbox::Handoff>,
}

impl Store {
    /// Wraps a pool; the schema must already be migrated.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            handoff: Arc::default(),
        }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where this process's commits hand their commands to its relay.
    pub fn handoff(&self) -> &outbox::Handoff {
        &self.handoff
    }
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached or refused a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be migrated.
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No workflow has this id.
    #[error("no workflow {0}")]
    UnknownWorkflow(uuid::Uuid),
    /// The quote already has a workflow that has not finished.
    #[error("quote {quote_id} already has a live workflow {workflow_id}")]
    QuoteHasLiveWorkflow {
        /// The quote.
        quote_id: String,
        /// Its live workflow.
        workflow_id: uuid::Uuid,
    },
    /// A reply whose type no step of the workflow's definition answers with.
    #[error("workflow {workflow_id} expects no reply of type `{reply_type}`")]
    UnknownReplyType {
        /// The workflow.
        workflow_id: uuid::Uuid,
        /// The reply's type.
        reply_type: String,
    },
    /// An admitted event's stored answer is unreadable.
    #[error("intake event {event_uuid} has an unreadable outcome `{outcome}`")]
    CorruptIntake {
        /// The event.
        event_uuid: String,
        /// What is stored.
        outcome: String,
    },
    /// An operator moved the topic's position after the subscriber read its
    /// epoch: nothing of the transaction was kept, and the subscriber must
    /// start again from the operator's position.
    #[error("the position of {topic} was moved by an operator; start the subscription again")]
    PositionMoved {
        /// The Salesforce topic.
        topic: String,
    },
    /// A stored position is neither a replay id nor a preset.
    #[error("the stored position of {topic} is unreadable")]
    CorruptPosition {
        /// The Salesforce topic.
        topic: String,
    },
    /// A stored bulk job cannot be read back.
    #[error("bulk job {id} is unreadable: {reason}")]
    CorruptJob {
        /// The job.
        id: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// A stored record could not be read back; the row needs a person.
    #[error("workflow {workflow_id}: stored record is unreadable: {reason}")]
    CorruptRecord {
        /// The workflow.
        workflow_id: uuid::Uuid,
        /// What is wrong with it.
        reason: String,
    },
}
