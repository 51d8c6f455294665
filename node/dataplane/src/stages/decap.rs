//! IP-in-IPv6 decapsulation of tunnel traffic received on a PF.
//!
//! As in dpservice: the outer destination must be one of the node's underlay addresses
//! (an interface's, an alias or load-balancer prefix's, a VIP's or a NAT's; else the
//! packet is dropped); connection tracking then delivers it to that interface's VF
//! without a route lookup (or translates or relays it), and the inner packet keeps its
//! TTL. Since an underlay
//! address belongs to exactly one interface, and so to one VNI, identical overlay
//! addresses in different VNIs never mix. The inner packet is validated like a VM's
//! (lengths, IPv4 checksum, L4 protocol) and outer padding is removed.
//!
//! A PF without a configured router MAC learns it here from the source of tunnel
//! traffic that reached one of the node's underlay addresses.

use std::net::Ipv6Addr;

use crate::buf::PacketBuf;
use crate::config::{Mac, UnderlayTarget};
use crate::graph::{Ctx, DropReason, NeighTable, Next, Underlay};
use crate::wire::ethernet::{self, Frame};
use crate::wire::ipv6;

use super::classify::{inspect_ipv4, inspect_ipv6, L4Info};
use super::conntrack::Origin;

/// What [`check`] finds in a valid tunnel frame for one of the node's addresses.
#[derive(Clone, Copy, Debug)]
pub struct Tunnel {
    /// What the outer destination stands for.
    pub target: UnderlayTarget,
    /// The inner packet, checked; `inner.ip_len` is its length without padding.
    pub inner: L4Info,
    /// The inner packet is IPv4 (else IPv6).
    pub inner_v4: bool,
    /// The outer source: where the node's answers and relays go back to.
    pub outer_src: Ipv6Addr,
}

/// The checks of [`process`], changing nothing: the frame, the outer IPv6 header, the
/// underlay address and the inner packet.
#[inline]
pub fn check<B: PacketBuf>(ctx: &Ctx<'_>, buf: &B) -> Result<Tunnel, DropReason> {
    check_inner(&check_outer(ctx, buf)?)
}

/// What the first half of [`check`] finds: the outer headers are valid and for one of
/// the node's addresses.
#[derive(Clone, Copy, Debug)]
pub struct Outer<'a> {
    /// What the outer destination stands for.
    pub target: UnderlayTarget,
    /// [`super::express::target_code`] of `target`, computed with the memo.
    pub target_code: u64,
    /// The outer IPv6 header.
    pub header: &'a [u8; ipv6::HEADER_LEN],
    /// The outer next header.
    pub next_header: u8,
    /// The inner packet, up to the outer payload length (padding excluded).
    pub payload: &'a [u8],
}

impl Outer<'_> {
    /// The outer source (read when asked for: the express lane never asks).
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.header[8..24]);
        Ipv6Addr::from(a)
    }
}

/// The first half of [`check`]: the frame, the outer IPv6 header and the underlay
/// address.
#[inline]
pub fn check_outer<'a, B: PacketBuf>(ctx: &Ctx<'_>, buf: &'a B) -> Result<Outer<'a>, DropReason> {
    check_outer_with(ctx, buf, &mut None)
}

/// The last underlay address [`check_outer_with`] looked up in a burst and what it
/// found: tunnel traffic to a node comes for a few of its addresses, mostly in runs.
pub type TargetMemo = Option<(Ipv6Addr, Option<UnderlayTarget>, u64)>;

/// [`check_outer`] for the packets of one burst (one snapshot), remembering the last
/// underlay address looked up in `memo`.
#[inline(always)]
pub fn check_outer_with<'a, B: PacketBuf>(
    ctx: &Ctx<'_>,
    buf: &'a B,
    memo: &mut TargetMemo,
) -> Result<Outer<'a>, DropReason> {
    let frame = Frame::new_checked(buf.data()).ok_or(DropReason::Malformed)?;
    let outer = ipv6::Packet::new_checked(frame.payload()).ok_or(DropReason::Malformed)?;
    let dst = outer.dst();
    let (found, target_code) = match *memo {
        Some((a, t, code)) if a == dst => (t, code),
        _ => {
            let t = ctx.snap.underlay_targets.get(&dst).copied();
            let code = super::express::target_code(t);
            *memo = Some((dst, t, code));
            (t, code)
        }
    };
    let target = found.ok_or(DropReason::UnknownUnderlay)?;
    let next_header = outer.next_header();
    let at = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let data = buf.data();
    let payload = data.get(at..at + outer.payload_len()).ok_or(DropReason::Malformed)?;
    let header =
        data.get(ethernet::HEADER_LEN..).and_then(|h| h.first_chunk()).ok_or(DropReason::Malformed)?;
    Ok(Outer { target, target_code, header, next_header, payload })
}

