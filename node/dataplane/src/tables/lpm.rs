//! Longest-prefix-match tables for IPv4 and IPv6.
//!
//! A table keeps its prefixes twice: as entries (prefix, length, value) with a hash
//! index for exact-match operations, and compiled into a sorted list of disjoint address
//! intervals that cover the whole address space, each labelled with the entry of the
//! longest prefix containing it (or none). A lookup is one search over the interval
//! starts plus two array reads, whatever the prefix lengths in use. The up to 2n + 1
//! starts of n prefixes are searched as a static B-tree of 16-entry blocks (one cache
//! line of IPv4 starts per level, searched without branches), so a VNI with up to
//! seven routes needs one block and 10,000 routes need four. Lookups take `&self` and
//! do not allocate.
//!
//! Inserts and removes keep the intervals compiled eagerly (the control plane builds
//! tables off the fast path): they split the intervals at the prefix's first address and
//! one past its last, relabel the intervals in between, and merge equal neighbours
//! again. The work is proportional to the number of intervals inside the prefix plus a
//! shift of the arrays; inserting prefixes in address order (as the control plane does,
//! from an ordered map) touches only the end of the arrays.
//!
//! Invariants of the compiled form: `starts[0] == 0`, `starts` strictly increases,
//! `starts.len() == owners.len()`, neighbouring intervals have different owners, and
//! `owners[i]` is the index into `entries` of the longest prefix containing
//! `starts[i]..next start` ([`NONE`] when no prefix does). Since prefixes either nest or
//! are disjoint, one owner holds for every address of an interval. Lookups search
//! `ends` (each interval's last address with its owner, padded to whole blocks)
//! through `levels`, an implicit B-tree over them, one block per level.
//!
//! The hash index uses FxHash (one multiply per key word): its keys are routes from the
//! control plane, and packets never touch it.

use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

/// Owner of an interval no prefix covers.
const NONE: u32 = u32::MAX;

/// Entries per block of the lookup's search tree (64 bytes of IPv4 addresses);
/// [`count_below`] searches a block in four steps.
const BLOCK: usize = 16;

/// An address as an unsigned integer: `u32` for IPv4, `u128` for IPv6.
trait Bits: Copy + Ord + Hash + std::fmt::Debug {
    /// Number of bits.
    const WIDTH: u8;
    const ZERO: Self;
    const MAX: Self;
    /// The network mask of a prefix of `len` bits (`len <= WIDTH`).
    fn mask(len: u8) -> Self;
    fn and(self, other: Self) -> Self;
    fn or_not(self, mask: Self) -> Self;
    /// `self + 1`; never called with `MAX`.
    fn succ(self) -> Self;
    /// `self - 1`; never called with zero.
    fn pred(self) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    const ZERO: Self = 0;
    const MAX: Self = u32::MAX;
    #[inline]
    fn mask(len: u8) -> Self {
        u32::MAX.checked_shl(u32::from(32 - len)).unwrap_or(0)
    }
    #[inline]
    fn and(self, other: Self) -> Self {
        self & other
    }
    #[inline]
    fn or_not(self, mask: Self) -> Self {
        self | !mask
    }
    #[inline]
    fn succ(self) -> Self {
        self.wrapping_add(1)
    }
    #[inline]
    fn pred(self) -> Self {
        self.wrapping_sub(1)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    const ZERO: Self = 0;
    const MAX: Self = u128::MAX;
    #[inline]
    fn mask(len: u8) -> Self {
        u128::MAX.checked_shl(u32::from(128 - len)).unwrap_or(0)
    }
    #[inline]
    fn and(self, other: Self) -> Self {
        self & other
    }
    #[inline]
    fn or_not(self, mask: Self) -> Self {
        self | !mask
    }
    #[inline]
    fn succ(self) -> Self {
        self.wrapping_add(1)
    }
    #[inline]
    fn pred(self) -> Self {
        self.wrapping_sub(1)
    }
}

#[derive(Clone, Debug)]
struct Entry<K, T> {
    net: K,
    len: u8,
    value: T,
}

/// The table, generic over the address width.
#[derive(Clone, Debug)]
struct Table<K, T> {
    /// The prefixes, in no particular order; `owners` and `index` point into it.
    entries: Vec<Entry<K, T>>,
    /// (network, length) -> position in `entries`.
    index: FxHashMap<(K, u8), u32>,
    /// First address of each interval (see the module invariants).
    starts: Vec<K>,
    /// Entry of the longest prefix covering each interval, or [`NONE`].
    owners: Vec<u32>,
    /// Last address and owner of each interval (`starts[i + 1] - 1`, then `MAX`;
    /// `owners[i]`), padded with (`MAX`, [`NONE`]) to whole blocks of [`BLOCK`]: what
    /// lookups search. The owner sits next to the address, in the cache line the search
    /// ends in.
    ends: Vec<(K, u32)>,
    /// An implicit B-tree over `ends`: `levels[0][j]` is the last entry of block `j` of
    /// `ends`, `levels[1][j]` that of block `j` of `levels[0]`, and so on, each padded
    /// with `MAX` to whole blocks, up to a level of one block (no levels when `ends` is
    /// one block).
    levels: Vec<Vec<K>>,
}

impl<K: Bits, T> Default for Table<K, T> {
    fn default() -> Self {
        Table {
            entries: Vec::new(),
            index: FxHashMap::default(),
            starts: vec![K::ZERO],
            owners: vec![NONE],
            ends: vec![(K::MAX, NONE); BLOCK],
            levels: Vec::new(),
        }
    }
}

impl<K: Bits, T> Table<K, T> {
    fn key(addr: K, len: u8) -> (K, u8) {
        let len = len.min(K::WIDTH);
        (addr.and(K::mask(len)), len)
    }

