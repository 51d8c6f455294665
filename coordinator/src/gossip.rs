//! Membership gossip: a coordinator member's chitchat instance and the fleet as gossip
//! sees it.
//!
//! Every node and every coordinator member runs one chitchat instance in the cluster
//! [`CLUSTER_ID`] over UDP. A member's chitchat `node_id` says what it is: `node/<name>`
//! for a dataplane node, `coordinator/<raft id>` for a coordinator member; its
//! `generation_id` is its start time in milliseconds, so a restart is a new generation.
//! The keys each publishes are in [`keys`].
//!
//! [`GossipView`] is plain data built by a pure function ([`GossipView::from_members`])
//! from what chitchat holds: for every `node/*` and `coordinator/*` member, its
//! generation, whether chitchat's phi-accrual failure detector deems it live, and its
//! parsed keys. A malformed or missing key makes that member's `keys` an error; parsing
//! never panics. [`Gossip`] owns the chitchat instance and republishes the view every
//! gossip interval on a `watch` channel, so readers ([`Gossip::view`]) never touch
//! chitchat's lock.

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::{Transport, UdpTransport};
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::raft_types::MemberId;

pub use dpfleet_proto::gossip::{keys, CLUSTER_ID, COORDINATOR_PREFIX, NODE_PREFIX};

/// Why a member's keys could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A required key is absent.
    #[error("key {0:?} is missing")]
    Missing(&'static str),
    /// A key's value does not parse.
    #[error("key {key:?} has the malformed value {value:?}: {why}")]
    Malformed {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// The `node_id` has a prefix but no name after it.
    #[error("chitchat node id {0:?} has no name after its prefix")]
    EmptyName(String),
}

/// What a node publishes, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeKeys {
    /// Its underlay IPv6 address.
    pub underlay: Ipv6Addr,
    /// Its node API endpoint, `host:port`.
    pub api: String,
    /// Its software version, if published.
    pub version: Option<String>,
    /// The generation of desired state it has applied, if published.
    pub applied_generation: Option<u64>,
    /// Its VF devices, in the order published (empty if not published).
    pub devices: Vec<String>,
    /// Tracked flows, if published.
    pub load_flows: Option<u64>,
    /// NAT ports in use, if published.
    pub load_nat_ports_used: Option<u64>,
}

/// A dataplane node as gossip sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipNode {
    /// The node's name (`node/<name>`).
    pub name: String,
    /// Its chitchat generation (start time in ms): a restart changes it.
    pub generation_id: u64,
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// Whether chitchat's failure detector deems it live.
    pub live: bool,
    /// Its keys, or why they cannot be used.
    pub keys: Result<NodeKeys, KeyError>,
}

/// What a coordinator member publishes, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorKeys {
    /// Its Raft member id.
    pub raft_id: MemberId,
    /// Its gRPC endpoint (Raft and cluster API), `host:port`.
    pub raft_addr: String,
    /// Its software version, if published.
    pub version: Option<String>,
}

/// A coordinator member as gossip sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipCoordinator {
    /// The name after `coordinator/` (its Raft id as published in the node id).
    pub name: String,
    /// Its chitchat generation.
    pub generation_id: u64,
    /// Where it gossips.
    pub gossip_addr: SocketAddr,
    /// Whether chitchat's failure detector deems it live (always true for this member).
    pub live: bool,
    /// Its keys, or why they cannot be used.
    pub keys: Result<CoordinatorKeys, KeyError>,
}

/// One chitchat member as chitchat holds it: the input of [`GossipView::from_members`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// Chitchat's `node_id`.
    pub node_id: String,
    /// Chitchat's `generation_id`.
    pub generation_id: u64,
    /// Chitchat's advertised gossip address.
    pub gossip_addr: SocketAddr,
    /// Whether the failure detector deems it live.
    pub live: bool,
    /// Its (non-deleted) key-values.
    pub key_values: BTreeMap<String, String>,
}

