//! [`Next`] as one `u64`, the form the runner keeps per packet.
//!
//! A `Next` built by a stage sits in memory as the compiler lays out the enum: a tag
//! and fields written by separate narrow stores. Copying it whole into the runner's
//! per-packet array then loads those bytes back with one wide load, which the CPU
//! cannot forward from several pending narrow stores: each such copy stalled for the
//! time it takes the stores to reach the cache (measured with `perf annotate`: about a
//! third of the runner's own time). Packing reads the fields one by one (each load
//! matches the store that wrote it) and keeps the result in a register; unpacking
//! decodes it from a register. Both are plain shifts and masks.
//!
//! Layout: bits 0–7 the variant, bits 8–15 a small sub-field (the underlay target's
//! kind, a drop reason), bits 16–31 a port or service index, bits 32–63 a VNI or a
//! flow hash.

use super::{DropReason, Next, Verdict};
use crate::config::UnderlayTarget;
use crate::stages::conntrack::Origin;

/// A [`Next`], packed. `Next::from(PackedNext::from(n)) == n` for every `n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedNext(u64);

const ARP: u64 = 0;
const ND: u64 = 1;
const DHCP: u64 = 2;
const DHCPV6: u64 = 3;
const DECAP: u64 = 4;
const CT_VF: u64 = 5;
const CT_TUNNEL: u64 = 6;
const SVC_REQUEST: u64 = 7;
const SVC_REPLY: u64 = 8;
const ROUTE4: u64 = 9;
const ROUTE6: u64 = 10;
const ENCAP_PF0: u64 = 11;
const ENCAP_HASH: u64 = 12;
const RELAY: u64 = 13;
const VF_TX: u64 = 14;
const PF_TX: u64 = 15;
const TX: u64 = 16;
const DROP: u64 = 17;

const T_INTERFACE: u64 = 0;
const T_ALIAS: u64 = 1;
const T_LB_PREFIX: u64 = 2;
const T_VIP: u64 = 3;
const T_NAT: u64 = 4;
const T_LB: u64 = 5;

fn pack(tag: u64, sub: u64, port: u16, wide: u32) -> PackedNext {
    PackedNext(tag | sub << 8 | u64::from(port) << 16 | u64::from(wide) << 32)
}

impl From<Next> for PackedNext {
    #[inline]
    fn from(n: Next) -> Self {
        match n {
            Next::Arp => pack(ARP, 0, 0, 0),
            Next::Nd => pack(ND, 0, 0, 0),
            Next::Dhcp => pack(DHCP, 0, 0, 0),
            Next::Dhcpv6 => pack(DHCPV6, 0, 0, 0),
            Next::Decap => pack(DECAP, 0, 0, 0),
            Next::Conntrack(Origin::Vf) => pack(CT_VF, 0, 0, 0),
            Next::Conntrack(Origin::Tunnel { target }) => match target {
                UnderlayTarget::Interface(p) => pack(CT_TUNNEL, T_INTERFACE, p, 0),
                UnderlayTarget::AliasPrefix(p) => pack(CT_TUNNEL, T_ALIAS, p, 0),
                UnderlayTarget::LbPrefix(p) => pack(CT_TUNNEL, T_LB_PREFIX, p, 0),
                UnderlayTarget::Vip(p) => pack(CT_TUNNEL, T_VIP, p, 0),
                UnderlayTarget::Nat { port, vni } => pack(CT_TUNNEL, T_NAT, port, vni),
                UnderlayTarget::Lb { vni } => pack(CT_TUNNEL, T_LB, 0, vni),
            },
            Next::VirtsvcRequest(s) => pack(SVC_REQUEST, 0, s, 0),
            Next::VirtsvcReply(s) => pack(SVC_REPLY, 0, s, 0),
            Next::Route4(h) => pack(ROUTE4, 0, 0, h),
            Next::Route6 => pack(ROUTE6, 0, 0, 0),
            Next::Encap(None) => pack(ENCAP_PF0, 0, 0, 0),
            Next::Encap(Some(h)) => pack(ENCAP_HASH, 0, 0, h),
            Next::Relay => pack(RELAY, 0, 0, 0),
            Next::VfTx(p) => pack(VF_TX, 0, p, 0),
            Next::PfTx(p) => pack(PF_TX, 0, p, 0),
            Next::Done(Verdict::Tx(p)) => pack(TX, 0, p, 0),
            Next::Done(Verdict::Drop(r)) => pack(DROP, r as u64, 0, 0),
        }
    }
}

