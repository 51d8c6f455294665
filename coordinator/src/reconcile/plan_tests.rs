//! Tests of the planner on realistic fleets, with a model of a node's API semantics that
//! refuses what a node refuses (a create of what exists, a route in a VNI the node does
//! not hold, overlapping NAT ranges, a delete of what is missing), so a plan in the wrong
//! order fails here as it would on a node.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::state::{
    Command, Direction, FirewallAction, FirewallRule, InterfaceSpec, LbPort, LoadBalancerSpec,
    NatGatewaySpec, Op, Protocol, Response, Route,
};

fn apply_ok(s: &mut FleetState, op: Op) -> Response {
    s.apply(Command::new(op.clone())).unwrap_or_else(|e| panic!("{op:?}: {e}"))
}

fn register(s: &mut FleetState, id: &str, i: u16) {
    apply_ok(
        s,
        Op::RegisterNode {
            id: id.into(),
            underlay: Ipv6Addr::new(0xfc00, i, 0, 0, 0, 0, 0, 1),
            api_endpoint: format!("[::1]:{}", 1336 + i),
            devices: vec!["net_tap2".into(), "net_tap3".into(), "net_tap4".into()],
        },
    );
    apply_ok(s, Op::SetNodeState { id: id.into(), state: NodeState::Active });
}

fn iface(s: &mut FleetState, id: &str, node: &str, vni: u32, host: u8) {
    apply_ok(
        s,
        Op::CreateInterface(InterfaceSpec {
            id: id.into(),
            vni,
            node: Some(node.into()),
            device: None,
            ipv4: Some(Ipv4Addr::new(10, 0, 0, host)),
            ipv6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(host))),
        }),
    );
}

fn web_rule() -> FirewallRule {
    FirewallRule {
        id: "web".into(),
        direction: Direction::Ingress,
        action: FirewallAction::Accept,
        priority: 100,
        source: Cidr { addr: "0.0.0.0".parse().unwrap(), len: 0 },
        destination: Cidr { addr: "10.0.0.0".parse().unwrap(), len: 24 },
        protocol: None,
    }
}

/// Three active nodes; VNI 100 with a, b, c on n1, n2, n3 and d on n1; a default route;
/// gateway `gw` (two IPs) with a, b and c attached; load balancer `lb` with interface
/// targets a (n1) and b (n2); a VIP on c; a firewall rule on a.
fn fleet() -> FleetState {
    let mut s = FleetState::new();
    for (i, n) in ["n1", "n2", "n3"].iter().enumerate() {
        register(&mut s, n, u16::try_from(i).unwrap() + 1);
    }
    apply_ok(&mut s, Op::CreateVni { vni: 100 });
    iface(&mut s, "a", "n1", 100, 1);
    iface(&mut s, "b", "n2", 100, 2);
    iface(&mut s, "c", "n3", 100, 3);
    iface(&mut s, "d", "n1", 100, 4);
    apply_ok(
        &mut s,
        Op::AddRoute(Route {
            vni: 100,
            prefix: Cidr { addr: "0.0.0.0".parse().unwrap(), len: 0 },
            next_hop_vni: 100,
            next_hop: "fc00:ffff::1".parse().unwrap(),
        }),
    );
    apply_ok(
        &mut s,
        Op::CreateNatGateway(NatGatewaySpec {
            id: "gw".into(),
            vni: 100,
            public_ips: vec![Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)],
            port_min: 1024,
            port_max: 65536,
            block_size: 32_256,
        }),
    );
    for i in ["a", "b", "c"] {
        apply_ok(&mut s, Op::AttachNat { gateway: "gw".into(), interface: i.into() });
    }
    apply_ok(
        &mut s,
        Op::CreateLoadBalancer(LoadBalancerSpec {
            id: "lb".into(),
            vni: 100,
            vip: "10.0.0.100".parse().unwrap(),
            ports: vec![LbPort { protocol: Protocol::Tcp, port: 80 }],
            targets: vec![],
            table_size: None,
        }),
    );
    for i in ["a", "b"] {
        apply_ok(&mut s, Op::AddLbInterfaceTarget { lb: "lb".into(), interface: i.into(), weight: 1 });
    }
    apply_ok(&mut s, Op::SetVip { interface: "c".into(), ip: Ipv4Addr::new(198, 51, 100, 7) });
    apply_ok(&mut s, Op::AddFirewallRule { interface: "a".into(), rule: web_rule() });
    s
}

