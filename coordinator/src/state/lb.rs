//! Load balancers and the Maglev input committed for each.
//!
//! The state keeps a load balancer's canonical Maglev input (its targets sorted by
//! address with their weights, the table size, the seed) and the digest of the table built
//! from it, never the table itself: every node builds the table with the shared builder
//! in `dpfleet_proto::maglev` and compares digests. The epoch increases on every change
//! of the load balancer, so nodes can tell tables apart and order them.
//!
//! The table size is fixed when the load balancer is created (for at least
//! [`MIN_SIZED_TARGETS`] targets) and only grows, to the size for twice the targets, when
//! the targets outgrow it: changing the size re-maps almost every slot, so it must be rare.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use dpfleet_proto::maglev::{
    is_prime, table_size_for, MaglevError, MaglevInput, MaglevTable, Target, MAX_TABLE_SIZE,
};
use serde::{Deserialize, Serialize};
use siphasher::sip::SipHasher13;

use super::{ApplyError, ObjectKind};

/// A new load balancer's table is sized for at least this many targets.
pub const MIN_SIZED_TARGETS: usize = 16;

/// The key of the hash that derives a load balancer's Maglev seed from its id: ASCII
/// `"dpfleet1"` and `"lbseed\0\0"`.
const SEED_KEY: (u64, u64) = (0x6470_666c_6565_7431, 0x6c62_7365_6564_0000);

/// A transport protocol of a load-balanced port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A port a load balancer serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LbPort {
    /// The protocol.
    pub protocol: Protocol,
    /// The port number (not 0).
    pub port: u16,
}

/// A load balancer target with its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LbTarget {
    /// The target's underlay address.
    pub addr: Ipv6Addr,
    /// Its relative share of the flows (at least 1).
    pub weight: u32,
}

/// What a client asks for when creating a load balancer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerSpec {
    /// The load balancer's name, unique in the fleet.
    pub id: String,
    /// The virtual network of the VIP.
    pub vni: u32,
    /// The virtual IP.
    pub vip: IpAddr,
    /// The served ports (at least one, no duplicates).
    pub ports: Vec<LbPort>,
    /// The initial targets (may be empty).
    pub targets: Vec<LbTarget>,
    /// The Maglev table size, or `None` for the default (see the module documentation).
    pub table_size: Option<u32>,
}

/// The Maglev table a load balancer's nodes must build, as committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaglevCommit {
    /// The table's size.
    pub table_size: u32,
    /// The digest of the table built from the canonical input ([`MaglevTable::digest`]).
    pub digest: u64,
}

/// A load balancer as the state holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    /// The name.
    pub id: String,
    /// The virtual network of the VIP.
    pub vni: u32,
    /// The virtual IP.
    pub vip: IpAddr,
    /// The served ports, sorted.
    pub ports: Vec<LbPort>,
    /// The targets, sorted by address (the canonical Maglev order).
    pub targets: Vec<LbTarget>,
    /// The table size in use (kept when there is no target, for the next one).
    pub table_size: u32,
    /// Whether the client chose the table size (then it never grows by itself).
    pub size_fixed: bool,
    /// The seed of the Maglev permutations, derived from the id.
    pub seed: u64,
    /// Increases on every change of this load balancer; starts at 1.
    pub epoch: u64,
    /// The committed table, `None` while there is no target.
    pub table: Option<MaglevCommit>,
    /// The underlay address of this load balancer's entry point on each node (every node
    /// serves the VIP).
    #[serde(default)]
    pub node_underlays: BTreeMap<String, Ipv6Addr>,
    /// Targets that are interfaces: interface → its load-balancer prefix's underlay
    /// address (also in `targets`).
    #[serde(default)]
    pub interface_targets: BTreeMap<String, Ipv6Addr>,
}

fn seed_for(id: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = SipHasher13::new_with_keys(SEED_KEY.0, SEED_KEY.1);
    h.write(id.as_bytes());
    h.finish()
}

fn maglev_err(id: &str, e: impl std::fmt::Display) -> ApplyError {
    ApplyError::InvalidArgument(format!("load balancer {id}: {e}"))
}

impl LoadBalancer {
    /// A load balancer at epoch 1, if `spec` is valid.
    pub fn new(spec: LoadBalancerSpec) -> Result<Self, ApplyError> {
        let mut ports = spec.ports;
        ports.sort_unstable();
        if ports.is_empty() {
            return Err(ApplyError::InvalidArgument(format!("load balancer {} needs a port", spec.id)));
        }
        if ports.iter().any(|p| p.port == 0) || ports.windows(2).any(|w| w[0] == w[1]) {
            return Err(ApplyError::InvalidArgument(format!(
                "load balancer {}: port 0 or a port listed twice",
                spec.id
            )));
        }
        let table_size = match spec.table_size {
            Some(size) if !is_prime(size) || size > MAX_TABLE_SIZE => {
                return Err(maglev_err(&spec.id, MaglevError::SizeNotPrime(size)));
            }
            Some(size) => size,
            None => table_size_for(spec.targets.len().max(MIN_SIZED_TARGETS))
                .map_err(|e| maglev_err(&spec.id, e))?,
        };
        let mut lb = LoadBalancer {
            seed: seed_for(&spec.id),
            id: spec.id,
            vni: spec.vni,
            vip: spec.vip,
            ports,
            targets: Vec::new(),
            table_size,
            size_fixed: spec.table_size.is_some(),
            epoch: 0,
            table: None,
            node_underlays: BTreeMap::new(),
            interface_targets: BTreeMap::new(),
        };
        lb.set_targets(spec.targets)?;
        Ok(lb)
    }

