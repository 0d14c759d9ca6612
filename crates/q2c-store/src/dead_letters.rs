//! Messages that could not be processed, kept whole with the reason, so an
//! operator can read, replay or discard them; nothing is silently dropped.
//!
//! A letter is *open* until an operator replays it (publishes it again and
//! the broker confirms it) or discards it. Neither deletes it: both mark
//! the row, and each attempt, applied, refused or failed, appends an audit
//! row in the same transaction. Letters are kept once per message id; a
//! replayed message that is dead-lettered again re-opens its letter with
//! the new reason, so a replay whose cause was not fixed is not lost.
//!
//! | state | replay | discard |
//! |---|---|---|
//! | open | replayed | discarded |
//! | replayed | replayed again (`replay_count` + 1) | refused |
//! | discarded | refused | refused |
//!
//! A Salesforce event (its "exchange" is [`SALESFORCE_EXCHANGE`]) never
//! came through the broker, so it is never replayed; it can be discarded.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};
use sqlx::{PgConnection, Postgres, QueryBuilder, Transaction};

use crate::operators::{AuditEntry, AuditRow, Operator, append_audit};
use crate::queries::Page;
use crate::{Error, Store};

/// What the Salesforce subscriber writes as the exchange of an event it
/// could not admit (the routing key is the topic): such a letter is a
/// Salesforce event, not a broker message, and cannot be replayed.
pub const SALESFORCE_EXCHANGE: &str = "salesforce";

/// The columns of a whole letter, in [`Stored`]'s order.
const COLUMNS: &str = "id, received_at, message_id, reason, exchange, routing_key, headers, \
     body, replay_count, replayed_at, replayed_by, returned_at, discarded_at, discarded_by, \
     discard_reason";

/// A message as it arrived, and why it could not be processed.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeadLetter {
    /// The message id, if it had a readable one.
    pub message_id: Option<String>,
    /// Why it was set aside.
    pub reason: String,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its AMQP properties and headers, as JSON.
    pub headers: Value,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

impl DeadLetter {
    /// Whether it came through the broker, and so can be published again.
    pub fn from_broker(&self) -> bool {
        self.exchange != SALESFORCE_EXCHANGE
    }
}

/// Where a letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Neither replayed nor discarded: waiting for a person.
    Open,
    /// Published again, and the broker confirmed and routed it.
    Replayed,
    /// Set aside for good by an operator; kept for the record.
    Discarded,
}

impl State {
    /// Every state.
    pub const ALL: [State; 3] = [State::Open, State::Replayed, State::Discarded];

    /// The state's name in the API and the audit trail; pinned, so stored
    /// audit rows keep their meaning.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Replayed => "replayed",
            State::Discarded => "discarded",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// The SQL predicate selecting letters in this state; the open one is
    /// exactly the predicate of the indexes on open letters.
    fn predicate(self) -> &'static str {
        match self {
            State::Open => "replayed_at IS NULL AND discarded_at IS NULL",
            State::Replayed => "replayed_at IS NOT NULL AND discarded_at IS NULL",
            State::Discarded => "discarded_at IS NOT NULL",
        }
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What operators did with a letter.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Handling {
    /// Confirmed replays, ever.
    pub replay_count: i32,
    /// The last replay, unless the message came back since.
    pub replayed_at: Option<DateTime<Utc>>,
    /// Who made it.
    pub replayed_by: Option<String>,
    /// When the replayed message was last dead-lettered again.
    pub returned_at: Option<DateTime<Utc>>,
    /// When it was discarded.
    pub discarded_at: Option<DateTime<Utc>>,
    /// Who discarded it.
    pub discarded_by: Option<String>,
    /// Why.
    pub discard_reason: Option<String>,
}

impl Handling {
    /// Where the letter stands.
    pub fn state(&self) -> State {
        if self.discarded_at.is_some() {
            State::Discarded
        } else if self.replayed_at.is_some() {
            State::Replayed
        } else {
            State::Open
        }
    }

    /// As the audit trail keeps it before and after an action.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self.state(),
            replay_count: self.replay_count,
        }
    }
}

/// A letter as the audit trail keeps it: `{"state", "replay_count"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Where it stands.
    pub state: State,
    /// Confirmed replays, ever.
    pub replay_count: i32,
}

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Stored {
    /// Row id.
    pub id: i64,
    /// When it was set aside.
    pub received_at: DateTime<Utc>,
    /// The message and the reason.
    #[sqlx(flatten)]
    pub letter: DeadLetter,
    /// What operators did with it.
    #[sqlx(flatten)]
    pub handling: Handling,
}

