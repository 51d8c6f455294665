//! Tests of the NAT configuration and mapping tables, with the property tests.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::tables::jhash::portmap_hash;

const NAT_IP: Ipv4Addr = Ipv4Addr::new(172, 21, 1, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

fn range(min: u16, max: u16) -> PortRange {
    PortRange::new(min, max).unwrap()
}

fn local(nat_ip: Ipv4Addr, min: u16, max: u16) -> LocalNat {
    LocalNat { nat_ip, range: range(min, max), vni: 100 }
}

fn orig(port: u16) -> Original {
    Original { vni: 100, src_ip: IpAddr::V4(Ipv4Addr::new(10, 100, 1, 1)), src_port: port }
}

fn table(capacity: usize, slots: usize) -> NatMappings {
    NatMappings::new(MappingsConfig { capacity, slots, worker: 0, workers: 1, seed: 7 }).unwrap()
}

fn key(nat_port: u16, proto: NatProto, remote_ip: Ipv4Addr, remote_port: u16) -> NatKey {
    NatKey { nat_ip: NAT_IP, nat_port, proto, remote_ip, remote_port }
}

#[test]
fn range_bounds_are_max_exclusive() {
    assert_eq!(PortRange::new(102, 102), Err(NatConfigError::InvalidRange { min: 102, max: 102 }));
    assert!(PortRange::new(102, 100).is_err());
    let r = range(100, 102);
    assert_eq!(r.size(), 2);
    assert!(!r.contains(99) && r.contains(100) && r.contains(101) && !r.contains(102));
    assert!(r.overlaps(&range(101, 200)));
    assert!(!r.overlaps(&range(102, 200)));
    assert_eq!(r.to_string(), "[100, 102)");
}

/// The suite's case: range 100..102 gives dpservice's ports to two flows to one server
/// (source port 1246 hashes to 101, 1547 to 100), refuses a third, and recovers after a
/// release.
#[test]
fn two_port_range_like_the_suite() {
    let mut t = table(16, 4);
    t.set_slot(1, Some(&local(NAT_IP, 100, 102)));
    let a = t.allocate(1, orig(1246), NatProto::Tcp, REMOTE, 80).unwrap();
    let b = t.allocate(1, orig(1547), NatProto::Tcp, REMOTE, 80).unwrap();
    assert_eq!((a, b), (101, 100));
    assert_eq!(t.allocate(1, orig(2000), NatProto::Tcp, REMOTE, 80), Err(AllocError::Exhausted));
    // Other remote endpoints and protocols still get ports (port overloading), each
    // starting at its source's first port.
    let first = |p| 100 + u16::try_from(portmap_hash(orig(p).src_ip, 100, p) % 2).unwrap();
    assert_eq!(t.allocate(1, orig(2000), NatProto::Tcp, REMOTE, 443), Ok(first(2000)));
    assert_eq!(t.allocate(1, orig(2000), NatProto::Udp, REMOTE, 80), Ok(first(2000)));
    assert_eq!(t.allocate(1, orig(0x40), NatProto::Icmp, REMOTE, 0), Ok(first(0x40)));
    assert_eq!(t.lookup(&key(100, NatProto::Tcp, REMOTE, 80)), Some(orig(1547)));
    assert_eq!(t.lookup(&key(first(0x40), NatProto::Icmp, REMOTE, 0)), Some(orig(0x40)));
    assert_eq!(t.lookup(&key(102, NatProto::Tcp, REMOTE, 80)), None);
    assert_eq!(t.release(&key(101, NatProto::Tcp, REMOTE, 80)), Some(orig(1246)));
    assert_eq!(t.release(&key(101, NatProto::Tcp, REMOTE, 80)), None);
    // The only free port towards REMOTE:80 is found whatever the first one tried.
    assert_eq!(t.allocate(1, orig(2000), NatProto::Tcp, REMOTE, 80), Ok(101));
    assert_eq!(t.slot_live(1), 5);
    assert_eq!(t.len(), 5);
}

#[test]
fn slot_errors_and_table_full() {
    let mut t = table(2, 2);
    assert_eq!(t.allocate(0, orig(1), NatProto::Udp, REMOTE, 53), Err(AllocError::NoNat));
    assert_eq!(t.allocate(7, orig(1), NatProto::Udp, REMOTE, 53), Err(AllocError::NoNat));
    t.set_slot(0, Some(&local(NAT_IP, 1000, 2000)));
    t.allocate(0, orig(1), NatProto::Udp, REMOTE, 53).unwrap();
    t.allocate(0, orig(2), NatProto::Udp, REMOTE, 53).unwrap();
    assert_eq!(t.allocate(0, orig(3), NatProto::Udp, REMOTE, 53), Err(AllocError::TableFull));
    assert!(
        NatMappings::new(MappingsConfig { capacity: 1, slots: 1, worker: 2, workers: 2, seed: 0 }).is_err()
    );
}

#[test]
fn port_zero_is_never_handed_out() {
    let mut t = table(8, 1);
    t.set_slot(0, Some(&local(NAT_IP, 0, 2)));
    assert_eq!(t.allocate(0, orig(1), NatProto::Udp, REMOTE, 53), Ok(1));
    assert_eq!(t.allocate(0, orig(2), NatProto::Udp, REMOTE, 53), Err(AllocError::Exhausted));
}

#[test]
fn reconfiguring_a_slot_drops_its_mappings_only() {
    let mut t = table(64, 2);
    t.set_slot(0, Some(&local(NAT_IP, 100, 110)));
    t.set_slot(1, Some(&local(NAT_IP, 200, 210)));
    for i in 0..10 {
        t.allocate(0, orig(i), NatProto::Tcp, REMOTE, 80).unwrap();
        t.allocate(1, orig(i), NatProto::Tcp, REMOTE, 80).unwrap();
    }
    // Same configuration again: nothing happens.
    assert_eq!(t.set_slot(0, Some(&local(NAT_IP, 100, 110))), 0);
    assert_eq!(t.slot_live(0), 10);
    // Changed range: the slot's mappings go; ports come from the new range.
    assert_eq!(t.set_slot(0, Some(&local(NAT_IP, 120, 130))), 10);
    assert_eq!(t.len(), 10);
    assert!(t.iter().all(|(_, _, slot)| slot == 1));
    let p = t.allocate(0, orig(1), NatProto::Tcp, REMOTE, 80).unwrap();
    assert_eq!(u32::from(p), 120 + portmap_hash(orig(1).src_ip, 100, 1) % 10);
    assert_eq!(t.set_slot(1, None), 10);
    assert_eq!(t.allocate(1, orig(1), NatProto::Tcp, REMOTE, 80), Err(AllocError::NoNat));
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(&key(p, NatProto::Tcp, REMOTE, 80)), Some(orig(1)));
}

