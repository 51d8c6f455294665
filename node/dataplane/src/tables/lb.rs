//! Load balancers: the compiled table the LB stage reads, and each worker's
//! round-robin positions.
//!
//! A load balancer is a virtual IP in a VNI with a list of (protocol, port) pairs and up
//! to [`MAX_TARGETS`] target slots holding underlay IPv6 addresses, as dpservice keeps
//! them (a deleted target leaves its slot empty; a new one takes the first empty slot).
//! The first packet of a flow picks a target with one of two selections:
//!
//! - **Round robin** (dpservice's, the default): with one target, that target; otherwise
//!   the next non-empty slot after the last one picked. The last pick is kept **per
//!   worker** ([`RoundRobin`]), so no worker ever writes shared state; with several
//!   workers each one cycles on its own (dpservice keeps one position per LB, shared by
//!   its workers without synchronisation).
//! - **Maglev**: the control plane builds one lookup table per load balancer with the
//!   fleet's builder (`dpfleet_proto::maglev`) when it compiles the snapshot and hands
//!   over the entries and the flow-hash function ([`Maglev`]); the stage only indexes
//!   it, so every node picks the same target for a flow.
//!
//! The flow keeps its target for its lifetime (the conntrack stage caches it), so adding
//! or removing targets never moves an established flow.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

/// Target slots per load balancer (dpservice's limit).
pub const MAX_TARGETS: usize = 64;
/// (protocol, port) pairs per load balancer (dpservice's limit, including the end marker).
pub const MAX_PORTS: usize = 16;
/// Load balancers per node (dpservice's limit); also the size of each worker's
/// round-robin state.
pub const MAX_LBS: usize = 256;

/// The flow a target is chosen for: the first packet's key as the LB sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbFlow {
    /// The load balancer's VNI.
    pub vni: u32,
    /// The client.
    pub src: IpAddr,
    /// The load-balanced IP.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (0 without ports).
    pub src_port: u16,
    /// Destination port (0 without ports).
    pub dst_port: u16,
}

/// The fleet's flow hash, supplied by whoever built the table (the node crate passes
/// `dpfleet_proto::flowhash`, keeping this crate free of the contract crate's RPC
/// dependencies).
pub type FlowHashFn = fn(&LbFlow) -> u64;

/// A built Maglev lookup table: the target of each of its M slots.
#[derive(Clone, Debug)]
pub struct Maglev {
    /// Target addresses; `entries` indexes this.
    pub targets: Vec<Ipv6Addr>,
    /// The target index of every slot (M entries, M prime).
    pub entries: Vec<u16>,
    /// The flow hash the table is indexed with.
    pub hash: FlowHashFn,
}

impl Maglev {
    /// The target for `flow`: slot `⌊hash·M/2⁶⁴⌋`, as the fleet's builder defines it.
    /// `None` only for an empty table.
    pub fn select(&self, flow: &LbFlow) -> Option<Ipv6Addr> {
        let h = (self.hash)(flow);
        #[allow(clippy::cast_possible_truncation)] // < entries.len()
        let slot = ((u128::from(h) * self.entries.len() as u128) >> 64) as usize;
        let idx = *self.entries.get(slot)?;
        self.targets.get(usize::from(idx)).copied()
    }
}

/// One load balancer as the dataplane sees it.
#[derive(Clone, Debug)]
pub struct LoadBalancer {
    /// Index of this LB in each worker's round-robin state (< [`MAX_LBS`]), unique among
    /// the live load balancers.
    pub slot: u16,
    /// Changes whenever a load balancer is created in `slot`, so that a worker forgets the
    /// position it kept for a deleted one.
    pub uid: u32,
    /// The VNI.
    pub vni: u32,
    /// The load-balanced IP.
    pub vip: IpAddr,
    /// Accepted (protocol, destination port) pairs.
    pub ports: Vec<(u8, u16)>,
    /// The LB's own underlay address.
    pub underlay: Ipv6Addr,
    /// Target slots (empty slots are `None`), at most [`MAX_TARGETS`].
    pub targets: Vec<Option<Ipv6Addr>>,
    /// The Maglev table, when the node selects by Maglev (`--lb-selection=maglev`).
    pub maglev: Option<Arc<Maglev>>,
}

impl LoadBalancer {
    /// Whether the LB serves this protocol and destination port.
    pub fn serves(&self, proto: u8, port: u16) -> bool {
        self.ports.iter().any(|&(p, n)| p == proto && n == port)
    }
}

/// One worker's round-robin positions: the last slot picked per load balancer.
#[derive(Clone, Debug)]
pub struct RoundRobin {
    /// (uid of the LB the position belongs to, last slot picked), per LB slot.
    last: Box<[(u32, u8)]>,
}

impl Default for RoundRobin {
    fn default() -> Self {
        RoundRobin { last: vec![(0, 0); MAX_LBS].into_boxed_slice() }
    }
}

impl RoundRobin {
    /// dpservice's round robin (`dp_lb_rr_backend`): with exactly one target, that
    /// one; else the first non-empty slot after the last pick, cyclically over all
    /// [`MAX_TARGETS`] slots (so the empty slots behind the last target are passed
    /// over, not cut off). Either way the pick becomes the last pick. Positions start
    /// at slot 0, so targets in slots 0 and 1 are picked 1, 0, 1, ...
    pub fn select(&mut self, lb: &LoadBalancer) -> Option<Ipv6Addr> {
        let targets = lb.targets.get(..lb.targets.len().min(MAX_TARGETS))?;
        let filled = |i: usize| matches!(targets.get(i), Some(Some(_)));
        let pos = match targets.iter().flatten().count() {
            0 => return None,
            1 => targets.iter().position(Option::is_some)?,
            _ => {
                let entry = self.last.get(usize::from(lb.slot))?;
                let last = if entry.0 == lb.uid { usize::from(entry.1) } else { 0 };
                (1..MAX_TARGETS).map(|step| (last + step) % MAX_TARGETS).find(|&i| filled(i))?
            }
        };
        let entry = self.last.get_mut(usize::from(lb.slot))?;
        #[allow(clippy::cast_possible_truncation)] // pos < MAX_TARGETS
        let pos8 = pos as u8;
        *entry = (lb.uid, pos8);
        targets.get(pos).copied().flatten()
    }
}

