//! Delivery of an encapsulated packet to a PF: Ethernet destination = the underlay
//! router's MAC (configured, as dpservice reads it from the kernel's neighbour table,
//! or learned from received tunnel traffic; broadcast until known), source = the PF's
//! own MAC, ethertype IPv6.

use crate::buf::PacketBuf;
use crate::config::{PortId, PortRole};
use crate::graph::{Ctx, DropReason, NeighTable, Next, Verdict};
use crate::wire::ethernet::{self, Frame};

/// Writes the outer Ethernet header for `port`.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, port: PortId, buf: &mut B) -> Next {
    let Some(info) = ctx.snap.port(port).filter(|p| matches!(p.role, PortRole::Pf(_))) else {
        return Next::drop(DropReason::PortDown);
    };
    let Some(mut frame) = Frame::new_checked(buf.data_mut()) else {
        return Next::drop(DropReason::Malformed);
    };
    let dst = info.neigh_mac.unwrap_or_else(|| neigh.mac_or_broadcast(port));
    frame.set_header(dst, info.mac, ethernet::ETHERTYPE_IPV6);
    Next::Done(Verdict::Tx(port))
}
