//! ICMPv6 neighbor discovery messages (RFC 4861): types, field offsets, emitters for
//! the advertisements the node sends, and the checksum.

use std::net::Ipv6Addr;

use super::checksum;
use super::ipv6::NH_ICMPV6;
use crate::config::Mac;

/// Field offsets of the ND messages the node handles.
pub mod field {
    use core::ops::Range;
    /// Message type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 2..4;
    /// NS/NA: flags (NA) or reserved (NS).
    pub const NA_FLAGS: Range<usize> = 4..8;
    /// NS/NA: target address.
    pub const TARGET: Range<usize> = 8..24;
    /// RA: current hop limit.
    pub const RA_HOP_LIMIT: usize = 4;
    /// RA: managed/other flags.
    pub const RA_FLAGS: usize = 5;
    /// RA: router lifetime in seconds.
    pub const RA_ROUTER_LIFETIME: Range<usize> = 6..8;
    /// RA: reachable time in milliseconds.
    pub const RA_REACHABLE: Range<usize> = 8..12;
    /// RA: retransmission timer in milliseconds.
    pub const RA_RETRANS: Range<usize> = 12..16;
}

/// Router solicitation.
pub const TYPE_ROUTER_SOLICIT: u8 = 133;
/// Router advertisement.
pub const TYPE_ROUTER_ADVERT: u8 = 134;
/// Neighbor solicitation.
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbor advertisement.
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;
/// Redirect.
pub const TYPE_REDIRECT: u8 = 137;

/// ND option: source link-layer address.
pub const OPT_SOURCE_LL_ADDR: u8 = 1;
/// ND option: target link-layer address.
pub const OPT_TARGET_LL_ADDR: u8 = 2;
/// Length of a link-layer address option for Ethernet.
pub const LL_ADDR_OPT_LEN: usize = 8;

/// Length of an RS without options.
pub const RS_LEN: usize = 8;
/// Length of an NS or NA without options.
pub const NS_NA_LEN: usize = 24;
/// Length of an RA without options.
pub const RA_LEN: usize = 16;

/// NA flag (first flags byte): sent by a router.
pub const NA_ROUTER: u8 = 0x80;
/// NA flag: answers a solicitation.
pub const NA_SOLICITED: u8 = 0x40;
/// NA flag: override a cached link-layer address.
pub const NA_OVERRIDE: u8 = 0x20;
/// RA flag: addresses are available via DHCPv6.
pub const RA_MANAGED: u8 = 0x80;
/// RA flag: other configuration is available via DHCPv6.
pub const RA_OTHER: u8 = 0x40;

/// The target of a neighbor solicitation `msg` (the ICMPv6 message), if it is long
/// enough to hold one.
pub fn ns_target(msg: &[u8]) -> Option<Ipv6Addr> {
    let t = msg.get(field::TARGET)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(t);
    Some(Ipv6Addr::from(a))
}

/// A neighbor advertisement with a target link-layer address option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NaRepr {
    /// First flags byte ([`NA_ROUTER`] | [`NA_SOLICITED`] | [`NA_OVERRIDE`]).
    pub flags: u8,
    /// The address advertised.
    pub target: Ipv6Addr,
    /// Its link-layer address.
    pub target_mac: Mac,
}

impl NaRepr {
    /// Length of the emitted message.
    pub const LEN: usize = NS_NA_LEN + LL_ADDR_OPT_LEN;

    /// Writes the message (checksum zero) into `buf[..LEN]`; false if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(b) = buf.get_mut(..Self::LEN) else { return false };
        b.fill(0);
        b[field::TYPE] = TYPE_NEIGHBOR_ADVERT;
        b[field::NA_FLAGS.start] = self.flags;
        b[field::TARGET].copy_from_slice(&self.target.octets());
        b[NS_NA_LEN] = OPT_TARGET_LL_ADDR;
        b[NS_NA_LEN + 1] = 1;
        b[NS_NA_LEN + 2..].copy_from_slice(&self.target_mac);
        true
    }
}

/// A router advertisement with a source link-layer address option and no prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaRepr {
    /// Hop limit hosts should use.
    pub cur_hop_limit: u8,
    /// Flags byte ([`RA_MANAGED`] | [`RA_OTHER`]).
    pub flags: u8,
    /// Router lifetime in seconds.
    pub router_lifetime: u16,
    /// Reachable time in milliseconds (0: unspecified).
    pub reachable_time: u32,
    /// Retransmission timer in milliseconds (0: unspecified).
    pub retrans_timer: u32,
    /// The router's link-layer address.
    pub source_mac: Mac,
}

impl RaRepr {
    /// Length of the emitted message.
    pub const LEN: usize = RA_LEN + LL_ADDR_OPT_LEN;

    /// Writes the message (checksum zero) into `buf[..LEN]`; false if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(b) = buf.get_mut(..Self::LEN) else { return false };
        b.fill(0);
        b[field::TYPE] = TYPE_ROUTER_ADVERT;
        b[field::RA_HOP_LIMIT] = self.cur_hop_limit;
        b[field::RA_FLAGS] = self.flags;
        b[field::RA_ROUTER_LIFETIME].copy_from_slice(&self.router_lifetime.to_be_bytes());
        b[field::RA_REACHABLE].copy_from_slice(&self.reachable_time.to_be_bytes());
        b[field::RA_RETRANS].copy_from_slice(&self.retrans_timer.to_be_bytes());
        b[RA_LEN] = OPT_SOURCE_LL_ADDR;
        b[RA_LEN + 1] = 1;
        b[RA_LEN + 2..].copy_from_slice(&self.source_mac);
        true
    }
}

/// Computes and stores the checksum of the ICMPv6 message `msg` (all of it) sent
/// from `src` to `dst`. `msg` must hold at least the 4-byte header.
pub fn fill_checksum(msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    if msg.len() < 4 {
        return;
    }
    msg[field::CHECKSUM].fill(0);
    let c = checksum::l4_v6(src, dst, NH_ICMPV6, msg);
    msg[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn na_layout() {
        let mut b = [0xaau8; 40];
        assert!(!NaRepr { flags: 0, target: Ipv6Addr::LOCALHOST, target_mac: [0; 6] }.emit(&mut b[..31]));
        let na = NaRepr {
            flags: NA_SOLICITED | NA_OVERRIDE,
            target: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
            target_mac: [1, 2, 3, 4, 5, 6],
        };
        assert!(na.emit(&mut b));
        assert_eq!(b[..8], [136, 0, 0, 0, 0x60, 0, 0, 0]);
        assert_eq!(ns_target(&b[..24]), Some(na.target));
        assert_eq!(b[24..32], [2, 1, 1, 2, 3, 4, 5, 6]);
        assert_eq!(b[32..], [0xaa; 8]);
        let (s, d) = (na.target, Ipv6Addr::LOCALHOST);
        fill_checksum(&mut b[..32], s, d);
        let sum = checksum::sum_words(checksum::pseudo_v6(s, d, 58, 32), &b[..32]);
        assert_eq!(checksum::finish(sum), 0);
    }

    #[test]
    fn ra_layout() {
        let ra = RaRepr {
            cur_hop_limit: 255,
            flags: RA_MANAGED | RA_OTHER,
            router_lifetime: 0xffff,
            reachable_time: 1,
            retrans_timer: 2,
            source_mac: [1, 2, 3, 4, 5, 6],
        };
        let mut b = [0u8; 24];
        assert!(ra.emit(&mut b));
        assert_eq!(b, [134, 0, 0, 0, 255, 0xc0, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 1, 2, 3, 4, 5, 6]);
    }
}
