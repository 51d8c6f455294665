//! The express lane: a per-worker cache of what the fast path did with a packet of an
//! established flow, so that the flow's later packets skip the flow key, the flow
//! table's index and the stages after connection tracking.
//!
//! For an option-less IPv4 TCP or UDP packet of a known flow (a VM's, or a tunnel's
//! delivered to a VM), everything the graph does after tracking the packet depends on
//! the packet only through its addresses, ports and protocol, the port it came in on
//! and (through the tunnel) what the outer destination stands for; on the flow's cached
//! action; and on the snapshot. Everything else is per packet and done afresh: the
//! flow's expiry and TCP state, the rewrite's stores and checksum updates, the TTL and
//! truncation of routing, the IPv6 payload length of encapsulation, and the destination
//! MAC, read from the learned neighbours as delivery reads it.
//!
//! So when a packet has taken the fast path and left the graph on a port, the runner
//! records ([`Express::fill`]) those fields exactly, with: the flow it found, by entry
//! and stamp ([`crate::tables::conntrack::Conntrack::stamp`]); the flow's rewrite,
//! compiled for packets with those fields (`compiled.rs`: the old values are the
//! recorded ones, so each checksum update is a constant); and the header the delivery
//! stages put in front of the IP packet (Ethernet, or Ethernet and the encapsulating
//! IPv6 header), as bytes. A later packet with the same fields in the same epoch
//! ([`Express::locate`]) is the same flow's if the entry still holds that flow, live
//! and unchanged: the same stamp ([`Express::holds`]). Then it is tracked and given the
//! recorded outcome ([`Express::apply`]) without a look-up. An epoch that every new
//! snapshot moves on makes every record stale at once; so does the flow table's era,
//! which moves on when an entry's stamp comes round ([`Express::sync_era`]).
//!
//! At the start of a chunk, [`Express::run_held`] takes the run of packets the lane
//! holds in a few tight loops (fields, records, flows, outcomes), without the fast
//! path's per-packet candidates; the fast path's passes take the rest of the chunk
//! and ask the lane packet by packet.
//!
//! Records are 64 bytes; a key may sit in either slot of two 2-slot buckets (the second
//! chosen by the hash's high half), so that a working set of half as many flow
//! directions as records keeps its records (measured in docs/benchmarks.md). The headers
//! are interned per epoch in a table allocated at its largest up front: recording never
//! allocates.
//!
//! Only the plain cases are recorded: a VM's packet routed to a VM or into the tunnel, and
//! a tunnel packet delivered to a VM, with no rewrite or an address (and port) rewrite.
//! NAT64, relays and everything the fast path does not take go the usual way. The
//! fast-path test that compares pipelines with and without the fast path covers this lane
//! too.

use std::net::Ipv4Addr;

use crate::buf::PacketBuf;
use crate::config::{PortId, PortRole, UnderlayTarget};
use crate::graph::{Ctx, DropReason, NeighTable, Stage, Verdict, CHUNK};
use crate::tables::conntrack::{Dir, FlowId};
use crate::tables::mix::fold_mul;
use crate::wire::{ethernet, ipv4, ipv6};

use super::conntrack::{self, Flows, Rewrite};

mod compiled;
use compiled::Compiled;

/// The fields of an option-less IPv4 TCP or UDP packet the lane keys on, as the fast
/// path's first pass read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Raw {
    /// Source and destination address as the packet carries them (bytes 12 to 19 of
    /// the IPv4 header), read as one word in native byte order.
    pub addrs: u64,
    /// Source and destination port as the packet carries them (the L4 header's first
    /// four bytes), read alike.
    pub ports: u32,
    /// IP protocol (TCP or UDP).
    pub proto: u8,
    /// TCP flags (zero for UDP).
    pub tcp_flags: u8,
    /// The IPv4 total length.
    pub total: u16,
}

impl Raw {
    /// The source address.
    pub fn src(&self) -> Ipv4Addr {
        let [a, b, c, d, ..] = self.addrs.to_ne_bytes();
        Ipv4Addr::new(a, b, c, d)
    }

