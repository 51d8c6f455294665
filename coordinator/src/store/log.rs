//! The Raft log and vote in a redb database (see the [module documentation](super) for
//! the durability guarantees).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageIOError, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{blocking, StoreError};
use crate::raft_types::{MemberId, StorageError, TypeConfig};

/// Log entries by index, each the JSON of an `openraft::Entry`.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small records by name ([`VOTE`], [`PURGED`], [`COMMITTED`]), each JSON.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const PURGED: &str = "last_purged_log_id";
const COMMITTED: &str = "committed";

/// The durable Raft log. Cheap to clone (clones share the database), which is also how
/// openraft gets its log readers.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(META)?;
    match table.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

fn write_meta<T: Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    durability: Durability,
) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value)?;
    let mut txn = db.begin_write()?;
    txn.set_durability(durability);
    txn.open_table(META)?.insert(key, bytes.as_slice())?;
    txn.commit()?;
    Ok(())
}

type LogEntry = Entry<TypeConfig>;

impl LogStore {
    /// Opens or creates the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        blocking(move || {
            let db = Database::create(path)?;
            // Create both tables so that readers never meet a missing one.
            let txn = db.begin_write()?;
            txn.open_table(LOGS)?;
            txn.open_table(META)?;
            txn.commit()?;
            Ok(LogStore { db: Arc::new(db) })
        })
        .await
    }

    async fn with_db<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let db = Arc::clone(&self.db);
        blocking(move || f(&db)).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<LogEntry>, StorageError> {
        let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.with_db(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOGS)?;
            let mut entries = Vec::new();
            for row in table.range(bounds)? {
                let (_, v) = row?;
                entries.push(serde_json::from_slice(v.value())?);
            }
            Ok(entries)
        })
        .await
        .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.with_db(|db| {
            let last_purged_log_id: Option<LogId<MemberId>> = read_meta(db, PURGED)?;
            let txn = db.begin_read()?;
            let table = txn.open_table(LOGS)?;
            let last = match table.last()? {
                Some((_, v)) => Some(*serde_json::from_slice::<LogEntry>(v.value())?.get_log_id()),
                None => last_purged_log_id,
            };
            Ok(LogState { last_purged_log_id, last_log_id: last })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.with_db(move |db| write_meta(db, VOTE, &vote, Durability::Immediate))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>, StorageError> {
        self.with_db(|db| read_meta(db, VOTE)).await.map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<MemberId>>) -> Result<(), StorageError> {
        // Not fsync'd: it rides along with the next durable commit. Losing it only makes a
        // restarted member wait for the leader to tell it the commit index again.
        self.with_db(move |db| write_meta(db, COMMITTED, &committed, Durability::None))
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<MemberId>>, StorageError> {
        self.with_db(|db| Ok(read_meta::<Option<LogId<MemberId>>>(db, COMMITTED)?.flatten()))
            .await
            .map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = LogEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows = entries
            .into_iter()
            .map(|e| Ok((e.get_log_id().index, serde_json::to_vec(&e)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let result = self
            .with_db(move |db| {
                let txn = db.begin_write()?; // Durability::Immediate: fsync'd on commit.
                {
                    let mut table = txn.open_table(LOGS)?;
                    for (index, bytes) in &rows {
                        table.insert(index, bytes.as_slice())?;
                    }
                }
                txn.commit()?;
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<MemberId>) -> Result<(), StorageError> {
        self.with_db(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(LOGS)?.retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<MemberId>) -> Result<(), StorageError> {
        self.with_db(move |db| {
            let bytes = serde_json::to_vec(&log_id)?;
            let txn = db.begin_write()?;
            // The purge mark and the deletion commit together.
            txn.open_table(META)?.insert(PURGED, bytes.as_slice())?;
            txn.open_table(LOGS)?.retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
