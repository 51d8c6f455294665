//! The packet worker: polls its queue of every port, runs the pipeline, transmits.
//!
//! One worker per EAL worker lcore, each owning queue `w` of every port (so no queue is
//! shared and nothing is locked). Per iteration a worker loads the current configuration
//! snapshot once (through an `arc_swap::Cache`: one atomic load and a compare while it
//! is unchanged), receives a burst from each port, gives the burst to its [`Pipeline`]
//! and moves every packet into the TX burst of its output port or frees it (dropped
//! packets in bulk); a burst whose packets all leave on one port (the pipeline says
//! which) with nothing queued there goes out as it is. TX bursts are flushed after each
//! round of polling. The worker counts packets per port; bytes are the driver's count.
//! Nothing here allocates after start-up.
//!
//! Idle back-off: after [`IDLE_SPINS`] empty rounds the worker sleeps, starting at
//! [`MIN_SLEEP`] and doubling up to [`MAX_SLEEP`], until traffic returns; `--busy-poll`
//! disables this.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dpfleet_dataplane::config::Snapshot;
use dpfleet_dataplane::graph::{DropReason, Pipeline, Verdict};
use dpfleet_dpdk::{Burst, RxQueue, TxQueue};

/// Packets received per port per poll.
pub const RX_BURST: usize = 32;
/// Capacity of a port's pending TX burst (a full one is flushed at once).
pub const TX_BURST: usize = 64;
/// Fewest flow-table entries checked for expiry per aging slice.
pub const AGE_SCAN_MIN: usize = 64;
/// Time between aging slices. (Aging every polling round instead scanned cold memory
/// for every 32-packet burst and divided throughput by ten.)
pub const AGE_INTERVAL_NS: u64 = 1_000_000;

/// Entries to check per aging slice so that the cursor goes round the whole table
/// within a quarter of the flow timeout. Expired flows are invisible to lookups at once,
/// but only aging gives their entries and NAT ports back: with a small NAT range, a new
/// flow may wait for exactly that. The entries of a large table are cold: measured on
/// the node (VF to VF, 2^20 entries), a scanned entry costs about 70 ns, a cache miss
/// each. A million-flow table with the default 30 s timeout needs 140 entries per
/// millisecond (about 1 % of a core); with `--flow-timeout=1`, 4,195. (A floor of 1,024
/// entries per slice, as before, swept such a table every second and took 9 % of the
/// worker's time.)
pub fn age_scan(capacity: usize, flow_timeout_s: u32) -> usize {
    let slices_per_sweep = (u64::from(flow_timeout_s.max(1)) * 1_000_000_000 / 4 / AGE_INTERVAL_NS).max(1);
    let per_slice = (capacity as u64).div_ceil(slices_per_sweep);
    usize::try_from(per_slice).unwrap_or(usize::MAX).max(AGE_SCAN_MIN)
}
/// Aging slices between two updates of the occupancy gauges (about 0.1 s).
pub const OCCUPANCY_EVERY: u64 = 100;
/// Empty polling rounds before the worker starts sleeping.
pub const IDLE_SPINS: u32 = 1024;
/// First sleep when idle.
pub const MIN_SLEEP: Duration = Duration::from_micros(10);
/// Longest sleep when idle; bounds the added latency of the first packet after a pause.
pub const MAX_SLEEP: Duration = Duration::from_micros(500);

/// Everything a worker owns.
pub struct Worker {
    /// Receive queues, one per port.
    pub rx: Vec<RxQueue>,
    /// Transmit queues, indexed by port id (`None` for ports the node does not use).
    pub tx: Vec<Option<TxQueue>>,
    /// The configuration, swapped by the control plane.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The pipeline with this worker's counters.
    pub pipeline: Pipeline,
    /// Set by the main thread to stop.
    pub stop: Arc<AtomicBool>,
    /// Never sleep when idle.
    pub busy_poll: bool,
    /// Flow-table entries per aging slice ([`age_scan`]).
    pub age_scan: usize,
    /// The TSC's frequency ([`dpfleet_dpdk::Eal::tsc_hz`]); 0 if unknown, and then the
    /// worker reads the system's monotonic clock.
    pub tsc_hz: u64,
}

/// The worker's monotonic clock: nanoseconds since it started. From the TSC of the
/// worker's own core (it is pinned) when its frequency is known, else from [`Instant`].
/// Read once per polling round that receives, the vDSO's `clock_gettime` took 2.1 % of
/// the worker's time at 36 Mpps, the TSC 1.6 %; a busy worker now reads it once per
/// [`CLOCK_ROUNDS`] rounds ([`BusyClock`]).
struct Clock {
    start: Instant,
    start_tsc: u64,
    /// Nanoseconds per TSC cycle, times 2^32; 0 without a TSC frequency.
    ns_per_cycle: u64,
}

