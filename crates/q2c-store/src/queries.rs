//! Reading workflows for people and APIs: lists by any business key, by
//! where they stand and for how long, one page at a time; a workflow's
//! history page by page; and the live workflows counted by status and step.
//!
//! Every list query is built from the filters actually given, so each runs
//! with the predicates its indexes serve, and none reads the whole table.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{Error, Store};

/// The statuses a workflow never leaves; the indexes on live workflows
/// repeat this list, so it must not change without them.
pub(crate) const TERMINAL: &str =
    "('completed', 'compensated', 'failed', 'cancelled', 'terminated')";

/// One line of a workflow list.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Summary {
    /// The workflow.
    pub id: Uuid,
    /// The quote it fulfils.
    pub quote_id: String,
    /// The quote's number, as people know it.
    pub quote_number: String,
    /// The customer's account.
    pub account_id: String,
    /// Where it stands.
    pub status: String,
    /// The step it is at, until it ends.
    pub current_step: Option<String>,
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
    /// Since when it stands where it stands (status and step).
    pub state_since: DateTime<Utc>,
}

/// Which workflows to list; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this quote's.
    pub quote_id: Option<String>,
    /// Only this account's.
    pub account_id: Option<String>,
    /// Only those with this status.
    pub status: Option<String>,
    /// Only those at this step.
    pub step: Option<String>,
    /// Only paused ones (`true`) or only the others (`false`).
    pub paused: Option<bool>,
    /// Only those a step of which returned this value (an order number,
    /// an invoice number, a payment id).
    pub reference: Option<String>,
    /// With `reference`: only in this output field.
    pub reference_field: Option<String>,
    /// Only those started at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Only those started before.
    pub created_until: Option<DateTime<Utc>>,
    /// Only those changed at or after.
    pub updated_from: Option<DateTime<Utc>>,
    /// Only those changed before.
    pub updated_until: Option<DateTime<Utc>>,
    /// Only live workflows that have stood where they stand since before
    /// this time ("stuck").
    pub stuck_since: Option<DateTime<Utc>>,
}

/// Which way a list runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Newest first.
    #[default]
    Newest,
    /// Oldest first.
    Oldest,
}

/// Where the next page starts: just past the last workflow of this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    created_at: DateTime<Utc>,
    id: Uuid,
}

impl Cursor {
    fn after(summary: &Summary) -> Self {
        Self {
            created_at: summary.created_at,
            id: summary.id,
        }
    }
}

/// Cursors travel as opaque text: microseconds since the epoch and the id.
impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }
}

/// A cursor that this store did not hand out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a cursor from a previous page")]
pub struct BadCursor(pub String);

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadCursor(text.to_owned());
        let (micros, id) = text.split_once('.').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
            id: Uuid::try_parse(id).map_err(|_| bad())?,
        })
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    /// The rows.
    pub items: Vec<T>,
    /// Where the next page starts, if there may be one.
    pub next: Option<C>,
}

/// One stored history entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryRow {
    /// Its position in the history, for paging.
    pub id: i64,
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

/// How many live workflows stand at one status and step.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Count {
    /// The status.
    pub status: String,
    /// The step.
    pub step: Option<String>,
    /// How many.
    pub count: i64,
}