    /// The canonical Maglev input, `None` while there is no target.
    pub fn maglev_input(&self) -> Option<MaglevInput> {
        if self.targets.is_empty() {
            return None;
        }
        let targets = self.targets.iter().map(|t| Target { addr: t.addr, weight: t.weight }).collect();
        Some(MaglevInput { targets, table_size: self.table_size, seed: self.seed })
    }

    /// Replaces the targets, rebuilds the table to learn its digest and bumps the epoch.
    /// On error nothing changes.
    fn set_targets(&mut self, targets: Vec<LbTarget>) -> Result<(), ApplyError> {
        let mut next = self.clone();
        next.targets = targets;
        next.targets.sort_unstable_by_key(|t| t.addr.octets());
        if !next.size_fixed && spec_grows(next.table_size, next.targets.len()) {
            next.table_size = table_size_for(next.targets.len() * 2).map_err(|e| maglev_err(&self.id, e))?;
        }
        next.table = match next.maglev_input() {
            None => None,
            Some(input) => {
                let table = MaglevTable::build(&input).map_err(|e| maglev_err(&self.id, e))?;
                Some(MaglevCommit { table_size: table.table_size(), digest: table.digest() })
            }
        };
        next.epoch += 1;
        *self = next;
        Ok(())
    }

    /// Adds a target (an error if it is already one).
    pub fn add_target(&mut self, target: LbTarget) -> Result<(), ApplyError> {
        if self.targets.iter().any(|t| t.addr == target.addr) {
            return Err(ApplyError::AlreadyExists {
                kind: ObjectKind::LbTarget,
                id: format!("{} of {}", target.addr, self.id),
            });
        }
        let mut targets = self.targets.clone();
        targets.push(target);
        self.set_targets(targets)
    }

    /// Removes a target (an error if it is not one).
    pub fn remove_target(&mut self, addr: Ipv6Addr) -> Result<(), ApplyError> {
        if !self.targets.iter().any(|t| t.addr == addr) {
            return Err(ApplyError::NotFound {
                kind: ObjectKind::LbTarget,
                id: format!("{addr} of {}", self.id),
            });
        }
        let targets = self.targets.iter().filter(|t| t.addr != addr).copied().collect();
        self.set_targets(targets)
    }
}

/// Whether `targets` no longer get their share of slots in a table of `size`.
fn spec_grows(size: u32, targets: usize) -> bool {
    table_size_for(targets).is_ok_and(|want| want > size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(i: u16) -> LbTarget {
        LbTarget { addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i), weight: 1 }
    }

    fn spec(targets: Vec<LbTarget>) -> LoadBalancerSpec {
        LoadBalancerSpec {
            id: "web".into(),
            vni: 7,
            vip: "10.0.0.100".parse().unwrap(),
            ports: vec![
                LbPort { protocol: Protocol::Tcp, port: 443 },
                LbPort { protocol: Protocol::Tcp, port: 80 },
            ],
            targets,
            table_size: None,
        }
    }

    #[test]
    fn digest_is_the_shared_builders_and_epoch_counts_changes() {
        let mut lb = LoadBalancer::new(spec(vec![target(2), target(1)])).unwrap();
        assert_eq!(lb.epoch, 1);
        assert_eq!(lb.table_size, table_size_for(MIN_SIZED_TARGETS).unwrap());
        assert_eq!(lb.targets, [target(1), target(2)]);
        let built = MaglevTable::build(&lb.maglev_input().unwrap()).unwrap();
        assert_eq!(lb.table, Some(MaglevCommit { table_size: built.table_size(), digest: built.digest() }));

        lb.add_target(target(3)).unwrap();
        assert_eq!(lb.epoch, 2);
        let before = lb.clone();
        assert!(lb.add_target(target(3)).is_err());
        assert!(lb.remove_target(target(9).addr).is_err());
        assert_eq!(lb, before);
        lb.remove_target(target(1).addr).unwrap();
        lb.remove_target(target(2).addr).unwrap();
        lb.remove_target(target(3).addr).unwrap();
        assert_eq!((lb.epoch, lb.table), (5, None));
    }

    #[test]
    fn table_grows_only_when_outgrown() {
        let mut lb = LoadBalancer::new(spec(vec![])).unwrap();
        let initial = lb.table_size;
        for i in 0..MIN_SIZED_TARGETS as u16 {
            lb.add_target(target(i)).unwrap();
        }
        assert_eq!(lb.table_size, initial);
        lb.add_target(target(1000)).unwrap();
        assert_eq!(lb.table_size, table_size_for((MIN_SIZED_TARGETS + 1) * 2).unwrap());
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut s = spec(vec![target(1)]);
        s.ports.clear();
        assert!(LoadBalancer::new(s).is_err());
        let mut s = spec(vec![target(1)]);
        s.ports.push(s.ports[0]);
        assert!(LoadBalancer::new(s).is_err());
        let mut s = spec(vec![target(1), target(1)]);
        assert!(LoadBalancer::new(s.clone()).is_err());
        s.targets = vec![target(1)];
        s.table_size = Some(100);
        assert!(LoadBalancer::new(s.clone()).is_err());
        s.targets.clear();
        assert!(LoadBalancer::new(s).is_err());
        let mut s = spec(vec![LbTarget { weight: 0, ..target(1) }]);
        assert!(LoadBalancer::new(s.clone()).is_err());
        s.targets.clear();
        s.table_size = Some(7);
        let mut lb = LoadBalancer::new(s).unwrap();
        for i in 1..=7 {
            lb.add_target(target(i)).unwrap();
        }
        assert_eq!(lb.table_size, 7);
        assert!(lb.add_target(target(8)).is_err());
    }
}
