//! Tests of `FleetState::apply` as a whole: validation, references, dedup and
//! determinism. The NAT allocator and the load balancers have their own tests.

use super::*;
use proptest::prelude::*;

fn node(id: &str, i: u16) -> Op {
    Op::RegisterNode {
        id: id.into(),
        underlay: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i),
        api_endpoint: format!("[fd00::{i}]:1337"),
        devices: vec![],
    }
}

fn iface(id: &str, node: &str, last: u8) -> Op {
    Op::CreateInterface(InterfaceSpec {
        id: id.into(),
        vni: 100,
        node: Some(node.into()),
        device: Some(format!("dev-{id}")),
        ipv4: Some(Ipv4Addr::new(10, 0, 0, last)),
        ipv6: None,
    })
}

fn gateway(id: &str, first_port: u32) -> Op {
    Op::CreateNatGateway(NatGatewaySpec {
        id: id.into(),
        vni: 100,
        public_ips: vec![Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)],
        port_min: first_port,
        port_max: first_port + 1000,
        block_size: 500,
    })
}

/// A state with two nodes, VNI 100 and gateway `gw`.
fn base() -> FleetState {
    let mut s = FleetState::new();
    for op in [node("n1", 1), node("n2", 2), Op::CreateVni { vni: 100 }, gateway("gw", 1024)] {
        s.apply(Command::new(op)).unwrap();
    }
    s
}

fn ok(s: &mut FleetState, op: Op) -> Response {
    s.apply(Command::new(op)).unwrap()
}

/// Applies `op`, expects `want` and checks the state did not change.
fn refused(s: &mut FleetState, op: Op, want: ApplyError) {
    let before = s.clone();
    assert_eq!(s.apply(Command::new(op)), Err(want));
    assert_eq!(*s, before);
}

#[test]
fn interfaces_need_a_vni_an_accepting_node_and_free_addresses() {
    let mut s = base();
    ok(&mut s, iface("a", "n1", 1));
    assert_eq!(s.interfaces()["a"].node, "n1");
    refused(&mut s, iface("a", "n1", 2), exists(ObjectKind::Interface, "a"));
    refused(&mut s, iface("b", "n9", 2), not_found(ObjectKind::Node, "n9"));
    refused(
        &mut s,
        iface("b", "n2", 1),
        ApplyError::AddressInUse { vni: 100, addr: "10.0.0.1".parse().unwrap(), by: "a".into() },
    );
    let mut other_vni = InterfaceSpec {
        id: "b".into(),
        vni: 200,
        node: Some("n2".into()),
        device: Some("dev-b".into()),
        ipv4: None,
        ipv6: None,
    };
    refused(&mut s, Op::CreateInterface(other_vni.clone()), not_found(ObjectKind::Vni, 200));
    ok(&mut s, Op::CreateVni { vni: 200 });
    other_vni.ipv4 = Some(Ipv4Addr::new(10, 0, 0, 1));
    ok(&mut s, Op::CreateInterface(other_vni)); // the same address in another VNI is fine
    ok(&mut s, Op::SetNodeState { id: "n2".into(), state: NodeState::Draining });
    refused(
        &mut s,
        iface("c", "n2", 3),
        ApplyError::NodeNotAccepting { node: "n2".into(), state: NodeState::Draining },
    );
    refused(
        &mut s,
        Op::RemoveNode { id: "n1".into() },
        ApplyError::InUse { kind: ObjectKind::Node, id: "n1".into(), by: "interface a".into() },
    );
    refused(
        &mut s,
        Op::DeleteVni { vni: 100 },
        ApplyError::InUse { kind: ObjectKind::Vni, id: "100".into(), by: "interface a".into() },
    );
    ok(&mut s, Op::DeleteInterface { id: "a".into() });
    ok(&mut s, iface("c", "n1", 1)); // the address is free again
}

