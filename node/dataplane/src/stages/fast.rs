//! The established-flow fast path: an IPv4 TCP or UDP packet whose flow exists, from a
//! VM or through the tunnel, skips classification's dispatch, the conntrack stage's
//! vector pass and the runner's queues.
//!
//! The graph's first stages do, for every packet of an established flow, work whose
//! result the flow table already holds: classification validates and dispatches, the
//! conntrack stage parses the packet again into a general form (any protocol, IPv4 or
//! IPv6, ICMP errors by their quote), and the runner moves the packet from queue to
//! queue. On a chunk, the express lane first takes the run of packets from the chunk's
//! start that it holds ([`super::express::Express::run_held`], which parses them with
//! [`vm_raw`] or [`tunnel_raw`], the reads of [`prepare`]); then the runner asks this
//! module about every other packet:
//!
//! 1. [`learn_chunk`] and [`prepare`], over the whole chunk: the MACs the graph would
//!    learn are learned (a VM's as classification does, the router's as decapsulation
//!    does), and the checks of the graph's first stages are made with their own
//!    functions ([`classify::inspect_ipv4`] for a VM's packet; [`decap::check_outer`]
//!    and [`decap::check_inner`] for tunnel traffic). For an IPv4 TCP or UDP packet
//!    that would reach connection tracking, its flow key and table hash follow
//!    ([`conntrack::key_v4`]). For IPv4 without options, the usual case (a VM's
//!    packet, or a tunnel's inner one), one fixed-size read gives the checks and the
//!    fields of the key at once (`plain_v4`, tested against those functions); the
//!    express lane ([`super::express`]) is asked first whether it has a record for
//!    them that holds, and only if not is the key computed ([`key_now`]). Nothing else
//!    changes.
//! 2. The runner reads the index slot of every keyed candidate's look-up, then looks
//!    them all up in one loop ([`conntrack::lookup_fast`], which changes nothing), so
//!    that the cache misses of a large table overlap.
//! 3. In arrival order, a packet with a record gets its recorded outcome
//!    ([`super::express::Express::apply`]); on a hit, tunnel traffic is decapsulated ([`decap::strip`]), the
//!    packet is tracked and gets the flow's cached action exactly as the conntrack stage
//!    gives it ([`conntrack::track_fast`]: the same `finish`), and the runner runs its
//!    remaining stages (routing, delivery, encapsulation or relay: the same stage
//!    functions) at once, to the end. A miss, and every packet that is no candidate,
//!    starts the graph at classification as before. A hit that left on a port is
//!    recorded for the express lane once the chunk is through.
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
use crate::wire::{checksum, ethernet, ipv4, ipv6};

use super::classify::{self, L4Info, DHCP_SERVER_PORT};
use super::conntrack::{self, FastKey, Flows, Origin};
use super::decap::{self, TargetMemo, Tunnel};
use super::express::{self, Raw};
use super::virtsvc::VirtualServices;
use crate::config::UnderlayTarget;

/// What [`prepare`] found for one packet.
#[derive(Clone, Copy, Debug, Default)]
pub struct Candidate {
    /// The packet may be an established flow's: `key` holds its key.
    ok: bool,
    key: FastKey,
    /// For tunnel traffic, what decapsulation found (else a VM's packet).
    tunnel: Option<Tunnel>,
    /// An option-less packet: its fields, for the express lane ([`super::express`]);
    /// its key is computed only if the lane has no record for it ([`key_now`]).
    raw: Option<Raw>,
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
    /// The fields the express lane keys on, for an option-less packet.
    pub fn raw(&self) -> Option<&Raw> {
        self.raw.as_ref()
    }
    /// For tunnel traffic, what the outer destination stands for.
    pub fn target(&self) -> Option<UnderlayTarget> {
        self.tunnel.map(|t| t.target)
    }
    /// [`Candidate::target`] as the express lane compares it.
    pub fn target_code(&self) -> u64 {
        express::target_code(self.target())
    }
}

