//! Three coordinator members with gossip and the membership loop on loopback, and a node
//! that is a real chitchat instance on loopback UDP publishing the node keys: it is
//! registered, becomes active once it reports the joined generation as applied, is
//! declared down once it stops gossiping for longer than the grace period, rejoins with
//! a new generation and becomes active again. Every wait is an openraft metrics wait
//! (the predicate reads the applied state, which only changes when an entry is applied)
//! with a deadline; nothing sleeps.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use chitchat::transport::UdpTransport;
use chitchat::{ChitchatHandle, ChitchatId};
use dpfleet_coordinator::client::connect_any;
use dpfleet_coordinator::fleet::{FleetConfig, MembershipLoop};
use dpfleet_coordinator::gossip::{self, CoordinatorIdentity, Gossip, GossipConfig};
use dpfleet_coordinator::grpc::cluster_pb::ListNodesRequest;
use dpfleet_coordinator::membership::MembershipConfig;
use dpfleet_coordinator::metrics::CoordinatorMetrics;
use dpfleet_coordinator::state::{FleetState, NodeState};
use dpfleet_coordinator::{default_config, Member, MemberId};
use openraft::BasicNode;
use tempfile::TempDir;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(1);
const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);

/// A free UDP port on loopback (bound, read, released).
fn free_udp_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Coordinator {
    member: Member,
    gossip: Gossip,
    membership: MembershipLoop,
    _dir: TempDir,
}

struct Cluster {
    coordinators: BTreeMap<MemberId, Coordinator>,
    gossip_addrs: Vec<SocketAddr>,
}

impl Cluster {
    async fn start() -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let raft_addrs: BTreeMap<MemberId, SocketAddr> =
            listeners.iter().map(|(&id, l)| (id, l.local_addr().unwrap())).collect();
        let gossip_addrs: Vec<SocketAddr> = (0..3).map(|_| free_udp_addr()).collect();
        let mut coordinators = BTreeMap::new();
        for (id, listener) in listeners {
            let dir = tempfile::tempdir().unwrap();
            let member = Member::start(id, listener, dir.path(), default_config()).await.unwrap();
            let me = gossip_addrs[(id - 1) as usize];
            let config = GossipConfig {
                listen: me,
                advertise: me,
                seeds: gossip_addrs.iter().copied().filter(|a| *a != me).collect(),
                interval: GOSSIP_INTERVAL,
            };
            let identity =
                CoordinatorIdentity { raft_id: id, raft_addr: raft_addrs[&id].to_string(), generation_id: 1 };
            let gossip = Gossip::start(&config, &identity).await.unwrap();
            member.set_gossip_view(gossip.subscribe());
            let fleet = FleetConfig {
                membership: MembershipConfig { node_down_after: GRACE },
                ..FleetConfig::default()
            };
            let membership = MembershipLoop::spawn(
                member.raft().clone(),
                member.state().clone(),
                gossip.subscribe(),
                fleet,
            );
            coordinators.insert(id, Coordinator { member, gossip, membership, _dir: dir });
        }
        let nodes: BTreeMap<_, _> =
            raft_addrs.iter().map(|(&id, a)| (id, BasicNode::new(a.to_string()))).collect();
        coordinators[&1].member.raft().initialize(nodes).await.unwrap();
        Cluster { coordinators, gossip_addrs }
    }

    /// Waits until every member has applied a state where node `n1` is in `want`.
    async fn wait_node(&self, what: &str, want: NodeState) {
        for (id, c) in &self.coordinators {
            let state = c.member.state().clone();
            c.member
                .raft()
                .wait(Some(DEADLINE))
                .metrics(|_| state.read(|a| a.fleet.nodes().get("n1").is_some_and(|n| n.state == want)), what)
                .await
                .unwrap_or_else(|e| panic!("member {id}: {what}: {e}"));
        }
    }

    fn leader_state(&self) -> FleetState {
        let c = self.coordinators.values().next().unwrap();
        let leader = c.member.raft().metrics().borrow().current_leader.expect("a leader");
        self.coordinators[&leader].member.state().read(|a| a.fleet.clone())
    }

    async fn stop(self) {
        for (_, c) in self.coordinators {
            c.membership.stop().await;
            c.gossip.shutdown().await;
            c.member.stop().await.unwrap();
        }
    }
}

fn underlay() -> Ipv6Addr {
    "fc00::51".parse().unwrap()
}

