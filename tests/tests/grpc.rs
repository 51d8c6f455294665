//! The dpservice-compatible gRPC API: each method, its results and its error cases.
//!
//! dpservice reports errors of a well-formed request inside the response
//! (`status { code, message }`, with its numeric error codes), malformed requests as
//! gRPC `INVALID_ARGUMENT`, and any call but Initialize before initialization as gRPC
//! `ABORTED`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dpfleet_e2e::api::{self, errcode, expect_code, ok, parse_ip, parse_v6, Api};
use dpfleet_e2e::api::{
    CheckInitializedRequest, CheckVniInUseRequest, CreateInterfaceRequest, CreatePrefixRequest,
    CreateRouteRequest, DeleteInterfaceRequest, DeletePrefixRequest, DeleteRouteRequest, GetInterfaceRequest,
    GetVersionRequest, InitializeRequest, ListInterfacesRequest, ListPrefixesRequest, ListRoutesRequest,
    ResetVniRequest, VniType,
};
use dpfleet_e2e::fixture::Fixture;
use dpfleet_e2e::topo::{self, Vm};

fn assert_grpc_code<T: std::fmt::Debug>(what: &str, code: tonic::Code, r: Result<T, tonic::Status>) {
    match r {
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
        Ok(resp) => panic!("{what}: expected gRPC {code:?}, got {resp:?}"),
    }
}

fn version_request() -> GetVersionRequest {
    GetVersionRequest {
        client_protocol: "v1".into(),
        client_name: "dpfleet-e2e".into(),
        client_version: env!("CARGO_PKG_VERSION").into(),
    }
}

#[test]
fn initialization_lifecycle_and_version() {
    let (_node, mut api) = Fixture::bare("init");

    // Before Initialize, only Initialize works.
    assert_grpc_code(
        "CheckInitialized before Initialize",
        tonic::Code::Aborted,
        api.check_initialized(CheckInitializedRequest {}),
    );
    assert_grpc_code(
        "GetVersion before Initialize",
        tonic::Code::Aborted,
        api.get_version(version_request()),
    );
    assert_grpc_code(
        "ListInterfaces before Initialize",
        tonic::Code::Aborted,
        api.list_interfaces(ListInterfacesRequest {}),
    );

    let uuid = ok("Initialize", api.initialize(InitializeRequest {})).uuid;
    assert!(!uuid.is_empty(), "Initialize returns the node's UUID");
    let checked = ok("CheckInitialized", api.check_initialized(CheckInitializedRequest {}));
    assert_eq!(checked.uuid, uuid, "CheckInitialized reports the same UUID");
    // Initializing again is allowed and keeps the UUID (it identifies the process).
    assert_eq!(ok("Initialize", api.initialize(InitializeRequest {})).uuid, uuid);

    let version = ok("GetVersion", api.get_version(version_request()));
    assert!(!version.service_protocol.is_empty(), "service_protocol: {version:?}");
    assert!(!version.service_version.is_empty(), "service_version: {version:?}");
    // Client fields are mandatory (dpservice rejects empty ones as invalid).
    assert_grpc_code(
        "GetVersion without client fields",
        tonic::Code::InvalidArgument,
        api.get_version(GetVersionRequest::default()),
    );
}

fn interface_of(api: &mut Api, id: &str) -> api::Interface {
    let resp = ok("GetInterface", api.get_interface(GetInterfaceRequest { interface_id: id.into() }));
    resp.interface.expect("interface present")
}