impl Clock {
    fn new(tsc_hz: u64) -> Clock {
        Clock {
            start: Instant::now(),
            start_tsc: dpfleet_dpdk::tsc_cycles(),
            ns_per_cycle: ns_per_cycle(tsc_hz),
        }
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        if self.ns_per_cycle == 0 {
            #[allow(clippy::cast_possible_truncation)] // u64 nanoseconds last 584 years
            return self.start.elapsed().as_nanos() as u64;
        }
        cycles_to_ns(dpfleet_dpdk::tsc_cycles().wrapping_sub(self.start_tsc), self.ns_per_cycle)
    }
}

/// Receiving rounds in a row that may share one reading of the clock.
pub const CLOCK_ROUNDS: u32 = 8;

/// The time of a busy worker's rounds: [`Clock`] read once per [`CLOCK_ROUNDS`]
/// receiving rounds in a row, and afresh after a round that received nothing. Flows
/// expire in ticks of 125 ms, and eight rounds of 32 packets take some 10 µs at full
/// load: the time a round sees is never older than that. The TSC read was 1.7 % of the
/// worker's time at 34 Mpps when taken every round.
#[derive(Default)]
struct BusyClock {
    ns: u64,
    /// Rounds that may still use `ns`.
    left: u32,
}

impl BusyClock {
    /// The time for this round, from `read` if it is due.
    #[inline]
    fn now_ns(&mut self, read: impl FnOnce() -> u64) -> u64 {
        if self.left == 0 {
            self.ns = read();
            self.left = CLOCK_ROUNDS;
        }
        self.left -= 1;
        self.ns
    }

    /// The next round reads the clock.
    #[inline]
    fn expire(&mut self) {
        self.left = 0;
    }
}

/// Nanoseconds per cycle of a `hz` clock, times 2^32 (0 for an unknown frequency).
fn ns_per_cycle(hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    u64::try_from((1_000_000_000u128 << 32) / u128::from(hz)).unwrap_or(0)
}

/// `cycles` in nanoseconds, with [`ns_per_cycle`]'s factor.
#[inline]
fn cycles_to_ns(cycles: u64, ns_per_cycle: u64) -> u64 {
    #[allow(clippy::cast_possible_truncation)] // u64 nanoseconds last 584 years
    let ns = ((u128::from(cycles) * u128::from(ns_per_cycle)) >> 32) as u64;
    ns
}

impl Worker {
    /// Polls until `stop` is set.
    pub fn run(mut self) {
        let mut rx: Burst<RX_BURST> = Burst::new();
        // Holds the dropped packets of one rx burst (at most RX_BURST, so pushes succeed).
        let mut dropped: Burst<RX_BURST> = Burst::new();
        let mut verdicts = [Verdict::Drop(DropReason::Malformed); RX_BURST];
        let mut pending: Vec<Burst<TX_BURST>> = (0..self.tx.len()).map(|_| Burst::new()).collect();
        let clock = Clock::new(self.tsc_hz);
        let mut busy_clock = BusyClock::default();
        let mut idle_rounds = 0u32;
        let mut sleep = MIN_SLEEP;
        let mut next_age_ns = 0u64;
        let mut slices = 0u64;
        // Holds the snapshot between rounds, so that a round only checks it is current
        // (the thread-local bookkeeping of `ArcSwap::load` showed up in `perf`).
        let mut snapshots = arc_swap::Cache::new(Arc::clone(&self.snapshot));
        self.pipeline.publish_occupancy();
        while !self.stop.load(Ordering::Relaxed) {
            let snap = arc_swap::cache::Access::load(&mut snapshots);
            // At most one time per round, and only in rounds that receive something.
            let mut round_ns = None;
            let mut received = 0;
            for q in &mut self.rx {
                let n = q.rx_burst(&mut rx);
                if n == 0 {
                    continue;
                }
                received += n;
                let now_ns = *round_ns.get_or_insert_with(|| busy_clock.now_ns(|| clock.now_ns()));
                let port = q.port();
                let counters = &self.pipeline.counters;
                counters.port(port).rx_packets.add(n as u64);
                let single =
                    self.pipeline.process_burst(snap, port, now_ns, rx.as_mut_slice(), &mut verdicts[..n]);
                // The usual case: the whole burst leaves on one port with nothing queued
                // for it yet this round. Hand the rx burst to that port as it is instead
                // of moving each mbuf into the pending burst (the order is the same).
                if let Some(out) = single {
                    if let (Some(Some(txq)), Some(queued)) =
                        (self.tx.get_mut(usize::from(out)), pending.get(usize::from(out)))
                    {
                        if queued.is_empty() {
                            flush(txq, &mut rx, &self.pipeline);
                            continue;
                        }
                    }
                }
                for (m, v) in rx.drain().zip(verdicts[..n].iter()) {
                    let Verdict::Tx(out) = *v else {
                        // Dropped (counted by the pipeline): freed in bulk below.
                        let _ = dropped.push(m);
                        continue;
                    };
                    let (Some(Some(txq)), Some(burst)) =
                        (self.tx.get_mut(usize::from(out)), pending.get_mut(usize::from(out)))
                    else {
                        self.pipeline.counters.count_drop(DropReason::PortDown);
                        let _ = dropped.push(m);
                        continue;
                    };
                    if let Err(m) = burst.push(m) {
                        flush(txq, burst, &self.pipeline);
                        // The burst is empty after a flush, so this push succeeds.
                        let _ = burst.push(m);
                    }
                }
                // One rte_pktmbuf_free_bulk instead of a free per dropped packet.
                dropped.clear();
            }
            for (out, burst) in pending.iter_mut().enumerate() {
                if burst.is_empty() {
                    continue;
                }
                if let Some(Some(txq)) = self.tx.get_mut(out) {
                    flush(txq, burst, &self.pipeline);
                }
            }
            if received == 0 {
                busy_clock.expire();
            }
            let now_ns = round_ns.unwrap_or_else(|| clock.now_ns());
            if now_ns >= next_age_ns {
                self.pipeline.age(now_ns, self.age_scan);
                next_age_ns = now_ns + AGE_INTERVAL_NS;
                slices = slices.wrapping_add(1);
                if slices.is_multiple_of(OCCUPANCY_EVERY) {
                    self.pipeline.publish_occupancy();
                }
            }
            if received > 0 || self.busy_poll {
                idle_rounds = 0;
                sleep = MIN_SLEEP;
            } else if idle_rounds < IDLE_SPINS {
                idle_rounds += 1;
            } else {
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(MAX_SLEEP);
            }
        }
    }
}

