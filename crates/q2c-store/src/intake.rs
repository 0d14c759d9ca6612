//! Admitting platform events: each event id is admitted once, in the same
//! transaction as what it does (the workflow an acceptance starts, the
//! cancel a cancellation asks for), so a repeated event gets the answer the
//! first one got and does nothing again.
//!
//! Events read from a Salesforce stream also say where in it they were
//! ([`StreamPoint`]). The topic's position moves in that same transaction,
//! so after a crash the subscriber resumes right after the last event whose
//! work committed: nothing is lost, and what is delivered again is a
//! repeated event id. The position moves only where no operator has moved
//! it meanwhile (see [`crate::positions`]); otherwise nothing commits and
//! the caller gets [`Error::PositionMoved`]. This holds only if a topic's
//! events are admitted one at a time, in delivery order: a later event
//! committing first would carry the position past an earlier one whose
//! work has not committed.
//!
//! An acceptance and a cancellation of one quote may arrive on two streams
//! at once. Both take a transaction-scoped advisory lock on the quote id
//! before anything else, so each sees all of the other or none of it: a
//! cancellation never misses a workflow that an acceptance is starting, and
//! an acceptance never misses a cancellation being recorded.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_core::domain::quote::Quote;
use q2c_core::saga::Event;
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::dead_letters::DeadLetter;
use crate::positions::advance_in;
use crate::workflows::{Applied, StartOutcome, Trigger, apply_in, start_in};
use crate::{Error, Store};

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source<'a> {
    /// Salesforce's event id (`EventUuid`): the deduplication key.
    pub event_uuid: &'a str,
    /// The channel, e.g. `/event/Q2C_Quote_Accepted__e`.
    pub channel: &'a str,
    /// The replay id, where the transport gives a number.
    pub replay_id: Option<i64>,
}

/// An event's place in a Salesforce stream: admitting the event also moves
/// the topic's stored position here, in the same transaction, so the
/// position never runs ahead of committed work nor lags behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPoint<'a> {
    /// The topic, e.g. `/event/Q2C_Quote_Accepted__e`.
    pub topic: &'a str,
    /// The event's replay id, opaque bytes as Salesforce sent them.
    pub replay_id: &'a [u8],
    /// The position's epoch when the subscription started
    /// ([`Store::subscription_start`]): the position is moved only if no
    /// operator has moved it since.
    pub epoch: i64,
}

/// What admitting an event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A workflow was started for the quote.
    Started,
    /// The quote already had this live workflow; nothing was started.
    QuoteHasLiveWorkflow,
    /// The quote's cancellation was recorded before this acceptance;
    /// nothing was started.
    QuoteCancelled,
    /// The quote's live workflow took the cancel: it undoes what it has
    /// done and ends `cancelled` (once a command in flight has settled).
    Cancelled,
    /// The quote's workflow had already ended, or refused the cancel (its
    /// outcome is set, or it is already being undone); nothing changed.
    CancellationAfterOutcome,
    /// The quote's live workflow already had a cancel requested; nothing
    /// changed.
    CancellationRepeated,
    /// The quote had no workflow yet: the cancellation is recorded, and a
    /// later acceptance of the quote starts nothing.
    CancellationBeforeAcceptance,
}

impl Outcome {
    /// The stable name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::QuoteHasLiveWorkflow => "quote_has_live_workflow",
            Self::QuoteCancelled => "quote_cancelled",
            Self::Cancelled => "cancelled",
            Self::CancellationAfterOutcome => "cancellation_after_outcome",
            Self::CancellationRepeated => "cancellation_repeated",
            Self::CancellationBeforeAcceptance => "cancellation_before_acceptance",
        }
    }

    /// Reads a stored name back.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "started" => Some(Self::Started),
            "quote_has_live_workflow" => Some(Self::QuoteHasLiveWorkflow),
            "quote_cancelled" => Some(Self::QuoteCancelled),
            "cancelled" => Some(Self::Cancelled),
            "cancellation_after_outcome" => Some(Self::CancellationAfterOutcome),
            "cancellation_repeated" => Some(Self::CancellationRepeated),
            "cancellation_before_acceptance" => Some(Self::CancellationBeforeAcceptance),
            _ => None,
        }
    }

    /// Whether the outcome names a workflow: the one started, found live,
    /// cancelled or already finished. The others found none to name.
    pub fn names_workflow(self) -> bool {
        !matches!(
            self,
            Self::QuoteCancelled | Self::CancellationBeforeAcceptance
        )
    }
}

/// The answer to an event, the first time or again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// What happened when the event was first admitted.
    pub outcome: Outcome,
    /// The workflow the outcome is about (see [`Outcome::names_workflow`]).
    pub workflow_id: Option<WorkflowId>,
    /// The quote of the event as first admitted.
    pub quote_id: String,
    /// Why a cancellation changed nothing, when the workflow said why (its
    /// refusal, or that a cancel was already requested).
    pub detail: Option<String>,
    /// Whether this event id had been admitted before (this call changed
    /// nothing but, when given a [`StreamPoint`], the position).
    pub repeated: bool,
}

