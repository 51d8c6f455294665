//! From parsed arguments to the one request message each command sends.
//!
//! Encoding facts of the node API (see `proto/dpdk.proto`): ids and addresses travel
//! as text inside `bytes` fields; an `IpAddress` carries its family in `ipver`; an
//! interface without IPv6 sends `::`; port and ICMP filters use -1 for "any".

use std::net::{IpAddr, Ipv6Addr};

use dpfleet_proto::dpdkironcore::v1 as pb;
use pb::protocol_filter::Filter;

use crate::cli::{
    Action, Direction, FwCmd, FwCreate, FwProto, IfaceCmd, IfaceCreate, LbCmd, LbPortArg, LbProto,
    LbTargetCmd, NatCmd, NeighNatCmd, NeighNatKey, NodeCmd, PortRange, PrefixArg, PrefixCmd, RouteCmd,
    VipCmd, VniCmd, VniType,
};
use crate::error::CtlError;

/// What dpfleetctl tells the node about itself in GetVersion.
pub const CLIENT_NAME: &str = "dpfleetctl";
/// The API dpfleetctl speaks, sent as `client_protocol` (the node refuses it empty).
pub const CLIENT_PROTOCOL: &str = "dpdkironcore.v1";
/// dpservice gives routes this weight; its clients send it, so do we.
pub const ROUTE_WEIGHT: u32 = 100;

/// One RPC of the node API with its request.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeCall {
    /// `Initialize`
    Initialize(pb::InitializeRequest),
    /// `CheckInitialized`
    CheckInitialized(pb::CheckInitializedRequest),
    /// `GetVersion`
    GetVersion(pb::GetVersionRequest),
    /// `CreateInterface`
    CreateInterface(pb::CreateInterfaceRequest),
    /// `GetInterface`
    GetInterface(pb::GetInterfaceRequest),
    /// `ListInterfaces`
    ListInterfaces(pb::ListInterfacesRequest),
    /// `DeleteInterface`
    DeleteInterface(pb::DeleteInterfaceRequest),
    /// `CreateRoute`
    CreateRoute(pb::CreateRouteRequest),
    /// `DeleteRoute`
    DeleteRoute(pb::DeleteRouteRequest),
    /// `ListRoutes`
    ListRoutes(pb::ListRoutesRequest),
    /// `CreatePrefix`
    CreatePrefix(pb::CreatePrefixRequest),
    /// `DeletePrefix`
    DeletePrefix(pb::DeletePrefixRequest),
    /// `ListPrefixes`
    ListPrefixes(pb::ListPrefixesRequest),
    /// `CreateLoadBalancerPrefix`
    CreateLbPrefix(pb::CreateLoadBalancerPrefixRequest),
    /// `DeleteLoadBalancerPrefix`
    DeleteLbPrefix(pb::DeleteLoadBalancerPrefixRequest),
    /// `ListLoadBalancerPrefixes`
    ListLbPrefixes(pb::ListLoadBalancerPrefixesRequest),
    /// `CreateFirewallRule`
    CreateFirewallRule(pb::CreateFirewallRuleRequest),
    /// `GetFirewallRule`
    GetFirewallRule(pb::GetFirewallRuleRequest),
    /// `DeleteFirewallRule`
    DeleteFirewallRule(pb::DeleteFirewallRuleRequest),
    /// `ListFirewallRules`
    ListFirewallRules(pb::ListFirewallRulesRequest),
    /// `CheckVniInUse`
    CheckVniInUse(pb::CheckVniInUseRequest),
    /// `ResetVni`
    ResetVni(pb::ResetVniRequest),
    /// `CreateVip`
    CreateVip(pb::CreateVipRequest),
    /// `GetVip`
    GetVip(pb::GetVipRequest),
    /// `DeleteVip`
    DeleteVip(pb::DeleteVipRequest),
    /// `CreateNat`
    CreateNat(pb::CreateNatRequest),
    /// `GetNat`
    GetNat(pb::GetNatRequest),
    /// `DeleteNat`
    DeleteNat(pb::DeleteNatRequest),
    /// `ListLocalNats`
    ListLocalNats(pb::ListLocalNatsRequest),
    /// `CreateNeighborNat`
    CreateNeighborNat(pb::CreateNeighborNatRequest),
    /// `DeleteNeighborNat`
    DeleteNeighborNat(pb::DeleteNeighborNatRequest),
    /// `ListNeighborNats`
    ListNeighborNats(pb::ListNeighborNatsRequest),
    /// `CreateLoadBalancer`
    CreateLb(pb::CreateLoadBalancerRequest),
    /// `GetLoadBalancer`
    GetLb(pb::GetLoadBalancerRequest),
    /// `DeleteLoadBalancer`
    DeleteLb(pb::DeleteLoadBalancerRequest),
    /// `CreateLoadBalancerTarget`
    CreateLbTarget(pb::CreateLoadBalancerTargetRequest),
    /// `DeleteLoadBalancerTarget`
    DeleteLbTarget(pb::DeleteLoadBalancerTargetRequest),
    /// `ListLoadBalancerTargets`
    ListLbTargets(pb::ListLoadBalancerTargetsRequest),
}

impl TryFrom<&NodeCmd> for NodeCall {
    type Error = CtlError;

