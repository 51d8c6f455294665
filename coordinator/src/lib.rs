//! dpfleet's coordinator: the Raft-replicated desired state of the fleet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod grpc;
pub mod member;
pub mod network;
pub mod raft_types;
pub mod state;
pub mod store;

pub use member::{default_config, Member, MemberError};
pub use raft_types::{CommandResult, MemberId, Raft, TypeConfig};
