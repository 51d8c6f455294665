//! The express lane: a per-worker cache of what the fast path did with a packet of an
//! established flow, so that the flow's later packets skip the flow key, the flow
//! table's index and the stages after connection tracking.
//!
//! For an option-less IPv4 TCP or UDP packet of a known flow (a VM's, or a tunnel's
//! delivered to a VM), everything the graph does after tracking the packet depends on
//! the packet only through its addresses, ports and protocol, the port it came in on
//! and (through the tunnel) what the outer destination stands for; on the flow's cached
//! action; and on the snapshot. Everything else is per packet and done afresh: the
//! flow's expiry and TCP state, the rewrite (the same function as the conntrack stage's),
//! the TTL and truncation of routing, the IPv6 payload length of encapsulation, and the
//! destination MAC, read from the learned neighbours as delivery reads it.
//!
//! So when a packet has taken the fast path and left the graph on a port, the runner
//! records ([`Express::fill`]) under a hash of those fields: the flow and direction it
//! found, the flow's action, the VNI and zone of the key, and the header the delivery
//! stages put in front of the IP packet (Ethernet, or Ethernet and the encapsulating
//! IPv6 header), as bytes. A later packet with the same fields in the same snapshot
//! ([`Express::locate`], [`Express::holds`]) is the same flow's if that flow is still
//! live with the same key (compared field by field with the packet's, in the recorded
//! VNI and zone) and the same action: then it is tracked and given the recorded outcome
//! ([`Express::apply`]) without a look-up. The snapshot is accounted for with an epoch
//! that every new snapshot moves on, which makes every record stale at once.
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

use crate::buf::PacketBuf;
use crate::config::{PortId, PortRole, UnderlayTarget};
use crate::graph::{Ctx, DropReason, NeighTable, Next, Stage, Verdict};
use crate::tables::conntrack::{Dir, FlowId, FlowKey};
use crate::tables::mix::fold_mul;
use crate::wire::{ethernet, ipv4, ipv6};

use super::conntrack::{self, FlowAction, Flows, Rewrite};

/// The fields of an option-less IPv4 TCP or UDP packet the lane keys on, as the fast
/// path's first pass read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Raw {
    /// Source address, as the packet carries it, read in native byte order
    /// (`u32::from_ne_bytes`).
    pub src: u32,
    /// Destination address, read alike.
    pub dst: u32,
    /// Source port.
    pub sp: u16,
    /// Destination port.
    pub dp: u16,
    /// IP protocol (TCP or UDP).
    pub proto: u8,
    /// TCP flags (zero for UDP).
    pub tcp_flags: u8,
    /// The IPv4 total length.
    pub total: u16,
}

