//! Wire formats: field offsets, checksums, header emitters.
//!
//! Parsing of received frames uses `etherparse`'s zero-copy slices; this module holds
//! what the stages need to write headers in place.

pub mod arp;
pub mod checksum;
pub mod cursor;
pub mod dhcp;
pub mod dhcpv6;
pub mod ethernet;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod udp;
