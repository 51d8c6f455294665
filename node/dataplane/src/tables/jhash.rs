//! DPDK's Jenkins hash (`rte_jhash`, Bob Jenkins' lookup3) and the keys dpservice
//! hashes with it, so that the node makes the same hash-based choices as dpservice:
//! - the PF of a flow under `--wcmp` (the hash of the 44-byte conntrack key,
//!   [`DpsFlowKey`]);
//! - the first NAT port tried for a new flow (the hash of the 26-byte port-map key,
//!   [`portmap_hash`]).
//!
//! Every dpservice table uses the seed [`DPSERVICE_SEED`]. A key whose length is a
//! multiple of 4 is hashed by `rte_jhash_32b`, any other by the byte-length
//! `rte_jhash`; on little-endian hosts both read the key as little-endian 32-bit words
//! with a zero-padded tail, which is what [`jhash`] does, so one function serves both.
//! (dpservice hashes 4-, 8- and 12-byte keys with [`jhash_1word`], [`jhash_2words`] and
//! [`jhash_3words`] instead, which differ from [`jhash`] of the same bytes.)
//!
//! Sans-I/O and allocation-free.

use std::net::IpAddr;

/// The initial value of every dpservice hash table ("0xfee1900d").
pub const DPSERVICE_SEED: u32 = 0xfee1_900d;

const GOLDEN: u32 = 0xdead_beef;

#[inline]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline]
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// Up to 4 bytes as a little-endian word, zero-padded.
#[inline]
fn word(bytes: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    let n = bytes.len().min(4);
    w[..n].copy_from_slice(&bytes[..n]);
    u32::from_le_bytes(w)
}

/// `rte_jhash(key, key.len(), seed)` as computed on a little-endian host (and
/// `rte_jhash_32b` for keys whose length is a multiple of 4).
pub fn jhash(key: &[u8], seed: u32) -> u32 {
    #[allow(clippy::cast_possible_truncation)] // rte_jhash takes a u32 length
    let len = key.len() as u32;
    let init = GOLDEN.wrapping_add(len).wrapping_add(seed);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..4]));
        b = b.wrapping_add(word(&rest[4..8]));
        c = c.wrapping_add(word(&rest[8..12]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    let at = |i: usize| rest.get(i..).unwrap_or(&[]);
    a = a.wrapping_add(word(at(0)));
    b = b.wrapping_add(word(at(4)));
    c = c.wrapping_add(word(at(8)));
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// `rte_jhash_3words(a, b, c, seed)`.
pub fn jhash_3words(a: u32, b: u32, c: u32, seed: u32) -> u32 {
    words(a.wrapping_add(12), b.wrapping_add(12), c.wrapping_add(12), seed)
}

/// `rte_jhash_2words(a, b, seed)`.
pub fn jhash_2words(a: u32, b: u32, seed: u32) -> u32 {
    words(a.wrapping_add(8), b.wrapping_add(8), 8, seed)
}

/// `rte_jhash_1word(a, seed)`.
pub fn jhash_1word(a: u32, seed: u32) -> u32 {
    words(a.wrapping_add(4), 4, 4, seed)
}

fn words(a: u32, b: u32, c: u32, seed: u32) -> u32 {
    let init = GOLDEN.wrapping_add(seed);
    let (mut a, mut b, mut c) = (a.wrapping_add(init), b.wrapping_add(init), c.wrapping_add(init));
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// dpservice's VNF type of a flow key (`enum dp_vnf_type`): which kind of underlay
/// address or service the flow belongs to. Part of the key, so part of the hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum VnfType {
    /// Nothing in particular.
    #[default]
    Undefined = 0,
    /// A load-balancer prefix of an interface.
    LbAliasPrefix = 1,
    /// An alias prefix.
    AliasPrefix = 2,
    /// A load balancer.
    Lb = 3,
    /// A VIP.
    Vip = 4,
    /// NAT (an interface with NAT, or NAT64).
    Nat = 5,
    /// An interface's own address.
    InterfaceIp = 6,
}

/// dpservice's conntrack key (`struct flow_key`, 44 bytes packed), whose jhash picks a
/// flow's PF under `--wcmp`.
///
/// Ports as dpservice fills them: TCP/UDP destination and source port; ICMP echo: the
/// identifier as `port_dst` and the type as `port_src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpsFlowKey {
    /// Destination address.
    pub dst: IpAddr,
    /// Source address.
    pub src: IpAddr,
    /// Destination port (ICMP: identifier).
    pub port_dst: u16,
    /// Source port (ICMP: type).
    pub port_src: u16,
    /// The VNI.
    pub vni: u32,
    /// The IP protocol.
    pub proto: u8,
    /// The VNF type.
    pub vnf: VnfType,
}

/// A dpservice `dp_ip_address`-style address field: IPv4 as a host-order (little-endian
/// on x86) u32 in the first 4 bytes, IPv6 as its network bytes.
fn addr_bytes(a: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&u32::from(v4).to_le_bytes()),
        IpAddr::V6(v6) => b = v6.octets(),
    }
    b
}

