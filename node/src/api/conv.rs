//! Conversions between the wire messages and the control plane's types.
//!
//! dpservice carries addresses as text and parses them with the C library
//! (`inet_aton` for IPv4, `inet_pton` for IPv6), and formats them with
//! `inet_ntoa`/`inet_ntop`; clients depend on both, so this module does the same.
//! Strings are C strings on dpservice's side: text after a NUL byte is ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dpfleet_dataplane::config::PxeConfig;
use dpfleet_dataplane::tables::firewall::{Action, Cidr, Direction};
use dpfleet_proto::dpdkironcore::v1 as pb;
use dpfleet_proto::types::Prefix;

use crate::control::{
    ApiError, FirewallRuleSpec, InterfaceId, InterfaceSpec, PortFilter, RuleFilter, VniFamily,
};

/// A malformed request. dpservice refuses those at the gRPC level (status
/// INVALID_ARGUMENT with this text) before looking at its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadRequest(pub &'static str);

impl From<BadRequest> for tonic::Status {
    fn from(e: BadRequest) -> Self {
        tonic::Status::invalid_argument(e.0)
    }
}

/// Capacity of dpservice's C buffers for interface ids, device names, boot file names and
/// version strings (the text must be shorter, leaving room for the NUL).
pub const IFACE_ID_CAP: usize = 64;
/// See [`IFACE_ID_CAP`].
pub const DEVICE_NAME_CAP: usize = 64;
/// See [`IFACE_ID_CAP`].
pub const PXE_FILE_CAP: usize = 32;
/// See [`IFACE_ID_CAP`].
pub const VERSION_CAP: usize = 64;
/// See [`IFACE_ID_CAP`].
pub const RULE_ID_CAP: usize = 64;

/// The bytes before the first NUL.
pub fn c_str(bytes: &[u8]) -> &[u8] {
    bytes.iter().position(|&b| b == 0).map_or(bytes, |n| &bytes[..n])
}

/// Whether dpservice would accept `bytes` into a C buffer of `cap` bytes: not empty,
/// and its C string shorter than `cap`.
pub fn fits(bytes: &[u8], cap: usize) -> bool {
    !bytes.is_empty() && c_str(bytes).len() < cap
}

/// An id or name as the control plane looks it up (C string, invalid UTF-8 replaced,
/// which then matches nothing).
pub fn lookup_key(bytes: &[u8]) -> String {
    String::from_utf8_lossy(c_str(bytes)).into_owned()
}

/// Parses IPv4 text the way `inet_aton` does: one to four numbers separated by dots,
/// each decimal, octal (leading `0`) or hexadecimal (`0x`); the last number fills the
/// remaining bytes (`10.1` is 10.0.0.1); trailing text after a space is ignored.
pub fn parse_ipv4(bytes: &[u8]) -> Option<Ipv4Addr> {
    let s = c_str(bytes);
    let mut parts = [0u32; 3];
    let mut nparts = 0;
    let mut i = 0;
    let val = loop {
        if !s.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let (v, next) = parse_c_number(s, i)?;
        i = next;
        if s.get(i) == Some(&b'.') {
            if nparts == 3 || v > 0xff {
                return None;
            }
            parts[nparts] = v;
            nparts += 1;
            i += 1;
        } else {
            break v;
        }
    };
    if let Some(&c) = s.get(i) {
        if !c.is_ascii_whitespace() && c != 0x0b {
            return None;
        }
    }
    let max = [0xffff_ffff, 0x00ff_ffff, 0xffff, 0xff][nparts];
    if val > max {
        return None;
    }
    let mut addr = val;
    for (k, p) in parts[..nparts].iter().enumerate() {
        addr |= p << (24 - 8 * k);
    }
    Some(Ipv4Addr::from(addr))
}

/// One number as `strtoul(.., 0)` reads it, starting at a digit; at most 32 bits.
/// Returns the value and the index after it.
fn parse_c_number(s: &[u8], start: usize) -> Option<(u32, usize)> {
    let (radix, mut i) = match (s.get(start), s.get(start + 1)) {
        (Some(b'0'), Some(b'x' | b'X')) if s.get(start + 2).is_some_and(u8::is_ascii_hexdigit) => {
            (16, start + 2)
        }
        (Some(b'0'), _) => (8, start),
        _ => (10, start),
    };
    let mut v: u64 = 0;
    while let Some(d) = s.get(i).and_then(|&c| char::from(c).to_digit(radix)) {
        v = v * u64::from(radix) + u64::from(d);
        if v > u64::from(u32::MAX) {
            return None;
        }
        i += 1;
    }
    u32::try_from(v).ok().map(|v| (v, i))
}

/// Parses IPv6 text (`inet_pton`).
pub fn parse_ipv6(bytes: &[u8]) -> Option<Ipv6Addr> {
    std::str::from_utf8(c_str(bytes)).ok()?.parse().ok()
}

