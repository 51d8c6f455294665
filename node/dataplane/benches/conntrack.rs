//! The conntrack table on one core: new-flow setup rate, lookups of established flows,
//! and memory per flow.
//!
//! - `setup/insert_1M`: insert 1,000,000 fresh TCP flows (both direction keys) into an
//!   empty table of the default capacity (2^20), as the graph does after a flow's first
//!   packet; `setup/miss_then_insert_1M` adds the lookup miss that precedes it.
//! - `lookup/established_*`: `track` (lookup, TCP state, expiry refresh) of established
//!   flows, half original and half reply direction, in a random order, with 65,536 and
//!   2^20 live flows; `_burst32` does the same through `track_burst` on bursts of 32.
//! - Memory per flow at 1M and 10M capacity, computed exactly from the layout, is
//!   printed first (a 16-byte action per direction).
//!
//! Run: `cargo bench -p dpfleet-dataplane --bench conntrack`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use dpfleet_dataplane::stages::conntrack::FlowAction;
use dpfleet_dataplane::tables::conntrack::{tcp, Config, Conntrack, FlowKey, PROTO_TCP};

/// A 16-byte stand-in action for the speed benchmarks.
#[derive(Clone, Copy, Debug, Default)]
struct Act([u32; 4]);

const SEED: u64 = 0x5eed_0fc0_ffee;
const S: u64 = 1_000_000_000;

/// The `i`-th flow: distinct VM addresses and ports, to one server.
fn key(i: u32) -> FlowKey {
    let [a, b, c, d] = i.to_be_bytes();
    let src = Ipv4Addr::new(10, a, b, c);
    let sport = 1024 + u16::from(d);
    FlowKey::v4(100, src, Ipv4Addr::new(192, 168, 1, 1), PROTO_TCP, sport, 443)
}

/// A cheap permutation of 0..n (n a power of two): an odd multiplier modulo n.
fn shuffled(n: u32) -> Vec<u32> {
    (0..n).map(|i| i.wrapping_mul(2_654_435_761) & (n - 1)).collect()
}

/// Memory per flow with the node's real cached action (`FlowAction`, both directions).
fn memory() {
    for cap in [1_000_000usize, 10_000_000] {
        let f = Conntrack::<FlowAction>::footprint(cap);
        println!(
            "conntrack memory at {cap} flows: entries {} MiB + index {} MiB = {:.1} bytes per flow",
            f.entry_bytes >> 20,
            f.index_bytes >> 20,
            f.per_flow()
        );
    }
}

fn setup(c: &mut Criterion) {
    memory();
    const N: u32 = 1_000_000;
    let keys: Vec<FlowKey> = (0..N).map(key).collect();
    let mut t = Conntrack::<Act>::new(&Config::new(SEED)).unwrap();
    let mut g = c.benchmark_group("setup");
    g.sample_size(10).throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("insert_1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                t.clear();
                let start = Instant::now();
                for k in &keys {
                    let r = t.insert(*k, k.reversed(), [Act::default(); 2], tcp::SYN, S, |_| {});
                    black_box(r.is_ok());
                }
                total += start.elapsed();
                assert_eq!(t.len(), keys.len());
            }
            total
        });
    });
    g.bench_function("miss_then_insert_1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                t.clear();
                let start = Instant::now();
                for k in &keys {
                    if t.track(k, tcp::SYN, S).is_none() {
                        let r = t.insert(*k, k.reversed(), [Act::default(); 2], tcp::SYN, S, |_| {});
                        black_box(r.is_ok());
                    }
                }
                total += start.elapsed();
                assert_eq!(t.len(), keys.len());
            }
            total
        });
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for (name, live) in [("established_65536", 1u32 << 16), ("established_1M", 1 << 20)] {
        let mut t = Conntrack::<Act>::new(&Config::new(SEED)).unwrap();
        for i in 0..live {
            let k = key(i);
            t.insert(k, k.reversed(), [Act([i, 0, 0, 0]); 2], tcp::SYN, 0, |_| {}).unwrap();
            t.track(&k.reversed(), tcp::SYN | tcp::ACK, 0).unwrap();
            t.track(&k, tcp::ACK, 0).unwrap();
        }
        // Probe keys in random order, alternating directions.
        let probes: Vec<FlowKey> =
            shuffled(live).into_iter().map(|i| if i & 1 == 0 { key(i) } else { key(i).reversed() }).collect();
        const BATCH: usize = 4096;
        g.throughput(Throughput::Elements(BATCH as u64));
        let mut at = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sum = 0u32;
                for k in &probes[at..at + BATCH] {
                    if let Some(h) = t.track(k, tcp::ACK, S) {
                        sum = sum.wrapping_add(h.action.0[0]);
                    }
                }
                at = (at + BATCH) % probes.len();
                black_box(sum)
            });
        });
        let flags = [tcp::ACK; 32];
        let mut out = [None; 32];
        g.bench_function(format!("{name}_burst32"), |b| {
            b.iter(|| {
                let mut sum = 0u32;
                for burst in probes[at..at + BATCH].chunks(32) {
                    t.track_burst(burst, &flags, S, &mut out);
                    for h in out.iter().flatten() {
                        sum = sum.wrapping_add(h.action.0[0]);
                    }
                }
                at = (at + BATCH) % probes.len();
                black_box(sum)
            });
        });
    }
    g.finish();
}

criterion_group!(benches, setup, lookup);
criterion_main!(benches);
