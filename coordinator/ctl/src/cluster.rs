//! Cluster commands: from parsed arguments to one `dpfleet.cluster.v1` call
//! ([`ClusterCall`]), sent to the first coordinator member that answers, and the answer
//! as an [`Output`].
//!
//! Any member answers any call (followers forward to the leader). dpfleetctl tries the
//! `--coordinator` endpoints in order: it moves on when one cannot be reached, and also
//! when one answers UNAVAILABLE (no leader, leader unreachable), except for membership
//! changes. Writes always carry a request id (`--request-id`, else a fresh one), so
//! trying a write again on the next member cannot apply it twice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dpfleet_coordinator::client::{error_chain, uri, ClusterClient};
use dpfleet_coordinator::grpc::cluster_pb as pb;
use tonic::transport::Endpoint;
use tonic::Code;

use crate::cli::{Action, Direction, FwProto, LbProto, PortRange, PrefixArg};
use crate::cluster_cli::{
    ClusterArgs, ClusterCmd, ClusterFwAdd, ClusterFwCmd, ClusterIfaceCmd, ClusterLbCmd, ClusterNatCmd,
    ClusterNodeCmd, ClusterRouteCmd, ClusterVipCmd, ClusterVniCmd, LbTargetArg, MemberCmd, WriteArgs,
};
use crate::cluster_output::{
    digest, AllocationView, AttachView, EntryView, GatewayDetail, GatewayKey, GatewayView, IfaceView,
    LbChange, LbDetail, LbInfo, MemberView, MembershipView, NodeKey, NodeView, StatusView, TargetView,
    VipInfo, VniId, VniInfo, Written,
};
use crate::error::CtlError;
use crate::output::{
    FirewallRuleKey, FirewallRuleView, InterfaceKey, InterfaceRef, LbKey, LbPortView, Output, PortsView,
    RouteKey, RouteView,
};

/// One call of the cluster API with its request.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum ClusterCall {
    GetStatus(pb::GetStatusRequest),
    ListMembers(pb::ListMembersRequest),
    AddMember(pb::AddMemberRequest),
    RemoveMember(pb::RemoveMemberRequest),
    RegisterNode(pb::RegisterNodeRequest),
    ListNodes(pb::ListNodesRequest),
    GetNode(pb::GetNodeRequest),
    DrainNode(pb::NodeRequest),
    UndrainNode(pb::NodeRequest),
    RemoveNode(pb::NodeRequest),
    CreateVni(pb::VniRequest),
    DeleteVni(pb::VniRequest),
    ListVnis(pb::ListVnisRequest),
    CreateInterface(pb::CreateInterfaceRequest),
    GetInterface(pb::GetInterfaceRequest),
    ListInterfaces(pb::ListInterfacesRequest),
    DeleteInterface(pb::DeleteInterfaceRequest),
    AddRoute(pb::AddRouteRequest),
    DeleteRoute(pb::DeleteRouteRequest),
    ListRoutes(pb::ListRoutesRequest),
    AddFirewallRule(pb::AddFirewallRuleRequest),
    DeleteFirewallRule(pb::DeleteFirewallRuleRequest),
    ListFirewallRules(pb::ListFirewallRulesRequest),
    SetVip(pb::SetVipRequest),
    DeleteVip(pb::DeleteVipRequest),
    GetVip(pb::GetVipRequest),
    CreateNatGateway(pb::CreateNatGatewayRequest),
    DeleteNatGateway(pb::DeleteNatGatewayRequest),
    ListNatGateways(pb::ListNatGatewaysRequest),
    GetNatGateway(pb::GetNatGatewayRequest),
    AttachNat(pb::AttachNatRequest),
    DetachNat(pb::DetachNatRequest),
    CreateLb(pb::CreateLoadBalancerRequest),
    DeleteLb(pb::DeleteLoadBalancerRequest),
    ListLbs(pb::ListLoadBalancersRequest),
    GetLb(pb::GetLoadBalancerRequest),
    AddLbTarget(pb::AddLbTargetRequest),
    RemoveLbTarget(pb::RemoveLbTargetRequest),
}

/// A request id nobody else uses: the process id and the time in nanoseconds.
pub fn fresh_request_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("dpfleetctl-{}-{nanos}", std::process::id())
}

fn prefix(p: PrefixArg) -> String {
    p.to_string()
}

fn port_range(r: Option<PortRange>) -> Option<pb::PortRange> {
    match r {
        Some(PortRange::Ports { first, last }) => {
            Some(pb::PortRange { lower: u32::from(first), upper: u32::from(last) })
        }
        Some(PortRange::Any) | None => None,
    }
}

