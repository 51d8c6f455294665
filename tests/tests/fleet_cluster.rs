//! The whole fleet: three real `dpfleet-coordinator` members and real `dpfleet-node`s in
//! network namespaces (topology in `dpfleet_e2e::cluster`), provisioned through the
//! cluster API only, checked through each node's own API and with frames.
//!
//! One scenario, in steps (each builds on the one before, so the fleet starts once):
//! 1. two nodes join by gossip alone and become active; a VNI, interfaces on both, a
//!    shared NAT gateway, a load balancer with a target on each, a route, a VIP and a
//!    firewall rule reach every node, each holding exactly its share; a VM on n1 reaches
//!    a VM on n2 through the underlay (the test relays the encapsulated frame);
//! 2. a third node joining later receives the neighbor NATs and the load balancer;
//! 3. a SIGKILLed node is declared down, the others lose its NAT blocks and routes; its
//!    restart under the same name repairs it;
//! 4. bad requests change nothing; clients racing through all members for NAT blocks
//!    get disjoint blocks;
//! 5. the Raft leader is SIGKILLed: a new one is elected, every acknowledged write is
//!    there, writes continue and reach the nodes; the old leader restarts from its data
//!    directory with its state and catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use dpfleet_coordinator::grpc::cluster_pb as cpb;
use dpfleet_e2e::api::{self, ok};
use dpfleet_e2e::cluster::{self, wait_for, Fleet};
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::frames::{self, Echo, Ip};
use dpfleet_e2e::tap::Tap;
use dpfleet_e2e::topo::{self, Vm};

const WAIT: Duration = Duration::from_secs(30);
const VNI: u32 = 100;
const NAT_IP: Ipv4Addr = Ipv4Addr::new(45, 86, 6, 100);
const VIP: Ipv4Addr = Ipv4Addr::new(45, 86, 6, 200);
const LB_VIP: Ipv4Addr = Ipv4Addr::new(172, 22, 2, 1);
const ROUTE_NH: Ipv6Addr = Ipv6Addr::new(0xfc00, 0x99, 0, 0, 0, 0, 0, 1);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or_else(|_| panic!("not an IPv6 address: {s:?}"))
}

/// The VM behind VF `vf` of node `k` with overlay host number `host` in [`VNI`].
fn vm(k: u8, vf: u8, host: u8) -> Vm {
    let mut vm = Vm::new(host, VNI);
    vm.vf = vf;
    vm.mac = cluster::vm_mac(k, vf);
    vm
}

/// What a node holds, as its API lists it (the parts the fleet provisions).
#[derive(Debug, PartialEq, Eq)]
struct Held {
    interfaces: BTreeMap<String, Ipv6Addr>,
    nats: BTreeMap<String, (u32, u32)>,
    neighbor_nats: BTreeSet<(u32, u32, Ipv6Addr)>,
    routes_v4: BTreeMap<String, Ipv6Addr>,
}

fn held(fleet: &mut Fleet, k: u8) -> Held {
    let api = &mut fleet.node(k).api;
    let list = ok("ListInterfaces", api.list_interfaces(api::ListInterfacesRequest {}));
    let mut h = Held {
        interfaces: BTreeMap::new(),
        nats: BTreeMap::new(),
        neighbor_nats: BTreeSet::new(),
        routes_v4: BTreeMap::new(),
    };
    for i in &list.interfaces {
        let id = String::from_utf8_lossy(&i.id).to_string();
        h.interfaces.insert(id.clone(), api::parse_v6(&i.underlay_route));
        let nat = api.get_nat(api::GetNatRequest { interface_id: i.id.clone() }).unwrap();
        // Only gw1's (the race of step 4 attaches others on another IP).
        if nat.status.as_ref().is_none_or(|s| s.code == 0)
            && api::parse_ip(nat.nat_ip.as_ref()) == IpAddr::V4(NAT_IP)
        {
            h.nats.insert(id, (nat.min_port, nat.max_port));
        }
    }
    let neigh = ok(
        "ListNeighborNats",
        api.list_neighbor_nats(api::ListNeighborNatsRequest { nat_ip: Some(api::ip(IpAddr::V4(NAT_IP))) }),
    );
    for n in &neigh.nat_entries {
        h.neighbor_nats.insert((n.min_port, n.max_port, api::parse_v6(&n.underlay_route)));
    }
    let routes = api.list_routes(api::ListRoutesRequest { vni: VNI }).unwrap();
    for r in &routes.routes {
        let p = r.prefix.as_ref().unwrap();
        let key = format!("{}/{}", api::parse_ip(p.ip.as_ref()), p.length);
        h.routes_v4.insert(key, api::parse_ip(r.nexthop_address.as_ref()).to_string().parse().unwrap());
    }
    h
}