#[test]
fn nat64_originals_keep_their_ipv6_source() {
    let mut t = table(4, 1);
    t.set_slot(0, Some(&local(NAT_IP, 100, 102)));
    let o = Original {
        vni: 100,
        src_ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        src_port: 5,
    };
    let p = t.allocate(0, o, NatProto::Tcp, REMOTE, 443).unwrap();
    assert_eq!(t.lookup(&key(p, NatProto::Tcp, REMOTE, 443)), Some(o));
}

#[test]
fn split_covers_the_range_disjointly() {
    let r = range(100, 102);
    assert_eq!(r.split(0, 1), Some(r));
    assert_eq!(r.split(0, 2), Some(range(100, 101)));
    assert_eq!(r.split(1, 2), Some(range(101, 102)));
    assert_eq!(r.split(2, 3), None); // fewer ports than workers
    assert_eq!(r.split(3, 3), None);
    assert_eq!(r.worker_of(101, 2), Some(1));
    assert_eq!(r.worker_of(102, 2), None);
    let full = range(0, u16::MAX);
    assert_eq!(full.split(2, 3).unwrap().max(), u16::MAX);
}

#[test]
fn workers_never_share_a_port() {
    let nat = local(NAT_IP, 1000, 1010);
    let mut seen = HashSet::new();
    for w in 0..3 {
        let mut t =
            NatMappings::new(MappingsConfig { capacity: 64, slots: 1, worker: w, workers: 3, seed: 1 })
                .unwrap();
        t.set_slot(0, Some(&nat));
        while let Ok(p) = t.allocate(0, orig(1), NatProto::Udp, REMOTE, 53) {
            assert_eq!(nat.range.worker_of(p, 3), Some(w));
            assert!(seen.insert(p), "port {p} handed out twice");
        }
    }
    assert_eq!(seen.len(), 10);
}

