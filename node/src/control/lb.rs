//! Load balancers in the control plane.
//!
//! As dpservice keeps them: a load balancer has an id, a VNI, a load-balanced IP (IPv4
//! or IPv6), up to 15 (protocol, port) pairs, its own underlay address and
//! [`MAX_TARGETS`] target slots (a deleted target empties its slot, a new one takes the
//! first empty slot; ListLoadBalancerTargets reports them in slot order). At most
//! [`MAX_LBS`] load balancers exist, one per (VNI, load-balanced IP). A load balancer
//! holds its VNI like an interface does (CheckVniInUse, ResetVni); deleting it or its
//! targets flushes no flows, so established flows keep their target.
//!
//! With [`LbSelection::Maglev`] each load balancer's Maglev table is built here with the
//! fleet's builder whenever its targets change, and handed to the dataplane with the
//! fleet's flow hash.
//!
//! The coordinator may install its own table instead ([`Control::set_lb_table`], the
//! `dpfleet.node.v1` SetLoadBalancerTable call): the load balancer's targets become
//! exactly that table's targets (in canonical order), new flows select by that table
//! whatever `--lb-selection` says, and the table's epoch is kept. A later
//! CreateLoadBalancerTarget or DeleteLoadBalancerTarget on that load balancer drops the
//! coordinator's table: the node's own selection applies again, over the targets as they
//! then are, with epoch 0. Established flows keep their target in every case (no flush).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use dpfleet_dataplane::config::{Snapshot, UnderlayTarget, Vni};
use dpfleet_dataplane::tables::lb::{LbFlow, LoadBalancer, Maglev, MAX_LBS, MAX_TARGETS};
use dpfleet_proto::flowhash::FlowKey;
use dpfleet_proto::maglev::{MaglevError, MaglevInput, MaglevTable, Target};

use super::{ApiError, Control, State, VniState};

/// How load balancers pick a target for a new flow (`--lb-selection`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LbSelection {
    /// dpservice's round robin over the target slots, per worker.
    #[default]
    #[value(name = "roundrobin")]
    RoundRobin,
    /// The fleet's Maglev table over the flow hash: the same target for a flow on every
    /// node.
    Maglev,
}

/// The seed of the Maglev tables built for load balancers of the dpservice API (the
/// coordinator's tables carry their own).
pub const MAGLEV_SEED: u64 = 0;

/// The fleet's flow hash of a load-balanced flow.
pub fn flow_hash(f: &LbFlow) -> u64 {
    FlowKey { vni: f.vni, src: f.src, dst: f.dst, proto: f.proto, src_port: f.src_port, dst_port: f.dst_port }
        .flow_hash()
}

/// A load balancer's configuration, as GetLoadBalancer reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbInfo {
    /// The VNI.
    pub vni: Vni,
    /// The load-balanced IP.
    pub vip: IpAddr,
    /// (protocol, port) pairs, in the order given.
    pub ports: Vec<(u8, u16)>,
    /// The load balancer's underlay address.
    pub underlay: Ipv6Addr,
}

/// A Maglev table installed by the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FleetTable {
    epoch: u64,
    digest: u64,
}

#[derive(Clone, Debug)]
struct Lb {
    info: LbInfo,
    /// Target slots; trailing empty slots are trimmed.
    targets: Vec<Option<Ipv6Addr>>,
    slot: u16,
    uid: u32,
    maglev: Option<Arc<Maglev>>,
    /// The digest of `maglev` (0 without a table).
    digest: u64,
    /// Set while the coordinator's table is in force (then `maglev` is that table).
    fleet: Option<FleetTable>,
}

impl Lb {
    /// Rebuilds the node's own table after a target change; drops the coordinator's.
    fn rebuild(&mut self, sel: LbSelection) {
        self.fleet = None;
        while self.targets.last() == Some(&None) {
            self.targets.pop();
        }
        (self.maglev, self.digest) = match sel {
            LbSelection::RoundRobin => (None, 0),
            LbSelection::Maglev => {
                let (m, digest) = build_maglev(self.targets.iter().flatten().copied());
                (Some(Arc::new(m)), digest)
            }
        };
    }
}

