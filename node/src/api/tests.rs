//! The API end to end in one process: a real tonic server on 127.0.0.1 with a real
//! [`Control`] over a fake port list, driven by the generated tonic client.

use std::sync::Arc;

use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::dpdkironcore::v1::dpd_kironcore_client::DpdKironcoreClient;
use dpfleet_proto::dpfleet::node::v1 as fpb;
use dpfleet_proto::dpfleet::node::v1::fleet_node_client::FleetNodeClient;
use dpfleet_proto::maglev::{MaglevInput, MaglevTable, Target};
use tonic::transport::Channel;
use tonic::Code;

use super::*;
use crate::control::tests::control;

type Client = DpdKironcoreClient<Channel>;

struct Server {
    client: Client,
    fleet: FleetNodeClient<Channel>,
    control: Arc<Control>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

async fn start() -> Server {
    let control = Arc::new(control());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_listener(listener, Arc::clone(&control), "node-a".into(), async {
        let _ = stopped.await;
    }));
    let client = DpdKironcoreClient::connect(format!("http://{addr}")).await.unwrap();
    let fleet = FleetNodeClient::connect(format!("http://{addr}")).await.unwrap();
    Server { client, fleet, control, stop, task }
}

impl Server {
    async fn stop(self) {
        drop(self.client);
        drop(self.fleet);
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn ok() -> Option<pb::Status> {
    Some(pb::Status { code: 0, message: "Success".into() })
}

fn err(code: u32, name: &str) -> Option<pb::Status> {
    Some(pb::Status { code, message: name.into() })
}

fn addr4(a: &str) -> Option<pb::IpAddress> {
    Some(pb::IpAddress { ipver: pb::IpVersion::Ipv4 as i32, address: a.as_bytes().to_vec() })
}

fn addr6(a: &str) -> Option<pb::IpAddress> {
    Some(pb::IpAddress { ipver: pb::IpVersion::Ipv6 as i32, address: a.as_bytes().to_vec() })
}

fn prefix(a: &str, length: u32) -> Option<pb::Prefix> {
    let ip = if a.contains(':') { addr6(a) } else { addr4(a) };
    Some(pb::Prefix { ip, length, underlay_route: Vec::new() })
}

fn iface_req(id: &str, dev: &str, v4: &str, v6: &str) -> pb::CreateInterfaceRequest {
    pb::CreateInterfaceRequest {
        interface_type: pb::InterfaceType::Virtual as i32,
        interface_id: id.as_bytes().to_vec(),
        vni: 100,
        ipv4_config: Some(pb::IpConfig { primary_address: v4.as_bytes().to_vec() }),
        ipv6_config: Some(pb::IpConfig { primary_address: v6.as_bytes().to_vec() }),
        pxe_config: None,
        device_name: dev.into(),
        metering_parameters: Some(pb::MeteringParams { total_rate: 0, public_rate: 0 }),
        preferred_underlay_route: Vec::new(),
    }
}

fn route_req(vni: u32, a: &str, len: u32, nh_vni: u32, nh: Option<pb::IpAddress>) -> pb::CreateRouteRequest {
    pb::CreateRouteRequest {
        vni,
        route: Some(pb::Route {
            prefix: prefix(a, len),
            nexthop_vni: nh_vni,
            nexthop_address: nh,
            weight: 100,
        }),
    }
}

fn del_route_req(vni: u32, a: &str, len: u32) -> pb::DeleteRouteRequest {
    pb::DeleteRouteRequest { vni, route: Some(pb::Route { prefix: prefix(a, len), ..Default::default() }) }
}

fn pfx_req(id: &str, a: &str, len: u32) -> pb::CreatePrefixRequest {
    pb::CreatePrefixRequest {
        interface_id: id.as_bytes().to_vec(),
        prefix: prefix(a, len),
        preferred_underlay_route: Vec::new(),
    }
}

fn del_pfx_req(id: &str, a: &str, len: u32) -> pb::DeletePrefixRequest {
    pb::DeletePrefixRequest { interface_id: id.as_bytes().to_vec(), prefix: prefix(a, len) }
}

fn get_req(id: &str) -> pb::GetInterfaceRequest {
    pb::GetInterfaceRequest { interface_id: id.as_bytes().to_vec() }
}

fn del_req(id: &str) -> pb::DeleteInterfaceRequest {
    pb::DeleteInterfaceRequest { interface_id: id.as_bytes().to_vec() }
}

fn assert_grpc_error<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, code: Code, msg: &str) {
    let e = r.expect_err("gRPC-level error expected");
    assert_eq!((e.code(), e.message()), (code, msg));
}

#[tokio::test]
async fn before_initialize_only_initialize_works() {
    let s = start().await;
    let mut c = s.client.clone();
    assert_grpc_error(
        c.check_initialized(pb::CheckInitializedRequest {}).await,
        Code::Aborted,
        "not initialized",
    );
    assert_grpc_error(
        c.create_interface(iface_req("vm1", "net_tap2", "10.100.1.1", "::")).await,
        Code::Aborted,
        "not initialized",
    );
    assert_grpc_error(
        c.list_interfaces(pb::ListInterfacesRequest {}).await,
        Code::Aborted,
        "not initialized",
    );
    assert!(s.control.list_interfaces().is_empty());

    let init = c.initialize(pb::InitializeRequest {}).await.unwrap().into_inner();
    assert_eq!(init.status, ok());
    assert_eq!(init.uuid.len(), 36);
    assert_eq!(init.uuid, init.uuid.to_uppercase());
    let check = c.check_initialized(pb::CheckInitializedRequest {}).await.unwrap().into_inner();
    assert_eq!((check.status, check.uuid.as_str()), (ok(), init.uuid.as_str()));
    // A second Initialize is accepted and keeps the identity.
    let again = c.initialize(pb::InitializeRequest {}).await.unwrap().into_inner();
    assert_eq!((again.status, again.uuid), (ok(), init.uuid));
    s.stop().await;
}

#[tokio::test]
async fn version() {
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    let req = pb::GetVersionRequest {
        client_protocol: "v1".into(),
        client_name: "test".into(),
        client_version: "0.1".into(),
    };
    let v = c.get_version(req.clone()).await.unwrap().into_inner();
    assert_eq!(v.status, ok());
    assert_eq!(v.service_protocol, SERVICE_VERSION);
    assert_eq!(v.service_version, SERVICE_VERSION);
    let no_name = pb::GetVersionRequest { client_name: String::new(), ..req };
    assert_grpc_error(c.get_version(no_name).await, Code::InvalidArgument, "Invalid client_name");
    s.stop().await;
}

fn capture(sink: &str, ifaces: Vec<pb::CapturedInterface>) -> pb::CaptureStartRequest {
    pb::CaptureStartRequest {
        capture_config: Some(pb::CaptureConfig {
            sink_node_ip: Some(pb::IpAddress {
                ipver: pb::IpVersion::Ipv6 as i32,
                address: sink.as_bytes().to_vec(),
            }),
            udp_src_port: 3000,
            udp_dst_port: 3010,
            interfaces: ifaces,
        }),
    }
}

fn vf(name: &str) -> pb::CapturedInterface {
    pb::CapturedInterface {
        interface_type: pb::CaptureInterfaceType::SingleVf as i32,
        filter: vec![],
        spec: Some(pb::captured_interface::Spec::VfName(name.as_bytes().to_vec())),
    }
}

#[tokio::test]
async fn capture_answers_as_dpservice_without_offloading() {
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    // A valid request is refused: nothing is offloaded, so there is nothing to sample.
    let r = c.capture_start(capture("fc00::1", vec![vf("vm1")])).await.unwrap().into_inner();
    assert_eq!(r.status, err(211, "NOT_ACTIVE"));
    let r = c.capture_stop(pb::CaptureStopRequest {}).await.unwrap().into_inner();
    assert_eq!((r.status, r.stopped_interface_cnt), (err(211, "NOT_ACTIVE"), 0));
    let r = c.capture_status(pb::CaptureStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((r.status, r.is_active, r.capture_config), (None, false, None));
    // Malformed requests are refused first, with dpservice's messages.
    assert_grpc_error(
        c.capture_start(capture("10.0.0.1", vec![])).await,
        Code::InvalidArgument,
        "Invalid sink_node_ip",
    );
    let many = (0..17).map(|i| vf(&format!("vm{i}"))).collect();
    assert_grpc_error(
        c.capture_start(capture("fc00::1", many)).await,
        Code::InvalidArgument,
        "Too many interfaces to be captured",
    );
    let long = vf(&"x".repeat(64));
    assert_grpc_error(
        c.capture_start(capture("fc00::1", vec![long])).await,
        Code::InvalidArgument,
        "Invalid interface_id",
    );
    let mut bad_port = capture("fc00::1", vec![]);
    bad_port.capture_config.as_mut().unwrap().udp_dst_port = 70_000;
    assert_grpc_error(c.capture_start(bad_port).await, Code::InvalidArgument, "Invalid udp_dst_port");
    let bad_type = pb::CapturedInterface { interface_type: 7, filter: vec![], spec: None };
    assert_grpc_error(
        c.capture_start(capture("fc00::1", vec![bad_type])).await,
        Code::InvalidArgument,
        "Invalid interfaces.interface_type",
    );
    s.stop().await;
}

#[tokio::test]
async fn interfaces() {
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();

    let mut vm1 = iface_req("vm1", "net_tap2", "10.100.1.1", "2000:100:1::1");
    vm1.pxe_config = Some(pb::PxeConfig { next_server: "2001:dede::1".into(), boot_filename: "ipxe".into() });
    let r = c.create_interface(vm1.clone()).await.unwrap().into_inner();
    assert_eq!(r.status, ok());
    assert_eq!(r.underlay_route, b"fc00:1::1:0:1");
    assert_eq!(r.vf.unwrap().name, "dtapvf_0");
    let pxe = s.control.snapshot().iface(2).unwrap().pxe.clone().unwrap();
    assert_eq!((pxe.next_server.as_str(), pxe.boot_filename.as_str()), ("2001:dede::1", "ipxe"));

    // Refusals reported in the status, nothing else filled in.
    let cases = [
        (vm1.clone(), 202, "ALREADY_EXISTS"),
        (iface_req("new_vm", "invalid", "10.100.1.2", "::"), 201, "NOT_FOUND"),
        (iface_req("new_vm", "net_tap0", "10.100.1.2", "::"), 202, "ALREADY_EXISTS"),
        (iface_req("vm4", "net_tap5", "10.100.1.1", "2000:100:1::4"), 301, "ROUTE_EXISTS"),
        (iface_req("vm1", "net_tap5", "10.100.1.4", "::"), 402, "VM_HANDLE"),
    ];
    for (req, code, name) in cases {
        let r = c.create_interface(req).await.unwrap().into_inner();
        assert_eq!(r, pb::CreateInterfaceResponse { status: err(code, name), ..Default::default() });
    }
    // Malformed requests fail at the gRPC level.
    let malformed = [
        (
            iface_req("vm4", "net_tap5", "0.0.0.0", "::"),
            "Invalid ipv4_config.primary_address and ipv6_config.primary_address combination",
        ),
        (iface_req("vm4", "net_tap5", "10.100.1.300", "::"), "Invalid ipv4_config.primary_address"),
        (iface_req("vm4", "net_tap5", "10.100.1.4", "2000::x"), "Invalid ipv6_config.primary_address"),
        (iface_req("vm 4", "net_tap5", "10.100.1.4", "::"), "Invalid interface_id"),
        (iface_req("vm4", "", "10.100.1.4", "::"), "Invalid device_name"),
    ];
    for (req, msg) in malformed {
        assert_grpc_error(c.create_interface(req).await, Code::InvalidArgument, msg);
    }
    assert_eq!(s.control.list_interfaces().len(), 1);

    let got = c.get_interface(get_req("vm1")).await.unwrap().into_inner();
    let vm1_msg = pb::Interface {
        id: b"vm1".to_vec(),
        vni: 100,
        primary_ipv4: b"10.100.1.1".to_vec(),
        primary_ipv6: b"2000:100:1::1".to_vec(),
        underlay_route: b"fc00:1::1:0:1".to_vec(),
        pci_name: "net_tap2".into(),
        metering_params: Some(pb::MeteringParams::default()),
    };
    assert_eq!(got, pb::GetInterfaceResponse { status: ok(), interface: Some(vm1_msg.clone()) });
    let missing = c.get_interface(get_req("nope")).await.unwrap().into_inner();
    assert_eq!(missing, pb::GetInterfaceResponse { status: err(201, "NOT_FOUND"), interface: None });
    assert_grpc_error(c.get_interface(get_req("")).await, Code::InvalidArgument, "Invalid interface_id");

    let r = c.create_interface(iface_req("vm3", "net_tap4", "10.200.1.3", "::")).await.unwrap().into_inner();
    assert_eq!(r.underlay_route, b"fc00:1::1:0:2");
    let list = c.list_interfaces(pb::ListInterfacesRequest {}).await.unwrap().into_inner();
    assert_eq!(list.status, ok());
    assert_eq!(list.interfaces.len(), 2);
    assert_eq!(list.interfaces[0], vm1_msg);
    assert_eq!(list.interfaces[1].primary_ipv6, b"::");
    assert_eq!(list.interfaces[1].pci_name, "net_tap4");

    let d = c.delete_interface(del_req("vm3")).await.unwrap().into_inner();
    assert_eq!(d.status, ok());
    let d = c.delete_interface(del_req("invalid_name")).await.unwrap().into_inner();
    assert_eq!(d.status, err(201, "NOT_FOUND"));
    assert_grpc_error(c.delete_interface(del_req("")).await, Code::InvalidArgument, "Invalid interface_id");
    let list = c.list_interfaces(pb::ListInterfacesRequest {}).await.unwrap().into_inner();
    assert_eq!(list.interfaces, vec![vm1_msg]);
    s.stop().await;
}

#[tokio::test]
async fn routes() {
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    let nh = || addr6("fc00:2::64:0:1");

    let r = c.create_route(route_req(100, "10.100.2.0", 24, 0, nh())).await.unwrap().into_inner();
    assert_eq!(r.status, err(206, "NO_VNI"));
    c.create_interface(iface_req("vm1", "net_tap2", "10.100.1.1", "2000:100:1::1")).await.unwrap();

    let created = [
        route_req(100, "10.100.2.0", 24, 0, nh()),
        route_req(100, "2000:100:2::", 104, 0, nh()),
        route_req(100, "0.0.0.0", 0, 100, addr6("fc00::ffff")),
    ];
    for req in created {
        assert_eq!(c.create_route(req).await.unwrap().into_inner().status, ok());
    }
    let refused = [
        (route_req(100, "10.100.2.0", 24, 100, nh()), 301, "ROUTE_EXISTS"),
        (route_req(100, "10.100.1.1", 32, 0, nh()), 301, "ROUTE_EXISTS"),
        (route_req(100, "10.100.3.0", 24, 0, addr4("10.0.0.1")), 204, "BAD_IPVER"),
        (route_req(100, "10.100.3.0", 33, 0, nh()), 303, "ROUTE_INSERT"),
        (route_req(200, "10.100.3.0", 24, 0, nh()), 206, "NO_VNI"),
    ];
    for (req, code, name) in refused {
        assert_eq!(c.create_route(req).await.unwrap().into_inner().status, err(code, name));
    }
    assert_grpc_error(
        c.create_route(route_req(100, "10.100.3.0", 256, 0, nh())).await,
        Code::InvalidArgument,
        "Invalid route.prefix.length",
    );
    assert_grpc_error(
        c.create_route(route_req(100, "10.100.3.0", 24, 0, addr6("fc00::x"))).await,
        Code::InvalidArgument,
        "Invalid route.nexthop_address",
    );
    assert_grpc_error(
        c.create_route(pb::CreateRouteRequest { vni: 100, route: None }).await,
        Code::InvalidArgument,
        "Invalid route.prefix.ip",
    );

    // Only IPv4 routes through the underlay are listed.
    let list = c.list_routes(pb::ListRoutesRequest { vni: 100 }).await.unwrap().into_inner();
    assert_eq!(list.status, ok());
    let want = |a: &str, len: u32, vni: u32, nh: &str| pb::Route {
        prefix: prefix(a, len),
        nexthop_vni: vni,
        nexthop_address: addr6(nh),
        weight: 0,
    };
    assert_eq!(
        list.routes,
        vec![want("0.0.0.0", 0, 100, "fc00::ffff"), want("10.100.2.0", 24, 0, "fc00:2::64:0:1")]
    );
    let none = c.list_routes(pb::ListRoutesRequest { vni: 200 }).await.unwrap().into_inner();
    assert_eq!(none, pb::ListRoutesResponse { status: err(206, "NO_VNI"), routes: vec![] });

    let refused = [
        (del_route_req(100, "10.100.9.0", 24), 302, "ROUTE_NOT_FOUND"),
        (del_route_req(100, "10.100.1.1", 32), 304, "ROUTE_BAD_PORT"),
        (del_route_req(100, "10.100.2.0", 40), 302, "ROUTE_NOT_FOUND"),
        (del_route_req(200, "10.100.2.0", 24), 206, "NO_VNI"),
    ];
    for (req, code, name) in refused {
        assert_eq!(c.delete_route(req).await.unwrap().into_inner().status, err(code, name));
    }
    let d = c.delete_route(del_route_req(100, "10.100.2.0", 24)).await.unwrap().into_inner();
    assert_eq!(d.status, ok());
    let list = c.list_routes(pb::ListRoutesRequest { vni: 100 }).await.unwrap().into_inner();
    assert_eq!(list.routes.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn prefixes() {
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    c.create_interface(iface_req("vm2", "net_tap3", "10.100.1.2", "2000:100:1::2")).await.unwrap();

    let r = c.create_prefix(pfx_req("vm2", "172.23.3.0", 24)).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route.as_slice()), (ok(), &b"fc00:1::1:0:2"[..]));
    let r6 = c.create_prefix(pfx_req("vm2", "2a10:defe:dede:f4::1", 124)).await.unwrap().into_inner();
    assert_eq!(r6.status, ok());

    let refused = [
        (pfx_req("vm2", "172.23.3.0", 24), 301, "ROUTE_EXISTS"),
        (pfx_req("invalid_name", "172.23.3.0", 24), 205, "NO_VM"),
        (pfx_req("vm2", "172.23.4.0", 33), 303, "ROUTE_INSERT"),
    ];
    for (req, code, name) in refused {
        let r = c.create_prefix(req).await.unwrap().into_inner();
        assert_eq!(r, pb::CreatePrefixResponse { status: err(code, name), underlay_route: vec![] });
    }
    assert_grpc_error(
        c.create_prefix(pfx_req("vm2", "172.23.4.0.1", 24)).await,
        Code::InvalidArgument,
        "Invalid prefix.ip",
    );

    let list = c
        .list_prefixes(pb::ListPrefixesRequest { interface_id: b"vm2".to_vec() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.status, ok());
    let entry =
        |a: &str, len: u32, ul: &[u8]| pb::Prefix { underlay_route: ul.to_vec(), ..prefix(a, len).unwrap() };
    assert_eq!(
        list.prefixes,
        vec![
            entry("172.23.3.0", 24, b"fc00:1::1:0:2"),
            entry("2a10:defe:dede:f4::1", 124, &r6.underlay_route)
        ]
    );
    let none = c
        .list_prefixes(pb::ListPrefixesRequest { interface_id: b"invalid_name".to_vec() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.status, err(205, "NO_VM"));

    let d = c.delete_prefix(del_pfx_req("invalid_name", "172.23.3.0", 24)).await.unwrap().into_inner();
    assert_eq!(d.status, err(205, "NO_VM"));
    let d = c.delete_prefix(del_pfx_req("vm2", "172.23.9.0", 24)).await.unwrap().into_inner();
    assert_eq!(d.status, err(302, "ROUTE_NOT_FOUND"));
    let d = c.delete_prefix(del_pfx_req("vm2", "172.23.3.0", 24)).await.unwrap().into_inner();
    assert_eq!(d.status, ok());
    let list = c
        .list_prefixes(pb::ListPrefixesRequest { interface_id: b"vm2".to_vec() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.prefixes.len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn vnis() {
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    let check = |vni: u32, t: pb::VniType| pb::CheckVniInUseRequest { vni, r#type: t as i32 };
    let reset = |vni: u32, t: pb::VniType| pb::ResetVniRequest { vni, r#type: t as i32 };

    let r = c.check_vni_in_use(check(100, pb::VniType::VniIpv4)).await.unwrap().into_inner();
    assert_eq!((r.status, r.in_use), (ok(), false));
    c.create_interface(iface_req("vm1", "net_tap2", "10.100.1.1", "::")).await.unwrap();
    let r = c.check_vni_in_use(check(100, pb::VniType::VniIpv6)).await.unwrap().into_inner();
    assert_eq!((r.status, r.in_use), (ok(), true));
    let r = c.check_vni_in_use(check(100, pb::VniType::VniBoth)).await.unwrap().into_inner();
    assert_eq!((r.status, r.in_use), (err(203, "WRONG_TYPE"), false));
    assert_grpc_error(
        c.check_vni_in_use(pb::CheckVniInUseRequest { vni: 100, r#type: 7 }).await,
        Code::InvalidArgument,
        "Invalid type",
    );

    c.create_route(route_req(100, "10.100.2.0", 24, 0, addr6("fc00:2::64:0:1"))).await.unwrap();
    let r = c.reset_vni(reset(100, pb::VniType::VniIpv4)).await.unwrap().into_inner();
    assert_eq!(r.status, err(203, "WRONG_TYPE"));
    assert_eq!(c.list_routes(pb::ListRoutesRequest { vni: 100 }).await.unwrap().into_inner().routes.len(), 1);
    let r = c.reset_vni(reset(999, pb::VniType::VniBoth)).await.unwrap().into_inner();
    assert_eq!(r.status, ok());
    let r = c.reset_vni(reset(100, pb::VniType::VniBoth)).await.unwrap().into_inner();
    assert_eq!(r.status, ok());
    assert!(c.list_routes(pb::ListRoutesRequest { vni: 100 }).await.unwrap().into_inner().routes.is_empty());
    // The interface's own route survived the reset.
    let snap = s.control.snapshot();
    assert!(snap.vnis[&100].routes4.lookup("10.100.1.1".parse().unwrap()).is_some());

    c.delete_interface(del_req("vm1")).await.unwrap();
    let r = c.check_vni_in_use(check(100, pb::VniType::VniIpv4)).await.unwrap().into_inner();
    assert_eq!((r.status, r.in_use), (ok(), false));
    s.stop().await;
}

fn lbpfx_req(id: &str, a: &str, len: u32) -> pb::CreateLoadBalancerPrefixRequest {
    pb::CreateLoadBalancerPrefixRequest {
        interface_id: id.as_bytes().to_vec(),
        prefix: prefix(a, len),
        preferred_underlay_route: Vec::new(),
    }
}

fn del_lbpfx_req(id: &str, a: &str, len: u32) -> pb::DeleteLoadBalancerPrefixRequest {
    pb::DeleteLoadBalancerPrefixRequest { interface_id: id.as_bytes().to_vec(), prefix: prefix(a, len) }
}

fn list_lbpfx_req(id: &str) -> pb::ListLoadBalancerPrefixesRequest {
    pb::ListLoadBalancerPrefixesRequest { interface_id: id.as_bytes().to_vec() }
}

#[tokio::test]
async fn lb_prefixes() {
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    c.create_interface(iface_req("vm2", "net_tap3", "10.100.1.2", "2000:100:1::2")).await.unwrap();

    let r = c.create_load_balancer_prefix(lbpfx_req("vm2", "172.22.2.1", 32)).await.unwrap();
    let r = r.into_inner();
    assert_eq!((r.status, r.underlay_route.as_slice()), (ok(), &b"fc00:1::1:0:2"[..]));
    let r6 = c
        .create_load_balancer_prefix(lbpfx_req("vm2", "2a10:defe:e01f:f4::2", 128))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r6.status, r6.underlay_route.as_slice()), (ok(), &b"fc00:1::1:0:3"[..]));
    let underlay: std::net::Ipv6Addr = "fc00:1::1:0:3".parse().unwrap();
    assert_eq!(s.control.snapshot().underlay_port(&underlay).as_ref(), Some(&3));

    let refused = [
        (lbpfx_req("vm2", "172.22.2.1", 32), 202, "ALREADY_EXISTS"),
        (lbpfx_req("invalid_name", "172.22.2.1", 32), 205, "NO_VM"),
    ];
    for (req, code, name) in refused {
        let r = c.create_load_balancer_prefix(req).await.unwrap().into_inner();
        assert_eq!(
            r,
            pb::CreateLoadBalancerPrefixResponse { status: err(code, name), underlay_route: vec![] }
        );
    }
    let malformed = [
        (lbpfx_req("vm2", "172.22.2.x", 32), "Invalid prefix.ip"),
        (lbpfx_req("vm2", "172.22.2.1", 256), "Invalid prefix.length"),
        (lbpfx_req("", "172.22.2.1", 32), "Invalid interface_id"),
    ];
    for (req, msg) in malformed {
        assert_grpc_error(c.create_load_balancer_prefix(req).await, Code::InvalidArgument, msg);
    }

    let list = c.list_load_balancer_prefixes(list_lbpfx_req("vm2")).await.unwrap().into_inner();
    assert_eq!(list.status, ok());
    let entry =
        |a: &str, len: u32, ul: &[u8]| pb::Prefix { underlay_route: ul.to_vec(), ..prefix(a, len).unwrap() };
    assert_eq!(
        list.prefixes,
        vec![entry("172.22.2.1", 32, b"fc00:1::1:0:2"), entry("2a10:defe:e01f:f4::2", 128, b"fc00:1::1:0:3"),]
    );
    // Alias prefixes are kept apart.
    let aliases = c
        .list_prefixes(pb::ListPrefixesRequest { interface_id: b"vm2".to_vec() })
        .await
        .unwrap()
        .into_inner();
    assert!(aliases.prefixes.is_empty());
    let none = c.list_load_balancer_prefixes(list_lbpfx_req("invalid_name")).await.unwrap();
    assert_eq!(
        none.into_inner(),
        pb::ListLoadBalancerPrefixesResponse { status: err(205, "NO_VM"), prefixes: vec![] }
    );

    let refused = [
        (del_lbpfx_req("invalid_name", "172.22.2.1", 32), 205, "NO_VM"),
        (del_lbpfx_req("vm2", "172.22.2.1", 24), 201, "NOT_FOUND"),
        (del_lbpfx_req("vm2", "172.22.9.1", 32), 201, "NOT_FOUND"),
    ];
    for (req, code, name) in refused {
        let r = c.delete_load_balancer_prefix(req).await.unwrap().into_inner();
        assert_eq!(r.status, err(code, name));
    }
    assert_grpc_error(
        c.delete_load_balancer_prefix(del_lbpfx_req("vm2", "172.22.2.1", 300)).await,
        Code::InvalidArgument,
        "Invalid prefix.length",
    );
    let d = c.delete_load_balancer_prefix(del_lbpfx_req("vm2", "172.22.2.1", 32)).await.unwrap();
    assert_eq!(d.into_inner().status, ok());
    let list = c.list_load_balancer_prefixes(list_lbpfx_req("vm2")).await.unwrap().into_inner();
    assert_eq!(list.prefixes, vec![entry("2a10:defe:e01f:f4::2", 128, b"fc00:1::1:0:3")]);

    // Deleting the interface takes its prefixes along.
    c.delete_interface(del_req("vm2")).await.unwrap();
    assert!(s.control.snapshot().underlay_targets.is_empty());
    s.stop().await;
}

/// The rule the suite's test_grpc_add_list_delFirewallRules creates, as dpservice-cli
/// sends it (defaults filled in by the client).
fn fw_rule(id: &str, src: &str, src_len: u32) -> pb::FirewallRule {
    pb::FirewallRule {
        id: id.as_bytes().to_vec(),
        direction: pb::TrafficDirection::Ingress as i32,
        action: pb::FirewallAction::Accept as i32,
        priority: 1000,
        source_prefix: prefix(src, src_len),
        destination_prefix: prefix("0.0.0.0", 0),
        protocol_filter: Some(pb::ProtocolFilter {
            filter: Some(pb::protocol_filter::Filter::Tcp(pb::TcpFilter {
                src_port_lower: -1,
                src_port_upper: -1,
                dst_port_lower: -1,
                dst_port_upper: -1,
            })),
        }),
    }
}

fn fw_req(iface: &str, rule: pb::FirewallRule) -> pb::CreateFirewallRuleRequest {
    pb::CreateFirewallRuleRequest { interface_id: iface.as_bytes().to_vec(), rule: Some(rule) }
}

fn get_fw_req(iface: &str, rule: &str) -> pb::GetFirewallRuleRequest {
    pb::GetFirewallRuleRequest { interface_id: iface.as_bytes().to_vec(), rule_id: rule.as_bytes().to_vec() }
}

fn del_fw_req(iface: &str, rule: &str) -> pb::DeleteFirewallRuleRequest {
    pb::DeleteFirewallRuleRequest {
        interface_id: iface.as_bytes().to_vec(),
        rule_id: rule.as_bytes().to_vec(),
    }
}

fn list_fw_req(iface: &str) -> pb::ListFirewallRulesRequest {
    pb::ListFirewallRulesRequest { interface_id: iface.as_bytes().to_vec() }
}

#[tokio::test]
async fn firewall_rules() {
    use dpfleet_dataplane::tables::firewall::{Action, Direction, FlowKey, L4};
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    c.create_interface(iface_req("vm3", "net_tap4", "10.100.1.3", "::")).await.unwrap();

    let rule = fw_rule("fw0-vm3", "1.2.3.4", 16);
    let drop = pb::FirewallRule { action: pb::FirewallAction::Drop as i32, ..rule.clone() };
    let r = c.create_firewall_rule(fw_req("vm3", drop.clone())).await.unwrap().into_inner();
    assert_eq!(r, pb::CreateFirewallRuleResponse { status: err(441, "NO_DROP_SUPPORT"), rule_id: vec![] });
    let r = c.create_firewall_rule(fw_req("vm3", rule.clone())).await.unwrap().into_inner();
    assert_eq!(r, pb::CreateFirewallRuleResponse { status: ok(), rule_id: b"fw0-vm3".to_vec() });
    let refused = [
        (fw_req("vm3", drop), 202, "ALREADY_EXISTS"),
        (fw_req("vm3", rule.clone()), 202, "ALREADY_EXISTS"),
        (fw_req("invalid_name", rule.clone()), 205, "NO_VM"),
    ];
    for (req, code, name) in refused {
        let r = c.create_firewall_rule(req).await.unwrap().into_inner();
        assert_eq!(r, pb::CreateFirewallRuleResponse { status: err(code, name), rule_id: vec![] });
    }
    let malformed = [
        (fw_req("", rule.clone()), "Invalid interface_id"),
        (pb::CreateFirewallRuleRequest { interface_id: b"vm3".to_vec(), rule: None }, "Invalid rule id"),
        (
            fw_req("vm3", pb::FirewallRule { priority: 70000, ..fw_rule("fw9", "1.2.3.4", 16) }),
            "Invalid priority",
        ),
        (fw_req("vm3", fw_rule("fw9", "1.2.3.4", 33)), "Invalid source_prefix.length"),
    ];
    for (req, msg) in malformed {
        assert_grpc_error(c.create_firewall_rule(req).await, Code::InvalidArgument, msg);
    }

    // Reported as given.
    let got = c.get_firewall_rule(get_fw_req("vm3", "fw0-vm3")).await.unwrap().into_inner();
    assert_eq!(got, pb::GetFirewallRuleResponse { status: ok(), rule: Some(rule.clone()) });
    let refused =
        [(get_fw_req("vm3", "fw9"), 201, "NOT_FOUND"), (get_fw_req("nope", "fw0-vm3"), 205, "NO_VM")];
    for (req, code, name) in refused {
        let r = c.get_firewall_rule(req).await.unwrap().into_inner();
        assert_eq!(r, pb::GetFirewallRuleResponse { status: err(code, name), rule: None });
    }
    assert_grpc_error(
        c.get_firewall_rule(get_fw_req("vm3", "")).await,
        Code::InvalidArgument,
        "Invalid rule_id",
    );

    // The compiled rules reach the snapshot.
    let flow = |src: &str| FlowKey {
        src: src.parse().unwrap(),
        dst: "10.100.1.3".parse().unwrap(),
        l4: L4::Tcp { src_port: 1234, dst_port: 22 },
    };
    let snap = s.control.snapshot();
    let fw = snap.firewall(4).unwrap();
    assert_eq!(fw.verdict(Direction::Ingress, &flow("1.2.99.9")), Action::Accept);
    assert_eq!(fw.verdict(Direction::Ingress, &flow("1.3.0.1")), Action::Drop);

    let mut egress = fw_rule("fw1-vm3", "8.8.8.8", 16);
    egress.direction = pb::TrafficDirection::Egress as i32;
    egress.protocol_filter = Some(pb::ProtocolFilter {
        filter: Some(pb::protocol_filter::Filter::Udp(pb::UdpFilter {
            src_port_lower: -1,
            src_port_upper: -1,
            dst_port_lower: 53,
            dst_port_upper: 53,
        })),
    });
    let r = c.create_firewall_rule(fw_req("vm3", egress.clone())).await.unwrap().into_inner();
    assert_eq!(r.status, ok());
    let list = c.list_firewall_rules(list_fw_req("vm3")).await.unwrap().into_inner();
    assert_eq!(
        list,
        pb::ListFirewallRulesResponse { status: ok(), rules: vec![rule.clone(), egress.clone()] }
    );
    let none = c.list_firewall_rules(list_fw_req("invalid_name")).await.unwrap().into_inner();
    assert_eq!(none, pb::ListFirewallRulesResponse { status: err(205, "NO_VM"), rules: vec![] });

    let refused =
        [(del_fw_req("vm3", "fw9"), 201, "NOT_FOUND"), (del_fw_req("nope", "fw0-vm3"), 205, "NO_VM")];
    for (req, code, name) in refused {
        let r = c.delete_firewall_rule(req).await.unwrap().into_inner();
        assert_eq!(r.status, err(code, name));
    }
    assert_grpc_error(
        c.delete_firewall_rule(del_fw_req("vm3", &"x".repeat(64))).await,
        Code::InvalidArgument,
        "Invalid rule_id",
    );
    let d = c.delete_firewall_rule(del_fw_req("vm3", "fw0-vm3")).await.unwrap().into_inner();
    assert_eq!(d.status, ok());
    let r = c.get_firewall_rule(get_fw_req("vm3", "fw0-vm3")).await.unwrap().into_inner();
    assert_eq!(r.status, err(201, "NOT_FOUND"));
    let list = c.list_firewall_rules(list_fw_req("vm3")).await.unwrap().into_inner();
    assert_eq!(list.rules, vec![egress]);
    let snap = s.control.snapshot();
    assert_eq!(snap.firewall(4).unwrap().verdict(Direction::Ingress, &flow("1.2.99.9")), Action::Drop);

    // A new interface under the same name starts without rules.
    c.delete_interface(del_req("vm3")).await.unwrap();
    c.create_interface(iface_req("vm3", "net_tap4", "10.100.1.3", "::")).await.unwrap();
    let list = c.list_firewall_rules(list_fw_req("vm3")).await.unwrap().into_inner();
    assert_eq!((list.status, list.rules), (ok(), vec![]));
    s.stop().await;
}

#[tokio::test]
async fn preferred_underlay_routes() {
    let s = start().await;
    let mut c = s.client.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    let ext = |n: u8| format!("fc00:1::80{n:02x}:0:1").into_bytes();

    // An externally generated address of the node's /64 is used as given.
    let mut vm1 = iface_req("vm1", "net_tap2", "10.100.1.1", "2000:100:1::1");
    vm1.preferred_underlay_route = ext(1);
    let r = c.create_interface(vm1.clone()).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route), (ok(), ext(1)));
    let got = c.get_interface(get_req("vm1")).await.unwrap().into_inner();
    assert_eq!(got.interface.unwrap().underlay_route, ext(1));
    // Traffic to it reaches the interface.
    let a: std::net::Ipv6Addr = "fc00:1::8001:0:1".parse().unwrap();
    assert_eq!(s.control.snapshot().underlay_port(&a), Some(2));

    // Malformed, outside the /64, or without the flag: refused before anything else.
    for bad in ["junk", "fc00:2::8001:0:1", "fc00:1::1:0:1", "10.0.0.1"] {
        let mut r = iface_req("vm2", "net_tap3", "10.100.1.2", "::");
        r.preferred_underlay_route = bad.into();
        let e = c.create_interface(r).await.unwrap_err();
        let want = (Code::InvalidArgument, "Invalid preferred_underlay_route");
        assert_eq!((e.code(), e.message()), want, "{bad}");
    }
    // "::" means "allocate one", as an empty field does.
    let mut vm2 = iface_req("vm2", "net_tap3", "10.100.1.2", "::");
    vm2.preferred_underlay_route = b"::".to_vec();
    let r = c.create_interface(vm2).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route), (ok(), b"fc00:1::1:0:1".to_vec()));

    // An address already registered: VNF_INSERT, before the id is looked at; nothing changes.
    let before = s.control.snapshot();
    let mut dup = iface_req("vm1", "net_tap4", "10.100.1.3", "::");
    dup.preferred_underlay_route = ext(1);
    let r = c.create_interface(dup).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route), (err(401, "VNF_INSERT"), Vec::new()));
    assert!(Arc::ptr_eq(&before, &s.control.snapshot()));

    // The other Create calls take the field too.
    let mut p = pfx_req("vm1", "172.23.3.0", 24);
    p.preferred_underlay_route = ext(2);
    let r = c.create_prefix(p.clone()).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route), (ok(), ext(2)));
    let mut lp = lbpfx_req("vm1", "172.22.2.0", 24);
    lp.preferred_underlay_route = ext(2);
    let r = c.create_load_balancer_prefix(lp.clone()).await.unwrap().into_inner();
    assert_eq!(r.status, err(401, "VNF_INSERT"));
    lp.preferred_underlay_route = ext(3);
    let r = c.create_load_balancer_prefix(lp).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route), (ok(), ext(3)));
    let vip = pb::CreateVipRequest {
        interface_id: b"vm1".to_vec(),
        vip_ip: addr4("45.86.6.1"),
        preferred_underlay_route: ext(4),
    };
    let r = c.create_vip(vip).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route), (ok(), ext(4)));
    let nat = pb::CreateNatRequest {
        interface_id: b"vm2".to_vec(),
        nat_ip: addr4("45.86.6.2"),
        min_port: 100,
        max_port: 200,
        preferred_underlay_route: ext(4),
    };
    let r = c.create_nat(nat.clone()).await.unwrap().into_inner();
    assert_eq!(r.status, err(401, "VNF_INSERT"));
    let r = c
        .create_nat(pb::CreateNatRequest { preferred_underlay_route: ext(5), ..nat })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.status, r.underlay_route), (ok(), ext(5)));
    let lb = pb::CreateLoadBalancerRequest {
        loadbalancer_id: b"lb".to_vec(),
        loadbalanced_ip: addr4("45.86.6.3"),
        vni: 100,
        loadbalanced_ports: vec![pb::LbPort { port: 80, protocol: pb::Protocol::Tcp as i32 }],
        preferred_underlay_route: ext(6),
    };
    let r = c.create_load_balancer(lb.clone()).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route), (ok(), ext(6)));
    // The same again: the address is registered, which dpservice reports first.
    let r = c.create_load_balancer(lb).await.unwrap().into_inner();
    assert_eq!(r.status, err(401, "VNF_INSERT"));

    // Deleting frees the address for reuse.
    c.delete_interface(pb::DeleteInterfaceRequest { interface_id: b"vm1".to_vec() }).await.unwrap();
    let r = c.create_interface(vm1).await.unwrap().into_inner();
    assert_eq!((r.status, r.underlay_route), (ok(), ext(1)));
    s.stop().await;
}