fn fw_rule(a: &ClusterFwAdd) -> Result<pb::FirewallRule, CtlError> {
    use pb::firewall_rule::Protocol as P;
    let ports_given = a.src_ports.is_some() || a.dst_ports.is_some();
    let icmp_given = a.icmp_type.is_some() || a.icmp_code.is_some();
    let protocol = match a.proto {
        FwProto::Any | FwProto::Icmp if ports_given => {
            return Err(CtlError::Usage("--src-ports/--dst-ports need --proto tcp or udp".into()));
        }
        FwProto::Tcp | FwProto::Udp | FwProto::Any if icmp_given => {
            return Err(CtlError::Usage("--icmp-type/--icmp-code need --proto icmp".into()));
        }
        FwProto::Any => None,
        FwProto::Tcp => Some(P::Tcp(pb::PortFilter {
            src_ports: port_range(a.src_ports),
            dst_ports: port_range(a.dst_ports),
        })),
        FwProto::Udp => Some(P::Udp(pb::PortFilter {
            src_ports: port_range(a.src_ports),
            dst_ports: port_range(a.dst_ports),
        })),
        FwProto::Icmp => Some(P::Icmp(pb::IcmpFilter {
            icmp_type: a.icmp_type.map(u32::from),
            icmp_code: a.icmp_code.map(u32::from),
        })),
    };
    Ok(pb::FirewallRule {
        id: a.rule_id.clone(),
        direction: match a.direction {
            Direction::Ingress => pb::FirewallDirection::Ingress,
            Direction::Egress => pb::FirewallDirection::Egress,
        }
        .into(),
        action: match a.action {
            Action::Accept => pb::FirewallAction::Accept,
            Action::Drop => pb::FirewallAction::Drop,
        }
        .into(),
        priority: a.priority,
        source: prefix(a.src),
        destination: prefix(a.dst),
        protocol,
    })
}

