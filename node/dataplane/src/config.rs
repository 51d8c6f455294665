//! The configuration snapshot the pipeline reads.
//!
//! The control plane (node API) owns the desired state, compiles it into a
//! [`Snapshot`] off the fast path and publishes it with an atomic pointer swap. Workers
//! load the current snapshot once per burst and never see a half-applied change.
//! Everything here is plain data: validated by the API layer before it gets here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::tables::firewall::RuleSet;
use crate::tables::lb::LoadBalancer;
use crate::tables::lpm::{Lpm4, Lpm6};
use crate::tables::nat::{LocalNat, NeighborNat, NeighborNats};

/// A DPDK port id.
pub type PortId = u16;
/// An Ethernet MAC address.
pub type Mac = [u8; 6];
/// A virtual network identifier (24 bits used).
pub type Vni = u32;

/// What a port is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRole {
    /// Physical uplink number 0 or 1 (underlay, IPv6, tunnel traffic).
    Pf(u8),
    /// A virtual function: one VM's port.
    Vf,
}

/// A port known to the node.
#[derive(Clone, Debug)]
pub struct PortInfo {
    /// DPDK port id.
    pub id: PortId,
    /// The port's own MAC address (what the node answers ARP/ND with on this port).
    pub mac: Mac,
    /// PF or VF.
    pub role: PortRole,
    /// DPDK device name (e.g. `net_tap2`), as used by CreateInterface's `device_name`.
    pub device_name: String,
    /// Kernel interface name, when the port has one (TAP ports), e.g. `dtapvf_0`.
    pub if_name: String,
    /// PF only: the MAC of the underlay router, the Ethernet destination of every
    /// encapsulated packet sent on this port. dpservice reads it at start from the
    /// kernel's IPv6 neighbour table (an entry flagged as router on the PF's interface).
    /// `None`: learned from tunnel traffic received on the port (broadcast until then).
    /// Ignored for VFs, whose VM MAC is learned from the VM's own frames.
    pub neigh_mac: Option<Mac>,
}

/// Node-wide settings from the command line.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's underlay address (`--ipv6`); interface underlay addresses derive from it.
    pub underlay_ipv6: Ipv6Addr,
    /// MTU announced by DHCP (`--dhcp-mtu`).
    pub dhcp_mtu: u16,
    /// DNS servers announced by DHCPv4 (`--dhcp-dns`).
    pub dhcp_dns: Vec<Ipv4Addr>,
    /// DNS servers announced by DHCPv6 (`--dhcpv6-dns`).
    pub dhcpv6_dns: Vec<Ipv6Addr>,
    /// Whether VMs get IPv6 overlay service (ND, DHCPv6, IPv6 routing).
    pub ipv6_overlay: bool,
    /// The PF port ids, in order (pf0, then pf1 if any).
    pub pf_ports: Vec<PortId>,
    /// `--wcmp`: share of encapsulated IPv4 flows sent on pf0 when there are two PFs, in
    /// percent (rounded to tenths, as dpservice does); the rest go to pf1. 100 (the
    /// default) sends everything on pf0. IPv6 overlay traffic always leaves on pf0.
    pub wcmp_percent: u8,
}

/// PXE boot settings of an interface, as given to CreateInterface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PxeConfig {
    /// Next server (an address, as text, as the API carries it).
    pub next_server: String,
    /// Boot file name.
    pub boot_filename: String,
}

/// A VM interface attached to a VF port.
#[derive(Clone, Debug)]
pub struct Interface {
    /// Interface id as given by the API.
    pub id: String,
    /// The VF port the VM is behind.
    pub port: PortId,
    /// MAC of that port (the gateway's MAC as the VM sees it).
    pub port_mac: Mac,
    /// The virtual network.
    pub vni: Vni,
    /// The VM's IPv4 address.
    pub ipv4: Ipv4Addr,
    /// The VM's IPv6 address, if it has one.
    pub ipv6: Option<Ipv6Addr>,
    /// This interface's underlay address: tunnel traffic for it arrives here.
    pub underlay_ipv6: Ipv6Addr,
    /// PXE settings for DHCP.
    pub pxe: Option<PxeConfig>,
    /// The interface's virtual IP (1:1 NAT), if it has one.
    pub vip: Option<Ipv4Addr>,
    /// The interface's NAT gateway configuration, if it has one.
    pub nat: Option<LocalNat>,
}

