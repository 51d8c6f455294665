//! Runs the built `dpfleetctl` binary against an in-test gRPC server.
//!
//! The real node API lives in the `dpfleet-node` binary (DPDK, not a library), so the
//! server here is a small stand-in for the transport: it implements the generated
//! `DpdKironcore` trait for initialization and interfaces (with dpservice's
//! conventions: ABORTED before Initialize, errors in `status` with gRPC OK) and answers
//! UNIMPLEMENTED otherwise. It records the requests it got, so the tests also check what
//! went over the wire.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use dpfleet_proto::dpdkironcore::v1 as pb;
use pb::dpd_kironcore_server::{DpdKironcore, DpdKironcoreServer};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct State {
    initialized: bool,
    interfaces: Vec<pb::Interface>,
    create_requests: Vec<pb::CreateInterfaceRequest>,
}

#[derive(Clone, Default)]
struct Double(Arc<Mutex<State>>);

fn ok() -> Option<pb::Status> {
    Some(pb::Status { code: 0, message: "Success".into() })
}

impl Double {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn need_init(&self) -> Result<(), Status> {
        if self.state().initialized {
            Ok(())
        } else {
            Err(Status::aborted("not initialized"))
        }
    }
}

/// The impl block with the calls given in full, and every other call answering
/// UNIMPLEMENTED (the generated trait has no default methods).
macro_rules! double_impl {
    ({ $($body:tt)* } $($name:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl DpdKironcore for Double {
            $($body)*
            $(
                async fn $name(&self, _: Request<pb::$req>) -> Result<Response<pb::$resp>, Status> {
                    Err(Status::unimplemented(concat!(stringify!($name), " is not implemented here")))
                }
            )*
        }
    };
}

double_impl! {
    {
        async fn check_initialized(
            &self,
            _: Request<pb::CheckInitializedRequest>,
        ) -> Result<Response<pb::CheckInitializedResponse>, Status> {
            self.need_init()?;
            Ok(Response::new(pb::CheckInitializedResponse { status: ok(), uuid: "uuid-1".into() }))
        }

        async fn initialize(
            &self,
            _: Request<pb::InitializeRequest>,
        ) -> Result<Response<pb::InitializeResponse>, Status> {
            self.state().initialized = true;
            Ok(Response::new(pb::InitializeResponse { status: ok(), uuid: "uuid-1".into() }))
        }

        async fn list_interfaces(
            &self,
            _: Request<pb::ListInterfacesRequest>,
        ) -> Result<Response<pb::ListInterfacesResponse>, Status> {
            self.need_init()?;
            let interfaces = self.state().interfaces.clone();
            Ok(Response::new(pb::ListInterfacesResponse { status: ok(), interfaces }))
        }

        async fn create_interface(
            &self,
            req: Request<pb::CreateInterfaceRequest>,
        ) -> Result<Response<pb::CreateInterfaceResponse>, Status> {
            self.need_init()?;
            let r = req.into_inner();
            if r.interface_id.is_empty() {
                return Err(Status::invalid_argument("Invalid interface_id"));
            }
            let mut st = self.state();
            st.create_requests.push(r.clone());
            if st.interfaces.iter().any(|i| i.id == r.interface_id) {
                let status = Some(pb::Status { code: 202, message: "ALREADY_EXISTS".into() });
                return Ok(Response::new(pb::CreateInterfaceResponse { status, ..Default::default() }));
            }
            let underlay_route = format!("fc00:1::{}", st.interfaces.len() + 1).into_bytes();
            st.interfaces.push(pb::Interface {
                id: r.interface_id,
                vni: r.vni,
                primary_ipv4: r.ipv4_config.unwrap_or_default().primary_address,
                primary_ipv6: r.ipv6_config.unwrap_or_default().primary_address,
                underlay_route: underlay_route.clone(),
                pci_name: r.device_name.clone(),
                metering_params: None,
            });
            Ok(Response::new(pb::CreateInterfaceResponse {
                status: ok(),
                underlay_route,
                vf: Some(pb::VirtualFunction { name: format!("{}-vf", r.device_name), ..Default::default() }),
            }))
        }
    }
    get_version(GetVersionRequest) -> GetVersionResponse;
    get_interface(GetInterfaceRequest) -> GetInterfaceResponse;
    delete_interface(DeleteInterfaceRequest) -> DeleteInterfaceResponse;
    list_prefixes(ListPrefixesRequest) -> ListPrefixesResponse;
    create_prefix(CreatePrefixRequest) -> CreatePrefixResponse;
    delete_prefix(DeletePrefixRequest) -> DeletePrefixResponse;
    list_load_balancer_prefixes(ListLoadBalancerPrefixesRequest) -> ListLoadBalancerPrefixesResponse;
    create_load_balancer_prefix(CreateLoadBalancerPrefixRequest) -> CreateLoadBalancerPrefixResponse;
    delete_load_balancer_prefix(DeleteLoadBalancerPrefixRequest) -> DeleteLoadBalancerPrefixResponse;
    create_vip(CreateVipRequest) -> CreateVipResponse;
    get_vip(GetVipRequest) -> GetVipResponse;
    delete_vip(DeleteVipRequest) -> DeleteVipResponse;
    create_load_balancer(CreateLoadBalancerRequest) -> CreateLoadBalancerResponse;
    get_load_balancer(GetLoadBalancerRequest) -> GetLoadBalancerResponse;
    delete_load_balancer(DeleteLoadBalancerRequest) -> DeleteLoadBalancerResponse;
    create_load_balancer_target(CreateLoadBalancerTargetRequest) -> CreateLoadBalancerTargetResponse;
    list_load_balancer_targets(ListLoadBalancerTargetsRequest) -> ListLoadBalancerTargetsResponse;
    delete_load_balancer_target(DeleteLoadBalancerTargetRequest) -> DeleteLoadBalancerTargetResponse;
    create_nat(CreateNatRequest) -> CreateNatResponse;
    get_nat(GetNatRequest) -> GetNatResponse;
    delete_nat(DeleteNatRequest) -> DeleteNatResponse;
    list_local_nats(ListLocalNatsRequest) -> ListLocalNatsResponse;
    create_neighbor_nat(CreateNeighborNatRequest) -> CreateNeighborNatResponse;
    delete_neighbor_nat(DeleteNeighborNatRequest) -> DeleteNeighborNatResponse;
    list_neighbor_nats(ListNeighborNatsRequest) -> ListNeighborNatsResponse;
    list_routes(ListRoutesRequest) -> ListRoutesResponse;
    create_route(CreateRouteRequest) -> CreateRouteResponse;
    delete_route(DeleteRouteRequest) -> DeleteRouteResponse;
    check_vni_in_use(CheckVniInUseRequest) -> CheckVniInUseResponse;
    reset_vni(ResetVniRequest) -> ResetVniResponse;
    list_firewall_rules(ListFirewallRulesRequest) -> ListFirewallRulesResponse;
    create_firewall_rule(CreateFirewallRuleRequest) -> CreateFirewallRuleResponse;
    get_firewall_rule(GetFirewallRuleRequest) -> GetFirewallRuleResponse;
    delete_firewall_rule(DeleteFirewallRuleRequest) -> DeleteFirewallRuleResponse;
    capture_start(CaptureStartRequest) -> CaptureStartResponse;
    capture_stop(CaptureStopRequest) -> CaptureStopResponse;
    capture_status(CaptureStatusRequest) -> CaptureStatusResponse;
}

/// Starts a server on a free loopback port in a thread of its own; it lives as long
/// as the test process.
fn serve() -> (String, Double) {
    let double = Double::default();
    let svc = double.clone();
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            tx.send(incoming.local_addr().unwrap()).unwrap();
            tonic::transport::Server::builder()
                .add_service(DpdKironcoreServer::new(svc))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}"), double)
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl(node: &str, args: &[&str]) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_dpfleetctl"))
        .env_remove("DPFLEET_NODE")
        .arg("--node")
        .arg(node)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

const CREATE_VM1: [&str; 12] = [
    "node", "iface", "create", "--id", "vm1", "--vni", "100", "--ipv4", "10.0.0.1", "--device", "net_tap2",
    "-ojson",
];

#[test]
fn calls_before_initialize_are_refused_with_exit_2() {
    let (node, _) = serve();
    let r = ctl(&node, &["node", "check-init"]);
    assert_eq!((r.code, r.stdout.as_str()), (2, ""));
    assert_eq!(r.stderr, "error: not initialized (gRPC Aborted)\n");

    let r = ctl(&node, &["node", "init"]);
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "UUID\nuuid-1\n", ""));
    let r = ctl(&node, &["node", "check-init", "--output", "json"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "{\n  \"uuid\": \"uuid-1\"\n}\n"));
}

