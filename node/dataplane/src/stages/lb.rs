//! The load-balancer stage: the first packet of a flow for a load balancer's underlay
//! address gets a target.
//!
//! As in dpservice, only decapsulated tunnel traffic reaches a load balancer (a VM's
//! packets to a load-balanced IP are routed like any others, normally to the router,
//! which sends them to the LB's underlay address). For a packet whose destination is the
//! load-balanced IP of an LB in the tunnel's VNI:
//! - an ICMP or ICMPv6 echo request is answered by the node (re-encapsulated to the
//!   sender, out of the PF it came in on; no flow is kept, so every request is
//!   answered), whatever the LB's ports and targets;
//! - otherwise the (protocol, destination port) must be one the LB serves, and a target
//!   is chosen ([`crate::tables::lb::select`]); no target, port or LB: the packet is
//!   dropped ([`DropReason::LbNoTarget`]).
//!
//! A target whose underlay address belongs to this node (a load-balancer prefix, or an
//! interface or alias prefix) is reached by delivering the packet to that VF unchanged:
//! what dpservice achieves by re-encapsulating it and feeding it back into its graph
//! (the VM sees the same packet: destination the load-balanced IP, which it owns through
//! its load-balancer prefix). Any other target is reached through the underlay: the
//! inner packet, unchanged, re-encapsulated with the node's underlay address as source,
//! out of the PF it came in on.
//!
//! The conntrack stage caches the choice in the flow, so later packets of the flow keep
//! their target even when targets are added or removed. An ICMP destination-unreachable
//! error about a flow of the LB that the node has no flow for (it quotes the
//! load-balanced IP and port as its source) is sent to a target the same way, without
//! a flow.

use std::net::Ipv6Addr;

use crate::buf::PacketBuf;
use crate::config::{PortId, Snapshot, UnderlayTarget, Vni};
use crate::graph::{DropReason, Next, Underlay};
use crate::tables::conntrack::{FlowKey, PROTO_ICMP, PROTO_ICMPV6};
use crate::tables::lb::{self, LbFlow, RoundRobin};
use crate::wire::checksum::update16;
use crate::wire::{ethernet, ipv6};

/// ICMPv6 echo request and reply types.
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// Hop limit of the node's ICMPv6 echo replies.
const ECHO_HOP_LIMIT: u8 = 64;

/// Where a load-balanced flow goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// To the VM on this VF (a local target).
    Local(PortId),
    /// Through the underlay to this target.
    Remote(Ipv6Addr),
}

/// What the stage decided for the first packet of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// An echo request the node answers: the packet (now the reply) goes to `Next`; no
    /// flow is kept.
    Answered(Next),
    /// The flow's target.
    Target(Choice),
    /// Dropped.
    Drop(DropReason),
}

/// Where a target's traffic goes from this node.
fn choice(snap: &Snapshot, target: Ipv6Addr) -> Choice {
    match snap.underlay_targets.get(&target) {
        Some(UnderlayTarget::LbPrefix(p) | UnderlayTarget::Interface(p) | UnderlayTarget::AliasPrefix(p)) => {
            Choice::Local(*p)
        }
        _ => Choice::Remote(target),
    }
}

/// The first packet (key `key`, in the LB's VNI `vni`) of a flow for a load balancer's
/// underlay address. An echo request is answered to the tunnel's source, which the
/// packet's underlay slot holds (see [`crate::graph::Underlay`]).
pub fn new_flow<B: PacketBuf>(
    snap: &Snapshot,
    rr: &mut RoundRobin,
    vni: Vni,
    key: &FlowKey,
    buf: &mut B,
) -> Decision {
    let Some(lb) = snap.lbs.get(&(vni, key.dst())) else {
        return Decision::Drop(DropReason::LbNoTarget);
    };
    // ICMP keys carry the type as source port and the identifier as destination port.
    match (key.proto(), key.src_port()) {
        (PROTO_ICMP, 8) => return Decision::Answered(super::conntrack::answer_echo(buf)),
        (PROTO_ICMPV6, t) if t == u16::from(ICMPV6_ECHO_REQUEST) => {
            return Decision::Answered(answer_echo_v6(buf))
        }
        (PROTO_ICMP | PROTO_ICMPV6, _) => return Decision::Drop(DropReason::LbNoTarget),
        _ => {}
    }
    if !lb.serves(key.proto(), key.dst_port()) {
        return Decision::Drop(DropReason::LbNoTarget);
    }
    let flow = lb_flow(key);
    match lb::select(rr, lb, &flow) {
        Some(t) => Decision::Target(choice(snap, t)),
        None => Decision::Drop(DropReason::LbNoTarget),
    }
}

