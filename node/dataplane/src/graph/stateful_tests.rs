//! Stateful graph tests: connection tracking, firewall, VIP, NAT and neighbour NAT on
//! the reference lab. Frames are built with etherparse; every emitted packet's lengths
//! and checksums (IPv4, TCP, UDP, ICMP) are verified.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use super::testkit::{from_router, lab, ports::*, vm_mac, PF0_MAC};
use super::*;
use crate::buf::TestBuf;
use crate::config::{DnatTarget, Flush, RouteTarget, UnderlayTarget};
use crate::tables::firewall::{Action, Cidr, Direction, Filter, PortRange as FwPorts, Rule, RuleSet};
use crate::tables::nat::{LocalNat, NeighborNat, NeighborNats, PortRange};
use crate::wire::checksum;

const VM1_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 1, 1);
const VM2_IP: Ipv4Addr = Ipv4Addr::new(10, 100, 1, 2);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(45, 86, 6, 206);
const NAT_IP: Ipv4Addr = Ipv4Addr::new(172, 21, 1, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 1);

fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn nat_ul() -> Ipv6Addr {
    a6("fc00:1::1:aa")
}
fn vip_ul() -> Ipv6Addr {
    a6("fc00:1::1:bb")
}
fn neigh_ul() -> Ipv6Addr {
    a6("fc00:2::64:0:1")
}

/// The lab with vm1 behind NAT 172.21.1.1 [100, 102), vm2 with VIP 172.20.0.1, and a
/// neighbour owning [500, 520) of the NAT IP.
fn stateful_lab() -> Snapshot {
    let mut s = lab();
    let nat = LocalNat { nat_ip: NAT_IP, range: PortRange::new(100, 102).unwrap(), vni: 100 };
    s.iface_by_port[usize::from(VM1)].as_mut().unwrap().nat = Some(nat);
    s.iface_by_port[usize::from(VM2)].as_mut().unwrap().vip = Some(VIP);
    s.underlay_targets.insert(nat_ul(), UnderlayTarget::Nat { port: VM1, vni: 100 });
    s.underlay_targets.insert(vip_ul(), UnderlayTarget::Vip(VM2));
    s.dnat.insert((100, NAT_IP), DnatTarget::Nat);
    s.dnat.insert((100, VIP), DnatTarget::Vip(VM2));
    let n = NeighborNat {
        nat_ip: NAT_IP,
        range: PortRange::new(500, 520).unwrap(),
        vni: 100,
        underlay: neigh_ul(),
    };
    s.neighbor_nats = Arc::new(NeighborNats::new(vec![n]).unwrap());
    s
}

fn pipeline(enforce: bool) -> Pipeline {
    let mut cfg = PipelineConfig::small();
    cfg.enforce_firewall = enforce;
    let p = Pipeline::with_config(Arc::default(), &cfg).unwrap();
    for n in 0..4u8 {
        p.neighbours().learn(VM1 + PortId::from(n), vm_mac(n));
    }
    p
}

fn run(p: &mut Pipeline, snap: &Snapshot, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut bufs = [TestBuf::new(frame)];
    let mut v = [Verdict::Drop(DropReason::TxFull)];
    let single = p.process_burst(snap, port, 1_000_000_000, &mut bufs, &mut v);
    assert_eq!(single, one_port(&v));
    (v[0], bufs[0].to_vec())
}

/// What `process_burst` answers for a burst with these verdicts: the port, when every
/// packet is sent and all on one.
pub(super) fn one_port(v: &[Verdict]) -> Option<PortId> {
    let mut ports = v.iter().map(|v| match v {
        Verdict::Tx(p) => Some(*p),
        Verdict::Drop(_) => None,
    });
    let first = ports.next()??;
    ports.all(|p| p == Some(first)).then_some(first)
}

/// The next generation of `snap`, asking the workers for `flush` (as the control plane
/// publishes a change that must end flows).
fn flushed(snap: &Snapshot, flush: Flush) -> Snapshot {
    let mut next = snap.clone();
    next.generation += 1;
    next.flushes = vec![(1, flush)].into();
    next
}

/// An IPv4 TCP packet (no Ethernet header).
fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp(sport, dport, 1, 1000);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::new();
    b.write(&mut v, b"hello").unwrap();
    v
}

fn icmp_echo4(src: Ipv4Addr, dst: Ipv4Addr, request: bool, id: u16) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    let b = if request { b.icmpv4_echo_request(id, 1) } else { b.icmpv4_echo_reply(id, 1) };
    let mut v = Vec::new();
    b.write(&mut v, b"ping").unwrap();
    v
}

/// An ICMPv4 port-unreachable from `src` to `dst` quoting `quoted`.
fn port_unreachable(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut err = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut err, quoted)
        .unwrap();
    err
}

/// From a VM: Ethernet + `ip`.
fn from_vm(n: u8, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&PF0_MAC);
    f.extend_from_slice(&vm_mac(n));
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

/// The IPv4 packet of an emitted frame (inside the tunnel for a PF), with every
/// checksum verified.
fn inner(port: PortId, out: &[u8]) -> Vec<u8> {
    let ip = if port <= PF1 { &out[14 + 40..] } else { &out[14..] };
    let hl = usize::from(ip[0] & 0x0f) * 4;
    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len(), "ipv4 length");
    assert!(checksum::verifies(&ip[..hl]), "ipv4 header checksum");
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = &ip[hl..];
    match ip[9] {
        6 | 17 => assert_eq!(checksum::l4_v4(src, dst, ip[9], l4), 0, "l4 checksum"),
        1 => assert!(checksum::verifies(l4), "icmp checksum"),
        p => panic!("protocol {p}"),
    }
    ip.to_vec()
}

/// (src, dst, sport, dport) of an IPv4 TCP/UDP packet, ICMP: (src, dst, type, id).
fn tuple(ip: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16) {
    let s = SlicedPacket::from_ip(ip).unwrap();
    let Some(NetSlice::Ipv4(h)) = s.net else { panic!("not ipv4") };
    let (src, dst) = (h.header().source_addr(), h.header().destination_addr());
    match s.transport {
        Some(TransportSlice::Tcp(t)) => (src, dst, t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (src, dst, u.source_port(), u.destination_port()),
        Some(TransportSlice::Icmpv4(i)) => {
            let b = i.slice();
            (src, dst, u16::from(b[0]), u16::from_be_bytes([b[4], b[5]]))
        }
        _ => panic!("no transport"),
    }
}

#[test]
fn nat_translates_both_ways_and_refuses_when_exhausted() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    // Two flows to the same endpoint get the two ports of the range, each starting at
    // dpservice's first port for its source (1246 hashes to 101, 1547 to 100).
    let (v, out) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1246, 80, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(tuple(&inner(PF0, &out)), (NAT_IP, PUBLIC, 101, 80));
    assert_eq!(&out[14 + 8..14 + 24], &snap.iface(VM1).unwrap().underlay_ipv6.octets(), "outer src");
    let (v, out) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1547, 80, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(tuple(&inner(PF0, &out)), (NAT_IP, PUBLIC, 100, 80));
    // A later packet of the first flow keeps its port.
    let (_, out) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1246, 80, false)));
    assert_eq!(tuple(&inner(PF0, &out)), (NAT_IP, PUBLIC, 101, 80));
    // Replies come back to the VM's address and port.
    let (v, out) = run(&mut p, &snap, PF0, &from_router(nat_ul(), &tcp4(PUBLIC, NAT_IP, 80, 100, false)));
    assert_eq!(v, Verdict::Tx(VM1));
    assert_eq!(tuple(&inner(VM1, &out)), (PUBLIC, VM1_IP, 80, 1547));
    // No port left towards that endpoint; another endpoint still gets one.
    let (v, _) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 2000, 80, true)));
    assert_eq!(v, Verdict::Drop(DropReason::NatExhausted));
    assert_eq!(p.counters.drops[DropReason::NatExhausted as usize].get(), 1);
    let other = Ipv4Addr::new(45, 86, 6, 6);
    let (v, out) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, other, 2000, 80, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(tuple(&inner(PF0, &out)).2, 101, "source port 2000's first port");
    // Traffic to the NAT IP for a port no flow owns is dropped.
    let stranger = Ipv4Addr::new(45, 86, 6, 7);
    let (v, _) = run(&mut p, &snap, PF0, &from_router(nat_ul(), &tcp4(stranger, NAT_IP, 80, 100, false)));
    assert_eq!(v, Verdict::Drop(DropReason::NatPortUnowned));
    // VM-to-VM traffic is not translated.
    let (v, out) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, VM2_IP, 5, 6, true)));
    assert_eq!(v, Verdict::Tx(VM2));
    assert_eq!(tuple(&inner(VM2, &out)), (VM1_IP, VM2_IP, 5, 6));
}