/// Computes the key of a candidate whose key [`prepare`] left for later (an option-less
/// packet, see [`Candidate::raw`]), from the packet `buf` as `prepare` saw it.
#[inline]
pub fn key_now<B: PacketBuf>(ctx: &Ctx<'_>, flows: &Flows, buf: &B, c: &mut Candidate) {
    let Some(raw) = c.raw else { return };
    let at = ethernet::HEADER_LEN + if c.tunnel.is_some() { ipv6::HEADER_LEN } else { 0 };
    let Some(h) = buf.data().get(at..).and_then(|ip| ip.first_chunk()) else { return };
    let origin = c.origin();
    c.ok = conntrack::key_v4_fields(ctx, flows, origin, h, (raw.sp(), raw.dp(), raw.tcp_flags), &mut c.key);
}

/// The express lane's fields of a packet `plain_v4` read.
#[inline]
fn raw_of(p: &Plain<'_>) -> Raw {
    let f = p.first;
    #[allow(clippy::cast_possible_truncation)] // an IPv4 total length
    let total = p.total as u16;
    Raw {
        addrs: u64::from_ne_bytes([f[12], f[13], f[14], f[15], f[16], f[17], f[18], f[19]]),
        ports: u32::from_ne_bytes([f[20], f[21], f[22], f[23]]),
        proto: f[9],
        tcp_flags: p.ports.2,
        total,
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

/// Learns what the graph would learn from a chunk of a burst [`applies`] to, from a
/// VF: classification learns the VM's MAC from each frame ([`classify::learn`]); the
/// neighbour table keeps one MAC per port and nothing reads it before the whole chunk
/// is learned (see the module docs), so only the last frame it learns from counts.
/// (Frames on a PF are learned from one by one by [`prepare`].)
#[inline]
pub fn learn_chunk<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, pkts: &[B]) {
    if ctx.port.map(|p| p.role) != Some(PortRole::Vf) {
        return;
    }
    if let Some(mac) = pkts.iter().rev().find_map(|b| classify::learnable(ctx, b)) {
        neigh.learn(ctx.in_port, mac);
    }
}

/// The first pass over a packet of a burst [`applies`] to, after [`learn_chunk`]: learns
/// the router's MAC from tunnel traffic as decapsulation does, and finds whether the
/// packet is a candidate, with its key (or, for an option-less packet, the fields the
/// express lane keys on, the key following from [`key_now`] if the lane has no record).
/// Changes nothing else. `memo` carries the last underlay address looked up from packet
/// to packet of the burst (see [`decap::check_outer_with`]).
#[inline]
pub fn prepare<B: PacketBuf>(
    ctx: &Ctx<'_>,
    neigh: &NeighTable,
    flows: &Flows,
    buf: &B,
    memo: &mut TargetMemo,
    out: &mut Candidate,
) {
    out.ok = false;
    out.raw = None;
    match ctx.port.map(|p| p.role) {
        Some(PortRole::Vf) => prepare_vm(ctx, flows, buf, out),
        Some(PortRole::Pf(_)) => prepare_tunnel(ctx, neigh, flows, buf, memo, out),
        None => {}
    }
}

/// [`prepare`] for a VM's frame.
#[inline]
fn prepare_vm<B: PacketBuf>(ctx: &Ctx<'_>, flows: &Flows, buf: &B, out: &mut Candidate) {
    let data = buf.data();
    if data.get(12..14) != Some(&ethernet::ETHERTYPE_IPV4.to_be_bytes()[..]) {
        return;
    }
    out.tunnel = None;
    match data.get(ethernet::HEADER_LEN..).filter(|ip| is_plain(ip)) {
        // The key waits for the express lane's answer.
        Some(ip) => out.raw = plain_vm(ip),
        None => prepare_vm_any(ctx, flows, data, out),
    }
}

/// For a VM's IPv4 packet [`is_plain`] accepts: the express lane's fields if it is a
/// candidate. A plain header decides: what `plain_v4` refuses, the general checks
/// refuse.
#[inline(always)]
fn plain_vm(ip: &[u8]) -> Option<Raw> {
    let p = plain_v4(ip)?;
    if p.header[9] == ipv4::PROTO_UDP && p.ports.1 == DHCP_SERVER_PORT {
        return None;
    }
    Some(raw_of(&p))
}

/// A VM's frame that [`prepare`] makes an option-less candidate of: its fields for the
/// express lane (exactly [`Candidate::raw`] after `prepare`). `None` for every other
/// frame.
#[inline(always)]
pub fn vm_raw(data: &[u8]) -> Option<Raw> {
    if data.get(12..14) != Some(&ethernet::ETHERTYPE_IPV4.to_be_bytes()[..]) {
        return None;
    }
    plain_vm(data.get(ethernet::HEADER_LEN..).filter(|ip| is_plain(ip))?)
}

/// Whether `ip` starts with an IPv4 header without options and holds 8 bytes more (the
/// start of any L4 header): the packets [`plain_v4`] answers for.
#[inline]
fn is_plain(ip: &[u8]) -> bool {
    ip.len() >= ipv4::MIN_HEADER_LEN + 8 && ip[0] == 0x45
}

/// What [`plain_v4`] reads from a packet.
struct Plain<'a> {
    /// The IPv4 header.
    header: &'a [u8; ipv4::MIN_HEADER_LEN],
    /// The IPv4 header and the L4 header's first 8 bytes.
    first: &'a [u8; ipv4::MIN_HEADER_LEN + 8],
    /// Source and destination port, TCP flags (zero for UDP).
    ports: (u16, u16, u8),
    /// The total length.
    total: usize,
}

