//! Overlay forwarding: VM to VM on one node, VM to a remote prefix through the underlay
//! (IPv4-in-IPv6 and IPv6-in-IPv6), underlay to VM, and isolation between VNIs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dpfleet_e2e::api;
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::frames::{self, Echo, Ip};
use dpfleet_e2e::topo::{self, Vm};

/// Matches an Ethernet frame whose (outer) IP packet is an echo with `payload`.
fn echo_with(payload: &'static [u8]) -> impl FnMut(&[u8]) -> bool {
    move |f| Ip::from_frame(f).and_then(|ip| Echo::from_ip(&ip)).is_some_and(|e| e.payload == payload)
}

/// Matches an IP-in-IPv6 frame whose inner packet is an echo with `payload`.
fn encapsulated_echo_with(payload: &'static [u8]) -> impl FnMut(&[u8]) -> bool {
    move |f| {
        Ip::from_frame(f)
            .and_then(|ip| ip.decapsulate())
            .and_then(|inner| Echo::from_ip(&inner))
            .is_some_and(|e| e.payload == payload)
    }
}

#[test]
fn icmp_between_vms_of_one_vni() {
    let fx = Fixture::start("vm2vm");
    let (vm1, mut tap1) = fx.boot(1);
    let (vm2, mut tap2) = fx.boot(2);
    let gw1 = fx.node.vf(0).mac;
    let gw2 = fx.node.vf(1).mac;

    // IPv4 request VM1 → VM2 and the reply back.
    let req = frames::ipv4_icmp_echo(vm1.ip, vm2.ip, false, 0x77, 1, b"vm1-to-vm2");
    tap1.send(&frames::ethernet(gw1, vm1.mac, &req));
    let got = tap2.expect("echo request on VM2", echo_with(b"vm1-to-vm2"));
    frames::verify_checksums(&got).unwrap();
    assert_eq!(frames::eth_dst(&got), Some(vm2.mac), "delivered to VM2's MAC");
    assert_eq!(frames::eth_src(&got), Some(gw2), "from VM2's port MAC");
    match Ip::from_frame(&got).unwrap() {
        Ip::V4 { src, dst, .. } => assert_eq!((src, dst), (vm1.ip, vm2.ip)),
        other => panic!("not IPv4: {other:?}"),
    }
    let rep = frames::ipv4_icmp_echo(vm2.ip, vm1.ip, true, 0x77, 1, b"vm2-to-vm1");
    tap2.send(&frames::ethernet(gw2, vm2.mac, &rep));
    let got = tap1.expect("echo reply on VM1", echo_with(b"vm2-to-vm1"));
    frames::verify_checksums(&got).unwrap();
    assert_eq!(frames::eth_dst(&got), Some(vm1.mac));
    assert!(Echo::from_ip(&Ip::from_frame(&got).unwrap()).unwrap().reply);

    // The same over IPv6.
    let req = frames::ipv6_icmp_echo(vm1.ipv6, vm2.ipv6, false, 0x78, 1, b"vm1-to-vm2-v6");
    tap1.send(&frames::ethernet(gw1, vm1.mac, &req));
    let got = tap2.expect("ICMPv6 echo request on VM2", echo_with(b"vm1-to-vm2-v6"));
    frames::verify_checksums(&got).unwrap();
    match Ip::from_frame(&got).unwrap() {
        Ip::V6 { src, dst, .. } => assert_eq!((src, dst), (vm1.ipv6, vm2.ipv6)),
        other => panic!("not IPv6: {other:?}"),
    }
    let rep = frames::ipv6_icmp_echo(vm2.ipv6, vm1.ipv6, true, 0x78, 1, b"vm2-to-vm1-v6");
    tap2.send(&frames::ethernet(gw2, vm2.mac, &rep));
    tap1.expect("ICMPv6 echo reply on VM1", echo_with(b"vm2-to-vm1-v6"));
}

