//! Building the frames a VM or the underlay router sends, and reading the node's answers.
//!
//! Ethernet, IP, UDP and ICMP go through `etherparse`; ARP, DHCP, DHCPv6 and Neighbor
//! Discovery bodies are small enough to write out here by field. Parsers return `None`
//! for anything that is not the expected kind of frame, so they double as predicates.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv6FlowLabel, Ipv6Header, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};

/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// ARP opcode of a request.
pub const ARP_REQUEST: u16 = 1;
/// ARP opcode of a reply.
pub const ARP_REPLY: u16 = 2;
/// DHCP message types (option 53).
pub mod dhcp_type {
    /// DHCPDISCOVER
    pub const DISCOVER: u8 = 1;
    /// DHCPOFFER
    pub const OFFER: u8 = 2;
    /// DHCPREQUEST
    pub const REQUEST: u8 = 3;
    /// DHCPACK
    pub const ACK: u8 = 5;
}
/// DHCPv6 message types.
pub mod dhcpv6_type {
    /// SOLICIT
    pub const SOLICIT: u8 = 1;
    /// ADVERTISE
    pub const ADVERTISE: u8 = 2;
    /// REQUEST
    pub const REQUEST: u8 = 3;
    /// REPLY
    pub const REPLY: u8 = 7;
}

// ---------------------------------------------------------------------------------------
// Checksums

/// One's complement sum of `data` (as big-endian 16-bit words) added to `acc`.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::try_from(acc).unwrap_or(0xffff)
}

/// Checks every checksum in `frame` that can be checked: the IPv4 header, and UDP, TCP,
/// ICMP or ICMPv6 of the innermost packet (through IP-in-IPv6). A UDP checksum of zero
/// over IPv4 means "none" and passes.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let pkt = SlicedPacket::from_ethernet(frame).map_err(|e| format!("unparsable: {e}"))?;
    match &pkt.net {
        Some(NetSlice::Ipv4(ip)) => {
            let hdr = ip.header().slice();
            if fold(sum16(0, hdr)) != 0xffff {
                return Err("bad IPv4 header checksum".into());
            }
            verify_l4_v4(
                ip.header().source(),
                ip.header().destination(),
                ip.header().protocol(),
                ip.payload().payload,
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let nh = ip.payload().ip_number;
            let payload = ip.payload().payload;
            match nh {
                IpNumber::IPV4 | IpNumber::IPV6 => {
                    let inner =
                        SlicedPacket::from_ip(payload).map_err(|e| format!("bad inner packet: {e}"))?;
                    match inner.net {
                        Some(NetSlice::Ipv4(i)) => {
                            if fold(sum16(0, i.header().slice())) != 0xffff {
                                return Err("bad inner IPv4 header checksum".into());
                            }
                            verify_l4_v4(
                                i.header().source(),
                                i.header().destination(),
                                i.header().protocol(),
                                i.payload().payload,
                            )
                        }
                        Some(NetSlice::Ipv6(i)) => verify_l4_v6(
                            i.header().source(),
                            i.header().destination(),
                            i.payload().ip_number,
                            i.payload().payload,
                        ),
                        None => Err("no inner IP packet".into()),
                    }
                }
                _ => verify_l4_v6(ip.header().source(), ip.header().destination(), nh, payload),
            }
        }
        None => Ok(()),
    }
}

fn verify_l4_v4(src: [u8; 4], dst: [u8; 4], proto: IpNumber, l4: &[u8]) -> Result<(), String> {
    let len = u32::try_from(l4.len()).unwrap_or(0);
    let pseudo = sum16(sum16(0, &src), &dst) + u32::from(proto.0) + len;
    let ok = match proto {
        IpNumber::UDP => l4.len() >= 8 && (l4[6..8] == [0, 0] || fold(sum16(pseudo, l4)) == 0xffff),
        IpNumber::TCP => fold(sum16(pseudo, l4)) == 0xffff,
        IpNumber::ICMP => fold(sum16(0, l4)) == 0xffff,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("bad {proto:?} checksum over IPv4"))
    }
}

