//! Golden wire tests of the node API messages.
//!
//! The byte arrays were produced by a reference encoder: Python `protobuf` (via
//! `grpcio-tools`) on dpservice's own `proto/dpdk.proto` at revision 1a8d901 (the
//! `preferred_underlay_route` messages at the end: at its HEAD, which added that field in
//! commit 501e15f):
//!
//! ```text
//! python3 -m grpc_tools.protoc -I$DPS/proto --python_out=. $DPS/proto/dpdk.proto
//! python3 -c 'import dpdk_pb2 as pb; print(pb.Status(code=202,
//!     message="ALREADY_EXISTS").SerializeToString(deterministic=True).hex())'
//! ```
//!
//! (one such call per message below, with the field values the tests check). Each test
//! decodes the reference bytes with our prost types, checks every field, and encodes our
//! own message back to the very same bytes.

use dpfleet_proto::dpdkironcore::v1 as pb;
use prost::Message;

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(golden: &[u8], ours: &M) -> M {
    let decoded = M::decode(golden).expect("reference bytes decode");
    assert_eq!(&decoded, ours, "decoded reference differs from our message");
    assert_eq!(ours.encode_to_vec(), golden, "our encoding differs from the reference");
    decoded
}

fn ok_status() -> Option<pb::Status> {
    Some(pb::Status { code: 0, message: "Success".into() })
}

/// CreateInterfaceRequest with IPv4 and IPv6 config, PXE, device name and metering.
const CREATE_INTERFACE_REQUEST: [u8; 78] = [
    0x12, 0x03, 0x76, 0x6d, 0x31, 0x18, 0x64, 0x22, 0x0c, 0x0a, 0x0a, 0x31, 0x30, 0x2e, 0x31, 0x30, 0x30,
    0x2e, 0x31, 0x2e, 0x31, 0x2a, 0x0f, 0x0a, 0x0d, 0x32, 0x30, 0x30, 0x30, 0x3a, 0x31, 0x30, 0x30, 0x3a,
    0x31, 0x3a, 0x3a, 0x31, 0x32, 0x14, 0x0a, 0x0c, 0x32, 0x30, 0x30, 0x31, 0x3a, 0x64, 0x65, 0x64, 0x65,
    0x3a, 0x3a, 0x31, 0x12, 0x04, 0x69, 0x70, 0x78, 0x65, 0x3a, 0x08, 0x6e, 0x65, 0x74, 0x5f, 0x74, 0x61,
    0x70, 0x32, 0x42, 0x06, 0x08, 0xe8, 0x07, 0x10, 0xf4, 0x03,
];

#[test]
fn create_interface_request() {
    let ours = pb::CreateInterfaceRequest {
        interface_type: pb::InterfaceType::Virtual as i32,
        interface_id: b"vm1".to_vec(),
        vni: 100,
        ipv4_config: Some(pb::IpConfig { primary_address: b"10.100.1.1".to_vec() }),
        ipv6_config: Some(pb::IpConfig { primary_address: b"2000:100:1::1".to_vec() }),
        pxe_config: Some(pb::PxeConfig { next_server: "2001:dede::1".into(), boot_filename: "ipxe".into() }),
        device_name: "net_tap2".into(),
        metering_parameters: Some(pb::MeteringParams { total_rate: 1000, public_rate: 500 }),
        preferred_underlay_route: Vec::new(),
    };
    let m = roundtrip(&CREATE_INTERFACE_REQUEST, &ours);
    assert_eq!(m.interface_type(), pb::InterfaceType::Virtual);
    assert_eq!(m.interface_id, b"vm1");
    assert_eq!(m.vni, 100);
    assert_eq!(m.ipv4_config.unwrap().primary_address, b"10.100.1.1");
    assert_eq!(m.ipv6_config.unwrap().primary_address, b"2000:100:1::1");
    let pxe = m.pxe_config.unwrap();
    assert_eq!((pxe.next_server.as_str(), pxe.boot_filename.as_str()), ("2001:dede::1", "ipxe"));
    assert_eq!(m.device_name, "net_tap2");
    let met = m.metering_parameters.unwrap();
    assert_eq!((met.total_rate, met.public_rate), (1000, 500));
}