#[test]
fn nat_icmp_echo_identifier_and_icmp_errors() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    let (v, out) = run(&mut p, &snap, VM1, &from_vm(0, &icmp_echo4(VM1_IP, PUBLIC, true, 0x40)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(tuple(&inner(PF0, &out)), (NAT_IP, PUBLIC, 8, 100));
    let (v, out) = run(&mut p, &snap, PF0, &from_router(nat_ul(), &icmp_echo4(PUBLIC, NAT_IP, false, 100)));
    assert_eq!(v, Verdict::Tx(VM1));
    assert_eq!(tuple(&inner(VM1, &out)), (PUBLIC, VM1_IP, 0, 0x40));

    // A TCP flow, then a port-unreachable error quoting its translated packet.
    let (_, out) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1256, 501, true)));
    let sent = inner(PF0, &out);
    let nat_port = tuple(&sent).2;
    let err = port_unreachable(PUBLIC, NAT_IP, &sent);
    let (v, out) = run(&mut p, &snap, PF0, &from_router(nat_ul(), &err));
    assert_eq!(v, Verdict::Tx(VM1));
    let ip = inner(VM1, &out);
    assert_eq!(tuple(&ip).1, VM1_IP);
    let quoted = &ip[28..];
    assert!(checksum::verifies(&quoted[..20]), "quoted header checksum");
    assert_eq!(tuple(quoted), (VM1_IP, PUBLIC, 1256, 501));
    assert_ne!(nat_port, 1256);
}

#[test]
fn an_icmp_error_keeps_its_flow_alive() {
    // As dpservice refreshes a flow's timestamp for every packet, errors included.
    let snap = stateful_lab();
    let mut p = pipeline(false);
    let s = 1_000_000_000u64;
    let at = |p: &mut Pipeline, now: u64, port: PortId, frame: &[u8]| {
        let mut bufs = [TestBuf::new(frame)];
        let mut v = [Verdict::Drop(DropReason::TxFull)];
        p.process_burst(&snap, port, now, &mut bufs, &mut v);
        (v[0], bufs[0].to_vec())
    };
    let (_, out) = at(&mut p, s, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1256, 501, true)));
    let sent = inner(PF0, &out);
    let err = port_unreachable(PUBLIC, NAT_IP, &sent);
    // The error 25 s later (the flow's timeout is 30 s) moves its expiry to 55 s.
    assert_eq!(at(&mut p, 25 * s, PF0, &from_router(nat_ul(), &err)).0, Verdict::Tx(VM1));
    assert_eq!(p.age(50 * s, PipelineConfig::SMALL_CAPACITY), 0, "expired 30 s after its first packet");
    assert_eq!(p.age(57 * s, PipelineConfig::SMALL_CAPACITY), 1);
}

#[test]
fn errors_without_a_flow_are_translated_for_vips_and_never_leak_a_private_address() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    // A port-unreachable from `vm` about a datagram from `from` it got for port 4000.
    let error = |vm: Ipv4Addr, from: Ipv4Addr| {
        let mut quoted = Vec::new();
        PacketBuilder::ipv4(from.octets(), vm.octets(), 60).udp(53, 4000).write(&mut quoted, b"q").unwrap();
        port_unreachable(vm, from, &quoted)
    };
    // vm2 (VIP): it leaves from the VIP, the quote addressed to the VIP.
    let (v, out) = run(&mut p, &snap, VM2, &from_vm(1, &error(VM2_IP, PUBLIC)));
    assert_eq!(v, Verdict::Tx(PF0));
    let ip = inner(PF0, &out);
    assert_eq!(tuple(&ip).0, VIP);
    let quoted = &ip[28..];
    assert!(checksum::verifies(&quoted[..20]), "quoted header checksum");
    assert_eq!(tuple(quoted), (PUBLIC, VIP, 53, 4000));
    // vm1 (NAT, no port for it): dropped.
    let (v, _) = run(&mut p, &snap, VM1, &from_vm(0, &error(VM1_IP, PUBLIC)));
    assert_eq!(v, Verdict::Drop(DropReason::UntrackedIcmp));
    // Inside the VNI nothing is translated: vm1's error to vm2 passes as it is.
    let (v, out) = run(&mut p, &snap, VM1, &from_vm(0, &error(VM1_IP, VM2_IP)));
    assert_eq!(v, Verdict::Tx(VM2));
    assert_eq!(tuple(&inner(VM2, &out)).0, VM1_IP);
    assert_eq!(p.flows().len(), 0, "errors make no flows");
    // An error from outside to vm2's VIP, about what vm2 sent from it, reaches vm2
    // with the VIP translated back.
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(VIP.octets(), PUBLIC.octets(), 60).udp(4000, 53).write(&mut quoted, b"q").unwrap();
    let err = port_unreachable(PUBLIC, VIP, &quoted);
    let (v, out) = run(&mut p, &snap, PF0, &from_router(vip_ul(), &err));
    assert_eq!(v, Verdict::Tx(VM2));
    let ip = inner(VM2, &out);
    assert_eq!(tuple(&ip).1, VM2_IP);
    assert_eq!(tuple(&ip[28..]), (VM2_IP, PUBLIC, 4000, 53));
    assert_eq!(p.flows().len(), 0, "errors make no flows");
}