/// Applies `action` as a node would, panicking where the node would refuse.
fn node_apply(n: &mut NodeActual, action: &Action) {
    fn vni_held(n: &NodeActual, vni: u32) -> bool {
        n.interfaces.values().any(|i| i.config.vni == vni)
            || n.load_balancers.values().any(|l| l.config.vni == vni)
    }
    fn forget_unheld(n: &mut NodeActual, vni: u32) {
        if !vni_held(n, vni) {
            n.routes.retain(|(v, _), _| *v != vni);
        }
    }
    fn ranges(n: &NodeActual) -> Vec<(Ipv4Addr, u16, u16)> {
        let local = n.interfaces.values().filter_map(|i| i.nat.map(|x| (x.ip, x.port_min, x.port_max)));
        local.chain(n.neighbor_nats.iter().map(|x| (x.ip, x.port_min, x.port_max))).collect()
    }
    fn check_disjoint(n: &NodeActual, ip: Ipv4Addr, min: u16, max: u16) {
        for (i, a, b) in ranges(n) {
            assert!(i != ip || b <= min || max <= a, "{ip}:[{min},{max}) overlaps [{a},{b}) (202)");
        }
    }
    fn iface<'a>(n: &'a mut NodeActual, id: &str) -> &'a mut InterfaceObjects {
        n.interfaces.get_mut(id).unwrap_or_else(|| panic!("NO_VM {id}"))
    }
    match action {
        Action::DeleteNeighborNat(x) => assert!(n.neighbor_nats.remove(x), "neighbor NAT {x:?} missing"),
        Action::DeleteRoute(r) => {
            assert!(vni_held(n, r.vni), "NO_VNI {}", r.vni);
            assert!(n.routes.remove(&(r.vni, r.prefix)).is_some(), "route {r:?} missing");
        }
        Action::DeleteLbPrefix { interface, prefix } => {
            assert!(iface(n, interface).lb_prefixes.remove(prefix));
        }
        Action::DeleteAliasPrefix { interface, prefix } => {
            assert!(iface(n, interface).alias_prefixes.remove(prefix));
        }
        Action::DeleteFirewallRule { interface, rule_id } => {
            assert!(iface(n, interface).firewall_rules.remove(rule_id).is_some());
        }
        Action::DeleteVip { interface } => assert!(iface(n, interface).vip.take().is_some()),
        Action::DeleteNat { interface } => assert!(iface(n, interface).nat.take().is_some()),
        Action::DeleteInterface { id } => {
            let gone = n.interfaces.remove(id).unwrap_or_else(|| panic!("interface {id} missing"));
            forget_unheld(n, gone.config.vni);
        }
        Action::DeleteLoadBalancer { id } => {
            let gone = n.load_balancers.remove(id).unwrap_or_else(|| panic!("LB {id} missing"));
            forget_unheld(n, gone.config.vni);
        }
        Action::CreateInterface(c) => {
            assert!(!n.interfaces.contains_key(&c.id), "VM_HANDLE {}", c.id);
            assert!(!n.interfaces.values().any(|i| i.config.device == c.device), "device {} taken", c.device);
            for addr in c.ipv4.map(IpAddr::V4).into_iter().chain(c.ipv6.map(IpAddr::V6)) {
                let key = (c.vni, Cidr { addr, len: host_len(addr) });
                assert!(!n.routes.contains_key(&key), "ROUTE_EXISTS: {addr} is routed elsewhere");
            }
            n.interfaces.insert(c.id.clone(), InterfaceObjects::bare(c.clone()));
        }
        Action::CreateLoadBalancer(c) => {
            assert!(!n.load_balancers.contains_key(&c.id), "LB {} exists", c.id);
            n.load_balancers
                .insert(c.id.clone(), LbActual { config: c.clone(), table: TableStatus::default() });
        }
        Action::CreateVip { interface, vip } => {
            assert!(iface(n, interface).vip.replace(*vip).is_none(), "SNAT_EXISTS");
        }
        Action::CreateNat { interface, nat } => {
            check_disjoint(n, nat.ip, nat.port_min, nat.port_max);
            assert!(iface(n, interface).nat.replace(*nat).is_none(), "SNAT_EXISTS");
        }
        Action::CreateFirewallRule { interface, rule } => {
            assert!(iface(n, interface).firewall_rules.insert(rule.id.clone(), rule.clone()).is_none());
        }
        Action::CreateLbPrefix { interface, prefix } => {
            assert!(iface(n, interface).lb_prefixes.insert(*prefix));
        }
        Action::CreateRoute(r) => {
            assert!(vni_held(n, r.vni), "NO_VNI {}", r.vni);
            assert!(n.routes.insert((r.vni, r.prefix), *r).is_none(), "ROUTE_EXISTS {r:?}");
        }
        Action::CreateNeighborNat(x) => {
            check_disjoint(n, x.ip, x.port_min, x.port_max);
            n.neighbor_nats.insert(*x);
        }
        Action::SetLoadBalancerTable { id, table } => {
            let lb = n.load_balancers.get_mut(id).expect("NOT_FOUND");
            assert!(
                table.epoch > lb.table.epoch
                    || (table.epoch == lb.table.epoch && table.digest == lb.table.digest),
                "FAILED_PRECONDITION: epoch {} after {}",
                table.epoch,
                lb.table.epoch
            );
            lb.table = TableStatus {
                epoch: table.epoch,
                digest: table.digest,
                table_size: table.table_size,
                targets: u32::try_from(table.targets.len()).unwrap(),
            };
        }
        Action::SetAppliedGeneration { generation, force } => {
            assert!(*force || *generation >= n.applied_generation);
            n.applied_generation = *generation;
        }
    }
}

