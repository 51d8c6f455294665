//! Scalable NAT gateway (dpservice's "network NAT"): configuration, per-worker port
//! mappings, and the in-place packet rewrite.
//!
//! Three parts, owned by different threads:
//! - **Configuration** ([`LocalNat`], [`NeighborNat`], [`NeighborNats`], the validators):
//!   plain immutable data built by the control plane and published in a snapshot.
//! - **Mappings** ([`NatMappings`]): per worker, owned and touched only by that worker. It
//!   hands out NAT ports, keeps them unique among live flows, and maps a reply back to
//!   the flow's original source. Preallocated; no allocation, lock or syscall per packet.
//! - **Rewrite** ([`rewrite_ipv4`], [`rewrite_icmp_error_ipv4`]): edits an IPv4
//!   packet's address and port (or ICMP echo identifier), or the quoted packet of an
//!   ICMP error, in place with incremental checksum updates.
//!
//! Facts taken from dpservice (revision 1a8d901):
//! - A NAT port range is `min_port..max_port`, **max exclusive**: ports are drawn from
//!   `[min, max)` and a neighbor entry owns a port `p` when `min <= p < max`. The API
//!   refuses `min >= max`, so a range holds at least one port and port 65535 is never
//!   inside one.
//! - A translated flow's identity is (NAT IP, NAT port, protocol, remote IP, remote port):
//!   dpservice keeps exactly that tuple unique ("port overloading"), so one NAT port
//!   serves many flows as long as they go to different remote endpoints.
//! - ICMP echo identifiers are translated like ports: the identifier takes the role of
//!   the source port and the remote port is 0 (an echo flow is identified by addresses
//!   and identifier only).
//! - Neighbor NAT entries are looked up by (VNI, NAT IP, port).
//!
//! Choices of our own:
//! - The first port tried for a new flow is dpservice's, `min + jhash(source) % size`
//!   (the same jhash and key layout, [`crate::tables::jhash::portmap_hash`]), then the
//!   next ones in order. dpservice also remembers which port a source (IP, port) got and
//!   reuses it towards other destinations even after probing moved it elsewhere; we do
//!   not keep that second table (conntrack holds the forward mapping; the mapping table
//!   is keyed by the reply tuple only), so a source whose first port is taken towards
//!   one destination may get different ports towards different destinations.
//! - Port 0 is never handed out (it is not a valid TCP/UDP source port); a range that
//!   starts at 0 offers one port fewer.
//! - With several workers, each worker owns a disjoint share of every range
//!   ([`PortRange::split`]), so two workers never hand out the same port; the worker
//!   owning a reply's port is [`PortRange::worker_of`]. A range smaller than the worker
//!   count leaves some workers without ports (their flows are refused as exhausted).
//! - All ranges on one NAT IP must be disjoint, whatever their VNI and whether local or
//!   neighbor ([`validate_disjoint`]): a public address is one address, and return
//!   traffic must find exactly one owner. dpservice checks nothing here.

mod mapping;
mod rewrite;

pub use mapping::{AllocError, MappingsConfig, NatKey, NatMappings, NatProto, Original};
pub use rewrite::{rewrite_icmp_error_ipv4, rewrite_ipv4, Side};

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::Vni;

/// Errors in NAT configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NatConfigError {
    /// `min_port` is not below `max_port`.
    #[error("invalid NAT port range: min_port {min} must be below max_port {max}")]
    InvalidRange {
        /// The requested lower bound.
        min: u16,
        /// The requested (exclusive) upper bound.
        max: u16,
    },
    /// Two ranges on the same NAT IP share ports.
    #[error("NAT port range {second} on {nat_ip} overlaps range {first}")]
    Overlap {
        /// The NAT IP both ranges are on.
        nat_ip: Ipv4Addr,
        /// One of the ranges.
        first: PortRange,
        /// The other one.
        second: PortRange,
    },
    /// A worker index not below the worker count, or no workers.
    #[error("worker {worker} of {workers} does not exist")]
    BadWorker {
        /// The worker index.
        worker: usize,
        /// The worker count.
        workers: usize,
    },
}

/// A NAT port range `[min, max)`: `min` included, `max` excluded, never empty.
/// (Not `Ord`, so that `min()` and `max()` always mean the bounds.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    min: u16,
    max: u16,
}

impl PortRange {
    /// The range `[min, max)`; refused unless `min < max` (as dpservice's API does).
    pub fn new(min: u16, max: u16) -> Result<Self, NatConfigError> {
        if min < max {
            Ok(PortRange { min, max })
        } else {
            Err(NatConfigError::InvalidRange { min, max })
        }
    }

    /// The lowest port in the range (`min_port`).
    pub fn min(&self) -> u16 {
        self.min
    }

    /// The first port above the range (`max_port`, exclusive).
    pub fn max(&self) -> u16 {
        self.max
    }

    /// How many ports the range holds (at least 1).
    pub fn size(&self) -> u16 {
        self.max - self.min
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.min <= port && port < self.max
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.min < other.max && other.min < self.max
    }