    fn try_from(cmd: &NodeCmd) -> Result<Self, CtlError> {
        Ok(match cmd {
            NodeCmd::Init => NodeCall::Initialize(pb::InitializeRequest {}),
            NodeCmd::CheckInit => NodeCall::CheckInitialized(pb::CheckInitializedRequest {}),
            NodeCmd::Version => NodeCall::GetVersion(pb::GetVersionRequest {
                client_protocol: CLIENT_PROTOCOL.into(),
                client_name: CLIENT_NAME.into(),
                client_version: env!("CARGO_PKG_VERSION").into(),
            }),
            NodeCmd::Iface(c) => iface_call(c),
            NodeCmd::Route(c) => route_call(c),
            NodeCmd::Prefix(c) => prefix_call(c),
            NodeCmd::Lbprefix(c) => lbprefix_call(c),
            NodeCmd::Fw(c) => fw_call(c)?,
            NodeCmd::Vni(VniCmd::InUse(a)) => NodeCall::CheckVniInUse(pb::CheckVniInUseRequest {
                vni: a.vni,
                r#type: vni_type(a.vni_type) as i32,
            }),
            NodeCmd::Vni(VniCmd::Reset(a)) => {
                NodeCall::ResetVni(pb::ResetVniRequest { vni: a.vni, r#type: vni_type(a.vni_type) as i32 })
            }
            NodeCmd::Vip(c) => vip_call(c),
            NodeCmd::Nat(c) => nat_call(c)?,
            NodeCmd::Neighnat(c) => neighnat_call(c)?,
            NodeCmd::Lb(c) => lb_call(c),
            NodeCmd::Lbtarget(c) => lbtarget_call(c),
        })
    }
}

/// An `IpAddress` message: the address as text, with its family.
pub fn ip_address(a: IpAddr) -> pb::IpAddress {
    let ipver = if a.is_ipv4() { pb::IpVersion::Ipv4 } else { pb::IpVersion::Ipv6 };
    pb::IpAddress { ipver: ipver as i32, address: a.to_string().into_bytes() }
}

/// A `Prefix` message (without underlay route, which only answers carry).
pub fn prefix(p: PrefixArg) -> pb::Prefix {
    pb::Prefix { ip: Some(ip_address(p.addr)), length: u32::from(p.len), underlay_route: Vec::new() }
}

fn iface_call(c: &IfaceCmd) -> NodeCall {
    match c {
        IfaceCmd::Create(a) => NodeCall::CreateInterface(create_interface(a)),
        IfaceCmd::Get { id } => {
            NodeCall::GetInterface(pb::GetInterfaceRequest { interface_id: id.clone().into() })
        }
        IfaceCmd::List => NodeCall::ListInterfaces(pb::ListInterfacesRequest {}),
        IfaceCmd::Delete { id } => {
            NodeCall::DeleteInterface(pb::DeleteInterfaceRequest { interface_id: id.clone().into() })
        }
    }
}

fn create_interface(a: &IfaceCreate) -> pb::CreateInterfaceRequest {
    let ipv6 = a.ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED);
    let pxe_config = match (&a.pxe_server, &a.boot_file) {
        (Some(server), Some(file)) => {
            Some(pb::PxeConfig { next_server: server.to_string(), boot_filename: file.clone() })
        }
        _ => None,
    };
    pb::CreateInterfaceRequest {
        interface_type: pb::InterfaceType::Virtual as i32,
        interface_id: a.id.clone().into(),
        vni: a.vni,
        ipv4_config: Some(pb::IpConfig { primary_address: a.ipv4.to_string().into_bytes() }),
        ipv6_config: Some(pb::IpConfig { primary_address: ipv6.to_string().into_bytes() }),
        pxe_config,
        device_name: a.device.clone(),
        metering_parameters: None,
        preferred_underlay_route: Vec::new(),
    }
}

fn route_call(c: &RouteCmd) -> NodeCall {
    match *c {
        RouteCmd::Create { vni, prefix: p, next_hop, next_hop_vni } => {
            NodeCall::CreateRoute(pb::CreateRouteRequest {
                vni,
                route: Some(pb::Route {
                    prefix: Some(prefix(p)),
                    nexthop_vni: next_hop_vni,
                    nexthop_address: Some(ip_address(IpAddr::V6(next_hop))),
                    weight: ROUTE_WEIGHT,
                }),
            })
        }
        RouteCmd::Delete { vni, prefix: p } => NodeCall::DeleteRoute(pb::DeleteRouteRequest {
            vni,
            route: Some(pb::Route {
                prefix: Some(prefix(p)),
                nexthop_vni: 0,
                nexthop_address: None,
                weight: ROUTE_WEIGHT,
            }),
        }),
        RouteCmd::List { vni } => NodeCall::ListRoutes(pb::ListRoutesRequest { vni }),
    }
}

fn prefix_call(c: &PrefixCmd) -> NodeCall {
    match c {
        PrefixCmd::Create { iface, prefix: p, underlay } => NodeCall::CreatePrefix(pb::CreatePrefixRequest {
            interface_id: iface.clone().into(),
            prefix: Some(prefix(*p)),
            preferred_underlay_route: preferred(*underlay),
        }),
        PrefixCmd::Delete { iface, prefix: p } => NodeCall::DeletePrefix(pb::DeletePrefixRequest {
            interface_id: iface.clone().into(),
            prefix: Some(prefix(*p)),
        }),
        PrefixCmd::List { iface } => {
            NodeCall::ListPrefixes(pb::ListPrefixesRequest { interface_id: iface.clone().into() })
        }
    }
}

fn lbprefix_call(c: &PrefixCmd) -> NodeCall {
    match c {
        PrefixCmd::Create { iface, prefix: p, underlay } => {
            NodeCall::CreateLbPrefix(pb::CreateLoadBalancerPrefixRequest {
                interface_id: iface.clone().into(),
                prefix: Some(prefix(*p)),
                preferred_underlay_route: preferred(*underlay),
            })
        }
        PrefixCmd::Delete { iface, prefix: p } => {
            NodeCall::DeleteLbPrefix(pb::DeleteLoadBalancerPrefixRequest {
                interface_id: iface.clone().into(),
                prefix: Some(prefix(*p)),
            })
        }
        PrefixCmd::List { iface } => NodeCall::ListLbPrefixes(pb::ListLoadBalancerPrefixesRequest {
            interface_id: iface.clone().into(),
        }),
    }
}

fn fw_call(c: &FwCmd) -> Result<NodeCall, CtlError> {
    Ok(match c {
        FwCmd::Create(a) => NodeCall::CreateFirewallRule(pb::CreateFirewallRuleRequest {
            interface_id: a.iface.clone().into(),
            rule: Some(firewall_rule(a)?),
        }),
        FwCmd::Get(k) => NodeCall::GetFirewallRule(pb::GetFirewallRuleRequest {
            interface_id: k.iface.clone().into(),
            rule_id: k.rule_id.clone().into(),
        }),
        FwCmd::Delete(k) => NodeCall::DeleteFirewallRule(pb::DeleteFirewallRuleRequest {
            interface_id: k.iface.clone().into(),
            rule_id: k.rule_id.clone().into(),
        }),
        FwCmd::List { iface } => {
            NodeCall::ListFirewallRules(pb::ListFirewallRulesRequest { interface_id: iface.clone().into() })
        }
    })
}

fn firewall_rule(a: &FwCreate) -> Result<pb::FirewallRule, CtlError> {
    let has_ports = a.src_ports.is_some() || a.dst_ports.is_some();
    let has_icmp = a.icmp_type.is_some() || a.icmp_code.is_some();
    if has_ports && !matches!(a.proto, FwProto::Tcp | FwProto::Udp) {
        return Err(CtlError::Usage("--src-ports/--dst-ports need --proto tcp or udp".into()));
    }
    if has_icmp && a.proto != FwProto::Icmp {
        return Err(CtlError::Usage("--icmp-type/--icmp-code need --proto icmp".into()));
    }
    let bounds = |r: Option<PortRange>| match r.unwrap_or(PortRange::Any) {
        PortRange::Any => (-1, -1),
        PortRange::Ports { first, last } => (i32::from(first), i32::from(last)),
    };
    let (src_port_lower, src_port_upper) = bounds(a.src_ports);
    let (dst_port_lower, dst_port_upper) = bounds(a.dst_ports);
    let filter = match a.proto {
        FwProto::Any => None,
        FwProto::Tcp => Some(Filter::Tcp(pb::TcpFilter {
            src_port_lower,
            src_port_upper,
            dst_port_lower,
            dst_port_upper,
        })),
        FwProto::Udp => Some(Filter::Udp(pb::UdpFilter {
            src_port_lower,
            src_port_upper,
            dst_port_lower,
            dst_port_upper,
        })),
        FwProto::Icmp => Some(Filter::Icmp(pb::IcmpFilter {
            icmp_type: a.icmp_type.map_or(-1, i32::from),
            icmp_code: a.icmp_code.map_or(-1, i32::from),
        })),
    };
    Ok(pb::FirewallRule {
        id: a.rule_id.clone().into(),
        direction: match a.direction {
            Direction::Ingress => pb::TrafficDirection::Ingress,
            Direction::Egress => pb::TrafficDirection::Egress,
        } as i32,
        action: match a.action {
            Action::Accept => pb::FirewallAction::Accept,
            Action::Drop => pb::FirewallAction::Drop,
        } as i32,
        priority: u32::from(a.priority),
        source_prefix: Some(prefix(a.src)),
        destination_prefix: Some(prefix(a.dst)),
        // An empty ProtocolFilter (no oneof set) means "any protocol", as dpservice reads it.
        protocol_filter: Some(pb::ProtocolFilter { filter }),
    })
}

fn vip_call(c: &VipCmd) -> NodeCall {
    match c {
        VipCmd::Create { iface, ip } => NodeCall::CreateVip(pb::CreateVipRequest {
            interface_id: iface.clone().into(),
            vip_ip: Some(ip_address(*ip)),
            preferred_underlay_route: Vec::new(),
        }),
        VipCmd::Get { iface } => NodeCall::GetVip(pb::GetVipRequest { interface_id: iface.clone().into() }),
        VipCmd::Delete { iface } => {
            NodeCall::DeleteVip(pb::DeleteVipRequest { interface_id: iface.clone().into() })
        }
    }
}

/// A NAT port range `[min, max)` as the two `uint32` fields; empty ranges are refused
/// here already (the node would refuse them too).
fn nat_ports(min: u16, max: u16) -> Result<(u32, u32), CtlError> {
    if min >= max {
        return Err(CtlError::Usage(format!(
            "invalid port range: --min-port {min} must be below --max-port {max} (max is exclusive)"
        )));
    }
    Ok((u32::from(min), u32::from(max)))
}

fn nat_call(c: &NatCmd) -> Result<NodeCall, CtlError> {
    Ok(match c {
        NatCmd::Create { iface, ip, min_port, max_port } => {
            let (min_port, max_port) = nat_ports(*min_port, *max_port)?;
            NodeCall::CreateNat(pb::CreateNatRequest {
                interface_id: iface.clone().into(),
                nat_ip: Some(ip_address(*ip)),
                min_port,
                max_port,
                preferred_underlay_route: Vec::new(),
            })
        }
        NatCmd::Get { iface } => NodeCall::GetNat(pb::GetNatRequest { interface_id: iface.clone().into() }),
        NatCmd::Delete { iface } => {
            NodeCall::DeleteNat(pb::DeleteNatRequest { interface_id: iface.clone().into() })
        }
        NatCmd::ListLocal { ip } => {
            NodeCall::ListLocalNats(pb::ListLocalNatsRequest { nat_ip: Some(ip_address(*ip)) })
        }
    })
}

fn neighnat_call(c: &NeighNatCmd) -> Result<NodeCall, CtlError> {
    Ok(match c {
        NeighNatCmd::Create { key, underlay } => {
            let NeighNatKey { ip, vni, min_port, max_port } = *key;
            let (min_port, max_port) = nat_ports(min_port, max_port)?;
            NodeCall::CreateNeighborNat(pb::CreateNeighborNatRequest {
                nat_ip: Some(ip_address(ip)),
                vni,
                min_port,
                max_port,
                underlay_route: underlay.to_string().into_bytes(),
            })
        }
        NeighNatCmd::Delete(key) => {
            let NeighNatKey { ip, vni, min_port, max_port } = *key;
            let (min_port, max_port) = nat_ports(min_port, max_port)?;
            NodeCall::DeleteNeighborNat(pb::DeleteNeighborNatRequest {
                nat_ip: Some(ip_address(ip)),
                vni,
                min_port,
                max_port,
            })
        }
        NeighNatCmd::List { ip } => {
            NodeCall::ListNeighborNats(pb::ListNeighborNatsRequest { nat_ip: Some(ip_address(*ip)) })
        }
    })
}

/// An `LbPort` message.
pub fn lb_port(p: LbPortArg) -> pb::LbPort {
    let protocol = match p.proto {
        LbProto::Tcp => pb::Protocol::Tcp,
        LbProto::Udp => pb::Protocol::Udp,
    };
    pb::LbPort { port: u32::from(p.port), protocol: protocol as i32 }
}

/// A `preferred_underlay_route` as dpservice reads it: the address as text, empty for
/// "let the node choose".
fn preferred(underlay: Option<std::net::Ipv6Addr>) -> Vec<u8> {
    underlay.map(|u| u.to_string().into_bytes()).unwrap_or_default()
}

fn lb_call(c: &LbCmd) -> NodeCall {
    match c {
        LbCmd::Create { id, vni, ip, ports, underlay } => NodeCall::CreateLb(pb::CreateLoadBalancerRequest {
            loadbalancer_id: id.clone().into(),
            loadbalanced_ip: Some(ip_address(*ip)),
            vni: *vni,
            loadbalanced_ports: ports.iter().copied().map(lb_port).collect(),
            preferred_underlay_route: preferred(*underlay),
        }),
        LbCmd::Get { id } => {
            NodeCall::GetLb(pb::GetLoadBalancerRequest { loadbalancer_id: id.clone().into() })
        }
        LbCmd::Delete { id } => {
            NodeCall::DeleteLb(pb::DeleteLoadBalancerRequest { loadbalancer_id: id.clone().into() })
        }
    }
}

fn lbtarget_call(c: &LbTargetCmd) -> NodeCall {
    match c {
        LbTargetCmd::Create { lb, ip } => NodeCall::CreateLbTarget(pb::CreateLoadBalancerTargetRequest {
            loadbalancer_id: lb.clone().into(),
            target_ip: Some(ip_address(IpAddr::V6(*ip))),
        }),
        LbTargetCmd::Delete { lb, ip } => NodeCall::DeleteLbTarget(pb::DeleteLoadBalancerTargetRequest {
            loadbalancer_id: lb.clone().into(),
            target_ip: Some(ip_address(IpAddr::V6(*ip))),
        }),
        LbTargetCmd::List { lb } => {
            NodeCall::ListLbTargets(pb::ListLoadBalancerTargetsRequest { loadbalancer_id: lb.clone().into() })
        }
    }
}

fn vni_type(t: VniType) -> pb::VniType {
    match t {
        VniType::Ipv4 => pb::VniType::VniIpv4,
        VniType::Ipv6 => pb::VniType::VniIpv6,
        VniType::Both => pb::VniType::VniBoth,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn call(args: &[&str]) -> Result<NodeCall, CtlError> {
        let argv = ["dpfleetctl", "node"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let Command::Node(cmd) = &cli.command else { panic!("{args:?}: not a node command") };
        NodeCall::try_from(cmd)
    }

    fn ok(args: &[&str]) -> NodeCall {
        call(args).unwrap()
    }

    fn usage_error(args: &[&str]) -> String {
        match call(args) {
            Err(CtlError::Usage(m)) => m,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn rejected_by_clap(args: &[&str]) {
        let argv = ["dpfleetctl", "node"].iter().chain(args);
        assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
    }

    fn v4(a: &str) -> Option<pb::IpAddress> {
        Some(pb::IpAddress { ipver: 0, address: a.into() })
    }

    fn v6(a: &str) -> Option<pb::IpAddress> {
        Some(pb::IpAddress { ipver: 1, address: a.into() })
    }

    fn pfx(ip: Option<pb::IpAddress>, length: u32) -> Option<pb::Prefix> {
        Some(pb::Prefix { ip, length, underlay_route: Vec::new() })
    }

    #[test]
    fn init_check_version() {
        assert_eq!(ok(&["init"]), NodeCall::Initialize(pb::InitializeRequest {}));
        assert_eq!(ok(&["check-init"]), NodeCall::CheckInitialized(pb::CheckInitializedRequest {}));
        assert_eq!(
            ok(&["version"]),
            NodeCall::GetVersion(pb::GetVersionRequest {
                client_protocol: "dpdkironcore.v1".into(),
                client_name: "dpfleetctl".into(),
                client_version: env!("CARGO_PKG_VERSION").into(),
            })
        );
    }

    #[test]
    fn iface_create() {
        let want = pb::CreateInterfaceRequest {
            interface_type: 0,
            interface_id: b"vm1".to_vec(),
            vni: 100,
            ipv4_config: Some(pb::IpConfig { primary_address: b"10.0.0.1".to_vec() }),
            ipv6_config: Some(pb::IpConfig { primary_address: b"::".to_vec() }),
            pxe_config: None,
            device_name: "net_tap2".into(),
            metering_parameters: None,
            preferred_underlay_route: Vec::new(),
        };
        let args =
            ["iface", "create", "--id", "vm1", "--vni", "100", "--ipv4", "10.0.0.1", "--device", "net_tap2"];
        assert_eq!(ok(&args), NodeCall::CreateInterface(want.clone()));

        let mut full = want;
        full.ipv6_config = Some(pb::IpConfig { primary_address: b"2001:db8::1".to_vec() });
        full.pxe_config =
            Some(pb::PxeConfig { next_server: "2001:db8::99".into(), boot_filename: "ipxe.efi".into() });
        let mut args = args.to_vec();
        args.extend(["--ipv6", "2001:DB8:0::1", "--pxe-server", "2001:db8::99", "--boot-file", "ipxe.efi"]);
        assert_eq!(ok(&args), NodeCall::CreateInterface(full));

        // PXE needs both parts; addresses must be addresses of the right family.
        rejected_by_clap(&[
            "iface",
            "create",
            "--id",
            "a",
            "--vni",
            "1",
            "--ipv4",
            "1.2.3.4",
            "--device",
            "d",
            "--boot-file",
            "f",
        ]);
        rejected_by_clap(&[
            "iface", "create", "--id", "a", "--vni", "1", "--ipv4", "fd00::1", "--device", "d",
        ]);
        rejected_by_clap(&["iface", "create", "--id", "a", "--vni", "1", "--ipv4", "1.2.3.4"]);
        rejected_by_clap(&[
            "iface", "create", "--id", "a", "--vni", "-1", "--ipv4", "1.2.3.4", "--device", "d",
        ]);
    }

    #[test]
    fn iface_get_list_delete() {
        assert_eq!(
            ok(&["iface", "get", "vm1"]),
            NodeCall::GetInterface(pb::GetInterfaceRequest { interface_id: b"vm1".to_vec() })
        );
        assert_eq!(ok(&["iface", "list"]), NodeCall::ListInterfaces(pb::ListInterfacesRequest {}));
        assert_eq!(
            ok(&["iface", "delete", "vm1"]),
            NodeCall::DeleteInterface(pb::DeleteInterfaceRequest { interface_id: b"vm1".to_vec() })
        );
        rejected_by_clap(&["iface", "get"]);
    }

    #[test]
    fn routes() {
        assert_eq!(
            ok(&["route", "create", "--vni", "100", "--prefix", "10.2.0.0/16", "--next-hop", "fc00::2"]),
            NodeCall::CreateRoute(pb::CreateRouteRequest {
                vni: 100,
                route: Some(pb::Route {
                    prefix: pfx(v4("10.2.0.0"), 16),
                    nexthop_vni: 0,
                    nexthop_address: v6("fc00::2"),
                    weight: 100,
                }),
            })
        );
        assert_eq!(
            ok(&[
                "route",
                "create",
                "--vni",
                "7",
                "--prefix",
                "fd00:1::/64",
                "--next-hop",
                "fc00::3",
                "--next-hop-vni",
                "8"
            ]),
            NodeCall::CreateRoute(pb::CreateRouteRequest {
                vni: 7,
                route: Some(pb::Route {
                    prefix: pfx(v6("fd00:1::"), 64),
                    nexthop_vni: 8,
                    nexthop_address: v6("fc00::3"),
                    weight: 100,
                }),
            })
        );
        assert_eq!(
            ok(&["route", "delete", "--vni", "100", "--prefix", "10.2.0.0/16"]),
            NodeCall::DeleteRoute(pb::DeleteRouteRequest {
                vni: 100,
                route: Some(pb::Route {
                    prefix: pfx(v4("10.2.0.0"), 16),
                    nexthop_vni: 0,
                    nexthop_address: None,
                    weight: 100,
                }),
            })
        );
        assert_eq!(
            ok(&["route", "list", "--vni", "100"]),
            NodeCall::ListRoutes(pb::ListRoutesRequest { vni: 100 })
        );
        // The underlay is IPv6.
        rejected_by_clap(&[
            "route",
            "create",
            "--vni",
            "1",
            "--prefix",
            "10.0.0.0/8",
            "--next-hop",
            "1.2.3.4",
        ]);
        rejected_by_clap(&[
            "route",
            "create",
            "--vni",
            "1",
            "--prefix",
            "10.0.0.0/33",
            "--next-hop",
            "fc00::1",
        ]);
    }

    #[test]
    fn prefixes_and_lb_prefixes() {
        let id = b"vm1".to_vec();
        let p = pfx(v4("10.9.0.0"), 24);
        assert_eq!(
            ok(&["prefix", "create", "--iface", "vm1", "--prefix", "10.9.0.0/24"]),
            NodeCall::CreatePrefix(pb::CreatePrefixRequest {
                interface_id: id.clone(),
                prefix: p.clone(),
                preferred_underlay_route: Vec::new()
            })
        );
        assert_eq!(
            ok(&["prefix", "delete", "--iface", "vm1", "--prefix", "10.9.0.0/24"]),
            NodeCall::DeletePrefix(pb::DeletePrefixRequest { interface_id: id.clone(), prefix: p.clone() })
        );
        assert_eq!(
            ok(&["prefix", "list", "--iface", "vm1"]),
            NodeCall::ListPrefixes(pb::ListPrefixesRequest { interface_id: id.clone() })
        );
        assert_eq!(
            ok(&["lbprefix", "create", "--iface", "vm1", "--prefix", "10.9.0.0/24"]),
            NodeCall::CreateLbPrefix(pb::CreateLoadBalancerPrefixRequest {
                interface_id: id.clone(),
                prefix: p.clone(),
                preferred_underlay_route: Vec::new(),
            })
        );
        assert_eq!(
            ok(&["lbprefix", "delete", "--iface", "vm1", "--prefix", "10.9.0.0/24"]),
            NodeCall::DeleteLbPrefix(pb::DeleteLoadBalancerPrefixRequest {
                interface_id: id.clone(),
                prefix: p
            })
        );
        assert_eq!(
            ok(&["lbprefix", "list", "--iface", "vm1"]),
            NodeCall::ListLbPrefixes(pb::ListLoadBalancerPrefixesRequest { interface_id: id })
        );
        rejected_by_clap(&["prefix", "create", "--iface", "vm1"]);
    }

    fn fw_rule(args: &[&str]) -> pb::FirewallRule {
        let mut argv = vec!["fw", "create", "--iface", "vm1", "--rule-id", "r1"];
        argv.extend(args);
        match ok(&argv) {
            NodeCall::CreateFirewallRule(r) => {
                assert_eq!(r.interface_id, b"vm1");
                r.rule.unwrap()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fw_create_defaults() {
        assert_eq!(
            fw_rule(&[]),
            pb::FirewallRule {
                id: b"r1".to_vec(),
                direction: pb::TrafficDirection::Ingress as i32,
                action: pb::FirewallAction::Accept as i32,
                priority: 1000,
                source_prefix: pfx(v4("0.0.0.0"), 0),
                destination_prefix: pfx(v4("0.0.0.0"), 0),
                protocol_filter: Some(pb::ProtocolFilter { filter: None }),
            }
        );
    }

    #[test]
    fn fw_create_filters() {
        let r = fw_rule(&[
            "--direction",
            "egress",
            "--action",
            "drop",
            "--priority",
            "7",
            "--src",
            "10.0.0.0/8",
            "--dst",
            "fd00::/8",
            "--proto",
            "tcp",
            "--dst-ports",
            "80-443",
        ]);
        assert_eq!(r.direction, pb::TrafficDirection::Egress as i32);
        assert_eq!(r.action, pb::FirewallAction::Drop as i32);
        assert_eq!(r.priority, 7);
        assert_eq!(r.source_prefix, pfx(v4("10.0.0.0"), 8));
        assert_eq!(r.destination_prefix, pfx(v6("fd00::"), 8));
        assert_eq!(
            r.protocol_filter.unwrap().filter,
            Some(Filter::Tcp(pb::TcpFilter {
                src_port_lower: -1,
                src_port_upper: -1,
                dst_port_lower: 80,
                dst_port_upper: 443
            }))
        );
        let r = fw_rule(&["--proto", "udp", "--src-ports", "53", "--dst-ports", "any"]);
        assert_eq!(
            r.protocol_filter.unwrap().filter,
            Some(Filter::Udp(pb::UdpFilter {
                src_port_lower: 53,
                src_port_upper: 53,
                dst_port_lower: -1,
                dst_port_upper: -1
            }))
        );
        let r = fw_rule(&["--proto", "icmp", "--icmp-type", "8"]);
        assert_eq!(
            r.protocol_filter.unwrap().filter,
            Some(Filter::Icmp(pb::IcmpFilter { icmp_type: 8, icmp_code: -1 }))
        );
        let r = fw_rule(&["--proto", "icmp"]);
        assert_eq!(
            r.protocol_filter.unwrap().filter,
            Some(Filter::Icmp(pb::IcmpFilter { icmp_type: -1, icmp_code: -1 }))
        );
    }

    #[test]
    fn fw_create_refuses_mismatched_filters() {
        let base = ["fw", "create", "--iface", "vm1", "--rule-id", "r1"];
        let with = |extra: &[&'static str]| [&base[..], extra].concat();
        assert!(usage_error(&with(&["--dst-ports", "80"])).contains("--proto tcp or udp"));
        assert!(usage_error(&with(&["--proto", "icmp", "--src-ports", "80"])).contains("tcp or udp"));
        assert!(usage_error(&with(&["--proto", "tcp", "--icmp-code", "0"])).contains("--proto icmp"));
        assert!(usage_error(&with(&["--icmp-type", "8"])).contains("--proto icmp"));
        rejected_by_clap(&with(&["--priority", "65536"]));
        rejected_by_clap(&with(&["--icmp-type", "256", "--proto", "icmp"]));
        rejected_by_clap(&with(&["--direction", "sideways"]));
        rejected_by_clap(&with(&["--proto", "sctp"]));
    }

    #[test]
    fn fw_get_delete_list() {
        let key = (b"vm1".to_vec(), b"r1".to_vec());
        assert_eq!(
            ok(&["fw", "get", "--iface", "vm1", "--rule-id", "r1"]),
            NodeCall::GetFirewallRule(pb::GetFirewallRuleRequest {
                interface_id: key.0.clone(),
                rule_id: key.1.clone()
            })
        );
        assert_eq!(
            ok(&["fw", "delete", "--iface", "vm1", "--rule-id", "r1"]),
            NodeCall::DeleteFirewallRule(pb::DeleteFirewallRuleRequest {
                interface_id: key.0.clone(),
                rule_id: key.1
            })
        );
        assert_eq!(
            ok(&["fw", "list", "--iface", "vm1"]),
            NodeCall::ListFirewallRules(pb::ListFirewallRulesRequest { interface_id: key.0 })
        );
    }

    #[test]
    fn vni() {
        assert_eq!(
            ok(&["vni", "in-use", "--vni", "100"]),
            NodeCall::CheckVniInUse(pb::CheckVniInUseRequest { vni: 100, r#type: 0 })
        );
        assert_eq!(
            ok(&["vni", "in-use", "--vni", "100", "--type", "ipv6"]),
            NodeCall::CheckVniInUse(pb::CheckVniInUseRequest { vni: 100, r#type: 1 })
        );
        assert_eq!(
            ok(&["vni", "reset", "--vni", "5", "--type", "ipv4"]),
            NodeCall::ResetVni(pb::ResetVniRequest { vni: 5, r#type: 0 })
        );
        assert_eq!(
            ok(&["vni", "reset", "--vni", "5"]),
            NodeCall::ResetVni(pb::ResetVniRequest { vni: 5, r#type: 2 })
        );
    }

    #[test]
    fn vip() {
        assert_eq!(
            ok(&["vip", "create", "--iface", "vm1", "--ip", "172.20.0.1"]),
            NodeCall::CreateVip(pb::CreateVipRequest {
                interface_id: b"vm1".to_vec(),
                vip_ip: v4("172.20.0.1"),
                preferred_underlay_route: Vec::new(),
            })
        );
        assert_eq!(
            ok(&["vip", "create", "--iface", "vm1", "--ip", "2001:DB8::7"]),
            NodeCall::CreateVip(pb::CreateVipRequest {
                interface_id: b"vm1".to_vec(),
                vip_ip: v6("2001:db8::7"),
                preferred_underlay_route: Vec::new(),
            })
        );
        assert_eq!(
            ok(&["vip", "get", "--iface", "vm1"]),
            NodeCall::GetVip(pb::GetVipRequest { interface_id: b"vm1".to_vec() })
        );
        assert_eq!(
            ok(&["vip", "delete", "--iface", "vm1"]),
            NodeCall::DeleteVip(pb::DeleteVipRequest { interface_id: b"vm1".to_vec() })
        );
        rejected_by_clap(&["vip", "create", "--iface", "vm1", "--ip", "172.20.0.256"]);
        rejected_by_clap(&["vip", "create", "--iface", "vm1"]);
    }

    #[test]
    fn nat() {
        assert_eq!(
            ok(&[
                "nat",
                "create",
                "--iface",
                "vm1",
                "--ip",
                "10.0.0.9",
                "--min-port",
                "100",
                "--max-port",
                "200"
            ]),
            NodeCall::CreateNat(pb::CreateNatRequest {
                interface_id: b"vm1".to_vec(),
                nat_ip: v4("10.0.0.9"),
                min_port: 100,
                max_port: 200,
                preferred_underlay_route: Vec::new(),
            })
        );
        assert_eq!(
            ok(&["nat", "get", "--iface", "vm1"]),
            NodeCall::GetNat(pb::GetNatRequest { interface_id: b"vm1".to_vec() })
        );
        assert_eq!(
            ok(&["nat", "delete", "--iface", "vm1"]),
            NodeCall::DeleteNat(pb::DeleteNatRequest { interface_id: b"vm1".to_vec() })
        );
        assert_eq!(
            ok(&["nat", "list-local", "--ip", "10.0.0.9"]),
            NodeCall::ListLocalNats(pb::ListLocalNatsRequest { nat_ip: v4("10.0.0.9") })
        );
        // max is exclusive: an empty range is refused before sending.
        let base = ["nat", "create", "--iface", "vm1", "--ip", "10.0.0.9", "--min-port"];
        assert!(usage_error(&[&base[..], &["100", "--max-port", "100"]].concat()).contains("exclusive"));
        assert!(usage_error(&[&base[..], &["200", "--max-port", "100"]].concat()).contains("below"));
        rejected_by_clap(&[&base[..], &["100", "--max-port", "65536"]].concat());
        rejected_by_clap(&[&base[..], &["100"]].concat());
    }

    #[test]
    fn neighbor_nat() {
        assert_eq!(
            ok(&[
                "neighnat",
                "create",
                "--ip",
                "10.0.0.9",
                "--vni",
                "100",
                "--min-port",
                "200",
                "--max-port",
                "300",
                "--underlay",
                "fc00:2::1:0:0:4"
            ]),
            NodeCall::CreateNeighborNat(pb::CreateNeighborNatRequest {
                nat_ip: v4("10.0.0.9"),
                vni: 100,
                min_port: 200,
                max_port: 300,
                underlay_route: b"fc00:2::1:0:0:4".to_vec(),
            })
        );
        assert_eq!(
            ok(&[
                "neighnat",
                "delete",
                "--ip",
                "10.0.0.9",
                "--vni",
                "100",
                "--min-port",
                "200",
                "--max-port",
                "300"
            ]),
            NodeCall::DeleteNeighborNat(pb::DeleteNeighborNatRequest {
                nat_ip: v4("10.0.0.9"),
                vni: 100,
                min_port: 200,
                max_port: 300,
            })
        );
        assert_eq!(
            ok(&["neighnat", "list", "--ip", "10.0.0.9"]),
            NodeCall::ListNeighborNats(pb::ListNeighborNatsRequest { nat_ip: v4("10.0.0.9") })
        );
        let key = ["--ip", "10.0.0.9", "--vni", "100", "--min-port", "300", "--max-port", "200"];
        assert!(usage_error(&[&["neighnat", "delete"][..], &key].concat()).contains("below"));
        // The underlay is IPv6 and required for create.
        let key = ["--ip", "10.0.0.9", "--vni", "100", "--min-port", "200", "--max-port", "300"];
        rejected_by_clap(&[&["neighnat", "create"][..], &key, &["--underlay", "1.2.3.4"]].concat());
        rejected_by_clap(&[&["neighnat", "create"][..], &key].concat());
    }

    #[test]
    fn load_balancers() {
        assert_eq!(
            ok(&[
                "lb",
                "create",
                "--id",
                "lb1",
                "--vni",
                "100",
                "--ip",
                "10.20.30.40",
                "--ports",
                "tcp/80,udp/53"
            ]),
            NodeCall::CreateLb(pb::CreateLoadBalancerRequest {
                loadbalancer_id: b"lb1".to_vec(),
                loadbalanced_ip: v4("10.20.30.40"),
                vni: 100,
                loadbalanced_ports: vec![
                    pb::LbPort { port: 80, protocol: 6 },
                    pb::LbPort { port: 53, protocol: 17 }
                ],
                preferred_underlay_route: Vec::new(),
            })
        );
        // Repeating --ports adds to the list.
        match ok(&[
            "lb", "create", "--id", "l", "--vni", "1", "--ip", "fd00::1", "--ports", "tcp/1", "--ports",
            "udp/2",
        ]) {
            NodeCall::CreateLb(r) => {
                assert_eq!(r.loadbalanced_ip, v6("fd00::1"));
                assert_eq!(
                    r.loadbalanced_ports,
                    [pb::LbPort { port: 1, protocol: 6 }, pb::LbPort { port: 2, protocol: 17 }]
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ok(&["lb", "get", "lb1"]),
            NodeCall::GetLb(pb::GetLoadBalancerRequest { loadbalancer_id: b"lb1".to_vec() })
        );
        assert_eq!(
            ok(&["lb", "delete", "lb1"]),
            NodeCall::DeleteLb(pb::DeleteLoadBalancerRequest { loadbalancer_id: b"lb1".to_vec() })
        );
        let base = ["lb", "create", "--id", "lb1", "--vni", "100", "--ip", "10.20.30.40"];
        rejected_by_clap(&base);
        rejected_by_clap(&[&base[..], &["--ports", "icmp/8"]].concat());
        rejected_by_clap(&[&base[..], &["--ports", "tcp/80,"]].concat());
        rejected_by_clap(&["lb", "get"]);
    }

    #[test]
    fn load_balancer_targets() {
        assert_eq!(
            ok(&["lbtarget", "create", "--lb", "lb1", "--ip", "fc00:3::1"]),
            NodeCall::CreateLbTarget(pb::CreateLoadBalancerTargetRequest {
                loadbalancer_id: b"lb1".to_vec(),
                target_ip: v6("fc00:3::1"),
            })
        );
        assert_eq!(
            ok(&["lbtarget", "delete", "--lb", "lb1", "--ip", "fc00:3::1"]),
            NodeCall::DeleteLbTarget(pb::DeleteLoadBalancerTargetRequest {
                loadbalancer_id: b"lb1".to_vec(),
                target_ip: v6("fc00:3::1"),
            })
        );
        assert_eq!(
            ok(&["lbtarget", "list", "--lb", "lb1"]),
            NodeCall::ListLbTargets(pb::ListLoadBalancerTargetsRequest { loadbalancer_id: b"lb1".to_vec() })
        );
        // Targets are underlay (IPv6) addresses.
        rejected_by_clap(&["lbtarget", "create", "--lb", "lb1", "--ip", "10.0.0.1"]);
    }
}
