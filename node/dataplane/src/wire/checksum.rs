//! Internet checksum (RFC 1071) and incremental update (RFC 1624).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds the 16-bit big-endian words of `data` to `sum` (odd tail padded with zero).
#[inline]
pub fn sum_words(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// One fold of a ones' complement sum: the carries above bit 15 added back in. It keeps
/// the residue modulo 0xffff and keeps a nonzero sum nonzero.
#[inline]
fn fold(sum: u32) -> u32 {
    (sum & 0xffff) + (sum >> 16)
}

/// A 32-bit sum folded to 16 bits. Two folds, without a loop, are enough for any `u32`:
/// the first leaves at most `0xffff + 0xffff = 0x1fffe`, the second at most `0xfffe + 1`.
#[inline]
fn fold16(sum: u32) -> u16 {
    #[allow(clippy::cast_possible_truncation)] // folded to 16 bits
    let s = fold(fold(sum)) as u16;
    s
}

/// Folds a 32-bit sum to 16 bits and complements it.
#[inline]
pub fn finish(sum: u32) -> u16 {
    !fold16(sum)
}

/// Checksum of `data` (e.g. an IPv4 header with its checksum field zeroed).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum_words(0, data))
}

/// Whether `data`, which carries its own checksum (an IPv4 header), verifies: the same
/// answer as `checksum(data) == 0`, summed a 32-bit word at a time for the fast path.
///
/// A ones' complement sum of 32-bit words folds to the same 16-bit value as the sum of
/// the 16-bit words (2^16 ≡ 1 mod 0xffff, and folding keeps a nonzero sum nonzero), so
/// the result is exactly that of [`checksum`].
#[inline]
pub fn verifies(data: &[u8]) -> bool {
    let mut words = data.chunks_exact(4);
    let mut sum: u64 = 0;
    for w in &mut words {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    sum += u64::from(sum_words(0, words.remainder()));
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// [`verifies`] for an option-less IPv4 header: five 32-bit words, summed without a
/// loop. Read in little-endian order, a plain load on the machines the node runs on:
/// the ones'-complement sum of byte-swapped words is the byte-swapped sum (RFC 1071,
/// 2(B)), and 0xffff is its own swap.
#[inline]
pub fn verifies_header(h: &[u8; 20]) -> bool {
    let w = |i: usize| u64::from(u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let sum = w(0) + w(4) + w(8) + w(12) + w(16);
    // Folding keeps the residue modulo 0xffff (2^16 ≡ 1) and maps every nonzero sum to
    // 1..=0xffff: the folded sum is 0xffff exactly when the sum is a nonzero multiple
    // of 0xffff. One division by a constant (a multiply) instead of four dependent folds.
    sum != 0 && sum % 0xffff == 0
}

/// Pseudo-header sum for TCP/UDP over IPv4.
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let mut s = sum_words(0, &src.octets());
    s = sum_words(s, &dst.octets());
    s + u32::from(proto) + u32::from(len)
}

/// Pseudo-header sum for TCP/UDP/ICMPv6 over IPv6.
#[inline]
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let mut s = sum_words(0, &src.octets());
    s = sum_words(s, &dst.octets());
    s.wrapping_add(len >> 16).wrapping_add(len & 0xffff).wrapping_add(u32::from(next_header))
}

/// Checksum of a transport segment (header with checksum zeroed + payload) over IPv4.
#[inline]
pub fn l4_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    #[allow(clippy::cast_possible_truncation)] // IPv4 segments are < 64 KiB
    let len = segment.len() as u16;
    finish(sum_words(pseudo_v4(src, dst, proto, len), segment))
}

/// Checksum of a transport segment over IPv6.
#[inline]
pub fn l4_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, segment: &[u8]) -> u16 {
    #[allow(clippy::cast_possible_truncation)] // jumbograms are not forwarded
    let len = segment.len() as u32;
    finish(sum_words(pseudo_v6(src, dst, next_header, len), segment))
}

/// Incrementally updates checksum `old_ck` when a 16-bit field changes from `old` to
/// `new` (RFC 1624, eqn. 3).
#[inline]
pub fn update16(old_ck: u16, old: u16, new: u16) -> u16 {
    update(old_ck, delta16(old, new))
}

/// Incrementally updates a checksum for a changed 32-bit field (e.g. an IPv4 address).
#[inline]
pub fn update32(old_ck: u16, old: u32, new: u32) -> u16 {
    update(old_ck, delta32(old, new))
}

/// What a 16-bit field changing from `old` to `new` adds to the sum of an incremental
/// update: `~m + m'` of RFC 1624, eqn. 3. Deltas of several fields add up (below
/// 2^32 for thousands of them) and go to [`update`] once.
#[inline]
pub fn delta16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// [`delta16`] for a 32-bit field: its two 16-bit halves.
#[inline]
pub fn delta32(old: u32, new: u32) -> u32 {
    #[allow(clippy::cast_possible_truncation)] // split into 16-bit halves
    let (oh, ol, nh, nl) = ((old >> 16) as u16, old as u16, (new >> 16) as u16, new as u16);
    delta16(oh, nh) + delta16(ol, nl)
}

