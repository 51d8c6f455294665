//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016): the lookup table that maps a flow hash to a load
//! balancer target.
//!
//! The coordinator fixes a [`MaglevInput`] per load balancer (targets with weights, a prime
//! table size, a seed) and commits it with the table's [`MaglevTable::digest`]; every node
//! builds the table from that input with [`MaglevTable::build`] and compares digests. So the
//! build is a pure function of the input, specified below, and independent of the order in
//! which targets were listed.
//!
//! # The algorithm
//!
//! 1. **Canonical input.** Targets are sorted by address (the 16 octets compared
//!    lexicographically); a duplicate address, a zero weight, no target, more than
//!    [`MAX_TARGETS`] targets, a table size that is not prime, below the number of targets
//!    or above [`MAX_TABLE_SIZE`] are errors. Target `i` below is the `i`-th in this order.
//! 2. **Permutations.** With `M` the table size and `a` a target's 16 address octets:
//!    `offset = SipHash-1-3(key = (seed, OFFSET_K1), a) mod M` and
//!    `skip = SipHash-1-3(key = (seed, SKIP_K1), a) mod (M - 1) + 1`. Target `i` prefers
//!    slots `offset, offset + skip, offset + 2 skip, ... (mod M)`; as `M` is prime, that
//!    visits every slot once.
//! 3. **Turns.** Targets take turns; in its turn a target claims the first slot of its
//!    preference list that is still free. With `w_max` the largest weight, target `i`'s
//!    `t`-th turn (t = 0, 1, ...) happens in round `ceil(t * w_max / w_i)`; turns are taken
//!    in order of (round, target index), until every slot is claimed. With equal weights
//!    that is the paper's round robin; a target of weight `w` takes `w / w_max` of the turns
//!    of the heaviest one (every target takes its first turn in round 0).
//! 4. **Lookup.** A flow with hash `h` (see [`crate::flowhash`]) falls in slot
//!    `(h * M) >> 64` (the high half of the 128-bit product, which maps 64-bit hashes
//!    uniformly onto `0..M` without a division).
//! 5. **Digest.** SipHash-1-3 under [`DIGEST_KEY`] of: `M` (u32, big-endian), the number of
//!    targets (u32, big-endian), each target's 16 octets in canonical order, then each
//!    slot's target index (u16, big-endian). Equal digests mean every flow hash maps to the
//!    same target address.
//!
//! # Properties (checked by the tests below)
//!
//! - With equal weights each target owns `floor(M/N)` or `ceil(M/N)` slots.
//! - With weights, target `i` owns `M * w_i / W` slots (W the sum of weights) to within
//!   `-2 N w_i / W` and `+2`.
//! - The same targets in any order build the same table.
//! - Disruption: removing one of `N` targets must move at least the `M/N` slots it owned
//!   (adding one: the `M/(N+1)` it takes); Maglev moves more than that, as the paper
//!   notes, and the more so the fewer slots each target has. Measured (test
//!   `disruption_is_bounded`) with targets `fd00::1` ... `fd00::N`, seed 42, averaged over
//!   removing `min(N, 20)` targets spread over the list, one at a time, and over adding
//!   `min(N, 20)` different new targets, one at a time; moved slots / ideal:
//!
//!   | N     | M                      | removal | addition |
//!   |-------|------------------------|---------|----------|
//!   | 5     | 503 (default: ≥ 100 N) | 1.12    | 1.15     |
//!   | 10    | 1,009 (default)        | 1.27    | 1.31     |
//!   | 100   | 10,007 (default)       | 2.59    | 2.60     |
//!   | 5     | 65,537                 | 1.01    | 1.01     |
//!   | 10    | 65,537                 | 1.02    | 1.03     |
//!   | 100   | 65,537                 | 1.54    | 1.56     |
//!   | 1,000 | 65,537 (paper's setup) | 7.10    | 6.67     |
//!
//!   So with the default size, removing one of 100 targets re-maps 2.6 % of the slots
//!   (ideal: 1 %); a larger table brings the ratio towards 1 at the cost of memory
//!   (2 bytes per slot). Flows in conntrack keep their target regardless; the ratio only
//!   affects where new flows go.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::hash::Hasher;
use std::net::Ipv6Addr;

use siphasher::sip::SipHasher13;

use crate::flowhash::siphash13_addr;