/// The two kinds of event the intake admits, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Accepted,
    Cancelled,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Cancelled => "cancelled",
        }
    }
}

impl Store {
    /// Admits a quote-accepted event: starts a workflow for its quote unless
    /// the event was seen before, the quote has a live workflow, or the
    /// quote's cancellation was recorded first. With `at`, the topic's
    /// position moves to the event in the same transaction; a repeated event
    /// still moves it (its work committed earlier), and a position an
    /// operator has moved fails the whole admission with
    /// [`Error::PositionMoved`].
    pub async fn admit_quote(
        &self,
        source: &Source<'_>,
        definition: Arc<Definition>,
        quote: Quote,
        workflow_id: WorkflowId,
        now: DateTime<Utc>,
        at: Option<&StreamPoint<'_>>,
    ) -> Result<Admission, Error> {
        let quote_id = quote.quote_id().as_str().to_owned();
        let mut tx = self.pool().begin().await?;
        lock_quote(&mut tx, &quote_id).await?;
        let claim = claim(&mut tx, source, &quote_id, Kind::Accepted, None, now).await?;
        if !claim.claimed {
            return repeat(tx, source.event_uuid, at, now).await;
        }

        let mut out = self.handoff().outgoing(now);
        let (outcome, workflow_id) = if claim.quote_cancelled {
            (Outcome::QuoteCancelled, None)
        } else {
            match start_in(&mut tx, &mut out, workflow_id, definition, quote, now).await? {
                StartOutcome::Started(started) => (Outcome::Started, Some(started.workflow_id)),
                StartOutcome::QuoteHasLiveWorkflow(live) => {
                    (Outcome::QuoteHasLiveWorkflow, Some(live))
                }
            }
        };
        let admission = Admission {
            outcome,
            workflow_id,
            quote_id,
            detail: None,
            repeated: false,
        };
        let admission = settle(tx, source.event_uuid, admission, at, now).await?;
        self.handoff().hand_over(out);
        Ok(admission)
    }

