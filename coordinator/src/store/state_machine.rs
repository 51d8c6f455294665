//! The applied fleet state and its snapshots (see the [module documentation](super)).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::{blocking, StoreError};
use crate::raft_types::{CommandResult, MemberId, StorageError, TypeConfig};
use crate::state::{FleetState, Response};

const SNAPSHOT_FILE: &str = "snapshot.json";
const SNAPSHOT_TMP: &str = "snapshot.json.tmp";

/// The state machine's content: what a snapshot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    /// The last log entry applied.
    pub last_applied: Option<LogId<MemberId>>,
    /// The last membership applied.
    pub membership: StoredMembership<MemberId, BasicNode>,
    /// The fleet state.
    pub fleet: FleetState,
}

type Meta = SnapshotMeta<MemberId, BasicNode>;

/// The state machine openraft drives. Clones share the state, so the API layer can read
/// what has been applied ([`StateMachineStore::read`]).
#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<RwLock<AppliedState>>,
    dir: PathBuf,
    /// Counts snapshots built by this process, to make snapshot ids unique.
    snapshots_built: u64,
}

/// Writes a snapshot file atomically: temporary file, fsync, rename, fsync of the directory.
fn write_snapshot(dir: &Path, meta: &Meta, data: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let mut f = File::create(&tmp)?;
    serde_json::to_writer(&mut f, meta)?;
    f.write_all(b"\n")?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads the snapshot file, if there is one: its metadata and its data.
fn read_snapshot(dir: &Path) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let path = dir.join(SNAPSHOT_FILE);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        return Err(StoreError::BadSnapshot(path.display().to_string()));
    }
    let meta = serde_json::from_slice(&line)?;
    let mut data = Vec::new();
    r.read_to_end(&mut data)?;
    Ok(Some((meta, data)))
}

fn snapshot_err(meta: Option<&Meta>, e: &StoreError) -> StorageError {
    StorageIOError::write_snapshot(meta.map(Meta::signature), e).into()
}

impl StateMachineStore {
    /// Opens the state machine in `dir`, restoring the latest snapshot if there is one.
    pub async fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir = dir.to_owned();
        let d = dir.clone();
        let applied = blocking(move || match read_snapshot(&d)? {
            Some((_, data)) => Ok(serde_json::from_slice(&data)?),
            None => Ok(AppliedState::default()),
        })
        .await?;
        Ok(StateMachineStore { applied: Arc::new(RwLock::new(applied)), dir, snapshots_built: 0 })
    }

    /// Runs `f` on the applied state (a short read lock: do no I/O in `f`).
    pub fn read<T>(&self, f: impl FnOnce(&AppliedState) -> T) -> T {
        // A poisoned lock means a panic while applying; the data is still the last
        // consistent state as `FleetState::apply` changes nothing before it fails.
        let guard = self.applied.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AppliedState> {
        self.applied.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for a builder, so
/// that applying goes on while the snapshot is serialized and written.
pub struct SnapshotBuilder {
    state: AppliedState,
    dir: PathBuf,
    snapshot_id: String,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let meta = Meta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        };
        let data = serde_json::to_vec(&self.state).map_err(|e| snapshot_err(Some(&meta), &e.into()))?;
        let (dir, m, d) = (self.dir.clone(), meta.clone(), data.clone());
        blocking(move || write_snapshot(&dir, &m, &d)).await.map_err(|e| snapshot_err(Some(&meta), &e))?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot written");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<MemberId>>, StoredMembership<MemberId, BasicNode>), StorageError> {
        Ok(self.read(|a| (a.last_applied, a.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.write();
        let mut results = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Normal(cmd) => applied.fleet.apply(cmd),
                EntryPayload::Blank => Ok(Response::Done { generation: applied.fleet.generation() }),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(Response::Done { generation: applied.fleet.generation() })
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        let state = self.read(AppliedState::clone);
        let last =
            state.last_applied.map_or_else(|| "none".to_owned(), |l| format!("{}-{}", l.leader_id, l.index));
        SnapshotBuilder {
            state,
            dir: self.dir.clone(),
            snapshot_id: format!("{last}-{}", self.snapshots_built),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state: AppliedState =
            serde_json::from_slice(&data).map_err(|e| snapshot_err(Some(meta), &e.into()))?;
        // Durable first: once installed in memory openraft may purge the log it replaces.
        let (dir, m) = (self.dir.clone(), meta.clone());
        blocking(move || write_snapshot(&dir, &m, &data)).await.map_err(|e| snapshot_err(Some(meta), &e))?;
        *self.write() = state;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let dir = self.dir.clone();
        let found = blocking(move || read_snapshot(&dir))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(found.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