#[test]
fn interfaces_create_list_and_server_status_errors() {
    let (node, double) = serve();
    assert_eq!(ctl(&node, &["node", "init"]).code, 0);

    let r = ctl(&node, &CREATE_VM1);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "result": "created",
            "id": "vm1",
            "vni": 100,
            "device": "net_tap2",
            "primary_ipv4": "10.0.0.1",
            "primary_ipv6": "::",
            "underlay_route": "fc00:1::1",
            "vf_name": "net_tap2-vf",
        })
    );
    // Addresses travel as text; no IPv6 is sent as "::".
    let sent = double.state().create_requests[0].clone();
    assert_eq!(sent.interface_id, b"vm1");
    assert_eq!(sent.ipv4_config.unwrap().primary_address, b"10.0.0.1");
    assert_eq!(sent.ipv6_config.unwrap().primary_address, b"::");

    let r = ctl(&node, &CREATE_VM1);
    assert_eq!((r.code, r.stdout.as_str()), (2, ""));
    assert_eq!(r.stderr, "error: ALREADY_EXISTS (code 202)\n");

    let r = ctl(
        &node,
        &[
            "node",
            "iface",
            "create",
            "--id",
            "web-2",
            "--vni",
            "7",
            "--ipv4",
            "10.7.0.9",
            "--ipv6",
            "2001:db8::9",
        ]
        .iter()
        .chain(&["--device", "net_tap3"])
        .copied()
        .collect::<Vec<_>>(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "\
RESULT   ID     VNI  DEVICE    PRIMARY_IPV4  PRIMARY_IPV6  UNDERLAY_ROUTE  VF_NAME
created  web-2  7    net_tap3  10.7.0.9      2001:db8::9   fc00:1::2       net_tap3-vf
"
    );

    let r = ctl(&node, &["node", "iface", "list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "\
ID     VNI  DEVICE    PRIMARY_IPV4  PRIMARY_IPV6  UNDERLAY_ROUTE
vm1    100  net_tap2  10.0.0.1      ::            fc00:1::1
web-2  7    net_tap3  10.7.0.9      2001:db8::9   fc00:1::2
"
    );
    let r = ctl(&node, &["node", "iface", "list", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let ids: Vec<_> = v.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["vm1", "web-2"]);
}

#[test]
fn grpc_errors_exit_2_with_their_message() {
    let (node, _) = serve();
    assert_eq!(ctl(&node, &["node", "init"]).code, 0);
    let r = ctl(&node, &["node", "fw", "list", "--iface", "vm1"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr, "error: list_firewall_rules is not implemented here (gRPC Unimplemented)\n");
    let r = ctl(
        &node,
        &["node", "iface", "create", "--id", "", "--vni", "1", "--ipv4", "1.2.3.4", "--device", "d"],
    );
    assert_eq!((r.code, r.stderr.as_str()), (2, "error: Invalid interface_id (gRPC InvalidArgument)\n"));
}

#[test]
fn usage_errors_exit_1_without_contacting_the_node() {
    let (node, double) = serve();
    // Missing argument (clap), malformed address, a filter that does not fit the protocol.
    let r = ctl(&node, &["node", "iface", "create", "--id", "vm1"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("required"), "{}", r.stderr);
    let r = ctl(
        &node,
        &["node", "route", "create", "--vni", "1", "--prefix", "10.0.0.0/8", "--next-hop", "1.2.3.4"],
    );
    assert_eq!(r.code, 1);
    let r = ctl(&node, &["node", "fw", "create", "--iface", "vm1", "--rule-id", "r", "--dst-ports", "80"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "error: --src-ports/--dst-ports need --proto tcp or udp\n");
    let r = ctl("not a uri", &["node", "init"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: invalid node address"), "{}", r.stderr);
    assert!(!double.state().initialized);
}

#[test]
fn unreachable_node_exits_1() {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let node = format!("127.0.0.1:{port}");
    let r = ctl(&node, &["node", "init"]);
    assert_eq!((r.code, r.stdout.as_str()), (1, ""));
    assert!(r.stderr.starts_with(&format!("error: cannot connect to {node}: ")), "{}", r.stderr);
}

#[test]
fn node_address_from_the_environment() {
    let (node, double) = serve();
    let out = Command::new(env!("CARGO_BIN_EXE_dpfleetctl"))
        .env("DPFLEET_NODE", node.trim_start_matches("http://"))
        .args(["node", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(double.state().initialized);
}

#[test]
fn help_documents_exit_codes() {
    let r = ctl("unused", &["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit codes:"), "{}", r.stdout);
    assert!(r.stdout.contains("2  the node or the coordinator refused the request"), "{}", r.stdout);
    let r = ctl("unused", &["node", "--help"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("Exit codes:"), "{}", r.stdout);
}
