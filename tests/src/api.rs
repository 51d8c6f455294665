//! A blocking client for the node's `dpdkironcore.v1.DPDKironcore` gRPC API.
//!
//! The node listens inside its own namespace, so the client's connector opens the TCP
//! connection from a thread that joined that namespace. Calls block on a private
//! single-threaded tokio runtime and return tonic's result unchanged: a test can look at
//! a gRPC-level failure (`Err(Status)`) as well as at the dpservice-style error code in
//! the response's `status` field ([`Reply::code`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::dpfleet::node::v1 as fpb;
use fpb::fleet_node_client::FleetNodeClient;
use hyper_util::rt::TokioIo;
use pb::dpd_kironcore_client::DpdKironcoreClient;
use tonic::transport::{Channel, Endpoint};

use crate::node::Node;
use crate::topo::{self, Vm};
use crate::Error;

pub use pb::*;

/// dpservice's error codes in `Status.code` (facts of the public API).
pub mod errcode {
    /// Malformed request.
    pub const BAD_REQUEST: u32 = 101;
    /// Object not found.
    pub const NOT_FOUND: u32 = 201;
    /// Object already exists.
    pub const ALREADY_EXISTS: u32 = 202;
    /// Wrong type (e.g. VNI type).
    pub const WRONG_TYPE: u32 = 203;
    /// Wrong IP version.
    pub const BAD_IPVER: u32 = 204;
    /// No such interface.
    pub const NO_VM: u32 = 205;
    /// No such VNI.
    pub const NO_VNI: u32 = 206;
    /// Route already exists.
    pub const ROUTE_EXISTS: u32 = 301;
    /// Route not found.
    pub const ROUTE_NOT_FOUND: u32 = 302;
}

/// How long one gRPC call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A response that carries dpservice's `Status { code, message }`.
pub trait Reply {
    /// The status field (absent means success).
    fn status(&self) -> Option<&pb::Status>;

    /// The error code (0 = success).
    fn code(&self) -> u32 {
        self.status().map_or(0, |s| s.code)
    }

    /// The error message, empty on success.
    fn message(&self) -> &str {
        self.status().map_or("", |s| s.message.as_str())
    }
}

macro_rules! replies {
    ($($t:ident),* $(,)?) => {
        $(impl Reply for pb::$t {
            fn status(&self) -> Option<&pb::Status> {
                self.status.as_ref()
            }
        })*
    };
}

replies!(
    CheckInitializedResponse,
    InitializeResponse,
    GetVersionResponse,
    ListInterfacesResponse,
    GetInterfaceResponse,
    CreateInterfaceResponse,
    DeleteInterfaceResponse,
    ListPrefixesResponse,
    CreatePrefixResponse,
    DeletePrefixResponse,
    ListRoutesResponse,
    CreateRouteResponse,
    DeleteRouteResponse,
    CheckVniInUseResponse,
    ResetVniResponse,
    CreateVipResponse,
    GetVipResponse,
    DeleteVipResponse,
    CreateNatResponse,
    CreateLoadBalancerResponse,
    CreateLoadBalancerTargetResponse,
    GetNatResponse,
    DeleteNatResponse,
    CreateNeighborNatResponse,
    DeleteNeighborNatResponse,
    CreateFirewallRuleResponse,
    ListNeighborNatsResponse,
    ListFirewallRulesResponse,
    ListLoadBalancerPrefixesResponse,
    GetLoadBalancerResponse,
    ListLoadBalancerTargetsResponse,
);

/// Unwraps a call that must succeed at both levels: no gRPC error, status code 0.
///
/// # Panics
/// With the method name, the code and the message otherwise.
#[track_caller]
pub fn ok<T: Reply + std::fmt::Debug>(method: &str, r: Result<T, tonic::Status>) -> T {
    match r {
        Ok(resp) if resp.code() == 0 => resp,
        Ok(resp) => panic!("{method}: error {} ({}) in reply {resp:?}", resp.code(), resp.message()),
        Err(status) => panic!("{method}: gRPC failure {status:?}"),
    }
}

/// Asserts that a call failed with dpservice error `code` and a non-empty message,
/// as dpservice reports errors.
///
/// # Panics
/// When the call succeeded, failed at the gRPC level, or failed with another code.
#[track_caller]
pub fn expect_code<T: Reply + std::fmt::Debug>(method: &str, code: u32, r: Result<T, tonic::Status>) {
    match r {
        Ok(resp) => {
            assert_eq!(resp.code(), code, "{method}: expected error {code}, got reply {resp:?}");
            assert!(!resp.message().is_empty(), "{method}: error {code} without a message");
        }
        Err(status) => panic!("{method}: expected error {code} in the reply, got gRPC failure {status:?}"),
    }
}

