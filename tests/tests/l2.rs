//! Link-local services on VM ports: ARP and Neighbor Discovery for the gateway,
//! DHCPv4 and DHCPv6; and robustness against malformed frames.

use std::net::Ipv4Addr;

use dpfleet_e2e::api::{self, CheckInitializedRequest};
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::frames::{
    self, dhcp_type, dhcpv6_opt, dhcpv6_type, Arp, Dhcp, Dhcpv6, Ip, NeighborAdvert, ARP_REPLY,
};
use dpfleet_e2e::topo;

#[test]
fn arp_for_the_gateway_is_answered_with_the_port_mac() {
    let fx = Fixture::start("arp");
    let vm = fx.vm(1).clone();
    let port_mac = fx.node.vf(0).mac;
    let mut tap = fx.vm_tap(1);

    // A request for some other address first: the node must not answer it, so the first
    // reply that arrives must be the one for the gateway asked second.
    tap.send(&frames::arp_request(vm.mac, vm.ip, Ipv4Addr::new(10, 100, 1, 99)));
    tap.send(&frames::arp_request(vm.mac, vm.ip, topo::GATEWAY_V4));
    let reply = tap.expect("ARP reply", |f| Arp::parse(f).is_some_and(|a| a.op == ARP_REPLY));
    let arp = Arp::parse(&reply).unwrap();

    assert_eq!(arp.spa, topo::GATEWAY_V4, "first ARP reply is not for the gateway: {arp:?}");
    assert_eq!(arp.sha, port_mac, "gateway must resolve to the VF port's MAC");
    assert_eq!(arp.tpa, vm.ip);
    assert_eq!(arp.tha, vm.mac);
    assert_eq!(frames::eth_dst(&reply), Some(vm.mac));
    assert_eq!(frames::eth_src(&reply), Some(port_mac));

    // An ARP probe (sender 0.0.0.0), as dpservice's suite sends, is answered too.
    tap.send(&frames::arp_request(vm.mac, Ipv4Addr::UNSPECIFIED, topo::GATEWAY_V4));
    let reply = tap.expect("ARP reply to a probe", |f| {
        Arp::parse(f).is_some_and(|a| a.op == ARP_REPLY && a.spa == topo::GATEWAY_V4)
    });
    assert_eq!(Arp::parse(&reply).unwrap().sha, port_mac);
}

#[test]
fn neighbor_solicitation_for_the_gateway_is_advertised() {
    let fx = Fixture::start("nd");
    let vm = fx.vm(1).clone();
    let port_mac = fx.node.vf(0).mac;
    let mut tap = fx.vm_tap(1);
    let src = frames::link_local(vm.mac);

    tap.send(&frames::neighbor_solicitation(vm.mac, src, topo::GATEWAY_V6));
    let reply = tap.expect("Neighbor Advertisement", |f| NeighborAdvert::parse(f).is_some());
    frames::verify_checksums(&reply).unwrap();
    let na = NeighborAdvert::parse(&reply).unwrap();

    assert_eq!(na.target, topo::GATEWAY_V6);
    assert_eq!(na.target_mac, Some(port_mac), "target link-layer address must be the port's MAC");
    assert_eq!(na.hop_limit, 255, "ND messages carry hop limit 255");
    assert_eq!(na.dst, src, "a solicited advertisement goes back to the solicitor");
    assert_ne!(na.flags & 0x40, 0, "solicited flag must be set");
    assert_eq!(frames::eth_dst(&reply), Some(vm.mac));
}

/// Checks the options every OFFER and ACK must carry.
fn check_dhcp_answer(d: &Dhcp, vm: &topo::Vm) {
    assert_eq!(d.op, 2, "not a BOOTREPLY");
    assert_eq!(d.yiaddr, vm.ip, "leased address");
    assert_eq!(d.chaddr, vm.mac);
    assert_eq!(d.addresses(54), Some(vec![topo::GATEWAY_V4]), "server identifier");
    assert_eq!(d.option(26), Some(&topo::DHCP_MTU.to_be_bytes()[..]), "interface MTU option");
    let dns = d.addresses(6).expect("DNS option present");
    for server in topo::DHCP_DNS {
        assert!(dns.contains(&server), "DNS {server} missing from {dns:?}");
    }
    // The default router may come as option 3 or as a classless default route.
    let router = d.addresses(3).is_some_and(|r| r.first() == Some(&topo::GATEWAY_V4));
    let classless = d
        .classless_routes()
        .is_some_and(|routes| routes.contains(&(Ipv4Addr::UNSPECIFIED, 0, topo::GATEWAY_V4)));
    assert!(router || classless, "no default route via {} in {:?}", topo::GATEWAY_V4, d.options);
}