    fn insert(&mut self, addr: K, len: u8, value: T) -> Option<T> {
        let (net, len) = Self::key(addr, len);
        if let Some(&i) = self.index.get(&(net, len)) {
            let e = &mut self.entries[i as usize];
            return Some(std::mem::replace(&mut e.value, value));
        }
        // More than 2^32 - 1 prefixes cannot be labelled; such a table would not fit in
        // memory anyway.
        let Ok(new) = u32::try_from(self.entries.len()) else { return None };
        if new == NONE {
            return None;
        }
        self.entries.push(Entry { net, len, value });
        self.index.insert((net, len), new);
        let entries = &self.entries;
        // The new prefix takes every interval inside it that no longer prefix owns.
        let changed =
            relabel(&mut self.starts, &mut self.owners, net, len, |o| match entries.get(o as usize) {
                Some(e) if e.len > len => o,
                _ => new,
            });
        self.recompile(changed);
        None
    }

    fn remove(&mut self, addr: K, len: u8) -> Option<T> {
        let (net, len) = Self::key(addr, len);
        let gone = self.index.remove(&(net, len))?;
        // Intervals the removed prefix owned fall to the longest shorter prefix that
        // contains it (every such prefix contains all of it, prefixes being nested).
        let parent =
            (0..len).rev().find_map(|l| self.index.get(&(net.and(K::mask(l)), l)).copied()).unwrap_or(NONE);
        let changed =
            relabel(&mut self.starts, &mut self.owners, net, len, |o| if o == gone { parent } else { o });
        self.recompile(changed);
        let last = u32::try_from(self.entries.len() - 1).unwrap_or(NONE);
        let removed = self.entries.swap_remove(gone as usize);
        if gone != last {
            // The last entry moved into the hole: point its index and intervals there.
            let (mnet, mlen) = {
                let m = &self.entries[gone as usize];
                (m.net, m.len)
            };
            self.index.insert((mnet, mlen), gone);
            let changed =
                relabel(&mut self.starts, &mut self.owners, mnet, mlen, |o| if o == last { gone } else { o });
            self.recompile(changed);
        }
        Some(removed.value)
    }

