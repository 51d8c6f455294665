//! The dpfleet-node packet pipeline, sans I/O.
//!
//! A packet is a byte buffer behind [`buf::PacketBuf`] (a DPDK mbuf in the daemon, a
//! [`buf::TestBuf`] in tests) plus the port it arrived on. [`graph::Pipeline::process_burst`]
//! runs a burst through the stages and gives each packet a [`graph::Verdict`]: transmit on
//! a port, or drop with a [`graph::DropReason`]. The pipeline reads configuration only
//! from an immutable [`config::Snapshot`] that the control plane publishes; it never
//! allocates, locks or makes a syscall per packet, and it knows no clock but the `now`
//! its caller passes in.
//!
//! Invariants:
//! - A worker owns its `Pipeline` (and its counters); nothing else touches them while
//!   the worker runs. Counters are read by summing snapshots taken by the worker.
//! - A buffer handed to the pipeline is edited in place (replies are built in the
//!   request's buffer, encapsulation prepends into headroom) and its verdict says where
//!   it goes; the caller owns the buffer before and after.
#![forbid(unsafe_code)]

pub mod buf;
pub mod config;
pub mod counters;
pub mod graph;
pub mod stages;
pub mod tables;
pub mod wire;