    /// The destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let [.., a, b, c, d] = self.addrs.to_ne_bytes();
        Ipv4Addr::new(a, b, c, d)
    }

    /// The source port.
    pub fn sp(&self) -> u16 {
        let [a, b, ..] = self.ports.to_ne_bytes();
        u16::from_be_bytes([a, b])
    }

    /// The destination port.
    pub fn dp(&self) -> u16 {
        let [.., a, b] = self.ports.to_ne_bytes();
        u16::from_be_bytes([a, b])
    }

    /// The lane's hash of these fields and the input port.
    #[inline]
    fn hash(&self, in_port: PortId) -> u64 {
        let b = u64::from(self.ports) << 32 | u64::from(self.proto) << 16 | u64::from(in_port);
        // A second round, so that every input bit reaches the bucket bits: with one,
        // `burst_loop`'s 65,536 SNAT flows found their records for 98.9 % of their
        // packets instead of 99.3 %.
        fold_mul(
            fold_mul(self.addrs ^ 0x243f_6a88_85a3_08d3, b ^ 0x1319_8a2e_0370_7344),
            0xa409_3822_299f_31d0,
        )
    }
}

/// What the lane does with a packet after tracking it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
enum Lane {
    /// No record.
    #[default]
    Empty,
    /// A VM's packet routed to a VF: rewrite, TTL, Ethernet header.
    VmToVf,
    /// A VM's packet routed into the tunnel: rewrite, TTL, IPv6 and Ethernet header.
    VmToTunnel,
    /// A tunnel packet delivered to a VF: decapsulation, rewrite, Ethernet header.
    TunnelToVf,
}

impl Lane {
    /// The stages a packet of the lane passes, in order (the fast path's and the
    /// express lane's counters first).
    fn stages(self) -> &'static [Stage] {
        match self {
            Lane::Empty => &[],
            Lane::VmToVf => &[Stage::FastPath, Stage::Express, Stage::Route4, Stage::VfTx],
            Lane::VmToTunnel => &[Stage::FastPath, Stage::Express, Stage::Route4, Stage::Encap, Stage::PfTx],
            Lane::TunnelToVf => &[Stage::FastPath, Stage::Express, Stage::Decap, Stage::VfTx],
        }
    }
}

/// Counts the stages a packet of `lane` passed up to and including `at`, where it was
/// dropped for `reason`; returns the verdict.
#[cold]
fn dropped(ran: &mut StageCounts, lane: Lane, at: Stage, reason: DropReason) -> Verdict {
    for &stage in lane.stages() {
        ran[stage as usize] += 1;
        if stage == at {
            break;
        }
    }
    Verdict::Drop(reason)
}

/// The rewrite and TTL decrement of a packet the compiled rewrite refused (see
/// [`Compiled::apply`]), the general way: the verdict if that drops it.
#[cold]
fn rewrite_and_route<B: PacketBuf>(s: &Slot, buf: &mut B, ran: &mut StageCounts) -> Option<Verdict> {
    let rw = s.compiled.rewrite();
    if rw != Rewrite::None && !conntrack::apply_rewrite(rw, false, buf) {
        return Some(dropped(ran, s.lane, Stage::Express, DropReason::Malformed));
    }
    if s.lane != Lane::TunnelToVf {
        let Some(h) = buf.data_mut().get_mut(ethernet::HEADER_LEN..).and_then(|ip| ip.first_chunk_mut())
        else {
            return Some(dropped(ran, s.lane, Stage::Route4, DropReason::Malformed));
        };
        if !ipv4::decrement_ttl_header(h) {
            return Some(dropped(ran, s.lane, Stage::Route4, DropReason::TtlExpired));
        }
    }
    None
}

/// One record. One cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Slot {
    /// The packet's addresses as [`Raw::addrs`] has them.
    addrs: u64,
    /// The epoch, the input port and the protocol ([`check_word`]).
    check: u64,
    /// For tunnel traffic, what the outer destination stood for ([`target_code`]).
    target: u64,
    /// The packet's ports as [`Raw::ports`] has them.
    ports: u32,
    flow: FlowId,
    /// The flow's stamp when recorded ([`crate::tables::conntrack::Conntrack::stamp`]).
    stamp: u16,
    out_port: PortId,
    /// Index of the header in [`Express::headers`].
    header: u16,
    lane: Lane,
    /// The destination MAC is the learned neighbour's (else the header's own).
    learned_mac: bool,
    /// The flow's rewrite in this direction, with the lane's TTL decrement.
    compiled: Compiled,
}