/// A blocking gRPC client connected to one node.
pub struct Api {
    rt: tokio::runtime::Runtime,
    client: DpdKironcoreClient<Channel>,
    fleet: FleetNodeClient<Channel>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

macro_rules! unary {
    ($($(#[$doc:meta])* $name:ident($req:ident) -> $resp:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&mut self, req: pb::$req) -> Result<pb::$resp, tonic::Status> {
                let mut c = self.client.clone();
                self.rt.block_on(async move { c.$name(req).await.map(tonic::Response::into_inner) })
            }
        )*
    };
}

impl Api {
    /// Connects to the node's gRPC port (connections are made lazily, per call).
    pub fn connect(node: &Node) -> Result<Api, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io("tokio runtime".into(), e))?;
        let ns = node.netns().name().to_string();
        let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
            let ns = ns.clone();
            async move {
                let stream = crate::netns::run_in(&ns, move || {
                    std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, topo::GRPC_PORT))
                        .or_else(|_| std::net::TcpStream::connect((Ipv6Addr::LOCALHOST, topo::GRPC_PORT)))
                })
                .map_err(std::io::Error::other)??;
                stream.set_nonblocking(true)?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::TcpStream::from_std(stream)?))
            }
        });
        let channel = rt.block_on(async {
            Endpoint::from_static("http://dpfleet-node.invalid")
                .timeout(CALL_TIMEOUT)
                .connect_timeout(CALL_TIMEOUT)
                .connect_with_connector(connector)
                .await
        });
        let channel = channel.map_err(|e| Error::Grpc { method: "connect", status: format!("{e:?}") })?;
        Ok(Api { rt, client: DpdKironcoreClient::new(channel.clone()), fleet: FleetNodeClient::new(channel) })
    }

    unary! {
        /// CheckInitialized.
        check_initialized(CheckInitializedRequest) -> CheckInitializedResponse;
        /// Initialize.
        initialize(InitializeRequest) -> InitializeResponse;
        /// GetVersion.
        get_version(GetVersionRequest) -> GetVersionResponse;
        /// ListInterfaces.
        list_interfaces(ListInterfacesRequest) -> ListInterfacesResponse;
        /// GetInterface.
        get_interface(GetInterfaceRequest) -> GetInterfaceResponse;
        /// CreateInterface.
        create_interface(CreateInterfaceRequest) -> CreateInterfaceResponse;
        /// DeleteInterface.
        delete_interface(DeleteInterfaceRequest) -> DeleteInterfaceResponse;
        /// ListPrefixes.
        list_prefixes(ListPrefixesRequest) -> ListPrefixesResponse;
        /// CreatePrefix.
        create_prefix(CreatePrefixRequest) -> CreatePrefixResponse;
        /// DeletePrefix.
        delete_prefix(DeletePrefixRequest) -> DeletePrefixResponse;
        /// ListRoutes.
        list_routes(ListRoutesRequest) -> ListRoutesResponse;
        /// CreateRoute.
        create_route(CreateRouteRequest) -> CreateRouteResponse;
        /// DeleteRoute.
        delete_route(DeleteRouteRequest) -> DeleteRouteResponse;
        /// CheckVniInUse.
        check_vni_in_use(CheckVniInUseRequest) -> CheckVniInUseResponse;
        /// ResetVni.
        reset_vni(ResetVniRequest) -> ResetVniResponse;
        /// CreateVip.
        create_vip(CreateVipRequest) -> CreateVipResponse;
        /// GetVip.
        get_vip(GetVipRequest) -> GetVipResponse;
        /// DeleteVip.
        delete_vip(DeleteVipRequest) -> DeleteVipResponse;
        /// CreateNat.
        create_nat(CreateNatRequest) -> CreateNatResponse;
        /// GetNat.
        get_nat(GetNatRequest) -> GetNatResponse;
        /// DeleteNat.
        delete_nat(DeleteNatRequest) -> DeleteNatResponse;
        /// CreateNeighborNat.
        create_neighbor_nat(CreateNeighborNatRequest) -> CreateNeighborNatResponse;
        /// DeleteNeighborNat.
        delete_neighbor_nat(DeleteNeighborNatRequest) -> DeleteNeighborNatResponse;
        /// CreateFirewallRule.
        create_firewall_rule(CreateFirewallRuleRequest) -> CreateFirewallRuleResponse;
        /// CreateLoadBalancer.
        create_load_balancer(CreateLoadBalancerRequest) -> CreateLoadBalancerResponse;
        /// CreateLoadBalancerTarget.
        create_load_balancer_target(CreateLoadBalancerTargetRequest) -> CreateLoadBalancerTargetResponse;
        /// ListNeighborNats.
        list_neighbor_nats(ListNeighborNatsRequest) -> ListNeighborNatsResponse;
        /// ListFirewallRules.
        list_firewall_rules(ListFirewallRulesRequest) -> ListFirewallRulesResponse;
        /// ListLoadBalancerPrefixes.
        list_load_balancer_prefixes(ListLoadBalancerPrefixesRequest) -> ListLoadBalancerPrefixesResponse;
        /// GetLoadBalancer.
        get_load_balancer(GetLoadBalancerRequest) -> GetLoadBalancerResponse;
        /// ListLoadBalancerTargets.
        list_load_balancer_targets(ListLoadBalancerTargetsRequest) -> ListLoadBalancerTargetsResponse;
    }

    /// dpfleet.node.v1 GetNodeStatus.
    pub fn get_node_status(&mut self) -> Result<fpb::GetNodeStatusResponse, tonic::Status> {
        let mut c = self.fleet.clone();
        self.rt.block_on(async move {
            c.get_node_status(fpb::GetNodeStatusRequest {}).await.map(tonic::Response::into_inner)
        })
    }

    /// dpfleet.node.v1 SetAppliedGeneration.
    pub fn set_applied_generation(&mut self, generation: u64, force: bool) -> Result<(), tonic::Status> {
        let mut c = self.fleet.clone();
        let req = fpb::SetAppliedGenerationRequest { generation, force };
        self.rt.block_on(async move { c.set_applied_generation(req).await.map(|_| ()) })
    }

    /// dpfleet.node.v1 SetLoadBalancerTable; returns the node's digest.
    pub fn set_load_balancer_table(
        &mut self,
        req: fpb::SetLoadBalancerTableRequest,
    ) -> Result<u64, tonic::Status> {
        let mut c = self.fleet.clone();
        self.rt.block_on(async move { c.set_load_balancer_table(req).await.map(|r| r.into_inner().digest) })
    }

    /// Initialize, which must succeed; returns the node's UUID.
    pub fn init(&mut self) -> String {
        ok("Initialize", self.initialize(pb::InitializeRequest {})).uuid
    }

    /// CreateInterface for `vm` on its VF, which must succeed; returns the interface's
    /// underlay address.
    ///
    /// # Panics
    /// When the call fails or the underlay address is not an IPv6 address.
    pub fn add_vm(&mut self, vm: &Vm) -> Ipv6Addr {
        let resp = ok("CreateInterface", self.create_interface(interface_request(vm)));
        parse_v6(&resp.underlay_route)
    }

    /// CreateRoute in `vni` for `prefix`/`len` via `next_hop` (next-hop VNI `nh_vni`),
    /// which must succeed.
    pub fn add_route(&mut self, vni: u32, prefix: IpAddr, len: u32, nh_vni: u32, next_hop: Ipv6Addr) {
        ok(
            "CreateRoute",
            self.create_route(pb::CreateRouteRequest {
                vni,
                route: Some(route(prefix, len, nh_vni, next_hop)),
            }),
        );
    }
}

