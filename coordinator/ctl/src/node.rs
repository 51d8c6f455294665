//! Running a [`NodeCall`] against a node and turning its answer into an [`Output`].
//!
//! dpservice's API answers a request it understood with gRPC OK and puts the outcome
//! into `status {code, message}`; a nonzero code is an error ([`CtlError::Server`]).
//! Malformed requests and calls before Initialize fail at the gRPC level
//! ([`CtlError::Rpc`]). Answers carry ids and addresses as text in `bytes` fields,
//! sometimes padded with NULs (dpservice copies whole C buffers), which [`text`] drops.

use std::time::Duration;

use dpfleet_coordinator::client::error_chain;
use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::dpdkironcore::v1::dpd_kironcore_client::DpdKironcoreClient;
use pb::protocol_filter::Filter;
use tonic::transport::{Channel, Endpoint};

use crate::error::CtlError;
use crate::output::{
    Change, CreatedInterfaceView, FirewallRuleKey, FirewallRuleView, InitView, InterfaceKey, InterfaceRef,
    InterfaceView, LbKey, LbPortView, LbTargetView, LbView, LocalNatView, NatView, NeighborNatKey,
    NeighborNatView, Output, PortsView, PrefixKey, PrefixView, RouteKey, RouteView, VersionView, VipView,
    VniKey, VniView,
};
use crate::request::NodeCall;

/// Connects to `addr` and runs `call`, all within `timeout`.
pub async fn run(addr: &str, timeout: Duration, call: NodeCall) -> Result<Output, CtlError> {
    let uri = if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| CtlError::Usage(format!("invalid node address {addr:?}: {e}")))?
        .connect_timeout(timeout);
    let work = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CtlError::Connect { addr: addr.to_string(), reason: error_chain(&e) })?;
        execute(&mut DpdKironcoreClient::new(channel), call).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| CtlError::Timeout { addr: addr.to_string(), timeout })?
}

/// Fails with the server's error if `status` has a nonzero code. A missing status
/// reads as success, as it does for dpservice's own clients.
pub fn check(status: Option<&pb::Status>) -> Result<(), CtlError> {
    match status {
        Some(s) if s.code != 0 => Err(CtlError::Server { code: s.code, message: s.message.clone() }),
        _ => Ok(()),
    }
}

/// Text from a `bytes` field: up to the first NUL, invalid UTF-8 replaced.
pub fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn ip_text(a: Option<&pb::IpAddress>) -> String {
    a.map(|a| text(&a.address)).unwrap_or_default()
}

fn prefix_text(p: Option<&pb::Prefix>) -> String {
    p.map(|p| format!("{}/{}", ip_text(p.ip.as_ref()), p.length)).unwrap_or_default()
}

macro_rules! call {
    ($client:ident . $method:ident ( $req:expr )) => {{
        let resp = $client.$method($req).await?.into_inner();
        check(resp.status.as_ref())?;
        resp
    }};
}