#[test]
fn dhcpv4_discover_offer_request_ack() {
    let fx = Fixture::start("dhcp4");
    let port_mac = fx.node.vf(1).mac;
    let vm = fx.vm(2).clone();
    let mut tap = fx.vm_tap(2);
    let xid = 0x1234_abcd;

    let discover = Dhcp::client(dhcp_type::DISCOVER, xid, vm.mac, vec![(55, vec![1, 3, 6, 26, 121])]);
    tap.send(&frames::dhcp_frame(vm.mac, &discover));
    let frame = tap.expect("DHCPOFFER", |f| Dhcp::from_frame(f).is_some_and(|d| d.xid == xid));
    frames::verify_checksums(&frame).unwrap();
    let offer = Dhcp::from_frame(&frame).unwrap();
    assert_eq!(offer.msg_type(), Some(dhcp_type::OFFER));
    check_dhcp_answer(&offer, &vm);
    assert_eq!(frames::eth_src(&frame), Some(port_mac));
    match Ip::from_frame(&frame).unwrap() {
        Ip::V4 { src, .. } => assert_eq!(src, topo::GATEWAY_V4, "DHCP server address"),
        other => panic!("OFFER not over IPv4: {other:?}"),
    }

    let request = Dhcp::client(
        dhcp_type::REQUEST,
        xid,
        vm.mac,
        vec![(50, vm.ip.octets().to_vec()), (54, topo::GATEWAY_V4.octets().to_vec())],
    );
    tap.send(&frames::dhcp_frame(vm.mac, &request));
    let frame = tap.expect("DHCPACK", |f| {
        Dhcp::from_frame(f).is_some_and(|d| d.xid == xid && d.msg_type() != Some(dhcp_type::OFFER))
    });
    frames::verify_checksums(&frame).unwrap();
    let ack = Dhcp::from_frame(&frame).unwrap();
    assert_eq!(ack.msg_type(), Some(dhcp_type::ACK));
    check_dhcp_answer(&ack, &vm);
    assert_eq!(frames::eth_dst(&frame), Some(vm.mac));
}

#[test]
fn dhcpv6_solicit_advertise_request_reply() {
    let fx = Fixture::start("dhcp6");
    let vm = fx.vm(1).clone();
    let mut tap = fx.vm_tap(1);
    let duid = Dhcpv6::duid_ll(vm.mac);
    let iaid = 0x1870_2501;
    let base = vec![
        (dhcpv6_opt::CLIENTID, duid.clone()),
        (dhcpv6_opt::ELAPSED_TIME, vec![0, 0]),
        (dhcpv6_opt::ORO, dhcpv6_opt::DNS_SERVERS.to_be_bytes().to_vec()),
    ];

    let mut options = base.clone();
    options.push((dhcpv6_opt::IA_NA, Dhcpv6::ia_na(iaid, None)));
    let solicit = Dhcpv6 { msg_type: dhcpv6_type::SOLICIT, trid: 0x00c0ffee, options };
    tap.send(&frames::dhcpv6_frame(vm.mac, &solicit));
    let frame =
        tap.expect("DHCPv6 ADVERTISE", |f| Dhcpv6::from_frame(f).is_some_and(|d| d.trid == solicit.trid));
    frames::verify_checksums(&frame).unwrap();
    let adv = Dhcpv6::from_frame(&frame).unwrap();
    assert_eq!(adv.msg_type, dhcpv6_type::ADVERTISE);
    assert_eq!(adv.option(dhcpv6_opt::CLIENTID), Some(duid.as_slice()), "client id echoed");
    let server_id = adv.option(dhcpv6_opt::SERVERID).expect("server id present").to_vec();
    assert_eq!(adv.ia_na_addresses(), Some((iaid, vec![vm.ipv6])), "offered address");
    let dns = adv.dns_servers().expect("DNS servers option present");
    for server in topo::DHCPV6_DNS {
        assert!(dns.contains(&server), "DNS {server} missing from {dns:?}");
    }
    assert_eq!(frames::eth_dst(&frame), Some(vm.mac));
    match Ip::from_frame(&frame).unwrap() {
        Ip::V6 { dst, .. } => assert_eq!(dst, frames::link_local(vm.mac)),
        other => panic!("ADVERTISE not over IPv6: {other:?}"),
    }

    let mut options = base;
    options.push((dhcpv6_opt::SERVERID, server_id));
    options.push((dhcpv6_opt::IA_NA, Dhcpv6::ia_na(iaid, Some(vm.ipv6))));
    let request = Dhcpv6 { msg_type: dhcpv6_type::REQUEST, trid: 0x00beef01, options };
    tap.send(&frames::dhcpv6_frame(vm.mac, &request));
    let frame = tap.expect("DHCPv6 REPLY", |f| Dhcpv6::from_frame(f).is_some_and(|d| d.trid == request.trid));
    frames::verify_checksums(&frame).unwrap();
    let reply = Dhcpv6::from_frame(&frame).unwrap();
    assert_eq!(reply.msg_type, dhcpv6_type::REPLY);
    assert_eq!(reply.option(dhcpv6_opt::CLIENTID), Some(duid.as_slice()));
    assert_eq!(reply.ia_na_addresses(), Some((iaid, vec![vm.ipv6])), "assigned address");
}

