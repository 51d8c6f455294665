//! NAT64 end to end: a VM behind NAT pings `64:ff9b::808:808`; the echo leaves PF0 as
//! IPv4 ICMP from the NAT IP (identifier = a NAT port) towards the router, and the
//! router's IPv4 echo reply to the NAT underlay address reaches the VM as an ICMPv6
//! echo reply from the NAT64 address; a TCP handshake is translated the same way both
//! ways. Checksums of every frame are verified.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dpfleet_e2e::api::{self, ok};
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::frames::{self, Echo, Ip};
use dpfleet_e2e::topo;
use dpfleet_proto::dpdkironcore::v1 as pb;

const NAT_IP: Ipv4Addr = Ipv4Addr::new(172, 21, 1, 1);
const REMOTE4: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0x0808, 0x0808);

fn echo_payload(ip: &Ip) -> Option<Vec<u8>> {
    Echo::from_ip(ip).map(|e| e.payload)
}

/// A node with vm1 (DHCP done) behind NAT 172.21.1.1 [100, 102), and its PF0.
struct Setup {
    fx: Fixture,
    vm1: topo::Vm,
    tap1: dpfleet_e2e::tap::Tap,
    pf0: dpfleet_e2e::tap::Tap,
    /// The NAT's underlay address.
    nat_ul: Ipv6Addr,
}

fn setup(tag: &str) -> Setup {
    let mut fx = Fixture::start(tag);
    let vm1 = fx.vm(1).clone();
    let mut tap1 = fx.vm_tap(1);
    assert_eq!(Fixture::dhcp(&mut tap1, &vm1).yiaddr, vm1.ip);
    let pf0 = fx.pf_tap(0);
    let r = fx.api.create_nat(pb::CreateNatRequest {
        interface_id: vm1.id.as_bytes().to_vec(),
        nat_ip: Some(api::ip(IpAddr::V4(NAT_IP))),
        min_port: 100,
        max_port: 102,
        preferred_underlay_route: Vec::new(),
    });
    let nat_ul = api::parse_v6(&ok("CreateNat", r).underlay_route);
    Setup { fx, vm1, tap1, pf0, nat_ul }
}

#[test]
fn icmpv6_echo_to_the_nat64_prefix_leaves_as_ipv4_and_the_reply_returns_as_icmpv6() {
    let Setup { fx, vm1, mut tap1, mut pf0, nat_ul } = setup("nat64");
    let gw = fx.node.vf(0).mac;
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));

    let req = frames::ipv6_icmp_echo(vm1.ipv6, REMOTE6, false, 0x40, 1, b"nat64-out");
    tap1.send(&frames::ethernet(gw, vm1.mac, &req));
    let got = pf0.expect("IPv4 echo on PF0", |f| {
        Ip::from_frame(f).and_then(|ip| ip.decapsulate()).and_then(|ip| echo_payload(&ip)).as_deref()
            == Some(b"nat64-out".as_slice())
    });
    frames::verify_checksums(&got).unwrap();
    let outer = Ip::from_frame(&got).unwrap();
    let Ip::V6 { src: outer_src, dst: outer_dst, next: 4, .. } = &outer else {
        panic!("not IPv4 in IPv6: {outer:?}")
    };
    assert_eq!((*outer_src, *outer_dst), (fx.ul(1), topo::ROUTER_UL));
    let inner = outer.decapsulate().unwrap();
    let Ip::V4 { src, dst, .. } = &inner else { panic!("not IPv4 inside: {inner:?}") };
    assert_eq!((*src, *dst), (NAT_IP, REMOTE4));
    let echo = Echo::from_ip(&inner).unwrap();
    assert!(!echo.reply);
    assert!((100..102).contains(&echo.id), "NAT port {}", echo.id);

    let rep = frames::ipv4_icmp_echo(REMOTE4, NAT_IP, true, echo.id, 1, b"nat64-back");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, nat_ul, &rep));
    let got = tap1.expect("ICMPv6 echo reply on VM1", |f| {
        Ip::from_frame(f).and_then(|ip| echo_payload(&ip)).as_deref() == Some(b"nat64-back".as_slice())
    });
    frames::verify_checksums(&got).unwrap();
    let ip = Ip::from_frame(&got).unwrap();
    let Ip::V6 { src, dst, next: 58, .. } = &ip else { panic!("not ICMPv6: {ip:?}") };
    assert_eq!((*src, *dst), (REMOTE6, vm1.ipv6));
    let echo = Echo::from_ip(&ip).unwrap();
    assert_eq!((echo.reply, echo.id, echo.seq), (true, 0x40, 1));
}

/// The TCP ports and flags of an IP packet carrying TCP.
fn tcp_of(ip: &Ip) -> Option<(u16, u16, u8)> {
    let (6, p) = (match ip {
        Ip::V4 { proto, payload, .. } => (*proto, payload),
        Ip::V6 { next, payload, .. } => (*next, payload),
    }) else {
        return None;
    };
    let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    (p.len() >= 20).then(|| (port(0), port(2), p[13]))
}

#[test]
fn tcp_to_the_nat64_prefix_leaves_as_ipv4_and_the_answer_returns_as_ipv6() {
    let Setup { fx, vm1, mut tap1, mut pf0, nat_ul } = setup("nat64-tcp");
    let gw = fx.node.vf(0).mac;
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));
    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;

    // The VM's SYN to [64:ff9b::8.8.8.8]:80 leaves as IPv4 TCP from the NAT IP.
    let mut syn = Vec::new();
    etherparse::PacketBuilder::ethernet2(vm1.mac, gw)
        .ipv6(vm1.ipv6.octets(), REMOTE6.octets(), 64)
        .tcp(40_000, 80, 7, 64_000)
        .syn()
        .write(&mut syn, b"")
        .unwrap();
    tap1.send(&syn);
    let got = pf0.expect("IPv4 TCP on PF0", |f| {
        Ip::from_frame(f)
            .and_then(|ip| ip.decapsulate())
            .and_then(|ip| tcp_of(&ip))
            .is_some_and(|t| t.1 == 80)
    });
    frames::verify_checksums(&got).unwrap();
    let inner = Ip::from_frame(&got).unwrap().decapsulate().unwrap();
    let Ip::V4 { src, dst, .. } = &inner else { panic!("not IPv4 inside: {inner:?}") };
    assert_eq!((*src, *dst), (NAT_IP, REMOTE4));
    let (nat_port, _, flags) = tcp_of(&inner).unwrap();
    assert!((100..102).contains(&nat_port), "NAT port {nat_port}");
    assert_eq!(flags, SYN);

    // The SYN-ACK to the NAT IP and port reaches the VM as IPv6 from the NAT64 address.
    let mut ans = Vec::new();
    etherparse::PacketBuilder::ipv4(REMOTE4.octets(), NAT_IP.octets(), 64)
        .tcp(80, nat_port, 99, 64_000)
        .syn()
        .ack(8)
        .write(&mut ans, b"")
        .unwrap();
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, nat_ul, &ans));
    let got = tap1.expect("IPv6 TCP on VM1", |f| {
        Ip::from_frame(f).and_then(|ip| tcp_of(&ip)).is_some_and(|t| t.0 == 80)
    });
    frames::verify_checksums(&got).unwrap();
    let ip = Ip::from_frame(&got).unwrap();
    let Ip::V6 { src, dst, .. } = &ip else { panic!("not IPv6: {ip:?}") };
    assert_eq!((*src, *dst), (REMOTE6, vm1.ipv6));
    assert_eq!(tcp_of(&ip).unwrap(), (80, 40_000, SYN_ACK));
}
