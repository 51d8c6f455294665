//! IPv4 headers: a validating zero-copy view and in-place edits.

use std::net::Ipv4Addr;

use super::checksum;

/// Field offsets.
pub mod field {
    /// Version and IHL.
    pub const VER_IHL: usize = 0;
    /// Total length (2 bytes).
    pub const TOTAL_LEN: usize = 2;
    /// Flags and fragment offset (2 bytes).
    pub const FLAGS_FRAG: usize = 6;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum (2 bytes).
    pub const CHECKSUM: usize = 10;
    /// Source address (4 bytes).
    pub const SRC: usize = 12;
    /// Destination address (4 bytes).
    pub const DST: usize = 16;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Why a buffer is not a usable IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Too short, wrong version, or header/total lengths that do not fit.
    Malformed,
    /// The header checksum does not verify.
    Checksum,
}

/// A view of an IPv4 packet whose lengths have been validated: the header (with
/// options) and `total_len` bytes fit in the buffer, so no accessor panics.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates version, IHL and total length against the buffer (which may carry
    /// trailing padding) and the header checksum.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, Invalid> {
        let p = Self::new_unverified(buf).ok_or(Invalid::Malformed)?;
        if !checksum::verifies(&p.b()[..p.header_len()]) {
            return Err(Invalid::Checksum);
        }
        Ok(p)
    }
    /// Validates version, IHL and total length as [`Packet::new_checked`] does, but not
    /// the checksum: for a header that an earlier stage checked with `new_checked` and
    /// nothing changed since (the accessors only need the lengths to be right).
    #[inline]
    pub fn new_unverified(buf: T) -> Option<Self> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN || b[field::VER_IHL] >> 4 != 4 {
            return None;
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if hl < MIN_HEADER_LEN || total < hl || total > b.len() {
            return None;
        }
        Some(Packet { buf })
    }
    #[inline]
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }
    /// Total length (header and payload) in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.b()[2], self.b()[3]]))
    }
    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]]) & 0x1fff
    }
    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    /// Payload protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }
    /// Source address.
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    /// Destination address.
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        let b = self.b();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    /// The payload (up to `total_len`; padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
}

/// The destination address of the fixed header `h`.
#[inline]
pub fn header_dst(h: &[u8; MIN_HEADER_LEN]) -> Ipv4Addr {
    Ipv4Addr::new(h[16], h[17], h[18], h[19])
}

/// Decrements the TTL of the fixed header `h` by one, updating the checksum
/// incrementally, if it is above one; returns false, changing nothing, if not.
#[inline]
pub fn decrement_ttl_header(h: &mut [u8; MIN_HEADER_LEN]) -> bool {
    if h[field::TTL] <= 1 {
        return false;
    }
    h[field::TTL] -= 1;
    let ck = u16::from_be_bytes([h[field::CHECKSUM], h[field::CHECKSUM + 1]]);
    let [a, b] = ttl_decremented(ck).to_be_bytes();
    h[field::CHECKSUM] = a;
    h[field::CHECKSUM + 1] = b;
    true
}

/// The header checksum after the TTL went down by one, from `ck` before: RFC 1624
/// eqn. 3 for the 16-bit word (TTL, protocol), `~(~ck + ~m + m')`, where `~m + m'` is
/// `0xfeff` whatever the protocol, for a TTL above zero: a delta already folded.
#[inline]
fn ttl_decremented(ck: u16) -> u16 {
    checksum::update_folded(ck, 0xfeff)
}

#[cfg(test)]
mod tests {
    use super::*;

    // scapy: IP(src="10.100.1.1", dst="10.100.1.2", ttl=64, id=1)/ICMP(type=8, id=0x40, seq=1)/b"dpfleet!"
    const PKT: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x64, 0x0e, 0x0a, 0x64, 0x01, 0x01, 0x0a,
        0x64, 0x01, 0x02, 0x08, 0x00, 0x53, 0x5b, 0x00, 0x40, 0x00, 0x01, 0x64, 0x70, 0x66, 0x6c, 0x65, 0x65,
        0x74, 0x21,
    ];

    #[test]
    fn parses_golden_packet() {
        let p = Packet::new_checked(&PKT[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 36);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 100, 1, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 100, 1, 2));
        assert_eq!(p.payload().len(), 16);
        assert_eq!(p.frag_offset(), 0);
    }

    #[test]
    fn rejects_bad_lengths_and_checksum() {
        for n in 0..PKT.len() {
            assert_eq!(Packet::new_checked(&PKT[..n]).unwrap_err(), Invalid::Malformed, "len {n}");
        }
        let mut p = PKT;
        p[0] = 0x44; // IHL 4
        assert_eq!(Packet::new_checked(&p[..]).unwrap_err(), Invalid::Malformed);
        let mut p = PKT;
        p[0] = 0x65; // version 6
        assert_eq!(Packet::new_checked(&p[..]).unwrap_err(), Invalid::Malformed);
        let mut p = PKT;
        p[3] = 0x13; // total length 19 < header
        assert_eq!(Packet::new_checked(&p[..]).unwrap_err(), Invalid::Malformed);
        let mut p = PKT;
        p[11] ^= 1;
        assert_eq!(Packet::new_checked(&p[..]).unwrap_err(), Invalid::Checksum);
    }

    proptest::proptest! {
        /// The shortcut is RFC 1624's update of the (TTL, protocol) word.
        #[test]
        fn ttl_decrement_is_the_incremental_update(ck: u16, ttl in 1u8..=255, proto: u8) {
            let (old, new) = (u16::from_be_bytes([ttl, proto]), u16::from_be_bytes([ttl - 1, proto]));
            proptest::prop_assert_eq!(ttl_decremented(ck), checksum::update16(ck, old, new));
        }
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut p = PKT;
        assert!(decrement_ttl_header(p.first_chunk_mut().unwrap()));
        assert_eq!(p[8], 63);
        assert_eq!(&p[10..12], &[0x65, 0x0e]); // what scapy computes for ttl=63
        assert!(Packet::new_checked(&p[..]).is_ok());
        // At TTL 1 (and 0) nothing changes.
        p[8] = 1;
        let before = p;
        assert!(!decrement_ttl_header(p.first_chunk_mut().unwrap()));
        assert_eq!(p, before);
    }
}