#[test]
fn traffic_to_a_remote_prefix_is_encapsulated_towards_its_next_hop() {
    let fx = Fixture::start("encap");
    let (vm1, mut tap1) = fx.boot(1);
    let ul1 = fx.ul(1);
    let mut pf0 = fx.pf_tap(0);
    let gw = fx.node.vf(0).mac;
    let remote_v4 = Ipv4Addr::new(10, 100, 2, 102);
    let remote_v6 = Ipv6Addr::new(0x2000, 0x100, 2, 0, 0, 0, 0, 0x123);

    // IPv4 in IPv6.
    let req = frames::ipv4_icmp_echo(vm1.ip, remote_v4, false, 5, 1, b"to-remote-v4");
    tap1.send(&frames::ethernet(gw, vm1.mac, &req));
    let got = pf0.expect("IPv4-in-IPv6 on PF0", encapsulated_echo_with(b"to-remote-v4"));
    frames::verify_checksums(&got).unwrap();
    assert_eq!(frames::eth_src(&got), Some(fx.node.pf(0).mac), "sent from PF0's MAC");
    let outer = Ip::from_frame(&got).unwrap();
    match &outer {
        Ip::V6 { src, dst, next, .. } => {
            assert_eq!(*next, 4, "IPv4-in-IPv6 uses next header 4");
            assert_eq!(*src, ul1, "outer source is VM1's underlay address");
            assert_eq!(*dst, topo::NEIGH_UL, "outer destination is the route's next hop");
        }
        other => panic!("not IPv6 outside: {other:?}"),
    }
    match outer.decapsulate().unwrap() {
        Ip::V4 { src, dst, .. } => assert_eq!((src, dst), (vm1.ip, remote_v4)),
        other => panic!("not IPv4 inside: {other:?}"),
    }

    // The answer comes back through the underlay to VM1's underlay address.
    let rep = frames::ipv4_icmp_echo(remote_v4, vm1.ip, true, 5, 1, b"from-remote-v4");
    pf0.send(&frames::ethernet_ip_in_ipv6(fx.node.pf(0).mac, topo::router_mac(0), topo::NEIGH_UL, ul1, &rep));
    let got = tap1.expect("decapsulated echo reply on VM1", echo_with(b"from-remote-v4"));
    frames::verify_checksums(&got).unwrap();
    assert_eq!(frames::eth_dst(&got), Some(vm1.mac));
    assert_eq!(Ip::from_frame(&got).unwrap().decapsulate(), None, "delivered decapsulated");

    // IPv6 in IPv6.
    let req = frames::ipv6_icmp_echo(vm1.ipv6, remote_v6, false, 6, 1, b"to-remote-v6");
    tap1.send(&frames::ethernet(gw, vm1.mac, &req));
    let got = pf0.expect("IPv6-in-IPv6 on PF0", encapsulated_echo_with(b"to-remote-v6"));
    frames::verify_checksums(&got).unwrap();
    match Ip::from_frame(&got).unwrap() {
        Ip::V6 { src, dst, next, .. } => {
            assert_eq!(next, 41, "IPv6-in-IPv6 uses next header 41");
            assert_eq!((src, dst), (ul1, topo::NEIGH_UL));
        }
        other => panic!("not IPv6 outside: {other:?}"),
    }
    let rep = frames::ipv6_icmp_echo(remote_v6, vm1.ipv6, true, 6, 1, b"from-remote-v6");
    pf0.send(&frames::ethernet_ip_in_ipv6(fx.node.pf(0).mac, topo::router_mac(0), topo::NEIGH_UL, ul1, &rep));
    tap1.expect("decapsulated ICMPv6 echo reply on VM1", echo_with(b"from-remote-v6"));

    // Anything else follows the VNI's default route to the underlay router.
    let public = Ipv4Addr::new(45, 86, 6, 6);
    let req = frames::ipv4_icmp_echo(vm1.ip, public, false, 7, 1, b"to-default-route");
    tap1.send(&frames::ethernet(gw, vm1.mac, &req));
    let got = pf0.expect("default-routed packet on PF0", encapsulated_echo_with(b"to-default-route"));
    match Ip::from_frame(&got).unwrap() {
        Ip::V6 { src, dst, .. } => assert_eq!((src, dst), (ul1, topo::ROUTER_UL)),
        other => panic!("not IPv6 outside: {other:?}"),
    }
}

#[test]
fn underlay_traffic_reaches_the_vm_owning_the_underlay_address() {
    let fx = Fixture::start("decap");
    let (vm1, mut tap1) = fx.boot(1);
    let (vm2, mut tap2) = fx.boot(2);
    let mut pf0 = fx.pf_tap(0);
    let public = Ipv4Addr::new(45, 86, 6, 6);
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));

    // First a packet for VM2's underlay address, then one for VM1's: VM1 must see its
    // own packet and never VM2's.
    let to_vm2 = frames::ipv4_icmp_echo(public, vm2.ip, false, 9, 1, b"underlay-to-vm2");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, fx.ul(2), &to_vm2));
    let got = tap2.expect("decapsulated packet on VM2", echo_with(b"underlay-to-vm2"));
    frames::verify_checksums(&got).unwrap();
    assert_eq!(frames::eth_dst(&got), Some(vm2.mac));
    match Ip::from_frame(&got).unwrap() {
        Ip::V4 { src, dst, .. } => assert_eq!((src, dst), (public, vm2.ip)),
        other => panic!("not IPv4: {other:?}"),
    }

    let to_vm1 = frames::ipv4_icmp_echo(public, vm1.ip, false, 9, 2, b"underlay-to-vm1");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, fx.ul(1), &to_vm1));
    tap1.expect("decapsulated packet on VM1", echo_with(b"underlay-to-vm1"));
    assert!(!tap1.backlog().any(echo_with(b"underlay-to-vm2")), "VM2's packet was delivered to VM1");

    // IPv6 inside IPv6 to VM2.
    let public6 = Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x8888);
    let to_vm2 = frames::ipv6_icmp_echo(public6, vm2.ipv6, false, 9, 3, b"underlay-to-vm2-v6");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, fx.ul(2), &to_vm2));
    tap2.expect("decapsulated IPv6 packet on VM2", echo_with(b"underlay-to-vm2-v6"));
}