fn verify_l4_v6(src: [u8; 16], dst: [u8; 16], nh: IpNumber, l4: &[u8]) -> Result<(), String> {
    let len = u32::try_from(l4.len()).unwrap_or(0);
    let pseudo = sum16(sum16(0, &src), &dst) + len + u32::from(nh.0);
    let ok = match nh {
        IpNumber::UDP | IpNumber::TCP | IpNumber::IPV6_ICMP => fold(sum16(pseudo, l4)) == 0xffff,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("bad {nh:?} checksum over IPv6"))
    }
}

// ---------------------------------------------------------------------------------------
// Ethernet

/// Destination MAC of a frame.
pub fn eth_dst(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(0..6)?.try_into().ok()
}

/// Source MAC of a frame.
pub fn eth_src(frame: &[u8]) -> Option<[u8; 6]> {
    frame.get(6..12)?.try_into().ok()
}

/// EtherType of a frame (no VLAN handling: the tests use none).
pub fn ether_type(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?))
}

fn eth(dst: [u8; 6], src: [u8; 6], ether_type: EtherType) -> Vec<u8> {
    Ethernet2Header { destination: dst, source: src, ether_type }.to_bytes().to_vec()
}

// ---------------------------------------------------------------------------------------
// ARP

/// An ARP packet over Ethernet/IPv4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: [u8; 6],
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// Parses an Ethernet/IPv4 ARP frame.
    pub fn parse(frame: &[u8]) -> Option<Arp> {
        if ether_type(frame)? != 0x0806 {
            return None;
        }
        let a = frame.get(14..42)?;
        if a[0..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes([a[6], a[7]]),
            sha: a[8..14].try_into().ok()?,
            spa: Ipv4Addr::new(a[14], a[15], a[16], a[17]),
            tha: a[18..24].try_into().ok()?,
            tpa: Ipv4Addr::new(a[24], a[25], a[26], a[27]),
        })
    }

    /// The frame carrying this ARP packet from `self.sha` to `dst`.
    pub fn to_frame(&self, dst: [u8; 6]) -> Vec<u8> {
        let mut f = eth(dst, self.sha, EtherType::ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
        f.extend_from_slice(&self.op.to_be_bytes());
        f.extend_from_slice(&self.sha);
        f.extend_from_slice(&self.spa.octets());
        f.extend_from_slice(&self.tha);
        f.extend_from_slice(&self.tpa.octets());
        f
    }
}

/// A broadcast "who has `target`" from `mac`/`ip`.
pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    Arp { op: ARP_REQUEST, sha: mac, spa: ip, tha: [0; 6], tpa: target }.to_frame(BROADCAST)
}

// ---------------------------------------------------------------------------------------
// IPv4 / IPv6 with ICMP, UDP

/// An IPv4 packet (no Ethernet) carrying an ICMP echo request or reply.
pub fn ipv4_icmp_echo(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    reply: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    let b = if reply { b.icmpv4_echo_reply(id, seq) } else { b.icmpv4_echo_request(id, seq) };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("write to Vec");
    out
}

/// An IPv6 packet (no Ethernet) carrying an ICMPv6 echo request or reply.
pub fn ipv6_icmp_echo(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    reply: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ipv6(src.octets(), dst.octets(), 64);
    let b = if reply { b.icmpv6_echo_reply(id, seq) } else { b.icmpv6_echo_request(id, seq) };
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("write to Vec");
    out
}

/// Puts an IPv4 or IPv6 packet into an Ethernet frame.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ip_packet: &[u8]) -> Vec<u8> {
    let ty = if ip_packet.first().map(|b| b >> 4) == Some(6) { EtherType::IPV6 } else { EtherType::IPV4 };
    let mut f = eth(dst, src, ty);
    f.extend_from_slice(ip_packet);
    f
}