/// `k1` of the offset hash's key (`k0` is the seed): ASCII `"mgoffset"` as a big-endian
/// number.
pub const OFFSET_K1: u64 = 0x6d67_6f66_6673_6574;
/// `k1` of the skip hash's key (`k0` is the seed): ASCII `"mgskip\0\0"` as a big-endian
/// number.
pub const SKIP_K1: u64 = 0x6d67_736b_6970_0000;
/// The key of the table digest: ASCII `"dpfleet1"` and `"mgdigest"` as big-endian numbers.
pub const DIGEST_KEY: (u64, u64) = (0x6470_666c_6565_7431, 0x6d67_6469_6765_7374);

/// The most targets a table may have (slot entries are 16-bit target indices).
pub const MAX_TARGETS: usize = 1 << 16;
/// The largest table size accepted (2^24 slots: 32 MiB of entries).
pub const MAX_TABLE_SIZE: u32 = 1 << 24;
/// The slots per target that [`table_size_for`] provides at least.
pub const ENTRIES_PER_TARGET: u32 = 100;

/// Why a Maglev input was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The input lists no target.
    #[error("a Maglev table needs at least one target")]
    NoTargets,
    /// More targets than [`MAX_TARGETS`].
    #[error("{0} targets is more than the {MAX_TARGETS} a Maglev table supports")]
    TooManyTargets(usize),
    /// The same target address appears twice.
    #[error("target {0} is listed twice")]
    DuplicateTarget(Ipv6Addr),
    /// A target with weight 0.
    #[error("target {0} has weight 0 (weights start at 1)")]
    ZeroWeight(Ipv6Addr),
    /// The table size is not a prime number.
    #[error("Maglev table size {0} is not prime")]
    SizeNotPrime(u32),
    /// The table size is smaller than the number of targets.
    #[error("Maglev table size {size} is smaller than the {targets} targets")]
    SizeTooSmall {
        /// The rejected size.
        size: u32,
        /// The number of targets.
        targets: usize,
    },
    /// The table size exceeds [`MAX_TABLE_SIZE`].
    #[error("Maglev table size {0} is larger than the maximum {MAX_TABLE_SIZE}")]
    SizeTooLarge(u32),
}

/// A load balancer target: its underlay address and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The target's underlay IPv6 address, which also identifies it.
    pub addr: Ipv6Addr,
    /// Its relative share of the slots (at least 1).
    pub weight: u32,
}

impl Target {
    /// A target of weight 1.
    pub fn new(addr: Ipv6Addr) -> Self {
        Target { addr, weight: 1 }
    }
}

/// Everything a Maglev table is built from. Any order of `targets` is accepted;
/// [`MaglevInput::canonical`] gives the form the coordinator commits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MaglevInput {
    /// The targets with their weights.
    pub targets: Vec<Target>,
    /// The number of slots: a prime at least the number of targets (see
    /// [`table_size_for`] for the recommended size).
    pub table_size: u32,
    /// The seed of the permutation hashes.
    pub seed: u64,
}

impl MaglevInput {
    /// An input with the recommended table size for `targets` ([`table_size_for`]).
    pub fn with_default_size(targets: Vec<Target>, seed: u64) -> Result<Self, MaglevError> {
        let table_size = table_size_for(targets.len())?;
        MaglevInput { targets, table_size, seed }.canonical()
    }

    /// The validated input with targets sorted by address.
    pub fn canonical(&self) -> Result<MaglevInput, MaglevError> {
        let mut targets = self.targets.clone();
        targets.sort_unstable_by_key(|t| t.addr.octets());
        if targets.is_empty() {
            return Err(MaglevError::NoTargets);
        }
        if targets.len() > MAX_TARGETS {
            return Err(MaglevError::TooManyTargets(targets.len()));
        }
        if let Some(pair) = targets.windows(2).find(|p| p[0].addr == p[1].addr) {
            return Err(MaglevError::DuplicateTarget(pair[0].addr));
        }
        if let Some(t) = targets.iter().find(|t| t.weight == 0) {
            return Err(MaglevError::ZeroWeight(t.addr));
        }
        let m = self.table_size;
        if m > MAX_TABLE_SIZE {
            return Err(MaglevError::SizeTooLarge(m));
        }
        if !is_prime(m) {
            return Err(MaglevError::SizeNotPrime(m));
        }
        if (m as usize) < targets.len() {
            return Err(MaglevError::SizeTooSmall { size: m, targets: targets.len() });
        }
        Ok(MaglevInput { targets, table_size: m, seed: self.seed })
    }
}