/// A bare-metal CreateInterfaceRequest: enum value 1, a VNI above 24 bits, "::" as IPv6.
const CREATE_BAREMETAL_REQUEST: [u8; 41] = [
    0x08, 0x01, 0x12, 0x04, 0x62, 0x6d, 0x2d, 0x31, 0x18, 0x80, 0x80, 0x80, 0x08, 0x22, 0x0a, 0x0a, 0x08,
    0x31, 0x30, 0x2e, 0x30, 0x2e, 0x30, 0x2e, 0x31, 0x2a, 0x04, 0x0a, 0x02, 0x3a, 0x3a, 0x3a, 0x08, 0x6e,
    0x65, 0x74, 0x5f, 0x74, 0x61, 0x70, 0x30,
];

#[test]
fn create_baremetal_interface_request() {
    let ours = pb::CreateInterfaceRequest {
        interface_type: pb::InterfaceType::Baremetal as i32,
        interface_id: b"bm-1".to_vec(),
        vni: 1 << 24,
        ipv4_config: Some(pb::IpConfig { primary_address: b"10.0.0.1".to_vec() }),
        ipv6_config: Some(pb::IpConfig { primary_address: b"::".to_vec() }),
        pxe_config: None,
        device_name: "net_tap0".into(),
        metering_parameters: None,
        preferred_underlay_route: Vec::new(),
    };
    let m = roundtrip(&CREATE_BAREMETAL_REQUEST, &ours);
    assert_eq!(m.interface_type(), pb::InterfaceType::Baremetal);
    assert_eq!(m.vni, 16_777_216);
    assert!(m.pxe_config.is_none() && m.metering_parameters.is_none());
}

/// CreateRouteRequest: 10.100.2.0/24 in VNI 100 via fc00:2::64:0:1, next-hop VNI 0.
const CREATE_ROUTE_REQUEST: [u8; 44] = [
    0x08, 0x64, 0x12, 0x28, 0x0a, 0x10, 0x0a, 0x0c, 0x12, 0x0a, 0x31, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x2e,
    0x32, 0x2e, 0x30, 0x10, 0x18, 0x1a, 0x12, 0x08, 0x01, 0x12, 0x0e, 0x66, 0x63, 0x30, 0x30, 0x3a, 0x32,
    0x3a, 0x3a, 0x36, 0x34, 0x3a, 0x30, 0x3a, 0x31, 0x20, 0x64,
];

#[test]
fn create_route_request() {
    let ours = pb::CreateRouteRequest {
        vni: 100,
        route: Some(pb::Route {
            prefix: Some(pb::Prefix {
                ip: Some(pb::IpAddress {
                    ipver: pb::IpVersion::Ipv4 as i32,
                    address: b"10.100.2.0".to_vec(),
                }),
                length: 24,
                underlay_route: Vec::new(),
            }),
            nexthop_vni: 0,
            nexthop_address: Some(pb::IpAddress {
                ipver: pb::IpVersion::Ipv6 as i32,
                address: b"fc00:2::64:0:1".to_vec(),
            }),
            weight: 100,
        }),
    };
    let m = roundtrip(&CREATE_ROUTE_REQUEST, &ours);
    assert_eq!(m.vni, 100);
    let r = m.route.unwrap();
    let p = r.prefix.unwrap();
    let ip = p.ip.unwrap();
    assert_eq!((ip.ipver(), ip.address.as_slice()), (pb::IpVersion::Ipv4, &b"10.100.2.0"[..]));
    assert_eq!(p.length, 24);
    assert!(p.underlay_route.is_empty());
    assert_eq!(r.nexthop_vni, 0);
    let nh = r.nexthop_address.unwrap();
    assert_eq!((nh.ipver(), nh.address.as_slice()), (pb::IpVersion::Ipv6, &b"fc00:2::64:0:1"[..]));
    assert_eq!(r.weight, 100);
}

/// CreatePrefixRequest: 2a10:defe:dede:f4::1/124 on interface "vm2".
const CREATE_PREFIX_REQUEST: [u8; 35] = [
    0x0a, 0x03, 0x76, 0x6d, 0x32, 0x12, 0x1c, 0x0a, 0x18, 0x08, 0x01, 0x12, 0x14, 0x32, 0x61, 0x31, 0x30,
    0x3a, 0x64, 0x65, 0x66, 0x65, 0x3a, 0x64, 0x65, 0x64, 0x65, 0x3a, 0x66, 0x34, 0x3a, 0x3a, 0x31, 0x10,
    0x7c,
];