/// Runs `diff` and applies it to `node`, then checks the node converged: a second diff is
/// empty. Returns the actions of the first diff.
fn converge(node: &mut NodeActual, desired: &NodeDesired) -> Vec<Action> {
    let actions = diff(node, desired);
    for a in &actions {
        node_apply(node, a);
    }
    assert_eq!(diff(node, desired), vec![], "not converged after {actions:#?}");
    actions
}

/// What a node holding exactly `d` reports.
fn holding(d: &NodeDesired) -> NodeActual {
    let mut n = NodeActual::default();
    converge(&mut n, d);
    n
}

fn host(addr: &str) -> Cidr {
    let addr: IpAddr = addr.parse().unwrap();
    Cidr { addr, len: host_len(addr) }
}

#[test]
fn desired_state_of_a_three_node_fleet() {
    let s = fleet();
    let ifs = s.interfaces();
    let gw = &s.nat_gateways()["gw"];
    let lb = &s.load_balancers()["lb"];
    let d1 = desired(&s, "n1").unwrap();
    assert_eq!(d1.generation, s.generation());
    assert_eq!(d1.vnis, BTreeSet::from([100]));
    assert!(d1.problems.is_empty(), "{:?}", d1.problems);
    assert_eq!(d1.interfaces.keys().collect::<Vec<_>>(), ["a", "d"]);
    let a = &d1.interfaces["a"];
    assert_eq!(a.config.underlay, ifs["a"].underlay);
    assert_eq!(a.config.device, ifs["a"].device);
    let block = gw.allocation("a").unwrap();
    // NatBlock [1024, 33280) goes to CreateNat as min 1024, max 33280 (both exclusive ends).
    assert_eq!(
        a.nat,
        Some(NatConfig {
            ip: block.ip,
            port_min: 1024,
            port_max: 33_280,
            underlay: ifs["a"].nat_underlay.unwrap()
        })
    );
    assert_eq!(a.firewall_rules.values().collect::<Vec<_>>(), [&web_rule()]);
    assert_eq!(
        a.lb_prefixes,
        BTreeSet::from([LbPrefix {
            addr: "10.0.0.100".parse().unwrap(),
            len: 32,
            underlay: lb.interface_targets["a"]
        }])
    );
    assert_eq!(d1.interfaces["d"].nat, None);
    assert!(d1.interfaces["d"].lb_prefixes.is_empty());

    // Routes: the state's default route, and host routes (v4 and v6) to b and c through
    // their underlay addresses; none to a or d, which are local.
    let routes: Vec<(Cidr, Ipv6Addr)> = d1.routes.values().map(|r| (r.prefix, r.next_hop)).collect();
    assert_eq!(
        routes,
        [
            (Cidr { addr: "0.0.0.0".parse().unwrap(), len: 0 }, "fc00:ffff::1".parse().unwrap()),
            (host("10.0.0.2"), ifs["b"].underlay),
            (host("10.0.0.3"), ifs["c"].underlay),
            (host("2001:db8::2"), ifs["b"].underlay),
            (host("2001:db8::3"), ifs["c"].underlay),
        ]
    );
    assert!(d1.routes.values().all(|r| r.vni == 100 && r.next_hop_vni == 100));

    // The shared gateway: every node holds a neighbor entry for the blocks of the others.
    let entry = |i: &str| {
        let b = gw.allocation(i).unwrap();
        NeighborNat {
            ip: b.ip,
            vni: 100,
            port_min: u16::try_from(b.port_min).unwrap(),
            port_max: u16::try_from(b.port_max.min(65_535)).unwrap(),
            underlay: ifs[i].nat_underlay.unwrap(),
        }
    };
    assert_eq!(d1.neighbor_nats, BTreeSet::from([entry("b"), entry("c")]));
    assert_eq!(desired(&s, "n2").unwrap().neighbor_nats, BTreeSet::from([entry("a"), entry("c")]));
    assert_eq!(desired(&s, "n3").unwrap().neighbor_nats, BTreeSet::from([entry("a"), entry("b")]));
    // c's block ends at 65536: the node API takes 65535 as the exclusive end.
    assert_eq!(gw.allocation("c").unwrap().port_max, 65_536);
    assert_eq!(entry("c").port_max, 65_535);

    // Every node holds the load balancer, on its own entry point, with the committed input.
    for n in ["n1", "n2", "n3"] {
        let d = desired(&s, n).unwrap();
        let l = &d.load_balancers["lb"];
        assert_eq!(l.config.underlay, lb.node_underlays[n]);
        let t = l.table.as_ref().unwrap();
        assert_eq!((t.epoch, t.digest, t.table_size), (lb.epoch, lb.table.unwrap().digest, lb.table_size));
        assert_eq!(t.targets, lb.targets);
        assert_eq!(t.targets.len(), 2);
        let input = lb.maglev_input().unwrap();
        let built = dpfleet_proto::maglev::MaglevTable::build(&input).unwrap();
        assert_eq!(built.digest(), t.digest);
        assert_eq!(input.seed, t.seed);
    }
    // c's VIP is on n3 only.
    let d3 = desired(&s, "n3").unwrap();
    assert_eq!(
        d3.interfaces["c"].vip,
        Some(VipConfig { ip: Ipv4Addr::new(198, 51, 100, 7), underlay: ifs["c"].vip.unwrap().underlay })
    );
    assert!(desired(&s, "n9").is_none());
}

