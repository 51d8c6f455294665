//! ARP for IPv4 over Ethernet (RFC 826): field offsets and a zero-copy view.

use std::net::Ipv4Addr;

use super::ethernet::ETHERTYPE_IPV4;
use crate::config::Mac;

/// Field offsets of an Ethernet/IPv4 ARP packet.
pub mod field {
    use core::ops::Range;
    /// Hardware type.
    pub const HTYPE: Range<usize> = 0..2;
    /// Protocol type.
    pub const PTYPE: Range<usize> = 2..4;
    /// Hardware address length.
    pub const HLEN: usize = 4;
    /// Protocol address length.
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OPER: Range<usize> = 6..8;
    /// Sender hardware address.
    pub const SHA: Range<usize> = 8..14;
    /// Sender protocol address.
    pub const SPA: Range<usize> = 14..18;
    /// Target hardware address.
    pub const THA: Range<usize> = 18..24;
    /// Target protocol address.
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buf` when it holds a whole ARP packet for IPv4 over Ethernet (hardware
    /// type 1, protocol 0x0800, address lengths 6 and 4); no accessor panics afterwards.
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        let ok = b.len() >= PACKET_LEN
            && be16(&b[field::HTYPE]) == HTYPE_ETHERNET
            && be16(&b[field::PTYPE]) == ETHERTYPE_IPV4
            && b[field::HLEN] == 6
            && b[field::PLEN] == 4;
        ok.then_some(Packet { buf })
    }
    /// Operation ([`OP_REQUEST`], [`OP_REPLY`], ...).
    pub fn operation(&self) -> u16 {
        be16(&self.buf.as_ref()[field::OPER])
    }
    /// Sender hardware address.
    pub fn sender_mac(&self) -> Mac {
        mac_at(self.buf.as_ref(), field::SHA.start)
    }
    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buf.as_ref(), field::SPA.start)
    }
    /// Target hardware address.
    pub fn target_mac(&self) -> Mac {
        mac_at(self.buf.as_ref(), field::THA.start)
    }
    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        ipv4_at(self.buf.as_ref(), field::TPA.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the operation.
    pub fn set_operation(&mut self, op: u16) {
        self.buf.as_mut()[field::OPER].copy_from_slice(&op.to_be_bytes());
    }
    /// Sets the sender hardware and protocol addresses.
    pub fn set_sender(&mut self, mac: Mac, ip: Ipv4Addr) {
        let b = self.buf.as_mut();
        b[field::SHA].copy_from_slice(&mac);
        b[field::SPA].copy_from_slice(&ip.octets());
    }
    /// Sets the target hardware and protocol addresses.
    pub fn set_target(&mut self, mac: Mac, ip: Ipv4Addr) {
        let b = self.buf.as_mut();
        b[field::THA].copy_from_slice(&mac);
        b[field::TPA].copy_from_slice(&ip.octets());
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn mac_at(b: &[u8], off: usize) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&b[off..off + 6]);
    m
}

fn ipv4_at(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    // ARP who-has 10.0.0.2 tell 10.0.0.1 from 52:54:00:00:00:01 (as tcpdump shows it).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    #[test]
    fn parses_and_rewrites() {
        let mut raw = REQUEST;
        let mut p = Packet::new_checked(&mut raw[..]).unwrap();
        assert_eq!(p.operation(), OP_REQUEST);
        assert_eq!(p.sender_mac(), [0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_mac(), [0; 6]);
        assert_eq!(p.target_ip(), Ipv4Addr::new(10, 0, 0, 2));
        p.set_operation(OP_REPLY);
        p.set_sender([2; 6], Ipv4Addr::new(10, 0, 0, 2));
        p.set_target([0x52, 0x54, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(raw[6..8], [0, 2]);
        assert_eq!(raw[8..18], [2, 2, 2, 2, 2, 2, 10, 0, 0, 2]);
        assert_eq!(raw[18..28], REQUEST[8..18]);
    }

    #[test]
    fn rejects_other_formats() {
        assert!(Packet::new_checked(&REQUEST[..27]).is_none());
        for (i, v) in [(1, 0x06), (3, 0xdd), (4, 8), (5, 16)] {
            let mut raw = REQUEST;
            raw[i] = v;
            assert!(Packet::new_checked(&raw[..]).is_none(), "byte {i} = {v:#x}");
        }
    }
}
