//! A small snapshot builder and a reference lab, for tests, benchmarks and fuzzing.
//!
//! The daemon builds its snapshots from the API; this builder only makes the shapes the
//! pipeline's own tests need. The lab mirrors dpservice's test topology (two PFs, VMs
//! with `66:66:66:66:66:xx` port MACs, VNIs 100 and 200, routes to a neighbouring node
//! and to the underlay router).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::config::{
    DnatTarget, Interface, Mac, NodeConfig, PortId, PortInfo, PortRole, RouteTarget, Snapshot,
    UnderlayTarget, Vni,
};
use crate::tables::nat::{LocalNat, PortRange};
use crate::wire::{checksum, ethernet, ipv6};

/// Builds a [`Snapshot`] step by step.
#[derive(Debug)]
pub struct SnapshotBuilder {
    node: NodeConfig,
    ports: Vec<PortInfo>,
    ifaces: Vec<Interface>,
    routes4: Vec<(Vni, Ipv4Addr, u8, RouteTarget)>,
    routes6: Vec<(Vni, Ipv6Addr, u8, RouteTarget)>,
}

impl SnapshotBuilder {
    /// A node with this underlay address, IPv6 overlay on, `--wcmp` off, no ports.
    pub fn new(underlay: Ipv6Addr) -> Self {
        SnapshotBuilder {
            node: NodeConfig {
                underlay_ipv6: underlay,
                dhcp_mtu: 1500,
                dhcp_dns: Vec::new(),
                dhcpv6_dns: Vec::new(),
                ipv6_overlay: true,
                pf_ports: Vec::new(),
                wcmp_percent: 100,
            },
            ports: Vec::new(),
            ifaces: Vec::new(),
            routes4: Vec::new(),
            routes6: Vec::new(),
        }
    }
    /// Changes node settings.
    pub fn node(mut self, f: impl FnOnce(&mut NodeConfig)) -> Self {
        f(&mut self.node);
        self
    }
    /// Adds the next PF (pf0, then pf1) with its router's MAC, if configured.
    pub fn pf(mut self, id: PortId, mac: Mac, router: Option<Mac>) -> Self {
        #[allow(clippy::cast_possible_truncation)] // at most two PFs
        let n = self.node.pf_ports.len() as u8;
        self.node.pf_ports.push(id);
        self.ports.push(port(id, mac, PortRole::Pf(n), router));
        self
    }
    /// Adds a VF port.
    pub fn vf(mut self, id: PortId, mac: Mac) -> Self {
        self.ports.push(port(id, mac, PortRole::Vf, None));
        self
    }
    /// Adds an interface on VF `port` with host routes for its addresses.
    pub fn iface(
        mut self,
        port: PortId,
        vni: Vni,
        ipv4: Ipv4Addr,
        ipv6: Option<Ipv6Addr>,
        underlay: Ipv6Addr,
    ) -> Self {
        let port_mac = self.ports.iter().find(|p| p.id == port).map_or([0; 6], |p| p.mac);
        self.ifaces.push(Interface {
            id: format!("vm-{port}"),
            port,
            port_mac,
            vni,
            ipv4,
            ipv6,
            underlay_ipv6: underlay,
            pxe: None,
            vip: None,
            nat: None,
        });
        self.routes4.push((vni, ipv4, 32, RouteTarget::Local { port }));
        if let Some(a) = ipv6 {
            self.routes6.push((vni, a, 128, RouteTarget::Local { port }));
        }
        self
    }
    /// Adds an IPv4 route.
    pub fn route4(mut self, vni: Vni, net: Ipv4Addr, len: u8, target: RouteTarget) -> Self {
        self.routes4.push((vni, net, len, target));
        self
    }
    /// Adds an IPv6 route.
    pub fn route6(mut self, vni: Vni, net: Ipv6Addr, len: u8, target: RouteTarget) -> Self {
        self.routes6.push((vni, net, len, target));
        self
    }
    /// The snapshot.
    pub fn build(self) -> Snapshot {
        let mut snap = Snapshot::new(self.node, self.ports);
        for i in self.ifaces {
            snap.underlay_targets.insert(i.underlay_ipv6, UnderlayTarget::Interface(i.port));
            snap.vnis.entry(i.vni).or_default();
            let slot = usize::from(i.port);
            if snap.iface_by_port.len() <= slot {
                snap.iface_by_port.resize(slot + 1, None);
            }
            snap.iface_by_port[slot] = Some(i);
        }
        for (vni, net, len, t) in self.routes4 {
            snap.vnis.entry(vni).or_default().routes4.insert(net, len, t);
        }
        for (vni, net, len, t) in self.routes6 {
            snap.vnis.entry(vni).or_default().routes6.insert(net, len, t);
        }
        snap
    }
}

fn port(id: PortId, mac: Mac, role: PortRole, neigh_mac: Option<Mac>) -> PortInfo {
    PortInfo { id, mac, role, device_name: format!("net_tap{id}"), if_name: format!("dtap{id}"), neigh_mac }
}

