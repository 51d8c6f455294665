//! The node's gRPC API: dpservice's `dpdkironcore.v1.DPDKironcore` service, and beside
//! it on the same server dpfleet's own `dpfleet.node.v1.FleetNode` ([`fleet`]).
//!
//! This layer only translates: it checks a request's form ([`conv`]), calls the
//! [`Control`] plane, and writes the answer. Proto types stop here.
//!
//! How outcomes are reported mirrors dpservice, because dpservice-cli, metalnet and the
//! conformance suite read them:
//! - Before Initialize, every call but Initialize fails with gRPC `ABORTED`
//!   ("not initialized"), CheckInitialized included.
//! - A malformed request (unparsable address, empty or over-long id or name, prefix
//!   length above 255, unknown enum value) fails with gRPC `INVALID_ARGUMENT` and a text
//!   naming the field.
//! - Everything else gets gRPC `OK`, with the outcome in the response's `status`:
//!   `{0, "Success"}`, or dpservice's error number and name (e.g. `{202,
//!   "ALREADY_EXISTS"}`, see [`ApiError`]) and no other field filled in.
//! - Calls not implemented yet fail with gRPC `UNIMPLEMENTED`.
//!
//! Two small differences:
//! - A prefix length that fits in a byte but not in its family (`/33`) is answered with
//!   ROUTE_INSERT (create) or ROUTE_NOT_FOUND (delete) before the state is consulted,
//!   where dpservice would first report NO_VM or NO_VNI. (Load-balancer prefixes take
//!   any length up to 255, as in dpservice.)
//! - A successful CreateFirewallRule answers with the rule's id in `rule_id`, where
//!   dpservice sends 64 bytes of an unfilled reply buffer.

pub mod conv;
pub mod fleet;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use dpfleet_dataplane::tables::nat::PortRange;
use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::dpdkironcore::v1::dpd_kironcore_server::{DpdKironcore, DpdKironcoreServer};
use tonic::{Request, Response, Status};

use crate::control::{random_u64, ApiError, Control, FirewallRuleSpec, InterfaceInfo, InterfaceSpec};
use conv::{
    c_str, err_status, firewall_rule_message, fits, ip_address, ipv4_text, ipv6_text, lookup_key, ok_status,
    parse_ip, parse_ipv6, preferred_underlay, prefix_arg, prefix_fits, status_of, vni_family, BadRequest,
    IFACE_ID_CAP, RULE_ID_CAP, VERSION_CAP,
};

/// What GetVersion reports as both the protocol and the service version.
pub const SERVICE_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

/// Why the API server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be opened.
    #[error("cannot listen for gRPC on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the node APIs on `addr` until `shutdown` completes; `node_name` is the
/// node's fleet name (GetNodeStatus).
pub async fn serve(
    addr: SocketAddr,
    control: Arc<Control>,
    node_name: String,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    serve_listener(listener, control, node_name, shutdown).await
}

