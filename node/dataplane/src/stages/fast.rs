//! The established-flow fast path: a VM's IPv4 TCP or UDP packet whose flow exists skips
//! classification's dispatch, the conntrack stage's vector pass and the runner's queues.
//!
//! The graph's first stages do, for every packet of an established flow, work whose
//! result the flow table already holds: classification validates and dispatches, the
//! conntrack stage parses the packet again into a general form (any protocol, IPv4 or
//! IPv6, ICMP errors by their quote), and the runner moves the packet from queue to
//! queue. On a chunk from a VF, the runner first asks this module about every packet:
//!
//! 1. [`prepare`], over the whole chunk: the same checks classification makes (it calls
//!    the same [`classify::inspect_ipv4`]), and for an IPv4 TCP or UDP packet that
//!    classification would send to connection tracking, its flow key and table hash
//!    ([`conntrack::vm_key_v4`]). Changes nothing.
//! 2. The runner warms the flow table for the candidates' lookups (as for the conntrack
//!    stage's vector).
//! 3. In arrival order, [`conntrack::track_vm`] looks each candidate up: a hit is
//!    tracked and gets the flow's cached action exactly as the conntrack stage gives it
//!    (the same `finish`), and the runner then runs the packet's remaining stages
//!    (routing, delivery or encapsulation: the same stage functions) at once, to the end.
//!    A miss, and every packet that is no candidate, starts the graph at classification
//!    as before.
//!
//! Nothing the fast path does differs from what the graph would do, which a test checks
//! by running random bursts through pipelines with and without it. Two things make that
//! hold beyond using the same functions: a flow is either found for all of a chunk's
//! candidates of its key or for none (the fast pass only looks up; flows are created by
//! the graph, after it), so the packets of one flow keep their order through the table;
//! and the VM's MAC is learned for the whole chunk before any packet is delivered, as
//! classification does (see [`classify::learn`]).
//!
//! Only a VF's chunk takes the fast path, and only without virtual services
//! (classification would look each packet up among them) and without a `--wcmp` split
//! over two PFs (the PF is then picked by dpservice's flow hash of each packet, which
//! the graph computes from its general parse): see [`applies`].

use crate::buf::PacketBuf;
use crate::config::PortRole;
use crate::graph::Ctx;
use crate::wire::{ethernet, ipv4};

use super::classify::{self, DHCP_SERVER_PORT};
use super::conntrack::{self, Flows, VmKey};
use super::virtsvc::VirtualServices;

/// What [`prepare`] found for one packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct Candidate {
    /// The packet may be an established flow's: `key` holds its key.
    ok: bool,
    key: VmKey,
}

impl Candidate {
    /// The key, when the packet is a candidate.
    pub fn key(&self) -> Option<&VmKey> {
        self.ok.then_some(&self.key)
    }
}

/// Whether the chunks of this burst take the fast path (see the module docs).
#[inline]
pub fn applies(ctx: &Ctx<'_>, svcs: &VirtualServices) -> bool {
    ctx.iface.is_some()
        && ctx.port.is_some_and(|p| p.role == PortRole::Vf)
        && svcs.is_empty()
        && !super::encap::wcmp_splits(ctx)
}

/// The first pass over a packet of a burst [`applies`] to: whether it is a candidate,
/// and its key. Changes nothing but `out`.
#[inline]
pub fn prepare<B: PacketBuf>(ctx: &Ctx<'_>, flows: &Flows, buf: &B, out: &mut Candidate) {
    out.ok = false;
    let Some(iface) = ctx.iface else { return };
    let data = buf.data();
    let Some(ip) = data.get(ethernet::HEADER_LEN..) else { return };
    if data.get(12..14) != Some(&ethernet::ETHERTYPE_IPV4.to_be_bytes()[..]) {
        return;
    }
    let Ok(info) = classify::inspect_ipv4(ip) else { return };
    // A first fragment of TCP or UDP (ports known), not for the DHCP server.
    match (info.protocol, info.dst_port) {
        (ipv4::PROTO_TCP, Some(_)) => {}
        (ipv4::PROTO_UDP, Some(p)) if p != DHCP_SERVER_PORT => {}
        _ => return,
    }
    out.ok = conntrack::vm_key_v4(ctx, flows, iface.vni, iface.ipv4, ip, &mut out.key);
}
