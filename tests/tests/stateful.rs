//! Stateful services end to end over TAP ports: NAT gateway (SNAT, replies, ICMP echo
//! identifiers, the node's answer to echo for the NAT IP, neighbour-NAT relay, flush on
//! DeleteNat, port-range exhaustion), VIP both ways, flow aging with a short
//! `--flow-timeout`, and the enforced firewall (allow and deny both ways, stateful
//! replies). Every frame the node sends has its checksums verified. A frame that must
//! not arrive is followed on the same path by one that must (`not_before`).

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
    let (vm1, mut tap1) = fx.boot(1);
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
    let (src, dst, echo) = inner_v4(&got);
    assert_eq!((src, dst, echo.id, echo.reply), (PUBLIC, NAT_IP, 510, true), "relayed unchanged");

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
    let (vm2, mut tap2) = fx.boot(2);
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
    assert_eq!(outer_v6(&got), (fx.ul(2), topo::ROUTER_UL), "from vm2's underlay address to the router");

    // A connection from outside to the VIP reaches the VM; its answer leaves from the VIP.
    let inbound = frames::ipv4_icmp_echo(PUBLIC, VIP, false, 9, 1, b"to-the-vip");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, vip_ul, &inbound));
    let got = tap2.expect("inbound echo on VM2", echo_with(b"to-the-vip"));
    frames::verify_checksums(&got).unwrap();
    let (src, dst, echo) = inner_v4(&got);
    assert_eq!((src, dst, echo.id, echo.reply), (PUBLIC, vm2.ip, 9, false));
    let answer = frames::ipv4_icmp_echo(vm2.ip, PUBLIC, true, 9, 1, b"from-the-vm");
    tap2.send(&frames::ethernet(gw, vm2.mac, &answer));
    let got = pf0.expect("answer from the VIP", echo_with(b"from-the-vm"));
    frames::verify_checksums(&got).unwrap();
    let (src, dst, echo) = inner_v4(&got);
    assert_eq!((src, dst, echo.id, echo.reply), (VIP, PUBLIC, 9, true));
    assert_eq!(outer_v6(&got), (fx.ul(2), topo::ROUTER_UL));
}

/// A negative check, as the suite makes them: `marker`, sent after the frame that must
/// not arrive and along the same path, must arrive (`what`), and nothing matching
/// `unwanted` may have arrived before it.
fn not_before(tap: &mut Tap, what: &str, marker: &[u8], mut unwanted: impl FnMut(&[u8]) -> bool) -> bool {
    tap.expect(what, |f| payload_is(f, marker));
    !tap.backlog().any(&mut unwanted)
}

/// Whether the frame's (inner, if tunnelled) IP packet is an echo or a UDP datagram
/// carrying `payload`.
fn payload_is(f: &[u8], payload: &[u8]) -> bool {
    let Some(ip) = Ip::from_frame(f).map(|ip| ip.decapsulate().unwrap_or(ip)) else { return false };
    if let Some(e) = Echo::from_ip(&ip) {
        return e.payload == payload;
    }
    match ip {
        Ip::V4 { proto: 17, payload: udp, .. } => udp.get(8..) == Some(payload),
        _ => false,
    }
}

#[test]
fn nat_port_exhaustion_drops_only_the_new_flow() {
    let mut fx = Fixture::start("nat-full");
    let (vm1, mut tap1) = fx.boot(1);
    let mut pf0 = fx.pf_tap(0);
    let gw = fx.node.vf(0).mac;
    create_nat(&mut fx, &vm1.id, 100, 102);
    let echo = |id: u16, dst: Ipv4Addr, payload: &'static [u8]| {
        frames::ethernet(gw, vm1.mac, &frames::ipv4_icmp_echo(vm1.ip, dst, false, id, 1, payload))
    };
    // Two echo flows to one host take the range's two ports.
    let mut ports = Vec::new();
    for (id, payload) in [(0x40, &b"first"[..]), (0x41, b"second")] {
        tap1.send(&echo(id, PUBLIC, payload));
        let got = pf0.expect("a translated echo", |f| payload_is(f, payload));
        frames::verify_checksums(&got).unwrap();
        ports.push(inner_v4(&got).2.id);
    }
    ports.sort_unstable();
    assert_eq!(ports, [100, 101]);
    // A third flow to that host finds no port and is dropped; the established flows
    // still pass (the first one, sent after it, with its port).
    tap1.send(&echo(0x42, PUBLIC, b"third"));
    tap1.send(&echo(0x40, PUBLIC, b"first-again"));
    assert!(not_before(&mut pf0, "the first flow again", b"first-again", |f| payload_is(f, b"third")));
    // Another host still gets a port.
    tap1.send(&echo(0x42, Ipv4Addr::new(45, 86, 6, 207), b"elsewhere"));
    let got = pf0.expect("a flow to another host", |f| payload_is(f, b"elsewhere"));
    assert_eq!(inner_v4(&got).0, NAT_IP);
}

