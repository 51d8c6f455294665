//! Delivery of a forwarded packet to a VF: the Ethernet header dpservice writes
//! (`dp_fill_ether_hdr` for the output port): destination = the VM's MAC as learned
//! on that port, source = the port's own MAC, ethertype from the IP version. Until the
//! VM's MAC is known the frame goes to the broadcast address (dpservice would send
//! to 00:00:00:00:00:00 until its ARP/DHCP/ND learning fills the slot).

use crate::buf::PacketBuf;
use crate::config::{PortId, PortRole};
use crate::graph::{Ctx, DropReason, NeighTable, Next, Verdict};
use crate::wire::ethernet::{self, Frame};

/// Writes the Ethernet header for `port` in front of the IP packet at offset 14.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, port: PortId, buf: &mut B) -> Next {
    let Some(info) = ctx.snap.port(port).filter(|p| p.role == PortRole::Vf) else {
        return Next::drop(DropReason::PortDown);
    };
    let data = buf.data_mut();
    let ethertype = match data.get(ethernet::HEADER_LEN).map(|b| b >> 4) {
        Some(4) => ethernet::ETHERTYPE_IPV4,
        Some(6) => ethernet::ETHERTYPE_IPV6,
        _ => return Next::drop(DropReason::Malformed),
    };
    let Some(mut frame) = Frame::new_checked(data) else {
        return Next::drop(DropReason::Malformed);
    };
    let dst = neigh.mac_or_broadcast(port);
    frame.set_header(dst, info.mac, ethertype);
    Next::Done(Verdict::Tx(port))
}