/// An ICMP error for the LB's VNI `vni` that quotes a packet of one of its flows
/// (`quoted`: the key of the quoted packet, sent from the load-balanced IP and port)
/// and matches no flow of this node: where it goes (a remote target's underlay address
/// to `underlay`).
pub fn icmp_error(
    snap: &Snapshot,
    rr: &mut RoundRobin,
    vni: Vni,
    quoted: &FlowKey,
    underlay: &mut Underlay,
) -> Next {
    let Some(lb) = snap.lbs.get(&(vni, quoted.src())) else {
        return Next::drop(DropReason::LbNoTarget);
    };
    if !lb.serves(quoted.proto(), quoted.src_port()) {
        return Next::drop(DropReason::LbNoTarget);
    }
    match lb::select(rr, lb, &lb_flow(&quoted.reversed())) {
        Some(t) => match choice(snap, t) {
            Choice::Local(p) => Next::VfTx(p),
            Choice::Remote(u) => {
                *underlay = u;
                Next::Relay
            }
        },
        None => Next::drop(DropReason::LbNoTarget),
    }
}

fn lb_flow(key: &FlowKey) -> LbFlow {
    LbFlow {
        vni: key.vni(),
        src: key.src(),
        dst: key.dst(),
        proto: key.proto(),
        src_port: key.src_port(),
        dst_port: key.dst_port(),
    }
}

/// Turns an ICMPv6 echo request (after the Ethernet header) into the node's echo reply,
/// sent back to the tunnel's source (the packet's underlay slot already holds it).
fn answer_echo_v6<B: PacketBuf>(buf: &mut B) -> Next {
    let Some(ip) = buf.data_mut().get_mut(ethernet::HEADER_LEN..) else {
        return Next::drop(DropReason::Malformed);
    };
    if ip.len() < ipv6::HEADER_LEN + 8 || ip[ipv6::HEADER_LEN] != ICMPV6_ECHO_REQUEST {
        return Next::drop(DropReason::Malformed);
    }
    // Swapping the addresses leaves the pseudo-header sum, and so the checksum, as is.
    let mut a = [0u8; 16];
    a.copy_from_slice(&ip[8..24]);
    ip.copy_within(24..40, 8);
    ip[24..40].copy_from_slice(&a);
    ip[7] = ECHO_HOP_LIMIT;
    let icmp = &mut ip[ipv6::HEADER_LEN..];
    let old = u16::from_be_bytes([icmp[0], icmp[1]]);
    icmp[0] = ICMPV6_ECHO_REPLY;
    let new = u16::from_be_bytes([icmp[0], icmp[1]]);
    let ck = update16(u16::from_be_bytes([icmp[2], icmp[3]]), old, new);
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    Next::Relay
}

#[cfg(test)]
mod tests {
    //! Graph tests: frames through a whole pipeline on the reference lab, with an LB
    //! `172.22.2.1` (TCP 80) at underlay `fc00:1::1:99` and an IPv6 LB
    //! `2a10:defe:e01f:f4::2` at `fc00:1::1:98`, both in VNI 100.
    use std::net::IpAddr;
    use std::sync::Arc;