/// pf0's MAC in the lab.
pub const PF0_MAC: Mac = [0x22, 0x22, 0x22, 0x22, 0x22, 0x00];
/// pf1's MAC in the lab.
pub const PF1_MAC: Mac = [0x22, 0x22, 0x22, 0x22, 0x22, 0x01];
/// The underlay router's MAC in the lab.
pub const ROUTER_MAC: Mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
/// The MAC of VF port `n + 2` (vm1 is `vm_mac(0)`).
pub const fn vm_mac(n: u8) -> Mac {
    [0x66, 0x66, 0x66, 0x66, 0x66, n]
}
/// Port ids of the lab.
pub mod ports {
    use crate::config::PortId;
    /// pf0.
    pub const PF0: PortId = 0;
    /// pf1.
    pub const PF1: PortId = 1;
    /// vm1: VNI 100, 10.100.1.1, 2000:100:1::1, underlay fc00:1::1:1.
    pub const VM1: PortId = 2;
    /// vm2: VNI 100, 10.100.1.2, 2000:100:1::2, underlay fc00:1::1:2.
    pub const VM2: PortId = 3;
    /// vm3: VNI 200, 10.200.1.3, 2000:200:1::3, underlay fc00:1::1:3.
    pub const VM3: PortId = 4;
    /// vm4: VNI 200 with vm2's addresses (10.100.1.2, 2000:100:1::2), underlay fc00:1::1:4.
    pub const VM4: PortId = 5;
    /// A VF without an interface.
    pub const BARE: PortId = 6;
}

/// A frame from the underlay router on pf0 (pf0's MAC from the router's MAC): the IPv4
/// packet `ip` tunnelled (next header 4, hop limit 64) from the router's underlay address
/// fc00::ffff to `dst`.
pub fn from_router(dst: Ipv6Addr, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ethernet::HEADER_LEN + ipv6::HEADER_LEN + ip.len());
    f.extend_from_slice(&PF0_MAC);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
    let repr = ipv6::Repr {
        src: Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0xffff),
        dst,
        next_header: ipv6::NH_IPV4,
        payload_len: u16::try_from(ip.len()).unwrap_or(u16::MAX),
        hop_limit: 64,
        vtc_flow: 0x6000_0000,
    };
    let mut h = [0u8; ipv6::HEADER_LEN];
    // Always true: the buffer is exactly one header long.
    if repr.emit(&mut h) {
        f.extend_from_slice(&h);
    }
    f.extend_from_slice(ip);
    f
}

/// The reference lab: node underlay fc00:1::1; VNI 100 routes 10.100.2.0/24 and
/// 2000:100:2::/104 to a neighbouring node at fc00:2::64:0:1 and the default routes to
/// the router at fc00::ffff; VNI 200 has no routes beyond its interfaces.
pub fn lab() -> Snapshot {
    let a4 = |s: &str| s.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let a6 = |s: &str| s.parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::UNSPECIFIED);
    let neigh = RouteTarget::Remote { underlay: a6("fc00:2::64:0:1"), vni: 100 };
    let router = RouteTarget::Remote { underlay: a6("fc00::ffff"), vni: 100 };
    SnapshotBuilder::new(a6("fc00:1::1"))
        .pf(ports::PF0, PF0_MAC, Some(ROUTER_MAC))
        .pf(ports::PF1, PF1_MAC, Some(ROUTER_MAC))
        .vf(ports::VM1, vm_mac(0))
        .vf(ports::VM2, vm_mac(1))
        .vf(ports::VM3, vm_mac(2))
        .vf(ports::VM4, vm_mac(3))
        .vf(ports::BARE, vm_mac(4))
        .iface(ports::VM1, 100, a4("10.100.1.1"), Some(a6("2000:100:1::1")), a6("fc00:1::1:1"))
        .iface(ports::VM2, 100, a4("10.100.1.2"), Some(a6("2000:100:1::2")), a6("fc00:1::1:2"))
        .iface(ports::VM3, 200, a4("10.200.1.3"), Some(a6("2000:200:1::3")), a6("fc00:1::1:3"))
        .iface(ports::VM4, 200, a4("10.100.1.2"), Some(a6("2000:100:1::2")), a6("fc00:1::1:4"))
        .route4(100, a4("10.100.2.0"), 24, neigh)
        .route6(100, a6("2000:100:2::"), 104, neigh)
        .route4(100, a4("0.0.0.0"), 0, router)
        .route6(100, a6("::"), 0, router)
        .build()
}

/// A 64-byte Ethernet frame (60 bytes and room for the FCS) carrying IPv4/UDP from vm1
/// (10.100.1.1, source port `sport`) to `dst`, port 5678, TTL 64, for the benchmarks.
pub fn vm1_udp_frame(dst_mac: Mac, dst: [u8; 4], sport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&vm_mac(0));
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len: u16 = 64 - 14;
    let ip = &mut f[14..];
    ip[..12].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[12..16].copy_from_slice(&[10, 100, 1, 1]);
    ip[16..20].copy_from_slice(&dst);
    let ck = checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    let udp = &mut ip[20..];
    udp[..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&5678u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// The NAT IP of [`snat_lab`].
pub const SNAT_IP: Ipv4Addr = Ipv4Addr::new(172, 21, 1, 1);

/// [`lab`] with a NAT gateway for vm1: [`SNAT_IP`], ports 1024-65535.
pub fn snat_lab() -> Snapshot {
    let mut snap = lab();
    if let (Some(Some(vm1)), Ok(range)) =
        (snap.iface_by_port.get_mut(usize::from(ports::VM1)), PortRange::new(1024, 65535))
    {
        vm1.nat = Some(LocalNat { nat_ip: SNAT_IP, range, vni: 100 });
    }
    snap.dnat.insert((100, SNAT_IP), DnatTarget::Nat);
    snap
}
