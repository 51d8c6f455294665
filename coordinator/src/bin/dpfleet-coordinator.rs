//! `dpfleet-coordinator`: runs one member of the coordinator's Raft cluster.
//!
//! ```text
//! dpfleet-coordinator --id 1 --listen 127.0.0.1:7001 --data-dir /var/lib/dpfleet/c1 \
//!     --peers 2=127.0.0.1:7002,3=127.0.0.1:7003 --init
//! ```
//!
//! `--init` (on one member, once) makes the cluster of this member and its peers; later
//! starts find the membership in the data directory and ignore it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use dpfleet_coordinator::{default_config, Member, MemberId};
use openraft::error::{InitializeError, RaftError};
use openraft::BasicNode;

#[derive(Parser, Debug)]
#[command(version, about = "Runs one member of dpfleet's Raft-replicated coordinator")]
struct Args {
    /// This member's Raft id (unique in the cluster, not 0).
    #[arg(long)]
    id: MemberId,
    /// Address to serve Raft RPCs on; also the address peers reach this member at.
    #[arg(long)]
    listen: SocketAddr,
    /// Directory of the Raft log, vote and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// The other members, as `id=host:port`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Initialize a new cluster of this member and its peers.
    #[arg(long)]
    init: bool,
}

fn parse_peers(peers: &[String]) -> anyhow::Result<BTreeMap<MemberId, BasicNode>> {
    let mut map = BTreeMap::new();
    for p in peers {
        let (id, addr) = p.split_once('=').with_context(|| format!("peer {p:?} is not id=host:port"))?;
        let id: MemberId = id.parse().with_context(|| format!("peer id {id:?} is not a number"))?;
        if map.insert(id, BasicNode::new(addr)).is_some() {
            bail!("peer {id} is listed twice");
        }
    }
    Ok(map)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
    let args = Args::parse();
    let mut members = parse_peers(&args.peers)?;
    if members.insert(args.id, BasicNode::new(args.listen.to_string())).is_some() {
        bail!("--peers lists this member's own id {}", args.id);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let member = Member::start(args.id, listener, &args.data_dir, default_config()).await?;
    if args.init && member.raft().is_initialized().await? {
        tracing::info!("cluster already initialized; --init ignored");
    } else if args.init {
        match member.raft().initialize(members).await {
            Ok(()) => tracing::info!("cluster initialized"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                tracing::info!("cluster already initialized; --init ignored");
            }
            Err(e) => return Err(e).context("initializing the cluster"),
        }
    }
    // The reconciler drives the nodes while this member leads.
    let reconciler = dpfleet_coordinator::reconcile::Reconciler::start(
        args.id,
        member.raft().clone(),
        member.state().clone(),
        dpfleet_coordinator::reconcile::ReconcilerConfig::default(),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    member
        .run_until(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    reconciler.stop().await;
    Ok(())
}
