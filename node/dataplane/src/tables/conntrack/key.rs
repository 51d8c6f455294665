//! Flow keys and the table's keyed hash.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::tables::mix::{fold_mul, splitmix64};

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

const ICMP_ECHO_REPLY: u16 = 0;
const ICMP_ECHO_REQUEST: u16 = 8;
const ICMPV6_ECHO_REQUEST: u16 = 128;
const ICMPV6_ECHO_REPLY: u16 = 129;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// What identifies one direction of a flow: the VNI and the 5-tuple as the packet carries
/// it when it reaches the conntrack stage.
///
/// - TCP, UDP and other protocols: source and destination port (0 for protocols without
///   ports).
/// - ICMP and ICMPv6 echo (as dpservice keys them): `src_port` holds the ICMP type and
///   `dst_port` the identifier, so that a request and its reply are the two directions of
///   one flow while an echo request sent the other way is a flow of its own.
///
/// IPv4 addresses occupy the first 4 of 16 address bytes, the rest is zero; the address
/// family is part of the key, so an IPv4 flow never matches an IPv6 one. `zone` is a
/// free discriminator for the caller (dpservice keys its flows by a VNF type too); it is
/// 0 unless set. 44 bytes: the two addresses, then the VNI, the ports and the rest as
/// three 32-bit words, so that a comparison is a few wide ones.
// `eq` is written by hand for speed but compares exactly the fields `Hash` hashes (a
// proptest checks it against a field-by-field comparison).
#[allow(clippy::derived_hash_with_manual_eq)]
#[derive(Clone, Copy, Debug, Eq, Hash)]
pub struct FlowKey {
    src: [u8; 16],
    dst: [u8; 16],
    vni: u32,
    /// The source port in the high half, the destination port in the low half.
    ports: u32,
    /// The protocol in the low byte, then the family, then the zone.
    kind: u32,
}

/// The [`FlowKey::ports`] word.
#[inline]
fn ports_of(src_port: u16, dst_port: u16) -> u32 {
    u32::from(src_port) << 16 | u32::from(dst_port)
}

/// The [`FlowKey::kind`] word.
#[inline]
fn kind_of(proto: u8, family: u8, zone: u8) -> u32 {
    u32::from(proto) | u32::from(family) << 8 | u32::from(zone) << 16
}

/// Field by field, as a derived `PartialEq` would compare (and so consistent with the
/// derived `Hash`), but as wide words xored and ored without a branch: a flow lookup
/// compares a key with every entry its probe meets.
impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        let addrs = (u128::from_ne_bytes(self.src) ^ u128::from_ne_bytes(o.src))
            | (u128::from_ne_bytes(self.dst) ^ u128::from_ne_bytes(o.dst));
        let rest = (self.vni ^ o.vni) | (self.ports ^ o.ports) | (self.kind ^ o.kind);
        (addrs == 0) & (rest == 0)
    }
}

fn v4_bytes(a: Ipv4Addr) -> [u8; 16] {
    let mut b = [0; 16];
    b[..4].copy_from_slice(&a.octets());
    b
}

impl FlowKey {
    /// An IPv4 flow key (any protocol; ports as the packet carries them).
    pub fn v4(vni: u32, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, src_port: u16, dst_port: u16) -> Self {
        FlowKey {
            src: v4_bytes(src),
            dst: v4_bytes(dst),
            vni,
            ports: ports_of(src_port, dst_port),
            kind: kind_of(proto, FAMILY_V4, 0),
        }
    }

    /// An IPv6 flow key (any protocol; ports as the packet carries them).
    pub fn v6(vni: u32, src: Ipv6Addr, dst: Ipv6Addr, proto: u8, src_port: u16, dst_port: u16) -> Self {
        FlowKey {
            src: src.octets(),
            dst: dst.octets(),
            vni,
            ports: ports_of(src_port, dst_port),
            kind: kind_of(proto, FAMILY_V6, 0),
        }
    }

