//! The harness itself, without a node: namespaces are made and removed, and frames sent
//! on one end of a veth pair arrive on the other, while a socket never matches its own.

use dpfleet_e2e::frames::{self, Arp};
use dpfleet_e2e::netns::Netns;
use dpfleet_e2e::node::require_root;
use dpfleet_e2e::tap::Tap;
use std::net::Ipv4Addr;
use std::time::Duration;

#[test]
fn frames_cross_a_veth_pair_and_own_frames_are_skipped() {
    require_root();
    let ns = Netns::new("harness").unwrap();
    let path = format!("/run/netns/{}", ns.name());
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"]).unwrap();
    ns.prepare_link("a0").unwrap();
    ns.prepare_link("b0").unwrap();
    let mut a = Tap::open(&ns, "a0").unwrap();
    let mut b = Tap::open(&ns, "b0").unwrap();

    let mac = [2, 0, 0, 0, 0, 0xa0];
    let req = frames::arp_request(mac, Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    a.send(&req);
    let got = b.expect("ARP request on the peer", |f| Arp::parse(f).is_some());
    assert_eq!(got, req);
    // `a` saw its own frame go out; it must not hand it back.
    assert_eq!(a.recv_timeout(Duration::from_millis(200), |f| Arp::parse(f).is_some()), None);

    drop((a, b));
    drop(ns);
    assert!(!std::path::Path::new(&path).exists(), "namespace not removed");
}
