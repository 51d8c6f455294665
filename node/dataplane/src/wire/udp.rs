//! UDP headers (RFC 768): field offsets, a zero-copy view, checksums.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;

/// Field offsets of the UDP header.
pub mod field {
    use core::ops::Range;
    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length (header + payload).
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buf` without checks, for emitting into a buffer the caller has sized: the
    /// accessors panic unless `buf` holds the header and as many bytes as the length
    /// field (once set) says.
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }
    /// Wraps `buf` when its length field is at least a header and fits in `buf`; no
    /// accessor panics afterwards.
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        (HEADER_LEN..=b.len()).contains(&len).then_some(Packet { buf })
    }
    /// Source port.
    pub fn src_port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }
    /// Length field.
    pub fn len(&self) -> u16 {
        let b = self.buf.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }
    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == HEADER_LEN
    }
    /// The payload (up to the length field).
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets both ports.
    pub fn set_ports(&mut self, src: u16, dst: u16) {
        let b = self.buf.as_mut();
        b[field::SRC_PORT].copy_from_slice(&src.to_be_bytes());
        b[field::DST_PORT].copy_from_slice(&dst.to_be_bytes());
    }
    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.buf.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }
    /// Computes and stores the checksum over IPv4 (the datagram is the first `len()`
    /// bytes of the buffer).
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let n = usize::from(self.len());
        let b = self.buf.as_mut();
        b[field::CHECKSUM].fill(0);
        let c = nonzero(checksum::l4_v4(src, dst, super::ipv4::PROTO_UDP, &b[..n]));
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    /// Computes and stores the checksum over IPv6.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let n = usize::from(self.len());
        let b = self.buf.as_mut();
        b[field::CHECKSUM].fill(0);
        let c = nonzero(checksum::l4_v6(src, dst, super::ipv6::NH_UDP, &b[..n]));
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

/// A computed UDP checksum of zero is sent as all ones (zero means "none").
fn nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_verifies_both_families() {
        // UDP 68 -> 67, 4 payload bytes, plus 2 bytes of trailing padding.
        let mut raw = [0x00, 0x44, 0x00, 0x43, 0x00, 0x0c, 0, 0, 1, 2, 3, 4, 0xee, 0xee];
        assert!(Packet::new_checked(&raw[..11]).is_none());
        let mut p = Packet::new_checked(&mut raw[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len(), p.payload()), (68, 67, 12, &[1, 2, 3, 4][..]));
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::BROADCAST);
        p.fill_checksum_v4(s, d);
        let sum = checksum::sum_words(checksum::pseudo_v4(s, d, 17, 12), &raw[..12]);
        assert_eq!(checksum::finish(sum), 0);
        let mut p = Packet::new_checked(&mut raw[..]).unwrap();
        let (s6, d6) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        p.fill_checksum_v6(s6, d6);
        let sum = checksum::sum_words(checksum::pseudo_v6(s6, d6, 17, 12), &raw[..12]);
        assert_eq!(checksum::finish(sum), 0);
        assert_eq!(raw[12..], [0xee, 0xee], "padding untouched");
    }

    #[test]
    fn rejects_bad_length_field() {
        let raw = [0, 1, 0, 2, 0, 7, 0, 0];
        assert!(Packet::new_checked(&raw[..]).is_none());
        let raw = [0, 1, 0, 2, 0, 9, 0, 0];
        assert!(Packet::new_checked(&raw[..]).is_none());
    }
}