#[test]
fn registering_a_known_node_updates_it_and_keeps_its_state() {
    let mut s = base();
    ok(&mut s, Op::SetNodeState { id: "n1".into(), state: NodeState::Active });
    ok(&mut s, node("n1", 9));
    let n = &s.nodes()["n1"];
    assert_eq!((n.state, n.underlay), (NodeState::Active, "fd00::9".parse().unwrap()));
    assert_eq!(s.nodes()["n2"].state, NodeState::Joining);
}

#[test]
fn routes_reject_bad_prefixes_and_duplicates() {
    let mut s = base();
    let route = |addr: &str, len| {
        Op::AddRoute(Route {
            vni: 100,
            prefix: Cidr { addr: addr.parse().unwrap(), len },
            next_hop_vni: 100,
            next_hop: "fd00::1".parse().unwrap(),
        })
    };
    ok(&mut s, route("10.1.0.0", 16));
    refused(&mut s, route("10.1.0.0", 16), exists(ObjectKind::Route, "10.1.0.0/16 in VNI 100"));
    let before = s.clone();
    for bad in [route("10.1.0.1", 16), route("10.1.0.0", 33), route("fd00::", 129)] {
        assert!(matches!(s.apply(Command::new(bad)), Err(ApplyError::InvalidPrefix(_))));
        assert_eq!(s, before);
    }
    assert_eq!(s.routes().count(), 1);
    ok(&mut s, Op::DeleteRoute { vni: 100, prefix: Cidr { addr: "10.1.0.0".parse().unwrap(), len: 16 } });
    assert_eq!(s.routes().count(), 0);
}

#[test]
fn nat_attach_detach_and_exhaustion() {
    let mut s = base();
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        ok(&mut s, iface(name, "n1", i as u8 + 1));
    }
    // Two IPs with two blocks of 500 ports each: four blocks.
    let mut blocks = Vec::new();
    for name in ["a", "b", "c", "d"] {
        match ok(&mut s, Op::AttachNat { gateway: "gw".into(), interface: name.into() }) {
            Response::NatBlock { block, .. } => blocks.push(block),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(blocks.iter().filter(|b| b.ip == Ipv4Addr::new(203, 0, 113, 1)).count(), 2);
    refused(
        &mut s,
        Op::AttachNat { gateway: "gw".into(), interface: "e".into() },
        ApplyError::PoolExhausted { gateway: "gw".into(), blocks: 4 },
    );
    refused(
        &mut s,
        Op::AttachNat { gateway: "gw".into(), interface: "a".into() },
        exists(ObjectKind::NatAttachment, "a on gw"),
    );
    refused(
        &mut s,
        Op::DeleteNatGateway { id: "gw".into() },
        ApplyError::InUse { kind: ObjectKind::NatGateway, id: "gw".into(), by: "interface a".into() },
    );
    // Deleting an interface releases its block, which the next attachment reuses.
    ok(&mut s, Op::DeleteInterface { id: "b".into() });
    let Response::NatBlock { block, .. } =
        ok(&mut s, Op::AttachNat { gateway: "gw".into(), interface: "e".into() })
    else {
        panic!("no block")
    };
    assert_eq!(block, blocks[1]);
    ok(&mut s, Op::DetachNat { gateway: "gw".into(), interface: "e".into() });
    refused(
        &mut s,
        Op::DetachNat { gateway: "gw".into(), interface: "e".into() },
        not_found(ObjectKind::NatAttachment, "e on gw"),
    );
}

#[test]
fn nat_gateways_must_not_overlap() {
    let mut s = base();
    refused(
        &mut s,
        gateway("gw2", 2000),
        ApplyError::OverlappingRange { ip: Ipv4Addr::new(203, 0, 113, 1), other: "gw".into() },
    );
    ok(&mut s, gateway("gw2", 2024));
    ok(&mut s, Op::CreateVni { vni: 200 });
    ok(
        &mut s,
        Op::CreateInterface(InterfaceSpec {
            id: "x".into(),
            vni: 200,
            node: Some("n1".into()),
            device: Some("dev-x".into()),
            ipv4: None,
            ipv6: Some("fd01::1".parse().unwrap()),
        }),
    );
    refused(
        &mut s,
        Op::AttachNat { gateway: "gw".into(), interface: "x".into() },
        ApplyError::VniMismatch { interface: "x".into(), interface_vni: 200, vni: 100 },
    );
}

#[test]
fn load_balancer_epochs_follow_changes() {
    let mut s = base();
    let target = |i| LbTarget { addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i), weight: 1 };
    let spec = LoadBalancerSpec {
        id: "web".into(),
        vni: 100,
        vip: "10.0.0.200".parse().unwrap(),
        ports: vec![LbPort { protocol: Protocol::Tcp, port: 80 }],
        targets: vec![target(1)],
        table_size: None,
    };
    let Response::LoadBalancer { epoch: 1, table: Some(t1), .. } =
        ok(&mut s, Op::CreateLoadBalancer(spec.clone()))
    else {
        panic!("no table")
    };
    refused(&mut s, Op::CreateLoadBalancer(spec), exists(ObjectKind::LoadBalancer, "web"));
    let Response::LoadBalancer { epoch: 2, table: Some(t2), .. } =
        ok(&mut s, Op::AddLbTarget { lb: "web".into(), target: target(2) })
    else {
        panic!("no table")
    };
    assert_ne!(t1.digest, t2.digest);
    let lb = &s.load_balancers()["web"];
    let built = dpfleet_proto::maglev::MaglevTable::build(&lb.maglev_input().unwrap()).unwrap();
    assert_eq!(built.digest(), t2.digest);
    refused(
        &mut s,
        Op::RemoveLbTarget { lb: "web".into(), addr: target(3).addr },
        not_found(ObjectKind::LbTarget, "fd00::3 of web"),
    );
    ok(&mut s, Op::DeleteLoadBalancer { id: "web".into() });
    assert!(s.load_balancers().is_empty());
}

