//! Planning throughput: every node of a synthetic fleet planned from scratch.
//!
//! `DPFLEET_BENCH_NODES` / `DPFLEET_BENCH_INTERFACES` choose the size (default 100 nodes,
//! 10,000 interfaces; the target is 1,000 and 100,000, whose state takes a while to build).

use criterion::{criterion_group, criterion_main, Criterion};
use dpfleet_coordinator::reconcile::bench::{plan_all, synthetic_fleet};
use dpfleet_coordinator::reconcile::plan::FleetIndex;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn planning(c: &mut Criterion) {
    let nodes = env("DPFLEET_BENCH_NODES", 100);
    let interfaces = env("DPFLEET_BENCH_INTERFACES", 10_000);
    let state = synthetic_fleet(nodes, interfaces);
    let mut g = c.benchmark_group(format!("plan/{nodes}n/{interfaces}i"));
    g.sample_size(10);
    g.bench_function("index", |b| {
        b.iter(|| FleetIndex::new(&state).desired("node0").map(|d| d.routes.len()))
    });
    g.bench_function("all_nodes_from_empty", |b| b.iter(|| plan_all(&state)));
    g.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
