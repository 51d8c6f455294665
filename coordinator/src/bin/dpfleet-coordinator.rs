//! `dpfleet-coordinator`: runs one member of the coordinator's Raft cluster.
//!
//! ```text
//! dpfleet-coordinator --id 1 --listen 127.0.0.1:7001 --data-dir /var/lib/dpfleet/c1 \
//!     --peers 2=127.0.0.1:7002,3=127.0.0.1:7003 --init
//! ```
//!
//! `--init` (on one member, once) makes the cluster of this member and its peers; later
//! starts find the membership in the data directory and ignore it.
//!
//! With `--gossip-listen` the member joins the fleet's gossip and runs the membership
//! manager (nodes are registered, declared down after `--node-down-after`, rejoin and
//! become active; only the leader commits). With `--metrics-listen` it serves
//! Prometheus metrics on `/metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use dpfleet_coordinator::fleet::{FleetConfig, MembershipLoop};
use dpfleet_coordinator::gossip::{CoordinatorIdentity, Gossip, GossipConfig};
use dpfleet_coordinator::membership::MembershipConfig;
use dpfleet_coordinator::metrics::{self, CoordinatorMetrics};
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
    /// UDP address to gossip on (chitchat, cluster `dpfleet`). Without it the member
    /// neither gossips nor manages node membership.
    #[arg(long, value_name = "IP:PORT")]
    gossip_listen: Option<SocketAddr>,
    /// Address other members gossip to (default: --gossip-listen).
    #[arg(long, value_name = "IP:PORT", requires = "gossip_listen")]
    gossip_advertise: Option<SocketAddr>,
    /// Gossip seeds (usually the other coordinator members), comma-separated.
    #[arg(long, value_name = "IP:PORT,...", value_delimiter = ',', requires = "gossip_listen")]
    gossip_seeds: Vec<SocketAddr>,
    /// How long a node may be not live in gossip before it is declared down: an integer
    /// with the unit ms, s or m (e.g. 500ms, 3s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    node_down_after: Duration,
    /// Address to serve Prometheus metrics on (`GET /metrics`).
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<SocketAddr>,
}

/// Parses `<integer><unit>` with the unit `ms`, `s` or `m`, more than zero.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("{s:?} is not a duration: expected an integer and a unit (ms, s, m), e.g. 3s")
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "" => return Err(format!("{s:?} has no unit: write {s}ms or {s}s")),
        _ => return Err(format!("{s:?} has the unknown unit {unit:?}: use ms, s or m")),
    };
    if d.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(d)
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
    let metrics = Arc::new(CoordinatorMetrics::new());
    let _reconcile_observer = metrics::spawn_reconcile_observer(metrics.clone(), reconciler.status());
    let _raft_observer = metrics::spawn_raft_observer(metrics.clone(), member.raft());
    let mut gossip = None;
    let mut membership = None;
    if let Some(listen) = args.gossip_listen {
        let config = GossipConfig {
            listen,
            advertise: args.gossip_advertise.unwrap_or(listen),
            seeds: args.gossip_seeds.clone(),
            interval: GossipConfig::DEFAULT_INTERVAL,
        };
        let identity = CoordinatorIdentity {
            raft_id: args.id,
            raft_addr: args.listen.to_string(),
            generation_id: u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?,
        };
        let g = Gossip::start(&config, &identity).await?;
        member.set_gossip_view(g.subscribe());
        let fleet = FleetConfig {
            membership: MembershipConfig { node_down_after: args.node_down_after },
            ..FleetConfig::default()
        };
        membership =
            Some(MembershipLoop::spawn(member.raft().clone(), member.state().clone(), g.subscribe(), fleet));
        gossip = Some(g);
    } else {
        tracing::warn!("no --gossip-listen: node membership is not managed by this member");
    }
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener {addr}"))?;
        let state = member.state().clone();
        let view = gossip.as_ref().map(Gossip::subscribe);
        let refresh = move |m: &CoordinatorMetrics| {
            state.read(|applied| m.observe_state(&applied.fleet));
            if let Some(view) = &view {
                m.observe_gossip(&view.borrow());
            }
        };
        tracing::info!(%addr, "serving metrics on /metrics");
        tokio::spawn(async move {
            let stopped = async {
                let _ = metrics_stopped.await;
            };
            if let Err(e) = metrics::serve(listener, metrics, refresh, stopped).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    member
        .run_until(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            // Stop committing before Raft stops.
            if let Some(m) = membership {
                m.stop().await;
            }
        })
        .await?;
    if let Some(g) = gossip {
        g.shutdown().await;
    }
    reconciler.stop().await;
    let _ = stop_metrics.send(());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpfleet_coordinator::membership::DEFAULT_NODE_DOWN_AFTER;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "3", "s", "3 s", "3h", "-1s", "1.5s", "0s", "3sec"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags() {
        let args = Args::try_parse_from([
            "dpfleet-coordinator",
            "--id=1",
            "--listen=127.0.0.1:7001",
            "--data-dir=/tmp/x",
            "--gossip-listen=127.0.0.1:7946",
            "--gossip-seeds=127.0.0.1:7947,127.0.0.1:7948",
            "--node-down-after=1500ms",
            "--metrics-listen=127.0.0.1:9200",
        ])
        .unwrap();
        assert_eq!(args.gossip_seeds.len(), 2);
        assert_eq!(args.gossip_advertise, None);
        assert_eq!(args.node_down_after, Duration::from_millis(1500));
        let defaults = Args::try_parse_from([
            "dpfleet-coordinator",
            "--id=1",
            "--listen=127.0.0.1:7001",
            "--data-dir=/tmp/x",
        ])
        .unwrap();
        assert_eq!(defaults.node_down_after, DEFAULT_NODE_DOWN_AFTER);
        // Seeds without a gossip address make no sense.
        assert!(Args::try_parse_from([
            "dpfleet-coordinator",
            "--id=1",
            "--listen=127.0.0.1:7001",
            "--data-dir=/tmp/x",
            "--gossip-seeds=127.0.0.1:7947",
        ])
        .is_err());
    }
}