#[test]
fn a_retried_request_is_applied_once() {
    let mut s = base();
    ok(&mut s, iface("a", "n1", 1));
    let attach =
        Command::with_request_id("req-1", Op::AttachNat { gateway: "gw".into(), interface: "a".into() });
    let first = s.apply(attach.clone()).unwrap();
    let after_first = s.clone();
    assert_eq!(s.apply(attach), Ok(first));
    assert_eq!(s, after_first);
    // The same id for another command is refused.
    let other = Command::with_request_id("req-1", Op::CreateVni { vni: 7 });
    assert_eq!(s.apply(other), Err(ApplyError::RequestIdReused("req-1".into())));
    assert_eq!(s, after_first);
    // A refused command is not remembered: retried later, it is tried afresh.
    let create = Command::with_request_id("req-2", iface("b", "n9", 2));
    assert!(s.apply(create).is_err());
    ok(&mut s, node("n9", 9));
    assert!(s.apply(Command::with_request_id("req-2", iface("b", "n9", 2))).is_ok());
}

#[test]
fn dedup_memory_is_bounded() {
    let mut s = FleetState::new();
    for i in 0..DEDUP_CAPACITY + 10 {
        s.apply(Command::with_request_id(format!("r{i}"), node(&format!("n{i}"), 1))).unwrap();
    }
    assert_eq!(s.dedup.len(), DEDUP_CAPACITY);
    // The oldest ids are forgotten, so their retry applies again (here: an idempotent
    // re-registration that bumps the generation).
    let g = s.generation();
    s.apply(Command::with_request_id("r0", node("n0", 1))).unwrap();
    assert_eq!(s.generation(), g + 1);
    s.apply(Command::with_request_id("r20", node("n20", 1))).unwrap();
    assert_eq!(s.generation(), g + 1);
}