impl ClusterCall {
    /// The call for `args`; writes without `--request-id` get `fresh()`.
    pub fn from_args(args: &ClusterArgs, fresh: &dyn Fn() -> String) -> Result<Self, CtlError> {
        let stale_ok = args.stale;
        let rid = |w: &WriteArgs| w.request_id.clone().unwrap_or_else(fresh);
        Ok(match &args.command {
            ClusterCmd::Status => ClusterCall::GetStatus(pb::GetStatusRequest { stale_ok }),
            ClusterCmd::Member(c) => match c {
                MemberCmd::List => ClusterCall::ListMembers(pb::ListMembersRequest { stale_ok }),
                MemberCmd::Add { id, addr, learner } => ClusterCall::AddMember(pb::AddMemberRequest {
                    id: *id,
                    addr: addr.clone(),
                    learner_only: *learner,
                }),
                MemberCmd::Remove { id } => ClusterCall::RemoveMember(pb::RemoveMemberRequest { id: *id }),
            },
            ClusterCmd::Node(c) => {
                let node =
                    |id: &String, w: &WriteArgs| pb::NodeRequest { request_id: rid(w), id: id.clone() };
                match c {
                    ClusterNodeCmd::Register { id, underlay, api_endpoint, devices, write } => {
                        ClusterCall::RegisterNode(pb::RegisterNodeRequest {
                            request_id: rid(write),
                            id: id.clone(),
                            underlay: underlay.to_string(),
                            api_endpoint: api_endpoint.clone(),
                            devices: devices.clone(),
                        })
                    }
                    ClusterNodeCmd::List => ClusterCall::ListNodes(pb::ListNodesRequest { stale_ok }),
                    ClusterNodeCmd::Get { id } => {
                        ClusterCall::GetNode(pb::GetNodeRequest { id: id.clone(), stale_ok })
                    }
                    ClusterNodeCmd::Drain { id, write } => ClusterCall::DrainNode(node(id, write)),
                    ClusterNodeCmd::Undrain { id, write } => ClusterCall::UndrainNode(node(id, write)),
                    ClusterNodeCmd::Remove { id, write } => ClusterCall::RemoveNode(node(id, write)),
                }
            }
            ClusterCmd::Vni(c) => match c {
                ClusterVniCmd::Create { vni, write } => {
                    ClusterCall::CreateVni(pb::VniRequest { request_id: rid(write), vni: *vni })
                }
                ClusterVniCmd::Delete { vni, write } => {
                    ClusterCall::DeleteVni(pb::VniRequest { request_id: rid(write), vni: *vni })
                }
                ClusterVniCmd::List => ClusterCall::ListVnis(pb::ListVnisRequest { stale_ok }),
            },
            ClusterCmd::Iface(c) => match c {
                ClusterIfaceCmd::Create { id, vni, on_node, device, ipv4, ipv6, write } => {
                    ClusterCall::CreateInterface(pb::CreateInterfaceRequest {
                        request_id: rid(write),
                        id: id.clone(),
                        vni: *vni,
                        node: on_node.clone().unwrap_or_default(),
                        device: device.clone().unwrap_or_default(),
                        ipv4: ipv4.map(|a| a.to_string()).unwrap_or_default(),
                        ipv6: ipv6.map(|a| a.to_string()).unwrap_or_default(),
                    })
                }
                ClusterIfaceCmd::Get { id } => {
                    ClusterCall::GetInterface(pb::GetInterfaceRequest { id: id.clone(), stale_ok })
                }
                ClusterIfaceCmd::List { on_node, vni } => {
                    ClusterCall::ListInterfaces(pb::ListInterfacesRequest {
                        node: on_node.clone().unwrap_or_default(),
                        vni: *vni,
                        stale_ok,
                    })
                }
                ClusterIfaceCmd::Delete { id, write } => {
                    ClusterCall::DeleteInterface(pb::DeleteInterfaceRequest {
                        request_id: rid(write),
                        id: id.clone(),
                    })
                }
            },
            ClusterCmd::Route(c) => match c {
                ClusterRouteCmd::Add { vni, prefix: p, next_hop, next_hop_vni, write } => {
                    ClusterCall::AddRoute(pb::AddRouteRequest {
                        request_id: rid(write),
                        route: Some(pb::Route {
                            vni: *vni,
                            prefix: prefix(*p),
                            next_hop: next_hop.to_string(),
                            next_hop_vni: next_hop_vni.unwrap_or(*vni),
                        }),
                    })
                }
                ClusterRouteCmd::Delete { vni, prefix: p, write } => {
                    ClusterCall::DeleteRoute(pb::DeleteRouteRequest {
                        request_id: rid(write),
                        vni: *vni,
                        prefix: prefix(*p),
                    })
                }
                ClusterRouteCmd::List { vni } => {
                    ClusterCall::ListRoutes(pb::ListRoutesRequest { vni: *vni, stale_ok })
                }
            },
            ClusterCmd::Fw(c) => match c {
                ClusterFwCmd::Add(a) => ClusterCall::AddFirewallRule(pb::AddFirewallRuleRequest {
                    request_id: rid(&a.write),
                    interface: a.iface.clone(),
                    rule: Some(fw_rule(a)?),
                }),
                ClusterFwCmd::Delete { iface, rule_id, write } => {
                    ClusterCall::DeleteFirewallRule(pb::DeleteFirewallRuleRequest {
                        request_id: rid(write),
                        interface: iface.clone(),
                        rule_id: rule_id.clone(),
                    })
                }
                ClusterFwCmd::List { iface } => {
                    ClusterCall::ListFirewallRules(pb::ListFirewallRulesRequest {
                        interface: iface.clone(),
                        stale_ok,
                    })
                }
            },
            ClusterCmd::Vip(c) => match c {
                ClusterVipCmd::Set { iface, ip, write } => ClusterCall::SetVip(pb::SetVipRequest {
                    request_id: rid(write),
                    interface: iface.clone(),
                    ip: ip.to_string(),
                }),
                ClusterVipCmd::Delete { iface, write } => ClusterCall::DeleteVip(pb::DeleteVipRequest {
                    request_id: rid(write),
                    interface: iface.clone(),
                }),
                ClusterVipCmd::Get { iface } => {
                    ClusterCall::GetVip(pb::GetVipRequest { interface: iface.clone(), stale_ok })
                }
            },
            ClusterCmd::Nat(c) => match c {
                ClusterNatCmd::Create { id, vni, ips, min_port, max_port, block_size, write } => {
                    ClusterCall::CreateNatGateway(pb::CreateNatGatewayRequest {
                        request_id: rid(write),
                        id: id.clone(),
                        vni: *vni,
                        public_ips: ips.iter().map(ToString::to_string).collect(),
                        port_min: *min_port,
                        port_max: *max_port,
                        block_size: *block_size,
                    })
                }
                ClusterNatCmd::Delete { id, write } => {
                    ClusterCall::DeleteNatGateway(pb::DeleteNatGatewayRequest {
                        request_id: rid(write),
                        id: id.clone(),
                    })
                }
                ClusterNatCmd::List => ClusterCall::ListNatGateways(pb::ListNatGatewaysRequest { stale_ok }),
                ClusterNatCmd::Get { id } => {
                    ClusterCall::GetNatGateway(pb::GetNatGatewayRequest { id: id.clone(), stale_ok })
                }
                ClusterNatCmd::Attach { gateway, iface, write } => {
                    ClusterCall::AttachNat(pb::AttachNatRequest {
                        request_id: rid(write),
                        gateway: gateway.clone(),
                        interface: iface.clone(),
                    })
                }
                ClusterNatCmd::Detach { gateway, iface, write } => {
                    ClusterCall::DetachNat(pb::DetachNatRequest {
                        request_id: rid(write),
                        gateway: gateway.clone(),
                        interface: iface.clone(),
                    })
                }
            },
            ClusterCmd::Lb(c) => match c {
                ClusterLbCmd::Create { id, vni, ip, ports, table_size, write } => {
                    ClusterCall::CreateLb(pb::CreateLoadBalancerRequest {
                        request_id: rid(write),
                        id: id.clone(),
                        vni: *vni,
                        vip: ip.to_string(),
                        ports: ports
                            .iter()
                            .map(|p| pb::LbPort {
                                protocol: match p.proto {
                                    LbProto::Tcp => pb::LbProtocol::Tcp,
                                    LbProto::Udp => pb::LbProtocol::Udp,
                                }
                                .into(),
                                port: u32::from(p.port),
                            })
                            .collect(),
                        targets: vec![],
                        table_size: *table_size,
                    })
                }
                ClusterLbCmd::Delete { id, write } => ClusterCall::DeleteLb(pb::DeleteLoadBalancerRequest {
                    request_id: rid(write),
                    id: id.clone(),
                }),
                ClusterLbCmd::List => ClusterCall::ListLbs(pb::ListLoadBalancersRequest { stale_ok }),
                ClusterLbCmd::Get { id } => {
                    ClusterCall::GetLb(pb::GetLoadBalancerRequest { id: id.clone(), stale_ok })
                }
                ClusterLbCmd::AddTarget { lb, target, weight, write } => {
                    use pb::add_lb_target_request::Target;
                    let target = match target {
                        LbTargetArg { iface: Some(i), .. } => Target::Interface(i.clone()),
                        LbTargetArg { underlay: Some(u), .. } => Target::Underlay(u.to_string()),
                        _ => {
                            return Err(CtlError::Usage("name the target with --iface or --underlay".into()))
                        }
                    };
                    ClusterCall::AddLbTarget(pb::AddLbTargetRequest {
                        request_id: rid(write),
                        lb: lb.clone(),
                        target: Some(target),
                        weight: *weight,
                    })
                }
                ClusterLbCmd::RemoveTarget { lb, target, write } => {
                    use pb::remove_lb_target_request::Target;
                    let target = match target {
                        LbTargetArg { iface: Some(i), .. } => Target::Interface(i.clone()),
                        LbTargetArg { underlay: Some(u), .. } => Target::Underlay(u.to_string()),
                        _ => {
                            return Err(CtlError::Usage("name the target with --iface or --underlay".into()))
                        }
                    };
                    ClusterCall::RemoveLbTarget(pb::RemoveLbTargetRequest {
                        request_id: rid(write),
                        lb: lb.clone(),
                        target: Some(target),
                    })
                }
            },
        })
    }

