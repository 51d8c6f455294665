//! A synthetic fleet for measuring the planner (`benches/plan.rs`) at scale.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::state::{Command, FleetState, InterfaceSpec, NatGatewaySpec, NodeState, Op};

use super::plan::{diff, FleetIndex, LbActual, NodeActual, NodeDesired, TableStatus};

/// Interfaces per VNI in [`synthetic_fleet`].
pub const VNI_SIZE: usize = 100;

fn apply(s: &mut FleetState, op: Op) {
    if let Err(e) = s.apply(Command::new(op.clone())) {
        panic!("synthetic fleet: {op:?}: {e}");
    }
}

/// A fleet of `nodes` active nodes and `interfaces` interfaces: VNIs of [`VNI_SIZE`]
/// interfaces, interface `j` on node `j % nodes` (so a VNI spans up to [`VNI_SIZE`]
/// nodes), each with an IPv4 address and a NAT block of its VNI's gateway.
///
/// Built through [`FleetState::apply`], whose interface creation scans the interfaces,
/// so building takes time quadratic in `interfaces` (seconds for 100,000).
pub fn synthetic_fleet(nodes: usize, interfaces: usize) -> FleetState {
    let mut s = FleetState::new();
    for n in 0..nodes {
        let n16 = u16::try_from(n).unwrap_or(u16::MAX);
        let underlay = Ipv6Addr::new(0xfc00, n16, 0, 0, 0, 0, 0, 1);
        let id = format!("node{n}");
        let api_endpoint = format!("[fc00:{n16:x}::1]:1337");
        apply(&mut s, Op::RegisterNode { id: id.clone(), underlay, api_endpoint, devices: vec![] });
        apply(&mut s, Op::SetNodeState { id, state: NodeState::Active });
    }
    for v in 0..interfaces.div_ceil(VNI_SIZE) {
        let vni = 1000 + u32::try_from(v).unwrap_or(0);
        apply(&mut s, Op::CreateVni { vni });
        let public_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + vni);
        apply(
            &mut s,
            Op::CreateNatGateway(NatGatewaySpec {
                id: format!("gw{vni}"),
                vni,
                public_ips: vec![public_ip],
                port_min: 1024,
                port_max: 65_536,
                block_size: 512,
            }),
        );
    }
    for j in 0..interfaces {
        let vni = 1000 + u32::try_from(j / VNI_SIZE).unwrap_or(0);
        let id = format!("if{j}");
        let host = u32::try_from(j % VNI_SIZE).unwrap_or(0) + 1;
        apply(
            &mut s,
            Op::CreateInterface(InterfaceSpec {
                id: id.clone(),
                vni,
                node: Some(format!("node{}", j % nodes.max(1))),
                device: Some(format!("net_tap{}", j / nodes.max(1))),
                ipv4: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + host)),
                ipv6: None,
            }),
        );
        apply(&mut s, Op::AttachNat { gateway: format!("gw{vni}"), interface: id });
    }
    s
}

/// Plans every node of `state` from scratch (as after a restart of the whole fleet):
/// returns the number of desired objects (interfaces, routes, neighbor NATs, load
/// balancers) and of actions over all nodes.
pub fn plan_all(state: &FleetState) -> (usize, usize) {
    let index = FleetIndex::new(state);
    let empty = NodeActual::default();
    let (mut objects, mut actions) = (0, 0);
    for node in state.nodes().keys() {
        let Some(d) = index.desired(node) else { continue };
        objects += d.interfaces.len() + d.routes.len() + d.neighbor_nats.len() + d.load_balancers.len();
        actions += diff(&empty, &d).len();
    }
    (objects, actions)
}

/// What a node that holds exactly `desired` reports (a converged node).
pub fn holding(desired: &NodeDesired) -> NodeActual {
    NodeActual {
        interfaces: desired.interfaces.clone(),
        routes: desired.routes.clone(),
        neighbor_nats: desired.neighbor_nats.clone(),
        load_balancers: desired
            .load_balancers
            .iter()
            .map(|(id, lb)| {
                let table = lb.table.as_ref().map_or_else(TableStatus::default, |t| TableStatus {
                    epoch: t.epoch,
                    digest: t.digest,
                    table_size: t.table_size,
                    targets: u32::try_from(t.targets.len()).unwrap_or(u32::MAX),
                });
                (id.clone(), LbActual { config: lb.config.clone(), table })
            })
            .collect(),
        applied_generation: desired.generation,
    }
}
