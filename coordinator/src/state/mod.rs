//! The desired state of the fleet and the one function that changes it.
//!
//! [`FleetState`] is plain data; [`FleetState::apply`] is a pure, deterministic function
//! of the state and a [`Command`]: no clock, no randomness, no I/O, no iteration over
//! hash maps (every collection is ordered). Raft feeds every replica the same commands in
//! the same order, so every replica holds the same state, allocations included.
//!
//! Invariants kept by `apply`:
//! - A command that fails returns an [`ApplyError`] and leaves the state exactly as it
//!   was (every check happens before the first change).
//! - References resolve: an interface's node and VNI exist, a NAT allocation's interface
//!   exists, a route's and a load balancer's VNI exist; what is referenced cannot be
//!   removed.
//! - Within a VNI an overlay address belongs to at most one interface; two NAT gateways
//!   never share ports on a public IP; two interfaces never share a NAT block.
//! - [`FleetState::generation`] increases by one on every successful change.
//! - A command carrying a request id that an earlier successful command carried (among
//!   the last [`DEDUP_CAPACITY`]) returns that command's response again and changes
//!   nothing; with a different command it is refused ([`ApplyError::RequestIdReused`]).

mod dedup;
pub mod iface;
pub mod lb;
pub mod nat;
mod seq;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dpfleet_proto::types::{Prefix, Vni};
use serde::{Deserialize, Serialize};

pub use dedup::{Dedup, DEDUP_CAPACITY};
pub use iface::{
    underlay_address, Direction, FirewallAction, FirewallRule, Interface, InterfaceSpec, PortRange,
    ProtocolFilter, Vip, EXTERNAL_FLAG,
};
pub use lb::{LbPort, LbTarget, LoadBalancer, LoadBalancerSpec, MaglevCommit, Protocol};
pub use nat::{NatBlock, NatGateway, NatGatewaySpec};

/// The lifecycle of a fleet node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Seen, not yet ready for traffic.
    Joining,
    /// Takes traffic and new interfaces.
    Active,
    /// Keeps its interfaces, takes no new ones.
    Draining,
    /// Declared unreachable.
    Down,
}

impl NodeState {
    /// Whether new interfaces may be placed on a node in this state.
    pub fn accepts_interfaces(self) -> bool {
        matches!(self, NodeState::Joining | NodeState::Active)
    }
}

/// A dataplane node of the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's name, unique in the fleet.
    pub id: String,
    /// Its underlay IPv6 address.
    pub underlay: Ipv6Addr,
    /// Where its node API listens (`host:port`).
    pub api_endpoint: String,
    /// Its lifecycle state.
    pub state: NodeState,
    /// The ports (DPDK device names) it offers for interfaces, as it publishes them.
    #[serde(default)]
    pub devices: Vec<String>,
    /// The state's generation when the node was registered or last set back to joining:
    /// the node is ready once it has applied at least this generation.
    #[serde(default)]
    pub joined_generation: u64,
}

/// An IP prefix without host bits, as routes carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl Cidr {
    /// The prefix, if `len` fits the family and no host bit is set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, ApplyError> {
        let prefix = Prefix::new(addr, u32::from(len))
            .map_err(|e| ApplyError::InvalidPrefix(format!("{addr}/{len}: {e}")))?;
        if prefix.has_host_bits() {
            return Err(ApplyError::InvalidPrefix(format!(
                "{addr}/{len} has host bits set (the network is {}/{len})",
                prefix.network()
            )));
        }
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A route of a virtual network: traffic to `prefix` goes to `next_hop` (the underlay
/// address of a node or an external router), into `next_hop_vni`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The virtual network the route belongs to.
    pub vni: u32,
    /// The destination.
    pub prefix: Cidr,
    /// The VNI at the next hop.
    pub next_hop_vni: u32,
    /// The underlay address of the next hop.
    pub next_hop: Ipv6Addr,
}

