//! The one place that declares the coordinator's Raft types.

use std::io::Cursor;

use crate::state::{ApplyError, Command, Response};

/// What applying a log entry returns to the client that proposed it.
pub type CommandResult = Result<Response, ApplyError>;

openraft::declare_raft_types!(
    /// The coordinator's Raft type configuration: commands of the fleet state machine,
    /// `u64` member ids, members addressed by their Raft RPC endpoint, snapshots held as
    /// bytes in memory.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft member of the coordinator cluster.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft member id.
pub type MemberId = u64;
/// Openraft's storage error for our types.
pub type StorageError = openraft::StorageError<MemberId>;
