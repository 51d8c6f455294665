//! dpfleet's coordinator: the Raft-replicated desired state of the fleet, node membership
//! from gossip, metrics.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod fleet;
pub mod gossip;
pub mod grpc;
pub mod member;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod raft_types;
pub mod reconcile;
pub mod state;
pub mod store;

pub use member::{default_config, Member, MemberError};
pub use raft_types::{CommandResult, MemberId, Raft, TypeConfig};
