//! Established-flow bursts through `Pipeline::process_burst` in a plain loop, for
//! instruction counts under callgrind (this machine has no hardware counters, and
//! criterion's own work would be counted with the pipeline's).
//!
//! ```sh
//! cargo bench -p dpfleet-dataplane --bench burst_loop --no-run
//! valgrind --tool=callgrind --toggle-collect='*burst_loop::run*' \
//!     target/release/deps/burst_loop-<hash> vf 10000
//! ```
//!
//! Instructions per packet = the collected instruction count / (iterations × 32). Cases:
//! `vf` (vm1 to vm2), `encap` (vm1 to a remote node), `snat` (vm1 through a NAT gateway
//! to 256 internet hosts × 256 source ports: 65,536 live flows, each burst the next 32 of
//! them), `tunnel` (a remote VM to vm1 through the tunnel). Without callgrind, it prints
//! the time per packet.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Instant;

use dpfleet_dataplane::buf::TestBuf;
use dpfleet_dataplane::config::{PortId, Snapshot};
use dpfleet_dataplane::graph::testkit::{lab, ports, snat_lab, vm1_udp_frame, vm_mac, PF0_MAC, ROUTER_MAC};
use dpfleet_dataplane::graph::{DropReason, Pipeline, PipelineConfig, Stage, Verdict};
use dpfleet_dataplane::wire::checksum;

const BURST: usize = 32;

/// The measured call (callgrind collects inside it).
#[inline(never)]
fn run(p: &mut Pipeline, snap: &Snapshot, port: PortId, bufs: &mut [TestBuf], verdicts: &mut [Verdict]) {
    p.process_burst(snap, port, 0, bufs, verdicts);
}

/// A remote VM's (10.100.2.102, underlay fc00:2::1) UDP frame to vm1 through the
/// tunnel, from the router.
fn tunnel_frame(sport: u16) -> Vec<u8> {
    let mut ip = vm1_udp_frame(vm_mac(0), [10, 100, 1, 1], sport).split_off(14);
    ip[12..16].copy_from_slice(&[10, 100, 2, 102]);
    ip[10..12].fill(0);
    let ck = checksum::checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    let a6 = |s: &str| s.parse::<Ipv6Addr>().map(|a| a.octets()).unwrap_or_default();
    let mut f = [&PF0_MAC[..], &ROUTER_MAC[..], &[0x86, 0xdd, 0x60, 0, 0, 0]].concat();
    f.extend_from_slice(&u16::try_from(ip.len()).unwrap_or(0).to_be_bytes());
    f.extend_from_slice(&[4, 64]);
    f.extend_from_slice(&a6("fc00:2::1"));
    f.extend_from_slice(&a6("fc00:1::1:1"));
    f.extend_from_slice(&ip);
    f
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let case = args.next().unwrap_or_else(|| "vf".into());
    let iters: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let sports = 1000..1000 + BURST as u16;
    let (snap, port, want, frames, cfg) = match case.as_str() {
        "vf" => {
            let frames = sports.map(|s| vm1_udp_frame(vm_mac(1), [10, 100, 1, 2], s)).collect();
            (lab(), ports::VM1, ports::VM2, frames, PipelineConfig::small())
        }
        "encap" => {
            let frames = sports.map(|s| vm1_udp_frame(PF0_MAC, [10, 100, 2, 102], s)).collect();
            (lab(), ports::VM1, ports::PF0, frames, PipelineConfig::small())
        }
        "tunnel" => {
            (lab(), ports::PF0, ports::VM1, sports.map(tunnel_frame).collect(), PipelineConfig::small())
        }
        "snat" => {
            #[allow(clippy::cast_possible_truncation)] // i < 65,536: host and port fit
            let frames = (0..1usize << 16)
                .map(|i| vm1_udp_frame(PF0_MAC, [45, 86, 6, i as u8], 1024 + (i >> 8) as u16))
                .collect();
            (snat_lab(), ports::VM1, ports::PF0, frames, PipelineConfig::new(1 << 20, 30, 0, 1, 0x5eed))
        }
        other => {
            eprintln!("unknown case {other}: vf, encap, snat or tunnel");
            std::process::exit(2);
        }
    };
    let frames: Vec<Vec<u8>> = frames;
    let Ok(mut p) = Pipeline::with_config(Arc::default(), &cfg) else {
        eprintln!("pipeline configuration refused");
        std::process::exit(1);
    };
    let mut bufs: Vec<TestBuf> = frames[..BURST].iter().map(|f| TestBuf::new(f)).collect();
    let mut verdicts = vec![Verdict::Drop(DropReason::TxFull); BURST];
    // Every flow is created, and then known to the fast path's express lane, before the
    // measured bursts: they measure the steady state.
    for _ in 0..2 {
        for chunk in frames.chunks(BURST) {
            for (b, f) in bufs.iter_mut().zip(chunk) {
                b.reset(f);
            }
            p.process_burst(&snap, port, 0, &mut bufs, &mut verdicts);
            assert!(verdicts.iter().all(|v| *v == Verdict::Tx(want)), "{case}: {verdicts:?}");
        }
    }
    let t = Instant::now();
    let mut next = 0;
    for _ in 0..iters {
        for (b, f) in bufs.iter_mut().zip(&frames[next..next + BURST]) {
            b.reset(f);
        }
        next = (next + BURST) % frames.len();
        run(&mut p, &snap, port, &mut bufs, &mut verdicts);
    }
    let spent = t.elapsed();
    assert!(verdicts.iter().all(|v| *v == Verdict::Tx(want)), "{case}: {verdicts:?}");
    #[allow(clippy::cast_precision_loss)] // a printed average
    let per_packet = spent.as_nanos() as f64 / (iters * BURST) as f64;
    let stage = |s: Stage| p.counters.stages[s as usize].get();
    #[allow(clippy::cast_precision_loss)] // a printed ratio
    let express = stage(Stage::Express) as f64 / stage(Stage::FastPath).max(1) as f64;
    println!(
        "{case}: {per_packet:.1} ns per packet, {:.1} % of the fast path's packets by the express lane",
        express * 100.0
    );
}