    use crate::buf::TestBuf;
    use crate::config::{DnatTarget, PortId, Snapshot, UnderlayTarget};
    use crate::graph::testkit::{lab, ports::*};
    use crate::graph::{DropReason, Pipeline, Verdict};
    use crate::tables::lb::LoadBalancer;
    use crate::tables::nat::{LocalNat, PortRange};
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// scapy: Ether(dst="22:22:22:22:22:00", src="02:00:00:00:00:fe")/IPv6(src="fc00::ffff", dst="fc00:1::1:99", nh=4)/IP(src="45.86.6.6", dst="172.22.2.1", id=1)/TCP(sport=1234, dport=80, flags="S", seq=1, window=1000)
    const TCP_TO_LB: [u8; 94] = [
        0x22, 0x22, 0x22, 0x22, 0x22, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x28, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xff, 0xff, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x99, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, 0x99, 0x5c, 0x2d, 0x56,
        0x06, 0x06, 0xac, 0x16, 0x02, 0x01, 0x04, 0xd2, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x50, 0x02, 0x03, 0xe8, 0xc5, 0x64, 0x00, 0x00,
    ];
    /// scapy: IPv6(src="fc00:1::1", dst="fc00:2::1", nh=4)/<the same IP packet>
    const TCP_RELAYED: [u8; 80] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x28, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, 0x99,
        0x5c, 0x2d, 0x56, 0x06, 0x06, 0xac, 0x16, 0x02, 0x01, 0x04, 0xd2, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x03, 0xe8, 0xc5, 0x64, 0x00, 0x00,
    ];
    /// scapy: Ether(..)/IPv6(src="fc00::ffff", dst="fc00:1::1:99", nh=4)/IP(src="45.86.6.6", dst="172.22.2.1", id=2)/ICMP(type=8, id=0x40, seq=1)/b"ping"
    const PING_LB: [u8; 86] = [
        0x22, 0x22, 0x22, 0x22, 0x22, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x20, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xff, 0xff, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x99, 0x45, 0x00, 0x00, 0x20, 0x00, 0x02, 0x00, 0x00, 0x40, 0x01, 0x99, 0x68, 0x2d, 0x56,
        0x06, 0x06, 0xac, 0x16, 0x02, 0x01, 0x08, 0x00, 0x18, 0xee, 0x00, 0x40, 0x00, 0x01, 0x70, 0x69, 0x6e,
        0x67,
    ];
    /// scapy: IPv6(src="fc00:1::1", dst="fc00::ffff", nh=4)/IP(src="172.22.2.1", dst="45.86.6.6", id=2)/ICMP(type=0, id=0x40, seq=1)/b"ping"
    const PONG_LB: [u8; 72] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x20, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x45, 0x00, 0x00, 0x20, 0x00, 0x02, 0x00, 0x00, 0x40, 0x01, 0x99,
        0x68, 0xac, 0x16, 0x02, 0x01, 0x2d, 0x56, 0x06, 0x06, 0x00, 0x00, 0x20, 0xee, 0x00, 0x40, 0x00, 0x01,
        0x70, 0x69, 0x6e, 0x67,
    ];
    /// scapy: Ether(..)/IPv6(src="fc00::ffff", dst="fc00:1::1:98", nh=41)/IPv6(src="2001:4860:4860::8888", dst="2a10:defe:e01f:f4::2")/ICMPv6EchoRequest(id=7, seq=1, data=b"ping6")
    const PING6_LB: [u8; 107] = [
        0x22, 0x22, 0x22, 0x22, 0x22, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x35, 0x29, 0x40, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xff, 0xff, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x98, 0x60, 0x00, 0x00, 0x00, 0x00, 0x0d, 0x3a, 0x40, 0x20, 0x01, 0x48, 0x60, 0x48, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x88, 0x88, 0x2a, 0x10, 0xde, 0xfe, 0xe0, 0x1f, 0x00,
        0xf4, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, 0x00, 0x47, 0x70, 0x00, 0x07, 0x00, 0x01,
        0x70, 0x69, 0x6e, 0x67, 0x36,
    ];
    /// scapy: IPv6(src="fc00:1::1", dst="fc00::ffff", nh=41)/IPv6(src="2a10:defe:e01f:f4::2", dst="2001:4860:4860::8888")/ICMPv6EchoReply(id=7, seq=1, data=b"ping6")
    const PONG6_LB: [u8; 93] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x35, 0x29, 0x40, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x60, 0x00, 0x00, 0x00, 0x00, 0x0d, 0x3a, 0x40, 0x2a, 0x10, 0xde,
        0xfe, 0xe0, 0x1f, 0x00, 0xf4, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x48, 0x60,
        0x48, 0x60, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x88, 0x88, 0x81, 0x00, 0x46, 0x70, 0x00,
        0x07, 0x00, 0x01, 0x70, 0x69, 0x6e, 0x67, 0x36,
    ];

    fn a6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn lb_lab(targets: Vec<Option<Ipv6Addr>>) -> Snapshot {
        let mut s = lab();
        for (slot, vip, ul) in
            [(0u16, "172.22.2.1", "fc00:1::1:99"), (1, "2a10:defe:e01f:f4::2", "fc00:1::1:98")]
        {
            let vip: IpAddr = vip.parse().unwrap();
            s.underlay_targets.insert(a6(ul), UnderlayTarget::Lb { vni: 100 });
            let lb = LoadBalancer {
                slot,
                uid: u32::from(slot) + 1,
                vni: 100,
                vip,
                ports: vec![(6, 80)],
                underlay: a6(ul),
                targets: targets.clone(),
                maglev: None,
            };
            s.lbs.insert((100, vip), Arc::new(lb));
        }
        // vm1's load-balancer prefix: a target on this node.
        s.underlay_targets.insert(a6("fc00:1::1:77"), UnderlayTarget::LbPrefix(VM1));
        s
    }

    fn run(p: &mut Pipeline, snap: &Snapshot, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut bufs = [TestBuf::new(frame)];
        let mut v = [Verdict::Drop(DropReason::TxFull)];
        p.process_burst(snap, port, 1_000_000_000, &mut bufs, &mut v);
        (v[0], bufs[0].to_vec())
    }

    /// TCP_TO_LB with another source port (checksums do not matter to the node here).
    fn with_sport(sport: u16) -> Vec<u8> {
        let mut f = TCP_TO_LB.to_vec();
        f[74..76].copy_from_slice(&sport.to_be_bytes());
        f
    }

    #[test]
    fn remote_target_gets_the_packet_through_the_underlay() {
        let snap = lb_lab(vec![Some(a6("fc00:2::1"))]);
        let mut p = Pipeline::default();
        let (v, out) = run(&mut p, &snap, PF0, &TCP_TO_LB);
        assert_eq!(v, Verdict::Tx(PF0));
        assert_eq!(&out[14..], &TCP_RELAYED[..]);
        // Again: the established flow, same answer.
        let (v, out) = run(&mut p, &snap, PF0, &TCP_TO_LB);
        assert_eq!((v, &out[14..]), (Verdict::Tx(PF0), &TCP_RELAYED[..]));
    }

    #[test]
    fn echo_to_the_vip_is_answered_every_time() {
        // No targets needed.
        let snap = lb_lab(vec![]);
        let mut p = Pipeline::default();
        for _ in 0..2 {
            let (v, out) = run(&mut p, &snap, PF0, &PING_LB);
            assert_eq!(v, Verdict::Tx(PF0));
            assert_eq!(&out[14..], &PONG_LB[..]);
            let (v, out) = run(&mut p, &snap, PF0, &PING6_LB);
            assert_eq!(v, Verdict::Tx(PF0));
            assert_eq!(&out[14..], &PONG6_LB[..]);
        }
    }

    #[test]
    fn no_target_or_unserved_port_is_dropped() {
        let snap = lb_lab(vec![]);
        let mut p = Pipeline::default();
        assert_eq!(run(&mut p, &snap, PF0, &TCP_TO_LB).0, Verdict::Drop(DropReason::LbNoTarget));
        let snap = lb_lab(vec![Some(a6("fc00:2::1"))]);
        let mut f = TCP_TO_LB.to_vec();
        f[76..78].copy_from_slice(&81u16.to_be_bytes());
        assert_eq!(run(&mut p, &snap, PF0, &f).0, Verdict::Drop(DropReason::LbNoTarget));
    }

    #[test]
    fn round_robin_spreads_new_flows_and_flows_stick() {
        let t1 = a6("fc00:1::1:77"); // local: vm1
        let t2 = a6("fc00:2::1");
        let snap = lb_lab(vec![Some(t1), Some(t2)]);
        let mut p = Pipeline::default();
        // dpservice's order: the 2nd target first, then alternating.
        let (v, out) = run(&mut p, &snap, PF0, &with_sport(1234));
        assert_eq!(v, Verdict::Tx(PF0));
        assert_eq!(&out[38..54], &t2.octets());
        let (v, out) = run(&mut p, &snap, PF0, &with_sport(1235));
        // Delivered to vm1 unchanged (destination the load-balanced IP).
        assert_eq!(v, Verdict::Tx(VM1));
        assert_eq!(&out[14..], &with_sport(1235)[54..]);
        // A target added: established flows keep theirs.
        let snap = lb_lab(vec![Some(t1), Some(t2), Some(a6("fc00:3::1"))]);
        assert_eq!(run(&mut p, &snap, PF0, &with_sport(1234)).0, Verdict::Tx(PF0));
        assert_eq!(run(&mut p, &snap, PF0, &with_sport(1235)).0, Verdict::Tx(VM1));
        let (_, out) = run(&mut p, &snap, PF0, &with_sport(1234));
        assert_eq!(&out[38..54], &t2.octets());
    }

    // A VM behind NAT talks to the load-balanced IP, whose target is another VM of this
    // node behind its load-balancer prefix (dpservice's `test_nat_to_lb_nat`): vm2 (NAT
    // 172.21.1.1 port 400, underlay fc00:1::1:aa) → the router → the LB → vm1, which
    // answers from the load-balanced IP to the NAT IP and port. The NAT flow's reply and
    // the LB flow's reply are the same tuple in VNI 100; only their zones tell them
    // apart.
    /// scapy: Ether(dst="66:66:66:66:66:01", src="52:54:00:00:00:02")/IP(src="10.100.1.2", dst="172.22.2.1", id=1)/TCP(sport=2400, dport=80, flags="S", seq=1, window=1000)
    const NAT_TO_LB_FROM_VM2: [u8; 54] = [
        0x66, 0x66, 0x66, 0x66, 0x66, 0x01, 0x52, 0x54, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00, 0x00,
        0x28, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, 0xc1, 0x52, 0x0a, 0x64, 0x01, 0x02, 0xac, 0x16, 0x02, 0x01,
        0x09, 0x60, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x03, 0xe8, 0xe8,
        0xcc, 0x00, 0x00,
    ];
    /// scapy: IPv6(src="fc00:1::1:2", dst="fc00::ffff", nh=4)/IP(src="172.21.1.1", dst="172.22.2.1", id=1, ttl=63)/TCP(sport=400, dport=80, flags="S", seq=1, window=1000)
    const NAT_TO_LB_ENCAPPED: [u8; 80] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x28, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x3f, 0x06, 0x20,
        0xa2, 0xac, 0x15, 0x01, 0x01, 0xac, 0x16, 0x02, 0x01, 0x01, 0x90, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x03, 0xe8, 0x4e, 0xec, 0x00, 0x00,
    ];
    /// scapy: Ether(dst="22:22:22:22:22:00", src="02:00:00:00:00:fe")/IPv6(src="fc00::ffff", dst="fc00:1::1:99", nh=4)/IP(src="172.21.1.1", dst="172.22.2.1", id=1, ttl=63)/TCP(sport=400, dport=80, flags="S", seq=1, window=1000)
    const NAT_TO_LB_FROM_ROUTER: [u8; 94] = [
        0x22, 0x22, 0x22, 0x22, 0x22, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x28, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xff, 0xff, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x99, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x3f, 0x06, 0x20, 0xa2, 0xac, 0x15,
        0x01, 0x01, 0xac, 0x16, 0x02, 0x01, 0x01, 0x90, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x50, 0x02, 0x03, 0xe8, 0x4e, 0xec, 0x00, 0x00,
    ];
    /// scapy: Ether(dst="66:66:66:66:66:00", src="52:54:00:00:00:01")/IP(src="172.22.2.1", dst="172.21.1.1", id=1)/TCP(sport=80, dport=400, flags="SA", seq=1, ack=1, window=1000)
    const LB_ANSWER_FROM_VM1: [u8; 54] = [
        0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00,
        0x28, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, 0x1f, 0xa2, 0xac, 0x16, 0x02, 0x01, 0xac, 0x15, 0x01, 0x01,
        0x00, 0x50, 0x01, 0x90, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x12, 0x03, 0xe8, 0x4e,
        0xdb, 0x00, 0x00,
    ];
    /// scapy: IPv6(src="fc00:1::1:1", dst="fc00::ffff", nh=4)/IP(src="172.22.2.1", dst="172.21.1.1", id=1, ttl=63)/TCP(sport=80, dport=400, flags="SA", seq=1, ack=1, window=1000)
    const LB_ANSWER_ENCAPPED: [u8; 80] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x28, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x3f, 0x06, 0x20,
        0xa2, 0xac, 0x16, 0x02, 0x01, 0xac, 0x15, 0x01, 0x01, 0x00, 0x50, 0x01, 0x90, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x01, 0x50, 0x12, 0x03, 0xe8, 0x4e, 0xdb, 0x00, 0x00,
    ];
    /// scapy: Ether(dst="22:22:22:22:22:00", src="02:00:00:00:00:fe")/IPv6(src="fc00::ffff", dst="fc00:1::1:aa", nh=4)/IP(src="172.22.2.1", dst="172.21.1.1", id=1, ttl=63)/TCP(sport=80, dport=400, flags="SA", seq=1, ack=1, window=1000)
    const LB_ANSWER_FROM_ROUTER: [u8; 94] = [
        0x22, 0x22, 0x22, 0x22, 0x22, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x86, 0xdd, 0x60, 0x00, 0x00,
        0x00, 0x00, 0x28, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xff, 0xff, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x01, 0x00, 0xaa, 0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x3f, 0x06, 0x20, 0xa2, 0xac, 0x16,
        0x02, 0x01, 0xac, 0x15, 0x01, 0x01, 0x00, 0x50, 0x01, 0x90, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x01, 0x50, 0x12, 0x03, 0xe8, 0x4e, 0xdb, 0x00, 0x00,
    ];
    /// scapy: IP(src="172.22.2.1", dst="10.100.1.2", id=1, ttl=63)/TCP(sport=80, dport=2400, flags="SA", seq=1, ack=1, window=1000)
    const LB_ANSWER_TO_VM2: [u8; 40] = [
        0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x3f, 0x06, 0xc2, 0x52, 0xac, 0x16, 0x02, 0x01, 0x0a,
        0x64, 0x01, 0x02, 0x00, 0x50, 0x09, 0x60, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x12,
        0x03, 0xe8, 0xe8, 0xbb, 0x00, 0x00,
    ];

    fn nat_to_lb_lab() -> Snapshot {
        let mut s = lb_lab(vec![Some(a6("fc00:1::1:77"))]);
        let nat_ip = Ipv4Addr::new(172, 21, 1, 1);
        let nat = |lo, hi| LocalNat { nat_ip, range: PortRange::new(lo, hi).unwrap(), vni: 100 };
        s.iface_by_port[usize::from(VM1)].as_mut().unwrap().nat = Some(nat(100, 101));
        s.iface_by_port[usize::from(VM2)].as_mut().unwrap().nat = Some(nat(400, 401));
        s.underlay_targets.insert(a6("fc00:1::1:ab"), UnderlayTarget::Nat { port: VM1, vni: 100 });
        s.underlay_targets.insert(a6("fc00:1::1:aa"), UnderlayTarget::Nat { port: VM2, vni: 100 });
        s.dnat.insert((100, nat_ip), DnatTarget::Nat);
        s
    }

    #[test]
    fn nat_flow_and_lb_flow_with_the_same_reply_tuple_stay_apart() {
        let snap = nat_to_lb_lab();
        let mut p = Pipeline::default();
        for (v, n) in [(VM1, 0u8), (VM2, 1)] {
            p.neighbours().learn(v, [0x52, 0x54, 0, 0, 0, n + 1]);
        }
        for round in 0..2 {
            // vm2's SYN leaves translated to the NAT IP and port 400, towards the router.
            let (v, out) = run(&mut p, &snap, VM2, &NAT_TO_LB_FROM_VM2);
            assert_eq!((v, &out[14..]), (Verdict::Tx(PF0), &NAT_TO_LB_ENCAPPED[..]), "round {round}");
            // The router sends it to the LB, which delivers it to vm1 unchanged.
            let (v, out) = run(&mut p, &snap, PF0, &NAT_TO_LB_FROM_ROUTER);
            assert_eq!((v, &out[14..]), (Verdict::Tx(VM1), &NAT_TO_LB_FROM_ROUTER[54..]), "round {round}");
            // vm1's answer belongs to the LB flow: routed to the router as it is, not
            // handed to vm2 by the NAT flow's reply translation.
            let (v, out) = run(&mut p, &snap, VM1, &LB_ANSWER_FROM_VM1);
            assert_eq!((v, &out[14..]), (Verdict::Tx(PF0), &LB_ANSWER_ENCAPPED[..]), "round {round}");
            // Back through the NAT underlay address, it is the NAT flow's reply.
            let (v, out) = run(&mut p, &snap, PF0, &LB_ANSWER_FROM_ROUTER);
            assert_eq!((v, &out[14..]), (Verdict::Tx(VM2), &LB_ANSWER_TO_VM2[..]), "round {round}");
            // Two flows, both tracked (the LB flow was not left untracked).
            assert_eq!(p.flows().len(), 2, "round {round}");
        }
    }
}
