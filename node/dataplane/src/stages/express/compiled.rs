//! A record's rewrite, compiled for the packets the record is for.
//!
//! Every packet a record holds for has the record's addresses and ports (the record
//! compares them exactly). So the old values of the fields a rewrite changes are known
//! when the record is made, and with them each checksum's incremental update (RFC 1624
//! eqn. 3, `~(~HC + Σ(~m + m'))`) but for the old checksum itself: the sum of
//! `~m + m'` over the changed 16-bit words is one constant per checksum. Routing's TTL
//! decrement is one more such word whose `~m + m'` is the same for every TTL above 1
//! (`0xfeff`), so on a routed lane it joins the header checksum's constant. A packet then
//! takes a store per changed field and one update per checksum, where the general
//! rewrite ([`crate::tables::nat::rewrite_ipv4`]) parses the packet again and derives
//! every update from the packet's own fields. Where the sums are folded does not
//! change the result (see [`checksum::update`]); a test holds this to the general
//! rewrite followed by the TTL decrement.

use std::net::Ipv4Addr;

use super::Raw;
use crate::stages::conntrack::Rewrite;
use crate::wire::{checksum, ipv4};

/// The header checksum's offset in the IPv4 header.
const IP_CKSUM: usize = 10;
/// `~m + m'` of the (TTL, protocol) word when the TTL goes down by one from above 1.
const TTL_DELTA: u32 = 0xfeff;

/// See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Compiled {
    /// Where the new address goes in the IPv4 header (12 the source, 16 the
    /// destination); 0 for no rewrite.
    addr_at: u8,
    /// Where the new port goes in the L4 header (0 the source, 2 the destination).
    port_at: u8,
    /// The port changes too.
    has_port: bool,
    /// UDP, whose zero checksum means none; else TCP.
    udp: bool,
    addr: [u8; 4],
    port: u16,
    /// `Σ(~m + m')` of the IPv4 header's changed words: the address's, and the TTL's on
    /// a routed lane; folded ([`checksum::fold_delta`]) and byte-swapped, for checksums
    /// read little-endian (a plain load here).
    ip_delta: u16,
    /// The same for the L4 checksum: the address's (in the pseudo-header) and the port's.
    l4_delta: u16,
}

/// A delta for [`Compiled`]: folded, byte-swapped.
fn swapped(delta: u32) -> u16 {
    checksum::fold_delta(delta).swap_bytes()
}

/// Updates the checksum at `at..at + 2` of `b` ([`checksum::update_folded`]), read and
/// written little-endian, with a [`swapped`] delta; with `udp_rule`, as UDP's: a zero
/// checksum (none) stays zero, and a zero result is sent as 0xffff.
#[inline(always)]
fn update_at(b: &mut [u8], at: usize, delta: u16, udp_rule: bool) {
    let Some(f) = b.get_mut(at..at + 2) else { return };
    let old = u16::from_le_bytes([f[0], f[1]]);
    if udp_rule && old == 0 {
        return;
    }
    let mut ck = checksum::update_folded(old, delta);
    if udp_rule && ck == 0 {
        ck = 0xffff; // both byte orders alike
    }
    f.copy_from_slice(&ck.to_le_bytes());
}

impl Compiled {
    /// `rw` compiled for packets with fields `raw`, for a lane that routes (decrements
    /// the TTL) or not. `None` for the rewrites the lane does not take (NAT64).
    pub(super) fn new(rw: Rewrite, raw: &Raw, routed: bool) -> Option<Self> {
        let ttl = if routed { TTL_DELTA } else { 0 };
        let (addr_at, port_at, old_addr, old_port, ip, port) = match rw {
            Rewrite::None => return Some(Compiled { ip_delta: swapped(ttl), ..Compiled::default() }),
            Rewrite::Src { ip, port } => (12, 0, raw.src(), raw.sp(), ip, port),
            Rewrite::Dst { ip, port } => (16, 2, raw.dst(), raw.dp(), ip, port),
            Rewrite::Nat64 { .. } | Rewrite::Nat46 { .. } => return None,
        };
        let d_addr = checksum::delta32(u32::from(old_addr), u32::from(ip));
        let d_port = port.map_or(0, |p| checksum::delta16(old_port, p));
        Some(Compiled {
            addr_at,
            port_at,
            has_port: port.is_some(),
            udp: raw.proto == ipv4::PROTO_UDP,
            addr: ip.octets(),
            port: port.unwrap_or(0),
            ip_delta: swapped(d_addr + ttl),
            l4_delta: swapped(d_addr + d_port),
        })
    }

