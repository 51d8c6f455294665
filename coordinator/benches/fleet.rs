//! Coordinator benchmarks (issue 4, point 10), printed as a table:
//!
//! - `alloc`: the deterministic state machine at fleet scale: 1,000 nodes with 128
//!   devices each, 100,000 interfaces placed by the coordinator, and a NAT port block
//!   for every one of them (100 public IPs). No Raft, no I/O: the cost every replica pays
//!   to apply those commands.
//! - `writes`: three members on loopback (real gRPC, redb fsync'd on the temp dir's
//!   disk) and N concurrent cluster API clients (1, 16, 64, 256), spread over the three
//!   members (followers forward to the leader), each creating interfaces placed by the
//!   coordinator, one after the other: writes/s and latency percentiles per N.
//! - `failover`: the same three members; the leader's Raft is shut down (heartbeats stop
//!   at once, as in a crash), and the time to the first write a cluster API client gets
//!   committed by the new leader is measured (the client retries on the survivors), with
//!   the time to the election alone, ten times.
//!
//! Run: `cargo bench -p dpfleet-coordinator --bench fleet`. Add `-- alloc`, `-- writes`
//! or `-- failover` to run one part. The load average is printed before and after each
//! part: the numbers are only as quiet as the machine.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpfleet_coordinator::client::ClusterClient;
use dpfleet_coordinator::grpc::cluster_pb as pb;
use dpfleet_coordinator::state::{Command, FleetState, InterfaceSpec, NatGatewaySpec, NodeState, Op};
use dpfleet_coordinator::{default_config, Member, MemberId};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const NODES: u32 = 1_000;
const DEVICES: u32 = 128;
const INTERFACES: u32 = 100_000;

fn apply(s: &mut FleetState, op: Op) {
    if let Err(e) = s.apply(Command::new(op)) {
        panic!("refused: {e}");
    }
}

/// Node `n` of the simulated fleet, with [`DEVICES`] devices.
fn register(n: u32) -> Op {
    let [_, _, hi, lo] = n.to_be_bytes();
    Op::RegisterNode {
        id: format!("node{n:04}"),
        underlay: Ipv6Addr::new(0xfc00, u16::from_be_bytes([hi, lo]), 0, 0, 0, 0, 0, 1),
        api_endpoint: format!("10.0.{hi}.{lo}:1337"),
        devices: (0..DEVICES).map(|d| format!("vf{d}")).collect(),
    }
}

fn activate(n: u32) -> Op {
    Op::SetNodeState { id: format!("node{n:04}"), state: NodeState::Active }
}

/// The load average (1, 5, 15 minutes) as `/proc/loadavg` has it.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn alloc() {
    let mut s = FleetState::new();
    let t = Instant::now();
    for n in 0..NODES {
        apply(&mut s, register(n));
        apply(&mut s, activate(n));
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
    println!(
        "| alloc | register + activate {NODES} nodes | {:.1} ms ({:.1} µs each) |",
        ms(nodes),
        per(nodes, NODES)
    );
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
        let addrs: BTreeMap<_, _> =
            listeners.iter().map(|(&id, l)| (id, l.local_addr().expect("addr"))).collect();
        let dirs: BTreeMap<_, _> = (1..=3).map(|id| (id, tempfile::tempdir().expect("tempdir"))).collect();
        let mut members = BTreeMap::new();
        for (id, listener) in listeners {
            let m = Member::start(id, listener, dirs[&id].path(), default_config()).await.expect("member");
            members.insert(id, m);
        }
        let peers = addrs
            .iter()
            .map(|(&id, a)| (id, openraft::BasicNode::new(a.to_string())))
            .collect::<BTreeMap<_, _>>();
        members[&1].raft().initialize(peers).await.expect("initialize");
        Cluster { members, addrs, _dirs: dirs }
    }

    async fn stop(self) {
        for m in self.members.into_values() {
            m.stop().await.expect("stop");
        }
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

/// Commits `ops` through the leader's Raft, all at once (setup, not measured).
async fn commit_all(raft: &dpfleet_coordinator::Raft, ops: Vec<Op>) {
    let mut set = JoinSet::new();
    for op in ops {
        let raft = raft.clone();
        set.spawn(async move { raft.client_write(Command::new(op)).await });
    }
    while let Some(r) = set.join_next().await {
        match r.expect("write task") {
            Ok(reply) => {
                if let Err(e) = reply.data {
                    panic!("setup write refused: {e}");
                }
            }
            Err(e) => panic!("setup write failed: {e}"),
        }
    }
}

/// A cluster API client with its own connection to `addr`.
async fn client(addr: SocketAddr) -> ClusterClient {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    ClusterClient::new(channel)
}

/// Concurrent clients of the `writes` part.
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// Per concurrency: not measured, then measured.
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);

