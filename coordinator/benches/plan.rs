//! Planning at fleet scale: a synthetic fleet (`reconcile::bench::synthetic_fleet`), by
//! default 1,000 nodes and 100,000 interfaces (VNIs of 100 interfaces, each interface
//! with a NAT block), so every node holds about 100 interfaces, 10,000 routes and a
//! neighbor-NAT entry for each of the ~100,000 NAT blocks owned elsewhere.
//!
//! Criterion measures indexing the fleet and planning one node (`desired`, then `diff`
//! against an empty node and against a converged one). Building the fleet and planning
//! every node from empty (as after a restart of the whole fleet) take seconds at this
//! size, so they are timed once per run (three times for the latter) and printed before
//! criterion's output.
//!
//! `DPFLEET_BENCH_NODES` / `DPFLEET_BENCH_INTERFACES` choose the size.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use dpfleet_coordinator::reconcile::bench::{holding, plan_all, synthetic_fleet};
use dpfleet_coordinator::reconcile::plan::{diff, FleetIndex, NodeActual};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn planning(c: &mut Criterion) {
    let nodes = env("DPFLEET_BENCH_NODES", 1_000);
    let interfaces = env("DPFLEET_BENCH_INTERFACES", 100_000);
    let t = Instant::now();
    let state = synthetic_fleet(nodes, interfaces);
    println!("plan/{nodes}n/{interfaces}i: building the fleet state: {:.2} s", t.elapsed().as_secs_f64());
    for run in 1..=3 {
        let t = Instant::now();
        let (objects, actions) = plan_all(&state);
        println!(
            "plan/{nodes}n/{interfaces}i: all nodes from empty, run {run}: {:.2} s ({objects} objects, {actions} actions)",
            t.elapsed().as_secs_f64()
        );
    }
    let index = FleetIndex::new(&state);
    let desired = index.desired("node0").expect("node0");
    let converged = holding(&desired);
    assert!(diff(&converged, &desired).is_empty(), "holding() is converged");
    println!(
        "plan/{nodes}n/{interfaces}i: node0 holds {} interfaces, {} routes, {} neighbor NATs",
        desired.interfaces.len(),
        desired.routes.len(),
        desired.neighbor_nats.len()
    );
    let empty = NodeActual::default();
    let mut g = c.benchmark_group(format!("plan/{nodes}n/{interfaces}i"));
    g.sample_size(10);
    g.bench_function("index", |b| b.iter(|| FleetIndex::new(&state)));
    g.bench_function("desired_one_node", |b| b.iter(|| index.desired("node0")));
    g.bench_function("diff_one_node_from_empty", |b| b.iter(|| diff(&empty, &desired)));
    g.bench_function("diff_one_node_converged", |b| b.iter(|| diff(&converged, &desired)));
    g.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