/// Checksum `old_ck` updated by the summed deltas of the changed fields:
/// `~(~HC + Σ(~m + m'))`, folded once at the end. The same as updating field by field,
/// each update folded: folding keeps a sum's residue modulo 0xffff and maps a nonzero
/// sum into 1..=0xffff, where each residue has one value, so where the folds happen
/// changes nothing.
#[inline]
pub fn update(old_ck: u16, delta: u32) -> u16 {
    finish(u32::from(!old_ck) + delta)
}

/// A delta of [`update`] folded to 16 bits the ones' complement way: the same residue
/// modulo 0xffff, and nonzero if it was (so [`update_folded`] with it gives what
/// [`update`] gives with `delta`).
#[inline]
pub fn fold_delta(delta: u32) -> u16 {
    fold16(delta)
}

/// [`update`] with a delta [`fold_delta`] folded: one fold suffices (the sum is at
/// most `0x1fffe`). The arithmetic is the same in either byte order (RFC 1071, 2(B)):
/// a checksum read little-endian, updated with a byte-swapped delta, is the update,
/// byte-swapped.
#[inline]
pub fn update_folded(old_ck: u16, delta: u16) -> u16 {
    #[allow(clippy::cast_possible_truncation)] // at most 0xffff after one fold
    let s = fold(u32::from(!old_ck) + u32::from(delta)) as u16;
    !s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    // An IPv4 ICMP header, 10.100.1.1 -> 10.100.1.2, TTL 64 (checksum 0xd8b4 in bytes 10..12).
    const IPV4_HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x54, 0x4b, 0x2a, 0x40, 0x00, 0x40, 0x01, 0xd8, 0xb4, 0x0a, 0x64, 0x01, 0x01, 0x0a,
        0x64, 0x01, 0x02,
    ];

    /// The chained field-by-field update that [`update`] with summed deltas replaces.
    fn update16_chained(ck: u16, fields: &[(u16, u16)]) -> u16 {
        fields.iter().fold(ck, |ck, &(old, new)| finish(u32::from(!ck) + u32::from(!old) + u32::from(new)))
    }

    proptest! {
        #[test]
        fn a_folded_delta_updates_as_the_whole_in_either_byte_order(
            ck in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            delta in prop_oneof![Just(0u32), Just(0xffff), Just(0x1fffe), 0..0x60000u32],
        ) {
            let d = fold_delta(delta);
            prop_assert_eq!(update_folded(ck, d), update(ck, delta));
            prop_assert_eq!(update_folded(ck.swap_bytes(), d.swap_bytes()), update(ck, delta).swap_bytes());
        }

        #[test]
        fn summed_deltas_update_as_field_by_field(ck: u16, fields in vec(any::<(u16, u16)>(), 0..7)) {
            let delta = fields.iter().map(|&(o, n)| delta16(o, n)).sum();
            prop_assert_eq!(update(ck, delta), update16_chained(ck, &fields));
        }

        #[test]
        fn update32_is_two_16_bit_updates(ck: u16, old: u32, new: u32) {
            let halves = [((old >> 16) as u16, (new >> 16) as u16), (old as u16, new as u16)];
            prop_assert_eq!(update32(ck, old, new), update16_chained(ck, &halves));
        }

        #[test]
        fn verifies_header_agrees_with_verifies(mut h in any::<[u8; 20]>(), fix: bool) {
            if fix {
                h[10..12].fill(0);
                let ck = checksum(&h);
                h[10..12].copy_from_slice(&ck.to_be_bytes());
            }
            prop_assert_eq!(verifies_header(&h), verifies(&h));
            prop_assert!(verifies_header(&h) || !fix);
        }

        #[test]
        fn verifies_agrees_with_checksum(mut data in vec(any::<u8>(), 0..80), at in 0usize..40) {
            prop_assert_eq!(verifies(&data), checksum(&data) == 0);
            // Make it verify: the checksum of the rest in an aligned 16-bit field.
            if data.len() >= 2 {
                let at = (at * 2).min(data.len() - 2) & !1;
                data[at..at + 2].fill(0);
                let ck = checksum(&data);
                data[at..at + 2].copy_from_slice(&ck.to_be_bytes());
                prop_assert_eq!(checksum(&data), 0);
                prop_assert!(verifies(&data));
            }
        }
    }

    #[test]
    fn ipv4_header_verifies_and_recomputes() {
        assert!(verifies(&IPV4_HDR));
        assert_eq!(checksum(&IPV4_HDR), 0, "a valid header sums to zero");
        let mut h = IPV4_HDR;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xd8b4);
        assert!(!verifies(&h));
    }

    #[test]
    fn incremental_equals_full() {
        let mut h = IPV4_HDR;
        let old_ttl_proto = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new_ttl_proto = u16::from_be_bytes([h[8], h[9]]);
        let inc = update16(0xd8b4, old_ttl_proto, new_ttl_proto);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, checksum(&h));
        let old_src = u32::from_be_bytes([h[12], h[13], h[14], h[15]]);
        h[12..16].copy_from_slice(&[172, 20, 0, 1]);
        let inc2 = update32(inc, old_src, u32::from_be_bytes([172, 20, 0, 1]));
        assert_eq!(inc2, checksum(&h));
    }
}