/// One line of a list: a letter without its headers and body.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Summary {
    /// Row id.
    pub id: i64,
    /// When it was set aside.
    pub received_at: DateTime<Utc>,
    /// The message id, if it had a readable one.
    pub message_id: Option<String>,
    /// Why it was set aside.
    pub reason: String,
    /// The exchange it was published to.
    pub exchange: String,
    /// Its routing key: the message type.
    pub routing_key: String,
    /// The body's length in bytes.
    pub size: i64,
    /// What operators did with it.
    #[sqlx(flatten)]
    pub handling: Handling,
}

impl Summary {
    /// Whether it came through the broker, and so can be published again.
    pub fn from_broker(&self) -> bool {
        self.exchange != SALESFORCE_EXCHANGE
    }
}

/// Which letters to list; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only letters in this state.
    pub state: Option<State>,
    /// Only letters whose reason contains this, ignoring case.
    pub reason: Option<String>,
    /// Only letters with this routing key (the message type).
    pub routing_key: Option<String>,
    /// Only letters set aside at or after.
    pub received_from: Option<DateTime<Utc>>,
    /// Only letters set aside before.
    pub received_until: Option<DateTime<Utc>>,
}

/// Why an action does not apply to a letter where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It was discarded: it neither replays nor discards again.
    Discarded,
    /// It was replayed and has not come back: there is nothing to discard.
    Replayed,
    /// It is a Salesforce event, not a broker message: there is no
    /// exchange to publish it to.
    NotFromBroker,
}

impl Refusal {
    /// The refusal's name in problems.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Discarded => "discarded",
            Refusal::Replayed => "replayed",
            Refusal::NotFromBroker => "not_from_broker",
        }
    }

    /// Why, for people and the audit trail.
    pub fn detail(self, letter: &Stored) -> String {
        let handling = &letter.handling;
        match self {
            Refusal::Discarded => format!(
                "dead letter {} was discarded by {} at {}: {}",
                letter.id,
                handling.discarded_by.as_deref().unwrap_or("?"),
                handling
                    .discarded_at
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default(),
                handling.discard_reason.as_deref().unwrap_or_default()
            ),
            Refusal::Replayed => format!(
                "dead letter {} was replayed by {} at {} and has not come back; \
                 there is nothing to discard",
                letter.id,
                handling.replayed_by.as_deref().unwrap_or("?"),
                handling
                    .replayed_at
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default(),
            ),
            Refusal::NotFromBroker => format!(
                "dead letter {} is a Salesforce event from topic {}, not a broker message: \
                 it cannot be published again (move the topic's position to read it again, \
                 or discard it)",
                letter.id, letter.letter.routing_key
            ),
        }
    }
}

/// An operator's request about a letter: who, why and when.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who.
    pub operator: &'a Operator,
    /// Why, in their words; required, for the audit trail.
    pub reason: &'a str,
    /// When.
    pub at: DateTime<Utc>,
}

/// What came of a discard.
#[derive(Debug, Clone, PartialEq)]
pub enum Discarded {
    /// The letter is discarded now.
    Applied {
        /// Before.
        before: Snapshot,
        /// The letter as it is now.
        letter: Box<Stored>,
    },
    /// The letter cannot be discarded where it stands.
    NotAllowed {
        /// The letter as it is.
        letter: Box<Stored>,
        /// Why.
        refusal: Refusal,
    },
}

/// A replay under way: the letter's row is locked until the replay is
/// settled (or dropped, which changes nothing), so a concurrent replay or
/// discard waits, and the consumer, should the replayed message be
/// dead-lettered again before it is marked replayed, waits too and then
/// re-opens the letter instead of finding it still open.
#[derive(Debug)]
pub struct Replay {
    tx: Transaction<'static, Postgres>,
    letter: Stored,
}

