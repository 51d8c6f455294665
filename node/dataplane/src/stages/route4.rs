//! IPv4 overlay routing: longest-prefix match of the destination in the VNI of the
//! interface the packet came from.
//!
//! dpservice does no source check here (a VM may send from any address; alias
//! prefixes and load-balancer targets rely on it) and neither does the node. Unlike
//! dpservice, which leaves the TTL alone, the node decrements it like a router (with
//! an incremental checksum update) and drops a packet that arrives with TTL 0 or 1;
//! dpservice never sends ICMP time-exceeded, and the node does not either.

use crate::buf::PacketBuf;
use crate::graph::{Ctx, DropReason, Next, Underlay};
use crate::wire::{ethernet, ipv4};

use super::route_next;

/// Routes one IPv4 packet from a VF (validated by classification).
/// A remote route's underlay address goes to `underlay`.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, flow_hash: u32, buf: &mut B, underlay: &mut Underlay) -> Next {
    if ctx.iface.is_none() {
        return Next::drop(DropReason::NoInterface);
    }
    let Some(ip) = buf.data_mut().get_mut(ethernet::HEADER_LEN..) else {
        return Next::drop(DropReason::Malformed);
    };
    // Classification verified the header checksum, and nothing touched the header since.
    let Some(mut p) = ipv4::Packet::new_unverified(ip) else {
        return Next::drop(DropReason::Malformed);
    };
    let target = ctx.vni_tables.and_then(|t| t.routes4.lookup(p.dst()));
    let Some(target) = target else {
        return Next::drop(DropReason::NoRoute);
    };
    if p.ttl() <= 1 {
        return Next::drop(DropReason::TtlExpired);
    }
    p.decrement_ttl();
    let len = ethernet::HEADER_LEN + p.total_len();
    // Ethernet padding is not part of the packet; it must not end up inside a tunnel.
    buf.truncate(len);
    route_next(target, Some(flow_hash), underlay)
}