/// A dataplane node's gossip: a real chitchat peer publishing the node keys (as the
/// node's gossip agent does) with `generation` as its applied generation.
async fn start_node(generation_id: u64, applied: u64, seeds: &[SocketAddr]) -> ChitchatHandle {
    let addr = free_udp_addr();
    let id = ChitchatId::new("node/n1", generation_id, addr);
    let key_values = vec![
        ("role".to_owned(), "node".to_owned()),
        ("underlay".to_owned(), underlay().to_string()),
        ("api".to_owned(), "[fc00::51]:1337".to_owned()),
        ("version".to_owned(), "0.1.0".to_owned()),
        ("generation".to_owned(), applied.to_string()),
        ("devices".to_owned(), "net_tap1,net_tap2".to_owned()),
        ("load.flows".to_owned(), "0".to_owned()),
        ("load.nat_ports_used".to_owned(), "0".to_owned()),
    ];
    let config = gossip::chitchat_config(id, addr, seeds, GOSSIP_INTERVAL);
    chitchat::spawn_chitchat(config, key_values, &UdpTransport).await.unwrap()
}

async fn publish_applied(node: &ChitchatHandle, generation: u64) {
    node.with_chitchat(|cc| cc.self_node_state().set("generation", generation)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossiping_node_joins_goes_down_and_rejoins() {
    // The transitions the leader logs show in the output of a failed run.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let cluster = Cluster::start().await;

    // A node appears in gossip having applied nothing: registered, joining.
    let node = start_node(1_000, 0, &cluster.gossip_addrs).await;
    cluster.wait_node("n1 registered", NodeState::Joining).await;
    let state = cluster.leader_state();
    let n1 = &state.nodes()["n1"];
    assert_eq!((n1.underlay, n1.api_endpoint.as_str()), (underlay(), "[fc00::51]:1337"));

    // It reports the generation it joined at as applied: active.
    let joined = state.generation();
    publish_applied(&node, joined).await;
    cluster.wait_node("n1 active", NodeState::Active).await;

    // It stops gossiping: down, but only after the grace period (less at most one tick
    // of the loop, which may have seen it live last just before it stopped).
    let stopped = Instant::now();
    node.shutdown().await.unwrap();
    cluster.wait_node("n1 down", NodeState::Down).await;
    assert!(stopped.elapsed() >= GRACE - FleetConfig::default().tick, "down after {:?}", stopped.elapsed());

    // It restarts (a new chitchat generation, nothing applied): joining, then active
    // once it reports the rejoin generation as applied.
    let node = start_node(2_000, 0, &cluster.gossip_addrs).await;
    cluster.wait_node("n1 rejoining", NodeState::Joining).await;
    let rejoined = cluster.leader_state().generation();
    assert!(rejoined > joined);
    publish_applied(&node, rejoined).await;
    cluster.wait_node("n1 active again", NodeState::Active).await;

    // The cluster API lists the generation the node gossips as applied (asked of a
    // follower, answered by the leader, whose gossip made the node active).
    let leader_id = cluster.coordinators[&1].member.raft().metrics().borrow().current_leader.unwrap();
    let follower = cluster.coordinators.values().find(|c| c.member.id() != leader_id).unwrap();
    let (_, mut api) =
        connect_any(&[follower.member.addr().to_string()], Duration::from_secs(2)).await.unwrap();
    let nodes = api.list_nodes(ListNodesRequest { stale_ok: false }).await.unwrap().into_inner().nodes;
    let n1 = nodes.iter().find(|n| n.id == "n1").expect("n1 listed");
    assert_eq!(n1.applied_generation, rejoined);

    // Five transitions were committed, each exactly once, by the leader only:
    // registered, active, down, joining, active.
    let state = cluster.leader_state();
    assert_eq!(state.generation(), 5);

    // The leader's metrics see the node active and the three coordinators live.
    let leader =
        cluster.coordinators.values().next().unwrap().member.raft().metrics().borrow().current_leader;
    let leader = &cluster.coordinators[&leader.unwrap()];
    let metrics = CoordinatorMetrics::new();
    metrics.observe_state(&state);
    metrics.observe_raft(&leader.member.raft().metrics().borrow());
    let mut view = leader.gossip.subscribe();
    tokio::time::timeout(
        DEADLINE,
        view.wait_for(|v| v.coordinators.values().filter(|c| c.live).count() == 3),
    )
    .await
    .expect("three live coordinators in gossip")
    .unwrap();
    metrics.observe_gossip(&leader.gossip.view());
    let text = metrics.encode().unwrap();
    for line in [
        r#"dpfleet_coordinator_gossip_members{role="node",state="active"} 1"#,
        r#"dpfleet_coordinator_gossip_members{role="coordinator",state="live"} 3"#,
        "dpfleet_coordinator_raft_is_leader 1",
        "dpfleet_coordinator_state_generation 5",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }

    node.shutdown().await.unwrap();
    cluster.stop().await;
}
