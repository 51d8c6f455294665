//! IP-in-IPv6 encapsulation towards the underlay.
//!
//! As dpservice builds it: the outer IPv6 header has version 6, traffic class 0, flow
//! label 0, hop limit 64, next header 4 for IPv4 or 41 for IPv6, payload length = the
//! inner packet's length, source = the underlay address of the sending interface (the
//! node's `--ipv6` address when the packet came from a port without an interface), and
//! destination = the route's underlay next hop. The VNI is not on the wire.
//!
//! The output PF is pf0, unless there are two PFs and `--wcmp` is below 100: then
//! dpservice spreads IPv4 flows over a table of ten slots, `round(wcmp / 10)` of them
//! pf0's, indexed by the flow hash modulo 10. The node does the same with its own flow
//! hash (dpservice also fails over on link state, which the snapshot does not carry).
//! IPv6 overlay traffic always leaves on pf0, as in dpservice.

use std::net::Ipv6Addr;

use crate::buf::PacketBuf;
use crate::config::PortId;
use crate::graph::{Ctx, DropReason, Next};
use crate::wire::{ethernet, ipv4, ipv6};

/// Outer hop limit.
pub const HOP_LIMIT: u8 = 64;
/// Outer version, traffic class and flow label.
pub const VTC_FLOW: u32 = 0x6000_0000;

/// A hash of an IPv4 flow's addresses, protocol and ports (FNV-1a), for picking a PF.
pub fn flow_hash_v4(ip: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    };
    if let Ok(p) = ipv4::Packet::new_checked(ip) {
        eat(&p.src().octets());
        eat(&p.dst().octets());
        eat(&[p.protocol()]);
        let l4 = p.payload();
        if p.frag_offset() == 0
            && matches!(p.protocol(), ipv4::PROTO_TCP | ipv4::PROTO_UDP)
            && l4.len() >= 4
        {
            eat(&l4[..4]);
        }
    }
    h
}

fn pick_pf(ctx: &Ctx<'_>, inner: &[u8], is_v4: bool) -> Option<PortId> {
    let node = &ctx.snap.node;
    let pf0 = *node.pf_ports.first()?;
    match node.pf_ports.get(1) {
        Some(&pf1) if is_v4 && node.wcmp_percent < 100 => {
            let pf0_slots = (u32::from(node.wcmp_percent) + 5) / 10;
            Some(if flow_hash_v4(inner) % 10 < pf0_slots { pf0 } else { pf1 })
        }
        _ => Some(pf0),
    }
}

/// Encapsulates the IP packet after the Ethernet header towards `underlay`, out of
/// `via` if given (a relay goes back out of the PF it came in on), else out of the PF
/// `--wcmp` picks.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, underlay: Ipv6Addr, via: Option<PortId>, buf: &mut B) -> Next {
    let Some(inner) = buf.data().get(ethernet::HEADER_LEN..) else {
        return Next::drop(DropReason::Malformed);
    };
    let (next_header, is_v4) = match inner.first().map(|b| b >> 4) {
        Some(4) => (ipv6::NH_IPV4, true),
        Some(6) => (ipv6::NH_IPV6, false),
        _ => return Next::drop(DropReason::Malformed),
    };
    let Ok(payload_len) = u16::try_from(inner.len()) else {
        return Next::drop(DropReason::TooBig);
    };
    let Some(pf) = via.or_else(|| pick_pf(ctx, inner, is_v4)) else {
        return Next::drop(DropReason::PortDown);
    };
    let src = ctx.iface.map_or(ctx.snap.node.underlay_ipv6, |i| i.underlay_ipv6);
    if !buf.prepend(ipv6::HEADER_LEN) {
        return Next::drop(DropReason::NoRoom);
    }
    let repr = ipv6::Repr {
        src,
        dst: underlay,
        next_header,
        payload_len,
        hop_limit: HOP_LIMIT,
        vtc_flow: VTC_FLOW,
    };
    // The old Ethernet header now sits where the IPv6 header goes; pf_tx writes a new one.
    let emitted = buf.data_mut().get_mut(ethernet::HEADER_LEN..).is_some_and(|h| repr.emit(h));
    if emitted {
        Next::PfTx(pf)
    } else {
        Next::drop(DropReason::Malformed)
    }
}
