//! DHCPv6 server: every VM gets its interface's IPv6 address, forever.
//!
//! SOLICIT is answered with ADVERTISE, or with REPLY when it carries Rapid Commit;
//! REQUEST and RELEASE with REPLY; all three carry the server identifier, the client
//! identifier echoed, an IA_NA (the client's IAID, T1 = T2 = infinity) holding the
//! interface's address with infinite lifetimes and status Success, the node's DNS
//! servers, and a boot file URL for PXE clients. CONFIRM is answered with a REPLY that
//! carries the server and client identifiers and status Success. Other messages
//! (RENEW, REBIND, DECLINE, INFORMATION-REQUEST, ...) are ignored, as dpservice does.
//! Replies go from fe80::1 to the client's address and MAC, built in the request's
//! buffer.
//!
//! The server identifier is a DUID-LL with dpservice's hardware type 0xabcd and the VF
//! port's MAC. PXE: a vendor class containing `PXEClient:Arch:00007` gets
//! `tftp://[<next server>]/ipxe/x86_64/ipxe.new`; a user class `iPXE` gets
//! `http://[<next server>]/<boot file name>`; the later option wins; interfaces without
//! PXE settings get no URL.

use std::fmt::Write as _;
use std::net::Ipv6Addr;

use super::dhcp::{IPXE_USER_CLASS, PXE_TFTP_FILE, PXE_VENDOR_CLASS};
use super::nd::GATEWAY;
use crate::buf::PacketBuf;
use crate::config::{Interface, NodeConfig, PxeConfig};
use crate::graph::{Ctx, DropReason, Verdict};
use crate::wire::cursor::{TruncatingText, Writer};
use crate::wire::dhcpv6::{self, msg, opt, Options};
use crate::wire::{ethernet, ipv6, udp};

/// Hardware type in the server's DUID-LL (dpservice's choice; no IANA type applies).
pub const DUID_HW_TYPE: u16 = 0xabcd;
/// Longest client identifier echoed.
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// Longest boot file URL sent.
pub const MAX_BOOT_URL_LEN: usize = 95;

const IP_OFF: usize = ethernet::HEADER_LEN;
const UDP_OFF: usize = IP_OFF + ipv6::HEADER_LEN;
const MSG_OFF: usize = UDP_OFF + udp::HEADER_LEN;
const OPTIONS_OFF: usize = MSG_OFF + dhcpv6::HEADER_LEN;
/// Room for the reply's options: server id 14, client id 4 + 128, IA_NA 50, rapid
/// commit 4, status 6, boot URL 4 + 95, and the DNS option with up to 45 servers.
const MAX_OPTIONS_LEN: usize = 1024;

/// How a PXE client boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PxeMode {
    Tftp,
    Http,
}

/// What the request asked for.
#[derive(Default)]
struct Asked<'a> {
    client_id: Option<&'a [u8]>,
    iaid: Option<[u8; 4]>,
    rapid_commit: bool,
    pxe: Option<PxeMode>,
}

/// Answers SOLICIT, REQUEST, RELEASE and CONFIRM in place; drops anything else.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, iface: &Interface, buf: &mut B) -> Verdict {
    match reply(&ctx.snap.node, iface, buf) {
        Ok(()) => Verdict::Tx(ctx.in_port),
        Err(reason) => Verdict::Drop(reason),
    }
}

fn parse_options(data: &[u8]) -> Result<Asked<'_>, DropReason> {
    let mut a = Asked::default();
    for o in Options::new(data) {
        let (code, v) = o.map_err(|_| DropReason::Malformed)?;
        match code {
            opt::CLIENTID if v.len() > MAX_CLIENT_ID_LEN => return Err(DropReason::Malformed),
            opt::CLIENTID => a.client_id = Some(v),
            opt::IA_NA => {
                let id = v.get(..4).filter(|_| v.len() >= dhcpv6::IA_NA_FIXED_LEN);
                let id = id.ok_or(DropReason::Malformed)?;
                a.iaid = Some([id[0], id[1], id[2], id[3]]);
            }
            opt::RAPID_COMMIT if !v.is_empty() => return Err(DropReason::Malformed),
            opt::RAPID_COMMIT => a.rapid_commit = true,
            opt::VENDOR_CLASS if is_pxe_vendor_class(v) => a.pxe = Some(PxeMode::Tftp),
            opt::USER_CLASS if is_ipxe_user_class(v) => a.pxe = Some(PxeMode::Http),
            _ => {}
        }
    }
    Ok(a)
}

