//! Classification: the first stage of every packet.
//!
//! What dpservice does, and this stage does too:
//! - VF ports: frames are untagged Ethernet II. ARP goes to the ARP responder; IPv4
//!   UDP to port 67 to the DHCP server (whatever the destination address); ICMPv6
//!   neighbour discovery to the ND responder; IPv6 UDP to port 547 to the DHCPv6
//!   server; other IPv4 and IPv6 to the per-VNI lookup. A VF without an interface
//!   passes nothing. The source MAC of the VM's frames is learned: it becomes the
//!   Ethernet destination of traffic delivered to the VM.
//! - PF ports carry only tunnel traffic: IPv6 with next header 4 (IPv4-in-IPv6) or 41
//!   (IPv6-in-IPv6) goes to decapsulation. dpservice drops IPv4, ARP and neighbour
//!   discovery on a PF (the kernel or the NIC answers those for the host), and any other
//!   IPv6 ends in its connection tracker without a tunnel owner, i.e. dropped.
//! - Only TCP, UDP, ICMP and ICMPv6 pass (dpservice's connection tracker drops other
//!   protocols, IPv6 extension headers included).
//!
//! - Virtual services: IPv4 TCP/UDP from a VF to a virtual service's (address, port),
//!   and non-tunnel IPv6 TCP/UDP on a PF from a service's (address, port), go to the
//!   virtual-service stage, before connection tracking (see `stages::virtsvc`).
//!
//! Where the node is stricter than dpservice, which trusts the NIC's packet-type
//! parsing: IPv4 header checksums are verified (a router must not forward a corrupted
//! header: the TTL update would make it look valid), lengths must be consistent, IPv4
//! options are honoured rather than mistaken for the L4 header, and ND types 134, 136
//! and 137 go to the ND stage too (dpservice only diverts 133 and 135 and routes the
//! others, although RFC 4861 messages are link-local and never forwarded).

use crate::buf::PacketBuf;
use crate::config::{Mac, PortRole};
use crate::graph::{Ctx, DropReason, NeighTable, Next};
use crate::wire::ethernet::{self, Frame};
use crate::wire::{ipv4, ipv6};

use std::net::Ipv4Addr;

use super::conntrack::Origin;
use super::virtsvc::VirtualServices;

/// UDP port of a DHCPv4 server.
pub const DHCP_SERVER_PORT: u16 = 67;
/// UDP port of a DHCPv6 server.
pub const DHCPV6_SERVER_PORT: u16 = 547;

/// What classification needs to know about an IP packet's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Info {
    /// IP protocol / IPv6 next header.
    pub protocol: u8,
    /// UDP or TCP destination port (not for non-first fragments).
    pub dst_port: Option<u16>,
    /// ICMP / ICMPv6 type (not for non-first fragments).
    pub icmp_type: Option<u8>,
    /// Length of the IP packet (header and payload, padding excluded).
    pub ip_len: usize,
}

fn l4(protocol: u8, payload: &[u8], first_fragment: bool) -> Result<L4Info, DropReason> {
    let mut info = L4Info { protocol, dst_port: None, icmp_type: None, ip_len: 0 };
    if !first_fragment {
        return Ok(info);
    }
    let min = match protocol {
        ipv4::PROTO_TCP => 20,
        ipv4::PROTO_UDP | ipv4::PROTO_ICMP => 8,
        // Every ICMPv6 message has at least type, code, checksum and a 4-byte body.
        ipv6::NH_ICMPV6 => 8,
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    if payload.len() < min {
        return Err(DropReason::Malformed);
    }
    match protocol {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => {
            info.dst_port = Some(u16::from_be_bytes([payload[2], payload[3]]));
        }
        _ => info.icmp_type = Some(payload[0]),
    }
    Ok(info)
}

/// Validates an IPv4 packet (header, lengths, checksum, L4 protocol) at the start of
/// `ip`, which may carry trailing padding.
pub fn inspect_ipv4(ip: &[u8]) -> Result<L4Info, DropReason> {
    let p = ipv4::Packet::new_checked(ip).map_err(|e| match e {
        ipv4::Invalid::Malformed => DropReason::Malformed,
        ipv4::Invalid::Checksum => DropReason::BadChecksum,
    })?;
    let mut info = l4(p.protocol(), p.payload(), p.frag_offset() == 0)?;
    info.ip_len = p.total_len();
    Ok(info)
}

/// Validates an IPv6 packet (fixed header, payload length, L4 protocol directly after
/// the fixed header) at the start of `ip`, which may carry trailing padding.
pub fn inspect_ipv6(ip: &[u8]) -> Result<L4Info, DropReason> {
    let p = ipv6::Packet::new_checked(ip).ok_or(DropReason::Malformed)?;
    let mut info = l4(p.next_header(), p.payload(), true)?;
    info.ip_len = p.total_len();
    Ok(info)
}

/// Picks the first stage of a packet received on `ctx.in_port`: [`learn`], then
/// [`dispatch`].
///
/// `svcs`: the node's virtual services (IPv4 TCP/UDP from a VF to one of them, and
/// non-tunnel IPv6 TCP/UDP on a PF from one of them, go to the virtual-service stage).
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, svcs: &VirtualServices, buf: &mut B) -> Next {
    learn(ctx, neigh, buf);
    dispatch(ctx, svcs, buf)
}

