//! IPv6 neighbor discovery responder for the VM's gateway, fe80::1.
//!
//! Served only while the node runs the IPv6 overlay. A neighbor solicitation for the
//! gateway gets a neighbor advertisement carrying the VF port's MAC (solicited and
//! override set, router clear, as dpservice sends it); a router solicitation gets a
//! router advertisement telling the VM to use DHCPv6 for addresses and other
//! configuration (managed and other set, router lifetime 0xffff, no prefixes). Both are
//! sent from fe80::1 to the solicitor, or to all nodes when it used the unspecified
//! address, and built in the request's buffer. Other ND messages are dropped.

use std::net::Ipv6Addr;

use crate::buf::PacketBuf;
use crate::config::Interface;
use crate::graph::{Ctx, DropReason, Verdict};
use crate::wire::icmpv6::{self, NaRepr, RaRepr};
use crate::wire::{ethernet, ipv6};

/// The link-local address of the VMs' default gateway, answered on every VF.
pub const GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// All-nodes link-local multicast: where replies to unspecified-source solicitations go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The router advertisement every VF gets.
const fn advertisement(mac: crate::config::Mac) -> RaRepr {
    RaRepr {
        cur_hop_limit: 255,
        flags: icmpv6::RA_MANAGED | icmpv6::RA_OTHER,
        router_lifetime: 0xffff,
        reachable_time: 0,
        retrans_timer: 0,
        source_mac: mac,
    }
}

/// Answers an NS for [`GATEWAY`] or an RS in place; drops anything else.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, iface: &Interface, buf: &mut B) -> Verdict {
    if !ctx.snap.node.ipv6_overlay {
        return Verdict::Drop(DropReason::Ipv6Disabled);
    }
    match reply(iface, buf) {
        Ok(()) => Verdict::Tx(ctx.in_port),
        Err(reason) => Verdict::Drop(reason),
    }
}

/// What the request asks for, read before the buffer is rewritten.
enum Answer {
    Neighbor,
    Router,
}

const ICMP_OFF: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN;

fn reply<B: PacketBuf>(iface: &Interface, buf: &mut B) -> Result<(), DropReason> {
    let frame = buf.data();
    let eth = ethernet::Frame::new_checked(frame).ok_or(DropReason::Malformed)?;
    let ip = ipv6::Packet::new_checked(eth.payload()).ok_or(DropReason::Malformed)?;
    if ip.next_header() != ipv6::NH_ICMPV6 {
        return Err(DropReason::Malformed);
    }
    let msg = ip.payload();
    let answer = match msg.first().copied() {
        Some(icmpv6::TYPE_NEIGHBOR_SOLICIT) => {
            let target = icmpv6::ns_target(msg).ok_or(DropReason::Malformed)?;
            if target != GATEWAY {
                return Err(DropReason::NdNotForUs);
            }
            Answer::Neighbor
        }
        Some(icmpv6::TYPE_ROUTER_SOLICIT) if msg.len() >= icmpv6::RS_LEN => Answer::Router,
        Some(icmpv6::TYPE_ROUTER_SOLICIT) | None => return Err(DropReason::Malformed),
        Some(_) => return Err(DropReason::NdNotForUs),
    };
    let (asker_mac, asker_ip, vtc_flow) = (eth.src(), ip.src(), vtc_flow(frame));
    let dst = if asker_ip.is_unspecified() { ALL_NODES } else { asker_ip };
    let msg_len = match answer {
        Answer::Neighbor => NaRepr::LEN,
        Answer::Router => RaRepr::LEN,
    };
    if !buf.set_len(ICMP_OFF + msg_len) {
        return Err(DropReason::NoRoom);
    }
    let frame = buf.data_mut();
    let (headers, msg) = frame.split_at_mut(ICMP_OFF);
    let emitted = match answer {
        Answer::Neighbor => NaRepr {
            flags: icmpv6::NA_SOLICITED | icmpv6::NA_OVERRIDE,
            target: GATEWAY,
            target_mac: iface.port_mac,
        }
        .emit(msg),
        Answer::Router => advertisement(iface.port_mac).emit(msg),
    };
    icmpv6::fill_checksum(msg, GATEWAY, dst);
    let ip = ipv6::Repr {
        src: GATEWAY,
        dst,
        next_header: ipv6::NH_ICMPV6,
        payload_len: u16::try_from(msg_len).unwrap_or(u16::MAX),
        hop_limit: 255,
        vtc_flow,
    };
    let (eth, ip_hdr) = headers.split_at_mut(ethernet::HEADER_LEN);
    let mut eth = ethernet::Frame::new_checked(eth).ok_or(DropReason::Malformed)?;
    // Cannot fail: the buffer was sized for both above.
    if !(emitted && ip.emit(ip_hdr)) {
        return Err(DropReason::NoRoom);
    }
    eth.set_header(asker_mac, iface.port_mac, ethernet::ETHERTYPE_IPV6);
    Ok(())
}