impl Store {
    /// Workflows matching `filter`, in `order`, at most `limit`, starting
    /// after `after`.
    pub async fn list_workflows(
        &self,
        filter: &Filter,
        order: Order,
        after: Option<Cursor>,
        limit: i64,
    ) -> Result<Page<Summary, Cursor>, Error> {
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT id, quote_id, quote_number, account_id, status, current_step, outcome, \
             paused, definition_name, created_at, updated_at, state_since FROM workflows WHERE true",
        );
        push_filter(&mut query, filter);
        let (compare, direction) = match order {
            Order::Newest => ("<", "DESC"),
            Order::Oldest => (">", "ASC"),
        };
        if let Some(cursor) = after {
            query
                .push(format!(" AND (created_at, id) {compare} ("))
                .push_bind(cursor.created_at)
                .push(", ")
                .push_bind(cursor.id)
                .push(")");
        }
        query
            .push(format!(
                " ORDER BY created_at {direction}, id {direction} LIMIT "
            ))
            .push_bind(limit);
        let items: Vec<Summary> = query.build_query_as().fetch_all(self.pool()).await?;
        let full = i64::try_from(items.len()).unwrap_or(i64::MAX) >= limit;
        let next = items.last().filter(|_| full).map(Cursor::after);
        Ok(Page { items, next })
    }

    /// A workflow's whole history, in the order it happened.
    pub async fn history(&self, workflow_id: Uuid) -> Result<Vec<HistoryRow>, Error> {
        let rows = sqlx::query_as(
            "SELECT id, at, kind, step, command, detail FROM workflow_history \
             WHERE workflow_id = $1 ORDER BY id",
        )
        .bind(workflow_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// One page of a workflow's history, oldest first, after entry `after`.
    pub async fn history_page(
        &self,
        workflow_id: Uuid,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Page<HistoryRow, i64>, Error> {
        let items: Vec<HistoryRow> = sqlx::query_as(
            "SELECT id, at, kind, step, command, detail FROM workflow_history \
             WHERE workflow_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(workflow_id)
        .bind(after.unwrap_or(0))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let full = i64::try_from(items.len()).unwrap_or(i64::MAX) >= limit;
        let next = items.last().filter(|_| full).map(|row| row.id);
        Ok(Page { items, next })
    }

    /// Whether a workflow exists.
    pub async fn workflow_exists(&self, workflow_id: Uuid) -> Result<bool, Error> {
        let (exists,): (bool,) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM workflows WHERE id = $1)")
                .bind(workflow_id)
                .fetch_one(self.pool())
                .await?;
        Ok(exists)
    }

    /// Live workflows by status and step, read from the index on live
    /// workflows alone: finished ones, however many, are not read.
    pub async fn live_counts(&self) -> Result<Vec<Count>, Error> {
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT status, current_step AS step, count(*) AS count FROM workflows \
             WHERE status NOT IN {TERMINAL} GROUP BY status, current_step \
             ORDER BY status, current_step"
        )))
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }
}

pub(crate) fn push_filter(query: &mut QueryBuilder<Postgres>, filter: &Filter) {
    let mut equal = |column: &str, value: &Option<String>| {
        if let Some(value) = value {
            query
                .push(format!(" AND {column} = "))
                .push_bind(value.clone());
        }
    };
    equal("quote_id", &filter.quote_id);
    equal("account_id", &filter.account_id);
    equal("status", &filter.status);
    equal("current_step", &filter.step);
    if let Some(paused) = filter.paused {
        query.push(" AND paused = ").push_bind(paused);
    }
    if let Some(reference) = &filter.reference {
        query
            .push(" AND id IN (SELECT workflow_id FROM workflow_references WHERE value = ")
            .push_bind(reference.clone());
        if let Some(field) = &filter.reference_field {
            query.push(" AND field = ").push_bind(field.clone());
        }
        query.push(")");
    }
    let mut range = |column: &str, compare: &str, value: Option<DateTime<Utc>>| {
        if let Some(value) = value {
            query
                .push(format!(" AND {column} {compare} "))
                .push_bind(value);
        }
    };
    range("created_at", ">=", filter.created_from);
    range("created_at", "<", filter.created_until);
    range("updated_at", ">=", filter.updated_from);
    range("updated_at", "<", filter.updated_until);
    if let Some(since) = filter.stuck_since {
        query
            .push(format!(" AND status NOT IN {TERMINAL} AND state_since < "))
            .push_bind(since);
    }
}

/// "Stuck for longer than `duration`" as of `now`.
pub fn stuck_since(now: DateTime<Utc>, duration: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| now.checked_sub_signed(delta))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
