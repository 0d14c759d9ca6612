//! Reading workflows for people and APIs: lists by business key or status,
//! and a workflow's history.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, Store};

/// One line of a workflow list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Summary {
    /// The workflow.
    pub id: Uuid,
    /// The quote it fulfils.
    pub quote_id: String,
    /// The quote's number, as people know it.
    pub quote_number: String,
    /// Where it stands.
    pub status: String,
    /// How the money flow ended, once it has.
    pub outcome: Option<String>,
    /// Whether an operator paused it.
    pub paused: bool,
    /// The definition it runs.
    pub definition_name: String,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Which workflows to list; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this quote's.
    pub quote_id: Option<String>,
    /// Only those with this status.
    pub status: Option<String>,
    /// Only paused ones (`true`) or only the others (`false`).
    pub paused: Option<bool>,
}

/// One stored history entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryRow {
    /// When.
    pub at: DateTime<Utc>,
    /// What kind of thing happened.
    pub kind: String,
    /// The step concerned.
    pub step: Option<String>,
    /// The command type concerned.
    pub command: Option<String>,
    /// For people.
    pub detail: String,
}

impl Store {
    /// Workflows matching `filter`, newest first, at most `limit`.
    pub async fn list_workflows(&self, filter: &Filter, limit: i64) -> Result<Vec<Summary>, Error> {
        let rows = sqlx::query_as(
            "SELECT id, quote_id, quote_number, status, outcome, paused, definition_name, \
             created_at, updated_at \
             FROM workflows \
             WHERE ($1::text IS NULL OR quote_id = $1) AND ($2::text IS NULL OR status = $2) \
             AND ($4::boolean IS NULL OR paused = $4) \
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(filter.quote_id.as_deref())
        .bind(filter.status.as_deref())
        .bind(limit)
        .bind(filter.paused)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// A workflow's history, in the order it happened.
    pub async fn history(&self, workflow_id: Uuid) -> Result<Vec<HistoryRow>, Error> {
        let rows = sqlx::query_as(
            "SELECT at, kind, step, command, detail FROM workflow_history \
             WHERE workflow_id = $1 ORDER BY id",
        )
        .bind(workflow_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}