/// For an IPv4 packet [`is_plain`] accepts (`ip` may carry padding): whether
/// [`classify::inspect_ipv4`] accepts it as TCP or UDP with ports (a first fragment),
/// and then the fields [`conntrack::key_v4`] reads, from one fixed-size read and with
/// the header checksum summed without a loop. `None` for every other packet. The same
/// answers as the general functions, which a test checks.
#[inline]
fn plain_v4(ip: &[u8]) -> Option<Plain<'_>> {
    let f = ip.first_chunk::<{ ipv4::MIN_HEADER_LEN + 8 }>()?;
    let header = f.first_chunk::<{ ipv4::MIN_HEADER_LEN }>()?;
    let rd = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    let total = usize::from(rd(2));
    let frag_offset = rd(6) & 0x1fff;
    if header[0] != 0x45 || total < ipv4::MIN_HEADER_LEN || total > ip.len() || frag_offset != 0 {
        return None;
    }
    if !checksum::verifies_header(header) {
        return None;
    }
    let l4 = ipv4::MIN_HEADER_LEN;
    let (sp, dp, payload) = (rd(l4), rd(l4 + 2), total - ipv4::MIN_HEADER_LEN);
    let tcp_flags = match header[9] {
        // The TCP header is in the packet (its payload), so byte 13 of it is in `ip`.
        ipv4::PROTO_TCP if payload >= 20 => *ip.get(l4 + 13)?,
        ipv4::PROTO_UDP if payload >= 8 => 0,
        _ => return None,
    };
    Some(Plain { header, first: f, ports: (sp, dp, tcp_flags), total })
}

/// [`prepare_vm`] for any other frame: IPv4 with options, or too short to hold an
/// option-less header and 8 bytes more (and then no candidate).
#[cold]
fn prepare_vm_any(ctx: &Ctx<'_>, flows: &Flows, data: &[u8], out: &mut Candidate) {
    let Some(ip) = data.get(ethernet::HEADER_LEN..) else { return };
    let Ok(info) = classify::inspect_ipv4(ip) else { return };
    // A first fragment of TCP or UDP (ports known), not for the DHCP server.
    match (info.protocol, info.dst_port) {
        (ipv4::PROTO_TCP, Some(_)) => {}
        (ipv4::PROTO_UDP, Some(p)) if p != DHCP_SERVER_PORT => {}
        _ => return,
    }
    out.ok = conntrack::key_v4(ctx, flows, Origin::Vf, ip, &mut out.key);
}