#[test]
fn overlap_validation() {
    let other = Ipv4Addr::new(172, 21, 1, 2);
    assert!(validate_disjoint([
        (NAT_IP, range(100, 102)),
        (NAT_IP, range(102, 110)),
        (other, range(100, 102))
    ])
    .is_ok());
    assert_eq!(
        validate_disjoint([(NAT_IP, range(100, 200)), (other, range(0, 5)), (NAT_IP, range(150, 160))]),
        Err(NatConfigError::Overlap { nat_ip: NAT_IP, first: range(100, 200), second: range(150, 160) })
    );
    let neigh = NeighborNat { nat_ip: NAT_IP, range: range(101, 103), vni: 7, underlay: Ipv6Addr::LOCALHOST };
    assert!(validate_config(&[local(NAT_IP, 100, 102)], &[neigh]).is_err());
    assert!(NeighborNats::new(vec![neigh, neigh]).is_err());
}

#[test]
fn neighbor_lookup_by_vni_ip_and_port() {
    let ul = |n: u16| Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, n);
    let e = |vni, ip, min, max, n| NeighborNat { nat_ip: ip, range: range(min, max), vni, underlay: ul(n) };
    let other = Ipv4Addr::new(172, 21, 1, 2);
    let t = NeighborNats::new(vec![
        e(1, NAT_IP, 500, 520, 1),
        e(1, NAT_IP, 521, 523, 2),
        e(2, other, 500, 501, 3),
    ])
    .unwrap();
    assert_eq!(t.owner(1, NAT_IP, 499), None);
    assert_eq!(t.owner(1, NAT_IP, 500).unwrap().underlay, ul(1));
    assert_eq!(t.owner(1, NAT_IP, 519).unwrap().underlay, ul(1));
    assert_eq!(t.owner(1, NAT_IP, 520), None);
    assert_eq!(t.owner(1, NAT_IP, 522).unwrap().underlay, ul(2));
    assert_eq!(t.owner(1, NAT_IP, 523), None);
    assert_eq!(t.owner(2, NAT_IP, 510), None, "other VNI");
    assert_eq!(t.owner(2, other, 500).unwrap().underlay, ul(3));
    assert_eq!(t.get(1, NAT_IP, range(521, 523)).unwrap().underlay, ul(2));
    assert_eq!(t.get(1, NAT_IP, range(521, 522)), None);
    assert_eq!(t.by_ip(NAT_IP).count(), 2);
}

// ---- property tests ----

#[derive(Clone, Debug)]
enum Op {
    Alloc { slot: usize, proto: u8, remote: u8, rport: u16, sport: u16 },
    Release { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..3u8, 0..3u8, 0..2u16, any::<u16>()).prop_map(|(slot, proto, remote, rport, sport)| {
            Op::Alloc { slot, proto, remote, rport, sport }
        }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
    ]
}

fn proto_of(p: u8) -> NatProto {
    [NatProto::Tcp, NatProto::Udp, NatProto::Icmp][usize::from(p % 3)]
}

