//! What a node should hold, what it holds, and the calls that turn one into the other.
//!
//! Pure: [`desired`] is a function of the committed [`FleetState`] alone, [`diff`] a
//! function of what a node reported ([`NodeActual`]) and what it should hold
//! ([`NodeDesired`]). No I/O, no clock; every collection is ordered, so equal inputs give
//! equal plans.
//!
//! # What a node holds
//!
//! - Its interfaces (id, VNI, device, overlay addresses, the coordinator-chosen underlay
//!   address), each with its VIP, NAT block, firewall rules and the load-balancer prefixes
//!   that make it a target (the LB's VIP as /32 or /128 on the target's underlay address).
//!   Alias prefixes are not part of the fleet state, so a node should hold none.
//! - Every load balancer of the fleet (every node serves every VIP), on the entry-point
//!   underlay address the coordinator chose for that node, with the committed Maglev input.
//! - Routes, in every VNI the node uses (one of its interfaces or load balancers is in
//!   it; a node refuses routes elsewhere): the VNI's routes from the state, and a host
//!   route to every overlay address of every interface of that VNI on another node that
//!   is not down, through that interface's underlay address — how dpservice fleets carry
//!   VM-to-VM traffic between hosts. A state route with the same prefix wins. VIPs need no
//!   route: their traffic reaches the hosting node through the VIP's underlay address.
//! - A neighbor-NAT entry for every NAT block owned by an interface on another node that
//!   is not down, pointing at the owner's NAT underlay address, so return traffic that
//!   the router spreads over all nodes is relayed to the owner.
//!
//! # Order of the calls
//!
//! [`diff`] deletes first, dependents before what they depend on (neighbor NATs, routes,
//! LB prefixes, alias prefixes, firewall rules, VIPs, NATs, interfaces, load balancers),
//! then creates in the opposite order (interfaces, load balancers, VIPs, NATs, firewall
//! rules, LB prefixes, routes, neighbor NATs), then installs Maglev tables, then records
//! the generation. Deleting first frees what a create may need: an address moving from
//! a route to a new local interface, a port range moving from a neighbor entry to a local
//! NAT, a VIP moving between interfaces. An interface or load balancer whose fields
//! differ is deleted and created again (the node takes the sub-objects of a deleted
//! interface with it, so they are created again too), and so is a load balancer whose
//! installed table the node would refuse to replace (a higher epoch than the committed
//! one, or the same epoch with another digest). When the deletes leave a VNI without an
//! interface or load balancer, the node forgets the VNI and its routes; the desired
//! routes of that VNI are then created again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::state::{Cidr, FirewallRule, FleetState, Interface, LbPort, LbTarget, NodeState};

/// The highest port a node accepts as the (exclusive) end of a NAT range: dpservice's
/// `max_port` is exclusive and at most 65535.
pub const NODE_PORT_MAX: u16 = u16::MAX;

/// An interface as the node's API creates and lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceConfig {
    /// The interface id.
    pub id: String,
    /// Its VNI.
    pub vni: u32,
    /// The node's port (DPDK device name).
    pub device: String,
    /// Overlay IPv4.
    pub ipv4: Option<Ipv4Addr>,
    /// Overlay IPv6.
    pub ipv6: Option<Ipv6Addr>,
    /// Its underlay address.
    pub underlay: Ipv6Addr,
}

/// An interface's VIP on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipConfig {
    /// The public address.
    pub ip: Ipv4Addr,
    /// Its underlay address.
    pub underlay: Ipv6Addr,
}

/// An interface's NAT on the node: `[port_min, port_max)` on `ip`, as CreateNat takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatConfig {
    /// The public address.
    pub ip: Ipv4Addr,
    /// First port.
    pub port_min: u16,
    /// One past the last port.
    pub port_max: u16,
    /// Its underlay address.
    pub underlay: Ipv6Addr,
}

/// A load-balancer prefix of an interface (the LB's VIP, delivered to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LbPrefix {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
    /// The underlay address that attracts it.
    pub underlay: Ipv6Addr,
}

/// An alias prefix of an interface (CreatePrefix); only ever found, never desired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AliasPrefix {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