#[test]
fn a_restarted_empty_node_gets_everything_in_dependency_order() {
    let s = fleet();
    let d = desired(&s, "n1").unwrap();
    let mut node = NodeActual::default();
    let actions = converge(&mut node, &d);
    let kind = |a: &Action| match a {
        Action::CreateInterface(_) => 0,
        Action::CreateLoadBalancer(_) => 1,
        Action::CreateVip { .. } => 2,
        Action::CreateNat { .. } => 3,
        Action::CreateFirewallRule { .. } => 4,
        Action::CreateLbPrefix { .. } => 5,
        Action::CreateRoute(_) => 6,
        Action::CreateNeighborNat(_) => 7,
        Action::SetLoadBalancerTable { .. } => 8,
        Action::SetAppliedGeneration { .. } => 9,
        other => panic!("an empty node needs no {other:?}"),
    };
    let kinds: Vec<i32> = actions.iter().map(kind).collect();
    assert!(kinds.windows(2).all(|w| w[0] <= w[1]), "{actions:#?}");
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::CreateInterface(_))).count(), 2);
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::CreateRoute(_))).count(), 5);
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::CreateNeighborNat(_))).count(), 2);
    assert_eq!(
        actions.last(),
        Some(&Action::SetAppliedGeneration { generation: s.generation(), force: false })
    );
    assert_eq!(node.applied_generation, s.generation());
    assert_eq!(node.load_balancers["lb"].table.targets, 2);
}

