//! NAT gateways and their port-block allocator.
//!
//! A gateway owns public IPv4 addresses and a port pool `[port_min, port_max)` on each of
//! them, cut into blocks of `block_size` ports (a trailing remainder smaller than a block
//! is not used). Every attached interface owns exactly one block.
//!
//! # Allocation
//!
//! - The block goes on the public IP with the fewest blocks in use (ties: the IP listed
//!   first), so interfaces spread evenly over the addresses.
//! - On that IP, the lowest released block is reused first; otherwise the next never-used
//!   block is taken. Each IP keeps a high-water mark and the set of released blocks below
//!   it, so an allocation costs `O(#ips + log #released)` and never scans the blocks.
//! - When every block of every IP is in use, allocation fails with
//!   [`ApplyError::PoolExhausted`] and nothing changes.
//!
//! Invariant (checked by the property tests): a block is owned by at most one interface,
//! so two interfaces never share a port on the same public IP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{ApplyError, ObjectKind};

/// The highest port number plus one: the largest valid exclusive pool end.
pub const PORT_END: u32 = 1 << 16;

/// What a client asks for when creating a NAT gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatGatewaySpec {
    /// The gateway's name, unique in the fleet.
    pub id: String,
    /// The virtual network whose interfaces may attach.
    pub vni: u32,
    /// The public addresses (at least one, no duplicates).
    pub public_ips: Vec<Ipv4Addr>,
    /// First port of the pool (at least 1).
    pub port_min: u32,
    /// One past the last port of the pool (at most 65536).
    pub port_max: u32,
    /// Ports per interface (at least 1, at most the pool size).
    pub block_size: u32,
}

/// The ports an interface may use for NAT: `[port_min, port_max)` on `ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatBlock {
    /// The public address.
    pub ip: Ipv4Addr,
    /// First port of the block.
    pub port_min: u32,
    /// One past the last port of the block.
    pub port_max: u32,
}

impl NatBlock {
    /// Whether the two blocks share a port on the same address.
    pub fn overlaps(&self, other: &NatBlock) -> bool {
        self.ip == other.ip && self.port_min < other.port_max && other.port_min < self.port_max
    }
}

/// The free-block bookkeeping of one public IP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct IpPool {
    /// Blocks `0..high_water` have been handed out at least once.
    high_water: u32,
    /// Blocks below `high_water` that are free again.
    released: BTreeSet<u32>,
}

impl IpPool {
    fn in_use(&self) -> u32 {
        // `released` only holds blocks below `high_water`, so this cannot underflow.
        self.high_water - u32::try_from(self.released.len()).unwrap_or(u32::MAX).min(self.high_water)
    }
}

/// Which block an interface owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BlockRef {
    ip_index: u32,
    block: u32,
}

/// A NAT gateway with its allocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatGateway {
    spec: NatGatewaySpec,
    pools: Vec<IpPool>,
    allocations: BTreeMap<String, BlockRef>,
}

impl NatGateway {
    /// A gateway with no allocation, if `spec` is valid.
    pub fn new(spec: NatGatewaySpec) -> Result<Self, ApplyError> {
        let invalid = |why: String| Err(ApplyError::InvalidArgument(why));
        if spec.public_ips.is_empty() {
            return invalid(format!("NAT gateway {} needs at least one public IP", spec.id));
        }
        let distinct: BTreeSet<_> = spec.public_ips.iter().collect();
        if distinct.len() != spec.public_ips.len() {
            return invalid(format!("NAT gateway {} lists a public IP twice", spec.id));
        }
        if spec.port_min == 0 || spec.port_max > PORT_END || spec.port_min >= spec.port_max {
            return invalid(format!(
                "port pool [{}, {}) is not a non-empty range within [1, {PORT_END})",
                spec.port_min, spec.port_max
            ));
        }
        if spec.block_size == 0 || spec.block_size > spec.port_max - spec.port_min {
            return invalid(format!(
                "block size {} must be between 1 and the pool size {}",
                spec.block_size,
                spec.port_max - spec.port_min
            ));
        }
        let pools = vec![IpPool::default(); spec.public_ips.len()];
        Ok(NatGateway { spec, pools, allocations: BTreeMap::new() })
    }

    /// What the gateway was created with.
    pub fn spec(&self) -> &NatGatewaySpec {
        &self.spec
    }

    /// Blocks per public IP.
    pub fn blocks_per_ip(&self) -> u32 {
        (self.spec.port_max - self.spec.port_min) / self.spec.block_size
    }

