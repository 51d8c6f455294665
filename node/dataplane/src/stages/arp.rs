//! ARP responder: the VM's gateway, 169.254.0.1, answers with the VF port's MAC.
//!
//! Only a request whose target is the gateway is answered; the reply is built in the
//! request's buffer and goes back out of the port it came in on. Everything else
//! (requests for other addresses, replies, gratuitous ARP) is dropped: the node keeps
//! no neighbour state learned from the VM.

use std::net::Ipv4Addr;

use crate::buf::PacketBuf;
use crate::config::Interface;
use crate::graph::{Ctx, DropReason, Verdict};
use crate::wire::{arp, ethernet};

/// The IPv4 address of the VMs' default gateway, answered on every VF.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// Answers an ARP request for [`GATEWAY`] in place; drops anything else.
pub fn process<B: PacketBuf>(ctx: &Ctx<'_>, iface: &Interface, buf: &mut B) -> Verdict {
    match reply(iface, buf.data_mut()) {
        Ok(()) => Verdict::Tx(ctx.in_port),
        Err(reason) => Verdict::Drop(reason),
    }
}

fn reply(iface: &Interface, frame: &mut [u8]) -> Result<(), DropReason> {
    let (eth, payload) = frame.split_at_mut_checked(ethernet::HEADER_LEN).ok_or(DropReason::Malformed)?;
    let mut eth = ethernet::Frame::new_checked(eth).ok_or(DropReason::Malformed)?;
    if eth.ethertype() != ethernet::ETHERTYPE_ARP {
        return Err(DropReason::Malformed);
    }
    let mut pkt = arp::Packet::new_checked(payload).ok_or(DropReason::Malformed)?;
    if pkt.operation() != arp::OP_REQUEST || pkt.target_ip() != GATEWAY {
        return Err(DropReason::ArpNotForUs);
    }
    let (asker_mac, asker_ip) = (pkt.sender_mac(), pkt.sender_ip());
    pkt.set_operation(arp::OP_REPLY);
    pkt.set_sender(iface.port_mac, GATEWAY);
    pkt.set_target(asker_mac, asker_ip);
    eth.set_header(asker_mac, iface.port_mac, ethernet::ETHERTYPE_ARP);
    Ok(())
}

/// Configuration shared by the tests of the L2 service stages (ARP, ND, DHCP, DHCPv6).
#[cfg(test)]
pub(crate) mod fixture {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::config::{Interface, Mac, NodeConfig, PortInfo, PortRole, PxeConfig, Snapshot};
    use crate::graph::Ctx;