/// An interface with everything that hangs off it on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceObjects {
    /// The interface itself.
    pub config: InterfaceConfig,
    /// Its VIP.
    pub vip: Option<VipConfig>,
    /// Its NAT.
    pub nat: Option<NatConfig>,
    /// Its firewall rules, by id.
    pub firewall_rules: BTreeMap<String, FirewallRule>,
    /// Its load-balancer prefixes.
    pub lb_prefixes: BTreeSet<LbPrefix>,
    /// Its alias prefixes.
    pub alias_prefixes: BTreeSet<AliasPrefix>,
}

impl InterfaceObjects {
    /// The interface alone, with nothing hanging off it.
    pub fn bare(config: InterfaceConfig) -> Self {
        InterfaceObjects {
            config,
            vip: None,
            nat: None,
            firewall_rules: BTreeMap::new(),
            lb_prefixes: BTreeSet::new(),
            alias_prefixes: BTreeSet::new(),
        }
    }
}

/// A route of a VNI through the underlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRoute {
    /// The VNI whose table holds it.
    pub vni: u32,
    /// The destination.
    pub prefix: Cidr,
    /// The VNI at the next hop.
    pub next_hop_vni: u32,
    /// The next hop's underlay address.
    pub next_hop: Ipv6Addr,
}

/// A neighbor-NAT entry: `[port_min, port_max)` of `ip` in `vni` belongs to the node
/// behind `underlay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NeighborNat {
    /// The NAT IP.
    pub ip: Ipv4Addr,
    /// The gateway's VNI.
    pub vni: u32,
    /// First port.
    pub port_min: u16,
    /// One past the last port.
    pub port_max: u16,
    /// The owner's NAT underlay address.
    pub underlay: Ipv6Addr,
}

/// A load balancer as CreateLoadBalancer takes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LbConfig {
    /// The id.
    pub id: String,
    /// The VNI.
    pub vni: u32,
    /// The VIP.
    pub vip: IpAddr,
    /// The ports, sorted.
    pub ports: Vec<LbPort>,
    /// The entry point's underlay address on this node.
    pub underlay: Ipv6Addr,
}

/// A committed Maglev input (SetLoadBalancerTable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbTable {
    /// The load balancer's epoch.
    pub epoch: u64,
    /// The table size (prime).
    pub table_size: u32,
    /// The permutation seed.
    pub seed: u64,
    /// The targets in canonical order with their weights.
    pub targets: Vec<LbTarget>,
    /// The digest of the table built from this input.
    pub digest: u64,
}

/// A load balancer the node should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbDesired {
    /// Its configuration.
    pub config: LbConfig,
    /// Its table, `None` while it has no target.
    pub table: Option<LbTable>,
}

/// What a node reports about a load balancer's table (GetNodeStatus).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStatus {
    /// The installed epoch (0: none from the coordinator).
    pub epoch: u64,
    /// The digest of the table in use (0 without).
    pub digest: u64,
    /// Its size.
    pub table_size: u32,
    /// The number of targets.
    pub targets: u32,
}

/// A load balancer as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbActual {
    /// Its configuration.
    pub config: LbConfig,
    /// Its table.
    pub table: TableStatus,
}

/// Everything one node should hold at one generation of the fleet state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDesired {
    /// The node.
    pub node: String,
    /// The fleet state's generation this was derived from.
    pub generation: u64,
    /// The interfaces on the node, by id.
    pub interfaces: BTreeMap<String, InterfaceObjects>,
    /// The routes, by (VNI, prefix).
    pub routes: BTreeMap<(u32, Cidr), NodeRoute>,
    /// The neighbor-NAT entries.
    pub neighbor_nats: BTreeSet<NeighborNat>,
    /// Every load balancer, by id.
    pub load_balancers: BTreeMap<String, LbDesired>,
    /// The VNIs the node uses (its interfaces' and the load balancers').
    pub vnis: BTreeSet<u32>,
    /// Parts of the state the node API cannot express, left out (for the operator).
    pub problems: Vec<String>,
}

/// Everything a node reported holding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeActual {
    /// The interfaces, by id.
    pub interfaces: BTreeMap<String, InterfaceObjects>,
    /// The routes, by (VNI, prefix).
    pub routes: BTreeMap<(u32, Cidr), NodeRoute>,
    /// The neighbor-NAT entries.
    pub neighbor_nats: BTreeSet<NeighborNat>,
    /// The load balancers, by id.
    pub load_balancers: BTreeMap<String, LbActual>,
    /// The generation the node last recorded as applied (0 after a restart).
    pub applied_generation: u64,
}

