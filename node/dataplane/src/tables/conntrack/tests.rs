use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::tcp::{ACK, FIN, RST, SYN};
use super::*;

const S: u64 = 1_000_000_000;
const VNI: u32 = 7;

/// A 16-byte action, the size the memory budget assumes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Act([u32; 4]);

fn act(n: u32) -> Act {
    Act([n, 0, 0, 0])
}

fn ip(x: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, x)
}

fn tcp(sport: u16) -> FlowKey {
    FlowKey::v4(VNI, ip(1), ip(2), PROTO_TCP, sport, 80)
}

fn udp(sport: u16) -> FlowKey {
    FlowKey::v4(VNI, ip(1), ip(2), PROTO_UDP, sport, 53)
}

fn table(capacity: usize) -> Conntrack<Act> {
    Conntrack::new(&Config { capacity, ..Config::new(42) }).unwrap()
}

fn nop(_: &Flow<Act>) {}

impl<A: Copy + Default> Conntrack<A> {
    /// Checks the structure: every live entry's keys are in the index exactly once,
    /// nothing else is, the free list holds the rest, and no key belongs to two flows.
    fn check(&self) {
        let mut want = HashSet::new();
        let mut keys = HashSet::new();
        assert_eq!(self.entries.len(), self.meta.len());
        for (i, (e, m)) in self.entries.iter().zip(self.meta.iter()).enumerate() {
            if m.kind == KIND_FREE {
                continue;
            }
            let i = u32::try_from(i).unwrap();
            assert_eq!(m.single(), e.keys[0] == e.keys[1]);
            for d in 0..if m.single() { 1 } else { 2 } {
                assert!(want.insert((i << 1) | d));
                assert!(keys.insert(e.keys[d as usize]), "two flows share {:?}", e.keys[d as usize]);
                let (_, r) = self.find(&e.keys[d as usize], self.hasher.hash(&e.keys[d as usize])).unwrap();
                assert_eq!(r, (i << 1) | d);
            }
        }
        let got: HashSet<u32> = self.slots.iter().filter(|&&s| s != EMPTY).map(|&s| slot_ref(s)).collect();
        assert_eq!(got, want);
        assert_eq!(self.slots.iter().filter(|&&s| s != EMPTY).count(), want.len());
        let mut free = 0;
        let mut f = self.free_head;
        while f != NIL {
            assert_eq!(self.meta[f as usize].kind, KIND_FREE);
            free += 1;
            f = self.meta[f as usize].expires_or_next;
        }
        assert_eq!(free + self.len, self.capacity());
    }
}

#[test]
fn both_directions_found_by_one_lookup() {
    let mut t = table(64);
    let k = tcp(1000);
    let id = t.insert(k, k.reversed(), [act(1), act(2)], SYN, 0, nop).unwrap();
    let h = t.track(&k, 0, S).unwrap();
    assert_eq!((h.id, h.dir, h.action), (id, Dir::Orig, act(1)));
    let h = t.track(&k.reversed(), 0, S).unwrap();
    assert_eq!((h.id, h.dir, h.action), (id, Dir::Reply, act(2)));
    assert!(t.track(&tcp(1001), 0, S).is_none());
    assert!(t.get(&k.with_zone(1), S).is_none());
    assert_eq!(t.len(), 1);
    t.check();
}

