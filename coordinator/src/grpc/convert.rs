//! Between the cluster API's protobuf messages and the fleet state's types, both ways.
//!
//! Pure functions, no I/O: a request becomes a [`Command`] (or an [`InvalidRequest`]
//! naming the bad field, which the service answers with INVALID_ARGUMENT before anything
//! reaches Raft), and state objects become answer messages. Only form is checked here
//! (an address parses, a number fits its type, an enum is set); whether the state accepts
//! the command is [`FleetState::apply`]'s business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cluster_pb as pb;
use crate::state::{
    Cidr, Command, Direction, FirewallAction, FirewallRule, FleetState, Interface, InterfaceSpec, LbPort,
    LbTarget, LoadBalancer, LoadBalancerSpec, NatBlock, NatGateway, NatGatewaySpec, Node, NodeState, Op,
    PortRange, Protocol, ProtocolFilter, Route, Vip,
};

/// A request whose form is wrong: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidRequest {
    /// The field, as named in the `.proto` (`route.prefix`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> InvalidRequest {
    InvalidRequest { field: field.to_owned(), reason: reason.into() }
}

type Result<T> = std::result::Result<T, InvalidRequest>;

/// The request id of a write: empty means none.
pub fn request_id(id: &str) -> Option<String> {
    non_empty(id)
}

/// An optional text field: empty means none.
pub fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn command(request_id_field: &str, op: Op) -> Command {
    Command { request_id: request_id(request_id_field), op }
}

/// A name field that must not be empty.
pub fn name(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Ok(value.to_owned())
}

/// An IPv4 address in dotted form.
pub fn ipv4(field: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| invalid(field, format!("{s:?} is not an IPv4 address")))
}

/// An IPv6 address.
pub fn ipv6(field: &str, s: &str) -> Result<Ipv6Addr> {
    s.parse().map_err(|_| invalid(field, format!("{s:?} is not an IPv6 address")))
}

/// An IPv4 or IPv6 address.
pub fn ip(field: &str, s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| invalid(field, format!("{s:?} is not an IP address")))
}

fn opt<T>(s: &str, f: impl FnOnce(&str) -> Result<T>) -> Result<Option<T>> {
    if s.is_empty() {
        Ok(None)
    } else {
        f(s).map(Some)
    }
}

/// A prefix `ADDRESS/LENGTH` without host bits.
pub fn cidr(field: &str, s: &str) -> Result<Cidr> {
    let bad = || invalid(field, format!("{s:?} is not a prefix ADDRESS/LENGTH"));
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    if len.is_empty() || !len.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let len: u8 = len.parse().map_err(|_| bad())?;
    Cidr::new(addr, len).map_err(|e| invalid(field, e.to_string()))
}

fn u16_of(field: &str, v: u32) -> Result<u16> {
    u16::try_from(v).map_err(|_| invalid(field, format!("{v} is above 65535")))
}

fn u8_of(field: &str, v: u32) -> Result<u8> {
    u8::try_from(v).map_err(|_| invalid(field, format!("{v} is above 255")))
}

/// A weight: 0 (the protobuf default) means 1.
fn weight(w: u32) -> u32 {
    w.max(1)
}

// ---- requests to commands ----

/// `RegisterNode`.
pub fn register_node(r: pb::RegisterNodeRequest) -> Result<Command> {
    let op = Op::RegisterNode {
        id: name("id", &r.id)?,
        underlay: ipv6("underlay", &r.underlay)?,
        api_endpoint: name("api_endpoint", &r.api_endpoint)?,
        devices: r.devices,
    };
    Ok(command(&r.request_id, op))
}

/// `DrainNode`, `UndrainNode`: a node moved to `state`.
pub fn set_node_state(r: pb::NodeRequest, state: NodeState) -> Result<Command> {
    Ok(command(&r.request_id, Op::SetNodeState { id: name("id", &r.id)?, state }))
}

/// `RemoveNode`.
pub fn remove_node(r: pb::NodeRequest) -> Result<Command> {
    Ok(command(&r.request_id, Op::RemoveNode { id: name("id", &r.id)? }))
}