/// Random commands over a small name space, so that they collide and fail often.
fn arb_op() -> impl Strategy<Value = Op> {
    let name = |p: &'static str| (0u8..6).prop_map(move |i| format!("{p}{i}"));
    prop_oneof![
        (name("n"), 1u16..4).prop_map(|(n, i)| node(&n, i)),
        (name("n"), prop_oneof![Just(NodeState::Active), Just(NodeState::Draining), Just(NodeState::Down)])
            .prop_map(|(id, state)| Op::SetNodeState { id, state }),
        name("n").prop_map(|id| Op::RemoveNode { id }),
        prop_oneof![Just(100u32), Just(200)].prop_map(|vni| Op::CreateVni { vni }),
        prop_oneof![Just(100u32), Just(200)].prop_map(|vni| Op::DeleteVni { vni }),
        (name("i"), name("n"), 1u8..8).prop_map(|(i, n, a)| iface(&i, &n, a)),
        name("i").prop_map(|id| Op::DeleteInterface { id }),
        (name("g"), prop_oneof![Just(1024u32), Just(1500), Just(3000)]).prop_map(|(g, p)| gateway(&g, p)),
        name("g").prop_map(|id| Op::DeleteNatGateway { id }),
        (name("g"), name("i")).prop_map(|(gateway, interface)| Op::AttachNat { gateway, interface }),
        (name("g"), name("i")).prop_map(|(gateway, interface)| Op::DetachNat { gateway, interface }),
        (name("l"), 1u16..5).prop_map(|(lb, i)| Op::AddLbTarget {
            lb,
            target: LbTarget { addr: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i), weight: u32::from(i) },
        }),
        (name("l"), name("i"), 1u32..3).prop_map(|(lb, interface, weight)| Op::AddLbInterfaceTarget {
            lb,
            interface,
            weight
        }),
        (name("i"), 1u8..4)
            .prop_map(|(interface, i)| Op::SetVip { interface, ip: Ipv4Addr::new(203, 0, 113, i) }),
        name("i").prop_map(|interface| Op::DeleteVip { interface }),
        (name("i"), name("r")).prop_map(|(interface, id)| Op::AddFirewallRule {
            interface,
            rule: rule(&id, FirewallAction::Accept, None)
        }),
        name("l").prop_map(|id| Op::CreateLoadBalancer(LoadBalancerSpec {
            id,
            vni: 100,
            vip: "10.0.0.200".parse().unwrap(),
            ports: vec![LbPort { protocol: Protocol::Udp, port: 53 }],
            targets: vec![],
            table_size: None,
        })),
    ]
}

fn arb_command() -> impl Strategy<Value = Command> {
    (arb_op(), prop::option::of(0u8..10))
        .prop_map(|(op, id)| Command { request_id: id.map(|i| format!("req{i}")), op })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Two replicas applying the same log reach equal states and return equal responses,
    /// also when one of them restarts from a snapshot (a JSON round trip of its state)
    /// half-way; and every refused command left the state unchanged.
    #[test]
    fn apply_is_deterministic(log in prop::collection::vec(arb_command(), 1..120), cut in 0usize..120) {
        let mut a = FleetState::new();
        let mut b = FleetState::new();
        for (i, cmd) in log.into_iter().enumerate() {
            if i == cut {
                let bytes = serde_json::to_vec(&b).unwrap();
                b = serde_json::from_slice(&bytes).unwrap();
            }
            let before = a.clone();
            let ra = a.apply(cmd.clone());
            let rb = b.apply(cmd);
            prop_assert_eq!(&ra, &rb);
            prop_assert_eq!(&a, &b);
            if ra.is_err() {
                prop_assert_eq!(&a, &before);
            } else {
                prop_assert!(a.generation() >= before.generation());
            }
            // The NAT invariant holds across gateways too (they may share public IPs).
            let blocks: Vec<NatBlock> =
                a.nat_gateways().values().flat_map(|g| g.allocations().map(|(_, b)| b)).collect();
            for (x, p) in blocks.iter().enumerate() {
                for q in &blocks[x + 1..] {
                    prop_assert!(!p.overlaps(q));
                }
            }
        }
        // Snapshots of equal states are byte-identical.
        prop_assert_eq!(serde_json::to_vec(&a).unwrap(), serde_json::to_vec(&b).unwrap());
    }
}