/// A built Maglev lookup table. Immutable; rebuild it from a new input on change.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    targets: Vec<Ipv6Addr>,
    entries: Vec<u16>,
    digest: u64,
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaglevTable")
            .field("targets", &self.targets)
            .field("table_size", &self.entries.len())
            .field("digest", &format_args!("{:#018x}", self.digest))
            .finish_non_exhaustive()
    }
}

/// A target's walk through its preference list during the build.
#[derive(Clone, Copy)]
struct Walk {
    /// The next slot to try: `offset + j * skip mod M` for the next `j`.
    next: u32,
    /// `k * skip mod M` for k = 1, 2, 3, 4.
    step: [u32; 4],
}

/// `(a + b) mod m` for `a, b < m`, without a division.
#[inline(always)]
fn add_mod(a: u32, b: u32, m: u32) -> u32 {
    let s = a + b;
    if s >= m {
        s - m
    } else {
        s
    }
}

impl Walk {
    fn new(offset: u32, skip: u32, m: u32) -> Walk {
        let s2 = add_mod(skip, skip, m);
        let s3 = add_mod(s2, skip, m);
        let s4 = add_mod(s3, skip, m);
        Walk { next: offset, step: [skip, s2, s3, s4] }
    }

    /// Claim the first free slot on this walk for target `index`.
    ///
    /// Four candidates are tested per iteration and the first free one in walk order is
    /// taken without a branch: exactly what probing one slot at a time would pick, with a
    /// quarter of the loop's hard-to-predict branches (which dominated the build time).
    /// The candidates are computed from `next` with precomputed multiples of `skip`, so
    /// the loop-carried dependency is one modular add per four probes.
    ///
    /// The caller guarantees a free slot exists; since `M` is prime the walk visits every
    /// slot within `M` steps, so the loop ends.
    #[inline(always)]
    fn claim(&mut self, index: u16, m: u32, free: &mut [u64], entries: &mut [u16]) {
        let is_free = |free: &[u64], slot: u32| (free[(slot / 64) as usize] >> (slot % 64)) & 1;
        let [k1, k2, k3, k4] = self.step;
        loop {
            let s0 = self.next;
            let s1 = add_mod(s0, k1, m);
            let s2 = add_mod(s0, k2, m);
            let s3 = add_mod(s0, k3, m);
            let mask =
                is_free(free, s0) | is_free(free, s1) << 1 | is_free(free, s2) << 2 | is_free(free, s3) << 3;
            if mask == 0 {
                self.next = add_mod(s0, k4, m);
                continue;
            }
            // The first free candidate (mask != 0, so the index is < 4).
            let slot = [s0, s1, s2, s3][(mask.trailing_zeros() & 3) as usize];
            self.next = add_mod(slot, k1, m);
            free[(slot / 64) as usize] &= !(1u64 << (slot % 64));
            entries[slot as usize] = index;
            return;
        }
    }
}

/// The population state of one build: the three ways of ordering turns below all take
/// turns in the same order (round, target index), so they build the same table; they differ
/// only in cost.
struct Fill<'a> {
    m: u32,
    free: &'a mut [u64],
    entries: &'a mut [u16],
    walks: &'a mut [Walk],
}

/// How [`Fill`] orders the turns.
#[derive(Clone, Copy, Debug)]
enum Order {
    /// [`Fill::round_robin`] (equal weights only).
    RoundRobin,
    /// [`Fill::by_round_scan`].
    RoundScan,
    /// [`Fill::by_queue`].
    Queue,
}

/// Up to this ratio of the largest weight to the mean weight, weighted turns are ordered by
/// scanning all targets once per round (cost about `M * w_max / w_mean` checks); beyond it,
/// by a priority queue (cost about `M log N`).
const SCAN_SKEW_LIMIT: u64 = 16;

/// The round of a target's `turn`-th turn (counting from 0): `ceil(turn * w_max / w)`.
/// `turn <= M <= 2^24` and `w_max < 2^32`, so the product fits in 64 bits.
#[inline]
fn round_of(turn: u64, w: u32, w_max: u32) -> u64 {
    (turn * u64::from(w_max)).div_ceil(u64::from(w))
}