/// `CreateVni`.
pub fn create_vni(r: &pb::VniRequest) -> Command {
    command(&r.request_id, Op::CreateVni { vni: r.vni })
}

/// `DeleteVni`.
pub fn delete_vni(r: &pb::VniRequest) -> Command {
    command(&r.request_id, Op::DeleteVni { vni: r.vni })
}

/// `CreateInterface`.
pub fn create_interface(r: pb::CreateInterfaceRequest) -> Result<Command> {
    let spec = InterfaceSpec {
        id: name("id", &r.id)?,
        vni: r.vni,
        node: non_empty(&r.node),
        device: non_empty(&r.device),
        ipv4: opt(&r.ipv4, |s| ipv4("ipv4", s))?,
        ipv6: opt(&r.ipv6, |s| ipv6("ipv6", s))?,
    };
    if spec.ipv4.is_none() && spec.ipv6.is_none() {
        return Err(invalid("ipv4", "an interface needs an IPv4 or an IPv6 address"));
    }
    Ok(command(&r.request_id, Op::CreateInterface(spec)))
}

/// `DeleteInterface`.
pub fn delete_interface(r: pb::DeleteInterfaceRequest) -> Result<Command> {
    Ok(command(&r.request_id, Op::DeleteInterface { id: name("id", &r.id)? }))
}

/// `AddRoute`.
pub fn add_route(r: pb::AddRouteRequest) -> Result<Command> {
    let route = r.route.ok_or_else(|| invalid("route", "missing"))?;
    let op = Op::AddRoute(Route {
        vni: route.vni,
        prefix: cidr("route.prefix", &route.prefix)?,
        next_hop_vni: route.next_hop_vni,
        next_hop: ipv6("route.next_hop", &route.next_hop)?,
    });
    Ok(command(&r.request_id, op))
}

/// `DeleteRoute`.
pub fn delete_route(r: &pb::DeleteRouteRequest) -> Result<Command> {
    let op = Op::DeleteRoute { vni: r.vni, prefix: cidr("prefix", &r.prefix)? };
    Ok(command(&r.request_id, op))
}

fn port_range(field: &str, r: Option<pb::PortRange>) -> Result<Option<PortRange>> {
    r.map(|r| {
        Ok(PortRange {
            lower: u16_of(&format!("{field}.lower"), r.lower)?,
            upper: u16_of(&format!("{field}.upper"), r.upper)?,
        })
    })
    .transpose()
}

fn firewall_rule(r: pb::FirewallRule) -> Result<FirewallRule> {
    use pb::firewall_rule::Protocol as P;
    let direction = match pb::FirewallDirection::try_from(r.direction) {
        Ok(pb::FirewallDirection::Ingress) => Direction::Ingress,
        Ok(pb::FirewallDirection::Egress) => Direction::Egress,
        _ => return Err(invalid("rule.direction", "must be INGRESS or EGRESS")),
    };
    let action = match pb::FirewallAction::try_from(r.action) {
        Ok(pb::FirewallAction::Accept) => FirewallAction::Accept,
        Ok(pb::FirewallAction::Drop) => FirewallAction::Drop,
        _ => return Err(invalid("rule.action", "must be ACCEPT or DROP")),
    };
    let protocol = match r.protocol {
        None => None,
        Some(P::Tcp(f)) => Some(ProtocolFilter::Tcp {
            src_ports: port_range("rule.tcp.src_ports", f.src_ports)?,
            dst_ports: port_range("rule.tcp.dst_ports", f.dst_ports)?,
        }),
        Some(P::Udp(f)) => Some(ProtocolFilter::Udp {
            src_ports: port_range("rule.udp.src_ports", f.src_ports)?,
            dst_ports: port_range("rule.udp.dst_ports", f.dst_ports)?,
        }),
        Some(P::Icmp(f)) => Some(ProtocolFilter::Icmp {
            icmp_type: f.icmp_type.map(|t| u8_of("rule.icmp.icmp_type", t)).transpose()?,
            icmp_code: f.icmp_code.map(|c| u8_of("rule.icmp.icmp_code", c)).transpose()?,
        }),
    };
    Ok(FirewallRule {
        id: name("rule.id", &r.id)?,
        direction,
        action,
        priority: r.priority,
        source: cidr("rule.source", &r.source)?,
        destination: cidr("rule.destination", &r.destination)?,
        protocol,
    })
}

