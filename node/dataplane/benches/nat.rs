//! NAT port mapping rates on one core with 65,536 live mappings.
//!
//! The table holds 16 interfaces (8 per NAT IP, 4,096 ports each), every port carrying
//! one live flow, the flows spread over 256 remote servers. Measured:
//! - `alloc_release`: steady-state churn, the oldest flow released and a new one
//!   allocated (one release + one allocation per element);
//! - `lookup`: reverse lookup of return traffic, all live mappings in a shuffled order.
//!
//! Run: `cargo bench -p dpfleet-dataplane --bench nat`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use dpfleet_dataplane::tables::nat::{
    LocalNat, MappingsConfig, NatKey, NatMappings, NatProto, Original, PortRange,
};

const SLOTS: usize = 16;
const PORTS: u16 = 4096;
const LIVE: usize = SLOTS * PORTS as usize;

fn remote(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0808_0000 | (n % 256))
}

fn setup() -> (NatMappings, VecDeque<(usize, NatKey)>) {
    let mut t = NatMappings::new(MappingsConfig {
        capacity: LIVE,
        slots: SLOTS,
        worker: 0,
        workers: 1,
        seed: 0x5eed,
    })
    .unwrap();
    for s in 0..SLOTS {
        let ip = Ipv4Addr::new(172, 21, 1, 1 + u8::try_from(s / 8).unwrap());
        let min = 1024 + u16::try_from(s % 8).unwrap() * PORTS;
        let range = PortRange::new(min, min + PORTS).unwrap();
        t.set_slot(s, Some(&LocalNat { nat_ip: ip, range, vni: 100 }));
    }
    let mut live = VecDeque::with_capacity(LIVE);
    let mut n = 0u32;
    for s in 0..SLOTS {
        for _ in 0..PORTS {
            live.push_back(alloc(&mut t, s, n));
            n += 1;
        }
    }
    assert_eq!(t.len(), LIVE);
    (t, live)
}

fn alloc(t: &mut NatMappings, slot: usize, n: u32) -> (usize, NatKey) {
    #[allow(clippy::cast_possible_truncation)] // any 16 bits do as a source port
    let o = Original { vni: 100, src_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), src_port: n as u16 };
    let rip = remote(n);
    let port = t.allocate(slot, o, NatProto::Tcp, rip, 443).unwrap();
    let nat_ip = t.slot(slot).unwrap().nat_ip;
    (slot, NatKey { nat_ip, nat_port: port, proto: NatProto::Tcp, remote_ip: rip, remote_port: 443 })
}

fn bench(c: &mut Criterion) {
    let (mut t, mut live) = setup();
    let mut g = c.benchmark_group("nat_65536_live");

    g.throughput(Throughput::Elements(1));
    let mut n = 0u32;
    g.bench_function("alloc_release", |b| {
        b.iter(|| {
            let (slot, k) = live.pop_front().unwrap();
            black_box(t.release(&k));
            n = n.wrapping_add(1);
            live.push_back(alloc(&mut t, slot, n));
        })
    });

    // Shuffle the live keys (deterministic xorshift Fisher-Yates) so lookups do not
    // walk the table in allocation order.
    let mut keys: Vec<NatKey> = live.iter().map(|&(_, k)| k).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..keys.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        #[allow(clippy::cast_possible_truncation)] // modulo a usize
        let j = (x % (i as u64 + 1)) as usize;
        keys.swap(i, j);
    }
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("lookup", |b| {
        b.iter(|| {
            for k in &keys {
                black_box(t.lookup(k));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