    /// Whether sending the call again to another member is harmless: every read and
    /// every write with a request id; not membership changes.
    pub fn retry_safe(&self) -> bool {
        !matches!(self, ClusterCall::AddMember(_) | ClusterCall::RemoveMember(_))
    }
}

/// Sends `call` to the first of `endpoints` that answers (see the module documentation),
/// each attempt within `timeout`.
pub async fn run(endpoints: &[String], timeout: Duration, call: ClusterCall) -> Result<Output, CtlError> {
    if endpoints.is_empty() {
        return Err(CtlError::Usage("no coordinator address (--coordinator or DPFLEET_COORDINATOR)".into()));
    }
    let mut unreachable = Vec::new();
    let mut last = None;
    for addr in endpoints {
        let endpoint = Endpoint::from_shared(uri(addr))
            .map_err(|e| CtlError::Usage(format!("invalid coordinator address {addr:?}: {e}")))?
            .connect_timeout(timeout);
        let attempt = async {
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| CtlError::Connect { addr: addr.clone(), reason: error_chain(&e) })?;
            execute(&mut ClusterClient::new(channel), call.clone()).await.map_err(CtlError::Rpc)
        };
        let err = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(out)) => return Ok(out),
            Ok(Err(e)) => e,
            Err(_) => CtlError::Timeout { addr: addr.clone(), timeout },
        };
        match &err {
            CtlError::Connect { reason, .. } => unreachable.push(format!("{addr}: {reason}")),
            CtlError::Rpc(s) if s.code() == Code::Unavailable && call.retry_safe() => {}
            CtlError::Timeout { .. } if call.retry_safe() => {}
            _ => return Err(err),
        }
        last = Some(err);
    }
    match last {
        Some(CtlError::Connect { .. }) if unreachable.len() > 1 => {
            Err(CtlError::Connect { addr: endpoints.join(","), reason: unreachable.join("; ") })
        }
        Some(e) => Err(e),
        None => Err(CtlError::Usage("no coordinator address".into())),
    }
}

fn node_state(s: i32) -> String {
    match pb::NodeState::try_from(s) {
        Ok(pb::NodeState::Joining) => "joining".into(),
        Ok(pb::NodeState::Active) => "active".into(),
        Ok(pb::NodeState::Draining) => "draining".into(),
        Ok(pb::NodeState::Down) => "down".into(),
        _ => format!("unknown({s})"),
    }
}

fn member_views(members: Vec<pb::Member>) -> Vec<MemberView> {
    members
        .into_iter()
        .map(|m| MemberView {
            id: m.id,
            addr: m.addr,
            role: if m.voter { "voter" } else { "learner" },
            leader: m.leader,
            matched_index: m.matched_index,
        })
        .collect()
}

fn node_view(n: pb::Node) -> NodeView {
    NodeView {
        id: n.id,
        state: node_state(n.state),
        underlay: n.underlay,
        api_endpoint: n.api_endpoint,
        devices: n.devices,
        interfaces: n.interfaces,
        joined_generation: n.joined_generation,
        applied_generation: n.applied_generation,
    }
}