impl Store {
    /// Keeps a message that could not be processed, once per message id;
    /// returns the row's id, or `None` if it was already kept. A message
    /// that was replayed and comes back re-opens its letter (and gets its
    /// id).
    pub async fn record_dead_letter(
        &self,
        letter: &DeadLetter,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, Error> {
        let mut connection = self.pool().acquire().await?;
        insert(&mut connection, letter, now).await
    }

    /// The most recent dead letters in any state, newest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<Stored>, Error> {
        let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT $1"
        )))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Letters matching `filter`, newest first, at most `limit`, older than
    /// letter `before` (the previous page's `next`).
    pub async fn list_dead_letters(
        &self,
        filter: &Filter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Page<Summary, i64>, Error> {
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT id, received_at, message_id, reason, exchange, routing_key, \
             octet_length(body)::bigint AS size, replay_count, replayed_at, replayed_by, \
             returned_at, discarded_at, discarded_by, discard_reason FROM dead_letters WHERE true",
        );
        if let Some(state) = filter.state {
            query.push(" AND ").push(state.predicate());
        }
        if let Some(reason) = &filter.reason {
            query
                .push(" AND strpos(lower(reason), lower(")
                .push_bind(reason.clone())
                .push(")) > 0");
        }
        if let Some(routing_key) = &filter.routing_key {
            query
                .push(" AND routing_key = ")
                .push_bind(routing_key.clone());
        }
        if let Some(from) = filter.received_from {
            query.push(" AND received_at >= ").push_bind(from);
        }
        if let Some(until) = filter.received_until {
            query.push(" AND received_at < ").push_bind(until);
        }
        if let Some(before) = before {
            query.push(" AND id < ").push_bind(before);
        }
        query.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
        let items: Vec<Summary> = query.build_query_as().fetch_all(self.pool()).await?;
        let full = i64::try_from(items.len()).unwrap_or(i64::MAX) >= limit;
        let next = items.last().filter(|_| full).map(|letter| letter.id);
        Ok(Page { items, next })
    }

    /// One letter, whole.
    pub async fn dead_letter(&self, id: i64) -> Result<Option<Stored>, Error> {
        let mut connection = self.pool().acquire().await?;
        load(&mut connection, id, false).await
    }

    /// Every audit row about one letter, oldest first: its history.
    pub async fn dead_letter_history(&self, id: i64) -> Result<Vec<AuditEntry>, Error> {
        let rows = sqlx::query_as(
            "SELECT id, at, actor, role, workflow_id, bulk_job_id, dead_letter_id, action, \
             reason, input, state_before, state_after, result, detail FROM audit_log \
             WHERE dead_letter_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// Discards an open letter and audits the attempt, in one
    /// transaction; `None` if no letter has the id.
    pub async fn discard_dead_letter(
        &self,
        id: i64,
        request: &Request<'_>,
    ) -> Result<Option<Discarded>, Error> {
        let mut tx = self.pool().begin().await?;
        let Some(letter) = load(&mut tx, id, true).await? else {
            return Ok(None);
        };
        let before = letter.handling.snapshot();
        let refusal = match before.state {
            State::Open => None,
            State::Replayed => Some(Refusal::Replayed),
            State::Discarded => Some(Refusal::Discarded),
        };
        let answer = if let Some(refusal) = refusal {
            let detail = refusal.detail(&letter);
            let result = ("not_allowed", Some(detail.as_str()));
            audit(&mut tx, request, "discard", before, &letter, result).await?;
            Discarded::NotAllowed {
                letter: Box::new(letter),
                refusal,
            }
        } else {
            let discarded: Stored = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE dead_letters SET discarded_at = $2, discarded_by = $3, \
                 discard_reason = $4 WHERE id = $1 RETURNING {COLUMNS}"
            )))
            .bind(id)
            .bind(request.at)
            .bind(&request.operator.name)
            .bind(request.reason)
            .fetch_one(&mut *tx)
            .await?;
            audit(
                &mut tx,
                request,
                "discard",
                before,
                &discarded,
                ("applied", None),
            )
            .await?;
            Discarded::Applied {
                before,
                letter: Box::new(discarded),
            }
        };
        tx.commit().await?;
        Ok(Some(answer))
    }

    /// Starts replaying a letter: locks it and hands it over to be
    /// published; `None` if no letter has the id. Settle the replay with
    /// what came of publishing it.
    pub async fn begin_replay(&self, id: i64) -> Result<Option<Replay>, Error> {
        let mut tx = self.pool().begin().await?;
        let letter = load(&mut tx, id, true).await?;
        Ok(letter.map(|letter| Replay { tx, letter }))
    }
}

impl Replay {
    /// The letter, as locked.
    pub fn letter(&self) -> &Stored {
        &self.letter
    }