/// An Ethernet frame carrying `inner` (an IPv4 or IPv6 packet) inside IPv6 from
/// `outer_src` to `outer_dst`, as the underlay carries overlay traffic.
pub fn ethernet_ip_in_ipv6(
    dst: [u8; 6],
    src: [u8; 6],
    outer_src: Ipv6Addr,
    outer_dst: Ipv6Addr,
    inner: &[u8],
) -> Vec<u8> {
    let next = if inner.first().map(|b| b >> 4) == Some(6) { IpNumber::IPV6 } else { IpNumber::IPV4 };
    let hdr = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: u16::try_from(inner.len()).expect("inner packet fits"),
        next_header: next,
        hop_limit: 64,
        source: outer_src.octets(),
        destination: outer_dst.octets(),
    };
    let mut f = eth(dst, src, EtherType::IPV6);
    f.extend_from_slice(&hdr.to_bytes());
    f.extend_from_slice(inner);
    f
}

/// A UDP datagram in IPv4 in Ethernet.
pub fn ethernet_ipv4_udp(
    dst: [u8; 6],
    src: [u8; 6],
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let b =
        PacketBuilder::ethernet2(src, dst).ipv4(ip_src.octets(), ip_dst.octets(), 64).udp(ports.0, ports.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("write to Vec");
    out
}

/// A UDP datagram in IPv6 in Ethernet.
pub fn ethernet_ipv6_udp(
    dst: [u8; 6],
    src: [u8; 6],
    ip_src: Ipv6Addr,
    ip_dst: Ipv6Addr,
    ports: (u16, u16),
    payload: &[u8],
) -> Vec<u8> {
    let b =
        PacketBuilder::ethernet2(src, dst).ipv6(ip_src.octets(), ip_dst.octets(), 64).udp(ports.0, ports.1);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("write to Vec");
    out
}

/// The interesting parts of an IP packet, outer or inner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ip {
    /// IPv4: source, destination, protocol, payload.
    V4 { src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: Vec<u8> },
    /// IPv6: source, destination, next header, payload.
    V6 { src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: Vec<u8> },
}

impl Ip {
    /// Parses an IP packet (without Ethernet).
    pub fn parse(packet: &[u8]) -> Option<Ip> {
        let p = SlicedPacket::from_ip(packet).ok()?;
        Ip::from_net(p.net?)
    }

    /// Parses the IP packet of an Ethernet frame.
    pub fn from_frame(frame: &[u8]) -> Option<Ip> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        Ip::from_net(p.net?)
    }

    fn from_net(net: NetSlice<'_>) -> Option<Ip> {
        Some(match net {
            NetSlice::Ipv4(ip) => Ip::V4 {
                src: ip.header().source_addr(),
                dst: ip.header().destination_addr(),
                proto: ip.header().protocol().0,
                payload: ip.payload().payload.to_vec(),
            },
            NetSlice::Ipv6(ip) => Ip::V6 {
                src: ip.header().source_addr(),
                dst: ip.header().destination_addr(),
                next: ip.payload().ip_number.0,
                payload: ip.payload().payload.to_vec(),
            },
        })
    }

    /// The payload (after all IPv6 extension headers etherparse knows).
    pub fn payload(&self) -> &[u8] {
        match self {
            Ip::V4 { payload, .. } | Ip::V6 { payload, .. } => payload,
        }
    }

    /// The inner packet of an IPv4-in-IPv6 or IPv6-in-IPv6 packet.
    pub fn decapsulate(&self) -> Option<Ip> {
        match self {
            Ip::V6 { next: 4 | 41, payload, .. } => Ip::parse(payload),
            _ => None,
        }
    }
}

/// An ICMP or ICMPv6 echo message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echo {
    /// True for a reply, false for a request.
    pub reply: bool,
    /// Identifier.
    pub id: u16,
    /// Sequence number.
    pub seq: u16,
    /// Data.
    pub payload: Vec<u8>,
}

