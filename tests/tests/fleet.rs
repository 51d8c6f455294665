//! The node as the fleet coordinator drives it: gossip (a chitchat member in the node's
//! namespace reads the published keys), an interface created with a preferred
//! (externally generated) underlay address that traffic then reaches, and a Maglev
//! table installed with `dpfleet.node.v1` SetLoadBalancerTable that decides where new
//! flows go.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use dpfleet_e2e::api::{self, ok};
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::frames::{self, Echo, Ip};
use dpfleet_e2e::lbflow::{self, CLIENT};
use dpfleet_e2e::topo::{self, Vm};
use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::dpfleet::node::v1 as fpb;
use dpfleet_proto::maglev::{MaglevInput, MaglevTable, Target};

const GOSSIP: &str = "127.0.0.1:7946";
/// An externally generated underlay address of the node's /64 (flags byte 0x80).
const PREFERRED: Ipv6Addr = Ipv6Addr::new(0xfc00, 1, 0, 0, 0, 0x8000, 0, 0x42);

/// Joins the node's gossip from inside its namespace and returns the keys of
/// `node/<name>` once `until` holds for them (or panics after 10 s).
fn gossip_keys(
    fx: &Fixture,
    name: &str,
    until: impl Fn(&BTreeMap<String, String>) -> bool + Send + 'static,
) -> BTreeMap<String, String> {
    let node_id = format!("node/{name}");
    fx.node
        .netns()
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let me: SocketAddr = probe.local_addr().unwrap();
                drop(probe);
                let cfg = ChitchatConfig {
                    chitchat_id: ChitchatId::new("coordinator/e2e", 1, me),
                    cluster_id: "dpfleet".into(),
                    gossip_interval: Duration::from_millis(100),
                    listen_addr: me,
                    seed_nodes: vec![GOSSIP.into()],
                    failure_detector_config: FailureDetectorConfig::default(),
                    marked_for_deletion_grace_period: Duration::from_secs(3600),
                    catchup_callback: None,
                    extra_liveness_predicate: None,
                    protocol_version: chitchat::ProtocolVersion::V0,
                };
                let peer = spawn_chitchat(cfg, vec![("role".into(), "coordinator".into())], &UdpTransport)
                    .await
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                let keys = loop {
                    let keys = peer
                        .with_chitchat(|c| {
                            c.node_states().iter().find(|(id, _)| *id.node_id == *node_id).map(|(_, st)| {
                                st.key_values().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
                            })
                        })
                        .await;
                    if let Some(k) = keys.filter(|k| until(k)) {
                        break k;
                    }
                    assert!(Instant::now() < deadline, "the node's gossip keys never arrived");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                peer.shutdown().await.unwrap();
                keys
            })
        })
        .unwrap()
}