/// The cluster's view of an interface.
fn iface(fleet: &mut Fleet, id: &str) -> cpb::Interface {
    let m = fleet.any();
    let id = id.to_string();
    fleet
        .on(m, |mut c| async move { c.get_interface(cpb::GetInterfaceRequest { id, stale_ok: false }).await })
        .unwrap_or_else(|e| panic!("GetInterface: {e}"))
        .interface
        .expect("interface")
}

fn create_iface(fleet: &mut Fleet, id: &str, k: u8, vf: u8, host: u8) -> cpb::Interface {
    let vm = vm(k, vf, host);
    let req = cpb::CreateInterfaceRequest {
        request_id: format!("create-{id}"),
        id: id.into(),
        vni: VNI,
        node: cluster::node_name(k),
        device: topo::vf(vf).device,
        ipv4: vm.ip.to_string(),
        ipv6: vm.ipv6.to_string(),
    };
    let m = fleet.any();
    fleet
        .on(m, |mut c| async move { c.create_interface(req).await })
        .unwrap_or_else(|e| panic!("CreateInterface {id}: {e}"))
        .interface
        .expect("interface")
}

/// The NAT block and NAT underlay of interface `id`.
fn nat_of(i: &cpb::Interface) -> (u32, u32, Ipv6Addr) {
    let b = i.nat_block.as_ref().expect("NAT block");
    assert_eq!(b.ip, NAT_IP.to_string());
    (b.port_min, b.port_max, v6(&i.nat_underlay))
}

/// Every node's Maglev table status for `lb`: (epoch, digest).
fn lb_table(fleet: &mut Fleet, k: u8, lb: &str) -> Option<(u64, u64)> {
    let s = fleet.node(k).api.get_node_status().unwrap();
    s.load_balancers.iter().find(|t| t.loadbalancer_id == lb.as_bytes()).map(|t| (t.epoch, t.digest))
}

fn committed_lb(fleet: &mut Fleet, lb: &str) -> cpb::LoadBalancer {
    let m = fleet.any();
    let id = lb.to_string();
    fleet
        .on(m, |mut c| async move {
            c.get_load_balancer(cpb::GetLoadBalancerRequest { id, stale_ok: false }).await
        })
        .unwrap()
        .load_balancer
        .unwrap()
}

