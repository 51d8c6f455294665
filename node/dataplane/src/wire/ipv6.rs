//! IPv6 headers: a validating zero-copy view, in-place edits and an emitter.

use std::net::Ipv6Addr;

/// Field offsets.
pub mod field {
    use core::ops::Range;
    /// Version, traffic class, flow label (4 bytes).
    pub const VTC_FLOW: Range<usize> = 0..4;
    /// Payload length (2 bytes).
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    /// Next header.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC: Range<usize> = 8..24;
    /// Destination address.
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Next header: IPv4 (IP-in-IPv6).
pub const NH_IPV4: u8 = 4;
/// Next header: TCP.
pub const NH_TCP: u8 = 6;
/// Next header: UDP.
pub const NH_UDP: u8 = 17;
/// Next header: IPv6 (IPv6-in-IPv6).
pub const NH_IPV6: u8 = 41;
/// Next header: ICMPv6.
pub const NH_ICMPV6: u8 = 58;

/// A view of an IPv6 packet whose fixed header and `payload_len` bytes fit in the
/// buffer (which may carry trailing padding); no accessor panics.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates version and payload length against the buffer.
    #[inline]
    pub fn new_checked(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN || b[0] >> 4 != 6 {
            return None;
        }
        let plen = usize::from(u16::from_be_bytes([b[4], b[5]]));
        (HEADER_LEN + plen <= b.len()).then_some(Packet { buf })
    }
    #[inline]
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// Payload length in bytes.
    #[inline]
    pub fn payload_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[4], self.b()[5]]))
    }
    /// Header plus payload length in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }
    /// Next header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.b()[field::NEXT_HEADER]
    }
    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.b()[field::HOP_LIMIT]
    }
    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        addr_at(self.b(), field::SRC.start)
    }
    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        addr_at(self.b(), field::DST.start)
    }
    /// The payload (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = hop_limit;
    }
}

#[inline]
fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// The fields of an IPv6 header the node emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Version, traffic class and flow label as one word (version must be 6).
    pub vtc_flow: u32,
}

impl Repr {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`; returns false,
    /// writing nothing, when `out` is shorter.
    #[inline]
    pub fn emit(&self, out: &mut [u8]) -> bool {
        let Some(h) = out.get_mut(..HEADER_LEN) else { return false };
        h[field::VTC_FLOW].copy_from_slice(&self.vtc_flow.to_be_bytes());
        h[field::PAYLOAD_LEN].copy_from_slice(&self.payload_len.to_be_bytes());
        h[field::NEXT_HEADER] = self.next_header;
        h[field::HOP_LIMIT] = self.hop_limit;
        h[field::SRC].copy_from_slice(&self.src.octets());
        h[field::DST].copy_from_slice(&self.dst.octets());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // scapy: IPv6(src="fc00:1::1:1", dst="fc00:2::64:0:1", nh=4, hlim=64, plen=28)
    const HDR: [u8; 40] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x04, 0x40, 0xfc, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x64, 0x00, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn emit_matches_golden_and_parses_back() {
        let repr = Repr {
            src: "fc00:1::1:1".parse().unwrap(),
            dst: "fc00:2::64:0:1".parse().unwrap(),
            next_header: NH_IPV4,
            payload_len: 28,
            hop_limit: 64,
            vtc_flow: 0x6000_0000,
        };
        let mut buf = [0u8; 68];
        assert!(repr.emit(&mut buf));
        assert_eq!(buf[..40], HDR);
        assert!(!repr.emit(&mut buf[..39]));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.src(), p.dst()), (repr.src, repr.dst));
        assert_eq!((p.next_header(), p.hop_limit(), p.payload_len()), (4, 64, 28));
        assert_eq!(p.payload().len(), 28);
        // payload length beyond the buffer, or a cut header, is rejected
        assert!(Packet::new_checked(&buf[..67]).is_none());
        assert!(Packet::new_checked(&buf[..39]).is_none());
        let mut v4 = buf;
        v4[0] = 0x40;
        assert!(Packet::new_checked(&v4[..]).is_none());
    }
}