fn iface_view(i: pb::Interface) -> IfaceView {
    IfaceView {
        id: i.id,
        vni: i.vni,
        node: i.node,
        device: i.device,
        ipv4: i.ipv4,
        ipv6: i.ipv6,
        underlay: i.underlay,
        vip: i.vip.map(|v| v.ip).unwrap_or_default(),
        nat_gateway: i.nat_gateway,
        nat_ip: i.nat_block.as_ref().map(|b| b.ip.clone()).unwrap_or_default(),
        nat_port_min: i.nat_block.as_ref().map(|b| b.port_min),
        nat_port_max: i.nat_block.as_ref().map(|b| b.port_max),
        firewall_rules: i.firewall_rules,
    }
}

fn route_view(r: pb::Route) -> RouteView {
    RouteView { vni: r.vni, prefix: r.prefix, next_hop: r.next_hop, next_hop_vni: r.next_hop_vni }
}

fn ports_view(r: Option<pb::PortRange>) -> Option<PortsView> {
    r.map(|r| PortsView {
        first: i32::try_from(r.lower).unwrap_or(i32::MAX),
        last: i32::try_from(r.upper).unwrap_or(i32::MAX),
    })
}

fn fw_view(interface: &str, r: pb::FirewallRule) -> FirewallRuleView {
    use pb::firewall_rule::Protocol as P;
    let (protocol, src_ports, dst_ports, icmp_type, icmp_code) = match r.protocol {
        None => ("any", None, None, None, None),
        Some(P::Tcp(f)) => ("tcp", ports_view(f.src_ports), ports_view(f.dst_ports), None, None),
        Some(P::Udp(f)) => ("udp", ports_view(f.src_ports), ports_view(f.dst_ports), None, None),
        Some(P::Icmp(f)) => (
            "icmp",
            None,
            None,
            f.icmp_type.and_then(|t| i32::try_from(t).ok()),
            f.icmp_code.and_then(|c| i32::try_from(c).ok()),
        ),
    };
    FirewallRuleView {
        interface_id: interface.to_owned(),
        rule_id: r.id,
        direction: match pb::FirewallDirection::try_from(r.direction) {
            Ok(pb::FirewallDirection::Egress) => "egress",
            _ => "ingress",
        }
        .into(),
        action: match pb::FirewallAction::try_from(r.action) {
            Ok(pb::FirewallAction::Drop) => "drop",
            _ => "accept",
        }
        .into(),
        priority: r.priority,
        source: r.source,
        destination: r.destination,
        protocol: protocol.into(),
        src_ports,
        dst_ports,
        icmp_type,
        icmp_code,
    }
}

fn gateway_view(g: pb::NatGateway) -> GatewayView {
    GatewayView {
        id: g.id,
        vni: g.vni,
        public_ips: g.public_ips,
        port_min: g.port_min,
        port_max: g.port_max,
        block_size: g.block_size,
        blocks_used: g.blocks_used,
        blocks_total: g.blocks_total,
    }
}

fn lb_port(p: &pb::LbPort) -> LbPortView {
    let protocol = match pb::LbProtocol::try_from(p.protocol) {
        Ok(pb::LbProtocol::Tcp) => "tcp".into(),
        Ok(pb::LbProtocol::Udp) => "udp".into(),
        _ => format!("unknown({})", p.protocol),
    };
    LbPortView { protocol, port: p.port }
}

fn lb_info(lb: &pb::LoadBalancer) -> LbInfo {
    LbInfo {
        id: lb.id.clone(),
        vni: lb.vni,
        vip: lb.vip.clone(),
        ports: lb.ports.iter().map(lb_port).collect(),
        targets: u32::try_from(lb.targets.len()).unwrap_or(u32::MAX),
        table_size: lb.table_size,
        epoch: lb.epoch,
        digest: digest(lb.digest),
    }
}

fn lb_change(id: &str, r: pb::LoadBalancerWriteResponse, result: &'static str) -> Output {
    Output::one(&Written {
        result,
        object: LbChange {
            id: id.to_owned(),
            target: r.target,
            epoch: r.epoch,
            table_size: r.table_size,
            digest: digest(r.digest),
        },
        generation: r.generation,
    })
}

fn written<T: crate::output::Record>(result: &'static str, object: T, generation: u64) -> Output {
    Output::one(&Written { result, object, generation })
}

