//! NAT64 header translation (RFC 7915, the subset dpservice implements), in place.
//!
//! An interface with NAT and the IPv6 overlay reaches IPv4 hosts through the well-known
//! prefix `64:ff9b::/96` (RFC 6052): the conntrack stage allocates a NAT port as for
//! IPv4 NAT and translates with these functions.
//!
//! IPv6 → IPv4 ([`v6_to_v4`], the VM's packets):
//! - Ethernet type 0x0800; IPv4 with IHL 5, TOS = traffic class, identification 0, no
//!   flags, TTL = hop limit − 1 (the node routes the packet; hop limit 1 or 0 drops it),
//!   protocol = next header (ICMPv6 becomes ICMP), source = the NAT IP, destination =
//!   the IPv4 address in the last 32 bits of the IPv6 destination.
//! - TCP and UDP: source port = the NAT port; ICMPv6 echo request 128 / reply 129
//!   become ICMP echo 8 / 0 with code 0 and identifier = the NAT port. Every other
//!   ICMPv6 message, and any other next header (extension headers are not walked), is
//!   refused.
//!
//! IPv4 → IPv6 ([`v4_to_v6`], the replies):
//! - Ethernet type 0x86DD; IPv6 with traffic class = TOS, flow label 0, hop limit =
//!   TTL, next header = protocol (ICMP becomes ICMPv6), source = `64:ff9b::` + the IPv4
//!   source, destination = the VM's IPv6 address. IPv4 options are dropped.
//! - TCP and UDP: destination port = the VM's port; ICMP echo reply 0 / request 8
//!   become ICMPv6 129 / 128 with code 0 and identifier = the VM's. Every other ICMP
//!   message (errors included: dpservice translates none) and fragments are refused.
//!
//! Unlike dpservice, which zeroes the IPv4, TCP and UDP checksums and relies on TX
//! offload, every checksum is computed here (TCP and UDP over the new pseudo-header; a
//! computed UDP checksum of 0 is sent as 0xffff): the node's ports may offer no
//! offload.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::buf::PacketBuf;
use crate::graph::DropReason;
use crate::wire::checksum::{checksum, l4_v4, l4_v6};
use crate::wire::{ethernet, ipv6};

