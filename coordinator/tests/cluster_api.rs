//! The cluster API (`dpfleet.cluster.v1`) of three coordinator members on loopback, each
//! with its own data directory, called over gRPC as a client would: forwarding from
//! followers, request ids, error codes, racing NAT allocations, membership changes and
//! linearizable reads. Every wait is an openraft metrics wait with a deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use dpfleet_coordinator::client::{connect_any, ClusterClient};
use dpfleet_coordinator::grpc::cluster_pb as pb;
use dpfleet_coordinator::grpc::errors::ERROR_REASON;
use dpfleet_coordinator::grpc::FORWARDED_BY;
use dpfleet_coordinator::{default_config, Member, MemberId};
use openraft::BasicNode;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tonic::Code;

const DEADLINE: Duration = Duration::from_secs(20);

struct Cluster {
    members: BTreeMap<MemberId, Member>,
    addrs: BTreeMap<MemberId, SocketAddr>,
    _dirs: Vec<TempDir>,
}

async fn start_member(id: MemberId) -> (Member, SocketAddr, TempDir) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let member = Member::start(id, listener, dir.path(), default_config()).await.unwrap();
    (member, addr, dir)
}

impl Cluster {
    /// Three members, initialized, with an agreed leader.
    async fn start() -> Cluster {
        let mut cluster = Cluster { members: BTreeMap::new(), addrs: BTreeMap::new(), _dirs: Vec::new() };
        for id in 1..=3 {
            let (m, addr, dir) = start_member(id).await;
            cluster.members.insert(id, m);
            cluster.addrs.insert(id, addr);
            cluster._dirs.push(dir);
        }
        let nodes: BTreeMap<_, _> =
            cluster.addrs.iter().map(|(&id, a)| (id, BasicNode::new(a.to_string()))).collect();
        cluster.members[&1].raft().initialize(nodes).await.unwrap();
        cluster.leader().await;
        cluster
    }

    /// Waits until every member agrees on a leader, and returns it.
    async fn leader(&self) -> MemberId {
        let first = self.members.values().next().unwrap();
        let m = first
            .raft()
            .wait(Some(DEADLINE))
            .metrics(|x| x.current_leader.is_some(), "a leader")
            .await
            .expect("a leader is elected");
        let leader = m.current_leader.unwrap();
        for m in self.members.values() {
            m.raft()
                .wait(Some(DEADLINE))
                .metrics(|x| x.current_leader == Some(leader), "the same leader")
                .await
                .expect("members agree on the leader");
        }
        leader
    }

    fn followers(&self, leader: MemberId) -> Vec<MemberId> {
        self.members.keys().copied().filter(|&id| id != leader).collect()
    }

    async fn client(&self, id: MemberId) -> ClusterClient {
        connect_any(&[self.addrs[&id].to_string()], Duration::from_secs(5)).await.unwrap().1
    }

    async fn stop(mut self) {
        for (_, m) in std::mem::take(&mut self.members) {
            m.stop().await.unwrap();
        }
    }
}

async fn generation(c: &mut ClusterClient) -> u64 {
    c.get_status(pb::GetStatusRequest { stale_ok: false }).await.unwrap().into_inner().generation
}

fn register(id: &str, last: u16, devices: &[&str]) -> pb::RegisterNodeRequest {
    pb::RegisterNodeRequest {
        request_id: String::new(),
        id: id.into(),
        underlay: format!("fd00:0:0:{last:x}::1"),
        api_endpoint: format!("[fd00:0:0:{last:x}::1]:1337"),
        devices: devices.iter().map(|d| (*d).to_owned()).collect(),
    }
}

fn vni(v: u32) -> pb::VniRequest {
    pb::VniRequest { request_id: String::new(), vni: v }
}

fn iface(id: &str, vni: u32, node: &str, device: &str, ipv4: &str) -> pb::CreateInterfaceRequest {
    pb::CreateInterfaceRequest {
        request_id: String::new(),
        id: id.into(),
        vni,
        node: node.into(),
        device: device.into(),
        ipv4: ipv4.into(),
        ipv6: String::new(),
    }
}

