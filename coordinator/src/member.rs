//! One coordinator member: its durable store, its Raft instance and the gRPC server that
//! other members reach it on, which also serves the cluster API. No clock or policy of
//! its own: timing comes from the openraft [`Config`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use openraft::{Config, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::gossip::GossipView;
use crate::grpc::{ClusterApi, GossipSlot, RaftService};
use crate::network::NetworkFactory;
use crate::raft_types::{MemberId, Raft};
use crate::store::{self, StateMachineStore, StoreError};

/// Why a member could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The data directory could not be opened.
    #[error("opening the data directory: {0}")]
    Store(#[from] StoreError),
    /// The openraft configuration is invalid.
    #[error("invalid Raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    /// Openraft failed.
    #[error("raft: {0}")]
    Raft(#[from] openraft::error::Fatal<MemberId>),
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// Raft's tasks did not stop cleanly.
    #[error("stopping Raft: {0}")]
    Shutdown(String),
    /// The gRPC server failed.
    #[error("Raft gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// The Raft timing and log-compaction settings of the coordinator: heartbeats every
/// 100 ms, an election after 400-800 ms without one (a leader failover well under the 2 s
/// target), a snapshot every 10,000 entries keeping 1,000 entries behind it for lagging
/// followers.
pub fn default_config() -> Config {
    Config {
        cluster_name: "dpfleet".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Config::default()
    }
}

/// A running member.
pub struct Member {
    id: MemberId,
    addr: SocketAddr,
    raft: Raft,
    state: StateMachineStore,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_server: oneshot::Sender<()>,
    gossip: GossipSlot,
}

impl Member {
    /// Opens `data_dir`, starts Raft member `id` and serves its RPCs on `listener`.
    pub async fn start(
        id: MemberId,
        listener: TcpListener,
        data_dir: &Path,
        config: Config,
    ) -> Result<Member, MemberError> {
        let config = Arc::new(config.validate()?);
        let (log, state) = store::open(data_dir).await?;
        let raft = Raft::new(id, config, NetworkFactory, log, state.clone()).await?;
        let addr = listener.local_addr()?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let service = RaftService::new(raft.clone()).into_server();
        // The cluster API shares the port: a member's Raft address is its API endpoint.
        let cluster_api = ClusterApi::new(id, raft.clone(), state.clone());
        let gossip = cluster_api.gossip_slot();
        let cluster_api = cluster_api.into_server();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .add_service(cluster_api)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        tracing::info!(id, %addr, dir = %data_dir.display(), "coordinator member started");
        Ok(Member { id, addr, raft, state, server, stop_server, gossip })
    }

    /// This member's id.
    pub fn id(&self) -> MemberId {
        self.id
    }

    /// Where this member serves Raft RPCs.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Raft handle: writes (`client_write`), membership, metrics.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The applied state.
    pub fn state(&self) -> &StateMachineStore {
        &self.state
    }

    /// Gives the cluster API this member's gossip view, from which it reports the
    /// generation each node has applied (ListNodes, GetNode). Only the first call counts.
    pub fn set_gossip_view(&self, view: tokio::sync::watch::Receiver<Arc<GossipView>>) {
        let _ = self.gossip.set(view);
    }

    /// Runs until `shutdown` completes or the gRPC server fails, then stops.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), MemberError> {
        tokio::select! {
            () = shutdown => {}
            r = &mut self.server => {
                // The server ended on its own: report why after stopping Raft.
                self.raft.shutdown().await.map_err(|e| MemberError::Shutdown(e.to_string()))?;
                return match r {
                    Ok(r) => r.map_err(MemberError::from),
                    Err(e) => Err(MemberError::Shutdown(e.to_string())),
                };
            }
        }
        self.stop().await
    }

    /// Stops the gRPC server and Raft, closing the data directory.
    pub async fn stop(self) -> Result<(), MemberError> {
        let _ = self.stop_server.send(());
        let served = self.server.await;
        self.raft.shutdown().await.map_err(|e| MemberError::Shutdown(e.to_string()))?;
        tracing::info!(id = self.id, "coordinator member stopped");
        match served {
            Ok(r) => r.map_err(MemberError::from),
            Err(e) => Err(MemberError::Shutdown(e.to_string())),
        }
    }
}
