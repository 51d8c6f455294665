//! What the fleet state keeps about an interface beyond its addresses: where it runs and
//! the underlay addresses the coordinator chose for it, its VIP and its firewall rules.
//!
//! Underlay addresses of everything that lives on a node (an interface, its NAT, VIP and
//! load-balancer prefixes, a load balancer's entry point) are chosen here, not by the
//! node, so that every node can be told where every other node's objects are before they
//! exist and a restarted node gets the same addresses back. They follow dpservice's
//! "externally generated" layout (`preferred_underlay_route`): the node's /64 prefix,
//! byte 10 = [`EXTERNAL_FLAG`], and a fleet-wide counter in the last four bytes, so no
//! two objects share an address even when two nodes share a /64.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{ApplyError, Cidr};

/// Byte 10 of an underlay address chosen by the coordinator (dpservice's
/// `DP_UNDERLAY_FLAG_EXTERNALLY_GENERATED`); nodes never generate it themselves.
pub const EXTERNAL_FLAG: u8 = 0x80;

/// The underlay address number `counter` inside the /64 of `node_underlay`.
pub fn underlay_address(node_underlay: Ipv6Addr, counter: u32) -> Ipv6Addr {
    let mut b = node_underlay.octets();
    b[8] = 0;
    b[9] = 0;
    b[10] = EXTERNAL_FLAG;
    b[11] = 0;
    b[12..].copy_from_slice(&counter.to_be_bytes());
    Ipv6Addr::from(b)
}

/// What a client asks for when creating an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSpec {
    /// The interface's name, unique in the fleet.
    pub id: String,
    /// Its virtual network.
    pub vni: u32,
    /// The node to create it on; `None` lets the coordinator place it.
    pub node: Option<String>,
    /// The node's port (DPDK device name) to attach; `None` takes the node's first free
    /// one among those it publishes.
    pub device: Option<String>,
    /// Its overlay IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Its overlay IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
}

/// A virtual IP (1:1 NAT) of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    /// The public address.
    pub ip: Ipv4Addr,
    /// The underlay address that attracts its traffic, on the interface's node.
    pub underlay: Ipv6Addr,
}

/// A virtual machine's (or host's) interface as placed in the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The interface's name, unique in the fleet.
    pub id: String,
    /// Its virtual network.
    pub vni: u32,
    /// The node hosting it.
    pub node: String,
    /// The node's port it is attached to.
    pub device: String,
    /// Its overlay IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Its overlay IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// The underlay address that attracts its traffic.
    pub underlay: Ipv6Addr,
    /// Its VIP.
    pub vip: Option<Vip>,
    /// The underlay address of its NAT on its node, while it has a NAT block.
    pub nat_underlay: Option<Ipv6Addr>,
    /// Its firewall rules, by rule id.
    pub firewall_rules: BTreeMap<String, FirewallRule>,
}

/// The direction of traffic a firewall rule applies to, seen from the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Traffic to the interface.
    Ingress,
    /// Traffic from the interface.
    Egress,
}

/// What a firewall rule does with matching traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirewallAction {
    /// Let it pass.
    Accept,
    /// Drop it.
    Drop,
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// The first port.
    pub lower: u16,
    /// The last port.
    pub upper: u16,
}

/// The protocol part of a firewall rule; `None` port ranges and ICMP fields match all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "snake_case")]
pub enum ProtocolFilter {
    /// TCP with optional source and destination port ranges.
    Tcp {
        /// Source ports.
        src_ports: Option<PortRange>,
        /// Destination ports.
        dst_ports: Option<PortRange>,
    },
    /// UDP with optional source and destination port ranges.
    Udp {
        /// Source ports.
        src_ports: Option<PortRange>,
        /// Destination ports.
        dst_ports: Option<PortRange>,
    },
    /// ICMP with optional type and code.
    Icmp {
        /// The ICMP type.
        icmp_type: Option<u8>,
        /// The ICMP code.
        icmp_code: Option<u8>,
    },
}

/// A firewall rule of an interface, with dpservice's fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    /// The rule's id, unique per interface.
    pub id: String,
    /// Ingress or egress.
    pub direction: Direction,
    /// Accept or drop.
    pub action: FirewallAction,
    /// Lower values are evaluated first.
    pub priority: u32,
    /// The source prefix.
    pub source: Cidr,
    /// The destination prefix.
    pub destination: Cidr,
    /// The protocol filter; `None` matches every protocol.
    pub protocol: Option<ProtocolFilter>,
}

impl FirewallRule {
    /// Checks what the nodes check: a name, prefixes without host bits, ordered port
    /// ranges, and only ACCEPT rules (dpservice-compatible nodes refuse DROP rules).
    pub fn validate(&self) -> Result<(), ApplyError> {
        if self.id.is_empty() {
            return Err(ApplyError::InvalidArgument("a firewall rule needs an id".into()));
        }
        Cidr::new(self.source.addr, self.source.len)?;
        Cidr::new(self.destination.addr, self.destination.len)?;
        if self.action == FirewallAction::Drop {
            return Err(ApplyError::InvalidArgument(format!(
                "firewall rule {}: DROP rules are not supported by the nodes' firewall (only ACCEPT)",
                self.id
            )));
        }
        let ranges = match self.protocol {
            Some(
                ProtocolFilter::Tcp { src_ports, dst_ports } | ProtocolFilter::Udp { src_ports, dst_ports },
            ) => [src_ports, dst_ports],
            _ => [None, None],
        };
        for r in ranges.into_iter().flatten() {
            if r.lower > r.upper || r.lower == 0 {
                return Err(ApplyError::InvalidArgument(format!(
                    "firewall rule {}: bad port range {}-{}",
                    self.id, r.lower, r.upper
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}
