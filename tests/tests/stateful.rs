//! Stateful services end to end over TAP ports: NAT gateway (SNAT, replies, ICMP echo
//! identifiers, the node's answer to echo for the NAT IP, neighbour-NAT relay, flush on
//! DeleteNat) and VIP both ways. Every frame the node sends has its checksums verified.

use std::net::{IpAddr, Ipv4Addr};

use dpfleet_e2e::api::{self, ok};
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::frames::{self, Echo, Ip};
use dpfleet_e2e::tap::Tap;
use dpfleet_e2e::topo::{self, Vm};
use dpfleet_proto::dpdkironcore::v1 as pb;

const NAT_IP: Ipv4Addr = Ipv4Addr::new(172, 21, 1, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(172, 20, 0, 1);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(45, 86, 6, 206);

fn boot(fx: &Fixture, n: usize) -> (Vm, Tap) {
    let vm = fx.vm(n).clone();
    let mut tap = fx.vm_tap(n);
    let ack = Fixture::dhcp(&mut tap, &vm);
    assert_eq!(ack.yiaddr, vm.ip);
    (vm, tap)
}

/// Matches a frame whose (inner, if tunnelled) IP packet is an echo with `payload`.
fn echo_with(payload: &'static [u8]) -> impl FnMut(&[u8]) -> bool {
    move |f| {
        Ip::from_frame(f)
            .map(|ip| ip.decapsulate().unwrap_or(ip))
            .and_then(|ip| Echo::from_ip(&ip))
            .is_some_and(|e| e.payload == payload)
    }
}

fn inner_v4(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, Echo) {
    let ip = Ip::from_frame(frame).unwrap();
    let ip = ip.decapsulate().unwrap_or(ip);
    let echo = Echo::from_ip(&ip).unwrap();
    match ip {
        Ip::V4 { src, dst, .. } => (src, dst, echo),
        other => panic!("not IPv4: {other:?}"),
    }
}

fn outer_v6(frame: &[u8]) -> (std::net::Ipv6Addr, std::net::Ipv6Addr) {
    match Ip::from_frame(frame).unwrap() {
        Ip::V6 { src, dst, .. } => (src, dst),
        other => panic!("not IPv6 outside: {other:?}"),
    }
}

fn create_nat(fx: &mut Fixture, id: &str, min: u32, max: u32) -> std::net::Ipv6Addr {
    let r = fx.api.create_nat(pb::CreateNatRequest {
        interface_id: id.as_bytes().to_vec(),
        nat_ip: Some(api::ip(IpAddr::V4(NAT_IP))),
        min_port: min,
        max_port: max,
        preferred_underlay_route: Vec::new(),
    });
    api::parse_v6(&ok("CreateNat", r).underlay_route)
}

#[test]
fn nat_gateway_translates_relays_answers_and_flushes() {
    let mut fx = Fixture::start("nat");
    let (vm1, mut tap1) = boot(&fx, 1);
    let mut pf0 = fx.pf_tap(0);
    let gw = fx.node.vf(0).mac;
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));
    let nat_ul = create_nat(&mut fx, &vm1.id, 100, 102);

    // SNAT: the echo leaves from the NAT IP with the first port of the range as id.
    let req = frames::ipv4_icmp_echo(vm1.ip, PUBLIC, false, 0x40, 1, b"nat-out");
    tap1.send(&frames::ethernet(gw, vm1.mac, &req));
    let got = pf0.expect("translated echo on PF0", echo_with(b"nat-out"));
    frames::verify_checksums(&got).unwrap();
    let (src, dst, echo) = inner_v4(&got);
    assert_eq!((src, dst, echo.id), (NAT_IP, PUBLIC, 100));
    assert_eq!(outer_v6(&got), (fx.ul(1), topo::ROUTER_UL));

    // The reply to the NAT underlay address reaches the VM with its own identifier.
    let rep = frames::ipv4_icmp_echo(PUBLIC, NAT_IP, true, 100, 1, b"nat-back");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, nat_ul, &rep));
    let got = tap1.expect("translated reply on VM1", echo_with(b"nat-back"));
    frames::verify_checksums(&got).unwrap();
    let (src, dst, echo) = inner_v4(&got);
    assert_eq!((src, dst, echo.id, echo.reply), (PUBLIC, vm1.ip, 0x40, true));

    // An echo request to the NAT IP is answered by the node, back to its sender.
    let ping = frames::ipv4_icmp_echo(PUBLIC, NAT_IP, false, 0x41, 1, b"ping-nat-ip");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, nat_ul, &ping));
    let got = pf0.expect("the node's echo reply", |f| {
        Ip::from_frame(f)
            .and_then(|ip| ip.decapsulate())
            .and_then(|ip| Echo::from_ip(&ip))
            .is_some_and(|e| e.reply && e.payload == b"ping-nat-ip")
    });
    frames::verify_checksums(&got).unwrap();
    assert_eq!(outer_v6(&got), (topo::NODE_UL, topo::ROUTER_UL));
    let (src, dst, _) = inner_v4(&got);
    assert_eq!((src, dst), (NAT_IP, PUBLIC));

    // Identifiers owned by a neighbour are relayed to it unchanged.
    ok(
        "CreateNeighborNat",
        fx.api.create_neighbor_nat(pb::CreateNeighborNatRequest {
            nat_ip: Some(api::ip(IpAddr::V4(NAT_IP))),
            vni: vm1.vni,
            min_port: 500,
            max_port: 520,
            underlay_route: topo::NEIGH_UL.to_string().into_bytes(),
        }),
    );
    let stray = frames::ipv4_icmp_echo(PUBLIC, NAT_IP, true, 510, 1, b"for-the-neighbour");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, nat_ul, &stray));
    let got = pf0.expect("relayed to the neighbour", |f| {
        echo_with(b"for-the-neighbour")(f) && outer_v6(f).1 == topo::NEIGH_UL
    });
    frames::verify_checksums(&got).unwrap();
    assert_eq!(outer_v6(&got).0, topo::NODE_UL);

    // DeleteNat flushes the flow: with a new range the same echo gets the new port.
    ok("DeleteNat", fx.api.delete_nat(pb::DeleteNatRequest { interface_id: vm1.id.as_bytes().to_vec() }));
    create_nat(&mut fx, &vm1.id, 200, 201);
    let req = frames::ipv4_icmp_echo(vm1.ip, PUBLIC, false, 0x40, 2, b"nat-again");
    tap1.send(&frames::ethernet(gw, vm1.mac, &req));
    let got = pf0.expect("translated again", echo_with(b"nat-again"));
    assert_eq!(inner_v4(&got).2.id, 200);
}

