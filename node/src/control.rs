//! The node's control plane: the single applier of desired state.
//!
//! [`Control`] owns everything the API can change (interfaces, their alias prefixes,
//! load-balancer prefixes and firewall rules, routes per VNI) and is the only writer of
//! the dataplane configuration. Every successful change compiles a fresh [`Snapshot`]
//! and publishes it with one atomic pointer swap, bumping its `generation`; workers load
//! the current snapshot per burst and never lock.
//!
//! Invariants:
//! - Mutations are serialized by one mutex (control plane only). A method that fails
//!   leaves the state untouched and publishes nothing: every check happens before the
//!   first change.
//! - The route table of a VNI is the source of truth, as in dpservice: an interface adds
//!   /32 and /128 host routes to its port, an alias prefix adds a route to its port,
//!   CreateRoute adds a route through the underlay. Deleting the last interface of a VNI
//!   drops the VNI with all its routes.
//! - Load-balancer prefixes are not routes: each only has an underlay address whose
//!   tunnel traffic is delivered to the interface. Firewall rules live with their
//!   interface and are compiled into one [`RuleSet`] per interface.
//! - Errors carry dpservice's numeric codes ([`ApiError::code`]), which clients read.
//!
//! Semantics follow dpservice (revision 1a8d901) with three deliberate differences,
//! each where dpservice leaves its own tables inconsistent:
//! - Deleting an interface also removes its alias and load-balancer prefixes (dpservice
//!   leaves their records behind, to be inherited by the next VM on that port). Its
//!   firewall rules go too, as in dpservice.
//! - ResetVni and Initialize keep alias-prefix routes (dpservice drops the routes but
//!   keeps listing the prefixes).
//! - DeletePrefix matches the prefix by network (`10.0.0.5/24` == `10.0.0.0/24`) and
//!   never deletes a host route.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use dpfleet_dataplane::config::{
    DnatTarget, Flush, Interface, NodeConfig, PortId, PortInfo, PortRole, PxeConfig, RouteTarget, Snapshot,
    UnderlayTarget, Vni, VniTables,
};
use dpfleet_dataplane::tables::firewall::{
    Action, Cidr, Direction, Filter, PortRange as FwPortRange, Rule, RuleSet,
};
use dpfleet_dataplane::tables::nat::{validate_disjoint, LocalNat, NeighborNat, NeighborNats, PortRange};
use dpfleet_proto::types::Prefix;

pub mod lb;
pub use lb::LbSelection;

/// A refused request, with dpservice's error number ([`ApiError::code`]) and name
/// ([`ApiError::name`], what dpservice puts in `Status.message`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 201: no such interface (Get/DeleteInterface), device, alias or load-balancer
    /// prefix, or firewall rule.
    #[error("not found")]
    NotFound,
    /// 202: the device is a PF or already carries an interface; the interface already
    /// has a firewall rule with this id or this load-balancer prefix.
    #[error("already exists")]
    AlreadyExists,
    /// 203: the VNI type is not valid for this call.
    #[error("wrong VNI type for this call")]
    WrongType,
    /// 204: wrong IP version (a route's next hop must be IPv6).
    #[error("wrong IP version")]
    BadIpver,
    /// 205: no interface with this id (prefix and firewall calls).
    #[error("no such interface")]
    NoVm,
    /// 206: the VNI has no interface on this node, so no route table.
    #[error("VNI not present on this node")]
    NoVni,
    /// 208: no room for another load balancer.
    #[error("out of memory")]
    OutOfMemory,
    /// 209: the load balancer already has the maximum number of targets.
    #[error("limit reached")]
    LimitReached,
    /// 211: the feature is not active (packet capture: it samples offloaded traffic, and
    /// this node offloads none).
    #[error("not active")]
    NotActive,
    /// 301: the VNI already has a route for this prefix.
    #[error("route already exists")]
    RouteExists,
    /// 302: the VNI has no route for this prefix.
    #[error("route not found")]
    RouteNotFound,
    /// 303: the route cannot be inserted (prefix length beyond 32/128).
    #[error("route cannot be inserted")]
    RouteInsert,
    /// 304: the route belongs to something else (e.g. an interface's host route).
    #[error("route leads to another port")]
    RouteBadPort,
    /// 323: the VIP is already a VIP or NAT IP in the VNI.
    #[error("address already translated in this VNI")]
    DnatExists,
    /// 341: the interface has no VIP (Get/DeleteVip) or no NAT (Get/DeleteNat).
    #[error("no VIP or NAT configured")]
    SnatNoData,
    /// 343: the interface already has a VIP (CreateVip) or a NAT (CreateNat).
    #[error("VIP or NAT already configured")]
    SnatExists,
    /// 422: no load balancer with this id (target calls).
    #[error("no such load balancer")]
    NoLb,
    /// 401: the requested (preferred) underlay address is already in use on this node.
    #[error("underlay address already in use")]
    VnfInsert,
    /// 402: the interface id is already taken.
    #[error("interface id already in use")]
    VmHandle,
    /// 441: DROP firewall rules are not accepted (as in dpservice, which cannot enforce
    /// them yet).
    #[error("drop rules are not supported")]
    NoDropSupport,
}

impl ApiError {
    /// dpservice's error number, as sent in `Status.code`.
    pub fn code(self) -> u32 {
        match self {
            ApiError::NotFound => 201,
            ApiError::AlreadyExists => 202,
            ApiError::WrongType => 203,
            ApiError::BadIpver => 204,
            ApiError::NoVm => 205,
            ApiError::NoVni => 206,
            ApiError::OutOfMemory => 208,
            ApiError::LimitReached => 209,
            ApiError::NotActive => 211,
            ApiError::NoLb => 422,
            ApiError::RouteExists => 301,
            ApiError::RouteNotFound => 302,
            ApiError::RouteInsert => 303,
            ApiError::RouteBadPort => 304,
            ApiError::DnatExists => 323,
            ApiError::SnatNoData => 341,
            ApiError::SnatExists => 343,
            ApiError::VnfInsert => 401,
            ApiError::VmHandle => 402,
            ApiError::NoDropSupport => 441,
        }
    }

    /// dpservice's name of the error, as sent in `Status.message`.
    pub fn name(self) -> &'static str {
        match self {
            ApiError::NotFound => "NOT_FOUND",
            ApiError::AlreadyExists => "ALREADY_EXISTS",
            ApiError::WrongType => "WRONG_TYPE",
            ApiError::BadIpver => "BAD_IPVER",
            ApiError::NoVm => "NO_VM",
            ApiError::NoVni => "NO_VNI",
            ApiError::OutOfMemory => "OUT_OF_MEMORY",
            ApiError::LimitReached => "LIMIT_REACHED",
            ApiError::NotActive => "NOT_ACTIVE",
            ApiError::NoLb => "NO_LB",
            ApiError::RouteExists => "ROUTE_EXISTS",
            ApiError::RouteNotFound => "ROUTE_NOT_FOUND",
            ApiError::RouteInsert => "ROUTE_INSERT",
            ApiError::RouteBadPort => "ROUTE_BAD_PORT",
            ApiError::DnatExists => "DNAT_EXISTS",
            ApiError::SnatNoData => "SNAT_NO_DATA",
            ApiError::SnatExists => "SNAT_EXISTS",
            ApiError::VnfInsert => "VNF_INSERT",
            ApiError::VmHandle => "VM_HANDLE",
            ApiError::NoDropSupport => "NO_DROP_SUPPORT",
        }
    }
}

/// Longest interface id dpservice stores (it keeps ids in a 64-byte C string).
pub const IFACE_ID_MAX_LEN: usize = 63;

/// Why an interface id was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceIdError {
    /// Empty, or longer than [`IFACE_ID_MAX_LEN`] bytes.
    #[error("interface id must have 1 to 63 characters")]
    Length,
    /// A character other than ASCII letters, digits, `-` and `_`.
    #[error("interface id may only contain letters, digits, '-' and '_'")]
    Character,
}

/// A valid interface id: 1 to 63 ASCII letters, digits, `-` or `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceId(String);

impl InterfaceId {
    /// Checks `id`.
    pub fn new(id: &str) -> Result<Self, InterfaceIdError> {
        if !id.bytes().all(|c| c == b'-' || c == b'_' || c.is_ascii_alphanumeric()) {
            return Err(InterfaceIdError::Character);
        }
        if id.is_empty() || id.len() > IFACE_ID_MAX_LEN {
            return Err(InterfaceIdError::Length);
        }
        Ok(InterfaceId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which routing table(s) of a VNI a call means (the API's `VniType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VniFamily {
    /// The IPv4 table.
    Ipv4,
    /// The IPv6 table.
    Ipv6,
    /// Both tables.
    Both,
}

/// Everything CreateInterface needs, validated by the API layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// The new interface's id.
    pub id: InterfaceId,
    /// Its virtual network (any 32-bit value, as dpservice accepts).
    pub vni: Vni,
    /// The DPDK device name of the port to attach to.
    pub device_name: String,
    /// The VM's IPv4 address (`None`: no IPv4 service).
    pub ipv4: Option<Ipv4Addr>,
    /// The VM's IPv6 address (`None`: no IPv6 service).
    pub ipv6: Option<Ipv6Addr>,
    /// PXE boot settings for DHCP.
    pub pxe: Option<PxeConfig>,
    /// The underlay address to use instead of allocating one (`preferred_underlay_route`,
    /// checked by the API layer: see [`is_external_underlay`]).
    pub preferred_underlay: Option<Ipv6Addr>,
}

/// The answer to a successful CreateInterface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedInterface {
    /// The interface's underlay address.
    pub underlay: Ipv6Addr,
    /// The kernel name of the port's interface (`VirtualFunction.name`).
    pub vf_name: String,
}

/// An interface as Get/ListInterfaces report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Its id.
    pub id: String,
    /// Its VNI.
    pub vni: Vni,
    /// IPv4 address, if any.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address, if any.
    pub ipv6: Option<Ipv6Addr>,
    /// Its underlay address.
    pub underlay: Ipv6Addr,
    /// The DPDK device name of its port.
    pub device_name: String,
    /// The port id.
    pub port: PortId,
}

/// A route through the underlay, as ListRoutes reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// The destination prefix (network address, host bits cleared).
    pub prefix: Prefix,
    /// The VNI on the far side (0: the route's own VNI).
    pub nexthop_vni: Vni,
    /// The next hop's underlay address.
    pub nexthop: Ipv6Addr,
}

/// An alias prefix of an interface, as ListPrefixes reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AliasPrefixInfo {
    /// The prefix as it was given.
    pub prefix: Prefix,
    /// The underlay address allocated for it.
    pub underlay: Ipv6Addr,
}

/// A load-balancer prefix of an interface, as ListLoadBalancerPrefixes reports it.
///
/// dpservice keys these by address as given and length (any length up to 255, not
/// checked against the family): `172.22.2.1/24` and `172.22.2.0/24` are two prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbPrefixInfo {
    /// The address as given.
    pub addr: IpAddr,
    /// The prefix length as given.
    pub len: u8,
    /// The underlay address allocated for it.
    pub underlay: Ipv6Addr,
}

/// The port part of a TCP or UDP rule, as given (`None`: the API's -1).
///
/// A `None` lower bound matches every port whatever the upper bound; with a lower bound,
/// a `None` upper bound means "up to 65535". The API layer ensures `upper >= lower`
/// when both are given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortFilter {
    /// Lowest source port.
    pub src_lower: Option<u16>,
    /// Highest source port.
    pub src_upper: Option<u16>,
    /// Lowest destination port.
    pub dst_lower: Option<u16>,
    /// Highest destination port.
    pub dst_upper: Option<u16>,
}