#[test]
fn echo_to_the_nat_ip_is_answered_and_neighbour_ports_relayed() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    let (v, out) = run(&mut p, &snap, PF0, &from_router(nat_ul(), &icmp_echo4(PUBLIC, NAT_IP, true, 0x40)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(&out[14 + 24..14 + 40], &a6("fc00::ffff").octets(), "back to the sender");
    assert_eq!(&out[14 + 8..14 + 24], &a6("fc00:1::1").octets(), "from the node");
    assert_eq!(tuple(&inner(PF0, &out)), (NAT_IP, PUBLIC, 0, 0x40));

    let pkt = tcp4(PUBLIC, NAT_IP, 8989, 510, true);
    for _ in 0..2 {
        let (v, out) = run(&mut p, &snap, PF0, &from_router(nat_ul(), &pkt));
        assert_eq!(v, Verdict::Tx(PF0));
        assert_eq!(&out[14 + 24..14 + 40], &neigh_ul().octets());
        assert_eq!(&out[14 + 40..], &pkt[..], "inner packet unchanged");
    }
    assert_eq!(p.flows().len(), 1, "the relay is one flow");
    assert_eq!(p.flow_addrs().refs(neigh_ul()), 1, "one reference for both directions");
    // The relay stage counts both relayed packets and the echo answer, which also goes
    // back out of the PF it came in on.
    assert_eq!(p.counters.stages[Stage::Relay as usize].get(), 3);
    let (v, _) = run(&mut p, &snap, PF0, &from_router(nat_ul(), &tcp4(PUBLIC, NAT_IP, 8989, 530, true)));
    assert_eq!(v, Verdict::Drop(DropReason::NatPortUnowned));

    // Deleting the neighbour entry flushes the relay flow.
    let n = *snap.neighbor_nats.iter().next().unwrap();
    let mut next = flushed(&snap, Flush::Neighbor(n));
    next.neighbor_nats = Arc::default();
    let (v, _) = run(&mut p, &next, PF0, &from_router(nat_ul(), &pkt));
    assert_eq!(v, Verdict::Drop(DropReason::NatPortUnowned));
    assert!(p.flows().is_empty());
    assert!(p.flow_addrs().is_empty(), "the flushed flow gave its relay address back");
}

#[test]
fn deleting_a_nat_flushes_its_flows_and_frees_its_ports() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1, 80, true)));
    run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 2, 80, true)));
    assert_eq!(p.nat_mappings().len(), 2);
    let mut next = flushed(&snap, Flush::Nat(VM1));
    let nat = LocalNat { nat_ip: NAT_IP, range: PortRange::new(200, 201).unwrap(), vni: 100 };
    next.iface_by_port[usize::from(VM1)].as_mut().unwrap().nat = Some(nat);
    let (v, out) = run(&mut p, &next, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1, 80, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(tuple(&inner(PF0, &out)).2, 200, "the old flow is gone, the new range applies");
    assert_eq!(p.nat_mappings().len(), 1);
    assert_eq!(p.flows().len(), 1);
}

#[test]
fn only_the_vms_own_address_is_translated() {
    // vm1 (NAT) and vm2 (VIP) each with an alias prefix: dpservice keys NAT and VIP
    // data by the interface's own address, so what the VMs send from their alias
    // prefixes leaves as they sent it.
    let mut snap = stateful_lab();
    let routes = &mut snap.vnis.get_mut(&100).unwrap().routes4;
    routes.insert(Ipv4Addr::new(10, 100, 1, 64), 29, RouteTarget::Local { port: VM1 });
    routes.insert(Ipv4Addr::new(10, 100, 1, 72), 29, RouteTarget::Local { port: VM2 });
    let mut p = pipeline(false);
    for (vm, n, alias, own, translated) in [
        (VM1, 0, Ipv4Addr::new(10, 100, 1, 66), VM1_IP, NAT_IP),
        (VM2, 1, Ipv4Addr::new(10, 100, 1, 74), VM2_IP, VIP),
    ] {
        let (v, out) = run(&mut p, &snap, vm, &from_vm(n, &tcp4(alias, PUBLIC, 1246, 80, true)));
        assert_eq!(v, Verdict::Tx(PF0));
        assert_eq!(tuple(&inner(PF0, &out)), (alias, PUBLIC, 1246, 80), "from the alias prefix");
        // A later packet of that flow too, and the VM's own address still translates.
        let (_, out) = run(&mut p, &snap, vm, &from_vm(n, &tcp4(alias, PUBLIC, 1246, 80, false)));
        assert_eq!(tuple(&inner(PF0, &out)).0, alias);
        let (_, out) = run(&mut p, &snap, vm, &from_vm(n, &tcp4(own, PUBLIC, 1246, 80, true)));
        assert_eq!(tuple(&inner(PF0, &out)).0, translated, "from the VM's own address");
    }
}

#[test]
fn deleting_an_alias_prefix_ends_the_flows_it_brought() {
    // vm1 with alias prefix 10.100.1.64/29 (its own underlay address fc00:1::1:66).
    let mut snap = stateful_lab();
    let alias_ul = a6("fc00:1::1:66");
    let routes = &mut snap.vnis.get_mut(&100).unwrap().routes4;
    routes.insert(Ipv4Addr::new(10, 100, 1, 64), 29, RouteTarget::Local { port: VM1 });
    snap.underlay_targets.insert(alias_ul, UnderlayTarget::AliasPrefix(VM1));
    let alias = Ipv4Addr::new(10, 100, 1, 66);
    let mut p = pipeline(false);
    // A connection to the prefix from outside, one from it to outside, and a NAT flow
    // of vm1's own address.
    let (v, _) = run(&mut p, &snap, PF0, &from_router(alias_ul, &tcp4(PUBLIC, alias, 4000, 22, true)));
    assert_eq!(v, Verdict::Tx(VM1));
    let (v, _) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(alias, PUBLIC, 5000, 80, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    let (v, _) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1246, 80, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(p.flows().len(), 3);
    // The prefix is deleted: the two flows of its addresses end, the NAT flow stays.
    let next = flushed(
        &snap,
        Flush::Prefix { port: VM1, vni: 100, addr: Ipv4Addr::new(10, 100, 1, 64).into(), len: 29 },
    );
    let (_, out) = run(&mut p, &next, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1246, 80, false)));
    assert_eq!(tuple(&inner(PF0, &out)), (NAT_IP, PUBLIC, 101, 80), "the NAT flow keeps its port");
    assert_eq!(p.flows().len(), 1);
}

#[test]
fn deleting_an_lb_prefix_ends_the_flows_it_brought() {
    // A load balancer whose one target is vm1's load-balancer prefix on this node.
    let mut snap = stateful_lab();
    let lb = crate::tables::lb::LoadBalancer {
        slot: 0,
        uid: 1,
        vni: 100,
        vip: LB_VIP.into(),
        ports: vec![(6, 80)],
        underlay: lb_ul(),
        targets: vec![Some(lb_prefix_ul())],
        maglev: None,
    };
    snap.lbs.insert((100, LB_VIP.into()), Arc::new(lb));
    snap.underlay_targets.insert(lb_ul(), UnderlayTarget::Lb { vni: 100 });
    snap.underlay_targets.insert(lb_prefix_ul(), UnderlayTarget::LbPrefix(VM1));
    let mut p = pipeline(false);
    let (v, _) = run(&mut p, &snap, PF0, &from_router(lb_ul(), &tcp4(PUBLIC, LB_VIP, 4000, 80, true)));
    assert_eq!(v, Verdict::Tx(VM1));
    // Flows of vm1 that have nothing to do with the prefix.
    let (v, _) = run(&mut p, &snap, PF0, &from_router(lb_prefix_ul(), &tcp4(PUBLIC, VM1_IP, 4001, 22, true)));
    assert_eq!(v, Verdict::Tx(VM1));
    let (v, _) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1246, 80, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(p.flows().len(), 3);
    // The prefix (covering the VIP) is deleted: its load-balanced flow ends, and the
    // connection's next packet makes a new flow towards the target's underlay address,
    // which no longer leads to vm1 here: relayed out of the PF.
    let mut next = flushed(&snap, Flush::Prefix { port: VM1, vni: 100, addr: LB_VIP.into(), len: 32 });
    next.underlay_targets.remove(&lb_prefix_ul());
    let (v, _) = run(&mut p, &next, PF0, &from_router(lb_ul(), &tcp4(PUBLIC, LB_VIP, 4000, 80, false)));
    assert_eq!(v, Verdict::Tx(PF0));
    let (v, _) = run(&mut p, &next, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1246, 80, false)));
    assert_eq!(v, Verdict::Tx(PF0), "the NAT flow stays");
    assert_eq!(p.flows().len(), 3, "two kept, one new");
}

