//! Connection tracking and the stateful services on it: firewall verdicts, VIP (1:1
//! NAT), the NAT gateway and neighbour-NAT relay.
//!
//! Every IPv4 and IPv6 TCP, UDP, ICMP and ICMPv6 packet from a VM, and every
//! decapsulated tunnel packet, passes here (DHCP, DHCPv6, ARP and neighbour discovery
//! do not: classification sends them to their responders first, as dpservice does).
//!
//! A packet's flow key is its VNI (the interface's, or the one the tunnel's underlay
//! address stands for) and 5-tuple; ICMP echo uses the identifier as a port and the
//! type as the direction. An ICMP destination-unreachable error with code 2, 3 or 4 is
//! keyed by the TCP or UDP packet it quotes and so belongs to that flow; every other
//! ICMPv4 message is dropped, as dpservice's connection tracker does.
//!
//! The first packet of a flow decides everything once, in dpservice's order:
//! 1. DNAT: a VM's packet to the VIP of a VM of its VNI, or tunnel traffic to a VIP's
//!    underlay address, gets the VM's address as destination.
//! 2. Route: the route of the (translated) destination in the VNI. Only a flow that
//!    leaves by the default route (prefix length 0) is source-translated: with the
//!    interface's NAT IP and a port from [`NatMappings`] if it has NAT, else with its
//!    VIP if it has one (NAT wins, as in dpservice). Which route matched is told from the
//!    target: a more specific route with exactly the default route's target counts as
//!    the default route.
//! 3. Firewall: the sending VM's egress rules and the receiving VM's ingress rules
//!    (addresses after DNAT, source before SNAT). The verdict holds for both
//!    directions, so replies of an accepted flow pass. dpservice computes it but does
//!    not enforce it; [`Flows::enforce_firewall`] (`--enforce-firewall`) drops denied
//!    flows.
//! 4. The flow is inserted with the key of each direction (the reply key is the
//!    reverse of the translated packet) and each direction's [`FlowAction`]: the
//!    rewrite to apply and, for tunnel traffic, where it goes.
//!
//! Every later packet of either direction is one flow-table lookup and its cached
//! rewrite (addresses, ports or ICMP identifiers, or the quoted header of an ICMP error,
//! with incremental checksum updates, never zeroed). A VM's packets then go on to the
//! routing stage (the route is looked up per packet, so route changes apply at once);
//! tunnel packets go straight to their VF or are relayed.
//!
//! Tunnel traffic to a NAT underlay address that matches no flow: an ICMP echo request
//! to the NAT IP is answered by the node (re-encapsulated to the sender, out of the PF
//! it came in on); a port owned by a neighbour NAT entry is relayed unchanged to the
//! neighbour's underlay address out of the same PF (and remembered as a flow); any
//! other port is dropped.
//!
//! NAT64: a VM of an interface with NAT sending IPv6 to `64:ff9b::/96` by the default
//! IPv6 route gets a NAT port as for IPv4 NAT (the mapping's original source is the
//! VM's IPv6 address) and its packets leave as IPv4 from the NAT IP ([`super::nat64`]),
//! encapsulated towards the IPv6 route's next hop out of pf0; the flow's reply key is
//! the IPv4 tuple, and replies are translated back to IPv6 for the VM.
//!
//! Every packet from a VM also gets dpservice's flow hash (the jhash of dpservice's
//! conntrack key of the packet as it arrived, [`DpsFlowKey`]), which picks its PF under
//! `--wcmp` as dpservice's does.
//!
//! Tunnel traffic to a load balancer's underlay address: the first packet of a flow gets
//! its target from the load-balancer stage ([`super::lb`]), which the flow then keeps.
//!
//! Flow keys carry a zone (dpservice keys its flows by a VNF type for the same reason):
//! load-balancer traffic lives in [`ZONE_LB`], everything else in [`ZONE_DEFAULT`], so
//! that an LB flow and a NAT flow with the same 5-tuple in one VNI stay two flows. A VM
//! behind NAT talking to a load-balanced IP whose target is on this node is such a
//! case: its NAT flow's reply (VIP:port → NAT IP:port) and the LB flow's reply (the
//! target VM answering from the VIP to the NAT IP and port) are the same tuple; the
//! first comes back from the router to the NAT underlay, the second leaves the target's
//! VF. A packet's zone is known before its lookup, from where it comes, alike in both
//! directions:
//! - tunnel traffic for a load balancer's or a load-balancer prefix's underlay address
//!   is in the LB zone;
//! - a VM's packet is in the LB zone when its source is none of the VM's own addresses
//!   nor in one of its alias prefixes (a VM answers load-balanced traffic from the
//!   load-balanced IP, which it owns through a load-balancer prefix);
//! - the rest is in the default zone.
//!
//! A flow's reply key gets the zone its replies will arrive with: the default zone for
//! source-translated flows (replies come to a NAT or VIP underlay address), the
//! receiving VM's zone for its answer from the (translated) destination address.
//! Unlike dpservice, which gives NAT traffic a zone of its own, NAT and VIP flows share
//! the default zone with plain traffic, so that replies of a VM's W-E flows and of
//! inbound VIP connections to a VM that also has NAT find their flow. A VM's packets
//! from a load-balanced IP are never source-translated (dpservice translates only the
//! VM's own address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::lb::{Choice as LbChoice, Decision as LbDecision};
use crate::buf::PacketBuf;
use crate::config::{DnatTarget, Interface, PortId, RouteTarget, Snapshot, UnderlayTarget, Vni, VniTables};
use crate::graph::{Ctx, DropReason, Next, Underlay};
use crate::tables::addrpool::{AddrId, AddrPool};
use crate::tables::conntrack::{
    Conntrack, Dir, Flow, FlowId, FlowKey, InsertError, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use crate::tables::firewall::{self, forward_verdict, L4};
use crate::tables::jhash::{DpsFlowKey, VnfType};
use crate::tables::lb::RoundRobin;
use crate::tables::nat::{
    rewrite_icmp_error_ipv4, rewrite_ipv4, AllocError, NatKey, NatMappings, NatProto, Original, Side,
};
use crate::wire::checksum::{checksum, update16};
use crate::wire::{ethernet, ipv4, ipv6};

/// The zone of flows of load-balancer traffic (see the module docs).
pub const ZONE_LB: u8 = 1;
/// The zone of every other flow.
pub const ZONE_DEFAULT: u8 = 0;

/// The zone of a packet the VM on `port` sends from `src` (see the module docs): the
/// default zone for its own addresses and alias prefixes, else the LB zone.
fn vm_zone(snap: &Snapshot, port: PortId, src: &IpAddr) -> u8 {
    let Some(i) = snap.iface(port) else { return ZONE_DEFAULT };
    let own = match *src {
        IpAddr::V4(a) => a == i.ipv4,
        IpAddr::V6(a) => Some(a) == i.ipv6,
    };
    if own {
        return ZONE_DEFAULT;
    }
    let local = RouteTarget::Local { port };
    let alias = snap.vnis.get(&i.vni).is_some_and(|t| match src {
        IpAddr::V4(a) => t.routes4.lookup(*a) == Some(&local),
        IpAddr::V6(a) => t.routes6.lookup(*a) == Some(&local),
    });
    if alias {
        ZONE_DEFAULT
    } else {
        ZONE_LB
    }
}

/// The zone of a packet entering the stage from `origin` with source `src`.
fn packet_zone(ctx: &Ctx<'_>, origin: Origin, src: &IpAddr) -> u8 {
    match origin {
        Origin::Vf => vm_zone(ctx.snap, ctx.in_port, src),
        Origin::Tunnel { target: UnderlayTarget::Lb { .. } | UnderlayTarget::LbPrefix(_), .. } => ZONE_LB,
        Origin::Tunnel { .. } => ZONE_DEFAULT,
    }
}

/// Where a packet entering the stage came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// From the VM on the input VF.
    Vf,
    /// Decapsulated tunnel traffic (from a PF) for this underlay address; the outer
    /// source (where answers of this node go back to) is in the packet's underlay slot
    /// (see [`crate::graph::Underlay`]).
    Tunnel {
        /// What the outer destination stands for.
        target: UnderlayTarget,
    },
}