impl Fill<'_> {
    #[inline(always)]
    fn claim(&mut self, i: usize) {
        #[allow(clippy::cast_possible_truncation)] // i < MAX_TARGETS
        self.walks[i].claim(i as u16, self.m, self.free, self.entries);
    }

    /// Equal weights: the paper's round robin.
    fn round_robin(&mut self) {
        let (m, n) = (self.m as usize, self.walks.len());
        let mut filled = 0usize;
        loop {
            for i in 0..n {
                self.claim(i);
                filled += 1;
                if filled == m {
                    return;
                }
            }
        }
    }

    /// Weighted, by visiting every target once per round and letting those due take a turn.
    fn by_round_scan(&mut self, weights: &[u32], w_max: u32) {
        let m = self.m as usize;
        let mut turns = vec![0u64; weights.len()];
        let mut due = vec![0u64; weights.len()];
        let mut filled = 0usize;
        for round in 0.. {
            for (i, &w) in weights.iter().enumerate() {
                // A target takes at most one turn per round since w <= w_max.
                if due[i] == round {
                    self.claim(i);
                    filled += 1;
                    if filled == m {
                        return;
                    }
                    turns[i] += 1;
                    due[i] = round_of(turns[i], w, w_max);
                }
            }
        }
    }

    /// Weighted, by a priority queue of (round of the next turn, target index).
    fn by_queue(&mut self, weights: &[u32], w_max: u32) {
        let mut turns = vec![0u64; weights.len()];
        #[allow(clippy::cast_possible_truncation)] // i < MAX_TARGETS
        let mut queue: BinaryHeap<Reverse<(u64, u16)>> =
            (0..weights.len()).map(|i| Reverse((0, i as u16))).collect();
        for _ in 0..self.m {
            let Some(Reverse((_, i))) = queue.pop() else { return };
            let idx = usize::from(i);
            self.claim(idx);
            turns[idx] += 1;
            queue.push(Reverse((round_of(turns[idx], weights[idx], w_max), i)));
        }
    }
}

impl MaglevTable {
    /// Builds the table for `input` (in any target order), as specified in the
    /// [module documentation](self).
    pub fn build(input: &MaglevInput) -> Result<MaglevTable, MaglevError> {
        Self::build_ordered(input, None)
    }

    /// [`MaglevTable::build`], with the turn ordering forced (tests check that all build
    /// the same table) or chosen by cost (`None`).
    fn build_ordered(input: &MaglevInput, order: Option<Order>) -> Result<MaglevTable, MaglevError> {
        let input = input.canonical()?;
        let m = input.table_size;
        let (seed, targets) = (input.seed, &input.targets);

        let mut walks: Vec<Walk> = targets
            .iter()
            .map(|t| {
                let offset = siphash13_addr(seed, OFFSET_K1, &t.addr) % u64::from(m);
                let skip = siphash13_addr(seed, SKIP_K1, &t.addr) % u64::from(m - 1).max(1) + 1;
                #[allow(clippy::cast_possible_truncation)] // both < m <= 2^24
                Walk::new(offset as u32, skip as u32, m)
            })
            .collect();

        // One bit per slot, set while the slot is free (the bitmap stays in L1 for the
        // table sizes we use, unlike the entries).
        let mut free = vec![u64::MAX; (m as usize).div_ceil(64)];
        let mut entries = vec![0u16; m as usize];

        let mut fill = Fill { m, free: &mut free, entries: &mut entries, walks: &mut walks };
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let w_max = weights.iter().copied().max().unwrap_or(1);
        let w_sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let order = order.unwrap_or(if weights.iter().all(|&w| w == w_max) {
            Order::RoundRobin
        } else if targets.len() as u64 * u64::from(w_max) <= SCAN_SKEW_LIMIT * w_sum {
            Order::RoundScan
        } else {
            Order::Queue
        });
        match order {
            Order::RoundRobin => fill.round_robin(),
            Order::RoundScan => fill.by_round_scan(&weights, w_max),
            Order::Queue => fill.by_queue(&weights, w_max),
        }

        let addrs: Vec<Ipv6Addr> = targets.iter().map(|t| t.addr).collect();
        let digest = digest(&addrs, &entries);
        Ok(MaglevTable { targets: addrs, entries, digest })
    }

    /// The index (into [`MaglevTable::targets`]) of the target for a flow with hash
    /// `flow_hash`.
    #[inline]
    pub fn lookup(&self, flow_hash: u64) -> usize {
        usize::from(self.entries[self.slot(flow_hash)])
    }

    /// The address of the target for a flow with hash `flow_hash`.
    #[inline]
    pub fn lookup_addr(&self, flow_hash: u64) -> Ipv6Addr {
        self.targets[self.lookup(flow_hash)]
    }