/// A change to the fleet state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Adds a node (state `joining`) or updates the address and endpoint of a known one.
    RegisterNode {
        /// The node's name.
        id: String,
        /// Its underlay address.
        underlay: Ipv6Addr,
        /// Its node API endpoint.
        api_endpoint: String,
        /// The ports it offers for interfaces.
        #[serde(default)]
        devices: Vec<String>,
    },
    /// Moves a node to another lifecycle state.
    SetNodeState {
        /// The node.
        id: String,
        /// The new state.
        state: NodeState,
    },
    /// Forgets a node that hosts no interface.
    RemoveNode {
        /// The node.
        id: String,
    },
    /// Creates a virtual network.
    CreateVni {
        /// Its identifier (24 bits).
        vni: u32,
    },
    /// Deletes a virtual network nothing refers to.
    DeleteVni {
        /// Its identifier.
        vni: u32,
    },
    /// Creates an interface on a node, or on one the coordinator picks
    /// ([`Response::Interface`]).
    CreateInterface(InterfaceSpec),
    /// Deletes an interface, releasing its NAT block and VIP.
    DeleteInterface {
        /// The interface.
        id: String,
    },
    /// Adds a route.
    AddRoute(Route),
    /// Deletes a route.
    DeleteRoute {
        /// The route's VNI.
        vni: u32,
        /// Its prefix.
        prefix: Cidr,
    },
    /// Creates a NAT gateway.
    CreateNatGateway(NatGatewaySpec),
    /// Deletes a NAT gateway that has no interface attached.
    DeleteNatGateway {
        /// The gateway.
        id: String,
    },
    /// Gives an interface a port block of a gateway ([`Response::NatBlock`]).
    AttachNat {
        /// The gateway.
        gateway: String,
        /// The interface (in the gateway's VNI).
        interface: String,
    },
    /// Releases an interface's port block.
    DetachNat {
        /// The gateway.
        gateway: String,
        /// The interface.
        interface: String,
    },
    /// Creates a load balancer ([`Response::LoadBalancer`]).
    CreateLoadBalancer(LoadBalancerSpec),
    /// Deletes a load balancer.
    DeleteLoadBalancer {
        /// The load balancer.
        id: String,
    },
    /// Adds a target to a load balancer ([`Response::LoadBalancer`]).
    AddLbTarget {
        /// The load balancer.
        lb: String,
        /// The target.
        target: LbTarget,
    },
    /// Makes an interface a target of a load balancer in its VNI: the interface gets the
    /// VIP as a load-balancer prefix with an underlay address on its node, and that
    /// address becomes the target ([`Response::LoadBalancer`]).
    AddLbInterfaceTarget {
        /// The load balancer.
        lb: String,
        /// The interface.
        interface: String,
        /// Its relative share of the flows (at least 1).
        weight: u32,
    },
    /// Gives an interface a VIP.
    SetVip {
        /// The interface.
        interface: String,
        /// The public address.
        ip: Ipv4Addr,
    },
    /// Removes an interface's VIP.
    DeleteVip {
        /// The interface.
        interface: String,
    },
    /// Adds a firewall rule to an interface.
    AddFirewallRule {
        /// The interface.
        interface: String,
        /// The rule.
        rule: FirewallRule,
    },
    /// Removes a firewall rule from an interface.
    DeleteFirewallRule {
        /// The interface.
        interface: String,
        /// The rule's id.
        rule_id: String,
    },
    /// Removes a target from a load balancer ([`Response::LoadBalancer`]).
    RemoveLbTarget {
        /// The load balancer.
        lb: String,
        /// The target's address.
        addr: Ipv6Addr,
    },
}

/// A command as it travels through the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The client's idempotency key: a retried command with the same id is applied once.
    pub request_id: Option<String>,
    /// The change.
    pub op: Op,
}

impl Command {
    /// A command without request id.
    pub fn new(op: Op) -> Self {
        Command { request_id: None, op }
    }

    /// A command with a request id.
    pub fn with_request_id(request_id: impl Into<String>, op: Op) -> Self {
        Command { request_id: Some(request_id.into()), op }
    }
}

/// What a successful command returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    /// The change was made; the state is now at `generation`.
    Done {
        /// The state's generation after the change.
        generation: u64,
    },
    /// An interface was created where this says.
    Interface {
        /// The state's generation after the change.
        generation: u64,
        /// The interface as placed.
        interface: Interface,
    },
    /// An interface got this port block.
    NatBlock {
        /// The state's generation after the change.
        generation: u64,
        /// The block.
        block: NatBlock,
        /// The underlay address of the interface's NAT on its node.
        underlay: Ipv6Addr,
    },
    /// A load balancer's table is now at `epoch` with this commit.
    LoadBalancer {
        /// The state's generation after the change.
        generation: u64,
        /// The load balancer's epoch.
        epoch: u64,
        /// The committed table (`None` without targets).
        table: Option<MaglevCommit>,
    },
}