fn node_with_devices(id: &str, i: u16, devices: &[&str]) -> Op {
    Op::RegisterNode {
        id: id.into(),
        underlay: Ipv6Addr::new(0xfd00, 0, 0, i, 0, 0, 0, 1),
        api_endpoint: format!("[fd00:0:0:{i}::1]:1337"),
        devices: devices.iter().map(|d| d.to_string()).collect(),
    }
}

fn placed(id: &str, last: u8, device: Option<&str>) -> Op {
    Op::CreateInterface(InterfaceSpec {
        id: id.into(),
        vni: 100,
        node: None,
        device: device.map(Into::into),
        ipv4: Some(Ipv4Addr::new(10, 1, 0, last)),
        ipv6: None,
    })
}

fn created(r: Response) -> Interface {
    match r {
        Response::Interface { interface, .. } => interface,
        other => panic!("expected an interface, got {other:?}"),
    }
}

#[test]
fn placement_prefers_active_nodes_with_the_fewest_interfaces_and_a_free_device() {
    let mut s = FleetState::new();
    ok(&mut s, Op::CreateVni { vni: 100 });
    refused(
        &mut s,
        placed("a", 1, None),
        ApplyError::NoCapacity("no active or joining node has a free device".into()),
    );
    ok(&mut s, node_with_devices("n1", 1, &["vf0", "vf1"]));
    ok(&mut s, node_with_devices("n2", 2, &["vf0"]));
    // Both joining: the first by name.
    let a = created(ok(&mut s, placed("a", 1, None)));
    assert_eq!((a.node.as_str(), a.device.as_str()), ("n1", "vf0"));
    // n2 becomes active: it wins although n1 has a free device too.
    ok(&mut s, Op::SetNodeState { id: "n2".into(), state: NodeState::Active });
    let b = created(ok(&mut s, placed("b", 2, None)));
    assert_eq!((b.node.as_str(), b.device.as_str()), ("n2", "vf0"));
    // n2 is full; the only active node: placement falls back to joining n1.
    let c = created(ok(&mut s, placed("c", 3, None)));
    assert_eq!((c.node.as_str(), c.device.as_str()), ("n1", "vf1"));
    refused(
        &mut s,
        placed("d", 4, None),
        ApplyError::NoCapacity("no active or joining node has a free device".into()),
    );
    // A named device that a node does not offer, or uses already, is refused.
    let on_n1 = |id: &str, dev: &str| {
        Op::CreateInterface(InterfaceSpec {
            id: id.into(),
            vni: 100,
            node: Some("n1".into()),
            device: Some(dev.into()),
            ipv4: Some(Ipv4Addr::new(10, 1, 0, 9)),
            ipv6: None,
        })
    };
    assert!(matches!(s.clone().apply(Command::new(on_n1("d", "vf7"))), Err(ApplyError::InvalidArgument(_))));
    assert!(matches!(s.clone().apply(Command::new(on_n1("d", "vf1"))), Err(ApplyError::InUse { .. })));
    ok(&mut s, Op::DeleteInterface { id: "c".into() });
    ok(&mut s, on_n1("d", "vf1"));
}