/// A table for the dataplane from a built one.
fn dataplane_table(t: &MaglevTable) -> Maglev {
    Maglev { targets: t.targets().to_vec(), entries: t.entries().to_vec(), hash: flow_hash }
}

/// The Maglev table of these targets (equal weights, default size, [`MAGLEV_SEED`]) and
/// its digest; empty (digest 0) without targets.
pub fn build_maglev(targets: impl Iterator<Item = Ipv6Addr>) -> (Maglev, u64) {
    let targets: Vec<Target> = targets.map(Target::new).collect();
    let built = MaglevInput::with_default_size(targets, MAGLEV_SEED).and_then(|i| MaglevTable::build(&i));
    match built {
        Ok(t) => (dataplane_table(&t), t.digest()),
        // No targets (or more than the builder takes, which MAX_TARGETS rules out).
        Err(_) => (Maglev { targets: Vec::new(), entries: Vec::new(), hash: flow_hash }, 0),
    }
}

/// A Maglev table from the coordinator, built and checked off the control lock by
/// [`FleetTableRequest::build`], ready for [`Control::set_lb_table`].
#[derive(Clone, Debug)]
pub struct BuiltFleetTable {
    /// The epoch the coordinator gave it.
    pub epoch: u64,
    /// The table (its digest equals the coordinator's).
    pub table: MaglevTable,
}

/// What SetLoadBalancerTable asks for, in domain types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetTableRequest {
    /// Epoch of the table (higher replaces lower).
    pub epoch: u64,
    /// Targets, table size and seed.
    pub input: MaglevInput,
    /// The digest the coordinator computed.
    pub expected_digest: u64,
}

/// Why SetLoadBalancerTable was refused. Nothing changes in any case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FleetTableError {
    /// No load balancer with this id.
    #[error("no load balancer {0:?}")]
    NoLb(String),
    /// The input is not a valid Maglev input.
    #[error("invalid Maglev input: {0}")]
    Invalid(#[from] MaglevError),
    /// More targets than a load balancer holds.
    #[error("{0} targets is more than the {MAX_TARGETS} a load balancer holds")]
    TooManyTargets(usize),
    /// The epoch is older than the installed one.
    #[error("epoch {requested} is older than the installed epoch {installed}")]
    StaleEpoch {
        /// Asked for.
        requested: u64,
        /// In force.
        installed: u64,
    },
    /// The installed table has this epoch but another digest.
    #[error("epoch {epoch} is installed with digest {installed:#018x}, not {requested:#018x}")]
    EpochConflict {
        /// The epoch.
        epoch: u64,
        /// Digest in force.
        installed: u64,
        /// Digest asked for.
        requested: u64,
    },
    /// The node built another table than the coordinator: an alarm.
    #[error("Maglev digest mismatch: built {built:#018x}, coordinator expects {expected:#018x}")]
    DigestMismatch {
        /// What the coordinator sent.
        expected: u64,
        /// What this node built.
        built: u64,
    },
}

impl FleetTableRequest {
    /// Validates and builds the table and compares digests: the costly, lock-free part.
    pub fn build(&self) -> Result<BuiltFleetTable, FleetTableError> {
        let input = self.input.canonical()?;
        if input.targets.len() > MAX_TARGETS {
            return Err(FleetTableError::TooManyTargets(input.targets.len()));
        }
        let table = MaglevTable::build(&input)?;
        if table.digest() != self.expected_digest {
            let (expected, built) = (self.expected_digest, table.digest());
            return Err(FleetTableError::DigestMismatch { expected, built });
        }
        Ok(BuiltFleetTable { epoch: self.epoch, table })
    }
}

/// A load balancer's table, as GetNodeStatus reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbTableStatus {
    /// The load balancer's id.
    pub id: String,
    /// The coordinator's epoch, 0 under the node's own selection.
    pub epoch: u64,
    /// The digest of the Maglev table in use, 0 without one (round robin).
    pub digest: u64,
    /// Slots of that table, 0 without one.
    pub table_size: u32,
    /// Targets of the load balancer.
    pub targets: u32,
}