impl Raw {
    /// The lane's hash of these fields and the input port.
    #[inline]
    fn hash(&self, in_port: PortId) -> u64 {
        let a = u64::from(self.src) << 32 | u64::from(self.dst);
        let b = u64::from(self.sp) << 48 | u64::from(self.dp) << 32 | u64::from(self.proto) << 16 | u64::from(in_port);
        fold_mul(a ^ 0x243f_6a88_85a3_08d3, b ^ 0x1319_8a2e_0370_7344)
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

/// One record. One cache line.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Slot {
    /// The high half of the hash, the epoch (low 16 bits) and the input port, for one
    /// comparison ([`check_word`]).
    check: u64,
    /// For tunnel traffic, what the outer destination stood for ([`target_code`]).
    target: u64,
    flow: FlowId,
    vni: u32,
    out_port: PortId,
    /// Index of the header in [`Express::headers`].
    header: u16,
    lane: Lane,
    dir: Dir,
    zone: u8,
    /// The destination MAC is the learned neighbour's (else the header's own).
    learned_mac: bool,
    action: FlowAction,
}

/// The word a record's `check` holds for a hash, an epoch and an input port.
#[inline]
fn check_word(h: u64, epoch: u16, in_port: PortId) -> u64 {
    (h & !0xffff_ffff) | u64::from(epoch) << 16 | u64::from(in_port)
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
    /// The headers put in front of the IP packet (the destination MAC zeroed where it is
    /// the learned one), 14 or 54 bytes of each used.
    headers: Vec<[u8; MAX_HEADER]>,
    header_index: rustc_hash::FxHashMap<[u8; MAX_HEADER], u16>,
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
            // Both at their largest from the start: recording never allocates.
            headers: Vec::with_capacity(MAX_HEADERS),
            header_index: rustc_hash::FxHashMap::with_capacity_and_hasher(MAX_HEADERS, Default::default()),
        }
    }

    /// Where the records lie: (address, bytes).
    pub fn region(&self) -> (usize, usize) {
        (self.slots.as_ptr().addr(), std::mem::size_of_val(&*self.slots))
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
        let h = raw.hash(ctx.in_port);
        let check = check_word(h, self.epoch, ctx.in_port);
        let [b1, b2] = self.buckets(h);
        let mine = |i: usize| self.slots.get(i).is_some_and(|s| s.check == check && s.target == target);
        let i = if mine(b1) {
            b1
        } else if mine(b1 | 1) {
            b1 | 1
        } else if mine(b2) {
            b2
        } else if mine(b2 | 1) {
            b2 | 1
        } else {
            return NO_RECORD;
        };
        // Below the slot count, which fits 32 bits (see `new`).
        u32::try_from(i).unwrap_or(NO_RECORD)
    }

    /// Reads the flow entries the records `found` (from [`Express::locate`]) name, so
    /// that their cache misses overlap before [`Express::holds`] needs them.
    #[inline]
    pub fn warm_flows(&self, flows: &Flows, found: &[u32]) {
        flows.table.warm_entries(found.iter().filter_map(|&i| self.slots.get(i as usize).map(|s| (s.flow, s.dir))));
    }

    /// Whether record `i` (from [`Express::locate`], for the same packet) holds a live
    /// flow with the packet's key and the recorded action. Changes nothing.
    #[inline]
    pub fn holds(&self, ctx: &Ctx<'_>, flows: &Flows, raw: &Raw, i: u32) -> bool {
        let Some(s) = self.slots.get(i as usize) else { return false };
        let key_is = |k: &FlowKey| k.is_v4(s.vni, raw.src, raw.dst, raw.proto, raw.sp, raw.dp, s.zone);
        flows.table.is_live(s.flow, s.dir, key_is, &s.action, ctx.now_ns)
    }

    /// Tracks a packet whose record `found` [`Express::holds`] (the flow table unchanged
    /// since, but for other packets' tracking) and gives it the recorded outcome,
    /// counting the stages it passes as the fast path would.
    #[inline]
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
    ) -> Next {
        let Some(s) = self.slots.get(found as usize) else { return Next::drop(DropReason::Malformed) };
        let Some(header) = self.headers.get(usize::from(s.header)) else {
            return Next::drop(DropReason::Malformed);
        };
        ran[Stage::FastPath as usize] += 1;
        ran[Stage::Express as usize] += 1;
        let total = usize::from(raw.total);
        let tunnel = s.lane == Lane::TunnelToVf;
        if tunnel {
            ran[Stage::Decap as usize] += 1;
            if !super::decap::remove_outer(buf, total) {
                return Next::drop(DropReason::Malformed);
            }
        }
        flows.table.touch(s.flow, raw.tcp_flags, ctx.now_ns);
        if s.action.rewrite != Rewrite::None && !conntrack::apply_rewrite(s.action.rewrite, false, buf) {
            return Next::drop(DropReason::Malformed);
        }
        if !tunnel {
            ran[Stage::Route4 as usize] += 1;
            let Some(h) = buf.data_mut().get_mut(ethernet::HEADER_LEN..).and_then(|ip| ip.first_chunk_mut())
            else {
                return Next::drop(DropReason::Malformed);
            };
            // As `route4`, with the route recorded: the TTL, then the padding cut.
            if !ipv4::decrement_ttl_header(h) {
                return Next::drop(DropReason::TtlExpired);
            }
            buf.truncate(ethernet::HEADER_LEN + total);
        }
        if s.lane == Lane::VmToTunnel {
            ran[Stage::Encap as usize] += 1;
            if !buf.prepend(ipv6::HEADER_LEN) {
                return Next::drop(DropReason::NoRoom);
            }
            ran[Stage::PfTx as usize] += 1;
            let Some(out) = buf.data_mut().first_chunk_mut::<MAX_HEADER>() else {
                return Next::drop(DropReason::Malformed);
            };
            *out = *header;
            // The IPv6 payload length, as `encap` writes it (the packet is at most
            // 65,535 bytes: its IPv4 total length).
            out[ethernet::HEADER_LEN + 4..ethernet::HEADER_LEN + 6].copy_from_slice(&raw.total.to_be_bytes());
            if s.learned_mac {
                // As `pf_tx` (a PF with a configured router MAC has it in the header).
                out[..6].copy_from_slice(&neigh.mac_or_broadcast(s.out_port));
            }
        } else {
            ran[Stage::VfTx as usize] += 1;
            let (Some(out), Some(eth)) =
                (buf.data_mut().first_chunk_mut::<{ ethernet::HEADER_LEN }>(), header.first_chunk())
            else {
                return Next::drop(DropReason::Malformed);
            };
            *out = *eth;
            // As `vf_tx`.
            out[..6].copy_from_slice(&neigh.mac_or_broadcast(s.out_port));
        }
        Next::Done(Verdict::Tx(s.out_port))
    }

    /// Records the outcome of a packet that the fast path just ran to the end of the
    /// graph: `raw` its fields as it arrived on `ctx.in_port` (through the tunnel, for
    /// `target`), `key` its flow key, `flow` what the look-up found, `verdict` and `buf`
    /// what the graph made of it. Records nothing for the cases the lane does not take
    /// (see the module docs).
    #[allow(clippy::too_many_arguments)] // what the runner knows of the packet
    pub fn fill<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        flows: &Flows,
        raw: &Raw,
        target: Option<UnderlayTarget>,
        key: &FlowKey,
        (flow, dir): (FlowId, Dir),
        verdict: Verdict,
        buf: &B,
    ) {
        let Verdict::Tx(out_port) = verdict else { return };
        let Some(&action) = flows.table.action_ref(flow, dir) else { return };
        if !matches!(action.rewrite, Rewrite::None | Rewrite::Src { .. } | Rewrite::Dst { .. }) {
            return;
        }
        let Some(out) = ctx.snap.port(out_port) else { return };
        let (lane, len, learned_mac) = match (target, out.role) {
            (None, PortRole::Vf) => (Lane::VmToVf, ethernet::HEADER_LEN, true),
            (None, PortRole::Pf(_)) => (Lane::VmToTunnel, MAX_HEADER, out.neigh_mac.is_none()),
            (Some(_), PortRole::Vf) => (Lane::TunnelToVf, ethernet::HEADER_LEN, true),
            (Some(_), PortRole::Pf(_)) => return,
        };
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
        let check = check_word(h, self.epoch, ctx.in_port);
        let target = target_code(target);
        // The packet's own record first, then a stale one, else one of the first
        // bucket's by the hash.
        let [b1, b2] = self.buckets(h);
        let ways = [b1, b1 | 1, b2, b2 | 1];
        let slots = &self.slots;
        let epoch = self.epoch;
        let pick = |f: &dyn Fn(&Slot) -> bool| ways.into_iter().find(|&i| slots.get(i).is_some_and(f));
        let i = pick(&|s| s.check == check && s.target == target)
            .or_else(|| pick(&|s| s.lane == Lane::Empty || (s.check >> 16) as u16 != epoch))
            .unwrap_or(b1 | usize::from(h >> 31 & 1 == 1));
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot {
                check,
                target,
                flow,
                vni: key.vni(),
                out_port,
                header: index,
                lane,
                dir,
                zone: key.zone(),
                learned_mac,
                action,
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
}
