//! The coordinator's gRPC services. For now: the server side of the Raft transport
//! ([`RaftService`]); the cluster API joins it here.

mod raft_service;

pub use raft_service::RaftService;

/// The generated code of `proto/raft.proto` (`dpfleet.raft.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("dpfleet.raft.v1");
}
