//! Three coordinator members in one process, talking Raft over gRPC on loopback, each with
//! its own data directory: election, replicated writes, leader failure, restart from disk.
//! Every wait polls openraft's metrics with a deadline; nothing sleeps.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use dpfleet_coordinator::state::{Command, FleetState, InterfaceSpec, NatGatewaySpec, Op, Response};
use dpfleet_coordinator::{default_config, Member, MemberId};
use openraft::{BasicNode, Config, SnapshotPolicy};
use tempfile::TempDir;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(20);

/// Snapshots every 20 entries and no log kept behind them, so that the test exercises
/// snapshot building, log purging, restart from a snapshot and snapshot installation over
/// gRPC for a member that fell behind.
fn config() -> Config {
    Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(20),
        max_in_snapshot_log_to_keep: 0,
        ..default_config()
    }
}

struct Cluster {
    members: BTreeMap<MemberId, Member>,
    addrs: BTreeMap<MemberId, SocketAddr>,
    dirs: BTreeMap<MemberId, TempDir>,
}

impl Cluster {
    async fn start() -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: BTreeMap<_, _> = listeners.iter().map(|(&id, l)| (id, l.local_addr().unwrap())).collect();
        let dirs: BTreeMap<_, _> = (1..=3).map(|id| (id, tempfile::tempdir().unwrap())).collect();
        let mut members = BTreeMap::new();
        for (id, listener) in listeners {
            members.insert(id, Member::start(id, listener, dirs[&id].path(), config()).await.unwrap());
        }
        Cluster { members, addrs, dirs }
    }

    fn dir(&self, id: MemberId) -> PathBuf {
        self.dirs[&id].path().to_owned()
    }

    /// Waits until every running member agrees on a leader other than `not`, and returns it.
    async fn leader(&self, not: Option<MemberId>) -> MemberId {
        let mut leader = None;
        for m in self.members.values() {
            let metrics = m
                .raft()
                .wait(Some(DEADLINE))
                .metrics(|x| x.current_leader.is_some() && x.current_leader != not, "a new leader")
                .await
                .expect("a leader is elected");
            leader.get_or_insert(metrics.current_leader.unwrap());
        }
        let leader = leader.unwrap();
        for m in self.members.values() {
            m.raft()
                .wait(Some(DEADLINE))
                .metrics(|x| x.current_leader == Some(leader), "the same leader")
                .await
                .expect("members agree on the leader");
        }
        leader
    }

    async fn write(&self, leader: MemberId, cmd: Command) -> (u64, Response) {
        let reply = self.members[&leader].raft().client_write(cmd).await.expect("write committed");
        (reply.log_id.index, reply.data.expect("command applied"))
    }

    /// Waits until every running member has applied `index`, and returns their states,
    /// checking they are equal.
    async fn converged(&self, index: u64) -> FleetState {
        let mut states = Vec::new();
        for m in self.members.values() {
            m.raft()
                .wait(Some(DEADLINE))
                .applied_index_at_least(Some(index), "applied")
                .await
                .expect("member applies the write");
            states.push(m.state().read(|a| a.fleet.clone()));
        }
        for s in &states[1..] {
            assert_eq!(s, &states[0]);
        }
        states.swap_remove(0)
    }
}

fn register(i: u16) -> Op {
    Op::RegisterNode {
        id: format!("node{i}"),
        underlay: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i),
        api_endpoint: format!("[fd00::{i}]:1337"),
        devices: vec![],
    }
}

fn interface(i: u8) -> Op {
    Op::CreateInterface(InterfaceSpec {
        id: format!("vm{i}"),
        vni: 100,
        node: Some(format!("node{}", 1 + i % 3)),
        device: Some(format!("dev{i}")),
        ipv4: Some(Ipv4Addr::new(10, 0, 0, i)),
        ipv6: None,
    })
}