#[test]
fn interfaces_create_get_list_delete() {
    let (_node, mut api) = Fixture::bare("ifaces");
    api.init();
    let vm1 = Vm::new(1, topo::VNI1);
    let vm2 = Vm::new(2, topo::VNI1);
    let ul1 = api.add_vm(&vm1);
    let ul2 = api.add_vm(&vm2);
    assert_ne!(ul1, ul2, "each interface gets its own underlay address");
    assert!(!ul1.is_unspecified());

    let i = interface_of(&mut api, "vm1");
    assert_eq!(i.id, b"vm1");
    assert_eq!(i.vni, topo::VNI1);
    assert_eq!(String::from_utf8_lossy(&i.primary_ipv4), vm1.ip.to_string());
    assert_eq!(String::from_utf8_lossy(&i.primary_ipv6), vm1.ipv6.to_string());
    assert_eq!(parse_v6(&i.underlay_route), ul1);
    assert_eq!(i.pci_name, topo::vf(0).device);

    let list = ok("ListInterfaces", api.list_interfaces(ListInterfacesRequest {})).interfaces;
    let mut ids: Vec<_> = list.iter().map(|i| String::from_utf8_lossy(&i.id).into_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["vm1", "vm2"]);
    let listed = list.iter().find(|i| i.id == b"vm2").unwrap();
    assert_eq!(parse_v6(&listed.underlay_route), ul2);

    // Error cases, with dpservice's codes.
    expect_code(
        "CreateInterface existing",
        errcode::ALREADY_EXISTS,
        api.create_interface(api::interface_request(&vm2)),
    );
    let mut bad_device = api::interface_request(&Vm::new(3, topo::VNI1));
    bad_device.device_name = "invalid".into();
    expect_code("CreateInterface unknown device", errcode::NOT_FOUND, api.create_interface(bad_device));
    let same_ip = Vm::new(4, topo::VNI1).with_ip(vm1.ip).with_ipv6(vm1.ipv6);
    expect_code(
        "CreateInterface with a used address",
        errcode::ROUTE_EXISTS,
        api.create_interface(api::interface_request(&same_ip)),
    );
    let mut no_ips = api::interface_request(&Vm::new(4, topo::VNI1));
    no_ips.ipv4_config = Some(api::IpConfig { primary_address: b"0.0.0.0".to_vec() });
    no_ips.ipv6_config = Some(api::IpConfig { primary_address: b"::".to_vec() });
    assert_grpc_code(
        "CreateInterface without addresses",
        tonic::Code::InvalidArgument,
        api.create_interface(no_ips),
    );
    let mut bad_ip = api::interface_request(&Vm::new(4, topo::VNI1));
    bad_ip.ipv4_config = Some(api::IpConfig { primary_address: b"10.0.0.300".to_vec() });
    assert_grpc_code(
        "CreateInterface with a bad address",
        tonic::Code::InvalidArgument,
        api.create_interface(bad_ip),
    );
    let mut no_id = api::interface_request(&Vm::new(4, topo::VNI1));
    no_id.interface_id = Vec::new();
    assert_grpc_code("CreateInterface without id", tonic::Code::InvalidArgument, api.create_interface(no_id));
    expect_code(
        "GetInterface unknown",
        errcode::NOT_FOUND,
        api.get_interface(GetInterfaceRequest { interface_id: b"nope".to_vec() }),
    );
    expect_code(
        "DeleteInterface unknown",
        errcode::NOT_FOUND,
        api.delete_interface(DeleteInterfaceRequest { interface_id: b"invalid_name".to_vec() }),
    );
    // Failed creations left nothing behind.
    assert_eq!(ok("ListInterfaces", api.list_interfaces(ListInterfacesRequest {})).interfaces.len(), 2);

    // Delete, then the id, device and addresses are free again.
    ok("DeleteInterface", api.delete_interface(DeleteInterfaceRequest { interface_id: b"vm1".to_vec() }));
    expect_code(
        "GetInterface deleted",
        errcode::NOT_FOUND,
        api.get_interface(GetInterfaceRequest { interface_id: b"vm1".to_vec() }),
    );
    let list = ok("ListInterfaces", api.list_interfaces(ListInterfacesRequest {})).interfaces;
    assert!(list.iter().all(|i| i.id != b"vm1"), "deleted interface still listed: {list:?}");
    let again = api.add_vm(&vm1);
    assert_eq!(interface_of(&mut api, "vm1").vni, topo::VNI1);
    assert!(!again.is_unspecified());
}

fn routes(api: &mut Api, vni: u32) -> Vec<(IpAddr, u32, u32, IpAddr)> {
    ok("ListRoutes", api.list_routes(ListRoutesRequest { vni }))
        .routes
        .iter()
        .map(|r| {
            let p = r.prefix.as_ref().expect("route prefix");
            (parse_ip(p.ip.as_ref()), p.length, r.nexthop_vni, parse_ip(r.nexthop_address.as_ref()))
        })
        .collect()
}

