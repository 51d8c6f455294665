//! Virtual services (`--udp-virtsvc`, `--tcp-virtsvc`): a VM reaches an IPv6 service of
//! the underlay through a virtual IPv4 address and port, as with dpservice.
//!
//! - Request (VF → service): an IPv4 TCP/UDP packet whose (protocol, destination,
//!   destination port) is a service. Its connection, keyed by (VF port, VM port, VM
//!   address), gets a port index `i` in `[0, 64512)`: the first "old" slot (never used,
//!   or idle past its timeout) scanning from the last assigned index + 1 (from index 1
//!   every time when `--flow-timeout` is not the default 30 s, dpservice's test mode);
//!   an old slot's previous connection is forgotten. The IPv4 header is replaced by an
//!   IPv6 header (no tunnel): source = the node's `--ipv6`, destination = the service,
//!   hop limit = the TTL, next header = the protocol; the L4 source port becomes
//!   `1024 + i`, the destination port the service's. The PF is picked as dpservice
//!   picks it: `--wcmp` over `jhash_2words` of the connection key.
//! - Reply (PF → VF): a non-tunnel IPv6 TCP/UDP packet whose (protocol, source,
//!   source port) is a service; its destination port − 1024 names the connection
//!   (unused or out of range → drop). The IPv6 header is replaced by an IPv4 header
//!   (source = the virtual address, destination = the VM, TTL = hop limit, ID from a
//!   counter); the L4 ports become the virtual port and the VM's port.
//!
//! Virtual services bypass connection tracking, the firewall and NAT. Every checksum is
//! computed (dpservice leaves them to TX offload). TCP connections that reached
//! ESTABLISHED stay for 24 h; others idle out after `--flow-timeout`.
//!
//! Connections are per worker (like dpservice's per-service tables, but without sharing):
//! the tables are allocated when the services are set, never on the packet path.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::buf::PacketBuf;
use crate::config::PortId;
use crate::graph::{Ctx, DropReason, Next};
use crate::stages::encap::pick_pf;
use crate::tables::conntrack::tcp;
use crate::tables::jhash::jhash_2words;
use crate::wire::checksum;
use crate::wire::{ethernet, ipv4, ipv6};

/// Most virtual services (both protocols together), as dpservice.
pub const MAX_SERVICES: usize = 256;
/// Connections per service (service-side ports 1024..65535).
pub const PORT_COUNT: usize = 65536 - 1024;
/// First service-side port (index 0).
pub const PORT_BASE: u16 = 1024;
/// Seed of the connection-key hash that picks the PF.
pub const HASH_SEED: u32 = 0xfee1_900d;
/// Timeout of an established TCP connection.
pub const ESTABLISHED_TIMEOUT_S: u64 = 24 * 60 * 60;
/// The default `--flow-timeout`; any other value turns on dpservice's test-mode scan.
pub const DEFAULT_TIMEOUT_S: u32 = 30;

/// One virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtualService {
    /// IP protocol: 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// The address VMs send to.
    pub virtual_ip: Ipv4Addr,
    /// The port VMs send to.
    pub virtual_port: u16,
    /// The real service's address.
    pub service_ip: Ipv6Addr,
    /// The real service's port.
    pub service_port: u16,
}

/// Why a set of services is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VirtsvcError {
    /// More than [`MAX_SERVICES`].
    #[error("too many virtual services (at most {MAX_SERVICES})")]
    TooMany,
    /// A protocol other than TCP or UDP.
    #[error("virtual service protocol {0} is not TCP or UDP")]
    Protocol(u8),
    /// Port 0.
    #[error("virtual service port 0 is invalid")]
    PortZero,
    /// The same (protocol, virtual address, port) twice.
    #[error("duplicate virtual service {0}:{1}")]
    DuplicateVirtual(Ipv4Addr, u16),
    /// The same (protocol, service address, port) twice.
    #[error("duplicate virtual service target [{0}]:{1}")]
    DuplicateService(Ipv6Addr, u16),
}