/// The fleet as gossip sees it. A member seen with several generations (it restarted and
/// the old generation is still remembered as dead) appears once: as its live generation
/// if one is live, otherwise as its latest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GossipView {
    /// Dataplane nodes by name.
    pub nodes: BTreeMap<String, GossipNode>,
    /// Coordinator members by the name after `coordinator/`.
    pub coordinators: BTreeMap<String, GossipCoordinator>,
}

fn required<'a>(kv: &'a BTreeMap<String, String>, key: &'static str) -> Result<&'a str, KeyError> {
    kv.get(key).map(String::as_str).ok_or(KeyError::Missing(key))
}

fn malformed(key: &'static str, value: &str, why: impl ToString) -> KeyError {
    KeyError::Malformed { key, value: value.to_owned(), why: why.to_string() }
}

fn check_role(kv: &BTreeMap<String, String>, expected: &str) -> Result<(), KeyError> {
    let role = required(kv, keys::ROLE)?;
    if role != expected {
        return Err(malformed(keys::ROLE, role, format!("expected {expected:?} for this node id")));
    }
    Ok(())
}

fn optional_u64(kv: &BTreeMap<String, String>, key: &'static str) -> Result<Option<u64>, KeyError> {
    kv.get(key).map(|v| v.parse().map_err(|e| malformed(key, v, e))).transpose()
}

/// Checks a `host:port` endpoint: a non-empty host (an IPv6 address in brackets) and a
/// port.
fn endpoint(kv: &BTreeMap<String, String>, key: &'static str) -> Result<String, KeyError> {
    let value = required(kv, key)?;
    let (host, port) = value.rsplit_once(':').ok_or_else(|| malformed(key, value, "not host:port"))?;
    port.parse::<u16>().map_err(|e| malformed(key, value, format!("port: {e}")))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(malformed(key, value, "no host"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| malformed(key, value, "unclosed '['"))?;
        inner.parse::<Ipv6Addr>().map_err(|e| malformed(key, value, e))?;
    } else if host.contains(':') {
        return Err(malformed(key, value, "an IPv6 host needs brackets"));
    }
    Ok(value.to_owned())
}

impl NodeKeys {
    /// Parses a node's key-values: `role` must be `node`; `underlay` and `api` are
    /// required; the others are optional but must parse when present.
    pub fn parse(kv: &BTreeMap<String, String>) -> Result<NodeKeys, KeyError> {
        check_role(kv, keys::ROLE_NODE)?;
        let underlay = required(kv, keys::UNDERLAY)?;
        let underlay = underlay.parse().map_err(|e| malformed(keys::UNDERLAY, underlay, e))?;
        let api = endpoint(kv, keys::API)?;
        let devices = match kv.get(keys::DEVICES).map(String::as_str) {
            None | Some("") => Vec::new(),
            Some(list) => {
                let devices: Vec<String> = list.split(',').map(|d| d.trim().to_owned()).collect();
                if devices.iter().any(String::is_empty) {
                    return Err(malformed(keys::DEVICES, list, "empty device name"));
                }
                devices
            }
        };
        Ok(NodeKeys {
            underlay,
            api,
            version: kv.get(keys::VERSION).cloned(),
            applied_generation: optional_u64(kv, keys::GENERATION)?,
            devices,
            load_flows: optional_u64(kv, keys::LOAD_FLOWS)?,
            load_nat_ports_used: optional_u64(kv, keys::LOAD_NAT_PORTS_USED)?,
        })
    }
}

impl CoordinatorKeys {
    /// Parses a coordinator's key-values: `role` must be `coordinator`; `raft_id` and
    /// `raft_addr` are required.
    pub fn parse(kv: &BTreeMap<String, String>) -> Result<CoordinatorKeys, KeyError> {
        check_role(kv, keys::ROLE_COORDINATOR)?;
        let raft_id = required(kv, keys::RAFT_ID)?;
        let raft_id = raft_id.parse().map_err(|e| malformed(keys::RAFT_ID, raft_id, e))?;
        Ok(CoordinatorKeys {
            raft_id,
            raft_addr: endpoint(kv, keys::RAFT_ADDR)?,
            version: kv.get(keys::VERSION).cloned(),
        })
    }
}