#[test]
fn the_coordinator_view_of_a_node() {
    let mut fx =
        Fixture::start_with("fleet", &[&format!("--gossip-listen={GOSSIP}"), "--fleet-node-name=e2e-node"]);

    // Gossip: the static keys and the applied generation as SetAppliedGeneration sets it.
    let keys = gossip_keys(&fx, "e2e-node", |k| k.contains_key("devices"));
    assert_eq!(keys["role"], "node");
    assert_eq!(keys["underlay"], topo::NODE_UL.to_string());
    assert_eq!(keys["api"], format!("127.0.0.1:{}", topo::GRPC_PORT));
    assert_eq!(keys["devices"], "net_tap2,net_tap3,net_tap4,net_tap5");
    assert_eq!(keys["generation"], "0");
    assert!(keys["load.flows"].parse::<u64>().is_ok() && keys["load.nat_ports_used"].parse::<u64>().is_ok());
    fx.api.set_applied_generation(17, false).unwrap();
    let keys = gossip_keys(&fx, "e2e-node", |k| k.get("generation").is_some_and(|g| g == "17"));
    assert_eq!(keys["generation"], "17");
    let status = fx.api.get_node_status().unwrap();
    assert_eq!((status.node_name.as_str(), status.applied_generation), ("e2e-node", 17));

    // A VM on the fourth VF with the coordinator's underlay address.
    let vm4 = Vm::new(4, topo::VNI1);
    let mut req = api::interface_request(&vm4);
    req.preferred_underlay_route = PREFERRED.to_string().into_bytes();
    let r = ok("CreateInterface", fx.api.create_interface(req.clone()));
    assert_eq!(api::parse_v6(&r.underlay_route), PREFERRED);
    // The same address again, for an alias prefix: refused with VNF_INSERT (401).
    let dup = pb::CreatePrefixRequest {
        interface_id: vm4.id.clone().into_bytes(),
        prefix: Some(api::prefix(IpAddr::V4(Ipv4Addr::new(172, 23, 3, 0)), 24)),
        preferred_underlay_route: PREFERRED.to_string().into_bytes(),
    };
    api::expect_code("CreatePrefix", 401, fx.api.create_prefix(dup));
    // Traffic to that address reaches the VM.
    let mut tap4 = fx.tap_of(&vm4);
    assert_eq!(Fixture::dhcp(&mut tap4, &vm4).yiaddr, vm4.ip);
    let mut pf0 = fx.pf_tap(0);
    let (pf_mac, router_mac) = (fx.node.pf(0).mac, topo::router_mac(0));
    let echo = frames::ipv4_icmp_echo(CLIENT, vm4.ip, false, 9, 1, b"to-preferred-underlay");
    pf0.send(&frames::ethernet_ip_in_ipv6(pf_mac, router_mac, topo::ROUTER_UL, PREFERRED, &echo));
    tap4.expect("decapsulated packet on VM4", |f| {
        Ip::from_frame(f)
            .and_then(|ip| Echo::from_ip(&ip))
            .is_some_and(|e| e.payload == b"to-preferred-underlay")
    });

    // A load balancer whose table the coordinator fixes: weighted targets, its own seed.
    let lb_ul = lbflow::create(&mut fx, b"lb-fleet");
    let targets: Vec<Target> = (2..5u16)
        .map(|n| Target { addr: Ipv6Addr::new(0xfc00, n, 0, 0, 0, 0, 0, 1), weight: u32::from(n) })
        .collect();
    let input = MaglevInput { targets: targets.clone(), table_size: 1009, seed: 0xf1ee7 };
    let table = MaglevTable::build(&input).unwrap();
    let req = fpb::SetLoadBalancerTableRequest {
        loadbalancer_id: b"lb-fleet".to_vec(),
        epoch: 3,
        table_size: input.table_size,
        seed: input.seed,
        targets: targets
            .iter()
            .map(|t| fpb::MaglevTarget { underlay_address: t.addr.octets().to_vec(), weight: t.weight })
            .collect(),
        expected_digest: table.digest(),
    };
    let mut wrong = req.clone();
    wrong.expected_digest ^= 0x5a;
    let e = fx.api.set_load_balancer_table(wrong).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted, "{e:?}");
    assert_eq!(fx.api.set_load_balancer_table(req).unwrap(), table.digest());
    let status = fx.api.get_node_status().unwrap();
    assert_eq!(status.load_balancers.len(), 1);
    assert_eq!((status.load_balancers[0].epoch, status.load_balancers[0].digest), (3, table.digest()));

    // 200 flows, each to the target the coordinator's table gives for its hash (the node
    // runs dpservice's round robin for its own tables).
    let mut per_target = BTreeMap::new();
    for sport in 20_000..20_200u16 {
        let want = table.lookup_addr(lbflow::flow_key(sport).flow_hash());
        assert_eq!(lbflow::send(&fx, &mut pf0, lb_ul, sport), want, "flow from port {sport}");
        *per_target.entry(want).or_insert(0usize) += 1;
    }
    assert_eq!(per_target.len(), 3, "every target gets flows: {per_target:?}");
}