/// The request's version/traffic class/flow label word, kept in the reply.
fn vtc_flow(frame: &[u8]) -> u32 {
    let off = ethernet::HEADER_LEN + ipv6::field::VTC_FLOW.start;
    match frame.get(off..off + 4) {
        Some(w) => u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
        None => 0x6000_0000,
    }
}

#[cfg(test)]
mod tests {
    use super::super::arp::fixture::{ctx, iface, snapshot, PORT, PORT_MAC, VM_MAC};
    use super::*;
    use crate::buf::TestBuf;
    use crate::wire::checksum;
    use proptest::prelude::*;

    // Generated with scapy 2.5 (python3-scapy), `bytes(pkt)`:
    /// scapy neighsol("fe80::1", "2000:100:1::1") as test_ipv6_nd.py sends it: Ether(dst=33:33:ff:00:00:01, src=VM)/IPv6(src=2000:100:1::1, dst=ff02::1:ff00:1, hlim=255)/ICMPv6ND_NS(tgt=fe80::1)/ICMPv6NDOptSrcLLAddr(VM)
    const NS_GW: [u8; 86] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x20, 0x3a, 0xff, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff,
        0x00, 0x00, 0x01, 0x87, 0x00, 0x58, 0x19, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x01,
    ];

    /// Ether(dst=33:33:ff:00:00:01, src=VM)/IPv6(src=::, dst=ff02::1:ff00:1, hlim=255)/ICMPv6ND_NS(tgt=fe80::1), no options
    const NS_DAD: [u8; 78] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x18, 0x3a, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff,
        0x00, 0x00, 0x01, 0x87, 0x00, 0x7c, 0x25, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    ];

    /// Ether(src=VM)/IPv6(src=fe80::200:ff:fe00:1, dst=ff02::1:ff00:2, hlim=255)/ICMPv6ND_NS(tgt=fe80::2)/ICMPv6NDOptSrcLLAddr(VM)
    const NS_OTHER: [u8; 86] = [
        0x33, 0x33, 0xff, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0xff,
        0xfe, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xff,
        0x00, 0x00, 0x02, 0x87, 0x00, 0x79, 0x97, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x01,
    ];

    /// Ether(dst=33:33:00:00:00:02, src=VM)/IPv6(src=fe80::200:ff:fe00:1, dst=ff02::2, hlim=255)/ICMPv6ND_RS()/ICMPv6NDOptSrcLLAddr(VM)
    const RS: [u8; 70] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x10, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0xff,
        0xfe, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x02, 0x85, 0x00, 0x79, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x01,
    ];

    /// Ether(src=VM)/IPv6(src=fe80::200:ff:fe00:1, dst=ff02::1, hlim=255)/ICMPv6ND_NA(tgt=fe80::200:ff:fe00:1, O=1)/ICMPv6NDOptDstLLAddr(VM)
    const NA_UNSOLICITED: [u8; 86] = [
        0x33, 0x33, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0xff,
        0xfe, 0x00, 0x00, 0x01, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x88, 0x00, 0x55, 0x9b, 0x20, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x02, 0x00, 0x00, 0xff, 0xfe, 0x00, 0x00, 0x01, 0x02, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00,
        0x01,
    ];

    // Expected replies, generated the same way:
    /// The expected answer to NS_GW: Ether(dst=VM, src=port)/IPv6(src=fe80::1, dst=2000:100:1::1, hlim=255)/ICMPv6ND_NA(R=0, S=1, O=1, tgt=fe80::1)/ICMPv6NDOptDstLLAddr(port)
    const NA_REPLY: [u8; 86] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x20, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x88, 0x00, 0xc4, 0xd0, 0x60, 0x00, 0x00, 0x00, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x00,
    ];

    /// The expected answer to RS: Ether(dst=VM, src=port)/IPv6(src=fe80::1, dst=fe80::200:ff:fe00:1, hlim=255)/ICMPv6ND_RA(chlim=255, M=1, O=1, prf=0, routerlifetime=65535)/ICMPv6NDOptSrcLLAddr(port)
    const RA_REPLY: [u8; 78] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x18, 0x3a, 0xff, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0xff, 0xfe,
        0x00, 0x00, 0x01, 0x86, 0x00, 0x48, 0x1a, 0xff, 0xc0, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x01, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00,
    ];

    fn run_with(overlay: bool, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let snap = snapshot(overlay);
        let mut buf = TestBuf::new(frame);
        let v = process(&ctx(&snap), &iface(), &mut buf);
        (v, buf.to_vec())
    }

    fn run(frame: &[u8]) -> (Verdict, Vec<u8>) {
        run_with(true, frame)
    }

    /// Checks the IPv6 payload length and the ICMPv6 checksum independently.
    fn verify(out: &[u8]) -> (Ipv6Addr, Ipv6Addr, &[u8]) {
        let ip = &out[14..54];
        assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), out.len() - 54, "payload length");
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
        let msg = &out[54..];
        #[allow(clippy::cast_possible_truncation)]
        let sum = checksum::sum_words(checksum::pseudo_v6(src, dst, 58, msg.len() as u32), msg);
        assert_eq!(checksum::finish(sum), 0, "ICMPv6 checksum");
        (src, dst, msg)
    }

    #[test]
    fn answers_ns_for_gateway() {
        let (v, out) = run(&NS_GW);
        assert_eq!(v, Verdict::Tx(PORT));
        assert_eq!(out, NA_REPLY);
        let (src, _, msg) = verify(&out);
        assert_eq!(src, GATEWAY);
        assert_eq!(msg[4], 0x60, "solicited + override, router clear");
        assert_eq!(msg[24..], [2, 1, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00], "target link-layer address");
        assert_eq!((&out[..6], &out[6..12]), (&VM_MAC[..], &PORT_MAC[..]));
    }

    #[test]
    fn dad_probe_is_answered_to_all_nodes_with_an_option_added() {
        let (v, out) = run(&NS_DAD);
        assert_eq!(v, Verdict::Tx(PORT));
        assert_eq!(out.len(), 86, "grown by the target link-layer option");
        let (_, dst, msg) = verify(&out);
        assert_eq!(dst, ALL_NODES);
        assert_eq!(msg[24..26], [2, 1]);
    }

    #[test]
    fn answers_rs_with_ra() {
        let (v, out) = run(&RS);
        assert_eq!(v, Verdict::Tx(PORT));
        assert_eq!(out, RA_REPLY);
        let (_, _, msg) = verify(&out);
        assert_eq!(msg[4..8], [255, 0xc0, 0xff, 0xff], "hop limit, managed + other, lifetime");
    }

    #[test]
    fn drops_what_it_does_not_answer() {
        assert_eq!(run(&NS_OTHER).0, Verdict::Drop(DropReason::NdNotForUs));
        assert_eq!(run(&NA_UNSOLICITED).0, Verdict::Drop(DropReason::NdNotForUs));
        assert_eq!(run_with(false, &NS_GW), (Verdict::Drop(DropReason::Ipv6Disabled), NS_GW.to_vec()));
        assert_eq!(run_with(false, &RS).0, Verdict::Drop(DropReason::Ipv6Disabled));
        let mut udp = RS;
        udp[20] = 17;
        assert_eq!(run(&udp).0, Verdict::Drop(DropReason::Malformed));
    }

    #[test]
    fn truncated_requests_are_dropped_untouched() {
        for frame in [&NS_GW[..], &NS_DAD[..], &RS[..]] {
            for len in 0..frame.len() {
                let (v, out) = run(&frame[..len]);
                assert!(matches!(v, Verdict::Drop(_)), "length {len}: {v:?}");
                assert_eq!(out, frame[..len]);
            }
        }
        // a payload length shorter than an NS
        let mut short = NS_GW;
        short[19] = 20;
        assert_eq!(run(&short).0, Verdict::Drop(DropReason::Malformed));
    }

    proptest! {
        #[test]
        fn never_panics(frame in proptest::collection::vec(any::<u8>(), 0..160), tweak in any::<(usize, u8)>()) {
            run(&frame);
            for golden in [&NS_GW[..], &RS[..]] {
                let mut f = golden.to_vec();
                let i = tweak.0 % f.len();
                f[i] = tweak.1;
                run(&f);
            }
        }
    }
}