impl Echo {
    /// Parses the echo message inside an IP packet (ICMP for IPv4, ICMPv6 for IPv6).
    pub fn from_ip(ip: &Ip) -> Option<Echo> {
        let (data, req, rep) = match ip {
            Ip::V4 { proto: 1, payload, .. } => (payload, 8, 0),
            Ip::V6 { next: 58, payload, .. } => (payload, 128, 129),
            _ => return None,
        };
        let ty = *data.first()?;
        if (ty != req && ty != rep) || data.len() < 8 {
            return None;
        }
        Some(Echo {
            reply: ty == rep,
            id: u16::from_be_bytes([data[4], data[5]]),
            seq: u16::from_be_bytes([data[6], data[7]]),
            payload: data[8..].to_vec(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// DHCPv4

/// A BOOTP/DHCP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcp {
    /// 1 request, 2 reply.
    pub op: u8,
    /// Transaction id.
    pub xid: u32,
    /// Flags (bit 15: broadcast).
    pub flags: u16,
    /// Client address.
    pub ciaddr: Ipv4Addr,
    /// "Your" address: the lease.
    pub yiaddr: Ipv4Addr,
    /// Next server.
    pub siaddr: Ipv4Addr,
    /// Relay agent.
    pub giaddr: Ipv4Addr,
    /// Client hardware address (first 6 bytes).
    pub chaddr: [u8; 6],
    /// Options in order (code, value), without pad and end.
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Dhcp {
    /// A client message of type `msg_type` from `mac`, with extra options.
    pub fn client(msg_type: u8, xid: u32, mac: [u8; 6], mut extra: Vec<(u8, Vec<u8>)>) -> Dhcp {
        let mut options = vec![(53, vec![msg_type])];
        options.append(&mut extra);
        Dhcp {
            op: 1,
            xid,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options,
        }
    }

    /// The BOOTP bytes (236 fixed bytes, magic cookie, options, end).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![self.op, 1, 6, 0];
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.resize(236, 0);
        b.extend_from_slice(&[99, 130, 83, 99]);
        for (code, value) in &self.options {
            b.push(*code);
            b.push(u8::try_from(value.len()).expect("option fits"));
            b.extend_from_slice(value);
        }
        b.push(255);
        b
    }

    /// Parses a BOOTP message (the UDP payload).
    pub fn parse(b: &[u8]) -> Option<Dhcp> {
        if b.len() < 240 || b[236..240] != [99, 130, 83, 99] {
            return None;
        }
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        let mut options = Vec::new();
        let mut i = 240;
        while i < b.len() {
            let code = b[i];
            i += 1;
            match code {
                0 => continue,
                255 => break,
                _ => {
                    let len = usize::from(*b.get(i)?);
                    let value = b.get(i + 1..i + 1 + len)?.to_vec();
                    options.push((code, value));
                    i += 1 + len;
                }
            }
        }
        Some(Dhcp {
            op: b[0],
            xid: u32::from_be_bytes(b[4..8].try_into().ok()?),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr: b[28..34].try_into().ok()?,
            options,
        })
    }

    /// Parses the DHCP message of a frame (UDP to port 67 or 68 over IPv4).
    pub fn from_frame(frame: &[u8]) -> Option<Dhcp> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        match p.transport? {
            TransportSlice::Udp(u) if matches!(u.destination_port(), 67 | 68) => Dhcp::parse(u.payload()),
            _ => None,
        }
    }

    /// The value of option `code`, if present.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
    }

    /// The message type (option 53).
    pub fn msg_type(&self) -> Option<u8> {
        self.option(53)?.first().copied()
    }

    /// An option made of IPv4 addresses (router, DNS, server id), as addresses.
    pub fn addresses(&self, code: u8) -> Option<Vec<Ipv4Addr>> {
        let v = self.option(code)?;
        if v.len() % 4 != 0 {
            return None;
        }
        Some(v.chunks_exact(4).map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3])).collect())
    }

    /// The classless static routes of option 121 as (prefix, length, router).
    pub fn classless_routes(&self) -> Option<Vec<(Ipv4Addr, u8, Ipv4Addr)>> {
        let v = self.option(121)?;
        let mut out = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let len = v[i];
            let n = usize::from(len).div_ceil(8);
            let mut pfx = [0u8; 4];
            pfx.get_mut(..n)?.copy_from_slice(v.get(i + 1..i + 1 + n)?);
            let r = v.get(i + 1 + n..i + 5 + n)?;
            out.push((Ipv4Addr::from(pfx), len, Ipv4Addr::new(r[0], r[1], r[2], r[3])));
            i += 5 + n;
        }
        Some(out)
    }
}

