//! What cluster commands print. Same conventions as the node commands' views
//! ([`crate::output`]): snake_case JSON field names that scripts may rely on, `-` for an
//! empty cell; writes print the object with a leading `result` and the state's
//! `generation` after the change.

use serde::Serialize;

use crate::output::{LbPortView, Record};

/// How a field shows in a table cell.
pub trait Cell {
    /// The cell's text (empty shows as `-`).
    fn cell(&self) -> String;
}

impl Cell for String {
    fn cell(&self) -> String {
        self.clone()
    }
}

impl Cell for &'static str {
    fn cell(&self) -> String {
        (*self).to_string()
    }
}

macro_rules! display_cell {
    ($($t:ty),*) => {$(
        impl Cell for $t {
            fn cell(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
display_cell!(u32, u64, bool);

impl<T: Cell> Cell for Option<T> {
    fn cell(&self) -> String {
        self.as_ref().map(Cell::cell).unwrap_or_default()
    }
}

impl Cell for Vec<String> {
    fn cell(&self) -> String {
        self.join(",")
    }
}

impl Cell for Vec<LbPortView> {
    fn cell(&self) -> String {
        self.iter().map(|p| format!("{}/{}", p.protocol, p.port)).collect::<Vec<_>>().join(",")
    }
}

/// Implements [`Record`] with one column per listed field, named as the field.
macro_rules! record {
    ($t:ident { $($f:ident),* $(,)? }) => {
        impl Record for $t {
            fn headers() -> Vec<&'static str> {
                vec![$(stringify!($f)),*]
            }
            fn cells(&self) -> Vec<String> {
                vec![$(Cell::cell(&self.$f)),*]
            }
        }
    };
}

/// A write's result: the object, what happened to it, and the generation after.
#[derive(Debug, Serialize)]
pub struct Written<T> {
    /// `created`, `deleted`, `added`, `removed`, `set`, `attached`, `detached`, ...
    pub result: &'static str,
    /// The object.
    #[serde(flatten)]
    pub object: T,
    /// The state's generation after the change.
    pub generation: u64,
}

impl<T: Record> Record for Written<T> {
    fn headers() -> Vec<&'static str> {
        let mut h = vec!["result"];
        h.extend(T::headers());
        h.push("generation");
        h
    }
    fn cells(&self) -> Vec<String> {
        let mut c = vec![self.result.to_string()];
        c.extend(self.object.cells());
        c.push(self.generation.to_string());
        c
    }
}

/// The cluster's status (shown as `FIELD VALUE` lines).
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// The member that answered (the leader, unless `--stale`).
    pub member_id: u64,
    /// The leader.
    pub leader_id: Option<u64>,
    /// The leader's endpoint.
    pub leader_addr: String,
    /// The Raft term.
    pub term: u64,
    /// The commit index confirmed by the leader (absent with `--stale`).
    pub commit_index: Option<u64>,
    /// The last applied log index.
    pub applied_index: Option<u64>,
    /// The last log index.
    pub last_log_index: Option<u64>,
    /// The fleet state's generation.
    pub generation: u64,
    /// Voting members.
    pub voters: u32,
    /// Learners.
    pub learners: u32,
    /// Nodes joining.
    pub nodes_joining: u32,
    /// Nodes active.
    pub nodes_active: u32,
    /// Nodes draining.
    pub nodes_draining: u32,
    /// Nodes down.
    pub nodes_down: u32,
    /// Virtual networks.
    pub vnis: u32,
    /// Interfaces.
    pub interfaces: u32,
    /// Routes.
    pub routes: u32,
    /// NAT gateways.
    pub nat_gateways: u32,
    /// Load balancers.
    pub load_balancers: u32,
}
record!(StatusView {
    member_id,
    leader_id,
    leader_addr,
    term,
    commit_index,
    applied_index,
    last_log_index,
    generation,
    voters,
    learners,
    nodes_joining,
    nodes_active,
    nodes_draining,
    nodes_down,
    vnis,
    interfaces,
    routes,
    nat_gateways,
    load_balancers,
});

/// A coordinator member.
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// Raft id.
    pub id: u64,
    /// Endpoint.
    pub addr: String,
    /// `voter` or `learner`.
    pub role: &'static str,
    /// Whether it leads.
    pub leader: bool,
    /// The last log index the leader knows it has.
    pub matched_index: Option<u64>,
}
record!(MemberView { id, addr, role, leader, matched_index });

/// The membership after a change.
#[derive(Debug, Serialize)]
pub struct MembershipView {
    /// `added` or `removed`.
    pub result: &'static str,
    /// The member changed.
    pub id: u64,
    /// The membership log entry written (absent: nothing changed).
    pub log_index: Option<u64>,
    /// The fleet state's generation.
    pub generation: u64,
    /// All members now.
    pub members: Vec<MemberView>,
}

/// A fleet node.
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// Node name.
    pub id: String,
    /// `joining`, `active`, `draining` or `down`.
    pub state: String,
    /// Underlay address.
    pub underlay: String,
    /// Node API endpoint.
    pub api_endpoint: String,
    /// Ports it offers.
    pub devices: Vec<String>,
    /// Interfaces it hosts.
    pub interfaces: u32,
    /// Generation at which it (re-)entered joining.
    pub joined_generation: u64,
    /// Generation it last reported applied (gossip; 0 unknown).
    pub applied_generation: u64,
}
record!(NodeView {
    id,
    state,
    underlay,
    api_endpoint,
    devices,
    interfaces,
    joined_generation,
    applied_generation
});