    /// Recomputes `ends` and `levels` from interval `changed` on (the intervals before
    /// it kept their place), adding or dropping levels as the table grew or shrank.
    fn recompile(&mut self, changed: usize) {
        // ends[i] depends on starts[i + 1] and owners[i].
        let from = changed.saturating_sub(1).min(self.starts.len());
        self.ends.truncate(from);
        let next = self.starts.get(from + 1..).unwrap_or_default().iter().map(|s| s.pred());
        let owners = self.owners.get(from..).unwrap_or_default();
        self.ends.extend(next.chain([K::MAX]).zip(owners.iter().copied()));
        self.ends.resize(self.ends.len().next_multiple_of(BLOCK), (K::MAX, NONE));
        let mut changed = from;
        let mut depth = 0;
        loop {
            let lower_len = if depth == 0 { self.ends.len() } else { self.levels[depth - 1].len() };
            if lower_len <= BLOCK {
                self.levels.truncate(depth);
                return;
            }
            let keep = changed / BLOCK;
            let mut level =
                if depth < self.levels.len() { std::mem::take(&mut self.levels[depth]) } else { Vec::new() };
            level.truncate(keep);
            if depth == 0 {
                let rest = self.ends.get(keep * BLOCK..).unwrap_or_default();
                level.extend(rest.chunks(BLOCK).filter_map(|c| c.last()).map(|e| e.0));
            } else {
                let rest = self.levels[depth - 1].get(keep * BLOCK..).unwrap_or_default();
                level.extend(rest.chunks(BLOCK).filter_map(|c| c.last()));
            }
            pad(&mut level);
            if depth < self.levels.len() {
                self.levels[depth] = level;
            } else {
                self.levels.push(level);
            }
            changed = keep;
            depth += 1;
        }
    }

    fn get_exact(&self, addr: K, len: u8) -> Option<&T> {
        let i = *self.index.get(&Self::key(addr, len))?;
        self.entries.get(i as usize).map(|e| &e.value)
    }

    #[inline]
    fn lookup(&self, addr: K) -> Option<&T> {
        // The first interval ending at or after addr, found top-down through the
        // levels: the top level is one block, and in each level the block below the
        // entry found one level up holds the first entry >= addr (its last entry is
        // that entry, and the entries before the block are < addr).
        let mut i = 0;
        for level in self.levels.iter().rev() {
            i = i * BLOCK + count_below(level, i, addr, |&e| e)?;
        }
        let i = i * BLOCK + count_below(&self.ends, i, addr, |e| e.0)?;
        let (_, owner) = *self.ends.get(i)?;
        // NONE is out of range of entries.
        self.entries.get(owner as usize).map(|e| &e.value)
    }