/// Whether `(live, generation)` of a candidate should replace the entry kept so far.
fn preferred(live: bool, generation_id: u64, kept_live: bool, kept_generation: u64) -> bool {
    (live, generation_id) > (kept_live, kept_generation)
}

impl GossipView {
    /// Builds the view from chitchat's members. Members whose `node_id` has neither
    /// prefix are ignored.
    pub fn from_members(members: impl IntoIterator<Item = MemberRecord>) -> GossipView {
        let mut view = GossipView::default();
        for m in members {
            if let Some(name) = m.node_id.strip_prefix(NODE_PREFIX) {
                if let Some(kept) = view.nodes.get(name) {
                    if !preferred(m.live, m.generation_id, kept.live, kept.generation_id) {
                        continue;
                    }
                }
                let keys = if name.is_empty() {
                    Err(KeyError::EmptyName(m.node_id.clone()))
                } else {
                    NodeKeys::parse(&m.key_values)
                };
                let node = GossipNode {
                    name: name.to_owned(),
                    generation_id: m.generation_id,
                    gossip_addr: m.gossip_addr,
                    live: m.live,
                    keys,
                };
                view.nodes.insert(name.to_owned(), node);
            } else if let Some(name) = m.node_id.strip_prefix(COORDINATOR_PREFIX) {
                if let Some(kept) = view.coordinators.get(name) {
                    if !preferred(m.live, m.generation_id, kept.live, kept.generation_id) {
                        continue;
                    }
                }
                let keys = if name.is_empty() {
                    Err(KeyError::EmptyName(m.node_id.clone()))
                } else {
                    CoordinatorKeys::parse(&m.key_values)
                };
                let c = GossipCoordinator {
                    name: name.to_owned(),
                    generation_id: m.generation_id,
                    gossip_addr: m.gossip_addr,
                    live: m.live,
                    keys,
                };
                view.coordinators.insert(name.to_owned(), c);
            }
        }
        view
    }
}

/// How a coordinator member gossips.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// The address other members reach it at (usually `listen`).
    pub advertise: SocketAddr,
    /// Members to contact first (other coordinators; nodes find the coordinators the
    /// same way).
    pub seeds: Vec<SocketAddr>,
    /// How often it gossips with (up to three) random peers. The failure detector's
    /// prior for a peer's heartbeat interval is this interval too, so a silent peer is
    /// deemed dead about eight intervals after its last heartbeat.
    pub interval: Duration,
}

impl GossipConfig {
    /// The default gossip interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);

    /// Listens and advertises on `listen`, no seeds, the default interval.
    pub fn new(listen: SocketAddr) -> GossipConfig {
        GossipConfig { listen, advertise: listen, seeds: Vec::new(), interval: Self::DEFAULT_INTERVAL }
    }
}

/// What a coordinator member publishes about itself.
#[derive(Clone, Debug)]
pub struct CoordinatorIdentity {
    /// Its Raft member id.
    pub raft_id: MemberId,
    /// Its gRPC endpoint, `host:port`.
    pub raft_addr: String,
    /// Its chitchat generation: its start time in milliseconds.
    pub generation_id: u64,
}

/// Why gossip could not start.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// Chitchat could not start (the UDP socket could not be bound, most likely).
    #[error("starting chitchat on {addr}: {error}")]
    Start {
        /// The listen address.
        addr: SocketAddr,
        /// Chitchat's error.
        error: String,
    },
}

/// The key-values a coordinator member publishes.
pub fn coordinator_key_values(identity: &CoordinatorIdentity) -> Vec<(String, String)> {
    vec![
        (keys::ROLE.into(), keys::ROLE_COORDINATOR.into()),
        (keys::RAFT_ID.into(), identity.raft_id.to_string()),
        (keys::RAFT_ADDR.into(), identity.raft_addr.clone()),
        (keys::VERSION.into(), env!("CARGO_PKG_VERSION").into()),
    ]
}