/// The kinds of objects errors talk about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A fleet node.
    Node,
    /// A virtual network.
    Vni,
    /// An interface.
    Interface,
    /// A route.
    Route,
    /// A NAT gateway.
    NatGateway,
    /// An interface's attachment to a NAT gateway.
    NatAttachment,
    /// A load balancer.
    LoadBalancer,
    /// A load balancer target.
    LbTarget,
    /// An interface's VIP.
    Vip,
    /// A firewall rule.
    FirewallRule,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Node => "node",
            ObjectKind::Vni => "VNI",
            ObjectKind::Interface => "interface",
            ObjectKind::Route => "route",
            ObjectKind::NatGateway => "NAT gateway",
            ObjectKind::NatAttachment => "NAT attachment",
            ObjectKind::LoadBalancer => "load balancer",
            ObjectKind::LbTarget => "load balancer target",
            ObjectKind::Vip => "VIP",
            ObjectKind::FirewallRule => "firewall rule",
        })
    }
}

/// Why a command was refused. The state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// A malformed or inconsistent argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A prefix too long for its family or with host bits.
    #[error("invalid prefix {0}")]
    InvalidPrefix(String),
    /// A referenced object does not exist.
    #[error("unknown {kind} {id}")]
    NotFound {
        /// What was looked for.
        kind: ObjectKind,
        /// Its name.
        id: String,
    },
    /// The object to create exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// What was to be created.
        kind: ObjectKind,
        /// Its name.
        id: String,
    },
    /// The object to remove is still referenced.
    #[error("{kind} {id} is still used by {by}")]
    InUse {
        /// What was to be removed.
        kind: ObjectKind,
        /// Its name.
        id: String,
        /// What refers to it.
        by: String,
    },
    /// An overlay address is taken in that VNI.
    #[error("address {addr} is already used by interface {by} in VNI {vni}")]
    AddressInUse {
        /// The VNI.
        vni: u32,
        /// The address.
        addr: IpAddr,
        /// The interface holding it.
        by: String,
    },
    /// A NAT gateway's ports overlap another's on a shared public IP.
    #[error("port range overlaps NAT gateway {other} on {ip}")]
    OverlappingRange {
        /// The shared public IP.
        ip: Ipv4Addr,
        /// The other gateway.
        other: String,
    },
    /// The node is draining or down and takes no new interface.
    #[error("node {node} is {state:?} and takes no new interfaces")]
    NodeNotAccepting {
        /// The node.
        node: String,
        /// Its state.
        state: NodeState,
    },
    /// The interface is not in the NAT gateway's or load balancer's VNI.
    #[error("interface {interface} is in VNI {interface_vni}, not in VNI {vni}")]
    VniMismatch {
        /// The interface.
        interface: String,
        /// Its VNI.
        interface_vni: u32,
        /// The VNI required.
        vni: u32,
    },
    /// Every block of the gateway's pool is in use.
    #[error("NAT gateway {gateway} has no free port block (all {blocks} are in use)")]
    PoolExhausted {
        /// The gateway.
        gateway: String,
        /// Its number of blocks.
        blocks: u64,
    },
    /// No node can take the object (placement found no accepting node with a free port),
    /// or an address space is used up.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// A request id was reused for a different command.
    #[error("request id {0} was already used for a different command")]
    RequestIdReused(String),
}

/// The desired state of the fleet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetState {
    generation: u64,
    nodes: BTreeMap<String, Node>,
    vnis: BTreeSet<u32>,
    interfaces: BTreeMap<String, Interface>,
    /// (VNI, overlay address) → interface id: the address index.
    #[serde(with = "seq")]
    addresses: BTreeMap<(u32, IpAddr), String>,
    #[serde(with = "seq")]
    routes: BTreeMap<(u32, Cidr), Route>,
    nat_gateways: BTreeMap<String, NatGateway>,
    load_balancers: BTreeMap<String, LoadBalancer>,
    /// The counter of coordinator-chosen underlay addresses (see [`underlay_address`]).
    next_underlay: u32,
    /// node → the devices its interfaces use: the index placement reads (a node's load
    /// is its number of used devices).
    devices_in_use: BTreeMap<String, BTreeSet<String>>,
    dedup: Dedup,
}

fn not_found(kind: ObjectKind, id: impl fmt::Display) -> ApplyError {
    ApplyError::NotFound { kind, id: id.to_string() }
}

fn exists(kind: ObjectKind, id: impl fmt::Display) -> ApplyError {
    ApplyError::AlreadyExists { kind, id: id.to_string() }
}

fn check_vni(vni: u32) -> Result<(), ApplyError> {
    Vni::new(vni).map(|_| ()).map_err(|e| ApplyError::InvalidArgument(e.to_string()))
}