/// Sends a burst (pending, or a whole rx burst); what the queue refuses is freed and
/// counted. The burst is empty afterwards.
fn flush<const N: usize>(txq: &mut TxQueue, burst: &mut Burst<N>, pipeline: &Pipeline) {
    let port = txq.port();
    let pc = pipeline.counters.port(port);
    let total = burst.len();
    let sent = txq.tx_burst(burst);
    pc.tx_packets.add(sent as u64);
    if sent == total {
        return;
    }
    let unsent = burst.len() as u64;
    pc.tx_errors.add(unsent);
    pipeline.counters.drops[DropReason::TxFull as usize].add(unsent);
    burst.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_worker_reads_the_clock_once_per_eight_rounds_and_after_an_idle_one() {
        let mut reads = 0u64;
        let mut c = BusyClock::default();
        let mut round = |c: &mut BusyClock| {
            c.now_ns(|| {
                reads += 1;
                reads * 1000
            })
        };
        let times: Vec<u64> = (0..17).map(|_| round(&mut c)).collect();
        assert_eq!(times[..8], [1000; 8]);
        assert_eq!(times[8..16], [2000; 8]);
        assert_eq!(times[16], 3000);
        c.expire();
        assert_eq!(round(&mut c), 4000);
        assert_eq!(round(&mut c), 4000);
    }

    #[test]
    fn tsc_cycles_become_nanoseconds() {
        let f = ns_per_cycle(2_500_000_000);
        assert_eq!(cycles_to_ns(2_500_000_000, f), 999_999_999);
        assert_eq!(cycles_to_ns(25, f), 9);
        // A day at 3 GHz, to within 100 µs (the factor's rounding: 2.3e-10).
        let ns = cycles_to_ns(86_400 * 3_000_000_000, ns_per_cycle(3_000_000_000));
        assert!(ns.abs_diff(86_400_000_000_000) < 100_000, "{ns}");
        assert_eq!(ns_per_cycle(0), 0);
    }

    #[test]
    fn aging_sweeps_the_table_within_a_quarter_of_the_timeout() {
        assert_eq!(age_scan(1 << 20, 30), 140);
        assert_eq!(age_scan(1 << 20, 1), 4195);
        assert_eq!(age_scan(4096, 1), AGE_SCAN_MIN);
        for (cap, timeout) in [(1 << 20, 1), (1 << 20, 30), (10 << 20, 2), (4096, 300)] {
            let slices = u64::from(timeout) * 1_000_000_000 / 4 / AGE_INTERVAL_NS;
            assert!(age_scan(cap, timeout) as u64 * slices >= cap as u64, "{cap} {timeout}");
        }
    }
}