    /// The share of worker `worker` out of `workers`: consecutive, disjoint shares that
    /// together cover the range, their sizes differing by at most one (lower workers get
    /// the extra ports). `None` when the share is empty (fewer ports than workers) or
    /// the worker does not exist.
    pub fn split(&self, worker: usize, workers: usize) -> Option<PortRange> {
        if worker >= workers {
            return None;
        }
        let n = usize::from(self.size());
        let (base, extra) = (n / workers, n % workers);
        let len = base + usize::from(worker < extra);
        if len == 0 {
            return None;
        }
        let start = usize::from(self.min) + worker * base + worker.min(extra);
        // start + len <= max <= u16::MAX
        let min = u16::try_from(start).ok()?;
        let max = u16::try_from(start + len).ok()?;
        Some(PortRange { min, max })
    }

    /// The worker whose share ([`PortRange::split`]) holds `port`; `None` when the port
    /// is outside the range or `workers` is 0.
    pub fn worker_of(&self, port: u16, workers: usize) -> Option<usize> {
        if !self.contains(port) || workers == 0 {
            return None;
        }
        let n = usize::from(self.size());
        let (base, extra) = (n / workers, n % workers);
        let off = usize::from(port - self.min);
        let big = extra * (base + 1);
        if off < big {
            Some(off / (base + 1))
        } else {
            // off >= big implies base > 0: with base == 0 every offset is below extra.
            Some(extra + (off - big) / base)
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.min, self.max)
    }
}

/// An interface's NAT: its outbound flows leave from `nat_ip` with a port from `range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocalNat {
    /// The public address.
    pub nat_ip: Ipv4Addr,
    /// The interface's ports on it.
    pub range: PortRange,
    /// The interface's VNI.
    pub vni: Vni,
}

/// A range of a NAT IP owned by another node: return traffic for it is relayed there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NeighborNat {
    /// The public address.
    pub nat_ip: Ipv4Addr,
    /// The ports the other node owns.
    pub range: PortRange,
    /// The VNI the entry belongs to.
    pub vni: Vni,
    /// The underlay address of the owning node's NAT (where to relay).
    pub underlay: Ipv6Addr,
}

/// Checks that no two of the given ranges on the same NAT IP overlap (whatever their
/// VNI). Meant for the control plane: pass every local and neighbor NAT range of the
/// desired state (or the existing ones plus a new one). Allocates; not for the fast path.
pub fn validate_disjoint(
    ranges: impl IntoIterator<Item = (Ipv4Addr, PortRange)>,
) -> Result<(), NatConfigError> {
    let mut v: Vec<(Ipv4Addr, PortRange)> = ranges.into_iter().collect();
    v.sort_unstable_by_key(|(ip, r)| (*ip, r.min, r.max));
    // Sorted by start: if a range overlaps any later one on its IP, it overlaps the next.
    for w in v.windows(2) {
        let ((ip_a, a), (ip_b, b)) = (w[0], w[1]);
        if ip_a == ip_b && a.overlaps(&b) {
            return Err(NatConfigError::Overlap { nat_ip: ip_a, first: a, second: b });
        }
    }
    Ok(())
}

/// Checks a whole NAT configuration: every local and neighbor range, per NAT IP,
/// disjoint (see [`validate_disjoint`]).
pub fn validate_config(locals: &[LocalNat], neighbors: &[NeighborNat]) -> Result<(), NatConfigError> {
    validate_disjoint(
        locals.iter().map(|l| (l.nat_ip, l.range)).chain(neighbors.iter().map(|n| (n.nat_ip, n.range))),
    )
}

/// The neighbor NAT entries of a node, sorted for lookup by (VNI, NAT IP, port).
/// Immutable once built; a lookup is a binary search and does not allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighborNats {
    /// Sorted by (vni, nat_ip, range.min); ranges of one (vni, nat_ip) disjoint.
    entries: Vec<NeighborNat>,
}

impl NeighborNats {
    /// Builds the table; refuses overlapping ranges on one NAT IP.
    pub fn new(mut entries: Vec<NeighborNat>) -> Result<Self, NatConfigError> {
        validate_disjoint(entries.iter().map(|e| (e.nat_ip, e.range)))?;
        entries.sort_unstable_by_key(|e| (e.vni, e.nat_ip, e.range.min));
        Ok(NeighborNats { entries })
    }

    /// The entry owning `port` of `nat_ip` in `vni`, if any.
    pub fn owner(&self, vni: Vni, nat_ip: Ipv4Addr, port: u16) -> Option<&NeighborNat> {
        let idx = self.entries.partition_point(|e| (e.vni, e.nat_ip, e.range.min) <= (vni, nat_ip, port));
        let e = self.entries.get(idx.checked_sub(1)?)?;
        (e.vni == vni && e.nat_ip == nat_ip && port < e.range.max).then_some(e)
    }

    /// The entry with exactly this VNI, NAT IP and range (for delete and duplicate checks).
    pub fn get(&self, vni: Vni, nat_ip: Ipv4Addr, range: PortRange) -> Option<&NeighborNat> {
        self.owner(vni, nat_ip, range.min).filter(|e| e.range == range)
    }

    /// All entries, sorted by (VNI, NAT IP, first port).
    pub fn iter(&self) -> impl Iterator<Item = &NeighborNat> {
        self.entries.iter()
    }

    /// The entries on `nat_ip` (any VNI), as ListNeighborNats reports them.
    pub fn by_ip(&self, nat_ip: Ipv4Addr) -> impl Iterator<Item = &NeighborNat> {
        self.entries.iter().filter(move |e| e.nat_ip == nat_ip)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
