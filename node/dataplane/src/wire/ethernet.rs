//! Ethernet II frames (no VLAN tags: the node drops tagged frames, as dpservice does).

use crate::config::Mac;

/// Field offsets.
pub mod field {
    use core::ops::Range;
    /// Destination MAC.
    pub const DST: Range<usize> = 0..6;
    /// Source MAC.
    pub const SRC: Range<usize> = 6..12;
    /// Ethertype.
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// Length of an Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// The broadcast MAC address.
pub const BROADCAST: Mac = [0xff; 6];

/// A read/write view of an Ethernet II header at the start of a buffer.
#[derive(Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps `buf` if it holds at least a full header.
    #[inline]
    pub fn new_checked(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= HEADER_LEN).then_some(Frame { buf })
    }
    /// Destination MAC.
    #[inline]
    pub fn dst(&self) -> Mac {
        mac_at(self.buf.as_ref(), field::DST.start)
    }
    /// Source MAC.
    #[inline]
    pub fn src(&self) -> Mac {
        mac_at(self.buf.as_ref(), field::SRC.start)
    }
    /// Ethertype.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }
    /// The bytes after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Writes the whole header.
    #[inline]
    pub fn set_header(&mut self, dst: Mac, src: Mac, ethertype: u16) {
        let b = self.buf.as_mut();
        b[field::DST].copy_from_slice(&dst);
        b[field::SRC].copy_from_slice(&src);
        b[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }
}

#[inline]
fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

/// Whether a MAC is a unicast address (group bit clear) and not all zero.
#[inline]
pub fn is_unicast(mac: &Mac) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

#[cfg(test)]
mod tests {
    use super::*;

    // scapy: Ether(dst="66:66:66:66:66:01", src="66:66:66:66:66:00", type=0x0800)
    const HDR: [u8; 14] =
        [0x66, 0x66, 0x66, 0x66, 0x66, 0x01, 0x66, 0x66, 0x66, 0x66, 0x66, 0x00, 0x08, 0x00];

    #[test]
    fn parse_and_emit() {
        assert!(Frame::new_checked(&HDR[..13]).is_none());
        let f = Frame::new_checked(&HDR[..]).unwrap();
        assert_eq!(f.dst(), [0x66, 0x66, 0x66, 0x66, 0x66, 0x01]);
        assert_eq!(f.src(), [0x66, 0x66, 0x66, 0x66, 0x66, 0x00]);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        let mut out = [0u8; 14];
        Frame::new_checked(&mut out[..]).unwrap().set_header(f.dst(), f.src(), ETHERTYPE_IPV4);
        assert_eq!(out, HDR);
        assert!(is_unicast(&f.src()));
        assert!(!is_unicast(&BROADCAST));
        assert!(!is_unicast(&[0; 6]));
    }
}