impl FleetState {
    /// The empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `cmd`: see the [module documentation](self) for the guarantees.
    pub fn apply(&mut self, cmd: Command) -> Result<Response, ApplyError> {
        let Some(request_id) = cmd.request_id else {
            return self.apply_op(cmd.op);
        };
        let fingerprint = dedup::fingerprint(&cmd.op);
        if let Some(previous) = self.dedup.lookup(&request_id, fingerprint) {
            return previous;
        }
        // Only successes are remembered: a refused command changes nothing, not even the
        // dedup table, so retrying it later (say, once a pool has room) is a fresh attempt.
        let response = self.apply_op(cmd.op)?;
        self.dedup.record(request_id, fingerprint, response.clone());
        Ok(response)
    }

    fn apply_op(&mut self, op: Op) -> Result<Response, ApplyError> {
        let response = match op {
            Op::RegisterNode { id, underlay, api_endpoint, devices } => {
                if id.is_empty() {
                    return Err(ApplyError::InvalidArgument("a node needs a name".into()));
                }
                if let Some(d) = devices.iter().find(|d| d.is_empty() || d.contains(',')) {
                    return Err(ApplyError::InvalidArgument(format!("node {id}: bad device name {d:?}")));
                }
                match self.nodes.get_mut(&id) {
                    Some(node) => {
                        if node.underlay != underlay && self.interfaces.values().any(|i| i.node == id) {
                            return Err(ApplyError::InUse {
                                kind: ObjectKind::Node,
                                id,
                                by: "interfaces whose underlay addresses are in its old prefix".into(),
                            });
                        }
                        node.underlay = underlay;
                        node.api_endpoint = api_endpoint;
                        node.devices = devices;
                    }
                    None => {
                        self.check_underlay_room(self.load_balancers.len())?;
                        let node = Node {
                            id: id.clone(),
                            underlay,
                            api_endpoint,
                            state: NodeState::Joining,
                            devices,
                            joined_generation: self.generation + 1,
                        };
                        self.nodes.insert(id.clone(), node);
                        let ids: Vec<String> = self.load_balancers.keys().cloned().collect();
                        for lb in ids {
                            let addr = self.alloc_underlay(&id);
                            if let Some(lb) = self.load_balancers.get_mut(&lb) {
                                lb.node_underlays.insert(id.clone(), addr);
                            }
                        }
                    }
                }
                None
            }
            Op::SetNodeState { id, state } => {
                let next = self.generation + 1;
                let node = self.nodes.get_mut(&id).ok_or_else(|| not_found(ObjectKind::Node, &id))?;
                if state == NodeState::Joining && node.state != NodeState::Joining {
                    node.joined_generation = next;
                }
                node.state = state;
                None
            }
            Op::RemoveNode { id } => {
                if !self.nodes.contains_key(&id) {
                    return Err(not_found(ObjectKind::Node, &id));
                }
                if let Some(i) = self.interfaces.values().find(|i| i.node == id) {
                    return Err(ApplyError::InUse {
                        kind: ObjectKind::Node,
                        id,
                        by: format!("interface {}", i.id),
                    });
                }
                self.nodes.remove(&id);
                for lb in self.load_balancers.values_mut() {
                    lb.node_underlays.remove(&id);
                }
                None
            }
            Op::CreateVni { vni } => {
                check_vni(vni)?;
                if !self.vnis.insert(vni) {
                    return Err(exists(ObjectKind::Vni, vni));
                }
                None
            }
            Op::DeleteVni { vni } => {
                if !self.vnis.contains(&vni) {
                    return Err(not_found(ObjectKind::Vni, vni));
                }
                if let Some(by) = self.vni_user(vni) {
                    return Err(ApplyError::InUse { kind: ObjectKind::Vni, id: vni.to_string(), by });
                }
                self.vnis.remove(&vni);
                None
            }
            Op::CreateInterface(spec) => {
                let interface = self.create_interface(spec)?;
                self.generation += 1;
                return Ok(Response::Interface { generation: self.generation, interface });
            }
            Op::DeleteInterface { id } => {
                if !self.interfaces.contains_key(&id) {
                    return Err(not_found(ObjectKind::Interface, &id));
                }
                if let Some(lb) = self.load_balancers.values().find(|l| l.interface_targets.contains_key(&id))
                {
                    return Err(ApplyError::InUse {
                        kind: ObjectKind::Interface,
                        id,
                        by: format!("load balancer {} (as a target)", lb.id),
                    });
                }
                let iface =
                    self.interfaces.remove(&id).ok_or_else(|| not_found(ObjectKind::Interface, &id))?;
                if let Some(used) = self.devices_in_use.get_mut(&iface.node) {
                    used.remove(&iface.device);
                    if used.is_empty() {
                        self.devices_in_use.remove(&iface.node);
                    }
                }
                for addr in iface_addrs(&iface) {
                    self.addresses.remove(&(iface.vni, addr));
                }
                for gw in self.nat_gateways.values_mut() {
                    gw.release(&id);
                }
                None
            }
            Op::AddRoute(route) => {
                let prefix = Cidr::new(route.prefix.addr, route.prefix.len)?;
                check_vni(route.next_hop_vni)?;
                if !self.vnis.contains(&route.vni) {
                    return Err(not_found(ObjectKind::Vni, route.vni));
                }
                if self.routes.contains_key(&(route.vni, prefix)) {
                    return Err(exists(ObjectKind::Route, format!("{prefix} in VNI {}", route.vni)));
                }
                self.routes.insert((route.vni, prefix), route);
                None
            }
            Op::DeleteRoute { vni, prefix } => {
                self.routes
                    .remove(&(vni, prefix))
                    .ok_or_else(|| not_found(ObjectKind::Route, format!("{prefix} in VNI {vni}")))?;
                None
            }
            Op::CreateNatGateway(spec) => {
                if self.nat_gateways.contains_key(&spec.id) {
                    return Err(exists(ObjectKind::NatGateway, &spec.id));
                }
                if !self.vnis.contains(&spec.vni) {
                    return Err(not_found(ObjectKind::Vni, spec.vni));
                }
                let gw = NatGateway::new(spec)?;
                if let Some(i) = self
                    .interfaces
                    .values()
                    .find(|i| i.vip.is_some_and(|v| gw.spec().public_ips.contains(&v.ip)))
                {
                    return Err(ApplyError::InvalidArgument(format!(
                        "a public IP of the gateway is the VIP of interface {}",
                        i.id
                    )));
                }
                for other in self.nat_gateways.values() {
                    if let Some(ip) = gw.overlap_with(other) {
                        return Err(ApplyError::OverlappingRange { ip, other: other.spec().id.clone() });
                    }
                }
                self.nat_gateways.insert(gw.spec().id.clone(), gw);
                None
            }
            Op::DeleteNatGateway { id } => {
                let gw = self.nat_gateways.get(&id).ok_or_else(|| not_found(ObjectKind::NatGateway, &id))?;
                if let Some((iface, _)) = gw.allocations().next() {
                    return Err(ApplyError::InUse {
                        kind: ObjectKind::NatGateway,
                        id,
                        by: format!("interface {iface}"),
                    });
                }
                self.nat_gateways.remove(&id);
                None
            }
            Op::AttachNat { gateway, interface } => {
                let iface = self
                    .interfaces
                    .get(&interface)
                    .ok_or_else(|| not_found(ObjectKind::Interface, &interface))?;
                let gw = self
                    .nat_gateways
                    .get(&gateway)
                    .ok_or_else(|| not_found(ObjectKind::NatGateway, &gateway))?;
                if iface.vni != gw.spec().vni {
                    return Err(ApplyError::VniMismatch {
                        interface,
                        interface_vni: iface.vni,
                        vni: gw.spec().vni,
                    });
                }
                if let Some(other) = self.nat_gateways.values().find(|g| g.allocation(&interface).is_some()) {
                    return Err(exists(
                        ObjectKind::NatAttachment,
                        format!("{interface} on {}", other.spec().id),
                    ));
                }
                self.check_underlay_room(1)?;
                let node = iface.node.clone();
                let gw = self
                    .nat_gateways
                    .get_mut(&gateway)
                    .ok_or_else(|| not_found(ObjectKind::NatGateway, &gateway))?;
                let block = gw.allocate(&interface)?;
                let underlay = self.alloc_underlay(&node);
                if let Some(iface) = self.interfaces.get_mut(&interface) {
                    iface.nat_underlay = Some(underlay);
                }
                self.generation += 1;
                return Ok(Response::NatBlock { generation: self.generation, block, underlay });
            }
            Op::DetachNat { gateway, interface } => {
                let gw = self
                    .nat_gateways
                    .get_mut(&gateway)
                    .ok_or_else(|| not_found(ObjectKind::NatGateway, &gateway))?;
                gw.release(&interface).ok_or_else(|| {
                    not_found(ObjectKind::NatAttachment, format!("{interface} on {gateway}"))
                })?;
                if let Some(iface) = self.interfaces.get_mut(&interface) {
                    iface.nat_underlay = None;
                }
                None
            }
            Op::CreateLoadBalancer(spec) => {
                if self.load_balancers.contains_key(&spec.id) {
                    return Err(exists(ObjectKind::LoadBalancer, &spec.id));
                }
                if !self.vnis.contains(&spec.vni) {
                    return Err(not_found(ObjectKind::Vni, spec.vni));
                }
                if let IpAddr::V4(vip) = spec.vip {
                    self.check_not_nat_ip(vip)?;
                }
                let mut lb = LoadBalancer::new(spec)?;
                self.check_underlay_room(self.nodes.len())?;
                let nodes: Vec<String> = self.nodes.keys().cloned().collect();
                for node in nodes {
                    let addr = self.alloc_underlay(&node);
                    lb.node_underlays.insert(node, addr);
                }
                let id = lb.id.clone();
                self.load_balancers.insert(id.clone(), lb);
                Some(id)
            }
            Op::DeleteLoadBalancer { id } => {
                self.load_balancers.remove(&id).ok_or_else(|| not_found(ObjectKind::LoadBalancer, &id))?;
                None
            }
            Op::AddLbTarget { lb, target } => {
                self.load_balancers
                    .get_mut(&lb)
                    .ok_or_else(|| not_found(ObjectKind::LoadBalancer, &lb))?
                    .add_target(target)?;
                Some(lb)
            }
            Op::AddLbInterfaceTarget { lb, interface, weight } => {
                let iface = self
                    .interfaces
                    .get(&interface)
                    .ok_or_else(|| not_found(ObjectKind::Interface, &interface))?;
                let balancer =
                    self.load_balancers.get(&lb).ok_or_else(|| not_found(ObjectKind::LoadBalancer, &lb))?;
                if iface.vni != balancer.vni {
                    return Err(ApplyError::VniMismatch {
                        interface,
                        interface_vni: iface.vni,
                        vni: balancer.vni,
                    });
                }
                if balancer.interface_targets.contains_key(&interface) {
                    return Err(exists(ObjectKind::LbTarget, format!("{interface} of {lb}")));
                }
                self.check_underlay_room(1)?;
                let node = iface.node.clone();
                // Taken only once the target is accepted (below): a refusal changes nothing.
                let addr = self.peek_underlay(&node);
                let balancer = self
                    .load_balancers
                    .get_mut(&lb)
                    .ok_or_else(|| not_found(ObjectKind::LoadBalancer, &lb))?;
                // add_target validates the weight and the table before anything changes.
                balancer.add_target(LbTarget { addr, weight })?;
                balancer.interface_targets.insert(interface, addr);
                self.next_underlay += 1;
                Some(lb)
            }
            Op::RemoveLbTarget { lb, addr } => {
                let balancer = self
                    .load_balancers
                    .get_mut(&lb)
                    .ok_or_else(|| not_found(ObjectKind::LoadBalancer, &lb))?;
                balancer.remove_target(addr)?;
                balancer.interface_targets.retain(|_, a| *a != addr);
                Some(lb)
            }
            Op::SetVip { interface, ip } => {
                let iface = self
                    .interfaces
                    .get(&interface)
                    .ok_or_else(|| not_found(ObjectKind::Interface, &interface))?;
                if iface.vip.is_some() {
                    return Err(exists(ObjectKind::Vip, format!("of {interface}")));
                }
                self.check_not_nat_ip(ip)?;
                if let Some(other) = self.interfaces.values().find(|i| i.vip.is_some_and(|v| v.ip == ip)) {
                    return Err(ApplyError::AddressInUse {
                        vni: other.vni,
                        addr: IpAddr::V4(ip),
                        by: other.id.clone(),
                    });
                }
                self.check_underlay_room(1)?;
                let node = iface.node.clone();
                let underlay = self.alloc_underlay(&node);
                if let Some(iface) = self.interfaces.get_mut(&interface) {
                    iface.vip = Some(Vip { ip, underlay });
                }
                None
            }
            Op::DeleteVip { interface } => {
                let iface = self
                    .interfaces
                    .get_mut(&interface)
                    .ok_or_else(|| not_found(ObjectKind::Interface, &interface))?;
                iface.vip.take().ok_or_else(|| not_found(ObjectKind::Vip, format!("of {interface}")))?;
                None
            }
            Op::AddFirewallRule { interface, rule } => {
                rule.validate()?;
                let iface = self
                    .interfaces
                    .get_mut(&interface)
                    .ok_or_else(|| not_found(ObjectKind::Interface, &interface))?;
                if iface.firewall_rules.contains_key(&rule.id) {
                    return Err(exists(ObjectKind::FirewallRule, format!("{} of {interface}", rule.id)));
                }
                iface.firewall_rules.insert(rule.id.clone(), rule);
                None
            }
            Op::DeleteFirewallRule { interface, rule_id } => {
                let iface = self
                    .interfaces
                    .get_mut(&interface)
                    .ok_or_else(|| not_found(ObjectKind::Interface, &interface))?;
                iface.firewall_rules.remove(&rule_id).ok_or_else(|| {
                    not_found(ObjectKind::FirewallRule, format!("{rule_id} of {interface}"))
                })?;
                None
            }
        };
        self.generation += 1;
        let generation = self.generation;
        Ok(match response.and_then(|id| self.load_balancers.get(&id)) {
            Some(lb) => Response::LoadBalancer { generation, epoch: lb.epoch, table: lb.table },
            None => Response::Done { generation },
        })
    }