    fn iter(&self) -> impl Iterator<Item = (K, u8, &T)> {
        self.entries.iter().map(|e| (e.net, e.len, &e.value))
    }
}

/// The number of entries whose `key` is below `addr` in block `block` of `list`, whose
/// last key is at least `addr`: a binary search of four steps without branches within
/// one block (one cache line of IPv4 addresses). `None` only if the block does not
/// exist.
#[inline]
fn count_below<E, K: Bits>(list: &[E], block: usize, addr: K, key: impl Fn(&E) -> K) -> Option<usize> {
    let chunk: &[E; BLOCK] = list.get(block.wrapping_mul(BLOCK)..)?.first_chunk()?;
    let mut n = 0;
    for step in [8, 4, 2, 1] {
        // n + step - 1 <= 14: the last entry is never compared, being >= addr.
        n += step * usize::from(key(&chunk[(n + step - 1) % BLOCK]) < addr);
    }
    Some(n)
}

/// Pads `list` with `MAX` to whole blocks.
fn pad<K: Bits>(list: &mut Vec<K>) {
    list.resize(list.len().next_multiple_of(BLOCK), K::MAX);
}

/// Applies `f` to the owner of every interval inside `net/len`, splitting intervals
/// at the prefix's bounds first and merging equal neighbours afterwards. Returns the
/// first interval whose start, owner or position may have changed.
fn relabel<K: Bits>(
    starts: &mut Vec<K>,
    owners: &mut Vec<u32>,
    net: K,
    len: u8,
    f: impl Fn(u32) -> u32,
) -> usize {
    let last_addr = net.or_not(K::mask(len));
    let first = split_at(starts, owners, net);
    let end = if last_addr == K::MAX { starts.len() } else { split_at(starts, owners, last_addr.succ()) };
    for o in &mut owners[first..end] {
        *o = f(*o);
    }
    // Merge neighbours with equal owners in [first - 1, end], keeping the first of
    // each run; only this window can have changed.
    let lo = first.saturating_sub(1);
    let hi = (end + 1).min(starts.len());
    let mut w = lo + 1;
    for r in lo + 1..hi {
        if owners[r] != owners[w - 1] {
            owners[w] = owners[r];
            starts[w] = starts[r];
            w += 1;
        }
    }
    owners.drain(w..hi);
    starts.drain(w..hi);
    lo
}

/// Makes `at` the start of an interval and returns that interval's position.
fn split_at<K: Bits>(starts: &mut Vec<K>, owners: &mut Vec<u32>, at: K) -> usize {
    let i = starts.partition_point(|&s| s <= at);
    // starts[0] == 0 <= at, so i >= 1.
    if starts[i - 1] == at {
        return i - 1;
    }
    let owner = owners[i - 1];
    starts.insert(i, at);
    owners.insert(i, owner);
    i
}

/// IPv4 longest-prefix-match table with values of type `T`.
#[derive(Clone, Debug)]
pub struct Lpm4<T>(Table<u32, T>);

impl<T> Default for Lpm4<T> {
    fn default() -> Self {
        Lpm4(Table::default())
    }
}

impl<T> Lpm4<T> {
    /// Inserts or replaces the entry for `addr/len` (host bits are ignored). Returns the
    /// previous value. `len` above 32 is clamped.
    pub fn insert(&mut self, addr: Ipv4Addr, len: u8, value: T) -> Option<T> {
        self.0.insert(u32::from(addr), len, value)
    }
    /// Removes the entry for exactly `addr/len`.
    pub fn remove(&mut self, addr: Ipv4Addr, len: u8) -> Option<T> {
        self.0.remove(u32::from(addr), len)
    }
    /// The entry for exactly `addr/len`.
    pub fn get_exact(&self, addr: Ipv4Addr, len: u8) -> Option<&T> {
        self.0.get_exact(u32::from(addr), len)
    }
    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&T> {
        self.0.lookup(u32::from(addr))
    }
    /// All entries as (network, length, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, u8, &T)> {
        self.0.iter().map(|(k, l, v)| (Ipv4Addr::from(k), l, v))
    }
}

/// IPv6 longest-prefix-match table with values of type `T`.
#[derive(Clone, Debug)]
pub struct Lpm6<T>(Table<u128, T>);

impl<T> Default for Lpm6<T> {
    fn default() -> Self {
        Lpm6(Table::default())
    }
}