/// The word a record's `check` holds for an epoch, an input port and a protocol.
#[inline]
fn check_word(epoch: u16, in_port: PortId, proto: u8) -> u64 {
    u64::from(epoch) << 32 | u64::from(in_port) << 8 | u64::from(proto)
}

/// A number for each underlay target (and 0 for none: a VM's packet), equal for equal
/// targets only.
#[inline]
pub fn target_code(t: Option<UnderlayTarget>) -> u64 {
    let (kind, port, vni) = match t {
        None => return 0,
        Some(UnderlayTarget::Interface(p)) => (1, p, 0),
        Some(UnderlayTarget::AliasPrefix(p)) => (2, p, 0),
        Some(UnderlayTarget::LbPrefix(p)) => (3, p, 0),
        Some(UnderlayTarget::Vip(p)) => (4, p, 0),
        Some(UnderlayTarget::Nat { port, vni }) => (5, port, vni),
        Some(UnderlayTarget::Lb { vni }) => (6, 0, vni),
    };
    kind << 56 | u64::from(port) << 32 | u64::from(vni)
}

/// The most distinct headers recorded per epoch (every VF, and every underlay address a
/// VNI's routes lead to, per interface).
const MAX_HEADERS: usize = 4096;

/// Length of the longest header: Ethernet and IPv6.
const MAX_HEADER: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN;

/// One worker's express lane. See the module docs.
#[derive(Debug)]
pub struct Express {
    slots: Box<[Slot]>,
    /// `slots.len() - 1`; the length is a power of two, at least 4.
    mask: usize,
    /// Never 0 (the epoch of no record).
    epoch: u16,
    /// The flow table's era the records were made in.
    era: u64,
    /// The headers put in front of the IP packet (the destination MAC zeroed where it is
    /// the learned one), 14 or 54 bytes of each used.
    headers: Vec<[u8; MAX_HEADER]>,
    header_index: rustc_hash::FxHashMap<[u8; MAX_HEADER], u16>,
}

/// The arrays [`Express::run_held`] fills for a chunk, kept from chunk to chunk so that
/// none is filled anew for each.
#[derive(Debug)]
pub struct Scratch {
    raws: [Raw; CHUNK],
    hashes: [u64; CHUNK],
    targets: [u64; CHUNK],
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch { raws: [Raw::default(); CHUNK], hashes: [0; CHUNK], targets: [0; CHUNK] }
    }
}

/// What [`Express::run_held`] did with the start of a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// How many packets it took (from the first on).
    pub done: usize,
    /// The port all of them leave on, if it took any, dropped none and there is one
    /// (else the caller reads their verdicts, to count drops among them).
    pub single: Option<PortId>,
}

/// No record for a packet (see [`Express::locate`]).
pub const NO_RECORD: u32 = u32::MAX;

/// Packets an express chunk sent through each stage, to add to the stage counters.
pub type StageCounts = [usize; Stage::ALL.len()];

impl Express {
    /// A lane of `slots` records (rounded up to a power of two, at least 4 and at most
    /// 2^30; 64 bytes each).
    pub fn new(slots: usize) -> Self {
        let n = slots.clamp(4, 1 << 30).next_power_of_two();
        Express {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
            epoch: 1,
            era: 0,
            // Both at their largest from the start: recording never allocates.
            headers: Vec::with_capacity(MAX_HEADERS),
            header_index: rustc_hash::FxHashMap::with_capacity_and_hasher(MAX_HEADERS, Default::default()),
        }
    }

    /// Where the records lie: (address, bytes).
    pub fn region(&self) -> (usize, usize) {
        (self.slots.as_ptr().addr(), std::mem::size_of_val(&*self.slots))
    }

    /// Makes every record stale when the flow table's era (see
    /// [`crate::tables::conntrack::Conntrack::era`]) moved on since the last call: call
    /// before every burst.
    #[inline]
    pub fn sync_era(&mut self, flows: &Flows) {
        let era = flows.table.era();
        if era != self.era {
            self.era = era;
            self.new_epoch();
        }
    }