/// The address (and port or ICMP identifier) rewrite of one direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rewrite {
    /// Nothing changes.
    #[default]
    None,
    /// The source becomes `ip` (and `port`, when given).
    Src {
        /// New source address.
        ip: Ipv4Addr,
        /// New source port or ICMP identifier.
        port: Option<u16>,
    },
    /// The destination becomes `ip` (and `port`, when given).
    Dst {
        /// New destination address.
        ip: Ipv4Addr,
        /// New destination port or ICMP identifier.
        port: Option<u16>,
    },
    /// NAT64, the VM's packets: IPv6 becomes IPv4 from `ip`, with source port or ICMP
    /// echo identifier `port`.
    Nat64 {
        /// The NAT IP.
        ip: Ipv4Addr,
        /// The NAT port.
        port: u16,
    },
    /// NAT64, the replies: IPv4 becomes IPv6 to the VM address of the flow's
    /// [`Out::Vf6`], with destination port or ICMP echo identifier `port`.
    Nat46 {
        /// The VM's port or identifier.
        port: u16,
    },
}

/// Where a tunnel packet of a flow goes (a VM's packets are always routed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Out {
    /// Routed (or, for tunnel traffic, delivered by its underlay address).
    #[default]
    Route,
    /// Delivered to this VF.
    Vf(PortId),
    /// Re-encapsulated unchanged towards this underlay address (interned in the
    /// worker's [`AddrPool`]), out of the input PF.
    Relay(AddrId),
    /// Translated to IPv6 for `vm` ([`Rewrite::Nat46`], the VM's address interned in the
    /// worker's [`AddrPool`]) and delivered to this VF.
    Vf6 {
        /// The VF.
        port: PortId,
        /// The VM's IPv6 address.
        vm: AddrId,
    },
}

/// What a flow is, for releasing its resources and for flushes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FlowKind {
    /// No translation.
    #[default]
    Plain,
    /// VIP translation (either way).
    Vip,
    /// NAT gateway translation: holds a NAT port.
    Nat,
    /// Relayed to a neighbour NAT.
    Neighbor,
}

/// The cached decision for one direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowAction {
    /// The rewrite to apply.
    pub rewrite: Rewrite,
    /// Where tunnel packets go.
    pub out: Out,
    /// The firewall denied the flow.
    pub denied: bool,
    /// What the flow is.
    pub kind: FlowKind,
    /// The VF port of the interface the flow belongs to.
    pub port: PortId,
}

impl FlowAction {
    /// The interned address this action refers to, if any.
    fn addr(&self) -> Option<AddrId> {
        match self.out {
            Out::Relay(id) | Out::Vf6 { vm: id, .. } => Some(id),
            Out::Route | Out::Vf(_) => None,
        }
    }
}

/// One worker's flow state: the flow table, the NAT port mappings and the addresses
/// flows refer to.
#[derive(Clone, Debug)]
pub struct Flows {
    /// The flow table.
    pub table: Conntrack<FlowAction>,
    /// NAT ports handed out, one slot per VF port id.
    pub nat: NatMappings,
    /// The full addresses of [`Out::Relay`] and [`Out::Vf6`]: a flow holds one
    /// reference to each distinct address its two actions name.
    pub addrs: AddrPool,
    /// Drop flows the firewall denies (`--enforce-firewall`).
    pub enforce_firewall: bool,
    /// This worker's round-robin positions of the load balancers.
    pub lb: RoundRobin,
}

/// Releases what a removed flow held (its NAT port and address references). For
/// `Conntrack`'s `on_remove`.
pub fn release(nat: &mut NatMappings, addrs: &mut AddrPool, flow: &Flow<FlowAction>) {
    release_parts(nat, addrs, &flow.actions, &flow.keys[1]);
}

/// Releases what a flow with these actions and reply key `k` holds.
fn release_parts(nat: &mut NatMappings, addrs: &mut AddrPool, actions: &[FlowAction; 2], k: &FlowKey) {
    let (a, b) = (actions[0].addr(), actions[1].addr());
    if let Some(id) = a {
        addrs.release(id);
    }
    if let Some(id) = b.filter(|&b| Some(b) != a) {
        addrs.release(id);
    }
    if actions[0].kind != FlowKind::Nat {
        return;
    }
    let (IpAddr::V4(remote_ip), IpAddr::V4(nat_ip)) = (k.src(), k.dst()) else { return };
    let Some(proto) = NatProto::from_ip_proto(k.proto()) else { return };
    let remote_port = if proto == NatProto::Icmp { 0 } else { k.src_port() };
    nat.release(&NatKey { nat_ip, nat_port: k.dst_port(), proto, remote_ip, remote_port });
}

/// A packet as the stage sees it.
#[derive(Clone, Copy, Debug)]
struct Parsed {
    /// The packet's key; for an ICMP error, the key of the packet it quotes.
    key: FlowKey,
    /// An ICMP error keyed by its quote.
    quoted: bool,
    /// TCP flags (0 for other protocols).
    tcp_flags: u8,
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
    /// ICMP echo request.
    echo_request: bool,
}

fn rd16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses the IP packet `ip` of VNI `vni` into `out` (written in place: a `Parsed`
/// returned by value was copied whole right after its fields were stored one by one,
/// a stall of failed store-to-load forwarding on every packet).
fn parse(ip: &[u8], vni: Vni, out: &mut Parsed) -> Result<(), DropReason> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => parse_v4(ip, vni, out),
        Some(6) => parse_v6(ip, vni, out),
        _ => Err(DropReason::Malformed),
    }
}