#[test]
fn underlay_addresses_are_in_the_node_prefix_flagged_and_never_repeat() {
    let mut s = FleetState::new();
    ok(&mut s, Op::CreateVni { vni: 100 });
    ok(&mut s, node_with_devices("n1", 1, &["vf0", "vf1"]));
    ok(&mut s, node_with_devices("n2", 2, &["vf0"]));
    ok(&mut s, gateway("gw", 1024));
    let a = created(ok(&mut s, placed("a", 1, None)));
    let b = created(ok(&mut s, placed("b", 2, None)));
    let Response::NatBlock { underlay: nat_a, .. } =
        ok(&mut s, Op::AttachNat { gateway: "gw".into(), interface: "a".into() })
    else {
        panic!("no block")
    };
    ok(&mut s, Op::SetVip { interface: "b".into(), ip: Ipv4Addr::new(198, 51, 100, 7) });
    let vip_b = s.interfaces()["b"].vip.unwrap().underlay;
    let mut seen = BTreeSet::new();
    for (addr, node) in [(a.underlay, "n1"), (b.underlay, "n2"), (nat_a, "n1"), (vip_b, "n2")] {
        let o = addr.octets();
        assert_eq!(o[..8], s.nodes()[node].underlay.octets()[..8], "{addr} not in {node}'s /64");
        assert_eq!(o[10], EXTERNAL_FLAG);
        assert!(seen.insert(addr), "{addr} handed out twice");
    }
    assert_eq!(s.interfaces()["a"].nat_underlay, Some(nat_a));
    ok(&mut s, Op::DetachNat { gateway: "gw".into(), interface: "a".into() });
    assert_eq!(s.interfaces()["a"].nat_underlay, None);
    let Response::NatBlock { underlay: again, .. } =
        ok(&mut s, Op::AttachNat { gateway: "gw".into(), interface: "a".into() })
    else {
        panic!("no block")
    };
    assert!(seen.insert(again), "a released underlay address is not reused");
}

#[test]
fn vips_are_unique_and_never_a_nat_ip() {
    let mut s = FleetState::new();
    ok(&mut s, Op::CreateVni { vni: 100 });
    ok(&mut s, node_with_devices("n1", 1, &["vf0", "vf1"]));
    ok(&mut s, gateway("gw", 1024));
    ok(&mut s, placed("a", 1, None));
    ok(&mut s, placed("b", 2, None));
    let vip = Ipv4Addr::new(198, 51, 100, 7);
    ok(&mut s, Op::SetVip { interface: "a".into(), ip: vip });
    refused(&mut s, Op::SetVip { interface: "a".into(), ip: vip }, exists(ObjectKind::Vip, "of a"));
    refused(
        &mut s,
        Op::SetVip { interface: "b".into(), ip: vip },
        ApplyError::AddressInUse { vni: 100, addr: IpAddr::V4(vip), by: "a".into() },
    );
    let nat_ip = Ipv4Addr::new(203, 0, 113, 1);
    refused(
        &mut s,
        Op::SetVip { interface: "b".into(), ip: nat_ip },
        ApplyError::InvalidArgument("203.0.113.1 is a public IP of NAT gateway gw".into()),
    );
    ok(&mut s, Op::DeleteVip { interface: "a".into() });
    refused(&mut s, Op::DeleteVip { interface: "a".into() }, not_found(ObjectKind::Vip, "of a"));
}

fn rule(id: &str, action: FirewallAction, protocol: Option<ProtocolFilter>) -> FirewallRule {
    FirewallRule {
        id: id.into(),
        direction: Direction::Ingress,
        action,
        priority: 1000,
        source: Cidr::new("0.0.0.0".parse().unwrap(), 0).unwrap(),
        destination: Cidr::new("10.1.0.0".parse().unwrap(), 16).unwrap(),
        protocol,
    }
}

#[test]
fn firewall_rules_are_checked_and_unique_per_interface() {
    let mut s = FleetState::new();
    ok(&mut s, Op::CreateVni { vni: 100 });
    ok(&mut s, node_with_devices("n1", 1, &["vf0"]));
    ok(&mut s, placed("a", 1, None));
    let tcp80 =
        Some(ProtocolFilter::Tcp { src_ports: None, dst_ports: Some(PortRange { lower: 80, upper: 80 }) });
    ok(
        &mut s,
        Op::AddFirewallRule { interface: "a".into(), rule: rule("web", FirewallAction::Accept, tcp80) },
    );
    refused(
        &mut s,
        Op::AddFirewallRule { interface: "a".into(), rule: rule("web", FirewallAction::Accept, None) },
        exists(ObjectKind::FirewallRule, "web of a"),
    );
    for bad in [
        rule("d", FirewallAction::Drop, None),
        rule(
            "r",
            FirewallAction::Accept,
            Some(ProtocolFilter::Udp { src_ports: Some(PortRange { lower: 9, upper: 8 }), dst_ports: None }),
        ),
        rule("", FirewallAction::Accept, None),
    ] {
        let before = s.clone();
        let r = s.apply(Command::new(Op::AddFirewallRule { interface: "a".into(), rule: bad }));
        assert!(matches!(r, Err(ApplyError::InvalidArgument(_))), "{r:?}");
        assert_eq!(s, before);
    }
    ok(&mut s, Op::DeleteFirewallRule { interface: "a".into(), rule_id: "web".into() });
    refused(
        &mut s,
        Op::DeleteFirewallRule { interface: "a".into(), rule_id: "web".into() },
        not_found(ObjectKind::FirewallRule, "web of a"),
    );
}

