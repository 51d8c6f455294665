//! Lookups in the per-VNI route tables (`tables::lpm`): a small table like a VNI with
//! two VMs and one remote prefix, and a large one with 10,000 routes of mixed lengths.
//! Each iteration looks up 1,024 addresses (hits and misses, spread over the table).
//!
//! Run: `cargo bench -p dpfleet-dataplane --bench lpm`.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use dpfleet_dataplane::tables::lpm::{Lpm4, Lpm6};

const LOOKUPS: usize = 1024;

/// A deterministic stream of pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// 10,000 IPv4 routes in 10.0.0.0/8: /16 to /32, nested and disjoint, plus a default.
fn large4(rng: &mut Rng) -> (Lpm4<u32>, Vec<Ipv4Addr>) {
    let mut t = Lpm4::default();
    t.insert(Ipv4Addr::UNSPECIFIED, 0, 0);
    let mut nets = Vec::new();
    let mut i = 1;
    while i < 10_000 {
        let r = rng.next();
        let len = [16, 20, 24, 24, 28, 32, 32, 32][(r % 8) as usize];
        let addr = Ipv4Addr::from(0x0a00_0000 | ((r >> 8) as u32 & 0x00ff_ffff));
        if t.insert(addr, len, i).is_none() {
            nets.push(u32::from(addr));
            i += 1;
        }
    }
    let addrs = (0..LOOKUPS)
        .map(|k| {
            let r = rng.next();
            // Half inside some route's network, half anywhere in 10/8.
            let base = if k % 2 == 0 { nets[(r % nets.len() as u64) as usize] } else { 0x0a00_0000 };
            Ipv4Addr::from(base | ((r >> 32) as u32 & 0x00ff_ffff & if k % 2 == 0 { 0xff } else { !0 }))
        })
        .collect();
    (t, addrs)
}

/// 10,000 IPv6 routes in 2001:db8::/32: /48 to /128.
fn large6(rng: &mut Rng) -> (Lpm6<u32>, Vec<Ipv6Addr>) {
    let mut t = Lpm6::default();
    let mut nets = Vec::new();
    let mut i = 1;
    while i <= 10_000 {
        let r = (u128::from(rng.next()) << 64) | u128::from(rng.next());
        let len = [48, 56, 64, 64, 96, 104, 128, 128][(r % 8) as usize];
        let addr = (0x2001_0db8u128 << 96) | (r >> 32);
        if t.insert(Ipv6Addr::from(addr), len, i).is_none() {
            nets.push(addr);
            i += 1;
        }
    }
    let addrs = (0..LOOKUPS)
        .map(|k| {
            let r = u128::from(rng.next());
            if k % 2 == 0 {
                Ipv6Addr::from(nets[(r % nets.len() as u128) as usize] | (r & 0xff))
            } else {
                Ipv6Addr::from((0x2001_0db8u128 << 96) | (r << 40) | r)
            }
        })
        .collect();
    (t, addrs)
}

fn bench(c: &mut Criterion) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut g = c.benchmark_group("lpm_lookup");
    g.throughput(Throughput::Elements(LOOKUPS as u64));

    // The node benchmark's VNI: two VMs (/32) and one remote /16.
    let mut small4 = Lpm4::default();
    small4.insert(Ipv4Addr::new(10, 100, 1, 1), 32, 1u32);
    small4.insert(Ipv4Addr::new(10, 100, 1, 2), 32, 2);
    small4.insert(Ipv4Addr::new(10, 200, 0, 0), 16, 3);
    let addrs4: Vec<Ipv4Addr> = (0..LOOKUPS as u32)
        .map(|k| match k % 4 {
            0 => Ipv4Addr::new(10, 100, 1, 2),
            1 => Ipv4Addr::from(0x0ac8_0000 | (k * 7919) & 0xffff),
            2 => Ipv4Addr::new(10, 100, 1, 1),
            _ => Ipv4Addr::from(k.wrapping_mul(0x9e37_79b9)),
        })
        .collect();
    g.bench_function("v4_3_routes", |b| {
        b.iter(|| addrs4.iter().filter_map(|&a| small4.lookup(black_box(a))).sum::<u32>())
    });

    let (large4, addrs) = large4(&mut rng);
    g.bench_function("v4_10k_routes", |b| {
        b.iter(|| addrs.iter().filter_map(|&a| large4.lookup(black_box(a))).sum::<u32>())
    });

    let mut small6 = Lpm6::default();
    small6.insert("2001:db8:100::1".parse().unwrap(), 128, 1u32);
    small6.insert("2001:db8:100::2".parse().unwrap(), 128, 2);
    small6.insert("2001:db8:200::".parse().unwrap(), 48, 3);
    let addrs6: Vec<Ipv6Addr> = (0..LOOKUPS as u128)
        .map(|k| match k % 4 {
            0 => "2001:db8:100::2".parse().unwrap(),
            1 => Ipv6Addr::from((0x2001_0db8_0200u128 << 80) | (k * 7919)),
            2 => "2001:db8:100::1".parse().unwrap(),
            _ => Ipv6Addr::from(k.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        })
        .collect();
    g.bench_function("v6_3_routes", |b| {
        b.iter(|| addrs6.iter().filter_map(|&a| small6.lookup(black_box(a))).sum::<u32>())
    });

    let (large6, addrs) = large6(&mut rng);
    g.bench_function("v6_10k_routes", |b| {
        b.iter(|| addrs.iter().filter_map(|&a| large6.lookup(black_box(a))).sum::<u32>())
    });
    g.finish();

    // Building a 10,000-route table the way the control plane does (one insert per
    // route, in address order).
    let mut routes: Vec<(Ipv4Addr, u8, u32)> = large4.iter().map(|(a, l, v)| (a, l, *v)).collect();
    routes.sort_unstable_by_key(|&(a, l, _)| (a, l));
    c.bench_function("lpm_build_v4_10k_routes", |b| {
        b.iter(|| {
            let mut t = Lpm4::default();
            for &(a, l, v) in &routes {
                t.insert(a, l, v);
            }
            t
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
