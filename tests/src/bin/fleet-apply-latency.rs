//! How long a cluster API write takes to reach every node: starts the fleet of the
//! `fleet_cluster` test (three coordinators, three nodes, namespaces; see
//! `dpfleet_e2e::cluster`), then repeats a write (alternately setting and deleting a VIP of
//! an interface on n1) and measures from sending the write until every node's
//! `dpfleet.node.v1` GetNodeStatus reports the write's generation applied. Prints each
//! sample, then p50/p99/max.
//!
//! ```text
//! cargo run -p dpfleet-e2e --bin fleet-apply-latency [-- REPETITIONS]   # as root
//! ```
//!
//! Not a test: there is no bound to meet; it runs the debug or release binaries that
//! `find_program` finds (the newest build).

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use dpfleet_coordinator::grpc::cluster_pb as cpb;
use dpfleet_e2e::cluster::{self, Fleet};
use dpfleet_e2e::topo;

fn main() {
    let reps: usize = std::env::args().nth(1).map_or(20, |a| a.parse().expect("REPETITIONS is a number"));
    let mut fleet = Fleet::start(3, "3s");
    for k in 1..=3 {
        fleet.add_node(k);
    }
    for k in 1..=3 {
        fleet.wait_node_state(&cluster::node_name(k), cpb::NodeState::Active, Duration::from_secs(30));
    }
    let m = fleet.any();
    fleet
        .on(m, |mut c| async move { c.create_vni(cpb::VniRequest { request_id: String::new(), vni: 100 }).await })
        .expect("CreateVni");
    let req = cpb::CreateInterfaceRequest {
        request_id: String::new(),
        id: "bench1".into(),
        vni: 100,
        node: "n1".into(),
        device: topo::vf(0).device,
        ipv4: "10.100.1.1".into(),
        ipv6: String::new(),
    };
    fleet.on(m, |mut c| async move { c.create_interface(req).await }).expect("CreateInterface");
    fleet.wait_applied(&[1, 2, 3], Duration::from_secs(30));

    let mut samples = Vec::with_capacity(reps);
    for i in 0..reps {
        let start = Instant::now();
        let generation = if i % 2 == 0 {
            let req = cpb::SetVipRequest {
                request_id: String::new(),
                interface: "bench1".into(),
                ip: "45.86.6.200".into(),
            };
            fleet.on(m, |mut c| async move { c.set_vip(req).await }).expect("SetVip").generation
        } else {
            let req = cpb::DeleteVipRequest { request_id: String::new(), interface: "bench1".into() };
            fleet.on(m, |mut c| async move { c.delete_vip(req).await }).expect("DeleteVip").generation
        };
        let acked = start.elapsed();
        let mut pending: Vec<u8> = vec![1, 2, 3];
        while !pending.is_empty() {
            pending.retain(|k| {
                let s = fleet.node(*k).api.get_node_status().expect("GetNodeStatus");
                s.applied_generation < generation
            });
            assert!(start.elapsed() < Duration::from_secs(30), "generation {generation} not applied in 30 s");
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let all = start.elapsed();
        println!(
            "write {i:>3}: generation {generation}, acknowledged {acked:>10.1?}, on every node {all:>10.1?}"
        );
        samples.push(all);
    }
    samples.sort_unstable();
    let pct = |p: usize| samples[((samples.len() * p).div_ceil(100)).clamp(1, samples.len()) - 1];
    println!(
        "{} writes, write to applied on all 3 nodes: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        samples.len(),
        pct(50),
        pct(99),
        samples[samples.len() - 1]
    );
}
