//! The fleet's flow hash: one 64-bit number per flow, identical on every node, in every
//! process and on every build.
//!
//! Whatever several processes must agree on (which Maglev slot a flow falls in) is derived
//! from this hash, so its definition is part of the contract and never changes without a
//! new name:
//!
//! - The flow key is first written as the 42-byte canonical encoding of
//!   [`FlowKey::encode`] (big-endian integers, addresses as 16 octets), so the result does
//!   not depend on the host's byte order, on struct layout or on `std::hash::Hash`.
//! - Those bytes are hashed with **SipHash-1-3** (Aumasson and Bernstein; one compression
//!   round, three finalisation rounds, 64-bit output) under the fixed key
//!   [`FLOW_HASH_KEY`].
//!
//! SipHash is a specified keyed function whose output is pinned by its definition; we use
//! the `siphasher` crate's implementation and pin it further with golden vectors (checked
//! against an independent implementation) in this file's tests.
//!
//! The key is public and fixed, so the hash does not hide anything from an attacker who
//! crafts flows; it only has to spread real traffic evenly and be the same everywhere.

use std::net::{IpAddr, Ipv6Addr};

use siphasher::sip::SipHasher13;

/// The SipHash-1-3 key of the flow hash: `k0` is ASCII `"dpfleet1"`, `k1` is ASCII
/// `"flowhash"`, each read as a big-endian 64-bit number.
pub const FLOW_HASH_KEY: (u64, u64) = (0x6470_666c_6565_7431, 0x666c_6f77_6861_7368);

/// The 5-tuple of a flow within a virtual network.
///
/// For ICMP echo, the identifier stands in for both ports (as dpservice does); for
/// protocols without ports both ports are 0. The two addresses may be of different families
/// (the encoding keeps their families apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The virtual network identifier (dpservice's API allows any 32-bit value).
    pub vni: u32,
    /// The source address.
    pub src: IpAddr,
    /// The destination address.
    pub dst: IpAddr,
    /// The IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub proto: u8,
    /// The source port (or ICMP echo identifier).
    pub src_port: u16,
    /// The destination port (or ICMP echo identifier).
    pub dst_port: u16,
}

/// Flag in byte 5 of the encoding: the source address is IPv4.
const SRC_IS_V4: u8 = 0x01;
/// Flag in byte 5 of the encoding: the destination address is IPv4.
const DST_IS_V4: u8 = 0x02;

impl FlowKey {
    /// The length of [`FlowKey::encode`]'s output.
    pub const ENCODED_LEN: usize = 42;

    /// The canonical encoding that the flow hash consumes:
    ///
    /// | bytes  | field                                                      |
    /// |--------|------------------------------------------------------------|
    /// | 0..4   | VNI, big-endian                                            |
    /// | 4      | IP protocol number                                         |
    /// | 5      | families: bit 0 set if `src` is IPv4, bit 1 if `dst` is IPv4 |
    /// | 6..8   | source port, big-endian                                    |
    /// | 8..10  | destination port, big-endian                               |
    /// | 10..26 | source address: IPv6 octets, or IPv4 as `::ffff:a.b.c.d`   |
    /// | 26..42 | destination address, likewise                              |
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0..4].copy_from_slice(&self.vni.to_be_bytes());
        out[4] = self.proto;
        let (src, src_v4) = octets16(self.src);
        let (dst, dst_v4) = octets16(self.dst);
        out[5] = (if src_v4 { SRC_IS_V4 } else { 0 }) | (if dst_v4 { DST_IS_V4 } else { 0 });
        out[6..8].copy_from_slice(&self.src_port.to_be_bytes());
        out[8..10].copy_from_slice(&self.dst_port.to_be_bytes());
        out[10..26].copy_from_slice(&src);
        out[26..42].copy_from_slice(&dst);
        out
    }

    /// The flow hash: SipHash-1-3 under [`FLOW_HASH_KEY`] of [`FlowKey::encode`].
    pub fn flow_hash(&self) -> u64 {
        flow_hash_bytes(&self.encode())
    }

    /// The key of the opposite direction (addresses and ports swapped).
    #[must_use]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            vni: self.vni,
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// SipHash-1-3 under [`FLOW_HASH_KEY`] of `bytes` (the flow hash of an already encoded key).
pub fn flow_hash_bytes(bytes: &[u8]) -> u64 {
    SipHasher13::new_with_keys(FLOW_HASH_KEY.0, FLOW_HASH_KEY.1).hash(bytes)
}

/// An address as 16 octets, and whether it was IPv4.
fn octets16(addr: IpAddr) -> ([u8; 16], bool) {
    match addr {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), true),
        IpAddr::V6(a) => (a.octets(), false),
    }
}

