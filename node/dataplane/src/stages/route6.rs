//! IPv6 overlay routing: longest-prefix match of the destination in the VNI of the
//! interface the packet came from. dpservice routes VM IPv6 whether or not the IPv6
//! overlay option is on (the option only gates neighbour discovery), and so does the
//! node. Hop limit handling as for IPv4 (see `route4`).

use crate::buf::PacketBuf;
use crate::graph::{Ctx, DropReason, Next, Underlay};
use crate::wire::{ethernet, ipv6};

use super::route_next;

/// Routes one IPv6 packet from a VF (validated by classification).
/// A remote route's underlay address goes to `underlay`.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, buf: &mut B, underlay: &mut Underlay) -> Next {
    if ctx.iface.is_none() {
        return Next::drop(DropReason::NoInterface);
    }
    let Some(ip) = buf.data_mut().get_mut(ethernet::HEADER_LEN..) else {
        return Next::drop(DropReason::Malformed);
    };
    let Some(mut p) = ipv6::Packet::new_checked(ip) else {
        return Next::drop(DropReason::Malformed);
    };
    let target = ctx.vni_tables.and_then(|t| t.routes6.lookup(p.dst()));
    let Some(target) = target else {
        return Next::drop(DropReason::NoRoute);
    };
    let hop_limit = p.hop_limit();
    if hop_limit <= 1 {
        return Next::drop(DropReason::TtlExpired);
    }
    p.set_hop_limit(hop_limit - 1);
    let len = ethernet::HEADER_LEN + p.total_len();
    buf.truncate(len);
    route_next(target, None, underlay)
}