/// Names a node.
#[derive(Debug, Serialize)]
pub struct NodeKey {
    /// Node name.
    pub id: String,
}
record!(NodeKey { id });

/// A virtual network.
#[derive(Debug, Serialize)]
pub struct VniInfo {
    /// The VNI.
    pub vni: u32,
    /// Its interfaces.
    pub interfaces: u32,
    /// Its routes.
    pub routes: u32,
}
record!(VniInfo { vni, interfaces, routes });

/// Names a virtual network.
#[derive(Debug, Serialize)]
pub struct VniId {
    /// The VNI.
    pub vni: u32,
}
record!(VniId { vni });

/// An interface as placed in the fleet.
#[derive(Debug, Serialize)]
pub struct IfaceView {
    /// Interface id.
    pub id: String,
    /// VNI.
    pub vni: u32,
    /// Hosting node.
    pub node: String,
    /// The node's port.
    pub device: String,
    /// Overlay IPv4.
    pub ipv4: String,
    /// Overlay IPv6.
    pub ipv6: String,
    /// Underlay address.
    pub underlay: String,
    /// Its VIP.
    pub vip: String,
    /// The NAT gateway it is attached to.
    pub nat_gateway: String,
    /// Its NAT block: public address.
    pub nat_ip: String,
    /// First port of its NAT block.
    pub nat_port_min: Option<u32>,
    /// End of its NAT block (exclusive).
    pub nat_port_max: Option<u32>,
    /// Number of firewall rules.
    pub firewall_rules: u32,
}
record!(IfaceView {
    id,
    vni,
    node,
    device,
    ipv4,
    ipv6,
    underlay,
    vip,
    nat_gateway,
    nat_ip,
    nat_port_min,
    nat_port_max,
    firewall_rules,
});

/// An interface's VIP.
#[derive(Debug, Serialize)]
pub struct VipInfo {
    /// Interface id.
    pub interface_id: String,
    /// Public address.
    pub ip: String,
    /// Underlay address on the interface's node.
    pub underlay: String,
}
record!(VipInfo { interface_id, ip, underlay });

/// A NAT gateway with its usage.
#[derive(Debug, Serialize)]
pub struct GatewayView {
    /// Gateway id.
    pub id: String,
    /// VNI.
    pub vni: u32,
    /// Public addresses.
    pub public_ips: Vec<String>,
    /// First port of the pool.
    pub port_min: u32,
    /// End of the pool (exclusive).
    pub port_max: u32,
    /// Ports per interface.
    pub block_size: u32,
    /// Blocks in use.
    pub blocks_used: u64,
    /// Blocks in all.
    pub blocks_total: u64,
}
record!(GatewayView { id, vni, public_ips, port_min, port_max, block_size, blocks_used, blocks_total });

