//! Why the simulator could not start or had to stop.

use crate::ledger::LedgerError;
use crate::settings::SettingsError;

/// Why the simulator could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting cannot work; nothing was started.
    #[error("invalid sim settings: {0}")]
    Settings(#[from] SettingsError),
    /// The ledger file cannot be opened or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Declaring the topology failed.
    #[error(transparent)]
    Topology(#[from] q2c_contract::topology::Error),
    /// The broker connection or a channel failed.
    #[error("the broker failed while {doing}: {source}")]
    Broker {
        /// What the simulator was doing.
        doing: &'static str,
        /// The broker's (or the connection's) error.
        source: lapin::Error,
    },
    /// A reply was not published; its command stays unacked.
    #[error(transparent)]
    Reply(#[from] q2c_contract::reply::PublishError),
    /// The broker cancelled a connector's consumer (its queue was deleted?).
    #[error("the broker cancelled the {0} connector's consumer")]
    ConsumerCancelled(&'static str),
    /// Handling a delivery panicked (a bug).
    #[error("handling a {0} delivery panicked")]
    Panicked(&'static str),
}
