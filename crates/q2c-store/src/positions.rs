//! Positions in Salesforce event streams, and an operator's moves of them.
//!
//! A replay id is opaque: it is stored as the bytes Salesforce sent and never
//! computed with. Every move an operator makes is recorded beside the
//! position, in the same transaction.
//!
//! Two writers share a position: the subscriber, which advances it in the
//! transaction that commits each event's work (see [`crate::intake`]), and
//! an operator, who moves it anywhere. Every operator move bumps the row's
//! *epoch*; the subscriber reads the epoch when it starts
//! ([`Store::subscription_start`]) and writes only where it is unchanged,
//! so a subscriber that was already running when an operator moved the
//! position gets [`Error::PositionMoved`] instead of overwriting the move.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::intake::StreamPoint;
use crate::{Error, Store};

/// Who [`Store::subscription_start`] records as having made the first move
/// of a topic that had no position.
pub const FIRST_START: &str = "q2c subscriber (first start)";

/// Where the next subscription to a topic starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// After the event with this replay id.
    After(Vec<u8>),
    /// At the oldest retained event.
    Earliest,
    /// At new events only.
    Latest,
}

impl Position {
    /// Reads an operator's `EARLIEST`, `LATEST` or a hex replay id.
    pub fn parse(text: &str) -> Result<Position, String> {
        match text {
            "EARLIEST" => Ok(Position::Earliest),
            "LATEST" => Ok(Position::Latest),
            hex if !hex.is_empty() && hex.len() % 2 == 0 => (0..hex.len())
                .step_by(2)
                .map(|index| u8::from_str_radix(&hex[index..index + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map(Position::After)
                .map_err(|_| format!("`{text}` is not EARLIEST, LATEST or a replay id in hex")),
            _ => Err(format!(
                "`{text}` is not EARLIEST, LATEST or a replay id in hex"
            )),
        }
    }

    fn columns(&self) -> (Option<&[u8]>, Option<&'static str>) {
        match self {
            Position::After(id) => (Some(id), None),
            Position::Earliest => (None, Some("EARLIEST")),
            Position::Latest => (None, Some("LATEST")),
        }
    }

    fn from_columns(replay_id: Option<Vec<u8>>, preset: Option<String>) -> Option<Position> {
        match (replay_id, preset.as_deref()) {
            (Some(id), _) => Some(Position::After(id)),
            (None, Some("EARLIEST")) => Some(Position::Earliest),
            (None, Some("LATEST")) => Some(Position::Latest),
            _ => None,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::After(id) => {
                for byte in id {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Position::Earliest => f.write_str("EARLIEST"),
            Position::Latest => f.write_str("LATEST"),
        }
    }
}

/// A recorded move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// Where it was before, if anywhere.
    pub from: Option<Position>,
    /// Where it was moved to.
    pub to: Position,
    /// Who moved it.
    pub moved_by: String,
    /// When.
    pub moved_at: DateTime<Utc>,
}

impl Store {
    /// The stored position of `topic`, if it has one.
    pub async fn position(&self, topic: &str) -> Result<Option<Position>, Error> {
        let row: Option<(Option<Vec<u8>>, Option<String>)> =
            sqlx::query_as("SELECT replay_id, preset FROM salesforce_positions WHERE topic = $1")
                .bind(topic)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.and_then(|(replay_id, preset)| Position::from_columns(replay_id, preset)))
    }

    /// The epoch of `topic`'s position, if it has one: it changes only when
    /// an operator moves the position, so a subscriber that stopped for a
    /// person watches it to know when to start again.
    pub async fn position_epoch(&self, topic: &str) -> Result<Option<i64>, Error> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT epoch FROM salesforce_positions WHERE topic = $1")
                .bind(topic)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.map(|(epoch,)| epoch))
    }

    /// An operator moves `topic`'s position; the move is recorded with it,
    /// and the epoch is bumped so that a subscriber started before the move
    /// cannot write over it (its next write fails with
    /// [`Error::PositionMoved`], and it starts again from here).
    pub async fn move_position(
        &self,
        topic: &str,
        to: &Position,
        moved_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Move, Error> {
        let mut tx = self.pool().begin().await?;
        let before: Option<(Option<Vec<u8>>, Option<String>)> = sqlx::query_as(
            "SELECT replay_id, preset FROM salesforce_positions WHERE topic = $1 FOR UPDATE",
        )
        .bind(topic)
        .fetch_optional(&mut *tx)
        .await?;
        let from = before.and_then(|(replay_id, preset)| Position::from_columns(replay_id, preset));
        let (to_id, to_preset) = to.columns();
        // A new row starts at epoch 1: this move is its first.
        sqlx::query(
            "INSERT INTO salesforce_positions (topic, replay_id, preset, updated_at, epoch) \
             VALUES ($1, $2, $3, $4, 1) \
             ON CONFLICT (topic) DO UPDATE SET replay_id = EXCLUDED.replay_id, \
             preset = EXCLUDED.preset, updated_at = EXCLUDED.updated_at, \
             epoch = salesforce_positions.epoch + 1",
        )
        .bind(topic)
        .bind(to_id)
        .bind(to_preset)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        record_move(&mut tx, topic, from.as_ref(), to, moved_by, now).await?;
        tx.commit().await?;
        Ok(Move {
            from,
            to: to.clone(),
            moved_by: moved_by.to_owned(),
            moved_at: now,
        })
    }

    /// Where a subscription to `topic` starts, and the epoch its writes are
    /// conditional on. A topic with no stored position gets `first_start`,
    /// stored and recorded as a move by [`FIRST_START`], so the next start
    /// (or a crash before the first event) begins at the same place.
    pub async fn subscription_start(
        &self,
        topic: &str,
        first_start: &Position,
        now: DateTime<Utc>,
    ) -> Result<(Position, i64), Error> {
        let mut tx = self.pool().begin().await?;
        let (id, preset) = first_start.columns();
        // A concurrent first start or operator move of the same topic waits
        // here for the other to commit, then reads what it stored.
        let inserted: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO salesforce_positions (topic, replay_id, preset, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (topic) DO NOTHING RETURNING epoch",
        )
        .bind(topic)
        .bind(id)
        .bind(preset)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((epoch,)) = inserted {
            record_move(&mut tx, topic, None, first_start, FIRST_START, now).await?;
            tx.commit().await?;
            return Ok((first_start.clone(), epoch));
        }
        let (replay_id, preset, epoch): (Option<Vec<u8>>, Option<String>, i64) = sqlx::query_as(
            "SELECT replay_id, preset, epoch FROM salesforce_positions WHERE topic = $1",
        )
        .bind(topic)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let position =
            Position::from_columns(replay_id, preset).ok_or_else(|| Error::CorruptPosition {
                topic: topic.to_owned(),
            })?;
        Ok((position, epoch))
    }

    /// Stores a keepalive's latest replay id: the stream has moved on with
    /// no event for q2c, and a restart should not replay what lies before.
    /// Fails with [`Error::PositionMoved`] if an operator has moved the
    /// position since `at.epoch` was read.
    pub async fn advance_position(
        &self,
        at: &StreamPoint<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut connection = self.pool().acquire().await?;
        advance_in(&mut connection, at, now).await
    }

    /// Every topic's position and when it last changed, by topic: how far
    /// behind the subscriber is shows as the age of its position.
    pub async fn positions(&self) -> Result<Vec<(String, Position, DateTime<Utc>)>, Error> {
        type Row = (String, Option<Vec<u8>>, Option<String>, DateTime<Utc>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT topic, replay_id, preset, updated_at FROM salesforce_positions ORDER BY topic",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(topic, replay_id, preset, updated_at)| {
                match Position::from_columns(replay_id, preset) {
                    Some(position) => Ok((topic, position, updated_at)),
                    None => Err(Error::CorruptPosition { topic }),
                }
            })
            .collect()
    }

    /// Every move of `topic`, oldest first.
    pub async fn position_moves(&self, topic: &str) -> Result<Vec<Move>, Error> {
        type Row = (
            Option<Vec<u8>>,
            Option<String>,
            Option<Vec<u8>>,
            Option<String>,
            String,
            DateTime<Utc>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT from_replay_id, from_preset, to_replay_id, to_preset, moved_by, moved_at \
             FROM salesforce_position_moves WHERE topic = $1 ORDER BY id",
        )
        .bind(topic)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(
                |(from_id, from_preset, to_id, to_preset, moved_by, moved_at)| {
                    Some(Move {
                        from: Position::from_columns(from_id, from_preset),
                        to: Position::from_columns(to_id, to_preset)?,
                        moved_by,
                        moved_at,
                    })
                },
            )
            .collect())
    }
}