/// Sends `call` and presents the answer.
pub async fn execute(c: &mut ClusterClient, call: ClusterCall) -> Result<Output, tonic::Status> {
    Ok(match call {
        ClusterCall::GetStatus(r) => {
            let s = c.get_status(r).await?.into_inner();
            let n = s.nodes.unwrap_or_default();
            Output::fields(&StatusView {
                member_id: s.member_id,
                leader_id: s.leader_id,
                leader_addr: s.leader_addr,
                term: s.term,
                commit_index: s.commit_index,
                applied_index: s.applied_index,
                last_log_index: s.last_log_index,
                generation: s.generation,
                voters: s.voters,
                learners: s.learners,
                nodes_joining: n.joining,
                nodes_active: n.active,
                nodes_draining: n.draining,
                nodes_down: n.down,
                vnis: s.vnis,
                interfaces: s.interfaces,
                routes: s.routes,
                nat_gateways: s.nat_gateways,
                load_balancers: s.load_balancers,
            })
        }
        ClusterCall::ListMembers(r) => {
            Output::many(&member_views(c.list_members(r).await?.into_inner().members))
        }
        ClusterCall::AddMember(r) => {
            let id = r.id;
            let m = c.add_member(r).await?.into_inner();
            membership("added", id, m)
        }
        ClusterCall::RemoveMember(r) => {
            let id = r.id;
            let m = c.remove_member(r).await?.into_inner();
            membership("removed", id, m)
        }
        ClusterCall::RegisterNode(r) => {
            let id = r.id.clone();
            let w = c.register_node(r).await?.into_inner();
            written("registered", NodeKey { id }, w.generation)
        }
        ClusterCall::ListNodes(r) => {
            let nodes: Vec<NodeView> =
                c.list_nodes(r).await?.into_inner().nodes.into_iter().map(node_view).collect();
            Output::many(&nodes)
        }
        ClusterCall::GetNode(r) => {
            Output::one(&node_view(c.get_node(r).await?.into_inner().node.unwrap_or_default()))
        }
        ClusterCall::DrainNode(r) => {
            let id = r.id.clone();
            written("draining", NodeKey { id }, c.drain_node(r).await?.into_inner().generation)
        }
        ClusterCall::UndrainNode(r) => {
            let id = r.id.clone();
            written("active", NodeKey { id }, c.undrain_node(r).await?.into_inner().generation)
        }
        ClusterCall::RemoveNode(r) => {
            let id = r.id.clone();
            written("removed", NodeKey { id }, c.remove_node(r).await?.into_inner().generation)
        }
        ClusterCall::CreateVni(r) => {
            let vni = r.vni;
            written("created", VniId { vni }, c.create_vni(r).await?.into_inner().generation)
        }
        ClusterCall::DeleteVni(r) => {
            let vni = r.vni;
            written("deleted", VniId { vni }, c.delete_vni(r).await?.into_inner().generation)
        }
        ClusterCall::ListVnis(r) => {
            let vnis: Vec<VniInfo> = c
                .list_vnis(r)
                .await?
                .into_inner()
                .vnis
                .into_iter()
                .map(|v| VniInfo { vni: v.vni, interfaces: v.interfaces, routes: v.routes })
                .collect();
            Output::many(&vnis)
        }
        ClusterCall::CreateInterface(r) => {
            let w = c.create_interface(r).await?.into_inner();
            written("created", iface_view(w.interface.unwrap_or_default()), w.generation)
        }
        ClusterCall::GetInterface(r) => {
            Output::one(&iface_view(c.get_interface(r).await?.into_inner().interface.unwrap_or_default()))
        }
        ClusterCall::ListInterfaces(r) => {
            let list: Vec<IfaceView> =
                c.list_interfaces(r).await?.into_inner().interfaces.into_iter().map(iface_view).collect();
            Output::many(&list)
        }
        ClusterCall::DeleteInterface(r) => {
            let id = r.id.clone();
            written("deleted", InterfaceKey { id }, c.delete_interface(r).await?.into_inner().generation)
        }
        ClusterCall::AddRoute(r) => {
            let route = route_view(r.route.clone().unwrap_or_default());
            written("added", route, c.add_route(r).await?.into_inner().generation)
        }
        ClusterCall::DeleteRoute(r) => {
            let key = RouteKey { vni: r.vni, prefix: r.prefix.clone() };
            written("deleted", key, c.delete_route(r).await?.into_inner().generation)
        }
        ClusterCall::ListRoutes(r) => {
            let routes: Vec<RouteView> =
                c.list_routes(r).await?.into_inner().routes.into_iter().map(route_view).collect();
            Output::many(&routes)
        }
        ClusterCall::AddFirewallRule(r) => {
            let view = fw_view(&r.interface, r.rule.clone().unwrap_or_default());
            written("added", view, c.add_firewall_rule(r).await?.into_inner().generation)
        }
        ClusterCall::DeleteFirewallRule(r) => {
            let key = FirewallRuleKey { interface_id: r.interface.clone(), rule_id: r.rule_id.clone() };
            written("deleted", key, c.delete_firewall_rule(r).await?.into_inner().generation)
        }
        ClusterCall::ListFirewallRules(r) => {
            let iface = r.interface.clone();
            let rules: Vec<FirewallRuleView> = c
                .list_firewall_rules(r)
                .await?
                .into_inner()
                .rules
                .into_iter()
                .map(|x| fw_view(&iface, x))
                .collect();
            Output::many(&rules)
        }
        ClusterCall::SetVip(r) => {
            let interface_id = r.interface.clone();
            let w = c.set_vip(r).await?.into_inner();
            let vip = w.vip.unwrap_or_default();
            written("set", VipInfo { interface_id, ip: vip.ip, underlay: vip.underlay }, w.generation)
        }
        ClusterCall::DeleteVip(r) => {
            let key = InterfaceRef { interface_id: r.interface.clone() };
            written("deleted", key, c.delete_vip(r).await?.into_inner().generation)
        }
        ClusterCall::GetVip(r) => {
            let interface_id = r.interface.clone();
            let vip = c.get_vip(r).await?.into_inner().vip.unwrap_or_default();
            Output::one(&VipInfo { interface_id, ip: vip.ip, underlay: vip.underlay })
        }
        ClusterCall::CreateNatGateway(r) => {
            let view = GatewayView {
                id: r.id.clone(),
                vni: r.vni,
                public_ips: r.public_ips.clone(),
                port_min: r.port_min,
                port_max: r.port_max,
                block_size: r.block_size,
                blocks_used: 0,
                blocks_total: u64::from(r.port_max.saturating_sub(r.port_min) / r.block_size.max(1))
                    * r.public_ips.len() as u64,
            };
            written("created", view, c.create_nat_gateway(r).await?.into_inner().generation)
        }
        ClusterCall::DeleteNatGateway(r) => {
            let key = GatewayKey { id: r.id.clone() };
            written("deleted", key, c.delete_nat_gateway(r).await?.into_inner().generation)
        }
        ClusterCall::ListNatGateways(r) => {
            let list: Vec<GatewayView> =
                c.list_nat_gateways(r).await?.into_inner().gateways.into_iter().map(gateway_view).collect();
            Output::many(&list)
        }
        ClusterCall::GetNatGateway(r) => {
            let g = c.get_nat_gateway(r).await?.into_inner();
            let gateway = gateway_view(g.gateway.unwrap_or_default());
            let allocations: Vec<AllocationView> = g
                .allocations
                .into_iter()
                .map(|a| {
                    let b = a.block.unwrap_or_default();
                    AllocationView {
                        interface_id: a.interface,
                        ip: b.ip,
                        port_min: b.port_min,
                        port_max: b.port_max,
                        node: a.node,
                        underlay: a.underlay,
                    }
                })
                .collect();
            Output::one(&gateway)
                .and_table(Output::many(&allocations))
                .with_json(&GatewayDetail { gateway: &gateway, allocations: &allocations })
        }
        ClusterCall::AttachNat(r) => {
            let (gateway, interface_id) = (r.gateway.clone(), r.interface.clone());
            let w = c.attach_nat(r).await?.into_inner();
            let b = w.block.unwrap_or_default();
            let view = AttachView {
                gateway,
                interface_id,
                ip: b.ip,
                port_min: Some(b.port_min),
                port_max: Some(b.port_max),
                underlay: w.underlay,
            };
            written("attached", view, w.generation)
        }
        ClusterCall::DetachNat(r) => {
            let view = AttachView {
                gateway: r.gateway.clone(),
                interface_id: r.interface.clone(),
                ip: String::new(),
                port_min: None,
                port_max: None,
                underlay: String::new(),
            };
            written("detached", view, c.detach_nat(r).await?.into_inner().generation)
        }
        ClusterCall::CreateLb(r) => {
            let id = r.id.clone();
            lb_change(&id, c.create_load_balancer(r).await?.into_inner(), "created")
        }
        ClusterCall::DeleteLb(r) => {
            let key = LbKey { id: r.id.clone() };
            written("deleted", key, c.delete_load_balancer(r).await?.into_inner().generation)
        }
        ClusterCall::ListLbs(r) => {
            let list: Vec<LbInfo> =
                c.list_load_balancers(r).await?.into_inner().load_balancers.iter().map(lb_info).collect();
            Output::many(&list)
        }
        ClusterCall::GetLb(r) => {
            let lb = c.get_load_balancer(r).await?.into_inner().load_balancer.unwrap_or_default();
            let info = lb_info(&lb);
            let targets: Vec<TargetView> = lb
                .targets
                .iter()
                .map(|t| TargetView {
                    underlay: t.underlay.clone(),
                    weight: t.weight,
                    interface_id: t.interface.clone(),
                })
                .collect();
            let entries: Vec<EntryView> = lb
                .node_underlays
                .iter()
                .map(|e| EntryView { node: e.node.clone(), underlay: e.underlay.clone() })
                .collect();
            Output::one(&info).and_table(Output::many(&targets)).and_table(Output::many(&entries)).with_json(
                &LbDetail {
                    lb: &info,
                    seed: lb.seed,
                    table_size_fixed: lb.table_size_fixed,
                    target_list: &targets,
                    node_underlays: &entries,
                },
            )
        }
        ClusterCall::AddLbTarget(r) => {
            let id = r.lb.clone();
            lb_change(&id, c.add_lb_target(r).await?.into_inner(), "added")
        }
        ClusterCall::RemoveLbTarget(r) => {
            let id = r.lb.clone();
            lb_change(&id, c.remove_lb_target(r).await?.into_inner(), "removed")
        }
    })
}