/// The load balancers of a node.
#[derive(Debug, Default)]
pub(super) struct Lbs {
    by_id: BTreeMap<String, Lb>,
    selection: LbSelection,
    next_uid: u32,
}

impl Lbs {
    pub(super) fn underlays(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.by_id.values().map(|l| l.info.underlay)
    }

    /// Where the load balancers' targets are selected, for GetNodeStatus.
    pub(super) fn table_status(&self) -> Vec<LbTableStatus> {
        self.by_id
            .iter()
            .map(|(id, l)| LbTableStatus {
                id: id.clone(),
                epoch: l.fleet.map_or(0, |f| f.epoch),
                digest: l.digest,
                table_size: l
                    .maglev
                    .as_ref()
                    .map_or(0, |m| u32::try_from(m.entries.len()).unwrap_or(u32::MAX)),
                targets: u32::try_from(l.targets.iter().flatten().count()).unwrap_or(u32::MAX),
            })
            .collect()
    }

    pub(super) fn compile(&self, s: &mut Snapshot) {
        for l in self.by_id.values() {
            let i = &l.info;
            s.underlay_targets.insert(i.underlay, UnderlayTarget::Lb { vni: i.vni });
            let lb = LoadBalancer {
                slot: l.slot,
                uid: l.uid,
                vni: i.vni,
                vip: i.vip,
                ports: i.ports.clone(),
                underlay: i.underlay,
                targets: l.targets.clone(),
                maglev: l.maglev.clone(),
            };
            s.lbs.insert((i.vni, i.vip), Arc::new(lb));
        }
    }
}

impl State {
    fn lb_mut(&mut self, id: &str) -> Result<&mut Lb, ApiError> {
        self.lbs.by_id.get_mut(id).ok_or(ApiError::NoLb)
    }
}

/// Load balancers and their targets.
impl Control {
    /// Sets how load balancers pick targets (`--lb-selection`); rebuilds their tables.
    pub fn set_lb_selection(&self, sel: LbSelection) {
        // Infallible: the closure never fails.
        let _ = self.apply(|st| {
            st.lbs.selection = sel;
            // The coordinator's tables stay in force.
            for l in st.lbs.by_id.values_mut().filter(|l| l.fleet.is_none()) {
                l.rebuild(sel);
            }
            Ok(())
        });
    }

    /// CreateLoadBalancer: returns the load balancer's underlay address. The id must be
    /// new (dpservice would re-point an existing id) and (VNI, IP) unused.
    #[cfg(test)] // The API passes the preferred address: see `create_lb_at`.
    pub fn create_lb(
        &self,
        id: &str,
        vni: Vni,
        vip: IpAddr,
        ports: Vec<(u8, u16)>,
    ) -> Result<Ipv6Addr, ApiError> {
        self.create_lb_at(id, vni, vip, ports, None)
    }

    /// CreateLoadBalancer with a preferred underlay address (`None`: allocate one).
    /// dpservice registers the address first, so VNF_INSERT wins over ALREADY_EXISTS.
    pub fn create_lb_at(
        &self,
        id: &str,
        vni: Vni,
        vip: IpAddr,
        ports: Vec<(u8, u16)>,
        preferred: Option<Ipv6Addr>,
    ) -> Result<Ipv6Addr, ApiError> {
        self.apply(|st| {
            st.check_underlay(preferred)?;
            if st.lbs.by_id.contains_key(id)
                || st.lbs.by_id.values().any(|l| l.info.vni == vni && l.info.vip == vip)
            {
                return Err(ApiError::AlreadyExists);
            }
            if st.lbs.by_id.len() >= MAX_LBS {
                return Err(ApiError::OutOfMemory);
            }
            let used: Vec<u16> = st.lbs.by_id.values().map(|l| l.slot).collect();
            let slot = (0..).find(|s| !used.contains(s)).ok_or(ApiError::OutOfMemory)?;
            let underlay = st.take_underlay(preferred)?;
            st.lbs.next_uid = st.lbs.next_uid.wrapping_add(1);
            let mut lb = Lb {
                info: LbInfo { vni, vip, ports, underlay },
                targets: Vec::new(),
                slot,
                uid: st.lbs.next_uid,
                maglev: None,
                digest: 0,
                fleet: None,
            };
            lb.rebuild(st.lbs.selection);
            st.lbs.by_id.insert(id.to_owned(), lb);
            st.vnis.entry(vni).or_insert_with(VniState::default).refs += 1;
            Ok(underlay)
        })
    }

