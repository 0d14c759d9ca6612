//! One subscriber per Salesforce topic across every q2c process: a Postgres
//! session lock, held by a connection of its own for as long as the process
//! follows the topic. Two streams of one topic would each receive every
//! event, spend the org's delivery allocation twice, and race each other's
//! positions; with the lock the other processes wait as standbys and take
//! over when the holder goes away (its connection closes, the lock is free).

use sqlx::{Connection, PgConnection};

use crate::{Error, Store};

/// The first key of q2c's topic locks; the second is the topic's hash.
/// Two-key advisory locks never collide with one-key ones (quotes').
const TOPIC_LOCK_CLASS: i32 = 0x5132_4353; // "Q2CS"

/// A held topic lock. Dropping it closes its connection, which frees it.
#[derive(Debug)]
pub struct TopicLock {
    connection: PgConnection,
    topic: String,
}

impl Store {
    /// Takes `topic`'s lock unless another process holds it.
    pub async fn try_lock_topic(&self, topic: &str) -> Result<Option<TopicLock>, Error> {
        let mut connection = self.pool().acquire().await?.detach();
        let (held,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(TOPIC_LOCK_CLASS)
            .bind(topic)
            .fetch_one(&mut connection)
            .await?;
        if !held {
            let _closing = connection.close().await;
            return Ok(None);
        }
        Ok(Some(TopicLock {
            connection,
            topic: topic.to_owned(),
        }))
    }
}

impl TopicLock {
    /// Whether the lock is still held: it is while its connection answers
    /// (the server frees it only when the connection ends).
    pub async fn held(&mut self) -> bool {
        self.connection.ping().await.is_ok()
    }

    /// The topic it locks.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Frees the lock now, for a prompt handover.
    pub async fn release(self) {
        let _closing = self.connection.close().await;
    }
}