#[test]
fn deleting_an_interface_ends_flows_to_its_ipv6_address_too() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    let (vm1_6, vm2_6) = (a6("2000:100:1::1"), a6("2000:100:1::2"));
    let mut ip = Vec::new();
    PacketBuilder::ipv6(vm1_6.octets(), vm2_6.octets(), 64).udp(4000, 53).write(&mut ip, b"v6").unwrap();
    let mut f = from_vm(0, &ip);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(run(&mut p, &snap, VM1, &f).0, Verdict::Tx(VM2));
    assert_eq!(run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, VM2_IP, 5, 6, true))).0, Verdict::Tx(VM2));
    assert_eq!(p.flows().len(), 2);
    // vm2 is deleted: vm1's flows to both its addresses end.
    let next = flushed(&snap, Flush::Interface { port: VM2, vni: 100, ipv4: VM2_IP, ipv6: Some(vm2_6) });
    // Any burst makes the worker apply the new snapshot (this one is dropped).
    run(&mut p, &next, PF0, &from_router(nat_ul(), &tcp4(PUBLIC, NAT_IP, 80, 999, false)));
    assert_eq!(p.flows().len(), 0);
}

#[test]
fn vip_translates_egress_ingress_and_local_dnat() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    // vm2 to the internet leaves from its VIP.
    let (v, out) = run(&mut p, &snap, VM2, &from_vm(1, &tcp4(VM2_IP, PUBLIC, 1240, 180, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(tuple(&inner(PF0, &out)), (VIP, PUBLIC, 1240, 180));
    let (v, out) = run(&mut p, &snap, PF0, &from_router(vip_ul(), &tcp4(PUBLIC, VIP, 180, 1240, false)));
    assert_eq!(v, Verdict::Tx(VM2));
    assert_eq!(tuple(&inner(VM2, &out)), (PUBLIC, VM2_IP, 180, 1240));
    // Inbound connection to the VIP; the VM's reply leaves from the VIP.
    let (v, out) = run(&mut p, &snap, PF0, &from_router(vip_ul(), &tcp4(PUBLIC, VIP, 4000, 22, true)));
    assert_eq!(v, Verdict::Tx(VM2));
    assert_eq!(tuple(&inner(VM2, &out)), (PUBLIC, VM2_IP, 4000, 22));
    let (v, out) = run(&mut p, &snap, VM2, &from_vm(1, &tcp4(VM2_IP, PUBLIC, 22, 4000, false)));
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(tuple(&inner(PF0, &out)), (VIP, PUBLIC, 22, 4000));
    // vm1 to vm2's VIP: delivered to vm2, and its reply comes from the VIP.
    let (v, out) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, VIP, 1200, 1235, true)));
    assert_eq!(v, Verdict::Tx(VM2));
    assert_eq!(tuple(&inner(VM2, &out)), (VM1_IP, VM2_IP, 1200, 1235));
    let (v, out) = run(&mut p, &snap, VM2, &from_vm(1, &tcp4(VM2_IP, VM1_IP, 1235, 1200, false)));
    assert_eq!(v, Verdict::Tx(VM1));
    assert_eq!(tuple(&inner(VM1, &out)), (VIP, VM1_IP, 1235, 1200));
    // Tunnel traffic to the VIP underlay for another address is not delivered.
    let (v, _) = run(&mut p, &snap, PF0, &from_router(vip_ul(), &tcp4(PUBLIC, VM2_IP, 1, 2, true)));
    assert_eq!(v, Verdict::Drop(DropReason::NoRoute));
}

#[test]
fn a_rule_change_rejudges_denied_flows_and_keeps_accepted_ones() {
    let mut snap = stateful_lab();
    snap.firewall_by_port[usize::from(VM2)] = Some(Arc::new(allow_tcp_in(1234)));
    let mut p = pipeline(true);
    let denied = from_vm(0, &tcp4(VM1_IP, VM2_IP, 999, 80, true));
    let accepted = from_vm(0, &tcp4(VM1_IP, VM2_IP, 999, 1234, true));
    assert_eq!(run(&mut p, &snap, VM1, &denied).0, Verdict::Drop(DropReason::FirewallDenied));
    assert_eq!(run(&mut p, &snap, VM1, &accepted).0, Verdict::Tx(VM2));
    // The rule now allows port 80 instead of 1234; the control plane flushes denied flows.
    let mut next = flushed(&snap, Flush::Denied);
    next.firewall_by_port[usize::from(VM2)] = Some(Arc::new(allow_tcp_in(80)));
    assert_eq!(run(&mut p, &next, VM1, &denied).0, Verdict::Tx(VM2), "re-judged by the new rule");
    assert_eq!(run(&mut p, &next, VM1, &accepted).0, Verdict::Tx(VM2), "established flow kept");
    assert_eq!(p.flows().len(), 2);
}

#[test]
fn a_rule_change_without_enforcement_ends_no_flow() {
    // vm2 with a VIP and a NAT: a connection to the VIP is denied by the default
    // ingress policy but forwarded (not enforced), and its replies leave from the VIP.
    let mut snap = stateful_lab();
    let nat =
        LocalNat { nat_ip: Ipv4Addr::new(172, 21, 2, 2), range: PortRange::new(100, 102).unwrap(), vni: 100 };
    snap.iface_by_port[usize::from(VM2)].as_mut().unwrap().nat = Some(nat);
    // No rules, as the control plane gives every interface at first: ingress denied.
    snap.firewall_by_port[usize::from(VM2)] = Some(Arc::new(RuleSet::new([])));
    let mut p = pipeline(false);
    let (v, _) = run(&mut p, &snap, PF0, &from_router(vip_ul(), &tcp4(PUBLIC, VIP, 4000, 22, true)));
    assert_eq!(v, Verdict::Tx(VM2));
    let reply = from_vm(1, &tcp4(VM2_IP, PUBLIC, 22, 4000, false));
    let (_, out) = run(&mut p, &snap, VM2, &reply);
    assert_eq!(tuple(&inner(PF0, &out)), (VIP, PUBLIC, 22, 4000));
    // A rule changes somewhere: the control plane asks to end denied flows, which
    // without enforcement ends none, so the reply still leaves from the VIP.
    let mut next = flushed(&snap, Flush::Denied);
    next.firewall_by_port[usize::from(VM1)] = Some(Arc::new(allow_tcp_in(80)));
    let (_, out) = run(&mut p, &next, VM2, &reply);
    assert_eq!(tuple(&inner(PF0, &out)), (VIP, PUBLIC, 22, 4000));
    assert_eq!(p.flows().len(), 1);
}

fn allow_tcp_in(port: u16) -> RuleSet {
    RuleSet::new([Rule {
        direction: Direction::Ingress,
        action: Action::Accept,
        priority: 1000,
        src: Cidr::ANY,
        dst: Cidr::ANY,
        filter: Filter::Tcp { src: FwPorts::ANY, dst: FwPorts { lo: port, hi: port } },
    }])
}