impl DpsFlowKey {
    /// The key's bytes, laid out as dpservice's packed struct on x86: l3_dst (0..16),
    /// l3_src (16..32), port_dst (32), port_src (34), vni (36), l3_type (40), proto (42),
    /// vnf_type (43); integers little-endian.
    pub fn to_bytes(&self) -> [u8; 44] {
        let mut k = [0u8; 44];
        k[0..16].copy_from_slice(&addr_bytes(self.dst));
        k[16..32].copy_from_slice(&addr_bytes(self.src));
        k[32..34].copy_from_slice(&self.port_dst.to_le_bytes());
        k[34..36].copy_from_slice(&self.port_src.to_le_bytes());
        k[36..40].copy_from_slice(&self.vni.to_le_bytes());
        let l3: u16 = if self.dst.is_ipv4() { 0x0800 } else { 0x86dd };
        k[40..42].copy_from_slice(&l3.to_le_bytes());
        k[42] = self.proto;
        k[43] = self.vnf as u8;
        k
    }

    /// dpservice's flow hash: [`jhash`] of [`DpsFlowKey::to_bytes`] with
    /// [`DPSERVICE_SEED`].
    pub fn hash(&self) -> u32 {
        jhash(&self.to_bytes(), DPSERVICE_SEED)
    }
}

/// dpservice's NAT port-map key (`struct netnat_portmap_key`, 26 bytes packed): the
/// address type (left 0 by dpservice), 2 bytes of padding, the VM's address (IPv4 as a
/// little-endian u32, IPv6 as network bytes), the VNI and the VM's source port (ICMP:
/// identifier), integers little-endian.
pub fn portmap_key(src: IpAddr, vni: u32, src_port: u16) -> [u8; 26] {
    let mut k = [0u8; 26];
    k[4..20].copy_from_slice(&addr_bytes(src));
    k[20..24].copy_from_slice(&vni.to_le_bytes());
    k[24..26].copy_from_slice(&src_port.to_le_bytes());
    k
}

