//! The node's side of the fleet's membership gossip (chitchat over UDP), enabled by
//! `--gossip-listen`.
//!
//! The node joins cluster [`CLUSTER_ID`] as `node/<name>` with the start time in
//! milliseconds as its generation (a restart is a new generation) and publishes the
//! keys of [`keys`], which the coordinator reads: static facts once, the applied
//! generation within one gossip interval of a change, and its load every
//! [`LOAD_INTERVAL`]. Values come from the control plane's atomics and the workers'
//! occupancy gauges; nothing here touches the packet path or takes a lock the workers
//! use. The key values are computed by pure functions ([`static_keys`],
//! [`dynamic_keys`]); [`run`] is the thin I/O part on the node's tokio runtime.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::time::Duration;

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};

use crate::cli::GossipSettings;

pub use dpfleet_proto::gossip::{CLUSTER_ID, NODE_PREFIX};
/// Time between gossip rounds.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// Time between updates of the load keys.
pub const LOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The keys a node publishes (names fixed by the contract with the coordinator).
pub use dpfleet_proto::gossip::keys;

/// What does not change while the node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's underlay address.
    pub underlay: Ipv6Addr,
    /// The node API endpoint.
    pub api: String,
    /// The node's version.
    pub version: String,
    /// Device names of the VF ports, in port order.
    pub devices: Vec<String>,
}

/// What changes: read every round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeLoad {
    /// The applied generation.
    pub generation: u64,
    /// Live flows.
    pub flows: u64,
    /// NAT port mappings in use.
    pub nat_ports_used: u64,
}

/// The keys that never change.
pub fn static_keys(f: &NodeFacts) -> Vec<(String, String)> {
    vec![
        (keys::ROLE.into(), keys::ROLE_NODE.into()),
        (keys::UNDERLAY.into(), f.underlay.to_string()),
        (keys::API.into(), f.api.clone()),
        (keys::VERSION.into(), f.version.clone()),
        (keys::DEVICES.into(), f.devices.join(",")),
    ]
}

/// The keys that change.
pub fn dynamic_keys(l: &NodeLoad) -> Vec<(String, String)> {
    vec![
        (keys::GENERATION.into(), l.generation.to_string()),
        (keys::LOAD_FLOWS.into(), l.flows.to_string()),
        (keys::LOAD_NAT_PORTS_USED.into(), l.nat_ports_used.to_string()),
    ]
}

/// The chitchat configuration of node `s` started at `start_ms` (ms since the epoch).
pub fn config(s: &GossipSettings, start_ms: u64) -> ChitchatConfig {
    let id = ChitchatId::new(format!("{NODE_PREFIX}{}", s.node_name), start_ms, s.advertise);
    ChitchatConfig {
        chitchat_id: id,
        cluster_id: CLUSTER_ID.into(),
        gossip_interval: GOSSIP_INTERVAL,
        listen_addr: s.listen,
        seed_nodes: s.seeds.iter().map(ToString::to_string).collect(),
        // Peers heard every gossip interval are suspected after about 2.8 s of silence
        // (phi 6 with a 200 ms mean interval); the coordinator adds its own grace period.
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: 6.0,
            initial_interval: GOSSIP_INTERVAL,
            max_interval: Duration::from_secs(2),
            dead_node_grace_period: Duration::from_secs(3600),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    }
}

