//! Starting workflows and applying events to them, one transaction each.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use q2c_contract::{Envelope, SCHEMA_VERSION};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_core::domain::quote::Quote;
use q2c_core::saga::{Command, Disposition, Effect, Event, Phase, Saga, Status, TimerId};
use sqlx::{Acquire, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::record::{from_state, to_state};
use crate::references;
use crate::{Error, OUTBOX_CHANNEL, Store, TIMERS_CHANNEL};

/// What caused a transition, for deduplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A message from the broker: its id goes into the inbox in the same
    /// transaction, so a second delivery changes nothing.
    Message {
        /// The message's id.
        message_id: String,
    },
    /// A due timer: its row is deleted in the same transaction, so it fires
    /// once even when several processes see it due.
    Timer(TimerId),
    /// A request from a person or an API call: not deduplicated here.
    Request,
}

/// The result of applying an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The workflow moved on; its new status and version.
    Applied {
        /// Status after the transition.
        status: Status,
        /// Version after the transition.
        version: i64,
        /// Commands added to the outbox.
        commands: usize,
        /// The quote the workflow fulfils, for logs.
        quote_id: String,
        /// For a reply: the command type answered and how long after its
        /// commit the answer was applied.
        answered: Option<(String, std::time::Duration)>,
    },
    /// The saga ignored the event (stale, duplicate by content, unrelated);
    /// the message is still recorded as seen.
    Ignored {
        /// Why.
        reason: String,
    },
    /// The saga refused the request.
    Refused {
        /// Why, for the requester.
        reason: String,
    },
    /// The message id was already in the inbox, or the timer already fired.
    Duplicate,
}

/// A workflow that has just been started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Its id.
    pub workflow_id: WorkflowId,
    /// Its status after the first transition.
    pub status: Status,
}

/// A workflow as loaded from its row.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The saga.
    pub saga: Saga,
    /// Bumped by every transition.
    pub version: i64,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Store {
    /// Starts a workflow for a quote: stores it with its first command, in
    /// one transaction. Fails if the quote already has a live workflow.
    pub async fn start_workflow(
        &self,
        workflow_id: WorkflowId,
        definition: Arc<Definition>,
        quote: Quote,
        now: DateTime<Utc>,
    ) -> Result<Started, Error> {
        let mut tx = self.pool().begin().await?;
        let quote_id = quote.quote_id().as_str().to_owned();
        match start_in(&mut tx, workflow_id, definition, quote, now).await? {
            StartOutcome::Started(started) => {
                tx.commit().await?;
                Ok(started)
            }
            StartOutcome::QuoteHasLiveWorkflow(live) => Err(Error::QuoteHasLiveWorkflow {
                quote_id,
                workflow_id: *live.as_uuid(),
            }),
        }
    }

    /// Applies one event to one workflow in one transaction.
    pub async fn apply(
        &self,
        workflow_id: WorkflowId,
        event: &Event,
        trigger: &Trigger,
        now: DateTime<Utc>,
    ) -> Result<Applied, Error> {
        let mut tx = self.pool().begin().await?;
        let applied = apply_in(&mut tx, workflow_id, event, trigger, now).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Loads a workflow, if it exists.
    pub async fn load(&self, workflow_id: WorkflowId) -> Result<Option<Loaded>, Error> {
        let mut connection = self.pool().acquire().await?;
        load_row(&mut connection, workflow_id, false).await
    }
}

/// What starting a workflow inside a transaction came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// The workflow exists now, with its first command queued.
    Started(Started),
    /// The quote already has this live workflow; nothing was written.
    QuoteHasLiveWorkflow(WorkflowId),
}