#[test]
fn routes_create_list_delete() {
    let (_node, mut api) = Fixture::bare("routes");
    api.init();
    api.add_vm(&Vm::new(1, topo::VNI1));
    api.add_vm(&Vm::new(3, topo::VNI2));
    let nh = IpAddr::V6(topo::NEIGH_UL);
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 100, 2, 0));
    let v6 = IpAddr::V6(Ipv6Addr::new(0x2000, 0x100, 2, 0, 0, 0, 0, 0));

    api.add_route(topo::VNI1, v4, 24, 0, topo::NEIGH_UL);
    api.add_route(topo::VNI1, v6, 104, 0, topo::NEIGH_UL);
    api.add_route(topo::VNI1, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, topo::VNI1, topo::ROUTER_UL);
    let listed = routes(&mut api, topo::VNI1);
    assert!(listed.contains(&(v4, 24, 0, nh)), "IPv4 route missing: {listed:?}");
    assert!(
        listed.contains(&(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, topo::VNI1, IpAddr::V6(topo::ROUTER_UL))),
        "default route missing: {listed:?}"
    );
    assert!(!routes(&mut api, topo::VNI2).iter().any(|r| r.0 == v4), "route leaked into VNI 200");

    // Errors: the same prefix again, an IPv4 next hop, an unknown VNI.
    expect_code(
        "CreateRoute existing",
        errcode::ROUTE_EXISTS,
        api.create_route(CreateRouteRequest {
            vni: topo::VNI1,
            route: Some(api::route(v4, 24, topo::VNI1, topo::NEIGH_UL)),
        }),
    );
    let mut v4_next_hop = api::route(IpAddr::V4(Ipv4Addr::new(10, 100, 3, 0)), 24, 0, topo::NEIGH_UL);
    v4_next_hop.nexthop_address = Some(api::ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))));
    expect_code(
        "CreateRoute with IPv4 next hop",
        errcode::BAD_IPVER,
        api.create_route(CreateRouteRequest { vni: topo::VNI1, route: Some(v4_next_hop) }),
    );
    expect_code(
        "CreateRoute in a VNI without interfaces",
        errcode::NO_VNI,
        api.create_route(CreateRouteRequest {
            vni: 4242,
            route: Some(api::route(v4, 24, 0, topo::NEIGH_UL)),
        }),
    );
    expect_code(
        "ListRoutes of an unknown VNI",
        errcode::NO_VNI,
        api.list_routes(ListRoutesRequest { vni: 4242 }),
    );
    let mut no_prefix_ip = api::route(v4, 24, 0, topo::NEIGH_UL);
    no_prefix_ip.prefix.as_mut().unwrap().ip =
        Some(api::IpAddress { ipver: 0, address: b"not-an-ip".to_vec() });
    assert_grpc_code(
        "CreateRoute with a bad prefix",
        tonic::Code::InvalidArgument,
        api.create_route(CreateRouteRequest { vni: topo::VNI1, route: Some(no_prefix_ip) }),
    );

    // Delete, then it is gone, and deleting again fails.
    let del =
        |vni, addr, len| DeleteRouteRequest { vni, route: Some(api::route(addr, len, 0, topo::NEIGH_UL)) };
    ok("DeleteRoute", api.delete_route(del(topo::VNI1, v4, 24)));
    assert!(!routes(&mut api, topo::VNI1).contains(&(v4, 24, 0, nh)), "deleted route still listed");
    expect_code("DeleteRoute again", errcode::ROUTE_NOT_FOUND, api.delete_route(del(topo::VNI1, v4, 24)));
    ok("DeleteRoute IPv6", api.delete_route(del(topo::VNI1, v6, 104)));
    expect_code(
        "DeleteRoute IPv6 again",
        errcode::ROUTE_NOT_FOUND,
        api.delete_route(del(topo::VNI1, v6, 104)),
    );
    // Re-adding works.
    api.add_route(topo::VNI1, v4, 24, 0, topo::NEIGH_UL);
    assert!(routes(&mut api, topo::VNI1).contains(&(v4, 24, 0, nh)));
}

