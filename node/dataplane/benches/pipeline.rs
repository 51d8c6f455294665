//! Throughput of `Pipeline::process_burst` on bursts of 32 64-byte frames, on the
//! reference lab of `graph::testkit`: VM to VM on the same node, and VM to a remote
//! node (IPv4-in-IPv6 encapsulation). Each iteration restores the frames first
//! (a `memcpy` of 32 × 64 bytes, included in the numbers).
//!
//! `new_flows`: the whole pipeline's flow-setup rate on one core: every packet starts a
//! new flow (VM to a remote node through conntrack, a default-size 2^20 flow table).
//! Only `process_burst` is timed; between rounds of 2^19 flows the clock jumps past the
//! flow timeout and an untimed full aging pass empties the table again.
//!
//! `snat_65536_flows`: established flows through a NAT gateway with as many live flows
//! as the node benchmark's SNAT path (vm1 to 256 internet hosts × 256 source ports, a
//! default-size 2^20 flow table): each burst is the next 32 of the 65,536 frames, so the
//! flow table is used like a large one, not from the cache.
//!
//! The `_graph` cases are the same with the established-flow fast path off
//! (`PipelineConfig::fast_path`): every packet takes the whole graph.
//!
//! Run: `cargo bench -p dpfleet-dataplane --bench pipeline`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use dpfleet_dataplane::buf::{PacketBuf, TestBuf};
use dpfleet_dataplane::graph::testkit::{lab, ports, snat_lab, vm1_udp_frame as frame, vm_mac, PF0_MAC};
use dpfleet_dataplane::graph::{DropReason, Pipeline, PipelineConfig, Verdict};
use dpfleet_dataplane::wire::checksum;

const BURST: usize = 32;

fn bench(c: &mut Criterion) {
    let snap = lab();
    let mut g = c.benchmark_group("process_burst_32x64B");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, dst_mac, dst, want, fast) in [
        ("vf_to_vf", vm_mac(1), [10, 100, 1, 2], ports::VM2, true),
        ("vf_to_pf_encap", PF0_MAC, [10, 100, 2, 102], ports::PF0, true),
        ("vf_to_vf_graph", vm_mac(1), [10, 100, 1, 2], ports::VM2, false),
        ("vf_to_pf_encap_graph", PF0_MAC, [10, 100, 2, 102], ports::PF0, false),
    ] {
        let frames: Vec<Vec<u8>> = (0..BURST).map(|i| frame(dst_mac, dst, 1000 + i as u16)).collect();
        let mut bufs: Vec<TestBuf> = frames.iter().map(|f| TestBuf::new(f)).collect();
        let mut verdicts = vec![Verdict::Drop(DropReason::TxFull); BURST];
        let mut cfg = PipelineConfig::small();
        cfg.fast_path = fast;
        let mut p = Pipeline::with_config(Arc::default(), &cfg).expect("pipeline");
        p.process_burst(&snap, ports::VM1, 0, &mut bufs, &mut verdicts);
        assert!(verdicts.iter().all(|v| *v == Verdict::Tx(want)), "{name}: {verdicts:?}");
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || (),
                |()| {
                    for (b, f) in bufs.iter_mut().zip(&frames) {
                        b.reset(f);
                    }
                    p.process_burst(&snap, ports::VM1, 0, &mut bufs, &mut verdicts);
                },
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

/// Distinct flows per round: (destination host, source port) pairs.
const ROUND: u32 = 1 << 19;

fn new_flows(c: &mut Criterion) {
    let snap = lab();
    let cfg = PipelineConfig::new(1 << 20, 30, 0, 1, 0x5eed);
    let mut p = Pipeline::with_config(Arc::default(), &cfg).expect("pipeline");
    let mut g = c.benchmark_group("new_flows_32x64B");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut verdicts = vec![Verdict::Drop(DropReason::TxFull); BURST];
    let template = frame(PF0_MAC, [10, 100, 2, 102], 1000);
    let mut bufs: Vec<TestBuf> = (0..BURST).map(|_| TestBuf::new(&template)).collect();
    let (mut next, mut now_ns) = (0u32, 0u64);
    g.bench_function("vf_to_pf_encap", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if next + BURST as u32 > ROUND {
                    now_ns += 60_000_000_000;
                    while p.age(now_ns, 1 << 20) > 0 {}
                    next = 0;
                }
                for b in &mut bufs {
                    // Destination 10.100.2.x (x = 102..109 all route to the remote node)
                    // and a source port: a new 5-tuple per packet.
                    let (host, sport) = (102 + (next >> 16) as u8, 1 + (next & 0xffff) as u16);
                    let f = b.data_mut();
                    f[14 + 19] = host;
                    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
                    let ck = checksum::checksum(&f[14..14 + 20]);
                    f[14 + 10..14 + 12].copy_from_slice(&ck.to_be_bytes());
                    f[34..36].copy_from_slice(&sport.to_be_bytes());
                    next += 1;
                }
                let t = Instant::now();
                p.process_burst(&snap, ports::VM1, now_ns, &mut bufs, &mut verdicts);
                spent += t.elapsed();
                assert!(verdicts.iter().all(|v| *v == Verdict::Tx(ports::PF0)), "{verdicts:?}");
                for b in &mut bufs {
                    b.reset(&template);
                }
            }
            spent
        });
    });
    g.finish();
}

/// Live flows of `snat_65536_flows`.
const SNAT_FLOWS: usize = 1 << 16;

fn snat(c: &mut Criterion) {
    snat_case(c, "snat_65536_flows", true);
    snat_case(c, "snat_65536_flows_graph", false);
}

fn snat_case(c: &mut Criterion, name: &str, fast: bool) {
    let snap = snat_lab();
    let mut cfg = PipelineConfig::new(1 << 20, 30, 0, 1, 0x5eed);
    cfg.fast_path = fast;
    let mut p = Pipeline::with_config(Arc::default(), &cfg).expect("pipeline");
    // 45.86.6.x (x = i % 256, through the default route) from source port 1024 + i / 256.
    let frames: Vec<Vec<u8>> = (0..SNAT_FLOWS)
        .map(|i| frame(PF0_MAC, [45, 86, 6, (i % 256) as u8], 1024 + (i / 256) as u16))
        .collect();
    let mut bufs: Vec<TestBuf> = (0..BURST).map(|_| TestBuf::new(&frames[0])).collect();
    let mut verdicts = vec![Verdict::Drop(DropReason::TxFull); BURST];
    // Create every flow once.
    for chunk in frames.chunks(BURST) {
        for (b, f) in bufs.iter_mut().zip(chunk) {
            b.reset(f);
        }
        p.process_burst(&snap, ports::VM1, 0, &mut bufs, &mut verdicts);
        assert!(verdicts.iter().all(|v| *v == Verdict::Tx(ports::PF0)), "{verdicts:?}");
    }
    assert_eq!(p.flows().len(), SNAT_FLOWS);
    let mut g = c.benchmark_group("process_burst_32x64B");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut next = 0;
    g.bench_function(name, |b| {
        b.iter_batched_ref(
            || (),
            |()| {
                for (b, f) in bufs.iter_mut().zip(&frames[next..next + BURST]) {
                    b.reset(f);
                }
                next = (next + BURST) % SNAT_FLOWS;
                p.process_burst(&snap, ports::VM1, 0, &mut bufs, &mut verdicts);
            },
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, bench, snat, new_flows);
criterion_main!(benches);
