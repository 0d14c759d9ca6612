//! Answers to requests that carried an `Idempotency-Key`: a client that
//! retries a request (its connection dropped before the answer came) gets
//! the first answer again instead of a second effect.
//!
//! A key is scoped to the caller and the route, and kept for
//! [`KEPT_FOR`]. The answer is stored in the same transaction as the
//! request's effect, so there is never an effect without its answer.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::Error;

/// How long an answer is kept for its key.
pub const KEPT_FOR: TimeDelta = TimeDelta::hours(24);

/// A request's idempotency key, where it applies, and what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Who asked (the token's name): keys of different callers never meet.
    pub caller: String,
    /// The route, with its path parameters filled in.
    pub route: String,
    /// The key the caller chose.
    pub key: String,
    /// A digest of the request, to tell a retry from a different request
    /// that reuses the key.
    pub request_hash: String,
}

impl Key {
    /// A key for a request whose meaning is `request` (its body, say).
    pub fn new(caller: &str, route: &str, key: &str, request: &[u8]) -> Self {
        Self {
            caller: caller.to_owned(),
            route: route.to_owned(),
            key: key.to_owned(),
            request_hash: Sha256::digest(request)
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
        }
    }
}

/// What a key has been used for before.
#[derive(Debug, Clone, PartialEq)]
pub enum Earlier {
    /// Not within [`KEPT_FOR`].
    Unused,
    /// The same request was answered so.
    Answered {
        /// The HTTP status it got.
        status: u16,
        /// The body it got.
        body: Value,
    },
    /// A different request used the key.
    OtherRequest,
}

/// Looks the key up, after waiting for any transaction that holds it: two
/// requests with one key never both act.
pub(crate) async fn look_up(
    tx: &mut PgConnection,
    key: &Key,
    now: DateTime<Utc>,
) -> Result<Earlier, Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
        .bind(format!("{}\n{}\n{}", key.caller, key.route, key.key))
        .execute(&mut *tx)
        .await?;
    let row: Option<(String, i16, Value)> = sqlx::query_as(
        "SELECT request_hash, status, body FROM idempotent_requests \
         WHERE caller = $1 AND route = $2 AND key = $3 AND created_at > $4",
    )
    .bind(&key.caller)
    .bind(&key.route)
    .bind(&key.key)
    .bind(now - KEPT_FOR)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match row {
        None => Earlier::Unused,
        Some((hash, status, body)) if hash == key.request_hash => Earlier::Answered {
            status: u16::try_from(status).unwrap_or(500),
            body,
        },
        Some(_) => Earlier::OtherRequest,
    })
}

/// Stores the answer to a key's first request, replacing an expired one,
/// and drops a few other expired answers on the way.
pub(crate) async fn remember(
    tx: &mut PgConnection,
    key: &Key,
    status: u16,
    body: &Value,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO idempotent_requests \
         (caller, route, key, request_hash, status, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (caller, route, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
         status = EXCLUDED.status, body = EXCLUDED.body, created_at = EXCLUDED.created_at",
    )
    .bind(&key.caller)
    .bind(&key.route)
    .bind(&key.key)
    .bind(&key.request_hash)
    .bind(i16::try_from(status).unwrap_or(500))
    .bind(body)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM idempotent_requests WHERE ctid IN ( \
         SELECT ctid FROM idempotent_requests WHERE created_at <= $1 LIMIT 100 \
         FOR UPDATE SKIP LOCKED)",
    )
    .bind(now - KEPT_FOR)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