    /// The VF port the test VM sits on.
    pub(crate) const PORT: u16 = 2;
    /// That port's MAC, as dpservice's tests name it (`66:66:66:66:66:00`).
    pub(crate) const PORT_MAC: Mac = [0x66, 0x66, 0x66, 0x66, 0x66, 0x00];
    /// The VM's own MAC in the golden frames (scapy `src=02:00:00:00:00:01`).
    pub(crate) const VM_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];

    /// A node as dpservice's test suite configures it (`--dhcp-mtu 1337`, two DNS
    /// servers of each family, IPv6 overlay on).
    pub(crate) fn snapshot(ipv6_overlay: bool) -> Snapshot {
        let node = NodeConfig {
            underlay_ipv6: "fc00:1::1".parse().unwrap(),
            dhcp_mtu: 1337,
            dhcp_dns: vec![Ipv4Addr::new(8, 8, 4, 4), Ipv4Addr::new(8, 8, 8, 8)],
            dhcpv6_dns: vec![
                "2001:4860:4860::6464".parse().unwrap(),
                "2002:4861:4861::6464".parse().unwrap(),
            ],
            ipv6_overlay,
            pf_ports: vec![0],
            wcmp_percent: 100,
        };
        let vf = PortInfo {
            id: PORT,
            mac: PORT_MAC,
            role: PortRole::Vf,
            device_name: "net_tap2".into(),
            if_name: "dtapvf_0".into(),
            neigh_mac: None,
        };
        Snapshot::new(node, vec![vf])
    }

    /// VM1 of dpservice's tests: 10.100.1.1, 2000:100:1::1, PXE server 2001:dede::1 with
    /// boot file `ipxe`.
    pub(crate) fn iface() -> Interface {
        Interface {
            id: "vm1".into(),
            port: PORT,
            port_mac: PORT_MAC,
            vni: 100,
            ipv4: Ipv4Addr::new(10, 100, 1, 1),
            ipv6: Some("2000:100:1::1".parse::<Ipv6Addr>().unwrap()),
            underlay_ipv6: "fc00:1::64:0:1".parse().unwrap(),
            pxe: Some(PxeConfig { next_server: "2001:dede::1".into(), boot_filename: "ipxe".into() }),
            vip: None,
            nat: None,
        }
    }

    /// The context a packet from the VM gets.
    pub(crate) fn ctx(snap: &Snapshot) -> Ctx<'_> {
        Ctx::new(snap, PORT, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{ctx, iface, snapshot, PORT, PORT_MAC, VM_MAC};
    use super::*;
    use crate::buf::TestBuf;
    use proptest::prelude::*;

    // Generated with scapy 2.5 (python3-scapy), `bytes(pkt)`:
    /// test_arp.py's request: Ether(dst=ff:..:ff, src=VM)/ARP(pdst=169.254.0.1, hwsrc=VM, hwdst=66:66:66:66:66:00, psrc=0.0.0.0)
    const ARP_REQUEST_GW: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x01, 0x08,
        0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x00, 0xa9, 0xfe, 0x00, 0x01,
    ];

    /// Ether(dst=ff:..:ff, src=VM)/ARP(pdst=10.100.1.2, hwsrc=VM, psrc=10.100.1.1)
    const ARP_REQUEST_OTHER: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x01, 0x08,
        0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x64, 0x01, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x0a, 0x64, 0x01, 0x02,
    ];

    /// Ether(dst=ff:..:ff, src=VM)/ARP(op=is-at, psrc=pdst=10.100.1.1, hwsrc=VM, hwdst=ff:..:ff)
    const ARP_GRATUITOUS: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x01, 0x08,
        0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x64, 0x01, 0x01, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0x0a, 0x64, 0x01, 0x01,
    ];

    fn run(frame: &[u8]) -> (Verdict, Vec<u8>) {
        let snap = snapshot(true);
        let mut buf = TestBuf::new(frame);
        let v = process(&ctx(&snap), &iface(), &mut buf);
        (v, buf.to_vec())
    }

    #[test]
    fn answers_request_for_gateway_with_port_mac() {
        let (v, out) = run(&ARP_REQUEST_GW);
        assert_eq!(v, Verdict::Tx(PORT));
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            // Ethernet: to the asker, from the port
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x08, 0x06,
            // ARP reply: htype 1, ptype 0x0800, hlen 6, plen 4, op 2
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02,
            // sender: port MAC, 169.254.0.1
            0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0xa9, 0xfe, 0x00, 0x01,
            // target: the asker's MAC and address (0.0.0.0 in the conformance test)
            0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(out, expected);
        let p = arp::Packet::new_checked(&out[14..]).unwrap();
        assert_eq!((p.sender_mac(), p.target_mac()), (PORT_MAC, VM_MAC));
    }

    #[test]
    fn keeps_ethernet_padding() {
        let mut padded = ARP_REQUEST_GW.to_vec();
        padded.extend_from_slice(&[0; 18]);
        let (v, out) = run(&padded);
        assert_eq!(v, Verdict::Tx(PORT));
        assert_eq!(out.len(), 60);
    }

    #[test]
    fn drops_what_is_not_a_request_for_the_gateway() {
        assert_eq!(run(&ARP_REQUEST_OTHER).0, Verdict::Drop(DropReason::ArpNotForUs));
        assert_eq!(run(&ARP_GRATUITOUS).0, Verdict::Drop(DropReason::ArpNotForUs));
        let mut reply_for_gw = ARP_REQUEST_GW;
        reply_for_gw[21] = 2;
        assert_eq!(run(&reply_for_gw).0, Verdict::Drop(DropReason::ArpNotForUs));
        let mut not_ethernet = ARP_REQUEST_GW;
        not_ethernet[15] = 6; // htype 6 (IEEE 802)
        assert_eq!(run(&not_ethernet).0, Verdict::Drop(DropReason::Malformed));
        let mut ipv4_frame = ARP_REQUEST_GW;
        ipv4_frame[13] = 0x00;
        assert_eq!(run(&ipv4_frame).0, Verdict::Drop(DropReason::Malformed));
    }

    #[test]
    fn truncated_requests_are_dropped_untouched() {
        for len in 0..ARP_REQUEST_GW.len() {
            let (v, out) = run(&ARP_REQUEST_GW[..len]);
            assert_eq!(v, Verdict::Drop(DropReason::Malformed), "length {len}");
            assert_eq!(out, ARP_REQUEST_GW[..len]);
        }
    }

    proptest! {
        #[test]
        fn never_panics(frame in proptest::collection::vec(any::<u8>(), 0..128), tweak in any::<(usize, u8)>()) {
            run(&frame);
            let mut f = ARP_REQUEST_GW.to_vec();
            let i = tweak.0 % f.len();
            f[i] = tweak.1;
            run(&f);
        }
    }
}