/// `AddFirewallRule`.
pub fn add_firewall_rule(r: pb::AddFirewallRuleRequest) -> Result<Command> {
    let rule = firewall_rule(r.rule.ok_or_else(|| invalid("rule", "missing"))?)?;
    let op = Op::AddFirewallRule { interface: name("interface", &r.interface)?, rule };
    Ok(command(&r.request_id, op))
}

/// `DeleteFirewallRule`.
pub fn delete_firewall_rule(r: pb::DeleteFirewallRuleRequest) -> Result<Command> {
    let op = Op::DeleteFirewallRule {
        interface: name("interface", &r.interface)?,
        rule_id: name("rule_id", &r.rule_id)?,
    };
    Ok(command(&r.request_id, op))
}

/// `SetVip`.
pub fn set_vip(r: &pb::SetVipRequest) -> Result<Command> {
    let op = Op::SetVip { interface: name("interface", &r.interface)?, ip: ipv4("ip", &r.ip)? };
    Ok(command(&r.request_id, op))
}

/// `DeleteVip`.
pub fn delete_vip(r: pb::DeleteVipRequest) -> Result<Command> {
    Ok(command(&r.request_id, Op::DeleteVip { interface: name("interface", &r.interface)? }))
}

/// `CreateNatGateway`.
pub fn create_nat_gateway(r: pb::CreateNatGatewayRequest) -> Result<Command> {
    let public_ips = r
        .public_ips
        .iter()
        .enumerate()
        .map(|(i, s)| ipv4(&format!("public_ips[{i}]"), s))
        .collect::<Result<Vec<_>>>()?;
    let spec = NatGatewaySpec {
        id: name("id", &r.id)?,
        vni: r.vni,
        public_ips,
        port_min: r.port_min,
        port_max: r.port_max,
        block_size: r.block_size,
    };
    Ok(command(&r.request_id, Op::CreateNatGateway(spec)))
}

/// `DeleteNatGateway`.
pub fn delete_nat_gateway(r: pb::DeleteNatGatewayRequest) -> Result<Command> {
    Ok(command(&r.request_id, Op::DeleteNatGateway { id: name("id", &r.id)? }))
}

/// `AttachNat`.
pub fn attach_nat(r: pb::AttachNatRequest) -> Result<Command> {
    let op =
        Op::AttachNat { gateway: name("gateway", &r.gateway)?, interface: name("interface", &r.interface)? };
    Ok(command(&r.request_id, op))
}

/// `DetachNat`.
pub fn detach_nat(r: pb::DetachNatRequest) -> Result<Command> {
    let op =
        Op::DetachNat { gateway: name("gateway", &r.gateway)?, interface: name("interface", &r.interface)? };
    Ok(command(&r.request_id, op))
}

fn lb_port(i: usize, p: &pb::LbPort) -> Result<LbPort> {
    let protocol = match pb::LbProtocol::try_from(p.protocol) {
        Ok(pb::LbProtocol::Tcp) => Protocol::Tcp,
        Ok(pb::LbProtocol::Udp) => Protocol::Udp,
        _ => return Err(invalid(&format!("ports[{i}].protocol"), "must be TCP or UDP")),
    };
    Ok(LbPort { protocol, port: u16_of(&format!("ports[{i}].port"), p.port)? })
}

