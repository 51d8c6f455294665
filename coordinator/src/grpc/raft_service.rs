//! Serves openraft's RPCs from other members: decodes the JSON payload, hands it to the
//! local [`Raft`], encodes its `Result` back. Only a payload that cannot be decoded is a
//! gRPC error (`INVALID_ARGUMENT`); Raft's own errors travel inside the reply.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::pb::raft_service_server::{RaftService as RaftServiceTrait, RaftServiceServer};
use super::pb::RaftMessage;
use crate::raft_types::Raft;

/// The `dpfleet.raft.v1.RaftService` of one member.
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    /// Serves RPCs for `raft`.
    pub fn new(raft: Raft) -> Self {
        RaftService { raft }
    }

    /// The tonic service, ready for `Server::add_service`. Snapshot chunks can be larger
    /// than tonic's default 4 MiB message limit, so the limit is raised.
    pub fn into_server(self) -> RaftServiceServer<Self> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

/// The largest Raft message accepted (openraft's snapshot chunks default to 3 MiB; an
/// append-entries batch is bounded by openraft's `max_payload_entries`).
const MAX_MESSAGE: usize = 64 << 20;

fn decode<T: DeserializeOwned>(req: Request<RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("malformed Raft message: {e}")))
}

fn encode<T: Serialize>(reply: &T) -> Result<Response<RaftMessage>, Status> {
    let json =
        serde_json::to_vec(reply).map_err(|e| Status::internal(format!("encoding Raft reply: {e}")))?;
    Ok(Response::new(RaftMessage { json }))
}

#[tonic::async_trait]
impl RaftServiceTrait for RaftService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.append_entries(decode(req)?).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.vote(decode(req)?).await)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        encode(&self.raft.install_snapshot(decode(req)?).await)
    }
}