/// Records a move beside the position, in the caller's transaction.
async fn record_move(
    tx: &mut PgConnection,
    topic: &str,
    from: Option<&Position>,
    to: &Position,
    moved_by: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let (from_id, from_preset) = from.map_or((None, None), Position::columns);
    let (to_id, to_preset) = to.columns();
    sqlx::query(
        "INSERT INTO salesforce_position_moves \
         (topic, from_replay_id, from_preset, to_replay_id, to_preset, moved_by, moved_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(topic)
    .bind(from_id)
    .bind(from_preset)
    .bind(to_id)
    .bind(to_preset)
    .bind(moved_by)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Sets the position of `at.topic` to `at.replay_id` in the caller's
/// transaction, if no operator has moved it since the subscriber read
/// `at.epoch`; otherwise fails with [`Error::PositionMoved`], and the caller
/// must roll back whatever the transaction did with it, so the work and the
/// position commit together or not at all.
pub(crate) async fn advance_in(
    connection: &mut PgConnection,
    at: &StreamPoint<'_>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let updated = sqlx::query(
        "UPDATE salesforce_positions SET replay_id = $2, preset = NULL, updated_at = $4 \
         WHERE topic = $1 AND epoch = $3",
    )
    .bind(at.topic)
    .bind(at.replay_id)
    .bind(at.epoch)
    .bind(now)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(Error::PositionMoved {
            topic: at.topic.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_print_as_operators_write_them() {
        assert_eq!(Position::parse("EARLIEST"), Ok(Position::Earliest));
        assert_eq!(Position::parse("LATEST"), Ok(Position::Latest));
        let id = Position::parse("00000000000004d2").unwrap();
        assert_eq!(id, Position::After(vec![0, 0, 0, 0, 0, 0, 4, 0xd2]));
        assert_eq!(id.to_string(), "00000000000004d2");
        assert!(Position::parse("latest").is_err());
        assert!(Position::parse("abc").is_err());
        assert!(Position::parse("zz").is_err());
        assert!(Position::parse("").is_err());
    }
}