#[test]
fn firewall_verdicts_are_stateful_and_enforced_only_when_asked() {
    let mut snap = stateful_lab();
    snap.firewall_by_port[usize::from(VM2)] = Some(Arc::new(allow_tcp_in(1234)));
    snap.firewall_by_port[usize::from(VM1)] = Some(Arc::new(RuleSet::default()));
    let mut p = pipeline(true);
    // Allowed: vm1 -> vm2:1234, and vm2's replies.
    let (v, _) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, VM2_IP, 999, 1234, true)));
    assert_eq!(v, Verdict::Tx(VM2));
    let (v, _) = run(&mut p, &snap, VM2, &from_vm(1, &tcp4(VM2_IP, VM1_IP, 1234, 999, false)));
    assert_eq!(v, Verdict::Tx(VM1));
    // Denied: another port, both directions.
    let (v, _) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, VM2_IP, 999, 80, true)));
    assert_eq!(v, Verdict::Drop(DropReason::FirewallDenied));
    let (v, _) = run(&mut p, &snap, VM2, &from_vm(1, &tcp4(VM2_IP, VM1_IP, 80, 999, false)));
    assert_eq!(v, Verdict::Drop(DropReason::FirewallDenied));
    // vm1 has no ingress rule: a flow started by vm2 is denied, from the tunnel too.
    let (v, _) = run(&mut p, &snap, VM2, &from_vm(1, &tcp4(VM2_IP, VM1_IP, 7, 8, true)));
    assert_eq!(v, Verdict::Drop(DropReason::FirewallDenied));
    let vm1_ul = snap.iface(VM1).unwrap().underlay_ipv6;
    let (v, _) = run(&mut p, &snap, PF0, &from_router(vm1_ul, &tcp4(PUBLIC, VM1_IP, 7, 8, true)));
    assert_eq!(v, Verdict::Drop(DropReason::FirewallDenied));
    // Egress with no egress rules is allowed, and so are the replies from the tunnel.
    let (v, _) =
        run(&mut p, &snap, VM2, &from_vm(1, &tcp4(VM2_IP, Ipv4Addr::new(10, 100, 2, 5), 9, 10, true)));
    assert_eq!(v, Verdict::Tx(PF0));
    let vm2_ul = snap.iface(VM2).unwrap().underlay_ipv6;
    let from_remote = tcp4(Ipv4Addr::new(10, 100, 2, 5), VM2_IP, 10, 9, false);
    assert_eq!(run(&mut p, &snap, PF0, &from_router(vm2_ul, &from_remote)).0, Verdict::Tx(VM2));
    // Without enforcement (dpservice), the denied flows pass.
    let mut p = pipeline(false);
    let (v, _) = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, VM2_IP, 999, 80, true)));
    assert_eq!(v, Verdict::Tx(VM2));
}

#[test]
fn untrackable_icmp_is_dropped_and_flows_age_out() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    let mut ip = icmp_echo4(VM1_IP, VM2_IP, true, 1);
    ip[20] = 11; // time exceeded
    let ck = checksum::checksum(&{
        let mut l4 = ip[20..].to_vec();
        l4[2] = 0;
        l4[3] = 0;
        l4
    });
    ip[22..24].copy_from_slice(&ck.to_be_bytes());
    assert_eq!(run(&mut p, &snap, VM1, &from_vm(0, &ip)).0, Verdict::Drop(DropReason::UntrackedIcmp));
    run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 1, 80, true)));
    assert_eq!((p.flows().len(), p.nat_mappings().len()), (1, 1));
    let later = 1_000_000_000
        + u64::from(crate::tables::conntrack::Config::DEFAULT_FLOW_TIMEOUT_S + 2) * 1_000_000_000;
    assert_eq!(p.age(later, PipelineConfig::SMALL_CAPACITY), 1);
    assert_eq!((p.flows().len(), p.nat_mappings().len()), (0, 0));
}

#[test]
fn a_tracked_flow_costs_at_most_160_bytes_of_table() {
    // The flow table's entry and index memory per flow, with the node's real action type
    // (issue target: 160 bytes per flow; NAT flows add their port mapping on top).
    for capacity in [1 << 20, 10 << 20] {
        let f = crate::tables::conntrack::Conntrack::<FlowAction>::footprint(capacity);
        let per_flow = (f.entry_bytes + f.index_bytes) / capacity;
        assert!(per_flow <= 160, "{per_flow} bytes per flow at capacity {capacity}");
    }
}

/// One VM packet of [`fast_path_changes_nothing`], as the strategy draws it.
#[derive(Clone, Copy, Debug)]
struct Drawn {
    /// vm1 or vm2.
    vm2: bool,
    /// Index into the sender's destinations.
    dst: u8,
    /// 0 TCP, 1 UDP, 2 ICMP echo request, 3 DHCP.
    kind: u8,
    sport: u16,
    tcp_flags: u8,
    ttl: u8,
    /// IPv4 options (a 4-byte NOP pad).
    options: bool,
    /// 0 whole, 1 first fragment (MF), 2 a later fragment.
    frag: u8,
    /// The source: the VM's own, in its alias prefix, or another address.
    src: u8,
    /// Source MAC: the VM's, or another one.
    other_mac: bool,
    bad_checksum: bool,
}