/// The chitchat configuration of a member with this id, listen address and timing.
pub fn chitchat_config(
    chitchat_id: ChitchatId,
    listen: SocketAddr,
    seeds: &[SocketAddr],
    interval: Duration,
) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id,
        cluster_id: CLUSTER_ID.into(),
        gossip_interval: interval,
        listen_addr: listen,
        seed_nodes: seeds.iter().map(SocketAddr::to_string).collect(),
        failure_detector_config: FailureDetectorConfig {
            initial_interval: interval,
            // A dead member's state is forgotten after an hour; its committed node
            // state is the coordinator's memory beyond that.
            dead_node_grace_period: Duration::from_secs(3600),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    }
}

/// A coordinator member's running gossip.
pub struct Gossip {
    handle: ChitchatHandle,
    view: watch::Receiver<Arc<GossipView>>,
    refresher: JoinHandle<()>,
}

/// Reads chitchat's members into a view, holding its lock only while copying.
async fn read_view(chitchat: &tokio::sync::Mutex<chitchat::Chitchat>) -> GossipView {
    let records: Vec<MemberRecord> = {
        let cc = chitchat.lock().await;
        let live: std::collections::HashSet<&ChitchatId> = cc.live_nodes().collect();
        cc.node_states()
            .iter()
            .filter(|(id, _)| {
                id.node_id.starts_with(NODE_PREFIX) || id.node_id.starts_with(COORDINATOR_PREFIX)
            })
            .map(|(id, state)| MemberRecord {
                node_id: id.node_id.to_string(),
                generation_id: id.generation_id,
                gossip_addr: id.gossip_advertise_addr,
                live: live.contains(id),
                key_values: state.key_values().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            })
            .collect()
    };
    GossipView::from_members(records)
}

impl Gossip {
    /// Starts gossip over UDP for a coordinator member.
    pub async fn start(config: &GossipConfig, identity: &CoordinatorIdentity) -> Result<Gossip, GossipError> {
        Self::start_with_transport(config, identity, &UdpTransport).await
    }

