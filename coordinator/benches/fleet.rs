//! Coordinator benchmarks (issue 4, point 10), printed as a table:
//!
//! - `alloc`: the deterministic state machine at fleet scale: 1,000 nodes with 128
//!   devices each, 100,000 interfaces placed by the coordinator, and a NAT port block
//!   for every one of them (100 public IPs). No Raft, no I/O: the cost every replica pays
//!   to apply those commands.
//! - `failover`: three members on loopback (real gRPC, redb on the temp dir's disk):
//!   the time from stopping the leader to the first write committed by its successor,
//!   five times.
//!
//! Run: `cargo bench -p dpfleet-coordinator --bench fleet`. Add `-- alloc` or
//! `-- failover` to run one part.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use dpfleet_coordinator::state::{Command, FleetState, InterfaceSpec, NatGatewaySpec, NodeState, Op};
use dpfleet_coordinator::{default_config, Member, MemberId};
use tempfile::TempDir;
use tokio::net::TcpListener;

const NODES: u32 = 1_000;
const DEVICES: u32 = 128;
const INTERFACES: u32 = 100_000;

fn apply(s: &mut FleetState, op: Op) {
    if let Err(e) = s.apply(Command::new(op)) {
        panic!("refused: {e}");
    }
}

fn alloc() {
    let mut s = FleetState::new();
    let t = Instant::now();
    for n in 0..NODES {
        let [_, _, hi, lo] = n.to_be_bytes();
        apply(
            &mut s,
            Op::RegisterNode {
                id: format!("node{n:04}"),
                underlay: Ipv6Addr::new(0xfc00, u16::from_be_bytes([hi, lo]), 0, 0, 0, 0, 0, 1),
                api_endpoint: format!("10.0.{hi}.{lo}:1337"),
                devices: (0..DEVICES).map(|d| format!("vf{d}")).collect(),
            },
        );
        apply(&mut s, Op::SetNodeState { id: format!("node{n:04}"), state: NodeState::Active });
    }
    let nodes = t.elapsed();
    apply(&mut s, Op::CreateVni { vni: 100 });
    apply(
        &mut s,
        Op::CreateNatGateway(NatGatewaySpec {
            id: "gw".into(),
            vni: 100,
            public_ips: (0..100).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect(),
            port_min: 1024,
            port_max: 65536,
            block_size: 64,
        }),
    );
    let t = Instant::now();
    for i in 0..INTERFACES {
        let [_, a, b, c] = i.to_be_bytes();
        apply(
            &mut s,
            Op::CreateInterface(InterfaceSpec {
                id: format!("vm{i}"),
                vni: 100,
                node: None,
                device: None,
                ipv4: Some(Ipv4Addr::new(10, a, b, c)),
                ipv6: None,
            }),
        );
    }
    let place = t.elapsed();
    let t = Instant::now();
    for i in 0..INTERFACES {
        apply(&mut s, Op::AttachNat { gateway: "gw".into(), interface: format!("vm{i}") });
    }
    let nat = t.elapsed();
    let per = |d: Duration, n: u32| d.as_secs_f64() * 1e6 / f64::from(n);
    println!("| alloc | register + activate {NODES} nodes | {:.1} ms ({:.1} µs each) |", ms(nodes), per(nodes, NODES));
    println!(
        "| alloc | place {INTERFACES} interfaces on {NODES} nodes | {:.0} ms ({:.1} µs each) |",
        ms(place),
        per(place, INTERFACES)
    );
    println!(
        "| alloc | NAT block for each of {INTERFACES} interfaces | {:.0} ms ({:.1} µs each) |",
        ms(nat),
        per(nat, INTERFACES)
    );
    let t = Instant::now();
    let json = serde_json::to_vec(&s).expect("state serializes");
    let snap = t.elapsed();
    println!("| alloc | snapshot of that state ({} MiB JSON) | {:.0} ms |", json.len() >> 20, ms(snap));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Cluster {
    members: BTreeMap<MemberId, Member>,
    addrs: BTreeMap<MemberId, SocketAddr>,
    _dirs: BTreeMap<MemberId, TempDir>,
}

impl Cluster {
    async fn start() -> Cluster {
        let mut listeners = BTreeMap::new();
        for id in 1..=3 {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let addrs: BTreeMap<_, _> = listeners.iter().map(|(&id, l)| (id, l.local_addr().expect("addr"))).collect();
        let dirs: BTreeMap<_, _> = (1..=3).map(|id| (id, tempfile::tempdir().expect("tempdir"))).collect();
        let mut members = BTreeMap::new();
        for (id, listener) in listeners {
            let m = Member::start(id, listener, dirs[&id].path(), default_config()).await.expect("member");
            members.insert(id, m);
        }
        let peers = addrs.iter().map(|(&id, a)| (id, openraft::BasicNode::new(a.to_string()))).collect::<BTreeMap<_, _>>();
        members[&1].raft().initialize(peers).await.expect("initialize");
        Cluster { members, addrs, _dirs: dirs }
    }

    async fn leader(&self) -> MemberId {
        let m = self.members.values().next().expect("a member");
        m.raft()
            .wait(Some(Duration::from_secs(20)))
            .metrics(|x| x.current_leader.is_some_and(|l| self.members.contains_key(&l)), "a running leader")
            .await
            .expect("a leader")
            .current_leader
            .expect("leader")
    }
}

async fn failover() {
    let mut c = Cluster::start().await;
    let leader = c.leader().await;
    c.members[&leader].raft().client_write(Command::new(Op::CreateVni { vni: 1 })).await.expect("write");
    let mut times = Vec::new();
    for round in 0..5u32 {
        let old = c.leader().await;
        let dir = c._dirs[&old].path().to_owned();
        let stopped = c.members.remove(&old).expect("leader member");
        let t = Instant::now();
        stopped.stop().await.expect("stop");
        // The first write any survivor accepts as leader.
        let elapsed = loop {
            let l = c.leader().await;
            let w = c.members[&l].raft().client_write(Command::new(Op::CreateVni { vni: 2 + round })).await;
            if w.is_ok() {
                break t.elapsed();
            }
        };
        times.push(elapsed);
        // Bring the old leader back from its directory, on its address.
        let listener = TcpListener::bind(c.addrs[&old]).await.expect("rebind");
        let m = Member::start(old, listener, &dir, default_config()).await.expect("restart");
        c.members.insert(old, m);
    }
    times.sort();
    println!(
        "| failover | leader stopped → first write committed by the new leader (5 runs) | min {:.0} ms, median {:.0} ms, max {:.0} ms |",
        ms(times[0]),
        ms(times[2]),
        ms(times[4])
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    println!("| part | case | result |\n|---|---|---|");
    if want("alloc") {
        alloc();
    }
    if want("failover") {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(failover());
    }
}