    /// The slot a flow hash falls in: `(flow_hash * M) >> 64`.
    #[inline]
    pub fn slot(&self, flow_hash: u64) -> usize {
        #[allow(clippy::cast_possible_truncation)] // < M <= 2^24
        let slot = ((u128::from(flow_hash) * self.entries.len() as u128) >> 64) as usize;
        slot
    }

    /// The targets' addresses in canonical order; [`MaglevTable::lookup`] indexes this.
    pub fn targets(&self) -> &[Ipv6Addr] {
        &self.targets
    }

    /// The target index of every slot.
    pub fn entries(&self) -> &[u16] {
        &self.entries
    }

    /// The table size `M`.
    pub fn table_size(&self) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // <= MAX_TABLE_SIZE
        let m = self.entries.len() as u32;
        m
    }

    /// The digest for cross-node comparison (see the [module documentation](self)).
    pub fn digest(&self) -> u64 {
        self.digest
    }
}

/// The table digest, as specified in the module documentation.
fn digest(targets: &[Ipv6Addr], entries: &[u16]) -> u64 {
    let mut h = SipHasher13::new_with_keys(DIGEST_KEY.0, DIGEST_KEY.1);
    #[allow(clippy::cast_possible_truncation)] // bounded by MAX_TABLE_SIZE, MAX_TARGETS
    {
        h.write(&(entries.len() as u32).to_be_bytes());
        h.write(&(targets.len() as u32).to_be_bytes());
    }
    for t in targets {
        h.write(&t.octets());
    }
    let mut buf = [0u8; 512];
    for chunk in entries.chunks(buf.len() / 2) {
        for (out, e) in buf.chunks_exact_mut(2).zip(chunk) {
            out.copy_from_slice(&e.to_be_bytes());
        }
        h.write(&buf[..chunk.len() * 2]);
    }
    h.finish()
}

/// Whether `n` is prime (trial division; `n` up to [`MAX_TABLE_SIZE`] needs at most 2,048
/// divisions).
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = u64::from(n);
    let mut d = 5u64;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// The smallest prime at least `n`, if it is at most [`MAX_TABLE_SIZE`].
pub fn next_prime(n: u32) -> Option<u32> {
    (n.max(2)..=MAX_TABLE_SIZE).find(|&c| is_prime(c))
}