/// A DHCP client message broadcast from `mac` (0.0.0.0:68 → 255.255.255.255:67).
pub fn dhcp_frame(mac: [u8; 6], msg: &Dhcp) -> Vec<u8> {
    ethernet_ipv4_udp(BROADCAST, mac, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, (68, 67), &msg.to_bytes())
}

// ---------------------------------------------------------------------------------------
// IPv6 link-local, Neighbor Discovery, DHCPv6

/// The EUI-64 link-local address of `mac`.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 2, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// The solicited-node multicast address of `ip` and its MAC.
pub fn solicited_node(ip: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let o = ip.octets();
    let addr =
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]));
    (addr, [0x33, 0x33, 0xff, o[13], o[14], o[15]])
}

/// A Neighbor Solicitation for `target` from `mac`/`src` (with a source link-layer
/// address option), to the target's solicited-node multicast address.
pub fn neighbor_solicitation(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let (dst, dst_mac) = solicited_node(target);
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&mac);
    let b = PacketBuilder::ethernet2(mac, dst_mac)
        .ipv6(src.octets(), dst.octets(), 255)
        .icmpv6(etherparse::Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] });
    let mut out = Vec::new();
    b.write(&mut out, &body).expect("write to Vec");
    out
}

/// A Neighbor Advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborAdvert {
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// IPv6 destination.
    pub dst: Ipv6Addr,
    /// Hop limit (must be 255).
    pub hop_limit: u8,
    /// R, S, O flags (top three bits).
    pub flags: u8,
    /// The address advertised.
    pub target: Ipv6Addr,
    /// Target link-layer address option, if present.
    pub target_mac: Option<[u8; 6]>,
}

impl NeighborAdvert {
    /// Parses a Neighbor Advertisement frame.
    pub fn parse(frame: &[u8]) -> Option<NeighborAdvert> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(NetSlice::Ipv6(ip)) = &p.net else { return None };
        let hop_limit = ip.header().hop_limit();
        let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
        let TransportSlice::Icmpv6(icmp) = p.transport? else { return None };
        let msg = icmp.slice();
        if msg.first() != Some(&136) || msg.len() < 24 {
            return None;
        }
        let target = Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).ok()?);
        let mut target_mac = None;
        let mut opts = &msg[24..];
        while opts.len() >= 8 {
            let len = usize::from(opts[1]) * 8;
            if len == 0 || len > opts.len() {
                break;
            }
            if opts[0] == 2 {
                target_mac = opts[2..8].try_into().ok();
            }
            opts = &opts[len..];
        }
        Some(NeighborAdvert { src, dst, hop_limit, flags: msg[4], target, target_mac })
    }
}

/// A DHCPv6 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcpv6 {
    /// Message type.
    pub msg_type: u8,
    /// Transaction id (24 bits).
    pub trid: u32,
    /// Options in order (code, value).
    pub options: Vec<(u16, Vec<u8>)>,
}

/// DHCPv6 option codes used by the tests.
pub mod dhcpv6_opt {
    /// Client identifier.
    pub const CLIENTID: u16 = 1;
    /// Server identifier.
    pub const SERVERID: u16 = 2;
    /// Identity association for non-temporary addresses.
    pub const IA_NA: u16 = 3;
    /// Address inside IA_NA.
    pub const IAADDR: u16 = 5;
    /// Option request.
    pub const ORO: u16 = 6;
    /// Elapsed time.
    pub const ELAPSED_TIME: u16 = 8;
    /// Rapid commit.
    pub const RAPID_COMMIT: u16 = 14;
    /// DNS recursive name servers.
    pub const DNS_SERVERS: u16 = 23;
}

fn tlvs(mut b: &[u8]) -> Option<Vec<(u16, Vec<u8>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let code = u16::from_be_bytes(b.get(0..2)?.try_into().ok()?);
        let len = usize::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?));
        out.push((code, b.get(4..4 + len)?.to_vec()));
        b = &b[4 + len..];
    }
    Some(out)
}

fn tlv(code: u16, value: &[u8]) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(&u16::try_from(value.len()).expect("option fits").to_be_bytes());
    v.extend_from_slice(value);
    v
}