#[test]
fn a_node_declared_down_loses_its_neighbor_nats_and_routes_everywhere() {
    let mut s = fleet();
    let before: BTreeMap<&str, NodeActual> =
        ["n1", "n3"].into_iter().map(|n| (n, holding(&desired(&s, n).unwrap()))).collect();
    apply_ok(&mut s, Op::SetNodeState { id: "n2".into(), state: NodeState::Down });
    let b = s.interfaces()["b"].clone();
    for (n, mut node) in before {
        let actions = converge(&mut node, &desired(&s, n).unwrap());
        let mut want = vec![
            Action::DeleteNeighborNat(
                *node_neighbor_of(&holding(&desired(&fleet(), n).unwrap()), b.nat_underlay.unwrap()).unwrap(),
            ),
            Action::DeleteRoute(NodeRoute {
                vni: 100,
                prefix: host("10.0.0.2"),
                next_hop_vni: 100,
                next_hop: b.underlay,
            }),
            Action::DeleteRoute(NodeRoute {
                vni: 100,
                prefix: host("2001:db8::2"),
                next_hop_vni: 100,
                next_hop: b.underlay,
            }),
        ];
        want.push(Action::SetAppliedGeneration { generation: s.generation(), force: false });
        assert_eq!(actions, want, "on {n}");
    }
    // The load balancer keeps b's prefix as a target: the committed table is unchanged.
    assert_eq!(desired(&s, "n1").unwrap().load_balancers["lb"].table.as_ref().unwrap().targets.len(), 2);
}

fn node_neighbor_of(n: &NodeActual, underlay: Ipv6Addr) -> Option<&NeighborNat> {
    n.neighbor_nats.iter().find(|x| x.underlay == underlay)
}

#[test]
fn an_up_to_date_node_needs_nothing_and_a_lagging_generation_is_recorded() {
    let s = fleet();
    let d = desired(&s, "n2").unwrap();
    let mut node = holding(&d);
    assert_eq!(diff(&node, &d), vec![]);
    node.applied_generation = 3;
    assert_eq!(
        diff(&node, &d),
        vec![Action::SetAppliedGeneration { generation: s.generation(), force: false }]
    );
    // A node ahead of this state (a former leader's newer state) is set back: it holds this.
    node.applied_generation = s.generation() + 5;
    assert_eq!(
        diff(&node, &d),
        vec![Action::SetAppliedGeneration { generation: s.generation(), force: true }]
    );
}