/// [`prepare`] for a frame on a PF.
#[inline]
fn prepare_tunnel<B: PacketBuf>(
    ctx: &Ctx<'_>,
    neigh: &NeighTable,
    flows: &Flows,
    buf: &B,
    memo: &mut TargetMemo,
    out: &mut Candidate,
) {
    // Classification sends IPv6 with next header 4 or 41 to decapsulation, whose checks
    // come first.
    let data = buf.data();
    if data.get(12..14) != Some(&ethernet::ETHERTYPE_IPV6.to_be_bytes()[..]) {
        return;
    }
    let Ok(outer) = decap::check_outer_with(ctx, buf, memo) else { return };
    let Some(p) = plain_inner(&outer) else {
        if let Ok(t) = decap::check_inner(&outer) {
            decap::learn(ctx, neigh, buf);
            prepare_tunnel_any(ctx, flows, data, t, out);
        }
        return;
    };
    decap::learn(ctx, neigh, buf);
    let inner = L4Info { protocol: p.header[9], dst_port: Some(p.ports.1), icmp_type: None, ip_len: p.total };
    let target = outer.target;
    out.tunnel = Some(Tunnel { target, inner, inner_v4: true, outer_src: outer.src() });
    out.raw = Some(raw_of(&p));
}

/// Inner IPv4 TCP or UDP without options, the usual case: `plain_v4` checks it as
/// decapsulation would and reads its key. `None` for anything else, which takes the
/// general checks; UDP to the DHCP server, which connection tracking drops from the
/// tunnel, among them (they refuse it).
#[inline(always)]
fn plain_inner<'a>(outer: &decap::Outer<'a>) -> Option<Plain<'a>> {
    (outer.next_header == ipv6::NH_IPV4)
        .then(|| plain_v4(outer.payload))
        .flatten()
        .filter(|p| !(p.header[9] == ipv4::PROTO_UDP && p.ports.1 == DHCP_SERVER_PORT))
}

/// A frame on a PF that [`prepare`] makes an option-less candidate of: its inner
/// packet's fields for the express lane and the code of what the outer destination
/// stands for (exactly [`Candidate::raw`] and [`Candidate::target_code`] after
/// `prepare`; the memo keeps the code with the target). `None` for
/// every other frame. Unlike `prepare`, it learns nothing: the caller learns the
/// router's MAC from the run of frames it accepted ([`decap::learn_last`]) before
/// delivering any.
#[inline(always)]
pub fn tunnel_raw<B: PacketBuf>(ctx: &Ctx<'_>, buf: &B, memo: &mut TargetMemo) -> Option<(Raw, u64)> {
    if buf.data().get(12..14) != Some(&ethernet::ETHERTYPE_IPV6.to_be_bytes()[..]) {
        return None;
    }
    let outer = decap::check_outer_with(ctx, buf, memo).ok()?;
    Some((raw_of(&plain_inner(&outer)?), outer.target_code))
}