impl PortFilter {
    fn range(lower: Option<u16>, upper: Option<u16>) -> FwPortRange {
        match lower {
            None => FwPortRange::ANY,
            Some(lo) => FwPortRange { lo, hi: upper.unwrap_or(u16::MAX) },
        }
    }

    fn compile(&self) -> (FwPortRange, FwPortRange) {
        (PortFilter::range(self.src_lower, self.src_upper), PortFilter::range(self.dst_lower, self.dst_upper))
    }
}

/// The protocol part of a firewall rule, as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleFilter {
    /// No filter: TCP, UDP and ICMP.
    Any,
    /// TCP ports.
    Tcp(PortFilter),
    /// UDP ports.
    Udp(PortFilter),
    /// ICMP type and code (`None`: the API's -1, any).
    Icmp {
        /// Message type.
        icmp_type: Option<u8>,
        /// Message code.
        icmp_code: Option<u8>,
    },
}

/// A firewall rule as CreateFirewallRule takes it and Get/ListFirewallRules report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallRuleSpec {
    /// Rule id (1 to 63 bytes, checked by the API layer), unique per interface.
    pub id: Vec<u8>,
    /// Ingress or egress.
    pub direction: Direction,
    /// Accept or drop.
    pub action: Action,
    /// Evaluation order (lower first).
    pub priority: u16,
    /// Source prefix, its address as given.
    pub src: Cidr,
    /// Destination prefix, its address as given.
    pub dst: Cidr,
    /// Protocol filter.
    pub filter: RuleFilter,
}

impl FirewallRuleSpec {
    /// The rule as the dataplane evaluates it.
    pub fn compile(&self) -> Rule {
        let filter = match self.filter {
            RuleFilter::Any => Filter::Any,
            RuleFilter::Tcp(p) => {
                let (src, dst) = p.compile();
                Filter::Tcp { src, dst }
            }
            RuleFilter::Udp(p) => {
                let (src, dst) = p.compile();
                Filter::Udp { src, dst }
            }
            RuleFilter::Icmp { icmp_type, icmp_code } => Filter::Icmp { icmp_type, icmp_code },
        };
        Rule {
            priority: self.priority,
            direction: self.direction,
            action: self.action,
            src: self.src,
            dst: self.dst,
            filter,
        }
    }
}

/// The flag bit of an underlay address's flags byte (octet 10) that marks it as
/// generated outside the node (dpservice's `DP_UNDERLAY_FLAG_EXTERNALLY_GENERATED`).
pub const UNDERLAY_FLAG_EXTERNAL: u8 = 0x80;

/// Whether `addr` may be requested as a preferred underlay address on a node whose own
/// underlay address is `node`: it lies in the node's /64 and has
/// [`UNDERLAY_FLAG_EXTERNAL`] set, so it can never collide with an address the node
/// generates itself ([`UnderlayAlloc`] leaves that byte zero).
pub fn is_external_underlay(addr: Ipv6Addr, node: Ipv6Addr) -> bool {
    addr.octets()[..8] == node.octets()[..8] && addr.octets()[10] & UNDERLAY_FLAG_EXTERNAL != 0
}

/// Allocates underlay addresses the way dpservice does.
///
/// An address is the first 64 bits of the node's underlay address (`--ipv6`), then
/// three zero bytes (type, subtype and flags in dpservice's layout; the flags byte stays
/// zero, so generated addresses never carry [`UNDERLAY_FLAG_EXTERNAL`]), one
/// per-process byte, and a 32-bit counter (big endian) that increases with every
/// allocation. dpservice draws the byte
/// and the counter's start at random (so that a restarted node does not hand out
/// addresses the fabric may still route to its previous life); a build with static
/// underlay addresses uses byte 1 and starts the counter at 0, so that with
/// `--ipv6=fc00:1::1` the first address is `fc00:1::1:0:1`.
#[derive(Clone, Debug)]
pub struct UnderlayAlloc {
    host: [u8; 8],
    salt: u8,
    counter: u32,
}

impl UnderlayAlloc {
    /// An allocator whose first address uses `salt` and counter value `counter + 1`.
    pub fn new(node_underlay: Ipv6Addr, salt: u8, counter: u32) -> Self {
        let mut host = [0; 8];
        host.copy_from_slice(&node_underlay.octets()[..8]);
        UnderlayAlloc { host, salt, counter }
    }

    /// An allocator with a random byte and a random counter start below 256, as
    /// dpservice's default build.
    pub fn randomized(node_underlay: Ipv6Addr) -> Self {
        let r = random_u64();
        let [salt, start, ..] = r.to_le_bytes();
        UnderlayAlloc::new(node_underlay, salt, u32::from(start))
    }

    /// The next address.
    pub fn next_addr(&mut self) -> Ipv6Addr {
        self.counter = self.counter.wrapping_add(1);
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.host);
        a[11] = self.salt;
        a[12..].copy_from_slice(&self.counter.to_be_bytes());
        Ipv6Addr::from(a)
    }
}

/// 64 random bits from the standard library's per-process hash keys (seeded by the OS).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x6470_666c_6565_7421);
    h.finish()
}

/// The single applier of the node's desired state.
pub struct Control {
    state: Mutex<State>,
    published: Arc<ArcSwap<Snapshot>>,
    /// The generation of fleet state the coordinator last said this node applied (not
    /// the snapshot's generation; in memory only, 0 after a restart).
    applied_generation: AtomicU64,
    /// Coordinator tables refused because this node built another digest.
    digest_mismatches: AtomicU64,
}

#[derive(Clone, Debug)]
struct AliasPrefix {
    prefix: Prefix,
    underlay: Ipv6Addr,
}

#[derive(Clone, Debug)]
struct IfaceState {
    id: InterfaceId,
    vni: Vni,
    ipv4: Option<Ipv4Addr>,
    ipv6: Option<Ipv6Addr>,
    underlay: Ipv6Addr,
    pxe: Option<PxeConfig>,
    /// In creation order (ListPrefixes order).
    prefixes: Vec<AliasPrefix>,
    /// In creation order (ListLoadBalancerPrefixes order).
    lb_prefixes: Vec<LbPrefixInfo>,
    /// In creation order (ListFirewallRules order).
    rules: Vec<FirewallRuleSpec>,
    /// `rules` compiled; replaced whenever they change, shared by the snapshots between.
    firewall: Arc<RuleSet>,
    /// The VIP and its underlay address.
    vip: Option<(Ipv4Addr, Ipv6Addr)>,
    /// The NAT and its underlay address.
    nat: Option<(LocalNat, Ipv6Addr)>,
}

impl IfaceState {
    /// The routes this interface owns in its VNI: host routes and alias prefixes.
    fn own_routes(&self) -> impl Iterator<Item = Prefix> + '_ {
        let v4 = self.ipv4.and_then(|a| Prefix::new(IpAddr::V4(a), 32).ok());
        let v6 = self.ipv6.and_then(|a| Prefix::new(IpAddr::V6(a), 128).ok());
        v4.into_iter().chain(v6).chain(self.prefixes.iter().map(|p| p.prefix))
    }

    /// Every underlay address of the interface: its own, then its prefixes'.
    fn underlays(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        std::iter::once(self.underlay)
            .chain(self.prefixes.iter().map(|p| p.underlay))
            .chain(self.lb_prefixes.iter().map(|p| p.underlay))
            .chain(self.vip.map(|v| v.1))
            .chain(self.nat.map(|n| n.1))
    }

    fn rule_index(&self, id: &[u8]) -> Option<usize> {
        self.rules.iter().position(|r| r.id == id)
    }

    /// Recompiles the firewall after `rules` changed.
    fn rules_changed(&mut self) {
        self.firewall = Arc::new(RuleSet::new(self.rules.iter().map(FirewallRuleSpec::compile)));
    }
}

/// Route key: network address (host bits cleared) and length.
type RouteKey = (IpAddr, u8);

fn route_key(p: &Prefix) -> RouteKey {
    (p.network(), p.length())
}

#[derive(Clone, Debug, Default)]
struct VniState {
    /// Interfaces and load balancers holding this VNI on the node.
    refs: u32,
    routes: BTreeMap<RouteKey, RouteTarget>,
}

#[derive(Debug)]
struct State {
    node: NodeConfig,
    ports: Vec<PortInfo>,
    initialized: bool,
    /// Interfaces by port id (ListInterfaces reports them in port order).
    ifaces: BTreeMap<PortId, IfaceState>,
    port_by_id: HashMap<InterfaceId, PortId>,
    vnis: HashMap<Vni, VniState>,
    underlay: UnderlayAlloc,
    generation: u64,
    /// Neighbour NAT entries, in creation order.
    neighbor_nats: Vec<NeighborNat>,
    /// The most recent flow flushes (see [`Snapshot::flushes`]).
    flushes: std::collections::VecDeque<(u64, Flush)>,
    /// The sequence number of the last flush.
    flush_seq: u64,
    /// Load balancers (see [`lb`]).
    lbs: lb::Lbs,
}

/// Flushes a snapshot carries; a worker that misses more between two polling rounds
/// would keep stale flows, far beyond what the API can do in that time.
const MAX_FLUSHES: usize = 256;

impl Control {
    /// A control plane for a node with these ports, no interfaces, not initialized, with
    /// randomized underlay addresses (see [`UnderlayAlloc::randomized`]).
    pub fn new(node: NodeConfig, ports: Vec<PortInfo>) -> Self {
        let alloc = UnderlayAlloc::randomized(node.underlay_ipv6);
        Control::with_underlay(node, ports, alloc)
    }

    /// Like [`Control::new`], with a given underlay allocator.
    pub fn with_underlay(node: NodeConfig, ports: Vec<PortInfo>, underlay: UnderlayAlloc) -> Self {
        let state = State {
            node,
            ports,
            initialized: false,
            ifaces: BTreeMap::new(),
            port_by_id: HashMap::new(),
            vnis: HashMap::new(),
            underlay,
            generation: 0,
            neighbor_nats: Vec::new(),
            flushes: std::collections::VecDeque::new(),
            flush_seq: 0,
            lbs: lb::Lbs::default(),
        };
        let published = Arc::new(ArcSwap::from_pointee(state.compile()));
        Control {
            state: Mutex::new(state),
            published,
            applied_generation: AtomicU64::new(0),
            digest_mismatches: AtomicU64::new(0),
        }
    }

    /// The generation of desired state the coordinator last recorded as applied.
    pub fn applied_generation(&self) -> u64 {
        self.applied_generation.load(Ordering::Relaxed)
    }