fn parse_v4(ip: &[u8], vni: Vni, out: &mut Parsed) -> Result<(), DropReason> {
    let p = ipv4::Packet::new_unverified(ip).ok_or(DropReason::Malformed)?;
    let (src, dst, proto) = (p.src(), p.dst(), p.protocol());
    let l4b = p.payload();
    let (mut key, mut quoted, mut tcp_flags, mut l4, mut echo_request) =
        (FlowKey::v4(vni, src, dst, proto, 0, 0), false, 0, L4::Other(proto), false);
    if p.frag_offset() == 0 {
        match proto {
            PROTO_TCP | PROTO_UDP => {
                let (sp, dp) = (rd16(l4b, 0), rd16(l4b, 2));
                let (Some(sp), Some(dp)) = (sp, dp) else { return Err(DropReason::Malformed) };
                key = FlowKey::v4(vni, src, dst, proto, sp, dp);
                if proto == PROTO_TCP {
                    tcp_flags = *l4b.get(13).ok_or(DropReason::Malformed)?;
                    l4 = L4::Tcp { src_port: sp, dst_port: dp };
                } else {
                    l4 = L4::Udp { src_port: sp, dst_port: dp };
                }
            }
            PROTO_ICMP => {
                let (Some(&t), Some(&c)) = (l4b.first(), l4b.get(1)) else {
                    return Err(DropReason::Malformed);
                };
                l4 = L4::Icmp { icmp_type: t, icmp_code: c };
                match (t, c) {
                    (0 | 8, _) => {
                        let ident = rd16(l4b, 4).ok_or(DropReason::Malformed)?;
                        key = FlowKey::v4(vni, src, dst, PROTO_ICMP, u16::from(t), ident);
                        echo_request = t == 8;
                    }
                    (3, 2..=4) => {
                        key = quoted_key(l4b.get(8..).unwrap_or(&[]), vni)?;
                        quoted = true;
                    }
                    _ => return Err(DropReason::UntrackedIcmp),
                }
            }
            _ => return Err(DropReason::UnsupportedProtocol),
        }
    }
    *out = Parsed { key, quoted, tcp_flags, src: src.into(), dst: dst.into(), l4, echo_request };
    Ok(())
}

/// The key of the TCP or UDP packet an ICMP error quotes (both ports non-zero, as
/// dpservice requires).
fn quoted_key(q: &[u8], vni: Vni) -> Result<FlowKey, DropReason> {
    let v = *q.first().ok_or(DropReason::UntrackedIcmp)?;
    let hl = usize::from(v & 0x0f) * 4;
    if v >> 4 != 4 || hl < 20 || q.len() < hl + 4 {
        return Err(DropReason::UntrackedIcmp);
    }
    let proto = q[9];
    let addr = |at: usize| Ipv4Addr::new(q[at], q[at + 1], q[at + 2], q[at + 3]);
    let (sp, dp) = (rd16(q, hl).unwrap_or(0), rd16(q, hl + 2).unwrap_or(0));
    if !matches!(proto, PROTO_TCP | PROTO_UDP) || sp == 0 || dp == 0 {
        return Err(DropReason::UntrackedIcmp);
    }
    Ok(FlowKey::v4(vni, addr(12), addr(16), proto, sp, dp))
}

