//! IP-in-IPv6 encapsulation towards the underlay.
//!
//! As dpservice builds it: the outer IPv6 header has version 6, traffic class 0, flow
//! label 0, hop limit 64, next header 4 for IPv4 or 41 for IPv6, payload length = the
//! inner packet's length, source = the underlay address of the sending interface (the
//! node's `--ipv6` address when the packet came from a port without an interface), and
//! destination = the route's underlay next hop. The VNI is not on the wire.
//!
//! The output PF is pf0, unless there are two PFs, `--wcmp` is below 100 and the
//! packet carries a flow hash (IPv4 overlay traffic routed from a VM): then, as in
//! dpservice, a table of ten slots, `round(wcmp / 10)` of them pf0's, is indexed by the
//! flow hash modulo 10. The hash is dpservice's own (DPDK's jhash of its conntrack key,
//! [`crate::tables::jhash::DpsFlowKey`], computed by the conntrack stage before any
//! translation), so a flow leaves on the same PF as it would from dpservice. dpservice
//! also fails over on link state, which the snapshot does not carry. IPv6 overlay
//! traffic, NAT64 and relays never carry a hash here: pf0 (relays: the input PF).

use std::net::Ipv6Addr;

use crate::buf::PacketBuf;
use crate::config::PortId;
use crate::graph::{Ctx, DropReason, Next};
use crate::wire::{ethernet, ipv6};

/// Outer hop limit.
pub const HOP_LIMIT: u8 = 64;
/// Outer version, traffic class and flow label.
pub const VTC_FLOW: u32 = 0x6000_0000;

/// The PF for a packet, as dpservice's multipath choice: pf0, or with `--wcmp` below 100
/// and two PFs, pf0 for `round(wcmp/10)` of 10 hash slots and pf1 for the rest. Without
/// a hash (IPv6 overlay traffic), always pf0.
pub(crate) fn pick_pf(ctx: &Ctx<'_>, flow_hash: Option<u32>) -> Option<PortId> {
    let node = &ctx.snap.node;
    let pf0 = *node.pf_ports.first()?;
    match (node.pf_ports.get(1), flow_hash) {
        (Some(&pf1), Some(h)) if wcmp_splits(ctx) => {
            let pf0_slots = (u32::from(node.wcmp_percent) + 5) / 10;
            Some(if h % 10 < pf0_slots { pf0 } else { pf1 })
        }
        _ => Some(pf0),
    }
}

/// Whether [`pick_pf`] looks at the flow hash (two PFs and `--wcmp` below 100).
#[inline]
pub(crate) fn wcmp_splits(ctx: &Ctx<'_>) -> bool {
    let node = &ctx.snap.node;
    node.pf_ports.len() > 1 && node.wcmp_percent < 100
}

/// Encapsulates the IP packet after the Ethernet header towards `underlay`, out of
/// `via` if given (a relay goes back out of the PF it came in on), else out of the PF
/// `--wcmp` picks with `flow_hash`.
pub fn process<B: PacketBuf>(
    ctx: &Ctx<'_>,
    underlay: Ipv6Addr,
    via: Option<PortId>,
    flow_hash: Option<u32>,
    buf: &mut B,
) -> Next {
    let Some(inner) = buf.data().get(ethernet::HEADER_LEN..) else {
        return Next::drop(DropReason::Malformed);
    };
    let next_header = match inner.first().map(|b| b >> 4) {
        Some(4) => ipv6::NH_IPV4,
        Some(6) => ipv6::NH_IPV6,
        _ => return Next::drop(DropReason::Malformed),
    };
    let Ok(payload_len) = u16::try_from(inner.len()) else {
        return Next::drop(DropReason::TooBig);
    };
    let Some(pf) = via.or_else(|| pick_pf(ctx, flow_hash)) else {
        return Next::drop(DropReason::PortDown);
    };
    let src = ctx.iface.map_or(ctx.snap.node.underlay_ipv6, |i| i.underlay_ipv6);
    if !buf.prepend(ipv6::HEADER_LEN) {
        return Next::drop(DropReason::NoRoom);
    }
    let repr =
        ipv6::Repr { src, dst: underlay, next_header, payload_len, hop_limit: HOP_LIMIT, vtc_flow: VTC_FLOW };
    // The old Ethernet header now sits where the IPv6 header goes; pf_tx writes a new one.
    let emitted = buf.data_mut().get_mut(ethernet::HEADER_LEN..).is_some_and(|h| repr.emit(h));
    if emitted {
        Next::PfTx(pf)
    } else {
        Next::drop(DropReason::Malformed)
    }
}
