//! IP-in-IPv6 decapsulation of tunnel traffic received on a PF.
//!
//! As in dpservice: the outer destination must be one of the node's underlay addresses
//! (an interface's, an alias or load-balancer prefix's, a VIP's or a NAT's; else the
//! packet is dropped); connection tracking then delivers it to that interface's VF
//! without a route lookup (or translates or relays it), and the inner packet keeps its
//! TTL. Since an underlay
//! address belongs to exactly one interface, and so to one VNI, identical overlay
//! addresses in different VNIs never mix. The inner packet is validated like a VM's
//! (lengths, IPv4 checksum, L4 protocol) and outer padding is removed.
//!
//! A PF without a configured router MAC learns it here from the source of tunnel
//! traffic that reached one of the node's underlay addresses.

use crate::buf::PacketBuf;
use crate::graph::{Ctx, DropReason, NeighTable, Next, Underlay};
use crate::wire::ethernet::{self, Frame};
use crate::wire::ipv6;

use super::classify::{inspect_ipv4, inspect_ipv6};
use super::conntrack::Origin;

/// Strips the outer Ethernet and IPv6 headers, leaving room for the VF's Ethernet
/// header in front of the inner packet. The outer source goes to `underlay`.
pub fn process<B: PacketBuf>(
    ctx: &Ctx<'_>,
    neigh: &NeighTable,
    buf: &mut B,
    underlay: &mut Underlay,
) -> Next {
    let data = buf.data();
    let Some(frame) = Frame::new_checked(data) else {
        return Next::drop(DropReason::Malformed);
    };
    let Some(outer) = ipv6::Packet::new_checked(frame.payload()) else {
        return Next::drop(DropReason::Malformed);
    };
    let Some(&target) = ctx.snap.underlay_targets.get(&outer.dst()) else {
        return Next::drop(DropReason::UnknownUnderlay);
    };
    let outer_src = outer.src();
    let inner = match outer.next_header() {
        ipv6::NH_IPV4 => inspect_ipv4(outer.payload()),
        ipv6::NH_IPV6 => inspect_ipv6(outer.payload()),
        _ => return Next::drop(DropReason::BadInnerProtocol),
    };
    let inner_len = match inner {
        Ok(i) => i.ip_len,
        Err(r) => return Next::drop(r),
    };
    if let Some(pf) = ctx.port {
        let src = frame.src();
        if pf.neigh_mac.is_none() && ethernet::is_unicast(&src) && src != pf.mac {
            neigh.learn(ctx.in_port, src);
        }
    }
    buf.truncate(ethernet::HEADER_LEN + ipv6::HEADER_LEN + inner_len);
    if !buf.adj(ipv6::HEADER_LEN) {
        return Next::drop(DropReason::Malformed);
    }
    *underlay = outer_src;
    Next::Conntrack(Origin::Tunnel { target })
}
