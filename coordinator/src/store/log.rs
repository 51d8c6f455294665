//! The Raft log and vote in a redb database (see the [module documentation](super) for
//! the durability guarantees).
//!
//! **Group commit.** An append writes its entries in a redb transaction committed with
//! `Durability::None`: readable at once (openraft requires appended entries to be
//! readable when `append` returns), but not yet on disk. Its flush callback goes to the
//! store's flusher thread, which takes every callback waiting, makes them durable with
//! one `Durability::Immediate` commit (redb persists all earlier non-durable commits
//! with it) and only then reports them flushed, in order. A write is therefore still
//! acknowledged only once it is on disk, but one fsync covers every append that arrived
//! while the previous one ran, instead of one fsync per client write. A crash before the
//! durable commit loses exactly the appends whose callbacks were not called.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
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
/// A counter the flusher's durable commit writes (so the commit is never empty).
const FLUSHES: &str = "flushes";

/// The durable Raft log. Cheap to clone (clones share the database), which is also how
/// openraft gets its log readers.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// To the flusher thread (it stops when every clone is gone).
    flush: mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// The flusher: waits for a callback, takes every other one already queued, makes them
/// durable with one fsync'd commit, then reports them. It holds the database only while
/// flushing, so dropping the store closes the file at once (a member restarted in the
/// same process can reopen it).
fn flusher(db: std::sync::Weak<Database>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    let mut flushes: u64 = 0;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        flushes += 1;
        let result = (|| -> Result<(), StoreError> {
            let db = db.upgrade().ok_or_else(|| std::io::Error::other("the log store is closed"))?;
            let txn = db.begin_write()?; // Durability::Immediate: fsync'd on commit.
            txn.open_table(META)?.insert(FLUSHES, flushes.to_be_bytes().as_slice())?;
            txn.commit()?;
            Ok(())
        })();
        for callback in batch {
            callback.log_io_completed(
                result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
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
            let db = Arc::new(db);
            let (flush, rx) = mpsc::channel();
            let flusher_db = Arc::downgrade(&db);
            std::thread::Builder::new()
                .name("raft-log-flush".into())
                .spawn(move || flusher(flusher_db, rx))?;
            Ok(LogStore { db, flush })
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
                // Readable now, durable with the flusher's next commit (module docs).
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::None);
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
                if let Err(mpsc::SendError(callback)) = self.flush.send(callback) {
                    // The flusher is gone (it only stops with the store): nothing can be
                    // made durable.
                    let e = std::io::Error::other("the log flusher has stopped");
                    callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                    return Err(StorageIOError::write_logs(&e).into());
                }
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
