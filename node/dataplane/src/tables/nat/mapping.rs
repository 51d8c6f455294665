//! Per-worker NAT port mappings.
//!
//! One fixed-size open-addressing hash table (linear probing, deletion by backward
//! shift, so no tombstones and no rehash; a keyed hash seeded per table) keyed by the
//! reply tuple of a translated flow (NAT IP, NAT port, protocol, remote IP, remote
//! port), holding the flow's original source. The same table serves three purposes: it keeps that tuple unique among live
//! flows, it is the reverse lookup for return traffic, and it is what release removes.
//!
//! Allocation for an interface (a *slot*) probes the ports of the slot's share of its
//! range as dpservice does: the first port tried is `min + h % size`, with `h` the
//! dpservice hash of the flow's original source ([`portmap_hash`]: VM address, VNI,
//! source port or ICMP identifier), then the following ports, wrapping around; it takes
//! the first port whose tuple towards the flow's remote endpoint is free. So a source
//! port gets the same NAT port towards every destination while that port is free, and
//! a new flow is refused as exhausted exactly when every port of the share already
//! carries a live flow to the same remote endpoint and protocol (finding that out costs
//! one probe per port of the share).
//!
//! Memory: the table has a power-of-two number of buckets, at least 4/3 of the
//! capacity, of `size_of::<Entry>()` (40) bytes each: 80 bytes per mapping at a
//! power-of-two capacity, e.g. 5 MiB for 65,536 mappings.

use std::net::{IpAddr, Ipv4Addr};

use super::{LocalNat, NatConfigError, PortRange};
use crate::config::Vni;
use crate::tables::jhash::portmap_hash;
use crate::tables::mix::{fold_mul, splitmix64};

/// Protocols the NAT translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatProto {
    /// TCP: the source port is translated.
    Tcp,
    /// UDP: the source port is translated.
    Udp,
    /// ICMP echo: the identifier is translated; the remote port is always 0.
    Icmp,
}

impl NatProto {
    /// From an IPv4 protocol number (1, 6, 17).
    pub fn from_ip_proto(p: u8) -> Option<Self> {
        match p {
            1 => Some(NatProto::Icmp),
            6 => Some(NatProto::Tcp),
            17 => Some(NatProto::Udp),
            _ => None,
        }
    }

    /// The IPv4 protocol number.
    pub fn ip_proto(self) -> u8 {
        match self {
            NatProto::Icmp => 1,
            NatProto::Tcp => 6,
            NatProto::Udp => 17,
        }
    }
}

/// A translated flow as the outside world sees it: the tuple of its return traffic
/// (destination = NAT IP and port, source = remote IP and port). For ICMP echo,
/// `nat_port` is the translated identifier and `remote_port` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatKey {
    /// The NAT IP.
    pub nat_ip: Ipv4Addr,
    /// The NAT port (or ICMP identifier) handed out.
    pub nat_port: u16,
    /// The protocol.
    pub proto: NatProto,
    /// The remote endpoint's address.
    pub remote_ip: Ipv4Addr,
    /// The remote endpoint's port (0 for ICMP).
    pub remote_port: u16,
}

/// Where a translated flow came from: what return traffic is translated back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Original {
    /// The VNI of the interface.
    pub vni: Vni,
    /// The VM's address (IPv6 for NAT64 flows).
    pub src_ip: IpAddr,
    /// The VM's source port (or ICMP echo identifier).
    pub src_port: u16,
}

/// Why no NAT port was handed out. The graph counts each as a drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The slot has no NAT configured (or does not exist).
    #[error("no NAT configured for this interface")]
    NoNat,
    /// Every port of the worker's share already carries a live flow to this remote
    /// endpoint and protocol.
    #[error("NAT port range exhausted")]
    Exhausted,
    /// The worker's mapping table holds its configured capacity.
    #[error("NAT mapping table full")]
    TableFull,
}