/// Starts a workflow inside a caller's transaction. When the quote already
/// has a live workflow, says which, and the transaction stays usable.
pub async fn start_in(
    tx: &mut Transaction<'_, Postgres>,
    workflow_id: WorkflowId,
    definition: Arc<Definition>,
    quote: Quote,
    now: DateTime<Utc>,
) -> Result<StartOutcome, Error> {
    let (saga, effects) = Saga::start(workflow_id, definition, quote, now);
    sqlx::query(
        "INSERT INTO workflow_definitions (hash, name, source) VALUES ($1, $2, $3) \
         ON CONFLICT (hash) DO NOTHING",
    )
    .bind(saga.definition().hash().as_str())
    .bind(saga.definition().name())
    .bind(saga.definition().source())
    .execute(&mut **tx)
    .await?;

    let quote = saga.quote();
    // The live-quote index can refuse the row; a savepoint keeps the
    // caller's transaction usable when it does.
    let mut savepoint = tx.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO workflows (id, definition_hash, definition_name, quote_id, quote_number, \
         account_id, opportunity_id, status, outcome, state, version, created_at, updated_at, \
         current_step, state_since) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11, $12, $11)",
    )
    .bind(workflow_id.as_uuid())
    .bind(saga.definition().hash().as_str())
    .bind(saga.definition().name())
    .bind(quote.quote_id().as_str())
    .bind(quote.quote_number())
    .bind(quote.account_id().as_str())
    .bind(quote.opportunity_id().as_str())
    .bind(saga.status().as_str())
    .bind(saga.outcome().map(|outcome| outcome.as_str()))
    .bind(to_state(&saga.record())?)
    .bind(now)
    .bind(saga.current_step().map(|(step, _)| step))
    .execute(&mut *savepoint)
    .await;
    match inserted {
        Err(sqlx::Error::Database(error))
            if error.constraint() == Some("workflows_one_live_per_quote") =>
        {
            savepoint.rollback().await?;
            let (live,): (Uuid,) = sqlx::query_as(
                "SELECT id FROM workflows WHERE quote_id = $1 \
                 AND status NOT IN ('completed', 'compensated', 'failed', 'cancelled', 'terminated')",
            )
            .bind(quote.quote_id().as_str())
            .fetch_one(&mut **tx)
            .await?;
            return Ok(StartOutcome::QuoteHasLiveWorkflow(WorkflowId::new(live)));
        }
        Err(error) => return Err(error.into()),
        Ok(_) => savepoint.commit().await?,
    }

    write_effects(tx, workflow_id, &effects, now).await?;
    Ok(StartOutcome::Started(Started {
        workflow_id,
        status: saga.status(),
    }))
}

/// Applies an event inside a caller's transaction, so several can share one
/// commit. Locks the workflow row first, then deduplicates.
pub async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    workflow_id: WorkflowId,
    event: &Event,
    trigger: &Trigger,
    now: DateTime<Utc>,
) -> Result<Applied, Error> {
    let Some(mut loaded) = load_row(tx, workflow_id, true).await? else {
        return Err(Error::UnknownWorkflow(*workflow_id.as_uuid()));
    };
    match trigger {
        Trigger::Message { message_id } => {
            let fresh = sqlx::query(
                "INSERT INTO inbox (message_id, workflow_id, received_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(message_id)
            .bind(workflow_id.as_uuid())
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                return Ok(Applied::Duplicate);
            }
        }
        Trigger::Timer(timer) => {
            // A frozen timer (its workflow is paused) does not fire, even
            // if it was seen due just before the pause froze it.
            let due = sqlx::query(
                "DELETE FROM timers WHERE workflow_id = $1 AND timer_key = $2 AND remaining IS NULL",
            )
                .bind(workflow_id.as_uuid())
                .bind(timer.to_string())
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if due == 0 {
                return Ok(Applied::Duplicate);
            }
        }
        Trigger::Request => {}
    }

    if let Event::ReplyReceived(reply) = event
        && !loaded.saga.definition().knows_reply_type(&reply.reply_type)
    {
        return Err(Error::UnknownReplyType {
            workflow_id: *workflow_id.as_uuid(),
            reply_type: reply.reply_type.clone(),
        });
    }
    transition(tx, workflow_id, &mut loaded, event, now).await
}

