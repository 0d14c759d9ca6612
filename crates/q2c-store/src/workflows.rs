//! Starting workflows and applying events to them, one transaction each.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use q2c_contract::{Envelope, SCHEMA_VERSION};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_core::domain::quote::Quote;
use q2c_core::saga::{
    Command, Disposition, Effect, Event, HistoryKind, Phase, Saga, Status, TimerId,
};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::outbox::{Outgoing, Pending};
use crate::queries::TERMINAL;
use crate::record::{from_state, from_state_alone, to_state};
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
        /// The transition ended the workflow, for the first time.
        finished: bool,
        /// The event was a late reply: for a replaced revision, a command
        /// given up, or a workflow that had ended.
        late: bool,
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
        let mut out = self.handoff().outgoing(now);
        let quote_id = quote.quote_id().as_str().to_owned();
        match start_in(&mut tx, &mut out, workflow_id, definition, quote, now).await? {
            StartOutcome::Started(started) => {
                tx.commit().await?;
                self.handoff().hand_over(out);
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
        let mut out = self.handoff().outgoing(now);
        let applied = apply_in(&mut tx, &mut out, workflow_id, event, trigger, now).await?;
        tx.commit().await?;
        self.handoff().hand_over(out);
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
/// has a live workflow, says which, and the transaction stays usable. Its
/// first command is in `out`, to hand over once the caller has committed.
pub async fn start_in(
    tx: &mut Transaction<'_, Postgres>,
    out: &mut Outgoing,
    workflow_id: WorkflowId,
    definition: Arc<Definition>,
    quote: Quote,
    now: DateTime<Utc>,
) -> Result<StartOutcome, Error> {
    let (saga, effects) = Saga::start(workflow_id, definition, quote, now);
    let update = Update {
        workflow_id,
        saga: &saga,
        state: to_state(saga.record())?,
        version: 1,
        now,
        moved: true,
        references: Vec::new(),
        answers: None,
    };
    let inserted = match Simple::of(&effects, now) {
        Some(simple) => {
            write_at_once(tx, out, &update, Row::Insert, &simple)
                .await?
                .row_written
        }
        None => {
            let inserted = insert_row(tx, &update).await?;
            if inserted {
                write_effects(tx, out, workflow_id, &effects, now).await?;
            }
            inserted
        }
    };
    if !inserted {
        let (live,): (Uuid,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM workflows WHERE quote_id = $1 AND status NOT IN {TERMINAL}"
        )))
        .bind(saga.quote().quote_id().as_str())
        .fetch_one(&mut **tx)
        .await?;
        return Ok(StartOutcome::QuoteHasLiveWorkflow(WorkflowId::new(live)));
    }
    Ok(StartOutcome::Started(Started {
        workflow_id,
        status: saga.status(),
    }))
}