/// Names a NAT gateway.
#[derive(Debug, Serialize)]
pub struct GatewayKey {
    /// Gateway id.
    pub id: String,
}
record!(GatewayKey { id });

/// A port block given to an interface.
#[derive(Debug, Serialize)]
pub struct AllocationView {
    /// Interface id.
    pub interface_id: String,
    /// Public address.
    pub ip: String,
    /// First port.
    pub port_min: u32,
    /// End (exclusive).
    pub port_max: u32,
    /// The interface's node.
    pub node: String,
    /// Underlay address of the interface's NAT.
    pub underlay: String,
}
record!(AllocationView { interface_id, ip, port_min, port_max, node, underlay });

/// A gateway with its allocations (JSON of `nat get`).
#[derive(Debug, Serialize)]
pub struct GatewayDetail<'a> {
    /// The gateway.
    #[serde(flatten)]
    pub gateway: &'a GatewayView,
    /// Its allocations.
    pub allocations: &'a [AllocationView],
}

/// An interface's attachment to a gateway.
#[derive(Debug, Serialize)]
pub struct AttachView {
    /// Gateway id.
    pub gateway: String,
    /// Interface id.
    pub interface_id: String,
    /// Public address (empty after a detach).
    pub ip: String,
    /// First port.
    pub port_min: Option<u32>,
    /// End (exclusive).
    pub port_max: Option<u32>,
    /// Underlay address of the interface's NAT.
    pub underlay: String,
}
record!(AttachView { gateway, interface_id, ip, port_min, port_max, underlay });

/// A load balancer.
#[derive(Debug, Serialize)]
pub struct LbInfo {
    /// Load balancer id.
    pub id: String,
    /// VNI.
    pub vni: u32,
    /// Virtual IP.
    pub vip: String,
    /// Ports.
    pub ports: Vec<LbPortView>,
    /// Number of targets.
    pub targets: u32,
    /// Maglev table size.
    pub table_size: u32,
    /// Its epoch.
    pub epoch: u64,
    /// The committed table's digest, hex (empty without targets).
    pub digest: String,
}
record!(LbInfo { id, vni, vip, ports, targets, table_size, epoch, digest });

/// A target of a load balancer.
#[derive(Debug, Serialize)]
pub struct TargetView {
    /// Underlay address.
    pub underlay: String,
    /// Weight.
    pub weight: u32,
    /// The interface, when it is one.
    pub interface_id: String,
}
record!(TargetView { underlay, weight, interface_id });

/// A load balancer's entry point on a node.
#[derive(Debug, Serialize)]
pub struct EntryView {
    /// Node name.
    pub node: String,
    /// Underlay address.
    pub underlay: String,
}
record!(EntryView { node, underlay });

/// A load balancer in full (JSON of `lb get`).
#[derive(Debug, Serialize)]
pub struct LbDetail<'a> {
    /// The summary.
    #[serde(flatten)]
    pub lb: &'a LbInfo,
    /// The Maglev seed.
    pub seed: u64,
    /// Whether the table size was chosen by the client.
    pub table_size_fixed: bool,
    /// Targets in canonical order.
    pub target_list: &'a [TargetView],
    /// Entry point on every node.
    pub node_underlays: &'a [EntryView],
}

/// A load balancer after a write.
#[derive(Debug, Serialize)]
pub struct LbChange {
    /// Load balancer id.
    pub id: String,
    /// The target added or removed.
    pub target: String,
    /// Epoch after the change.
    pub epoch: u64,
    /// Table size (0 without targets).
    pub table_size: u32,
    /// Digest, hex (empty without targets).
    pub digest: String,
}
record!(LbChange { id, target, epoch, table_size, digest });

/// A digest as 16 hex digits.
pub fn digest(d: Option<u64>) -> String {
    d.map(|d| format!("{d:016x}")).unwrap_or_default()
}
