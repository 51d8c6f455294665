//! Load balancers end to end: with `--lb-selection=maglev` every new flow goes to the
//! target the fleet's Maglev table (`dpfleet_proto::maglev`, as the node builds it:
//! default size, seed 0) gives for the flow's hash, the flows spread within a stated
//! bound, and established flows keep their target when one is added while new flows
//! follow the new table; with dpservice's round robin an established flow keeps its
//! target when targets are added. Flows arrive from the
//! router encapsulated to the LB's underlay address and leave PF0 re-encapsulated to
//! their target.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dpfleet_e2e::api::{self, ok};
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::frames::{self, Ip};
use dpfleet_e2e::tap::Tap;
use dpfleet_e2e::topo;
use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::flowhash::FlowKey;
use dpfleet_proto::maglev::{MaglevInput, MaglevTable, Target};

const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 22, 2, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(45, 86, 6, 6);
const LB_PORT: u16 = 5000;
const UDP: u8 = 17;

fn target(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfc00, n, 0, 0, 0, 0, 0, 1)
}

/// Creates a UDP load balancer for `LB_IP:LB_PORT` in VNI 100 with `targets`; returns
/// its underlay address.
fn create_lb(fx: &mut Fixture, targets: &[Ipv6Addr]) -> Ipv6Addr {
    let r = fx.api.create_load_balancer(pb::CreateLoadBalancerRequest {
        loadbalancer_id: b"lb-e2e".to_vec(),
        loadbalanced_ip: Some(api::ip(IpAddr::V4(LB_IP))),
        vni: topo::VNI1,
        loadbalanced_ports: vec![pb::LbPort { port: u32::from(LB_PORT), protocol: pb::Protocol::Udp as i32 }],
        preferred_underlay_route: Vec::new(),
    });
    let ul = api::parse_v6(&ok("CreateLoadBalancer", r).underlay_route);
    for t in targets {
        add_target(fx, *t);
    }
    ul
}

fn add_target(fx: &mut Fixture, t: Ipv6Addr) {
    let r = fx.api.create_load_balancer_target(pb::CreateLoadBalancerTargetRequest {
        loadbalancer_id: b"lb-e2e".to_vec(),
        target_ip: Some(api::ip(IpAddr::V6(t))),
    });
    ok("CreateLoadBalancerTarget", r);
}

/// The inner UDP source port and outer destination of a relayed frame.
fn relayed(frame: &[u8]) -> Option<(u16, Ipv6Addr)> {
    let Ip::V6 { dst, .. } = Ip::from_frame(frame)? else { return None };
    match Ip::from_frame(frame)?.decapsulate()? {
        Ip::V4 { src, dst: LB_IP, proto: UDP, payload } if src == CLIENT && payload.len() >= 8 => {
            Some((u16::from_be_bytes([payload[0], payload[1]]), dst))
        }
        _ => None,
    }
}

/// Sends one datagram of the flow from `sport` to the LB's underlay address on PF0 and
/// returns the target it was relayed to.
fn send_flow(fx: &Fixture, pf0: &mut Tap, lb_ul: Ipv6Addr, sport: u16) -> Ipv6Addr {
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));
    let dgram = frames::ethernet_ipv4_udp(pf_mac, router_mac, CLIENT, LB_IP, (sport, LB_PORT), b"lb-flow");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, lb_ul, &dgram[14..]));
    let got = pf0.expect(&format!("flow {sport} relayed"), |f| relayed(f).is_some_and(|(p, _)| p == sport));
    frames::verify_checksums(&got).unwrap();
    let Some(Ip::V6 { src, .. }) = Ip::from_frame(&got) else { unreachable!() };
    assert_eq!(src, topo::NODE_UL, "relayed from the node's underlay address");
    relayed(&got).unwrap().1
}