/// Picks the target for a new flow: the LB's Maglev table if it has one, else round
/// robin.
pub fn select(rr: &mut RoundRobin, lb: &LoadBalancer, flow: &LbFlow) -> Option<Ipv6Addr> {
    match &lb.maglev {
        Some(m) => m.select(flow),
        None => rr.select(lb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfc00, 2, 0, 0, 0, 0, 0, n)
    }

    fn lb(targets: Vec<Option<Ipv6Addr>>) -> LoadBalancer {
        LoadBalancer {
            slot: 3,
            uid: 7,
            vni: 100,
            vip: "172.22.2.1".parse().unwrap(),
            ports: vec![(6, 80)],
            underlay: t(0xffff),
            targets,
            maglev: None,
        }
    }

    #[test]
    fn round_robin_follows_dpservice_order() {
        let mut rr = RoundRobin::default();
        let l = lb(vec![Some(t(1)), Some(t(2))]);
        let picks: Vec<_> = (0..5).map(|_| rr.select(&l).unwrap()).collect();
        assert_eq!(picks, vec![t(2), t(1), t(2), t(1), t(2)]);
    }

    #[test]
    fn round_robin_skips_holes_and_handles_one_or_none() {
        let mut rr = RoundRobin::default();
        assert_eq!(rr.select(&lb(vec![])), None);
        assert_eq!(rr.select(&lb(vec![None, None])), None);
        let one = lb(vec![None, Some(t(5)), None]);
        assert_eq!(rr.select(&one), Some(t(5)));
        assert_eq!(rr.select(&one), Some(t(5)));
        let holes = lb(vec![Some(t(1)), None, None, Some(t(4)), None, Some(t(6))]);
        let picks: Vec<_> = (0..4).map(|_| rr.select(&holes).unwrap()).collect();
        assert_eq!(picks, vec![t(4), t(6), t(1), t(4)]);
    }

    #[test]
    fn a_single_target_is_the_last_pick_too() {
        // As dpservice: A in slot 0, B in 1. B is picked; B goes, A is picked (and
        // recorded); C takes slot 1 and is picked next (the position is 0, not 1).
        let mut rr = RoundRobin::default();
        let mut l = lb(vec![Some(t(1)), Some(t(2))]);
        assert_eq!(rr.select(&l), Some(t(2)));
        l.targets = vec![Some(t(1))];
        assert_eq!(rr.select(&l), Some(t(1)));
        l.targets = vec![Some(t(1)), Some(t(3))];
        assert_eq!(rr.select(&l), Some(t(3)));
    }

    #[test]
    fn round_robin_wraps_over_every_slot() {
        // As dpservice, which scans all 64 slots: T0..T4, the last pick T4 (slot 4);
        // T3 and T4 go (the control plane trims the empty tail), and the scan from
        // slot 5 wraps to T0, not to T2.
        let mut rr = RoundRobin::default();
        let mut l = lb((1..=5).map(|n| Some(t(n))).collect());
        let picks: Vec<_> = (0..4).map(|_| rr.select(&l).unwrap()).collect();
        assert_eq!(picks, vec![t(2), t(3), t(4), t(5)]);
        l.targets.truncate(3);
        assert_eq!(rr.select(&l), Some(t(1)));
        assert_eq!(rr.select(&l), Some(t(2)));
    }

    #[test]
    fn a_new_lb_in_a_reused_slot_starts_over() {
        let mut rr = RoundRobin::default();
        let a = lb(vec![Some(t(1)), Some(t(2)), Some(t(3))]);
        assert_eq!(rr.select(&a), Some(t(2)));
        assert_eq!(rr.select(&a), Some(t(3)));
        let mut b = a.clone();
        b.uid = 8;
        assert_eq!(rr.select(&b), Some(t(2)));
    }

    #[test]
    fn maglev_indexes_by_the_hash() {
        fn h(f: &LbFlow) -> u64 {
            // Slot = top bits of the hash times M: spread source ports over the range.
            u64::from(f.src_port) << 48
        }
        let m = Maglev { targets: vec![t(1), t(2)], entries: vec![0, 1, 1, 0, 1], hash: h };
        let mut l = lb(vec![Some(t(1)), Some(t(2))]);
        l.maglev = Some(Arc::new(m));
        let flow = |sp: u16| LbFlow {
            vni: 100,
            src: "1.2.3.4".parse().unwrap(),
            dst: l.vip,
            proto: 6,
            src_port: sp,
            dst_port: 80,
        };
        let mut rr = RoundRobin::default();
        // slot = (sp << 48) * 5 >> 64 = sp * 5 / 65536
        assert_eq!(select(&mut rr, &l, &flow(0)), Some(t(1)));
        assert_eq!(select(&mut rr, &l, &flow(13_108)), Some(t(2)));
        assert_eq!(select(&mut rr, &l, &flow(39_322)), Some(t(1)));
        assert_eq!(select(&mut rr, &l, &flow(65_535)), Some(t(2)));
        assert!(l.serves(6, 80) && !l.serves(17, 80) && !l.serves(6, 81));
    }
}