    /// Makes every record stale: call for every new snapshot.
    pub fn new_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            // Once every 65,535 snapshots: no record may look current by chance.
            self.slots.fill(Slot::default());
            self.epoch = 1;
        }
        self.headers.clear();
        self.header_index.clear();
    }

    /// The two buckets (of two slots each) a hash may be recorded in.
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // masked
    fn buckets(&self, h: u64) -> [usize; 2] {
        let second = (h >> 32).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20;
        [h as usize & self.mask & !1, second as usize & self.mask & !1]
    }

    /// Where the record for a packet with fields `raw` from `ctx.in_port` (through the
    /// tunnel, for target `target`, see [`target_code`]) is, if there is one in this
    /// epoch; [`NO_RECORD`] if none. Whether it still holds is [`Express::holds`]'s
    /// question.
    #[inline]
    pub fn locate(&self, ctx: &Ctx<'_>, raw: &Raw, target: u64) -> u32 {
        // Below the slot count, which fits 32 bits (see `new`).
        let found = self.find(ctx, raw, raw.hash(ctx.in_port), target);
        found.and_then(|i| u32::try_from(i).ok()).unwrap_or(NO_RECORD)
    }

    /// The index of the record for a packet with hash `h` ([`Raw::hash`]), as
    /// [`Express::locate`] finds it.
    #[inline(always)]
    fn find(&self, ctx: &Ctx<'_>, raw: &Raw, h: u64, target: u64) -> Option<usize> {
        let (addrs, ports, check) = (raw.addrs, raw.ports, check_word(self.epoch, ctx.in_port, raw.proto));
        let mine = |i: usize| {
            self.slots.get(i).is_some_and(|s| {
                s.addrs == addrs && s.ports == ports && s.check == check && s.target == target
            })
        };
        let [b1, b2] = self.buckets(h);
        [b1, b1 | 1, b2, b2 | 1].into_iter().find(|&i| mine(i))
    }

    /// Starts loading the flow entries the records `found` (from [`Express::locate`])
    /// name, so that their cache misses overlap before [`Express::holds`] needs them.
    #[inline]
    pub fn warm_flows(&self, flows: &Flows, found: &[u32]) {
        for s in found.iter().filter_map(|&i| self.slots.get(i as usize)) {
            flows.table.prefetch_expiry(s.flow);
        }
    }

    /// Whether record `i` (from [`Express::locate`], for the same packet) still names
    /// the flow it was recorded for, live and unchanged (its stamp, see
    /// [`crate::tables::conntrack::Conntrack::stamp`]; the lane's epoch moves on with
    /// the table's era, see [`Express::sync_era`]). The record's packet fields are the
    /// packet's, in the same epoch, so the packet has that flow's key. Changes nothing.
    #[inline]
    pub fn holds(&self, ctx: &Ctx<'_>, flows: &Flows, i: u32) -> bool {
        let Some(s) = self.slots.get(i as usize) else { return false };
        flows.table.is_current(s.flow, s.stamp, ctx.now_ns)
    }

    /// The start of a chunk on a port the fast path applies to (its VMs' MACs learned)
    /// that the lane holds: the longest run of packets from the first on that `parse`
    /// makes option-less candidates (their fields and [`target_code`]:
    /// [`super::fast::vm_raw`] for a VM's packet, [`super::fast::tunnel_raw`] for
    /// tunnel traffic) with records that hold. `parsed_run` sees the packets `parse`
    /// accepted (from the first on) before anything else happens to them: the caller
    /// learns the router's MAC from a tunnel's there. Each packet of the run is tracked
    /// and given its outcome in order ([`Express::apply`]) and its verdict written to
    /// `verdicts`; the answer ([`Held`]) is how many there were, and the port they all
    /// leave on. The rest of the chunk is untouched (but for what `parsed_run` learned
    /// from it, which the fast path's passes learn again, in the same order) and takes
    /// those passes, which ask the lane packet by packet.
    ///
    /// The same answers as running the whole chunk through those passes: the same
    /// fields, the same record look-up and check, the same outcome, in the same order
    /// (those passes too give each packet with a record that holds its outcome in
    /// arrival order, and leave the graph's packets for after the chunk's fast ones,
    /// none of which are in the run). Only the candidates' keys and look-ups, which the
    /// run never needs, are left out.
    #[inline]
    #[allow(clippy::too_many_arguments)] // the runner's per-chunk state, passed on
    pub fn run_held<B: PacketBuf>(
        &self,
        ctx: &Ctx<'_>,
        neigh: &NeighTable,
        flows: &mut Flows,
        pkts: &mut [B],
        verdicts: &mut [Verdict],
        ran: &mut StageCounts,
        scratch: &mut Scratch,
        mut parse: impl FnMut(&B) -> Option<(Raw, u64)>,
        parsed_run: impl FnOnce(&[B]),
    ) -> Held {
        let n = pkts.len().min(verdicts.len()).min(CHUNK);
        let Scratch { raws, hashes, targets } = scratch;
        let mut parsed = n;
        for (i, (((buf, raw), h), t)) in
            pkts[..n].iter().zip(raws.iter_mut()).zip(hashes.iter_mut()).zip(targets.iter_mut()).enumerate()
        {
            let Some((r, target)) = parse(buf) else {
                parsed = i;
                break;
            };
            *h = r.hash(ctx.in_port);
            // The first bucket whole: both of its lines.
            let [b1, _] = self.buckets(*h);
            dpfleet_mem::prefetch::read_at(&self.slots, b1);
            dpfleet_mem::prefetch::read_at(&self.slots, b1 | 1);
            (*raw, *t) = (r, target);
        }
        parsed_run(&pkts[..parsed]);
        // The records were prefetched as their hashes came; their flows' entries are as
        // the records are found. Each in a loop of its own, so that the misses overlap.
        let Some(filler) = self.slots.first() else { return Held { done: 0, single: None } };
        let mut found = [filler; CHUNK];
        let mut located = parsed;
        for (i, (((raw, &h), &t), s)) in
            raws.iter().zip(&hashes[..parsed]).zip(targets.iter()).zip(found.iter_mut()).enumerate()
        {
            match self.find(ctx, raw, h, t).and_then(|i| self.slots.get(i)) {
                Some(f) => {
                    flows.table.prefetch_expiry(f.flow);
                    *s = f;
                }
                None => {
                    located = i;
                    break;
                }
            }
        }
        // Counted in registers: an array in memory made every packet's count wait for
        // the previous packet's store. A run is nearly always of one lane and one output
        // port. Each packet's record gives both (a drop aside), as one word, OR-ed and
        // AND-ed over the run: the two are equal when all packets share them. Only
        // another run is counted packet by packet, from the verdicts.
        let (mut words_or, mut words_and, mut drops) = (0u32, u32::MAX, false);
        let mut done = located;
        for (i, (((buf, raw), s), out)) in
            pkts.iter_mut().zip(raws.iter()).zip(&found[..located]).zip(verdicts.iter_mut()).enumerate()
        {
            if !flows.table.is_current(s.flow, s.stamp, ctx.now_ns) {
                done = i;
                break;
            }
            // Kept in a register: reading `*out` back right after its narrow stores
            // would stall on store forwarding (see `graph::packed`).
            let v = self.apply_slot(ctx, neigh, flows, s, raw, buf, ran);
            let word = u32::from(s.out_port) | u32::from(s.lane as u8) << 16;
            words_or |= word;
            words_and &= word;
            drops |= matches!(v, Verdict::Drop(_));
            *out = v;
        }
        let one = done > 0 && !drops && words_or == words_and;
        if one {
            let lane = found.first().map_or(Lane::Empty, |s| s.lane);
            for &stage in lane.stages() {
                ran[stage as usize] += done;
            }
        } else {
            for (s, v) in found[..done].iter().zip(verdicts.iter()) {
                if let Verdict::Tx(_) = v {
                    for &stage in s.lane.stages() {
                        ran[stage as usize] += 1;
                    }
                }
            }
        }
        let single = if one {
            found.first().map(|s| s.out_port)
        } else {
            crate::graph::single_output(verdicts.get(..done).unwrap_or_default())
        };
        Held { done, single }
    }

    /// Tracks a packet whose record `found` [`Express::holds`] (the flow table unchanged
    /// since, but for other packets' tracking) and gives it the recorded outcome,
    /// counting the stages it passes as the fast path would.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the runner's per-packet state, passed on
    pub fn apply<B: PacketBuf>(
        &self,
        ctx: &Ctx<'_>,
        neigh: &NeighTable,
        flows: &mut Flows,
        found: u32,
        raw: &Raw,
        buf: &mut B,
        ran: &mut StageCounts,
    ) -> Verdict {
        let Some(s) = self.slots.get(found as usize) else { return Verdict::Drop(DropReason::Malformed) };
        let v = self.apply_slot(ctx, neigh, flows, s, raw, buf, ran);
        if let Verdict::Tx(_) = v {
            for &stage in s.lane.stages() {
                ran[stage as usize] += 1;
            }
        }
        v
    }

    /// [`Express::apply`] with the record at hand, counting only the stages of a
    /// dropped packet.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // the runner's per-packet state, passed on
    fn apply_slot<B: PacketBuf>(
        &self,
        ctx: &Ctx<'_>,
        neigh: &NeighTable,
        flows: &mut Flows,
        s: &Slot,
        raw: &Raw,
        buf: &mut B,
        ran: &mut StageCounts,
    ) -> Verdict {
        let total = usize::from(raw.total);
        let Some(header) = self.headers.get(usize::from(s.header)) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let lane = s.lane;
        if lane == Lane::TunnelToVf && !super::decap::remove_outer(buf, total) {
            return dropped(ran, lane, Stage::Decap, DropReason::Malformed);
        }
        flows.table.touch_at(s.flow, raw.tcp_flags, ctx.now_ticks);
        // The rewrite, then as `route4` with the route recorded: the TTL, then the
        // padding cut. A VF's Ethernet header goes in with the same look at the bytes
        // (the cut leaves it be), as `vf_tx` writes it.
        let routed = lane != Lane::TunnelToVf;
        let to_vf = lane != Lane::VmToTunnel;
        let vf_header = |eth: &mut [u8; ethernet::HEADER_LEN]| {
            eth[6..].copy_from_slice(&header[6..ethernet::HEADER_LEN]);
            eth[..6].copy_from_slice(&neigh.mac_or_broadcast(s.out_port));
        };
        let compiled = match buf.data_mut().split_first_chunk_mut::<{ ethernet::HEADER_LEN }>() {
            Some((eth, ip)) => {
                let done = s.compiled.apply(ip, routed);
                if done && to_vf {
                    vf_header(eth);
                }
                done
            }
            None => false,
        };
        if !compiled {
            if let Some(v) = rewrite_and_route(s, buf, ran) {
                return v;
            }
            if to_vf {
                let Some(eth) = buf.data_mut().first_chunk_mut() else {
                    return dropped(ran, lane, Stage::VfTx, DropReason::Malformed);
                };
                vf_header(eth);
            }
        }
        if routed {
            buf.truncate(ethernet::HEADER_LEN + total);
        }
        if lane == Lane::VmToTunnel {
            if !buf.prepend(ipv6::HEADER_LEN) {
                return dropped(ran, lane, Stage::Encap, DropReason::NoRoom);
            }
            let Some(out) = buf.data_mut().first_chunk_mut::<MAX_HEADER>() else {
                return dropped(ran, lane, Stage::PfTx, DropReason::Malformed);
            };
            *out = *header;
            // The IPv6 payload length, as `encap` writes it (the packet is at most
            // 65,535 bytes: its IPv4 total length).
            out[ethernet::HEADER_LEN + 4..ethernet::HEADER_LEN + 6].copy_from_slice(&raw.total.to_be_bytes());
            if s.learned_mac {
                // As `pf_tx` (a PF with a configured router MAC has it in the header).
                out[..6].copy_from_slice(&neigh.mac_or_broadcast(s.out_port));
            }
        }
        Verdict::Tx(s.out_port)
    }

    /// Records the outcome of a packet that the fast path just ran to the end of the
    /// graph: `raw` its fields as it arrived on `ctx.in_port` (through the tunnel, for
    /// `target`), `flow` what the look-up found, `verdict` and `buf`
    /// what the graph made of it. Records nothing for the cases the lane does not take
    /// (see the module docs).
    #[allow(clippy::too_many_arguments)] // what the runner knows of the packet
    pub fn fill<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        flows: &Flows,
        raw: &Raw,
        target: Option<UnderlayTarget>,
        (flow, dir): (FlowId, Dir),
        verdict: Verdict,
        buf: &B,
    ) {
        let Verdict::Tx(out_port) = verdict else { return };
        let (Some(&action), Some(stamp)) = (flows.table.action_ref(flow, dir), flows.table.stamp(flow))
        else {
            return;
        };
        let Some(out) = ctx.snap.port(out_port) else { return };
        let (lane, len, learned_mac) = match (target, out.role) {
            (None, PortRole::Vf) => (Lane::VmToVf, ethernet::HEADER_LEN, true),
            (None, PortRole::Pf(_)) => (Lane::VmToTunnel, MAX_HEADER, out.neigh_mac.is_none()),
            (Some(_), PortRole::Vf) => (Lane::TunnelToVf, ethernet::HEADER_LEN, true),
            (Some(_), PortRole::Pf(_)) => return,
        };
        let Some(compiled) = Compiled::new(action.rewrite, raw, lane != Lane::TunnelToVf) else { return };
        // The graph left the IP packet whole behind the header (routing and
        // decapsulation truncate padding).
        let data = buf.data();
        if data.len() != len + usize::from(raw.total) {
            return;
        }
        let mut header = [0u8; MAX_HEADER];
        header[..len].copy_from_slice(&data[..len]);
        if learned_mac {
            header[..6].fill(0);
        }
        let index = match self.header_index.get(&header) {
            Some(&i) => i,
            None if self.headers.len() < MAX_HEADERS => {
                #[allow(clippy::cast_possible_truncation)] // below MAX_HEADERS
                let i = self.headers.len() as u16;
                self.headers.push(header);
                self.header_index.insert(header, i);
                i
            }
            None => return,
        };
        let h = raw.hash(ctx.in_port);
        let (addrs, ports, check) = (raw.addrs, raw.ports, check_word(self.epoch, ctx.in_port, raw.proto));
        let target = target_code(target);
        // The packet's own record first, then a stale one, else one of the first
        // bucket's by the hash.
        let [b1, b2] = self.buckets(h);
        let ways = [b1, b1 | 1, b2, b2 | 1];
        let slots = &self.slots;
        let epoch = self.epoch;
        let pick = |f: &dyn Fn(&Slot) -> bool| ways.into_iter().find(|&i| slots.get(i).is_some_and(f));
        let i = pick(&|s| s.addrs == addrs && s.ports == ports && s.check == check && s.target == target)
            .or_else(|| pick(&|s| s.lane == Lane::Empty || (s.check >> 32) as u16 != epoch))
            .unwrap_or(b1 | usize::from(h >> 31 & 1 == 1));
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot {
                addrs,
                check,
                target,
                ports,
                flow,
                stamp,
                out_port,
                header: index,
                lane,
                learned_mac,
                compiled,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn a_new_era_of_the_flow_table_makes_every_record_stale() {
        use crate::graph::PipelineConfig;
        use crate::tables::conntrack::{Conntrack, FlowKey, PROTO_UDP};
        let mut cfg = PipelineConfig::small();
        cfg.flows.capacity = 1;
        let mut flows = Flows {
            table: Conntrack::new(&cfg.flows).unwrap(),
            nat: crate::tables::nat::NatMappings::new(cfg.nat).unwrap(),
            addrs: crate::tables::addrpool::AddrPool::new(16),
            enforce_firewall: false,
            lb: Default::default(),
        };
        let mut lane = Express::new(16);
        let epoch = lane.epoch;
        lane.sync_era(&flows);
        assert_eq!(lane.epoch, epoch, "the same era");
        let k = FlowKey::v4(1, [10, 0, 0, 1].into(), [10, 0, 0, 2].into(), PROTO_UDP, 1, 2);
        while flows.table.era() == 0 {
            let id = flows.table.insert(k, k.reversed(), Default::default(), 0, 0, |_| {}).unwrap();
            flows.table.remove(id);
        }
        lane.sync_era(&flows);
        assert_ne!(lane.epoch, epoch);
        let epoch = lane.epoch;
        lane.sync_era(&flows);
        assert_eq!(lane.epoch, epoch);
    }
}