#[test]
fn prefixes_create_list_delete() {
    let (_node, mut api) = Fixture::bare("prefixes");
    api.init();
    let vm2 = Vm::new(2, topo::VNI1);
    let vm2_ul = api.add_vm(&vm2);
    let pfx4 = (IpAddr::V4(Ipv4Addr::new(172, 23, 3, 0)), 24);
    let pfx6 = (IpAddr::V6(Ipv6Addr::new(0x2a10, 0xdefe, 0xdede, 0xf4, 0, 0, 0, 0)), 124);

    for (addr, len) in [pfx4, pfx6] {
        let create = || CreatePrefixRequest {
            interface_id: b"vm2".to_vec(),
            prefix: Some(api::prefix(addr, len)),
            preferred_underlay_route: Vec::new(),
        };
        let ul = parse_v6(&ok("CreatePrefix", api.create_prefix(create())).underlay_route);
        assert_ne!(ul, vm2_ul, "a prefix gets its own underlay address");
        let list =
            ok("ListPrefixes", api.list_prefixes(ListPrefixesRequest { interface_id: b"vm2".to_vec() }))
                .prefixes;
        assert!(
            list.iter().any(|p| parse_ip(p.ip.as_ref()) == addr
                && p.length == len
                && parse_v6(&p.underlay_route) == ul),
            "{addr}/{len} not listed: {list:?}"
        );

        expect_code("CreatePrefix existing", errcode::ROUTE_EXISTS, api.create_prefix(create()));
        let mut unknown = create();
        unknown.interface_id = b"invalid_name".to_vec();
        expect_code("CreatePrefix unknown interface", errcode::NO_VM, api.create_prefix(unknown));
        let delete = |id: &[u8]| DeletePrefixRequest {
            interface_id: id.to_vec(),
            prefix: Some(api::prefix(addr, len)),
        };
        expect_code(
            "DeletePrefix unknown interface",
            errcode::NO_VM,
            api.delete_prefix(delete(b"invalid_name")),
        );

        ok("DeletePrefix", api.delete_prefix(delete(b"vm2")));
        let list =
            ok("ListPrefixes", api.list_prefixes(ListPrefixesRequest { interface_id: b"vm2".to_vec() }))
                .prefixes;
        assert!(list.iter().all(|p| parse_ip(p.ip.as_ref()) != addr), "{addr}/{len} still listed: {list:?}");
    }
    expect_code(
        "ListPrefixes unknown interface",
        errcode::NO_VM,
        api.list_prefixes(ListPrefixesRequest { interface_id: b"invalid_name".to_vec() }),
    );
}

fn in_use(api: &mut Api, vni: u32) -> bool {
    ok("CheckVniInUse", api.check_vni_in_use(CheckVniInUseRequest { vni, r#type: VniType::VniIpv4 as i32 }))
        .in_use
}

#[test]
fn vni_in_use_and_reset() {
    let (_node, mut api) = Fixture::bare("vnis");
    api.init();
    assert!(!in_use(&mut api, 300), "VNI 300 in use before any interface");
    api.add_vm(&Vm::new(1, topo::VNI1));
    api.add_vm(&Vm::new(4, 300));
    assert!(in_use(&mut api, 300), "VNI 300 not in use with an interface");
    assert!(in_use(&mut api, topo::VNI1));
    assert!(!in_use(&mut api, 999));
    expect_code(
        "CheckVniInUse with type BOTH",
        errcode::WRONG_TYPE,
        api.check_vni_in_use(CheckVniInUseRequest { vni: 300, r#type: VniType::VniBoth as i32 }),
    );

    let pfx = IpAddr::V4(Ipv4Addr::new(10, 100, 2, 0));
    api.add_route(300, pfx, 24, 0, topo::NEIGH_UL);
    api.add_route(topo::VNI1, pfx, 24, 0, topo::NEIGH_UL);
    let reset = |vni, ty: VniType| ResetVniRequest { vni, r#type: ty as i32 };
    // Resetting a VNI that does not exist does not fail; a wrong type does.
    ok("ResetVni unknown", api.reset_vni(reset(999, VniType::VniBoth)));
    expect_code("ResetVni with type IPV4", errcode::WRONG_TYPE, api.reset_vni(reset(300, VniType::VniIpv4)));
    assert!(routes(&mut api, 300).iter().any(|r| r.0 == pfx));

    ok("ResetVni", api.reset_vni(reset(300, VniType::VniBoth)));
    assert!(!routes(&mut api, 300).iter().any(|r| r.0 == pfx), "route survived ResetVni");
    assert!(routes(&mut api, topo::VNI1).iter().any(|r| r.0 == pfx), "ResetVni of 300 touched VNI 100");

    // Once its last interface is gone, a VNI is no longer in use.
    ok("DeleteInterface", api.delete_interface(DeleteInterfaceRequest { interface_id: b"vm4".to_vec() }));
    assert!(!in_use(&mut api, 300), "VNI 300 still in use without interfaces");
    assert!(in_use(&mut api, topo::VNI1));
}

#[test]
fn create_interface_request_with_pxe_is_accepted() {
    let (_node, mut api) = Fixture::bare("pxe");
    api.init();
    let vm = Vm::new(1, topo::VNI1);
    let req = CreateInterfaceRequest {
        pxe_config: Some(api::PxeConfig { next_server: "2001:dede::1".into(), boot_filename: "ipxe".into() }),
        ..api::interface_request(&vm)
    };
    let ul = parse_v6(&ok("CreateInterface with PXE", api.create_interface(req)).underlay_route);
    assert_eq!(parse_v6(&interface_of(&mut api, "vm1").underlay_route), ul);
}