impl Dhcpv6 {
    /// The DUID-LL (type 3, hardware type 1) of `mac`.
    pub fn duid_ll(mac: [u8; 6]) -> Vec<u8> {
        let mut d = vec![0, 3, 0, 1];
        d.extend_from_slice(&mac);
        d
    }

    /// An IA_NA option value with `iaid`, T1 = T2 = 0, and an IAADDR if given.
    pub fn ia_na(iaid: u32, addr: Option<Ipv6Addr>) -> Vec<u8> {
        let mut v = iaid.to_be_bytes().to_vec();
        v.extend_from_slice(&[0; 8]);
        if let Some(a) = addr {
            let mut ia = a.octets().to_vec();
            ia.extend_from_slice(&[0; 8]);
            v.extend(tlv(dhcpv6_opt::IAADDR, &ia));
        }
        v
    }

    /// The UDP payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![self.msg_type];
        b.extend_from_slice(&self.trid.to_be_bytes()[1..]);
        for (code, value) in &self.options {
            b.extend(tlv(*code, value));
        }
        b
    }

    /// Parses a UDP payload.
    pub fn parse(b: &[u8]) -> Option<Dhcpv6> {
        Some(Dhcpv6 {
            msg_type: *b.first()?,
            trid: u32::from_be_bytes([0, *b.get(1)?, *b.get(2)?, *b.get(3)?]),
            options: tlvs(&b[4..])?,
        })
    }

    /// Parses the DHCPv6 message of a frame (UDP to port 546 or 547 over IPv6).
    pub fn from_frame(frame: &[u8]) -> Option<Dhcpv6> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        match p.transport? {
            TransportSlice::Udp(u) if matches!(u.destination_port(), 546 | 547) => Dhcpv6::parse(u.payload()),
            _ => None,
        }
    }

    /// The value of option `code`, if present.
    pub fn option(&self, code: u16) -> Option<&[u8]> {
        self.options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
    }

    /// IAID and addresses of the IA_NA option.
    pub fn ia_na_addresses(&self) -> Option<(u32, Vec<Ipv6Addr>)> {
        let v = self.option(dhcpv6_opt::IA_NA)?;
        let iaid = u32::from_be_bytes(v.get(0..4)?.try_into().ok()?);
        let inner = tlvs(v.get(12..)?)?;
        let addrs = inner
            .iter()
            .filter(|(c, _)| *c == dhcpv6_opt::IAADDR)
            .filter_map(|(_, a)| Some(Ipv6Addr::from(<[u8; 16]>::try_from(a.get(0..16)?).ok()?)))
            .collect();
        Some((iaid, addrs))
    }

    /// The DNS servers option, as addresses.
    pub fn dns_servers(&self) -> Option<Vec<Ipv6Addr>> {
        let v = self.option(dhcpv6_opt::DNS_SERVERS)?;
        if v.len() % 16 != 0 {
            return None;
        }
        Some(v.chunks_exact(16).filter_map(|c| Some(Ipv6Addr::from(<[u8; 16]>::try_from(c).ok()?))).collect())
    }
}

/// A DHCPv6 client message from `mac` (its link-local address, port 546) to
/// All_DHCP_Relay_Agents_and_Servers (ff02::1:2, port 547).
pub fn dhcpv6_frame(mac: [u8; 6], msg: &Dhcpv6) -> Vec<u8> {
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
    ethernet_ipv6_udp([0x33, 0x33, 0, 1, 0, 2], mac, link_local(mac), dst, (546, 547), &msg.to_bytes())
}

// ---------------------------------------------------------------------------------------
// Descriptions for failure messages

/// A one-line description of a frame.
pub fn describe(frame: &[u8]) -> String {
    let mut s = String::new();
    let mac = |m: Option<[u8; 6]>| m.map_or("?".to_string(), crate::topo::mac_str);
    let _ = write!(s, "{} > {} ", mac(eth_src(frame)), mac(eth_dst(frame)));
    if let Some(a) = Arp::parse(frame) {
        let _ = write!(
            s,
            "ARP op {} {} ({}) -> {} ({})",
            a.op,
            a.spa,
            crate::topo::mac_str(a.sha),
            a.tpa,
            crate::topo::mac_str(a.tha)
        );
        return s;
    }
    match Ip::from_frame(frame) {
        Some(ip) => describe_ip(&mut s, &ip),
        None => {
            let _ = write!(s, "type {:04x?}, {} bytes", ether_type(frame), frame.len());
        }
    }
    s
}