/// The node's virtual services (node-wide, immutable after start).
#[derive(Clone, Debug, Default)]
pub struct VirtualServices {
    list: Vec<VirtualService>,
    by_virtual: FxHashMap<(u8, Ipv4Addr, u16), u16>,
    by_service: FxHashMap<(u8, Ipv6Addr, u16), u16>,
}

impl VirtualServices {
    /// Validates and indexes `list`.
    pub fn new(list: Vec<VirtualService>) -> Result<Self, VirtsvcError> {
        if list.len() > MAX_SERVICES {
            return Err(VirtsvcError::TooMany);
        }
        let mut by_virtual = FxHashMap::default();
        let mut by_service = FxHashMap::default();
        for (i, s) in list.iter().enumerate() {
            if s.proto != ipv4::PROTO_TCP && s.proto != ipv4::PROTO_UDP {
                return Err(VirtsvcError::Protocol(s.proto));
            }
            if s.virtual_port == 0 || s.service_port == 0 {
                return Err(VirtsvcError::PortZero);
            }
            #[allow(clippy::cast_possible_truncation)] // i < MAX_SERVICES
            let i = i as u16;
            if by_virtual.insert((s.proto, s.virtual_ip, s.virtual_port), i).is_some() {
                return Err(VirtsvcError::DuplicateVirtual(s.virtual_ip, s.virtual_port));
            }
            if by_service.insert((s.proto, s.service_ip, s.service_port), i).is_some() {
                return Err(VirtsvcError::DuplicateService(s.service_ip, s.service_port));
            }
        }
        Ok(VirtualServices { list, by_virtual, by_service })
    }

    /// The services, in configuration order.
    pub fn list(&self) -> &[VirtualService] {
        &self.list
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The service VMs reach at (protocol, address, port).
    pub fn by_virtual(&self, proto: u8, ip: Ipv4Addr, port: u16) -> Option<u16> {
        if self.list.is_empty() {
            return None;
        }
        self.by_virtual.get(&(proto, ip, port)).copied()
    }

    /// The service at this real (protocol, address, port).
    pub fn by_service(&self, proto: u8, ip: Ipv6Addr, port: u16) -> Option<u16> {
        if self.list.is_empty() {
            return None;
        }
        self.by_service.get(&(proto, ip, port)).copied()
    }
}

/// A connection's key: (VF port, VM's L4 port, VM's address).
type ConnKey = (PortId, u16, Ipv4Addr);

#[derive(Clone, Copy, Debug, Default)]
struct Conn {
    key: Option<ConnKey>,
    last_ns: u64,
    state: TcpState,
}

#[derive(Debug)]
struct ServiceConns {
    slots: Vec<Conn>,
    by_key: FxHashMap<ConnKey, u16>,
    last: usize,
}

/// One worker's virtual-service connections.
#[derive(Debug, Default)]
pub struct Connections {
    services: Arc<VirtualServices>,
    per_service: Vec<ServiceConns>,
    timeout_ns: u64,
    test_mode: bool,
    ip_id: u16,
}

impl Connections {
    /// Tables for `services` (allocated here: [`PORT_COUNT`] slots per service) with
    /// the `--flow-timeout` of non-established connections.
    pub fn new(services: Arc<VirtualServices>, flow_timeout_s: u32) -> Self {
        let per_service = services
            .list()
            .iter()
            .map(|_| {
                let mut by_key = FxHashMap::default();
                by_key.reserve(PORT_COUNT);
                ServiceConns { slots: vec![Conn::default(); PORT_COUNT], by_key, last: 0 }
            })
            .collect();
        Connections {
            services,
            per_service,
            timeout_ns: u64::from(flow_timeout_s) * 1_000_000_000,
            test_mode: flow_timeout_s != DEFAULT_TIMEOUT_S,
            ip_id: 0,
        }
    }

    /// The services.
    pub fn services(&self) -> &VirtualServices {
        &self.services
    }

    /// Forgets every connection of the VF `port` (its interface was deleted).
    pub fn forget_port(&mut self, port: PortId) {
        for s in &mut self.per_service {
            for c in &mut s.slots {
                if c.key.is_some_and(|k| k.0 == port) {
                    if let Some(k) = c.key.take() {
                        s.by_key.remove(&k);
                    }
                }
            }
        }
    }

