//! Per-worker counters.
//!
//! Each worker owns one [`Counters`]; only that worker writes it. A counter is an
//! `AtomicU64` written with a relaxed load and store (not a read-modify-write: there is
//! one writer), which costs the same as a plain increment on x86 and lets the metrics
//! thread read it at any time without locks. Readers sum the workers' values.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::graph::{DropReason, Stage};

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Sets a gauge. Only the owning worker may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Current value (any thread).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The most ports a node counts per port. Larger port ids are counted in the last slot.
pub const MAX_PORTS: usize = 64;

/// Packet and error counts of one port, seen by one worker. (Bytes are the driver's to
/// count: a sum over every packet's length cost the worker about 1 % of its time.)
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: Counter,
    /// Packets sent.
    pub tx_packets: Counter,
    /// Packets the port refused to send (TX queue full); they are freed.
    pub tx_errors: Counter,
}

/// Everything one worker counts.
#[derive(Debug)]
pub struct Counters {
    /// Per port, indexed by port id.
    pub ports: Vec<PortCounters>,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: Vec<Counter>,
    /// Packets that entered each stage, indexed by `Stage as usize`.
    pub stages: Vec<Counter>,
    /// Table occupancy, set by the worker from time to time (gauges, see
    /// `Pipeline::publish_occupancy`).
    pub occupancy: Occupancy,
}

/// How full one worker's tables are (gauges).
#[derive(Debug)]
pub struct Occupancy {
    /// Flows in the flow table (including expired ones not reclaimed yet).
    pub flows: Counter,
    /// Most flows the table holds.
    pub flow_capacity: Counter,
    /// Live NAT port mappings, all NATs.
    pub nat_mappings: Counter,
    /// Most NAT port mappings the worker holds.
    pub nat_capacity: Counter,
    /// Live NAT port mappings per port (the NAT of the interface on that port), indexed
    /// by port id like [`Counters::ports`].
    pub nat_by_port: Vec<Counter>,
}

impl Default for Occupancy {
    fn default() -> Self {
        Occupancy {
            flows: Counter::default(),
            flow_capacity: Counter::default(),
            nat_mappings: Counter::default(),
            nat_capacity: Counter::default(),
            nat_by_port: (0..MAX_PORTS).map(|_| Counter::default()).collect(),
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
            drops: (0..DropReason::ALL.len()).map(|_| Counter::default()).collect(),
            stages: (0..Stage::ALL.len()).map(|_| Counter::default()).collect(),
            occupancy: Occupancy::default(),
        }
    }
}

impl Counters {
    /// The counters of a port (the last slot for ids beyond [`MAX_PORTS`]).
    #[inline]
    pub fn port(&self, id: u16) -> &PortCounters {
        &self.ports[usize::from(id).min(MAX_PORTS - 1)]
    }
    /// Counts a drop.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }
    /// Counts `n` packets entering a stage (the runner counts once per stage and chunk).
    #[inline]
    pub fn stage_add(&self, stage: Stage, n: usize) {
        if n > 0 {
            self.stages[stage as usize].add(n as u64);
        }
    }
}