#[test]
fn maglev_sends_each_flow_to_the_target_the_fleet_table_gives() {
    let mut fx = Fixture::start_with("lb-maglev", &["--lb-selection=maglev"]);
    let mut pf0 = fx.pf_tap(0);
    let targets = [target(2), target(3), target(4)];
    let lb_ul = create_lb(&mut fx, &targets);
    let table = fleet_table(&targets);
    let mut per_target = [0usize; 3];
    for sport in 20_000..20_200u16 {
        let want = table.lookup_addr(flow_key(sport).flow_hash());
        assert_eq!(send_flow(&fx, &mut pf0, lb_ul, sport), want, "flow from port {sport}");
        per_target[targets.iter().position(|t| *t == want).unwrap()] += 1;
    }
    // Spread: 200 flows over 3 targets, each count binomial with mean 66.7 and standard
    // deviation 6.7 if the hash spreads like a random one; every count lies within four
    // deviations, 40 to 93. (The flows are fixed, so this is a fixed outcome, checked
    // against a bound a uniform spread meets with probability 1 - 2e-4.)
    assert!(per_target.iter().all(|&n| (40..=93).contains(&n)), "{per_target:?}");
}

/// The table the node builds for `targets` (default size, seed 0), as the fleet does.
fn fleet_table(targets: &[Ipv6Addr]) -> MaglevTable {
    let input =
        MaglevInput::with_default_size(targets.iter().copied().map(Target::new).collect(), 0).unwrap();
    MaglevTable::build(&input).unwrap()
}

/// The fleet's flow key of the client's datagram from `sport`.
fn flow_key(sport: u16) -> FlowKey {
    FlowKey {
        vni: topo::VNI1,
        src: IpAddr::V4(CLIENT),
        dst: IpAddr::V4(LB_IP),
        proto: UDP,
        src_port: sport,
        dst_port: LB_PORT,
    }
}

#[test]
fn maglev_keeps_established_flows_when_a_target_is_added() {
    let mut fx = Fixture::start_with("lb-sticky", &["--lb-selection=maglev"]);
    let mut pf0 = fx.pf_tap(0);
    let before = [target(2), target(3), target(4)];
    let lb_ul = create_lb(&mut fx, &before);
    let ports = 21_000..21_060u16;
    let first: Vec<Ipv6Addr> = ports.clone().map(|p| send_flow(&fx, &mut pf0, lb_ul, p)).collect();
    // A fourth target moves about a quarter of the table's entries...
    add_target(&mut fx, target(5));
    let after = fleet_table(&[target(2), target(3), target(4), target(5)]);
    let moved =
        ports.clone().zip(&first).filter(|&(p, t)| after.lookup_addr(flow_key(p).flow_hash()) != *t).count();
    assert!(moved > 0, "no established flow's entry moved: the test would prove nothing");
    // ...but every established flow stays on its target,
    for (p, t) in ports.zip(&first) {
        assert_eq!(send_flow(&fx, &mut pf0, lb_ul, p), *t, "established flow from port {p}");
    }
    // while new flows follow the new table.
    for p in 22_000..22_040u16 {
        assert_eq!(
            send_flow(&fx, &mut pf0, lb_ul, p),
            after.lookup_addr(flow_key(p).flow_hash()),
            "new flow {p}"
        );
    }
}

#[test]
fn round_robin_keeps_established_flows_on_their_target() {
    let mut fx = Fixture::start("lb-rr");
    let mut pf0 = fx.pf_tap(0);
    let lb_ul = create_lb(&mut fx, &[target(2), target(3)]);
    // dpservice's order: the second target first, then alternating.
    let first = send_flow(&fx, &mut pf0, lb_ul, 3000);
    let second = send_flow(&fx, &mut pf0, lb_ul, 3001);
    assert_eq!((first, second), (target(3), target(2)));
    add_target(&mut fx, target(4));
    // New flows now reach the third target too...
    let later: Vec<Ipv6Addr> = (3002..3005).map(|p| send_flow(&fx, &mut pf0, lb_ul, p)).collect();
    assert!(later.contains(&target(4)), "{later:?}");
    // ...while the established flows stay where they were.
    assert_eq!(send_flow(&fx, &mut pf0, lb_ul, 3000), first);
    assert_eq!(send_flow(&fx, &mut pf0, lb_ul, 3001), second);
}