/// The recommended table size for `targets` targets: the smallest prime at least
/// [`ENTRIES_PER_TARGET`] × `targets`, so that target shares differ by at most about 1%.
pub fn table_size_for(targets: usize) -> Result<u32, MaglevError> {
    if targets == 0 {
        return Err(MaglevError::NoTargets);
    }
    if targets > MAX_TARGETS {
        return Err(MaglevError::TooManyTargets(targets));
    }
    #[allow(clippy::cast_possible_truncation)] // <= 2^16
    let want = targets as u32 * ENTRIES_PER_TARGET;
    next_prime(want).ok_or(MaglevError::SizeTooLarge(want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(i: u32) -> Ipv6Addr {
        Ipv6Addr::from(0xfd00_0000_0000_0000_0000_0000_0000_0000u128 | u128::from(i))
    }

    fn equal_targets(n: u32) -> Vec<Target> {
        (1..=n).map(|i| Target::new(addr(i))).collect()
    }

    fn counts(table: &MaglevTable) -> Vec<usize> {
        let mut c = vec![0usize; table.targets().len()];
        for &e in table.entries() {
            c[usize::from(e)] += 1;
        }
        c
    }

    /// Slots whose target address differs between two tables of the same size.
    fn moved(a: &MaglevTable, b: &MaglevTable) -> usize {
        assert_eq!(a.table_size(), b.table_size());
        a.entries()
            .iter()
            .zip(b.entries())
            .filter(|(&x, &y)| a.targets()[usize::from(x)] != b.targets()[usize::from(y)])
            .count()
    }

    /// The mean of moved / ideal when one of N targets is removed (`samples` targets
    /// spread over the list, each in turn; ideal M / N) and when one new target is added
    /// (`samples` different ones, each in turn; ideal M / (N + 1)).
    fn disruption(n: u32, m: u32, seed: u64, samples: u32) -> (f64, f64) {
        let all = MaglevInput { targets: equal_targets(n), table_size: m, seed };
        let full = MaglevTable::build(&all).unwrap();
        let mut removal = 0.0;
        for k in 0..samples {
            let mut less = all.clone();
            less.targets.remove((k * n / samples) as usize);
            let ideal = f64::from(m) / f64::from(n);
            removal += moved(&full, &MaglevTable::build(&less).unwrap()) as f64 / ideal;
        }
        let mut addition = 0.0;
        for k in 0..samples {
            let mut more = all.clone();
            more.targets.push(Target::new(addr(0x1_0000 + k)));
            let ideal = f64::from(m) / f64::from(n + 1);
            addition += moved(&full, &MaglevTable::build(&more).unwrap()) as f64 / ideal;
        }
        (removal / f64::from(samples), addition / f64::from(samples))
    }

    #[test]
    fn golden_tables() {
        let weighted = MaglevInput {
            targets: vec![
                Target::new("fd00:108::3".parse().unwrap()),
                Target::new("fd00:108::1".parse().unwrap()),
                Target { addr: "fd00:108::2".parse().unwrap(), weight: 2 },
            ],
            table_size: 13,
            seed: 7,
        };
        let t = MaglevTable::build(&weighted).unwrap();
        let want: Vec<Ipv6Addr> =
            ["fd00:108::1", "fd00:108::2", "fd00:108::3"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(t.targets(), want);
        assert_eq!(t.entries(), &[0, 2, 1, 1, 0, 1, 1, 1, 2, 2, 1, 0, 0]);
        assert_eq!(t.digest(), 0xaa7d_c031_6a6b_2897);

        let equal = MaglevInput { targets: equal_targets(3), table_size: 7, seed: 0 };
        let t = MaglevTable::build(&equal).unwrap();
        assert_eq!(t.entries(), &[2, 0, 1, 0, 2, 1, 0]);
        assert_eq!(t.digest(), 0x7306_bacf_7f83_c681);

        let weighted50 = MaglevInput {
            targets: (0..50).map(|i| Target { addr: addr(i), weight: 1 + i % 4 }).collect(),
            table_size: 5_003,
            seed: 42,
        };
        assert_eq!(MaglevTable::build(&weighted50).unwrap().digest(), 0xf6e0_df90_96a8_2862);

        let equal1000 = MaglevInput {
            targets: (0..1000).map(|i| Target::new(addr(i))).collect(),
            table_size: 65_537,
            seed: 42,
        };
        assert_eq!(MaglevTable::build(&equal1000).unwrap().digest(), 0x2d48_db92_fb79_8ae4);
    }

    /// The paper's population loop, literally (modulo per probe, `next[]` counters), with
    /// the weighted turn order: the reference the optimised build must equal.
    fn reference_entries(input: &MaglevInput) -> Vec<u16> {
        let input = input.canonical().unwrap();
        let m = u64::from(input.table_size);
        let n = input.targets.len();
        let offset: Vec<u64> =
            input.targets.iter().map(|t| siphash13_addr(input.seed, OFFSET_K1, &t.addr) % m).collect();
        let skip: Vec<u64> = input
            .targets
            .iter()
            .map(|t| siphash13_addr(input.seed, SKIP_K1, &t.addr) % (m - 1) + 1)
            .collect();
        let w_max = u64::from(input.targets.iter().map(|t| t.weight).max().unwrap());
        let mut next = vec![0u64; n];
        let mut turns = vec![0u64; n];
        let mut entry: Vec<Option<u16>> = vec![None; m as usize];
        for _ in 0..m {
            // The pending turn with the smallest (round, index).
            let i = (0..n)
                .min_by_key(|&i| ((turns[i] * w_max).div_ceil(u64::from(input.targets[i].weight)), i))
                .unwrap();
            let mut c = (offset[i] + next[i] * skip[i]) % m;
            while entry[c as usize].is_some() {
                next[i] += 1;
                c = (offset[i] + next[i] * skip[i]) % m;
            }
            entry[c as usize] = Some(i as u16);
            next[i] += 1;
            turns[i] += 1;
        }
        entry.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn lookup_maps_hashes_onto_slots() {
        let t =
            MaglevTable::build(&MaglevInput { targets: equal_targets(2), table_size: 211, seed: 1 }).unwrap();
        assert_eq!(t.slot(0), 0);
        assert_eq!(t.slot(u64::MAX), 210);
        assert_eq!(t.slot(1 << 63), 105);
        for h in [0, 1 << 63, u64::MAX, 0x1234_5678_9abc_def0] {
            assert_eq!(t.lookup(h), usize::from(t.entries()[t.slot(h)]));
            assert_eq!(t.lookup_addr(h), t.targets()[t.lookup(h)]);
        }
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let ok = MaglevInput { targets: equal_targets(3), table_size: 307, seed: 0 };
        assert!(MaglevTable::build(&ok).is_ok());
        let build = |f: &dyn Fn(&mut MaglevInput)| {
            let mut i = ok.clone();
            f(&mut i);
            MaglevTable::build(&i).unwrap_err()
        };
        assert_eq!(build(&|i| i.targets.clear()), MaglevError::NoTargets);
        assert_eq!(build(&|i| i.targets.push(Target::new(addr(2)))), MaglevError::DuplicateTarget(addr(2)));
        assert_eq!(build(&|i| i.targets[1].weight = 0), MaglevError::ZeroWeight(addr(2)));
        assert_eq!(build(&|i| i.table_size = 301), MaglevError::SizeNotPrime(301));
        assert_eq!(build(&|i| i.table_size = 0), MaglevError::SizeNotPrime(0));
        assert_eq!(build(&|i| i.table_size = 2), MaglevError::SizeTooSmall { size: 2, targets: 3 });
        assert_eq!(build(&|i| i.table_size = 16_777_259), MaglevError::SizeTooLarge(16_777_259));
        let many = MaglevInput { targets: (0..=1u32 << 16).map(|i| Target::new(addr(i))).collect(), ..ok };
        assert_eq!(MaglevTable::build(&many).unwrap_err(), MaglevError::TooManyTargets(65_537));
        assert_eq!(table_size_for(0), Err(MaglevError::NoTargets));
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(65_537));
        assert!(!is_prime(65_535));
        assert!(is_prime(16_777_213));
        assert!(!is_prime(16_777_215));
        assert!(!is_prime(4_087)); // 61 * 67
        assert_eq!(next_prime(0), Some(2));
        assert_eq!(next_prime(100_000), Some(100_003));
        assert_eq!(next_prime(16_777_214), None);
        assert_eq!(table_size_for(1), Ok(101));
        assert_eq!(table_size_for(10), Ok(1_009));
        assert_eq!(table_size_for(1_000), Ok(100_003));
        assert_eq!(table_size_for(1 << 16), Ok(6_553_621));
    }

    #[test]
    fn default_size_gives_every_target_100_slots() {
        let input = MaglevInput::with_default_size(equal_targets(37), 9).unwrap();
        assert!(input.table_size >= 3_700);
        let t = MaglevTable::build(&input).unwrap();
        assert!(counts(&t).iter().all(|&c| c >= 100));
    }

    #[test]
    fn only_relative_weights_matter() {
        let equal = MaglevInput { targets: equal_targets(5), table_size: 503, seed: 3 };
        let tripled = MaglevInput {
            targets: equal.targets.iter().map(|t| Target { weight: 3, ..*t }).collect(),
            ..equal.clone()
        };
        assert_eq!(MaglevTable::build(&equal).unwrap(), MaglevTable::build(&tripled).unwrap());
    }

    /// Measures the disruption figures quoted in the module documentation and bounds them
    /// (run with `--nocapture` to see them). Removing a target always moves at least the
    /// slots it owned (ratio >= 1); Maglev moves more, the more so the fewer slots each
    /// target has.
    #[test]
    fn disruption_is_bounded() {
        let cases: [(u32, u32, f64); 7] = [
            // (N, M, upper bound on the mean ratio)
            (5, table_size_for(5).unwrap(), 1.3),
            (10, table_size_for(10).unwrap(), 1.5),
            (100, table_size_for(100).unwrap(), 3.0),
            (5, 65_537, 1.1),
            (10, 65_537, 1.1),
            (100, 65_537, 1.8),
            (1000, 65_537, 8.0),
        ];
        for (n, m, bound) in cases {
            let (removal, addition) = disruption(n, m, 42, n.min(20));
            println!("N = {n}, M = {m}: removal {removal:.3}, addition {addition:.3}");
            assert!((0.99..bound).contains(&removal), "N = {n}, M = {m}: removal ratio {removal}");
            assert!((0.99..bound).contains(&addition), "N = {n}, M = {m}: addition ratio {addition}");
        }
    }

    fn arb_targets(max: usize) -> impl Strategy<Value = Vec<Ipv6Addr>> {
        prop::collection::hash_set(any::<u128>(), 1..max)
            .prop_map(|s| s.into_iter().map(Ipv6Addr::from).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn build_equals_the_reference(
            addrs in arb_targets(20),
            weights in prop::collection::vec(1u32..6, 20),
            equal: bool,
            seed: u64,
            extra in 0u32..300,
        ) {
            let targets: Vec<Target> = addrs
                .iter()
                .zip(&weights)
                .map(|(&addr, &weight)| Target { addr, weight: if equal { 1 } else { weight } })
                .collect();
            let m = next_prime(targets.len() as u32 + extra).unwrap();
            let input = MaglevInput { targets, table_size: m, seed };
            let want = reference_entries(&input);
            let mut orders = vec![None, Some(Order::RoundScan), Some(Order::Queue)];
            if equal {
                orders.push(Some(Order::RoundRobin));
            }
            for order in orders {
                let table = MaglevTable::build_ordered(&input, order).unwrap();
                prop_assert_eq!(table.entries(), &want[..], "{:?}", order);
            }
        }

        #[test]
        fn skewed_weights_equal_the_reference(
            addrs in arb_targets(40),
            heavy in 1_000_000u32..=u32::MAX,
            seed: u64,
        ) {
            prop_assume!(addrs.len() >= 2);
            let mut targets: Vec<Target> = addrs.into_iter().map(Target::new).collect();
            targets[0].weight = heavy;
            targets[1].weight = 2;
            let table_size = table_size_for(targets.len()).unwrap();
            let input = MaglevInput { targets, table_size, seed };
            let table = MaglevTable::build(&input).unwrap();
            prop_assert_eq!(table.entries(), &reference_entries(&input)[..]);
        }

        #[test]
        fn equal_weights_get_floor_or_ceil(addrs in arb_targets(60), seed: u64, extra in 0u32..500) {
            let n = addrs.len() as u32;
            let m = next_prime(n + extra).unwrap();
            let input = MaglevInput { targets: addrs.into_iter().map(Target::new).collect(), table_size: m, seed };
            let t = MaglevTable::build(&input).unwrap();
            let (lo, hi) = ((m / n) as usize, m.div_ceil(n) as usize);
            for c in counts(&t) {
                prop_assert!(c == lo || c == hi, "{} not in {}..={}", c, lo, hi);
            }
        }

        #[test]
        fn any_order_builds_the_same_table(
            addrs in arb_targets(40),
            weights in prop::collection::vec(1u32..5, 40),
            seed: u64,
            shuffle_seed: u64,
        ) {
            let targets: Vec<Target> =
                addrs.iter().zip(&weights).map(|(&addr, &weight)| Target { addr, weight }).collect();
            let m = table_size_for(targets.len()).unwrap();
            let a = MaglevTable::build(&MaglevInput { targets: targets.clone(), table_size: m, seed }).unwrap();
            // A deterministic shuffle driven by shuffle_seed.
            let mut shuffled = targets;
            let mut s = shuffle_seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let b = MaglevTable::build(&MaglevInput { targets: shuffled, table_size: m, seed }).unwrap();
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn weighted_shares_are_proportional(
            weights in prop::collection::vec(1u32..1000, 1..30),
            seed: u64,
        ) {
            let n = weights.len();
            let targets: Vec<Target> =
                weights.iter().enumerate().map(|(i, &weight)| Target { addr: addr(i as u32), weight }).collect();
            let m = table_size_for(n).unwrap();
            let t = MaglevTable::build(&MaglevInput { targets, table_size: m, seed }).unwrap();
            let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
            for (i, c) in counts(&t).into_iter().enumerate() {
                let share = f64::from(weights[i]) / total;
                let ideal = f64::from(m) * share;
                let diff = c as f64 - ideal;
                prop_assert!(diff < 2.0 + 1e-9 && diff > -2.0 * n as f64 * share - 1e-9,
                    "target {} weight {}: {} slots, ideal {:.2}", i, weights[i], c, ideal);
            }
        }

        #[test]
        fn one_change_moves_about_one_nth(addrs in arb_targets(30), seed: u64, pick: prop::sample::Index) {
            prop_assume!(addrs.len() >= 3);
            let n = addrs.len();
            let m = table_size_for(n).unwrap();
            let all = MaglevInput { targets: addrs.iter().copied().map(Target::new).collect(), table_size: m, seed };
            let mut less = all.clone();
            less.targets.remove(pick.index(n));
            let full = MaglevTable::build(&all).unwrap();
            let reduced = MaglevTable::build(&less).unwrap();
            let ratio = moved(&full, &reduced) as f64 / (f64::from(m) / n as f64);
            // At least the removed target's slots move; Maglev moves some more.
            prop_assert!((0.98..3.0).contains(&ratio), "ratio {}", ratio);
        }
    }
}