#[test]
fn flows_age_out_after_a_short_flow_timeout() {
    // One NAT port: a second flow to the same host gets it only once the first flow
    // has aged out (--flow-timeout=1) and released it.
    let mut fx = Fixture::start_with("aging", &["--flow-timeout=1"]);
    let (vm1, mut tap1) = fx.boot(1);
    let mut pf0 = fx.pf_tap(0);
    let gw = fx.node.vf(0).mac;
    create_nat(&mut fx, &vm1.id, 100, 101);
    let echo = |id: u16, payload: &'static [u8]| {
        frames::ethernet(gw, vm1.mac, &frames::ipv4_icmp_echo(vm1.ip, PUBLIC, false, id, 1, payload))
    };
    tap1.send(&echo(0x40, b"old"));
    assert_eq!(inner_v4(&pf0.expect("the first flow", |f| payload_is(f, b"old"))).2.id, 100);
    tap1.send(&echo(0x41, b"too-early"));
    tap1.send(&echo(0x40, b"old-again"));
    assert!(not_before(&mut pf0, "the first flow again", b"old-again", |f| payload_is(f, b"too-early")));
    // Idle for over twice the timeout: the flow is gone and its port free.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    tap1.send(&echo(0x41, b"after-aging"));
    let got = pf0.expect("the second flow after aging", |f| payload_is(f, b"after-aging"));
    assert_eq!(inner_v4(&got).2.id, 100);
}

/// Adds an ACCEPT rule `rule_id` in `direction` on interface `id`.
fn accept(
    fx: &mut Fixture,
    id: &str,
    rule_id: &str,
    direction: pb::TrafficDirection,
    filter: pb::protocol_filter::Filter,
) {
    let any = Some(api::prefix(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let rule = pb::FirewallRule {
        id: rule_id.as_bytes().to_vec(),
        direction: direction as i32,
        action: pb::FirewallAction::Accept as i32,
        priority: 1000,
        source_prefix: any.clone(),
        destination_prefix: any,
        protocol_filter: Some(pb::ProtocolFilter { filter: Some(filter) }),
    };
    let r = fx.api.create_firewall_rule(pb::CreateFirewallRuleRequest {
        interface_id: id.as_bytes().to_vec(),
        rule: Some(rule),
    });
    ok("CreateFirewallRule", r);
}

fn echo_requests() -> pb::protocol_filter::Filter {
    pb::protocol_filter::Filter::Icmp(pb::IcmpFilter { icmp_type: 8, icmp_code: -1 })
}

fn any_udp() -> pb::protocol_filter::Filter {
    pb::protocol_filter::Filter::Udp(pb::UdpFilter {
        src_port_lower: -1,
        src_port_upper: -1,
        dst_port_lower: -1,
        dst_port_upper: -1,
    })
}

#[test]
fn enforced_firewall_allows_and_denies_both_ways_and_passes_replies() {
    use pb::TrafficDirection::{Egress, Ingress};
    let mut fx = Fixture::start_with("firewall", &["--enforce-firewall"]);
    let (vm1, mut tap1) = fx.boot(1);
    let (vm2, mut tap2) = fx.boot(2);
    let (gw1, gw2) = (fx.node.vf(0).mac, fx.node.vf(1).mac);
    let ping = |from: &Vm, to: &Vm, gw, reply: bool, id: u16, payload: &'static [u8]| {
        frames::ethernet(gw, from.mac, &frames::ipv4_icmp_echo(from.ip, to.ip, reply, id, 1, payload))
    };
    let udp = |from: &Vm, to: &Vm, gw, payload: &'static [u8]| {
        frames::ethernet_ipv4_udp(gw, from.mac, from.ip, to.ip, (4000, 5000), payload)
    };
    // Both VMs accept UDP in; nothing else has a rule, and ingress denies by default.
    accept(&mut fx, &vm1.id, "udp-in", Ingress, any_udp());
    accept(&mut fx, &vm2.id, "udp-in", Ingress, any_udp());
    // vm1's echo request to vm2 is dropped (UDP after it on the same path passes).
    tap1.send(&ping(&vm1, &vm2, gw1, false, 0x77, b"denied-in"));
    tap1.send(&udp(&vm1, &vm2, gw1, b"marker-1"));
    assert!(not_before(&mut tap2, "UDP from vm1", b"marker-1", |f| payload_is(f, b"denied-in")));
    // vm2 accepts echo requests: the next request (a new flow after the rule change)
    // arrives, and vm2's reply reaches vm1, which accepts no echo (stateful).
    accept(&mut fx, &vm2.id, "echo-in", Ingress, echo_requests());
    tap1.send(&ping(&vm1, &vm2, gw1, false, 0x77, b"allowed-in"));
    let got = tap2.expect("the accepted request", |f| payload_is(f, b"allowed-in"));
    frames::verify_checksums(&got).unwrap();
    tap2.send(&ping(&vm2, &vm1, gw2, true, 0x77, b"stateful-reply"));
    tap1.expect("the reply of the accepted flow", |f| payload_is(f, b"stateful-reply"));
    // The other way: vm2's own echo request to vm1 is dropped.
    tap2.send(&ping(&vm2, &vm1, gw2, false, 0x78, b"denied-back"));
    tap2.send(&udp(&vm2, &vm1, gw2, b"marker-2"));
    assert!(not_before(&mut tap1, "UDP from vm2", b"marker-2", |f| payload_is(f, b"denied-back")));
    // Egress: vm1 now accepts echo requests, but vm2 gets an egress rule for UDP only,
    // so its echo request is dropped on the way out while its UDP still passes.
    accept(&mut fx, &vm1.id, "echo-in", Ingress, echo_requests());
    accept(&mut fx, &vm2.id, "udp-out", Egress, any_udp());
    tap2.send(&ping(&vm2, &vm1, gw2, false, 0x79, b"denied-out"));
    tap2.send(&udp(&vm2, &vm1, gw2, b"marker-3"));
    assert!(not_before(&mut tap1, "UDP from vm2", b"marker-3", |f| payload_is(f, b"denied-out")));
}
