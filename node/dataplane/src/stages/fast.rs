//! The established-flow fast path: an IPv4 TCP or UDP packet whose flow exists, from a
//! VM or through the tunnel, skips classification's dispatch, the conntrack stage's
//! vector pass and the runner's queues.
//!
//! The graph's first stages do, for every packet of an established flow, work whose
//! result the flow table already holds: classification validates and dispatches, the
//! conntrack stage parses the packet again into a general form (any protocol, IPv4 or
//! IPv6, ICMP errors by their quote), and the runner moves the packet from queue to
//! queue. On a chunk, the runner first asks this module about every packet:
//!
//! 1. [`prepare`], over the whole chunk: the MACs the graph would learn are learned
//!    (a VM's as classification does, the router's as decapsulation does), and the
//!    checks of the graph's first stages are made with their own functions
//!    ([`classify::inspect_ipv4`] for a VM's packet; [`decap::check`] for tunnel
//!    traffic). For an IPv4 TCP or UDP packet that would reach connection tracking,
//!    its flow key and table hash follow ([`conntrack::key_v4`]). Nothing else
//!    changes.
//! 2. The runner warms the flow table for the candidates' lookups (as for the conntrack
//!    stage's vector).
//! 3. In arrival order, each candidate is looked up ([`conntrack::lookup_fast`], which
//!    changes nothing). On a hit, tunnel traffic is decapsulated ([`decap::strip`]), the
//!    packet is tracked and gets the flow's cached action exactly as the conntrack stage
//!    gives it ([`conntrack::track_fast`]: the same `finish`), and the runner runs its
//!    remaining stages (routing, delivery, encapsulation or relay: the same stage
//!    functions) at once, to the end. A miss, and every packet that is no candidate,
//!    starts the graph at classification as before.
//!
//! Nothing the fast path does differs from what the graph would do, which a test checks
//! by running random bursts through pipelines with and without it. Beyond using the
//! same functions, that holds because a flow is either found for all of a chunk's
//! candidates of its key or for none (the fast pass only looks up; flows are created by
//! the graph, after it, and the graph never changes a live flow), so the packets of a
//! flow keep their order through the table; and because every MAC is learned for the
//! whole chunk before any packet is delivered, as the graph's order of stages has it
//! (the graph's decapsulation then learns nothing more for the chunk).
//!
//! A VF's chunk takes the fast path only without virtual services (classification
//! would look each packet up among them) and without a `--wcmp` split over two PFs (the
//! PF is then picked by dpservice's flow hash of each packet, which the graph computes
//! from its general parse): see [`applies`]. A PF's chunk always does.

use crate::buf::PacketBuf;
use crate::config::PortRole;
use crate::graph::{Ctx, NeighTable};
use crate::wire::{ethernet, ipv4, ipv6};

use super::classify::{self, DHCP_SERVER_PORT};
use super::conntrack::{self, FastKey, Flows, Origin};
use super::decap::{self, Tunnel};
use super::virtsvc::VirtualServices;

/// What [`prepare`] found for one packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct Candidate {
    /// The packet may be an established flow's: `key` holds its key.
    ok: bool,
    key: FastKey,
    /// For tunnel traffic, what decapsulation found (else a VM's packet).
    tunnel: Option<Tunnel>,
}

impl Candidate {
    /// The key, when the packet is a candidate.
    pub fn key(&self) -> Option<&FastKey> {
        self.ok.then_some(&self.key)
    }
    /// Where the packet enters connection tracking from.
    pub fn origin(&self) -> Origin {
        match self.tunnel {
            Some(t) => Origin::Tunnel { target: t.target },
            None => Origin::Vf,
        }
    }
    /// For tunnel traffic, what decapsulation found (the runner strips the outer
    /// headers with it before tracking the packet).
    pub fn tunnel(&self) -> Option<&Tunnel> {
        self.tunnel.as_ref()
    }
}

/// Whether the chunks of this burst take the fast path (see the module docs).
#[inline]
pub fn applies(ctx: &Ctx<'_>, svcs: &VirtualServices) -> bool {
    match ctx.port.map(|p| p.role) {
        Some(PortRole::Vf) => ctx.iface.is_some() && svcs.is_empty() && !super::encap::wcmp_splits(ctx),
        // Tunnel traffic never meets a virtual service (classification looks up only
        // non-tunnel IPv6 on a PF) and never uses the flow hash.
        Some(PortRole::Pf(_)) => true,
        None => false,
    }
}

/// The first pass over a packet of a burst [`applies`] to: learns the MAC the graph
/// would learn from it (a VM's, as classification does; the router's, as decapsulation
/// does), and finds whether it is a candidate, with its key. Changes nothing else.
#[inline]
pub fn prepare<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, flows: &Flows, buf: &B, out: &mut Candidate) {
    out.ok = false;
    match ctx.port.map(|p| p.role) {
        Some(PortRole::Vf) => prepare_vm(ctx, neigh, flows, buf, out),
        Some(PortRole::Pf(_)) => prepare_tunnel(ctx, neigh, flows, buf, out),
        None => {}
    }
}

/// [`prepare`] for a VM's frame.
#[inline]
fn prepare_vm<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, flows: &Flows, buf: &B, out: &mut Candidate) {
    classify::learn(ctx, neigh, buf);
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
    out.tunnel = None;
    out.ok = conntrack::key_v4(ctx, flows, Origin::Vf, ip, &mut out.key);
}

/// [`prepare`] for a frame on a PF.
#[inline]
fn prepare_tunnel<B: PacketBuf>(
    ctx: &Ctx<'_>,
    neigh: &NeighTable,
    flows: &Flows,
    buf: &B,
    out: &mut Candidate,
) {
    // Classification sends IPv6 with next header 4 or 41 to decapsulation, whose checks
    // come first.
    let data = buf.data();
    if data.get(12..14) != Some(&ethernet::ETHERTYPE_IPV6.to_be_bytes()[..]) {
        return;
    }
    let Ok(t) = decap::check(ctx, buf) else { return };
    decap::learn(ctx, neigh, buf);
    if !t.inner_v4
        || !matches!(t.inner.protocol, ipv4::PROTO_TCP | ipv4::PROTO_UDP)
        || t.inner.dst_port.is_none()
    {
        return;
    }
    let Some(ip) = data.get(ethernet::HEADER_LEN + ipv6::HEADER_LEN..) else { return };
    out.tunnel = Some(t);
    out.ok = conntrack::key_v4(ctx, flows, Origin::Tunnel { target: t.target }, ip, &mut out.key);
}