/// Applies an event inside a caller's transaction, so several can share one
/// commit. Locks the workflow row first, then deduplicates. What it sends
/// on is added to `out`, to hand over once the caller has committed.
pub async fn apply_in(
    tx: &mut Transaction<'_, Postgres>,
    out: &mut Outgoing,
    workflow_id: WorkflowId,
    event: &Event,
    trigger: &Trigger,
    now: DateTime<Utc>,
) -> Result<Applied, Error> {
    let seen = match trigger {
        // The inbox row and the lock in one round trip.
        Trigger::Message { message_id } => Some((message_id.as_str(), now)),
        _ => None,
    };
    let Some((mut loaded, fresh)) = load_locked(tx, workflow_id, seen).await? else {
        return Err(Error::UnknownWorkflow(*workflow_id.as_uuid()));
    };
    match trigger {
        Trigger::Message { .. } => {
            if !fresh {
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
    transition(tx, out, workflow_id, &mut loaded, event, now).await
}

/// Hands an event to a workflow loaded (and locked) in this transaction,
/// and writes what it decided; `loaded` is left as the workflow now is.
pub(crate) async fn transition(
    tx: &mut Transaction<'_, Postgres>,
    out: &mut Outgoing,
    workflow_id: WorkflowId,
    loaded: &mut Loaded,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<Applied, Error> {
    let position_before = position(&loaded.saga);
    let outputs_before = references::outputs(&loaded.saga);
    let was_over = loaded.saga.status().is_terminal() || loaded.saga.reopened_after_end();
    let decision = loaded.saga.handle(event, now);
    match decision.disposition {
        Disposition::Ignored { reason } => return Ok(Applied::Ignored { reason }),
        Disposition::Refused { reason } => return Ok(Applied::Refused { reason }),
        Disposition::Applied => {}
    }
    let version = loaded.version + 1;
    let moved = position(&loaded.saga) != position_before;
    let update = Update {
        workflow_id,
        saga: &loaded.saga,
        state: to_state(loaded.saga.record())?,
        version,
        now,
        moved,
        references: references::changes(&outputs_before, &loaded.saga),
        answers: match event {
            Event::ReplyReceived(reply) => Some(
                *q2c_core::domain::ids::CommandId::for_attempt(&reply.key, reply.attempt).as_uuid(),
            ),
            _ => None,
        },
    };
    let (commands, answered) = match Simple::of(&decision.effects, now) {
        Some(simple) => {
            let written = write_at_once(tx, out, &update, Row::Update, &simple).await?;
            // The row is locked by this transaction; should it be gone all
            // the same, nothing was written and nothing may pass as applied.
            if !written.row_written {
                return Err(Error::UnknownWorkflow(*workflow_id.as_uuid()));
            }
            (written.commands, written.answered)
        }
        None => {
            update.write(tx).await?;
            let commands = write_effects(tx, out, workflow_id, &decision.effects, now).await?;
            let answered = match event {
                Event::ReplyReceived(reply) => answered(tx, reply, now).await?,
                _ => None,
            };
            (commands, answered)
        }
    };
    loaded.version = version;
    loaded.updated_at = now;
    let late = decision.effects.iter().any(|effect| {
        matches!(effect, Effect::RecordHistory(entry) if entry.kind == HistoryKind::LateReply)
    });
    Ok(Applied::Applied {
        status: loaded.saga.status(),
        version,
        commands,
        quote_id: loaded.saga.quote().quote_id().to_string(),
        answered,
        finished: !was_over && loaded.saga.status().is_terminal(),
        late,
    })
}

/// A transition's new row, and what else it changed.
struct Update<'a> {
    workflow_id: WorkflowId,
    saga: &'a Saga,
    state: String,
    version: i64,
    now: DateTime<Utc>,
    /// Whether it moved to another status, step or phase.
    moved: bool,
    references: Vec<references::Reference>,
    /// For a reply: the command it answers.
    answers: Option<Uuid>,
}

/// The workflow's columns, as `$1`..`$9` of the statements below.
const UPDATE_WORKFLOW: &str = "UPDATE workflows SET status = $2, outcome = $3, state = $4, \
     version = $5, updated_at = $6, paused = $7, current_step = $8, \
     state_since = CASE WHEN $9 THEN $6 ELSE state_since END WHERE id = $1";

/// A new workflow's row, with the columns of [`UPDATE_WORKFLOW`] and its
/// definition and quote as the seven parameters from `$first` on
/// ([`Update::bind_start`]); its definition's text is stored once per hash
/// beside it. Two CTEs, `definition` and `workflow`; `workflow` returns
/// nothing when the quote has a live workflow already, and nothing is then
/// written.
fn insert_workflow(first: usize) -> String {
    let [hash, name, source, quote_id, number, account, opportunity] =
        std::array::from_fn(|n| format!("${}", first + n));
    format!(
        "definition AS (INSERT INTO workflow_definitions (hash, name, source) \
             VALUES ({hash}, {name}, {source}) ON CONFLICT (hash) DO NOTHING), \
         workflow AS (INSERT INTO workflows (id, definition_hash, definition_name, quote_id, \
             quote_number, account_id, opportunity_id, status, outcome, state, version, \
             created_at, updated_at, paused, current_step, state_since) \
             VALUES ($1, {hash}, {name}, {quote_id}, {number}, {account}, {opportunity}, \
                 $2, $3, $4, $5, $6, $6, $7, $8, $6) \
             ON CONFLICT (quote_id) WHERE status NOT IN {TERMINAL} DO NOTHING RETURNING id)"
    )
}

/// How a one-statement write places the workflow's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// A transition: the row, locked by the transaction, is updated.
    Update,
    /// A start: the row is inserted, unless the quote has a live workflow.
    Insert,
}

/// Inserts a new workflow's row on its own (a start whose effects are
/// written one by one); `false` when the quote has a live workflow.
async fn insert_row(tx: &mut PgConnection, update: &Update<'_>) -> Result<bool, Error> {
    let statement = format!("WITH {} SELECT id FROM workflow", insert_workflow(10));
    let query = update.bind_row(sqlx::query_as::<_, (Uuid,)>(sqlx::AssertSqlSafe(statement)));
    let inserted = update.bind_start(query).fetch_optional(&mut *tx).await?;
    Ok(inserted.is_some())
}

/// A statement with parameters bound in order.
type Bound<'q, O> = sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>;

impl Update<'_> {
    /// The row and its references, a statement each.
    async fn write(&self, tx: &mut PgConnection) -> Result<(), Error> {
        let query = self.bind_row(sqlx::query_as::<_, (Uuid,)>(sqlx::AssertSqlSafe(format!(
            "{UPDATE_WORKFLOW} RETURNING id"
        ))));
        query.fetch_one(&mut *tx).await?;
        references::write(tx, self.workflow_id, &self.references).await
    }

    /// Binds the workflow's columns, `$1`..`$9`.
    fn bind_row<'q, O>(&'q self, query: Bound<'q, O>) -> Bound<'q, O> {
        query
            .bind(self.workflow_id.as_uuid())
            .bind(self.saga.status().as_str())
            .bind(self.saga.outcome().map(|outcome| outcome.as_str()))
            .bind(&self.state)
            .bind(self.version)
            .bind(self.now)
            .bind(self.saga.paused())
            .bind(self.saga.current_step().map(|(step, _)| step))
            .bind(self.moved)
    }

    /// Binds what a new row names besides its columns: the definition's
    /// hash, name and text, and the quote's ids ([`insert_workflow`]).
    fn bind_start<'q, O>(&'q self, query: Bound<'q, O>) -> Bound<'q, O> {
        let definition = self.saga.definition();
        let quote = self.saga.quote();
        query
            .bind(definition.hash().as_str())
            .bind(definition.name())
            .bind(definition.source())
            .bind(quote.quote_id().as_str())
            .bind(quote.quote_number())
            .bind(quote.account_id().as_str())
            .bind(quote.opportunity_id().as_str())
    }
}

/// The effects of most transitions (commands, history, timers scheduled
/// and cancelled), which one statement can write together. Freezing,
/// thawing or clearing timers and withdrawing commands read what earlier
/// effects wrote, so a transition with any of them writes effect by effect.
struct Simple<'a> {
    commands: Vec<Envelope>,
    history: Vec<&'a q2c_core::saga::HistoryEntry>,
    cancelled: Vec<String>,
    scheduled: Vec<(String, &'a TimerId, DateTime<Utc>)>,
}

impl<'a> Simple<'a> {
    fn of(effects: &'a [Effect], now: DateTime<Utc>) -> Option<Self> {
        let mut simple = Simple {
            commands: Vec::new(),
            history: Vec::new(),
            cancelled: Vec::new(),
            scheduled: Vec::new(),
        };
        for effect in effects {
            match effect {
                Effect::SendCommand(command) => simple.commands.push(envelope(command, now)),
                Effect::RecordHistory(entry) => simple.history.push(entry),
                Effect::CancelTimer(timer) => simple.cancelled.push(timer.to_string()),
                Effect::ScheduleTimer { timer, due_at } => {
                    simple.scheduled.push((timer.to_string(), timer, *due_at));
                }
                Effect::FreezeTimers
                | Effect::ThawTimers
                | Effect::ClearTimers
                | Effect::WithdrawCommands => return None,
            }
        }
        // One statement sees one snapshot: a timer both cancelled and
        // scheduled must be written in order.
        let overlap = simple
            .scheduled
            .iter()
            .any(|(key, _, _)| simple.cancelled.contains(key));
        (!overlap).then_some(simple)
    }
}

/// What a one-statement write did.
struct Written {
    /// Whether the row was written: always for an update; for an insert,
    /// not when the quote has a live workflow (then nothing was).
    row_written: bool,
    /// Commands queued.
    commands: usize,
    /// For a reply: the command answered and how long it took.
    answered: Option<(String, std::time::Duration)>,
}

/// Writes a transition, or a start, in one statement: the row, its
/// references, its commands (leased to this process's relay when one is
/// attached), its history and timers; and reads when the command a reply
/// answers was committed. Everything but the row is written only if the
/// row is.
async fn write_at_once(
    tx: &mut PgConnection,
    out: &mut Outgoing,
    update: &Update<'_>,
    row: Row,
    simple: &Simple<'_>,
) -> Result<Written, Error> {
    let now = update.now;
    let commands = &simple.commands;
    let (owner, until) = out.lease.unzip();
    let (reference_steps, reference_fields, reference_values) =
        references::columns(&update.references);
    let row_statement = match row {
        Row::Update => format!("workflow AS ({UPDATE_WORKFLOW} RETURNING id)"),
        Row::Insert => insert_workflow(28),
    };
    let query = sqlx::query_as::<
        _,
        (
            bool,
            Vec<i64>,
            Vec<Uuid>,
            Option<String>,
            Option<DateTime<Utc>>,
        ),
    >(sqlx::AssertSqlSafe(format!(
        "WITH {row_statement}, \
             refs AS (INSERT INTO workflow_references (workflow_id, step, field, value) \
                 SELECT $1, step, field, value FROM unnest($10::text[], $11::text[], $12::text[]) \
                     AS r(step, field, value) \
                 WHERE EXISTS (SELECT 1 FROM workflow) \
                 ON CONFLICT (workflow_id, step, field) DO UPDATE SET value = EXCLUDED.value), \
             commands AS (INSERT INTO outbox (message_id, workflow_id, message_type, body, \
                     created_at, lease_owner, lease_until, publish_attempts) \
                 SELECT message_id, $1, message_type, body, $6, $13, $14, \
                     CASE WHEN $13::uuid IS NULL THEN 0 ELSE 1 END \
                 FROM unnest($15::uuid[], $16::text[], $17::jsonb[]) \
                     WITH ORDINALITY AS c(message_id, message_type, body, n) \
                 WHERE EXISTS (SELECT 1 FROM workflow) ORDER BY n \
                 ON CONFLICT (message_id) DO NOTHING RETURNING id, message_id), \
             history AS (INSERT INTO workflow_history (workflow_id, at, kind, step, command, detail) \
                 SELECT $1, at, kind, step, command, detail \
                 FROM unnest($18::timestamptz[], $19::text[], $20::text[], $21::text[], $22::text[]) \
                     WITH ORDINALITY AS h(at, kind, step, command, detail, n) \
                 WHERE EXISTS (SELECT 1 FROM workflow) ORDER BY n), \
             cancelled AS (DELETE FROM timers WHERE workflow_id = $1 AND timer_key = ANY($23::text[]) \
                 AND EXISTS (SELECT 1 FROM workflow)), \
             scheduled AS (INSERT INTO timers (workflow_id, timer_key, timer, due_at) \
                 SELECT $1, key, timer, due_at \
                 FROM unnest($24::text[], $25::jsonb[], $26::timestamptz[]) AS t(key, timer, due_at) \
                 WHERE EXISTS (SELECT 1 FROM workflow) \
                 ON CONFLICT (workflow_id, timer_key) \
                 DO UPDATE SET due_at = EXCLUDED.due_at, remaining = NULL) \
             SELECT EXISTS (SELECT 1 FROM workflow), \
                    ARRAY(SELECT id FROM commands ORDER BY id), \
                    ARRAY(SELECT message_id FROM commands ORDER BY id), \
                    answered.message_type, answered.created_at \
             FROM (SELECT 1) AS one \
             LEFT JOIN outbox AS answered ON answered.message_id = $27"
    )));
    let history = &simple.history;
    let query = update
        .bind_row(query)
        .bind(reference_steps)
        .bind(reference_fields)
        .bind(reference_values)
        .bind(owner)
        .bind(until)
        .bind(commands.iter().map(|c| c.message_id).collect::<Vec<_>>())
        .bind(
            commands
                .iter()
                .map(|c| c.message_type.clone())
                .collect::<Vec<_>>(),
        )
        .bind(commands.iter().map(sqlx::types::Json).collect::<Vec<_>>())
        .bind(history.iter().map(|entry| entry.at).collect::<Vec<_>>())
        .bind(
            history
                .iter()
                .map(|entry| entry.kind.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            history
                .iter()
                .map(|entry| entry.step.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            history
                .iter()
                .map(|entry| entry.command.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            history
                .iter()
                .map(|entry| entry.detail.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(&simple.cancelled)
        .bind(
            simple
                .scheduled
                .iter()
                .map(|(key, _, _)| key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            simple
                .scheduled
                .iter()
                .map(|(_, timer, _)| sqlx::types::Json(*timer))
                .collect::<Vec<_>>(),
        )
        .bind(
            simple
                .scheduled
                .iter()
                .map(|(_, _, due)| *due)
                .collect::<Vec<_>>(),
        )
        .bind(update.answers);
    let query = match row {
        Row::Update => query,
        Row::Insert => update.bind_start(query),
    };
    let (row_written, ids, message_ids, answered_type, answered_at) =
        query.fetch_one(&mut *tx).await?;
    if !row_written {
        return Ok(Written {
            row_written,
            commands: 0,
            answered: None,
        });
    }

    if out.in_process() {
        for (id, message_id) in ids.into_iter().zip(message_ids) {
            if let Some(envelope) = commands.iter().find(|c| c.message_id == message_id) {
                out.commands.push(Pending {
                    id,
                    envelope: envelope.clone(),
                    publish_attempts: 1,
                });
            }
        }
    }
    if let Some(earliest) = simple.scheduled.iter().map(|(_, _, due)| *due).min() {
        out.timers = Some(out.timers.map_or(earliest, |known| known.min(earliest)));
        if !out.in_process() {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(TIMERS_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
    }
    if !commands.is_empty() && !out.in_process() {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(OUTBOX_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    let answered = answered_type
        .zip(answered_at)
        .map(|(command_type, created_at)| {
            (
                command_type,
                (now - created_at).to_std().unwrap_or_default(),
            )
        });
    Ok(Written {
        row_written,
        commands: commands.len(),
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

/// A workflow row, and whether the message being applied to it was new
/// to the inbox.
#[derive(sqlx::FromRow)]
struct SeenRow {
    fresh: bool,
    #[sqlx(flatten)]
    row: WorkflowRow,
}

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    state: String,
    definition_hash: String,
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
        "SELECT state, definition_hash, version, created_at, updated_at \
         FROM workflows WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT state, definition_hash, version, created_at, updated_at \
         FROM workflows WHERE id = $1"
    };
    let row: Option<WorkflowRow> = sqlx::query_as(query)
        .bind(workflow_id.as_uuid())
        .fetch_optional(&mut *connection)
        .await?;
    match row {
        Some(row) => Ok(Some(restore(connection, workflow_id, row).await?)),
        None => Ok(None),
    }
}

/// Locks and loads a workflow; with `seen` (a message id and when it came),
/// also records the message in the inbox in the same round trip and says
/// whether it was new there.
async fn load_locked(
    connection: &mut PgConnection,
    workflow_id: WorkflowId,
    seen: Option<(&str, DateTime<Utc>)>,
) -> Result<Option<(Loaded, bool)>, Error> {
    let Some((message_id, received_at)) = seen else {
        return Ok(load_row(connection, workflow_id, true)
            .await?
            .map(|loaded| (loaded, true)));
    };
    let row: Option<(bool, WorkflowRow)> = sqlx::query_as::<_, SeenRow>(
        "WITH seen AS (INSERT INTO inbox (message_id, workflow_id, received_at) \
                 VALUES ($2, $1, $3) ON CONFLICT (message_id) DO NOTHING RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM seen) AS fresh, state, definition_hash, version, created_at, \
                 updated_at \
             FROM workflows WHERE id = $1 FOR UPDATE",
    )
    .bind(workflow_id.as_uuid())
    .bind(message_id)
    .bind(received_at)
    .fetch_optional(&mut *connection)
    .await?
    .map(|seen| (seen.fresh, seen.row));
    let Some((fresh, row)) = row else {
        return Ok(None);
    };
    Ok(Some((restore(connection, workflow_id, row).await?, fresh)))
}

/// The saga of a row, its definition parsed once per process.
async fn restore(
    connection: &mut PgConnection,
    workflow_id: WorkflowId,
    row: WorkflowRow,
) -> Result<Loaded, Error> {
    let WorkflowRow {
        state,
        definition_hash,
        version,
        created_at,
        updated_at,
    } = row;
    let id = *workflow_id.as_uuid();
    let corrupt = |error: q2c_core::saga::RecordError| Error::CorruptRecord {
        workflow_id: id,
        reason: error.to_string(),
    };
    let saga = match crate::record::parsed(&definition_hash) {
        Some(definition) => {
            Saga::restore_with(from_state_alone(id, &state)?, definition).map_err(corrupt)?
        }
        None => {
            let (source,): (String,) =
                sqlx::query_as("SELECT source FROM workflow_definitions WHERE hash = $1")
                    .bind(&definition_hash)
                    .fetch_one(&mut *connection)
                    .await?;
            let saga = Saga::restore(from_state(id, &state, source)?).map_err(corrupt)?;
            crate::record::remember(saga.shared_definition());
            saga
        }
    };
    Ok(Loaded {
        saga,
        version,
        created_at,
        updated_at,
    })
}

/// Writes what a transition decided; returns how many commands it queued.
async fn write_effects(
    tx: &mut PgConnection,
    out: &mut Outgoing,
    workflow_id: WorkflowId,
    effects: &[Effect],
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let mut commands = 0;
    let mut timers_scheduled = false;
    let mut earliest_timer: Option<DateTime<Utc>> = None;
    let mut commands_released = false;
    for effect in effects {
        match effect {
            Effect::SendCommand(command) => {
                let envelope = envelope(command, now);
                // Leased to this process's relay when one is attached: it
                // is handed the row after commit and no other relay takes
                // it. An id repeated (the same attempt again) adds nothing.
                let (owner, until) = out.lease.unzip();
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO outbox (message_id, workflow_id, message_type, body, created_at, \
                     lease_owner, lease_until, publish_attempts) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $6 IS NULL THEN 0 ELSE 1 END) \
                     ON CONFLICT (message_id) DO NOTHING RETURNING id",
                )
                .bind(envelope.message_id)
                .bind(workflow_id.as_uuid())
                .bind(&envelope.message_type)
                .bind(sqlx::types::Json(&envelope))
                .bind(now)
                .bind(owner)
                .bind(until)
                .fetch_optional(&mut *tx)
                .await?;
                if let (Some(id), true) = (id, out.in_process()) {
                    out.commands.push(Pending {
                        id,
                        envelope,
                        publish_attempts: 1,
                    });
                }
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
                earliest_timer = Some(earliest_timer.map_or(*due_at, |known| known.min(*due_at)));
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
                // Thawed timers may be due at once.
                earliest_timer = Some(now);
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
    out.released |= commands_released;
    if let Some(earliest) = earliest_timer {
        out.timers = Some(out.timers.map_or(earliest, |known| known.min(earliest)));
    }
    // With a relay and timers in this process, they are woken after the
    // commit, in process: a NOTIFY would serialise every committing
    // transaction on Postgres's notification lock. Without, other
    // processes are told; notifications are delivered at commit, and only
    // if it commits.
    if out.in_process() {
        return Ok(commands);
    }
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