    fn create_interface(&mut self, spec: InterfaceSpec) -> Result<Interface, ApplyError> {
        if spec.id.is_empty() {
            return Err(ApplyError::InvalidArgument("an interface needs a name".into()));
        }
        if self.interfaces.contains_key(&spec.id) {
            return Err(exists(ObjectKind::Interface, &spec.id));
        }
        if !self.vnis.contains(&spec.vni) {
            return Err(not_found(ObjectKind::Vni, spec.vni));
        }
        if spec.ipv4.is_none() && spec.ipv6.is_none() {
            return Err(ApplyError::InvalidArgument(format!(
                "interface {} needs an IPv4 or IPv6 address",
                spec.id
            )));
        }
        let addrs = spec.ipv4.map(IpAddr::V4).into_iter().chain(spec.ipv6.map(IpAddr::V6));
        for addr in addrs.clone() {
            if let Some(by) = self.addresses.get(&(spec.vni, addr)) {
                return Err(ApplyError::AddressInUse { vni: spec.vni, addr, by: by.clone() });
            }
        }
        let (node, device) = match &spec.node {
            Some(id) => {
                let node = self.nodes.get(id).ok_or_else(|| not_found(ObjectKind::Node, id))?;
                if !node.state.accepts_interfaces() {
                    return Err(ApplyError::NodeNotAccepting { node: node.id.clone(), state: node.state });
                }
                (id.clone(), self.pick_device(node, spec.device.as_deref())?)
            }
            None => self.place(spec.device.as_deref())?,
        };
        self.check_underlay_room(1)?;
        let underlay = self.alloc_underlay(&node);
        for addr in addrs {
            self.addresses.insert((spec.vni, addr), spec.id.clone());
        }
        let iface = Interface {
            id: spec.id,
            vni: spec.vni,
            node,
            device,
            ipv4: spec.ipv4,
            ipv6: spec.ipv6,
            underlay,
            vip: None,
            nat_underlay: None,
            firewall_rules: BTreeMap::new(),
        };
        self.devices_in_use.entry(iface.node.clone()).or_default().insert(iface.device.clone());
        self.interfaces.insert(iface.id.clone(), iface.clone());
        Ok(iface)
    }