/// One call to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// DeleteNeighborNat.
    DeleteNeighborNat(NeighborNat),
    /// DeleteRoute.
    DeleteRoute(NodeRoute),
    /// DeleteLoadBalancerPrefix.
    DeleteLbPrefix {
        /// The interface.
        interface: String,
        /// The prefix.
        prefix: LbPrefix,
    },
    /// DeletePrefix.
    DeleteAliasPrefix {
        /// The interface.
        interface: String,
        /// The prefix.
        prefix: AliasPrefix,
    },
    /// DeleteFirewallRule.
    DeleteFirewallRule {
        /// The interface.
        interface: String,
        /// The rule id.
        rule_id: String,
    },
    /// DeleteVip.
    DeleteVip {
        /// The interface.
        interface: String,
    },
    /// DeleteNat.
    DeleteNat {
        /// The interface.
        interface: String,
    },
    /// DeleteInterface (its sub-objects go with it).
    DeleteInterface {
        /// The interface.
        id: String,
    },
    /// DeleteLoadBalancer.
    DeleteLoadBalancer {
        /// The load balancer.
        id: String,
    },
    /// CreateInterface.
    CreateInterface(InterfaceConfig),
    /// CreateLoadBalancer.
    CreateLoadBalancer(LbConfig),
    /// CreateVip.
    CreateVip {
        /// The interface.
        interface: String,
        /// The VIP.
        vip: VipConfig,
    },
    /// CreateNat.
    CreateNat {
        /// The interface.
        interface: String,
        /// The NAT.
        nat: NatConfig,
    },
    /// CreateFirewallRule.
    CreateFirewallRule {
        /// The interface.
        interface: String,
        /// The rule.
        rule: FirewallRule,
    },
    /// CreateLoadBalancerPrefix.
    CreateLbPrefix {
        /// The interface.
        interface: String,
        /// The prefix.
        prefix: LbPrefix,
    },
    /// CreateRoute.
    CreateRoute(NodeRoute),
    /// CreateNeighborNat.
    CreateNeighborNat(NeighborNat),
    /// SetLoadBalancerTable (dpfleet.node.v1).
    SetLoadBalancerTable {
        /// The load balancer.
        id: String,
        /// The committed input.
        table: LbTable,
    },
    /// SetAppliedGeneration (dpfleet.node.v1); always the last action.
    SetAppliedGeneration {
        /// The generation now applied.
        generation: u64,
        /// Whether it is lower than the one the node had.
        force: bool,
    },
}

/// The fleet state indexed for planning many nodes at one generation: build it once,
/// then call [`FleetIndex::desired`] per node.
pub struct FleetIndex<'a> {
    state: &'a FleetState,
    /// Interfaces by node.
    by_node: BTreeMap<&'a str, Vec<&'a Interface>>,
    /// Interfaces on nodes that are not down, by VNI.
    live_by_vni: BTreeMap<u32, Vec<&'a Interface>>,
    /// NAT blocks of interfaces on nodes that are not down: (entry, owner node).
    live_nats: Vec<(NeighborNat, &'a str)>,
    /// The node-API form of every NAT block, by interface (`None`: not expressible).
    nats: BTreeMap<&'a str, Result<NatConfig, String>>,
    /// Load-balancer prefixes by interface.
    lb_prefixes: BTreeMap<&'a str, Vec<LbPrefix>>,
}

/// The node-API port range of a NAT block `[min, max)`: the node takes `max` up to
/// 65535, so a block ending at 65536 loses port 65535 (`None` if nothing is left).
fn node_ports(min: u32, max: u32) -> Option<(u16, u16)> {
    let min = u16::try_from(min).ok()?;
    let max = u16::try_from(max.min(u32::from(NODE_PORT_MAX))).ok()?;
    (min < max).then_some((min, max))
}

fn host_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn is_live(state: &FleetState, node: &str) -> bool {
    state.nodes().get(node).is_some_and(|n| n.state != NodeState::Down)
}