#[test]
fn drift_is_repaired_with_deletes_before_creates() {
    let s = fleet();
    let d = desired(&s, "n1").unwrap();
    let mut node = holding(&d);
    // Someone changed the node behind the coordinator's back.
    let a = node.interfaces.get_mut("a").unwrap();
    a.vip = Some(VipConfig { ip: Ipv4Addr::new(198, 51, 100, 99), underlay: a.config.underlay });
    a.firewall_rules.get_mut("web").unwrap().priority = 7;
    a.alias_prefixes.insert(AliasPrefix { addr: "192.168.0.0".parse().unwrap(), len: 24 });
    a.nat = None;
    node.interfaces.get_mut("d").unwrap().config.device = "net_tap9".into();
    let stray = NodeRoute {
        vni: 100,
        prefix: host("10.0.0.77"),
        next_hop_vni: 100,
        next_hop: "fc00:9::1".parse().unwrap(),
    };
    node.routes.insert((100, stray.prefix), stray);
    let wrong_hop = node.routes.get_mut(&(100, host("10.0.0.2"))).unwrap();
    wrong_hop.next_hop = "fc00:9::2".parse().unwrap();
    let wrong_hop = *wrong_hop;
    let first = *node.neighbor_nats.first().unwrap();
    node.neighbor_nats.remove(&first);
    node.load_balancers.get_mut("lb").unwrap().table = TableStatus::default();
    node.applied_generation = 0;
    let actions = converge(&mut node, &d);
    let d_iface = &d.interfaces["d"];
    let want = vec![
        Action::DeleteRoute(wrong_hop),
        Action::DeleteRoute(stray),
        Action::DeleteAliasPrefix {
            interface: "a".into(),
            prefix: AliasPrefix { addr: "192.168.0.0".parse().unwrap(), len: 24 },
        },
        Action::DeleteFirewallRule { interface: "a".into(), rule_id: "web".into() },
        Action::DeleteVip { interface: "a".into() },
        Action::DeleteInterface { id: "d".into() },
        Action::CreateInterface(d_iface.config.clone()),
        Action::CreateNat { interface: "a".into(), nat: d.interfaces["a"].nat.unwrap() },
        Action::CreateFirewallRule { interface: "a".into(), rule: web_rule() },
        Action::CreateRoute(d.routes[&(100, host("10.0.0.2"))]),
        Action::CreateNeighborNat(first),
        Action::SetLoadBalancerTable {
            id: "lb".into(),
            table: d.load_balancers["lb"].table.clone().unwrap(),
        },
        Action::SetAppliedGeneration { generation: s.generation(), force: false },
    ];
    assert_eq!(actions, want);
}