impl<T> Lpm6<T> {
    /// Inserts or replaces the entry for `addr/len` (host bits are ignored). Returns the
    /// previous value. `len` above 128 is clamped.
    pub fn insert(&mut self, addr: Ipv6Addr, len: u8, value: T) -> Option<T> {
        self.0.insert(u128::from(addr), len, value)
    }
    /// Removes the entry for exactly `addr/len`.
    pub fn remove(&mut self, addr: Ipv6Addr, len: u8) -> Option<T> {
        self.0.remove(u128::from(addr), len)
    }
    /// The entry for exactly `addr/len`.
    pub fn get_exact(&self, addr: Ipv6Addr, len: u8) -> Option<&T> {
        self.0.get_exact(u128::from(addr), len)
    }
    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<&T> {
        self.0.lookup(u128::from(addr))
    }
    /// All entries as (network, length, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv6Addr, u8, &T)> {
        self.0.iter().map(|(k, l, v)| (Ipv6Addr::from(k), l, v))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn longest_prefix_wins_v4() {
        let mut t = Lpm4::default();
        t.insert("0.0.0.0".parse().unwrap(), 0, 'd');
        t.insert("10.0.0.0".parse().unwrap(), 8, 'a');
        t.insert("10.1.0.0".parse().unwrap(), 16, 'b');
        t.insert("10.1.2.3".parse().unwrap(), 32, 'h');
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(&'h'));
        assert_eq!(t.lookup("10.1.9.9".parse().unwrap()), Some(&'b'));
        assert_eq!(t.lookup("10.9.9.9".parse().unwrap()), Some(&'a'));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), Some(&'d'));
        assert_eq!(t.remove("0.0.0.0".parse().unwrap(), 0), Some('d'));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), None);
        // host bits in the inserted prefix are ignored
        t.insert("192.168.7.7".parse().unwrap(), 24, 'x');
        assert_eq!(t.lookup("192.168.7.1".parse().unwrap()), Some(&'x'));
        assert_eq!(t.iter().count(), 4);
        check(&t.0);
    }

    #[test]
    fn longest_prefix_wins_v6() {
        let mut t = Lpm6::default();
        t.insert("::".parse().unwrap(), 0, 0);
        t.insert("2000:100:2::".parse().unwrap(), 104, 1);
        t.insert("2000:100:1::1".parse().unwrap(), 128, 2);
        assert_eq!(t.lookup("2000:100:2::7b".parse().unwrap()), Some(&1));
        assert_eq!(t.lookup("2000:100:1::1".parse().unwrap()), Some(&2));
        assert_eq!(t.lookup("2001::1".parse().unwrap()), Some(&0));
        assert_eq!(t.get_exact("2000:100:2::".parse().unwrap(), 104), Some(&1));
        t.remove("::".parse().unwrap(), 0);
        assert_eq!(t.lookup("2001::1".parse().unwrap()), None);
        check(&t.0);
    }

    #[test]
    fn edges_of_the_address_space() {
        let mut t = Lpm4::default();
        assert_eq!(t.lookup(Ipv4Addr::UNSPECIFIED), None);
        t.insert(Ipv4Addr::BROADCAST, 32, 'b');
        t.insert(Ipv4Addr::UNSPECIFIED, 32, 'z');
        t.insert("255.0.0.0".parse().unwrap(), 8, 'e');
        assert_eq!(t.lookup(Ipv4Addr::BROADCAST), Some(&'b'));
        assert_eq!(t.lookup("255.255.255.254".parse().unwrap()), Some(&'e'));
        assert_eq!(t.lookup(Ipv4Addr::UNSPECIFIED), Some(&'z'));
        assert_eq!(t.lookup("0.0.0.1".parse().unwrap()), None);
        assert_eq!(t.insert("255.1.2.3".parse().unwrap(), 8, 'E'), Some('e'), "replaced");
        assert_eq!(t.lookup("255.9.9.9".parse().unwrap()), Some(&'E'));
        assert_eq!(t.insert("1.2.3.4".parse().unwrap(), 40, 'c'), None, "clamped to /32");
        assert_eq!(t.get_exact("1.2.3.4".parse().unwrap(), 32), Some(&'c'));
        check(&t.0);
        for (a, l) in [("255.255.255.255", 32), ("0.0.0.0", 32), ("255.0.0.0", 8), ("1.2.3.4", 32)] {
            assert!(t.remove(a.parse().unwrap(), l).is_some());
            check(&t.0);
        }
        assert_eq!(t.remove("1.2.3.4".parse().unwrap(), 32), None);
        assert_eq!((t.0.starts.as_slice(), t.0.owners.as_slice()), (&[0][..], &[NONE][..]), "back to empty");

        let mut t = Lpm6::default();
        t.insert(Ipv6Addr::from(u128::MAX), 128, 1);
        t.insert(Ipv6Addr::UNSPECIFIED, 0, 0);
        assert_eq!(t.lookup(Ipv6Addr::from(u128::MAX)), Some(&1));
        assert_eq!(t.lookup(Ipv6Addr::from(u128::MAX - 1)), Some(&0));
        check(&t.0);
    }

    /// Checks the invariants of the compiled form.
    fn check<K: Bits, T>(t: &Table<K, T>) {
        assert_eq!(t.starts.len(), t.owners.len());
        assert_eq!(t.starts.first(), Some(&K::ZERO));
        assert!(t.starts.windows(2).all(|w| w[0] < w[1]), "starts increase: {:?}", t.starts);
        assert!(t.owners.windows(2).all(|w| w[0] != w[1]), "merged: {:?}", t.owners);
        assert!(t.owners.iter().all(|&o| o == NONE || (o as usize) < t.entries.len()));
        let mut ends: Vec<(K, u32)> =
            t.starts.iter().skip(1).map(|s| s.pred()).chain([K::MAX]).zip(t.owners.iter().copied()).collect();
        ends.resize(ends.len().next_multiple_of(BLOCK), (K::MAX, NONE));
        assert_eq!(t.ends, ends);
        let ends: Vec<K> = ends.iter().map(|e| e.0).collect();
        let mut levels: Vec<Vec<K>> = Vec::new();
        loop {
            let lower = levels.last().unwrap_or(&ends);
            if lower.len() <= BLOCK {
                break;
            }
            let mut level: Vec<K> = lower.chunks(BLOCK).map(|c| c[BLOCK - 1]).collect();
            pad(&mut level);
            levels.push(level);
        }
        assert_eq!(t.levels, levels);
        assert_eq!(t.index.len(), t.entries.len());
        for (i, e) in t.entries.iter().enumerate() {
            assert_eq!(t.index.get(&(e.net, e.len)), Some(&(i as u32)));
        }
    }

    /// Longest match by brute force over (network, length) -> value.
    fn brute<K: Bits>(set: &BTreeMap<(K, u8), u32>, a: K) -> Option<u32> {
        set.iter()
            .filter(|((n, l), _)| a.and(K::mask(*l)) == *n)
            .max_by_key(|((_, l), _)| *l)
            .map(|(_, v)| *v)
    }

    /// Runs `ops` (insert when the flag is set, else remove) on a table and on a
    /// brute-force model, then compares lookups at every prefix's bounds and neighbours
    /// and at `probes`.
    fn run<K: Bits>(ops: &[(bool, K, u8, u32)], probes: &[K], succ_pred: impl Fn(K) -> [K; 2]) {
        let mut t: Table<K, u32> = Table::default();
        let mut model = BTreeMap::new();
        for &(ins, addr, len, v) in ops {
            let key = Table::<K, u32>::key(addr, len);
            if ins {
                assert_eq!(t.insert(addr, len, v), model.insert(key, v));
            } else {
                assert_eq!(t.remove(addr, len), model.remove(&key));
            }
            check(&t);
        }
        let mut addrs = probes.to_vec();
        for &(n, l) in model.keys() {
            let last = n.or_not(K::mask(l));
            addrs.extend([n, last]);
            addrs.extend(succ_pred(n));
            addrs.extend(succ_pred(last));
        }
        for a in addrs {
            assert_eq!(t.lookup(a).copied(), brute(&model, a), "lookup {a:?}");
        }
        for (&(n, l), v) in &model {
            assert_eq!(t.get_exact(n, l), Some(v));
        }
        let mut listed: Vec<_> = t.iter().map(|(n, l, v)| ((n, l), *v)).collect();
        listed.sort_unstable();
        assert_eq!(listed, model.into_iter().collect::<Vec<_>>());
    }

    /// IPv4 addresses from a few /4 blocks, so that prefixes of all lengths overlap.
    fn addr4() -> impl Strategy<Value = u32> {
        (0u32..3, any::<u32>()).prop_map(|(top, low)| (top << 28) | (low >> 4))
    }

    /// IPv6 addresses from a few /8 blocks with few distinct bits below, so that
    /// prefixes of all lengths overlap.
    fn addr6() -> impl Strategy<Value = u128> {
        (0u128..3, any::<u16>(), any::<u16>(), 0u128..4)
            .prop_map(|(top, a, b, low)| (top << 120) | (u128::from(a) << 100) | (u128::from(b) << 40) | low)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_brute_force_v4(
            ops in prop::collection::vec((prop::bool::weighted(0.75), addr4(), 0u8..=32, any::<u32>()), 0..100),
            probes in prop::collection::vec(addr4(), 0..40),
        ) {
            run(&ops, &probes, |a: u32| [a.wrapping_sub(1), a.wrapping_add(1)]);
        }

        #[test]
        fn matches_brute_force_v6(
            ops in prop::collection::vec((prop::bool::weighted(0.75), addr6(), 0u8..=128, any::<u32>()), 0..100),
            probes in prop::collection::vec(addr6(), 0..40),
        ) {
            run(&ops, &probes, |a: u128| [a.wrapping_sub(1), a.wrapping_add(1)]);
        }
    }
}