#[test]
fn vip_is_the_source_outside_and_reaches_the_vm_inside() {
    let mut fx = Fixture::start("vip");
    let (vm2, mut tap2) = boot(&fx, 2);
    let mut pf0 = fx.pf_tap(0);
    let gw = fx.node.vf(1).mac;
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));
    let r = fx.api.create_vip(pb::CreateVipRequest {
        interface_id: vm2.id.as_bytes().to_vec(),
        vip_ip: Some(api::ip(IpAddr::V4(VIP))),
        preferred_underlay_route: Vec::new(),
    });
    let vip_ul = api::parse_v6(&ok("CreateVip", r).underlay_route);

    let req = frames::ipv4_icmp_echo(vm2.ip, PUBLIC, false, 7, 1, b"vip-out");
    tap2.send(&frames::ethernet(gw, vm2.mac, &req));
    let got = pf0.expect("echo from the VIP", echo_with(b"vip-out"));
    frames::verify_checksums(&got).unwrap();
    let (src, dst, echo) = inner_v4(&got);
    assert_eq!((src, dst, echo.id), (VIP, PUBLIC, 7));

    // A connection from outside to the VIP reaches the VM; its answer leaves from the VIP.
    let inbound = frames::ipv4_icmp_echo(PUBLIC, VIP, false, 9, 1, b"to-the-vip");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, vip_ul, &inbound));
    let got = tap2.expect("inbound echo on VM2", echo_with(b"to-the-vip"));
    frames::verify_checksums(&got).unwrap();
    assert_eq!(inner_v4(&got).1, vm2.ip);
    let answer = frames::ipv4_icmp_echo(vm2.ip, PUBLIC, true, 9, 1, b"from-the-vm");
    tap2.send(&frames::ethernet(gw, vm2.mac, &answer));
    let got = pf0.expect("answer from the VIP", echo_with(b"from-the-vm"));
    frames::verify_checksums(&got).unwrap();
    assert_eq!(inner_v4(&got).0, VIP);
}