/// Frames no dataplane should choke on: truncated and inconsistent headers of every
/// protocol the node looks into.
fn malformed_frames(src: [u8; 6], dst: [u8; 6]) -> Vec<Vec<u8>> {
    let eth = |ty: u16, body: &[u8]| {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(body);
        f
    };
    let good_v4 =
        frames::ipv4_icmp_echo(Ipv4Addr::new(10, 100, 1, 1), Ipv4Addr::new(10, 100, 1, 2), false, 1, 1, b"x");
    let dhcp = frames::dhcp_frame(src, &Dhcp::client(dhcp_type::DISCOVER, 9, src, vec![]));
    let dhcp6 = frames::dhcpv6_frame(src, &Dhcpv6 { msg_type: 1, trid: 9, options: vec![] });
    let ns = frames::neighbor_solicitation(src, frames::link_local(src), topo::GATEWAY_V6);

    // (Frames shorter than an Ethernet header cannot be sent through a packet socket.)
    let mut out = vec![
        eth(0x0800, &[]),
        eth(0x0800, &[0x45, 0, 0]),
        eth(0x0806, &[0, 1, 8, 0, 6, 4, 0, 1]),
        eth(0x86dd, &[0x60, 0, 0, 0]),
        eth(0x8100, &[0, 1]),
        eth(0x1234, &[0xde, 0xad, 0xbe, 0xef]),
    ];
    // IPv4 header length below 20, above the frame, and total length beyond the frame.
    let mut bad_ihl = good_v4.clone();
    bad_ihl[0] = 0x41;
    out.push(eth(0x0800, &bad_ihl));
    let mut big_ihl = good_v4.clone();
    big_ihl[0] = 0x4f;
    out.push(eth(0x0800, &big_ihl));
    let mut long_total = good_v4.clone();
    long_total[2..4].copy_from_slice(&9000u16.to_be_bytes());
    out.push(eth(0x0800, &long_total));
    // IPv6 packets claiming more payload than they carry, and IP-in-IPv6 with nothing in.
    let mut v6 = frames::ipv6_icmp_echo(frames::link_local(src), topo::GATEWAY_V6, false, 1, 1, b"y");
    v6[4..6].copy_from_slice(&2000u16.to_be_bytes());
    out.push(eth(0x86dd, &v6));
    let mut ipip = vec![0x60, 0, 0, 0, 0, 40, 4, 64];
    ipip.extend_from_slice(&topo::ROUTER_UL.octets());
    ipip.extend_from_slice(&topo::NODE_UL.octets());
    out.push(eth(0x86dd, &ipip));
    // DHCP, DHCPv6 and ND cut short at every few bytes.
    for full in [&dhcp, &dhcp6, &ns] {
        for cut in (14..full.len()).step_by(7) {
            out.push(full[..cut].to_vec());
        }
    }
    // DHCP with an option running past the end.
    let mut overrun = dhcp.clone();
    let n = overrun.len();
    overrun[n - 1] = 53;
    overrun.extend_from_slice(&[200, 1]);
    out.push(overrun);
    out
}

#[test]
fn malformed_frames_do_not_kill_the_node() {
    let mut fx = Fixture::start("garbage");
    let vm = fx.vm(1).clone();
    let mut vf = fx.vm_tap(1);
    let mut pf = fx.pf_tap(0);

    let garbage = malformed_frames(vm.mac, fx.node.vf(0).mac);
    for f in &garbage {
        vf.send(f);
    }
    for f in &malformed_frames(topo::router_mac(0), fx.node.pf(0).mac) {
        pf.send(f);
    }

    // The VF still answers ARP, and the API still works.
    vf.send(&frames::arp_request(vm.mac, vm.ip, topo::GATEWAY_V4));
    let reply = vf.expect("ARP reply after garbage", |f| {
        Arp::parse(f).is_some_and(|a| a.op == ARP_REPLY && a.spa == topo::GATEWAY_V4)
    });
    assert_eq!(Arp::parse(&reply).unwrap().sha, fx.node.vf(0).mac);
    api::ok("CheckInitialized", fx.api.check_initialized(CheckInitializedRequest {}));
    assert!(fx.node.is_running(), "node exited after malformed frames");

    // Nothing of the garbage may come out of any port as a well-formed IP packet to
    // somewhere else; the only IP frames the VF may have seen are answers to it.
    for f in vf.backlog() {
        if let Some(Ip::V4 { dst, .. }) = Ip::from_frame(f) {
            assert!(dst == vm.ip || dst == Ipv4Addr::BROADCAST, "unexpected frame {}", frames::describe(f));
        }
    }
}
