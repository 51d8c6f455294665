//! A worker's pool of interned IPv6 addresses, so that a flow's cached action names an
//! address with two bytes instead of sixteen.
//!
//! Flow actions need a few full IPv6 addresses: the underlay address a relayed flow goes
//! to (a neighbour NAT's owner, a remote load-balancer target) and the VM address a
//! NAT64 reply is translated back to. There are few distinct ones (targets, neighbours,
//! NAT64 VMs) and millions of flows, so each flow holds an [`AddrId`] and a reference;
//! the flow's removal gives the reference back. Storage is allocated once, at the
//! pool's full capacity: interning on the flow-setup path never allocates.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use rustc_hash::FxBuildHasher;

/// An interned address: an index into its worker's [`AddrPool`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddrId(u16);

/// The interned addresses of one worker, with a reference count each.
#[derive(Clone, Debug)]
pub struct AddrPool {
    addrs: Box<[Ipv6Addr]>,
    refs: Box<[u32]>,
    /// Unused ids, popped from the end.
    free: Vec<u16>,
    index: HashMap<Ipv6Addr, u16, FxBuildHasher>,
}

impl AddrPool {
    /// Most distinct addresses a pool holds (ids are 16 bits).
    pub const MAX_CAPACITY: usize = 1 << 16;
    /// The default capacity: more distinct relay targets and NAT64 VMs than a node has.
    pub const DEFAULT_CAPACITY: usize = 1 << 14;

    /// An empty pool of `capacity` addresses (at most [`Self::MAX_CAPACITY`]).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Self::MAX_CAPACITY);
        AddrPool {
            addrs: vec![Ipv6Addr::UNSPECIFIED; capacity].into_boxed_slice(),
            refs: vec![0; capacity].into_boxed_slice(),
            // Lowest ids first; the conversion cannot truncate below MAX_CAPACITY.
            free: (0..capacity).rev().map(|i| u16::try_from(i).unwrap_or(u16::MAX)).collect(),
            // Room for every address the pool can hold, so inserts never grow the map.
            index: HashMap::with_capacity_and_hasher(capacity, FxBuildHasher),
        }
    }

    /// A new reference to `addr`, interning it if needed; `None` when the pool is full.
    pub fn acquire(&mut self, addr: Ipv6Addr) -> Option<AddrId> {
        if let Some(&i) = self.index.get(&addr) {
            self.refs[usize::from(i)] += 1;
            return Some(AddrId(i));
        }
        let i = self.free.pop()?;
        self.addrs[usize::from(i)] = addr;
        self.refs[usize::from(i)] = 1;
        self.index.insert(addr, i);
        Some(AddrId(i))
    }

    /// The address of `id`.
    #[inline]
    pub fn get(&self, id: AddrId) -> Ipv6Addr {
        self.addrs[usize::from(id.0)]
    }

    /// Gives back one reference to `id`; the last one frees it.
    pub fn release(&mut self, id: AddrId) {
        let i = usize::from(id.0);
        match self.refs[i] {
            0 => debug_assert!(false, "address {id:?} released more often than acquired"),
            1 => {
                self.refs[i] = 0;
                self.index.remove(&self.addrs[i]);
                self.free.push(id.0);
            }
            _ => self.refs[i] -= 1,
        }
    }

    /// How many distinct addresses are interned.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no address is interned.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The references held on `addr` (0 if it is not interned).
    pub fn refs(&self, addr: Ipv6Addr) -> u32 {
        self.index.get(&addr).map_or(0, |&i| self.refs[usize::from(i)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(i: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, i)
    }

    #[test]
    fn interns_counts_and_frees() {
        let mut p = AddrPool::new(2);
        let x = p.acquire(a(1)).unwrap();
        assert_eq!(p.acquire(a(1)), Some(x));
        let y = p.acquire(a(2)).unwrap();
        assert_ne!(x, y);
        assert_eq!((p.get(x), p.get(y)), (a(1), a(2)));
        assert_eq!(p.acquire(a(3)), None, "full");
        assert_eq!(p.acquire(a(2)), Some(y), "a known address needs no room");
        p.release(x);
        assert_eq!(p.refs(a(1)), 1);
        p.release(x);
        assert_eq!(p.refs(a(1)), 0);
        let z = p.acquire(a(3)).unwrap();
        assert_eq!(z, x, "the freed id is reused");
        assert_eq!(p.get(z), a(3));
        assert_eq!(p.len(), 2);
    }

    proptest! {
        /// Random acquire/release sequences keep the pool equal to a reference count map.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((any::<bool>(), 0u16..12), 1..300)) {
            let mut p = AddrPool::new(8);
            let mut held: Vec<(Ipv6Addr, AddrId)> = Vec::new();
            let mut model: std::collections::HashMap<Ipv6Addr, u32> = Default::default();
            for (acq, n) in ops {
                if acq {
                    let addr = a(n);
                    match p.acquire(addr) {
                        Some(id) => {
                            prop_assert_eq!(p.get(id), addr);
                            held.push((addr, id));
                            *model.entry(addr).or_default() += 1;
                        }
                        None => prop_assert!(model.len() == 8 && !model.contains_key(&addr)),
                    }
                } else if !held.is_empty() {
                    let (addr, id) = held.swap_remove(usize::from(n) % held.len());
                    p.release(id);
                    let c = model.get_mut(&addr).unwrap();
                    *c -= 1;
                    if *c == 0 { model.remove(&addr); }
                }
                prop_assert_eq!(p.len(), model.len());
                for (addr, c) in &model {
                    prop_assert_eq!(p.refs(*addr), *c);
                }
            }
        }
    }
}