#[tokio::test]
async fn applied_generation() {
    let s = start().await;
    let mut f = s.fleet.clone();
    let status = f.get_node_status(fpb::GetNodeStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (status.node_name.as_str(), status.version.as_str(), status.applied_generation),
        ("node-a", env!("CARGO_PKG_VERSION"), 0)
    );
    let set = |generation, force| fpb::SetAppliedGenerationRequest { generation, force };
    f.set_applied_generation(set(7, false)).await.unwrap();
    f.set_applied_generation(set(7, false)).await.unwrap();
    let e = f.set_applied_generation(set(6, false)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(s.control.applied_generation(), 7);
    f.set_applied_generation(set(3, true)).await.unwrap();
    let status = f.get_node_status(fpb::GetNodeStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.applied_generation, 3);
    s.stop().await;
}

fn maglev_target(n: u16, weight: u32) -> Target {
    Target { addr: std::net::Ipv6Addr::new(0xfc00, 2, 0, 0, 0, 0x8000, 0, n), weight }
}

/// A SetLoadBalancerTable request for `targets` with the digest the coordinator would send.
fn table_req(id: &str, epoch: u64, targets: &[Target]) -> (fpb::SetLoadBalancerTableRequest, MaglevTable) {
    let input = MaglevInput { targets: targets.to_vec(), table_size: 1009, seed: 42 };
    let table = MaglevTable::build(&input).unwrap();
    let req = fpb::SetLoadBalancerTableRequest {
        loadbalancer_id: id.as_bytes().to_vec(),
        epoch,
        table_size: input.table_size,
        seed: input.seed,
        targets: targets
            .iter()
            .map(|t| fpb::MaglevTarget { underlay_address: t.addr.octets().to_vec(), weight: t.weight })
            .collect(),
        expected_digest: table.digest(),
    };
    (req, table)
}

#[tokio::test]
async fn load_balancer_tables() {
    let s = start().await;
    let mut c = s.client.clone();
    let mut f = s.fleet.clone();
    c.initialize(pb::InitializeRequest {}).await.unwrap();
    let lb = pb::CreateLoadBalancerRequest {
        loadbalancer_id: b"lb".to_vec(),
        loadbalanced_ip: addr4("45.86.6.3"),
        vni: 100,
        loadbalanced_ports: vec![pb::LbPort { port: 80, protocol: pb::Protocol::Tcp as i32 }],
        preferred_underlay_route: Vec::new(),
    };
    assert_eq!(c.create_load_balancer(lb).await.unwrap().into_inner().status, ok());
    let vip: std::net::IpAddr = "45.86.6.3".parse().unwrap();
    let targets = [maglev_target(1, 1), maglev_target(2, 3), maglev_target(3, 1)];

    // Unknown load balancer; bad input; digest mismatch: refused, nothing changes.
    let before = s.control.snapshot();
    let (req, table) = table_req("nope", 1, &targets);
    assert_eq!(f.set_load_balancer_table(req).await.unwrap_err().code(), Code::NotFound);
    let (mut bad, _) = table_req("lb", 1, &targets);
    bad.targets[1].underlay_address.pop();
    assert_eq!(f.set_load_balancer_table(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let (mut bad, _) = table_req("lb", 1, &targets);
    bad.table_size = 1000;
    assert_eq!(f.set_load_balancer_table(bad).await.unwrap_err().code(), Code::InvalidArgument);
    let (mut bad, _) = table_req("lb", 1, &targets);
    bad.expected_digest ^= 1;
    let e = f.set_load_balancer_table(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert!(e.message().contains("digest mismatch"), "{}", e.message());
    assert_eq!(s.control.digest_mismatches(), 1);
    assert!(Arc::ptr_eq(&before, &s.control.snapshot()));

    // Installed: the node's table is the coordinator's, whatever --lb-selection says.
    let (req, _) = table_req("lb", 5, &targets);
    let r = f.set_load_balancer_table(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.digest, table.digest());
    let snap = s.control.snapshot();
    let installed = &snap.lbs[&(100, vip)];
    let m = installed.maglev.as_ref().expect("the coordinator's table");
    assert_eq!((m.targets.as_slice(), m.entries.as_slice()), (table.targets(), table.entries()));
    assert_eq!(installed.targets.len(), 3);
    let status = f.get_node_status(fpb::GetNodeStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        status.load_balancers,
        vec![fpb::LoadBalancerTableStatus {
            loadbalancer_id: b"lb".to_vec(),
            epoch: 5,
            digest: table.digest(),
            table_size: 1009,
            targets: 3
        }]
    );
    let listed = c
        .list_load_balancer_targets(pb::ListLoadBalancerTargetsRequest { loadbalancer_id: b"lb".to_vec() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.target_ips.len(), 3);

    // The same epoch and table again: a no-op. An older epoch, or the same epoch with
    // another table: FAILED_PRECONDITION.
    let g = s.control.snapshot().generation;
    f.set_load_balancer_table(req).await.unwrap();
    assert_eq!(s.control.snapshot().generation, g);
    let (old, _) = table_req("lb", 4, &targets);
    assert_eq!(f.set_load_balancer_table(old).await.unwrap_err().code(), Code::FailedPrecondition);
    let (other, _) = table_req("lb", 5, &targets[..2]);
    assert_eq!(f.set_load_balancer_table(other).await.unwrap_err().code(), Code::FailedPrecondition);
    // A newer epoch replaces it.
    let (newer, t2) = table_req("lb", 6, &targets[..2]);
    assert_eq!(f.set_load_balancer_table(newer).await.unwrap().into_inner().digest, t2.digest());

    // dpservice's target calls drop back to the node's own selection, epoch 0.
    let t = pb::CreateLoadBalancerTargetRequest {
        loadbalancer_id: b"lb".to_vec(),
        target_ip: addr6("fc00:9::1"),
    };
    assert_eq!(c.create_load_balancer_target(t).await.unwrap().into_inner().status, ok());
    let snap = s.control.snapshot();
    assert!(snap.lbs[&(100, vip)].maglev.is_none(), "round robin again");
    assert_eq!(snap.lbs[&(100, vip)].targets.len(), 3);
    let status = f.get_node_status(fpb::GetNodeStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.load_balancers[0].epoch, status.load_balancers[0].digest), (0, 0));
    // ... after which any epoch is accepted again.
    let (again, _) = table_req("lb", 1, &targets);
    f.set_load_balancer_table(again).await.unwrap();
    s.stop().await;
}
