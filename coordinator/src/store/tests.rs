//! The store against openraft's storage test suite, plus what the suite does not cover:
//! surviving a reopen.

use std::net::Ipv6Addr;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, Vote};
use tempfile::TempDir;

use super::*;
use crate::raft_types::{StorageError, TypeConfig};
use crate::state::{Command, Op};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (log, sm) = open(dir.path()).await.expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn entry(term: u64, index: u64, node: u16) -> Entry<TypeConfig> {
    let op = Op::RegisterNode {
        id: format!("n{node}"),
        underlay: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, node),
        api_endpoint: format!("n{node}:1337"),
        devices: vec![],
    };
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Command::new(op)),
    }
}

async fn append(log: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    // Returns once the append callback reported the entries flushed.
    log.blocking_append(entries).await.unwrap();
}

#[tokio::test]
async fn log_vote_and_snapshot_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = open(dir.path()).await.unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        append(&mut log, (1..=10).map(|i| entry(3, i, i as u16)).collect()).await;
        log.truncate(LogId::new(CommittedLeaderId::new(3, 1), 9)).await.unwrap();
        let results = sm.apply(log.try_get_log_entries(1..=5).await.unwrap()).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(5));
        log.purge(LogId::new(CommittedLeaderId::new(3, 1), 4)).await.unwrap();
        // No temporary file is left behind.
        assert!(!dir.path().join("snapshot.json.tmp").exists());
    }
    let (mut log, mut sm) = open(dir.path()).await.unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(4));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(8));
    let indexes: Vec<u64> =
        log.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, [5, 6, 7, 8]);
    // The state machine restarts from the snapshot: nodes 1..=5 applied.
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(5));
    assert_eq!(sm.read(|a| a.fleet.nodes().len()), 5);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(5));
}

#[tokio::test]
async fn installing_a_snapshot_replaces_the_state_durably() {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, mut src) = open(src_dir.path()).await.unwrap();
    src.apply((1..=3).map(|i| entry(1, i, i as u16))).await.unwrap();
    let snapshot = src.get_snapshot_builder().await.build_snapshot().await.unwrap();
    {
        let (_, mut dst) = open(dst_dir.path()).await.unwrap();
        dst.apply([entry(1, 1, 9)]).await.unwrap();
        dst.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        assert_eq!(dst.read(|a| a.clone()), src.read(|a| a.clone()));
    }
    let (_, dst) = open(dst_dir.path()).await.unwrap();
    assert_eq!(dst.read(|a| a.clone()), src.read(|a| a.clone()));
}