    /// Records that the node has applied `generation`. A lower one than the current is
    /// refused (returning the current) unless `force`.
    pub fn set_applied_generation(&self, generation: u64, force: bool) -> Result<(), u64> {
        self.applied_generation
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                (force || generation >= cur).then_some(generation)
            })
            .map(|_| ())
    }

    /// Counts a coordinator table refused for a digest mismatch.
    pub fn count_digest_mismatch(&self) {
        self.digest_mismatches.fetch_add(1, Ordering::Relaxed);
    }

    /// Coordinator tables refused for a digest mismatch since start.
    pub fn digest_mismatches(&self) -> u64 {
        self.digest_mismatches.load(Ordering::Relaxed)
    }

    /// The published configuration, for the workers: `load()` it once per burst.
    pub fn snapshot_handle(&self) -> Arc<ArcSwap<Snapshot>> {
        Arc::clone(&self.published)
    }

    /// The current configuration (for tests; the daemon reads through
    /// [`Control::snapshot_handle`]).
    #[cfg(test)]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.load_full()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug in this module; continuing could
        // serve a half-applied change, so refuse to go on.
        self.state.lock().expect("control-plane state poisoned by an earlier panic")
    }

    /// Runs a mutation; on success compiles and publishes a new snapshot.
    fn apply<T>(&self, f: impl FnOnce(&mut State) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut st = self.lock();
        let out = f(&mut st)?;
        st.publish(&self.published);
        Ok(out)
    }

    /// The node's own underlay address (`--ipv6`).
    pub fn underlay_ipv6(&self) -> Ipv6Addr {
        self.lock().node.underlay_ipv6
    }

    /// Whether Initialize has been called.
    pub fn is_initialized(&self) -> bool {
        self.lock().initialized
    }

    /// Initialize: marks the node initialized and resets every VNI's routes to what its
    /// interfaces own (routes added by CreateRoute are dropped). Calling it again is
    /// allowed and resets again.
    pub fn initialize(&self) -> Result<(), ApiError> {
        self.apply(|st| {
            st.initialized = true;
            // dpservice drops all neighbour NAT entries here.
            for n in std::mem::take(&mut st.neighbor_nats) {
                st.flush(Flush::Neighbor(n));
            }
            let vnis: Vec<Vni> = st.vnis.keys().copied().collect();
            for vni in vnis {
                st.reset_routes(vni);
            }
            Ok(())
        })
    }

    /// CreateInterface: attaches a VM interface to the VF port named `device_name`.
    pub fn create_interface(&self, spec: InterfaceSpec) -> Result<CreatedInterface, ApiError> {
        self.apply(|st| {
            let port =
                st.ports.iter().find(|p| p.device_name == spec.device_name).ok_or(ApiError::NotFound)?;
            // PFs are always in use; a VF carries at most one interface.
            if port.role != PortRole::Vf || st.ifaces.contains_key(&port.id) {
                return Err(ApiError::AlreadyExists);
            }
            let (port_id, vf_name) = (port.id, port.if_name.clone());
            // dpservice registers the underlay address before the id (VNF_INSERT first).
            st.check_underlay(spec.preferred_underlay)?;
            if st.port_by_id.contains_key(&spec.id) {
                return Err(ApiError::VmHandle);
            }
            let iface = IfaceState {
                id: spec.id,
                vni: spec.vni,
                ipv4: spec.ipv4.filter(|a| !a.is_unspecified()),
                ipv6: spec.ipv6.filter(|a| !a.is_unspecified()),
                underlay: Ipv6Addr::UNSPECIFIED,
                pxe: spec.pxe,
                prefixes: Vec::new(),
                lb_prefixes: Vec::new(),
                rules: Vec::new(),
                firewall: Arc::new(RuleSet::default()),
                vip: None,
                nat: None,
            };
            if let Some(v) = st.vnis.get(&iface.vni) {
                if iface.own_routes().any(|p| v.routes.contains_key(&route_key(&p))) {
                    return Err(ApiError::RouteExists);
                }
            }
            // Checks done; from here on nothing fails.
            let underlay = st.take_underlay(spec.preferred_underlay)?;
            let iface = IfaceState { underlay, ..iface };
            let vni = st.vnis.entry(iface.vni).or_default();
            vni.refs += 1;
            for p in iface.own_routes() {
                vni.routes.insert(route_key(&p), RouteTarget::Local { port: port_id });
            }
            st.port_by_id.insert(iface.id.clone(), port_id);
            st.ifaces.insert(port_id, iface);
            Ok(CreatedInterface { underlay, vf_name })
        })
    }

    /// DeleteInterface: detaches the interface, removes its routes, alias and
    /// load-balancer prefixes and firewall rules, and drops its VNI if it was the last
    /// user.
    pub fn delete_interface(&self, id: &str) -> Result<(), ApiError> {
        self.apply(|st| {
            let port = st.port_of(id).ok_or(ApiError::NotFound)?;
            let iface = st.ifaces.remove(&port).ok_or(ApiError::NotFound)?;
            st.port_by_id.remove(&iface.id);
            st.release_vni(iface.vni, port);
            let ipv4 = iface.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED);
            st.flush(Flush::Interface { port, vni: iface.vni, ipv4, ipv6: iface.ipv6 });
            Ok(())
        })
    }

    /// GetInterface.
    pub fn get_interface(&self, id: &str) -> Result<InterfaceInfo, ApiError> {
        let st = self.lock();
        let port = st.port_of(id).ok_or(ApiError::NotFound)?;
        st.info(port).ok_or(ApiError::NotFound)
    }

    /// ListInterfaces, in port order.
    pub fn list_interfaces(&self) -> Vec<InterfaceInfo> {
        let st = self.lock();
        st.ifaces.keys().filter_map(|&port| st.info(port)).collect()
    }

    /// CreateRoute: traffic in `vni` to `prefix` goes through the underlay to `nexthop`
    /// (which must be IPv6) with `nexthop_vni` (0: the same VNI).
    pub fn create_route(
        &self,
        vni: Vni,
        prefix: Prefix,
        nexthop_vni: Vni,
        nexthop: IpAddr,
    ) -> Result<(), ApiError> {
        self.apply(|st| {
            let IpAddr::V6(underlay) = nexthop else {
                return Err(ApiError::BadIpver);
            };
            let v = st.vnis.get_mut(&vni).ok_or(ApiError::NoVni)?;
            if v.routes.contains_key(&route_key(&prefix)) {
                return Err(ApiError::RouteExists);
            }
            v.routes.insert(route_key(&prefix), RouteTarget::Remote { underlay, vni: nexthop_vni });
            Ok(())
        })
    }

    /// DeleteRoute: removes a route added by CreateRoute.
    pub fn delete_route(&self, vni: Vni, prefix: Prefix) -> Result<(), ApiError> {
        self.apply(|st| {
            let v = st.vnis.get_mut(&vni).ok_or(ApiError::NoVni)?;
            match v.routes.get(&route_key(&prefix)) {
                None => Err(ApiError::RouteNotFound),
                Some(RouteTarget::Local { .. }) => Err(ApiError::RouteBadPort),
                Some(RouteTarget::Remote { .. }) => {
                    v.routes.remove(&route_key(&prefix));
                    Ok(())
                }
            }
        })
    }

    /// ListRoutes: the IPv4 routes through the underlay of `vni`, by prefix. (dpservice
    /// lists only the IPv4 table here; clients count on it.)
    pub fn list_routes(&self, vni: Vni) -> Result<Vec<RouteInfo>, ApiError> {
        let st = self.lock();
        let v = st.vnis.get(&vni).ok_or(ApiError::NoVni)?;
        Ok(v.routes
            .iter()
            .filter_map(|(&(net, len), t)| match (net, *t) {
                (IpAddr::V4(_), RouteTarget::Remote { underlay, vni }) => Some(RouteInfo {
                    prefix: Prefix::new(net, u32::from(len)).ok()?,
                    nexthop_vni: vni,
                    nexthop: underlay,
                }),
                _ => None,
            })
            .collect())
    }

    /// CreatePrefix: routes `prefix` of the interface's VNI to the interface; returns the
    /// prefix's own underlay address.
    #[cfg(test)] // The API passes the preferred address: see `create_prefix_at`.
    pub fn create_prefix(&self, id: &str, prefix: Prefix) -> Result<Ipv6Addr, ApiError> {
        self.create_prefix_at(id, prefix, None)
    }

    /// CreatePrefix with a preferred underlay address (`None`: allocate one).
    pub fn create_prefix_at(
        &self,
        id: &str,
        prefix: Prefix,
        preferred: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, ApiError> {
        self.apply(|st| {
            let (port, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
            let vni = iface.vni;
            if st.vnis.get(&vni).is_some_and(|v| v.routes.contains_key(&route_key(&prefix))) {
                return Err(ApiError::RouteExists);
            }
            let underlay = st.take_underlay(preferred)?;
            st.vnis.entry(vni).or_default().routes.insert(route_key(&prefix), RouteTarget::Local { port });
            let iface = st.ifaces.get_mut(&port).ok_or(ApiError::NoVm)?;
            iface.prefixes.push(AliasPrefix { prefix, underlay });
            Ok(underlay)
        })
    }

    /// DeletePrefix: removes an alias prefix of the interface.
    pub fn delete_prefix(&self, id: &str, prefix: Prefix) -> Result<(), ApiError> {
        self.apply(|st| {
            let (port, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
            let vni = iface.vni;
            let key = route_key(&prefix);
            let Some(idx) = iface.prefixes.iter().position(|a| route_key(&a.prefix) == key) else {
                // Not one of its alias prefixes; say why as dpservice would.
                return Err(match st.vnis.get(&vni).and_then(|v| v.routes.get(&key)) {
                    None => ApiError::RouteNotFound,
                    Some(RouteTarget::Local { port: p }) if *p == port => ApiError::NotFound,
                    Some(_) => ApiError::RouteBadPort,
                });
            };
            if let Some(v) = st.vnis.get_mut(&vni) {
                v.routes.remove(&key);
            }
            if let Some(iface) = st.ifaces.get_mut(&port) {
                iface.prefixes.remove(idx);
            }
            // Its flows end: dpservice delivers tunnel traffic by the underlay address's
            // owner, so should the prefix move to another VM, their packets go there.
            st.flush(Flush::Prefix { port, vni, addr: prefix.network(), len: prefix.length() });
            Ok(())
        })
    }

    /// ListPrefixes: the interface's alias prefixes, in creation order.
    pub fn list_prefixes(&self, id: &str) -> Result<Vec<AliasPrefixInfo>, ApiError> {
        let st = self.lock();
        let (_, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
        Ok(iface
            .prefixes
            .iter()
            .map(|a| AliasPrefixInfo { prefix: a.prefix, underlay: a.underlay })
            .collect())
    }

    /// CheckVniInUse: whether the node holds `vni` (it has an interface or a load
    /// balancer in it, as in dpservice). Only the
    /// single-family types are accepted.
    pub fn vni_in_use(&self, vni: Vni, family: VniFamily) -> Result<bool, ApiError> {
        if family == VniFamily::Both {
            return Err(ApiError::WrongType);
        }
        Ok(self.lock().vnis.contains_key(&vni))
    }

    /// ResetVni: drops the routes of `vni` added by CreateRoute, keeping those its
    /// interfaces own. Only [`VniFamily::Both`] is accepted; an unknown VNI is no error.
    pub fn reset_vni(&self, vni: Vni, family: VniFamily) -> Result<(), ApiError> {
        if family != VniFamily::Both {
            return Err(ApiError::WrongType);
        }
        self.apply(|st| {
            st.reset_routes(vni);
            Ok(())
        })
    }
}

/// Firewall rules and load-balancer prefixes.
impl Control {
    /// CreateFirewallRule: adds a rule to the interface. dpservice refuses DROP rules
    /// (after checking the id), since it cannot enforce them yet.
    pub fn create_firewall_rule(&self, id: &str, rule: FirewallRuleSpec) -> Result<(), ApiError> {
        self.apply(|st| {
            let iface = st.iface_mut(id).ok_or(ApiError::NoVm)?;
            if iface.rule_index(&rule.id).is_some() {
                return Err(ApiError::AlreadyExists);
            }
            if rule.action == Action::Drop {
                return Err(ApiError::NoDropSupport);
            }
            iface.rules.push(rule);
            iface.rules_changed();
            // Denied flows are re-evaluated against the new rules by their next packet;
            // accepted ones stay accepted (stateful: established connections survive).
            st.flush(Flush::Denied);
            Ok(())
        })
    }

    /// GetFirewallRule.
    pub fn get_firewall_rule(&self, id: &str, rule_id: &[u8]) -> Result<FirewallRuleSpec, ApiError> {
        let st = self.lock();
        let (_, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
        let idx = iface.rule_index(rule_id).ok_or(ApiError::NotFound)?;
        Ok(iface.rules[idx].clone())
    }

    /// DeleteFirewallRule.
    pub fn delete_firewall_rule(&self, id: &str, rule_id: &[u8]) -> Result<(), ApiError> {
        self.apply(|st| {
            let iface = st.iface_mut(id).ok_or(ApiError::NoVm)?;
            let idx = iface.rule_index(rule_id).ok_or(ApiError::NotFound)?;
            iface.rules.remove(idx);
            iface.rules_changed();
            st.flush(Flush::Denied);
            Ok(())
        })
    }

    /// ListFirewallRules: the interface's rules in creation order.
    pub fn list_firewall_rules(&self, id: &str) -> Result<Vec<FirewallRuleSpec>, ApiError> {
        let st = self.lock();
        let (_, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
        Ok(iface.rules.clone())
    }

    /// CreateLoadBalancerPrefix: gives the interface a load-balancer prefix and returns
    /// the prefix's own underlay address, whose tunnel traffic goes to the interface.
    #[cfg(test)] // The API passes the preferred address: see `create_lb_prefix_at`.
    pub fn create_lb_prefix(&self, id: &str, addr: IpAddr, len: u8) -> Result<Ipv6Addr, ApiError> {
        self.create_lb_prefix_at(id, addr, len, None)
    }

    /// CreateLoadBalancerPrefix with a preferred underlay address (`None`: allocate one).
    pub fn create_lb_prefix_at(
        &self,
        id: &str,
        addr: IpAddr,
        len: u8,
        preferred: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, ApiError> {
        self.apply(|st| {
            let iface = st.iface_mut(id).ok_or(ApiError::NoVm)?;
            if iface.lb_prefixes.iter().any(|p| p.addr == addr && p.len == len) {
                return Err(ApiError::AlreadyExists);
            }
            let underlay = st.take_underlay(preferred)?;
            let iface = st.iface_mut(id).ok_or(ApiError::NoVm)?;
            iface.lb_prefixes.push(LbPrefixInfo { addr, len, underlay });
            Ok(underlay)
        })
    }

    /// DeleteLoadBalancerPrefix: the prefix must match exactly (address as given and
    /// length), as in dpservice.
    pub fn delete_lb_prefix(&self, id: &str, addr: IpAddr, len: u8) -> Result<(), ApiError> {
        self.apply(|st| {
            let iface = st.iface_mut(id).ok_or(ApiError::NoVm)?;
            let idx = iface
                .lb_prefixes
                .iter()
                .position(|p| p.addr == addr && p.len == len)
                .ok_or(ApiError::NotFound)?;
            iface.lb_prefixes.remove(idx);
            let vni = iface.vni;
            // The load-balanced flows it brought to the VM end: dpservice sends their
            // packets towards the prefix's underlay address, which no longer leads here.
            if let Some(port) = st.port_of(id) {
                st.flush(Flush::Prefix { port, vni, addr, len });
            }
            Ok(())
        })
    }

    /// ListLoadBalancerPrefixes: the interface's load-balancer prefixes, in creation
    /// order.
    pub fn list_lb_prefixes(&self, id: &str) -> Result<Vec<LbPrefixInfo>, ApiError> {
        let st = self.lock();
        let (_, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
        Ok(iface.lb_prefixes.clone())
    }
}

/// VIPs, NAT gateways and neighbour NATs.
impl Control {
    /// CreateVip: gives the interface a virtual IP; returns the VIP's underlay address.
    #[cfg(test)] // The API passes the preferred address: see `create_vip_at`.
    pub fn create_vip(&self, id: &str, vip: IpAddr) -> Result<Ipv6Addr, ApiError> {
        self.create_vip_at(id, vip, None)
    }

    /// CreateVip with a preferred underlay address (`None`: allocate one).
    pub fn create_vip_at(
        &self,
        id: &str,
        vip: IpAddr,
        preferred: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, ApiError> {
        self.apply(|st| {
            let (_, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
            let IpAddr::V4(vip) = vip else { return Err(ApiError::BadIpver) };
            st.check_underlay(preferred)?;
            if iface.vip.is_some() {
                return Err(ApiError::SnatExists);
            }
            let vni = iface.vni;
            if st.translated(vni, vip) {
                return Err(ApiError::DnatExists);
            }
            let underlay = st.take_underlay(preferred)?;
            let iface = st.iface_mut(id).ok_or(ApiError::NoVm)?;
            iface.vip = Some((vip, underlay));
            Ok(underlay)
        })
    }

    /// GetVip: the interface's VIP and its underlay address.
    pub fn get_vip(&self, id: &str) -> Result<(Ipv4Addr, Ipv6Addr), ApiError> {
        let st = self.lock();
        let (_, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
        iface.vip.ok_or(ApiError::SnatNoData)
    }

    /// DeleteVip: removes the VIP and flushes the flows translated with it.
    pub fn delete_vip(&self, id: &str) -> Result<(), ApiError> {
        self.apply(|st| {
            let port = st.port_of(id).ok_or(ApiError::NoVm)?;
            let iface = st.ifaces.get_mut(&port).ok_or(ApiError::NoVm)?;
            iface.vip.take().ok_or(ApiError::SnatNoData)?;
            st.flush(Flush::Vip(port));
            Ok(())
        })
    }

    /// CreateNat: the interface's flows through the default route leave from `nat_ip`
    /// with ports from `range`; returns the NAT's underlay address.
    #[cfg(test)] // The API passes the preferred address: see `create_nat_at`.
    pub fn create_nat(&self, id: &str, nat_ip: IpAddr, range: PortRange) -> Result<Ipv6Addr, ApiError> {
        self.create_nat_at(id, nat_ip, range, None)
    }

    /// CreateNat with a preferred underlay address (`None`: allocate one).
    pub fn create_nat_at(
        &self,
        id: &str,
        nat_ip: IpAddr,
        range: PortRange,
        preferred: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, ApiError> {
        self.apply(|st| {
            let (_, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
            let IpAddr::V4(nat_ip) = nat_ip else { return Err(ApiError::BadIpver) };
            st.check_underlay(preferred)?;
            if iface.nat.is_some() {
                return Err(ApiError::SnatExists);
            }
            let vni = iface.vni;
            st.check_disjoint(nat_ip, range)?;
            let underlay = st.take_underlay(preferred)?;
            let iface = st.iface_mut(id).ok_or(ApiError::NoVm)?;
            iface.nat = Some((LocalNat { nat_ip, range, vni }, underlay));
            Ok(underlay)
        })
    }

    /// GetNat: the interface's NAT and its underlay address.
    pub fn get_nat(&self, id: &str) -> Result<(LocalNat, Ipv6Addr), ApiError> {
        let st = self.lock();
        let (_, iface) = st.iface_of(id).ok_or(ApiError::NoVm)?;
        iface.nat.ok_or(ApiError::SnatNoData)
    }

    /// DeleteNat: removes the NAT and flushes its flows (their ports are released).
    pub fn delete_nat(&self, id: &str) -> Result<(), ApiError> {
        self.apply(|st| {
            let port = st.port_of(id).ok_or(ApiError::NoVm)?;
            let iface = st.ifaces.get_mut(&port).ok_or(ApiError::NoVm)?;
            iface.nat.take().ok_or(ApiError::SnatNoData)?;
            st.flush(Flush::Nat(port));
            Ok(())
        })
    }

    /// ListLocalNats: the interfaces translated to `nat_ip`, as (interface IPv4, NAT).
    pub fn list_local_nats(&self, nat_ip: IpAddr) -> Result<Vec<(Ipv4Addr, LocalNat)>, ApiError> {
        let IpAddr::V4(nat_ip) = nat_ip else { return Err(ApiError::BadIpver) };
        let st = self.lock();
        Ok(st
            .ifaces
            .values()
            .filter_map(|i| {
                let (n, _) = i.nat?;
                (n.nat_ip == nat_ip).then(|| (i.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED), n))
            })
            .collect())
    }

    /// CreateNeighborNat: ports `range` of `nat_ip` in `vni` belong to the node at
    /// `underlay`; their return traffic is relayed there.
    pub fn create_neighbor_nat(
        &self,
        nat_ip: IpAddr,
        vni: Vni,
        range: PortRange,
        underlay: Ipv6Addr,
    ) -> Result<(), ApiError> {
        self.apply(|st| {
            let IpAddr::V4(nat_ip) = nat_ip else { return Err(ApiError::BadIpver) };
            st.check_disjoint(nat_ip, range)?;
            st.neighbor_nats.push(NeighborNat { nat_ip, range, vni, underlay });
            Ok(())
        })
    }

    /// DeleteNeighborNat: removes the entry that matches exactly and flushes its flows.
    pub fn delete_neighbor_nat(&self, nat_ip: IpAddr, vni: Vni, range: PortRange) -> Result<(), ApiError> {
        self.apply(|st| {
            let IpAddr::V4(nat_ip) = nat_ip else { return Err(ApiError::BadIpver) };
            let idx = st
                .neighbor_nats
                .iter()
                .position(|n| n.nat_ip == nat_ip && n.vni == vni && n.range == range)
                .ok_or(ApiError::NotFound)?;
            let n = st.neighbor_nats.remove(idx);
            st.flush(Flush::Neighbor(n));
            Ok(())
        })
    }

    /// ListNeighborNats: the neighbour entries on `nat_ip`, in creation order.
    pub fn list_neighbor_nats(&self, nat_ip: IpAddr) -> Result<Vec<NeighborNat>, ApiError> {
        let IpAddr::V4(nat_ip) = nat_ip else { return Err(ApiError::BadIpver) };
        let st = self.lock();
        Ok(st.neighbor_nats.iter().filter(|n| n.nat_ip == nat_ip).copied().collect())
    }
}

impl State {
    /// Whether `ip` is a VIP or NAT IP (local or neighbour) in `vni`.
    fn translated(&self, vni: Vni, ip: Ipv4Addr) -> bool {
        self.ifaces.values().any(|i| {
            i.vni == vni
                && (i.vip.is_some_and(|(v, _)| v == ip) || i.nat.is_some_and(|(n, _)| n.nat_ip == ip))
        }) || self.neighbor_nats.iter().any(|n| n.vni == vni && n.nat_ip == ip)
    }

    /// Refuses a port range that shares ports with another range on the same NAT IP
    /// (local or neighbour, any VNI): return traffic must have exactly one owner.
    fn check_disjoint(&self, nat_ip: Ipv4Addr, range: PortRange) -> Result<(), ApiError> {
        let locals = self.ifaces.values().filter_map(|i| i.nat.map(|(n, _)| (n.nat_ip, n.range)));
        let neigh = self.neighbor_nats.iter().map(|n| (n.nat_ip, n.range));
        validate_disjoint(locals.chain(neigh).chain(std::iter::once((nat_ip, range))))
            .map_err(|_| ApiError::AlreadyExists)
    }

    /// Asks the workers to remove the flows `f` selects.
    fn flush(&mut self, f: Flush) {
        self.flush_seq += 1;
        self.flushes.push_back((self.flush_seq, f));
        while self.flushes.len() > MAX_FLUSHES {
            self.flushes.pop_front();
        }
    }
}

impl State {
    fn port_of(&self, id: &str) -> Option<PortId> {
        let id = InterfaceId::new(id).ok()?;
        self.port_by_id.get(&id).copied()
    }

    fn iface_of(&self, id: &str) -> Option<(PortId, &IfaceState)> {
        let port = self.port_of(id)?;
        Some((port, self.ifaces.get(&port)?))
    }

    fn info(&self, port: PortId) -> Option<InterfaceInfo> {
        let i = self.ifaces.get(&port)?;
        let device_name =
            self.ports.iter().find(|p| p.id == port).map(|p| p.device_name.clone()).unwrap_or_default();
        Some(InterfaceInfo {
            id: i.id.as_str().to_owned(),
            vni: i.vni,
            ipv4: i.ipv4,
            ipv6: i.ipv6,
            underlay: i.underlay,
            device_name,
            port,
        })
    }

    /// Every underlay address in use.
    fn underlays(&self) -> HashSet<Ipv6Addr> {
        self.ifaces.values().flat_map(IfaceState::underlays).chain(self.lbs.underlays()).collect()
    }

    fn iface_mut(&mut self, id: &str) -> Option<&mut IfaceState> {
        let port = self.port_of(id)?;
        self.ifaces.get_mut(&port)
    }

    /// Refuses a preferred underlay address that is already registered (dpservice's
    /// VNF_INSERT); `None` (the node allocates) always passes.
    fn check_underlay(&self, preferred: Option<Ipv6Addr>) -> Result<(), ApiError> {
        match preferred {
            Some(a) if self.underlays().contains(&a) => Err(ApiError::VnfInsert),
            _ => Ok(()),
        }
    }

    /// The preferred address if it is free, or a newly allocated one.
    fn take_underlay(&mut self, preferred: Option<Ipv6Addr>) -> Result<Ipv6Addr, ApiError> {
        self.check_underlay(preferred)?;
        Ok(preferred.unwrap_or_else(|| self.alloc_underlay()))
    }

    /// The next free underlay address (skipping any still in use after a wrap-around).
    fn alloc_underlay(&mut self) -> Ipv6Addr {
        let used = self.underlays();
        loop {
            let a = self.underlay.next_addr();
            if !used.contains(&a) {
                return a;
            }
        }
    }

    /// Removes an interface's routes from its VNI and drops the VNI with its last user.
    fn release_vni(&mut self, vni: Vni, port: PortId) {
        let Some(v) = self.vnis.get_mut(&vni) else { return };
        v.routes.retain(|_, t| *t != RouteTarget::Local { port });
        self.unref_vni(vni);
    }

    /// Drops one user (an interface or a load balancer) of `vni`. With the last one the
    /// VNI goes, and with it, as in dpservice (`dp_free_vni_data`), the neighbour NAT
    /// entries in it (whose relayed flows are flushed, as DeleteNeighborNat does).
    fn unref_vni(&mut self, vni: Vni) {
        let Some(v) = self.vnis.get_mut(&vni) else { return };
        v.refs = v.refs.saturating_sub(1);
        if v.refs > 0 {
            return;
        }
        self.vnis.remove(&vni);
        let (gone, kept) = std::mem::take(&mut self.neighbor_nats).into_iter().partition(|n| n.vni == vni);
        self.neighbor_nats = kept;
        for n in gone {
            self.flush(Flush::Neighbor(n));
        }
    }

    /// Replaces the routes of `vni` (if the node holds it) with those its interfaces own.
    fn reset_routes(&mut self, vni: Vni) {
        let Some(v) = self.vnis.get_mut(&vni) else { return };
        v.routes.clear();
        for (&port, iface) in self.ifaces.iter().filter(|(_, i)| i.vni == vni) {
            for p in iface.own_routes() {
                v.routes.insert(route_key(&p), RouteTarget::Local { port });
            }
        }
    }

    /// Publishes the state after a change, as a new generation.
    fn publish(&mut self, to: &ArcSwap<Snapshot>) {
        self.generation += 1;
        to.store(Arc::new(self.compile()));
    }

    /// The dataplane's view of this state.
    fn compile(&self) -> Snapshot {
        let mut s = Snapshot::new(self.node.clone(), self.ports.clone());
        s.generation = self.generation;
        for (&port, i) in &self.ifaces {
            let port_mac = s.port(port).map(|p| p.mac).unwrap_or_default();
            if let Some(slot) = s.iface_by_port.get_mut(usize::from(port)) {
                *slot = Some(Interface {
                    id: i.id.as_str().to_owned(),
                    port,
                    port_mac,
                    vni: i.vni,
                    ipv4: i.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    ipv6: i.ipv6,
                    underlay_ipv6: i.underlay,
                    pxe: i.pxe.clone(),
                    vip: i.vip.map(|v| v.0),
                    nat: i.nat.map(|n| n.0),
                });
            }
            if let Some(slot) = s.firewall_by_port.get_mut(usize::from(port)) {
                *slot = Some(Arc::clone(&i.firewall));
            }
            s.underlay_targets.insert(i.underlay, UnderlayTarget::Interface(port));
            for a in &i.prefixes {
                s.underlay_targets.insert(a.underlay, UnderlayTarget::AliasPrefix(port));
            }
            for p in &i.lb_prefixes {
                s.underlay_targets.insert(p.underlay, UnderlayTarget::LbPrefix(port));
            }
            if let Some((vip, u)) = i.vip {
                s.underlay_targets.insert(u, UnderlayTarget::Vip(port));
                s.dnat.insert((i.vni, vip), DnatTarget::Vip(port));
            }
            if let Some((_, u)) = i.nat {
                s.underlay_targets.insert(u, UnderlayTarget::Nat { port, vni: i.vni });
            }
        }
        // A VIP wins over a NAT IP with the same address (dpservice keeps the first
        // DNAT entry, and only CreateVip checks).
        let nat_ips = self.ifaces.values().filter_map(|i| i.nat.map(|(n, _)| (i.vni, n.nat_ip)));
        let neigh_ips = self.neighbor_nats.iter().map(|n| (n.vni, n.nat_ip));
        for key in nat_ips.chain(neigh_ips) {
            s.dnat.entry(key).or_insert(DnatTarget::Nat);
        }
        // The ranges were checked disjoint when added.
        s.neighbor_nats = Arc::new(NeighborNats::new(self.neighbor_nats.clone()).unwrap_or_default());
        s.flushes = self.flushes.iter().copied().collect::<Vec<_>>().into();
        self.lbs.compile(&mut s);
        for (&vni, v) in &self.vnis {
            let mut t = VniTables::default();
            for (&(net, len), &target) in &v.routes {
                match net {
                    IpAddr::V4(a) => {
                        t.routes4.insert(a, len, target);
                    }
                    IpAddr::V6(a) => {
                        t.routes6.insert(a, len, target);
                    }
                }
            }
            s.vnis.insert(vni, t);
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dpfleet_dataplane::config::PortRole;
    use dpfleet_dataplane::tables::firewall::{FlowKey, L4};

    pub(crate) fn node() -> NodeConfig {
        NodeConfig {
            underlay_ipv6: "fc00:1::1".parse().unwrap(),
            dhcp_mtu: 1337,
            dhcp_dns: vec!["8.8.4.4".parse().unwrap()],
            dhcpv6_dns: vec![],
            ipv6_overlay: true,
            pf_ports: vec![0, 1],
            wcmp_percent: 100,
        }
    }

    /// Ports as the conformance suite's node has them: two PFs, then VFs.
    pub(crate) fn ports() -> Vec<PortInfo> {
        let mut v = Vec::new();
        for i in 0..2u8 {
            v.push(PortInfo {
                id: u16::from(i),
                mac: [0x22, 0x22, 0x22, 0x22, 0x22, i],
                role: PortRole::Pf(i),
                device_name: format!("net_tap{i}"),
                if_name: format!("dtap{i}"),
                neigh_mac: None,
            });
        }
        for i in 0..4u8 {
            v.push(PortInfo {
                id: u16::from(i) + 2,
                mac: [0x66, 0x66, 0x66, 0x66, 0x66, i],
                role: PortRole::Vf,
                device_name: format!("net_tap{}", i + 2),
                if_name: format!("dtapvf_{i}"),
                neigh_mac: None,
            });
        }
        v
    }

    /// A control plane with dpservice's static-underlay numbering.
    pub(crate) fn control() -> Control {
        let n = node();
        let alloc = UnderlayAlloc::new(n.underlay_ipv6, 1, 0);
        Control::with_underlay(n, ports(), alloc)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pfx(s: &str) -> Prefix {
        let (a, l) = s.split_once('/').unwrap();
        Prefix::new(ip(a), l.parse().unwrap()).unwrap()
    }

    fn spec(id: &str, dev: &str, vni: Vni, v4: &str, v6: &str) -> InterfaceSpec {
        InterfaceSpec {
            id: InterfaceId::new(id).unwrap(),
            vni,
            device_name: dev.into(),
            ipv4: Some(v4.parse().unwrap()),
            ipv6: Some(v6.parse().unwrap()),
            pxe: None,
            preferred_underlay: None,
        }
    }

    fn vm1() -> InterfaceSpec {
        spec("vm1", "net_tap2", 100, "10.100.1.1", "2000:100:1::1")
    }

    fn vm2() -> InterfaceSpec {
        spec("vm2", "net_tap3", 100, "10.100.1.2", "2000:100:1::2")
    }

    /// Asserts that a failing call changed nothing: no new snapshot was published.
    fn assert_unchanged(c: &Control, before: &Arc<Snapshot>) {
        assert!(Arc::ptr_eq(before, &c.snapshot()), "a failed call published a snapshot");
    }

    #[test]
    fn underlay_addresses_follow_dpservice() {
        // dpservice built with static underlay addresses, started with --ipv6=fc00:1::1.
        let mut a = UnderlayAlloc::new("fc00:1::1".parse().unwrap(), 1, 0);
        assert_eq!(a.next_addr(), "fc00:1::1:0:1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(a.next_addr(), "fc00:1::1:0:2".parse::<Ipv6Addr>().unwrap());
        // The neighbour of test/config.py: host part fc00:2::, byte 100 (0x64), counter 1.
        let mut n = UnderlayAlloc::new("fc00:2::1".parse().unwrap(), 100, 0);
        assert_eq!(n.next_addr(), "fc00:2::64:0:1".parse::<Ipv6Addr>().unwrap());
        // Only the first 64 bits of the node address are used.
        let mut h = UnderlayAlloc::new("2001:db8:1:2:3:4:5:6".parse().unwrap(), 7, 0x1234_5677);
        assert_eq!(h.next_addr(), "2001:db8:1:2:0:7:1234:5678".parse::<Ipv6Addr>().unwrap());
        let r = UnderlayAlloc::randomized("fc00:1::1".parse().unwrap()).next_addr();
        assert_eq!(r.segments()[..5], [0xfc00, 1, 0, 0, 0]);
        assert_eq!(r.octets()[10], 0);
        // Generated addresses never carry the externally-generated flag, whatever the
        // salt and counter, so preferred addresses cannot collide with them.
        let node: Ipv6Addr = "fc00:1::1".parse().unwrap();
        for salt in [0, 0x80, 0xff] {
            let mut a = UnderlayAlloc::new(node, salt, u32::MAX - 2);
            for _ in 0..5 {
                assert!(!is_external_underlay(a.next_addr(), node));
            }
        }
    }

    #[test]
    fn preferred_underlay_addresses_are_used_once() {
        let c = control();
        let ext: Ipv6Addr = "fc00:1::8000:0:1".parse().unwrap();
        let created = c.create_interface(InterfaceSpec { preferred_underlay: Some(ext), ..vm1() }).unwrap();
        assert_eq!(created.underlay, ext);
        assert_eq!(c.snapshot().underlay_port(&ext), Some(2));
        let before = c.snapshot();
        // Taken: refused before the id is checked (VM_HANDLE otherwise), nothing changes.
        let dup = InterfaceSpec { preferred_underlay: Some(ext), ..vm1() };
        let dup = InterfaceSpec { device_name: "net_tap3".into(), ..dup };
        assert_eq!(c.create_interface(dup), Err(ApiError::VnfInsert));
        assert_eq!(ApiError::VnfInsert.code(), 401);
        assert_eq!(c.create_prefix_at("vm1", pfx("172.23.3.0/24"), Some(ext)), Err(ApiError::VnfInsert));
        assert_eq!(c.create_vip_at("vm1", ip("45.86.6.1"), Some(ext)), Err(ApiError::VnfInsert));
        assert_unchanged(&c, &before);
        // The node's own allocation is untouched by the preferred one.
        assert_eq!(c.create_interface(vm2()).unwrap().underlay, "fc00:1::1:0:1".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn interface_ids_are_checked() {
        assert!(InterfaceId::new("vm-1_A").is_ok());
        assert_eq!(InterfaceId::new(""), Err(InterfaceIdError::Length));
        assert_eq!(InterfaceId::new(&"a".repeat(64)), Err(InterfaceIdError::Length));
        assert!(InterfaceId::new(&"a".repeat(63)).is_ok());
        assert_eq!(InterfaceId::new("vm 1"), Err(InterfaceIdError::Character));
        assert_eq!(InterfaceId::new("vm/1"), Err(InterfaceIdError::Character));
    }

    #[test]
    fn initialize_is_repeatable_and_resets_routes() {
        let c = control();
        assert!(!c.is_initialized());
        c.initialize().unwrap();
        assert!(c.is_initialized());
        c.create_interface(vm1()).unwrap();
        c.create_prefix("vm1", pfx("172.23.3.0/24")).unwrap();
        c.create_route(100, pfx("10.100.2.0/24"), 0, ip("fc00:2::64:0:1")).unwrap();
        c.initialize().unwrap();
        assert!(c.is_initialized());
        assert_eq!(c.list_routes(100).unwrap(), vec![]);
        let s = c.snapshot();
        let t = &s.vnis[&100];
        assert_eq!(t.routes4.lookup("172.23.3.9".parse().unwrap()), Some(&RouteTarget::Local { port: 2 }));
        assert_eq!(t.routes4.lookup("10.100.1.1".parse().unwrap()), Some(&RouteTarget::Local { port: 2 }));
        assert_eq!(t.routes4.lookup("10.100.2.1".parse().unwrap()), None);
    }

    #[test]
    fn create_interface_compiles_host_routes_and_underlay() {
        let c = control();
        let g0 = c.snapshot().generation;
        let created = c.create_interface(vm1()).unwrap();
        assert_eq!(
            created,
            CreatedInterface { underlay: "fc00:1::1:0:1".parse().unwrap(), vf_name: "dtapvf_0".into() }
        );
        let s = c.snapshot();
        assert_eq!(s.generation, g0 + 1);
        let i = s.iface(2).expect("interface on port 2");
        assert_eq!(i.id, "vm1");
        assert_eq!((i.vni, i.port, i.port_mac), (100, 2, [0x66, 0x66, 0x66, 0x66, 0x66, 0]));
        assert_eq!(i.ipv4, "10.100.1.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(i.ipv6, Some("2000:100:1::1".parse().unwrap()));
        assert_eq!(i.underlay_ipv6, created.underlay);
        assert_eq!(s.underlay_port(&created.underlay).as_ref(), Some(&2));
        let t = &s.vnis[&100];
        let local = RouteTarget::Local { port: 2 };
        assert_eq!(t.routes4.get_exact("10.100.1.1".parse().unwrap(), 32), Some(&local));
        assert_eq!(t.routes6.get_exact("2000:100:1::1".parse().unwrap(), 128), Some(&local));
        assert_eq!(t.routes4.iter().count() + t.routes6.iter().count(), 2);
        // The snapshot handle sees the same thing.
        assert_eq!(c.snapshot_handle().load().generation, s.generation);
    }

    #[test]
    fn interface_without_ipv6_gets_no_ipv6_route() {
        let c = control();
        let mut s = vm1();
        s.ipv6 = Some(Ipv6Addr::UNSPECIFIED);
        c.create_interface(s).unwrap();
        let snap = c.snapshot();
        assert_eq!(snap.iface(2).unwrap().ipv6, None);
        assert_eq!(snap.vnis[&100].routes6.iter().count(), 0);
        assert_eq!(c.get_interface("vm1").unwrap().ipv6, None);
    }

    #[test]
    fn create_interface_errors_change_nothing() {
        let c = control();
        c.create_interface(vm1()).unwrap();
        c.create_route(100, pfx("10.100.2.0/24"), 0, ip("fc00:2::64:0:1")).unwrap();
        let before = c.snapshot();
        let cases = [
            (spec("new", "invalid", 100, "10.100.1.9", "::"), ApiError::NotFound),
            (spec("new", "net_tap0", 100, "10.100.1.9", "::"), ApiError::AlreadyExists),
            (spec("new", "net_tap2", 100, "10.100.1.9", "::"), ApiError::AlreadyExists),
            (spec("vm1", "net_tap3", 100, "10.100.1.9", "::"), ApiError::VmHandle),
            (spec("vm4", "net_tap5", 100, "10.100.1.1", "2000:100:1::4"), ApiError::RouteExists),
            (spec("vm4", "net_tap5", 100, "10.100.1.4", "2000:100:1::1"), ApiError::RouteExists),
        ];
        for (s, want) in cases {
            assert_eq!(c.create_interface(s.clone()), Err(want), "{s:?}");
            assert_unchanged(&c, &before);
        }
        assert_eq!(c.list_interfaces().len(), 1);
        // The underlay counter did not move either.
        let next = c.create_interface(vm2()).unwrap();
        assert_eq!(next.underlay, "fc00:1::1:0:2".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn get_and_list_interfaces() {
        let c = control();
        c.create_interface(vm2()).unwrap();
        c.create_interface(vm1()).unwrap();
        assert_eq!(c.get_interface("nope"), Err(ApiError::NotFound));
        assert_eq!(c.get_interface(""), Err(ApiError::NotFound));
        let got = c.get_interface("vm1").unwrap();
        assert_eq!(
            got,
            InterfaceInfo {
                id: "vm1".into(),
                vni: 100,
                ipv4: Some("10.100.1.1".parse().unwrap()),
                ipv6: Some("2000:100:1::1".parse().unwrap()),
                underlay: "fc00:1::1:0:2".parse().unwrap(),
                device_name: "net_tap2".into(),
                port: 2,
            }
        );
        // Port order, not creation order.
        let ids: Vec<_> = c.list_interfaces().into_iter().map(|i| i.id).collect();
        assert_eq!(ids, ["vm1", "vm2"]);
    }

    #[test]
    fn delete_interface_drops_its_routes_and_last_vni() {
        let c = control();
        c.create_interface(vm1()).unwrap();
        c.create_interface(vm2()).unwrap();
        let pu = c.create_prefix("vm1", pfx("172.23.3.0/24")).unwrap();
        c.create_route(100, pfx("0.0.0.0/0"), 100, ip("fc00::ffff")).unwrap();
        let before = c.snapshot();
        assert_eq!(c.delete_interface("invalid_name"), Err(ApiError::NotFound));
        assert_unchanged(&c, &before);

        c.delete_interface("vm1").unwrap();
        let s = c.snapshot();
        assert!(s.iface(2).is_none());
        assert!(!s.underlay_targets.contains_key(&pu));
        let t = &s.vnis[&100];
        assert_eq!(t.routes4.get_exact("10.100.1.1".parse().unwrap(), 32), None);
        assert_eq!(t.routes4.get_exact("172.23.3.0".parse().unwrap(), 24), None);
        assert_eq!(t.routes4.lookup("10.100.1.2".parse().unwrap()), Some(&RouteTarget::Local { port: 3 }));
        assert_eq!(c.list_routes(100).unwrap().len(), 1);
        // The port is free again.
        c.create_interface(spec("vm4", "net_tap2", 100, "10.100.1.4", "::")).unwrap();
        c.delete_interface("vm4").unwrap();

        c.delete_interface("vm2").unwrap();
        assert!(c.snapshot().vnis.is_empty());
        assert_eq!(c.list_routes(100), Err(ApiError::NoVni));
        assert_eq!(c.vni_in_use(100, VniFamily::Ipv4), Ok(false));
    }

    #[test]
    fn routes() {
        let c = control();
        let nh = ip("fc00:2::64:0:1");
        assert_eq!(c.create_route(100, pfx("10.100.2.0/24"), 0, nh), Err(ApiError::NoVni));
        c.create_interface(vm1()).unwrap();
        let before = c.snapshot();
        assert_eq!(c.create_route(100, pfx("10.100.2.0/24"), 0, ip("10.0.0.1")), Err(ApiError::BadIpver));
        assert_eq!(c.create_route(100, pfx("10.100.1.1/32"), 0, nh), Err(ApiError::RouteExists));
        assert_eq!(c.delete_route(100, pfx("10.100.1.1/32")), Err(ApiError::RouteBadPort));
        assert_eq!(c.delete_route(100, pfx("10.100.9.0/24")), Err(ApiError::RouteNotFound));
        assert_eq!(c.delete_route(200, pfx("10.100.9.0/24")), Err(ApiError::NoVni));
        assert_unchanged(&c, &before);

        c.create_route(100, pfx("10.100.2.0/24"), 0, nh).unwrap();
        c.create_route(100, pfx("2000:100:2::/104"), 0, nh).unwrap();
        c.create_route(100, pfx("0.0.0.0/0"), 100, ip("fc00::ffff")).unwrap();
        // Host bits are ignored: this is the same route.
        assert_eq!(c.create_route(100, pfx("10.100.2.7/24"), 7, nh), Err(ApiError::RouteExists));

        let s = c.snapshot();
        let t = &s.vnis[&100];
        let remote = RouteTarget::Remote { underlay: "fc00:2::64:0:1".parse().unwrap(), vni: 0 };
        assert_eq!(t.routes4.lookup("10.100.2.9".parse().unwrap()), Some(&remote));
        assert_eq!(t.routes6.lookup("2000:100:2::5".parse().unwrap()), Some(&remote));
        assert_eq!(
            t.routes4.lookup("1.1.1.1".parse().unwrap()),
            Some(&RouteTarget::Remote { underlay: "fc00::ffff".parse().unwrap(), vni: 100 })
        );

        // IPv4 routes through the underlay only, by prefix.
        let listed = c.list_routes(100).unwrap();
        assert_eq!(
            listed,
            vec![
                RouteInfo {
                    prefix: pfx("0.0.0.0/0"),
                    nexthop_vni: 100,
                    nexthop: "fc00::ffff".parse().unwrap()
                },
                RouteInfo {
                    prefix: pfx("10.100.2.0/24"),
                    nexthop_vni: 0,
                    nexthop: "fc00:2::64:0:1".parse().unwrap()
                },
            ]
        );
        c.delete_route(100, pfx("10.100.2.0/24")).unwrap();
        assert_eq!(
            c.snapshot().vnis[&100].routes4.lookup("10.100.2.9".parse().unwrap()),
            Some(&RouteTarget::Remote { underlay: "fc00::ffff".parse().unwrap(), vni: 100 })
        );
        assert_eq!(c.list_routes(100).unwrap().len(), 1);
    }

    #[test]
    fn alias_prefixes() {
        let c = control();
        assert_eq!(c.create_prefix("vm1", pfx("172.23.3.0/24")), Err(ApiError::NoVm));
        c.create_interface(vm1()).unwrap();
        c.create_interface(vm2()).unwrap();
        c.create_route(100, pfx("10.100.2.0/24"), 0, ip("fc00:2::64:0:1")).unwrap();
        let u4 = c.create_prefix("vm2", pfx("172.23.3.0/24")).unwrap();
        assert_eq!(u4, "fc00:1::1:0:3".parse::<Ipv6Addr>().unwrap());
        let u6 = c.create_prefix("vm2", pfx("2a10:defe:dede:f4::1/124")).unwrap();

        let s = c.snapshot();
        let t = &s.vnis[&100];
        assert_eq!(t.routes4.lookup("172.23.3.200".parse().unwrap()), Some(&RouteTarget::Local { port: 3 }));
        assert_eq!(
            t.routes6.lookup("2a10:defe:dede:f4::9".parse().unwrap()),
            Some(&RouteTarget::Local { port: 3 })
        );
        assert_eq!(s.underlay_port(&u4).as_ref(), Some(&3));
        assert_eq!(s.underlay_port(&u6).as_ref(), Some(&3));

        let before = c.snapshot();
        assert_eq!(c.create_prefix("vm2", pfx("172.23.3.0/24")), Err(ApiError::RouteExists));
        assert_eq!(c.create_prefix("vm1", pfx("172.23.3.0/24")), Err(ApiError::RouteExists));
        assert_eq!(c.create_prefix("vm2", pfx("10.100.1.1/32")), Err(ApiError::RouteExists));
        assert_eq!(c.create_prefix("invalid_name", pfx("1.2.3.0/24")), Err(ApiError::NoVm));
        assert_eq!(c.delete_prefix("invalid_name", pfx("172.23.3.0/24")), Err(ApiError::NoVm));
        assert_eq!(c.delete_prefix("vm2", pfx("172.24.0.0/16")), Err(ApiError::RouteNotFound));
        assert_eq!(c.delete_prefix("vm1", pfx("172.23.3.0/24")), Err(ApiError::RouteBadPort));
        assert_eq!(c.delete_prefix("vm2", pfx("10.100.2.0/24")), Err(ApiError::RouteBadPort));
        assert_eq!(c.delete_prefix("vm2", pfx("10.100.1.2/32")), Err(ApiError::NotFound));
        assert_eq!(c.list_prefixes("invalid_name"), Err(ApiError::NoVm));
        assert_unchanged(&c, &before);

        assert_eq!(
            c.list_prefixes("vm2").unwrap(),
            vec![
                AliasPrefixInfo { prefix: pfx("172.23.3.0/24"), underlay: u4 },
                AliasPrefixInfo { prefix: pfx("2a10:defe:dede:f4::1/124"), underlay: u6 },
            ]
        );
        assert_eq!(c.list_prefixes("vm1").unwrap(), vec![]);
        // Alias prefixes are not routes through the underlay.
        assert_eq!(c.list_routes(100).unwrap().len(), 1);

        c.delete_prefix("vm2", pfx("2a10:defe:dede:f4::1/124")).unwrap();
        c.delete_prefix("vm2", pfx("172.23.3.7/24")).unwrap(); // matched by network
                                                               // The flows it brought to the VM end.
        let last = c.snapshot().flushes.last().map(|f| f.1);
        let addr = IpAddr::V4(Ipv4Addr::new(172, 23, 3, 0));
        assert_eq!(last, Some(Flush::Prefix { port: 3, vni: 100, addr, len: 24 }));
        let s = c.snapshot();
        assert_eq!(s.vnis[&100].routes4.lookup("172.23.3.200".parse().unwrap()), None);
        assert!(!s.underlay_targets.contains_key(&u4));
        assert_eq!(c.list_prefixes("vm2").unwrap(), vec![]);
    }

    #[test]
    fn vni_in_use_and_reset() {
        let c = control();
        assert_eq!(c.vni_in_use(300, VniFamily::Ipv4), Ok(false));
        c.create_interface(spec("vm4", "net_tap5", 300, "10.30.1.4", "::")).unwrap();
        c.create_interface(vm1()).unwrap();
        assert_eq!(c.vni_in_use(300, VniFamily::Ipv4), Ok(true));
        assert_eq!(c.vni_in_use(300, VniFamily::Ipv6), Ok(true));
        assert_eq!(c.vni_in_use(300, VniFamily::Both), Err(ApiError::WrongType));

        let nh = ip("fc00:2::64:0:1");
        c.create_route(300, pfx("10.100.2.0/24"), 0, nh).unwrap();
        c.create_route(300, pfx("::/0"), 0, nh).unwrap();
        c.create_route(100, pfx("10.100.2.0/24"), 0, nh).unwrap();
        c.create_prefix("vm4", pfx("172.23.3.0/24")).unwrap();

        let before = c.snapshot();
        assert_eq!(c.reset_vni(300, VniFamily::Ipv4), Err(ApiError::WrongType));
        assert_eq!(c.reset_vni(300, VniFamily::Ipv6), Err(ApiError::WrongType));
        assert_unchanged(&c, &before);
        c.reset_vni(999, VniFamily::Both).unwrap();

        c.reset_vni(300, VniFamily::Both).unwrap();
        assert_eq!(c.list_routes(300).unwrap(), vec![]);
        assert_eq!(c.list_routes(100).unwrap().len(), 1, "another VNI was touched");
        let s = c.snapshot();
        let t = &s.vnis[&300];
        assert_eq!(t.routes6.iter().count(), 0);
        assert_eq!(t.routes4.lookup("10.30.1.4".parse().unwrap()), Some(&RouteTarget::Local { port: 5 }));
        assert_eq!(t.routes4.lookup("172.23.3.1".parse().unwrap()), Some(&RouteTarget::Local { port: 5 }));
        assert_eq!(t.routes4.iter().count(), 2);
    }

    fn accept_tcp(id: &str, src: &str) -> FirewallRuleSpec {
        let (a, l) = src.split_once('/').unwrap();
        FirewallRuleSpec {
            id: id.as_bytes().to_vec(),
            direction: Direction::Ingress,
            action: Action::Accept,
            priority: 1000,
            src: Cidr::new(ip(a), l.parse().unwrap()),
            dst: Cidr::ANY,
            filter: RuleFilter::Tcp(PortFilter::default()),
        }
    }

    fn tcp_flow(src: &str, dst: &str, dst_port: u16) -> FlowKey {
        FlowKey { src: ip(src), dst: ip(dst), l4: L4::Tcp { src_port: 40000, dst_port } }
    }

    #[test]
    fn firewall_rules() {
        let c = control();
        assert_eq!(c.create_firewall_rule("vm1", accept_tcp("fw0", "1.2.3.4/16")), Err(ApiError::NoVm));
        c.create_interface(vm1()).unwrap();
        c.create_interface(vm2()).unwrap();
        let flow = tcp_flow("1.2.200.1", "10.100.1.1", 22);
        // No rules: ingress drops, egress accepts.
        let s = c.snapshot();
        assert_eq!(s.firewall(2).unwrap().verdict(Direction::Ingress, &flow), Action::Drop);
        assert!(s.firewall(2).unwrap().is_empty());
        assert!(s.firewall(0).is_none() && s.firewall(4).is_none());

        let before = c.snapshot();
        let drop = FirewallRuleSpec { action: Action::Drop, ..accept_tcp("fw0", "1.2.3.4/16") };
        assert_eq!(c.create_firewall_rule("vm1", drop.clone()), Err(ApiError::NoDropSupport));
        assert_unchanged(&c, &before);

        let rule = accept_tcp("fw0", "1.2.3.4/16");
        c.create_firewall_rule("vm1", rule.clone()).unwrap();
        let before = c.snapshot();
        // A taken id is reported before a DROP action.
        assert_eq!(c.create_firewall_rule("vm1", drop), Err(ApiError::AlreadyExists));
        assert_eq!(c.create_firewall_rule("nope", rule.clone()), Err(ApiError::NoVm));
        assert_eq!(c.delete_firewall_rule("vm1", b"fw9"), Err(ApiError::NotFound));
        assert_eq!(c.delete_firewall_rule("nope", b"fw0"), Err(ApiError::NoVm));
        assert_eq!(c.get_firewall_rule("vm1", b"fw9"), Err(ApiError::NotFound));
        assert_eq!(c.get_firewall_rule("nope", b"fw0"), Err(ApiError::NoVm));
        assert_eq!(c.list_firewall_rules("nope"), Err(ApiError::NoVm));
        assert_unchanged(&c, &before);

        // The same id on another interface is another rule.
        c.create_firewall_rule("vm2", rule.clone()).unwrap();
        let egress = FirewallRuleSpec {
            direction: Direction::Egress,
            priority: 7,
            filter: RuleFilter::Udp(PortFilter { dst_lower: Some(53), ..PortFilter::default() }),
            ..accept_tcp("fw1", "0.0.0.0/0")
        };
        c.create_firewall_rule("vm1", egress.clone()).unwrap();
        assert_eq!(c.get_firewall_rule("vm1", b"fw0"), Ok(rule.clone()));
        assert_eq!(c.list_firewall_rules("vm1"), Ok(vec![rule.clone(), egress.clone()]));

        let s = c.snapshot();
        let fw = s.firewall(2).unwrap();
        assert_eq!(fw.rules(Direction::Ingress), [rule.compile()]);
        assert_eq!(fw.rules(Direction::Egress), [egress.compile()]);
        assert_eq!(fw.verdict(Direction::Ingress, &flow), Action::Accept);
        assert_eq!(fw.verdict(Direction::Ingress, &tcp_flow("1.3.0.1", "10.100.1.1", 22)), Action::Drop);
        let dns = FlowKey { l4: L4::Udp { src_port: 5000, dst_port: 53 }, ..flow };
        assert_eq!(fw.verdict(Direction::Egress, &dns), Action::Accept);
        assert_eq!(fw.verdict(Direction::Egress, &flow), Action::Drop);
        // An unrelated change keeps the compiled rule set.
        c.create_route(100, pfx("10.100.2.0/24"), 0, ip("fc00:2::64:0:1")).unwrap();
        assert!(Arc::ptr_eq(
            s.firewall_by_port[2].as_ref().unwrap(),
            c.snapshot().firewall_by_port[2].as_ref().unwrap()
        ));

        c.delete_firewall_rule("vm1", b"fw0").unwrap();
        assert_eq!(c.get_firewall_rule("vm1", b"fw0"), Err(ApiError::NotFound));
        assert_eq!(c.list_firewall_rules("vm1"), Ok(vec![egress]));
        assert_eq!(c.list_firewall_rules("vm2"), Ok(vec![rule.clone()]));
        let s = c.snapshot();
        assert_eq!(s.firewall(2).unwrap().verdict(Direction::Ingress, &flow), Action::Drop);

        // Initialize and ResetVni leave rules alone; a deleted interface takes them along.
        c.initialize().unwrap();
        c.reset_vni(100, VniFamily::Both).unwrap();
        assert_eq!(c.list_firewall_rules("vm1").unwrap().len(), 1);
        c.delete_interface("vm1").unwrap();
        assert!(c.snapshot().firewall(2).is_none());
        c.create_interface(vm1()).unwrap();
        assert_eq!(c.list_firewall_rules("vm1"), Ok(vec![]));
        assert!(c.snapshot().firewall(2).unwrap().is_empty());
    }

    #[test]
    fn lb_prefixes() {
        let c = control();
        let v4 = ip("172.22.2.1");
        let v6 = ip("2a10:defe:e01f:f4::2");
        assert_eq!(c.create_lb_prefix("vm2", v4, 32), Err(ApiError::NoVm));
        c.create_interface(vm1()).unwrap();
        c.create_interface(vm2()).unwrap();
        let u4 = c.create_lb_prefix("vm2", v4, 32).unwrap();
        assert_eq!(u4, "fc00:1::1:0:3".parse::<Ipv6Addr>().unwrap());
        let u6 = c.create_lb_prefix("vm2", v6, 128).unwrap();
        // Keyed by address as given and length: these are new prefixes.
        let u24 = c.create_lb_prefix("vm2", v4, 24).unwrap();
        let u1 = c.create_lb_prefix("vm1", v4, 32).unwrap();

        let s = c.snapshot();
        for (u, port) in [(u4, 3), (u6, 3), (u24, 3), (u1, 2)] {
            assert_eq!(s.underlay_port(&u).as_ref(), Some(&port), "{u}");
        }
        // Not routes.
        assert_eq!(s.vnis[&100].routes4.lookup(v4.to_string().parse().unwrap()), None);
        assert_eq!(s.vnis[&100].routes4.iter().count(), 2);

        let before = c.snapshot();
        assert_eq!(c.create_lb_prefix("vm2", v4, 32), Err(ApiError::AlreadyExists));
        assert_eq!(c.create_lb_prefix("invalid_name", v4, 32), Err(ApiError::NoVm));
        assert_eq!(c.delete_lb_prefix("invalid_name", v4, 32), Err(ApiError::NoVm));
        assert_eq!(c.delete_lb_prefix("vm2", v4, 16), Err(ApiError::NotFound));
        assert_eq!(c.delete_lb_prefix("vm2", ip("172.22.2.0"), 24), Err(ApiError::NotFound));
        assert_eq!(c.list_lb_prefixes("invalid_name"), Err(ApiError::NoVm));
        assert_unchanged(&c, &before);

        assert_eq!(
            c.list_lb_prefixes("vm2").unwrap(),
            vec![
                LbPrefixInfo { addr: v4, len: 32, underlay: u4 },
                LbPrefixInfo { addr: v6, len: 128, underlay: u6 },
                LbPrefixInfo { addr: v4, len: 24, underlay: u24 },
            ]
        );
        // Alias prefixes are another table.
        assert_eq!(c.list_prefixes("vm2").unwrap(), vec![]);
        c.create_prefix("vm2", pfx("172.22.2.1/32")).unwrap();
        assert_eq!(c.list_lb_prefixes("vm2").unwrap().len(), 3);

        c.delete_lb_prefix("vm2", v4, 32).unwrap();
        assert!(!c.snapshot().underlay_targets.contains_key(&u4));
        assert_eq!(c.list_lb_prefixes("vm2").unwrap().len(), 2);
        // The flows it brought to the VM end.
        let last = c.snapshot().flushes.last().map(|f| f.1);
        assert_eq!(last, Some(Flush::Prefix { port: 3, vni: 100, addr: v4, len: 32 }));

        // They survive Initialize and ResetVni, hold no VNI, and go with the interface.
        c.initialize().unwrap();
        c.reset_vni(100, VniFamily::Both).unwrap();
        assert_eq!(c.list_lb_prefixes("vm2").unwrap().len(), 2);
        assert_eq!(c.snapshot().underlay_port(&u6).as_ref(), Some(&3));
        c.delete_interface("vm1").unwrap();
        assert!(!c.snapshot().underlay_targets.contains_key(&u1));
        c.delete_interface("vm2").unwrap();
        assert!(c.snapshot().underlay_targets.is_empty());
        assert_eq!(c.vni_in_use(100, VniFamily::Ipv4), Ok(false));
        c.create_interface(vm2()).unwrap();
        assert_eq!(c.list_lb_prefixes("vm2"), Ok(vec![]));
    }

    fn range(min: u16, max: u16) -> PortRange {
        PortRange::new(min, max).unwrap()
    }

    #[test]
    fn firewall_rule_changes_flush_denied_flows() {
        let c = control();
        c.create_interface(vm1()).unwrap();
        let flushes = |c: &Control| c.snapshot().flushes.iter().map(|f| f.1).collect::<Vec<_>>();
        assert!(flushes(&c).is_empty());
        c.create_firewall_rule("vm1", accept_tcp("fw0", "1.2.3.4/16")).unwrap();
        assert_eq!(flushes(&c), vec![Flush::Denied]);
        // A refused change flushes nothing.
        assert_eq!(
            c.create_firewall_rule("vm1", accept_tcp("fw0", "1.2.3.4/16")),
            Err(ApiError::AlreadyExists)
        );
        assert_eq!(flushes(&c), vec![Flush::Denied]);
        c.delete_firewall_rule("vm1", b"fw0").unwrap();
        assert_eq!(flushes(&c), vec![Flush::Denied, Flush::Denied]);
    }

    #[test]
    fn vips() {
        let c = control();
        c.create_interface(vm1()).unwrap();
        c.create_interface(vm2()).unwrap();
        let before = c.snapshot();
        assert_eq!(c.create_vip("nope", ip("172.20.0.1")), Err(ApiError::NoVm));
        assert_eq!(c.create_vip("vm1", ip("2001:db8::1")), Err(ApiError::BadIpver));
        assert_eq!(c.get_vip("vm1"), Err(ApiError::SnatNoData));
        assert_eq!(c.delete_vip("vm1"), Err(ApiError::SnatNoData));
        assert_unchanged(&c, &before);
        let u = c.create_vip("vm1", ip("172.20.0.1")).unwrap();
        assert_eq!(c.get_vip("vm1"), Ok((Ipv4Addr::new(172, 20, 0, 1), u)));
        assert_eq!(c.create_vip("vm1", ip("172.20.0.2")), Err(ApiError::SnatExists));
        // The same VIP for another VM of the VNI, or a NAT IP there, is refused.
        assert_eq!(c.create_vip("vm2", ip("172.20.0.1")), Err(ApiError::DnatExists));
        c.create_nat("vm2", ip("172.21.1.1"), range(100, 102)).unwrap();
        assert_eq!(c.create_vip("vm2", ip("172.21.1.1")), Err(ApiError::DnatExists));
        let s = c.snapshot();
        assert_eq!(s.underlay_targets.get(&u), Some(&UnderlayTarget::Vip(2)));
        assert_eq!(s.dnat.get(&(100, Ipv4Addr::new(172, 20, 0, 1))), Some(&DnatTarget::Vip(2)));
        assert_eq!(s.iface(2).unwrap().vip, Some(Ipv4Addr::new(172, 20, 0, 1)));
        c.delete_vip("vm1").unwrap();
        let s = c.snapshot();
        assert!(!s.underlay_targets.contains_key(&u));
        assert_eq!(s.flushes.last().map(|f| f.1), Some(Flush::Vip(2)));
    }

    #[test]
    fn nats_and_neighbour_nats() {
        let c = control();
        c.create_interface(vm1()).unwrap();
        c.create_interface(vm2()).unwrap();
        let nat = ip("172.21.1.1");
        assert_eq!(c.create_nat("vm1", ip("::1"), range(1, 2)), Err(ApiError::BadIpver));
        let u = c.create_nat("vm1", nat, range(100, 102)).unwrap();
        assert_eq!(c.create_nat("vm1", nat, range(200, 202)), Err(ApiError::SnatExists));
        // Ranges on one NAT IP must not share ports (whatever their VNI or owner).
        assert_eq!(c.create_nat("vm2", nat, range(101, 103)), Err(ApiError::AlreadyExists));
        let under = "fc00:2::64:0:1".parse().unwrap();
        assert_eq!(c.create_neighbor_nat(nat, 100, range(90, 101), under), Err(ApiError::AlreadyExists));
        c.create_nat("vm2", nat, range(112, 113)).unwrap();
        c.create_neighbor_nat(nat, 100, range(500, 520), under).unwrap();
        assert_eq!(c.create_neighbor_nat(nat, 100, range(500, 520), under), Err(ApiError::AlreadyExists));
        let (got, gu) = c.get_nat("vm1").unwrap();
        assert_eq!(
            (got.nat_ip, got.range, got.vni, gu),
            (Ipv4Addr::new(172, 21, 1, 1), range(100, 102), 100, u)
        );
        let locals = c.list_local_nats(nat).unwrap();
        assert_eq!(
            locals.iter().map(|(a, n)| (*a, n.range)).collect::<Vec<_>>(),
            vec![
                (Ipv4Addr::new(10, 100, 1, 1), range(100, 102)),
                (Ipv4Addr::new(10, 100, 1, 2), range(112, 113)),
            ]
        );
        assert_eq!(c.list_neighbor_nats(nat).unwrap().len(), 1);
        let s = c.snapshot();
        assert_eq!(s.underlay_targets.get(&u), Some(&UnderlayTarget::Nat { port: 2, vni: 100 }));
        assert_eq!(s.dnat.get(&(100, Ipv4Addr::new(172, 21, 1, 1))), Some(&DnatTarget::Nat));
        assert_eq!(s.neighbor_nats.len(), 1);
        assert_eq!(c.delete_neighbor_nat(nat, 100, range(500, 521)), Err(ApiError::NotFound));
        c.delete_neighbor_nat(nat, 100, range(500, 520)).unwrap();
        c.delete_nat("vm1").unwrap();
        assert_eq!(c.get_nat("vm1"), Err(ApiError::SnatNoData));
        let s = c.snapshot();
        let flushes: Vec<_> = s.flushes.iter().copied().collect();
        assert!(matches!(flushes[..], [(1, Flush::Neighbor(_)), (2, Flush::Nat(2))]), "{flushes:?}");
        // Initialize drops the neighbour entries; deleting an interface flushes its flows.
        c.create_neighbor_nat(nat, 100, range(500, 520), under).unwrap();
        c.initialize().unwrap();
        assert!(c.list_neighbor_nats(nat).unwrap().is_empty());
        c.delete_interface("vm2").unwrap();
        let last = c.snapshot().flushes.last().map(|f| f.1);
        let ipv6 = Some("2000:100:1::2".parse().unwrap());
        assert_eq!(
            last,
            Some(Flush::Interface { port: 3, vni: 100, ipv4: Ipv4Addr::new(10, 100, 1, 2), ipv6 })
        );
    }

    #[test]
    fn neighbour_nats_go_with_their_vni() {
        // As dpservice's dp_free_vni_data: when a VNI's last user (interface or load
        // balancer) goes, so do the neighbour NAT entries in it, and their flows.
        let c = control();
        let (nat, under) = (ip("172.21.1.1"), "fc00:2::64:0:1".parse().unwrap());
        c.create_interface(vm1()).unwrap();
        c.create_interface(vm2()).unwrap();
        c.create_neighbor_nat(nat, 100, range(500, 520), under).unwrap();
        c.create_neighbor_nat(nat, 200, range(600, 620), under).unwrap();
        c.delete_interface("vm1").unwrap();
        assert_eq!(c.list_neighbor_nats(nat).unwrap().len(), 2, "vm2 still uses VNI 100");
        c.create_lb("lb", 100, ip("172.22.2.1"), vec![(6, 80)]).unwrap();
        c.delete_interface("vm2").unwrap();
        assert_eq!(c.list_neighbor_nats(nat).unwrap().len(), 2, "the LB still uses VNI 100");
        c.delete_lb("lb").unwrap();
        let left: Vec<_> = c.list_neighbor_nats(nat).unwrap().iter().map(|n| n.vni).collect();
        assert_eq!(left, vec![200]);
        let last = c.snapshot().flushes.last().map(|f| f.1);
        assert!(
            matches!(last, Some(Flush::Neighbor(n)) if n.vni == 100 && n.range == range(500, 520)),
            "{last:?}"
        );
        // The entry is gone: deleting it is NOT_FOUND, creating it again succeeds.
        assert_eq!(c.delete_neighbor_nat(nat, 100, range(500, 520)), Err(ApiError::NotFound));
        c.create_neighbor_nat(nat, 100, range(500, 520), under).unwrap();
    }
}