    /// The device an interface gets on `node`: `wanted` if it is free (and offered, when
    /// the node publishes its devices), else the node's first free device.
    fn pick_device(&self, node: &Node, wanted: Option<&str>) -> Result<String, ApplyError> {
        let empty = BTreeSet::new();
        let used = self.devices_in_use.get(&node.id).unwrap_or(&empty);
        match wanted {
            Some(d) => {
                if d.is_empty() {
                    return Err(ApplyError::InvalidArgument("empty device name".into()));
                }
                if !node.devices.is_empty() && !node.devices.iter().any(|x| x == d) {
                    return Err(ApplyError::InvalidArgument(format!(
                        "node {} has no device {d} (it offers {})",
                        node.id,
                        node.devices.join(", ")
                    )));
                }
                if used.contains(d) {
                    return Err(ApplyError::InUse {
                        kind: ObjectKind::Node,
                        id: format!("{} device {d}", node.id),
                        by: "another interface".into(),
                    });
                }
                Ok(d.to_string())
            }
            None => node.devices.iter().find(|d| !used.contains(*d)).cloned().ok_or_else(|| {
                ApplyError::NoCapacity(if node.devices.is_empty() {
                    format!("node {} publishes no devices; name one", node.id)
                } else {
                    format!("every device of node {} is in use", node.id)
                })
            }),
        }
    }