    /// Live connections of service `svc` (for tests and metrics).
    pub fn count(&self, svc: u16) -> usize {
        self.per_service.get(usize::from(svc)).map_or(0, |s| s.by_key.len())
    }

    fn is_old(&self, c: &Conn, now_ns: u64) -> bool {
        let timeout = if c.state == TcpState::Established {
            ESTABLISHED_TIMEOUT_S * 1_000_000_000
        } else {
            self.timeout_ns
        };
        c.key.is_none() || c.last_ns.saturating_add(timeout) < now_ns
    }

    /// The slot of `key` in service `svc`, allocating one if needed.
    fn lookup_or_create(&mut self, svc: usize, key: ConnKey, now_ns: u64) -> Option<usize> {
        let s = self.per_service.get(svc)?;
        if let Some(&i) = s.by_key.get(&key) {
            return Some(usize::from(i));
        }
        let start = if self.test_mode { 1 } else { (s.last + 1) % PORT_COUNT };
        let found = (0..PORT_COUNT)
            .map(|n| (start + n) % PORT_COUNT)
            .find(|&i| s.slots.get(i).is_some_and(|c| self.is_old(c, now_ns)))?;
        let s = self.per_service.get_mut(svc)?;
        let slot = s.slots.get_mut(found)?;
        if let Some(old) = slot.key.take() {
            s.by_key.remove(&old);
        }
        *slot = Conn { key: Some(key), last_ns: now_ns, state: TcpState::Transient };
        #[allow(clippy::cast_possible_truncation)] // found < PORT_COUNT < 65536
        s.by_key.insert(key, found as u16);
        s.last = found;
        Some(found)
    }

    fn touch(&mut self, svc: usize, idx: usize, now_ns: u64, tcp_flags: Option<u8>) {
        let Some(c) = self.per_service.get_mut(svc).and_then(|s| s.slots.get_mut(idx)) else { return };
        c.last_ns = now_ns;
        if let Some(f) = tcp_flags {
            c.state = c.state.next(f);
        }
    }
}

/// The TCP state of a connection, as dpservice tracks it: only ESTABLISHED connections
/// get the long timeout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TcpState {
    /// New, closing or reset (and every UDP connection).
    #[default]
    Transient,
    /// The VM's SYN seen.
    Syn,
    /// SYN+ACK seen.
    SynAck,
    /// The handshake's ACK seen.
    Established,
}

impl TcpState {
    fn next(self, flags: u8) -> TcpState {
        if flags & (tcp::RST | tcp::FIN) != 0 {
            return TcpState::Transient;
        }
        let syn_ack = flags & (tcp::SYN | tcp::ACK) == tcp::SYN | tcp::ACK;
        match self {
            TcpState::Transient if flags & tcp::SYN != 0 => TcpState::Syn,
            TcpState::Syn if syn_ack => TcpState::SynAck,
            TcpState::SynAck if flags & tcp::ACK != 0 => TcpState::Established,
            s => s,
        }
    }
}

/// Offset of the checksum in a TCP / UDP header.
fn l4_checksum_offset(proto: u8) -> usize {
    if proto == ipv4::PROTO_TCP {
        16
    } else {
        6
    }
}

/// The hash of a connection key that picks its PF: `jhash_2words` of the key's two
/// little-endian words (port id and L4 port as on the wire; the address as on the wire).
pub fn conn_hash(port: PortId, vm_port: u16, vm_ip: Ipv4Addr) -> u32 {
    let p = port.to_le_bytes();
    let l = vm_port.to_be_bytes();
    let w0 = u32::from_le_bytes([p[0], p[1], l[0], l[1]]);
    let w1 = u32::from_le_bytes(vm_ip.octets());
    jhash_2words(w0, w1, HASH_SEED)
}

