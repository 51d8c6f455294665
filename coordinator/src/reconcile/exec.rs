//! The I/O side of the reconciler: reads what a node holds and makes the planned calls,
//! over the node's two gRPC services on one port (`dpdkironcore.v1`, dpservice's, and
//! `dpfleet.node.v1`).
//!
//! `dpdkironcore.v1` answers gRPC OK with dpservice's error code in the response's
//! `status`; `dpfleet.node.v1` uses gRPC status codes. Both become an [`ExecError`] that
//! names the call, the object and the node's code. A delete of what is already gone
//! (NOT_FOUND, SNAT_NO_DATA, ROUTE_NOT_FOUND, NO_VM, NO_VNI, NO_LB) counts as done: the
//! goal is reached either way. A create of what already exists is an error: the next
//! round reads the node again and plans from what is there.
//!
//! One thing dpservice's API cannot show: ListRoutes lists only IPv4 routes. IPv6 routes
//! are what this reconciler created on the same node instance (the UUID CheckInitialized
//! reports, new at every node start) — see [`Ipv6Routes`]; a CreateRoute of an IPv6
//! prefix the node already has (created by a former leader) is replaced (delete, create),
//! since its next hop cannot be read.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::dpdkironcore::v1::dpd_kironcore_client::DpdKironcoreClient;
use dpfleet_proto::dpfleet::node::v1 as fpb;
use dpfleet_proto::dpfleet::node::v1::fleet_node_client::FleetNodeClient;
use tonic::transport::{Channel, Endpoint};

use super::plan::{
    Action, AliasPrefix, InterfaceConfig, InterfaceObjects, LbActual, LbConfig, LbPrefix, NatConfig,
    NeighborNat, NodeActual, NodeRoute, TableStatus, VipConfig,
};
use crate::state::{
    Cidr, Direction, FirewallAction, FirewallRule, LbPort, PortRange, Protocol, ProtocolFilter,
};