/// `CreateLoadBalancer`. Initial targets are raw underlay addresses.
pub fn create_load_balancer(r: pb::CreateLoadBalancerRequest) -> Result<Command> {
    let ports = r.ports.iter().enumerate().map(|(i, p)| lb_port(i, p)).collect::<Result<Vec<_>>>()?;
    let targets = r
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if !t.interface.is_empty() {
                return Err(invalid(
                    &format!("targets[{i}].interface"),
                    "initial targets are underlay addresses; add interfaces with AddLbTarget",
                ));
            }
            Ok(LbTarget {
                addr: ipv6(&format!("targets[{i}].underlay"), &t.underlay)?,
                weight: weight(t.weight),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = LoadBalancerSpec {
        id: name("id", &r.id)?,
        vni: r.vni,
        vip: ip("vip", &r.vip)?,
        ports,
        targets,
        table_size: r.table_size,
    };
    Ok(command(&r.request_id, Op::CreateLoadBalancer(spec)))
}

/// `DeleteLoadBalancer`.
pub fn delete_load_balancer(r: pb::DeleteLoadBalancerRequest) -> Result<Command> {
    Ok(command(&r.request_id, Op::DeleteLoadBalancer { id: name("id", &r.id)? }))
}

/// `AddLbTarget`.
pub fn add_lb_target(r: pb::AddLbTargetRequest) -> Result<Command> {
    use pb::add_lb_target_request::Target;
    let lb = name("lb", &r.lb)?;
    let op = match r.target {
        Some(Target::Interface(i)) => {
            Op::AddLbInterfaceTarget { lb, interface: name("interface", &i)?, weight: weight(r.weight) }
        }
        Some(Target::Underlay(a)) => {
            Op::AddLbTarget { lb, target: LbTarget { addr: ipv6("underlay", &a)?, weight: weight(r.weight) } }
        }
        None => return Err(invalid("target", "name an interface or an underlay address")),
    };
    Ok(command(&r.request_id, op))
}

/// `RemoveLbTarget`. A target named by its interface is resolved to its underlay address
/// in `state` (the leader's, where the write goes).
pub fn remove_lb_target(
    r: pb::RemoveLbTargetRequest,
    state: &FleetState,
) -> std::result::Result<Command, RemoveTargetError> {
    use pb::remove_lb_target_request::Target;
    let lb = name("lb", &r.lb)?;
    let addr = match r.target {
        Some(Target::Underlay(a)) => ipv6("underlay", &a)?,
        Some(Target::Interface(i)) => {
            let i = name("interface", &i)?;
            let balancer =
                state.load_balancers().get(&lb).ok_or_else(|| RemoveTargetError::UnknownLb(lb.clone()))?;
            *balancer
                .interface_targets
                .get(&i)
                .ok_or_else(|| RemoveTargetError::NotATarget { lb: lb.clone(), interface: i })?
        }
        None => return Err(invalid("target", "name an interface or an underlay address").into()),
    };
    Ok(command(&r.request_id, Op::RemoveLbTarget { lb, addr }))
}

/// Why a `RemoveLbTarget` by interface could not become a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoveTargetError {
    /// Malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// No such load balancer.
    #[error("unknown load balancer {0}")]
    UnknownLb(String),
    /// The interface is not a target of the load balancer.
    #[error("interface {interface} is not a target of load balancer {lb}")]
    NotATarget {
        /// The load balancer.
        lb: String,
        /// The interface.
        interface: String,
    },
}

// ---- state to answers ----

/// A node state in the API.
pub fn node_state(s: NodeState) -> pb::NodeState {
    match s {
        NodeState::Joining => pb::NodeState::Joining,
        NodeState::Active => pb::NodeState::Active,
        NodeState::Draining => pb::NodeState::Draining,
        NodeState::Down => pb::NodeState::Down,
    }
}

/// A node as the API shows it.
pub fn node(state: &FleetState, n: &Node) -> pb::Node {
    let interfaces = state.interfaces().values().filter(|i| i.node == n.id).count();
    pb::Node {
        id: n.id.clone(),
        underlay: n.underlay.to_string(),
        api_endpoint: n.api_endpoint.clone(),
        state: node_state(n.state).into(),
        devices: n.devices.clone(),
        joined_generation: n.joined_generation,
        interfaces: count(interfaces),
        // Not in the state: the cluster API fills it in from gossip.
        applied_generation: 0,
    }
}

/// A count as a `uint32`, saturating (the state never holds 4 billion objects).
pub fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn text<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// A VIP.
pub fn vip(v: &Vip) -> pb::Vip {
    pb::Vip { ip: v.ip.to_string(), underlay: v.underlay.to_string() }
}

/// A NAT block.
pub fn nat_block(b: &NatBlock) -> pb::NatBlock {
    pb::NatBlock { ip: b.ip.to_string(), port_min: b.port_min, port_max: b.port_max }
}

/// An interface with its NAT attachment (looked up in `state`).
pub fn interface(state: &FleetState, i: &Interface) -> pb::Interface {
    let nat =
        state.nat_gateways().values().find_map(|g| g.allocation(&i.id).map(|b| (g.spec().id.clone(), b)));
    pb::Interface {
        id: i.id.clone(),
        vni: i.vni,
        node: i.node.clone(),
        device: i.device.clone(),
        ipv4: text(i.ipv4),
        ipv6: text(i.ipv6),
        underlay: i.underlay.to_string(),
        vip: i.vip.as_ref().map(vip),
        nat_gateway: nat.as_ref().map(|(g, _)| g.clone()).unwrap_or_default(),
        nat_block: nat.as_ref().map(|(_, b)| nat_block(b)),
        nat_underlay: text(i.nat_underlay),
        firewall_rules: count(i.firewall_rules.len()),
    }
}

/// A route.
pub fn route(r: &Route) -> pb::Route {
    pb::Route {
        vni: r.vni,
        prefix: r.prefix.to_string(),
        next_hop: r.next_hop.to_string(),
        next_hop_vni: r.next_hop_vni,
    }
}

fn pb_port_range(r: Option<PortRange>) -> Option<pb::PortRange> {
    r.map(|r| pb::PortRange { lower: u32::from(r.lower), upper: u32::from(r.upper) })
}

/// A firewall rule.
pub fn firewall_rule_view(r: &FirewallRule) -> pb::FirewallRule {
    use pb::firewall_rule::Protocol as P;
    pb::FirewallRule {
        id: r.id.clone(),
        direction: match r.direction {
            Direction::Ingress => pb::FirewallDirection::Ingress,
            Direction::Egress => pb::FirewallDirection::Egress,
        }
        .into(),
        action: match r.action {
            FirewallAction::Accept => pb::FirewallAction::Accept,
            FirewallAction::Drop => pb::FirewallAction::Drop,
        }
        .into(),
        priority: r.priority,
        source: r.source.to_string(),
        destination: r.destination.to_string(),
        protocol: r.protocol.map(|p| match p {
            ProtocolFilter::Tcp { src_ports, dst_ports } => P::Tcp(pb::PortFilter {
                src_ports: pb_port_range(src_ports),
                dst_ports: pb_port_range(dst_ports),
            }),
            ProtocolFilter::Udp { src_ports, dst_ports } => P::Udp(pb::PortFilter {
                src_ports: pb_port_range(src_ports),
                dst_ports: pb_port_range(dst_ports),
            }),
            ProtocolFilter::Icmp { icmp_type, icmp_code } => P::Icmp(pb::IcmpFilter {
                icmp_type: icmp_type.map(u32::from),
                icmp_code: icmp_code.map(u32::from),
            }),
        }),
    }
}

/// An interface's firewall rules, by priority then id.
pub fn firewall_rules(i: &Interface) -> Vec<pb::FirewallRule> {
    let mut rules: Vec<&FirewallRule> = i.firewall_rules.values().collect();
    rules.sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
    rules.into_iter().map(firewall_rule_view).collect()
}

/// A NAT gateway with its usage.
pub fn nat_gateway(g: &NatGateway) -> pb::NatGateway {
    let s = g.spec();
    let (used, total) = g.usage();
    pb::NatGateway {
        id: s.id.clone(),
        vni: s.vni,
        public_ips: s.public_ips.iter().map(Ipv4Addr::to_string).collect(),
        port_min: s.port_min,
        port_max: s.port_max,
        block_size: s.block_size,
        blocks_used: used,
        blocks_total: total,
    }
}

/// A gateway's allocations, with each interface's node and NAT underlay address.
pub fn nat_allocations(state: &FleetState, g: &NatGateway) -> Vec<pb::NatAllocation> {
    g.allocations()
        .map(|(iface, block)| {
            let i = state.interfaces().get(iface);
            pb::NatAllocation {
                interface: iface.to_owned(),
                block: Some(nat_block(&block)),
                node: i.map(|i| i.node.clone()).unwrap_or_default(),
                underlay: text(i.and_then(|i| i.nat_underlay)),
            }
        })
        .collect()
}

/// A load balancer with its targets, table and per-node entry points.
pub fn load_balancer(lb: &LoadBalancer) -> pb::LoadBalancer {
    let target_iface =
        |addr: Ipv6Addr| lb.interface_targets.iter().find(|(_, a)| **a == addr).map(|(i, _)| i.clone());
    pb::LoadBalancer {
        id: lb.id.clone(),
        vni: lb.vni,
        vip: lb.vip.to_string(),
        ports: lb
            .ports
            .iter()
            .map(|p| pb::LbPort {
                protocol: match p.protocol {
                    Protocol::Tcp => pb::LbProtocol::Tcp,
                    Protocol::Udp => pb::LbProtocol::Udp,
                }
                .into(),
                port: u32::from(p.port),
            })
            .collect(),
        targets: lb
            .targets
            .iter()
            .map(|t| pb::LbTarget {
                underlay: t.addr.to_string(),
                weight: t.weight,
                interface: target_iface(t.addr).unwrap_or_default(),
            })
            .collect(),
        table_size: lb.table_size,
        table_size_fixed: lb.size_fixed,
        seed: lb.seed,
        epoch: lb.epoch,
        digest: lb.table.map(|t| t.digest),
        node_underlays: lb
            .node_underlays
            .iter()
            .map(|(n, a)| pb::NodeUnderlay { node: n.clone(), underlay: a.to_string() })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_prefixes() {
        assert_eq!(ipv4("ip", "10.0.0.1"), Ok(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(ipv4("ip", "fd00::1").unwrap_err().field, "ip");
        assert!(ipv6("u", "10.0.0.1").is_err());
        assert!(ip("v", "").is_err());
        assert_eq!(cidr("p", "10.1.0.0/16").unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(cidr("p", "fd00::/64").unwrap().to_string(), "fd00::/64");
        for bad in ["10.1.0.1/16", "10.0.0.0/33", "fd00::/129", "10.0.0.0", "10.0.0.0/", "10.0.0.0/+8", "x/8"]
        {
            let e = cidr("route.prefix", bad).unwrap_err();
            assert_eq!(e.field, "route.prefix", "{bad}");
        }
        assert_eq!(request_id(""), None);
        assert_eq!(request_id("r1"), Some("r1".into()));
    }

    #[test]
    fn create_interface_request() {
        let req = pb::CreateInterfaceRequest {
            request_id: "r".into(),
            id: "vm1".into(),
            vni: 100,
            node: String::new(),
            device: "tap1".into(),
            ipv4: "10.0.0.5".into(),
            ipv6: String::new(),
        };
        let cmd = create_interface(req.clone()).unwrap();
        assert_eq!(cmd.request_id.as_deref(), Some("r"));
        assert_eq!(
            cmd.op,
            Op::CreateInterface(InterfaceSpec {
                id: "vm1".into(),
                vni: 100,
                node: None,
                device: Some("tap1".into()),
                ipv4: Some(Ipv4Addr::new(10, 0, 0, 5)),
                ipv6: None,
            })
        );
        let e = create_interface(pb::CreateInterfaceRequest { ipv4: "10.0.0.256".into(), ..req.clone() });
        assert_eq!(e.unwrap_err().field, "ipv4");
        let e = create_interface(pb::CreateInterfaceRequest { ipv4: String::new(), ..req.clone() });
        assert!(e.is_err());
        let e = create_interface(pb::CreateInterfaceRequest { id: String::new(), ..req });
        assert_eq!(e.unwrap_err().field, "id");
    }

    fn rule() -> pb::FirewallRule {
        pb::FirewallRule {
            id: "web".into(),
            direction: pb::FirewallDirection::Ingress.into(),
            action: pb::FirewallAction::Accept.into(),
            priority: 10,
            source: "0.0.0.0/0".into(),
            destination: "10.0.0.0/24".into(),
            protocol: Some(pb::firewall_rule::Protocol::Tcp(pb::PortFilter {
                src_ports: None,
                dst_ports: Some(pb::PortRange { lower: 80, upper: 443 }),
            })),
        }
    }

    #[test]
    fn firewall_rules_round_trip() {
        let state_rule = firewall_rule(rule()).unwrap();
        assert_eq!(
            state_rule.protocol,
            Some(ProtocolFilter::Tcp {
                src_ports: None,
                dst_ports: Some(PortRange { lower: 80, upper: 443 })
            })
        );
        assert_eq!(firewall_rule_view(&state_rule), rule());
        let icmp = pb::FirewallRule {
            protocol: Some(pb::firewall_rule::Protocol::Icmp(pb::IcmpFilter {
                icmp_type: Some(8),
                icmp_code: None,
            })),
            ..rule()
        };
        assert_eq!(firewall_rule_view(&firewall_rule(icmp.clone()).unwrap()), icmp);

        let bad = [
            (pb::FirewallRule { direction: 0, ..rule() }, "rule.direction"),
            (pb::FirewallRule { action: 7, ..rule() }, "rule.action"),
            (pb::FirewallRule { source: "10.0.0.1/24".into(), ..rule() }, "rule.source"),
            (
                pb::FirewallRule {
                    protocol: Some(pb::firewall_rule::Protocol::Udp(pb::PortFilter {
                        src_ports: Some(pb::PortRange { lower: 1, upper: 70_000 }),
                        dst_ports: None,
                    })),
                    ..rule()
                },
                "rule.udp.src_ports.upper",
            ),
            (
                pb::FirewallRule {
                    protocol: Some(pb::firewall_rule::Protocol::Icmp(pb::IcmpFilter {
                        icmp_type: Some(256),
                        icmp_code: None,
                    })),
                    ..rule()
                },
                "rule.icmp.icmp_type",
            ),
        ];
        for (r, field) in bad {
            assert_eq!(firewall_rule(r).unwrap_err().field, field);
        }
        let e = add_firewall_rule(pb::AddFirewallRuleRequest { rule: None, ..Default::default() });
        assert_eq!(e.unwrap_err().field, "rule");
    }

    #[test]
    fn load_balancer_requests() {
        let req = pb::CreateLoadBalancerRequest {
            request_id: String::new(),
            id: "web".into(),
            vni: 7,
            vip: "10.0.0.100".into(),
            ports: vec![pb::LbPort { protocol: pb::LbProtocol::Tcp.into(), port: 80 }],
            targets: vec![pb::LbTarget { underlay: "fd00::1".into(), weight: 0, interface: String::new() }],
            table_size: None,
        };
        let Op::CreateLoadBalancer(spec) = create_load_balancer(req.clone()).unwrap().op else {
            panic!("wrong op");
        };
        assert_eq!(spec.targets, [LbTarget { addr: "fd00::1".parse().unwrap(), weight: 1 }]);
        assert_eq!(spec.ports, [LbPort { protocol: Protocol::Tcp, port: 80 }]);
        let bad_port = pb::CreateLoadBalancerRequest {
            ports: vec![pb::LbPort { protocol: pb::LbProtocol::Udp.into(), port: 65_536 }],
            ..req.clone()
        };
        assert_eq!(create_load_balancer(bad_port).unwrap_err().field, "ports[0].port");
        let no_proto = pb::CreateLoadBalancerRequest {
            ports: vec![pb::LbPort { protocol: 0, port: 80 }],
            ..req.clone()
        };
        assert_eq!(create_load_balancer(no_proto).unwrap_err().field, "ports[0].protocol");
        let bad_target = pb::CreateLoadBalancerRequest {
            targets: vec![pb::LbTarget { underlay: "10.0.0.1".into(), weight: 1, interface: String::new() }],
            ..req
        };
        assert_eq!(create_load_balancer(bad_target).unwrap_err().field, "targets[0].underlay");

        let add = pb::AddLbTargetRequest {
            request_id: "x".into(),
            lb: "web".into(),
            target: Some(pb::add_lb_target_request::Target::Interface("vm1".into())),
            weight: 3,
        };
        assert_eq!(
            add_lb_target(add.clone()).unwrap().op,
            Op::AddLbInterfaceTarget { lb: "web".into(), interface: "vm1".into(), weight: 3 }
        );
        assert_eq!(
            add_lb_target(pb::AddLbTargetRequest { target: None, ..add }).unwrap_err().field,
            "target"
        );
    }

    #[test]
    fn remove_target_by_interface_resolves_in_the_state() {
        let state = FleetState::new();
        let req = pb::RemoveLbTargetRequest {
            request_id: String::new(),
            lb: "web".into(),
            target: Some(pb::remove_lb_target_request::Target::Interface("vm1".into())),
        };
        assert_eq!(remove_lb_target(req.clone(), &state), Err(RemoveTargetError::UnknownLb("web".into())));
        let by_addr = pb::RemoveLbTargetRequest {
            target: Some(pb::remove_lb_target_request::Target::Underlay("fd00::9".into())),
            ..req
        };
        assert_eq!(
            remove_lb_target(by_addr, &state).unwrap().op,
            Op::RemoveLbTarget { lb: "web".into(), addr: "fd00::9".parse().unwrap() }
        );
    }

    #[test]
    fn nat_gateway_requests_and_views() {
        let req = pb::CreateNatGatewayRequest {
            request_id: String::new(),
            id: "gw".into(),
            vni: 1,
            public_ips: vec!["203.0.113.1".into(), "bogus".into()],
            port_min: 1024,
            port_max: 2048,
            block_size: 64,
        };
        assert_eq!(create_nat_gateway(req.clone()).unwrap_err().field, "public_ips[1]");
        let req = pb::CreateNatGatewayRequest { public_ips: vec!["203.0.113.1".into()], ..req };
        let Op::CreateNatGateway(spec) = create_nat_gateway(req).unwrap().op else { panic!("wrong op") };
        let mut gw = NatGateway::new(spec).unwrap();
        gw.allocate("vm1").unwrap();
        let view = nat_gateway(&gw);
        assert_eq!((view.blocks_used, view.blocks_total), (1, 16));
        let allocs = nat_allocations(&FleetState::new(), &gw);
        assert_eq!(allocs.len(), 1);
        assert_eq!(
            allocs[0].block,
            Some(pb::NatBlock { ip: "203.0.113.1".into(), port_min: 1024, port_max: 1088 })
        );
    }

    #[test]
    fn route_requests() {
        let req = pb::AddRouteRequest {
            request_id: String::new(),
            route: Some(pb::Route {
                vni: 5,
                prefix: "10.2.0.0/16".into(),
                next_hop: "fc00::1".into(),
                next_hop_vni: 5,
            }),
        };
        let Op::AddRoute(r) = add_route(req.clone()).unwrap().op else { panic!("wrong op") };
        assert_eq!(route(&r), req.route.clone().unwrap());
        let mut bad = req;
        bad.route.as_mut().unwrap().next_hop = "10.0.0.1".into();
        assert_eq!(add_route(bad).unwrap_err().field, "route.next_hop");
        assert_eq!(add_route(pb::AddRouteRequest::default()).unwrap_err().field, "route");
    }
}