/// Sizing of a worker's [`NatMappings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingsConfig {
    /// Most live mappings the worker holds (all slots together).
    pub capacity: usize,
    /// Number of slots (e.g. one per VF port id).
    pub slots: usize,
    /// This worker's index.
    pub worker: usize,
    /// Number of workers sharing every range.
    pub workers: usize,
    /// Seed of the table's keyed hash; draw it at random (e.g. from `getrandom`) when
    /// the worker starts.
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotState {
    /// The NAT configuration as given (to tell whether a new one differs).
    nat: LocalNat,
    /// This worker's share of `nat.range`; `None` when it is empty.
    share: Option<PortRange>,
    /// Live mappings of the slot.
    live: u32,
}

/// Protocol number stored in an empty bucket (no NATed flow has it).
const EMPTY: u8 = 0;

#[derive(Clone, Copy, Debug)]
struct Entry {
    nat_ip: u32,
    remote_ip: u32,
    nat_port: u16,
    remote_port: u16,
    /// IP protocol number; [`EMPTY`] marks a free bucket.
    proto: u8,
    slot: u16,
    orig: Original,
}

impl Entry {
    const VACANT: Entry = Entry {
        nat_ip: 0,
        remote_ip: 0,
        nat_port: 0,
        remote_port: 0,
        proto: EMPTY,
        slot: 0,
        orig: Original { vni: 0, src_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED), src_port: 0 },
    };
}

/// The hash-table key in its packed form.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Packed {
    nat_ip: u32,
    remote_ip: u32,
    nat_port: u16,
    remote_port: u16,
    proto: u8,
}

impl Packed {
    fn of(k: &NatKey) -> Self {
        Packed {
            nat_ip: u32::from(k.nat_ip),
            remote_ip: u32::from(k.remote_ip),
            nat_port: k.nat_port,
            remote_port: k.remote_port,
            proto: k.proto.ip_proto(),
        }
    }
    fn of_entry(e: &Entry) -> Self {
        Packed {
            nat_ip: e.nat_ip,
            remote_ip: e.remote_ip,
            nat_port: e.nat_port,
            remote_port: e.remote_port,
            proto: e.proto,
        }
    }
    /// Keyed hash: two folded multiplies (as wyhash does) over the key's two words
    /// mixed with the table's secrets, so that a VM choosing its destinations cannot
    /// predict which of its flows collide.
    fn hash(&self, secret: &[u64; 4]) -> u64 {
        let a = (u64::from(self.nat_ip) << 32) | u64::from(self.remote_ip);
        let b = (u64::from(self.nat_port) << 32) | (u64::from(self.remote_port) << 8) | u64::from(self.proto);
        fold_mul(fold_mul(a ^ secret[0], b ^ secret[1]) ^ secret[2], secret[3])
    }
}

/// Fixed-size linear-probing table. At least one bucket is always empty, so probes end.
#[derive(Clone, Debug)]
struct Buckets {
    b: Box<[Entry]>,
    mask: usize,
    secret: [u64; 4],
}

impl Buckets {
    fn with_buckets(n: usize, seed: u64) -> Self {
        let mut st = seed;
        let mut secret = [0u64; 4];
        for x in &mut secret {
            // Odd secrets keep a multiply by a zero word from wiping a whole product.
            *x = splitmix64(&mut st) | 1;
        }
        Buckets { b: vec![Entry::VACANT; n].into_boxed_slice(), mask: n - 1, secret }
    }

    #[allow(clippy::cast_possible_truncation)] // masked to the table size
    fn home(&self, k: &Packed) -> usize {
        (k.hash(&self.secret) as usize) & self.mask
    }

