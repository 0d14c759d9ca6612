//! Admitting platform events: each event id is admitted once, in the same
//! transaction as the workflow it starts, so a repeated event gets the
//! answer the first one got and starts nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use q2c_core::definition::Definition;
use q2c_core::domain::ids::WorkflowId;
use q2c_core::domain::quote::Quote;
use uuid::Uuid;

use crate::workflows::{StartOutcome, start_in};
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

/// What admitting an event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A workflow was started for the quote.
    Started,
    /// The quote already had this live workflow; nothing was started.
    QuoteHasLiveWorkflow,
}

impl Outcome {
    /// The stable name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::QuoteHasLiveWorkflow => "quote_has_live_workflow",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "started" => Some(Self::Started),
            "quote_has_live_workflow" => Some(Self::QuoteHasLiveWorkflow),
            _ => None,
        }
    }
}

/// The answer to an event, the first time or again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// What happened when the event was first admitted.
    pub outcome: Outcome,
    /// The workflow started, or the live one that was already there.
    pub workflow_id: WorkflowId,
    /// The quote of the event as first admitted.
    pub quote_id: String,
    /// Whether this event id had been admitted before (this call changed
    /// nothing).
    pub repeated: bool,
}

impl Store {
    /// Admits a quote-accepted event: starts a workflow for its quote unless
    /// the event was seen before or the quote has a live workflow.
    pub async fn admit_quote(
        &self,
        source: &Source<'_>,
        definition: Arc<Definition>,
        quote: Quote,
        workflow_id: WorkflowId,
        now: DateTime<Utc>,
    ) -> Result<Admission, Error> {
        let quote_id = quote.quote_id().as_str().to_owned();
        let mut tx = self.pool().begin().await?;
        // Claims the event id first: a concurrent admission of the same id
        // waits here for ours, then sees it.
        let claimed = sqlx::query(
            "INSERT INTO intake_events (event_uuid, channel, replay_id, quote_id, outcome, received_at) \
             VALUES ($1, $2, $3, $4, 'pending', $5) ON CONFLICT (event_uuid) DO NOTHING",
        )
        .bind(source.event_uuid)
        .bind(source.channel)
        .bind(source.replay_id)
        .bind(quote.quote_id().as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            drop(tx);
            return self
                .earlier_admission(source.event_uuid)
                .await?
                .ok_or_else(|| Error::CorruptIntake {
                    event_uuid: source.event_uuid.to_owned(),
                    outcome: "missing".into(),
                });
        }

        let (outcome, workflow_id) =
            match start_in(&mut tx, workflow_id, definition, quote, now).await? {
                StartOutcome::Started(started) => (Outcome::Started, started.workflow_id),
                StartOutcome::QuoteHasLiveWorkflow(live) => (Outcome::QuoteHasLiveWorkflow, live),
            };
        sqlx::query(
            "UPDATE intake_events SET outcome = $2, workflow_id = $3 WHERE event_uuid = $1",
        )
        .bind(source.event_uuid)
        .bind(outcome.as_str())
        .bind(workflow_id.as_uuid())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Admission {
            outcome,
            workflow_id,
            quote_id,
            repeated: false,
        })
    }

    /// How an event id was answered before, if it was: checked before an
    /// event is even validated, so a repeat always gets its first answer.
    pub async fn earlier_admission(&self, event_uuid: &str) -> Result<Option<Admission>, Error> {
        let row: Option<(String, Option<Uuid>, String)> = sqlx::query_as(
            "SELECT outcome, workflow_id, quote_id FROM intake_events WHERE event_uuid = $1",
        )
        .bind(event_uuid)
        .fetch_optional(self.pool())
        .await?;
        let Some((outcome, workflow_id, quote_id)) = row else {
            return Ok(None);
        };
        match (Outcome::parse(&outcome), workflow_id) {
            (Some(outcome), Some(workflow_id)) => Ok(Some(Admission {
                outcome,
                workflow_id: WorkflowId::new(workflow_id),
                quote_id,
                repeated: true,
            })),
            _ => Err(Error::CorruptIntake {
                event_uuid: event_uuid.to_owned(),
                outcome,
            }),
        }
    }
}