/// Hands an event to a workflow loaded (and locked) in this transaction,
/// and writes what it decided; `loaded` is left as the workflow now is.
pub(crate) async fn transition(
    tx: &mut Transaction<'_, Postgres>,
    workflow_id: WorkflowId,
    loaded: &mut Loaded,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<Applied, Error> {
    let position_before = position(&loaded.saga);
    let outputs_before = references::outputs(&loaded.saga);
    let decision = loaded.saga.handle(event, now);
    match decision.disposition {
        Disposition::Ignored { reason } => return Ok(Applied::Ignored { reason }),
        Disposition::Refused { reason } => return Ok(Applied::Refused { reason }),
        Disposition::Applied => {}
    }
    let version = loaded.version + 1;
    let moved = position(&loaded.saga) != position_before;
    sqlx::query(
        "UPDATE workflows SET status = $2, outcome = $3, state = $4, version = $5, updated_at = $6, \
         paused = $7, current_step = $8, \
         state_since = CASE WHEN $9 THEN $6 ELSE state_since END WHERE id = $1",
    )
    .bind(workflow_id.as_uuid())
    .bind(loaded.saga.status().as_str())
    .bind(loaded.saga.outcome().map(|outcome| outcome.as_str()))
    .bind(to_state(&loaded.saga.record())?)
    .bind(version)
    .bind(now)
    .bind(loaded.saga.paused())
    .bind(loaded.saga.current_step().map(|(step, _)| step))
    .bind(moved)
    .execute(&mut **tx)
    .await?;
    references::record_changes(tx, workflow_id, &outputs_before, &loaded.saga).await?;
    loaded.version = version;
    loaded.updated_at = now;
    let commands = write_effects(tx, workflow_id, &decision.effects, now).await?;
    let answered = match event {
        Event::ReplyReceived(reply) => answered(tx, reply, now).await?,
        _ => None,
    };
    Ok(Applied::Applied {
        status: loaded.saga.status(),
        version,
        commands,
        quote_id: loaded.saga.quote().quote_id().to_string(),
        answered,
    })
}

/// Where a workflow stands, for "how long has it been there": its status
/// and the step it is performing or undoing.
fn position(saga: &Saga) -> (Status, Option<(String, Phase)>) {
    (
        saga.status(),
        saga.current_step()
            .map(|(step, phase)| (step.to_owned(), phase)),
    )
}

/// The command a reply answers, and how long it took: the command's id is
/// derived from its key and attempt, which the reply repeats.
async fn answered(
    tx: &mut PgConnection,
    reply: &q2c_core::saga::Reply,
    now: DateTime<Utc>,
) -> Result<Option<(String, std::time::Duration)>, Error> {
    let command_id = q2c_core::domain::ids::CommandId::for_attempt(&reply.key, reply.attempt);
    let sent: Option<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT message_type, created_at FROM outbox WHERE message_id = $1")
            .bind(command_id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
    Ok(sent.map(|(command_type, created_at)| {
        (
            command_type,
            (now - created_at).to_std().unwrap_or_default(),
        )
    }))
}

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    state: serde_json::Value,
    source: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub(crate) async fn load_row(
    connection: &mut PgConnection,
    workflow_id: WorkflowId,
    for_update: bool,
) -> Result<Option<Loaded>, Error> {
    let query = if for_update {
        "SELECT w.state, d.source, w.version, w.created_at, w.updated_at \
         FROM workflows w JOIN workflow_definitions d ON d.hash = w.definition_hash \
         WHERE w.id = $1 FOR UPDATE OF w"
    } else {
        "SELECT w.state, d.source, w.version, w.created_at, w.updated_at \
         FROM workflows w JOIN workflow_definitions d ON d.hash = w.definition_hash \
         WHERE w.id = $1"
    };
    let row: Option<WorkflowRow> = sqlx::query_as(query)
        .bind(workflow_id.as_uuid())
        .fetch_optional(&mut *connection)
        .await?;
    let Some(WorkflowRow {
        state,
        source,
        version,
        created_at,
        updated_at,
    }) = row
    else {
        return Ok(None);
    };
    let id = *workflow_id.as_uuid();
    let record = from_state(id, state, source)?;
    let saga = Saga::restore(record).map_err(|error| Error::CorruptRecord {
        workflow_id: id,
        reason: error.to_string(),
    })?;
    Ok(Some(Loaded {
        saga,
        version,
        created_at,
        updated_at,
    }))
}

/// Writes what a transition decided; returns how many commands it queued.
async fn write_effects(
    tx: &mut PgConnection,
    workflow_id: WorkflowId,
    effects: &[Effect],
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let mut commands = 0;
    let mut timers_scheduled = false;
    let mut commands_released = false;
    for effect in effects {
        match effect {
            Effect::SendCommand(command) => {
                let envelope = envelope(command, now);
                sqlx::query(
                    "INSERT INTO outbox (message_id, workflow_id, message_type, body, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING",
                )
                .bind(envelope.message_id)
                .bind(workflow_id.as_uuid())
                .bind(&envelope.message_type)
                .bind(sqlx::types::Json(&envelope))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                commands += 1;
            }
            Effect::ScheduleTimer { timer, due_at } => {
                sqlx::query(
                    "INSERT INTO timers (workflow_id, timer_key, timer, due_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (workflow_id, timer_key) \
                     DO UPDATE SET due_at = EXCLUDED.due_at, remaining = NULL",
                )
                .bind(workflow_id.as_uuid())
                .bind(timer.to_string())
                .bind(sqlx::types::Json(timer))
                .bind(due_at)
                .execute(&mut *tx)
                .await?;
                timers_scheduled = true;
            }
            Effect::CancelTimer(timer) => {
                sqlx::query("DELETE FROM timers WHERE workflow_id = $1 AND timer_key = $2")
                    .bind(workflow_id.as_uuid())
                    .bind(timer.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            Effect::FreezeTimers => {
                sqlx::query(
                    "UPDATE timers SET remaining = greatest(due_at - $2, interval '0'), \
                     due_at = 'infinity' WHERE workflow_id = $1 AND remaining IS NULL",
                )
                .bind(workflow_id.as_uuid())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Effect::ThawTimers => {
                sqlx::query(
                    "UPDATE timers SET due_at = $2 + remaining, remaining = NULL \
                     WHERE workflow_id = $1 AND remaining IS NOT NULL",
                )
                .bind(workflow_id.as_uuid())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                timers_scheduled = true;
                // Commands held while paused may leave now.
                commands_released = true;
            }
            Effect::ClearTimers => {
                sqlx::query("DELETE FROM timers WHERE workflow_id = $1")
                    .bind(workflow_id.as_uuid())
                    .execute(&mut *tx)
                    .await?;
            }
            Effect::WithdrawCommands => withdraw_commands(tx, workflow_id, now).await?,
            Effect::RecordHistory(entry) => {
                sqlx::query(
                    "INSERT INTO workflow_history (workflow_id, at, kind, step, command, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(workflow_id.as_uuid())
                .bind(entry.at)
                .bind(entry.kind.as_str())
                .bind(entry.step.as_deref())
                .bind(entry.command.as_deref())
                .bind(&entry.detail)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    // Notifications are delivered at commit, and only if it commits.
    if commands > 0 || commands_released {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(OUTBOX_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    if timers_scheduled {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(TIMERS_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    Ok(commands)
}

/// Drops a workflow's unpublished commands. A command a relay holds under a
/// live lease is being published right now and may already have left: it
/// is kept, and the history says so, so that nobody believes it never went.
async fn withdraw_commands(
    tx: &mut PgConnection,
    workflow_id: WorkflowId,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "DELETE FROM outbox WHERE workflow_id = $1 AND sent_at IS NULL \
         AND (lease_until IS NULL OR lease_until < $2)",
    )
    .bind(workflow_id.as_uuid())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let in_flight: Vec<(String,)> = sqlx::query_as(
        "SELECT message_type FROM outbox WHERE workflow_id = $1 AND sent_at IS NULL ORDER BY id",
    )
    .bind(workflow_id.as_uuid())
    .fetch_all(&mut *tx)
    .await?;
    if !in_flight.is_empty() {
        let types: Vec<&str> = in_flight.iter().map(|(kind,)| kind.as_str()).collect();
        sqlx::query(
            "INSERT INTO workflow_history (workflow_id, at, kind, step, command, detail) \
             VALUES ($1, $2, 'command_sent', NULL, NULL, $3)",
        )
        .bind(workflow_id.as_uuid())
        .bind(now)
        .bind(format!(
            "not withdrawn, being published at this moment, so it may have left: {}",
            types.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The wire form of a command: transformed at the edge, from the core's
/// command to the contract's envelope.
fn envelope(command: &Command, now: DateTime<Utc>) -> Envelope {
    let message_id = *command.command_id.as_uuid();
    Envelope {
        message_id,
        message_type: command.command_type.clone(),
        schema_version: SCHEMA_VERSION,
        workflow_id: *command.workflow_id.as_uuid(),
        step: command.step.clone(),
        attempt: command.attempt,
        idempotency_key: command.idempotency_key.to_string(),
        undoes: command.undoes.as_ref().map(ToString::to_string),
        correlation_id: message_id,
        sent_at: now,
        traceparent: None,
        payload: command.input.clone(),
    }
}