#[test]
fn create_prefix_request() {
    let ours = pb::CreatePrefixRequest {
        interface_id: b"vm2".to_vec(),
        prefix: Some(pb::Prefix {
            ip: Some(pb::IpAddress {
                ipver: pb::IpVersion::Ipv6 as i32,
                address: b"2a10:defe:dede:f4::1".to_vec(),
            }),
            length: 124,
            underlay_route: Vec::new(),
        }),
        preferred_underlay_route: Vec::new(),
    };
    let m = roundtrip(&CREATE_PREFIX_REQUEST, &ours);
    assert_eq!(m.interface_id, b"vm2");
    let p = m.prefix.unwrap();
    assert_eq!(p.length, 124);
    let ip = p.ip.unwrap();
    assert_eq!(ip.ipver(), pb::IpVersion::Ipv6);
    assert_eq!(ip.address, b"2a10:defe:dede:f4::1");
}

/// GetVersionResponse with status {0, "Success"}: code 0 is not on the wire.
const GET_VERSION_RESPONSE: [u8; 27] = [
    0x0a, 0x09, 0x12, 0x07, 0x53, 0x75, 0x63, 0x63, 0x65, 0x73, 0x73, 0x12, 0x06, 0x76, 0x30, 0x2e, 0x33,
    0x2e, 0x31, 0x1a, 0x06, 0x76, 0x30, 0x2e, 0x33, 0x2e, 0x31,
];

#[test]
fn get_version_response() {
    let ours = pb::GetVersionResponse {
        status: ok_status(),
        service_protocol: "v0.3.1".into(),
        service_version: "v0.3.1".into(),
    };
    let m = roundtrip(&GET_VERSION_RESPONSE, &ours);
    assert_eq!(m.status, ok_status());
    assert_eq!(m.service_protocol, "v0.3.1");
    assert_eq!(m.service_version, "v0.3.1");
}

/// CreateInterfaceResponse: underlay fc00:1::1:0:1, VF "dtapvf_0".
const CREATE_INTERFACE_RESPONSE: [u8; 38] = [
    0x0a, 0x09, 0x12, 0x07, 0x53, 0x75, 0x63, 0x63, 0x65, 0x73, 0x73, 0x12, 0x0d, 0x66, 0x63, 0x30, 0x30,
    0x3a, 0x31, 0x3a, 0x3a, 0x31, 0x3a, 0x30, 0x3a, 0x31, 0x1a, 0x0a, 0x0a, 0x08, 0x64, 0x74, 0x61, 0x70,
    0x76, 0x66, 0x5f, 0x30,
];

#[test]
fn create_interface_response() {
    let ours = pb::CreateInterfaceResponse {
        status: ok_status(),
        underlay_route: b"fc00:1::1:0:1".to_vec(),
        vf: Some(pb::VirtualFunction { name: "dtapvf_0".into(), ..Default::default() }),
    };
    let m = roundtrip(&CREATE_INTERFACE_RESPONSE, &ours);
    assert_eq!(m.status, ok_status());
    assert_eq!(m.underlay_route, b"fc00:1::1:0:1");
    let vf = m.vf.unwrap();
    assert_eq!(vf.name, "dtapvf_0");
    assert_eq!((vf.domain, vf.bus, vf.slot, vf.function), (0, 0, 0, 0));
}

/// Status {202, "ALREADY_EXISTS"}.
const STATUS_ALREADY_EXISTS: [u8; 19] = [
    0x08, 0xca, 0x01, 0x12, 0x0e, 0x41, 0x4c, 0x52, 0x45, 0x41, 0x44, 0x59, 0x5f, 0x45, 0x58, 0x49, 0x53,
    0x54, 0x53,
];

#[test]
fn status() {
    let ours = pb::Status { code: 202, message: "ALREADY_EXISTS".into() };
    let m = roundtrip(&STATUS_ALREADY_EXISTS, &ours);
    assert_eq!(m.code, 202);
    assert_eq!(m.message, "ALREADY_EXISTS");
}

/// CheckVniInUseRequest {vni 300, VNI_BOTH}: the `type` field.
const CHECK_VNI_IN_USE_REQUEST: [u8; 5] = [0x08, 0xac, 0x02, 0x10, 0x02];