#[test]
fn load_balancers_get_an_entry_on_every_node_and_interfaces_as_targets() {
    let mut s = FleetState::new();
    ok(&mut s, Op::CreateVni { vni: 100 });
    ok(&mut s, node_with_devices("n1", 1, &["vf0"]));
    ok(&mut s, node_with_devices("n2", 2, &["vf0"]));
    ok(&mut s, placed("a", 1, None));
    ok(
        &mut s,
        Op::CreateLoadBalancer(LoadBalancerSpec {
            id: "lb".into(),
            vni: 100,
            vip: "203.0.113.20".parse().unwrap(),
            ports: vec![LbPort { protocol: Protocol::Tcp, port: 80 }],
            targets: vec![],
            table_size: None,
        }),
    );
    assert_eq!(s.load_balancers()["lb"].node_underlays.len(), 2);
    // A node joining later gets an entry too.
    ok(&mut s, node_with_devices("n3", 3, &["vf0"]));
    let entries = &s.load_balancers()["lb"].node_underlays;
    assert_eq!(entries.keys().collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    assert_eq!(entries["n3"].octets()[..8], s.nodes()["n3"].underlay.octets()[..8]);
    let r = ok(&mut s, Op::AddLbInterfaceTarget { lb: "lb".into(), interface: "a".into(), weight: 1 });
    let Response::LoadBalancer { epoch: 2, table: Some(_), .. } = r else { panic!("{r:?}") };
    let target = s.load_balancers()["lb"].interface_targets["a"];
    assert_eq!(target.octets()[..8], s.nodes()[&s.interfaces()["a"].node].underlay.octets()[..8]);
    assert_eq!(s.load_balancers()["lb"].targets, [LbTarget { addr: target, weight: 1 }]);
    refused(
        &mut s,
        Op::AddLbInterfaceTarget { lb: "lb".into(), interface: "a".into(), weight: 1 },
        exists(ObjectKind::LbTarget, "a of lb"),
    );
    refused(
        &mut s,
        Op::DeleteInterface { id: "a".into() },
        ApplyError::InUse {
            kind: ObjectKind::Interface,
            id: "a".into(),
            by: "load balancer lb (as a target)".into(),
        },
    );
    ok(&mut s, Op::RemoveLbTarget { lb: "lb".into(), addr: target });
    assert!(s.load_balancers()["lb"].interface_targets.is_empty());
    ok(&mut s, Op::DeleteInterface { id: "a".into() });
    ok(&mut s, Op::RemoveNode { id: "n3".into() });
    assert_eq!(s.load_balancers()["lb"].node_underlays.len(), 2);
}

#[test]
fn joined_generation_marks_each_return_to_joining() {
    let mut s = FleetState::new();
    ok(&mut s, node_with_devices("n1", 1, &[]));
    assert_eq!(s.nodes()["n1"].joined_generation, 1);
    ok(&mut s, Op::SetNodeState { id: "n1".into(), state: NodeState::Active });
    ok(&mut s, node_with_devices("n1", 1, &["vf0"])); // an update keeps it
    assert_eq!(s.nodes()["n1"].joined_generation, 1);
    ok(&mut s, Op::SetNodeState { id: "n1".into(), state: NodeState::Down });
    ok(&mut s, Op::SetNodeState { id: "n1".into(), state: NodeState::Joining });
    assert_eq!(s.nodes()["n1"].joined_generation, s.generation());
}
