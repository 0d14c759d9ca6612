//! Messages that could not be processed, kept whole with the reason, so an
//! operator can read, replay or discard them; nothing is silently dropped.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use crate::{Error, Store};

/// A message as it arrived, and why it could not be processed.
#[derive(Debug, Clone, PartialEq)]
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

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Row id.
    pub id: i64,
    /// When it was set aside.
    pub received_at: DateTime<Utc>,
    /// The message and the reason.
    pub letter: DeadLetter,
}

impl Store {
    /// Keeps a message that could not be processed, once per message id;
    /// returns the new row's id, or `None` if it was already kept.
    pub async fn record_dead_letter(
        &self,
        letter: &DeadLetter,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, Error> {
        let mut connection = self.pool().acquire().await?;
        insert(&mut connection, letter, now).await
    }

    /// The most recent dead letters, newest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<Stored>, Error> {
        type Row = (
            i64,
            Option<String>,
            String,
            String,
            String,
            Value,
            Vec<u8>,
            DateTime<Utc>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, message_id, reason, exchange, routing_key, headers, body, received_at \
             FROM dead_letters ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, message_id, reason, exchange, routing_key, headers, body, received_at)| {
                    Stored {
                        id,
                        received_at,
                        letter: DeadLetter {
                            message_id,
                            reason,
                            exchange,
                            routing_key,
                            headers,
                            body,
                        },
                    }
                },
            )
            .collect())
    }
}

/// Keeps a letter once per message id, in the caller's transaction (or on
/// its own connection); the new row's id, or `None` if it was already kept.
pub(crate) async fn insert(
    connection: &mut PgConnection,
    letter: &DeadLetter,
    now: DateTime<Utc>,
) -> Result<Option<i64>, Error> {
    let id: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO dead_letters (message_id, reason, exchange, routing_key, headers, body, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (message_id) WHERE message_id IS NOT NULL DO NOTHING RETURNING id",
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