impl From<PackedNext> for Next {
    #[inline]
    #[allow(clippy::cast_possible_truncation)] // the fields, cut out of their bits on purpose
    fn from(p: PackedNext) -> Self {
        let v = p.0;
        let (sub, port, wide) = ((v >> 8) as u8, (v >> 16) as u16, (v >> 32) as u32);
        match v & 0xff {
            ARP => Next::Arp,
            ND => Next::Nd,
            DHCP => Next::Dhcp,
            DHCPV6 => Next::Dhcpv6,
            DECAP => Next::Decap,
            CT_VF => Next::Conntrack(Origin::Vf),
            CT_TUNNEL => {
                let target = match u64::from(sub) {
                    T_INTERFACE => UnderlayTarget::Interface(port),
                    T_ALIAS => UnderlayTarget::AliasPrefix(port),
                    T_LB_PREFIX => UnderlayTarget::LbPrefix(port),
                    T_VIP => UnderlayTarget::Vip(port),
                    T_NAT => UnderlayTarget::Nat { port, vni: wide },
                    T_LB => UnderlayTarget::Lb { vni: wide },
                    _ => return Next::drop(DropReason::Malformed),
                };
                Next::Conntrack(Origin::Tunnel { target })
            }
            SVC_REQUEST => Next::VirtsvcRequest(port),
            SVC_REPLY => Next::VirtsvcReply(port),
            ROUTE4 => Next::Route4(wide),
            ROUTE6 => Next::Route6,
            ENCAP_PF0 => Next::Encap(None),
            ENCAP_HASH => Next::Encap(Some(wide)),
            RELAY => Next::Relay,
            VF_TX => Next::VfTx(port),
            PF_TX => Next::PfTx(port),
            TX => Next::Done(Verdict::Tx(port)),
            DROP => {
                Next::drop(DropReason::ALL.get(usize::from(sub)).copied().unwrap_or(DropReason::Malformed))
            }
            // Never packed.
            _ => Next::drop(DropReason::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_survives_packing() {
        let mut all = vec![
            Next::Arp,
            Next::Nd,
            Next::Dhcp,
            Next::Dhcpv6,
            Next::Decap,
            Next::Conntrack(Origin::Vf),
            Next::VirtsvcRequest(0),
            Next::VirtsvcRequest(u16::MAX),
            Next::VirtsvcReply(7),
            Next::Route4(0),
            Next::Route4(u32::MAX),
            Next::Route6,
            Next::Encap(None),
            Next::Encap(Some(0)),
            Next::Encap(Some(0xdead_beef)),
            Next::Relay,
            Next::VfTx(3),
            Next::PfTx(u16::MAX),
            Next::Done(Verdict::Tx(0)),
            Next::Done(Verdict::Tx(u16::MAX)),
        ];
        for p in [0, 1, u16::MAX] {
            for target in [
                UnderlayTarget::Interface(p),
                UnderlayTarget::AliasPrefix(p),
                UnderlayTarget::LbPrefix(p),
                UnderlayTarget::Vip(p),
                UnderlayTarget::Nat { port: p, vni: 0xff_ffff },
                UnderlayTarget::Lb { vni: u32::from(p) << 8 },
            ] {
                all.push(Next::Conntrack(Origin::Tunnel { target }));
            }
        }
        all.extend(DropReason::ALL.iter().map(|&r| Next::drop(r)));
        let mut seen = std::collections::HashSet::new();
        for n in all {
            let p = PackedNext::from(n);
            assert_eq!(Next::from(p), n);
            assert!(seen.insert(p.0), "{n:?} packs like another");
        }
    }
}
