//! The graph: the stages a packet can visit, why it can be dropped, and the runner.
//!
//! ```text
//!   VF rx ─ classify ─┬─ arp ──────────────────────────────┐ (reply on the rx port)
//!                     ├─ nd (RS/NS, IPv6 overlay only) ────┤
//!                     ├─ dhcp / dhcpv6 ────────────────────┤
//!                     ├─ route4 / route6 (per-VNI LPM) ─┬─ vf tx (same node, same VNI)
//!                     │                                 └─ encap ─ pf tx (IP-in-IPv6)
//!   PF rx ─ classify ─┴─ decap (outer dst = an interface's underlay address) ─ vf tx
//!   every stage ─ drop(reason)
//! ```
//!
//! The runner ([`Pipeline::process_burst`]) gives every packet of a burst a [`Verdict`];
//! the caller (the worker) groups packets by output port and transmits them in bursts.

use crate::config::{PortId, Snapshot};
use crate::counters::Counters;

/// What happens to a packet at the end of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it out of this port.
    Tx(PortId),
    /// Free it, counting the reason.
    Drop(DropReason),
}

macro_rules! counted_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $v:ident => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            /// Every variant, in counter-index order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Stable snake_case label for metrics.
            pub fn label(self) -> &'static str {
                match self { $($name::$v => $label,)* }
            }
        }
    };
}

counted_enum! {
    /// Why a packet was dropped. Doubles as the drop counter index.
    pub enum DropReason {
        /// Shorter than the headers it claims to have, or lengths that disagree.
        Malformed => "malformed",
        /// An IPv4 header checksum that does not verify.
        BadChecksum => "bad_checksum",
        /// An ethertype the node does not handle.
        UnknownEthertype => "unknown_ethertype",
        /// Arrived on a port the node does not use.
        UnknownPort => "unknown_port",
        /// Arrived on a VF port that has no interface configured.
        NoInterface => "no_interface",
        /// ARP that is not a request for the gateway.
        ArpNotForUs => "arp_not_for_us",
        /// ICMPv6/ND that the node does not answer.
        NdNotForUs => "nd_not_for_us",
        /// A DHCP message the server ignores (wrong type, not a request).
        DhcpIgnored => "dhcp_ignored",
        /// A DHCPv6 message the server ignores.
        Dhcpv6Ignored => "dhcpv6_ignored",
        /// IPv6 from a VM while the IPv6 overlay is off.
        Ipv6Disabled => "ipv6_disabled",
        /// The VM sent from an address that is not its own.
        SpoofedSource => "spoofed_source",
        /// No route in the VNI.
        NoRoute => "no_route",
        /// TTL or hop limit would reach zero.
        TtlExpired => "ttl_expired",
        /// Tunnel traffic for an underlay address that no interface owns.
        UnknownUnderlay => "unknown_underlay",
        /// Tunnel traffic with an inner protocol other than IPv4 or IPv6.
        BadInnerProtocol => "bad_inner_protocol",
        /// Non-tunnel traffic on a PF port (the node is not an underlay host).
        NotTunnel => "not_tunnel",
        /// No headroom or tailroom left to build the packet.
        NoRoom => "no_room",
        /// Frame larger than the node forwards.
        TooBig => "too_big",
        /// The route points to a VF whose port is gone.
        PortDown => "port_down",
        /// The TX queue was full.
        TxFull => "tx_full",
    }
}

counted_enum! {
    /// The stages of the graph. Doubles as the per-stage counter index.
    pub enum Stage {
        /// First look at every packet.
        Classify => "classify",
        /// ARP responder.
        Arp => "arp",
        /// IPv6 neighbor discovery responder.
        Nd => "nd",
        /// DHCPv4 server.
        Dhcp => "dhcp",
        /// DHCPv6 server.
        Dhcpv6 => "dhcpv6",
        /// IPv4 overlay routing.
        Route4 => "route4",
        /// IPv6 overlay routing.
        Route6 => "route6",
        /// IP-in-IPv6 encapsulation towards the underlay.
        Encap => "encap",
        /// IP-in-IPv6 decapsulation from the underlay.
        Decap => "decap",
        /// Delivery to a VF.
        VfTx => "vf_tx",
        /// Delivery to a PF.
        PfTx => "pf_tx",
    }
}

/// What every stage sees besides the packet.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The configuration in force for this burst.
    pub snap: &'a Snapshot,
    /// The port the packet arrived on.
    pub in_port: PortId,
    /// Monotonic time in nanoseconds, from the caller.
    pub now_ns: u64,
}

/// One worker's pipeline: its counters and per-worker state.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// This worker's counters.
    pub counters: Counters,
}