fn parse_v6(ip: &[u8], vni: Vni, out: &mut Parsed) -> Result<(), DropReason> {
    let p = ipv6::Packet::new_checked(ip).ok_or(DropReason::Malformed)?;
    let (src, dst, nh) = (p.src(), p.dst(), p.next_header());
    let l4b = p.payload();
    let (key, tcp_flags, l4) = match nh {
        PROTO_TCP | PROTO_UDP => {
            let (Some(sp), Some(dp)) = (rd16(l4b, 0), rd16(l4b, 2)) else {
                return Err(DropReason::Malformed);
            };
            let key = FlowKey::v6(vni, src, dst, nh, sp, dp);
            if nh == PROTO_TCP {
                (key, *l4b.get(13).ok_or(DropReason::Malformed)?, L4::Tcp { src_port: sp, dst_port: dp })
            } else {
                (key, 0, L4::Udp { src_port: sp, dst_port: dp })
            }
        }
        PROTO_ICMPV6 => {
            let (Some(&t), Some(&c)) = (l4b.first(), l4b.get(1)) else {
                return Err(DropReason::Malformed);
            };
            let ident = rd16(l4b, 4).ok_or(DropReason::Malformed)?;
            let key = FlowKey::v6(vni, src, dst, PROTO_ICMPV6, u16::from(t), ident);
            (key, 0, L4::Icmp { icmp_type: t, icmp_code: c })
        }
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    *out =
        Parsed { key, quoted: false, tcp_flags, src: src.into(), dst: dst.into(), l4, echo_request: false };
    Ok(())
}

/// The key of a packet like `k` with new addresses and, when given, a new source port
/// (ICMP: identifier).
fn rekey(k: &FlowKey, src: IpAddr, dst: IpAddr, src_port: Option<u16>) -> FlowKey {
    let icmp = matches!(k.proto(), PROTO_ICMP | PROTO_ICMPV6);
    let (sp, dp) = match (icmp, src_port) {
        (true, Some(p)) => (k.src_port(), p),
        (false, Some(p)) => (p, k.dst_port()),
        (_, None) => (k.src_port(), k.dst_port()),
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => FlowKey::v4(k.vni(), s, d, k.proto(), sp, dp),
        (IpAddr::V6(s), IpAddr::V6(d)) => FlowKey::v6(k.vni(), s, d, k.proto(), sp, dp),
        _ => *k,
    }
}

/// The route of `dst` in the VNI and whether it is the default route (see the module
/// docs for how that is told).
fn route(tables: Option<&VniTables>, dst: IpAddr) -> Option<(RouteTarget, bool)> {
    let t = tables?;
    match dst {
        IpAddr::V4(a) => {
            let r = *t.routes4.lookup(a)?;
            Some((r, t.routes4.get_exact(Ipv4Addr::UNSPECIFIED, 0) == Some(&r)))
        }
        IpAddr::V6(a) => {
            let r = *t.routes6.lookup(a)?;
            Some((r, t.routes6.get_exact(Ipv6Addr::UNSPECIFIED, 0) == Some(&r)))
        }
    }
}

/// What a VM's ICMP error about no known flow gets. It passes unchanged, unless it
/// leaves through the default route from the VM's own address while the VM has a VIP or
/// a NAT, which translate such traffic: with a VIP it leaves from the VIP (quote
/// included, as an error of a VIP flow would); with a NAT, which has no port for it,
/// it is dropped (`None`). (dpservice makes a flow of the error and translates it as a
/// new connection: from the VIP, or from the NAT IP with a fresh port that nothing will
/// answer on.)
fn untracked_error_action(ctx: &Ctx<'_>, pkt: &Parsed) -> Option<FlowAction> {
    let Some(iface) = ctx.iface else { return Some(FlowAction::default()) };
    let outward = matches!(route(ctx.vni_tables, pkt.dst), Some((RouteTarget::Remote { .. }, true)));
    if !outward || pkt.src != IpAddr::V4(iface.ipv4) {
        return Some(FlowAction::default());
    }
    match (iface.nat, iface.vip) {
        (Some(_), _) => None,
        (None, Some(vip)) => {
            Some(FlowAction { rewrite: Rewrite::Src { ip: vip, port: None }, ..FlowAction::default() })
        }
        (None, None) => Some(FlowAction::default()),
    }
}

/// What an ICMP error to the VIP of the VM on `port` about no known flow gets: delivered
/// to the VM with the VIP translated back (outer destination and quoted source), as an
/// error of a VIP flow would be (dpservice makes a flow of it and translates it so).
/// Errors to any other address take the default action (dropped: no route).
fn vip_error_action(ctx: &Ctx<'_>, port: PortId, pkt: &Parsed) -> FlowAction {
    match ctx.snap.iface(port) {
        Some(i) if i.vip.is_some_and(|v| pkt.dst == IpAddr::V4(v)) => FlowAction {
            rewrite: Rewrite::Dst { ip: i.ipv4, port: None },
            out: Out::Vf(port),
            ..FlowAction::default()
        },
        _ => FlowAction::default(),
    }
}

fn verdict_denied(from: Option<PortId>, to: Option<PortId>, snap: &Snapshot, fw: &firewall::FlowKey) -> bool {
    let from = from.and_then(|p| snap.firewall(p));
    let to = to.and_then(|p| snap.firewall(p));
    forward_verdict(from, to, fw) == firewall::Action::Drop
}

/// What the stage learns of a packet before it touches the flow table: written by
/// [`prepare`] for every packet waiting for the stage, then used by [`process`] packet
/// by packet. Splitting the two lets the runner parse and hash a whole vector first, so
/// that the flow-table lookups find their index slots already on the way to the cache
/// and nothing reads back what was stored a moment earlier.
#[derive(Clone, Copy, Debug)]
pub struct Prepared {
    /// The caller's tag of the packet this was prepared for (see [`Prepared::is_for`]).
    tag: u64,
    /// The packet's end here (a drop), if it goes no further.
    early: Option<Next>,
    vni: Vni,
    pkt: Parsed,
    /// The flow table's hash of `pkt.key` (not for ICMP errors).
    hash: u64,
    /// dpservice's flow hash (only under `--wcmp` with two PFs).
    flow_hash: u32,
}

impl Default for Prepared {
    fn default() -> Self {
        Prepared {
            tag: u64::MAX,
            early: Some(Next::drop(DropReason::Malformed)),
            vni: 0,
            pkt: Parsed {
                key: FlowKey::v4(0, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0, 0, 0),
                quoted: false,
                tcp_flags: 0,
                src: Ipv4Addr::UNSPECIFIED.into(),
                dst: Ipv4Addr::UNSPECIFIED.into(),
                l4: L4::Other(0),
                echo_request: false,
            },
            hash: 0,
            flow_hash: 0,
        }
    }
}

/// The first half of the stage, for the packet in `buf` from `origin`: its VNI, key,
/// zone and hashes, into `out` (in place: see [`parse`]), tagged with the caller's `tag`
/// for the packet. Changes nothing but `out`.
pub fn prepare<B: PacketBuf>(
    ctx: &Ctx<'_>,
    flows: &Flows,
    origin: Origin,
    buf: &B,
    tag: u64,
    out: &mut Prepared,
) {
    out.tag = tag;
    out.early = None;
    let vni = match vni_of(ctx, origin) {
        Ok(v) => v,
        Err(r) => {
            out.early = Some(Next::drop(r));
            return;
        }
    };
    out.vni = vni;
    let Some(ip) = buf.data().get(ethernet::HEADER_LEN..) else {
        out.early = Some(Next::drop(DropReason::Malformed));
        return;
    };
    let pkt = &mut out.pkt;
    if let Err(r) = parse(ip, vni, pkt) {
        out.early = Some(Next::drop(r));
        return;
    }
    // dpservice sends UDP to the DHCP (IPv4) and DHCPv6 server ports to its servers
    // whatever port it came in on, and they drop what comes through the tunnel (a PF has
    // no DHCP settings): a VM never sees such a datagram from the underlay.
    if let (Origin::Tunnel { .. }, L4::Udp { dst_port, .. }) = (origin, pkt.l4) {
        match (pkt.dst, dst_port) {
            (IpAddr::V4(_), super::classify::DHCP_SERVER_PORT) => {
                out.early = Some(Next::drop(DropReason::DhcpIgnored));
                return;
            }
            (IpAddr::V6(_), super::classify::DHCPV6_SERVER_PORT) => {
                out.early = Some(Next::drop(DropReason::Dhcpv6Ignored));
                return;
            }
            _ => {}
        }
    }
    // By reference: a copy of the address would load it whole just after parse stored
    // it in parts.
    let zone = packet_zone(ctx, origin, &pkt.src);
    pkt.key.set_zone(zone);
    // Only a VM's packets can leave by the underlay with a PF to pick, and the hash only
    // matters when `--wcmp` splits traffic over two PFs: skip it otherwise (it is a
    // jhash over a 44-byte key, a sizeable share of an established flow's cost).
    out.flow_hash =
        if origin == Origin::Vf && super::encap::wcmp_splits(ctx) { dps_flow_hash(ctx, pkt) } else { 0 };
    if pkt.quoted {
        return;
    }
    // The table's hash of the key, from the parsed fields rather than from the key just
    // stored (reading those bytes back whole stalls as `parse` explains).
    let hash = match (pkt.src, pkt.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let k = &pkt.key;
            flows.table.hasher().hash_v4(vni, s, d, k.proto(), k.src_port(), k.dst_port(), zone)
        }
        _ => flows.table.hasher().hash(&pkt.key),
    };
    out.hash = hash;
}

impl Prepared {
    /// Whether this was prepared for the packet the caller tags `tag`.
    pub fn is_for(&self, tag: u64) -> bool {
        self.tag == tag
    }

    /// The flow table's hash of the packet's key, if the packet is looked up by it.
    pub fn lookup_hash(&self) -> Option<u64> {
        (self.early.is_none() && !self.pkt.quoted).then_some(self.hash)
    }
}

