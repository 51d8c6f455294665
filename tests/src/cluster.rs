//! A whole fleet in network namespaces: real `dpfleet-coordinator` members and real
//! `dpfleet-node`s, each node in a namespace of its own.
//!
//! # Topology
//!
//! ```text
//!   mgmt namespace: bridge br0 10.99.0.1/24
//!     coordinator N: cluster API + Raft 10.99.0.1:700N, gossip udp 10.99.0.1:710N,
//!                    metrics 10.99.0.1:720N, data dir $TMPDIR/dpfleet-e2e/<ns>-cN
//!     veth vnK ──┐
//!   node K namespace: mgmt0 10.99.0.(10+K)/24 (gossip udp :7946, node API :1337),
//!                     underlay --ipv6 fc00:K::1, PF/VF TAPs as in [`topo`]
//! ```
//!
//! The coordinators run in the management namespace (`ip netns exec`); every node's
//! namespace has a veth link to its bridge. Nodes join by gossip alone (`--gossip-seed`
//! = the three coordinators) and advertise `--api-advertise 10.99.0.(10+K):1337`, which
//! the leader's reconciler dials. The test reaches the cluster API through a tonic
//! connector whose TCP socket is made inside the management namespace
//! ([`Fleet::on`]), and each node's API through [`Api`] as the single-node tests do.
//! Nothing is bound in the root namespace. Dropping a [`Fleet`] stops every process and
//! deletes its namespaces and data directories.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dpfleet_coordinator::grpc::cluster_pb as cpb;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::api::Api;
use crate::netns::{self, Netns};
use crate::node::{self, Node, NodeConfig};
use crate::topo;
use crate::Error;

pub use cpb::cluster_service_client::ClusterServiceClient;

/// A cluster API client (the generated one).
pub type ClusterClient = ClusterServiceClient<Channel>;

/// The management network's address in the management namespace (the coordinators').
pub const MGMT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// How long a cluster API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a coordinator may take to open its port.
const COORDINATOR_START: Duration = Duration::from_secs(20);

/// The cluster API (and Raft) address of member `id`.
pub fn coordinator_addr(id: u64) -> SocketAddr {
    SocketAddr::from((MGMT_IP, 7000 + port_offset(id)))
}

/// The gossip address of member `id`.
pub fn coordinator_gossip(id: u64) -> SocketAddr {
    SocketAddr::from((MGMT_IP, 7100 + port_offset(id)))
}

fn port_offset(id: u64) -> u16 {
    u16::try_from(id).unwrap_or(0)
}

/// Node `k`'s address on the management network.
pub fn node_ip(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, 10 + k)
}

/// Node `k`'s underlay address (`--ipv6`): `fc00:k::1`, so its /64 is `fc00:k::/64`.
pub fn node_underlay(k: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfc00, u16::from(k), 0, 0, 0, 0, 0, 1)
}

/// Node `k`'s fleet name.
pub fn node_name(k: u8) -> String {
    format!("n{k}")
}