/// The `preferred_underlay_route` of a Create call, checked as dpservice checks it:
/// empty or `::` means "the node allocates" (`None`); anything else must be IPv6 text
/// of an address in the node's underlay /64 with the externally-generated flag
/// ([`crate::control::is_external_underlay`]).
pub fn preferred_underlay(text: &[u8], node: Ipv6Addr) -> Result<Option<Ipv6Addr>, BadRequest> {
    const BAD: BadRequest = BadRequest("Invalid preferred_underlay_route");
    if text.is_empty() {
        return Ok(None);
    }
    let a = parse_ipv6(text).ok_or(BAD)?;
    if a.is_unspecified() {
        return Ok(None);
    }
    if !crate::control::is_external_underlay(a, node) {
        return Err(BAD);
    }
    Ok(Some(a))
}

/// An `IpAddress` message: IPv4 or IPv6 text according to `ipver`. A missing message
/// reads as an empty IPv4 address, which is invalid.
pub fn parse_ip(addr: Option<&pb::IpAddress>) -> Option<IpAddr> {
    let (ver, text) = addr.map_or((0, &[][..]), |a| (a.ipver, a.address.as_slice()));
    match pb::IpVersion::try_from(ver).ok()? {
        pb::IpVersion::Ipv4 => parse_ipv4(text).map(IpAddr::V4),
        pb::IpVersion::Ipv6 => parse_ipv6(text).map(IpAddr::V6),
    }
}

/// IPv4 text as `inet_ntoa` writes it.
pub fn ipv4_text(a: Ipv4Addr) -> Vec<u8> {
    a.to_string().into_bytes()
}

/// IPv6 text as glibc's `inet_ntop` writes it: like Rust's, except that an address
/// whose first 96 bits are zero and whose next 16 bits are not (`::a.b.c.d`, the old
/// IPv4-compatible form) ends in dotted IPv4.
pub fn ipv6_text(a: Ipv6Addr) -> Vec<u8> {
    let s = a.segments();
    if s[..6] == [0; 6] && s[6] != 0 {
        let [.., w, x, y, z] = a.octets();
        return format!("::{w}.{x}.{y}.{z}").into_bytes();
    }
    a.to_string().into_bytes()
}

/// An `IpAddress` message for `a`.
pub fn ip_address(a: IpAddr) -> pb::IpAddress {
    match a {
        IpAddr::V4(v4) => pb::IpAddress { ipver: pb::IpVersion::Ipv4 as i32, address: ipv4_text(v4) },
        IpAddr::V6(v6) => pb::IpAddress { ipver: pb::IpVersion::Ipv6 as i32, address: ipv6_text(v6) },
    }
}

/// The status of a successful call: code 0, message "Success".
pub fn ok_status() -> Option<pb::Status> {
    Some(pb::Status { code: 0, message: "Success".into() })
}

/// The status of a refused call: dpservice's number and name.
pub fn err_status(e: ApiError) -> Option<pb::Status> {
    Some(pb::Status { code: e.code(), message: e.name().into() })
}

/// The status of a call's outcome.
pub fn status_of<T>(r: &Result<T, ApiError>) -> Option<pb::Status> {
    match r {
        Ok(_) => ok_status(),
        Err(e) => err_status(*e),
    }
}

/// A prefix argument: its address and length, checked as dpservice checks them before
/// looking at its state (parsable address, length below 256). Whether the length fits
/// the family is a question for the state ([`prefix_fits`]).
pub fn prefix_arg(
    p: Option<&pb::Prefix>,
    ip_err: &'static str,
    len_err: &'static str,
    len_first: bool,
) -> Result<(IpAddr, u32), BadRequest> {
    let len = p.map_or(0, |p| p.length);
    let check_len = || if len > u32::from(u8::MAX) { Err(BadRequest(len_err)) } else { Ok(()) };
    if len_first {
        check_len()?;
    }
    let addr = parse_ip(p.and_then(|p| p.ip.as_ref())).ok_or(BadRequest(ip_err))?;
    check_len()?;
    Ok((addr, len))
}

/// The prefix, or `err` (what dpservice's table answers for an impossible length:
/// ROUTE_INSERT when adding, ROUTE_NOT_FOUND when removing).
pub fn prefix_fits((addr, len): (IpAddr, u32), err: ApiError) -> Result<Prefix, ApiError> {
    Prefix::new(addr, len).map_err(|_| err)
}

/// The `VniType` field.
pub fn vni_family(t: i32) -> Result<VniFamily, BadRequest> {
    match pb::VniType::try_from(t) {
        Ok(pb::VniType::VniIpv4) => Ok(VniFamily::Ipv4),
        Ok(pb::VniType::VniIpv6) => Ok(VniFamily::Ipv6),
        Ok(pb::VniType::VniBoth) => Ok(VniFamily::Both),
        Err(_) => Err(BadRequest("Invalid type")),
    }
}

/// Error texts for one prefix of a firewall rule, in dpservice's wording.
struct RulePrefixErrors {
    ipver: &'static str,
    len4: &'static str,
    ip4: &'static str,
    len6: &'static str,
    ip6: &'static str,
}

const SRC_ERRORS: RulePrefixErrors = RulePrefixErrors {
    ipver: "Invalid source_prefix.ip.ipver",
    len4: "Invalid source_prefix.length",
    ip4: "Invalid source_prefix.ip",
    len6: "Invalid ip6 source_prefix.length",
    ip6: "Invalid source_prefix.ip6",
};