/// SipHash-1-3 of `bytes` under the key `(k0, k1)`: the keyed hash the Maglev builder
/// uses for target permutations and digests.
pub(crate) fn siphash13(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    SipHasher13::new_with_keys(k0, k1).hash(bytes)
}

/// SipHash-1-3 of an IPv6 address's 16 octets under `(k0, k1)`.
pub(crate) fn siphash13_addr(k0: u64, k1: u64, addr: &Ipv6Addr) -> u64 {
    siphash13(k0, k1, &addr.octets())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;
    use std::net::Ipv4Addr;

    fn tcp4() -> FlowKey {
        FlowKey {
            vni: 100,
            src: IpAddr::V4(Ipv4Addr::new(172, 32, 10, 5)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 20, 30, 40)),
            proto: 6,
            src_port: 1234,
            dst_port: 80,
        }
    }

    fn udp6() -> FlowKey {
        FlowKey {
            vni: 0x00ab_cdef,
            src: "2001:db8::1".parse().unwrap(),
            dst: "fd00:108::99".parse().unwrap(),
            proto: 17,
            src_port: 53000,
            dst_port: 53,
        }
    }

    #[test]
    fn encoding_is_the_documented_layout() {
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0x00, 0x00, 0x00, 0x64,       // VNI 100
            0x06,                         // TCP
            0x03,                         // both IPv4
            0x04, 0xd2,                   // 1234
            0x00, 0x50,                   // 80
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 172, 32, 10, 5,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 20, 30, 40,
        ];
        assert_eq!(tcp4().encode(), want);

        let e = udp6().encode();
        assert_eq!(&e[0..6], &[0x00, 0xab, 0xcd, 0xef, 17, 0x00]);
        assert_eq!(&e[6..10], &[0xcf, 0x08, 0x00, 0x35]);
        assert_eq!(&e[10..12], &[0x20, 0x01]);
        assert_eq!(e[25], 0x01);
        assert_eq!(&e[26..28], &[0xfd, 0x00]);
        assert_eq!(e[41], 0x99);
    }

    #[test]
    fn families_are_kept_apart() {
        // An IPv4 flow and the IPv6 flow over the mapped addresses must not collide.
        let v4 = tcp4();
        let mapped = FlowKey {
            src: IpAddr::V6(Ipv4Addr::new(172, 32, 10, 5).to_ipv6_mapped()),
            dst: IpAddr::V6(Ipv4Addr::new(10, 20, 30, 40).to_ipv6_mapped()),
            ..v4
        };
        assert_ne!(v4.encode(), mapped.encode());
        assert_ne!(v4.flow_hash(), mapped.flow_hash());
    }

    /// Golden vectors. The expected values were computed by this implementation and
    /// checked against an independent SipHash-1-3 written from the paper (which reproduces
    /// the paper's SipHash-2-4 test vector). If this test fails, the flow hash changed:
    /// every node and coordinator would disagree with older ones. Do not update the values;
    /// fix the code.
    #[test]
    fn golden_vectors() {
        assert_eq!(tcp4().flow_hash(), 0x6ced_4dbc_4ccf_9fef);
        assert_eq!(tcp4().reversed().flow_hash(), 0x7549_21b7_c413_e976);
        assert_eq!(udp6().flow_hash(), 0xce28_a947_033c_7a87);
        assert_eq!(flow_hash_bytes(&[]), 0x0b00_a764_5079_137f);
    }

    /// The paper's SipHash reference vector (key 00..0f, message 00..0e) pins the primitive
    /// family; SipHash-1-3 shares its structure and is pinned by `golden_vectors`.
    #[test]
    fn siphash24_reference_vector() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let msg: [u8; 15] = std::array::from_fn(|i| i as u8);
        let h = siphasher::sip::SipHasher24::new_with_key(&key).hash(&msg);
        assert_eq!(h, 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn streaming_equals_one_shot() {
        // The digest of a Maglev table is fed in pieces; that must equal hashing the
        // concatenation.
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = SipHasher13::new_with_keys(1, 2);
        for chunk in bytes.chunks(37) {
            h.write(chunk);
        }
        assert_eq!(h.finish(), siphash13(1, 2, &bytes));
    }

    #[test]
    fn every_field_matters() {
        let base = udp6();
        let variants = [
            FlowKey { vni: base.vni + 1, ..base },
            FlowKey { proto: 6, ..base },
            FlowKey { src_port: base.src_port + 1, ..base },
            FlowKey { dst_port: base.dst_port + 1, ..base },
            FlowKey { src: "2001:db8::2".parse().unwrap(), ..base },
            FlowKey { dst: "fd00:108::98".parse().unwrap(), ..base },
            base.reversed(),
        ];
        for v in variants {
            assert_ne!(v.flow_hash(), base.flow_hash(), "{v:?}");
        }
    }
}