impl<'a> FleetIndex<'a> {
    /// Indexes `state`.
    pub fn new(state: &'a FleetState) -> Self {
        let mut by_node: BTreeMap<&str, Vec<&Interface>> = BTreeMap::new();
        let mut live_by_vni: BTreeMap<u32, Vec<&Interface>> = BTreeMap::new();
        for i in state.interfaces().values() {
            by_node.entry(i.node.as_str()).or_default().push(i);
            if is_live(state, &i.node) {
                live_by_vni.entry(i.vni).or_default().push(i);
            }
        }
        let mut nats = BTreeMap::new();
        let mut live_nats = Vec::new();
        for gw in state.nat_gateways().values() {
            for (iface_id, block) in gw.allocations() {
                let Some(iface) = state.interfaces().get(iface_id) else { continue };
                let Some(underlay) = iface.nat_underlay else { continue };
                let config = match node_ports(block.port_min, block.port_max) {
                    Some((port_min, port_max)) => {
                        Ok(NatConfig { ip: block.ip, port_min, port_max, underlay })
                    }
                    None => Err(format!(
                        "NAT block {}:[{}, {}) of interface {iface_id} has no port the node API can express",
                        block.ip, block.port_min, block.port_max
                    )),
                };
                if let (Ok(c), true) = (&config, is_live(state, &iface.node)) {
                    let entry = NeighborNat {
                        ip: c.ip,
                        vni: gw.spec().vni,
                        port_min: c.port_min,
                        port_max: c.port_max,
                        underlay,
                    };
                    live_nats.push((entry, iface.node.as_str()));
                }
                nats.insert(iface.id.as_str(), config);
            }
        }
        let mut lb_prefixes: BTreeMap<&str, Vec<LbPrefix>> = BTreeMap::new();
        for lb in state.load_balancers().values() {
            for (iface, &underlay) in &lb.interface_targets {
                let prefix = LbPrefix { addr: lb.vip, len: host_len(lb.vip), underlay };
                lb_prefixes.entry(iface.as_str()).or_default().push(prefix);
            }
        }
        FleetIndex { state, by_node, live_by_vni, live_nats, nats, lb_prefixes }
    }

    /// What `node` should hold, `None` if the state has no such node.
    pub fn desired(&self, node: &str) -> Option<NodeDesired> {
        let state = self.state;
        state.nodes().get(node)?;
        let mut problems = Vec::new();
        let mut interfaces = BTreeMap::new();
        let mut vnis = BTreeSet::new();
        for i in self.by_node.get(node).into_iter().flatten() {
            vnis.insert(i.vni);
            let config = InterfaceConfig {
                id: i.id.clone(),
                vni: i.vni,
                device: i.device.clone(),
                ipv4: i.ipv4,
                ipv6: i.ipv6,
                underlay: i.underlay,
            };
            let mut objects = InterfaceObjects::bare(config);
            objects.vip = i.vip.map(|v| VipConfig { ip: v.ip, underlay: v.underlay });
            objects.nat = match self.nats.get(i.id.as_str()) {
                Some(Ok(n)) => Some(*n),
                Some(Err(why)) => {
                    problems.push(why.clone());
                    None
                }
                None => None,
            };
            for (id, rule) in &i.firewall_rules {
                // The node keeps priorities in 16 bits (dpservice's limit).
                if u16::try_from(rule.priority).is_err() {
                    problems.push(format!(
                        "firewall rule {id} of interface {}: priority {} is above the node's 65535",
                        i.id, rule.priority
                    ));
                    continue;
                }
                objects.firewall_rules.insert(id.clone(), rule.clone());
            }
            objects.lb_prefixes =
                self.lb_prefixes.get(i.id.as_str()).into_iter().flatten().copied().collect();
            interfaces.insert(i.id.clone(), objects);
        }
        let mut load_balancers = BTreeMap::new();
        for lb in state.load_balancers().values() {
            vnis.insert(lb.vni);
            let Some(&underlay) = lb.node_underlays.get(node) else {
                problems.push(format!("load balancer {} has no underlay address on node {node}", lb.id));
                continue;
            };
            let table = lb.maglev_input().zip(lb.table).map(|(input, commit)| LbTable {
                epoch: lb.epoch,
                table_size: input.table_size,
                seed: input.seed,
                targets: lb.targets.clone(),
                digest: commit.digest,
            });
            let config =
                LbConfig { id: lb.id.clone(), vni: lb.vni, vip: lb.vip, ports: lb.ports.clone(), underlay };
            load_balancers.insert(lb.id.clone(), LbDesired { config, table });
        }
        let mut routes = BTreeMap::new();
        for r in state.routes().filter(|r| vnis.contains(&r.vni)) {
            let route = NodeRoute {
                vni: r.vni,
                prefix: r.prefix,
                next_hop_vni: r.next_hop_vni,
                next_hop: r.next_hop,
            };
            routes.insert((r.vni, r.prefix), route);
        }
        for &vni in &vnis {
            for i in self.live_by_vni.get(&vni).into_iter().flatten().filter(|i| i.node != node) {
                let addrs = i.ipv4.map(IpAddr::V4).into_iter().chain(i.ipv6.map(IpAddr::V6));
                for addr in addrs {
                    let prefix = Cidr { addr, len: host_len(addr) };
                    routes.entry((vni, prefix)).or_insert(NodeRoute {
                        vni,
                        prefix,
                        next_hop_vni: vni,
                        next_hop: i.underlay,
                    });
                }
            }
        }
        let neighbor_nats =
            self.live_nats.iter().filter(|(_, owner)| *owner != node).map(|(n, _)| *n).collect();
        Some(NodeDesired {
            node: node.to_string(),
            generation: state.generation(),
            interfaces,
            routes,
            neighbor_nats,
            load_balancers,
            vnis,
            problems,
        })
    }
}