/// Gossips until `shutdown` completes. `generation` is read every gossip interval,
/// `load` every [`LOAD_INTERVAL`]; a key is written only when its value changed.
pub async fn run(
    settings: GossipSettings,
    facts: NodeFacts,
    generation: impl Fn() -> u64 + Send,
    load: impl Fn() -> (u64, u64) + Send,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let (flows, nat_ports_used) = load();
    let mut last = NodeLoad { generation: generation(), flows, nat_ports_used };
    let mut initial = static_keys(&facts);
    initial.extend(dynamic_keys(&last));
    let cfg = config(&settings, start_ms);
    tracing::info!(
        id = ?cfg.chitchat_id, listen = %settings.listen, seeds = ?settings.seeds, api = %settings.api,
        "joining the fleet's gossip"
    );
    let handle = spawn_chitchat(cfg, initial, &UdpTransport).await?;
    let mut tick = tokio::time::interval(GOSSIP_INTERVAL);
    let rounds_per_load = (LOAD_INTERVAL.as_millis() / GOSSIP_INTERVAL.as_millis()).max(1);
    let mut round = 0u128;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        round += 1;
        let mut now = NodeLoad { generation: generation(), ..last };
        if round.is_multiple_of(rounds_per_load) {
            (now.flows, now.nat_ports_used) = load();
        }
        if now == last {
            continue;
        }
        let old: BTreeMap<String, String> = dynamic_keys(&last).into_iter().collect();
        let changed: Vec<(String, String)> =
            dynamic_keys(&now).into_iter().filter(|(k, v)| old.get(k) != Some(v)).collect();
        handle
            .with_chitchat(|c| {
                let me = c.self_node_state();
                for (k, v) in &changed {
                    me.set(k, v);
                }
            })
            .await;
        last = now;
    }
    handle.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> GossipSettings {
        GossipSettings {
            node_name: "n1".into(),
            listen: "[::]:7946".parse().unwrap(),
            advertise: "[fc00::5]:7946".parse().unwrap(),
            seeds: vec!["10.0.0.1:7946".parse().unwrap()],
            api: "[fc00::5]:1337".into(),
        }
    }

    #[test]
    fn published_keys() {
        let facts = NodeFacts {
            underlay: "fc00:1::1".parse().unwrap(),
            api: "[fc00::5]:1337".into(),
            version: "0.1.0".into(),
            devices: vec!["net_tap2".into(), "net_tap3".into()],
        };
        let mut all = static_keys(&facts);
        all.extend(dynamic_keys(&NodeLoad { generation: 7, flows: 1200, nat_ports_used: 3 }));
        let all: BTreeMap<_, _> = all.into_iter().collect();
        let want = [
            ("role", "node"),
            ("underlay", "fc00:1::1"),
            ("api", "[fc00::5]:1337"),
            ("version", "0.1.0"),
            ("devices", "net_tap2,net_tap3"),
            ("generation", "7"),
            ("load.flows", "1200"),
            ("load.nat_ports_used", "3"),
        ];
        assert_eq!(all, want.iter().map(|&(k, v)| (k.to_string(), v.to_string())).collect());
    }

    #[test]
    fn chitchat_identity() {
        let c = config(&settings(), 1_700_000_000_123);
        assert_eq!(&*c.chitchat_id.node_id, "node/n1");
        assert_eq!(c.chitchat_id.generation_id, 1_700_000_000_123);
        assert_eq!(c.chitchat_id.gossip_advertise_addr, "[fc00::5]:7946".parse().unwrap());
        assert_eq!(c.listen_addr, "[::]:7946".parse().unwrap());
        assert_eq!(c.cluster_id, "dpfleet");
        assert_eq!(c.seed_nodes, vec!["10.0.0.1:7946".to_string()]);
        assert_eq!(c.gossip_interval, Duration::from_millis(200));
    }

    /// Two members on loopback: the other one sees this node's keys, and a changed
    /// generation arrives.
    #[tokio::test]
    async fn a_peer_reads_the_keys() {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let node_addr = probe.local_addr().unwrap();
        drop(probe);
        let s = GossipSettings {
            node_name: "t1".into(),
            listen: node_addr,
            advertise: node_addr,
            seeds: vec![],
            api: "127.0.0.1:1337".into(),
        };
        let facts = NodeFacts {
            underlay: "fc00:1::1".parse().unwrap(),
            api: s.api.clone(),
            version: "9.9.9".into(),
            devices: vec!["net_tap2".into()],
        };
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(4));
        let g = generation.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let node = tokio::spawn(run(
            s,
            facts,
            move || g.load(std::sync::atomic::Ordering::Relaxed),
            || (10, 2),
            async {
                let _ = stopped.await;
            },
        ));
        // The peer stands in for a coordinator; it advertises its real port.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = probe.local_addr().unwrap();
        drop(probe);
        let peer_cfg = ChitchatConfig {
            chitchat_id: ChitchatId::new("coordinator/1", 1, peer_addr),
            seed_nodes: vec![node_addr.to_string()],
            listen_addr: peer_addr,
            ..config(&settings(), 0)
        };
        let peer = spawn_chitchat(peer_cfg, vec![], &UdpTransport).await.unwrap();
        let read = |key: &'static str| {
            let peer = &peer;
            async move {
                peer.with_chitchat(|c| {
                    c.node_states()
                        .iter()
                        .find(|(id, _)| &*id.node_id == "node/t1")
                        .and_then(|(_, st)| st.get(key).map(str::to_owned))
                })
                .await
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while read("devices").await.is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the node's keys never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(read("role").await.as_deref(), Some("node"));
        assert_eq!(read("underlay").await.as_deref(), Some("fc00:1::1"));
        assert_eq!(read("generation").await.as_deref(), Some("4"));
        assert_eq!(read("load.flows").await.as_deref(), Some("10"));
        generation.store(5, std::sync::atomic::Ordering::Relaxed);
        while read("generation").await.as_deref() != Some("5") {
            assert!(tokio::time::Instant::now() < deadline, "the new generation never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(()).unwrap();
        node.await.unwrap().unwrap();
        peer.shutdown().await.unwrap();
    }
}
