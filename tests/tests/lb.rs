//! Load balancers end to end: with `--lb-selection=maglev` every new flow goes to the
//! target the fleet's Maglev table (`dpfleet_proto::maglev`, as the node builds it:
//! default size, seed 0) gives for the flow's hash, the flows spread within a stated
//! bound, and established flows keep their target when one is added while new flows
//! follow the new table; with dpservice's round robin an established flow keeps its
//! target when targets are added. Flows arrive from the
//! router encapsulated to the LB's underlay address and leave PF0 re-encapsulated to
//! their target.

use std::net::{IpAddr, Ipv6Addr};

use dpfleet_e2e::api::{self, ok};
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::lbflow::{self, flow_key, send};
use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::maglev::{MaglevInput, MaglevTable, Target};

fn target(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfc00, n, 0, 0, 0, 0, 0, 1)
}

/// Creates the UDP load balancer of [`lbflow`] with `targets`; returns its underlay
/// address.
fn create_lb(fx: &mut Fixture, targets: &[Ipv6Addr]) -> Ipv6Addr {
    let ul = lbflow::create(fx, b"lb-e2e");
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
        assert_eq!(send(&fx, &mut pf0, lb_ul, sport), want, "flow from port {sport}");
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

#[test]
fn maglev_keeps_established_flows_when_a_target_is_added() {
    let mut fx = Fixture::start_with("lb-sticky", &["--lb-selection=maglev"]);
    let mut pf0 = fx.pf_tap(0);
    let before = [target(2), target(3), target(4)];
    let lb_ul = create_lb(&mut fx, &before);
    let ports = 21_000..21_060u16;
    let first: Vec<Ipv6Addr> = ports.clone().map(|p| send(&fx, &mut pf0, lb_ul, p)).collect();
    // A fourth target moves about a quarter of the table's entries...
    add_target(&mut fx, target(5));
    let after = fleet_table(&[target(2), target(3), target(4), target(5)]);
    let moved =
        ports.clone().zip(&first).filter(|&(p, t)| after.lookup_addr(flow_key(p).flow_hash()) != *t).count();
    assert!(moved > 0, "no established flow's entry moved: the test would prove nothing");
    // ...but every established flow stays on its target,
    for (p, t) in ports.zip(&first) {
        assert_eq!(send(&fx, &mut pf0, lb_ul, p), *t, "established flow from port {p}");
    }
    // while new flows follow the new table.
    for p in 22_000..22_040u16 {
        assert_eq!(send(&fx, &mut pf0, lb_ul, p), after.lookup_addr(flow_key(p).flow_hash()), "new flow {p}");
    }
}

#[test]
fn round_robin_keeps_established_flows_on_their_target() {
    let mut fx = Fixture::start("lb-rr");
    let mut pf0 = fx.pf_tap(0);
    let lb_ul = create_lb(&mut fx, &[target(2), target(3)]);
    // dpservice's order: the second target first, then alternating.
    let first = send(&fx, &mut pf0, lb_ul, 3000);
    let second = send(&fx, &mut pf0, lb_ul, 3001);
    assert_eq!((first, second), (target(3), target(2)));
    add_target(&mut fx, target(4));
    // New flows now reach the third target too...
    let later: Vec<Ipv6Addr> = (3002..3005).map(|p| send(&fx, &mut pf0, lb_ul, p)).collect();
    assert!(later.contains(&target(4)), "{later:?}");
    // ...while the established flows stay where they were.
    assert_eq!(send(&fx, &mut pf0, lb_ul, 3000), first);
    assert_eq!(send(&fx, &mut pf0, lb_ul, 3001), second);
}