    /// GetLoadBalancer.
    pub fn get_lb(&self, id: &str) -> Result<LbInfo, ApiError> {
        let st = self.lock();
        st.lbs.by_id.get(id).map(|l| l.info.clone()).ok_or(ApiError::NotFound)
    }

    /// DeleteLoadBalancer: removes it with its targets and releases its VNI; flows are
    /// kept (as in dpservice).
    pub fn delete_lb(&self, id: &str) -> Result<(), ApiError> {
        self.apply(|st| {
            let lb = st.lbs.by_id.remove(id).ok_or(ApiError::NotFound)?;
            st.unref_vni(lb.info.vni);
            Ok(())
        })
    }

    /// CreateLoadBalancerTarget: puts `target` in the first empty slot.
    pub fn create_lb_target(&self, id: &str, target: IpAddr) -> Result<(), ApiError> {
        self.apply(|st| {
            let IpAddr::V6(target) = target else { return Err(ApiError::BadIpver) };
            let sel = st.lbs.selection;
            let lb = st.lb_mut(id)?;
            if lb.targets.contains(&Some(target)) {
                return Err(ApiError::AlreadyExists);
            }
            match lb.targets.iter().position(Option::is_none) {
                Some(i) => lb.targets[i] = Some(target),
                None if lb.targets.len() < MAX_TARGETS => lb.targets.push(Some(target)),
                None => return Err(ApiError::LimitReached),
            }
            lb.rebuild(sel);
            Ok(())
        })
    }

    /// DeleteLoadBalancerTarget: empties the target's slot; flows are kept.
    pub fn delete_lb_target(&self, id: &str, target: IpAddr) -> Result<(), ApiError> {
        self.apply(|st| {
            let IpAddr::V6(target) = target else { return Err(ApiError::BadIpver) };
            let sel = st.lbs.selection;
            let lb = st.lb_mut(id)?;
            let i = lb.targets.iter().position(|t| *t == Some(target)).ok_or(ApiError::NotFound)?;
            lb.targets[i] = None;
            lb.rebuild(sel);
            Ok(())
        })
    }

    /// Installs the coordinator's Maglev table (built by [`FleetTableRequest::build`]) for
    /// load balancer `id` and returns its digest. An older epoch than the installed one
    /// is refused; the installed epoch again with the same digest changes nothing.
    pub fn set_lb_table(&self, id: &str, t: BuiltFleetTable) -> Result<u64, FleetTableError> {
        let digest = t.table.digest();
        let mut st = self.lock();
        let lb = st.lbs.by_id.get_mut(id).ok_or_else(|| FleetTableError::NoLb(id.to_owned()))?;
        if let Some(f) = lb.fleet {
            if t.epoch < f.epoch {
                return Err(FleetTableError::StaleEpoch { requested: t.epoch, installed: f.epoch });
            }
            if t.epoch == f.epoch {
                if f.digest == digest {
                    return Ok(digest);
                }
                let (epoch, installed) = (f.epoch, f.digest);
                return Err(FleetTableError::EpochConflict { epoch, installed, requested: digest });
            }
        }
        lb.targets = t.table.targets().iter().copied().map(Some).collect();
        lb.maglev = Some(Arc::new(dataplane_table(&t.table)));
        lb.digest = digest;
        lb.fleet = Some(FleetTable { epoch: t.epoch, digest });
        st.publish(&self.published);
        Ok(digest)
    }