const DST_ERRORS: RulePrefixErrors = RulePrefixErrors {
    ipver: "Invalid destination_prefix.ip.ipver",
    len4: "Invalid destination_prefix.length",
    ip4: "Invalid destination_prefix.ip",
    len6: "Invalid ip6 destination_prefix.length",
    ip6: "Invalid destination_prefix.ip6",
};

/// A prefix of a firewall rule: required (a missing one reads as an empty IPv4
/// address), length checked against the family, length before address.
fn rule_prefix(p: Option<&pb::Prefix>, e: &RulePrefixErrors) -> Result<Cidr, BadRequest> {
    let len = p.map_or(0, |p| p.length);
    let ip = p.and_then(|p| p.ip.as_ref());
    let (ver, text) = ip.map_or((0, &[][..]), |a| (a.ipver, a.address.as_slice()));
    let addr = match pb::IpVersion::try_from(ver) {
        Ok(pb::IpVersion::Ipv4) => {
            if len > 32 {
                return Err(BadRequest(e.len4));
            }
            IpAddr::V4(parse_ipv4(text).ok_or(BadRequest(e.ip4))?)
        }
        Ok(pb::IpVersion::Ipv6) => {
            if len > 128 {
                return Err(BadRequest(e.len6));
            }
            IpAddr::V6(parse_ipv6(text).ok_or(BadRequest(e.ip6))?)
        }
        Err(_) => return Err(BadRequest(e.ipver)),
    };
    // At most 128 by now.
    Ok(Cidr::new(addr, u8::try_from(len).unwrap_or(u8::MAX)))
}

/// A port bound: -1 (any) or 0 to 65535.
fn rule_port(v: i32, err: &'static str) -> Result<Option<u16>, BadRequest> {
    if v == -1 {
        return Ok(None);
    }
    u16::try_from(v).map(Some).map_err(|_| BadRequest(err))
}

/// An ICMP type or code: -1 (any) or 0 to 255.
fn rule_icmp(v: i32, err: &'static str) -> Result<Option<u8>, BadRequest> {
    if v == -1 {
        return Ok(None);
    }
    u8::try_from(v).map(Some).map_err(|_| BadRequest(err))
}

/// Error texts for the ports of a TCP or UDP filter, in dpservice's wording.
struct PortErrors {
    src_lower: &'static str,
    dst_lower: &'static str,
    src_upper: &'static str,
    dst_upper: &'static str,
    src_range: &'static str,
    dst_range: &'static str,
}

const TCP_ERRORS: PortErrors = PortErrors {
    src_lower: "Invalid tcp.src_port_lower",
    dst_lower: "Invalid tcp.dst_port_lower",
    src_upper: "Invalid tcp.src_port_upper",
    dst_upper: "Invalid tcp.dst_port_upper",
    src_range: "Invalid tcp.src_port range",
    dst_range: "Invalid tcp.dst_port range",
};

const UDP_ERRORS: PortErrors = PortErrors {
    src_lower: "Invalid udp.src_port_lower",
    dst_lower: "Invalid udp.dst_port_lower",
    src_upper: "Invalid udp.src_port_upper",
    dst_upper: "Invalid udp.dst_port_upper",
    src_range: "Invalid udp.src_port range",
    dst_range: "Invalid udp.dst_port range",
};

/// The ports of a TCP or UDP filter (source lower, source upper, destination lower,
/// destination upper), checked in dpservice's order.
fn port_filter([src_lo, src_hi, dst_lo, dst_hi]: [i32; 4], e: &PortErrors) -> Result<PortFilter, BadRequest> {
    let f = PortFilter {
        src_lower: rule_port(src_lo, e.src_lower)?,
        dst_lower: rule_port(dst_lo, e.dst_lower)?,
        src_upper: rule_port(src_hi, e.src_upper)?,
        dst_upper: rule_port(dst_hi, e.dst_upper)?,
    };
    // An upper bound of -1 stands for the largest value, so it is never too low.
    let inverted = |lo: Option<u16>, hi: Option<u16>| matches!((lo, hi), (Some(l), Some(h)) if h < l);
    if inverted(f.src_lower, f.src_upper) {
        return Err(BadRequest(e.src_range));
    }
    if inverted(f.dst_lower, f.dst_upper) {
        return Err(BadRequest(e.dst_range));
    }
    Ok(f)
}

impl TryFrom<&pb::FirewallRule> for FirewallRuleSpec {
    type Error = BadRequest;

