//! Wire formats: field offsets, checksums, header emitters.
//!
//! Parsing of received frames uses `etherparse`'s zero-copy slices; this module holds
//! what the stages need to write headers in place.

pub mod checksum;