    /// Placement: the active node (joining ones only if none is active) with the fewest
    /// interfaces that has a free device (`wanted`, if given); ties go to the first name.
    fn place(&self, wanted: Option<&str>) -> Result<(String, String), ApplyError> {
        let empty = BTreeSet::new();
        let used = |n: &Node| self.devices_in_use.get(&n.id).unwrap_or(&empty);
        let fits = |n: &Node| {
            let used = used(n);
            match wanted {
                Some(d) => (n.devices.is_empty() || n.devices.iter().any(|x| x == d)) && !used.contains(d),
                None => n.devices.iter().any(|d| !used.contains(d)),
            }
        };
        // One pass in name order beside `devices_in_use` (same keys, same order: no lookup
        // per node), testing `fits` only for a node with fewer interfaces than the best
        // so far, which is what the first minimum of the fitting nodes needs.
        for state in [NodeState::Active, NodeState::Joining] {
            let mut in_use = self.devices_in_use.iter().peekable();
            let mut best: Option<(&Node, usize)> = None;
            for n in self.nodes.values() {
                while in_use.next_if(|(id, _)| id.as_str() < n.id.as_str()).is_some() {}
                let count = in_use.peek().filter(|(id, _)| **id == n.id).map_or(0, |(_, u)| u.len());
                if n.state == state && best.is_none_or(|(_, c)| count < c) && fits(n) {
                    best = Some((n, count));
                }
            }
            if let Some((n, _)) = best {
                return Ok((n.id.clone(), self.pick_device(n, wanted)?));
            }
        }
        Err(ApplyError::NoCapacity("no active or joining node has a free device".into()))
    }