    /// The rewrite this was compiled from.
    pub(super) fn rewrite(&self) -> Rewrite {
        let (ip, port) = (Ipv4Addr::from(self.addr), self.has_port.then_some(self.port));
        match self.addr_at {
            12 => Rewrite::Src { ip, port },
            16 => Rewrite::Dst { ip, port },
            _ => Rewrite::None,
        }
    }

    /// Rewrites the IPv4 packet `ip` (one with the fields compiled for, its L4 header
    /// whole) and, when `routed` (as compiled), decrements its TTL. False, changing
    /// nothing, for a TTL of 1 or less on a routed lane or a packet too short: the
    /// general way then decides.
    #[inline(always)]
    pub(super) fn apply(&self, ip: &mut [u8], routed: bool) -> bool {
        let Some(h) = ip.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>() else { return false };
        if routed && h[ipv4::field::TTL] <= 1 {
            return false;
        }
        if self.addr_at == 0 {
            // No rewrite: the TTL alone, on a routed lane.
            if routed {
                h[ipv4::field::TTL] -= 1;
                update_at(h, IP_CKSUM, self.ip_delta, false);
            }
            return true;
        }
        let (l4_len, ck_at) = if self.udp { (8, 6) } else { (20, 16) };
        if ip.len() < ipv4::MIN_HEADER_LEN + l4_len {
            return false;
        }
        let (h, l4) = ip.split_at_mut(ipv4::MIN_HEADER_LEN);
        let (Some(h), Some(l4)) = (h.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>(), l4.get_mut(..l4_len))
        else {
            return false;
        };
        if routed {
            h[ipv4::field::TTL] -= 1;
        }
        update_at(h, IP_CKSUM, self.ip_delta, false);
        let at = usize::from(self.addr_at);
        if let Some(addr) = h.get_mut(at..at + 4) {
            addr.copy_from_slice(&self.addr);
        }
        let port_at = usize::from(self.port_at);
        if self.has_port {
            l4[port_at..port_at + 2].copy_from_slice(&self.port.to_be_bytes());
        }
        update_at(l4, ck_at, self.l4_delta, self.udp);
        true
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tables::nat::{rewrite_ipv4, Side};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// The compiled rewrite (and TTL decrement) leaves every packet exactly as the
        /// general rewrite followed by routing's decrement does, or refuses it
        /// unchanged where routing would drop it.
        #[test]
        fn the_compiled_rewrite_is_the_general_one(
            udp: bool,
            mut ip in proptest::collection::vec(any::<u8>(), 40..48),
            ttl in prop_oneof![Just(0u8), Just(1), Just(2), any::<u8>()],
            l4_ck in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            side in 0u8..3,
            new_addr: [u8; 4],
            new_port in proptest::option::of(prop_oneof![Just(0u16), Just(0xffff), any::<u16>()]),
            routed: bool,
            zero_result in proptest::bool::weighted(0.2),
        ) {
            let total = u16::try_from(ip.len()).unwrap();
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[6] &= 0x40;
            ip[7] = 0;
            ip[8] = ttl;
            ip[9] = if udp { 17 } else { 6 };
            ip[10..12].fill(0);
            let ck = checksum::checksum(&ip[..20]);
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
            let ck_at = 20 + if udp { 6 } else { 16 };
            ip[ck_at..ck_at + 2].copy_from_slice(&l4_ck.to_be_bytes());
            let raw = Raw {
                addrs: u64::from_ne_bytes(ip[12..20].try_into().unwrap()),
                ports: u32::from_ne_bytes(ip[20..24].try_into().unwrap()),
                proto: ip[9],
                tcp_flags: 0,
                total,
            };
            let addr = Ipv4Addr::from(new_addr);
            let rw = match side {
                0 => Rewrite::None,
                1 => Rewrite::Src { ip: addr, port: new_port },
                _ => Rewrite::Dst { ip: addr, port: new_port },
            };
            let c = Compiled::new(rw, &raw, routed).unwrap();
            prop_assert_eq!(c.rewrite(), rw);
            if zero_result && c.l4_delta != 0 {
                // An old checksum whose update sums to zero (UDP then sends 0xffff).
                ip[ck_at..ck_at + 2].copy_from_slice(&c.l4_delta.to_le_bytes());
            }
            let mut general = ip.clone();
            let side = if side == 1 { Side::Source } else { Side::Destination };
            if rw != Rewrite::None {
                prop_assert!(rewrite_ipv4(&mut general, side, addr, new_port));
            }
            let routes = !routed || general.first_chunk_mut().is_some_and(ipv4::decrement_ttl_header);
            let mut compiled = ip.clone();
            prop_assert_eq!(c.apply(&mut compiled, routed), routes);
            prop_assert_eq!(if routes { general } else { ip }, compiled);
        }
    }
}