/// The MAC the harness gives the kernel side of VF `vf` on node `k` (the "VM").
pub fn vm_mac(k: u8, vf: u8) -> [u8; 6] {
    [0x02, 0, 0, k, 0x01, vf + 1]
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
///
/// # Panics
/// After `timeout`, with `what` and the last value `describe` gives.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {timeout:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Unwraps a setup step.
///
/// # Panics
/// With the error.
#[track_caller]
fn must<T>(r: Result<T, Error>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// One `dpfleet-coordinator` process in the management namespace.
pub struct Coordinator {
    /// Its Raft id.
    pub id: u64,
    ns: String,
    args: Vec<String>,
    child: Option<Child>,
    data_dir: PathBuf,
    log_path: PathBuf,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("id", &self.id).field("log", &self.log_path).finish()
    }
}

impl Coordinator {
    fn start(ns: &Netns, id: u64, members: &[u64], node_down_after: &str) -> Result<Coordinator, Error> {
        let dir = std::env::temp_dir().join("dpfleet-e2e");
        let data_dir = dir.join(format!("{}-c{id}", ns.name()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).map_err(|e| Error::Io("coordinator data dir".into(), e))?;
        let peers: Vec<String> =
            members.iter().filter(|m| **m != id).map(|m| format!("{m}={}", coordinator_addr(*m))).collect();
        let seeds: Vec<String> =
            members.iter().filter(|m| **m != id).map(|m| coordinator_gossip(*m).to_string()).collect();
        let mut args = vec![
            format!("--id={id}"),
            format!("--listen={}", coordinator_addr(id)),
            format!("--data-dir={}", data_dir.display()),
            format!("--peers={}", peers.join(",")),
            format!("--gossip-listen={}", coordinator_gossip(id)),
            format!("--gossip-seeds={}", seeds.join(",")),
            format!("--node-down-after={node_down_after}"),
            format!("--metrics-listen={}", SocketAddr::from((MGMT_IP, 7200 + port_offset(id)))),
        ];
        if members.first() == Some(&id) {
            args.push("--init".into());
        }
        let mut c = Coordinator {
            id,
            ns: ns.name().to_string(),
            args,
            child: None,
            data_dir,
            log_path: dir.join(format!("{}-c{id}.log", ns.name())),
        };
        c.launch()?;
        Ok(c)
    }

    fn launch(&mut self) -> Result<(), Error> {
        let bin =
            node::find_program("dpfleet-coordinator", "DPFLEET_COORDINATOR_BIN", "dpfleet-coordinator")?;
        let (log, log2) = node::open_log(&self.log_path, &bin, "coordinator log")?;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(&bin)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("DPFLEET_E2E_COORDINATOR_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::Io(format!("spawn {}", bin.display()), e))?;
        self.child = Some(child);
        let addr = coordinator_addr(self.id);
        let deadline = Instant::now() + COORDINATOR_START;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(Error::Setup(format!(
                    "coordinator {} exited ({status}) during start; its log:\n{}",
                    self.id,
                    self.log()
                )));
            }
            let open = netns::run_in(&self.ns, move || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
            if open {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Setup(format!(
                    "coordinator {} did not open {addr} within {COORDINATOR_START:?}; its log:\n{}",
                    self.id,
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process with SIGKILL (a crash) and reaps it; the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the member again from its data directory, on the same address.
    pub fn restart(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Err(Error::Setup("restart of a running coordinator".into()));
        }
        self.launch()
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if std::thread::panicking() || std::env::var_os("DPFLEET_E2E_SHOW_LOGS").is_some_and(|v| v != "0") {
            eprintln!(
                "---- dpfleet-coordinator {} log ({}) ----\n{}\n---- end of coordinator log ----",
                self.id,
                self.log_path.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

/// A node of the fleet with its API client.
#[derive(Debug)]
pub struct FleetNode {
    /// The node API client (declared first: dropped before the node).
    pub api: Api,
    /// The running node.
    pub node: Node,
    /// Its number `k` (name `nK`, management address [`node_ip`]).
    pub k: u8,
}

impl FleetNode {
    /// The fleet name.
    pub fn name(&self) -> String {
        node_name(self.k)
    }

    /// Gives the kernel sides of the TAPs their MACs and brings them up (again after a
    /// restart: the node makes new TAPs).
    fn prepare_taps(&self) -> Result<(), Error> {
        let ns = self.node.netns();
        for (i, pf) in self.node.config().pfs.iter().enumerate() {
            let mac = topo::router_mac(u8::try_from(i).unwrap_or(0));
            ns.ip(&["link", "set", "dev", &pf.iface, "address", &topo::mac_str(mac)])?;
            ns.prepare_link(&pf.iface)?;
        }
        for (i, vf) in self.node.config().vfs.iter().enumerate() {
            let mac = vm_mac(self.k, u8::try_from(i).unwrap_or(0));
            ns.ip(&["link", "set", "dev", &vf.iface, "address", &topo::mac_str(mac)])?;
            ns.prepare_link(&vf.iface)?;
        }
        Ok(())
    }

    /// SIGKILLs the node (a crash).
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts the node again with the same name and options, and prepares its TAPs.
    ///
    /// # Panics
    /// When it does not start.
    pub fn restart(&mut self) {
        self.node.restart().unwrap_or_else(|e| panic!("{e}"));
        self.prepare_taps().unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Coordinators and nodes, their namespaces, and a cluster API client.
pub struct Fleet {
    rt: tokio::runtime::Runtime,
    channels: Mutex<BTreeMap<u64, Channel>>,
    /// The nodes by number (dropped before the coordinators).
    pub nodes: BTreeMap<u8, FleetNode>,
    /// The coordinator members, by position (member id = position + 1).
    pub coordinators: Vec<Coordinator>,
    mgmt: Netns,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("mgmt", &self.mgmt.name()).finish_non_exhaustive()
    }
}

impl Fleet {
    /// Makes the management namespace and starts `members` coordinators (member 1 with
    /// `--init`), declaring nodes down after `node_down_after` (e.g. `"2s"`); waits until
    /// the cluster has a leader.
    ///
    /// # Panics
    /// When anything fails to start.
    pub fn start(members: u64, node_down_after: &str) -> Fleet {
        node::require_root();
        let mgmt = Netns::new("mgmt").unwrap_or_else(|e| panic!("{e}"));
        must(mgmt.ip(&["link", "add", "br0", "type", "bridge"]));
        must(mgmt.ip(&["addr", "add", &format!("{MGMT_IP}/24"), "dev", "br0"]));
        must(mgmt.ip(&["link", "set", "br0", "up"]));
        let ids: Vec<u64> = (1..=members).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let mut fleet = Fleet {
            rt,
            channels: Mutex::new(BTreeMap::new()),
            nodes: BTreeMap::new(),
            coordinators: Vec::new(),
            mgmt,
        };
        for &id in &ids {
            let c =
                Coordinator::start(&fleet.mgmt, id, &ids, node_down_after).unwrap_or_else(|e| panic!("{e}"));
            fleet.coordinators.push(c);
        }
        fleet.wait_leader(&[]);
        fleet
    }

    /// The management namespace.
    pub fn mgmt(&self) -> &Netns {
        &self.mgmt
    }

    /// The coordinator with member id `id`.
    ///
    /// # Panics
    /// When there is none.
    pub fn coordinator(&mut self, id: u64) -> &mut Coordinator {
        self.coordinators.iter_mut().find(|c| c.id == id).expect("no such coordinator")
    }

    /// Waits until a running member other than those in `not` leads, as every running
    /// member sees it; returns its id.
    ///
    /// # Panics
    /// After 30 s without an agreed leader.
    pub fn wait_leader(&mut self, not: &[u64]) -> u64 {
        let running: Vec<u64> =
            self.coordinators.iter_mut().filter_map(|c| c.is_running().then_some(c.id)).collect();
        wait_for("an agreed coordinator leader", Duration::from_secs(30), || {
            let mut leaders = Vec::new();
            for &id in &running {
                let s =
                    self.on(id, |mut c| async move {
                        c.get_status(cpb::GetStatusRequest { stale_ok: true }).await
                    })
                    .map_err(|e| format!("member {id}: {e}"))?;
                leaders.push(s.leader_id);
            }
            match leaders.first() {
                Some(&Some(l)) if leaders.iter().all(|x| *x == Some(l)) && !not.contains(&l) => {
                    // The leader answers linearizable reads once it has applied its term.
                    self.on(l, |mut c| async move {
                        c.get_status(cpb::GetStatusRequest { stale_ok: false }).await
                    })
                    .map_err(|e| format!("leader {l}: {e}"))?;
                    Ok(l)
                }
                _ => Err(format!("leaders seen: {leaders:?}")),
            }
        })
    }

    fn channel(&self, member: u64) -> Channel {
        let mut channels = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        channels
            .entry(member)
            .or_insert_with(|| {
                let ns = self.mgmt.name().to_string();
                let addr = coordinator_addr(member);
                let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
                    let ns = ns.clone();
                    async move {
                        let stream = netns::run_in(&ns, move || {
                            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                        })
                        .map_err(std::io::Error::other)??;
                        stream.set_nonblocking(true)?;
                        stream.set_nodelay(true)?;
                        Ok::<_, std::io::Error>(TokioIo::new(tokio::net::TcpStream::from_std(stream)?))
                    }
                });
                let _guard = self.rt.enter();
                Endpoint::from_shared(format!("http://{addr}"))
                    .expect("valid URI")
                    .timeout(CALL_TIMEOUT)
                    .connect_timeout(CALL_TIMEOUT)
                    .connect_with_connector_lazy(connector)
            })
            .clone()
    }

    /// Calls the cluster API on member `member`: `f` gets a client and makes the call.
    pub fn on<T, F, Fut>(&self, member: u64, f: F) -> Result<T, tonic::Status>
    where
        F: FnOnce(ClusterClient) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = ClusterServiceClient::new(self.channel(member));
        self.rt.block_on(async move {
            match tokio::time::timeout(CALL_TIMEOUT, f(client)).await {
                Ok(r) => r.map(tonic::Response::into_inner),
                Err(_) => Err(tonic::Status::deadline_exceeded("test-side timeout")),
            }
        })
    }

    /// Runs `f` with clients of every member on the test's runtime (for concurrent
    /// calls).
    pub fn block_on<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Vec<(u64, ClusterClient)>) -> Fut,
        Fut: Future<Output = T>,
    {
        let clients =
            self.coordinators.iter().map(|c| (c.id, ClusterServiceClient::new(self.channel(c.id)))).collect();
        self.rt.block_on(f(clients))
    }

    /// Runs `dpfleetctl --coordinator <every member> ARGS` in the management namespace
    /// and returns its standard output.
    ///
    /// # Panics
    /// When it cannot be found or run, or fails (with its stderr).
    pub fn ctl(&self, args: &[&str]) -> String {
        let bin = must(node::find_program("dpfleetctl", "DPFLEETCTL_BIN", "dpfleetctl"));
        let members: Vec<String> =
            self.coordinators.iter().map(|c| coordinator_addr(c.id).to_string()).collect();
        let members = members.join(",");
        let mut all = vec!["--coordinator", members.as_str(), "--timeout", "10s"];
        all.extend_from_slice(args);
        let out = must(self.mgmt.exec(bin.to_str().unwrap_or_default(), &all));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The Prometheus text of member `id`'s `/metrics`.
    ///
    /// # Panics
    /// When it cannot be fetched.
    pub fn metrics(&self, id: u64) -> String {
        use std::io::{Read, Write};
        let addr = SocketAddr::from((MGMT_IP, 7200 + port_offset(id)));
        let text = must(netns::run_in(self.mgmt.name(), move || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(CALL_TIMEOUT))?;
            write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        }));
        text.unwrap_or_else(|e| panic!("GET /metrics of member {id}: {e}"))
    }

    /// Starts node `k` in a namespace of its own linked to the management bridge, with
    /// gossip seeded by every coordinator, and connects its API.
    ///
    /// # Panics
    /// When it does not start.
    pub fn add_node(&mut self, k: u8) -> &mut FleetNode {
        let ns = must(Netns::new(&node_name(k)));
        let veth = format!("vn{k}");
        must(self.mgmt.ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "mgmt0",
            "netns",
            ns.name(),
        ]));
        must(self.mgmt.ip(&["link", "set", &veth, "master", "br0", "up"]));
        must(ns.ip(&["addr", "add", &format!("{}/24", node_ip(k)), "dev", "mgmt0"]));
        must(ns.ip(&["link", "set", "mgmt0", "up"]));
        let mut config = NodeConfig::default();
        let own_ul = format!("--ipv6={}", topo::NODE_UL);
        for a in &mut config.app_args {
            if *a == own_ul {
                *a = format!("--ipv6={}", node_underlay(k));
            }
        }
        let seeds: Vec<String> =
            self.coordinators.iter().map(|c| coordinator_gossip(c.id).to_string()).collect();
        config.app_args.extend([
            format!("--fleet-node-name={}", node_name(k)),
            format!("--gossip-listen={}:7946", node_ip(k)),
            format!("--gossip-seed={}", seeds.join(",")),
            format!("--api-advertise={}:{}", node_ip(k), topo::GRPC_PORT),
        ]);
        let node = must(Node::start_in(ns, config));
        let api = must(Api::connect(&node));
        let fleet_node = FleetNode { api, node, k };
        must(fleet_node.prepare_taps());
        self.nodes.insert(k, fleet_node);
        self.nodes.get_mut(&k).expect("just inserted")
    }

    /// Node `k`.
    ///
    /// # Panics
    /// When there is none.
    pub fn node(&mut self, k: u8) -> &mut FleetNode {
        self.nodes.get_mut(&k).expect("no such node")
    }

    /// The first running coordinator's id (any member answers any call).
    pub fn any(&mut self) -> u64 {
        self.coordinators
            .iter_mut()
            .find_map(|c| c.is_running().then_some(c.id))
            .expect("a running coordinator")
    }

    /// The state generation, read linearizably through any running member.
    ///
    /// # Panics
    /// When the call fails.
    pub fn generation(&mut self) -> u64 {
        let m = self.any();
        self.on(m, |mut c| async move { c.get_status(cpb::GetStatusRequest { stale_ok: false }).await })
            .unwrap_or_else(|e| panic!("GetStatus: {e}"))
            .generation
    }

    /// The nodes as the cluster knows them, by name.
    ///
    /// # Panics
    /// When the call fails.
    pub fn cluster_nodes(&mut self) -> BTreeMap<String, cpb::Node> {
        let m = self.any();
        self.on(m, |mut c| async move { c.list_nodes(cpb::ListNodesRequest { stale_ok: false }).await })
            .unwrap_or_else(|e| panic!("ListNodes: {e}"))
            .nodes
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect()
    }

    /// Waits until node `name` is in `state` in the cluster.
    pub fn wait_node_state(&mut self, name: &str, state: cpb::NodeState, timeout: Duration) {
        wait_for(&format!("node {name} {state:?}"), timeout, || {
            let nodes = self.cluster_nodes();
            match nodes.get(name) {
                Some(n) if n.state() == state => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }

    /// Waits until every node in `ks` reports the current state generation applied (and
    /// it stays the current one while they are read); returns it.
    pub fn wait_applied(&mut self, ks: &[u8], timeout: Duration) -> u64 {
        wait_for(&format!("nodes {ks:?} applying the state generation"), timeout, || {
            let generation = self.generation();
            let mut applied = Vec::new();
            for k in ks {
                let s = self.node(*k).api.get_node_status().map_err(|e| format!("n{k}: {e}"))?;
                applied.push((*k, s.applied_generation));
            }
            if applied.iter().all(|(_, g)| *g == generation) && self.generation() == generation {
                Ok(generation)
            } else {
                Err(format!("state generation {generation}, applied {applied:?}"))
            }
        })
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Nodes first (they are clients of nothing), then the coordinators, then the
        // management namespace (the field order would do the same; this makes it explicit).
        self.nodes.clear();
        self.coordinators.clear();
    }
}

/// Where a coordinator's data directory lives (for tests that look at it).
pub fn data_dir_of(c: &Coordinator) -> &Path {
    &c.data_dir
}