#[test]
fn a_fleet_provisioned_through_the_cluster_api() {
    let mut fleet = Fleet::start(3, "2s");

    // ---- 1. Nodes join by gossip alone and become active.
    fleet.add_node(1);
    fleet.add_node(2);
    for n in ["n1", "n2"] {
        fleet.wait_node_state(n, cpb::NodeState::Active, WAIT);
    }
    let nodes = fleet.cluster_nodes();
    assert_eq!(nodes["n1"].api_endpoint, format!("{}:{}", cluster::node_ip(1), topo::GRPC_PORT));
    assert_eq!(nodes["n2"].underlay, cluster::node_underlay(2).to_string());
    // dpfleetctl, run in the management namespace, sees the same.
    let table = fleet.ctl(&["cluster", "node", "list"]);
    for n in ["n1", "n2"] {
        assert!(
            table.lines().any(|l| l.split_whitespace().take(2).eq([n, "active"])),
            "dpfleetctl cluster node list:\n{table}"
        );
    }

    // Provisioning through the API only.
    let m = fleet.any();
    fleet
        .on(m, |mut c| async move { c.create_vni(cpb::VniRequest { request_id: String::new(), vni: VNI }).await })
        .unwrap();
    let a1 = create_iface(&mut fleet, "a1", 1, 0, 1);
    let b1 = create_iface(&mut fleet, "b1", 2, 0, 2);
    let b2 = create_iface(&mut fleet, "b2", 2, 1, 3);
    let gw = cpb::CreateNatGatewayRequest {
        request_id: String::new(),
        id: "gw1".into(),
        vni: VNI,
        public_ips: vec![NAT_IP.to_string()],
        port_min: 1024,
        port_max: 3072,
        block_size: 256,
    };
    fleet.on(m, |mut c| async move { c.create_nat_gateway(gw).await }).unwrap();
    for i in ["a1", "b1"] {
        let req =
            cpb::AttachNatRequest { request_id: String::new(), gateway: "gw1".into(), interface: i.into() };
        fleet.on(m, |mut c| async move { c.attach_nat(req).await }).unwrap();
    }
    let lb = cpb::CreateLoadBalancerRequest {
        request_id: String::new(),
        id: "lb1".into(),
        vni: VNI,
        vip: LB_VIP.to_string(),
        ports: vec![cpb::LbPort { protocol: cpb::LbProtocol::Udp as i32, port: 5000 }],
        targets: Vec::new(),
        table_size: None,
    };
    fleet.on(m, |mut c| async move { c.create_load_balancer(lb).await }).unwrap();
    for i in ["a1", "b1"] {
        let req = cpb::AddLbTargetRequest {
            request_id: String::new(),
            lb: "lb1".into(),
            target: Some(cpb::add_lb_target_request::Target::Interface(i.into())),
            weight: 1,
        };
        fleet.on(m, |mut c| async move { c.add_lb_target(req).await }).unwrap();
    }
    let route = cpb::AddRouteRequest {
        request_id: String::new(),
        route: Some(cpb::Route {
            vni: VNI,
            prefix: "10.100.9.0/24".into(),
            next_hop: ROUTE_NH.to_string(),
            next_hop_vni: VNI,
        }),
    };
    fleet.on(m, |mut c| async move { c.add_route(route).await }).unwrap();
    let vip = cpb::SetVipRequest { request_id: String::new(), interface: "b2".into(), ip: VIP.to_string() };
    let vip_ul = v6(&fleet.on(m, |mut c| async move { c.set_vip(vip).await }).unwrap().vip.unwrap().underlay);
    let rule = cpb::AddFirewallRuleRequest {
        request_id: String::new(),
        interface: "b2".into(),
        rule: Some(cpb::FirewallRule {
            id: "icmp-in".into(),
            direction: cpb::FirewallDirection::Ingress as i32,
            action: cpb::FirewallAction::Accept as i32,
            priority: 1000,
            source: "0.0.0.0/0".into(),
            destination: "0.0.0.0/0".into(),
            protocol: Some(cpb::firewall_rule::Protocol::Icmp(cpb::IcmpFilter {
                icmp_type: None,
                icmp_code: None,
            })),
        }),
    };
    fleet.on(m, |mut c| async move { c.add_firewall_rule(rule).await }).unwrap();

    let generation = fleet.wait_applied(&[1, 2], WAIT);
    let (a1, b1, b2) = (iface(&mut fleet, &a1.id), iface(&mut fleet, &b1.id), iface(&mut fleet, &b2.id));
    let (a1_nat, b1_nat) = (nat_of(&a1), nat_of(&b1));
    assert_ne!((a1_nat.0, a1_nat.1), (b1_nat.0, b1_nat.1), "distinct NAT blocks");
    let lb = committed_lb(&mut fleet, "lb1");
    assert_eq!(lb.targets.len(), 2);

    // Each node holds exactly its share.
    let h1 = held(&mut fleet, 1);
    assert_eq!(h1.interfaces, BTreeMap::from([("a1".to_string(), v6(&a1.underlay))]));
    assert_eq!(h1.nats, BTreeMap::from([("a1".to_string(), (a1_nat.0, a1_nat.1))]));
    assert_eq!(h1.neighbor_nats, BTreeSet::from([b1_nat]), "n1 relays n2's block");
    assert_eq!(
        h1.routes_v4,
        BTreeMap::from([
            ("10.100.1.2/32".to_string(), v6(&b1.underlay)),
            ("10.100.1.3/32".to_string(), v6(&b2.underlay)),
            ("10.100.9.0/24".to_string(), ROUTE_NH),
        ])
    );
    let h2 = held(&mut fleet, 2);
    assert_eq!(
        h2.interfaces,
        BTreeMap::from([("b1".to_string(), v6(&b1.underlay)), ("b2".to_string(), v6(&b2.underlay))])
    );
    assert_eq!(h2.nats, BTreeMap::from([("b1".to_string(), (b1_nat.0, b1_nat.1))]));
    assert_eq!(h2.neighbor_nats, BTreeSet::from([a1_nat]), "n2 relays n1's block");
    assert_eq!(
        h2.routes_v4,
        BTreeMap::from([
            ("10.100.1.1/32".to_string(), v6(&a1.underlay)),
            ("10.100.9.0/24".to_string(), ROUTE_NH),
        ])
    );
    // The VIP and the firewall rule on n2's b2.
    let api2 = &mut fleet.node(2).api;
    let got = ok("GetVip", api2.get_vip(api::GetVipRequest { interface_id: b"b2".to_vec() }));
    assert_eq!(api::parse_ip(got.vip_ip.as_ref()), IpAddr::V4(VIP));
    assert_eq!(api::parse_v6(&got.underlay_route), vip_ul);
    let rules = ok(
        "ListFirewallRules",
        api2.list_firewall_rules(api::ListFirewallRulesRequest { interface_id: b"b2".to_vec() }),
    );
    assert_eq!(rules.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![b"icmp-in".to_vec()]);
    // The load balancer: every node has it with the committed epoch and digest; each
    // target's node delivers its VIP to the target.
    let want = (lb.epoch, lb.digest.expect("a digest with targets"));
    for k in [1, 2] {
        assert_eq!(lb_table(&mut fleet, k, "lb1"), Some(want), "n{k}'s Maglev table");
        let api = &mut fleet.node(k).api;
        let got = ok(
            "GetLoadBalancer",
            api.get_load_balancer(api::GetLoadBalancerRequest { loadbalancer_id: b"lb1".to_vec() }),
        );
        assert_eq!(api::parse_ip(got.loadbalanced_ip.as_ref()), IpAddr::V4(LB_VIP));
        let target = if k == 1 { "a1" } else { "b1" };
        let p = ok(
            "ListLoadBalancerPrefixes",
            api.list_load_balancer_prefixes(api::ListLoadBalancerPrefixesRequest {
                interface_id: target.as_bytes().to_vec(),
            }),
        );
        assert_eq!(p.prefixes.len(), 1, "{target} on n{k} has the LB prefix");
    }
    assert_eq!(fleet.generation(), generation, "nothing changed while looking");

    // Frames: VM a1 on n1 pings b1 on n2 over IPv4 and IPv6 (whose host routes the
    // node API cannot list).
    let (a1_ul, b1_ul) = (v6(&a1.underlay), v6(&b1.underlay));
    ping_across(&mut fleet, a1_ul, b1_ul, false, b"n1-to-n2");
    ping_across(&mut fleet, a1_ul, b1_ul, true, b"n1-to-n2-v6");

    // ---- 2. A node joining later gets the neighbor NATs and the load balancer.
    fleet.add_node(3);
    fleet.wait_node_state("n3", cpb::NodeState::Active, WAIT);
    fleet.wait_applied(&[1, 2, 3], WAIT);
    let h3 = held(&mut fleet, 3);
    assert!(h3.interfaces.is_empty());
    assert_eq!(h3.neighbor_nats, BTreeSet::from([a1_nat, b1_nat]), "n3 relays both blocks");
    assert_eq!(lb_table(&mut fleet, 3, "lb1"), Some(want), "n3's Maglev table");

    // ---- 3. SIGKILL n2: declared down, its blocks and routes leave the others.
    fleet.node(2).kill();
    fleet.wait_node_state("n2", cpb::NodeState::Down, WAIT);
    fleet.wait_applied(&[1, 3], WAIT);
    let h1 = held(&mut fleet, 1);
    assert!(h1.neighbor_nats.is_empty(), "n1 no longer relays the down node's block: {h1:?}");
    assert_eq!(
        h1.routes_v4.keys().collect::<Vec<_>>(),
        vec!["10.100.9.0/24"],
        "no routes to n2's interfaces"
    );
    assert_eq!(held(&mut fleet, 3).neighbor_nats, BTreeSet::from([a1_nat]));
    // Restarted under the same name, it is repaired.
    fleet.node(2).restart();
    fleet.wait_node_state("n2", cpb::NodeState::Active, WAIT);
    fleet.wait_applied(&[1, 2, 3], WAIT);
    assert_eq!(held(&mut fleet, 2), h2, "n2 holds what it held before the crash");
    assert_eq!(lb_table(&mut fleet, 2, "lb1"), Some(want));
    assert_eq!(held(&mut fleet, 1).neighbor_nats, BTreeSet::from([b1_nat]));
    assert_eq!(held(&mut fleet, 3).neighbor_nats, BTreeSet::from([a1_nat, b1_nat]));
    ping_across(&mut fleet, a1_ul, b1_ul, false, b"n1-to-restarted-n2");

    // ---- 4. Bad requests change nothing.
    let before = fleet.generation();
    let m = fleet.any();
    let bad: Vec<(&str, tonic::Code, Result<u64, tonic::Status>)> = vec![
        (
            "interface in an unknown VNI",
            tonic::Code::NotFound,
            fleet
                .on(m, |mut c| async move {
                    c.create_interface(cpb::CreateInterfaceRequest {
                        id: "x1".into(),
                        vni: 4242,
                        node: "n1".into(),
                        ipv4: "10.1.1.1".into(),
                        ..Default::default()
                    })
                    .await
                })
                .map(|r| r.generation),
        ),
        (
            "duplicate interface id",
            tonic::Code::AlreadyExists,
            fleet
                .on(m, |mut c| async move {
                    c.create_interface(cpb::CreateInterfaceRequest {
                        id: "a1".into(),
                        vni: VNI,
                        node: "n3".into(),
                        ipv4: "10.100.1.77".into(),
                        ..Default::default()
                    })
                    .await
                })
                .map(|r| r.generation),
        ),
        (
            "route with host bits",
            tonic::Code::InvalidArgument,
            fleet
                .on(m, |mut c| async move {
                    c.add_route(cpb::AddRouteRequest {
                        request_id: String::new(),
                        route: Some(cpb::Route {
                            vni: VNI,
                            prefix: "10.100.8.1/24".into(),
                            next_hop: ROUTE_NH.to_string(),
                            next_hop_vni: VNI,
                        }),
                    })
                    .await
                })
                .map(|r| r.generation),
        ),
        (
            "NAT on an interface that has one",
            tonic::Code::AlreadyExists,
            fleet
                .on(m, |mut c| async move {
                    c.attach_nat(cpb::AttachNatRequest {
                        request_id: String::new(),
                        gateway: "gw1".into(),
                        interface: "a1".into(),
                    })
                    .await
                })
                .map(|r| r.generation),
        ),
        (
            "VIP of an unknown interface",
            tonic::Code::NotFound,
            fleet
                .on(m, |mut c| async move {
                    c.set_vip(cpb::SetVipRequest {
                        request_id: String::new(),
                        interface: "nope".into(),
                        ip: "45.86.6.201".into(),
                    })
                    .await
                })
                .map(|r| r.generation),
        ),
    ];
    for (what, code, r) in bad {
        match r {
            Err(s) => assert_eq!(s.code(), code, "{what}: {s:?}"),
            Ok(g) => panic!("{what}: accepted (generation {g})"),
        }
    }
    assert_eq!(fleet.generation(), before, "refused requests change nothing");

    // Clients racing through all three members for the gateway's blocks: a second
    // gateway with four blocks, six free interfaces (two per node... n1, n2, n3 have
    // free VFs), attached concurrently; four succeed with disjoint blocks, two are
    // RESOURCE_EXHAUSTED.
    let gw2 = cpb::CreateNatGatewayRequest {
        request_id: String::new(),
        id: "gw2".into(),
        vni: VNI,
        public_ips: vec!["45.86.7.1".into()],
        port_min: 2000,
        port_max: 2400,
        block_size: 100,
    };
    fleet.on(m, |mut c| async move { c.create_nat_gateway(gw2).await }).unwrap();
    let racers = [
        ("c1", 1, 1, 10),
        ("c2", 1, 2, 11),
        ("c3", 3, 0, 12),
        ("c4", 3, 1, 13),
        ("c5", 3, 2, 14),
        ("c6", 2, 2, 15),
    ];
    for (id, k, vf, host) in racers {
        create_iface(&mut fleet, id, k, vf, host);
    }
    let results: Vec<Result<cpb::AttachNatResponse, tonic::Status>> = fleet.block_on(|clients| async move {
        let calls = racers.iter().enumerate().map(|(n, (id, ..))| {
            let mut c = clients[n % clients.len()].1.clone();
            let req = cpb::AttachNatRequest {
                request_id: String::new(),
                gateway: "gw2".into(),
                interface: (*id).into(),
            };
            async move { c.attach_nat(req).await.map(tonic::Response::into_inner) }
        });
        futures_join_all(calls).await
    });
    let mut blocks = Vec::new();
    let mut exhausted = 0;
    for r in results {
        match r {
            Ok(a) => {
                let b = a.block.unwrap();
                blocks.push((b.port_min, b.port_max));
            }
            Err(s) if s.code() == tonic::Code::ResourceExhausted => exhausted += 1,
            Err(s) => panic!("AttachNat: {s:?}"),
        }
    }
    blocks.sort_unstable();
    assert_eq!(blocks, vec![(2000, 2100), (2100, 2200), (2200, 2300), (2300, 2400)], "disjoint blocks");
    assert_eq!(exhausted, 2);
    fleet.wait_applied(&[1, 2, 3], WAIT);

    // ---- 4b. A partition: n3 loses its management link, is declared down and misses a
    // change (c6 on n2 is deleted); once the link is back it rejoins and converges,
    // including the IPv6 host route to c6 that its API cannot list.
    let n3_ns = fleet.node(3).node.netns().name().to_string();
    dpfleet_e2e::netns::run("ip", &["-n", &n3_ns, "link", "set", "mgmt0", "down"]).unwrap();
    fleet.wait_node_state("n3", cpb::NodeState::Down, WAIT);
    let req = cpb::DeleteInterfaceRequest { request_id: String::new(), id: "c6".into() };
    fleet.on(m, |mut c| async move { c.delete_interface(req).await }).unwrap();
    dpfleet_e2e::netns::run("ip", &["-n", &n3_ns, "link", "set", "mgmt0", "up"]).unwrap();
    fleet.wait_node_state("n3", cpb::NodeState::Active, WAIT);
    fleet.wait_applied(&[1, 2, 3], WAIT);
    let h3 = held(&mut fleet, 3);
    assert!(h3.routes_v4.contains_key("10.100.1.2/32"), "{h3:?}");
    assert!(!h3.routes_v4.contains_key("10.100.1.15/32"), "no route to the deleted c6: {h3:?}");
    {
        // c3 (n3, VF 0) sends to the deleted c6's IPv6 address, then to b1's: only the
        // second may leave n3's PF0.
        let (c3, c6, b1_vm) = (vm(3, 0, 12), vm(2, 2, 15), vm(2, 0, 2));
        let n3 = fleet.node(3);
        let mut tap = Tap::open(n3.node.netns(), &c3.tap_name()).unwrap();
        assert_eq!(Fixture::dhcp(&mut tap, &c3).yiaddr, c3.ip);
        let mut pf = Tap::open(n3.node.netns(), &n3.node.pf(0).iface).unwrap();
        let gw = n3.node.vf(0).mac;
        for (dst, payload) in [(c6.ipv6, &b"to-deleted-c6"[..]), (b1_vm.ipv6, &b"to-b1"[..])] {
            let echo = frames::ipv6_icmp_echo(c3.ipv6, dst, false, 0x43, 1, payload);
            tap.send(&frames::ethernet(gw, c3.mac, &echo));
        }
        let inner_echo = |f: &[u8]| {
            Ip::from_frame(f).and_then(|ip| ip.decapsulate()).and_then(|inner| Echo::from_ip(&inner))
        };
        pf.expect("c3's echo to b1 on n3's PF0", |f| inner_echo(f).is_some_and(|e| e.payload == b"to-b1"));
        assert!(
            !pf.backlog().any(|f| inner_echo(f).is_some_and(|e| e.payload == b"to-deleted-c6")),
            "n3 still routes the deleted c6's IPv6 address:\n{}",
            pf.describe_backlog()
        );
    }

    // ---- 5. Kill the Raft leader.
    let m = fleet.any();
    let leader = fleet
        .on(m, |mut c| async move { c.get_status(cpb::GetStatusRequest { stale_ok: false }).await })
        .unwrap()
        .leader_id
        .expect("a leader");
    let ifaces_before = list_interfaces(&mut fleet, m, false);
    let gen_before = fleet.generation();
    fleet.coordinator(leader).kill();
    let new_leader = fleet.wait_leader(&[leader]);
    assert_ne!(new_leader, leader);
    // dpfleetctl, given every member, gets past the dead one.
    let table = fleet.ctl(&["cluster", "status"]);
    let leader_addr = cluster::coordinator_addr(new_leader).to_string();
    assert!(table.contains(&leader_addr), "dpfleetctl cluster status names {leader_addr}:\n{table}");
    assert_eq!(
        list_interfaces(&mut fleet, new_leader, false),
        ifaces_before,
        "every acknowledged write is there"
    );
    assert!(fleet.generation() >= gen_before);
    // Writes continue and reach the nodes.
    let a2 = create_iface(&mut fleet, "a2", 1, 3, 20);
    fleet.wait_applied(&[1, 2, 3], WAIT);
    assert_eq!(held(&mut fleet, 1).interfaces.get("a2"), Some(&v6(&a2.underlay)));
    // The old leader comes back from its data directory with its state, and catches up.
    fleet.coordinator(leader).restart().unwrap();
    let stale = list_interfaces(&mut fleet, leader, true);
    assert!(
        ifaces_before.iter().all(|i| stale.contains(i)),
        "the restarted member has its state from disk before catching up"
    );
    let want_ifaces = list_interfaces(&mut fleet, new_leader, false);
    wait_for("the restarted member catching up", WAIT, || {
        let now = list_interfaces(&mut fleet, leader, true);
        if now == want_ifaces {
            Ok(())
        } else {
            Err(format!("{} interfaces", now.len()))
        }
    });
    // It serves (forwarding to the leader) and its writes reach the nodes.
    let req = cpb::DeleteInterfaceRequest { request_id: String::new(), id: "a2".into() };
    fleet.on(leader, |mut c| async move { c.delete_interface(req).await }).unwrap();
    fleet.wait_applied(&[1, 2, 3], WAIT);
    assert!(!held(&mut fleet, 1).interfaces.contains_key("a2"));
    ping_across(&mut fleet, a1_ul, b1_ul, true, b"after-failover");

    // ---- 6. Changes and deletions reach the nodes too.
    // A crash shorter than the down detection: the node keeps its state in the cluster
    // and the reconciler finds the new, empty instance and repairs it.
    fleet.node(3).kill();
    fleet.node(3).restart();
    fleet.wait_applied(&[1, 2, 3], WAIT);
    assert_eq!(fleet.cluster_nodes()["n3"].state(), cpb::NodeState::Active);
    assert_eq!(held(&mut fleet, 3).neighbor_nats, BTreeSet::from([a1_nat, b1_nat]));
    assert_eq!(lb_table(&mut fleet, 3, "lb1"), Some(want));
    // A new target moves every node to the new epoch; a removed one loses its prefix.
    let m = fleet.any();
    let req = cpb::AddLbTargetRequest {
        request_id: String::new(),
        lb: "lb1".into(),
        target: Some(cpb::add_lb_target_request::Target::Interface("c3".into())),
        weight: 2,
    };
    fleet.on(m, |mut c| async move { c.add_lb_target(req).await }).unwrap();
    let req = cpb::RemoveLbTargetRequest {
        request_id: String::new(),
        lb: "lb1".into(),
        target: Some(cpb::remove_lb_target_request::Target::Interface("a1".into())),
    };
    fleet.on(m, |mut c| async move { c.remove_lb_target(req).await }).unwrap();
    fleet.wait_applied(&[1, 2, 3], WAIT);
    let lb = committed_lb(&mut fleet, "lb1");
    let want2 = (lb.epoch, lb.digest.expect("a digest"));
    assert!(want2.0 > want.0);
    for k in [1, 2, 3] {
        assert_eq!(lb_table(&mut fleet, k, "lb1"), Some(want2), "n{k}'s new Maglev table");
    }
    let lb_prefixes = |fleet: &mut Fleet, k: u8, i: &str| {
        let api = &mut fleet.node(k).api;
        let req = api::ListLoadBalancerPrefixesRequest { interface_id: i.as_bytes().to_vec() };
        ok("ListLoadBalancerPrefixes", api.list_load_balancer_prefixes(req)).prefixes.len()
    };
    assert_eq!(lb_prefixes(&mut fleet, 1, "a1"), 0, "a1 is no target any more");
    assert_eq!(lb_prefixes(&mut fleet, 3, "c3"), 1, "c3 on n3 is one now");
    // Detaching b1's NAT removes its block everywhere.
    let req =
        cpb::DetachNatRequest { request_id: String::new(), gateway: "gw1".into(), interface: "b1".into() };
    fleet.on(m, |mut c| async move { c.detach_nat(req).await }).unwrap();
    // Deleting b2 (with its VIP and firewall rule) and the route.
    let req = cpb::DeleteInterfaceRequest { request_id: String::new(), id: "b2".into() };
    fleet.on(m, |mut c| async move { c.delete_interface(req).await }).unwrap();
    let req = cpb::DeleteRouteRequest { request_id: String::new(), vni: VNI, prefix: "10.100.9.0/24".into() };
    fleet.on(m, |mut c| async move { c.delete_route(req).await }).unwrap();
    fleet.wait_applied(&[1, 2, 3], WAIT);
    let h1 = held(&mut fleet, 1);
    assert!(h1.neighbor_nats.is_empty(), "{h1:?}");
    assert!(h1.routes_v4.contains_key("10.100.1.2/32"), "{h1:?}");
    assert!(
        !h1.routes_v4.contains_key("10.100.1.3/32") && !h1.routes_v4.contains_key("10.100.9.0/24"),
        "{h1:?}"
    );
    let h2 = held(&mut fleet, 2);
    assert_eq!(h2.interfaces.keys().collect::<Vec<_>>(), vec!["b1"]);
    assert!(h2.nats.is_empty(), "{h2:?}");
    assert_eq!(held(&mut fleet, 3).neighbor_nats, BTreeSet::from([a1_nat]));
    let lb = committed_lb(&mut fleet, "lb1");
    for k in [1, 2, 3] {
        assert_eq!(lb_table(&mut fleet, k, "lb1"), Some((lb.epoch, lb.digest.unwrap())), "n{k}");
    }
    // An interface the coordinator places: it lands on the node the answer names.
    let req = cpb::CreateInterfaceRequest {
        request_id: String::new(),
        id: "p1".into(),
        vni: VNI,
        ipv4: "10.100.1.40".into(),
        ..Default::default()
    };
    let p1 = fleet.on(m, |mut c| async move { c.create_interface(req).await }).unwrap().interface.unwrap();
    let k: u8 = p1.node.trim_start_matches('n').parse().expect("placed on nK");
    fleet.wait_applied(&[1, 2, 3], WAIT);
    let api = &mut fleet.node(k).api;
    let got =
        ok("GetInterface", api.get_interface(api::GetInterfaceRequest { interface_id: b"p1".to_vec() }));
    let got = got.interface.expect("interface");
    assert_eq!(
        (got.pci_name.as_str(), api::parse_v6(&got.underlay_route)),
        (p1.device.as_str(), v6(&p1.underlay))
    );
    // Deleting everything leaves every node empty.
    let req = cpb::DeleteLoadBalancerRequest { request_id: String::new(), id: "lb1".into() };
    fleet.on(m, |mut c| async move { c.delete_load_balancer(req).await }).unwrap();
    let ifaces: Vec<String> = list_interfaces(&mut fleet, m, false).into_iter().map(|i| i.0).collect();
    for id in ifaces {
        let req = cpb::DeleteInterfaceRequest { request_id: String::new(), id };
        fleet.on(m, |mut c| async move { c.delete_interface(req).await }).unwrap();
    }
    for id in ["gw1", "gw2"] {
        let req = cpb::DeleteNatGatewayRequest { request_id: String::new(), id: id.into() };
        fleet.on(m, |mut c| async move { c.delete_nat_gateway(req).await }).unwrap();
    }
    fleet.on(m, |mut c| async move { c.delete_vni(cpb::VniRequest { request_id: String::new(), vni: VNI }).await }).unwrap();
    fleet.wait_applied(&[1, 2, 3], WAIT);
    for k in [1, 2, 3] {
        let h = held(&mut fleet, k);
        assert!(
            h.interfaces.is_empty() && h.neighbor_nats.is_empty() && h.routes_v4.is_empty(),
            "n{k}: {h:?}"
        );
        assert!(fleet.node(k).api.get_node_status().unwrap().load_balancers.is_empty(), "n{k}");
        // Nor on the raced gateway's IP (the node lists neighbor NATs only by IP).
        let req =
            api::ListNeighborNatsRequest { nat_ip: Some(api::ip(IpAddr::V4(Ipv4Addr::new(45, 86, 7, 1)))) };
        let left = ok("ListNeighborNats", fleet.node(k).api.list_neighbor_nats(req)).nat_entries;
        assert!(left.is_empty(), "n{k}: {left:?}");
    }

    // The new leader reconciled every node without a failed call (the error counter
    // appears with the first error) and none lags.
    let leader = fleet.wait_leader(&[]);
    let metrics = fleet.metrics(leader);
    for n in ["n1", "n2", "n3"] {
        let value = |name: &str| {
            let prefix = format!("{name}{{node=\"{n}\"}} ");
            metrics.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        };
        let errors = value("dpfleet_coordinator_node_reconcile_errors_total");
        let lag = value("dpfleet_coordinator_node_reconcile_lag_generations");
        assert!(errors.is_none_or(|e| e == "0"), "{n}: reconcile errors on leader {leader}:\n{metrics}");
        assert_eq!(lag.as_deref(), Some("0"), "{n}: lag on leader {leader}:\n{metrics}");
    }
}

