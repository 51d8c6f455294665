//! NAT64 end to end: a VM behind NAT pings `64:ff9b::808:808`; the echo leaves PF0 as
//! IPv4 ICMP from the NAT IP (identifier = a NAT port) towards the router, and the
//! router's IPv4 echo reply to the NAT underlay address reaches the VM as an ICMPv6
//! echo reply from the NAT64 address. Checksums of every frame are verified.

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

#[test]
fn icmpv6_echo_to_the_nat64_prefix_leaves_as_ipv4_and_the_reply_returns_as_icmpv6() {
    let mut fx = Fixture::start("nat64");
    let vm1 = fx.vm(1).clone();
    let mut tap1 = fx.vm_tap(1);
    assert_eq!(Fixture::dhcp(&mut tap1, &vm1).yiaddr, vm1.ip);
    let mut pf0 = fx.pf_tap(0);
    let gw = fx.node.vf(0).mac;
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));
    let r = fx.api.create_nat(pb::CreateNatRequest {
        interface_id: vm1.id.as_bytes().to_vec(),
        nat_ip: Some(api::ip(IpAddr::V4(NAT_IP))),
        min_port: 100,
        max_port: 102,
        preferred_underlay_route: Vec::new(),
    });
    let nat_ul = api::parse_v6(&ok("CreateNat", r).underlay_route);

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