/// The CreateInterface request for `vm` (device `net_tap<vf+2>`).
pub fn interface_request(vm: &Vm) -> pb::CreateInterfaceRequest {
    pb::CreateInterfaceRequest {
        interface_type: pb::InterfaceType::Virtual as i32,
        interface_id: vm.id.clone().into_bytes(),
        vni: vm.vni,
        ipv4_config: Some(pb::IpConfig { primary_address: vm.ip.to_string().into_bytes() }),
        ipv6_config: Some(pb::IpConfig { primary_address: vm.ipv6.to_string().into_bytes() }),
        device_name: topo::vf(vm.vf).device,
        ..Default::default()
    }
}

/// An `IpAddress` message (text form, as dpservice's API carries addresses).
pub fn ip(addr: IpAddr) -> pb::IpAddress {
    pb::IpAddress {
        ipver: match addr {
            IpAddr::V4(_) => pb::IpVersion::Ipv4 as i32,
            IpAddr::V6(_) => pb::IpVersion::Ipv6 as i32,
        },
        address: addr.to_string().into_bytes(),
    }
}

/// A `Prefix` message.
pub fn prefix(addr: IpAddr, len: u32) -> pb::Prefix {
    pb::Prefix { ip: Some(ip(addr)), length: len, underlay_route: Vec::new() }
}

/// A `Route` message.
pub fn route(addr: IpAddr, len: u32, nh_vni: u32, next_hop: Ipv6Addr) -> pb::Route {
    pb::Route {
        prefix: Some(prefix(addr, len)),
        nexthop_vni: nh_vni,
        nexthop_address: Some(ip(IpAddr::V6(next_hop))),
        weight: 0,
    }
}

/// Parses an address the API returned as text.
///
/// # Panics
/// When it is not UTF-8 text of an IPv6 address.
#[track_caller]
pub fn parse_v6(text: &[u8]) -> Ipv6Addr {
    let s = String::from_utf8_lossy(text);
    s.parse().unwrap_or_else(|_| panic!("not an IPv6 address: {s:?}"))
}

/// Parses an `IpAddress` message into an address.
///
/// # Panics
/// When the message is absent or the text is not an address.
#[track_caller]
pub fn parse_ip(ip: Option<&pb::IpAddress>) -> IpAddr {
    let ip = ip.expect("IpAddress present");
    let s = String::from_utf8_lossy(&ip.address);
    s.parse().unwrap_or_else(|_| panic!("not an IP address: {s:?}"))
}