/// Learns the source MAC of a unicast frame from the VM of the input VF (the
/// Ethernet destination of traffic delivered to it). Nothing for other ports.
#[inline]
pub fn learn<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, buf: &B) {
    if let Some(mac) = learnable(ctx, buf) {
        neigh.learn(ctx.in_port, mac);
    }
}

/// What [`learn`] learns from a frame, if anything.
#[inline]
pub fn learnable<B: PacketBuf>(ctx: &Ctx<'_>, buf: &B) -> Option<Mac> {
    if ctx.iface.is_none() || !ctx.port.is_some_and(|p| p.role == PortRole::Vf) {
        return None;
    }
    let src = Frame::new_checked(buf.data())?.src();
    ethernet::is_unicast(&src).then_some(src)
}

/// Picks the first stage of a packet received on `ctx.in_port`, without learning.
pub fn dispatch<B: PacketBuf>(ctx: &Ctx<'_>, svcs: &VirtualServices, buf: &B) -> Next {
    let Some(port) = ctx.port else {
        return Next::drop(DropReason::UnknownPort);
    };
    let Some(frame) = Frame::new_checked(buf.data()) else {
        return Next::drop(DropReason::Malformed);
    };
    match port.role {
        PortRole::Vf => from_vf(ctx, svcs, &frame),
        PortRole::Pf(_) => from_pf(svcs, &frame),
    }
}

/// The virtual service a checked IPv4 packet from a VM is for.
fn virtual_target(svcs: &VirtualServices, ip: &[u8], i: &L4Info) -> Option<u16> {
    let port = i.dst_port?;
    let dst = ip.get(16..20)?;
    svcs.by_virtual(i.protocol, Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]), port)
}

/// The virtual service a non-tunnel IPv6 packet on a PF comes from.
fn service_source(svcs: &VirtualServices, p: &ipv6::Packet<&[u8]>) -> Option<u16> {
    let nh = p.next_header();
    if nh != ipv6::NH_TCP && nh != ipv6::NH_UDP {
        return None;
    }
    let sport = p.payload().get(0..2)?;
    svcs.by_service(nh, p.src(), u16::from_be_bytes([sport[0], sport[1]]))
}

fn from_vf(ctx: &Ctx<'_>, svcs: &VirtualServices, frame: &Frame<&[u8]>) -> Next {
    if ctx.iface.is_none() {
        return Next::drop(DropReason::NoInterface);
    }
    match frame.ethertype() {
        ethernet::ETHERTYPE_ARP => Next::Arp,
        ethernet::ETHERTYPE_IPV4 => match inspect_ipv4(frame.payload()) {
            Ok(i) if i.protocol == ipv4::PROTO_UDP && i.dst_port == Some(DHCP_SERVER_PORT) => Next::Dhcp,
            Ok(i) => match virtual_target(svcs, frame.payload(), &i) {
                Some(svc) => Next::VirtsvcRequest(svc),
                None => Next::Conntrack(Origin::Vf),
            },
            Err(r) => Next::drop(r),
        },
        ethernet::ETHERTYPE_IPV6 => match inspect_ipv6(frame.payload()) {
            Ok(i) if i.protocol == ipv6::NH_ICMPV6 && matches!(i.icmp_type, Some(133..=137)) => {
                if ctx.snap.node.ipv6_overlay {
                    Next::Nd
                } else {
                    Next::drop(DropReason::Ipv6Disabled)
                }
            }
            Ok(i) if i.protocol == ipv6::NH_UDP && i.dst_port == Some(DHCPV6_SERVER_PORT) => Next::Dhcpv6,
            Ok(_) => Next::Conntrack(Origin::Vf),
            Err(r) => Next::drop(r),
        },
        _ => Next::drop(DropReason::UnknownEthertype),
    }
}

fn from_pf(svcs: &VirtualServices, frame: &Frame<&[u8]>) -> Next {
    match frame.ethertype() {
        ethernet::ETHERTYPE_IPV6 => match ipv6::Packet::new_checked(frame.payload()) {
            Some(p) if matches!(p.next_header(), ipv6::NH_IPV4 | ipv6::NH_IPV6) => Next::Decap,
            Some(p) => match service_source(svcs, &p) {
                Some(svc) => Next::VirtsvcReply(svc),
                None => Next::drop(DropReason::NotTunnel),
            },
            None => Next::drop(DropReason::Malformed),
        },
        ethernet::ETHERTYPE_IPV4 | ethernet::ETHERTYPE_ARP => Next::drop(DropReason::NotTunnel),
        _ => Next::drop(DropReason::UnknownEthertype),
    }
}