fn drawn() -> impl proptest::strategy::Strategy<Value = Drawn> {
    use proptest::prelude::*;
    (
        (any::<bool>(), 0u8..5, prop_oneof![6 => 0u8..2, 1 => 2u8..4], 1u16..6),
        (
            prop_oneof![Just(0x02u8), Just(0x12), Just(0x10), Just(0x11), Just(0x04)],
            prop_oneof![
                8 => Just(64u8),
                1 => Just(1u8),
                1 => Just(2u8)
            ],
        ),
        (prop_oneof![8 => Just(false), 1 => Just(true)], prop_oneof![8 => Just(0u8), 1 => 1u8..3]),
        (prop_oneof![8 => Just(0u8), 1 => 1u8..3], prop_oneof![9 => Just(false), 1 => Just(true)]),
        prop_oneof![19 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |((vm2, dst, kind, sport), (tcp_flags, ttl), (options, frag), (src, other_mac), bad)| Drawn {
                vm2,
                dst,
                kind,
                sport,
                tcp_flags,
                ttl,
                options,
                frag,
                src,
                other_mac,
                bad_checksum: bad,
            },
        )
}

/// The frame of a drawn packet.
fn drawn_frame(d: &Drawn) -> Vec<u8> {
    let (vm, own, alias) = if d.vm2 {
        (1, VM2_IP, Ipv4Addr::new(10, 100, 1, 70))
    } else {
        (0, VM1_IP, Ipv4Addr::new(10, 100, 1, 66))
    };
    let peer = if d.vm2 { VM1_IP } else { VM2_IP };
    let dsts = [peer, Ipv4Addr::new(10, 100, 2, 5), PUBLIC, VIP, NAT_IP];
    let dst = dsts[usize::from(d.dst) % dsts.len()];
    let src = match d.src {
        0 => own,
        1 => alias,
        // The load-balanced IP: a target's answer (the load-balancer zone).
        _ => LB_VIP,
    };
    let (proto, mut l4) = match d.kind {
        0 => {
            let mut t = vec![0u8; 20];
            t[0..2].copy_from_slice(&(1000 + d.sport).to_be_bytes());
            t[2..4].copy_from_slice(&80u16.to_be_bytes());
            t[12] = 5 << 4;
            t[13] = d.tcp_flags;
            (6u8, t)
        }
        1 | 3 => {
            let mut u = vec![0u8; 8];
            u[0..2].copy_from_slice(&(1000 + d.sport).to_be_bytes());
            let dport = if d.kind == 3 { 67u16 } else { 53 };
            u[2..4].copy_from_slice(&dport.to_be_bytes());
            u[4..6].copy_from_slice(&16u16.to_be_bytes());
            (17u8, u)
        }
        _ => {
            let mut e = vec![8u8, 0, 0, 0, 0, 0, 0, 1];
            e[4..6].copy_from_slice(&d.sport.to_be_bytes());
            (1u8, e)
        }
    };
    l4.extend_from_slice(b"payload!");
    let len = l4.len();
    match proto {
        6 | 17 => {
            let at = if proto == 6 { 16 } else { 6 };
            let ck = checksum::l4_v4(src, dst, proto, &l4);
            l4[at..at + 2].copy_from_slice(&ck.to_be_bytes());
        }
        _ => {
            let ck = checksum::checksum(&l4);
            l4[2..4].copy_from_slice(&ck.to_be_bytes());
        }
    }
    let hl = if d.options { 24 } else { 20 };
    let mut ip = vec![0u8; hl];
    ip[0] = 0x40 | u8::try_from(hl / 4).unwrap();
    ip[2..4].copy_from_slice(&u16::try_from(hl + len).unwrap().to_be_bytes());
    ip[4..6].copy_from_slice(&7u16.to_be_bytes());
    let frag: u16 = match d.frag {
        0 => 0,
        1 => 0x2000,
        _ => 3,
    };
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = d.ttl;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    if d.options {
        ip[20..24].copy_from_slice(&[1, 1, 1, 0]);
    }
    let ck = checksum::checksum(&ip) ^ u16::from(d.bad_checksum);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    ip.extend_from_slice(&l4);
    let mut f = from_vm(vm, &ip);
    if d.other_mac {
        f[11] ^= 0x80;
    }
    f
}

/// The load balancer of [`fast_path_changes_nothing`]: its IP, its underlay address
/// and vm1's load-balancer prefix's.
const LB_VIP: Ipv4Addr = Ipv4Addr::new(172, 22, 2, 1);
fn lb_ul() -> Ipv6Addr {
    a6("fc00:1::1:99")
}
fn lb_prefix_ul() -> Ipv6Addr {
    a6("fc00:1::1:77")
}

/// A tunnel frame of [`fast_path_changes_nothing`]: the reply to what a drawn VM packet
/// may have started, or something else.
#[derive(Clone, Copy, Debug)]
struct DrawnTunnel {
    /// 0 the NAT's underlay, 1 vm1's, 2 vm2's, 3 the VIP's, 4 an unknown one, 5 the load
    /// balancer's, 6 vm1's load-balancer prefix's.
    target: u8,
    /// The VM packet it answers (its destination port, source port, kind, flags...).
    vm: Drawn,
    /// Into the neighbour's NAT port range instead.
    neighbour_port: bool,
    /// IPv6 inside instead of IPv4.
    inner_v6: bool,
    /// Ethernet padding after the outer packet.
    padded: bool,
}

fn drawn_tunnel() -> impl proptest::strategy::Strategy<Value = DrawnTunnel> {
    use proptest::prelude::*;
    (
        0u8..7,
        drawn(),
        prop_oneof![9 => Just(false), 1 => Just(true)],
        prop_oneof![19 => Just(false), 1 => Just(true)],
        prop_oneof![3 => Just(false), 1 => Just(true)],
    )
        .prop_map(|(target, vm, neighbour_port, inner_v6, padded)| DrawnTunnel {
            target,
            vm,
            neighbour_port,
            inner_v6,
            padded,
        })
}

/// The frame of a drawn tunnel packet, from the router (or another MAC).
fn drawn_tunnel_frame(t: &DrawnTunnel) -> Vec<u8> {
    let remote = Ipv4Addr::new(10, 100, 2, 5);
    let (ul, src, dst) = match t.target {
        0 => (nat_ul(), PUBLIC, NAT_IP),
        1 => (a6("fc00:1::1:1"), remote, VM1_IP),
        2 => (a6("fc00:1::1:2"), remote, VM2_IP),
        3 => (vip_ul(), PUBLIC, VIP),
        5 => (lb_ul(), PUBLIC, LB_VIP),
        6 => (lb_prefix_ul(), PUBLIC, LB_VIP),
        _ => (a6("fc00:1::dead"), PUBLIC, VM1_IP),
    };
    // The reply of the drawn VM packet, swapped around.
    let mut d = t.vm;
    d.vm2 = false;
    d.src = 0;
    d.other_mac = false;
    let mut vm_frame = drawn_frame(&d);
    let ip = &mut vm_frame[14..];
    let hl = usize::from(ip[0] & 0x0f) * 4;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    if matches!(ip[9], 6 | 17) && ip.len() >= hl + 4 {
        let (sp, dp) = ([ip[hl], ip[hl + 1]], [ip[hl + 2], ip[hl + 3]]);
        let lb_client = matches!(t.target, 5 | 6);
        // A client of the load balancer keeps the ports (to 80 or 53, from its own).
        ip[hl..hl + 2].copy_from_slice(if lb_client { &sp } else { &dp });
        let dport = match (t.target, t.neighbour_port) {
            (0, true) => 500 + u16::from_be_bytes(sp) % 3,
            (0, false) => 100 + u16::from_be_bytes(sp) % 3,
            (5 | 6, _) => u16::from_be_bytes(dp),
            _ => u16::from_be_bytes(sp),
        };
        ip[hl + 2..hl + 4].copy_from_slice(&dport.to_be_bytes());
    } else if ip[9] == 1 && ip.len() >= hl + 8 {
        ip[hl] = 0; // echo reply
    }
    ip[10..12].copy_from_slice(&[0, 0]);
    let ck = checksum::checksum(&ip[..hl]) ^ u16::from(t.vm.bad_checksum);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    let inner = if t.inner_v6 {
        let mut v = Vec::new();
        PacketBuilder::ipv6(a6("2000:100:2::5").octets(), a6("2000:100:1::1").octets(), 64)
            .udp(53, 1000)
            .write(&mut v, b"payload!")
            .unwrap();
        v
    } else {
        ip.to_vec()
    };
    let mut f = from_router(ul, &inner);
    if t.vm.other_mac {
        f[11] ^= 0x40;
    }
    if t.padded {
        f.extend_from_slice(&[0xa5; 6]);
    }
    f
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The fast path is invisible: random bursts of VM traffic (known and new flows,
    /// TCP state changes, TTL expiry, IP options, fragments, DHCP, ICMP, sources in
    /// both zones, other MACs, bad checksums; NAT, VIP, neighbour, local and remote
    /// destinations; an enforced firewall; the clock jumping past flow timeouts) and of
    /// tunnel traffic (replies to the NAT, the VIP and the VMs, neighbour-NAT ports,
    /// clients of a load balancer with a remote and a local target, unknown underlay
    /// addresses, IPv6 inside, Ethernet padding, the router's MAC changing), with the
    /// configuration changing under established flows (a route moving, pf0's router MAC
    /// configured or not), give the same verdicts, frames, drop counts, flow table and
    /// learned MACs with and without it (and so does its express lane, which the second
    /// packet of a flow in a later burst takes).
    #[test]
    fn fast_path_changes_nothing(
        bursts in proptest::collection::vec(
            (
                proptest::collection::vec(drawn(), 1..80),
                proptest::collection::vec(drawn_tunnel(), 0..80),
                0u8..4,
                proptest::prelude::any::<bool>(),
                0u8..4,
            ),
            1..12,
        ),
    ) {
        let mut snap = stateful_lab();
        // pf0 learns the router's MAC from tunnel traffic.
        snap.ports[usize::from(PF0)].as_mut().unwrap().neigh_mac = None;
        // A load balancer (TCP 80, UDP 53) with a remote target and vm1, through its
        // load-balancer prefix.
        let lb = crate::tables::lb::LoadBalancer {
            slot: 0,
            uid: 1,
            vni: 100,
            vip: LB_VIP.into(),
            ports: vec![(6, 80), (17, 53)],
            underlay: lb_ul(),
            targets: vec![Some(a6("fc00:2::1")), Some(lb_prefix_ul())],
            maglev: None,
        };
        snap.lbs.insert((100, LB_VIP.into()), Arc::new(lb));
        snap.underlay_targets.insert(lb_ul(), UnderlayTarget::Lb { vni: 100 });
        snap.underlay_targets.insert(lb_prefix_ul(), UnderlayTarget::LbPrefix(VM1));
        let alias = RouteTarget::Local { port: VM1 };
        snap.vnis.get_mut(&100).unwrap().routes4.insert(Ipv4Addr::new(10, 100, 1, 64), 29, alias);
        snap.firewall_by_port[usize::from(VM2)] = Some(Arc::new(allow_tcp_in(80)));
        let mut pipes = [true, false].map(|fast| {
            let mut cfg = PipelineConfig::small();
            cfg.enforce_firewall = true;
            cfg.fast_path = fast;
            Pipeline::with_config(Arc::default(), &cfg).unwrap()
        });
        let mut now = 1_000_000_000u64;
        let remote = Ipv4Addr::new(10, 100, 2, 5);
        for (n, (pkts, tunnel, step, age, change)) in bursts.iter().enumerate() {
            // The clock moves by nothing, a little, or past the flow timeout.
            now += [0, 1_000_000, 20_000_000_000, 31_000_000_000][usize::from(*step)];
            // The configuration changes under established flows: the remote VM moves to
            // another node, or pf0's router MAC is configured or learned again.
            match change {
                2 => {
                    let underlay = a6(if n % 2 == 0 { "fc00:2::77" } else { "fc00:2::78" });
                    let moved = RouteTarget::Remote { underlay, vni: 100 };
                    snap.vnis.get_mut(&100).unwrap().routes4.insert(remote, 32, moved);
                    snap.generation += 1;
                }
                3 => {
                    let pf0 = snap.ports[usize::from(PF0)].as_mut().unwrap();
                    pf0.neigh_mac = if pf0.neigh_mac.is_some() { None } else { Some([2, 0, 0, 0, 0, 0x77]) };
                    snap.generation += 1;
                }
                _ => {}
            }
            for port in [VM1, VM2, PF0] {
                let frames: Vec<Vec<u8>> = if port == PF0 {
                    tunnel.iter().map(drawn_tunnel_frame).collect()
                } else {
                    pkts.iter().filter(|d| d.vm2 == (port == VM2)).map(drawn_frame).collect()
                };
                let mut out = Vec::new();
                for p in &mut pipes {
                    let mut bufs: Vec<TestBuf> = frames.iter().map(|f| TestBuf::new(f)).collect();
                    let mut v = vec![Verdict::Drop(DropReason::TxFull); bufs.len()];
                    let single = p.process_burst(&snap, port, now, &mut bufs, &mut v);
                    proptest::prop_assert_eq!(single, one_port(&v));
                    if *age {
                        p.age(now, 64);
                    }
                    out.push((v, bufs.iter().map(TestBuf::to_vec).collect::<Vec<_>>()));
                }
                proptest::prop_assert_eq!(&out[0], &out[1]);
            }
        }
        let [fast, graph] = &pipes;
        let drops = |p: &Pipeline| p.counters.drops.iter().map(|c| c.get()).collect::<Vec<_>>();
        proptest::prop_assert_eq!(drops(fast), drops(graph));
        let flows = |p: &Pipeline| p.flows().iter().collect::<Vec<_>>();
        proptest::prop_assert_eq!(flows(fast), flows(graph));
        proptest::prop_assert_eq!(fast.nat_mappings().len(), graph.nat_mappings().len());
        for port in [PF0, VM1, VM2] {
            proptest::prop_assert_eq!(fast.neighbours().get(port), graph.neighbours().get(port));
        }
        proptest::prop_assert_eq!(graph.counters.stages[Stage::FastPath as usize].get(), 0);
    }
}

#[test]
fn known_flows_take_the_fast_path() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    let f = from_vm(0, &tcp4(VM1_IP, VM2_IP, 999, 80, false));
    for _ in 0..3 {
        assert_eq!(run(&mut p, &snap, VM1, &f).0, Verdict::Tx(VM2));
    }
    let stage = |s: Stage| p.counters.stages[s as usize].get();
    assert_eq!((stage(Stage::Classify), stage(Stage::Conntrack)), (1, 1), "the first packet takes the graph");
    assert_eq!(stage(Stage::FastPath), 2);
    assert_eq!((stage(Stage::Route4), stage(Stage::VfTx)), (3, 3), "the rest of the graph counts them all");
    // The NAT's replies through the tunnel: the first one is the flow's (created by
    // vm1's packet), so all take the fast path.
    let out = run(&mut p, &snap, VM1, &from_vm(0, &tcp4(VM1_IP, PUBLIC, 999, 80, true))).1;
    let (_, _, nat_port, _) = tuple(&inner(PF0, &out));
    let reply = from_router(nat_ul(), &tcp4(PUBLIC, NAT_IP, 80, nat_port, false));
    for _ in 0..2 {
        let (v, out) = run(&mut p, &snap, PF0, &reply);
        assert_eq!(v, Verdict::Tx(VM1));
        assert_eq!(tuple(&inner(VM1, &out)), (PUBLIC, VM1_IP, 80, 999));
    }
    let stage = |s: Stage| p.counters.stages[s as usize].get();
    assert_eq!((stage(Stage::FastPath), stage(Stage::Decap)), (4, 2));
}

#[test]
fn known_flows_take_the_express_lane_until_the_configuration_changes() {
    let mut snap = stateful_lab();
    let mut p = pipeline(false);
    let express = |p: &Pipeline| p.counters.stages[Stage::Express as usize].get();
    // vm1 to vm2, to a remote VM (encapsulated), through the NAT (rewritten), and the
    // NAT's reply through the tunnel.
    let remote = Ipv4Addr::new(10, 100, 2, 5);
    let out = from_vm(0, &tcp4(VM1_IP, PUBLIC, 999, 80, true));
    let (_, _, nat_port, _) = tuple(&inner(PF0, &run(&mut p, &snap, VM1, &out).1));
    let cases = [
        (VM1, from_vm(0, &tcp4(VM1_IP, VM2_IP, 999, 80, false)), VM2),
        (VM1, from_vm(0, &tcp4(VM1_IP, remote, 999, 53, false)), PF0),
        (VM1, out, PF0),
        (PF0, from_router(nat_ul(), &tcp4(PUBLIC, NAT_IP, 80, nat_port, false)), VM1),
    ];
    // The first round creates the flows (but the NAT's, created above), the second
    // takes the fast path and is recorded (the NAT's flow is recorded in the first),
    // the third takes the lane and leaves exactly as the second.
    let mut rounds = Vec::new();
    let mut before = 0;
    for _ in 0..3 {
        before = express(&p);
        let got: Vec<_> = cases.iter().map(|(port, frame, _)| run(&mut p, &snap, *port, frame)).collect();
        for ((v, _), (_, _, want)) in got.iter().zip(&cases) {
            assert_eq!(*v, Verdict::Tx(*want));
        }
        rounds.push(got);
    }
    assert_eq!(rounds[2], rounds[1]);
    assert_eq!(express(&p) - before, 4, "the third round takes the lane");
    let before = express(&p);
    // The remote VM moves: its packets follow the new route at once.
    let moved = RouteTarget::Remote { underlay: a6("fc00:2::77"), vni: 100 };
    snap.vnis.get_mut(&100).unwrap().routes4.insert(remote, 32, moved);
    snap.generation += 1;
    let (v, bytes) = run(&mut p, &snap, VM1, &cases[1].1);
    assert_eq!(v, Verdict::Tx(PF0));
    assert_eq!(&bytes[14 + 24..14 + 40], &a6("fc00:2::77").octets());
    assert_eq!(express(&p), before, "a new snapshot makes every record stale");
    run(&mut p, &snap, VM1, &cases[1].1);
    assert_eq!(express(&p), before + 1);
}

#[test]
fn a_burst_the_lane_holds_whole_leaves_it_when_its_flows_end() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    let stage = |p: &Pipeline, s: Stage| p.counters.stages[s as usize].get();
    let flow = |sport| from_vm(0, &tcp4(VM1_IP, VM2_IP, sport, 80, false));
    let burst = |p: &mut Pipeline, frames: &[Vec<u8>], now: u64| {
        let mut bufs: Vec<TestBuf> = frames.iter().map(|f| TestBuf::new(f)).collect();
        let mut v = vec![Verdict::Drop(DropReason::TxFull); bufs.len()];
        p.process_burst(&snap, VM1, now, &mut bufs, &mut v);
        assert!(v.iter().all(|v| *v == Verdict::Tx(VM2)), "{v:?}");
    };
    let (a, b) = ([flow(999), flow(1000)], [flow(2000)]);
    let t0 = 1_000_000_000;
    // Created, then recorded, then the lane's whole.
    for _ in 0..3 {
        burst(&mut p, &a, t0);
    }
    let (express, tracked) = (stage(&p, Stage::Express), stage(&p, Stage::Conntrack));
    assert_eq!((express, tracked), (2, 2));
    // Past the flow timeout (a flow without a handshake: `--flow-timeout`, 30 s) the
    // records name expired flows: the graph makes them anew.
    let t1 = t0 + 31_000_000_000;
    burst(&mut p, &a, t1);
    assert_eq!((stage(&p, Stage::Express), stage(&p, Stage::Conntrack)), (express, tracked + 2));
    for _ in 0..2 {
        burst(&mut p, &a, t1);
    }
    assert_eq!(stage(&p, Stage::Express), express + 2, "recorded again");
    // Expired and reclaimed, and the first entry taken by another flow: the records
    // name a live flow, but not theirs.
    let t2 = t1 + 31_000_000_000;
    p.age(t2, 1 << 20);
    assert_eq!(p.flows().len(), 0);
    burst(&mut p, &b, t2);
    let (express, tracked) = (stage(&p, Stage::Express), stage(&p, Stage::Conntrack));
    burst(&mut p, &a, t2);
    assert_eq!((stage(&p, Stage::Express), stage(&p, Stage::Conntrack)), (express, tracked + 2));
    assert_eq!(p.flows().len(), 3);
}