#[test]
fn load_balancer_epochs_and_resets() {
    let mut s = fleet();
    let mut node = holding(&desired(&s, "n3").unwrap());
    // A new target: only the table moves on.
    apply_ok(&mut s, Op::AddLbInterfaceTarget { lb: "lb".into(), interface: "c".into(), weight: 3 });
    let d = desired(&s, "n3").unwrap();
    let actions = converge(&mut node, &d);
    assert!(matches!(&actions[0], Action::CreateLbPrefix { interface, .. } if interface == "c"));
    assert!(matches!(&actions[1], Action::SetLoadBalancerTable { table, .. } if table.targets.len() == 3));
    assert_eq!(actions.len(), 3);

    // The node holds a higher epoch (the LB was deleted and created again in the state,
    // starting over at epoch 1): it would refuse the table, so the LB is created afresh.
    node.load_balancers.get_mut("lb").unwrap().table.epoch = 99;
    let actions = converge(&mut node, &d);
    assert_eq!(actions[0], Action::DeleteLoadBalancer { id: "lb".into() });
    assert_eq!(actions[1], Action::CreateLoadBalancer(d.load_balancers["lb"].config.clone()));
    assert!(matches!(actions[2], Action::SetLoadBalancerTable { .. }));
    // Same epoch, another digest: also refused by the node, also recreated.
    node.load_balancers.get_mut("lb").unwrap().table.digest ^= 1;
    assert_eq!(converge(&mut node, &d)[0], Action::DeleteLoadBalancer { id: "lb".into() });

    // Without targets the LB must hold none.
    let t = s.load_balancers()["lb"].targets.clone();
    let by_addr: BTreeMap<Ipv6Addr, String> =
        s.load_balancers()["lb"].interface_targets.iter().map(|(i, a)| (*a, i.clone())).collect();
    for target in t {
        assert!(by_addr.contains_key(&target.addr));
        apply_ok(&mut s, Op::RemoveLbTarget { lb: "lb".into(), addr: target.addr });
    }
    let d = desired(&s, "n3").unwrap();
    assert_eq!(d.load_balancers["lb"].table, None);
    let actions = converge(&mut node, &d);
    assert!(actions.contains(&Action::DeleteLoadBalancer { id: "lb".into() }));
    assert!(actions.iter().any(|a| matches!(a, Action::DeleteLbPrefix { .. })));
    assert!(!actions.iter().any(|a| matches!(a, Action::SetLoadBalancerTable { .. })));
}

#[test]
fn an_interface_moving_between_nodes_replaces_its_host_route_first() {
    let mut s = fleet();
    let mut n2 = holding(&desired(&s, "n2").unwrap());
    let mut n3 = holding(&desired(&s, "n3").unwrap());
    // c (NATed, with a VIP) moves from n3 to n2, same addresses, same gateway.
    apply_ok(&mut s, Op::DeleteInterface { id: "c".into() });
    iface(&mut s, "c", "n2", 100, 3);
    apply_ok(&mut s, Op::AttachNat { gateway: "gw".into(), interface: "c".into() });
    let actions = converge(&mut n2, &desired(&s, "n2").unwrap());
    let pos = |p: &dyn Fn(&Action) -> bool| actions.iter().position(p).unwrap();
    let del_route = pos(&|a| matches!(a, Action::DeleteRoute(r) if r.prefix == host("10.0.0.3")));
    let create = pos(&|a| matches!(a, Action::CreateInterface(c) if c.id == "c"));
    assert!(del_route < create);
    // The block went back to the pool and to c again, now owned here: the neighbor entry
    // for it (owned by n3 before) goes before the local NAT comes.
    let del_neigh = pos(&|a| matches!(a, Action::DeleteNeighborNat(_)));
    let nat = pos(&|a| matches!(a, Action::CreateNat { .. }));
    assert!(del_neigh < nat);
    let actions = converge(&mut n3, &desired(&s, "n3").unwrap());
    assert!(actions.contains(&Action::DeleteInterface { id: "c".into() }));
    assert!(actions.iter().any(|a| matches!(a, Action::CreateRoute(r) if r.prefix == host("10.0.0.3"))));
}

#[test]
fn routes_of_a_vni_the_node_forgets_are_created_again() {
    let mut s = fleet();
    apply_ok(&mut s, Op::CreateVni { vni: 200 });
    iface(&mut s, "x", "n3", 200, 9);
    iface(&mut s, "y", "n2", 200, 10);
    let d = desired(&s, "n3").unwrap();
    assert!(d.vnis.contains(&200));
    let mut node = holding(&d);
    // x was recreated on the node with another device: the node dropped VNI 200 and its
    // route to y when x went, so the route is created again after x.
    node.interfaces.get_mut("x").unwrap().config.device = "net_tap9".into();
    let actions = converge(&mut node, &d);
    assert_eq!(
        actions,
        vec![
            Action::DeleteInterface { id: "x".into() },
            Action::CreateInterface(d.interfaces["x"].config.clone()),
            Action::CreateRoute(d.routes[&(200, host("10.0.0.10"))]),
            Action::CreateRoute(d.routes[&(200, host("2001:db8::a"))]),
        ]
    );
    // n1 holds nothing in VNI 200: no route there (the node would refuse it).
    assert!(desired(&s, "n1").unwrap().routes.keys().all(|(v, _)| *v == 100));
}