proptest! {
    /// Against a model: no two live flows share a mapping; a mapping stays as allocated
    /// until released; the reverse lookup finds every live mapping; exhaustion happens
    /// exactly when every port of the range carries a live flow to the same endpoint,
    /// and ports come back after release.
    #[test]
    fn mappings_match_model(
        sizes in proptest::collection::vec(1u16..6, 3),
        workers in 1usize..3,
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        // Three slots: two share a NAT IP with adjacent ranges, one has its own IP
        // with a range starting at 0 (port 0 is never handed out).
        let other_ip = Ipv4Addr::new(172, 21, 1, 2);
        let nats = [
            local(NAT_IP, 100, 100 + sizes[0]),
            local(NAT_IP, 100 + sizes[0], 100 + sizes[0] + sizes[1]),
            local(other_ip, 0, sizes[2]),
        ];
        for worker in 0..workers {
            let mut t = NatMappings::new(MappingsConfig { capacity: 10_000, slots: 3, worker, workers, seed }).unwrap();
            for (i, n) in nats.iter().enumerate() {
                t.set_slot(i, Some(n));
            }
            let mut live: HashMap<NatKey, (Original, usize)> = HashMap::new();
            let mut order: Vec<NatKey> = Vec::new();
            for op in &ops {
                match *op {
                    Op::Alloc { slot, proto, remote, rport, sport } => {
                        let proto = proto_of(proto);
                        let rport = if proto == NatProto::Icmp { 0 } else { rport };
                        let rip = Ipv4Addr::new(8, 8, 8, remote);
                        let o = Original { vni: 100, src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), src_port: sport };
                        let nat = nats[slot];
                        let usable: Vec<u16> = nat.range.split(worker, workers)
                            .map(|s| (s.min()..s.max()).filter(|&p| p != 0).collect())
                            .unwrap_or_default();
                        let full = usable.iter().all(|&p| live.contains_key(&NatKey {
                            nat_ip: nat.nat_ip, nat_port: p, proto, remote_ip: rip, remote_port: rport,
                        }));
                        // dpservice's probe order: from min + hash % size, wrapping.
                        let expected = nat.range.split(worker, workers).and_then(|s| {
                            let h = portmap_hash(o.src_ip, o.vni, o.src_port);
                            let n = u32::from(s.size());
                            (0..n).map(|i| s.min() + u16::try_from((h % n + i) % n).unwrap()).find(|&p| {
                                p != 0 && !live.contains_key(&NatKey {
                                    nat_ip: nat.nat_ip, nat_port: p, proto, remote_ip: rip, remote_port: rport,
                                })
                            })
                        });
                        match t.allocate(slot, o, proto, rip, rport) {
                            Ok(p) => {
                                prop_assert!(!full, "allocated although full");
                                prop_assert_eq!(Some(p), expected, "not dpservice's port");
                                prop_assert!(usable.contains(&p), "port {} outside the worker's share", p);
                                let k = NatKey { nat_ip: nat.nat_ip, nat_port: p, proto, remote_ip: rip, remote_port: rport };
                                prop_assert!(live.insert(k, (o, slot)).is_none(), "mapping {:?} shared", k);
                                order.push(k);
                            }
                            Err(e) => {
                                prop_assert_eq!(e, AllocError::Exhausted);
                                prop_assert!(full, "refused although a port was free");
                            }
                        }
                    }
                    Op::Release { pick } => {
                        if !order.is_empty() {
                            let k = order.swap_remove(pick % order.len());
                            let (o, _) = live.remove(&k).unwrap();
                            prop_assert_eq!(t.release(&k), Some(o));
                            prop_assert_eq!(t.lookup(&k), None);
                        }
                    }
                }
                prop_assert_eq!(t.len(), live.len());
            }
            for (k, (o, _)) in &live {
                prop_assert_eq!(t.lookup(k), Some(*o));
            }
            let mut listed: Vec<_> = t.iter().map(|(k, o, s)| (k, (o, s))).collect();
            listed.sort_by_key(|(k, _)| (k.nat_ip, k.nat_port, k.proto, k.remote_ip, k.remote_port));
            let mut want: Vec<_> = live.iter().map(|(k, v)| (*k, *v)).collect();
            want.sort_by_key(|(k, _)| (k.nat_ip, k.nat_port, k.proto, k.remote_ip, k.remote_port));
            prop_assert_eq!(listed, want);
            for s in 0..3 {
                prop_assert_eq!(t.slot_live(s), live.values().filter(|(_, slot)| *slot == s).count());
            }
        }
    }

    /// Many random insertions and removals in a small table (long probe runs that wrap
    /// around): every live key stays findable after backward-shift deletions.
    #[test]
    fn table_survives_churn(
        seed in any::<u64>(),
        ops in proptest::collection::vec((any::<bool>(), 0u16..200, 0u8..4), 1..600),
    ) {
        let mut t = NatMappings::new(MappingsConfig { capacity: 150, slots: 1, worker: 0, workers: 1, seed }).unwrap();
        t.set_slot(0, Some(&local(NAT_IP, 1, 201)));
        let mut live: HashMap<NatKey, Original> = HashMap::new();
        for (alloc, sport, remote) in ops {
            let rip = Ipv4Addr::new(8, 8, 8, remote);
            if alloc {
                match t.allocate(0, orig(sport), NatProto::Udp, rip, 53) {
                    Ok(p) => { prop_assert!(live.insert(key(p, NatProto::Udp, rip, 53), orig(sport)).is_none()); }
                    Err(e) => prop_assert_eq!(e, AllocError::TableFull),
                }
            } else if let Some(k) = live.keys().find(|k| k.nat_port % 200 == sport).copied() {
                prop_assert_eq!(t.release(&k), live.remove(&k));
            }
            prop_assert_eq!(t.len(), live.len());
        }
        for (k, o) in &live {
            prop_assert_eq!(t.lookup(k), Some(*o));
        }
    }

    /// The validator refuses exactly the sets with two overlapping ranges on one IP.
    #[test]
    fn overlap_validation_matches_brute_force(
        raw in proptest::collection::vec((0u8..2, 0u16..300, 1u16..50), 0..12),
    ) {
        let v: Vec<(Ipv4Addr, PortRange)> = raw.iter()
            .map(|&(ip, min, len)| (Ipv4Addr::new(172, 21, 1, ip), range(min, min + len)))
            .collect();
        let overlapping = v.iter().enumerate().any(|(i, a)| {
            v.iter().skip(i + 1).any(|b| a.0 == b.0 && a.1.overlaps(&b.1))
        });
        prop_assert_eq!(validate_disjoint(v.iter().copied()).is_err(), overlapping);
    }

    /// The neighbor table gives the right owner for every port of every range and None
    /// for every other port, checked against a linear scan.
    #[test]
    fn neighbor_owner_matches_linear_scan(
        cuts in proptest::collection::vec((0u16..1000, any::<bool>()), 1..40),
    ) {
        // Disjoint ranges per (vni, ip) from sorted cut points; every other one is kept.
        let mut entries = Vec::new();
        for (vni, ip) in [(1u32, NAT_IP), (2, NAT_IP), (1, Ipv4Addr::new(172, 21, 1, 2))] {
            let mut pts: Vec<(u16, bool)> = cuts.clone();
            pts.sort_unstable();
            pts.dedup_by_key(|p| p.0);
            for (n, w) in pts.windows(2).enumerate() {
                if w[0].1 {
                    // Different VNIs of one IP get different halves (disjoint per IP).
                    let (lo, hi) = (w[0].0 * 2 + u16::from(vni == 2) * 2000, w[1].0 * 2 + u16::from(vni == 2) * 2000);
                    entries.push(NeighborNat {
                        nat_ip: ip, range: range(lo, hi), vni,
                        underlay: Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, u16::try_from(vni).unwrap(), u16::try_from(n).unwrap()),
                    });
                }
            }
        }
        let t = NeighborNats::new(entries.clone()).unwrap();
        for (vni, ip) in [(1u32, NAT_IP), (2, NAT_IP), (1, Ipv4Addr::new(172, 21, 1, 2)), (3, NAT_IP)] {
            for port in 0..4100u16 {
                let want = entries.iter().find(|e| e.vni == vni && e.nat_ip == ip && e.range.contains(port));
                prop_assert_eq!(t.owner(vni, ip, port), want);
            }
        }
    }

    /// Worker shares partition the range; `worker_of` agrees with `split`.
    #[test]
    fn split_partitions(min in 0u16..1000, len in 1u16..100, workers in 1usize..9) {
        let r = range(min, min + len);
        let mut next = r.min();
        let mut sizes = Vec::new();
        for w in 0..workers {
            if let Some(s) = r.split(w, workers) {
                prop_assert_eq!(s.min(), next);
                next = s.max();
                sizes.push(s.size());
                for p in s.min()..s.max() {
                    prop_assert_eq!(r.worker_of(p, workers), Some(w));
                }
            }
        }
        prop_assert_eq!(next, r.max());
        prop_assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    }
}