fn attach(i: u8) -> Command {
    Command::with_request_id(
        format!("attach-vm{i}"),
        Op::AttachNat { gateway: "gw".into(), interface: format!("vm{i}") },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_fail_over_and_recover() {
    let mut cluster = Cluster::start().await;
    let nodes: BTreeMap<_, _> =
        cluster.addrs.iter().map(|(&id, a)| (id, BasicNode::new(a.to_string()))).collect();
    cluster.members[&1].raft().initialize(nodes).await.unwrap();
    let first = cluster.leader(None).await;

    // Writes through the leader; the replies are what clients were acknowledged.
    let mut acked = Vec::new();
    for op in [register(1), register(2), register(3), Op::CreateVni { vni: 100 }] {
        acked.push(cluster.write(first, Command::new(op)).await);
    }
    acked.push(
        cluster
            .write(
                first,
                Command::new(Op::CreateNatGateway(NatGatewaySpec {
                    id: "gw".into(),
                    vni: 100,
                    public_ips: vec![Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)],
                    port_min: 1024,
                    port_max: 65_536,
                    block_size: 1024,
                })),
            )
            .await,
    );
    for i in 1..=30 {
        acked.push(cluster.write(first, Command::new(interface(i))).await);
    }
    for i in 1..=10 {
        acked.push(cluster.write(first, attach(i)).await);
    }
    let state = cluster.converged(acked.last().unwrap().0).await;
    assert_eq!(state.interfaces().len(), 30);
    assert_eq!(state.nat_gateways()["gw"].usage().0, 10);

    // A follower refuses writes and names the leader.
    let follower = *cluster.members.keys().find(|&&id| id != first).unwrap();
    let err = cluster.members[&follower].raft().client_write(Command::new(register(9))).await.unwrap_err();
    assert_eq!(err.forward_to_leader().and_then(|f| f.leader_id), Some(first));

    // Stop the leader: the other two elect a new one and keep every acknowledged write.
    cluster.members.remove(&first).unwrap().stop().await.unwrap();
    let second = cluster.leader(Some(first)).await;
    assert_ne!(second, first);
    // A retried request (same request id) returns the first answer and changes nothing.
    let (_, retried) = cluster.write(second, attach(3)).await;
    assert_eq!(retried, acked[5 + 30 + 2].1);
    for i in 11..=40 {
        acked.push(cluster.write(second, attach(i % 30 + 1)).await);
    }
    let last = acked.iter().map(|a| a.0).max().unwrap();
    let state = cluster.converged(last).await;
    let gw = &state.nat_gateways()["gw"];
    assert_eq!(gw.usage().0, 30);
    for (_, response) in &acked {
        if let Response::NatBlock { block, .. } = response {
            assert!(gw.allocations().any(|(_, b)| b == *block), "acknowledged block {block:?} lost");
        }
    }

    // Restart the old leader from its directory at its address: it catches up (from a
    // snapshot, since the others purged their logs) and holds the same state.
    let listener = TcpListener::bind(cluster.addrs[&first]).await.unwrap();
    let restarted = Member::start(first, listener, &cluster.dir(first), config()).await.unwrap();
    // Before hearing from anyone, it has restored from disk (its snapshot plus the
    // committed entries after it) all it had applied when stopped.
    assert_eq!(restarted.state().read(|a| a.fleet.interfaces().len()), 30);
    assert!(restarted.state().read(|a| a.fleet.nat_gateways()["gw"].usage().0) >= 10);
    cluster.members.insert(first, restarted);
    let (index, _) = cluster.write(second, Command::new(register(4))).await;
    let recovered = cluster.converged(index).await;
    assert_eq!(recovered.nodes().len(), 4);
    assert_eq!(recovered.nat_gateways()["gw"].usage().0, 30);
    assert_eq!(cluster.leader(None).await, second);

    for (_, m) in std::mem::take(&mut cluster.members) {
        m.stop().await.unwrap();
    }
}