/// The second half of [`check`]: the inner packet.
#[inline]
pub fn check_inner(o: &Outer<'_>) -> Result<Tunnel, DropReason> {
    let (inner, inner_v4) = match o.next_header {
        ipv6::NH_IPV4 => (inspect_ipv4(o.payload)?, true),
        ipv6::NH_IPV6 => (inspect_ipv6(o.payload)?, false),
        _ => return Err(DropReason::BadInnerProtocol),
    };
    Ok(Tunnel { target: o.target, inner, inner_v4, outer_src: o.src() })
}

/// Learns the router's MAC from a frame [`check`] accepted, on a PF without a
/// configured one.
#[inline]
pub fn learn<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, buf: &B) {
    if let Some(mac) = learnable(ctx, buf) {
        neigh.learn(ctx.in_port, mac);
    }
}

/// [`learn`] for a run of frames [`check`] accepted, in order: the neighbour table keeps
/// one MAC per port, so only the last frame it would learn from counts.
#[inline]
pub fn learn_last<B: PacketBuf>(ctx: &Ctx<'_>, neigh: &NeighTable, frames: &[B]) {
    // A PF with a configured router MAC learns from no frame: no need to look at each.
    if ctx.port.is_none_or(|pf| pf.neigh_mac.is_some()) {
        return;
    }
    if let Some(mac) = frames.iter().rev().find_map(|b| learnable(ctx, b)) {
        neigh.learn(ctx.in_port, mac);
    }
}

/// The MAC [`learn`] would learn from a frame.
#[inline]
fn learnable<B: PacketBuf>(ctx: &Ctx<'_>, buf: &B) -> Option<Mac> {
    let (pf, frame) = (ctx.port?, Frame::new_checked(buf.data())?);
    let src = frame.src();
    (pf.neigh_mac.is_none() && ethernet::is_unicast(&src) && src != pf.mac).then_some(src)
}

/// Strips the outer headers of a frame [`check`] accepted as `t`, leaving room for the
/// VF's Ethernet header in front of the inner packet. The outer source goes to
/// `underlay`.
#[inline]
pub fn strip<B: PacketBuf>(t: &Tunnel, buf: &mut B, underlay: &mut Underlay) -> Next {
    if !remove_outer(buf, t.inner.ip_len) {
        return Next::drop(DropReason::Malformed);
    }
    *underlay = t.outer_src;
    Next::Conntrack(Origin::Tunnel { target: t.target })
}

/// The buffer work of [`strip`] for an inner packet of `inner_len` bytes: padding cut,
/// the outer IPv6 header removed. False if the buffer cannot give it up.
#[inline]
pub(crate) fn remove_outer<B: PacketBuf>(buf: &mut B, inner_len: usize) -> bool {
    buf.truncate(ethernet::HEADER_LEN + ipv6::HEADER_LEN + inner_len);
    buf.adj(ipv6::HEADER_LEN)
}

/// Checks, learns (when `learn`: see [`crate::graph`] for when the runner has learned
/// for the whole chunk already) and strips.
pub fn process<B: PacketBuf>(
    ctx: &Ctx<'_>,
    neigh: &NeighTable,
    buf: &mut B,
    underlay: &mut Underlay,
    learn_mac: bool,
) -> Next {
    let t = match check(ctx, buf) {
        Ok(t) => t,
        Err(r) => return Next::drop(r),
    };
    if learn_mac {
        learn(ctx, neigh, buf);
    }
    strip(&t, buf, underlay)
}
