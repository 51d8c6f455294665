//! Prometheus metrics: `GET /metrics` on `--metrics-port` counts the packets a port
//! received and sent.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use dpfleet_e2e::api::Api;
use dpfleet_e2e::frames::{self, Arp, ARP_REPLY};
use dpfleet_e2e::node::{Node, NodeConfig};
use dpfleet_e2e::tap::Tap;
use dpfleet_e2e::topo::{self, Vm};

const METRICS_PORT: u16 = 9100;

fn scrape(node: &Node) -> String {
    let mut s = node.connect_tcp(METRICS_PORT).unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: node\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not HTTP: {out}"));
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200"), "scrape failed: {head}");
    body.to_string()
}

/// The value of `metric` for the port whose `name` label is `iface`.
fn port_value(text: &str, metric: &str, iface: &str) -> u64 {
    let label = format!("name=\"{iface}\"");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .unwrap_or_else(|| panic!("no {metric} for {iface} in:\n{text}"));
    let value = line.rsplit(' ').next().unwrap_or_default();
    value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line}")) as u64
}

#[test]
fn port_counters_follow_traffic() {
    let mut config = NodeConfig::default();
    config.app_args.push(format!("--metrics-port={METRICS_PORT}"));
    let node = Node::start("metrics", config).unwrap_or_else(|e| panic!("{e}"));
    let vf = node.vf(0).clone();
    let vm = Vm::new(1, topo::VNI1);
    node.netns().ip(&["link", "set", "dev", &vf.iface, "address", &topo::mac_str(vm.mac)]).unwrap();
    node.netns().prepare_link(&vf.iface).unwrap();
    let mut api = Api::connect(&node).unwrap();
    api.init();
    api.add_vm(&vm);
    let mut tap = Tap::open(node.netns(), &vf.iface).unwrap();

    let before = scrape(&node);
    for name in
        ["dpfleet_port_rx_packets_total", "dpfleet_port_tx_packets_total", "dpfleet_dropped_packets_total"]
    {
        assert!(before.contains(name), "{name} missing:\n{before}");
    }
    let rx0 = port_value(&before, "dpfleet_port_rx_packets_total", &vf.iface);
    let tx0 = port_value(&before, "dpfleet_port_tx_packets_total", &vf.iface);

    const N: u64 = 5;
    for _ in 0..N {
        tap.send(&frames::arp_request(vm.mac, vm.ip, topo::GATEWAY_V4));
        tap.expect("ARP reply", |f| Arp::parse(f).is_some_and(|a| a.op == ARP_REPLY));
    }

    // Received packets are counted before they are answered.
    let after = scrape(&node);
    let rx1 = port_value(&after, "dpfleet_port_rx_packets_total", &vf.iface);
    assert!(rx1 >= rx0 + N, "rx counter went from {rx0} to {rx1} after {N} requests");
    // Transmit counters may be added just after the burst went out: poll briefly.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let tx1 = port_value(&scrape(&node), "dpfleet_port_tx_packets_total", &vf.iface);
        if tx1 >= tx0 + N {
            break;
        }
        assert!(Instant::now() < deadline, "tx counter went from {tx0} to {tx1} after {N} replies");
        std::thread::sleep(Duration::from_millis(100));
    }
}