    /// Starts gossip over `transport` (chitchat's in-memory transport in tests).
    pub async fn start_with_transport(
        config: &GossipConfig,
        identity: &CoordinatorIdentity,
        transport: &dyn Transport,
    ) -> Result<Gossip, GossipError> {
        let id = ChitchatId::new(
            format!("{COORDINATOR_PREFIX}{}", identity.raft_id),
            identity.generation_id,
            config.advertise,
        );
        let cc_config = chitchat_config(id, config.listen, &config.seeds, config.interval);
        let handle = chitchat::spawn_chitchat(cc_config, coordinator_key_values(identity), transport)
            .await
            .map_err(|e| GossipError::Start { addr: config.listen, error: format!("{e:#}") })?;
        let chitchat = handle.chitchat();
        let (tx, view) = watch::channel(Arc::new(read_view(&chitchat).await));
        let interval = config.interval;
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let fresh = read_view(&chitchat).await;
                // Only wake readers when something they can see changed.
                tx.send_if_modified(|v| {
                    if **v == fresh {
                        return false;
                    }
                    *v = Arc::new(fresh);
                    true
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        tracing::info!(listen = %config.listen, advertise = %config.advertise, seeds = ?config.seeds, "gossip started");
        Ok(Gossip { handle, view, refresher })
    }

    /// The latest view (refreshed every gossip interval). Cheap: no lock is taken.
    pub fn view(&self) -> Arc<GossipView> {
        self.view.borrow().clone()
    }

    /// A receiver of the view, notified when it changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<GossipView>> {
        self.view.clone()
    }

    /// This member's chitchat id.
    pub fn chitchat_id(&self) -> &ChitchatId {
        self.handle.chitchat_id()
    }

    /// Stops gossiping: peers stop hearing from this member.
    pub async fn shutdown(self) {
        self.refresher.abort();
        if let Err(e) = self.handle.shutdown().await {
            tracing::warn!(error = %e, "gossip stopped with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn node_kv() -> BTreeMap<String, String> {
        kv(&[
            ("role", "node"),
            ("underlay", "fc00::1"),
            ("api", "[fc00::1]:1337"),
            ("version", "0.1.0"),
            ("generation", "7"),
            ("devices", "net_tap1,net_tap2"),
            ("load.flows", "12"),
            ("load.nat_ports_used", "3"),
        ])
    }

    fn record(
        node_id: &str,
        generation_id: u64,
        live: bool,
        key_values: BTreeMap<String, String>,
    ) -> MemberRecord {
        MemberRecord {
            node_id: node_id.into(),
            generation_id,
            gossip_addr: "127.0.0.1:7946".parse().unwrap(),
            live,
            key_values,
        }
    }

    #[test]
    fn parses_every_node_key() {
        let keys = NodeKeys::parse(&node_kv()).unwrap();
        assert_eq!(
            keys,
            NodeKeys {
                underlay: "fc00::1".parse().unwrap(),
                api: "[fc00::1]:1337".into(),
                version: Some("0.1.0".into()),
                applied_generation: Some(7),
                devices: vec!["net_tap1".into(), "net_tap2".into()],
                load_flows: Some(12),
                load_nat_ports_used: Some(3),
            }
        );
    }

    #[test]
    fn optional_node_keys_may_be_absent() {
        let keys = NodeKeys::parse(&kv(&[("role", "node"), ("underlay", "fc00::2"), ("api", "node2:1337")]))
            .unwrap();
        assert_eq!(keys.applied_generation, None);
        assert_eq!(keys.devices, Vec::<String>::new());
        assert_eq!(keys.load_flows, None);
    }

    #[test]
    fn malformed_node_keys_are_errors() {
        let cases: &[(&str, Option<&str>, KeyError)] = &[
            ("role", None, KeyError::Missing("role")),
            ("underlay", None, KeyError::Missing("underlay")),
            ("api", None, KeyError::Missing("api")),
        ];
        for (key, value, want) in cases {
            let mut m = node_kv();
            match value {
                Some(v) => m.insert((*key).into(), (*v).into()),
                None => m.remove(*key),
            };
            assert_eq!(NodeKeys::parse(&m).unwrap_err(), *want, "{key}");
        }
        for (key, value) in [
            ("role", "coordinator"),
            ("underlay", "10.0.0.1"),
            ("underlay", "not an address"),
            ("api", "fc00::1:1337"),
            ("api", "[fc00::1:1337"),
            ("api", "host"),
            ("api", ":1337"),
            ("api", "host:99999"),
            ("generation", "-1"),
            ("generation", "seven"),
            ("devices", "a,,b"),
            ("devices", ","),
            ("load.flows", "1.5"),
            ("load.nat_ports_used", ""),
        ] {
            let mut m = node_kv();
            m.insert(key.into(), value.into());
            match NodeKeys::parse(&m) {
                Err(KeyError::Malformed { key: k, value: v, .. }) => {
                    assert_eq!((k, v.as_str()), (key, value));
                }
                other => panic!("{key}={value:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn view_sorts_members_by_role_and_keeps_errors() {
        let mut bad = node_kv();
        bad.insert("underlay".into(), "garbage".into());
        let coord = kv(&[("role", "coordinator"), ("raft_id", "2"), ("raft_addr", "127.0.0.1:7002")]);
        let view = GossipView::from_members([
            record("node/a", 1, true, node_kv()),
            record("node/b", 1, false, bad),
            record("node/", 1, true, node_kv()),
            record("coordinator/2", 5, true, coord),
            record("coordinator/3", 5, true, kv(&[("role", "coordinator")])),
            record("something-else", 1, true, node_kv()),
        ]);
        assert_eq!(view.nodes.len(), 3);
        assert!(view.nodes["a"].live && view.nodes["a"].keys.is_ok());
        assert!(!view.nodes["b"].live);
        assert!(matches!(view.nodes["b"].keys, Err(KeyError::Malformed { key: "underlay", .. })));
        assert_eq!(view.nodes[""].keys, Err(KeyError::EmptyName("node/".into())));
        assert_eq!(
            view.coordinators["2"].keys,
            Ok(CoordinatorKeys { raft_id: 2, raft_addr: "127.0.0.1:7002".into(), version: None })
        );
        assert_eq!(view.coordinators["3"].keys, Err(KeyError::Missing("raft_id")));
        assert_eq!(view.coordinators.len(), 2);
    }

    #[test]
    fn a_restarted_member_appears_once_as_its_live_generation() {
        // Old generation dead, new one live: the live one, in either order.
        let old = record("node/a", 100, false, node_kv());
        let new = record("node/a", 200, true, node_kv());
        for members in [vec![old.clone(), new.clone()], vec![new.clone(), old.clone()]] {
            let view = GossipView::from_members(members);
            assert_eq!(view.nodes["a"].generation_id, 200);
            assert!(view.nodes["a"].live);
        }
        // Both dead: the latest generation.
        let dead_new = MemberRecord { live: false, ..new };
        let view = GossipView::from_members([dead_new, old]);
        assert_eq!(view.nodes["a"].generation_id, 200);
        assert!(!view.nodes["a"].live);
    }

    /// A fake node: a real chitchat instance publishing node keys.
    async fn node(
        transport: &chitchat::transport::ChannelTransport,
        name: &str,
        port: u16,
        seeds: &[SocketAddr],
    ) -> ChitchatHandle {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let id = ChitchatId::new(format!("node/{name}"), 1, addr);
        let kv = node_kv().into_iter().collect();
        chitchat::spawn_chitchat(chitchat_config(id, addr, seeds, Duration::from_millis(50)), kv, transport)
            .await
            .unwrap()
    }

    async fn wait_for(
        gossip: &Gossip,
        what: &str,
        mut pred: impl FnMut(&GossipView) -> bool,
    ) -> Arc<GossipView> {
        let mut rx = gossip.subscribe();
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let v = rx.borrow_and_update().clone();
                if pred(&v) {
                    return v;
                }
                rx.changed().await.expect("gossip running");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    #[tokio::test]
    async fn coordinators_see_nodes_come_and_go_over_chitchat() {
        let transport = chitchat::transport::ChannelTransport::default();
        let c1_addr: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let config = |addr: SocketAddr, seeds: Vec<SocketAddr>| GossipConfig {
            listen: addr,
            advertise: addr,
            seeds,
            interval: Duration::from_millis(50),
        };
        let identity = |raft_id| CoordinatorIdentity {
            raft_id,
            raft_addr: format!("127.0.0.1:700{raft_id}"),
            generation_id: 1,
        };
        let c1 =
            Gossip::start_with_transport(&config(c1_addr, vec![]), &identity(1), &transport).await.unwrap();
        let c2_addr: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let c2 = Gossip::start_with_transport(&config(c2_addr, vec![c1_addr]), &identity(2), &transport)
            .await
            .unwrap();
        let n1 = node(&transport, "n1", 2001, &[c1_addr]).await;

        // Both coordinators see the node (c2 only through c1) and each other.
        for c in [&c1, &c2] {
            let v = wait_for(c, "node n1 live", |v| v.nodes.get("n1").is_some_and(|n| n.live)).await;
            assert_eq!(v.nodes["n1"].keys, NodeKeys::parse(&node_kv()));
            wait_for(c, "both coordinators", |v| {
                v.coordinators.len() == 2 && v.coordinators.values().all(|c| c.live && c.keys.is_ok())
            })
            .await;
        }
        // The node updates a key: seen.
        n1.with_chitchat(|cc| cc.self_node_state().set(keys::GENERATION, "9")).await;
        wait_for(&c2, "generation 9", |v| {
            v.nodes["n1"].keys.as_ref().is_ok_and(|k| k.applied_generation == Some(9))
        })
        .await;
        // A malformed value: reported as an error, the member stays.
        n1.with_chitchat(|cc| cc.self_node_state().set(keys::UNDERLAY, "nope")).await;
        wait_for(&c1, "a parse error", |v| v.nodes["n1"].keys.is_err()).await;
        // The node stops: the failure detector declares it dead.
        n1.shutdown().await.unwrap();
        for c in [&c1, &c2] {
            wait_for(c, "node n1 dead", |v| v.nodes.get("n1").is_some_and(|n| !n.live)).await;
        }
        c2.shutdown().await;
        c1.shutdown().await;
    }
}