/// One client's results: (start, latency) of every call, and the calls that failed.
struct Calls {
    done: Vec<(Instant, Instant)>,
    failed: Vec<String>,
}

/// One client: until `end`, creates an interface placed by the coordinator (with a
/// request id, as a careful client does) and attaches a NAT block to it, one call after
/// the other.
async fn writer(mut c: ClusterClient, next: Arc<AtomicU32>, end: Instant) -> Calls {
    let mut calls = Calls { done: Vec::new(), failed: Vec::new() };
    while Instant::now() < end {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let [_, a, b, d] = i.to_be_bytes();
        let id = format!("w{i}");
        let t = Instant::now();
        let r = c
            .create_interface(pb::CreateInterfaceRequest {
                request_id: format!("create-{i}"),
                id: id.clone(),
                vni: 100,
                ipv4: Ipv4Addr::new(10, a, b, d).to_string(),
                ..Default::default()
            })
            .await;
        if let Err(e) = r {
            calls.failed.push(format!("CreateInterface: {e}"));
            continue;
        }
        calls.done.push((t, Instant::now()));
        let t = Instant::now();
        let r = c
            .attach_nat(pb::AttachNatRequest {
                request_id: format!("nat-{i}"),
                gateway: "gw".into(),
                interface: id,
            })
            .await;
        match r {
            Ok(_) => calls.done.push((t, Instant::now())),
            Err(e) => calls.failed.push(format!("AttachNat: {e}")),
        }
    }
    calls
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn writes(levels: &[usize]) {
    let c = Cluster::start().await;
    let leader = c.leader().await;
    let raft = c.members[&leader].raft().clone();
    commit_all(&raft, (0..NODES).map(register).collect()).await;
    commit_all(&raft, (0..NODES).map(activate).collect()).await;
    commit_all(&raft, vec![Op::CreateVni { vni: 100 }]).await;
    commit_all(
        &raft,
        vec![Op::CreateNatGateway(NatGatewaySpec {
            id: "gw".into(),
            vni: 100,
            public_ips: (0..100).map(|i| Ipv4Addr::new(203, 0, 113, i)).collect(),
            port_min: 1024,
            port_max: 65536,
            block_size: 64,
        })],
    )
    .await;
    let addrs: Vec<SocketAddr> = c.addrs.values().copied().collect();
    let next = Arc::new(AtomicU32::new(0));
    for &n in levels {
        let mut clients = Vec::new();
        for k in 0..n {
            clients.push(client(addrs[k % addrs.len()]).await);
        }
        let log_before = raft.metrics().borrow().last_log_index.unwrap_or(0);
        let start = Instant::now();
        let (warm, end) = (start + WARM_UP, start + WARM_UP + MEASURE);
        let mut set = JoinSet::new();
        for cl in clients {
            set.spawn(writer(cl, Arc::clone(&next), end));
        }
        let mut lat = Vec::new();
        let mut completed = 0usize;
        let mut failed = Vec::new();
        let mut total = 0usize;
        while let Some(r) = set.join_next().await {
            let calls = r.expect("client task");
            total += calls.done.len();
            failed.extend(calls.failed);
            for (t, done) in calls.done {
                if t >= warm && t < end {
                    lat.push(done - t);
                }
                if done >= warm && done < end {
                    completed += 1;
                }
            }
        }
        let entries = raft.metrics().borrow().last_log_index.unwrap_or(0) - log_before;
        lat.sort();
        let rate = completed as f64 / MEASURE.as_secs_f64();
        let on_leader = (0..n).filter(|k| addrs[k % addrs.len()] == c.addrs[&leader]).count();
        println!(
            "| writes | {n} client(s) ({on_leader} on the leader), CreateInterface + AttachNat | {rate:.0} writes/s; \
             p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} failed; {total} writes in {entries} log entries; load {} |",
            ms(percentile(&lat, 50.0)),
            ms(percentile(&lat, 99.0)),
            ms(lat.last().copied().unwrap_or_default()),
            failed.len(),
            loadavg(),
        );
        for f in failed.iter().take(3) {
            println!("|   | failure | {f} |");
        }
    }
    c.stop().await;
}

/// How long a failover client waits for one attempt, and between attempts.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const RETRY_AFTER: Duration = Duration::from_millis(20);
const FAILOVER_RUNS: usize = 10;

async fn failover() {
    let mut c = Cluster::start().await;
    let leader = c.leader().await;
    c.members[&leader].raft().client_write(Command::new(Op::CreateVni { vni: 1 })).await.expect("write");
    let (mut elected, mut written, mut attempts) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..FAILOVER_RUNS {
        // Let the cluster settle (a restarted member catches up) with a leader agreed on.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old = c.leader().await;
        let survivors: Vec<MemberId> = c.members.keys().copied().filter(|&id| id != old).collect();
        // The client is connected before the crash, as a running application's would be.
        let mut clients = Vec::new();
        for id in &survivors {
            clients.push(client(c.addrs[id]).await);
        }
        let crashed = c.members.remove(&old).expect("leader member");
        let t = Instant::now();
        // Raft first: heartbeats stop now, as in a crash; the gRPC server goes after.
        crashed.raft().shutdown().await.expect("shutdown");
        let stopping = tokio::spawn(crashed.stop());
        let waits: Vec<_> = survivors
            .iter()
            .map(|id| {
                let raft = c.members[id].raft().clone();
                async move {
                    raft.wait(Some(Duration::from_secs(20)))
                        .metrics(|x| x.state == openraft::ServerState::Leader, "a new leader")
                        .await
                        .map(|_| t.elapsed())
                }
            })
            .collect();
        let election = async {
            let mut set = JoinSet::new();
            for w in waits {
                set.spawn(w);
            }
            while let Some(r) = set.join_next().await {
                if let Ok(Ok(d)) = r {
                    return d;
                }
            }
            panic!("no new leader");
        };
        let write = async {
            let mut errors = Vec::new();
            let vni = 2 + u32::try_from(round).unwrap_or(0);
            for k in 0.. {
                let mut req =
                    tonic::Request::new(pb::VniRequest { request_id: format!("failover-{round}"), vni });
                req.set_timeout(ATTEMPT_TIMEOUT);
                let n = clients.len();
                match clients[k % n].create_vni(req).await {
                    Ok(_) => break,
                    Err(s) => {
                        errors.push(s.code());
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
            }
            (t.elapsed(), errors)
        };
        let (e, (w, errors)) = tokio::join!(election, write);
        elected.push(e);
        written.push(w);
        attempts.push(errors.len() + 1);
        println!(
            "|   | failover run {} | member {old} crashed; elected after {:.0} ms, write committed after {:.0} ms \
             ({} attempts, the failed ones: {:?}) |",
            round + 1,
            ms(e),
            ms(w),
            errors.len() + 1,
            errors.iter().map(|c| format!("{c:?}")).collect::<std::collections::BTreeSet<_>>()
        );
        let _ = stopping.await.expect("stop task");
        // Bring the old leader back from its directory, on its address.
        let dir = c._dirs[&old].path().to_owned();
        let listener = TcpListener::bind(c.addrs[&old]).await.expect("rebind");
        let m = Member::start(old, listener, &dir, default_config()).await.expect("restart");
        c.members.insert(old, m);
    }
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        format!(
            "min {:.0} ms, median {:.0} ms, max {:.0} ms",
            ms(v[0]),
            ms(v[v.len() / 2]),
            ms(v[v.len() - 1])
        )
    };
    println!(
        "| failover | leader's Raft shut down → a survivor is leader ({FAILOVER_RUNS} runs) | {} |",
        stats(&mut elected)
    );
    println!(
        "| failover | leader's Raft shut down → first client write committed ({FAILOVER_RUNS} runs) | {}; load {} |",
        stats(&mut written),
        loadavg()
    );
    c.stop().await;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    println!("| part | case | result |\n|---|---|---|");
    if want("alloc") {
        println!("|   | load before alloc | {} |", loadavg());
        alloc();
    }
    let rt = || tokio::runtime::Runtime::new().expect("runtime");
    if want("writes") {
        println!("|   | load before writes | {} |", loadavg());
        rt().block_on(writes(&CONCURRENCY));
    }
    if want("failover") {
        println!("|   | load before failover | {} |", loadavg());
        rt().block_on(failover());
    }
}
