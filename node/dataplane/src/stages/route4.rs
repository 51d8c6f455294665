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

/// Routes one IPv4 packet from a VF, as classification checked it: an IPv4 header at
/// offset 14 whose lengths agree with the frame and whose checksum verifies (the graph
/// reaches this stage only through classification, or the fast path's same checks, and
/// connection tracking's rewrites change no length). The header is read through its
/// fixed 20 bytes, without checking it again; a frame too short for them is dropped.
/// A remote route's underlay address goes to `underlay`.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, flow_hash: u32, buf: &mut B, underlay: &mut Underlay) -> Next {
    let Some(h) = buf.data_mut().get_mut(ethernet::HEADER_LEN..).and_then(|ip| ip.first_chunk_mut()) else {
        return Next::drop(DropReason::Malformed);
    };
    // No interface, no VNI tables: no route.
    let target = ctx.vni_tables.and_then(|t| t.routes4.lookup(ipv4::header_dst(h)));
    let Some(target) = target else {
        return Next::drop(DropReason::NoRoute);
    };
    if !ipv4::decrement_ttl_header(h) {
        return Next::drop(DropReason::TtlExpired);
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // Ethernet padding is not part of the packet; it must not end up inside a tunnel.
    buf.truncate(ethernet::HEADER_LEN + total);
    route_next(target, Some(flow_hash), underlay)
}
