//! A load balancer's client flows as the tests drive them: a UDP load balancer for one
//! VIP and port in VNI 1, and a client's datagrams to it, tunnelled from the router to
//! the load balancer's underlay address, which the node relays to a target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::flowhash::FlowKey;

use crate::api::{self, ok};
use crate::fixture::Fixture;
use crate::frames::{self, Ip};
use crate::tap::Tap;
use crate::topo;

/// The load-balanced IP.
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 22, 2, 1);
/// The client on the internet side.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(45, 86, 6, 6);
/// The load balancer's (UDP) port.
pub const LB_PORT: u16 = 5000;
const UDP: u8 = 17;

/// Creates the UDP load balancer `id` for [`LB_IP`]:[`LB_PORT`] in VNI 1; returns its
/// underlay address.
pub fn create(fx: &mut Fixture, id: &[u8]) -> Ipv6Addr {
    let r = fx.api.create_load_balancer(pb::CreateLoadBalancerRequest {
        loadbalancer_id: id.to_vec(),
        loadbalanced_ip: Some(api::ip(IpAddr::V4(LB_IP))),
        vni: topo::VNI1,
        loadbalanced_ports: vec![pb::LbPort { port: u32::from(LB_PORT), protocol: pb::Protocol::Udp as i32 }],
        preferred_underlay_route: Vec::new(),
    });
    api::parse_v6(&ok("CreateLoadBalancer", r).underlay_route)
}

/// The fleet's flow key (`dpfleet_proto::flowhash`) of the client's datagram from
/// `sport`.
pub fn flow_key(sport: u16) -> FlowKey {
    FlowKey {
        vni: topo::VNI1,
        src: IpAddr::V4(CLIENT),
        dst: IpAddr::V4(LB_IP),
        proto: UDP,
        src_port: sport,
        dst_port: LB_PORT,
    }
}

/// The inner UDP source port and the outer destination (the target) of a relayed
/// client datagram.
pub fn relayed(frame: &[u8]) -> Option<(u16, Ipv6Addr)> {
    let Ip::V6 { dst, .. } = Ip::from_frame(frame)? else { return None };
    match Ip::from_frame(frame)?.decapsulate()? {
        Ip::V4 { src, dst: LB_IP, proto: UDP, payload } if src == CLIENT && payload.len() >= 8 => {
            Some((u16::from_be_bytes([payload[0], payload[1]]), dst))
        }
        _ => None,
    }
}

/// Sends one datagram of the client's flow from `sport` to the load balancer's underlay
/// address `lb_ul` on PF0 and returns the target it was relayed to, checking that the
/// relayed frame's checksums verify and that it leaves from the node's underlay address.
pub fn send(fx: &Fixture, pf0: &mut Tap, lb_ul: Ipv6Addr, sport: u16) -> Ipv6Addr {
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));
    let dgram = frames::ethernet_ipv4_udp(pf_mac, router_mac, CLIENT, LB_IP, (sport, LB_PORT), b"lb-flow");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, lb_ul, &dgram[14..]));
    let got = pf0.expect(&format!("flow {sport} relayed"), |f| relayed(f).is_some_and(|(p, _)| p == sport));
    frames::verify_checksums(&got).unwrap_or_else(|e| panic!("flow {sport}: {e}"));
    let Some(Ip::V6 { src, .. }) = Ip::from_frame(&got) else { unreachable!("checked by `relayed`") };
    assert_eq!(src, topo::NODE_UL, "relayed from the node's underlay address");
    relayed(&got).map_or_else(|| unreachable!("checked by `expect`"), |(_, target)| target)
}