/// The second half of the stage: tracks the packet's flow, creating it on its first
/// packet, and applies the flow's cached action. `prep`: what [`prepare`] found for this
/// very packet, with the flows as they are now (the flow table may have changed since,
/// but not the packet, the snapshot nor the keys). `underlay`: the packet's underlay
/// slot (the tunnel's source for tunnel traffic; set to the destination of a packet sent
/// to the underlay).
pub fn process<B: PacketBuf>(
    ctx: &Ctx<'_>,
    flows: &mut Flows,
    origin: Origin,
    prep: &Prepared,
    buf: &mut B,
    underlay: &mut Underlay,
) -> Next {
    if let Some(next) = prep.early {
        return next;
    }
    let (vni, pkt, flow_hash) = (prep.vni, &prep.pkt, prep.flow_hash);
    if pkt.quoted {
        return match flows.table.lookup_quoted(&pkt.key, ctx.now_ns) {
            // An error keeps its flow alive, as any packet does in dpservice; it
            // changes no TCP state (no flags).
            Some(hit) => {
                flows.table.touch(hit.id, 0, ctx.now_ns);
                finish(ctx, flows, origin, &hit.action, true, flow_hash, buf, underlay)
            }
            // An error about a load balancer's flow goes to one of its targets.
            None if matches!(origin, Origin::Tunnel { target: UnderlayTarget::Lb { .. }, .. }) => {
                super::lb::icmp_error(ctx.snap, &mut flows.lb, vni, &pkt.key, underlay)
            }
            // An error about no known flow passes as it would without tracking, but
            // never with a VM's private address out to the internet (`untracked_error_action`).
            None => {
                let a = match origin {
                    Origin::Vf => match untracked_error_action(ctx, pkt) {
                        Some(a) => a,
                        None => return Next::drop(DropReason::UntrackedIcmp),
                    },
                    Origin::Tunnel { target: UnderlayTarget::Vip(p) } => vip_error_action(ctx, p, pkt),
                    Origin::Tunnel { .. } => FlowAction::default(),
                };
                finish(ctx, flows, origin, &a, true, flow_hash, buf, underlay)
            }
        };
    }
    let created;
    let action = match flows.table.track_hashed(&pkt.key, prep.hash, pkt.tcp_flags, ctx.now_ns) {
        Some((id, dir)) => match flows.table.action_ref(id, dir) {
            Some(a) => a,
            // A hit is a live flow.
            None => return Next::drop(DropReason::Malformed),
        },
        None => match new_flow(ctx, flows, origin, pkt, buf) {
            Ok(a) => {
                created = a;
                &created
            }
            Err(next) => return next,
        },
    };
    finish(ctx, flows, origin, action, false, flow_hash, buf, underlay)
}

/// What the established-flow fast path ([`super::fast`]) learns of an IPv4 TCP or UDP
/// packet before its lookup: the key, table hash and TCP flags that [`prepare`]
/// finds for it and [`process`] tracks it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastKey {
    key: FlowKey,
    hash: u64,
    tcp_flags: u8,
}

impl Default for FastKey {
    fn default() -> Self {
        FastKey {
            key: FlowKey::v4(0, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0, 0, 0),
            hash: 0,
            tcp_flags: 0,
        }
    }
}