    /// Why the letter cannot be replayed, if it cannot: a Salesforce event,
    /// or a discarded letter. A replayed one can: the consumer drops a
    /// message id it has already applied.
    pub fn refusal(&self) -> Option<Refusal> {
        if !self.letter.letter.from_broker() {
            Some(Refusal::NotFromBroker)
        } else if self.letter.handling.state() == State::Discarded {
            Some(Refusal::Discarded)
        } else {
            None
        }
    }

    /// The broker confirmed and routed the message: marks the letter
    /// replayed and audits it, in one transaction; the letter as it is now.
    pub async fn published(mut self, request: &Request<'_>) -> Result<Stored, Error> {
        let before = self.letter.handling.snapshot();
        let replayed: Stored = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE dead_letters SET replayed_at = $2, replayed_by = $3, \
             replay_count = replay_count + 1 WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(self.letter.id)
        .bind(request.at)
        .bind(&request.operator.name)
        .fetch_one(&mut *self.tx)
        .await?;
        audit(
            &mut self.tx,
            request,
            "replay",
            before,
            &replayed,
            ("applied", None),
        )
        .await?;
        self.tx.commit().await?;
        Ok(replayed)
    }

    /// The replay was refused: audits the attempt and changes nothing else.
    pub async fn refused(self, request: &Request<'_>, refusal: Refusal) -> Result<(), Error> {
        let detail = refusal.detail(&self.letter);
        self.unchanged(request, "not_allowed", &detail).await
    }

    /// Publishing failed: audits the attempt with why, and changes nothing
    /// else.
    pub async fn failed(self, request: &Request<'_>, detail: &str) -> Result<(), Error> {
        self.unchanged(request, "failed", detail).await
    }

    async fn unchanged(
        mut self,
        request: &Request<'_>,
        result: &str,
        detail: &str,
    ) -> Result<(), Error> {
        let current = self.letter.handling.snapshot();
        let result = (result, Some(detail));
        audit(
            &mut self.tx,
            request,
            "replay",
            current,
            &self.letter,
            result,
        )
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Appends the audit row of an action on `letter` (as the action left it):
/// the result and, for a refusal or failure, its words. A replay records
/// where it publishes to.
async fn audit(
    tx: &mut PgConnection,
    request: &Request<'_>,
    action: &str,
    before: Snapshot,
    letter: &Stored,
    (result, detail): (&str, Option<&str>),
) -> Result<(), Error> {
    let input = (action == "replay").then(|| {
        json!({
            "exchange": letter.letter.exchange,
            "routing_key": letter.letter.routing_key,
        })
    });
    append_audit(
        tx,
        &AuditRow {
            at: request.at,
            operator: request.operator,
            workflow_id: None,
            bulk_job_id: None,
            dead_letter_id: Some(letter.id),
            action,
            reason: request.reason,
            input,
            state_before: &before,
            state_after: &letter.handling.snapshot(),
            result,
            detail,
        },
    )
    .await
}

/// A letter, locked for the transaction when `lock`.
async fn load(connection: &mut PgConnection, id: i64, lock: bool) -> Result<Option<Stored>, Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let letter = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(letter)
}

/// Keeps a letter once per message id, in the caller's transaction (or on
/// its own connection); the row's id, or `None` if it was already kept.
/// A letter that was replayed and comes back (its message was
/// dead-lettered again) is re-opened with the new reason: the replay did
/// not fix it, and a person must look again.
pub(crate) async fn insert(
    connection: &mut PgConnection,
    letter: &DeadLetter,
    now: DateTime<Utc>,
) -> Result<Option<i64>, Error> {
    let id: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO dead_letters (message_id, reason, exchange, routing_key, headers, body, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (message_id) WHERE message_id IS NOT NULL DO UPDATE \
         SET reason = EXCLUDED.reason, returned_at = EXCLUDED.received_at, \
         replayed_at = NULL, replayed_by = NULL \
         WHERE dead_letters.replayed_at IS NOT NULL \
         RETURNING id",
    )
    .bind(letter.message_id.as_deref())
    .bind(&letter.reason)
    .bind(&letter.exchange)
    .bind(&letter.routing_key)
    .bind(&letter.headers)
    .bind(&letter.body)
    .bind(now)
    .fetch_optional(&mut *connection)
    .await?;
    Ok(id.map(|(id,)| id))
}