/// Serves the node APIs on an already bound listener until `shutdown` completes.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    control: Arc<Control>,
    node_name: String,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tonic::transport::Server::builder()
        .add_service(NodeApi::new(Arc::clone(&control)).into_server())
        .add_service(fleet::FleetApi::new(control, node_name).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// The `DPDKironcore` service over a [`Control`] plane.
pub struct NodeApi {
    control: Arc<Control>,
    /// This process's identity, reported by (Check)Initialize; new at every start.
    uuid: String,
}

impl NodeApi {
    /// The service for `control`, with a fresh instance UUID.
    pub fn new(control: Arc<Control>) -> Self {
        NodeApi { control, uuid: random_uuid() }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> DpdKironcoreServer<Self> {
        DpdKironcoreServer::new(self)
    }

    /// A request's `preferred_underlay_route`, checked against this node's underlay.
    fn preferred(&self, text: &[u8]) -> Result<Option<std::net::Ipv6Addr>, BadRequest> {
        preferred_underlay(text, self.control.underlay_ipv6())
    }

    fn need_init(&self) -> Result<(), Status> {
        if self.control.is_initialized() {
            Ok(())
        } else {
            Err(Status::aborted("not initialized"))
        }
    }
}

/// A random (version 4) UUID in upper case, as dpservice prints its instance id.
fn random_uuid() -> String {
    let (a, b) = (random_u64(), random_u64());
    let a = (a & !0xf000) | 0x4000; // version 4
    let b = (b & !(0xc000 << 48)) | (0x8000 << 48); // RFC 4122 variant
    format!(
        "{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

fn iface_message(i: InterfaceInfo) -> pb::Interface {
    pb::Interface {
        id: i.id.into_bytes(),
        vni: i.vni,
        primary_ipv4: ipv4_text(i.ipv4.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)),
        primary_ipv6: ipv6_text(i.ipv6.unwrap_or(std::net::Ipv6Addr::UNSPECIFIED)),
        underlay_route: ipv6_text(i.underlay),
        pci_name: i.device_name,
        // Metering is not applied (as dpservice on NICs without it), so it reads zero.
        metering_params: Some(pb::MeteringParams::default()),
    }
}

/// The rule id of a Get/DeleteFirewallRule, refused as dpservice refuses it.
fn rule_id_arg(id: &[u8]) -> Result<&[u8], BadRequest> {
    if !fits(id, RULE_ID_CAP) {
        return Err(BadRequest("Invalid rule_id"));
    }
    Ok(c_str(id))
}

/// The prefix of a load-balancer prefix call: any parsable address and a length up to
/// 255, not checked against the family (dpservice matches these prefixes exactly and
/// never routes by them).
fn lb_prefix_arg(p: Option<&pb::Prefix>) -> Result<(std::net::IpAddr, u8), BadRequest> {
    let (addr, len) = prefix_arg(p, "Invalid prefix.ip", "Invalid prefix.length", false)?;
    let len = u8::try_from(len).map_err(|_| BadRequest("Invalid prefix.length"))?;
    Ok((addr, len))
}

/// A NAT port range `[min, max)`, checked as dpservice's gRPC layer checks it.
fn port_range_arg(min: u32, max: u32) -> Result<PortRange, BadRequest> {
    let min = u16::try_from(min).map_err(|_| BadRequest("Invalid min_port"))?;
    let max = u16::try_from(max).map_err(|_| BadRequest("Invalid max_port"))?;
    PortRange::new(min, max).map_err(|_| BadRequest("Invalid port range"))
}

/// A load balancer id, refused as dpservice refuses it (empty, or 64 bytes or more).
fn lb_id_arg(id: &[u8]) -> Result<String, BadRequest> {
    if !fits(id, IFACE_ID_CAP) {
        return Err(BadRequest("Invalid loadbalancer_id"));
    }
    Ok(lookup_key(id))
}

/// Most (protocol, port) pairs of a load balancer: dpservice keeps 16 slots, the last an
/// end marker.
const LB_PORTS_MAX: usize = 15;

/// The (protocol, port) pairs of CreateLoadBalancer, checked as dpservice checks them.
fn lb_ports_arg(ports: &[pb::LbPort]) -> Result<Vec<(u8, u16)>, BadRequest> {
    if ports.len() > LB_PORTS_MAX {
        return Err(BadRequest("Too many loadbalanced_ports"));
    }
    ports
        .iter()
        .map(|p| {
            let port = u16::try_from(p.port).map_err(|_| BadRequest("Invalid loadbalanced_ports.port"))?;
            match pb::Protocol::try_from(p.protocol) {
                Ok(pb::Protocol::Tcp) => Ok((6, port)),
                Ok(pb::Protocol::Udp) => Ok((17, port)),
                _ => Err(BadRequest("Invalid loadbalanced_ports.protocol")),
            }
        })
        .collect()
}

/// The interface id of a lookup, refused as dpservice refuses it.
fn iface_id_arg(id: &[u8]) -> Result<String, BadRequest> {
    if !fits(id, IFACE_ID_CAP) {
        return Err(BadRequest("Invalid interface_id"));
    }
    Ok(lookup_key(id))
}

#[tonic::async_trait]
impl DpdKironcore for NodeApi {
    async fn check_initialized(
        &self,
        _: Request<pb::CheckInitializedRequest>,
    ) -> Result<Response<pb::CheckInitializedResponse>, Status> {
        self.need_init()?;
        Ok(Response::new(pb::CheckInitializedResponse { status: ok_status(), uuid: self.uuid.clone() }))
    }

    async fn initialize(
        &self,
        _: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::InitializeResponse>, Status> {
        let r = self.control.initialize();
        let uuid = if r.is_ok() { self.uuid.clone() } else { String::new() };
        Ok(Response::new(pb::InitializeResponse { status: status_of(&r), uuid }))
    }

    async fn get_version(
        &self,
        req: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::GetVersionResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        // The client's versions are only checked for form, as dpservice does.
        if !fits(r.client_protocol.as_bytes(), VERSION_CAP) {
            return Err(BadRequest("Invalid client_protocol").into());
        }
        if !fits(r.client_name.as_bytes(), VERSION_CAP) {
            return Err(BadRequest("Invalid client_name").into());
        }
        if !fits(r.client_version.as_bytes(), VERSION_CAP) {
            return Err(BadRequest("Invalid client_version").into());
        }
        tracing::info!(
            client = %r.client_name, version = %r.client_version, protocol = %r.client_protocol,
            "GetVersion"
        );
        Ok(Response::new(pb::GetVersionResponse {
            status: ok_status(),
            service_protocol: SERVICE_VERSION.into(),
            service_version: SERVICE_VERSION.into(),
        }))
    }

    async fn list_interfaces(
        &self,
        _: Request<pb::ListInterfacesRequest>,
    ) -> Result<Response<pb::ListInterfacesResponse>, Status> {
        self.need_init()?;
        let interfaces = self.control.list_interfaces().into_iter().map(iface_message).collect();
        Ok(Response::new(pb::ListInterfacesResponse { status: ok_status(), interfaces }))
    }

    async fn get_interface(
        &self,
        req: Request<pb::GetInterfaceRequest>,
    ) -> Result<Response<pb::GetInterfaceResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        let r = self.control.get_interface(&id);
        Ok(Response::new(pb::GetInterfaceResponse {
            status: status_of(&r),
            interface: r.ok().map(iface_message),
        }))
    }

    async fn create_interface(
        &self,
        req: Request<pb::CreateInterfaceRequest>,
    ) -> Result<Response<pb::CreateInterfaceResponse>, Status> {
        self.need_init()?;
        let mut spec = InterfaceSpec::try_from(req.get_ref())?;
        spec.preferred_underlay = self.preferred(&req.get_ref().preferred_underlay_route)?;
        tracing::info!(
            id = spec.id.as_str(), vni = spec.vni, device = %spec.device_name,
            preferred_underlay = ?spec.preferred_underlay, "CreateInterface"
        );
        let resp = match self.control.create_interface(spec) {
            Ok(c) => pb::CreateInterfaceResponse {
                status: ok_status(),
                underlay_route: ipv6_text(c.underlay),
                vf: Some(pb::VirtualFunction { name: c.vf_name, ..Default::default() }),
            },
            Err(e) => pb::CreateInterfaceResponse { status: err_status(e), ..Default::default() },
        };
        Ok(Response::new(resp))
    }

    async fn delete_interface(
        &self,
        req: Request<pb::DeleteInterfaceRequest>,
    ) -> Result<Response<pb::DeleteInterfaceResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        let r = self.control.delete_interface(&id);
        Ok(Response::new(pb::DeleteInterfaceResponse { status: status_of(&r) }))
    }

    async fn list_prefixes(
        &self,
        req: Request<pb::ListPrefixesRequest>,
    ) -> Result<Response<pb::ListPrefixesResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        let r = self.control.list_prefixes(&id);
        let status = status_of(&r);
        let prefixes = r
            .unwrap_or_default()
            .into_iter()
            .map(|a| pb::Prefix {
                ip: Some(ip_address(a.prefix.addr())),
                length: u32::from(a.prefix.length()),
                underlay_route: ipv6_text(a.underlay),
            })
            .collect();
        Ok(Response::new(pb::ListPrefixesResponse { status, prefixes }))
    }

    async fn create_prefix(
        &self,
        req: Request<pb::CreatePrefixRequest>,
    ) -> Result<Response<pb::CreatePrefixResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let arg = prefix_arg(r.prefix.as_ref(), "Invalid prefix.ip", "Invalid prefix.length", false)?;
        let preferred = self.preferred(&r.preferred_underlay_route)?;
        let r = prefix_fits(arg, ApiError::RouteInsert)
            .and_then(|p| self.control.create_prefix_at(&id, p, preferred));
        Ok(Response::new(pb::CreatePrefixResponse {
            status: status_of(&r),
            underlay_route: r.map(ipv6_text).unwrap_or_default(),
        }))
    }

    async fn delete_prefix(
        &self,
        req: Request<pb::DeletePrefixRequest>,
    ) -> Result<Response<pb::DeletePrefixResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let arg = prefix_arg(r.prefix.as_ref(), "Invalid prefix.ip", "Invalid prefix.length", false)?;
        let r = prefix_fits(arg, ApiError::RouteNotFound).and_then(|p| self.control.delete_prefix(&id, p));
        Ok(Response::new(pb::DeletePrefixResponse { status: status_of(&r) }))
    }

    async fn list_routes(
        &self,
        req: Request<pb::ListRoutesRequest>,
    ) -> Result<Response<pb::ListRoutesResponse>, Status> {
        self.need_init()?;
        let r = self.control.list_routes(req.get_ref().vni);
        let status = status_of(&r);
        let routes = r
            .unwrap_or_default()
            .into_iter()
            .map(|rt| pb::Route {
                prefix: Some(pb::Prefix {
                    ip: Some(ip_address(rt.prefix.addr())),
                    length: u32::from(rt.prefix.length()),
                    underlay_route: Vec::new(),
                }),
                nexthop_vni: rt.nexthop_vni,
                nexthop_address: Some(ip_address(rt.nexthop.into())),
                weight: 0,
            })
            .collect();
        Ok(Response::new(pb::ListRoutesResponse { status, routes }))
    }

    async fn create_route(
        &self,
        req: Request<pb::CreateRouteRequest>,
    ) -> Result<Response<pb::CreateRouteResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let route = r.route.clone().unwrap_or_default();
        let arg = prefix_arg(
            route.prefix.as_ref(),
            "Invalid route.prefix.ip",
            "Invalid route.prefix.length",
            true,
        )?;
        let nexthop = conv::parse_ip(route.nexthop_address.as_ref())
            .ok_or(BadRequest("Invalid route.nexthop_address"))?;
        let result = if nexthop.is_ipv4() {
            Err(ApiError::BadIpver)
        } else {
            prefix_fits(arg, ApiError::RouteInsert)
                .and_then(|p| self.control.create_route(r.vni, p, route.nexthop_vni, nexthop))
        };
        Ok(Response::new(pb::CreateRouteResponse { status: status_of(&result) }))
    }

    async fn delete_route(
        &self,
        req: Request<pb::DeleteRouteRequest>,
    ) -> Result<Response<pb::DeleteRouteResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let prefix = r.route.as_ref().and_then(|rt| rt.prefix.as_ref());
        let arg = prefix_arg(prefix, "Invalid route.prefix.ip", "Invalid route.prefix.length", true)?;
        let result =
            prefix_fits(arg, ApiError::RouteNotFound).and_then(|p| self.control.delete_route(r.vni, p));
        Ok(Response::new(pb::DeleteRouteResponse { status: status_of(&result) }))
    }

    async fn check_vni_in_use(
        &self,
        req: Request<pb::CheckVniInUseRequest>,
    ) -> Result<Response<pb::CheckVniInUseResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let family = vni_family(r.r#type)?;
        let result = self.control.vni_in_use(r.vni, family);
        Ok(Response::new(pb::CheckVniInUseResponse {
            status: status_of(&result),
            in_use: result.unwrap_or(false),
        }))
    }

    async fn reset_vni(
        &self,
        req: Request<pb::ResetVniRequest>,
    ) -> Result<Response<pb::ResetVniResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let family = vni_family(r.r#type)?;
        let result = self.control.reset_vni(r.vni, family);
        Ok(Response::new(pb::ResetVniResponse { status: status_of(&result) }))
    }

    async fn list_load_balancer_prefixes(
        &self,
        req: Request<pb::ListLoadBalancerPrefixesRequest>,
    ) -> Result<Response<pb::ListLoadBalancerPrefixesResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        let r = self.control.list_lb_prefixes(&id);
        let status = status_of(&r);
        let prefixes = r
            .unwrap_or_default()
            .into_iter()
            .map(|p| pb::Prefix {
                ip: Some(ip_address(p.addr)),
                length: u32::from(p.len),
                underlay_route: ipv6_text(p.underlay),
            })
            .collect();
        Ok(Response::new(pb::ListLoadBalancerPrefixesResponse { status, prefixes }))
    }

    async fn create_load_balancer_prefix(
        &self,
        req: Request<pb::CreateLoadBalancerPrefixRequest>,
    ) -> Result<Response<pb::CreateLoadBalancerPrefixResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let (addr, len) = lb_prefix_arg(r.prefix.as_ref())?;
        let preferred = self.preferred(&r.preferred_underlay_route)?;
        tracing::info!(id = %id, prefix = %addr, len, ?preferred, "CreateLoadBalancerPrefix");
        let r = self.control.create_lb_prefix_at(&id, addr, len, preferred);
        Ok(Response::new(pb::CreateLoadBalancerPrefixResponse {
            status: status_of(&r),
            underlay_route: r.map(ipv6_text).unwrap_or_default(),
        }))
    }

    async fn delete_load_balancer_prefix(
        &self,
        req: Request<pb::DeleteLoadBalancerPrefixRequest>,
    ) -> Result<Response<pb::DeleteLoadBalancerPrefixResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let (addr, len) = lb_prefix_arg(r.prefix.as_ref())?;
        let r = self.control.delete_lb_prefix(&id, addr, len);
        Ok(Response::new(pb::DeleteLoadBalancerPrefixResponse { status: status_of(&r) }))
    }

    async fn list_firewall_rules(
        &self,
        req: Request<pb::ListFirewallRulesRequest>,
    ) -> Result<Response<pb::ListFirewallRulesResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        let r = self.control.list_firewall_rules(&id);
        let status = status_of(&r);
        let rules = r.unwrap_or_default().iter().map(firewall_rule_message).collect();
        Ok(Response::new(pb::ListFirewallRulesResponse { status, rules }))
    }

    async fn create_firewall_rule(
        &self,
        req: Request<pb::CreateFirewallRuleRequest>,
    ) -> Result<Response<pb::CreateFirewallRuleResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let rule = FirewallRuleSpec::try_from(&r.rule.clone().unwrap_or_default())?;
        tracing::info!(
            id = %id, rule = %String::from_utf8_lossy(&rule.id), direction = ?rule.direction,
            action = ?rule.action, priority = rule.priority, "CreateFirewallRule"
        );
        let rule_id = rule.id.clone();
        let r = self.control.create_firewall_rule(&id, rule);
        Ok(Response::new(pb::CreateFirewallRuleResponse {
            status: status_of(&r),
            rule_id: if r.is_ok() { rule_id } else { Vec::new() },
        }))
    }

    async fn get_firewall_rule(
        &self,
        req: Request<pb::GetFirewallRuleRequest>,
    ) -> Result<Response<pb::GetFirewallRuleResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let rule_id = rule_id_arg(&r.rule_id)?;
        let r = self.control.get_firewall_rule(&id, rule_id);
        Ok(Response::new(pb::GetFirewallRuleResponse {
            status: status_of(&r),
            rule: r.ok().as_ref().map(firewall_rule_message),
        }))
    }

    async fn delete_firewall_rule(
        &self,
        req: Request<pb::DeleteFirewallRuleRequest>,
    ) -> Result<Response<pb::DeleteFirewallRuleResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let rule_id = rule_id_arg(&r.rule_id)?;
        let r = self.control.delete_firewall_rule(&id, rule_id);
        Ok(Response::new(pb::DeleteFirewallRuleResponse { status: status_of(&r) }))
    }

    // Calls that exist in the API but not yet in dpfleet-node.

    async fn create_vip(
        &self,
        req: Request<pb::CreateVipRequest>,
    ) -> Result<Response<pb::CreateVipResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let vip = parse_ip(r.vip_ip.as_ref()).ok_or(BadRequest("Invalid vip_ip"))?;
        let preferred = self.preferred(&r.preferred_underlay_route)?;
        tracing::info!(id = %id, %vip, ?preferred, "CreateVip");
        let r = self.control.create_vip_at(&id, vip, preferred);
        Ok(Response::new(pb::CreateVipResponse {
            status: status_of(&r),
            underlay_route: r.map(ipv6_text).unwrap_or_default(),
        }))
    }

    async fn get_vip(&self, req: Request<pb::GetVipRequest>) -> Result<Response<pb::GetVipResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        let r = self.control.get_vip(&id);
        Ok(Response::new(match r {
            Ok((vip, underlay)) => pb::GetVipResponse {
                status: ok_status(),
                vip_ip: Some(ip_address(vip.into())),
                underlay_route: ipv6_text(underlay),
            },
            Err(e) => pb::GetVipResponse { status: err_status(e), ..Default::default() },
        }))
    }

    async fn delete_vip(
        &self,
        req: Request<pb::DeleteVipRequest>,
    ) -> Result<Response<pb::DeleteVipResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        tracing::info!(id = %id, "DeleteVip");
        let r = self.control.delete_vip(&id);
        Ok(Response::new(pb::DeleteVipResponse { status: status_of(&r) }))
    }

    async fn create_load_balancer(
        &self,
        req: Request<pb::CreateLoadBalancerRequest>,
    ) -> Result<Response<pb::CreateLoadBalancerResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = lb_id_arg(&r.loadbalancer_id)?;
        let vip = parse_ip(r.loadbalanced_ip.as_ref()).ok_or(BadRequest("Invalid loadbalanced_ip"))?;
        if r.loadbalanced_ports.len() > LB_PORTS_MAX {
            return Err(BadRequest("Too many loadbalanced_ports").into());
        }
        // dpservice checks the preferred address between the port count and the ports.
        let preferred = self.preferred(&r.preferred_underlay_route)?;
        let ports = lb_ports_arg(&r.loadbalanced_ports)?;
        tracing::info!(id = %id, vni = r.vni, %vip, ?ports, ?preferred, "CreateLoadBalancer");
        let r = self.control.create_lb_at(&id, r.vni, vip, ports, preferred);
        Ok(Response::new(pb::CreateLoadBalancerResponse {
            status: status_of(&r),
            underlay_route: r.map(ipv6_text).unwrap_or_default(),
        }))
    }

    async fn get_load_balancer(
        &self,
        req: Request<pb::GetLoadBalancerRequest>,
    ) -> Result<Response<pb::GetLoadBalancerResponse>, Status> {
        self.need_init()?;
        let id = lb_id_arg(&req.get_ref().loadbalancer_id)?;
        Ok(Response::new(match self.control.get_lb(&id) {
            Ok(lb) => pb::GetLoadBalancerResponse {
                status: ok_status(),
                loadbalanced_ip: Some(ip_address(lb.vip)),
                vni: lb.vni,
                loadbalanced_ports: lb
                    .ports
                    .iter()
                    .map(|&(protocol, port)| pb::LbPort {
                        port: u32::from(port),
                        protocol: i32::from(protocol),
                    })
                    .collect(),
                underlay_route: ipv6_text(lb.underlay),
            },
            Err(e) => pb::GetLoadBalancerResponse { status: err_status(e), ..Default::default() },
        }))
    }

    async fn delete_load_balancer(
        &self,
        req: Request<pb::DeleteLoadBalancerRequest>,
    ) -> Result<Response<pb::DeleteLoadBalancerResponse>, Status> {
        self.need_init()?;
        let id = lb_id_arg(&req.get_ref().loadbalancer_id)?;
        tracing::info!(id = %id, "DeleteLoadBalancer");
        let r = self.control.delete_lb(&id);
        Ok(Response::new(pb::DeleteLoadBalancerResponse { status: status_of(&r) }))
    }

    async fn create_load_balancer_target(
        &self,
        req: Request<pb::CreateLoadBalancerTargetRequest>,
    ) -> Result<Response<pb::CreateLoadBalancerTargetResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = lb_id_arg(&r.loadbalancer_id)?;
        let target = parse_ip(r.target_ip.as_ref()).ok_or(BadRequest("Invalid target_ip"))?;
        tracing::info!(id = %id, %target, "CreateLoadBalancerTarget");
        let r = self.control.create_lb_target(&id, target);
        Ok(Response::new(pb::CreateLoadBalancerTargetResponse { status: status_of(&r) }))
    }

    async fn list_load_balancer_targets(
        &self,
        req: Request<pb::ListLoadBalancerTargetsRequest>,
    ) -> Result<Response<pb::ListLoadBalancerTargetsResponse>, Status> {
        self.need_init()?;
        let id = lb_id_arg(&req.get_ref().loadbalancer_id)?;
        let r = self.control.list_lb_targets(&id);
        let status = status_of(&r);
        let target_ips = r.unwrap_or_default().into_iter().map(|t| ip_address(t.into())).collect();
        Ok(Response::new(pb::ListLoadBalancerTargetsResponse { status, target_ips }))
    }

    async fn delete_load_balancer_target(
        &self,
        req: Request<pb::DeleteLoadBalancerTargetRequest>,
    ) -> Result<Response<pb::DeleteLoadBalancerTargetResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = lb_id_arg(&r.loadbalancer_id)?;
        let target = parse_ip(r.target_ip.as_ref()).ok_or(BadRequest("Invalid target_ip"))?;
        tracing::info!(id = %id, %target, "DeleteLoadBalancerTarget");
        let r = self.control.delete_lb_target(&id, target);
        Ok(Response::new(pb::DeleteLoadBalancerTargetResponse { status: status_of(&r) }))
    }

    async fn create_nat(
        &self,
        req: Request<pb::CreateNatRequest>,
    ) -> Result<Response<pb::CreateNatResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let id = iface_id_arg(&r.interface_id)?;
        let nat_ip = parse_ip(r.nat_ip.as_ref()).ok_or(BadRequest("Invalid nat_ip"))?;
        let range = port_range_arg(r.min_port, r.max_port)?;
        let preferred = self.preferred(&r.preferred_underlay_route)?;
        tracing::info!(id = %id, %nat_ip, %range, ?preferred, "CreateNat");
        let r = self.control.create_nat_at(&id, nat_ip, range, preferred);
        Ok(Response::new(pb::CreateNatResponse {
            status: status_of(&r),
            underlay_route: r.map(ipv6_text).unwrap_or_default(),
        }))
    }

    async fn get_nat(&self, req: Request<pb::GetNatRequest>) -> Result<Response<pb::GetNatResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        let r = self.control.get_nat(&id);
        Ok(Response::new(match r {
            Ok((nat, underlay)) => pb::GetNatResponse {
                status: ok_status(),
                nat_ip: Some(ip_address(nat.nat_ip.into())),
                min_port: u32::from(nat.range.min()),
                max_port: u32::from(nat.range.max()),
                underlay_route: ipv6_text(underlay),
            },
            Err(e) => pb::GetNatResponse { status: err_status(e), ..Default::default() },
        }))
    }

    async fn delete_nat(
        &self,
        req: Request<pb::DeleteNatRequest>,
    ) -> Result<Response<pb::DeleteNatResponse>, Status> {
        self.need_init()?;
        let id = iface_id_arg(&req.get_ref().interface_id)?;
        tracing::info!(id = %id, "DeleteNat");
        let r = self.control.delete_nat(&id);
        Ok(Response::new(pb::DeleteNatResponse { status: status_of(&r) }))
    }

    async fn list_local_nats(
        &self,
        req: Request<pb::ListLocalNatsRequest>,
    ) -> Result<Response<pb::ListLocalNatsResponse>, Status> {
        self.need_init()?;
        let nat_ip = parse_ip(req.get_ref().nat_ip.as_ref()).ok_or(BadRequest("Invalid nat_ip"))?;
        let r = self.control.list_local_nats(nat_ip);
        let status = status_of(&r);
        let nat_entries = r
            .unwrap_or_default()
            .into_iter()
            .map(|(iface_ip, n)| pb::NatEntry {
                // dpservice reports the interface's own address here.
                nat_ip: Some(ip_address(iface_ip.into())),
                min_port: u32::from(n.range.min()),
                max_port: u32::from(n.range.max()),
                underlay_route: Vec::new(),
                vni: n.vni,
            })
            .collect();
        Ok(Response::new(pb::ListLocalNatsResponse { status, nat_entries }))
    }

    async fn create_neighbor_nat(
        &self,
        req: Request<pb::CreateNeighborNatRequest>,
    ) -> Result<Response<pb::CreateNeighborNatResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let nat_ip = parse_ip(r.nat_ip.as_ref()).ok_or(BadRequest("Invalid nat_ip"))?;
        let range = port_range_arg(r.min_port, r.max_port)?;
        let underlay = parse_ipv6(&r.underlay_route).ok_or(BadRequest("Invalid underlay_route"))?;
        tracing::info!(%nat_ip, vni = r.vni, %range, %underlay, "CreateNeighborNat");
        let r = self.control.create_neighbor_nat(nat_ip, r.vni, range, underlay);
        Ok(Response::new(pb::CreateNeighborNatResponse { status: status_of(&r) }))
    }

    async fn delete_neighbor_nat(
        &self,
        req: Request<pb::DeleteNeighborNatRequest>,
    ) -> Result<Response<pb::DeleteNeighborNatResponse>, Status> {
        self.need_init()?;
        let r = req.get_ref();
        let nat_ip = parse_ip(r.nat_ip.as_ref()).ok_or(BadRequest("Invalid nat_ip"))?;
        let range = port_range_arg(r.min_port, r.max_port)?;
        tracing::info!(%nat_ip, vni = r.vni, %range, "DeleteNeighborNat");
        let r = self.control.delete_neighbor_nat(nat_ip, r.vni, range);
        Ok(Response::new(pb::DeleteNeighborNatResponse { status: status_of(&r) }))
    }

    async fn list_neighbor_nats(
        &self,
        req: Request<pb::ListNeighborNatsRequest>,
    ) -> Result<Response<pb::ListNeighborNatsResponse>, Status> {
        self.need_init()?;
        let nat_ip = parse_ip(req.get_ref().nat_ip.as_ref()).ok_or(BadRequest("Invalid nat_ip"))?;
        let r = self.control.list_neighbor_nats(nat_ip);
        let status = status_of(&r);
        let nat_entries = r
            .unwrap_or_default()
            .into_iter()
            .map(|n| pb::NatEntry {
                nat_ip: None,
                min_port: u32::from(n.range.min()),
                max_port: u32::from(n.range.max()),
                underlay_route: ipv6_text(n.underlay),
                vni: n.vni,
            })
            .collect();
        Ok(Response::new(pb::ListNeighborNatsResponse { status, nat_entries }))
    }

    // Packet capture in dpservice samples traffic that the NIC handles in hardware
    // (rte_flow sampling rules), and is only available with offloading; this node
    // offloads nothing, so every packet already takes the software path. It answers as
    // dpservice does without offloading: the request is validated the same way, then
    // refused with NOT_ACTIVE; stopping finds nothing active; the status is inactive.
    async fn capture_start(
        &self,
        req: Request<pb::CaptureStartRequest>,
    ) -> Result<Response<pb::CaptureStartResponse>, Status> {
        self.need_init()?;
        let cfg = req.get_ref().capture_config.clone().unwrap_or_default();
        check_capture_config(&cfg)?;
        tracing::info!(
            interfaces = cfg.interfaces.len(),
            "CaptureStart refused: no offloading, nothing to capture"
        );
        Ok(Response::new(pb::CaptureStartResponse { status: err_status(ApiError::NotActive) }))
    }

    async fn capture_stop(
        &self,
        _: Request<pb::CaptureStopRequest>,
    ) -> Result<Response<pb::CaptureStopResponse>, Status> {
        self.need_init()?;
        Ok(Response::new(pb::CaptureStopResponse {
            status: err_status(ApiError::NotActive),
            stopped_interface_cnt: 0,
        }))
    }

    async fn capture_status(
        &self,
        _: Request<pb::CaptureStatusRequest>,
    ) -> Result<Response<pb::CaptureStatusResponse>, Status> {
        self.need_init()?;
        Ok(Response::new(pb::CaptureStatusResponse { status: None, is_active: false, capture_config: None }))
    }
}