/// Sends `call` and presents the answer.
pub async fn execute(client: &mut DpdKironcoreClient<Channel>, call: NodeCall) -> Result<Output, CtlError> {
    Ok(match call {
        NodeCall::Initialize(r) => {
            let resp = call!(client.initialize(r));
            Output::one(&InitView { uuid: resp.uuid })
        }
        NodeCall::CheckInitialized(r) => {
            let resp = call!(client.check_initialized(r));
            Output::one(&InitView { uuid: resp.uuid })
        }
        NodeCall::GetVersion(r) => {
            let resp = call!(client.get_version(r));
            Output::one(&VersionView {
                service_protocol: resp.service_protocol,
                service_version: resp.service_version,
            })
        }
        NodeCall::CreateInterface(r) => {
            let resp = call!(client.create_interface(r.clone()));
            Output::one(&created_interface(&r, &resp))
        }
        NodeCall::GetInterface(r) => {
            let resp = call!(client.get_interface(r));
            Output::one(&interface_view(&resp.interface.unwrap_or_default()))
        }
        NodeCall::ListInterfaces(r) => {
            let resp = call!(client.list_interfaces(r));
            Output::many(&interface_views(&resp.interfaces))
        }
        NodeCall::DeleteInterface(r) => {
            call!(client.delete_interface(r.clone()));
            Output::one(&Change { result: "deleted", object: InterfaceKey { id: text(&r.interface_id) } })
        }
        NodeCall::CreateRoute(r) => {
            call!(client.create_route(r.clone()));
            let route = r.route.unwrap_or_default();
            Output::one(&Change { result: "created", object: route_view(r.vni, &route) })
        }
        NodeCall::DeleteRoute(r) => {
            call!(client.delete_route(r.clone()));
            let prefix = prefix_text(r.route.as_ref().and_then(|rt| rt.prefix.as_ref()));
            Output::one(&Change { result: "deleted", object: RouteKey { vni: r.vni, prefix } })
        }
        NodeCall::ListRoutes(r) => {
            let resp = call!(client.list_routes(r));
            Output::many(&resp.routes.iter().map(|rt| route_view(r.vni, rt)).collect::<Vec<_>>())
        }
        NodeCall::CreatePrefix(r) => {
            let resp = call!(client.create_prefix(r.clone()));
            Output::one(&created_prefix(&r.interface_id, r.prefix.as_ref(), &resp.underlay_route))
        }
        NodeCall::DeletePrefix(r) => {
            call!(client.delete_prefix(r.clone()));
            Output::one(&deleted_prefix(&r.interface_id, r.prefix.as_ref()))
        }
        NodeCall::ListPrefixes(r) => {
            let resp = call!(client.list_prefixes(r.clone()));
            Output::many(&prefix_views(&r.interface_id, &resp.prefixes))
        }
        NodeCall::CreateLbPrefix(r) => {
            let resp = call!(client.create_load_balancer_prefix(r.clone()));
            Output::one(&created_prefix(&r.interface_id, r.prefix.as_ref(), &resp.underlay_route))
        }
        NodeCall::DeleteLbPrefix(r) => {
            call!(client.delete_load_balancer_prefix(r.clone()));
            Output::one(&deleted_prefix(&r.interface_id, r.prefix.as_ref()))
        }
        NodeCall::ListLbPrefixes(r) => {
            let resp = call!(client.list_load_balancer_prefixes(r.clone()));
            Output::many(&prefix_views(&r.interface_id, &resp.prefixes))
        }
        NodeCall::CreateFirewallRule(r) => {
            let resp = call!(client.create_firewall_rule(r.clone()));
            let mut view = firewall_rule_view(&r.interface_id, &r.rule.unwrap_or_default());
            let assigned = text(&resp.rule_id);
            if !assigned.is_empty() {
                view.rule_id = assigned;
            }
            Output::one(&Change { result: "created", object: view })
        }
        NodeCall::GetFirewallRule(r) => {
            let resp = call!(client.get_firewall_rule(r.clone()));
            Output::one(&firewall_rule_view(&r.interface_id, &resp.rule.unwrap_or_default()))
        }
        NodeCall::DeleteFirewallRule(r) => {
            call!(client.delete_firewall_rule(r.clone()));
            Output::one(&Change {
                result: "deleted",
                object: FirewallRuleKey { interface_id: text(&r.interface_id), rule_id: text(&r.rule_id) },
            })
        }
        NodeCall::ListFirewallRules(r) => {
            let resp = call!(client.list_firewall_rules(r.clone()));
            Output::many(&firewall_rule_views(&r.interface_id, &resp.rules))
        }
        NodeCall::CheckVniInUse(r) => {
            let resp = call!(client.check_vni_in_use(r));
            Output::one(&VniView { vni: r.vni, vni_type: vni_type_name(r.r#type), in_use: resp.in_use })
        }
        NodeCall::ResetVni(r) => {
            call!(client.reset_vni(r));
            Output::one(&Change {
                result: "reset",
                object: VniKey { vni: r.vni, vni_type: vni_type_name(r.r#type) },
            })
        }
        NodeCall::CreateVip(r) => {
            let resp = call!(client.create_vip(r.clone()));
            Output::one(&Change {
                result: "created",
                object: VipView {
                    interface_id: text(&r.interface_id),
                    vip: ip_text(r.vip_ip.as_ref()),
                    underlay_route: text(&resp.underlay_route),
                },
            })
        }
        NodeCall::GetVip(r) => {
            let resp = call!(client.get_vip(r.clone()));
            Output::one(&VipView {
                interface_id: text(&r.interface_id),
                vip: ip_text(resp.vip_ip.as_ref()),
                underlay_route: text(&resp.underlay_route),
            })
        }
        NodeCall::DeleteVip(r) => {
            call!(client.delete_vip(r.clone()));
            Output::one(&Change {
                result: "deleted",
                object: InterfaceRef { interface_id: text(&r.interface_id) },
            })
        }
        NodeCall::CreateNat(r) => {
            let resp = call!(client.create_nat(r.clone()));
            Output::one(&Change {
                result: "created",
                object: NatView {
                    interface_id: text(&r.interface_id),
                    nat_ip: ip_text(r.nat_ip.as_ref()),
                    min_port: r.min_port,
                    max_port: r.max_port,
                    underlay_route: text(&resp.underlay_route),
                },
            })
        }
        NodeCall::GetNat(r) => {
            let resp = call!(client.get_nat(r.clone()));
            Output::one(&NatView {
                interface_id: text(&r.interface_id),
                nat_ip: ip_text(resp.nat_ip.as_ref()),
                min_port: resp.min_port,
                max_port: resp.max_port,
                underlay_route: text(&resp.underlay_route),
            })
        }
        NodeCall::DeleteNat(r) => {
            call!(client.delete_nat(r.clone()));
            Output::one(&Change {
                result: "deleted",
                object: InterfaceRef { interface_id: text(&r.interface_id) },
            })
        }
        NodeCall::ListLocalNats(r) => {
            let resp = call!(client.list_local_nats(r.clone()));
            Output::many(&local_nat_views(r.nat_ip.as_ref(), &resp.nat_entries))
        }
        NodeCall::CreateNeighborNat(r) => {
            call!(client.create_neighbor_nat(r.clone()));
            Output::one(&Change {
                result: "created",
                object: NeighborNatView {
                    nat_ip: ip_text(r.nat_ip.as_ref()),
                    vni: r.vni,
                    min_port: r.min_port,
                    max_port: r.max_port,
                    underlay_route: text(&r.underlay_route),
                },
            })
        }
        NodeCall::DeleteNeighborNat(r) => {
            call!(client.delete_neighbor_nat(r.clone()));
            Output::one(&Change {
                result: "deleted",
                object: NeighborNatKey {
                    nat_ip: ip_text(r.nat_ip.as_ref()),
                    vni: r.vni,
                    min_port: r.min_port,
                    max_port: r.max_port,
                },
            })
        }
        NodeCall::ListNeighborNats(r) => {
            let resp = call!(client.list_neighbor_nats(r.clone()));
            Output::many(&neighbor_nat_views(r.nat_ip.as_ref(), &resp.nat_entries))
        }
        NodeCall::CreateLb(r) => {
            let resp = call!(client.create_load_balancer(r.clone()));
            Output::one(&Change {
                result: "created",
                object: LbView {
                    id: text(&r.loadbalancer_id),
                    vni: r.vni,
                    ip: ip_text(r.loadbalanced_ip.as_ref()),
                    ports: lb_port_views(&r.loadbalanced_ports),
                    underlay_route: text(&resp.underlay_route),
                },
            })
        }
        NodeCall::GetLb(r) => {
            let resp = call!(client.get_load_balancer(r.clone()));
            Output::one(&LbView {
                id: text(&r.loadbalancer_id),
                vni: resp.vni,
                ip: ip_text(resp.loadbalanced_ip.as_ref()),
                ports: lb_port_views(&resp.loadbalanced_ports),
                underlay_route: text(&resp.underlay_route),
            })
        }
        NodeCall::DeleteLb(r) => {
            call!(client.delete_load_balancer(r.clone()));
            Output::one(&Change { result: "deleted", object: LbKey { id: text(&r.loadbalancer_id) } })
        }
        NodeCall::CreateLbTarget(r) => {
            call!(client.create_load_balancer_target(r.clone()));
            Output::one(&Change {
                result: "created",
                object: LbTargetView {
                    lb_id: text(&r.loadbalancer_id),
                    target_ip: ip_text(r.target_ip.as_ref()),
                },
            })
        }
        NodeCall::DeleteLbTarget(r) => {
            call!(client.delete_load_balancer_target(r.clone()));
            Output::one(&Change {
                result: "deleted",
                object: LbTargetView {
                    lb_id: text(&r.loadbalancer_id),
                    target_ip: ip_text(r.target_ip.as_ref()),
                },
            })
        }
        NodeCall::ListLbTargets(r) => {
            let resp = call!(client.list_load_balancer_targets(r.clone()));
            Output::many(&lb_target_views(&r.loadbalancer_id, &resp.target_ips))
        }
    })
}

/// The local interfaces behind a NAT address (ListLocalNats): the node reports each
/// interface's own address in the entry's `nat_ip`.
pub fn local_nat_views(nat_ip: Option<&pb::IpAddress>, list: &[pb::NatEntry]) -> Vec<LocalNatView> {
    list.iter()
        .map(|e| LocalNatView {
            nat_ip: ip_text(nat_ip),
            interface_ip: ip_text(e.nat_ip.as_ref()),
            vni: e.vni,
            min_port: e.min_port,
            max_port: e.max_port,
        })
        .collect()
}

/// The neighbor NATs of a NAT address (ListNeighborNats).
pub fn neighbor_nat_views(nat_ip: Option<&pb::IpAddress>, list: &[pb::NatEntry]) -> Vec<NeighborNatView> {
    list.iter()
        .map(|e| NeighborNatView {
            nat_ip: ip_text(nat_ip),
            vni: e.vni,
            min_port: e.min_port,
            max_port: e.max_port,
            underlay_route: text(&e.underlay_route),
        })
        .collect()
}

/// Load-balanced ports with their protocol by name.
pub fn lb_port_views(ports: &[pb::LbPort]) -> Vec<LbPortView> {
    ports
        .iter()
        .map(|p| LbPortView {
            protocol: match pb::Protocol::try_from(p.protocol) {
                Ok(pb::Protocol::Tcp) => "tcp".into(),
                Ok(pb::Protocol::Udp) => "udp".into(),
                _ => format!("unknown({})", p.protocol),
            },
            port: p.port,
        })
        .collect()
}

/// The targets of a load balancer.
pub fn lb_target_views(lb: &[u8], targets: &[pb::IpAddress]) -> Vec<LbTargetView> {
    targets.iter().map(|t| LbTargetView { lb_id: text(lb), target_ip: ip_text(Some(t)) }).collect()
}

/// An interface as the node reports it (`pci_name` is the device it is attached to).
pub fn interface_view(i: &pb::Interface) -> InterfaceView {
    InterfaceView {
        id: text(&i.id),
        vni: i.vni,
        device: i.pci_name.clone(),
        primary_ipv4: text(&i.primary_ipv4),
        primary_ipv6: text(&i.primary_ipv6),
        underlay_route: text(&i.underlay_route),
    }
}

/// Interfaces sorted by id, so that output does not depend on the node's table order.
pub fn interface_views(list: &[pb::Interface]) -> Vec<InterfaceView> {
    let mut v: Vec<_> = list.iter().map(interface_view).collect();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// A created interface: what was asked for, with what the node assigned.
pub fn created_interface(
    r: &pb::CreateInterfaceRequest,
    resp: &pb::CreateInterfaceResponse,
) -> Change<CreatedInterfaceView> {
    let addr = |c: &Option<pb::IpConfig>| c.as_ref().map(|c| text(&c.primary_address)).unwrap_or_default();
    Change {
        result: "created",
        object: CreatedInterfaceView {
            interface: InterfaceView {
                id: text(&r.interface_id),
                vni: r.vni,
                device: r.device_name.clone(),
                primary_ipv4: addr(&r.ipv4_config),
                primary_ipv6: addr(&r.ipv6_config),
                underlay_route: text(&resp.underlay_route),
            },
            vf_name: resp.vf.as_ref().map(|vf| vf.name.clone()).unwrap_or_default(),
        },
    }
}

/// A route of `vni`.
pub fn route_view(vni: u32, r: &pb::Route) -> RouteView {
    RouteView {
        vni,
        prefix: prefix_text(r.prefix.as_ref()),
        next_hop: ip_text(r.nexthop_address.as_ref()),
        next_hop_vni: r.nexthop_vni,
    }
}

fn created_prefix(iface: &[u8], p: Option<&pb::Prefix>, underlay: &[u8]) -> Change<PrefixView> {
    let object =
        PrefixView { interface_id: text(iface), prefix: prefix_text(p), underlay_route: text(underlay) };
    Change { result: "created", object }
}

fn deleted_prefix(iface: &[u8], p: Option<&pb::Prefix>) -> Change<PrefixKey> {
    Change { result: "deleted", object: PrefixKey { interface_id: text(iface), prefix: prefix_text(p) } }
}

/// The prefixes of an interface.
pub fn prefix_views(iface: &[u8], list: &[pb::Prefix]) -> Vec<PrefixView> {
    list.iter()
        .map(|p| PrefixView {
            interface_id: text(iface),
            prefix: prefix_text(Some(p)),
            underlay_route: text(&p.underlay_route),
        })
        .collect()
}

/// A firewall rule of an interface.
pub fn firewall_rule_view(iface: &[u8], r: &pb::FirewallRule) -> FirewallRuleView {
    // -1 (or anything outside a field's range, which the node would refuse) is "any".
    let ports =
        |lower: i32, upper: i32| (lower >= 0).then_some(PortsView { first: lower, last: upper.max(lower) });
    let icmp = |v: i32| (v >= 0).then_some(v);
    let filter = r.protocol_filter.as_ref().and_then(|f| f.filter);
    let (protocol, src_ports, dst_ports, icmp_type, icmp_code) = match filter {
        None => ("any", None, None, None, None),
        Some(Filter::Tcp(f)) => (
            "tcp",
            ports(f.src_port_lower, f.src_port_upper),
            ports(f.dst_port_lower, f.dst_port_upper),
            None,
            None,
        ),
        Some(Filter::Udp(f)) => (
            "udp",
            ports(f.src_port_lower, f.src_port_upper),
            ports(f.dst_port_lower, f.dst_port_upper),
            None,
            None,
        ),
        Some(Filter::Icmp(f)) => ("icmp", None, None, icmp(f.icmp_type), icmp(f.icmp_code)),
    };
    FirewallRuleView {
        interface_id: text(iface),
        rule_id: text(&r.id),
        direction: match pb::TrafficDirection::try_from(r.direction) {
            Ok(pb::TrafficDirection::Ingress) => "ingress".into(),
            Ok(pb::TrafficDirection::Egress) => "egress".into(),
            Err(_) => format!("unknown({})", r.direction),
        },
        action: match pb::FirewallAction::try_from(r.action) {
            Ok(pb::FirewallAction::Accept) => "accept".into(),
            Ok(pb::FirewallAction::Drop) => "drop".into(),
            Err(_) => format!("unknown({})", r.action),
        },
        priority: r.priority,
        source: prefix_text(r.source_prefix.as_ref()),
        destination: prefix_text(r.destination_prefix.as_ref()),
        protocol: protocol.into(),
        src_ports,
        dst_ports,
        icmp_type,
        icmp_code,
    }
}

/// Firewall rules sorted by priority, then id, for output that does not depend on the
/// node's table order.
pub fn firewall_rule_views(iface: &[u8], list: &[pb::FirewallRule]) -> Vec<FirewallRuleView> {
    let mut v: Vec<_> = list.iter().map(|r| firewall_rule_view(iface, r)).collect();
    v.sort_by(|a, b| (a.priority, &a.rule_id).cmp(&(b.priority, &b.rule_id)));
    v
}

fn vni_type_name(t: i32) -> String {
    match pb::VniType::try_from(t) {
        Ok(pb::VniType::VniIpv4) => "ipv4".into(),
        Ok(pb::VniType::VniIpv6) => "ipv6".into(),
        Ok(pb::VniType::VniBoth) => "both".into(),
        Err(_) => format!("unknown({t})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::OutputFormat;

    fn ip(ipver: i32, a: &str) -> Option<pb::IpAddress> {
        Some(pb::IpAddress { ipver, address: a.into() })
    }

    #[test]
    fn status_codes() {
        assert!(check(None).is_ok());
        assert!(check(Some(&pb::Status { code: 0, message: "Success".into() })).is_ok());
        match check(Some(&pb::Status { code: 301, message: "NOT_FOUND".into() })) {
            Err(CtlError::Server { code: 301, message }) => assert_eq!(message, "NOT_FOUND"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_stops_at_nul() {
        assert_eq!(text(b"r1\0\0\0\0"), "r1");
        assert_eq!(text(b"10.0.0.1"), "10.0.0.1");
        assert_eq!(text(b""), "");
        assert_eq!(text(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn interfaces_sorted_and_decoded() {
        let i = |id: &str, v4: &str| pb::Interface {
            id: id.into(),
            vni: 100,
            primary_ipv4: v4.into(),
            primary_ipv6: b"2001:db8::1".to_vec(),
            underlay_route: b"fc00:1::8".to_vec(),
            pci_name: "net_tap3".into(),
            metering_params: None,
        };
        let views = interface_views(&[i("vm2", "10.0.0.2"), i("vm1", "10.0.0.1")]);
        let ids: Vec<_> = views.iter().map(|v| (v.id.as_str(), v.primary_ipv4.as_str())).collect();
        assert_eq!(ids, [("vm1", "10.0.0.1"), ("vm2", "10.0.0.2")]);
        assert_eq!(
            (views[0].device.as_str(), views[0].primary_ipv6.as_str(), views[0].underlay_route.as_str()),
            ("net_tap3", "2001:db8::1", "fc00:1::8")
        );
    }

    #[test]
    fn created_interface_merges_request_and_answer() {
        let req = pb::CreateInterfaceRequest {
            interface_id: b"vm1".to_vec(),
            vni: 9,
            ipv4_config: Some(pb::IpConfig { primary_address: b"10.0.0.1".to_vec() }),
            ipv6_config: Some(pb::IpConfig { primary_address: b"::".to_vec() }),
            device_name: "net_tap2".into(),
            ..Default::default()
        };
        let resp = pb::CreateInterfaceResponse {
            status: None,
            underlay_route: b"fc00:1::1:0:0:2".to_vec(),
            vf: Some(pb::VirtualFunction { name: "dtap2".into(), ..Default::default() }),
        };
        let out = Output::one(&created_interface(&req, &resp));
        assert_eq!(
            out.render(OutputFormat::Table),
            "\
RESULT   ID   VNI  DEVICE    PRIMARY_IPV4  PRIMARY_IPV6  UNDERLAY_ROUTE   VF_NAME
created  vm1  9    net_tap2  10.0.0.1      ::            fc00:1::1:0:0:2  dtap2
"
        );
    }

    #[test]
    fn routes_and_prefixes() {
        let rt = pb::Route {
            prefix: Some(pb::Prefix { ip: ip(0, "10.2.0.0"), length: 16, underlay_route: vec![] }),
            nexthop_vni: 0,
            nexthop_address: ip(1, "fc00::2"),
            weight: 100,
        };
        let v = route_view(100, &rt);
        assert_eq!(
            (v.vni, v.prefix.as_str(), v.next_hop.as_str(), v.next_hop_vni),
            (100, "10.2.0.0/16", "fc00::2", 0)
        );

        let p = pb::Prefix { ip: ip(1, "fd00::"), length: 64, underlay_route: b"fc00::9".to_vec() };
        let views = prefix_views(b"vm1", &[p]);
        assert_eq!(
            (views[0].interface_id.as_str(), views[0].prefix.as_str(), views[0].underlay_route.as_str()),
            ("vm1", "fd00::/64", "fc00::9")
        );
    }

    #[test]
    fn firewall_rules() {
        let rule = |id: &str, priority: u32, filter: Option<Filter>| pb::FirewallRule {
            id: id.into(),
            direction: 1,
            action: 0,
            priority,
            source_prefix: Some(pb::Prefix { ip: ip(0, "0.0.0.0"), length: 0, underlay_route: vec![] }),
            destination_prefix: Some(pb::Prefix { ip: ip(0, "10.0.0.0"), length: 8, underlay_route: vec![] }),
            protocol_filter: Some(pb::ProtocolFilter { filter }),
        };
        let tcp = Filter::Tcp(pb::TcpFilter {
            src_port_lower: -1,
            src_port_upper: -1,
            dst_port_lower: 80,
            dst_port_upper: 90,
        });
        let icmp = Filter::Icmp(pb::IcmpFilter { icmp_type: 8, icmp_code: -1 });
        let views = firewall_rule_views(
            b"vm1",
            &[rule("b\0\0", 10, Some(tcp)), rule("c", 5, None), rule("a", 10, Some(icmp))],
        );
        let order: Vec<_> = views.iter().map(|v| v.rule_id.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"]);
        let c = &views[0];
        assert_eq!((c.direction.as_str(), c.action.as_str(), c.protocol.as_str()), ("egress", "drop", "any"));
        assert_eq!((c.source.as_str(), c.destination.as_str()), ("0.0.0.0/0", "10.0.0.0/8"));
        assert_eq!(
            (views[1].protocol.as_str(), views[1].icmp_type, views[1].icmp_code),
            ("icmp", Some(8), None)
        );
        let b = &views[2];
        assert_eq!(
            (b.protocol.as_str(), b.src_ports, b.dst_ports),
            ("tcp", None, Some(PortsView { first: 80, last: 90 }))
        );
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn error_chain_skips_repeats() {
        let e = Layer(
            "transport error",
            Some(Box::new(Layer("tcp connect error", Some(Box::new(Layer("tcp connect error", None)))))),
        );
        assert_eq!(error_chain(&e), "transport error: tcp connect error");
    }

    #[test]
    fn vni_type_names() {
        assert_eq!(vni_type_name(0), "ipv4");
        assert_eq!(vni_type_name(1), "ipv6");
        assert_eq!(vni_type_name(2), "both");
        assert_eq!(vni_type_name(9), "unknown(9)");
    }

    #[test]
    fn nat_entries_and_lb_decoding() {
        let q = ip(0, "10.0.0.9");
        let local = pb::NatEntry {
            nat_ip: ip(0, "172.32.10.5"),
            min_port: 100,
            max_port: 200,
            underlay_route: vec![],
            vni: 7,
        };
        let v = local_nat_views(q.as_ref(), &[local]);
        assert_eq!(
            (v[0].nat_ip.as_str(), v[0].interface_ip.as_str(), v[0].vni, v[0].min_port, v[0].max_port),
            ("10.0.0.9", "172.32.10.5", 7, 100, 200)
        );
        let neigh = pb::NatEntry {
            nat_ip: None,
            min_port: 200,
            max_port: 300,
            underlay_route: b"fc00:2::4\0".to_vec(),
            vni: 7,
        };
        let v = neighbor_nat_views(q.as_ref(), &[neigh]);
        assert_eq!(
            (v[0].nat_ip.as_str(), v[0].vni, v[0].min_port, v[0].max_port, v[0].underlay_route.as_str()),
            ("10.0.0.9", 7, 200, 300, "fc00:2::4")
        );

        let ports = lb_port_views(&[
            pb::LbPort { port: 80, protocol: 6 },
            pb::LbPort { port: 53, protocol: 17 },
            pb::LbPort { port: 9, protocol: 132 },
        ]);
        let ports: Vec<_> = ports.iter().map(|p| (p.protocol.as_str(), p.port)).collect();
        assert_eq!(ports, [("tcp", 80), ("udp", 53), ("unknown(132)", 9)]);

        let t = lb_target_views(b"lb1", &[pb::IpAddress { ipver: 1, address: b"fc00:3::1".to_vec() }]);
        assert_eq!((t[0].lb_id.as_str(), t[0].target_ip.as_str()), ("lb1", "fc00:3::1"));
        let out = Output::many(&t);
        assert_eq!(out.render(OutputFormat::Table), "LB_ID  TARGET_IP\nlb1    fc00:3::1\n");
    }
}