/// What an underlay address of the node stands for (dpservice's VNF table): where
/// decapsulated tunnel traffic for it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnderlayTarget {
    /// An interface's own address: delivered to its VF.
    Interface(PortId),
    /// An alias prefix of the interface on this VF: delivered to it.
    AliasPrefix(PortId),
    /// A load-balancer prefix of the interface on this VF: delivered to it.
    LbPrefix(PortId),
    /// The VIP of the interface on this VF: destination rewritten to the VM.
    Vip(PortId),
    /// The NAT of the interface on this VF: return traffic of its translated flows,
    /// relayed neighbour-NAT traffic and ICMP echo to the NAT IP, in `vni`.
    Nat {
        /// The interface's VF port.
        port: PortId,
        /// The interface's VNI.
        vni: Vni,
    },
    /// A load balancer in `vni`: its traffic goes to a target chosen per flow (see
    /// [`Snapshot::lbs`]).
    Lb {
        /// The load balancer's VNI.
        vni: Vni,
    },
}

impl UnderlayTarget {
    /// The VF port the address belongs to (`None` for a load balancer, which belongs to
    /// no interface).
    pub fn port(self) -> Option<PortId> {
        match self {
            UnderlayTarget::Interface(p)
            | UnderlayTarget::AliasPrefix(p)
            | UnderlayTarget::LbPrefix(p)
            | UnderlayTarget::Vip(p)
            | UnderlayTarget::Nat { port: p, .. } => Some(p),
            UnderlayTarget::Lb { .. } => None,
        }
    }
}

/// What a public IPv4 address of a VNI is on this node (dpservice's DNAT table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnatTarget {
    /// The VIP of the interface on this VF port.
    Vip(PortId),
    /// A NAT IP (of a local interface or a neighbour entry): only traffic of known flows,
    /// neighbour-owned ports and ICMP echo are accepted.
    Nat,
}

/// A set of flows the workers must remove from their flow tables when they first see
/// a snapshot (the control plane deleted what the flows used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Every flow of the interface on `port` (it was deleted), and every flow in `vni`
    /// addressed to `ipv4` or `ipv6`.
    Interface {
        /// The VF port.
        port: PortId,
        /// The interface's VNI.
        vni: Vni,
        /// The interface's IPv4 address.
        ipv4: Ipv4Addr,
        /// The interface's IPv6 address, if it had one.
        ipv6: Option<std::net::Ipv6Addr>,
    },
    /// The VIP flows of the interface on this port.
    Vip(PortId),
    /// The NAT flows of the interface on this port (their ports are released).
    Nat(PortId),
    /// Flows relayed to, or addressed to ports of, this neighbour NAT entry.
    Neighbor(NeighborNat),
    /// Flows the firewall denied, after a rule change: their next packet creates the flow
    /// anew and is judged by the new rules. (Accepted flows are kept: a stateful firewall
    /// lets established connections finish.)
    Denied,
    /// The flows of the interface on `port` in `vni` to or from an address of its
    /// prefix `addr/len` (an alias or load-balancer prefix, now deleted): they were
    /// delivered to the VM because of the prefix, which may lead elsewhere from now on.
    Prefix {
        /// The interface's VF port.
        port: PortId,
        /// The interface's VNI.
        vni: Vni,
        /// The prefix's address.
        addr: std::net::IpAddr,
        /// The prefix's length.
        len: u8,
    },
}