#[test]
fn a_held_run_of_two_lanes_is_counted_per_lane_and_names_no_single_port() {
    let snap = stateful_lab();
    let mut p = pipeline(false);
    let stage = |p: &Pipeline, s: Stage| p.counters.stages[s as usize].get();
    let to_vm2 = from_vm(0, &tcp4(VM1_IP, VM2_IP, 1000, 80, false));
    let to_peer = from_vm(0, &tcp4(VM1_IP, Ipv4Addr::new(10, 100, 2, 5), 1001, 80, false));
    let burst = |p: &mut Pipeline, frames: &[&Vec<u8>]| {
        let mut bufs: Vec<TestBuf> = frames.iter().map(|f| TestBuf::new(f)).collect();
        let mut v = vec![Verdict::Drop(DropReason::TxFull); bufs.len()];
        let single = p.process_burst(&snap, VM1, 1_000_000_000, &mut bufs, &mut v);
        (single, v)
    };
    // Created, then recorded.
    for _ in 0..2 {
        burst(&mut p, &[&to_vm2, &to_peer, &to_vm2]);
    }
    let at = |p: &Pipeline| [Stage::Express, Stage::VfTx, Stage::Encap, Stage::PfTx].map(|s| stage(p, s));
    let before = at(&p);
    // Held whole: one lane's packets, then both lanes'.
    assert_eq!(burst(&mut p, &[&to_vm2, &to_vm2]), (Some(VM2), vec![Verdict::Tx(VM2); 2]));
    let (single, v) = burst(&mut p, &[&to_vm2, &to_peer, &to_vm2]);
    assert_eq!((single, v), (None, vec![Verdict::Tx(VM2), Verdict::Tx(PF0), Verdict::Tx(VM2)]));
    let after = at(&p);
    let counted: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(counted, [5, 4, 1, 1], "express, vf_tx, encap, pf_tx");
}