fn describe_ip(s: &mut String, ip: &Ip) {
    match ip {
        Ip::V4 { src, dst, proto, payload } => {
            let _ = write!(s, "IPv4 {src} > {dst} proto {proto} len {}", payload.len());
        }
        Ip::V6 { src, dst, next, payload } => {
            let _ = write!(s, "IPv6 {src} > {dst} next {next} len {}", payload.len());
        }
    }
    if let Some(inner) = ip.decapsulate() {
        s.push_str(" [");
        describe_ip(s, &inner);
        s.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_round_trip() {
        let f = arp_request([2, 0, 0, 0, 1, 1], Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(169, 254, 0, 1));
        assert_eq!(f.len(), 42);
        let a = Arp::parse(&f).unwrap();
        assert_eq!(a.op, ARP_REQUEST);
        assert_eq!(a.tpa, Ipv4Addr::new(169, 254, 0, 1));
    }

    #[test]
    fn dhcp_round_trip_and_checksums() {
        let m =
            Dhcp::client(dhcp_type::DISCOVER, 0x1234_5678, [2, 0, 0, 0, 1, 1], vec![(55, vec![1, 3, 6, 26])]);
        let f = dhcp_frame([2, 0, 0, 0, 1, 1], &m);
        verify_checksums(&f).unwrap();
        let back = Dhcp::from_frame(&f).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.msg_type(), Some(dhcp_type::DISCOVER));
    }

    #[test]
    fn classless_routes_parse() {
        let mut m = Dhcp::client(dhcp_type::OFFER, 1, [0; 6], vec![]);
        m.options.push((121, vec![0, 169, 254, 0, 1, 24, 169, 254, 1, 169, 254, 0, 1]));
        assert_eq!(
            m.classless_routes().unwrap(),
            vec![
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(169, 254, 0, 1)),
                (Ipv4Addr::new(169, 254, 1, 0), 24, Ipv4Addr::new(169, 254, 0, 1)),
            ]
        );
    }

    #[test]
    fn neighbor_solicitation_is_valid() {
        let mac = [2, 0, 0, 0, 1, 1];
        let f = neighbor_solicitation(mac, link_local(mac), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        verify_checksums(&f).unwrap();
        assert_eq!(eth_dst(&f).unwrap(), [0x33, 0x33, 0xff, 0, 0, 1]);
        assert_eq!(link_local(mac), "fe80::ff:fe00:101".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn dhcpv6_round_trip() {
        let mac = [2, 0, 0, 0, 1, 1];
        let m = Dhcpv6 {
            msg_type: dhcpv6_type::SOLICIT,
            trid: 0xabcdef,
            options: vec![
                (dhcpv6_opt::CLIENTID, Dhcpv6::duid_ll(mac)),
                (dhcpv6_opt::IA_NA, Dhcpv6::ia_na(7, Some(Ipv6Addr::LOCALHOST))),
            ],
        };
        let f = dhcpv6_frame(mac, &m);
        verify_checksums(&f).unwrap();
        let back = Dhcpv6::from_frame(&f).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.ia_na_addresses().unwrap(), (7, vec![Ipv6Addr::LOCALHOST]));
    }

    #[test]
    fn ipip_round_trip() {
        let inner = ipv4_icmp_echo(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2), false, 1, 2, b"x");
        let f = ethernet_ip_in_ipv6([1; 6], [2; 6], Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, &inner);
        verify_checksums(&f).unwrap();
        let outer = Ip::from_frame(&f).unwrap();
        let inner = outer.decapsulate().unwrap();
        let e = Echo::from_ip(&inner).unwrap();
        assert_eq!((e.reply, e.id, e.seq, e.payload.as_slice()), (false, 1, 2, &b"x"[..]));
        let mut bad = f.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(verify_checksums(&bad).is_err());
    }
}