#[test]
fn translated_reply_key_is_found_and_original_reverse_is_not() {
    // SNAT: 10.0.0.1:1000 -> 10.0.0.2:80 leaves as 192.0.2.1:2000; replies come to it.
    let mut t = table(64);
    let orig = tcp(1000);
    let reply = FlowKey::v4(VNI, ip(2), Ipv4Addr::new(192, 0, 2, 1), PROTO_TCP, 80, 2000);
    let id = t.insert(orig, reply, [act(1), act(2)], SYN, 0, nop).unwrap();
    assert_eq!(t.get(&reply, 0).map(|h| (h.id, h.dir)), Some((id, Dir::Reply)));
    assert!(t.get(&orig.reversed(), 0).is_none());
    // The rewrite of each direction is the reverse of the other direction's key.
    let f = t.flow(id).unwrap();
    assert_eq!(f.keys[Dir::Reply.index()].reversed().src(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    t.check();
}

#[test]
fn tcp_states_set_timeouts() {
    let mut t = table(64);
    let k = tcp(1000);
    let r = k.reversed();
    t.insert(k, r, [act(1), act(2)], SYN, 0, nop).unwrap();
    assert_eq!(t.get(&k, 0).unwrap().tcp, TcpState::SynSent);
    assert_eq!(t.track(&r, SYN | ACK, S).unwrap().tcp, TcpState::SynRecv);
    let h = t.track(&k, ACK, 2 * S).unwrap();
    assert_eq!(h.tcp, TcpState::Established);
    assert_eq!(t.flow(h.id).unwrap().expires_s, 2 + 86_400);
    // An established connection survives an hour of silence...
    let hour = 3600 * S;
    assert_eq!(t.track(&r, ACK, hour).unwrap().tcp, TcpState::Established);
    // ...FIN moves it to the short timeout...
    assert_eq!(t.track(&k, FIN | ACK, hour).unwrap().tcp, TcpState::FinWait);
    assert!(t.get(&k, hour + 30 * S).is_some());
    assert!(t.get(&k, hour + 31 * S).is_none(), "expired flows are absent");
    assert!(t.track(&k, ACK, hour + 31 * S).is_none());
    // ...and aging reclaims it.
    assert_eq!(t.age(hour + 31 * S, 64), 1);
    assert!(t.is_empty());
    t.check();
}

#[test]
fn rst_and_double_fin_close() {
    let mut t = table(64);
    let k = tcp(1);
    let id = t.insert(k, k.reversed(), [act(0); 2], SYN, 0, nop).unwrap();
    t.track(&k.reversed(), SYN | ACK, 0);
    t.track(&k, ACK, 0);
    assert_eq!(t.track(&k.reversed(), RST, S).unwrap().tcp, TcpState::Closed);
    assert_eq!(t.flow(id).unwrap().expires_s, 1 + 30);

    let k2 = tcp(2);
    t.insert(k2, k2.reversed(), [act(0); 2], SYN, 0, nop).unwrap();
    t.track(&k2.reversed(), SYN | ACK, 0);
    t.track(&k2, ACK, 0);
    t.track(&k2, FIN | ACK, 0);
    assert_eq!(t.track(&k2.reversed(), FIN | ACK, 0).unwrap().tcp, TcpState::Closed);
    // A flow created mid-connection (no SYN) is TCP with state None and a short timeout.
    let k3 = tcp(3);
    let id3 = t.insert(k3, k3.reversed(), [act(0); 2], ACK, 5 * S, nop).unwrap();
    assert_eq!(t.flow(id3).unwrap().tcp, Some(TcpState::None));
    assert_eq!(t.flow(id3).unwrap().expires_s, 35);
}

#[test]
fn a_short_timeout_expires_within_an_eighth_of_a_second() {
    // dpservice's flow-timeout test waits 2 s after the last packet of a flow with
    // `--flow-timeout=1` for its NAT port to be free again: expiry in whole seconds
    // (1 to 2 s) left no room for aging to get there in time.
    let mut t = Conntrack::<Act>::new(&Config { capacity: 8, flow_timeout_s: 1, ..Config::new(1) }).unwrap();
    let k = udp(1);
    t.insert(k, k.reversed(), [act(0); 2], 0, 4 * S, nop).unwrap();
    assert!(t.track(&k, 0, 5 * S).is_some());
    // Live for the timeout, gone an eighth of a second later (whole seconds kept it to
    // 6.999 s).
    assert!(t.get(&k, 6 * S).is_some());
    assert!(t.get(&k, 6 * S + S / 8).is_none());
    assert_eq!(t.age(6 * S + S / 8, 8), 1);
    // A last packet within a second: the flow's expiry second is rounded up.
    let id = t.insert(k, k.reversed(), [act(0); 2], 0, 10 * S + S / 2, nop).unwrap();
    assert_eq!(t.flow(id).unwrap().expires_s, 12);
    assert!(t.get(&k, 11 * S + S / 2).is_some());
    assert!(t.get(&k, 11 * S + S / 2 + S / 8).is_none());
}

#[test]
fn other_protocols_use_flow_timeout() {
    let mut t = Conntrack::<Act>::new(&Config { capacity: 8, flow_timeout_s: 2, ..Config::new(1) }).unwrap();
    let k = udp(1);
    t.insert(k, k.reversed(), [act(0); 2], 0xff, 0, nop).unwrap();
    assert_eq!(t.get(&k, 0).unwrap().tcp, TcpState::None);
    assert!(t.track(&k.reversed(), 0, 2 * S).is_some());
    assert!(t.get(&k, 4 * S).is_some());
    assert!(t.get(&k, 5 * S).is_none());
    assert_eq!(t.iter().next().unwrap().tcp, None);
}

#[test]
fn icmp_echo_identifier_is_the_port() {
    let mut t = table(64);
    let req = FlowKey::icmp(VNI, ip(1).into(), ip(2).into(), 8, 0x77).unwrap();
    let id = t.insert(req, req.reversed(), [act(1), act(2)], 0, 0, nop).unwrap();
    let reply = FlowKey::icmp(VNI, ip(2).into(), ip(1).into(), 0, 0x77).unwrap();
    assert_eq!(t.track(&reply, 0, 0).map(|h| (h.id, h.dir)), Some((id, Dir::Reply)));
    // Another identifier, or an echo request from the other side, is another flow.
    assert!(t.get(&FlowKey::icmp(VNI, ip(2).into(), ip(1).into(), 0, 0x78).unwrap(), 0).is_none());
    let req_back = FlowKey::icmp(VNI, ip(2).into(), ip(1).into(), 8, 0x77).unwrap();
    assert!(t.get(&req_back, 0).is_none());
    t.insert(req_back, req_back.reversed(), [act(3); 2], 0, 0, nop).unwrap();
    t.check();
}

#[test]
fn icmp_error_finds_the_quoted_flow() {
    // SNAT flow 10.0.0.1:1000 -> 10.0.0.2:80 as 192.0.2.1:2000. A router beyond the NAT
    // reports a problem with the translated packet, quoting 192.0.2.1:2000 -> 10.0.0.2:80;
    // the error travels towards 192.0.2.1, in the reply direction.
    let mut t = table(64);
    let nat = Ipv4Addr::new(192, 0, 2, 1);
    let orig = FlowKey::v4(VNI, ip(1), ip(2), PROTO_UDP, 1000, 80);
    let reply = FlowKey::v4(VNI, ip(2), nat, PROTO_UDP, 80, 2000);
    let id = t.insert(orig, reply, [act(1), act(2)], 0, 0, nop).unwrap();
    let quoted = FlowKey::v4(VNI, nat, ip(2), PROTO_UDP, 2000, 80);
    let h = t.lookup_quoted(&quoted, 0).unwrap();
    assert_eq!((h.id, h.dir, h.action), (id, Dir::Reply, act(2)));
    // The VM's side reports a problem with a reply (quoting 10.0.0.2:80 -> 10.0.0.1:1000,
    // the reply after translation back): the error travels in the original direction.
    let quoted_back = FlowKey::v4(VNI, ip(2), ip(1), PROTO_UDP, 80, 1000);
    assert_eq!(t.lookup_quoted(&quoted_back, 0).map(|h| h.dir), Some(Dir::Orig));
    // A quoted echo request.
    let req = FlowKey::icmp(VNI, ip(1).into(), ip(3).into(), 8, 9).unwrap();
    let id2 = t.insert(req, req.reversed(), [act(5); 2], 0, 0, nop).unwrap();
    assert_eq!(t.lookup_quoted(&req, 0).map(|h| (h.id, h.dir)), Some((id2, Dir::Reply)));
    // Lookups of errors neither refresh the flow nor change it.
    assert!(t.lookup_quoted(&quoted, 31 * S).is_none());
}

#[test]
fn full_table_refuses_new_flows_and_keeps_old_ones() {
    let mut t = table(4);
    let ids: Vec<FlowId> =
        (0..4).map(|p| t.insert(udp(p), udp(p).reversed(), [act(p.into()); 2], 0, 0, nop).unwrap()).collect();
    assert_eq!(t.insert(udp(9), udp(9).reversed(), [act(9); 2], 0, 0, nop), Err(InsertError::Full));
    for (p, id) in (0..4).zip(&ids) {
        assert_eq!(t.track(&udp(p).reversed(), 0, S).map(|h| (h.id, h.action)), Some((*id, act(p.into()))));
    }
    assert!(t.get(&udp(9), S).is_none());
    t.check();
    // Room again once a flow leaves.
    t.remove(ids[2]).unwrap();
    assert!(t.remove(ids[2]).is_none());
    t.insert(udp(9), udp(9).reversed(), [act(9); 2], 0, S, nop).unwrap();
    t.check();
}

#[test]
fn full_table_takes_new_flows_once_old_ones_expire() {
    let mut t = table(2);
    t.insert(udp(1), udp(1).reversed(), [act(1); 2], 0, 0, nop).unwrap();
    t.insert(udp(2), udp(2).reversed(), [act(2); 2], 0, 0, nop).unwrap();
    assert_eq!(t.insert(udp(3), udp(3).reversed(), [act(3); 2], 0, 31 * S, nop), Err(InsertError::Full));
    let mut gone = Vec::new();
    assert_eq!(t.age_with(31 * S, 1, |f| gone.push(f.keys[0])), 1);
    assert_eq!(gone, vec![udp(1)]);
    t.insert(udp(3), udp(3).reversed(), [act(3); 2], 0, 31 * S, nop).unwrap();
    t.check();
}

#[test]
fn live_key_refuses_and_expired_key_is_taken_over() {
    let mut t = table(8);
    let k = udp(1);
    let id = t.insert(k, k.reversed(), [act(1); 2], 0, 0, nop).unwrap();
    assert_eq!(
        t.insert(k, k.reversed(), [act(2); 2], 0, 0, nop),
        Err(InsertError::Exists { id, dir: Dir::Orig })
    );
    // Another flow whose reply key is this flow's original key.
    let other = FlowKey::v4(VNI, ip(9), ip(9), PROTO_UDP, 1, 1);
    assert_eq!(t.insert(other, k, [act(2); 2], 0, 0, nop), Err(InsertError::Exists { id, dir: Dir::Orig }));
    assert_eq!(t.len(), 1);
    t.check();
    // After expiry the key can be taken; the old flow is reported.
    let mut gone = Vec::new();
    let id2 = t.insert(k.reversed(), k, [act(3); 2], 0, 40 * S, |f| gone.push(f.id)).unwrap();
    assert_eq!(gone, vec![id]);
    assert_eq!(t.get(&k, 40 * S).map(|h| (h.id, h.dir)), Some((id2, Dir::Reply)));
    assert_eq!(t.len(), 1);
    t.check();
}

#[test]
fn aging_works_in_slices() {
    let mut t = table(100);
    for p in 0..100 {
        t.insert(udp(p), udp(p).reversed(), [act(0); 2], 0, 0, nop).unwrap();
    }
    // A tenth of the flows are refreshed at 20 s and must survive aging at 40 s.
    for p in (0..100).step_by(10) {
        t.track(&udp(p), 0, 20 * S).unwrap();
    }
    let mut removed = 0;
    for _ in 0..10 {
        let n = t.age(40 * S, 10);
        assert!(n <= 10);
        removed += n;
    }
    assert_eq!(removed, 90);
    assert_eq!(t.len(), 10);
    assert!((0..100).all(|p| t.get(&udp(p), 40 * S).is_some() == (p % 10 == 0)));
    // Scanning more than the capacity visits each entry once.
    assert_eq!(t.age(60 * S, 1_000), 10);
    assert!(t.is_empty());
    t.check();
}

#[test]
fn aging_scans_only_the_entries_ever_taken() {
    let mut t = table(1 << 16);
    for round in 0..3u64 {
        let at = round * 100 * S;
        for p in 0..10 {
            let id = t.insert(udp(p), udp(p).reversed(), [act(0); 2], 0, at, nop).unwrap();
            // Freed entries are taken again: the flows stay in the first ten entries.
            assert!(id.index() < 10, "round {round}: entry {}", id.index());
        }
        // One slice of ten entries reaches every flow, wherever the cursor stands.
        assert_eq!(t.age(at + 40 * S, 3), 3);
        assert_eq!(t.age(at + 40 * S, 10), 7);
        assert!(t.is_empty());
        t.check();
    }
}

#[test]
fn set_key_rekeys_one_direction() {
    let mut t = table(8);
    let k = udp(1);
    let id = t.insert(k, k.reversed(), [act(1), act(2)], 0, 0, nop).unwrap();
    let nat_reply = FlowKey::v4(VNI, ip(2), Ipv4Addr::new(192, 0, 2, 1), PROTO_UDP, 53, 4000);
    t.set_key(id, Dir::Reply, nat_reply, 0, nop).unwrap();
    assert!(t.get(&k.reversed(), 0).is_none());
    assert_eq!(t.get(&nat_reply, 0).map(|h| h.dir), Some(Dir::Reply));
    assert_eq!(t.get(&k, 0).map(|h| h.dir), Some(Dir::Orig));
    // A key another live flow holds is refused and nothing changes.
    let id2 = t.insert(udp(2), udp(2).reversed(), [act(0); 2], 0, 0, nop).unwrap();
    assert_eq!(
        t.set_key(id, Dir::Reply, udp(2), 0, nop),
        Err(InsertError::Exists { id: id2, dir: Dir::Orig })
    );
    assert_eq!(t.get(&nat_reply, 0).map(|h| h.id), Some(id));
    // Rekeying to the other direction's key makes a single-key flow.
    t.set_key(id, Dir::Reply, k, 0, nop).unwrap();
    assert_eq!(t.get(&k, 0).map(|h| (h.id, h.dir)), Some((id, Dir::Orig)));
    t.check();
}

#[test]
fn flow_equal_to_its_reverse_has_one_key() {
    let mut t = table(8);
    let k = FlowKey::v4(VNI, ip(1), ip(1), PROTO_UDP, 5, 5);
    assert_eq!(k, k.reversed());
    let id = t.insert(k, k, [act(1), act(2)], 0, 0, nop).unwrap();
    assert_eq!(t.get(&k, 0).map(|h| (h.id, h.dir)), Some((id, Dir::Orig)));
    t.check();
    t.remove(id).unwrap();
    assert!(t.is_empty());
    t.check();
}

#[test]
fn actions_can_be_replaced_and_flows_flushed() {
    let mut t = table(16);
    let a = t.insert(udp(1), udp(1).reversed(), [act(1); 2], 0, 0, nop).unwrap();
    let other = FlowKey::v4(VNI + 1, ip(1), ip(2), PROTO_UDP, 1, 53);
    t.insert(other, other.reversed(), [act(1); 2], 0, 0, nop).unwrap();
    assert!(t.set_action(a, Dir::Reply, act(7)));
    assert_eq!(t.action(a, Dir::Reply), Some(act(7)));
    assert_eq!(t.track(&udp(1).reversed(), 0, 0).unwrap().action, act(7));
    assert_eq!(t.action(FlowId(999), Dir::Orig), None);
    assert!(!t.set_action(FlowId(999), Dir::Orig, act(0)));
    // Flush the flows of VNI 7 (as deleting an interface would).
    let mut gone = 0;
    assert_eq!(t.retain(|f| f.keys[0].vni() != VNI, |_| gone += 1), 1);
    assert_eq!(gone, 1);
    assert!(t.get(&udp(1), 0).is_none() && t.get(&other, 0).is_some());
    assert_eq!(t.iter().count(), 1);
    t.clear();
    assert!(t.is_empty() && t.get(&other, 0).is_none());
    t.check();
}

#[test]
fn config_is_validated() {
    let c = Config::new(0);
    assert_eq!(c.capacity, 1 << 20);
    assert!(c.capacity >= 1_000_000);
    assert_eq!(Conntrack::<Act>::new(&Config { capacity: 0, ..c }).err(), Some(ConfigError::Capacity(0)));
    assert!(Conntrack::<Act>::new(&Config { capacity: (1 << 30) + 1, ..c }).is_err());
    assert_eq!(
        Conntrack::<Act>::new(&Config { flow_timeout_s: 0, capacity: 4, ..c }).err(),
        Some(ConfigError::Timeout)
    );
}

#[test]
fn memory_per_flow_is_within_budget() {
    // The arena entry: two 44-byte keys, two 16-byte actions: 120 bytes; and its word
    // of expiry, stamp and state: 8 bytes.
    assert_eq!(std::mem::size_of::<FlowKey>(), 44);
    assert_eq!(std::mem::size_of::<Entry<Act>>(), 120);
    assert_eq!(std::mem::size_of::<Meta>(), 8);
    // A built table holds exactly what the formula says.
    let t = table(1000);
    assert_eq!(t.heap_bytes(), Conntrack::<Act>::footprint(1000).total());
    assert_eq!(t.heap_bytes(), 1000 * 128 + 2500 * 8);
    for cap in [1_000_000, 10_000_000, Config::DEFAULT_CAPACITY] {
        let f = Conntrack::<Act>::footprint(cap);
        assert_eq!(f.entry_bytes, cap * 128);
        assert_eq!(f.index_bytes, cap * 20);
        assert!(f.per_flow() <= 160.0, "{cap}: {} bytes per flow", f.per_flow());
    }
}

// ---- properties ----

fn arb_key() -> impl Strategy<Value = FlowKey> {
    (1u32..3, 1u8..5, 1u8..5, prop::sample::select(vec![PROTO_TCP, PROTO_UDP, PROTO_ICMP]), 0u16..4, 0u16..3)
        .prop_map(|(vni, s, d, proto, sp, dp)| match proto {
            PROTO_ICMP => FlowKey::icmp(vni, ip(s).into(), ip(d).into(), if sp % 2 == 0 { 8 } else { 0 }, dp)
                .unwrap_or_else(|| unreachable!()),
            _ => FlowKey::v4(vni, ip(s), ip(d), proto, sp, dp),
        })
}

/// A flow: its original key and a reply key that is either the reverse or translated
/// (the reply addressed to a NAT address and port).
fn arb_flow() -> impl Strategy<Value = (FlowKey, FlowKey)> {
    (arb_key(), prop::option::of((0u8..3, 0u16..4))).prop_map(|(k, nat)| {
        let r = k.reversed();
        match (nat, r.src(), k.src()) {
            (Some((a, p)), IpAddr::V4(from), IpAddr::V4(_)) => {
                let nat_ip = Ipv4Addr::new(192, 0, 2, a);
                (k, FlowKey::v4(r.vni(), from, nat_ip, r.proto(), r.src_port(), 1000 + p))
            }
            _ => (k, r),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every inserted flow is found from both directions.
    #[test]
    fn inserted_flows_are_found_both_ways(flows in prop::collection::vec(arb_flow(), 1..60)) {
        let mut t = table(64);
        let mut ids = Vec::new();
        for (o, r) in &flows {
            if let Ok(id) = t.insert(*o, *r, [act(1), act(2)], SYN, 0, nop) {
                ids.push((id, *o, *r));
            }
        }
        for (id, o, r) in &ids {
            prop_assert_eq!(t.get(o, 0).map(|h| (h.id, h.dir)), Some((*id, Dir::Orig)));
            let want = if o == r { Dir::Orig } else { Dir::Reply };
            prop_assert_eq!(t.get(r, 0).map(|h| (h.id, h.dir)), Some((*id, want)));
            // An ICMP error quoting either direction's translated packet finds it too.
            prop_assert_eq!(t.lookup_quoted(&r.reversed(), 0).map(|h| h.id), Some(*id));
        }
        t.check();
    }

    /// A burst lookup gives what one lookup after the other gives, and leaves the same
    /// table behind (including a key that appears twice in the burst).
    #[test]
    fn burst_tracking_equals_one_by_one(
        flows in prop::collection::vec(arb_flow(), 1..40),
        probes in prop::collection::vec((arb_key(), prop::sample::select(vec![0u8, SYN, SYN | ACK, ACK, FIN])), 0..50),
        at in 0u64..60,
    ) {
        let mut t = table(32);
        for (i, (o, r)) in flows.iter().enumerate() {
            let _ = t.insert(*o, *r, [act(u32::try_from(i).unwrap()), act(99)], SYN, 0, nop);
        }
        let mut one = t.clone();
        let keys: Vec<FlowKey> = probes.iter().map(|p| p.0).collect();
        let flags: Vec<u8> = probes.iter().map(|p| p.1).collect();
        let mut out = vec![None; keys.len()];
        t.track_burst(&keys, &flags, at * S, &mut out);
        for ((k, f), got) in keys.iter().zip(&flags).zip(&out) {
            prop_assert_eq!(*got, one.track(k, *f, at * S));
        }
        prop_assert_eq!(t.iter().collect::<Vec<_>>(), one.iter().collect::<Vec<_>>());
    }

    /// After aging past every timeout no flow remains, whatever the TCP states.
    #[test]
    fn aging_past_timeouts_empties_the_table(
        ops in prop::collection::vec((arb_flow(), 0u64..100_000, prop::sample::select(vec![0u8, SYN, SYN | ACK, ACK, FIN, RST])), 1..80),
        slice in 1usize..40,
    ) {
        let mut t = table(64);
        let mut last = 0;
        for ((o, r), at, flags) in &ops {
            let now = at * S / 10;
            last = last.max(now);
            if t.track(o, *flags, now).is_none() {
                let _ = t.insert(*o, *r, [act(0); 2], *flags, now, nop);
            }
        }
        let end = last + u64::from(Config::DEFAULT_TCP_ESTABLISHED_TIMEOUT_S + 1) * S;
        for (o, r) in ops.iter().map(|x| x.0) {
            prop_assert!(t.get(&o, end).is_none() && t.get(&r, end).is_none());
        }
        let mut n = 0;
        while !t.is_empty() {
            n += t.age(end, slice);
            prop_assert!(n <= 64);
        }
        t.check();
    }

    /// Random inserts, lookups, removals, clock steps and aging agree with a model.
    #[test]
    fn agrees_with_a_model(ops in prop::collection::vec(
        prop_oneof![
            4 => arb_flow().prop_map(Op::Insert),
            3 => arb_key().prop_map(Op::Track),
            1 => arb_key().prop_map(Op::Remove),
            1 => (0u64..20).prop_map(Op::Advance),
            1 => (1usize..20).prop_map(Op::Age),
        ], 1..200)) {
        let cap = 12;
        let mut t = table(cap);
        // The model: flows by id (keys, expiry second), keys to (id, direction).
        let mut flows: HashMap<FlowId, ([FlowKey; 2], u32)> = HashMap::new();
        let mut by_key: HashMap<FlowKey, (FlowId, Dir)> = HashMap::new();
        let mut now_s = 0u32;
        let live = |flows: &HashMap<FlowId, ([FlowKey; 2], u32)>, id: &FlowId, now: u32| flows[id].1 >= now;
        for op in ops {
            let now = u64::from(now_s) * S;
            match op {
                Op::Insert((o, r)) => {
                    let held: Vec<(FlowId, Dir)> = [o, r].iter().filter_map(|k| by_key.get(k).copied()).collect();
                    let blocker = held.iter().find(|(id, _)| live(&flows, id, now_s));
                    let mut removed = Vec::new();
                    let got = t.insert(o, r, [act(0); 2], 0, now, |f| removed.push(f.id));
                    if let Some(&(id, dir)) = blocker {
                        // A live holder refuses (the first key is checked first).
                        let first = by_key.get(&o).copied().filter(|(i, _)| live(&flows, i, now_s)).unwrap_or((id, dir));
                        prop_assert_eq!(got, Err(InsertError::Exists { id: first.0, dir: first.1 }));
                    }
                    for id in &removed {
                        let (keys, exp) = flows.remove(id).unwrap();
                        prop_assert!(exp < now_s, "a live flow was evicted");
                        for k in keys { by_key.remove(&k); }
                    }
                    match got {
                        Ok(id) => {
                            prop_assert!(blocker.is_none());
                            prop_assert!(flows.len() < cap);
                            prop_assert!(!flows.contains_key(&id));
                            let e = now_s + Config::DEFAULT_FLOW_TIMEOUT_S;
                            flows.insert(id, ([o, r], e));
                            by_key.insert(r, (id, if o == r { Dir::Orig } else { Dir::Reply }));
                            by_key.insert(o, (id, Dir::Orig));
                        }
                        Err(InsertError::Full) => prop_assert_eq!(flows.len(), cap),
                        Err(InsertError::Exists { .. }) => prop_assert!(blocker.is_some()),
                    }
                }
                Op::Track(k) => {
                    let want = by_key.get(&k).copied().filter(|(id, _)| live(&flows, id, now_s));
                    let got = t.track(&k, 0, now);
                    prop_assert_eq!(got.map(|h| (h.id, h.dir)), want);
                    if let Some((id, _)) = want {
                        // UDP/ICMP: flow timeout; TCP without SYN stays None: flow timeout.
                        flows.get_mut(&id).unwrap().1 = now_s + Config::DEFAULT_FLOW_TIMEOUT_S;
                    }
                }
                Op::Remove(k) => {
                    if let Some(&(id, _)) = by_key.get(&k) {
                        let f = t.remove(id).unwrap();
                        let (keys, _) = flows.remove(&id).unwrap();
                        prop_assert_eq!(f.keys, keys);
                        for k in keys { by_key.remove(&k); }
                    }
                }
                Op::Advance(s) => now_s += u32::try_from(s).unwrap(),
                Op::Age(n) => {
                    let mut removed = Vec::new();
                    let c = t.age_with(now, n, |f| removed.push(f.id));
                    prop_assert_eq!(c, removed.len());
                    for id in removed {
                        let (keys, exp) = flows.remove(&id).unwrap();
                        prop_assert!(exp < now_s);
                        for k in keys { by_key.remove(&k); }
                    }
                }
            }
            prop_assert_eq!(t.len(), flows.len());
            for (k, (id, dir)) in &by_key {
                let want = live(&flows, id, now_s).then_some((*id, *dir));
                prop_assert_eq!(t.get(k, u64::from(now_s) * S).map(|h| (h.id, h.dir)), want);
            }
            t.check();
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert((FlowKey, FlowKey)),
    Track(FlowKey),
    Remove(FlowKey),
    Advance(u64),
    Age(usize),
}

#[test]
fn a_stamp_names_one_flow_unchanged_within_an_era() {
    let mut t = table(1);
    let a = t.insert(udp(1), udp(1).reversed(), [act(1); 2], 0, 0, nop).unwrap();
    let s = t.stamp(a).unwrap();
    assert!(t.is_current(a, s, 0));
    assert!(!t.is_current(a, s.wrapping_add(1), 0));
    // Expired: not current, though the entry still holds the flow.
    assert!(!t.is_current(a, s, 31_000_000_000));
    // Changed actions or keys, or another flow in the entry: another stamp.
    assert!(t.set_action(a, Dir::Reply, act(7)));
    assert!(!t.is_current(a, s, 0));
    let s = t.stamp(a).unwrap();
    t.set_key(a, Dir::Reply, udp(2).reversed(), 0, nop).unwrap();
    assert!(!t.is_current(a, s, 0));
    let s = t.stamp(a).unwrap();
    t.remove(a).unwrap();
    assert_eq!(t.stamp(a), None);
    assert!(!t.is_current(a, s, 0));
    let b = t.insert(udp(3), udp(3).reversed(), [act(1); 2], 0, 0, nop).unwrap();
    assert_eq!(b, a);
    assert!(!t.is_current(b, s, 0));
    // An entry's stamp comes round to an earlier value only in a new era: the era
    // moves on as it passes 0.
    assert_eq!(t.era(), 0);
    let s = t.stamp(b).unwrap();
    let mut seen = 0;
    for _ in 0..u16::MAX {
        t.remove(b).unwrap();
        t.insert(udp(3), udp(3).reversed(), [act(1); 2], 0, 0, nop).unwrap();
        let now = t.stamp(b).unwrap();
        assert_ne!(now, s);
        assert_eq!(t.era(), u64::from(now < s));
        seen += 1;
    }
    t.remove(b).unwrap();
    t.insert(udp(3), udp(3).reversed(), [act(1); 2], 0, 0, nop).unwrap();
    assert_eq!((seen, t.stamp(b), t.era()), (u16::MAX, Some(s), 1));
}