#[test]
fn inexpressible_parts_are_reported_not_sent() {
    let mut s = fleet();
    let mut rule = web_rule();
    rule.id = "high".into();
    rule.priority = 70_000;
    apply_ok(&mut s, Op::AddFirewallRule { interface: "a".into(), rule });
    let d = desired(&s, "n1").unwrap();
    assert!(!d.interfaces["a"].firewall_rules.contains_key("high"));
    assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    assert_eq!(node_ports(65_535, 65_536), None);
    assert_eq!(node_ports(1024, 65_536), Some((1024, 65_535)));
    assert_eq!(node_ports(1024, 2048), Some((1024, 2048)));
}

/// Every node follows a long history of changes, each step planned from what it held
/// after the previous one, and converges every time (checked by the node model).
#[test]
fn nodes_follow_a_history_of_changes() {
    let mut s = fleet();
    let names = ["n1", "n2", "n3"];
    let mut nodes: BTreeMap<&str, NodeActual> = names.iter().map(|n| (*n, NodeActual::default())).collect();
    let mut step = |s: &FleetState| {
        for n in names {
            let node = nodes.get_mut(n).unwrap();
            converge(node, &desired(s, n).unwrap());
        }
    };
    step(&s);
    let ops = vec![
        Op::DetachNat { gateway: "gw".into(), interface: "b".into() },
        Op::AttachNat { gateway: "gw".into(), interface: "d".into() },
        Op::DeleteVip { interface: "c".into() },
        Op::SetVip { interface: "d".into(), ip: Ipv4Addr::new(198, 51, 100, 7) },
        Op::CreateVni { vni: 300 },
        Op::DeleteFirewallRule { interface: "a".into(), rule_id: "web".into() },
        Op::SetNodeState { id: "n3".into(), state: NodeState::Down },
        Op::SetNodeState { id: "n3".into(), state: NodeState::Active },
        Op::DeleteRoute { vni: 100, prefix: Cidr { addr: "0.0.0.0".parse().unwrap(), len: 0 } },
        Op::RemoveLbTarget { lb: "lb".into(), addr: s.load_balancers()["lb"].interface_targets["a"] },
        Op::DeleteInterface { id: "a".into() },
        Op::DeleteLoadBalancer { id: "lb".into() },
        Op::CreateLoadBalancer(LoadBalancerSpec {
            id: "lb".into(),
            vni: 100,
            vip: "10.0.0.100".parse().unwrap(),
            ports: vec![LbPort { protocol: Protocol::Udp, port: 53 }],
            targets: vec![],
            table_size: None,
        }),
        Op::AddLbInterfaceTarget { lb: "lb".into(), interface: "c".into(), weight: 2 },
        Op::DeleteInterface { id: "d".into() },
    ];
    for op in ops {
        apply_ok(&mut s, op);
        step(&s);
    }
    iface(&mut s, "e", "n3", 100, 20);
    step(&s);
}

#[test]
fn synthetic_fleet_plans_every_node() {
    let s = crate::reconcile::bench::synthetic_fleet(10, 1_000);
    let (desired_objects, _) = crate::reconcile::bench::plan_all(&s);
    // Every node: its 100 interfaces, host routes (v4) to the 900 remote interfaces of
    // its VNIs... each VNI spans the nodes its 100 interfaces were placed on.
    assert!(desired_objects > 10 * 100);
    let d = desired(&s, "node0").unwrap();
    assert_eq!(d.interfaces.len(), 100);
    assert_eq!(d.neighbor_nats.len(), 900);
    assert!(d.problems.is_empty());
}