    /// Fails unless `n` more underlay addresses can be chosen.
    fn check_underlay_room(&self, n: usize) -> Result<(), ApplyError> {
        let left = u32::MAX - self.next_underlay;
        if u64::from(left) < n as u64 {
            return Err(ApplyError::NoCapacity("the fleet's underlay address counter is exhausted".into()));
        }
        Ok(())
    }

    /// The next underlay address on `node` (which exists; room was checked).
    fn alloc_underlay(&mut self, node: &str) -> Ipv6Addr {
        let addr = self.peek_underlay(node);
        self.next_underlay += 1;
        addr
    }

    /// The address [`FleetState::alloc_underlay`] would hand out next on `node`.
    fn peek_underlay(&self, node: &str) -> Ipv6Addr {
        underlay_address(self.nodes[node].underlay, self.next_underlay)
    }

    /// Refuses `ip` if it is a public IP of a NAT gateway.
    fn check_not_nat_ip(&self, ip: Ipv4Addr) -> Result<(), ApplyError> {
        if let Some(gw) = self.nat_gateways.values().find(|g| g.spec().public_ips.contains(&ip)) {
            return Err(ApplyError::InvalidArgument(format!(
                "{ip} is a public IP of NAT gateway {}",
                gw.spec().id
            )));
        }
        Ok(())
    }

    /// Something that refers to `vni`, described for an error message.
    fn vni_user(&self, vni: u32) -> Option<String> {
        if let Some(i) = self.interfaces.values().find(|i| i.vni == vni) {
            return Some(format!("interface {}", i.id));
        }
        if let Some(r) = self.routes.values().find(|r| r.vni == vni) {
            return Some(format!("route {}", r.prefix));
        }
        if let Some(g) = self.nat_gateways.values().find(|g| g.spec().vni == vni) {
            return Some(format!("NAT gateway {}", g.spec().id));
        }
        self.load_balancers.values().find(|l| l.vni == vni).map(|l| format!("load balancer {}", l.id))
    }

    /// Increases by one on every successful change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The nodes, by name.
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// The virtual networks.
    pub fn vnis(&self) -> &BTreeSet<u32> {
        &self.vnis
    }

    /// The interfaces, by name.
    pub fn interfaces(&self) -> &BTreeMap<String, Interface> {
        &self.interfaces
    }

    /// The routes, by (VNI, prefix).
    pub fn routes(&self) -> impl Iterator<Item = &Route> + '_ {
        self.routes.values()
    }

    /// The NAT gateways, by name.
    pub fn nat_gateways(&self) -> &BTreeMap<String, NatGateway> {
        &self.nat_gateways
    }

    /// The load balancers, by name.
    pub fn load_balancers(&self) -> &BTreeMap<String, LoadBalancer> {
        &self.load_balancers
    }
}

fn iface_addrs(iface: &Interface) -> impl Iterator<Item = IpAddr> {
    iface.ipv4.map(IpAddr::V4).into_iter().chain(iface.ipv6.map(IpAddr::V6))
}

#[cfg(test)]
mod tests;