/// Most interfaces one capture can name (dpservice's `DP_CAPTURE_MAX_PORT_NUM`).
const CAPTURE_MAX_INTERFACES: usize = 16;

/// dpservice's checks of a CaptureStart request, in its order.
fn check_capture_config(cfg: &pb::CaptureConfig) -> Result<(), BadRequest> {
    if cfg.udp_src_port > u32::from(u16::MAX) {
        return Err(BadRequest("Invalid udp_src_port"));
    }
    if cfg.udp_dst_port > u32::from(u16::MAX) {
        return Err(BadRequest("Invalid udp_dst_port"));
    }
    let sink = cfg.sink_node_ip.as_ref().map_or(&[][..], |ip| &ip.address[..]);
    if parse_ipv6(sink).is_none() {
        return Err(BadRequest("Invalid sink_node_ip"));
    }
    if cfg.interfaces.len() > CAPTURE_MAX_INTERFACES {
        return Err(BadRequest("Too many interfaces to be captured"));
    }
    for i in &cfg.interfaces {
        match pb::CaptureInterfaceType::try_from(i.interface_type) {
            Ok(pb::CaptureInterfaceType::SingleVf) => {
                let name = match &i.spec {
                    Some(pb::captured_interface::Spec::VfName(n)) => &n[..],
                    _ => &[][..],
                };
                // dpservice copies the name into its 64-byte id (snprintf): longer fails.
                if c_str(name).len() >= IFACE_ID_CAP {
                    return Err(BadRequest("Invalid interface_id"));
                }
            }
            Ok(pb::CaptureInterfaceType::SinglePf) => {
                if let Some(pb::captured_interface::Spec::PfIndex(x)) = i.spec {
                    if x > u32::from(u8::MAX) {
                        return Err(BadRequest("Invalid pf_index"));
                    }
                }
            }
            Err(_) => return Err(BadRequest("Invalid interfaces.interface_type")),
        }
    }
    Ok(())
}