impl FastKey {
    /// The flow table's hash of the key.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// The VNI of a packet entering the stage from `origin`.
#[inline]
fn vni_of(ctx: &Ctx<'_>, origin: Origin) -> Result<Vni, DropReason> {
    match origin {
        Origin::Vf => ctx.iface.map(|i| i.vni).ok_or(DropReason::NoInterface),
        Origin::Tunnel { target: UnderlayTarget::Nat { vni, .. } | UnderlayTarget::Lb { vni }, .. } => {
            Ok(vni)
        }
        Origin::Tunnel { target, .. } => {
            target.port().and_then(|p| ctx.snap.iface(p)).map(|i| i.vni).ok_or(DropReason::UnknownUnderlay)
        }
    }
}

/// [`prepare`] for the fast path: the key of an IPv4 TCP or UDP packet `ip` from
/// `origin` that reaches this stage: checked by [`super::classify::inspect_ipv4`], a
/// first fragment (offset 0), and long enough for its L4 header (classification or
/// decapsulation checked all that). Reads the same fields as [`parse`] in the same way,
/// and the VNI and zone as `prepare`. Returns false, leaving `out` unspecified, if `ip`
/// is not such a packet after all or has no VNI (the graph drops it).
#[inline]
pub(crate) fn key_v4(ctx: &Ctx<'_>, flows: &Flows, origin: Origin, ip: &[u8], out: &mut FastKey) -> bool {
    let hl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
    let (Some(a), Some(l4b)) = (ip.first_chunk::<20>(), ip.get(hl..)) else { return false };
    let (Some(sp), Some(dp)) = (rd16(l4b, 0), rd16(l4b, 2)) else { return false };
    let tcp_flags = match a[9] {
        PROTO_TCP => match l4b.get(13) {
            Some(&f) => f,
            None => return false,
        },
        PROTO_UDP => 0,
        _ => return false,
    };
    key_v4_fields(ctx, flows, origin, a, (sp, dp, tcp_flags), out)
}

/// The end of [`key_v4`], from the fixed IPv4 header `h` (the protocol and addresses
/// are read from it) and what the L4 header gave: source and destination port, TCP
/// flags (zero for UDP).
#[inline(always)]
pub(crate) fn key_v4_fields(
    ctx: &Ctx<'_>,
    flows: &Flows,
    origin: Origin,
    h: &[u8; 20],
    (sp, dp, tcp_flags): (u16, u16, u8),
    out: &mut FastKey,
) -> bool {
    let Ok(vni) = vni_of(ctx, origin) else { return false };
    let proto = h[9];
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    let zone = match (origin, ctx.iface) {
        // The VM's own address, the usual case, is the default zone without a lookup.
        (Origin::Vf, Some(i)) if i.ipv4 == src => ZONE_DEFAULT,
        _ => packet_zone(ctx, origin, &IpAddr::V4(src)),
    };
    out.hash = flows.table.hasher().hash_v4(vni, src, dst, proto, sp, dp, zone);
    out.key = FlowKey::v4(vni, src, dst, proto, sp, dp);
    out.key.set_zone(zone);
    out.tcp_flags = tcp_flags;
    true
}

/// [`process`] for the fast path, first half: the live flow of a packet whose key
/// [`key_v4`] found, without counting the packet (nothing changes).
#[inline]
pub(crate) fn lookup_fast(ctx: &Ctx<'_>, flows: &Flows, k: &FastKey) -> Option<(FlowId, Dir)> {
    flows.table.lookup_hashed(&k.key, k.hash, ctx.now_ns)
}

/// [`process`] for the fast path, second half, for a flow [`lookup_fast`] found just
/// now (once the packet, if it came through a tunnel, is decapsulated): tracks the
/// packet and applies the flow's cached action, exactly as `process` does for a hit.
#[inline]
pub(crate) fn track_fast<B: PacketBuf>(
    ctx: &Ctx<'_>,
    flows: &mut Flows,
    origin: Origin,
    k: &FastKey,
    (id, dir): (FlowId, Dir),
    buf: &mut B,
    underlay: &mut Underlay,
) -> Next {
    flows.table.touch(id, k.tcp_flags, ctx.now_ns);
    let Some(a) = flows.table.action_ref(id, dir) else {
        // A hit is a live flow.
        return Next::drop(DropReason::Malformed);
    };
    // No `--wcmp` split for a VM's packets on the fast path (see `fast::applies`), and
    // tunnel packets never use the flow hash: it is unused.
    finish(ctx, flows, origin, a, false, 0, buf, underlay)
}

/// dpservice's flow hash of a VM's packet (see [`DpsFlowKey`]): its key as it arrived,
/// with the VNF type dpservice marks it with (NAT for an interface with NAT, and for
/// NAT64 destinations, LB prefix for sources in the LB zone; an ICMP error is keyed,
/// reversed, by the packet it quotes). dpservice marks a source as an LB prefix only
/// when exactly that /32 is one; the node marks every source of the LB zone.
fn dps_flow_hash(ctx: &Ctx<'_>, pkt: &Parsed) -> u32 {
    let k = &pkt.key;
    let (dst, src, port_dst, port_src) = if pkt.quoted {
        (k.src(), k.dst(), k.src_port(), k.dst_port())
    } else {
        (k.dst(), k.src(), k.dst_port(), k.src_port())
    };
    // NAT: dpservice looks the key's source up among the interfaces' NAT data, which
    // holds only their own addresses.
    let nat_source = |i: &Interface| i.nat.is_some() && src == IpAddr::V4(i.ipv4);
    let vnf = match k.dst() {
        IpAddr::V4(_) if k.zone() == ZONE_LB => VnfType::LbAliasPrefix,
        IpAddr::V4(_) if ctx.iface.is_some_and(nat_source) => VnfType::Nat,
        IpAddr::V6(d) if super::nat64::is_nat64(d) => VnfType::Nat,
        _ => VnfType::Undefined,
    };
    DpsFlowKey { dst, src, port_dst, port_src, vni: k.vni(), proto: k.proto(), vnf }.hash()
}

/// The IPv6 route of a NAT64 packet's destination (the packet as the VM sent it).
fn nat64_route<B: PacketBuf>(ctx: &Ctx<'_>, buf: &B) -> Option<Ipv6Addr> {
    let ip = buf.data().get(ethernet::HEADER_LEN..)?;
    let dst = ipv6::Packet::new_checked(ip)?.dst();
    match ctx.vni_tables?.routes6.lookup(dst)? {
        RouteTarget::Remote { underlay, .. } => Some(*underlay),
        RouteTarget::Local { .. } => None,
    }
}

/// Applies action `a`. An untracked packet (no flow, or an ICMP error without one) gets
/// the default action, which nothing denies. The address references of `a` are valid
/// here even when its flow could not be kept: a released id's address stays in the pool
/// until the next acquire, and nothing acquires before this returns.
#[allow(clippy::too_many_arguments)] // the stage's own arguments, passed on
#[inline]
fn finish<B: PacketBuf>(
    ctx: &Ctx<'_>,
    flows: &Flows,
    origin: Origin,
    a: &FlowAction,
    quoted: bool,
    flow_hash: u32,
    buf: &mut B,
    underlay: &mut Underlay,
) -> Next {
    if a.denied && flows.enforce_firewall {
        return Next::drop(DropReason::FirewallDenied);
    }
    match (a.rewrite, a.out) {
        // dpservice translates no ICMP error of a NAT64 flow.
        (Rewrite::Nat64 { .. } | Rewrite::Nat46 { .. }, _) if quoted => {
            return Next::drop(DropReason::UntrackedIcmp)
        }
        // Routed by the IPv6 destination (looked up per packet, as routes are), then
        // translated; NAT64 traffic always leaves on pf0, as in dpservice.
        (Rewrite::Nat64 { ip, port }, _) => {
            let Some(route) = nat64_route(ctx, buf) else { return Next::drop(DropReason::NoRoute) };
            return match super::nat64::v6_to_v4(buf, ip, port) {
                Ok(()) => {
                    *underlay = route;
                    Next::Encap(None)
                }
                Err(r) => Next::drop(r),
            };
        }
        (Rewrite::Nat46 { port }, Out::Vf6 { port: vf, vm }) => {
            return match super::nat64::v4_to_v6(buf, flows.addrs.get(vm), port) {
                Ok(()) => Next::VfTx(vf),
                Err(r) => Next::drop(r),
            };
        }
        (Rewrite::Nat46 { .. }, _) => return Next::drop(DropReason::Malformed),
        _ => {}
    }
    if !apply_rewrite(a.rewrite, quoted, buf) {
        return Next::drop(DropReason::Malformed);
    }
    match origin {
        Origin::Vf => match buf.data().get(ethernet::HEADER_LEN).map(|b| b >> 4) {
            Some(4) => Next::Route4(flow_hash),
            Some(6) => Next::Route6,
            _ => Next::drop(DropReason::Malformed),
        },
        Origin::Tunnel { target, .. } => match (a.out, target) {
            (Out::Vf(p) | Out::Vf6 { port: p, .. }, _) => Next::VfTx(p),
            (Out::Relay(u), _) => {
                *underlay = flows.addrs.get(u);
                Next::Relay
            }
            (
                Out::Route,
                UnderlayTarget::Interface(p) | UnderlayTarget::AliasPrefix(p) | UnderlayTarget::LbPrefix(p),
            ) => Next::VfTx(p),
            (Out::Route, _) => Next::drop(DropReason::NoRoute),
        },
    }
}

/// Applies a rewrite to the IPv4 packet after the Ethernet header. For an ICMP error,
/// the outer header and the quoted packet are translated.
pub(crate) fn apply_rewrite<B: PacketBuf>(rw: Rewrite, quoted: bool, buf: &mut B) -> bool {
    let (side, ip, port) = match rw {
        Rewrite::None => return true,
        // Translated by `finish`.
        Rewrite::Nat64 { .. } | Rewrite::Nat46 { .. } => return false,
        Rewrite::Src { ip, port } => (Side::Source, ip, port),
        Rewrite::Dst { ip, port } => (Side::Destination, ip, port),
    };
    let Some(pkt) = buf.data_mut().get_mut(ethernet::HEADER_LEN..) else { return false };
    if !quoted {
        return rewrite_ipv4(pkt, side, ip, port);
    }
    // In the quote, the opposite side is translated; keep its port unless told.
    let port = match port {
        Some(p) => p,
        None => {
            let hl = usize::from(pkt.first().map_or(0, |b| b & 0x0f)) * 4;
            let q = hl + 8;
            let qhl = usize::from(pkt.get(q).map_or(0, |b| b & 0x0f)) * 4;
            let at = q + qhl + if side == Side::Destination { 0 } else { 2 };
            match rd16(pkt, at) {
                Some(p) => p,
                None => return false,
            }
        }
    };
    rewrite_icmp_error_ipv4(pkt, side, ip, port)
}

fn insert(
    ctx: &Ctx<'_>,
    flows: &mut Flows,
    pkt: &Parsed,
    reply: FlowKey,
    actions: [FlowAction; 2],
) -> Result<(), DropReason> {
    let (nat, addrs) = (&mut flows.nat, &mut flows.addrs);
    match flows.table.insert(pkt.key, reply, actions, pkt.tcp_flags, ctx.now_ns, |f| release(nat, addrs, f)) {
        Ok(_) => Ok(()),
        Err(e) => {
            // The flow is not kept: give back its NAT port and addresses.
            release_parts(&mut flows.nat, &mut flows.addrs, &actions, &reply);
            match e {
                InsertError::Full => Err(DropReason::FlowTableFull),
                // Another live flow already has the reply key: forward this packet
                // untracked.
                InsertError::Exists { .. } => Ok(()),
            }
        }
    }
}

fn new_flow<B: PacketBuf>(
    ctx: &Ctx<'_>,
    flows: &mut Flows,
    origin: Origin,
    pkt: &Parsed,
    buf: &mut B,
) -> Result<FlowAction, Next> {
    let snap = ctx.snap;
    let vni = pkt.key.vni();
    let drop = |r| Next::drop(r);
    match origin {
        Origin::Vf => {
            let Some(iface) = ctx.iface else { return Err(drop(DropReason::NoInterface)) };
            let me = ctx.in_port;
            let mut dst = pkt.dst;
            let (mut fwd, mut back, mut kind, mut owner) =
                (Rewrite::None, Rewrite::None, FlowKind::Plain, me);
            // DNAT: the VIP of a VM in this VNI.
            if let IpAddr::V4(d) = dst {
                if let Some(&DnatTarget::Vip(p)) = snap.dnat.get(&(vni, d)) {
                    if let Some(t) = snap.iface(p) {
                        fwd = Rewrite::Dst { ip: t.ipv4, port: None };
                        back = Rewrite::Src { ip: d, port: None };
                        dst = IpAddr::V4(t.ipv4);
                        kind = FlowKind::Vip;
                        owner = p;
                    }
                }
            }
            let Some((target, default)) = route(ctx.vni_tables, dst) else {
                return Err(drop(DropReason::NoRoute));
            };
            let mut src_port = None;
            let mut src = pkt.src;
            let lb_reply = pkt.key.zone() == ZONE_LB;
            // As in dpservice, whose NAT and VIP data are keyed by the interface's own
            // address, only that address is translated: traffic from an alias prefix
            // leaves as the VM sent it.
            let own = match pkt.src {
                IpAddr::V4(a) if a == iface.ipv4 => Some(a),
                _ => None,
            };
            if let (RouteTarget::Remote { .. }, true, Some(vm), FlowKind::Plain, false) =
                (target, default, own, kind, lb_reply)
            {
                if let Some(nat) = iface.nat {
                    let icmp = pkt.key.proto() == PROTO_ICMP;
                    let (orig_port, remote_port) =
                        if icmp { (pkt.key.dst_port(), 0) } else { (pkt.key.src_port(), pkt.key.dst_port()) };
                    let (Some(proto), IpAddr::V4(remote)) = (NatProto::from_ip_proto(pkt.key.proto()), dst)
                    else {
                        return Err(drop(DropReason::UnsupportedProtocol));
                    };
                    let orig = Original { vni, src_ip: pkt.src, src_port: orig_port };
                    let port = match flows.nat.allocate(usize::from(me), orig, proto, remote, remote_port) {
                        Ok(p) => p,
                        Err(AllocError::TableFull) => return Err(drop(DropReason::FlowTableFull)),
                        Err(AllocError::NoNat | AllocError::Exhausted) => {
                            return Err(drop(DropReason::NatExhausted))
                        }
                    };
                    fwd = Rewrite::Src { ip: nat.nat_ip, port: Some(port) };
                    back = Rewrite::Dst { ip: vm, port: Some(orig_port) };
                    kind = FlowKind::Nat;
                    src = IpAddr::V4(nat.nat_ip);
                    src_port = Some(port);
                } else if let Some(vip) = iface.vip {
                    fwd = Rewrite::Src { ip: vip, port: None };
                    back = Rewrite::Dst { ip: vm, port: None };
                    kind = FlowKind::Vip;
                    src = IpAddr::V4(vip);
                }
            }
            if let (RouteTarget::Remote { .. }, true, IpAddr::V6(vm6), IpAddr::V6(d6), Some(nat), false) =
                (target, default, pkt.src, dst, iface.nat, lb_reply)
            {
                if super::nat64::is_nat64(d6) {
                    return nat64_flow(ctx, flows, pkt, vm6, d6, nat.nat_ip);
                }
            }
            let to = match target {
                RouteTarget::Local { port } => Some(port),
                RouteTarget::Remote { .. } => None,
            };
            let fw = firewall::FlowKey { src: pkt.src, dst, l4: pkt.l4 };
            let denied = verdict_denied(Some(me), to, snap, &fw);
            let back_out = if to.is_some() { Out::Route } else { Out::Vf(me) };
            let a = FlowAction { rewrite: fwd, out: Out::Route, denied, kind, port: owner };
            let b = FlowAction { rewrite: back, out: back_out, denied, kind, port: owner };
            // Replies come from the receiving VM (from the translated destination), or
            // through the underlay: to a NAT or VIP underlay address when translated.
            let reply_zone = match (to, fwd) {
                (Some(p), _) => vm_zone(snap, p, &dst),
                (None, Rewrite::Src { .. }) => ZONE_DEFAULT,
                (None, _) => pkt.key.zone(),
            };
            let reply = rekey(&pkt.key, src, dst, src_port).reversed().with_zone(reply_zone);
            if let Err(r) = insert(ctx, flows, pkt, reply, [a, b]) {
                return Err(drop(r));
            }
            Ok(a)
        }
        Origin::Tunnel { target } => match target {
            UnderlayTarget::Interface(p) | UnderlayTarget::AliasPrefix(p) | UnderlayTarget::LbPrefix(p) => {
                let fw = firewall::FlowKey { src: pkt.src, dst: pkt.dst, l4: pkt.l4 };
                let denied = verdict_denied(None, Some(p), snap, &fw);
                let a = FlowAction { out: Out::Vf(p), denied, port: p, ..FlowAction::default() };
                let b = FlowAction { out: Out::Route, denied, port: p, ..FlowAction::default() };
                let reply = pkt.key.reversed().with_zone(vm_zone(snap, p, &pkt.dst));
                insert(ctx, flows, pkt, reply, [a, b]).map_err(drop)?;
                Ok(a)
            }
            UnderlayTarget::Vip(p) => {
                let iface = snap.iface(p).ok_or(drop(DropReason::UnknownUnderlay))?;
                let (Some(vip), IpAddr::V4(d)) = (iface.vip, pkt.dst) else {
                    return Err(drop(DropReason::NoRoute));
                };
                if vip != d {
                    return Err(drop(DropReason::NoRoute));
                }
                let vm = IpAddr::V4(iface.ipv4);
                let fw = firewall::FlowKey { src: pkt.src, dst: vm, l4: pkt.l4 };
                let denied = verdict_denied(None, Some(p), snap, &fw);
                let a = FlowAction {
                    rewrite: Rewrite::Dst { ip: iface.ipv4, port: None },
                    out: Out::Vf(p),
                    denied,
                    kind: FlowKind::Vip,
                    port: p,
                };
                let b = FlowAction {
                    rewrite: Rewrite::Src { ip: vip, port: None },
                    out: Out::Route,
                    denied,
                    kind: FlowKind::Vip,
                    port: p,
                };
                let reply = rekey(&pkt.key, pkt.src, vm, None).reversed().with_zone(vm_zone(snap, p, &vm));
                insert(ctx, flows, pkt, reply, [a, b]).map_err(drop)?;
                Ok(a)
            }
            UnderlayTarget::Nat { port, vni } => {
                let IpAddr::V4(d) = pkt.dst else { return Err(drop(DropReason::NoRoute)) };
                if !matches!(snap.dnat.get(&(vni, d)), Some(DnatTarget::Nat)) {
                    return Err(drop(DropReason::NoRoute));
                }
                if pkt.echo_request {
                    return Err(answer_echo(buf));
                }
                let Some(n) = snap.neighbor_nats.owner(vni, d, pkt.key.dst_port()) else {
                    return Err(drop(DropReason::NatPortUnowned));
                };
                let relay = flows.addrs.acquire(n.underlay).ok_or(drop(DropReason::FlowTableFull))?;
                let a = FlowAction {
                    out: Out::Relay(relay),
                    kind: FlowKind::Neighbor,
                    port,
                    ..FlowAction::default()
                };
                insert(ctx, flows, pkt, pkt.key, [a, a]).map_err(drop)?;
                Ok(a)
            }
            UnderlayTarget::Lb { vni } => {
                let choice = match super::lb::new_flow(snap, &mut flows.lb, vni, &pkt.key, buf) {
                    LbDecision::Target(c) => c,
                    LbDecision::Answered(next) => return Err(next),
                    LbDecision::Drop(r) => return Err(drop(r)),
                };
                // The target is cached in the flow: later packets keep it.
                let (a, reply, b) = match choice {
                    // Only this direction passes here (the target answers from its node).
                    LbChoice::Remote(u) => {
                        let relay = flows.addrs.acquire(u).ok_or(drop(DropReason::FlowTableFull))?;
                        let a = FlowAction { out: Out::Relay(relay), ..FlowAction::default() };
                        (a, pkt.key, a)
                    }
                    // The VM answers from the load-balanced IP (which it owns through its
                    // load-balancer prefix): its replies are routed.
                    LbChoice::Local(p) => {
                        let fw = firewall::FlowKey { src: pkt.src, dst: pkt.dst, l4: pkt.l4 };
                        let denied = verdict_denied(None, Some(p), snap, &fw);
                        let a = FlowAction { out: Out::Vf(p), denied, port: p, ..FlowAction::default() };
                        let b = FlowAction { out: Out::Route, denied, port: p, ..FlowAction::default() };
                        (a, pkt.key.reversed().with_zone(vm_zone(snap, p, &pkt.dst)), b)
                    }
                };
                insert(ctx, flows, pkt, reply, [a, b]).map_err(drop)?;
                Ok(a)
            }
        },
    }
}

/// Creates the flow of a VM's first NAT64 packet to `d6` (see the module docs): a NAT
/// port of the interface's NAT on `nat_ip`, the IPv4 reply key, and the translations of
/// both directions.
fn nat64_flow(
    ctx: &Ctx<'_>,
    flows: &mut Flows,
    pkt: &Parsed,
    vm6: Ipv6Addr,
    d6: Ipv6Addr,
    nat_ip: Ipv4Addr,
) -> Result<FlowAction, Next> {
    let (me, k) = (ctx.in_port, &pkt.key);
    let vni = k.vni();
    let icmp = k.proto() == PROTO_ICMPV6;
    // An ICMPv6 key holds the type as its source port.
    let icmp_type = if icmp { u8::try_from(k.src_port()).unwrap_or(0) } else { 0 };
    let Some((proto4, type4)) = super::nat64::v4_protocol(k.proto(), icmp_type) else {
        return Err(Next::drop(DropReason::UnsupportedProtocol));
    };
    let Some(proto) = NatProto::from_ip_proto(proto4) else {
        return Err(Next::drop(DropReason::UnsupportedProtocol));
    };
    let remote = super::nat64::embedded(d6);
    let (orig_port, remote_port) = if icmp { (k.dst_port(), 0) } else { (k.src_port(), k.dst_port()) };
    let orig = Original { vni, src_ip: IpAddr::V6(vm6), src_port: orig_port };
    let vm = flows.addrs.acquire(vm6).ok_or(Next::drop(DropReason::FlowTableFull))?;
    let port = match flows.nat.allocate(usize::from(me), orig, proto, remote, remote_port) {
        Ok(p) => p,
        Err(e) => {
            flows.addrs.release(vm);
            return Err(Next::drop(match e {
                AllocError::TableFull => DropReason::FlowTableFull,
                AllocError::NoNat | AllocError::Exhausted => DropReason::NatExhausted,
            }));
        }
    };
    let fw = firewall::FlowKey { src: pkt.src, dst: pkt.dst, l4: pkt.l4 };
    let denied = verdict_denied(Some(me), None, ctx.snap, &fw);
    let a = FlowAction {
        rewrite: Rewrite::Nat64 { ip: nat_ip, port },
        out: Out::Route,
        denied,
        kind: FlowKind::Nat,
        port: me,
    };
    let b = FlowAction {
        rewrite: Rewrite::Nat46 { port: orig_port },
        out: Out::Vf6 { port: me, vm },
        denied,
        kind: FlowKind::Nat,
        port: me,
    };
    // The key of the translated packet; the flow's reply key is its reverse (replies
    // come to the NAT underlay address: the default zone).
    let translated = if icmp {
        FlowKey::v4(vni, nat_ip, remote, PROTO_ICMP, u16::from(type4), port)
    } else {
        FlowKey::v4(vni, nat_ip, remote, proto4, port, remote_port)
    };
    insert(ctx, flows, pkt, translated.reversed(), [a, b]).map_err(Next::drop)?;
    Ok(a)
}

/// TTL of the node's own echo replies.
const ECHO_TTL: u8 = 64;

/// Turns an ICMP echo request to a NAT IP into the node's echo reply, sent back to
/// the tunnel's source (the packet's underlay slot already holds it).
pub(crate) fn answer_echo<B: PacketBuf>(buf: &mut B) -> Next {
    let Some(ip) = buf.data_mut().get_mut(ethernet::HEADER_LEN..) else {
        return Next::drop(DropReason::Malformed);
    };
    let hl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
    if hl < 20 || ip.len() < hl + 8 {
        return Next::drop(DropReason::Malformed);
    }
    // Swapping the addresses leaves both checksums as they are.
    let mut a = [0u8; 4];
    a.copy_from_slice(&ip[12..16]);
    ip.copy_within(16..20, 12);
    ip[16..20].copy_from_slice(&a);
    ip[8] = ECHO_TTL;
    ip[10..12].fill(0);
    let ck = checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    let icmp = &mut ip[hl..];
    let old = u16::from_be_bytes([icmp[0], icmp[1]]);
    icmp[0] = 0;
    let new = u16::from_be_bytes([icmp[0], icmp[1]]);
    let ck = update16(u16::from_be_bytes([icmp[2], icmp[3]]), old, new);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    Next::Relay
}