/// Where a route sends traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// To a VM on this node (its VF port).
    Local {
        /// The VF port.
        port: PortId,
    },
    /// Through the underlay: encapsulate towards `underlay` with the target VNI.
    Remote {
        /// The next hop's underlay address.
        underlay: Ipv6Addr,
        /// The VNI on the far side.
        vni: Vni,
    },
}

/// Per-VNI routing tables.
#[derive(Clone, Debug, Default)]
pub struct VniTables {
    /// IPv4 routes (including /32 host routes for local interfaces and alias prefixes).
    pub routes4: Lpm4<RouteTarget>,
    /// IPv6 routes (including /128 host routes for local interfaces).
    pub routes6: Lpm6<RouteTarget>,
}

/// One immutable version of the node's configuration.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Increases by one with every published change.
    pub generation: u64,
    /// Node-wide settings.
    pub node: NodeConfig,
    /// Ports, indexed by port id (`None` for ids the node does not use).
    pub ports: Vec<Option<PortInfo>>,
    /// Interfaces, indexed by the VF port id they sit on.
    pub iface_by_port: Vec<Option<Interface>>,
    /// Firewall rules of the interfaces, indexed by the VF port id they sit on (`Some`
    /// exactly where `iface_by_port` is). Shared between snapshots while unchanged.
    pub firewall_by_port: Vec<Option<Arc<RuleSet>>>,
    /// Underlay address → what it stands for (tunnel decapsulation): interfaces, their
    /// alias and load-balancer prefixes, VIPs and NATs.
    pub underlay_targets: FxHashMap<Ipv6Addr, UnderlayTarget>,
    /// (VNI, public IPv4) → VIP or NAT IP.
    pub dnat: FxHashMap<(Vni, Ipv4Addr), DnatTarget>,
    /// Port ranges of NAT IPs owned by other nodes.
    pub neighbor_nats: Arc<NeighborNats>,
    /// The most recent flow flushes, oldest first, each with its sequence number
    /// (increasing by one per flush, from 1). A worker applies those above the last
    /// number it applied.
    pub flushes: Arc<[(u64, Flush)]>,
    /// Routing tables per VNI.
    pub vnis: FxHashMap<Vni, VniTables>,
    /// Load balancers by (VNI, load-balanced IP).
    pub lbs: FxHashMap<(Vni, IpAddr), Arc<LoadBalancer>>,
}

impl Snapshot {
    /// An empty configuration for a node with these ports.
    pub fn new(node: NodeConfig, ports: Vec<PortInfo>) -> Self {
        let len = ports.iter().map(|p| usize::from(p.id) + 1).max().unwrap_or(0);
        let mut by_id = vec![None; len];
        for p in ports {
            let id = usize::from(p.id);
            by_id[id] = Some(p);
        }
        Snapshot {
            generation: 0,
            node,
            ports: by_id,
            iface_by_port: vec![None; len],
            firewall_by_port: vec![None; len],
            underlay_targets: FxHashMap::default(),
            dnat: FxHashMap::default(),
            neighbor_nats: Arc::default(),
            flushes: Arc::new([]),
            vnis: FxHashMap::default(),
            lbs: FxHashMap::default(),
        }
    }

    /// The port with this id.
    pub fn port(&self, id: PortId) -> Option<&PortInfo> {
        self.ports.get(usize::from(id)).and_then(Option::as_ref)
    }

    /// The interface on this VF port.
    pub fn iface(&self, port: PortId) -> Option<&Interface> {
        self.iface_by_port.get(usize::from(port)).and_then(Option::as_ref)
    }

    /// The VF port an underlay address belongs to, whatever it stands for.
    pub fn underlay_port(&self, addr: &Ipv6Addr) -> Option<PortId> {
        self.underlay_targets.get(addr).and_then(|t| t.port())
    }

    /// The firewall rules of the interface on this VF port (`None`: no interface there).
    pub fn firewall(&self, port: PortId) -> Option<&RuleSet> {
        self.firewall_by_port.get(usize::from(port)).and_then(Option::as_deref)
    }
}
