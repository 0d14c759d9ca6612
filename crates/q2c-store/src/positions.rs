//! Positions in Salesforce event streams, and an operator's moves of them.
//!
//! A replay id is opaque: it is stored as the bytes Salesforce sent and never
//! computed with. Every move an operator makes is recorded beside the
//! position, in the same transaction.

use chrono::{DateTime, Utc};

use crate::{Error, Store};

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

    /// An operator moves `topic`'s position; the move is recorded with it.
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
        let (from_id, from_preset) = from.as_ref().map_or((None, None), Position::columns);
        let (to_id, to_preset) = to.columns();
        sqlx::query(
            "INSERT INTO salesforce_positions (topic, replay_id, preset, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (topic) DO UPDATE SET replay_id = EXCLUDED.replay_id, \
             preset = EXCLUDED.preset, updated_at = EXCLUDED.updated_at",
        )
        .bind(topic)
        .bind(to_id)
        .bind(to_preset)
        .bind(now)
        .execute(&mut *tx)
        .await?;
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
        tx.commit().await?;
        Ok(Move {
            from,
            to: to.clone(),
            moved_by: moved_by.to_owned(),
            moved_at: now,
        })
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
