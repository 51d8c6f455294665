//! The coordinator's gRPC services, all served on a member's one port: the server side
//! of the Raft transport ([`RaftService`]) and the cluster API ([`ClusterApi`]).

mod cluster_service;
pub mod convert;
pub mod errors;
mod raft_service;

pub use cluster_service::{ClusterApi, GossipSlot, FORWARDED_BY};
pub use raft_service::RaftService;

/// The generated code of `proto/raft.proto` (`dpfleet.raft.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("dpfleet.raft.v1");
}

/// The generated code of `proto/cluster.proto` (`dpfleet.cluster.v1`): messages, the
/// `ClusterService` server trait and its client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod cluster_pb {
    tonic::include_proto!("dpfleet.cluster.v1");
}