    /// dpservice's checks, in its order (a missing rule has an empty id).
    fn try_from(r: &pb::FirewallRule) -> Result<Self, BadRequest> {
        if !fits(&r.id, RULE_ID_CAP) {
            return Err(BadRequest("Invalid rule id"));
        }
        let src = rule_prefix(r.source_prefix.as_ref(), &SRC_ERRORS)?;
        let dst = rule_prefix(r.destination_prefix.as_ref(), &DST_ERRORS)?;
        let direction = match pb::TrafficDirection::try_from(r.direction) {
            Ok(pb::TrafficDirection::Ingress) => Direction::Ingress,
            Ok(pb::TrafficDirection::Egress) => Direction::Egress,
            Err(_) => return Err(BadRequest("Invalid direction")),
        };
        let action = match pb::FirewallAction::try_from(r.action) {
            Ok(pb::FirewallAction::Accept) => Action::Accept,
            Ok(pb::FirewallAction::Drop) => Action::Drop,
            Err(_) => return Err(BadRequest("Invalid action")),
        };
        let priority = u16::try_from(r.priority).map_err(|_| BadRequest("Invalid priority"))?;
        use pb::protocol_filter::Filter as F;
        let filter = match r.protocol_filter.as_ref().and_then(|f| f.filter.as_ref()) {
            Some(F::Tcp(t)) => RuleFilter::Tcp(port_filter(
                [t.src_port_lower, t.src_port_upper, t.dst_port_lower, t.dst_port_upper],
                &TCP_ERRORS,
            )?),
            Some(F::Udp(u)) => RuleFilter::Udp(port_filter(
                [u.src_port_lower, u.src_port_upper, u.dst_port_lower, u.dst_port_upper],
                &UDP_ERRORS,
            )?),
            Some(F::Icmp(i)) => RuleFilter::Icmp {
                icmp_type: rule_icmp(i.icmp_type, "Invalid icmp.icmp_type")?,
                icmp_code: rule_icmp(i.icmp_code, "Invalid icmp.icmp_code")?,
            },
            None => RuleFilter::Any,
        };
        Ok(FirewallRuleSpec { id: c_str(&r.id).to_vec(), direction, action, priority, src, dst, filter })
    }
}

/// A rule prefix as dpservice reports it: the address as given, the length.
fn rule_prefix_message(c: Cidr) -> pb::Prefix {
    pb::Prefix { ip: Some(ip_address(c.addr())), length: u32::from(c.len()), underlay_route: Vec::new() }
}

/// A firewall rule as Get/ListFirewallRules report it: as given, -1 for "any", and an
/// empty protocol filter for a rule without one.
pub fn firewall_rule_message(r: &FirewallRuleSpec) -> pb::FirewallRule {
    let any = |v: Option<u16>| v.map_or(-1, i32::from);
    let icmp = |v: Option<u8>| v.map_or(-1, i32::from);
    use pb::protocol_filter::Filter as F;
    let filter = match r.filter {
        RuleFilter::Any => None,
        RuleFilter::Tcp(p) => Some(F::Tcp(pb::TcpFilter {
            src_port_lower: any(p.src_lower),
            src_port_upper: any(p.src_upper),
            dst_port_lower: any(p.dst_lower),
            dst_port_upper: any(p.dst_upper),
        })),
        RuleFilter::Udp(p) => Some(F::Udp(pb::UdpFilter {
            src_port_lower: any(p.src_lower),
            src_port_upper: any(p.src_upper),
            dst_port_lower: any(p.dst_lower),
            dst_port_upper: any(p.dst_upper),
        })),
        RuleFilter::Icmp { icmp_type, icmp_code } => {
            Some(F::Icmp(pb::IcmpFilter { icmp_type: icmp(icmp_type), icmp_code: icmp(icmp_code) }))
        }
    };
    pb::FirewallRule {
        id: r.id.clone(),
        direction: match r.direction {
            Direction::Ingress => pb::TrafficDirection::Ingress as i32,
            Direction::Egress => pb::TrafficDirection::Egress as i32,
        },
        action: match r.action {
            Action::Accept => pb::FirewallAction::Accept as i32,
            Action::Drop => pb::FirewallAction::Drop as i32,
        },
        priority: u32::from(r.priority),
        source_prefix: Some(rule_prefix_message(r.src)),
        destination_prefix: Some(rule_prefix_message(r.dst)),
        protocol_filter: Some(pb::ProtocolFilter { filter }),
    }
}

impl TryFrom<&pb::CreateInterfaceRequest> for InterfaceSpec {
    type Error = BadRequest;