#[test]
fn vnis_are_isolated_even_with_the_same_addresses() {
    let mut fx = Fixture::start("vni");
    // VM4 in VNI 200 uses VM2's addresses of VNI 100.
    let vm4 = Vm::new(4, topo::VNI2).with_ip(fx.vm(2).ip).with_ipv6(fx.vm(2).ipv6);
    let ul4 = fx.api.add_vm(&vm4);
    let (vm1, mut tap1) = fx.boot(1);
    let (vm2, mut tap2) = fx.boot(2);
    let mut tap4 = fx.tap_of(&vm4);
    let ack = Fixture::dhcp(&mut tap4, &vm4);
    assert_eq!(ack.yiaddr, vm4.ip);
    let mut pf0 = fx.pf_tap(0);
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));

    // VM4 (VNI 200) pings VM1's address: VNI 200 has no such VM, so the packet takes
    // VNI 200's default route to the underlay router and must not reach VM1.
    let from4 = frames::ipv4_icmp_echo(vm4.ip, vm1.ip, false, 11, 1, b"vni200-to-vm1-addr");
    tap4.send(&frames::ethernet(fx.node.vf(3).mac, vm4.mac, &from4));
    let got = pf0.expect("VNI 200 packet on the underlay", encapsulated_echo_with(b"vni200-to-vm1-addr"));
    match Ip::from_frame(&got).unwrap() {
        Ip::V6 { src, dst, .. } => assert_eq!((src, dst), (ul4, topo::ROUTER_UL)),
        other => panic!("not IPv6 outside: {other:?}"),
    }
    // A later packet to VM1 through the same output: VM1 must not have seen VM4's.
    let marker = frames::ipv4_icmp_echo(vm2.ip, vm1.ip, false, 13, 1, b"marker-to-vm1");
    tap2.send(&frames::ethernet(fx.node.vf(1).mac, vm2.mac, &marker));
    tap1.expect("marker on VM1", echo_with(b"marker-to-vm1"));
    assert!(!tap1.backlog().any(echo_with(b"vni200-to-vm1-addr")), "a VNI 200 packet reached a VNI 100 VM");

    // VM1 pings VM2's address in VNI 100: VM2 gets it, VM4 (same address) must not.
    let from1 = frames::ipv4_icmp_echo(vm1.ip, vm2.ip, false, 12, 1, b"vni100-to-vm2-addr");
    tap1.send(&frames::ethernet(fx.node.vf(0).mac, vm1.mac, &from1));
    tap2.expect("VNI 100 packet on VM2", echo_with(b"vni100-to-vm2-addr"));
    let marker = frames::ipv4_icmp_echo(Ipv4Addr::new(45, 86, 6, 6), vm4.ip, false, 14, 1, b"marker-to-vm4");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, ul4, &marker));
    tap4.expect("marker on VM4", echo_with(b"marker-to-vm4"));
    assert!(!tap4.backlog().any(echo_with(b"vni100-to-vm2-addr")), "a VNI 100 packet reached a VNI 200 VM");

    // The VNIs' route tables are separate too.
    let routes100 =
        api::ok("ListRoutes", fx.api.list_routes(api::ListRoutesRequest { vni: topo::VNI1 })).routes;
    let routes200 =
        api::ok("ListRoutes", fx.api.list_routes(api::ListRoutesRequest { vni: topo::VNI2 })).routes;
    let has_neigh = |routes: &[api::Route]| {
        routes.iter().any(|r| {
            r.prefix
                .as_ref()
                .is_some_and(|p| api::parse_ip(p.ip.as_ref()) == IpAddr::V4(topo::NEIGH_V4_PREFIX.0))
        })
    };
    assert!(has_neigh(&routes100), "VNI 100 lost its route: {routes100:?}");
    assert!(!has_neigh(&routes200), "VNI 100's route shows up in VNI 200: {routes200:?}");
}