    /// Admits a quote-cancelled event, once by its event id like an
    /// acceptance. The quote's live workflow is asked to cancel, in the same
    /// transaction: it then undoes its completed steps in reverse order and
    /// ends `cancelled`. A quote with no workflow yet keeps the cancellation
    /// on record, so its later acceptance starts nothing. `reason` is the
    /// cancellation's reason as Salesforce sent it, stored with the event.
    /// `at` moves the topic's position as in [`Store::admit_quote`].
    pub async fn admit_cancellation(
        &self,
        source: &Source<'_>,
        quote_id: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
        at: Option<&StreamPoint<'_>>,
    ) -> Result<Admission, Error> {
        let mut tx = self.pool().begin().await?;
        lock_quote(&mut tx, quote_id).await?;
        if !claim(&mut tx, source, quote_id, Kind::Cancelled, reason, now)
            .await?
            .claimed
        {
            return repeat(tx, source.event_uuid, at, now).await;
        }

        let live: Option<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM workflows WHERE quote_id = $1 \
             AND status NOT IN ('completed', 'compensated', 'failed', 'cancelled', 'terminated')",
        )
        .bind(quote_id)
        .fetch_optional(&mut *tx)
        .await?;
        let mut out = self.handoff().outgoing(now);
        let (outcome, workflow_id, detail) = if let Some((live,)) = live {
            let live = WorkflowId::new(live);
            // A request is not deduplicated by the workflow: the event id
            // claimed above already is.
            match apply_in(
                &mut tx,
                &mut out,
                live,
                &Event::CancelRequested,
                &Trigger::Request,
                now,
            )
            .await?
            {
                Applied::Applied { .. } => (Outcome::Cancelled, Some(live), None),
                Applied::Refused { reason } => {
                    (Outcome::CancellationAfterOutcome, Some(live), Some(reason))
                }
                Applied::Ignored { reason } => {
                    (Outcome::CancellationRepeated, Some(live), Some(reason))
                }
                Applied::Duplicate => (Outcome::CancellationRepeated, Some(live), None),
            }
        } else {
            let finished: Option<(Uuid, String)> = sqlx::query_as(
                "SELECT id, status FROM workflows WHERE quote_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT 1",
            )
            .bind(quote_id)
            .fetch_optional(&mut *tx)
            .await?;
            match finished {
                Some((finished, status)) => (
                    Outcome::CancellationAfterOutcome,
                    Some(WorkflowId::new(finished)),
                    Some(format!("the workflow had already ended: {status}")),
                ),
                None => (Outcome::CancellationBeforeAcceptance, None, None),
            }
        };
        let admission = Admission {
            outcome,
            workflow_id,
            quote_id: quote_id.to_owned(),
            detail,
            repeated: false,
        };
        let admission = settle(tx, source.event_uuid, admission, at, now).await?;
        self.handoff().hand_over(out);
        Ok(admission)
    }

    /// Keeps an event that could not be admitted (it does not validate) as
    /// a dead letter, once per message id like
    /// [`Store::record_dead_letter`], and with `at` moves the topic's
    /// position past it in the same transaction: the event is kept for a
    /// person, and the subscriber does not read it again. Returns the new
    /// row's id, or `None` if the letter was already kept.
    pub async fn record_invalid_event(
        &self,
        letter: &DeadLetter,
        now: DateTime<Utc>,
        at: Option<&StreamPoint<'_>>,
    ) -> Result<Option<i64>, Error> {
        let mut tx = self.pool().begin().await?;
        let id = crate::dead_letters::insert(&mut tx, letter, now).await?;
        if let Some(at) = at {
            advance_in(&mut tx, at, now).await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// How an event id was answered before, if it was: checked before an
    /// event is even validated, so a repeat always gets its first answer.
    pub async fn earlier_admission(&self, event_uuid: &str) -> Result<Option<Admission>, Error> {
        let mut connection = self.pool().acquire().await?;
        earlier_in(&mut connection, event_uuid).await
    }
}

/// Serialises everything the intake does for one quote, until the
/// transaction ends. Two quotes whose ids hash alike merely wait for each
/// other.
async fn lock_quote(tx: &mut PgConnection, quote_id: &str) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(quote_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// What claiming an event id found.
struct Claim {
    /// Whether the id is new: `false` if it was admitted before.
    claimed: bool,
    /// Whether the quote's cancellation is on record, whatever it came to.
    quote_cancelled: bool,
}

/// Claims the event id, and looks for the quote's cancellation in the same
/// round trip. A concurrent admission of the same id waits here for the
/// first one to commit, then sees it.
async fn claim(
    tx: &mut PgConnection,
    source: &Source<'_>,
    quote_id: &str,
    kind: Kind,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Claim, Error> {
    let (claimed, quote_cancelled): (bool, bool) = sqlx::query_as(
        "WITH claimed AS (INSERT INTO intake_events \
             (event_uuid, channel, replay_id, quote_id, kind, reason, outcome, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) ON CONFLICT (event_uuid) DO NOTHING \
             RETURNING 1) \
         SELECT EXISTS (SELECT 1 FROM claimed), \
             EXISTS (SELECT 1 FROM intake_events WHERE quote_id = $4 AND kind = 'cancelled')",
    )
    .bind(source.event_uuid)
    .bind(source.channel)
    .bind(source.replay_id)
    .bind(quote_id)
    .bind(kind.as_str())
    .bind(reason)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    Ok(Claim {
        claimed,
        quote_cancelled,
    })
}

/// The answer to an event id seen before. Its work committed then; with
/// `at`, the position still moves past it (the earlier commit may have come
/// through another transport, or the position may have been lost with a
/// crash before a keepalive), under the same epoch rule.
async fn repeat(
    mut tx: Transaction<'_, Postgres>,
    event_uuid: &str,
    at: Option<&StreamPoint<'_>>,
    now: DateTime<Utc>,
) -> Result<Admission, Error> {
    let earlier = earlier_in(&mut tx, event_uuid)
        .await?
        .ok_or_else(|| Error::CorruptIntake {
            event_uuid: event_uuid.to_owned(),
            outcome: "missing".into(),
        })?;
    if let Some(at) = at {
        advance_in(&mut tx, at, now).await?;
    }
    tx.commit().await?;
    Ok(earlier)
}

/// Stores the answer beside the claimed event id, moves the position, and
/// commits. Dropping the transaction on an error rolls all of it back.
async fn settle(
    mut tx: Transaction<'_, Postgres>,
    event_uuid: &str,
    admission: Admission,
    at: Option<&StreamPoint<'_>>,
    now: DateTime<Utc>,
) -> Result<Admission, Error> {
    sqlx::query(
        "UPDATE intake_events SET outcome = $2, workflow_id = $3, detail = $4 \
         WHERE event_uuid = $1",
    )
    .bind(event_uuid)
    .bind(admission.outcome.as_str())
    .bind(admission.workflow_id.map(|id| *id.as_uuid()))
    .bind(admission.detail.as_deref())
    .execute(&mut *tx)
    .await?;
    if let Some(at) = at {
        advance_in(&mut tx, at, now).await?;
    }
    tx.commit().await?;
    Ok(admission)
}

async fn earlier_in(
    connection: &mut PgConnection,
    event_uuid: &str,
) -> Result<Option<Admission>, Error> {
    let row: Option<(String, Option<Uuid>, String, Option<String>)> = sqlx::query_as(
        "SELECT outcome, workflow_id, quote_id, detail FROM intake_events WHERE event_uuid = $1",
    )
    .bind(event_uuid)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((stored, workflow_id, quote_id, detail)) = row else {
        return Ok(None);
    };
    let outcome = Outcome::parse(&stored)
        .filter(|outcome| outcome.names_workflow() == workflow_id.is_some())
        .ok_or_else(|| Error::CorruptIntake {
            event_uuid: event_uuid.to_owned(),
            outcome: stored,
        })?;
    Ok(Some(Admission {
        outcome,
        workflow_id: workflow_id.map(WorkflowId::new),
        quote_id,
        detail,
        repeated: true,
    }))
}