    /// The table of every load balancer, by id.
    pub fn lb_tables(&self) -> Vec<LbTableStatus> {
        self.lock().lbs.table_status()
    }

    /// ListLoadBalancerTargets: in slot order.
    pub fn list_lb_targets(&self, id: &str) -> Result<Vec<Ipv6Addr>, ApiError> {
        let st = self.lock();
        let lb = st.lbs.by_id.get(id).ok_or(ApiError::NoLb)?;
        Ok(lb.targets.iter().flatten().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::control;
    use super::*;
    use crate::control::VniFamily;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn t(n: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2a10, 0xabc0, 0xd015, 0x4027, 0, n, 0, 0)
    }

    #[test]
    fn create_get_delete_and_errors() {
        let c = control();
        let u = c.create_lb("my_lb", 100, ip("172.22.2.1"), vec![(6, 80), (17, 53)]).unwrap();
        let info = c.get_lb("my_lb").unwrap();
        assert_eq!(
            info,
            LbInfo { vni: 100, vip: ip("172.22.2.1"), ports: vec![(6, 80), (17, 53)], underlay: u }
        );
        let s = c.snapshot();
        assert_eq!(s.underlay_targets.get(&u), Some(&UnderlayTarget::Lb { vni: 100 }));
        assert!(s.lbs.contains_key(&(100, ip("172.22.2.1"))));
        assert_eq!(s.underlay_port(&u), None);
        // Same (VNI, IP) under another id, or the same id again: 202.
        assert_eq!(c.create_lb("other", 100, ip("172.22.2.1"), vec![]), Err(ApiError::AlreadyExists));
        assert_eq!(c.create_lb("my_lb", 200, ip("172.22.2.2"), vec![]), Err(ApiError::AlreadyExists));
        assert_eq!(ApiError::AlreadyExists.code(), 202);
        // Another VNI with the same IP is another LB, with its own underlay address.
        let u2 = c.create_lb("lb6", 200, ip("172.22.2.1"), vec![]).unwrap();
        assert_ne!(u, u2);
        c.delete_lb("my_lb").unwrap();
        assert_eq!(c.get_lb("my_lb"), Err(ApiError::NotFound));
        assert_eq!(c.delete_lb("my_lb"), Err(ApiError::NotFound));
        assert_eq!(ApiError::NotFound.code(), 201);
        let s = c.snapshot();
        assert!(!s.underlay_targets.contains_key(&u));
        assert!(!s.lbs.contains_key(&(100, ip("172.22.2.1"))));
    }

    #[test]
    fn targets_fill_slots_like_dpservice() {
        let c = control();
        c.create_lb("lb", 100, ip("172.22.2.1"), vec![(6, 80)]).unwrap();
        assert_eq!(c.create_lb_target("nope", IpAddr::V6(t(1))), Err(ApiError::NoLb));
        assert_eq!(ApiError::NoLb.code(), 422);
        assert_eq!(c.create_lb_target("lb", ip("10.0.0.1")), Err(ApiError::BadIpver));
        for n in 1..=3 {
            c.create_lb_target("lb", IpAddr::V6(t(n))).unwrap();
        }
        assert_eq!(c.create_lb_target("lb", IpAddr::V6(t(2))), Err(ApiError::AlreadyExists));
        c.delete_lb_target("lb", IpAddr::V6(t(2))).unwrap();
        assert_eq!(c.delete_lb_target("lb", IpAddr::V6(t(2))), Err(ApiError::NotFound));
        assert_eq!(c.delete_lb_target("nope", IpAddr::V6(t(2))), Err(ApiError::NoLb));
        assert_eq!(c.delete_lb_target("lb", ip("10.0.0.1")), Err(ApiError::BadIpver));
        // The hole is refilled first.
        c.create_lb_target("lb", IpAddr::V6(t(4))).unwrap();
        assert_eq!(c.list_lb_targets("lb").unwrap(), vec![t(1), t(4), t(3)]);
        assert_eq!(c.list_lb_targets("nope"), Err(ApiError::NoLb));
        let s = c.snapshot();
        let lb = &s.lbs[&(100, ip("172.22.2.1"))];
        assert_eq!(lb.targets, vec![Some(t(1)), Some(t(4)), Some(t(3))]);
        assert!(lb.maglev.is_none());
        for n in 5..=65 {
            c.create_lb_target("lb", IpAddr::V6(t(n))).unwrap();
        }
        assert_eq!(c.list_lb_targets("lb").unwrap().len(), MAX_TARGETS);
        assert_eq!(c.create_lb_target("lb", IpAddr::V6(t(66))), Err(ApiError::LimitReached));
        assert_eq!(ApiError::LimitReached.code(), 209);
    }

    #[test]
    fn at_most_256_load_balancers() {
        let c = control();
        for n in 0..256u32 {
            c.create_lb(&format!("lb{n}"), n, ip("1.1.1.1"), vec![]).unwrap();
        }
        assert_eq!(c.create_lb("one-more", 999, ip("1.1.1.1"), vec![]), Err(ApiError::OutOfMemory));
        assert_eq!(ApiError::OutOfMemory.code(), 208);
        // A freed round-robin slot is reused, under a new uid.
        let s = c.snapshot();
        let old = Arc::clone(&s.lbs[&(7, ip("1.1.1.1"))]);
        c.delete_lb("lb7").unwrap();
        c.create_lb("again", 999, ip("1.1.1.1"), vec![]).unwrap();
        let new = Arc::clone(&c.snapshot().lbs[&(999, ip("1.1.1.1"))]);
        assert_eq!(new.slot, old.slot);
        assert_ne!(new.uid, old.uid);
    }

    #[test]
    fn load_balancers_hold_their_vni() {
        // test_vni.py::test_vni_existence
        let c = control();
        assert!(!c.vni_in_use(300, VniFamily::Ipv4).unwrap());
        c.create_lb("lb", 300, ip("172.22.2.1"), vec![(6, 80)]).unwrap();
        assert!(c.vni_in_use(300, VniFamily::Ipv4).unwrap());
        c.reset_vni(300, VniFamily::Both).unwrap();
        assert!(c.vni_in_use(300, VniFamily::Ipv6).unwrap());
        c.delete_lb("lb").unwrap();
        assert!(!c.vni_in_use(300, VniFamily::Ipv4).unwrap());
    }

    #[test]
    fn maglev_tables_match_the_fleet_builder() {
        let c = control();
        c.set_lb_selection(LbSelection::Maglev);
        c.create_lb("lb", 100, ip("172.22.2.1"), vec![(6, 80)]).unwrap();
        let targets: Vec<Ipv6Addr> = (1..=5).map(t).collect();
        for &a in &targets {
            c.create_lb_target("lb", IpAddr::V6(a)).unwrap();
        }
        let s = c.snapshot();
        let lb = &s.lbs[&(100, ip("172.22.2.1"))];
        let m = lb.maglev.as_ref().expect("maglev table");
        let input =
            MaglevInput::with_default_size(targets.iter().copied().map(Target::new).collect(), MAGLEV_SEED)
                .unwrap();
        let reference = MaglevTable::build(&input).unwrap();
        assert!(reference.table_size() >= 500);
        for sp in 1000..3000u16 {
            let f =
                LbFlow { vni: 100, src: ip("45.86.6.6"), dst: lb.vip, proto: 6, src_port: sp, dst_port: 80 };
            let key = FlowKey { vni: 100, src: f.src, dst: f.dst, proto: 6, src_port: sp, dst_port: 80 };
            assert_eq!(m.select(&f), Some(reference.lookup_addr(key.flow_hash())), "{sp}");
        }
        // Back to round robin: no tables.
        c.set_lb_selection(LbSelection::RoundRobin);
        assert!(c.snapshot().lbs[&(100, ip("172.22.2.1"))].maglev.is_none());
    }
}