/// VM a1 (VF 0 of n1) sends an echo to b1 (VF 0 of n2): n1 must encapsulate it from
/// a1's to b1's underlay address on its PF0; the test, as the underlay, hands the packet
/// to n2's PF0, and n2 must deliver it to b1.
fn ping_across(fleet: &mut Fleet, a1_ul: Ipv6Addr, b1_ul: Ipv6Addr, ipv6: bool, payload: &'static [u8]) {
    let vm_a = vm(1, 0, 1);
    let vm_b = vm(2, 0, 2);
    let n1 = fleet.node(1);
    let mut tap_a = Tap::open(n1.node.netns(), &vm_a.tap_name()).unwrap();
    assert_eq!(Fixture::dhcp(&mut tap_a, &vm_a).yiaddr, vm_a.ip);
    let mut pf_a = Tap::open(n1.node.netns(), &n1.node.pf(0).iface).unwrap();
    let gw_a = n1.node.vf(0).mac;
    let echo = if ipv6 {
        frames::ipv6_icmp_echo(vm_a.ipv6, vm_b.ipv6, false, 0x42, 1, payload)
    } else {
        frames::ipv4_icmp_echo(vm_a.ip, vm_b.ip, false, 0x42, 1, payload)
    };
    tap_a.send(&frames::ethernet(gw_a, vm_a.mac, &echo));
    let got = pf_a.expect("a1's echo encapsulated on n1's PF0", |f| {
        Ip::from_frame(f)
            .and_then(|ip| ip.decapsulate())
            .and_then(|inner| Echo::from_ip(&inner))
            .is_some_and(|e| e.payload == payload)
    });
    let Some(Ip::V6 { src, dst, payload: inner, .. }) = Ip::from_frame(&got) else {
        panic!("not IPv6 outside")
    };
    assert_eq!((src, dst), (a1_ul, b1_ul), "from a1's to b1's underlay address");
    let n2 = fleet.node(2);
    let mut tap_b = Tap::open(n2.node.netns(), &vm_b.tap_name()).unwrap();
    let mut pf_b = Tap::open(n2.node.netns(), &n2.node.pf(0).iface).unwrap();
    pf_b.send(&frames::ethernet_ip_in_ipv6(n2.node.pf(0).mac, topo::router_mac(0), src, dst, &inner));
    let got = tap_b.expect("a1's echo delivered to b1 on n2", |f| {
        Ip::from_frame(f).and_then(|ip| Echo::from_ip(&ip)).is_some_and(|e| e.payload == payload)
    });
    match Ip::from_frame(&got) {
        Some(Ip::V4 { src, dst, .. }) if !ipv6 => assert_eq!((src, dst), (vm_a.ip, vm_b.ip)),
        Some(Ip::V6 { src, dst, .. }) if ipv6 => assert_eq!((src, dst), (vm_a.ipv6, vm_b.ipv6)),
        other => panic!("delivered: {other:?}"),
    }
}

/// Every interface (id, node, underlay) as member `m` answers.
fn list_interfaces(fleet: &mut Fleet, m: u64, stale_ok: bool) -> Vec<(String, String, String)> {
    fleet
        .on(m, |mut c| async move {
            c.list_interfaces(cpb::ListInterfacesRequest { node: String::new(), vni: None, stale_ok }).await
        })
        .unwrap_or_else(|e| panic!("ListInterfaces on {m}: {e}"))
        .interfaces
        .into_iter()
        .map(|i| (i.id, i.node, i.underlay))
        .collect()
}

/// Runs the futures concurrently on the current task; their results in order.
async fn futures_join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("ready")).collect()
}