    /// dpservice's checks, in its order. The interface type is ignored, as dpservice does.
    fn try_from(r: &pb::CreateInterfaceRequest) -> Result<Self, BadRequest> {
        const BAD_ID: BadRequest = BadRequest("Invalid interface_id");
        if !r.interface_id.iter().all(|&c| c == b'-' || c == b'_' || c.is_ascii_alphanumeric()) {
            return Err(BAD_ID);
        }
        let v4_text = r.ipv4_config.as_ref().map_or(&[][..], |c| c.primary_address.as_slice());
        let v6_text = r.ipv6_config.as_ref().map_or(&[][..], |c| c.primary_address.as_slice());
        let ipv4 = parse_ipv4(v4_text).ok_or(BadRequest("Invalid ipv4_config.primary_address"))?;
        let ipv6 = parse_ipv6(v6_text).ok_or(BadRequest("Invalid ipv6_config.primary_address"))?;
        if ipv4.is_unspecified() && ipv6.is_unspecified() {
            return Err(BadRequest(
                "Invalid ipv4_config.primary_address and ipv6_config.primary_address combination",
            ));
        }
        let mut pxe = None;
        if let Some(p) = r.pxe_config.as_ref().filter(|p| !p.next_server.is_empty()) {
            // The boot server is of the family the VM boots with: IPv6 if it has IPv6.
            let server = if ipv6.is_unspecified() {
                parse_ipv4(p.next_server.as_bytes())
                    .map(IpAddr::V4)
                    .ok_or(BadRequest("Invalid ipv4 pxe_config.next_server"))?
            } else {
                parse_ipv6(p.next_server.as_bytes())
                    .map(IpAddr::V6)
                    .ok_or(BadRequest("Invalid ipv6 pxe_config.next_server"))?
            };
            if !fits(p.boot_filename.as_bytes(), PXE_FILE_CAP) {
                return Err(BadRequest("Invalid pxe_config.boot_filename"));
            }
            pxe = Some(PxeConfig {
                next_server: server.to_string(),
                boot_filename: lookup_key(p.boot_filename.as_bytes()),
            });
        }
        if !fits(r.device_name.as_bytes(), DEVICE_NAME_CAP) {
            return Err(BadRequest("Invalid device_name"));
        }
        // The character check above leaves only ASCII, so this is the whole id.
        let id = std::str::from_utf8(&r.interface_id).map_err(|_| BAD_ID)?;
        let id = InterfaceId::new(id).map_err(|_| BAD_ID)?;
        Ok(InterfaceSpec {
            id,
            vni: r.vni,
            device_name: lookup_key(r.device_name.as_bytes()),
            ipv4: Some(ipv4).filter(|a| !a.is_unspecified()),
            ipv6: Some(ipv6).filter(|a| !a.is_unspecified()),
            pxe,
            // Checked against the node's underlay by the API layer, after the rest.
            preferred_underlay: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Option<Ipv4Addr> {
        parse_ipv4(s.as_bytes())
    }

    #[test]
    fn ipv4_text_is_read_like_inet_aton() {
        let ok = [
            ("10.100.1.1", "10.100.1.1"),
            ("0.0.0.0", "0.0.0.0"),
            ("255.255.255.255", "255.255.255.255"),
            ("10.1", "10.0.0.1"),
            ("10.1.2", "10.1.0.2"),
            ("167772161", "10.0.0.1"),
            ("0x0a.0.0.1", "10.0.0.1"),
            ("012.0.0.1", "10.0.0.1"),
            ("1.2.3.4 trailing", "1.2.3.4"),
            ("1.2.3.4\0junk", "1.2.3.4"),
            ("0", "0.0.0.0"),
        ];
        for (input, want) in ok {
            assert_eq!(v4(input), Some(want.parse().unwrap()), "{input}");
        }
        let bad = [
            "",
            " 1.2.3.4",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.256",
            "1..2.3",
            "1.2.3.",
            "a.b.c.d",
            "08.1.1.1",
            "0x",
            "1.2.3.4x",
            "4294967296",
            "-1.2.3.4",
            "1.2.65536",
            "::",
        ];
        for input in bad {
            assert_eq!(v4(input), None, "{input:?}");
        }
    }

    #[test]
    fn ipv6_text_round_trip() {
        assert_eq!(parse_ipv6(b"2000:100:1::1"), Some("2000:100:1::1".parse().unwrap()));
        assert_eq!(parse_ipv6(b"::"), Some(Ipv6Addr::UNSPECIFIED));
        assert_eq!(parse_ipv6(b"::ffff:1.2.3.4"), Some("::ffff:102:304".parse().unwrap()));
        assert_eq!(parse_ipv6(b"10.0.0.1"), None);
        assert_eq!(parse_ipv6(b"fe80::1%eth0"), None);
        assert_eq!(parse_ipv6(b""), None);
        assert_eq!(ipv6_text("fc00:1::1:0:1".parse().unwrap()), b"fc00:1::1:0:1");
        assert_eq!(ipv6_text(Ipv6Addr::UNSPECIFIED), b"::");
        assert_eq!(ipv6_text("::1".parse().unwrap()), b"::1");
        assert_eq!(ipv6_text("::2:3".parse().unwrap()), b"::0.2.0.3");
        assert_eq!(ipv6_text("::ffff:1.2.3.4".parse().unwrap()), b"::ffff:1.2.3.4");
    }

    #[test]
    fn ip_address_messages() {
        let m = |ipver: i32, a: &[u8]| pb::IpAddress { ipver, address: a.to_vec() };
        assert_eq!(parse_ip(Some(&m(0, b"1.2.3.4"))), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(parse_ip(Some(&m(1, b"fc00::1"))), Some("fc00::1".parse().unwrap()));
        assert_eq!(parse_ip(Some(&m(1, b"1.2.3.4"))), None);
        assert_eq!(parse_ip(Some(&m(0, b"fc00::1"))), None);
        assert_eq!(parse_ip(Some(&m(2, b"1.2.3.4"))), None);
        assert_eq!(parse_ip(None), None);
        let back = ip_address("2a10:defe:dede:f4::1".parse().unwrap());
        assert_eq!((back.ipver, back.address), (1, b"2a10:defe:dede:f4::1".to_vec()));
    }

    #[test]
    fn preferred_underlay_addresses() {
        let node: Ipv6Addr = "fc00:1::1".parse().unwrap();
        let ok = |t: &str| preferred_underlay(t.as_bytes(), node);
        assert_eq!(ok(""), Ok(None));
        assert_eq!(ok("::"), Ok(None));
        assert_eq!(ok("fc00:1::8000:0:7"), Ok(Some("fc00:1::8000:0:7".parse().unwrap())));
        // Any other bits beside the flag are the caller's.
        assert_eq!(ok("fc00:1::ffff:ffff:ffff"), Ok(Some("fc00:1::ffff:ffff:ffff".parse().unwrap())));
        let bad = Err(BadRequest("Invalid preferred_underlay_route"));
        let refused = [
            "fc00:1::1:0:7",
            "fc00:1::7f00:0:7",
            "fc00:2::8000:0:7",
            "10.0.0.1",
            "junk",
            "fc00:1::8000:0:7%x",
        ];
        for t in refused {
            assert_eq!(ok(t), bad, "{t}");
        }
    }

    #[test]
    fn c_buffers() {
        assert!(fits(b"net_tap2", DEVICE_NAME_CAP));
        assert!(!fits(b"", DEVICE_NAME_CAP));
        assert!(fits(&[b'a'; 63], IFACE_ID_CAP));
        assert!(!fits(&[b'a'; 64], IFACE_ID_CAP));
        assert_eq!(lookup_key(b"vm1\0rest"), "vm1");
    }

    fn request() -> pb::CreateInterfaceRequest {
        pb::CreateInterfaceRequest {
            interface_type: 0,
            interface_id: b"vm1".to_vec(),
            vni: 100,
            ipv4_config: Some(pb::IpConfig { primary_address: b"10.100.1.1".to_vec() }),
            ipv6_config: Some(pb::IpConfig { primary_address: b"2000:100:1::1".to_vec() }),
            pxe_config: Some(pb::PxeConfig {
                next_server: "2001:dede::1".into(),
                boot_filename: "ipxe".into(),
            }),
            device_name: "net_tap2".into(),
            metering_parameters: None,
            preferred_underlay_route: Vec::new(),
        }
    }

    #[test]
    fn create_interface_request_checks() {
        let s = InterfaceSpec::try_from(&request()).unwrap();
        assert_eq!(s.id.as_str(), "vm1");
        assert_eq!((s.vni, s.device_name.as_str()), (100, "net_tap2"));
        assert_eq!(s.ipv4, Some("10.100.1.1".parse().unwrap()));
        assert_eq!(s.ipv6, Some("2000:100:1::1".parse().unwrap()));
        assert_eq!(
            s.pxe,
            Some(PxeConfig { next_server: "2001:dede::1".into(), boot_filename: "ipxe".into() })
        );

        type Edit = fn(&mut pb::CreateInterfaceRequest);
        let cases: [(Edit, &str); 11] = [
            (|r| r.interface_id = b"vm 1".to_vec(), "Invalid interface_id"),
            (|r| r.interface_id = Vec::new(), "Invalid interface_id"),
            (|r| r.interface_id = vec![b'a'; 64], "Invalid interface_id"),
            (|r| r.ipv4_config = None, "Invalid ipv4_config.primary_address"),
            (|r| r.ipv6_config = None, "Invalid ipv6_config.primary_address"),
            (
                |r| {
                    r.ipv4_config = Some(pb::IpConfig { primary_address: b"0.0.0.0".to_vec() });
                    r.ipv6_config = Some(pb::IpConfig { primary_address: b"::".to_vec() });
                },
                "Invalid ipv4_config.primary_address and ipv6_config.primary_address combination",
            ),
            (
                |r| r.pxe_config.as_mut().unwrap().next_server = "1.2.3.4".into(),
                "Invalid ipv6 pxe_config.next_server",
            ),
            (
                |r| {
                    r.ipv6_config = Some(pb::IpConfig { primary_address: b"::".to_vec() });
                    r.pxe_config.as_mut().unwrap().next_server = "2001::1".into();
                },
                "Invalid ipv4 pxe_config.next_server",
            ),
            (
                |r| r.pxe_config.as_mut().unwrap().boot_filename = String::new(),
                "Invalid pxe_config.boot_filename",
            ),
            (|r| r.device_name = String::new(), "Invalid device_name"),
            (|r| r.device_name = "x".repeat(64), "Invalid device_name"),
        ];
        for (edit, want) in cases {
            let mut r = request();
            edit(&mut r);
            assert_eq!(InterfaceSpec::try_from(&r), Err(BadRequest(want)), "{r:?}");
        }

        // No PXE when the server is empty; IPv4-only VM boots from an IPv4 server.
        let mut r = request();
        r.pxe_config = Some(pb::PxeConfig { next_server: String::new(), boot_filename: "x".into() });
        assert_eq!(InterfaceSpec::try_from(&r).unwrap().pxe, None);
        r.ipv6_config = Some(pb::IpConfig { primary_address: b"::".to_vec() });
        r.pxe_config = Some(pb::PxeConfig { next_server: "10.1".into(), boot_filename: "x".into() });
        let s = InterfaceSpec::try_from(&r).unwrap();
        assert_eq!(s.ipv6, None);
        assert_eq!(s.pxe.unwrap().next_server, "10.0.0.1");
    }

    #[test]
    fn prefix_arguments() {
        let p = |ipver: i32, a: &[u8], length: u32| pb::Prefix {
            ip: Some(pb::IpAddress { ipver, address: a.to_vec() }),
            length,
            underlay_route: Vec::new(),
        };
        assert_eq!(
            prefix_arg(Some(&p(0, b"10.0.0.0", 24)), "ip", "len", true),
            Ok(("10.0.0.0".parse().unwrap(), 24))
        );
        assert_eq!(prefix_arg(Some(&p(0, b"10.0.0.0", 256)), "ip", "len", true), Err(BadRequest("len")));
        assert_eq!(prefix_arg(Some(&p(0, b"bad", 256)), "ip", "len", true), Err(BadRequest("len")));
        assert_eq!(prefix_arg(Some(&p(0, b"bad", 256)), "ip", "len", false), Err(BadRequest("ip")));
        assert_eq!(prefix_arg(None, "ip", "len", false), Err(BadRequest("ip")));
        let long = ("10.0.0.0".parse().unwrap(), 33);
        assert_eq!(prefix_fits(long, ApiError::RouteInsert), Err(ApiError::RouteInsert));
        assert!(prefix_fits(("::".parse().unwrap(), 128), ApiError::RouteInsert).is_ok());
    }

    #[test]
    fn vni_types() {
        assert_eq!(vni_family(0), Ok(VniFamily::Ipv4));
        assert_eq!(vni_family(1), Ok(VniFamily::Ipv6));
        assert_eq!(vni_family(2), Ok(VniFamily::Both));
        assert_eq!(vni_family(3), Err(BadRequest("Invalid type")));
    }

    fn fw_rule() -> pb::FirewallRule {
        let p = |ipver: pb::IpVersion, a: &str, length: u32| pb::Prefix {
            ip: Some(pb::IpAddress { ipver: ipver as i32, address: a.as_bytes().to_vec() }),
            length,
            underlay_route: Vec::new(),
        };
        pb::FirewallRule {
            id: b"fw0-vm3".to_vec(),
            direction: pb::TrafficDirection::Ingress as i32,
            action: pb::FirewallAction::Accept as i32,
            priority: 1000,
            source_prefix: Some(p(pb::IpVersion::Ipv4, "1.2.3.4", 16)),
            destination_prefix: Some(p(pb::IpVersion::Ipv6, "2001:db8::", 32)),
            protocol_filter: Some(pb::ProtocolFilter {
                filter: Some(pb::protocol_filter::Filter::Tcp(pb::TcpFilter {
                    src_port_lower: -1,
                    src_port_upper: -1,
                    dst_port_lower: 80,
                    dst_port_upper: -1,
                })),
            }),
        }
    }

    #[test]
    fn firewall_rule_round_trip() {
        let r = fw_rule();
        let spec = FirewallRuleSpec::try_from(&r).unwrap();
        assert_eq!(spec.id, b"fw0-vm3");
        assert_eq!((spec.direction, spec.action, spec.priority), (Direction::Ingress, Action::Accept, 1000));
        assert_eq!(spec.src, Cidr::new("1.2.3.4".parse().unwrap(), 16));
        assert_eq!(spec.dst, Cidr::new("2001:db8::".parse().unwrap(), 32));
        assert_eq!(spec.filter, RuleFilter::Tcp(PortFilter { dst_lower: Some(80), ..PortFilter::default() }));
        // Reported exactly as given.
        assert_eq!(firewall_rule_message(&spec), r);

        // No filter: any protocol, reported as an empty filter.
        let mut any = fw_rule();
        any.protocol_filter = None;
        let spec = FirewallRuleSpec::try_from(&any).unwrap();
        assert_eq!(spec.filter, RuleFilter::Any);
        let back = firewall_rule_message(&spec);
        assert_eq!(back.protocol_filter, Some(pb::ProtocolFilter { filter: None }));

        let mut icmp = fw_rule();
        icmp.protocol_filter = Some(pb::ProtocolFilter {
            filter: Some(pb::protocol_filter::Filter::Icmp(pb::IcmpFilter { icmp_type: 8, icmp_code: -1 })),
        });
        let spec = FirewallRuleSpec::try_from(&icmp).unwrap();
        assert_eq!(spec.filter, RuleFilter::Icmp { icmp_type: Some(8), icmp_code: None });
        assert_eq!(firewall_rule_message(&spec), icmp);

        let mut udp = fw_rule();
        udp.protocol_filter = Some(pb::ProtocolFilter {
            filter: Some(pb::protocol_filter::Filter::Udp(pb::UdpFilter {
                src_port_lower: 0,
                src_port_upper: 65535,
                dst_port_lower: 53,
                dst_port_upper: 53,
            })),
        });
        let spec = FirewallRuleSpec::try_from(&udp).unwrap();
        assert_eq!(firewall_rule_message(&spec), udp);
        // A NUL ends the id, as in a C string.
        let mut nul = fw_rule();
        nul.id = b"fw1\0junk".to_vec();
        assert_eq!(FirewallRuleSpec::try_from(&nul).unwrap().id, b"fw1");
    }

    #[test]
    fn firewall_rule_checks() {
        use pb::protocol_filter::Filter as F;
        fn tcp(r: &mut pb::FirewallRule) -> &mut pb::TcpFilter {
            match r.protocol_filter.as_mut().unwrap().filter.as_mut().unwrap() {
                F::Tcp(t) => t,
                _ => unreachable!(),
            }
        }
        fn udp(r: &mut pb::FirewallRule, f: [i32; 4]) {
            r.protocol_filter = Some(pb::ProtocolFilter {
                filter: Some(F::Udp(pb::UdpFilter {
                    src_port_lower: f[0],
                    src_port_upper: f[1],
                    dst_port_lower: f[2],
                    dst_port_upper: f[3],
                })),
            });
        }
        fn icmp(r: &mut pb::FirewallRule, t: i32, c: i32) {
            r.protocol_filter = Some(pb::ProtocolFilter {
                filter: Some(F::Icmp(pb::IcmpFilter { icmp_type: t, icmp_code: c })),
            });
        }
        type Edit = fn(&mut pb::FirewallRule);
        let cases: [(Edit, &str); 25] = [
            (|r| r.id = Vec::new(), "Invalid rule id"),
            (|r| r.id = vec![b'a'; 64], "Invalid rule id"),
            (|r| r.source_prefix = None, "Invalid source_prefix.ip"),
            (|r| r.source_prefix.as_mut().unwrap().length = 33, "Invalid source_prefix.length"),
            (
                |r| r.source_prefix.as_mut().unwrap().ip.as_mut().unwrap().address = b"1.2.3.x".to_vec(),
                "Invalid source_prefix.ip",
            ),
            (
                |r| r.source_prefix.as_mut().unwrap().ip.as_mut().unwrap().ipver = 1,
                "Invalid source_prefix.ip6",
            ),
            (
                |r| r.source_prefix.as_mut().unwrap().ip.as_mut().unwrap().ipver = 2,
                "Invalid source_prefix.ip.ipver",
            ),
            (
                |r| {
                    let p = r.source_prefix.as_mut().unwrap();
                    p.ip.as_mut().unwrap().ipver = 1;
                    p.length = 129;
                },
                "Invalid ip6 source_prefix.length",
            ),
            (|r| r.destination_prefix = None, "Invalid destination_prefix.ip"),
            (
                |r| r.destination_prefix.as_mut().unwrap().length = 129,
                "Invalid ip6 destination_prefix.length",
            ),
            (
                |r| r.destination_prefix.as_mut().unwrap().ip.as_mut().unwrap().ipver = 0,
                "Invalid destination_prefix.ip",
            ),
            (
                |r| r.destination_prefix.as_mut().unwrap().ip.as_mut().unwrap().ipver = 9,
                "Invalid destination_prefix.ip.ipver",
            ),
            (|r| r.direction = 2, "Invalid direction"),
            (|r| r.action = 2, "Invalid action"),
            (|r| r.priority = 65536, "Invalid priority"),
            (|r| tcp(r).src_port_lower = 65536, "Invalid tcp.src_port_lower"),
            (|r| tcp(r).dst_port_lower = -2, "Invalid tcp.dst_port_lower"),
            (|r| tcp(r).src_port_upper = 70000, "Invalid tcp.src_port_upper"),
            (|r| tcp(r).dst_port_upper = -5, "Invalid tcp.dst_port_upper"),
            (|r| tcp(r).dst_port_upper = 79, "Invalid tcp.dst_port range"),
            (
                |r| {
                    tcp(r).src_port_lower = 10;
                    tcp(r).src_port_upper = 9;
                },
                "Invalid tcp.src_port range",
            ),
            (|r| udp(r, [-1, -1, 100, 99]), "Invalid udp.dst_port range"),
            (|r| udp(r, [-1, -1, 100, 65536]), "Invalid udp.dst_port_upper"),
            (|r| icmp(r, 256, 0), "Invalid icmp.icmp_type"),
            (|r| icmp(r, -1, -2), "Invalid icmp.icmp_code"),
        ];
        for (edit, want) in cases {
            let mut r = fw_rule();
            edit(&mut r);
            assert_eq!(FirewallRuleSpec::try_from(&r), Err(BadRequest(want)), "{r:?}");
        }
        // Accepted edge values.
        let mut r = fw_rule();
        r.priority = 65535;
        r.id = vec![b'a'; 63];
        udp(&mut r, [-1, 5, 7, 7]);
        let spec = FirewallRuleSpec::try_from(&r).unwrap();
        assert_eq!(spec.priority, 65535);
        assert_eq!(
            spec.filter,
            RuleFilter::Udp(PortFilter {
                src_lower: None,
                src_upper: Some(5),
                dst_lower: Some(7),
                dst_upper: Some(7)
            })
        );
        let mut r = fw_rule();
        icmp(&mut r, 255, 255);
        assert!(FirewallRuleSpec::try_from(&r).is_ok());
    }
}