/// Rewrites an IPv4 request from a VM (on `ctx.in_port`) to service `svc` into the
/// IPv6 packet to the service; next: the PF.
pub fn request<B: PacketBuf>(ctx: &Ctx<'_>, conns: &mut Connections, svc: u16, buf: &mut B) -> Next {
    let Some(service) = conns.services.list().get(usize::from(svc)).copied() else {
        return Next::drop(DropReason::Malformed);
    };
    let Ok(p) = ipv4::Packet::new_checked(buf.data().get(ethernet::HEADER_LEN..).unwrap_or(&[])) else {
        return Next::drop(DropReason::Malformed);
    };
    let (ihl, total, ttl, proto, src) = (p.header_len(), p.total_len(), p.ttl(), p.protocol(), p.src());
    let seg_len = total.saturating_sub(ihl);
    let min = if proto == ipv4::PROTO_TCP { 20 } else { 8 };
    let l4 = ethernet::HEADER_LEN + ihl;
    let Some(seg) = buf.data().get(l4..l4 + seg_len).filter(|s| s.len() >= min) else {
        return Next::drop(DropReason::Malformed);
    };
    let vm_port = u16::from_be_bytes([seg[0], seg[1]]);
    let tcp_flags = (proto == ipv4::PROTO_TCP).then(|| seg[13]);
    let key = (ctx.in_port, vm_port, src);
    let Some(idx) = conns.lookup_or_create(usize::from(svc), key, ctx.now_ns) else {
        return Next::drop(DropReason::FlowTableFull);
    };
    conns.touch(usize::from(svc), idx, ctx.now_ns, tcp_flags);
    let Some(pf) = pick_pf(ctx, Some(conn_hash(ctx.in_port, vm_port, src))) else {
        return Next::drop(DropReason::PortDown);
    };
    // [eth][ipv4 ihl][seg] → [eth][ipv6 40][seg]
    buf.truncate(l4 + seg_len);
    if ihl < ipv6::HEADER_LEN {
        if !buf.prepend(ipv6::HEADER_LEN - ihl) {
            return Next::drop(DropReason::NoRoom);
        }
    } else if !buf.adj(ihl - ipv6::HEADER_LEN) {
        return Next::drop(DropReason::Malformed);
    }
    let Ok(payload_len) = u16::try_from(seg_len) else {
        return Next::drop(DropReason::TooBig);
    };
    #[allow(clippy::cast_possible_truncation)] // idx < PORT_COUNT
    let src_port = PORT_BASE + idx as u16;
    let underlay = ctx.snap.node.underlay_ipv6;
    let data = buf.data_mut();
    let Some((head, seg)) = data.split_at_mut_checked(ethernet::HEADER_LEN + ipv6::HEADER_LEN) else {
        return Next::drop(DropReason::Malformed);
    };
    head[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
    let ip = &mut head[ethernet::HEADER_LEN..];
    ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes());
    ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
    ip[6] = proto;
    ip[7] = ttl;
    ip[8..24].copy_from_slice(&underlay.octets());
    ip[24..40].copy_from_slice(&service.service_ip.octets());
    seg[0..2].copy_from_slice(&src_port.to_be_bytes());
    seg[2..4].copy_from_slice(&service.service_port.to_be_bytes());
    let ck = l4_checksum_offset(proto);
    seg[ck..ck + 2].fill(0);
    let mut sum = checksum::l4_v6(underlay, service.service_ip, proto, seg);
    if sum == 0 && proto == ipv4::PROTO_UDP {
        sum = 0xffff;
    }
    seg[ck..ck + 2].copy_from_slice(&sum.to_be_bytes());
    Next::PfTx(pf)
}