/// `addr` is a coordinator-chosen address in the /64 of node `n` (underlay `fd00:0:0:n::1`).
fn assert_on_node(addr: &str, n: u16) {
    let a: std::net::Ipv6Addr = addr.parse().unwrap();
    assert_eq!(a.segments()[..4], [0xfd00, 0, 0, n], "{addr}");
    assert_eq!(a.octets()[10], 0x80, "{addr}");
}

fn reason(s: &tonic::Status) -> &str {
    s.metadata().get(ERROR_REASON).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_through_a_follower_with_request_ids_and_linearizable_reads() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let followers = cluster.followers(leader);
    let mut f1 = cluster.client(followers[0]).await;
    let mut f2 = cluster.client(followers[1]).await;
    let mut lc = cluster.client(leader).await;

    // Everything through a follower, which forwards to the leader.
    f1.register_node(register("n1", 1, &["tap1", "tap2"])).await.unwrap();
    f1.register_node(register("n2", 2, &["tap1"])).await.unwrap();
    // Registered nodes are joining; drain and undrain leave them active.
    for n in ["n1", "n2"] {
        f1.drain_node(pb::NodeRequest { request_id: String::new(), id: n.into() }).await.unwrap();
        f2.undrain_node(pb::NodeRequest { request_id: String::new(), id: n.into() }).await.unwrap();
    }
    let w = f1.create_vni(vni(100)).await.unwrap().into_inner();
    assert_eq!(w.generation, 7);

    // Placed by the coordinator: n1 and n2 are both active and empty, ties go to n1.
    let placed = f1
        .create_interface(pb::CreateInterfaceRequest {
            request_id: "create-vm1".into(),
            ..iface("vm1", 100, "", "", "10.0.0.1")
        })
        .await
        .unwrap()
        .into_inner();
    let vm1 = placed.interface.clone().unwrap();
    assert_eq!((vm1.node.as_str(), vm1.device.as_str()), ("n1", "tap1"));
    assert_on_node(&vm1.underlay, 1);
    // The next one goes to the emptier node.
    let vm2 = f2.create_interface(iface("vm2", 100, "", "", "10.0.0.2")).await.unwrap().into_inner();
    assert_eq!(vm2.interface.unwrap().node, "n2");

    // A retried request id, through another member: the first answer, applied once.
    let before = generation(&mut lc).await;
    let again = lc
        .create_interface(pb::CreateInterfaceRequest {
            request_id: "create-vm1".into(),
            ..iface("vm1", 100, "", "", "10.0.0.1")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, placed);
    assert_eq!(generation(&mut f2).await, before);
    let listed = f2.list_interfaces(pb::ListInterfacesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.interfaces.len(), 2);
    // The same id for another request is refused, and changes nothing.
    let err = f1
        .create_interface(pb::CreateInterfaceRequest {
            request_id: "create-vm1".into(),
            ..iface("vm9", 100, "", "", "10.0.0.9")
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::AlreadyExists, "request_id_reused"));
    assert_eq!(generation(&mut f1).await, before);

    // NAT, VIP, firewall, routes, load balancer: all through followers.
    f2.create_nat_gateway(pb::CreateNatGatewayRequest {
        request_id: String::new(),
        id: "gw".into(),
        vni: 100,
        public_ips: vec!["203.0.113.1".into()],
        port_min: 1024,
        port_max: 2048,
        block_size: 256,
    })
    .await
    .unwrap();
    let nat = f2
        .attach_nat(pb::AttachNatRequest {
            request_id: "nat-vm1".into(),
            gateway: "gw".into(),
            interface: "vm1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nat.block, Some(pb::NatBlock { ip: "203.0.113.1".into(), port_min: 1024, port_max: 1280 }));
    let vip = f1
        .set_vip(pb::SetVipRequest {
            request_id: String::new(),
            interface: "vm2".into(),
            ip: "198.51.100.7".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_on_node(&vip.vip.unwrap().underlay, 2);
    f1.add_firewall_rule(pb::AddFirewallRuleRequest {
        request_id: String::new(),
        interface: "vm1".into(),
        rule: Some(pb::FirewallRule {
            id: "web".into(),
            direction: pb::FirewallDirection::Ingress.into(),
            action: pb::FirewallAction::Accept.into(),
            priority: 100,
            source: "0.0.0.0/0".into(),
            destination: "10.0.0.1/32".into(),
            protocol: Some(pb::firewall_rule::Protocol::Tcp(pb::PortFilter {
                src_ports: None,
                dst_ports: Some(pb::PortRange { lower: 80, upper: 80 }),
            })),
        }),
    })
    .await
    .unwrap();
    f1.add_route(pb::AddRouteRequest {
        request_id: String::new(),
        route: Some(pb::Route {
            vni: 100,
            prefix: "0.0.0.0/0".into(),
            next_hop: "fd00:ffff::1".into(),
            next_hop_vni: 100,
        }),
    })
    .await
    .unwrap();
    let lb = f2
        .create_load_balancer(pb::CreateLoadBalancerRequest {
            request_id: String::new(),
            id: "web".into(),
            vni: 100,
            vip: "10.0.0.100".into(),
            ports: vec![pb::LbPort { protocol: pb::LbProtocol::Tcp.into(), port: 80 }],
            targets: vec![],
            table_size: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((lb.epoch, lb.digest), (1, None));
    let added = f2
        .add_lb_target(pb::AddLbTargetRequest {
            request_id: String::new(),
            lb: "web".into(),
            target: Some(pb::add_lb_target_request::Target::Interface("vm1".into())),
            weight: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.epoch, 2);
    assert!(added.digest.is_some() && added.table_size > 0);
    assert_on_node(&added.target, 1);

    // Linearizable reads on the other follower see what was just written.
    let got = f1
        .get_load_balancer(pb::GetLoadBalancerRequest { id: "web".into(), stale_ok: false })
        .await
        .unwrap()
        .into_inner()
        .load_balancer
        .unwrap();
    assert_eq!(
        got.targets,
        [pb::LbTarget { underlay: added.target.clone(), weight: 2, interface: "vm1".into() }]
    );
    assert_eq!(got.digest, added.digest);
    assert_eq!(got.node_underlays.len(), 2);
    let vm1 = f1
        .get_interface(pb::GetInterfaceRequest { id: "vm1".into(), stale_ok: false })
        .await
        .unwrap()
        .into_inner()
        .interface
        .unwrap();
    assert_eq!((vm1.nat_gateway.as_str(), vm1.nat_underlay.as_str()), ("gw", nat.underlay.as_str()));
    assert_eq!(vm1.firewall_rules, 1);
    let gw = f1
        .get_nat_gateway(pb::GetNatGatewayRequest { id: "gw".into(), stale_ok: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((gw.gateway.unwrap().blocks_used, gw.allocations.len()), (1, 1));
    for i in 0..20u32 {
        let (w, r) = if i % 2 == 0 { (&mut f1, &mut f2) } else { (&mut f2, &mut f1) };
        w.create_vni(vni(1000 + i)).await.unwrap();
        let vnis = r.list_vnis(pb::ListVnisRequest { stale_ok: false }).await.unwrap().into_inner();
        assert!(vnis.vnis.iter().any(|v| v.vni == 1000 + i), "write {i} not visible on the other follower");
    }
    let removed = f1
        .remove_lb_target(pb::RemoveLbTargetRequest {
            request_id: String::new(),
            lb: "web".into(),
            target: Some(pb::remove_lb_target_request::Target::Interface("vm1".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((removed.epoch, removed.digest, removed.target), (3, None, added.target));

    // A stale read is answered by the member itself; status shows the counts.
    let stale = f2.get_status(pb::GetStatusRequest { stale_ok: true }).await.unwrap().into_inner();
    assert_eq!(stale.member_id, followers[1]);
    assert_eq!(stale.commit_index, None);
    let st = f2.get_status(pb::GetStatusRequest { stale_ok: false }).await.unwrap().into_inner();
    assert_eq!(st.member_id, leader, "a linearizable status is the leader's");
    assert_eq!(st.leader_id, Some(leader));
    assert_eq!(st.leader_addr, cluster.addrs[&leader].to_string());
    assert_eq!(st.nodes, Some(pb::NodeCounts { joining: 0, active: 2, draining: 0, down: 0 }));
    assert_eq!((st.interfaces, st.nat_gateways, st.load_balancers, st.routes, st.vnis), (2, 1, 1, 1, 21));
    // The leader confirmed the commit index and had applied up to it before answering.
    assert!(st.commit_index.is_some() && st.applied_index >= st.commit_index, "{st:?}");
    assert_eq!(st.voters, 3);

    // A call that was already forwarded once is not forwarded again.
    let mut req = tonic::Request::new(vni(7));
    req.metadata_mut().insert(FORWARDED_BY, "9".parse().unwrap());
    let err = f1.create_vni(req).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::Unavailable, "not_leader"));
    assert!(err.message().contains(&format!("the leader is member {leader}")), "{}", err.message());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_code_and_change_nothing() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(cluster.followers(leader)[0]).await;
    c.register_node(register("n1", 1, &[])).await.unwrap();
    c.register_node(register("n2", 2, &[])).await.unwrap();
    c.create_vni(vni(100)).await.unwrap();
    c.create_vni(vni(200)).await.unwrap();
    c.create_interface(iface("vm1", 100, "n1", "tap1", "10.0.0.1")).await.unwrap();
    c.create_interface(iface("vm2", 200, "n1", "tap2", "10.0.0.1")).await.unwrap();
    c.create_nat_gateway(pb::CreateNatGatewayRequest {
        request_id: String::new(),
        id: "gw".into(),
        vni: 100,
        public_ips: vec!["203.0.113.1".into()],
        port_min: 1024,
        port_max: 1536,
        block_size: 512,
    })
    .await
    .unwrap();
    c.attach_nat(pb::AttachNatRequest {
        request_id: String::new(),
        gateway: "gw".into(),
        interface: "vm1".into(),
    })
    .await
    .unwrap();
    c.drain_node(pb::NodeRequest { request_id: String::new(), id: "n2".into() }).await.unwrap();
    let start = generation(&mut c).await;

    let mut results: Vec<(&str, Result<(), tonic::Status>, Code)> = Vec::new();
    macro_rules! case {
        ($name:expr, $call:expr, $code:expr) => {
            results.push(($name, $call.await.map(|_| ()), $code));
        };
    }
    case!(
        "bad ipv4",
        c.create_interface(iface("vm3", 100, "n1", "tap3", "10.0.0.300")),
        Code::InvalidArgument
    );
    case!("no address", c.create_interface(iface("vm3", 100, "n1", "tap3", "")), Code::InvalidArgument);
    case!(
        "host bits",
        c.add_route(pb::AddRouteRequest {
            request_id: String::new(),
            route: Some(pb::Route {
                vni: 100,
                prefix: "10.0.0.1/8".into(),
                next_hop: "fd00::1".into(),
                next_hop_vni: 100
            }),
        }),
        Code::InvalidArgument
    );
    case!(
        "prefix too long",
        c.delete_route(pb::DeleteRouteRequest {
            request_id: String::new(),
            vni: 100,
            prefix: "10.0.0.0/33".into()
        }),
        Code::InvalidArgument
    );
    case!("VNI above 24 bits", c.create_vni(vni(1 << 24)), Code::InvalidArgument);
    case!(
        "bad underlay",
        c.register_node(pb::RegisterNodeRequest { underlay: "10.1.1.1".into(), ..register("n9", 9, &[]) }),
        Code::InvalidArgument
    );
    case!(
        "DROP rule",
        c.add_firewall_rule(pb::AddFirewallRuleRequest {
            request_id: String::new(),
            interface: "vm1".into(),
            rule: Some(pb::FirewallRule {
                id: "r".into(),
                direction: pb::FirewallDirection::Egress.into(),
                action: pb::FirewallAction::Drop.into(),
                priority: 1,
                source: "0.0.0.0/0".into(),
                destination: "0.0.0.0/0".into(),
                protocol: None,
            }),
        }),
        Code::InvalidArgument
    );
    case!(
        "unknown interface",
        c.get_interface(pb::GetInterfaceRequest { id: "nope".into(), stale_ok: false }),
        Code::NotFound
    );
    case!("unknown node", c.create_interface(iface("vm3", 100, "n7", "tap3", "10.0.0.3")), Code::NotFound);
    case!("VNI exists", c.create_vni(vni(100)), Code::AlreadyExists);
    case!("VNI in use", c.delete_vni(vni(100)), Code::FailedPrecondition);
    case!(
        "address taken",
        c.create_interface(iface("vm3", 100, "n1", "tap3", "10.0.0.1")),
        Code::FailedPrecondition
    );
    case!(
        "node draining",
        c.create_interface(iface("vm3", 100, "n2", "tap3", "10.0.0.3")),
        Code::FailedPrecondition
    );
    case!(
        "VNI mismatch",
        c.attach_nat(pb::AttachNatRequest {
            request_id: String::new(),
            gateway: "gw".into(),
            interface: "vm2".into()
        }),
        Code::FailedPrecondition
    );
    case!(
        "node in use",
        c.remove_node(pb::NodeRequest { request_id: String::new(), id: "n1".into() }),
        Code::FailedPrecondition
    );
    c.create_interface(iface("vm4", 100, "n1", "tap4", "10.0.0.4")).await.unwrap();
    let start = start + 1;
    case!(
        "pool exhausted",
        c.attach_nat(pb::AttachNatRequest {
            request_id: "x".into(),
            gateway: "gw".into(),
            interface: "vm4".into()
        }),
        Code::ResourceExhausted
    );
    case!(
        "nowhere to place",
        c.create_interface(iface("vm5", 100, "", "", "10.0.0.5")),
        Code::ResourceExhausted
    );
    case!(
        "no VIP",
        c.get_vip(pb::GetVipRequest { interface: "vm1".into(), stale_ok: false }),
        Code::NotFound
    );
    case!(
        "bad member address",
        c.add_member(pb::AddMemberRequest { id: 9, addr: "nohost".into(), learner_only: false }),
        Code::InvalidArgument
    );
    case!("unknown member", c.remove_member(pb::RemoveMemberRequest { id: 9 }), Code::NotFound);

    for (name, result, code) in results {
        let err = result.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(!err.message().is_empty());
    }
    assert_eq!(generation(&mut c).await, start, "refused requests changed the state");
    let gw = c.get_nat_gateway(pb::GetNatGatewayRequest { id: "gw".into(), stale_ok: false }).await.unwrap();
    assert_eq!(gw.into_inner().allocations.len(), 1);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_clients_on_every_member_never_share_a_nat_block() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 20;
    let cluster = Cluster::start().await;
    let mut c = cluster.client(1).await;
    c.register_node(register("n1", 1, &[])).await.unwrap();
    c.register_node(register("n2", 2, &[])).await.unwrap();
    c.create_vni(vni(100)).await.unwrap();
    // 150 blocks for 160 interfaces: the last ten attaches find the pool exhausted.
    c.create_nat_gateway(pb::CreateNatGatewayRequest {
        request_id: String::new(),
        id: "gw".into(),
        vni: 100,
        public_ips: vec!["203.0.113.1".into(), "203.0.113.2".into(), "203.0.113.3".into()],
        port_min: 1000,
        port_max: 1000 + 50 * 100,
        block_size: 100,
    })
    .await
    .unwrap();
    let ids: Vec<MemberId> = cluster.members.keys().copied().collect();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut client = cluster.client(ids[t % ids.len()]).await;
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for k in 0..PER_TASK {
                let n = t * PER_TASK + k;
                let name = format!("vm{n}");
                let ip = format!("10.0.{}.{}", n / 200, 1 + n % 200);
                let node = ["n1", "n2"][n % 2];
                client.create_interface(iface(&name, 100, node, &format!("dev{n}"), &ip)).await.unwrap();
                let r = client
                    .attach_nat(pb::AttachNatRequest {
                        request_id: format!("attach-{name}"),
                        gateway: "gw".into(),
                        interface: name.clone(),
                    })
                    .await;
                outcomes.push((name, r.map(tonic::Response::into_inner)));
            }
            outcomes
        }));
    }
    let mut granted = Vec::new();
    let mut exhausted = 0;
    for t in tasks {
        for (name, r) in t.await.unwrap() {
            match r {
                Ok(a) => granted.push((name, a.block.unwrap())),
                Err(s) if s.code() == Code::ResourceExhausted => exhausted += 1,
                Err(s) => panic!("attach {name}: {s}"),
            }
        }
    }
    assert_eq!(granted.len(), 150);
    assert_eq!(exhausted, TASKS * PER_TASK - 150);
    for (i, (a_name, a)) in granted.iter().enumerate() {
        assert_eq!(a.port_max - a.port_min, 100);
        for (b_name, b) in &granted[i + 1..] {
            let overlap = a.ip == b.ip && a.port_min < b.port_max && b.port_min < a.port_max;
            assert!(!overlap, "{a_name} {a:?} overlaps {b_name} {b:?}");
        }
    }
    // The state holds exactly the acknowledged blocks, on every member.
    let gw = c.get_nat_gateway(pb::GetNatGatewayRequest { id: "gw".into(), stale_ok: false }).await.unwrap();
    let mut held: Vec<(String, pb::NatBlock)> =
        gw.into_inner().allocations.into_iter().map(|a| (a.interface, a.block.unwrap())).collect();
    held.sort_by(|a, b| a.0.cmp(&b.0));
    granted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(held, granted);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_is_added_and_removed() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    let mut c = cluster.client(follower).await;
    c.create_vni(vni(1)).await.unwrap();

    let (fourth, addr, dir) = start_member(4).await;
    cluster._dirs.push(dir);
    // Not in a cluster yet: it knows no leader and says so.
    let mut c4 = connect_any(&[addr.to_string()], Duration::from_secs(5)).await.unwrap().1;
    let err = c4.create_vni(vni(2)).await.unwrap_err();
    assert_eq!((err.code(), reason(&err)), (Code::Unavailable, "no_leader"));

    // Through a follower: first as a learner, then as a voter.
    let learner = c
        .add_member(pb::AddMemberRequest { id: 4, addr: addr.to_string(), learner_only: true })
        .await
        .unwrap()
        .into_inner();
    let m4 = learner.members.iter().find(|m| m.id == 4).unwrap();
    assert!(!m4.voter);
    let voter = c
        .add_member(pb::AddMemberRequest { id: 4, addr: addr.to_string(), learner_only: false })
        .await
        .unwrap()
        .into_inner();
    assert!(voter.members.iter().all(|m| m.voter), "{:?}", voter.members);
    assert_eq!(voter.members.len(), 4);
    // Adding it again changes nothing; another address for the same id is refused.
    let again =
        c.add_member(pb::AddMemberRequest { id: 4, addr: addr.to_string(), learner_only: false }).await;
    assert_eq!(again.unwrap().into_inner().log_index, None);
    let err = c
        .add_member(pb::AddMemberRequest { id: 4, addr: "127.0.0.1:1".into(), learner_only: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    cluster.members.insert(4, fourth);
    cluster.addrs.insert(4, addr);

    // The new member serves the API, replicates writes and answers linearizable reads.
    let w = c4.create_vni(vni(3)).await.unwrap().into_inner();
    let listed = c4.list_members(pb::ListMembersRequest { stale_ok: false }).await.unwrap().into_inner();
    assert_eq!(listed.members.len(), 4);
    assert_eq!(listed.leader_id, Some(leader));
    assert!(listed.members.iter().all(|m| m.matched_index.is_some()));
    let applied = cluster.members[&leader].raft().metrics().borrow().last_applied.map(|l| l.index);
    cluster.members[&4]
        .raft()
        .wait(Some(DEADLINE))
        .applied_index_at_least(applied, "caught up")
        .await
        .unwrap();
    let own = c4.list_vnis(pb::ListVnisRequest { stale_ok: true }).await.unwrap().into_inner();
    assert_eq!(own.generation, w.generation);
    assert_eq!(own.vnis.iter().map(|v| v.vni).collect::<Vec<_>>(), [1, 3]);

    // Removed again: three voters, and the cluster goes on.
    let after = c.remove_member(pb::RemoveMemberRequest { id: 4 }).await.unwrap().into_inner();
    assert_eq!(after.members.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
    cluster.members.remove(&4).unwrap().stop().await.unwrap();
    cluster.addrs.remove(&4);
    c.create_vni(vni(4)).await.unwrap();
    let st = c.get_status(pb::GetStatusRequest { stale_ok: false }).await.unwrap().into_inner();
    assert_eq!((st.voters, st.learners, st.vnis), (3, 0, 3));
    cluster.stop().await;
}