    /// Blocks in use and blocks in total, over all public IPs.
    pub fn usage(&self) -> (u64, u64) {
        let total = u64::from(self.blocks_per_ip()) * self.pools.len() as u64;
        (self.allocations.len() as u64, total)
    }

    /// The public IP (if any) on which the port pools of `self` and `other` overlap.
    pub fn overlap_with(&self, other: &NatGateway) -> Option<Ipv4Addr> {
        let ranges_meet =
            self.spec.port_min < other.spec.port_max && other.spec.port_min < self.spec.port_max;
        if !ranges_meet {
            return None;
        }
        self.spec.public_ips.iter().find(|ip| other.spec.public_ips.contains(ip)).copied()
    }

    fn block_of(&self, r: BlockRef) -> NatBlock {
        let port_min = self.spec.port_min + r.block * self.spec.block_size;
        NatBlock {
            ip: self.spec.public_ips[r.ip_index as usize],
            port_min,
            port_max: port_min + self.spec.block_size,
        }
    }

    /// The block `interface` owns, if attached.
    pub fn allocation(&self, interface: &str) -> Option<NatBlock> {
        self.allocations.get(interface).map(|&r| self.block_of(r))
    }

    /// Every allocation, by interface id.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, NatBlock)> + '_ {
        self.allocations.iter().map(|(i, &r)| (i.as_str(), self.block_of(r)))
    }

    /// Gives `interface` a block. Fails, changing nothing, if it already has one or the
    /// pool is exhausted.
    pub fn allocate(&mut self, interface: &str) -> Result<NatBlock, ApplyError> {
        if self.allocations.contains_key(interface) {
            return Err(ApplyError::AlreadyExists {
                kind: ObjectKind::NatAttachment,
                id: format!("{interface} on {}", self.spec.id),
            });
        }
        let per_ip = self.blocks_per_ip();
        let (ip_index, pool) = self
            .pools
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| p.in_use() < per_ip)
            .min_by_key(|(i, p)| (p.in_use(), *i))
            .ok_or_else(|| ApplyError::PoolExhausted {
                gateway: self.spec.id.clone(),
                blocks: u64::from(per_ip) * self.spec.public_ips.len() as u64,
            })?;
        let block = match pool.released.pop_first() {
            Some(b) => b,
            None => {
                pool.high_water += 1;
                pool.high_water - 1
            }
        };
        // `ip_index` < number of public IPs, which fits in u32 as a Vec of IPv4 addresses
        // from one command cannot exceed the 2^32 possible addresses without duplicates.
        let r = BlockRef { ip_index: u32::try_from(ip_index).unwrap_or(u32::MAX), block };
        self.allocations.insert(interface.to_owned(), r);
        Ok(self.block_of(r))
    }

    /// Takes `interface`'s block back (it becomes the first candidate for reuse on its IP).
    pub fn release(&mut self, interface: &str) -> Option<NatBlock> {
        let r = self.allocations.remove(interface)?;
        let block = self.block_of(r);
        if let Some(pool) = self.pools.get_mut(r.ip_index as usize) {
            if r.block + 1 == pool.high_water {
                pool.high_water -= 1;
                // Fold released blocks that now sit at the top back under the mark.
                while pool.high_water > 0 && pool.released.remove(&(pool.high_water - 1)) {
                    pool.high_water -= 1;
                }
            } else {
                pool.released.insert(r.block);
            }
        }
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(ips: u8, min: u32, max: u32, block: u32) -> NatGatewaySpec {
        NatGatewaySpec {
            id: "gw".into(),
            vni: 1,
            public_ips: (0..ips).map(|i| Ipv4Addr::new(203, 0, 113, 1 + i)).collect(),
            port_min: min,
            port_max: max,
            block_size: block,
        }
    }

    #[test]
    fn blocks_spread_over_ips_and_are_reused() {
        let mut gw = NatGateway::new(spec(2, 1024, 1024 + 4 * 100, 100)).unwrap();
        let a = gw.allocate("a").unwrap();
        let b = gw.allocate("b").unwrap();
        let c = gw.allocate("c").unwrap();
        assert_eq!(a, NatBlock { ip: Ipv4Addr::new(203, 0, 113, 1), port_min: 1024, port_max: 1124 });
        assert_eq!(b, NatBlock { ip: Ipv4Addr::new(203, 0, 113, 2), port_min: 1024, port_max: 1124 });
        assert_eq!(c, NatBlock { ip: Ipv4Addr::new(203, 0, 113, 1), port_min: 1124, port_max: 1224 });
        assert_eq!(gw.release("a"), Some(a));
        // IP 1 now has the fewest blocks in use and its block 0 is free again.
        assert_eq!(gw.allocate("d").unwrap(), a);
        assert_eq!(gw.usage(), (3, 8));
    }

    #[test]
    fn exhaustion_is_an_error_and_changes_nothing() {
        // 250 ports, blocks of 100: two blocks per IP, the remaining 50 ports unused.
        let mut gw = NatGateway::new(spec(1, 1000, 1250, 100)).unwrap();
        gw.allocate("a").unwrap();
        gw.allocate("b").unwrap();
        let before = gw.clone();
        assert_eq!(gw.allocate("c"), Err(ApplyError::PoolExhausted { gateway: "gw".into(), blocks: 2 }));
        assert_eq!(gw, before);
        assert!(matches!(gw.allocate("a"), Err(ApplyError::AlreadyExists { .. })));
        assert_eq!(gw, before);
    }

    #[test]
    fn bad_specs_are_rejected() {
        for bad in [
            spec(0, 1, 100, 10),
            spec(1, 0, 100, 10),
            spec(1, 100, 100, 10),
            spec(1, 1, 65_537, 10),
            spec(1, 1, 100, 0),
            spec(1, 1, 100, 100),
        ] {
            assert!(matches!(NatGateway::new(bad), Err(ApplyError::InvalidArgument(_))));
        }
        let mut dup = spec(2, 1, 100, 10);
        dup.public_ips[1] = dup.public_ips[0];
        assert!(NatGateway::new(dup).is_err());
        assert!(NatGateway::new(spec(1, 1, 65_536, 65_535)).is_ok());
    }

    #[test]
    fn overlap_needs_a_shared_ip_and_shared_ports() {
        let a = NatGateway::new(spec(2, 1000, 2000, 10)).unwrap();
        let mut s = spec(1, 2000, 3000, 10);
        s.public_ips = vec![Ipv4Addr::new(203, 0, 113, 2)];
        assert_eq!(a.overlap_with(&NatGateway::new(s.clone()).unwrap()), None);
        s.port_min = 1999;
        assert_eq!(a.overlap_with(&NatGateway::new(s.clone()).unwrap()), Some(Ipv4Addr::new(203, 0, 113, 2)));
        s.public_ips = vec![Ipv4Addr::new(198, 51, 100, 1)];
        assert_eq!(a.overlap_with(&NatGateway::new(s).unwrap()), None);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Allocate(u8),
        Release(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![(0u8..40).prop_map(Step::Allocate), (0u8..40).prop_map(Step::Release)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Interleaved allocations and releases by many interfaces (as racing clients'
        /// commands end up, serialized, in the log) never hand out overlapping blocks,
        /// stay inside the pool, and fail only when every block is taken.
        #[test]
        fn blocks_never_overlap(
            ips in 1u8..4,
            min in 1u32..2000,
            len in 1u32..600,
            block in 1u32..100,
            steps in prop::collection::vec(step(), 1..200),
        ) {
            prop_assume!(block <= len);
            let mut gw = NatGateway::new(spec(ips, min, min + len, block)).unwrap();
            let capacity = u64::from(len / block) * u64::from(ips);
            for s in steps {
                match s {
                    Step::Allocate(i) => {
                        let name = format!("if{i}");
                        let had = gw.allocation(&name).is_some();
                        let before = gw.clone();
                        match gw.allocate(&name) {
                            Ok(b) => {
                                prop_assert!(!had);
                                prop_assert!(b.port_min >= min && b.port_max <= min + len);
                                prop_assert_eq!(b.port_max - b.port_min, block);
                            }
                            Err(ApplyError::PoolExhausted { .. }) => {
                                prop_assert_eq!(before.usage().0, capacity);
                                prop_assert_eq!(&gw, &before);
                            }
                            Err(_) => { prop_assert!(had); prop_assert_eq!(&gw, &before); }
                        }
                    }
                    Step::Release(i) => { gw.release(&format!("if{i}")); }
                }
                let all: Vec<NatBlock> = gw.allocations().map(|(_, b)| b).collect();
                for (x, a) in all.iter().enumerate() {
                    for b in &all[x + 1..] {
                        prop_assert!(!a.overlaps(b), "{:?} overlaps {:?}", a, b);
                    }
                }
                // The per-IP counts agree with the allocations and stay balanced.
                let per_ip: Vec<u32> = gw.pools.iter().map(IpPool::in_use).collect();
                prop_assert_eq!(per_ip.iter().map(|&n| u64::from(n)).sum::<u64>(), gw.usage().0);
            }
        }
    }
}