/// Rewrites an IPv6 reply of service `svc` (received on a PF) into the IPv4 packet to
/// the VM of its connection; next: that VF.
pub fn reply<B: PacketBuf>(ctx: &Ctx<'_>, conns: &mut Connections, svc: u16, buf: &mut B) -> Next {
    let Some(service) = conns.services.list().get(usize::from(svc)).copied() else {
        return Next::drop(DropReason::Malformed);
    };
    let Some(p) = ipv6::Packet::new_checked(buf.data().get(ethernet::HEADER_LEN..).unwrap_or(&[])) else {
        return Next::drop(DropReason::Malformed);
    };
    let (seg_len, hop_limit, proto) = (p.payload_len(), p.hop_limit(), p.next_header());
    let min = if proto == ipv4::PROTO_TCP { 20 } else { 8 };
    let l4 = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let Some(seg) = buf.data().get(l4..l4 + seg_len).filter(|s| s.len() >= min) else {
        return Next::drop(DropReason::Malformed);
    };
    let dst_port = u16::from_be_bytes([seg[2], seg[3]]);
    let tcp_flags = (proto == ipv4::PROTO_TCP).then(|| seg[13]);
    let Some(idx) = dst_port.checked_sub(PORT_BASE).map(usize::from) else {
        return Next::drop(DropReason::NatPortUnowned);
    };
    let Some((vf, vm_port, vm_ip)) =
        conns.per_service.get(usize::from(svc)).and_then(|s| s.slots.get(idx)).and_then(|c| c.key)
    else {
        return Next::drop(DropReason::NatPortUnowned);
    };
    conns.touch(usize::from(svc), idx, ctx.now_ns, tcp_flags);
    let Ok(total) = u16::try_from(seg_len + ipv4::MIN_HEADER_LEN) else {
        return Next::drop(DropReason::TooBig);
    };
    conns.ip_id = conns.ip_id.wrapping_add(1);
    let id = conns.ip_id;
    // [eth][ipv6 40][seg] → [eth][ipv4 20][seg]
    buf.truncate(l4 + seg_len);
    if !buf.adj(ipv6::HEADER_LEN - ipv4::MIN_HEADER_LEN) {
        return Next::drop(DropReason::Malformed);
    }
    let data = buf.data_mut();
    let Some((head, seg)) = data.split_at_mut_checked(ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN) else {
        return Next::drop(DropReason::Malformed);
    };
    head[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    let ip = &mut head[ethernet::HEADER_LEN..];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].fill(0);
    ip[8] = hop_limit;
    ip[9] = proto;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&service.virtual_ip.octets());
    ip[16..20].copy_from_slice(&vm_ip.octets());
    let ipck = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&ipck.to_be_bytes());
    seg[0..2].copy_from_slice(&service.virtual_port.to_be_bytes());
    seg[2..4].copy_from_slice(&vm_port.to_be_bytes());
    let ck = l4_checksum_offset(proto);
    seg[ck..ck + 2].fill(0);
    let mut sum = checksum::l4_v4(service.virtual_ip, vm_ip, proto, seg);
    if sum == 0 && proto == ipv4::PROTO_UDP {
        sum = 0xffff;
    }
    seg[ck..ck + 2].copy_from_slice(&sum.to_be_bytes());
    Next::VfTx(vf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::TestBuf;
    use crate::graph::testkit::{lab, ports::*};
    use crate::graph::{Pipeline, PipelineConfig, Verdict};

    /// scapy: Ether(dst=66:66:66:66:66:00, src=02:00:00:00:00:01)/IP(src=10.100.1.1, dst=1.2.3.4, ttl=64, id=1)/UDP(sport=12345, dport=5353)/b'dpfleet!'
    const REQ: [u8; 50] = [
        0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00,
        0x24, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x6b, 0x5e, 0x0a, 0x64, 0x01, 0x01, 0x01, 0x02, 0x03, 0x04,
        0x30, 0x39, 0x14, 0xe9, 0x00, 0x10, 0x06, 0xde, 0x64, 0x70, 0x66, 0x6c, 0x65, 0x65, 0x74, 0x21,
    ];
    /// scapy: Ether(dst=02:00:00:00:00:fe, src=22:22:22:22:22:00)/IPv6(src=fc00:1::1, dst=2a00:da8:fff6::1, hlim=64)/UDP(sport=1025, dport=53)/b'dpfleet!'
    const REQ_OUT: [u8; 70] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x22, 0x22, 0x22, 0x22, 0x22, 0x00, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x10, 0x11, 0x40, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x2a, 0x00, 0x0d, 0xa8, 0xff, 0xf6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x04, 0x01, 0x00, 0x35, 0x00, 0x10, 0x23, 0x92, 0x64, 0x70, 0x66, 0x6c, 0x65, 0x65,
        0x74, 0x21,
    ];
    /// scapy: Ether(dst=22:22:22:22:22:00, src=02:00:00:00:00:fe)/IPv6(src=2a00:da8:fff6::1, dst=fc00::ffff, hlim=62)/UDP(sport=53, dport=1025)/b'answer!!'
    const REP: [u8; 70] = [
        0x22, 0x22, 0x22, 0x22, 0x22, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x10, 0x11, 0x3e, 0x2a, 0x00, 0x0d, 0xa8, 0xff, 0xf6, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xff, 0xff, 0x00, 0x35, 0x04, 0x01, 0x00, 0x10, 0x6c, 0x7e, 0x61, 0x6e, 0x73, 0x77, 0x65, 0x72,
        0x21, 0x21,
    ];
    /// scapy: Ether(dst=02:00:00:00:00:01, src=66:66:66:66:66:00)/IP(src=1.2.3.4, dst=10.100.1.1, ttl=62, id=1, flags=0)/UDP(sport=5353, dport=12345)/b'answer!!'
    const REP_OUT: [u8; 50] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00,
        0x24, 0x00, 0x01, 0x00, 0x00, 0x3e, 0x11, 0x6d, 0x5e, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x64, 0x01, 0x01,
        0x14, 0xe9, 0x30, 0x39, 0x00, 0x10, 0x4f, 0xc8, 0x61, 0x6e, 0x73, 0x77, 0x65, 0x72, 0x21, 0x21,
    ];

    fn services() -> Arc<VirtualServices> {
        let a4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let a6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        Arc::new(
            VirtualServices::new(vec![
                VirtualService {
                    proto: ipv4::PROTO_UDP,
                    virtual_ip: a4("1.2.3.4"),
                    virtual_port: 5353,
                    service_ip: a6("2a00:da8:fff6::1"),
                    service_port: 53,
                },
                VirtualService {
                    proto: ipv4::PROTO_TCP,
                    virtual_ip: a4("5.6.7.8"),
                    virtual_port: 4443,
                    service_ip: a6("2a00:da8:fff6::2"),
                    service_port: 443,
                },
            ])
            .unwrap(),
        )
    }

    fn pipeline(timeout_s: u32) -> Pipeline {
        let cfg = PipelineConfig::new(PipelineConfig::SMALL_CAPACITY, timeout_s, 0, 1, 1);
        let mut p = Pipeline::with_config(Arc::default(), &cfg).unwrap();
        p.set_virtual_services(services());
        p
    }

    fn run(p: &mut Pipeline, port: PortId, now_ns: u64, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut bufs = [TestBuf::new(frame)];
        let mut v = [Verdict::Drop(DropReason::Malformed)];
        p.process_burst(&lab(), port, now_ns, &mut bufs, &mut v);
        (v[0], bufs[0].data().to_vec())
    }

    #[test]
    fn udp_request_and_reply_golden() {
        let mut p = pipeline(DEFAULT_TIMEOUT_S);
        assert_eq!(run(&mut p, VM1, 0, &REQ), (Verdict::Tx(PF0), REQ_OUT.to_vec()));
        assert_eq!(p.virtsvc().count(0), 1);
        assert!(p.flows().is_empty(), "virtual services bypass conntrack");
        assert_eq!(run(&mut p, PF0, 1, &REP), (Verdict::Tx(VM1), REP_OUT.to_vec()));
        // The same connection keeps its port; another VM port gets the next one.
        assert_eq!(run(&mut p, VM1, 2, &REQ).1, REQ_OUT.to_vec());
        let mut other = REQ;
        other[34..36].copy_from_slice(&12346u16.to_be_bytes());
        other[40..42].copy_from_slice(&checksum::update16(0x06de, 12345, 12346).to_be_bytes());
        let (v, out) = run(&mut p, VM1, 3, &other);
        assert_eq!(v, Verdict::Tx(PF0));
        assert_eq!(&out[54..56], &1026u16.to_be_bytes());
        let seg = &out[54..];
        let svc: Ipv6Addr = "2a00:da8:fff6::1".parse().unwrap();
        let ck = checksum::sum_words(checksum::pseudo_v6("fc00:1::1".parse().unwrap(), svc, 17, 16), seg);
        assert_eq!(checksum::finish(ck), 0, "UDP checksum verifies");
    }

    #[test]
    fn reply_to_unknown_port_and_non_service_dropped() {
        let mut p = pipeline(DEFAULT_TIMEOUT_S);
        // No connection yet at index 1.
        assert_eq!(run(&mut p, PF0, 0, &REP).0, Verdict::Drop(DropReason::NatPortUnowned));
        let mut low = REP;
        low[56..58].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(run(&mut p, PF0, 0, &low).0, Verdict::Drop(DropReason::NatPortUnowned));
        let mut other = REP;
        other[54..56].copy_from_slice(&54u16.to_be_bytes());
        assert_eq!(run(&mut p, PF0, 0, &other).0, Verdict::Drop(DropReason::NotTunnel));
        // Without services, the request is routed: encapsulated (next header 4).
        let mut plain = Pipeline::default();
        let (v, out) = run(&mut plain, VM1, 0, &REQ);
        assert_eq!((v, out.len(), out[20]), (Verdict::Tx(PF0), 90, ipv6::NH_IPV4));
    }

    #[test]
    fn interface_flush_forgets_connections() {
        let mut c = Connections::new(services(), DEFAULT_TIMEOUT_S);
        let k = (VM1, 1000, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(c.lookup_or_create(0, k, 0), Some(1));
        c.forget_port(VM2);
        assert_eq!(c.count(0), 1);
        c.forget_port(VM1);
        assert_eq!(c.count(0), 0);
    }

    #[test]
    fn allocation_ages_like_dpservice_test_mode() {
        // --flow-timeout=1: scan from index 1 every time (test_virtsvc_tcp_timeout).
        const S: u64 = 1_000_000_000;
        let mut c = Connections::new(services(), 1);
        let vm = Ipv4Addr::new(10, 0, 0, 1);
        let key = |p: u16| (VM1, p, vm);
        assert_eq!(c.lookup_or_create(1, key(12345), 0), Some(1));
        for f in [tcp::SYN, tcp::SYN | tcp::ACK, tcp::ACK, tcp::FIN | tcp::ACK, tcp::ACK] {
            c.touch(1, 1, 0, Some(f));
        }
        assert_eq!(c.lookup_or_create(1, key(12346), 0), Some(2));
        // A bare ACK does not establish; the handshake does.
        c.touch(1, 2, 0, Some(tcp::ACK));
        assert_eq!(c.lookup_or_create(1, key(9), 2 * S), Some(1), "closed slot aged");
        c.touch(1, 1, 0, Some(tcp::RST));
        for f in [tcp::SYN, tcp::SYN | tcp::ACK, tcp::ACK] {
            c.touch(1, 2, 0, Some(f));
        }
        assert_eq!(c.lookup_or_create(1, key(12348), 2 * S), Some(1), "aged slot reused");
        assert_eq!(c.lookup_or_create(1, key(12349), 2 * S), Some(3), "established slot kept");
        assert_eq!(c.lookup_or_create(1, key(12346), 2 * S), Some(2), "still known");
        // Default timeout: incremental from the last assigned index.
        let mut c = Connections::new(services(), DEFAULT_TIMEOUT_S);
        assert_eq!(c.lookup_or_create(0, key(1), 0), Some(1));
        assert_eq!(c.lookup_or_create(0, key(2), 100 * S), Some(2));
    }

    #[test]
    fn config_rejects_duplicates_and_port_zero() {
        let s = services().list()[0];
        let err = |l: Vec<VirtualService>| VirtualServices::new(l).err();
        assert_eq!(err(vec![s, s]), Some(VirtsvcError::DuplicateVirtual(s.virtual_ip, 5353)));
        let moved = VirtualService { virtual_port: 1, ..s };
        assert_eq!(err(vec![s, moved]), Some(VirtsvcError::DuplicateService(s.service_ip, 53)));
        assert_eq!(err(vec![VirtualService { service_port: 0, ..s }]), Some(VirtsvcError::PortZero));
        assert_eq!(err(vec![VirtualService { proto: 1, ..s }]), Some(VirtsvcError::Protocol(1)));
        let tcp = VirtualService { proto: ipv4::PROTO_TCP, ..s };
        assert_eq!(err(vec![s, tcp]), None, "per protocol");
    }
}