#[test]
fn a_tunnel_burst_the_lane_holds_whole_learns_the_routers_mac() {
    let mut snap = stateful_lab();
    snap.ports[usize::from(PF0)].as_mut().unwrap().neigh_mac = None;
    let mut p = pipeline(false);
    let express = |p: &Pipeline| p.counters.stages[Stage::Express as usize].get();
    let out = from_vm(0, &tcp4(VM1_IP, PUBLIC, 999, 80, true));
    let (_, _, nat_port, _) = tuple(&inner(PF0, &run(&mut p, &snap, VM1, &out).1));
    let reply = from_router(nat_ul(), &tcp4(PUBLIC, NAT_IP, 80, nat_port, false));
    for _ in 0..3 {
        assert_eq!(run(&mut p, &snap, PF0, &reply).0, Verdict::Tx(VM1));
    }
    assert_eq!(p.neighbours().get(PF0), Some(testkit::ROUTER_MAC));
    // The router's MAC changes (a failover): the lane's packet teaches it.
    let before = express(&p);
    let mut moved = reply.clone();
    let other = [2, 0, 0, 0, 0, 0x99];
    moved[6..12].copy_from_slice(&other);
    assert_eq!(run(&mut p, &snap, PF0, &moved).0, Verdict::Tx(VM1));
    assert_eq!(express(&p), before + 1);
    assert_eq!(p.neighbours().get(PF0), Some(other));
    // From a burst, the last frame's MAC counts, as packet by packet.
    let mut bufs = [TestBuf::new(&moved), TestBuf::new(&reply)];
    let mut v = [Verdict::Drop(DropReason::TxFull); 2];
    p.process_burst(&snap, PF0, 1_000_000_000, &mut bufs, &mut v);
    assert_eq!(v, [Verdict::Tx(VM1); 2]);
    assert_eq!(express(&p), before + 3);
    assert_eq!(p.neighbours().get(PF0), Some(testkit::ROUTER_MAC));
}