/// Vendor class data: enterprise number (4), then the first class's length (2) and
/// data. Firmware PXE names its architecture there.
fn is_pxe_vendor_class(v: &[u8]) -> bool {
    match (v.get(4..6), v.get(6..)) {
        (Some(len), Some(classes)) => {
            usize::from(u16::from_be_bytes([len[0], len[1]])) >= PXE_VENDOR_CLASS.len()
                && contains(classes, PXE_VENDOR_CLASS)
        }
        _ => false,
    }
}

/// User class data: the first class's length (2) and data, which iPXE sets to `iPXE`.
fn is_ipxe_user_class(v: &[u8]) -> bool {
    v.get(..2) == Some(&[0, 4][..]) && v.get(2..6) == Some(IPXE_USER_CLASS)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Writes the reply options for message type `reply_type`; returns their length.
fn write_options(
    out: &mut [u8],
    node: &NodeConfig,
    iface: &Interface,
    addr: Ipv6Addr,
    request_type: u8,
    asked: &Asked<'_>,
) -> Option<usize> {
    let mut w = Writer::new(out);
    w.put_u16(opt::SERVERID).put_u16(10).put_u16(dhcpv6::DUID_LL).put_u16(DUID_HW_TYPE);
    w.put(&iface.port_mac);
    if let Some(id) = asked.client_id {
        w.put_u16(opt::CLIENTID).put_u16(u16::try_from(id.len()).ok()?).put(id);
    }
    if request_type == msg::CONFIRM {
        w.put_u16(opt::STATUS_CODE).put_u16(2).put_u16(dhcpv6::STATUS_SUCCESS);
        return w.finish();
    }
    if let Some(iaid) = asked.iaid {
        let status_len = dhcpv6::OPT_HEADER_LEN + 2;
        let iaaddr_len = dhcpv6::IAADDR_FIXED_LEN + status_len;
        let iana_len = dhcpv6::IA_NA_FIXED_LEN + dhcpv6::OPT_HEADER_LEN + iaaddr_len;
        w.put_u16(opt::IA_NA).put_u16(u16::try_from(iana_len).ok()?);
        w.put(&iaid).put_u32(dhcpv6::INFINITY).put_u32(dhcpv6::INFINITY);
        w.put_u16(opt::IAADDR).put_u16(u16::try_from(iaaddr_len).ok()?);
        w.put(&addr.octets()).put_u32(dhcpv6::INFINITY).put_u32(dhcpv6::INFINITY);
        w.put_u16(opt::STATUS_CODE).put_u16(2).put_u16(dhcpv6::STATUS_SUCCESS);
    }
    if request_type == msg::SOLICIT && asked.rapid_commit {
        w.put_u16(opt::RAPID_COMMIT).put_u16(0);
    }
    w.put_u16(opt::DNS_SERVERS).put_u16(u16::try_from(16 * node.dhcpv6_dns.len()).ok()?);
    for d in &node.dhcpv6_dns {
        w.put(&d.octets());
    }
    if let Some((mode, pxe)) = asked.pxe.zip(iface.pxe.as_ref()) {
        let mut url = [0u8; MAX_BOOT_URL_LEN];
        let n = boot_url(&mut url, mode, pxe);
        w.put_u16(opt::BOOTFILE_URL).put_u16(u16::try_from(n).ok()?).put(&url[..n]);
    }
    w.finish()
}

/// Writes the boot file URL into `out` (cut at its end); returns its length.
fn boot_url(out: &mut [u8], mode: PxeMode, pxe: &PxeConfig) -> usize {
    // The API stores the next server as text; one that is not IPv6 is announced as ::.
    let server: Ipv6Addr = pxe.next_server.parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
    let mut text = TruncatingText::new(out);
    // Writing into a fixed slice cannot fail; it truncates.
    let _ = match mode {
        PxeMode::Tftp => write!(text, "tftp://[{server}]/{PXE_TFTP_FILE}"),
        PxeMode::Http => write!(text, "http://[{server}]/{}", pxe.boot_filename),
    };
    text.len()
}

fn reply<B: PacketBuf>(
    node: &NodeConfig,
    iface: &Interface,
    buf: &mut B,
) -> Result<(), DropReason> {
    let addr = match iface.ipv6 {
        Some(a) if !a.is_unspecified() => a,
        _ => return Err(DropReason::Dhcpv6Ignored),
    };
    let mut options = [0u8; MAX_OPTIONS_LEN];
    let (client_mac, client_ip, vtc_flow, hop_limit, reply_type, n) = {
        let frame = buf.data();
        let eth = ethernet::Frame::new_checked(frame).ok_or(DropReason::Malformed)?;
        if eth.ethertype() != ethernet::ETHERTYPE_IPV6 {
            return Err(DropReason::Malformed);
        }
        let ip = ipv6::Packet::new_checked(eth.payload()).ok_or(DropReason::Malformed)?;
        if ip.next_header() != ipv6::NH_UDP {
            return Err(DropReason::Malformed);
        }
        let udp = udp::Packet::new_checked(ip.payload()).ok_or(DropReason::Malformed)?;
        let m = udp.payload();
        let (&request_type, _) = m.split_first().ok_or(DropReason::Malformed)?;
        let opts = m.get(dhcpv6::HEADER_LEN..).ok_or(DropReason::Malformed)?;
        if !matches!(request_type, msg::SOLICIT | msg::REQUEST | msg::RELEASE | msg::CONFIRM) {
            return Err(DropReason::Dhcpv6Ignored);
        }
        let asked = parse_options(opts)?;
        let reply_type = match request_type {
            msg::SOLICIT if !asked.rapid_commit => msg::ADVERTISE,
            _ => msg::REPLY,
        };
        let n = write_options(&mut options, node, iface, addr, request_type, &asked)
            .ok_or(DropReason::NoRoom)?;
        let w = &frame[IP_OFF..IP_OFF + 4];
        let vtc_flow = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        (eth.src(), ip.src(), vtc_flow, ip.hop_limit(), reply_type, n)
    };

    let udp_len = udp::HEADER_LEN + dhcpv6::HEADER_LEN + n;
    let udp_len = u16::try_from(udp_len).map_err(|_| DropReason::TooBig)?;
    if !buf.set_len(OPTIONS_OFF + n) {
        return Err(DropReason::NoRoom);
    }
    let frame = buf.data_mut();
    frame[OPTIONS_OFF..].copy_from_slice(&options[..n]);
    frame[MSG_OFF] = reply_type;

    let mut u = udp::Packet::new_unchecked(&mut frame[UDP_OFF..]);
    u.set_ports(dhcpv6::SERVER_PORT, dhcpv6::CLIENT_PORT);
    u.set_len(udp_len);
    u.fill_checksum_v6(GATEWAY, client_ip);

    let ip = ipv6::Repr {
        src: GATEWAY,
        dst: client_ip,
        next_header: ipv6::NH_UDP,
        payload_len: udp_len,
        hop_limit,
        vtc_flow,
    };
    let (eth, rest) = frame.split_at_mut(IP_OFF);
    if !ip.emit(rest) {
        return Err(DropReason::NoRoom);
    }
    let mut eth = ethernet::Frame::new_checked(eth).ok_or(DropReason::Malformed)?;
    eth.set_header(client_mac, iface.port_mac, ethernet::ETHERTYPE_IPV6);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::arp::fixture::{ctx, iface, snapshot, PORT, PORT_MAC, VM_MAC};
    use super::*;
    use crate::buf::TestBuf;
    use crate::config::Snapshot;
    use crate::wire::checksum;
    use proptest::prelude::*;

    // Requests, generated with scapy 2.5 (python3-scapy), `bytes(pkt)`:
    /// test_dhcpv6.py's PXE_MODE Solicit: Ether(dst=33:33:00:00:00:01, src=VM)/IPv6(src=fe80::200:ff:fe00:1, dst=fe80::1)/UDP(546->547)/DHCP6_Solicit(trid=0xabcdef)/IA_NA(iaid=0x18702501)/RapidCommit/ElapsedTime/ClientId(DUID-LL VM)/OptReq([59])/VendorClass(343, PXEClient:Arch:00007...)
    const SOLICIT_PXE: [u8; 154] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x64, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x22, 0x02, 0x23, 0x00, 0x64,
        0x6a, 0x20, 0x01, 0xab, 0xcd, 0xef, 0x00, 0x03, 0x00, 0x0c, 0x18, 0x70, 0x25, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x06, 0x00, 0x02, 0x00, 0x3b, 0x00, 0x10, 0x00, 0x26, 0x00, 0x00, 0x01, 0x57,
        0x00, 0x20, 0x50, 0x58, 0x45, 0x43, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x3a, 0x41, 0x72, 0x63,
        0x68, 0x3a, 0x30, 0x30, 0x30, 0x30, 0x37, 0x3a, 0x55, 0x4e, 0x44, 0x49, 0x3a, 0x30, 0x30,
        0x33, 0x30, 0x31, 0x36,
    ];

    /// test_dhcpv6.py's IPXE_MODE Solicit without RapidCommit: Ether(dst=33:33:00:00:00:01, src=VM)/IPv6(src=fe80::200:ff:fe00:1, dst=fe80::1)/UDP(546->547)/DHCP6_Solicit(trid=0x010203)/IA_NA(iaid=0x18702501)/ElapsedTime/ClientId(DUID-LL VM)/OptReq([59])/UserClass(sub-option len 4, "iPXE")
    const SOLICIT_IPXE: [u8; 118] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x22, 0x02, 0x23, 0x00, 0x40,
        0xf8, 0x95, 0x01, 0x01, 0x02, 0x03, 0x00, 0x03, 0x00, 0x0c, 0x18, 0x70, 0x25, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00,
        0x02, 0x00, 0x3b, 0x00, 0x0f, 0x00, 0x06, 0x00, 0x04, 0x69, 0x50, 0x58, 0x45,
    ];

    /// test_dhcpv6.py's Request: Ether(dst=33:33:00:00:00:01, src=VM)/IPv6(src=fe80::200:ff:fe00:1, dst=fe80::1)/UDP(546->547)/DHCP6_Request(trid=0x123456)/IA_NA(iaid=0x18702501, IAAddress(2000:100:1::1))/RapidCommit/ElapsedTime/ClientId(DUID-LL VM)/OptReq/VendorClass(PXE)
    const REQUEST: [u8; 184] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x82, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x22, 0x02, 0x23, 0x00, 0x82,
        0xe0, 0xe5, 0x03, 0x12, 0x34, 0x56, 0x00, 0x03, 0x00, 0x28, 0x18, 0x70, 0x25, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x18, 0x20, 0x00, 0x01, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
        0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x18, 0x00, 0x10, 0x00, 0x26, 0x00, 0x00, 0x01, 0x57,
        0x00, 0x20, 0x50, 0x58, 0x45, 0x43, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x3a, 0x41, 0x72, 0x63,
        0x68, 0x3a, 0x30, 0x30, 0x30, 0x30, 0x37, 0x3a, 0x55, 0x4e, 0x44, 0x49, 0x3a, 0x30, 0x30,
        0x33, 0x30, 0x31, 0x36,
    ];

    /// test_dhcpv6.py's Confirm: Ether(dst=33:33:00:00:00:01, src=VM)/IPv6(src=fe80::200:ff:fe00:1, dst=fe80::1)/UDP(546->547)/DHCP6_Confirm(trid=0x777777)/ElapsedTime
    const CONFIRM: [u8; 72] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x12, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x22, 0x02, 0x23, 0x00, 0x12,
        0x81, 0x89, 0x04, 0x77, 0x77, 0x77, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00,
    ];

    /// Ether(dst=33:33:00:00:00:01, src=VM)/IPv6(src=fe80::200:ff:fe00:1, dst=fe80::1)/UDP(546->547)/DHCP6_Renew(trid=0x424242)/IA_NA(iaid=0x18702501)/ClientId(DUID-LL VM)
    const RENEW: [u8; 96] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x2a, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x22, 0x02, 0x23, 0x00, 0x2a,
        0x76, 0x3d, 0x05, 0x42, 0x42, 0x42, 0x00, 0x03, 0x00, 0x0c, 0x18, 0x70, 0x25, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    // Expected replies, built with scapy's DHCPv6 layers from the request's fields, and
    // parsed back with scapy to check what test_dhcpv6.py reads (client DUID, IAID,
    // assigned address, DNS servers, boot file URL):
    /// The expected answer to SOLICIT_PXE (rapid commit): Ether(dst=VM, src=port)/IPv6(fe80::1 -> client)/UDP(547->546)/DHCP6_Reply/ServerId(DUID-LL hwtype 0xabcd, port MAC)/ClientId(echoed)/IA_NA(iaid, T1=T2=inf, IAAddress(2000:100:1::1, inf, inf, StatusCode(0)))/RapidCommit/DNSServers/BootFileUrl(tftp://[2001:dede::1]/ipxe/x86_64/ipxe.new)
    const REPLY_RAPID_PXE: [u8; 230] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0xb0, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0x02, 0x23, 0x02, 0x22, 0x00, 0xb0,
        0x18, 0x56, 0x07, 0xab, 0xcd, 0xef, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x03, 0xab, 0xcd, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x00, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x03, 0x00, 0x2e, 0x18, 0x70, 0x25, 0x01, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x05, 0x00, 0x1e, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0x00, 0x0d, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x17,
        0x00, 0x20, 0x20, 0x01, 0x48, 0x60, 0x48, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x64, 0x64, 0x20, 0x02, 0x48, 0x61, 0x48, 0x61, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x64, 0x64, 0x00, 0x3b, 0x00, 0x2a, 0x74, 0x66, 0x74, 0x70, 0x3a, 0x2f, 0x2f,
        0x5b, 0x32, 0x30, 0x30, 0x31, 0x3a, 0x64, 0x65, 0x64, 0x65, 0x3a, 0x3a, 0x31, 0x5d, 0x2f,
        0x69, 0x70, 0x78, 0x65, 0x2f, 0x78, 0x38, 0x36, 0x5f, 0x36, 0x34, 0x2f, 0x69, 0x70, 0x78,
        0x65, 0x2e, 0x6e, 0x65, 0x77,
    ];

    /// The expected answer to SOLICIT_IPXE: DHCP6_Advertise with ServerId/ClientId/IA_NA/DNSServers/BootFileUrl(http://[2001:dede::1]/ipxe)
    const ADVERTISE_IPXE: [u8; 210] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x9c, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0x02, 0x23, 0x02, 0x22, 0x00, 0x9c,
        0x66, 0xf4, 0x02, 0x01, 0x02, 0x03, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x03, 0xab, 0xcd, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x00, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x03, 0x00, 0x2e, 0x18, 0x70, 0x25, 0x01, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x05, 0x00, 0x1e, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0x00, 0x0d, 0x00, 0x02, 0x00, 0x00, 0x00, 0x17, 0x00, 0x20, 0x20, 0x01,
        0x48, 0x60, 0x48, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x64, 0x20,
        0x02, 0x48, 0x61, 0x48, 0x61, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x64,
        0x00, 0x3b, 0x00, 0x1a, 0x68, 0x74, 0x74, 0x70, 0x3a, 0x2f, 0x2f, 0x5b, 0x32, 0x30, 0x30,
        0x31, 0x3a, 0x64, 0x65, 0x64, 0x65, 0x3a, 0x3a, 0x31, 0x5d, 0x2f, 0x69, 0x70, 0x78, 0x65,
    ];

    /// The expected answer to REQUEST: DHCP6_Reply with ServerId/ClientId/IA_NA/DNSServers/BootFileUrl(tftp, the request has the PXE vendor class); no RapidCommit
    const REPLY: [u8; 226] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0xac, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0x02, 0x23, 0x02, 0x22, 0x00, 0xac,
        0xb2, 0x9e, 0x07, 0x12, 0x34, 0x56, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x03, 0xab, 0xcd, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x00, 0x00, 0x01, 0x00, 0x0a, 0x00, 0x03, 0x00, 0x01, 0x02, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x03, 0x00, 0x2e, 0x18, 0x70, 0x25, 0x01, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x05, 0x00, 0x1e, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0x00, 0x0d, 0x00, 0x02, 0x00, 0x00, 0x00, 0x17, 0x00, 0x20, 0x20, 0x01,
        0x48, 0x60, 0x48, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x64, 0x20,
        0x02, 0x48, 0x61, 0x48, 0x61, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x64,
        0x00, 0x3b, 0x00, 0x2a, 0x74, 0x66, 0x74, 0x70, 0x3a, 0x2f, 0x2f, 0x5b, 0x32, 0x30, 0x30,
        0x31, 0x3a, 0x64, 0x65, 0x64, 0x65, 0x3a, 0x3a, 0x31, 0x5d, 0x2f, 0x69, 0x70, 0x78, 0x65,
        0x2f, 0x78, 0x38, 0x36, 0x5f, 0x36, 0x34, 0x2f, 0x69, 0x70, 0x78, 0x65, 0x2e, 0x6e, 0x65,
        0x77,
    ];

    /// The expected answer to CONFIRM: DHCP6_Reply/ServerId/StatusCode(Success)
    const CONFIRM_REPLY: [u8; 86] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x20, 0x11, 0x40, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0x02, 0x23, 0x02, 0x22, 0x00, 0x20,
        0x9f, 0xbe, 0x07, 0x77, 0x77, 0x77, 0x00, 0x02, 0x00, 0x0a, 0x00, 0x03, 0xab, 0xcd, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x00, 0x00, 0x0d, 0x00, 0x02, 0x00, 0x00,
    ];

    fn run_on(snap: &Snapshot, iface: &Interface, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut buf = TestBuf::new(frame);
        let v = process(&ctx(snap), iface, &mut buf);
        (v, buf.to_vec())
    }

    fn run(frame: &[u8]) -> (Verdict, Vec<u8>) {
        run_on(&snapshot(true), &iface(), frame)
    }

    /// Checks the IPv6 and UDP lengths and the UDP checksum independently.
    fn verify(out: &[u8]) {
        let ip = &out[14..54];
        let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        assert_eq!(plen, out.len() - 54, "IPv6 payload length");
        let udp = &out[54..];
        assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), udp.len(), "UDP length");
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
        #[allow(clippy::cast_possible_truncation)]
        let sum = checksum::sum_words(checksum::pseudo_v6(src, dst, 17, udp.len() as u32), udp);
        assert_eq!(checksum::finish(sum), 0, "UDP checksum");
        assert_eq!(src, GATEWAY);
        assert_eq!((&out[..6], &out[6..12]), (&VM_MAC[..], &PORT_MAC[..]));
    }

    #[test]
    fn rapid_commit_solicit_gets_reply_with_tftp_url() {
        let (v, out) = run(&SOLICIT_PXE);
        assert_eq!(v, Verdict::Tx(PORT));
        verify(&out);
        assert_eq!(out, REPLY_RAPID_PXE);
    }

    #[test]
    fn solicit_gets_advertise_with_http_url() {
        let (v, out) = run(&SOLICIT_IPXE);
        assert_eq!(v, Verdict::Tx(PORT));
        verify(&out);
        assert_eq!(out, ADVERTISE_IPXE);
    }

    #[test]
    fn request_gets_reply() {
        let (v, out) = run(&REQUEST);
        assert_eq!(v, Verdict::Tx(PORT));
        verify(&out);
        assert_eq!(out, REPLY);
    }

    #[test]
    fn release_gets_reply() {
        let mut release = REQUEST;
        release[62] = msg::RELEASE;
        let (v, out) = run(&release);
        assert_eq!(v, Verdict::Tx(PORT));
        verify(&out);
        assert_eq!(out[62], msg::REPLY);
        assert_eq!(out[63..], REPLY[63..]);
    }

    #[test]
    fn confirm_gets_bare_reply() {
        let (v, out) = run(&CONFIRM);
        assert_eq!(v, Verdict::Tx(PORT));
        verify(&out);
        assert_eq!(out, CONFIRM_REPLY);
    }

    #[test]
    fn no_pxe_settings_no_url_and_no_dns_servers_empty_option() {
        let mut vm = iface();
        vm.pxe = None;
        let mut snap = snapshot(true);
        snap.node.dhcpv6_dns.clear();
        let (_, out) = run_on(&snap, &vm, &SOLICIT_PXE);
        verify(&out);
        let codes: Vec<u16> = Options::new(&out[66..]).map(|o| o.unwrap().0).collect();
        assert_eq!(
            codes,
            [opt::SERVERID, opt::CLIENTID, opt::IA_NA, opt::RAPID_COMMIT, opt::DNS_SERVERS]
        );
        assert_eq!(out[out.len() - 4..], [0, 23, 0, 0]);
    }

    #[test]
    fn long_boot_url_is_cut() {
        let mut vm = iface();
        vm.pxe =
            Some(PxeConfig { next_server: "2001:dede::1".into(), boot_filename: "b".repeat(200) });
        let (_, out) = run_on(&snapshot(true), &vm, &SOLICIT_IPXE);
        verify(&out);
        let url = Options::new(&out[66..])
            .map(|o| o.unwrap())
            .find(|o| o.0 == opt::BOOTFILE_URL)
            .unwrap();
        assert_eq!(url.1.len(), MAX_BOOT_URL_LEN);
        assert!(url.1.starts_with(b"http://[2001:dede::1]/bbb"));
    }

    #[test]
    fn other_messages_are_ignored() {
        assert_eq!(run(&RENEW).0, Verdict::Drop(DropReason::Dhcpv6Ignored));
        for t in [
            msg::ADVERTISE,
            msg::REBIND,
            msg::REPLY,
            msg::DECLINE,
            msg::INFORMATION_REQUEST,
            0,
            12,
            255,
        ] {
            let mut f = REQUEST;
            f[62] = t;
            assert_eq!(run(&f).0, Verdict::Drop(DropReason::Dhcpv6Ignored), "type {t}");
        }
        let mut vm = iface();
        vm.ipv6 = None;
        assert_eq!(
            run_on(&snapshot(true), &vm, &REQUEST).0,
            Verdict::Drop(DropReason::Dhcpv6Ignored)
        );
    }

    #[test]
    fn malformed_requests_are_dropped_untouched() {
        for len in 0..SOLICIT_PXE.len() {
            let (v, out) = run(&SOLICIT_PXE[..len]);
            assert!(matches!(v, Verdict::Drop(_)), "length {len}");
            assert_eq!(out, SOLICIT_PXE[..len]);
        }
        // Options of REQUEST start at 66: IA_NA (code 3) first.
        assert_eq!(REQUEST[66..68], [0, 3]);
        let mut long_option = REQUEST;
        long_option[68..70].copy_from_slice(&0x0fffu16.to_be_bytes());
        assert_eq!(run(&long_option).0, Verdict::Drop(DropReason::Malformed));
        let mut short_iana = REQUEST;
        short_iana[68..70].fill(0);
        // an IA_NA of length 0 (shorter than IAID, T1, T2)
        assert_eq!(run(&short_iana).0, Verdict::Drop(DropReason::Malformed));
        // rapid commit with a body
        let mut f = SOLICIT_PXE.to_vec();
        f.extend_from_slice(&[0, 14, 0, 1, 0]);
        fix_lengths(&mut f);
        assert_eq!(run(&f).0, Verdict::Drop(DropReason::Malformed));
        // a client id longer than 128 bytes
        let mut f = CONFIRM.to_vec();
        f.extend_from_slice(&[0, 1, 0, 129]);
        f.extend_from_slice(&[7; 129]);
        fix_lengths(&mut f);
        assert_eq!(run(&f).0, Verdict::Drop(DropReason::Malformed));
        f.truncate(f.len() - 1);
        let len_at = f.len() - 129;
        f[len_at] = 128;
        fix_lengths(&mut f);
        assert_eq!(run(&f).0, Verdict::Tx(PORT), "128 bytes are fine");
    }

    /// Sets the IPv6 and UDP lengths after an edit of the message size.
    fn fix_lengths(f: &mut [u8]) {
        let l = u16::try_from(f.len() - 54).unwrap().to_be_bytes();
        f[18..20].copy_from_slice(&l);
        f[58..60].copy_from_slice(&l);
    }

    proptest! {
        #[test]
        fn never_panics(frame in proptest::collection::vec(any::<u8>(), 0..300), tweak in any::<(usize, u8, usize)>()) {
            run(&frame);
            let mut f = SOLICIT_PXE.to_vec();
            let i = 62 + tweak.0 % (f.len() - 62);
            f[i] = tweak.1;
            f.truncate(tweak.2 % (f.len() + 1));
            if f.len() >= 62 {
                fix_lengths(&mut f);
            }
            run(&f);
        }
    }
}
