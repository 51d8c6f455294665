//! Durable Raft storage: the log and vote in [`LogStore`], the applied fleet state and its
//! snapshots in [`StateMachineStore`], both under one data directory.
//!
//! # Durability
//!
//! - `<dir>/raft.redb` holds the log entries, the vote, the last purged log id and the
//!   committed log id, in [redb](https://docs.rs/redb). Every append, truncate, purge and
//!   vote is one redb write transaction committed with `Durability::Immediate`: when the
//!   commit returns the data is fsync'd, and only then is openraft told (the append
//!   callback, the return of `save_vote`), so nothing acknowledged is lost in a crash. A
//!   batch of entries is one transaction: after a crash it is there entirely or not at
//!   all. The committed log id is saved without fsync (openraft only uses it to re-apply
//!   entries faster after a restart; losing it is safe).
//! - `<dir>/snapshot.json` is the latest snapshot: one line of JSON snapshot metadata,
//!   then the JSON of the applied state. It is written to a temporary file, fsync'd,
//!   renamed over the old one and the directory fsync'd, so a crash leaves the old or the
//!   new snapshot, never a torn one. Once a snapshot is written openraft purges the log up
//!   to it (keeping a configurable tail), so a restart loads one snapshot and replays at
//!   most the entries since, however long the history.
//! - The state machine itself is in memory; on start it is the snapshot's state, and
//!   openraft re-applies the committed entries after it.

mod log;
mod state_machine;

use std::path::Path;

pub use self::log::LogStore;
pub use self::state_machine::{AppliedState, SnapshotBuilder, StateMachineStore};

/// Why the store could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The log database failed.
    #[error("log database: {0}")]
    Db(Box<redb::Error>),
    /// A stored record could not be encoded or decoded.
    #[error("stored record encoding: {0}")]
    Codec(#[from] serde_json::Error),
    /// A snapshot file could not be read or written.
    #[error("snapshot file: {0}")]
    Io(#[from] std::io::Error),
    /// The blocking task doing the I/O panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
    /// A snapshot file is malformed.
    #[error("snapshot file {0} is malformed")]
    BadSnapshot(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Runs blocking storage work (redb transactions, fsync) off the async worker threads.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Task(e.to_string()))?
}

/// Opens (creating if needed) the log and state machine stored in `dir`.
pub async fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    std::fs::create_dir_all(dir)?;
    let log = LogStore::open(&dir.join("raft.redb")).await?;
    let sm = StateMachineStore::open(dir).await?;
    Ok((log, sm))
}

#[cfg(test)]
mod tests;