    /// The key of an ICMP (IPv4) or ICMPv6 (IPv6) message with type `icmp_type` and
    /// identifier `ident` (the identifier field of echo messages). `src` and `dst` must
    /// be of the same family; `None` otherwise.
    pub fn icmp(vni: u32, src: IpAddr, dst: IpAddr, icmp_type: u8, ident: u16) -> Option<Self> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                Some(FlowKey::v4(vni, s, d, PROTO_ICMP, u16::from(icmp_type), ident))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                Some(FlowKey::v6(vni, s, d, PROTO_ICMPV6, u16::from(icmp_type), ident))
            }
            _ => None,
        }
    }

    /// The same key with the caller's discriminator `zone`.
    #[must_use]
    pub fn with_zone(mut self, zone: u8) -> Self {
        self.set_zone(zone);
        self
    }

    /// The key a packet of the other direction carries if nothing rewrites it: addresses
    /// swapped; ports swapped, except for ICMP/ICMPv6, where the identifier stays and an
    /// echo request type becomes an echo reply type and back (other ICMP types are kept).
    #[must_use]
    pub fn reversed(&self) -> Self {
        let (sp, dp) = (self.src_port(), self.dst_port());
        let (src_port, dst_port) = match self.proto() {
            PROTO_ICMP if self.family() == FAMILY_V4 => {
                let t = match sp {
                    ICMP_ECHO_REQUEST => ICMP_ECHO_REPLY,
                    ICMP_ECHO_REPLY => ICMP_ECHO_REQUEST,
                    t => t,
                };
                (t, dp)
            }
            PROTO_ICMPV6 if self.family() == FAMILY_V6 => {
                let t = match sp {
                    ICMPV6_ECHO_REQUEST => ICMPV6_ECHO_REPLY,
                    ICMPV6_ECHO_REPLY => ICMPV6_ECHO_REQUEST,
                    t => t,
                };
                (t, dp)
            }
            _ => (dp, sp),
        };
        FlowKey { src: self.dst, dst: self.src, ports: ports_of(src_port, dst_port), ..*self }
    }

    /// The VNI.
    pub fn vni(&self) -> u32 {
        self.vni
    }
    /// Whether the addresses are IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.family() == FAMILY_V6
    }
    #[allow(clippy::cast_possible_truncation)] // the family's byte
    fn family(&self) -> u8 {
        (self.kind >> 8) as u8
    }
    /// The source address.
    pub fn src(&self) -> IpAddr {
        self.addr(&self.src)
    }
    /// The destination address.
    pub fn dst(&self) -> IpAddr {
        self.addr(&self.dst)
    }
    /// The IP protocol number.
    #[allow(clippy::cast_possible_truncation)] // the protocol's byte
    pub fn proto(&self) -> u8 {
        self.kind as u8
    }
    /// The source port (ICMP: the message type).
    #[allow(clippy::cast_possible_truncation)] // the high half
    pub fn src_port(&self) -> u16 {
        (self.ports >> 16) as u16
    }
    /// The destination port (ICMP: the identifier).
    #[allow(clippy::cast_possible_truncation)] // the low half
    pub fn dst_port(&self) -> u16 {
        self.ports as u16
    }
    /// Sets the caller's discriminator.
    pub fn set_zone(&mut self, zone: u8) {
        self.kind = self.kind & 0xffff | u32::from(zone) << 16;
    }
    /// The caller's discriminator.
    #[allow(clippy::cast_possible_truncation)] // the zone's byte
    pub fn zone(&self) -> u8 {
        (self.kind >> 16) as u8
    }

    fn addr(&self, b: &[u8; 16]) -> IpAddr {
        if self.is_ipv6() {
            IpAddr::V6(Ipv6Addr::from(*b))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    }
}

/// The keyed hash of the flow table.
///
/// Each of the key's six 64-bit words is XORed with a secret and pairs are combined by
/// a folded 64×64→128-bit multiply (the high half XORed into the low half), as in
/// wyhash and aHash's fallback: about four multiplies per key, no table, no loop. The
/// eight secrets are expanded (SplitMix64) from a seed the caller draws at random per
/// table, so without the seed an outsider cannot aim many flows at one home slot.
/// This is not a cryptographic PRF; it only has to make collision flooding a guessing
/// game. (The fleet-wide flow hash that Maglev uses lives in `dpfleet-proto` and is
/// deliberately unkeyed; this one must differ per table.)
#[derive(Clone, Copy, Debug)]
pub struct FlowHasher {
    secret: [u64; 8],
}

#[inline]
fn ports_word(vni: u32, src_port: u16, dst_port: u16) -> u64 {
    u64::from(vni) | u64::from(src_port) << 32 | u64::from(dst_port) << 48
}

#[inline]
fn kind_word(proto: u8, family: u8, zone: u8) -> u64 {
    u64::from(proto) | u64::from(family) << 8 | u64::from(zone) << 16
}