#[test]
fn check_vni_in_use_request() {
    let ours = pb::CheckVniInUseRequest { vni: 300, r#type: pb::VniType::VniBoth as i32 };
    let m = roundtrip(&CHECK_VNI_IN_USE_REQUEST, &ours);
    assert_eq!(m.vni, 300);
    assert_eq!(m.r#type(), pb::VniType::VniBoth);
}

/// CreateInterfaceRequest with a preferred underlay address (field 9, dpservice HEAD).
const CREATE_INTERFACE_PREFERRED_UNDERLAY: [u8; 49] = [
    0x12, 0x03, 0x76, 0x6d, 0x31, 0x18, 0x64, 0x22, 0x0c, 0x0a, 0x0a, 0x31, 0x30, 0x2e, 0x31, 0x30, 0x30,
    0x2e, 0x31, 0x2e, 0x31, 0x3a, 0x08, 0x6e, 0x65, 0x74, 0x5f, 0x74, 0x61, 0x70, 0x32, 0x4a, 0x10, 0x66,
    0x63, 0x30, 0x30, 0x3a, 0x31, 0x3a, 0x3a, 0x38, 0x30, 0x30, 0x30, 0x3a, 0x30, 0x3a, 0x37,
];

#[test]
fn create_interface_preferred_underlay() {
    let ours = pb::CreateInterfaceRequest {
        interface_type: pb::InterfaceType::Virtual as i32,
        interface_id: b"vm1".to_vec(),
        vni: 100,
        ipv4_config: Some(pb::IpConfig { primary_address: b"10.100.1.1".to_vec() }),
        ipv6_config: None,
        pxe_config: None,
        device_name: "net_tap2".into(),
        metering_parameters: None,
        preferred_underlay_route: b"fc00:1::8000:0:7".to_vec(),
    };
    let m = roundtrip(&CREATE_INTERFACE_PREFERRED_UNDERLAY, &ours);
    assert_eq!(m.preferred_underlay_route, b"fc00:1::8000:0:7");
}

/// CreateNatRequest with a preferred underlay address (field 5).
const CREATE_NAT_PREFERRED_UNDERLAY: [u8; 43] = [
    0x0a, 0x03, 0x76, 0x6d, 0x31, 0x12, 0x0d, 0x12, 0x0b, 0x31, 0x30, 0x2e, 0x32, 0x30, 0x2e, 0x33, 0x30,
    0x2e, 0x34, 0x30, 0x18, 0x64, 0x20, 0xc8, 0x01, 0x2a, 0x10, 0x66, 0x63, 0x30, 0x30, 0x3a, 0x31, 0x3a,
    0x3a, 0x38, 0x30, 0x30, 0x30, 0x3a, 0x30, 0x3a, 0x39,
];

#[test]
fn create_nat_preferred_underlay() {
    let ours = pb::CreateNatRequest {
        interface_id: b"vm1".to_vec(),
        nat_ip: Some(pb::IpAddress { ipver: pb::IpVersion::Ipv4 as i32, address: b"10.20.30.40".to_vec() }),
        min_port: 100,
        max_port: 200,
        preferred_underlay_route: b"fc00:1::8000:0:9".to_vec(),
    };
    let m = roundtrip(&CREATE_NAT_PREFERRED_UNDERLAY, &ours);
    assert_eq!((m.min_port, m.max_port), (100, 200));
}

/// CreateLoadBalancerRequest with a preferred underlay address (field 5).
const CREATE_LB_PREFERRED_UNDERLAY: [u8; 45] = [
    0x0a, 0x03, 0x6c, 0x62, 0x31, 0x12, 0x0c, 0x12, 0x0a, 0x31, 0x30, 0x2e, 0x32, 0x30, 0x2e, 0x33, 0x30,
    0x2e, 0x31, 0x18, 0x64, 0x22, 0x04, 0x08, 0x50, 0x10, 0x06, 0x2a, 0x10, 0x66, 0x63, 0x30, 0x30, 0x3a,
    0x31, 0x3a, 0x3a, 0x38, 0x30, 0x30, 0x30, 0x3a, 0x30, 0x3a, 0x61,
];

#[test]
fn create_load_balancer_preferred_underlay() {
    let ours = pb::CreateLoadBalancerRequest {
        loadbalancer_id: b"lb1".to_vec(),
        loadbalanced_ip: Some(pb::IpAddress {
            ipver: pb::IpVersion::Ipv4 as i32,
            address: b"10.20.30.1".to_vec(),
        }),
        vni: 100,
        loadbalanced_ports: vec![pb::LbPort { port: 80, protocol: pb::Protocol::Tcp as i32 }],
        preferred_underlay_route: b"fc00:1::8000:0:a".to_vec(),
    };
    let m = roundtrip(&CREATE_LB_PREFERRED_UNDERLAY, &ours);
    assert_eq!(m.preferred_underlay_route, b"fc00:1::8000:0:a");
}