/// The NAT64 well-known prefix, `64:ff9b::/96`: its first 12 bytes.
pub const PREFIX: [u8; 12] = [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const ETH: usize = ethernet::HEADER_LEN;
const V4_HDR: usize = 20;

/// Whether `dst` lies in `64:ff9b::/96`.
pub fn is_nat64(dst: Ipv6Addr) -> bool {
    dst.octets()[..12] == PREFIX
}

/// The IPv4 address embedded in the last 32 bits of `dst`.
pub fn embedded(dst: Ipv6Addr) -> Ipv4Addr {
    let o = dst.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

/// `64:ff9b::` + `v4`.
pub fn synthesize(v4: Ipv4Addr) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o[..12].copy_from_slice(&PREFIX);
    o[12..].copy_from_slice(&v4.octets());
    Ipv6Addr::from(o)
}

/// The IPv4 protocol a packet of next header `nh` (and, for ICMPv6, type `icmp_type`)
/// becomes, with its ICMP type; `None` when it cannot be translated.
pub fn v4_protocol(nh: u8, icmp_type: u8) -> Option<(u8, u8)> {
    match (nh, icmp_type) {
        (PROTO_TCP | PROTO_UDP, _) => Some((nh, 0)),
        (PROTO_ICMPV6, 128) => Some((PROTO_ICMP, 8)),
        (PROTO_ICMPV6, 129) => Some((PROTO_ICMP, 0)),
        _ => None,
    }
}

fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Translates the IPv6 packet of `buf` (after its Ethernet header) into IPv4 from
/// `nat_ip`, with `nat_port` as its TCP/UDP source port or ICMP echo identifier. On
/// error the packet is left unchanged.
pub fn v6_to_v4<B: PacketBuf>(buf: &mut B, nat_ip: Ipv4Addr, nat_port: u16) -> Result<(), DropReason> {
    let data = buf.data();
    let ip = data.get(ETH..).ok_or(DropReason::Malformed)?;
    let p = ipv6::Packet::new_checked(ip).ok_or(DropReason::Malformed)?;
    let (dst, nh, hop, pl) = (p.dst(), p.next_header(), p.hop_limit(), p.payload_len());
    let l4 = p.payload();
    let vtc = u32::from_be_bytes([ip[0], ip[1], ip[2], ip[3]]);
    #[allow(clippy::cast_possible_truncation)] // the 8 traffic-class bits
    let tos = (vtc >> 20) as u8;
    let min_l4 = match nh {
        PROTO_TCP => 20,
        PROTO_UDP | PROTO_ICMPV6 => 8,
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    if l4.len() < min_l4 {
        return Err(DropReason::Malformed);
    }
    let (proto, icmp_type) = v4_protocol(nh, l4[0]).ok_or(DropReason::UnsupportedProtocol)?;
    if hop <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let total = u16::try_from(V4_HDR + pl).map_err(|_| DropReason::TooBig)?;
    let mut eth = [0u8; 12];
    eth.copy_from_slice(&data[..12]);
    buf.truncate(ETH + ipv6::HEADER_LEN + pl);
    if !buf.adj(ipv6::HEADER_LEN - V4_HDR) {
        return Err(DropReason::Malformed);
    }
    let d = buf.data_mut();
    // ETH + V4_HDR + pl bytes, as truncated above.
    d[..12].copy_from_slice(&eth);
    wr16(d, 12, ethernet::ETHERTYPE_IPV4);
    let dst4 = embedded(dst);
    {
        let h = &mut d[ETH..ETH + V4_HDR];
        h[0] = 0x45;
        h[1] = tos;
        wr16(h, 2, total);
        h[4..8].fill(0);
        h[8] = hop - 1;
        h[9] = proto;
        h[10..12].fill(0);
        h[12..16].copy_from_slice(&nat_ip.octets());
        h[16..20].copy_from_slice(&dst4.octets());
        let ck = checksum(h);
        wr16(h, 10, ck);
    }
    let seg = &mut d[ETH + V4_HDR..];
    match proto {
        PROTO_TCP => {
            wr16(seg, 0, nat_port);
            seg[16..18].fill(0);
            let ck = l4_v4(nat_ip, dst4, proto, seg);
            wr16(seg, 16, ck);
        }
        PROTO_UDP => {
            wr16(seg, 0, nat_port);
            seg[6..8].fill(0);
            let ck = l4_v4(nat_ip, dst4, proto, seg);
            wr16(seg, 6, if ck == 0 { 0xffff } else { ck });
        }
        _ => {
            seg[0] = icmp_type;
            seg[1] = 0;
            seg[2..4].fill(0);
            wr16(seg, 4, nat_port);
            let ck = checksum(seg);
            wr16(seg, 2, ck);
        }
    }
    Ok(())
}

/// Translates the IPv4 packet of `buf` (after its Ethernet header) into IPv6 from
/// `64:ff9b::<IPv4 source>` to `vm`, with `vm_port` as its TCP/UDP destination port or
/// ICMP echo identifier. On error the packet is left unchanged.
pub fn v4_to_v6<B: PacketBuf>(buf: &mut B, vm: Ipv6Addr, vm_port: u16) -> Result<(), DropReason> {
    let data = buf.data();
    let ip = data.get(ETH..).ok_or(DropReason::Malformed)?;
    if ip.len() < V4_HDR || ip[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if hl < V4_HDR || total < hl || total > ip.len() {
        return Err(DropReason::Malformed);
    }
    // More fragments, or an offset: a fragment cannot be translated alone.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(DropReason::UnsupportedProtocol);
    }
    let (tos, ttl, proto) = (ip[1], ip[8], ip[9]);
    let src4 = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let l4 = &ip[hl..total];
    let (nh, icmp_type) = match proto {
        PROTO_TCP if l4.len() >= 20 => (proto, 0),
        PROTO_UDP if l4.len() >= 8 => (proto, 0),
        PROTO_ICMP if l4.len() >= 8 => match l4[0] {
            0 => (PROTO_ICMPV6, 129),
            8 => (PROTO_ICMPV6, 128),
            _ => return Err(DropReason::UntrackedIcmp),
        },
        PROTO_TCP | PROTO_UDP | PROTO_ICMP => return Err(DropReason::Malformed),
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    let pl = total - hl;
    let payload_len = u16::try_from(pl).map_err(|_| DropReason::TooBig)?;
    let mut eth = [0u8; 12];
    eth.copy_from_slice(&data[..12]);
    buf.truncate(ETH + total);
    let resized = if hl < ipv6::HEADER_LEN {
        buf.prepend(ipv6::HEADER_LEN - hl)
    } else {
        buf.adj(hl - ipv6::HEADER_LEN)
    };
    if !resized {
        return Err(DropReason::NoRoom);
    }
    let src = synthesize(src4);
    let d = buf.data_mut();
    // ETH + 40 + pl bytes now.
    d[..12].copy_from_slice(&eth);
    wr16(d, 12, ethernet::ETHERTYPE_IPV6);
    let repr = ipv6::Repr {
        src,
        dst: vm,
        next_header: nh,
        payload_len,
        hop_limit: ttl,
        vtc_flow: 0x6000_0000 | (u32::from(tos) << 20),
    };
    if !repr.emit(&mut d[ETH..]) {
        return Err(DropReason::Malformed);
    }
    let seg = &mut d[ETH + ipv6::HEADER_LEN..];
    let ck_at = match nh {
        PROTO_TCP => {
            wr16(seg, 2, vm_port);
            16
        }
        PROTO_UDP => {
            wr16(seg, 2, vm_port);
            6
        }
        _ => {
            seg[0] = icmp_type;
            seg[1] = 0;
            wr16(seg, 4, vm_port);
            2
        }
    };
    seg[ck_at..ck_at + 2].fill(0);
    let ck = l4_v6(src, vm, nh, seg);
    wr16(seg, ck_at, if ck == 0 && nh == PROTO_UDP { 0xffff } else { ck });
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Golden frames through the whole graph: a VM of the reference lab with NAT on
    //! 172.21.1.1 (one port, 100) talks to 64:ff9b::808:808.

    use std::sync::Arc;

    use super::*;
    use crate::buf::TestBuf;
    use crate::config::{DnatTarget, PortId, Snapshot, UnderlayTarget};
    use crate::graph::testkit::{lab, ports::*, vm_mac, PF0_MAC, ROUTER_MAC};
    use crate::graph::{Pipeline, PipelineConfig, Verdict};
    use crate::tables::nat::{LocalNat, PortRange};

    const NAT_IP: Ipv4Addr = Ipv4Addr::new(172, 21, 1, 1);

    fn nat_ul() -> Ipv6Addr {
        "fc00:1::1:aa".parse().unwrap()
    }

    fn nat64_lab() -> Snapshot {
        let mut s = lab();
        let nat = LocalNat { nat_ip: NAT_IP, range: PortRange::new(100, 101).unwrap(), vni: 100 };
        s.iface_by_port[usize::from(VM1)].as_mut().unwrap().nat = Some(nat);
        s.underlay_targets.insert(nat_ul(), UnderlayTarget::Nat { port: VM1, vni: 100 });
        s.dnat.insert((100, NAT_IP), DnatTarget::Nat);
        s
    }

    fn run(p: &mut Pipeline, snap: &Snapshot, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut bufs = [TestBuf::new(frame)];
        let mut v = [Verdict::Drop(DropReason::TxFull)];
        p.process_burst(snap, port, 1_000_000_000, &mut bufs, &mut v);
        (v[0], bufs[0].to_vec())
    }

    fn from_vm(ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&PF0_MAC);
        f.extend_from_slice(&vm_mac(0));
        f.extend_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
        f.extend_from_slice(ip);
        f
    }

    fn from_router(ip: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&PF0_MAC);
        f.extend_from_slice(&ROUTER_MAC);
        f.extend_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
        let mut h = [0u8; ipv6::HEADER_LEN];
        let repr = ipv6::Repr {
            src: "fc00::ffff".parse().unwrap(),
            dst: nat_ul(),
            next_header: ipv6::NH_IPV4,
            payload_len: u16::try_from(ip.len()).unwrap(),
            hop_limit: 64,
            vtc_flow: 0x6000_0000,
        };
        assert!(repr.emit(&mut h));
        f.extend_from_slice(&h);
        f.extend_from_slice(ip);
        f
    }

    /// Sends `v6` from vm1 and checks that pf0 gets exactly `v4` inside a tunnel to the
    /// default route's next hop.
    fn egress(p: &mut Pipeline, snap: &Snapshot, v6: &[u8], v4: &[u8]) {
        let (v, out) = run(p, snap, VM1, &from_vm(v6));
        assert_eq!(v, Verdict::Tx(PF0));
        assert_eq!(&out[12..14], &ethernet::ETHERTYPE_IPV6.to_be_bytes());
        let outer = ipv6::Packet::new_checked(&out[ETH..]).unwrap();
        assert_eq!(outer.next_header(), ipv6::NH_IPV4);
        assert_eq!(outer.dst(), "fc00::ffff".parse::<Ipv6Addr>().unwrap());
        assert_eq!(&out[ETH + ipv6::HEADER_LEN..], v4);
    }

    /// Sends `v4` to the NAT underlay and checks that vm1 gets exactly `v6`.
    fn ingress(p: &mut Pipeline, snap: &Snapshot, v4: &[u8], v6: &[u8]) {
        let (v, out) = run(p, snap, PF0, &from_router(v4));
        assert_eq!(v, Verdict::Tx(VM1));
        assert_eq!(&out[..6], &vm_mac(0));
        assert_eq!(&out[12..14], &ethernet::ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(&out[ETH..], v6);
    }

    #[test]
    fn icmpv6_echo_becomes_icmp_echo_and_back() {
        let snap = nat64_lab();
        let mut p = Pipeline::with_config(Arc::default(), &PipelineConfig::small()).unwrap();
        p.neighbours().learn(VM1, vm_mac(0));
        egress(&mut p, &snap, &ECHO6_REQ, &ECHO4_REQ);
        // The flow's reply key is the IPv4 tuple: one flow, found from both sides.
        assert_eq!(p.flows().len(), 1);
        ingress(&mut p, &snap, &ECHO4_REPLY, &ECHO6_REPLY);
        // A later request reuses the flow and its port.
        egress(&mut p, &snap, &ECHO6_REQ, &ECHO4_REQ);
        assert_eq!(p.flows().len(), 1);
        assert_eq!(p.nat_mappings().len(), 1);
    }

    #[test]
    fn tcp_and_udp_are_translated_with_computed_checksums() {
        let snap = nat64_lab();
        let mut p = Pipeline::with_config(Arc::default(), &PipelineConfig::small()).unwrap();
        egress(&mut p, &snap, &TCP6_SYN, &TCP4_SYN);
        ingress(&mut p, &snap, &TCP4_SYNACK, &TCP6_SYNACK);
        // UDP shares the single NAT port: another protocol, another flow.
        egress(&mut p, &snap, &UDP6, &UDP4);
        assert_eq!(p.nat_mappings().len(), 2);
        // The range has one port: a second TCP flow to the same endpoint is refused.
        let mut other = TCP6_SYN;
        other[ipv6::HEADER_LEN + 1] ^= 1; // another source port
        let (v, _) = run(&mut p, &snap, VM1, &from_vm(&other));
        assert_eq!(v, Verdict::Drop(DropReason::NatExhausted));
    }

    #[test]
    fn untranslatable_messages_are_dropped() {
        let snap = nat64_lab();
        let mut p = Pipeline::with_config(Arc::default(), &PipelineConfig::small()).unwrap();
        egress(&mut p, &snap, &ECHO6_REQ, &ECHO4_REQ);
        // An ICMP error quoting the flow is not translated back (as in dpservice).
        let mut err = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 60, 1, 0, 0, 8, 8, 8, 8, 172, 21, 1, 1];
        err.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
        err.extend_from_slice(&TCP4_SYN[..28]);
        let total = u16::try_from(err.len()).unwrap();
        err[2..4].copy_from_slice(&total.to_be_bytes());
        let ck = checksum(&err[..20]);
        err[10..12].copy_from_slice(&ck.to_be_bytes());
        let ck = checksum(&err[20..]);
        err[22..24].copy_from_slice(&ck.to_be_bytes());
        // The quoted TCP flow exists once the VM opened it.
        egress(&mut p, &snap, &TCP6_SYN, &TCP4_SYN);
        let (v, _) = run(&mut p, &snap, PF0, &from_router(&err));
        assert_eq!(v, Verdict::Drop(DropReason::UntrackedIcmp));
        // ICMPv6 other than echo (here a destination unreachable) has no IPv4 form.
        let mut unreach = ECHO6_REQ;
        unreach[ipv6::HEADER_LEN] = 1;
        let (v, _) = run(&mut p, &snap, VM1, &from_vm(&unreach));
        assert_ne!(v, Verdict::Tx(PF0));
        // Hop limit 1 cannot be forwarded.
        let mut last_hop = UDP6;
        last_hop[7] = 1;
        let (v, _) = run(&mut p, &snap, VM1, &from_vm(&last_hop));
        assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
    }

    #[test]
    fn prefix_helpers() {
        let d: Ipv6Addr = "64:ff9b::808:808".parse().unwrap();
        assert!(is_nat64(d));
        assert!(!is_nat64("64:ff9b:1::808:808".parse().unwrap()));
        assert_eq!(embedded(d), Ipv4Addr::new(8, 8, 8, 8));
        assert_eq!(synthesize(Ipv4Addr::new(8, 8, 8, 8)), d);
    }

    /// scapy: IPv6(src="2000:100:1::1", dst="64:ff9b::808:808", hlim=64)/ICMPv6EchoRequest(id=0x1234, seq=1, data=b"ping")
    const ECHO6_REQ: [u8; 52] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x3a, 0x40, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x64, 0xff, 0x9b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x08, 0x08, 0x08, 0x08, 0x80, 0x00, 0x5d, 0xa1, 0x12, 0x34, 0x00, 0x01, 0x70, 0x69, 0x6e,
        0x67,
    ];
    /// scapy: IP(src="172.21.1.1", dst="8.8.8.8", ttl=63, id=0)/ICMP(type=8, id=100, seq=1)/b"ping"
    const ECHO4_REQ: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x01, 0xbe, 0xb7, 0xac, 0x15, 0x01, 0x01, 0x08,
        0x08, 0x08, 0x08, 0x08, 0x00, 0x18, 0xca, 0x00, 0x64, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67,
    ];
    /// scapy: IP(src="8.8.8.8", dst="172.21.1.1", ttl=60, id=7)/ICMP(type=0, id=100, seq=1)/b"ping"
    const ECHO4_REPLY: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x00, 0x07, 0x00, 0x00, 0x3c, 0x01, 0xc1, 0xb0, 0x08, 0x08, 0x08, 0x08, 0xac,
        0x15, 0x01, 0x01, 0x00, 0x00, 0x20, 0xca, 0x00, 0x64, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67,
    ];
    /// scapy: IPv6(src="64:ff9b::808:808", dst="2000:100:1::1", hlim=60)/ICMPv6EchoReply(id=0x1234, seq=1, data=b"ping")
    const ECHO6_REPLY: [u8; 52] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x3a, 0x3c, 0x00, 0x64, 0xff, 0x9b, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x08, 0x08, 0x08, 0x08, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0x5c, 0xa1, 0x12, 0x34, 0x00, 0x01, 0x70, 0x69, 0x6e,
        0x67,
    ];
    /// scapy: IPv6(src="2000:100:1::1", dst="64:ff9b::808:808", hlim=64, tc=0x28)/TCP(sport=1246, dport=80, flags="S", seq=1000, window=8192)
    const TCP6_SYN: [u8; 60] = [
        0x62, 0x80, 0x00, 0x00, 0x00, 0x14, 0x06, 0x40, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x64, 0xff, 0x9b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x08, 0x08, 0x08, 0x08, 0x04, 0xde, 0x00, 0x50, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00,
        0x00, 0x50, 0x02, 0x20, 0x00, 0x55, 0xbb, 0x00, 0x00,
    ];
    /// scapy: IP(src="172.21.1.1", dst="8.8.8.8", ttl=63, id=0, tos=0x28)/TCP(sport=100, dport=80, flags="S", seq=1000, window=8192)
    const TCP4_SYN: [u8; 40] = [
        0x45, 0x28, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x06, 0xbe, 0x82, 0xac, 0x15, 0x01, 0x01, 0x08,
        0x08, 0x08, 0x08, 0x00, 0x64, 0x00, 0x50, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02,
        0x20, 0x00, 0xce, 0x20, 0x00, 0x00,
    ];
    /// scapy: IP(src="8.8.8.8", dst="172.21.1.1", ttl=50, id=3)/TCP(sport=80, dport=100, flags="SA", seq=5, ack=1001, window=1024)/b"hi"
    const TCP4_SYNACK: [u8; 42] = [
        0x45, 0x00, 0x00, 0x2a, 0x00, 0x03, 0x00, 0x00, 0x32, 0x06, 0xcb, 0xa5, 0x08, 0x08, 0x08, 0x08, 0xac,
        0x15, 0x01, 0x01, 0x00, 0x50, 0x00, 0x64, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x03, 0xe9, 0x50, 0x12,
        0x04, 0x00, 0x81, 0x9f, 0x00, 0x00, 0x68, 0x69,
    ];
    /// scapy: IPv6(src="64:ff9b::808:808", dst="2000:100:1::1", hlim=50)/TCP(sport=80, dport=1246, flags="SA", seq=5, ack=1001, window=1024)/b"hi"
    const TCP6_SYNACK: [u8; 62] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x16, 0x06, 0x32, 0x00, 0x64, 0xff, 0x9b, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x08, 0x08, 0x08, 0x08, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x50, 0x04, 0xde, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x03,
        0xe9, 0x50, 0x12, 0x04, 0x00, 0x09, 0x3a, 0x00, 0x00, 0x68, 0x69,
    ];
    /// scapy: IPv6(src="2000:100:1::1", dst="64:ff9b::808:808", hlim=64)/UDP(sport=5353, dport=53)/b"query"
    const UDP6: [u8; 53] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x0d, 0x11, 0x40, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x64, 0xff, 0x9b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x08, 0x08, 0x08, 0x08, 0x14, 0xe9, 0x00, 0x35, 0x00, 0x0d, 0x69, 0xbc, 0x71, 0x75, 0x65,
        0x72, 0x79,
    ];
    /// scapy: IP(src="172.21.1.1", dst="8.8.8.8", ttl=63, id=0)/UDP(sport=100, dport=53)/b"query"
    const UDP4: [u8; 33] = [
        0x45, 0x00, 0x00, 0x21, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x11, 0xbe, 0xa6, 0xac, 0x15, 0x01, 0x01, 0x08,
        0x08, 0x08, 0x08, 0x00, 0x64, 0x00, 0x35, 0x00, 0x0d, 0xf2, 0x2c, 0x71, 0x75, 0x65, 0x72, 0x79,
    ];
}