fn membership(result: &'static str, id: u64, m: pb::MembershipResponse) -> Output {
    let members = member_views(m.members);
    let table = Output::many(&members);
    table.with_json(&MembershipView { result, id, log_index: m.log_index, generation: m.generation, members })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn call(args: &[&str]) -> Result<ClusterCall, CtlError> {
        let cli = Cli::try_parse_from(std::iter::once("dpfleetctl").chain(args.iter().copied())).unwrap();
        let Command::Cluster(c) = &cli.command else { panic!("not a cluster command") };
        ClusterCall::from_args(c, &|| "fresh".to_string())
    }

    #[test]
    fn writes_carry_a_request_id() {
        assert_eq!(
            call(&["cluster", "vni", "create", "100"]).unwrap(),
            ClusterCall::CreateVni(pb::VniRequest { request_id: "fresh".into(), vni: 100 })
        );
        assert_eq!(
            call(&["cluster", "vni", "delete", "100", "--request-id", "r1"]).unwrap(),
            ClusterCall::DeleteVni(pb::VniRequest { request_id: "r1".into(), vni: 100 })
        );
    }

    #[test]
    fn interface_and_route_requests() {
        assert_eq!(
            call(&["cluster", "iface", "create", "--id", "vm1", "--vni", "7", "--ipv4", "10.0.0.1"]).unwrap(),
            ClusterCall::CreateInterface(pb::CreateInterfaceRequest {
                request_id: "fresh".into(),
                id: "vm1".into(),
                vni: 7,
                node: String::new(),
                device: String::new(),
                ipv4: "10.0.0.1".into(),
                ipv6: String::new(),
            })
        );
        let ClusterCall::AddRoute(r) = call(&[
            "cluster",
            "route",
            "add",
            "--vni",
            "7",
            "--prefix",
            "10.1.0.0/16",
            "--next-hop",
            "fc00::1",
        ])
        .unwrap() else {
            panic!("wrong call")
        };
        assert_eq!(r.route.unwrap().next_hop_vni, 7);
        let ClusterCall::ListInterfaces(r) =
            call(&["cluster", "--stale", "iface", "list", "--vni", "7", "--on-node", "n1"]).unwrap()
        else {
            panic!("wrong call")
        };
        assert_eq!((r.vni, r.stale_ok, r.node.as_str()), (Some(7), true, "n1"));
        // --on-node, not the global --node (the node API address).
        let ClusterCall::CreateInterface(r) = call(&[
            "cluster",
            "iface",
            "create",
            "--id",
            "a",
            "--vni",
            "1",
            "--ipv6",
            "fd00::1",
            "--on-node",
            "n2",
        ])
        .unwrap() else {
            panic!("wrong call")
        };
        assert_eq!((r.node.as_str(), r.ipv4.as_str()), ("n2", ""));
    }

    #[test]
    fn firewall_and_lb_targets() {
        let ClusterCall::AddFirewallRule(r) = call(&[
            "cluster",
            "fw",
            "add",
            "--iface",
            "vm1",
            "--rule-id",
            "web",
            "--proto",
            "tcp",
            "--dst-ports",
            "80-443",
        ])
        .unwrap() else {
            panic!("wrong call")
        };
        assert_eq!(
            r.rule.unwrap().protocol,
            Some(pb::firewall_rule::Protocol::Tcp(pb::PortFilter {
                src_ports: None,
                dst_ports: Some(pb::PortRange { lower: 80, upper: 443 }),
            }))
        );
        assert!(
            call(&["cluster", "fw", "add", "--iface", "vm1", "--rule-id", "x", "--dst-ports", "80"]).is_err()
        );
        let ClusterCall::AddLbTarget(r) =
            call(&["cluster", "lb", "add-target", "--lb", "web", "--iface", "vm1", "--weight", "3"]).unwrap()
        else {
            panic!("wrong call")
        };
        assert_eq!(r.target, Some(pb::add_lb_target_request::Target::Interface("vm1".into())));
        assert_eq!(r.weight, 3);
        // Exactly one of --iface and --underlay.
        let both = [
            "dpfleetctl",
            "cluster",
            "lb",
            "add-target",
            "--lb",
            "w",
            "--iface",
            "a",
            "--underlay",
            "fd00::1",
        ];
        assert!(Cli::try_parse_from(both).is_err());
        assert!(Cli::try_parse_from(["dpfleetctl", "cluster", "lb", "add-target", "--lb", "w"]).is_err());
    }

    #[test]
    fn membership_changes_are_not_retried() {
        assert!(!call(&["cluster", "member", "remove", "4"]).unwrap().retry_safe());
        assert!(call(&["cluster", "status"]).unwrap().retry_safe());
    }
}
