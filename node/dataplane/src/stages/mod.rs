//! The stages of the graph, one per file.

pub mod arp;
pub mod classify;
pub mod conntrack;
pub mod decap;
pub mod dhcp;
pub mod dhcpv6;
pub mod encap;
pub mod express;
pub mod fast;
pub mod lb;
pub mod nat64;
pub mod nd;
pub mod pf_tx;
pub mod route4;
pub mod route6;
pub mod vf_tx;
pub mod virtsvc;

use crate::config::RouteTarget;
use crate::graph::{Next, Underlay};

/// Where a route sends a packet: a local VF, or the underlay address of the route,
/// written to the packet's `underlay` slot (`hash` picks the PF, see [`Next::Encap`]).
/// The target by reference, as the routing table holds it: a copy on the stack, read
/// back at once for the address, waited on store-to-load forwarding.
fn route_next(target: &RouteTarget, hash: Option<u32>, underlay: &mut Underlay) -> Next {
    match *target {
        RouteTarget::Local { port } => Next::VfTx(port),
        RouteTarget::Remote { underlay: u, .. } => {
            *underlay = u;
            Next::Encap(hash)
        }
    }
}