/// dpservice's error codes the reconciler tells apart.
mod code {
    pub const NOT_FOUND: u32 = 201;
    pub const NO_VM: u32 = 205;
    pub const NO_VNI: u32 = 206;
    pub const NO_LB: u32 = 422;
    pub const ROUTE_EXISTS: u32 = 301;
    pub const ROUTE_NOT_FOUND: u32 = 302;
    pub const SNAT_NO_DATA: u32 = 341;
}

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The node's endpoint is not a valid URI.
    #[error("invalid node endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// No connection.
    #[error("cannot connect to node API {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The call failed at the gRPC level (transport, timeout, malformed request).
    #[error("{call}({what}): gRPC {code:?}: {message}")]
    Rpc {
        /// The call.
        call: &'static str,
        /// The object.
        what: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The node refused the request with one of dpservice's error codes.
    #[error("{call}({what}): node refused with {code} {name}")]
    Refused {
        /// The call.
        call: &'static str,
        /// The object.
        what: String,
        /// dpservice's error number.
        code: u32,
        /// Its name, as the node sent it.
        name: String,
    },
    /// The node answered something the reconciler cannot read.
    #[error("{call}: unreadable answer: {why}")]
    BadReply {
        /// The call.
        call: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The IPv6 routes this reconciler created on one node instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Routes {
    /// The node instance (CheckInitialized's UUID) they were created on.
    pub instance: String,
    /// The routes, by (VNI, prefix).
    pub routes: BTreeMap<(u32, Cidr), NodeRoute>,
}

impl Ipv6Routes {
    /// Records that `action` succeeded.
    pub fn record(&mut self, action: &Action) {
        match action {
            Action::CreateRoute(r) if r.prefix.addr.is_ipv6() => {
                self.routes.insert((r.vni, r.prefix), *r);
            }
            Action::DeleteRoute(r) => {
                self.routes.remove(&(r.vni, r.prefix));
            }
            _ => {}
        }
    }

    /// Forgets the routes of VNIs the node no longer holds (it drops them with the VNI).
    pub fn retain_vnis(&mut self, held: &BTreeSet<u32>) {
        self.routes.retain(|(vni, _), _| held.contains(vni));
    }
}

/// What the status call reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's name.
    pub node_name: String,
    /// Its software version.
    pub version: String,
    /// The generation it last recorded as applied.
    pub applied_generation: u64,
    /// Its load balancers' tables, by id.
    pub tables: BTreeMap<String, TableStatus>,
}

/// A connection to one node's APIs.
pub struct NodeClient {
    endpoint: String,
    api: DpdKironcoreClient<Channel>,
    fleet: FleetNodeClient<Channel>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end_matches('\0').to_string()
}

fn ip_message(addr: IpAddr) -> pb::IpAddress {
    let ipver = if addr.is_ipv4() { pb::IpVersion::Ipv4 } else { pb::IpVersion::Ipv6 };
    pb::IpAddress { ipver: ipver as i32, address: addr.to_string().into_bytes() }
}

fn prefix_message(addr: IpAddr, len: u8) -> pb::Prefix {
    pb::Prefix { ip: Some(ip_message(addr)), length: u32::from(len), underlay_route: Vec::new() }
}

fn parse_ip(call: &'static str, m: Option<&pb::IpAddress>) -> Result<IpAddr, ExecError> {
    let m = m.ok_or_else(|| ExecError::BadReply { call, why: "no address".into() })?;
    text(&m.address)
        .parse()
        .map_err(|_| ExecError::BadReply { call, why: format!("address {:?}", text(&m.address)) })
}

fn parse_v4(call: &'static str, m: Option<&pb::IpAddress>) -> Result<Ipv4Addr, ExecError> {
    match parse_ip(call, m)? {
        IpAddr::V4(a) => Ok(a),
        other => Err(ExecError::BadReply { call, why: format!("{other} is not IPv4") }),
    }
}

fn parse_v6_text(call: &'static str, b: &[u8]) -> Result<Ipv6Addr, ExecError> {
    text(b).parse().map_err(|_| ExecError::BadReply { call, why: format!("underlay address {:?}", text(b)) })
}

fn parse_prefix(call: &'static str, p: Option<&pb::Prefix>) -> Result<(IpAddr, u8, Vec<u8>), ExecError> {
    let p = p.ok_or_else(|| ExecError::BadReply { call, why: "no prefix".into() })?;
    let len = u8::try_from(p.length)
        .map_err(|_| ExecError::BadReply { call, why: format!("length {}", p.length) })?;
    Ok((parse_ip(call, p.ip.as_ref())?, len, p.underlay_route.clone()))
}

fn port16(call: &'static str, p: u32) -> Result<u16, ExecError> {
    u16::try_from(p).map_err(|_| ExecError::BadReply { call, why: format!("port {p}") })
}

/// A state firewall rule as the node API takes it.
pub fn rule_message(r: &FirewallRule) -> pb::FirewallRule {
    use pb::protocol_filter::Filter as F;
    let ports = |p: Option<PortRange>| p.map_or((-1, -1), |r| (i32::from(r.lower), i32::from(r.upper)));
    let icmp = |v: Option<u8>| v.map_or(-1, i32::from);
    let filter = r.protocol.map(|p| match p {
        ProtocolFilter::Tcp { src_ports, dst_ports } => {
            let ((sl, su), (dl, du)) = (ports(src_ports), ports(dst_ports));
            F::Tcp(pb::TcpFilter {
                src_port_lower: sl,
                src_port_upper: su,
                dst_port_lower: dl,
                dst_port_upper: du,
            })
        }
        ProtocolFilter::Udp { src_ports, dst_ports } => {
            let ((sl, su), (dl, du)) = (ports(src_ports), ports(dst_ports));
            F::Udp(pb::UdpFilter {
                src_port_lower: sl,
                src_port_upper: su,
                dst_port_lower: dl,
                dst_port_upper: du,
            })
        }
        ProtocolFilter::Icmp { icmp_type, icmp_code } => {
            F::Icmp(pb::IcmpFilter { icmp_type: icmp(icmp_type), icmp_code: icmp(icmp_code) })
        }
    });
    pb::FirewallRule {
        id: r.id.clone().into_bytes(),
        direction: match r.direction {
            Direction::Ingress => pb::TrafficDirection::Ingress as i32,
            Direction::Egress => pb::TrafficDirection::Egress as i32,
        },
        action: match r.action {
            FirewallAction::Accept => pb::FirewallAction::Accept as i32,
            FirewallAction::Drop => pb::FirewallAction::Drop as i32,
        },
        priority: r.priority,
        source_prefix: Some(prefix_message(r.source.addr, r.source.len)),
        destination_prefix: Some(prefix_message(r.destination.addr, r.destination.len)),
        protocol_filter: Some(pb::ProtocolFilter { filter }),
    }
}

/// A node's firewall rule in the state's terms (the inverse of [`rule_message`]).
pub fn rule_from_message(m: &pb::FirewallRule) -> Result<FirewallRule, ExecError> {
    use pb::protocol_filter::Filter as F;
    const CALL: &str = "ListFirewallRules";
    let bad = |why: String| ExecError::BadReply { call: CALL, why };
    let range = |lower: i32, upper: i32| -> Result<Option<PortRange>, ExecError> {
        if lower < 0 || upper < 0 {
            return Ok(None);
        }
        let l = u16::try_from(lower).map_err(|_| bad(format!("port {lower}")))?;
        let u = u16::try_from(upper).map_err(|_| bad(format!("port {upper}")))?;
        Ok(Some(PortRange { lower: l, upper: u }))
    };
    let icmp = |v: i32| -> Result<Option<u8>, ExecError> {
        if v < 0 {
            return Ok(None);
        }
        u8::try_from(v).map(Some).map_err(|_| bad(format!("ICMP value {v}")))
    };
    let cidr = |p: Option<&pb::Prefix>| -> Result<Cidr, ExecError> {
        let (addr, len, _) = parse_prefix(CALL, p)?;
        Ok(Cidr { addr, len })
    };
    let protocol = match m.protocol_filter.as_ref().and_then(|f| f.filter.as_ref()) {
        None => None,
        Some(F::Tcp(t)) => Some(ProtocolFilter::Tcp {
            src_ports: range(t.src_port_lower, t.src_port_upper)?,
            dst_ports: range(t.dst_port_lower, t.dst_port_upper)?,
        }),
        Some(F::Udp(u)) => Some(ProtocolFilter::Udp {
            src_ports: range(u.src_port_lower, u.src_port_upper)?,
            dst_ports: range(u.dst_port_lower, u.dst_port_upper)?,
        }),
        Some(F::Icmp(i)) => {
            Some(ProtocolFilter::Icmp { icmp_type: icmp(i.icmp_type)?, icmp_code: icmp(i.icmp_code)? })
        }
    };
    Ok(FirewallRule {
        id: text(&m.id),
        direction: match pb::TrafficDirection::try_from(m.direction) {
            Ok(pb::TrafficDirection::Egress) => Direction::Egress,
            Ok(pb::TrafficDirection::Ingress) => Direction::Ingress,
            Err(_) => return Err(bad(format!("direction {}", m.direction))),
        },
        action: match pb::FirewallAction::try_from(m.action) {
            Ok(pb::FirewallAction::Accept) => FirewallAction::Accept,
            Ok(pb::FirewallAction::Drop) => FirewallAction::Drop,
            Err(_) => return Err(bad(format!("action {}", m.action))),
        },
        priority: m.priority,
        source: cidr(m.source_prefix.as_ref())?,
        destination: cidr(m.destination_prefix.as_ref())?,
        protocol,
    })
}

fn lb_ports_message(ports: &[LbPort]) -> Vec<pb::LbPort> {
    ports
        .iter()
        .map(|p| pb::LbPort {
            port: u32::from(p.port),
            protocol: match p.protocol {
                Protocol::Tcp => pb::Protocol::Tcp as i32,
                Protocol::Udp => pb::Protocol::Udp as i32,
            },
        })
        .collect()
}

/// Turns a gRPC-level outcome into the response or an [`ExecError`].
fn rpc<T>(
    call: &'static str,
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
) -> Result<T, ExecError> {
    r.map(tonic::Response::into_inner).map_err(|s| ExecError::Rpc {
        call,
        what: what.to_string(),
        code: s.code(),
        message: s.message().to_string(),
    })
}

/// The outcome in a dpdkironcore response's `status`: Ok, or the node's refusal. Codes in
/// `gone` count as success (a delete of what is not there).
fn outcome(
    call: &'static str,
    what: &str,
    status: Option<&pb::Status>,
    gone: &[u32],
) -> Result<bool, ExecError> {
    match status {
        None => Ok(true),
        Some(s) if s.code == 0 => Ok(true),
        Some(s) if gone.contains(&s.code) => Ok(false),
        Some(s) => {
            Err(ExecError::Refused { call, what: what.to_string(), code: s.code, name: s.message.clone() })
        }
    }
}

const DELETE_GONE: &[u32] =
    &[code::NOT_FOUND, code::NO_VM, code::NO_VNI, code::NO_LB, code::ROUTE_NOT_FOUND, code::SNAT_NO_DATA];

impl NodeClient {
    /// Connects to the node API at `endpoint` (`host:port` or a URI); every call gets
    /// `timeout`.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Self, ExecError> {
        let uri = if endpoint.contains("://") { endpoint.to_string() } else { format!("http://{endpoint}") };
        let ep = Endpoint::from_shared(uri)
            .map_err(|e| ExecError::Endpoint { endpoint: endpoint.into(), reason: e.to_string() })?
            .connect_timeout(timeout)
            .timeout(timeout);
        let channel = ep.connect().await.map_err(|e| ExecError::Connect {
            endpoint: endpoint.into(),
            reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string),
        })?;
        Ok(NodeClient {
            endpoint: endpoint.into(),
            api: DpdKironcoreClient::new(channel.clone()),
            fleet: FleetNodeClient::new(channel),
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The node instance's UUID, initializing the node first if it is not (a node that
    /// just started refuses every call but Initialize).
    pub async fn ensure_initialized(&mut self) -> Result<String, ExecError> {
        match self.api.check_initialized(pb::CheckInitializedRequest {}).await {
            Ok(r) => return Ok(r.into_inner().uuid),
            Err(s) if s.code() == tonic::Code::Aborted => {}
            Err(s) => return rpc("CheckInitialized", "", Err(s)),
        }
        let r = rpc("Initialize", "", self.api.initialize(pb::InitializeRequest {}).await)?;
        outcome("Initialize", "", r.status.as_ref(), &[])?;
        tracing::info!(endpoint = %self.endpoint, uuid = %r.uuid, "initialized the node");
        Ok(r.uuid)
    }

    /// GetNodeStatus.
    pub async fn status(&mut self) -> Result<NodeStatus, ExecError> {
        let r = rpc("GetNodeStatus", "", self.fleet.get_node_status(fpb::GetNodeStatusRequest {}).await)?;
        let tables = r
            .load_balancers
            .into_iter()
            .map(|t| {
                let status = TableStatus {
                    epoch: t.epoch,
                    digest: t.digest,
                    table_size: t.table_size,
                    targets: t.targets,
                };
                (text(&t.loadbalancer_id), status)
            })
            .collect();
        Ok(NodeStatus {
            node_name: r.node_name,
            version: r.version,
            applied_generation: r.applied_generation,
            tables,
        })
    }

    /// Reads everything the node holds: its interfaces with what hangs off them, its
    /// load balancers (those `status` lists), the IPv4 routes of every VNI it holds plus
    /// the IPv6 routes in `ipv6`, and its neighbor-NAT entries on `nat_ips` and on the
    /// NAT IPs of its own interfaces.
    pub async fn read(
        &mut self,
        status: &NodeStatus,
        ipv6: &Ipv6Routes,
        nat_ips: &BTreeSet<Ipv4Addr>,
    ) -> Result<NodeActual, ExecError> {
        let mut actual =
            NodeActual { applied_generation: status.applied_generation, ..NodeActual::default() };
        let list = rpc("ListInterfaces", "", self.api.list_interfaces(pb::ListInterfacesRequest {}).await)?;
        outcome("ListInterfaces", "", list.status.as_ref(), &[])?;
        for m in list.interfaces {
            let id = text(&m.id);
            let config = InterfaceConfig {
                id: id.clone(),
                vni: m.vni,
                device: m.pci_name,
                ipv4: text(&m.primary_ipv4).parse().ok().filter(|a: &Ipv4Addr| !a.is_unspecified()),
                ipv6: text(&m.primary_ipv6).parse().ok().filter(|a: &Ipv6Addr| !a.is_unspecified()),
                underlay: parse_v6_text("ListInterfaces", &m.underlay_route)?,
            };
            let objects = self.read_interface(config).await?;
            actual.interfaces.insert(id, objects);
        }
        for (id, table) in &status.tables {
            let req = pb::GetLoadBalancerRequest { loadbalancer_id: id.clone().into_bytes() };
            let r = rpc("GetLoadBalancer", id, self.api.get_load_balancer(req).await)?;
            if !outcome("GetLoadBalancer", id, r.status.as_ref(), &[code::NOT_FOUND, code::NO_LB])? {
                continue; // deleted since the status call
            }
            let mut ports = r
                .loadbalanced_ports
                .iter()
                .map(|p| {
                    let protocol = match pb::Protocol::try_from(p.protocol) {
                        Ok(pb::Protocol::Tcp) => Protocol::Tcp,
                        Ok(pb::Protocol::Udp) => Protocol::Udp,
                        _ => {
                            let why = format!("protocol {} of {id}", p.protocol);
                            return Err(ExecError::BadReply { call: "GetLoadBalancer", why });
                        }
                    };
                    Ok(LbPort { protocol, port: port16("GetLoadBalancer", p.port)? })
                })
                .collect::<Result<Vec<_>, _>>()?;
            ports.sort_unstable();
            let config = LbConfig {
                id: id.clone(),
                vni: r.vni,
                vip: parse_ip("GetLoadBalancer", r.loadbalanced_ip.as_ref())?,
                ports,
                underlay: parse_v6_text("GetLoadBalancer", &r.underlay_route)?,
            };
            actual.load_balancers.insert(id.clone(), LbActual { config, table: *table });
        }
        let held: BTreeSet<u32> = actual
            .interfaces
            .values()
            .map(|i| i.config.vni)
            .chain(actual.load_balancers.values().map(|l| l.config.vni))
            .collect();
        for &vni in &held {
            let what = format!("VNI {vni}");
            let r = rpc("ListRoutes", &what, self.api.list_routes(pb::ListRoutesRequest { vni }).await)?;
            if !outcome("ListRoutes", &what, r.status.as_ref(), &[code::NO_VNI])? {
                continue;
            }
            for m in r.routes {
                let (addr, len, _) = parse_prefix("ListRoutes", m.prefix.as_ref())?;
                let IpAddr::V6(next_hop) = parse_ip("ListRoutes", m.nexthop_address.as_ref())? else {
                    return Err(ExecError::BadReply { call: "ListRoutes", why: "IPv4 next hop".into() });
                };
                let prefix = Cidr { addr, len };
                actual
                    .routes
                    .insert((vni, prefix), NodeRoute { vni, prefix, next_hop_vni: m.nexthop_vni, next_hop });
            }
        }
        for (key, r) in &ipv6.routes {
            if held.contains(&key.0) {
                actual.routes.insert(*key, *r);
            }
        }
        let own_nat_ips = actual.interfaces.values().filter_map(|i| i.nat.map(|n| n.ip));
        let ips: BTreeSet<Ipv4Addr> = nat_ips.iter().copied().chain(own_nat_ips).collect();
        for ip in ips {
            let what = ip.to_string();
            let req = pb::ListNeighborNatsRequest { nat_ip: Some(ip_message(IpAddr::V4(ip))) };
            let r = rpc("ListNeighborNats", &what, self.api.list_neighbor_nats(req).await)?;
            outcome("ListNeighborNats", &what, r.status.as_ref(), &[])?;
            for e in r.nat_entries {
                actual.neighbor_nats.insert(NeighborNat {
                    ip,
                    vni: e.vni,
                    port_min: port16("ListNeighborNats", e.min_port)?,
                    port_max: port16("ListNeighborNats", e.max_port)?,
                    underlay: parse_v6_text("ListNeighborNats", &e.underlay_route)?,
                });
            }
        }
        Ok(actual)
    }

    async fn read_interface(&mut self, config: InterfaceConfig) -> Result<InterfaceObjects, ExecError> {
        let id = config.id.clone();
        let key = id.clone().into_bytes();
        let mut o = InterfaceObjects::bare(config);
        let r = rpc("GetVip", &id, self.api.get_vip(pb::GetVipRequest { interface_id: key.clone() }).await)?;
        if outcome("GetVip", &id, r.status.as_ref(), &[code::SNAT_NO_DATA])? {
            o.vip = Some(VipConfig {
                ip: parse_v4("GetVip", r.vip_ip.as_ref())?,
                underlay: parse_v6_text("GetVip", &r.underlay_route)?,
            });
        }
        let r = rpc("GetNat", &id, self.api.get_nat(pb::GetNatRequest { interface_id: key.clone() }).await)?;
        if outcome("GetNat", &id, r.status.as_ref(), &[code::SNAT_NO_DATA])? {
            o.nat = Some(NatConfig {
                ip: parse_v4("GetNat", r.nat_ip.as_ref())?,
                port_min: port16("GetNat", r.min_port)?,
                port_max: port16("GetNat", r.max_port)?,
                underlay: parse_v6_text("GetNat", &r.underlay_route)?,
            });
        }
        let req = pb::ListFirewallRulesRequest { interface_id: key.clone() };
        let r = rpc("ListFirewallRules", &id, self.api.list_firewall_rules(req).await)?;
        outcome("ListFirewallRules", &id, r.status.as_ref(), &[])?;
        for m in &r.rules {
            let rule = rule_from_message(m)?;
            o.firewall_rules.insert(rule.id.clone(), rule);
        }
        let req = pb::ListLoadBalancerPrefixesRequest { interface_id: key.clone() };
        let r = rpc("ListLoadBalancerPrefixes", &id, self.api.list_load_balancer_prefixes(req).await)?;
        outcome("ListLoadBalancerPrefixes", &id, r.status.as_ref(), &[])?;
        for p in &r.prefixes {
            let (addr, len, underlay) = parse_prefix("ListLoadBalancerPrefixes", Some(p))?;
            let underlay = parse_v6_text("ListLoadBalancerPrefixes", &underlay)?;
            o.lb_prefixes.insert(LbPrefix { addr, len, underlay });
        }
        let r = rpc(
            "ListPrefixes",
            &id,
            self.api.list_prefixes(pb::ListPrefixesRequest { interface_id: key }).await,
        )?;
        outcome("ListPrefixes", &id, r.status.as_ref(), &[])?;
        for p in &r.prefixes {
            let (addr, len, _) = parse_prefix("ListPrefixes", Some(p))?;
            o.alias_prefixes.insert(AliasPrefix { addr, len });
        }
        Ok(o)
    }

    /// Makes the call of `action`; records successful route changes in `ipv6`.
    pub async fn apply(&mut self, action: &Action, ipv6: &mut Ipv6Routes) -> Result<(), ExecError> {
        self.call(action).await?;
        ipv6.record(action);
        Ok(())
    }

    /// Makes the call of `action` without recording anything (the caller records route
    /// changes in its [`Ipv6Routes`], as [`NodeClient::apply`] does).
    pub async fn call(&mut self, action: &Action) -> Result<(), ExecError> {
        let api = &mut self.api;
        match action {
            Action::DeleteNeighborNat(n) => {
                let what = format!("{}:[{}, {}) VNI {}", n.ip, n.port_min, n.port_max, n.vni);
                let req = pb::DeleteNeighborNatRequest {
                    nat_ip: Some(ip_message(IpAddr::V4(n.ip))),
                    vni: n.vni,
                    min_port: u32::from(n.port_min),
                    max_port: u32::from(n.port_max),
                };
                let r = rpc("DeleteNeighborNat", &what, api.delete_neighbor_nat(req).await)?;
                outcome("DeleteNeighborNat", &what, r.status.as_ref(), DELETE_GONE)?;
            }
            Action::DeleteRoute(route) => self.delete_route(route).await?,
            Action::DeleteLbPrefix { interface, prefix } => {
                let what = format!("{interface} {}/{}", prefix.addr, prefix.len);
                let req = pb::DeleteLoadBalancerPrefixRequest {
                    interface_id: interface.clone().into_bytes(),
                    prefix: Some(prefix_message(prefix.addr, prefix.len)),
                };
                let r = rpc("DeleteLoadBalancerPrefix", &what, api.delete_load_balancer_prefix(req).await)?;
                outcome("DeleteLoadBalancerPrefix", &what, r.status.as_ref(), DELETE_GONE)?;
            }
            Action::DeleteAliasPrefix { interface, prefix } => {
                let what = format!("{interface} {}/{}", prefix.addr, prefix.len);
                let req = pb::DeletePrefixRequest {
                    interface_id: interface.clone().into_bytes(),
                    prefix: Some(prefix_message(prefix.addr, prefix.len)),
                };
                let r = rpc("DeletePrefix", &what, api.delete_prefix(req).await)?;
                outcome("DeletePrefix", &what, r.status.as_ref(), DELETE_GONE)?;
            }
            Action::DeleteFirewallRule { interface, rule_id } => {
                let what = format!("{interface} {rule_id}");
                let req = pb::DeleteFirewallRuleRequest {
                    interface_id: interface.clone().into_bytes(),
                    rule_id: rule_id.clone().into_bytes(),
                };
                let r = rpc("DeleteFirewallRule", &what, api.delete_firewall_rule(req).await)?;
                outcome("DeleteFirewallRule", &what, r.status.as_ref(), DELETE_GONE)?;
            }
            Action::DeleteVip { interface } => {
                let req = pb::DeleteVipRequest { interface_id: interface.clone().into_bytes() };
                let r = rpc("DeleteVip", interface, api.delete_vip(req).await)?;
                outcome("DeleteVip", interface, r.status.as_ref(), DELETE_GONE)?;
            }
            Action::DeleteNat { interface } => {
                let req = pb::DeleteNatRequest { interface_id: interface.clone().into_bytes() };
                let r = rpc("DeleteNat", interface, api.delete_nat(req).await)?;
                outcome("DeleteNat", interface, r.status.as_ref(), DELETE_GONE)?;
            }
            Action::DeleteInterface { id } => {
                let req = pb::DeleteInterfaceRequest { interface_id: id.clone().into_bytes() };
                let r = rpc("DeleteInterface", id, api.delete_interface(req).await)?;
                outcome("DeleteInterface", id, r.status.as_ref(), DELETE_GONE)?;
            }
            Action::DeleteLoadBalancer { id } => {
                let req = pb::DeleteLoadBalancerRequest { loadbalancer_id: id.clone().into_bytes() };
                let r = rpc("DeleteLoadBalancer", id, api.delete_load_balancer(req).await)?;
                outcome("DeleteLoadBalancer", id, r.status.as_ref(), DELETE_GONE)?;
            }
            Action::CreateInterface(c) => {
                let req = pb::CreateInterfaceRequest {
                    interface_type: pb::InterfaceType::Virtual as i32,
                    interface_id: c.id.clone().into_bytes(),
                    vni: c.vni,
                    ipv4_config: Some(pb::IpConfig {
                        primary_address: c.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string().into_bytes(),
                    }),
                    ipv6_config: Some(pb::IpConfig {
                        primary_address: c.ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED).to_string().into_bytes(),
                    }),
                    pxe_config: None,
                    device_name: c.device.clone(),
                    metering_parameters: None,
                    preferred_underlay_route: c.underlay.to_string().into_bytes(),
                };
                let r = rpc("CreateInterface", &c.id, api.create_interface(req).await)?;
                outcome("CreateInterface", &c.id, r.status.as_ref(), &[])?;
            }
            Action::CreateLoadBalancer(c) => {
                let req = pb::CreateLoadBalancerRequest {
                    loadbalancer_id: c.id.clone().into_bytes(),
                    loadbalanced_ip: Some(ip_message(c.vip)),
                    vni: c.vni,
                    loadbalanced_ports: lb_ports_message(&c.ports),
                    preferred_underlay_route: c.underlay.to_string().into_bytes(),
                };
                let r = rpc("CreateLoadBalancer", &c.id, api.create_load_balancer(req).await)?;
                outcome("CreateLoadBalancer", &c.id, r.status.as_ref(), &[])?;
            }
            Action::CreateVip { interface, vip } => {
                let req = pb::CreateVipRequest {
                    interface_id: interface.clone().into_bytes(),
                    vip_ip: Some(ip_message(IpAddr::V4(vip.ip))),
                    preferred_underlay_route: vip.underlay.to_string().into_bytes(),
                };
                let what = format!("{interface} {}", vip.ip);
                let r = rpc("CreateVip", &what, api.create_vip(req).await)?;
                outcome("CreateVip", &what, r.status.as_ref(), &[])?;
            }
            Action::CreateNat { interface, nat } => {
                let req = pb::CreateNatRequest {
                    interface_id: interface.clone().into_bytes(),
                    nat_ip: Some(ip_message(IpAddr::V4(nat.ip))),
                    min_port: u32::from(nat.port_min),
                    max_port: u32::from(nat.port_max),
                    preferred_underlay_route: nat.underlay.to_string().into_bytes(),
                };
                let what = format!("{interface} {}:[{}, {})", nat.ip, nat.port_min, nat.port_max);
                let r = rpc("CreateNat", &what, api.create_nat(req).await)?;
                outcome("CreateNat", &what, r.status.as_ref(), &[])?;
            }
            Action::CreateFirewallRule { interface, rule } => {
                let req = pb::CreateFirewallRuleRequest {
                    interface_id: interface.clone().into_bytes(),
                    rule: Some(rule_message(rule)),
                };
                let what = format!("{interface} {}", rule.id);
                let r = rpc("CreateFirewallRule", &what, api.create_firewall_rule(req).await)?;
                outcome("CreateFirewallRule", &what, r.status.as_ref(), &[])?;
            }
            Action::CreateLbPrefix { interface, prefix } => {
                let req = pb::CreateLoadBalancerPrefixRequest {
                    interface_id: interface.clone().into_bytes(),
                    prefix: Some(prefix_message(prefix.addr, prefix.len)),
                    preferred_underlay_route: prefix.underlay.to_string().into_bytes(),
                };
                let what = format!("{interface} {}/{}", prefix.addr, prefix.len);
                let r = rpc("CreateLoadBalancerPrefix", &what, api.create_load_balancer_prefix(req).await)?;
                outcome("CreateLoadBalancerPrefix", &what, r.status.as_ref(), &[])?;
            }
            Action::CreateRoute(route) => {
                if let Err(e) = self.create_route(route).await {
                    // An IPv6 route the node has but cannot list (a former leader made
                    // it): replace it, as its next hop is unknown.
                    let exists = matches!(e, ExecError::Refused { code: code::ROUTE_EXISTS, .. });
                    if !(exists && route.prefix.addr.is_ipv6()) {
                        return Err(e);
                    }
                    self.delete_route(route).await?;
                    self.create_route(route).await?;
                }
            }
            Action::CreateNeighborNat(n) => {
                let what =
                    format!("{}:[{}, {}) VNI {} via {}", n.ip, n.port_min, n.port_max, n.vni, n.underlay);
                let req = pb::CreateNeighborNatRequest {
                    nat_ip: Some(ip_message(IpAddr::V4(n.ip))),
                    vni: n.vni,
                    min_port: u32::from(n.port_min),
                    max_port: u32::from(n.port_max),
                    underlay_route: n.underlay.to_string().into_bytes(),
                };
                let r = rpc("CreateNeighborNat", &what, api.create_neighbor_nat(req).await)?;
                outcome("CreateNeighborNat", &what, r.status.as_ref(), &[])?;
            }
            Action::SetLoadBalancerTable { id, table } => {
                let req = fpb::SetLoadBalancerTableRequest {
                    loadbalancer_id: id.clone().into_bytes(),
                    epoch: table.epoch,
                    table_size: table.table_size,
                    seed: table.seed,
                    targets: table
                        .targets
                        .iter()
                        .map(|t| fpb::MaglevTarget {
                            underlay_address: t.addr.octets().to_vec(),
                            weight: t.weight,
                        })
                        .collect(),
                    expected_digest: table.digest,
                };
                let what = format!("{id} epoch {}", table.epoch);
                let r = rpc("SetLoadBalancerTable", &what, self.fleet.set_load_balancer_table(req).await)?;
                if r.digest != table.digest {
                    let why =
                        format!("{id}: node built digest {:#x}, committed {:#x}", r.digest, table.digest);
                    return Err(ExecError::BadReply { call: "SetLoadBalancerTable", why });
                }
            }
            Action::SetAppliedGeneration { generation, force } => {
                let req = fpb::SetAppliedGenerationRequest { generation: *generation, force: *force };
                let what = generation.to_string();
                rpc("SetAppliedGeneration", &what, self.fleet.set_applied_generation(req).await)?;
            }
        }
        Ok(())
    }

    fn route_message(route: &NodeRoute) -> pb::Route {
        pb::Route {
            prefix: Some(prefix_message(route.prefix.addr, route.prefix.len)),
            nexthop_vni: route.next_hop_vni,
            nexthop_address: Some(ip_message(IpAddr::V6(route.next_hop))),
            weight: 0,
        }
    }

    async fn create_route(&mut self, route: &NodeRoute) -> Result<(), ExecError> {
        let what = format!("VNI {} {} via {}", route.vni, route.prefix, route.next_hop);
        let req = pb::CreateRouteRequest { vni: route.vni, route: Some(Self::route_message(route)) };
        let r = rpc("CreateRoute", &what, self.api.create_route(req).await)?;
        outcome("CreateRoute", &what, r.status.as_ref(), &[])?;
        Ok(())
    }

    async fn delete_route(&mut self, route: &NodeRoute) -> Result<(), ExecError> {
        let what = format!("VNI {} {}", route.vni, route.prefix);
        let req = pb::DeleteRouteRequest { vni: route.vni, route: Some(Self::route_message(route)) };
        let r = rpc("DeleteRoute", &what, self.api.delete_route(req).await)?;
        outcome("DeleteRoute", &what, r.status.as_ref(), DELETE_GONE)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_rules_survive_the_node_message_round_trip() {
        let base = FirewallRule {
            id: "r1".into(),
            direction: Direction::Egress,
            action: FirewallAction::Accept,
            priority: 65_535,
            source: Cidr { addr: "10.0.0.0".parse().unwrap(), len: 8 },
            destination: Cidr { addr: "2001:db8::".parse().unwrap(), len: 32 },
            protocol: None,
        };
        let range = Some(PortRange { lower: 80, upper: 443 });
        for protocol in [
            None,
            Some(ProtocolFilter::Tcp { src_ports: None, dst_ports: range }),
            Some(ProtocolFilter::Udp { src_ports: range, dst_ports: None }),
            Some(ProtocolFilter::Icmp { icmp_type: Some(8), icmp_code: None }),
            Some(ProtocolFilter::Icmp { icmp_type: None, icmp_code: None }),
        ] {
            let rule = FirewallRule { protocol, ..base.clone() };
            assert_eq!(rule_from_message(&rule_message(&rule)).unwrap(), rule);
        }
    }

    #[test]
    fn node_outcomes_become_errors_or_done() {
        let refused = pb::Status { code: 202, message: "ALREADY_EXISTS".into() };
        let e = outcome("CreateNat", "vm1", Some(&refused), &[]).unwrap_err();
        assert_eq!(e.to_string(), "CreateNat(vm1): node refused with 202 ALREADY_EXISTS");
        let gone = pb::Status { code: code::SNAT_NO_DATA, message: "SNAT_NO_DATA".into() };
        assert!(!outcome("DeleteNat", "vm1", Some(&gone), DELETE_GONE).unwrap());
        assert!(outcome("DeleteNat", "vm1", Some(&pb::Status::default()), DELETE_GONE).unwrap());
        let s = tonic::Status::invalid_argument("Invalid max_port");
        let e = rpc::<()>("CreateNat", "vm1", Err(s)).unwrap_err();
        assert_eq!(e.to_string(), "CreateNat(vm1): gRPC InvalidArgument: Invalid max_port");
    }
}