/// What `node` should hold in `state`, `None` if the state has no such node. For many
/// nodes at once, build a [`FleetIndex`] once instead.
pub fn desired(state: &FleetState, node: &str) -> Option<NodeDesired> {
    FleetIndex::new(state).desired(node)
}

/// Whether the node's table must go with its load balancer: the node refuses a lower
/// epoch than the installed one, and another digest at the same epoch; and it has no
/// call to drop a table without deleting the load balancer's targets one by one.
fn table_needs_reset(actual: &TableStatus, desired: Option<&LbTable>) -> bool {
    match desired {
        None => actual.targets > 0,
        Some(t) => actual.epoch > t.epoch || (actual.epoch == t.epoch && actual.digest != t.digest),
    }
}

/// The calls that take a node from `actual` to `desired`, in the order they must be made
/// (see the [module documentation](self)). Empty when the node is there.
pub fn diff(actual: &NodeActual, desired: &NodeDesired) -> Vec<Action> {
    let mut del_neigh = Vec::new();
    let mut del_routes = Vec::new();
    let mut del_sub = Vec::new();
    let mut del_ifaces = Vec::new();
    let mut del_lbs = Vec::new();
    let mut creates = Vec::new();
    let mut create_subs = Vec::new();

    // What the node keeps of each interface; `None`: created afresh.
    let mut kept: BTreeMap<&str, &InterfaceObjects> = BTreeMap::new();
    let mut refs: BTreeMap<u32, i64> = BTreeMap::new();
    for (id, a) in &actual.interfaces {
        *refs.entry(a.config.vni).or_default() += 1;
        match desired.interfaces.get(id) {
            Some(d) if d.config == a.config => {
                kept.insert(id.as_str(), a);
                if a.vip.is_some() && a.vip != d.vip {
                    del_sub.push(Action::DeleteVip { interface: id.clone() });
                }
                if a.nat.is_some() && a.nat != d.nat {
                    del_sub.push(Action::DeleteNat { interface: id.clone() });
                }
                for (rule_id, rule) in &a.firewall_rules {
                    if d.firewall_rules.get(rule_id) != Some(rule) {
                        let rule_id = rule_id.clone();
                        del_sub.push(Action::DeleteFirewallRule { interface: id.clone(), rule_id });
                    }
                }
                for p in a.lb_prefixes.difference(&d.lb_prefixes) {
                    del_sub.push(Action::DeleteLbPrefix { interface: id.clone(), prefix: *p });
                }
                for p in a.alias_prefixes.difference(&d.alias_prefixes) {
                    del_sub.push(Action::DeleteAliasPrefix { interface: id.clone(), prefix: *p });
                }
            }
            _ => {
                *refs.entry(a.config.vni).or_default() -= 1;
                del_ifaces.push(Action::DeleteInterface { id: id.clone() });
            }
        }
    }
    let mut kept_lbs: BTreeMap<&str, &LbActual> = BTreeMap::new();
    for (id, a) in &actual.load_balancers {
        *refs.entry(a.config.vni).or_default() += 1;
        match desired.load_balancers.get(id) {
            Some(d) if d.config == a.config && !table_needs_reset(&a.table, d.table.as_ref()) => {
                kept_lbs.insert(id.as_str(), a);
            }
            _ => {
                *refs.entry(a.config.vni).or_default() -= 1;
                del_lbs.push(Action::DeleteLoadBalancer { id: id.clone() });
            }
        }
    }
    // VNIs the node forgets with their routes once the deletes are done.
    let lost_vnis: BTreeSet<u32> = refs.iter().filter(|(_, &n)| n <= 0).map(|(&v, _)| v).collect();

    for n in actual.neighbor_nats.difference(&desired.neighbor_nats) {
        del_neigh.push(Action::DeleteNeighborNat(*n));
    }
    for (key, r) in &actual.routes {
        if desired.routes.get(key) != Some(r) {
            del_routes.push(Action::DeleteRoute(*r));
        }
    }

    for (id, d) in &desired.interfaces {
        let have = kept.get(id.as_str()).copied();
        if have.is_none() {
            creates.push(Action::CreateInterface(d.config.clone()));
        }
        let empty = InterfaceObjects::bare(d.config.clone());
        let have = have.unwrap_or(&empty);
        if let Some(vip) = d.vip.filter(|v| have.vip != Some(*v)) {
            create_subs.push((0, Action::CreateVip { interface: id.clone(), vip }));
        }
        if let Some(nat) = d.nat.filter(|n| have.nat != Some(*n)) {
            create_subs.push((1, Action::CreateNat { interface: id.clone(), nat }));
        }
        for (rule_id, rule) in &d.firewall_rules {
            if have.firewall_rules.get(rule_id) != Some(rule) {
                let action = Action::CreateFirewallRule { interface: id.clone(), rule: rule.clone() };
                create_subs.push((2, action));
            }
        }
        for p in d.lb_prefixes.difference(&have.lb_prefixes) {
            create_subs.push((3, Action::CreateLbPrefix { interface: id.clone(), prefix: *p }));
        }
    }
    let mut tables = Vec::new();
    for (id, d) in &desired.load_balancers {
        let have = kept_lbs.get(id.as_str());
        if have.is_none() {
            creates.push(Action::CreateLoadBalancer(d.config.clone()));
        }
        if let Some(t) = &d.table {
            if have.is_none_or(|a| a.table.epoch != t.epoch || a.table.digest != t.digest) {
                tables.push(Action::SetLoadBalancerTable { id: id.clone(), table: t.clone() });
            }
        }
    }
    // Stable: by kind, then in the (ordered) order of interfaces.
    create_subs.sort_by_key(|(kind, _)| *kind);
    let mut routes = Vec::new();
    for (key, r) in &desired.routes {
        if lost_vnis.contains(&key.0) || actual.routes.get(key) != Some(r) {
            routes.push(Action::CreateRoute(*r));
        }
    }
    let neigh: Vec<Action> = desired
        .neighbor_nats
        .difference(&actual.neighbor_nats)
        .map(|n| Action::CreateNeighborNat(*n))
        .collect();

    let mut out = del_neigh;
    out.extend(del_routes);
    // Sub-object deletes: LB prefixes, alias prefixes, firewall rules, VIPs, NATs.
    del_sub.sort_by_key(|a| match a {
        Action::DeleteLbPrefix { .. } => 0,
        Action::DeleteAliasPrefix { .. } => 1,
        Action::DeleteFirewallRule { .. } => 2,
        Action::DeleteVip { .. } => 3,
        _ => 4,
    });
    out.extend(del_sub);
    out.extend(del_ifaces);
    out.extend(del_lbs);
    // Interfaces before load balancers (both were pushed in their own loops, in order).
    creates.sort_by_key(|a| !matches!(a, Action::CreateInterface(_)));
    out.extend(creates);
    out.extend(create_subs.into_iter().map(|(_, a)| a));
    out.extend(routes);
    out.extend(neigh);
    out.extend(tables);
    if actual.applied_generation != desired.generation {
        out.push(Action::SetAppliedGeneration {
            generation: desired.generation,
            force: actual.applied_generation > desired.generation,
        });
    }
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