    /// `Ok(index)` of the entry with key `k`, or `Err(index)` of the empty bucket where
    /// it would go.
    fn find(&self, k: &Packed) -> Result<usize, usize> {
        let mut i = self.home(k);
        loop {
            let e = &self.b[i];
            if e.proto == EMPTY {
                return Err(i);
            }
            if Packed::of_entry(e) == *k {
                return Ok(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Empties bucket `i`, moving later entries of its probe run back so that every
    /// entry stays reachable from its home bucket.
    fn remove_at(&mut self, i: usize) {
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            if self.b[j].proto == EMPTY {
                break;
            }
            let home = self.home(&Packed::of_entry(&self.b[j]));
            // The entry at j may fill the hole if the hole lies on its probe path
            // (cyclically between its home and j).
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.b[hole] = self.b[j];
                hole = j;
            }
        }
        self.b[hole] = Entry::VACANT;
    }
}

/// One worker's NAT port mappings for all its interfaces. See the module docs.
///
/// Owned by one worker; every method but [`NatMappings::new`] and
/// [`NatMappings::set_slot`] runs in bounded time without allocating.
#[derive(Clone, Debug)]
pub struct NatMappings {
    table: Buckets,
    slots: Box<[Option<SlotState>]>,
    len: usize,
    capacity: usize,
    worker: usize,
    workers: usize,
}

impl NatMappings {
    /// An empty table holding up to `cfg.capacity` mappings for `cfg.slots` slots, as
    /// worker `cfg.worker` of `cfg.workers`. Allocates everything it will ever use.
    pub fn new(cfg: MappingsConfig) -> Result<Self, NatConfigError> {
        if cfg.worker >= cfg.workers {
            return Err(NatConfigError::BadWorker { worker: cfg.worker, workers: cfg.workers });
        }
        // Load factor at most 3/4, and at least one empty bucket.
        let buckets = (cfg.capacity.saturating_mul(4) / 3 + 1).next_power_of_two().max(2);
        let slots = cfg.slots.min(usize::from(u16::MAX) + 1);
        Ok(NatMappings {
            table: Buckets::with_buckets(buckets, cfg.seed),
            slots: vec![None; slots].into_boxed_slice(),
            len: 0,
            capacity: cfg.capacity,
            worker: cfg.worker,
            workers: cfg.workers,
        })
    }

    /// Configures slot `slot` with `nat` (or none). When the configuration differs from
    /// the slot's current one, every mapping of the slot is removed first (the flows
    /// that used them must be flushed from conntrack too). Returns how many mappings
    /// were removed.
    /// Scans the whole table when something changes: call it off the per-packet path,
    /// when a new snapshot arrives. Slots beyond `cfg.slots` are ignored.
    pub fn set_slot(&mut self, slot: usize, nat: Option<&LocalNat>) -> usize {
        let Some(cur) = self.slots.get(slot) else { return 0 };
        if cur.map(|s| s.nat) == nat.copied() {
            return 0;
        }
        let removed = if cur.is_some() { self.remove_slot_mappings(slot) } else { 0 };
        self.slots[slot] =
            nat.map(|n| SlotState { nat: *n, share: n.range.split(self.worker, self.workers), live: 0 });
        removed
    }

    fn remove_slot_mappings(&mut self, slot: usize) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.table.b.len() {
            let e = &self.table.b[i];
            if e.proto != EMPTY && usize::from(e.slot) == slot {
                // Backward shift may move an unvisited entry into i: look at i again.
                // Entries it moves across the wrap come from buckets already visited,
                // which hold no entry of this slot any more.
                self.table.remove_at(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
        self.len -= removed;
        removed
    }

    /// The NAT configured for `slot`.
    pub fn slot(&self, slot: usize) -> Option<&LocalNat> {
        self.slots.get(slot)?.as_ref().map(|s| &s.nat)
    }

    /// This worker's share of the slot's range (`None`: no NAT, or no ports for this
    /// worker).
    pub fn slot_share(&self, slot: usize) -> Option<PortRange> {
        self.slots.get(slot)?.as_ref()?.share
    }

    /// Live mappings of `slot`.
    pub fn slot_live(&self, slot: usize) -> usize {
        self.slots.get(slot).and_then(Option::as_ref).map_or(0, |s| s.live as usize)
    }

    /// Live mappings in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no mapping is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most live mappings the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Hands the new flow from `orig` to (`proto`, `remote_ip`, `remote_port`) a port of
    /// `slot`'s NAT (from this worker's share of the range) such that no other live flow
    /// has the same [`NatKey`], probing from dpservice's first port (see the module
    /// docs). The mapping stays until [`NatMappings::release`] (or the slot is
    /// reconfigured). For ICMP echo pass the identifier as `orig.src_port` and 0 as
    /// `remote_port`; the returned port is the identifier to write.
    pub fn allocate(
        &mut self,
        slot: usize,
        orig: Original,
        proto: NatProto,
        remote_ip: Ipv4Addr,
        remote_port: u16,
    ) -> Result<u16, AllocError> {
        let s = self.slots.get_mut(slot).and_then(Option::as_mut).ok_or(AllocError::NoNat)?;
        if self.len >= self.capacity {
            return Err(AllocError::TableFull);
        }
        let share = s.share.ok_or(AllocError::Exhausted)?;
        let size = share.size();
        let mut key = Packed {
            nat_ip: u32::from(s.nat.nat_ip),
            remote_ip: u32::from(remote_ip),
            nat_port: 0,
            remote_port,
            proto: proto.ip_proto(),
        };
        let h = portmap_hash(orig.src_ip, orig.vni, orig.src_port);
        #[allow(clippy::cast_possible_truncation)] // below size, a u16
        let mut off = (h % u32::from(size)) as u16;
        for _ in 0..size {
            let port = share.min() + off;
            off = if off + 1 == size { 0 } else { off + 1 };
            if port == 0 {
                continue;
            }
            key.nat_port = port;
            if let Err(i) = self.table.find(&key) {
                #[allow(clippy::cast_possible_truncation)] // slots <= 65536, see `new`
                let slot_id = slot as u16;
                self.table.b[i] = Entry {
                    nat_ip: key.nat_ip,
                    remote_ip: key.remote_ip,
                    nat_port: port,
                    remote_port,
                    proto: key.proto,
                    slot: slot_id,
                    orig,
                };
                s.live += 1;
                self.len += 1;
                return Ok(port);
            }
        }
        Err(AllocError::Exhausted)
    }

    /// The original source of the live flow with reply tuple `key` (return traffic).
    pub fn lookup(&self, key: &NatKey) -> Option<Original> {
        self.table.find(&Packed::of(key)).ok().map(|i| self.table.b[i].orig)
    }

    /// Removes the mapping of the flow with reply tuple `key` (flow ended or aged out),
    /// returning its original source; the port is free again for that remote endpoint.
    pub fn release(&mut self, key: &NatKey) -> Option<Original> {
        let i = self.table.find(&Packed::of(key)).ok()?;
        let e = self.table.b[i];
        self.table.remove_at(i);
        self.len -= 1;
        if let Some(Some(s)) = self.slots.get_mut(usize::from(e.slot)) {
            s.live = s.live.saturating_sub(1);
        }
        Some(e.orig)
    }

    /// Every live mapping as (reply tuple, original, slot), in no particular order.
    /// For listing and tests; not for the fast path.
    pub fn iter(&self) -> impl Iterator<Item = (NatKey, Original, usize)> + '_ {
        self.table.b.iter().filter(|e| e.proto != EMPTY).filter_map(|e| {
            let key = NatKey {
                nat_ip: Ipv4Addr::from(e.nat_ip),
                nat_port: e.nat_port,
                proto: NatProto::from_ip_proto(e.proto)?,
                remote_ip: Ipv4Addr::from(e.remote_ip),
                remote_port: e.remote_port,
            };
            Some((key, e.orig, usize::from(e.slot)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_size_is_as_documented() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        let t =
            NatMappings::new(MappingsConfig { capacity: 65_536, slots: 1, worker: 0, workers: 1, seed: 0 })
                .unwrap();
        assert_eq!(t.table.b.len(), 131_072);
    }
}