#[inline]
fn word(b: &[u8; 16], half: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[half * 8..half * 8 + 8]);
    u64::from_le_bytes(w)
}

impl FlowHasher {
    /// A hasher keyed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut s = seed;
        let mut secret = [0u64; 8];
        for x in &mut secret {
            // Odd secrets keep a multiply by a zero word from wiping a whole product.
            *x = splitmix64(&mut s) | 1;
        }
        FlowHasher { secret }
    }

    /// The 64-bit hash of `k`.
    #[inline]
    pub fn hash(&self, k: &FlowKey) -> u64 {
        let src = [word(&k.src, 0), word(&k.src, 1)];
        let dst = [word(&k.dst, 0), word(&k.dst, 1)];
        self.mix(
            src,
            dst,
            ports_word(k.vni, k.src_port(), k.dst_port()),
            kind_word(k.proto(), k.family(), k.zone()),
        )
    }

    /// The hash of `FlowKey::v4(vni, src, dst, proto, src_port, dst_port)` in `zone`,
    /// from the fields themselves: for a caller that has them in registers, while the
    /// key it just stored may not have reached the cache (a load of a whole word of it
    /// would wait for that).
    #[inline]
    #[allow(clippy::too_many_arguments)] // the key's fields
    pub fn hash_v4(
        &self,
        vni: u32,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        src_port: u16,
        dst_port: u16,
        zone: u8,
    ) -> u64 {
        // An IPv4 key's address words: the four octets in the low bytes of the first.
        let w = |a: Ipv4Addr| [u64::from(u32::from_le_bytes(a.octets())), 0];
        self.mix(w(src), w(dst), ports_word(vni, src_port, dst_port), kind_word(proto, FAMILY_V4, zone))
    }

    /// The key's six words, mixed: addresses, then VNI and ports, then the rest.
    #[inline]
    fn mix(&self, src: [u64; 2], dst: [u64; 2], w4: u64, w5: u64) -> u64 {
        let s = &self.secret;
        let a = fold_mul(src[0] ^ s[0], src[1] ^ s[1]);
        let b = fold_mul(dst[0] ^ s[2], dst[1] ^ s[3]);
        let c = fold_mul(w4 ^ s[4], w5 ^ s[5]);
        fold_mul(a ^ c ^ s[6], b ^ s[7])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VNI: u32 = 100;

    fn a4(x: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, x)
    }

    #[test]
    fn reversal_of_tcp_udp_swaps_addresses_and_ports() {
        let k = FlowKey::v4(VNI, a4(1), a4(2), PROTO_TCP, 1234, 80);
        let r = k.reversed();
        assert_eq!(r, FlowKey::v4(VNI, a4(2), a4(1), PROTO_TCP, 80, 1234));
        assert_eq!(r.reversed(), k);
        let k6 = FlowKey::v6(VNI, "fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), PROTO_UDP, 5, 6);
        assert_eq!(k6.reversed().src(), "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(k6.reversed().src_port(), 6);
        assert_eq!(k6.reversed().reversed(), k6);
    }

    #[test]
    fn icmp_echo_uses_identifier_and_type_direction() {
        let req = FlowKey::icmp(VNI, a4(1).into(), a4(2).into(), 8, 0x1234).unwrap();
        let rep = FlowKey::icmp(VNI, a4(2).into(), a4(1).into(), 0, 0x1234).unwrap();
        assert_eq!(req.reversed(), rep);
        assert_eq!(rep.reversed(), req);
        assert_eq!(req.dst_port(), 0x1234);
        // An echo request the other way is not the reply direction of this flow.
        let other = FlowKey::icmp(VNI, a4(2).into(), a4(1).into(), 8, 0x1234).unwrap();
        assert_ne!(req.reversed(), other);
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let req6 = FlowKey::icmp(VNI, v6("fd00::1"), v6("fd00::2"), 128, 7).unwrap();
        let rep6 = FlowKey::icmp(VNI, v6("fd00::2"), v6("fd00::1"), 129, 7).unwrap();
        assert_eq!(req6.proto(), PROTO_ICMPV6);
        assert_eq!(req6.reversed(), rep6);
        assert!(FlowKey::icmp(VNI, a4(1).into(), v6("fd00::1"), 8, 1).is_none());
    }

    #[test]
    fn family_vni_and_zone_separate_keys() {
        let k4 = FlowKey::v4(VNI, a4(1), a4(2), PROTO_UDP, 1, 2);
        // IPv6 key with the same 16 address bytes.
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&a4(1).octets());
        let mut c = [0u8; 16];
        c[..4].copy_from_slice(&a4(2).octets());
        let k6 = FlowKey::v6(VNI, Ipv6Addr::from(b), Ipv6Addr::from(c), PROTO_UDP, 1, 2);
        assert_ne!(k4, k6);
        assert_ne!(k4, FlowKey::v4(VNI + 1, a4(1), a4(2), PROTO_UDP, 1, 2));
        assert_ne!(k4, k4.with_zone(1));
        assert_eq!(k4.with_zone(3).reversed().zone(), 3);
        let h = FlowHasher::new(1);
        assert_ne!(h.hash(&k4), h.hash(&k6));
        assert_ne!(h.hash(&k4), h.hash(&k4.with_zone(1)));
        assert_eq!(k4.src(), IpAddr::V4(a4(1)));
        assert_eq!(k4.vni(), VNI);
        assert!(!k4.is_ipv6());
    }

    /// The fields of a key, for comparing [`FlowKey`]'s `eq` with a field-by-field one.
    fn fields(k: &FlowKey) -> ([u8; 16], [u8; 16], u32, u16, u16, u8, u8, u8) {
        (k.src, k.dst, k.vni, k.src_port(), k.dst_port(), k.proto(), k.family(), k.zone())
    }

    proptest::proptest! {
        /// Keys that differ in any one field (or none) compare as their fields do.
        #[test]
        fn eq_is_field_by_field(
            a in proptest::prelude::any::<([u8; 16], [u8; 16], u32, u16, u16, u8, u8, u8)>(),
            field in 0usize..9,
            v in proptest::prelude::any::<u32>(),
        ) {
            let k = |f: ([u8; 16], [u8; 16], u32, u16, u16, u8, u8, u8)| FlowKey {
                src: f.0, dst: f.1, vni: f.2, ports: ports_of(f.3, f.4), kind: kind_of(f.5, f.6, f.7),
            };
            let mut b = a;
            #[allow(clippy::cast_possible_truncation)] // any value will do
            match field {
                0 => b.0[(v % 16) as usize] ^= (v >> 8) as u8,
                1 => b.1[(v % 16) as usize] ^= (v >> 8) as u8,
                2 => b.2 = v,
                3 => b.3 = v as u16,
                4 => b.4 = v as u16,
                5 => b.5 = v as u8,
                6 => b.6 = v as u8,
                7 => b.7 = v as u8,
                _ => {}
            }
            proptest::prop_assert_eq!(k(a) == k(b), fields(&k(a)) == fields(&k(b)));
        }
    }

    #[test]
    fn hash_v4_is_the_hash_of_the_key() {
        let h = FlowHasher::new(0x1234_5678);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            let r = splitmix64(&mut x);
            let (s, d) = (Ipv4Addr::from((r >> 32) as u32), Ipv4Addr::from(r as u32));
            let r2 = splitmix64(&mut x);
            let (vni, sp, dp) = ((r2 >> 40) as u32, (r2 >> 16) as u16, r2 as u16);
            let (proto, zone) = ((r2 >> 8) as u8, (r2 >> 32) as u8 & 1);
            let k = FlowKey::v4(vni, s, d, proto, sp, dp).with_zone(zone);
            assert_eq!(h.hash_v4(vni, s, d, proto, sp, dp, zone), h.hash(&k), "{k:?}");
        }
    }

    #[test]
    fn hash_depends_on_seed_and_spreads() {
        let k = FlowKey::v4(VNI, a4(1), a4(2), PROTO_TCP, 1234, 80);
        assert_ne!(FlowHasher::new(1).hash(&k), FlowHasher::new(2).hash(&k));
        // Keys differing in one port bit land in evenly used high halves: count the
        // top 4 bits over 4096 consecutive source ports.
        let h = FlowHasher::new(0xdead_beef);
        let mut buckets = [0u32; 16];
        for p in 0..4096u16 {
            let x = h.hash(&FlowKey::v4(VNI, a4(1), a4(2), PROTO_TCP, p, 80));
            buckets[usize::try_from(x >> 60).unwrap()] += 1;
        }
        // Expected 256 each; a binomial deviation beyond ±80 (5 sigma) means a bad mix.
        assert!(buckets.iter().all(|&n| (176..=336).contains(&n)), "{buckets:?}");
    }
}
