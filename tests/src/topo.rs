//! The test topology: port names, MAC and IP addresses, VNIs and node options.
//!
//! The values follow the address plan of dpservice's own test suite, so that a failure
//! here can be compared with a run of that suite: underlay `fc00::/16`, VM addresses
//! `10.<vni>.1.<n>` and `2000:<vni>:1::<n>`, gateway `169.254.0.1` / `fe80::1`,
//! PF MACs `22:22:22:22:22:0n`, VF MACs `66:66:66:66:66:0n`.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::node::PortSpec;

/// gRPC port of every node (each node has its own namespace).
pub const GRPC_PORT: u16 = 1337;
/// Prefix of the VF TAP interface names (`--vf-pattern`).
pub const VF_PATTERN: &str = "dtapvf_";
/// The node's own underlay address (`--ipv6`).
pub const NODE_UL: Ipv6Addr = Ipv6Addr::new(0xfc00, 1, 0, 0, 0, 0, 0, 1);
/// The underlay router.
pub const ROUTER_UL: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0xffff);
/// Another node's underlay address behind which VNI 100's remote prefixes live.
pub const NEIGH_UL: Ipv6Addr = Ipv6Addr::new(0xfc00, 2, 0, 0, 0, 0x64, 0, 1);
/// VNI 100's IPv4 prefix on the other node (routed to [`NEIGH_UL`]).
pub const NEIGH_V4_PREFIX: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 100, 2, 0), 24);
/// VNI 100's IPv6 prefix on the other node (routed to [`NEIGH_UL`]).
pub const NEIGH_V6_PREFIX: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2000, 0x100, 2, 0, 0, 0, 0, 0), 104);
/// The IPv4 gateway every VM talks to (ARP, DHCP server).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
/// The IPv6 gateway every VM talks to (ND, DHCPv6 server).
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// `--dhcp-mtu`.
pub const DHCP_MTU: u16 = 1337;
/// `--dhcp-dns` (twice).
pub const DHCP_DNS: [Ipv4Addr; 2] = [Ipv4Addr::new(8, 8, 4, 4), Ipv4Addr::new(8, 8, 8, 8)];
/// `--dhcpv6-dns` (twice).
pub const DHCPV6_DNS: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0x4860, 0x4860, 0, 0, 0, 0, 0x6464),
    Ipv6Addr::new(0x2002, 0x4861, 0x4861, 0, 0, 0, 0, 0x6464),
];
/// First VNI of the tests.
pub const VNI1: u32 = 100;
/// Second VNI of the tests.
pub const VNI2: u32 = 200;

/// PF number `n`: device `net_tap<n>`, interface `dtap<n>`, MAC `22:22:22:22:22:0<n>`.
pub fn pf(n: u8) -> PortSpec {
    PortSpec {
        device: format!("net_tap{n}"),
        iface: format!("dtap{n}"),
        mac: [0x22, 0x22, 0x22, 0x22, 0x22, n],
    }
}

/// VF number `n` (after the two PFs): device `net_tap<n+2>`, interface `dtapvf_<n>`,
/// MAC `66:66:66:66:66:0<n>`.
pub fn vf(n: u8) -> PortSpec {
    PortSpec {
        device: format!("net_tap{}", n + 2),
        iface: format!("{VF_PATTERN}{n}"),
        mac: [0x66, 0x66, 0x66, 0x66, 0x66, n],
    }
}

/// dpservice's test options after `--`.
pub fn default_app_args() -> Vec<String> {
    let mut args = vec![
        "--pf0=dtap0".to_string(),
        "--pf1=dtap1".to_string(),
        format!("--vf-pattern={VF_PATTERN}"),
        "--nic-type=tap".to_string(),
        format!("--ipv6={NODE_UL}"),
        "--enable-ipv6-overlay".to_string(),
        format!("--dhcp-mtu={DHCP_MTU}"),
    ];
    args.extend(DHCP_DNS.iter().map(|d| format!("--dhcp-dns={d}")));
    args.extend(DHCPV6_DNS.iter().map(|d| format!("--dhcpv6-dns={d}")));
    args.extend([format!("--grpc-port={GRPC_PORT}"), "--no-stats".to_string(), "--no-offload".to_string()]);
    args
}

/// A VM as the tests see it: the VF it sits behind and its overlay configuration.
#[derive(Clone, Debug)]
pub struct Vm {
    /// Interface id given to CreateInterface.
    pub id: String,
    /// Index of its VF port.
    pub vf: u8,
    /// Its virtual network.
    pub vni: u32,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its IPv6 address.
    pub ipv6: Ipv6Addr,
    /// The MAC the VM uses as source (the kernel side of its TAP).
    pub mac: [u8; 6],
}

impl Vm {
    /// VM number `n` (1-based) on VF `n-1` in `vni`, addressed as dpservice's tests do.
    pub fn new(n: u8, vni: u32) -> Vm {
        let v = u8::try_from(vni % 256).unwrap_or(0);
        let vni_hex = u16::from_str_radix(&vni.to_string(), 16).unwrap_or(0);
        Vm {
            id: format!("vm{n}"),
            vf: n - 1,
            vni,
            ip: Ipv4Addr::new(10, v, 1, n),
            ipv6: Ipv6Addr::new(0x2000, vni_hex, 1, 0, 0, 0, 0, u16::from(n)),
            mac: [0x02, 0, 0, 0, 0x01, n],
        }
    }

    /// The same VM with another IPv4 address.
    pub fn with_ip(mut self, ip: Ipv4Addr) -> Vm {
        self.ip = ip;
        self
    }

    /// The same VM with another IPv6 address.
    pub fn with_ipv6(mut self, ipv6: Ipv6Addr) -> Vm {
        self.ipv6 = ipv6;
        self
    }
}

/// The MAC the test uses on the kernel side of PF `n` (the "router" side).
pub fn router_mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, n]
}

/// `aa:bb:cc:dd:ee:ff` notation.
pub fn mac_str(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
