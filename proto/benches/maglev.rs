//! Maglev table build (the target: 1,000 targets, table size 65,537, at most
//! 1.8 ms) and flow hash cost.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use dpfleet_proto::flowhash::FlowKey;
use dpfleet_proto::maglev::{MaglevInput, MaglevTable, Target};

fn targets(n: u32, weight: impl Fn(u32) -> u32) -> Vec<Target> {
    (0..n)
        .map(|i| Target {
            addr: Ipv6Addr::from(0xfd00_0000_0000_0000_0000_0000_0000_0000u128 | u128::from(i)),
            weight: weight(i),
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let equal = MaglevInput { targets: targets(1_000, |_| 1), table_size: 65_537, seed: 42 };
    c.bench_function("maglev_build_1000_targets_65537", |b| {
        b.iter(|| MaglevTable::build(black_box(&equal)).unwrap())
    });
    let weighted = MaglevInput { targets: targets(1_000, |i| 1 + i % 4), ..equal.clone() };
    c.bench_function("maglev_build_1000_weighted_targets_65537", |b| {
        b.iter(|| MaglevTable::build(black_box(&weighted)).unwrap())
    });
    let big = MaglevInput::with_default_size(targets(1_000, |_| 1), 42).unwrap();
    c.bench_function("maglev_build_1000_targets_100003", |b| {
        b.iter(|| MaglevTable::build(black_box(&big)).unwrap())
    });
}

fn lookup(c: &mut Criterion) {
    let table =
        MaglevTable::build(&MaglevInput { targets: targets(1_000, |_| 1), table_size: 65_537, seed: 42 })
            .unwrap();
    let key = FlowKey {
        vni: 100,
        src: IpAddr::V4(Ipv4Addr::new(172, 32, 10, 5)),
        dst: IpAddr::V4(Ipv4Addr::new(10, 20, 30, 40)),
        proto: 6,
        src_port: 1234,
        dst_port: 80,
    };
    c.bench_function("flow_hash_v4", |b| b.iter(|| black_box(&key).flow_hash()));
    c.bench_function("flow_hash_and_lookup", |b| b.iter(|| table.lookup(black_box(&key).flow_hash())));
}

criterion_group!(benches, build, lookup);
criterion_main!(benches);