/// The hash dpservice starts its NAT port search from: [`jhash`] of [`portmap_key`] with
/// [`DPSERVICE_SEED`]. The first port tried is `min + hash % (max - min)`.
pub fn portmap_hash(src: IpAddr, vni: u32, src_port: u16) -> u32 {
    jhash(&portmap_key(src, vni, src_port), DPSERVICE_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// `rte_jhash(buf, len, 0xfee1900d)` for `buf[i] = i * 7 + 1`, len 0..=30, computed
    /// by DPDK 22.11's `rte_jhash.h` in a throwaway C program on x86-64.
    const SEQ: [u32; 31] = [
        0xdd8f4efc, 0xab090c6e, 0x441b9497, 0x364ee606, 0xcc571837, 0x88cab703, 0x01e43611, 0x0d0ef9e5,
        0xd29fd277, 0x084a33a4, 0xe1f27108, 0x7cdb0fb1, 0xa48169f0, 0x21a38691, 0x36fe2912, 0x22ca1012,
        0x042101f7, 0x41c15298, 0x12495ee8, 0x7321087e, 0xdc8eeb7c, 0xd3c9a700, 0x4fcd750d, 0x0cf38de0,
        0xc58247ba, 0x0be6c87c, 0xc2e86023, 0xc7f8686e, 0x69f8fdcf, 0xcb80dacc, 0xddc93b85,
    ];

    #[test]
    fn matches_dpdk_for_every_tail_length() {
        let buf: Vec<u8> = (0..64u32).map(|i| (i * 7 + 1) as u8).collect();
        for (len, &want) in SEQ.iter().enumerate() {
            assert_eq!(jhash(&buf[..len], DPSERVICE_SEED), want, "length {len}");
        }
    }

    #[test]
    fn word_variants_match_dpdk() {
        assert_eq!(jhash_1word(0x1234_5678, DPSERVICE_SEED), 0x3111_1a8e);
        assert_eq!(jhash_2words(0x1234_5678, 0x9abc_def0, DPSERVICE_SEED), 0x1020_6652);
        assert_eq!(jhash_3words(1, 2, 3, DPSERVICE_SEED), 0x03bb_b1eb);
    }

    const VM1: Ipv4Addr = Ipv4Addr::new(10, 100, 1, 1);
    const VM2: Ipv4Addr = Ipv4Addr::new(10, 100, 1, 2);
    const PUBLIC: Ipv4Addr = Ipv4Addr::new(45, 86, 6, 6);

    fn key(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        port_src: u16,
        port_dst: u16,
        vnf: VnfType,
    ) -> DpsFlowKey {
        DpsFlowKey { dst: dst.into(), src: src.into(), port_dst, port_src, vni: 100, proto, vnf }
    }

    /// The WCMP choices the conformance suite's port-redundancy pass expects
    /// (`hash % 10 < 5` is PF0), with hashes from DPDK's `rte_jhash_32b`.
    #[test]
    fn flow_hashes_give_the_suites_pf_choices() {
        let encap = |last| key(VM1, Ipv4Addr::new(10, 100, 2, last), 1, 8, 0, VnfType::Undefined);
        assert_eq!(encap(102).hash(), 0x5d85_f914);
        assert_eq!(encap(125).hash(), 0xe060_29ac);
        assert!(encap(102).hash() % 10 < 5 && encap(125).hash() % 10 >= 5);
        let icmperr = |dport| key(VM1, PUBLIC, 6, 1256, dport, VnfType::Nat).hash() % 10;
        assert_eq!((icmperr(501), icmperr(565)), (4, 9));
        let vip = |dport| key(VM2, PUBLIC, 6, 1240, dport, VnfType::Undefined).hash() % 10;
        assert_eq!((vip(180), vip(120)), (1, 7));
    }

    #[test]
    fn flow_key_layout() {
        let k = key(VM1, PUBLIC, 6, 1256, 501, VnfType::Nat).to_bytes();
        assert_eq!(&k[0..4], &[6, 6, 86, 45]);
        assert_eq!(&k[16..20], &[1, 1, 100, 10]);
        assert_eq!(&k[32..44], &[0xf5, 0x01, 0xe8, 0x04, 100, 0, 0, 0, 0x00, 0x08, 6, 5]);
        assert!(k[4..16].iter().chain(&k[20..32]).all(|&b| b == 0));
    }

    /// The suite's NAT port expectations (range 100..102): 12345 → 100, 1246 → 101,
    /// 1547 → 100; hashes from DPDK's byte-length `rte_jhash`.
    #[test]
    fn portmap_hashes_match_dpdk() {
        let h = |p| portmap_hash(VM1.into(), 100, p);
        assert_eq!(h(12345), 0x690f_c18a);
        assert_eq!(h(1246), 0xf216_2207);
        assert_eq!(h(1547), 0x2f6f_0dfc);
        assert_eq!(portmap_key(VM1.into(), 100, 12345)[..6], [0, 0, 0, 0, 1, 1]);
    }
}