/// [`prepare_tunnel`] for what decapsulation accepts but `plain_v4` does not.
#[cold]
fn prepare_tunnel_any(ctx: &Ctx<'_>, flows: &Flows, data: &[u8], t: Tunnel, out: &mut Candidate) {
    if !t.inner_v4
        || !matches!(t.inner.protocol, ipv4::PROTO_TCP | ipv4::PROTO_UDP)
        || t.inner.dst_port.is_none()
        || (t.inner.protocol == ipv4::PROTO_UDP && t.inner.dst_port == Some(DHCP_SERVER_PORT))
    {
        return;
    }
    let Some(ip) = data.get(ethernet::HEADER_LEN + ipv6::HEADER_LEN..) else { return };
    out.tunnel = Some(t);
    out.ok = conntrack::key_v4(ctx, flows, Origin::Tunnel { target: t.target }, ip, &mut out.key);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::graph::testkit::{self, ports};
    use crate::graph::PipelineConfig;
    use crate::tables::conntrack::Conntrack;
    use crate::tables::nat::NatMappings;

    /// vm1's TCP (or UDP) frame to vm2 with IPv4 total length `total`, `len` bytes of
    /// the frame kept, with `edits` (offset from the IPv4 header, value) applied and the
    /// header checksum fixed afterwards unless `keep_checksum`.
    fn frame(tcp: bool, len: usize, total: u16, edits: &[(usize, u8)], keep_checksum: bool) -> Vec<u8> {
        let mut f = vec![0u8; 74];
        f[..6].copy_from_slice(&testkit::vm_mac(1));
        f[6..12].copy_from_slice(&testkit::vm_mac(0));
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..];
        ip[..12].copy_from_slice(&[0x45, 0, 0, 60, 0, 1, 0x40, 0, 64, if tcp { 6 } else { 17 }, 0, 0]);
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[12..20].copy_from_slice(&[10, 100, 1, 1, 10, 100, 1, 2]);
        ip[20..24].copy_from_slice(&[0x04, 0xd2, 0x00, 0x50]);
        ip[33] = 0x12;
        for &(at, v) in edits {
            if let Some(b) = ip.get_mut(at % 60) {
                *b = v;
            }
        }
        if !keep_checksum {
            let hl = usize::from(ip[0] & 0x0f) * 4;
            if let Some(h) = ip.get_mut(..hl.max(20)) {
                h[10..12].fill(0);
                let ck = checksum::checksum(h);
                h[10..12].copy_from_slice(&ck.to_be_bytes());
            }
        }
        f.truncate(len);
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]
        /// The option-less shortcut answers exactly as the general checks and key.
        #[test]
        fn plain_ipv4_is_read_as_any_ipv4(
            tcp: bool,
            len in 34usize..75,
            total in prop_oneof![Just(60u16), 0u16..80, 20u16..50],
            edits in proptest::collection::vec((prop_oneof![0usize..12, 0usize..60], any::<u8>()), 0..3),
            keep_checksum in proptest::bool::weighted(0.1),
        ) {
            let snap = testkit::lab();
            let ctx = Ctx::new(&snap, ports::VM1, 0);
            let cfg = PipelineConfig::small();
            let flows = Flows {
                table: Conntrack::new(&cfg.flows).unwrap(),
                nat: NatMappings::new(cfg.nat).unwrap(),
                addrs: crate::tables::addrpool::AddrPool::new(16),
                enforce_firewall: false,
                lb: Default::default(),
            };
            let f = frame(tcp, len, total, &edits, keep_checksum);
            // The shortcut against the general checks and key, for every packet it
            // answers for (as the VM's frame here, or as a tunnel's inner packet).
            let ip = &f[14..];
            if is_plain(ip) {
                let general = classify::inspect_ipv4(ip)
                    .ok()
                    .filter(|i| matches!(i.protocol, ipv4::PROTO_TCP | ipv4::PROTO_UDP) && i.dst_port.is_some());
                let plain = plain_v4(ip);
                prop_assert_eq!(plain.is_some(), general.is_some());
                if let (Some(p), Some(g)) = (plain, general) {
                    prop_assert_eq!((p.header[9], Some(p.ports.1), p.total), (g.protocol, g.dst_port, g.ip_len));
                    let (mut short, mut long) = (FastKey::default(), FastKey::default());
                    let origin = Origin::Vf;
                    prop_assert!(conntrack::key_v4_fields(&ctx, &flows, origin, p.header, p.ports, &mut short));
                    prop_assert!(conntrack::key_v4(&ctx, &flows, origin, ip, &mut long));
                    prop_assert_eq!(short, long);
                }
            }
            // And the VM's whole first pass.
            let (mut fast, mut any) = (Candidate::default(), Candidate::default());
            let buf = crate::buf::TestBuf::new(&f);
            prepare_vm(&ctx, &flows, &buf, &mut fast);
            key_now(&ctx, &flows, &buf, &mut fast);
            prepare_vm_any(&ctx, &flows, &f, &mut any);
            prop_assert_eq!(fast.key(), any.key());
        }
    }
}
