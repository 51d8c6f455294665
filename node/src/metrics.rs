//! Prometheus metrics, read at scrape time from the workers' counters.
//!
//! Workers never do anything for metrics beyond incrementing their own counters; a
//! scrape sums the per-worker values (see `dpfleet_dataplane::counters`) and asks DPDK
//! for the ports' hardware statistics.

use std::sync::Arc;

use arc_swap::ArcSwap;
use dpfleet_dataplane::config::{PortId, PortRole, Snapshot};
use dpfleet_dataplane::counters::Counters;
use dpfleet_dataplane::graph::{DropReason, Stage};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Driver statistics of one port (from `rte_eth_stats_get`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PortHwStats {
    /// Packets the NIC dropped because the RX queues were full.
    pub rx_missed: u64,
    /// Erroneous received packets.
    pub rx_errors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
    /// Failed transmissions.
    pub tx_errors: u64,
    /// Bytes received (`ibytes`).
    pub rx_bytes: u64,
    /// Bytes sent (`obytes`).
    pub tx_bytes: u64,
}

/// Reads a port's driver statistics.
pub type HwStatsFn = Box<dyn Fn(PortId) -> Option<PortHwStats> + Send + Sync>;

/// What the control plane knows about the fleet, read at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// The generation the coordinator last recorded as applied.
    pub applied_generation: u64,
    /// Coordinator Maglev tables refused for a digest mismatch.
    pub digest_mismatches: u64,
}

/// Reads the fleet statistics.
pub type FleetStatsFn = Box<dyn Fn() -> FleetStats + Send + Sync>;

/// The node's metrics source.
pub struct NodeCollector {
    workers: Vec<Arc<Counters>>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    hw_stats: HwStatsFn,
    fleet: FleetStatsFn,
    descs: Vec<Desc>,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // The names and labels are constants of this file: a failure is a programming error.
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

struct Families {
    rx_packets: IntCounterVec,
    rx_bytes: IntCounterVec,
    tx_packets: IntCounterVec,
    tx_bytes: IntCounterVec,
    tx_dropped: IntCounterVec,
    hw_missed: IntCounterVec,
    hw_rx_errors: IntCounterVec,
    hw_nombuf: IntCounterVec,
    hw_tx_errors: IntCounterVec,
    drops: IntCounterVec,
    stages: IntCounterVec,
    generation: IntGauge,
    interfaces: IntGaugeVec,
    flows: IntGaugeVec,
    flow_capacity: IntGaugeVec,
    nat_mappings: IntGaugeVec,
    nat_ports: IntGaugeVec,
    nat_capacity: IntGauge,
    applied_generation: IntGauge,
    digest_mismatches: IntCounter,
}

impl Families {
    fn new() -> Self {
        let port = &["port", "name", "role"];
        Families {
            rx_packets: counter_vec("dpfleet_port_rx_packets_total", "Packets received by the workers", port),
            rx_bytes: counter_vec(
                "dpfleet_port_rx_bytes_total",
                "Bytes the port received (driver statistics)",
                port,
            ),
            tx_packets: counter_vec("dpfleet_port_tx_packets_total", "Packets sent by the workers", port),
            tx_bytes: counter_vec(
                "dpfleet_port_tx_bytes_total",
                "Bytes the port sent (driver statistics)",
                port,
            ),
            tx_dropped: counter_vec(
                "dpfleet_port_tx_dropped_total",
                "Packets freed because the port's TX queue was full",
                port,
            ),
            hw_missed: counter_vec(
                "dpfleet_port_rx_missed_total",
                "Packets the driver dropped (RX queue full)",
                port,
            ),
            hw_rx_errors: counter_vec(
                "dpfleet_port_rx_errors_total",
                "Erroneous packets reported by the driver",
                port,
            ),
            hw_nombuf: counter_vec("dpfleet_port_rx_nombuf_total", "RX mbuf allocation failures", port),
            hw_tx_errors: counter_vec(
                "dpfleet_port_tx_errors_total",
                "Failed transmissions reported by the driver",
                port,
            ),
            drops: counter_vec(
                "dpfleet_dropped_packets_total",
                "Packets dropped by the pipeline, by reason",
                &["reason"],
            ),
            stages: counter_vec(
                "dpfleet_stage_packets_total",
                "Packets that entered each pipeline stage",
                &["stage"],
            ),
            generation: IntGauge::new(
                "dpfleet_config_generation",
                "Generation of the configuration in force",
            )
            .expect("valid metric definition"),
            interfaces: gauge_vec("dpfleet_interfaces", "Configured VM interfaces, by VNI", &["vni"]),
            flows: gauge_vec("dpfleet_flows", "Flows in each worker's flow table", &["worker"]),
            flow_capacity: gauge_vec(
                "dpfleet_flow_capacity",
                "Most flows each worker's table holds",
                &["worker"],
            ),
            nat_mappings: gauge_vec(
                "dpfleet_nat_mappings",
                "Live NAT port mappings (a NAT port in use towards one destination), per NAT of an interface",
                &["port", "nat_ip"],
            ),
            nat_ports: gauge_vec(
                "dpfleet_nat_ports",
                "Ports in the NAT range of an interface (each usable once per destination)",
                &["port", "nat_ip"],
            ),
            nat_capacity: IntGauge::new(
                "dpfleet_nat_mapping_capacity",
                "Most NAT port mappings the workers hold",
            )
            .expect("valid metric definition"),
            applied_generation: IntGauge::new(
                "dpfleet_applied_generation",
                "Generation of fleet state the coordinator recorded as applied (0 after a start)",
            )
            .expect("valid metric definition"),
            digest_mismatches: IntCounter::new(
                "dpfleet_maglev_digest_mismatches_total",
                "Coordinator Maglev tables refused because this node built another digest",
            )
            .expect("valid metric definition"),
        }
    }

    fn all(&self) -> Vec<&dyn Collector> {
        vec![
            &self.rx_packets,
            &self.rx_bytes,
            &self.tx_packets,
            &self.tx_bytes,
            &self.tx_dropped,
            &self.hw_missed,
            &self.hw_rx_errors,
            &self.hw_nombuf,
            &self.hw_tx_errors,
            &self.drops,
            &self.stages,
            &self.generation,
            &self.interfaces,
            &self.flows,
            &self.flow_capacity,
            &self.nat_mappings,
            &self.nat_ports,
            &self.nat_capacity,
            &self.applied_generation,
            &self.digest_mismatches,
        ]
    }
}

impl NodeCollector {
    /// A collector over these workers' counters.
    pub fn new(
        workers: Vec<Arc<Counters>>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        hw_stats: HwStatsFn,
        fleet: FleetStatsFn,
    ) -> Self {
        let descs = Families::new().all().iter().flat_map(|c| c.desc().into_iter().cloned()).collect();
        NodeCollector { workers, snapshot, hw_stats, fleet, descs }
    }

    /// A registry holding just this collector.
    pub fn into_registry(self) -> Registry {
        let r = Registry::new();
        r.register(Box::new(self)).expect("metric names are unique");
        r
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let f = Families::new();
        let snap = self.snapshot.load();
        for port in snap.ports.iter().flatten() {
            let id = port.id.to_string();
            let role = match port.role {
                PortRole::Pf(_) => "pf",
                PortRole::Vf => "vf",
            };
            let labels = [id.as_str(), port.if_name.as_str(), role];
            let sum = |get: fn(&Counters, PortId) -> u64| -> u64 {
                self.workers.iter().map(|w| get(w, port.id)).sum()
            };
            f.rx_packets.with_label_values(&labels).inc_by(sum(|c, p| c.port(p).rx_packets.get()));
            f.tx_packets.with_label_values(&labels).inc_by(sum(|c, p| c.port(p).tx_packets.get()));
            f.tx_dropped.with_label_values(&labels).inc_by(sum(|c, p| c.port(p).tx_errors.get()));
            if let Some(hw) = (self.hw_stats)(port.id) {
                f.hw_missed.with_label_values(&labels).inc_by(hw.rx_missed);
                f.hw_rx_errors.with_label_values(&labels).inc_by(hw.rx_errors);
                f.hw_nombuf.with_label_values(&labels).inc_by(hw.rx_nombuf);
                f.hw_tx_errors.with_label_values(&labels).inc_by(hw.tx_errors);
                f.rx_bytes.with_label_values(&labels).inc_by(hw.rx_bytes);
                f.tx_bytes.with_label_values(&labels).inc_by(hw.tx_bytes);
            }
        }
        for &reason in DropReason::ALL {
            let n: u64 = self.workers.iter().map(|w| w.drops[reason as usize].get()).sum();
            f.drops.with_label_values(&[reason.label()]).inc_by(n);
        }
        for &stage in Stage::ALL {
            let n: u64 = self.workers.iter().map(|w| w.stages[stage as usize].get()).sum();
            f.stages.with_label_values(&[stage.label()]).inc_by(n);
        }
        f.generation.set(i64::try_from(snap.generation).unwrap_or(i64::MAX));
        for iface in snap.iface_by_port.iter().flatten() {
            f.interfaces.with_label_values(&[iface.vni.to_string().as_str()]).inc();
            if let Some(nat) = &iface.nat {
                let labels = [iface.port.to_string(), nat.nat_ip.to_string()];
                let labels = [labels[0].as_str(), labels[1].as_str()];
                let live: u64 = self.workers.iter().map(|w| occupancy_of(w, iface.port)).sum();
                f.nat_mappings.with_label_values(&labels).set(gauge(live));
                let ports = u64::from(nat.range.max()) - u64::from(nat.range.min());
                f.nat_ports.with_label_values(&labels).set(gauge(ports));
            }
        }
        for (i, w) in self.workers.iter().enumerate() {
            let worker = i.to_string();
            f.flows.with_label_values(&[worker.as_str()]).set(gauge(w.occupancy.flows.get()));
            f.flow_capacity.with_label_values(&[worker.as_str()]).set(gauge(w.occupancy.flow_capacity.get()));
        }
        f.nat_capacity.set(gauge(self.workers.iter().map(|w| w.occupancy.nat_capacity.get()).sum()));
        let fleet = (self.fleet)();
        f.applied_generation.set(gauge(fleet.applied_generation));
        f.digest_mismatches.inc_by(fleet.digest_mismatches);
        f.all().iter().flat_map(|c| c.collect()).collect()
    }
}

/// A gauge value (saturating).
fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A worker's live NAT mappings of the interface on `port`.
fn occupancy_of(w: &Counters, port: PortId) -> u64 {
    w.occupancy.nat_by_port.get(usize::from(port)).map_or(0, |c| c.get())
}

/// Live flows and NAT mappings of all workers, for gossip's load keys.
pub fn load(workers: &[Arc<Counters>]) -> (u64, u64) {
    let flows = workers.iter().map(|w| w.occupancy.flows.get()).sum();
    let nat = workers.iter().map(|w| w.occupancy.nat_mappings.get()).sum();
    (flows, nat)
}

/// Serves `GET /metrics` in the Prometheus text format until `shutdown` resolves.
pub async fn serve(
    addr: std::net::SocketAddr,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                let encoder = prometheus::TextEncoder::new();
                if let Err(e) = encoder.encode_utf8(&registry.gather(), &mut body) {
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
                }
                ([(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response()
            }
        }),
    );
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpfleet_dataplane::config::{NodeConfig, PortInfo};

    #[test]
    fn sums_workers_and_labels_ports() {
        let node = NodeConfig {
            underlay_ipv6: "fc00:1::1".parse().unwrap(),
            dhcp_mtu: 1500,
            dhcp_dns: vec![],
            dhcpv6_dns: vec![],
            ipv6_overlay: false,
            pf_ports: vec![0],
            wcmp_percent: 100,
        };
        let ports = vec![PortInfo {
            id: 0,
            mac: [2, 0, 0, 0, 0, 1],
            role: PortRole::Pf(0),
            device_name: "net_tap0".into(),
            if_name: "dtap0".into(),
            neigh_mac: None,
        }];
        let snap = Arc::new(ArcSwap::from_pointee(Snapshot::new(node, ports)));
        let w1 = Arc::new(Counters::default());
        let w2 = Arc::new(Counters::default());
        w1.port(0).rx_packets.add(3);
        w2.port(0).rx_packets.add(4);
        w2.count_drop(DropReason::NoRoute);
        let hw: HwStatsFn = Box::new(|_| {
            Some(PortHwStats { rx_missed: 9, rx_bytes: 640, tx_bytes: 1280, ..Default::default() })
        });
        w1.occupancy.flows.set(10);
        w1.occupancy.flow_capacity.set(100);
        w2.occupancy.flows.set(5);
        w2.occupancy.nat_capacity.set(64);
        let fleet: FleetStatsFn = Box::new(|| FleetStats { applied_generation: 12, digest_mismatches: 2 });
        assert_eq!(load(&[w1.clone(), w2.clone()]), (15, 0));
        let reg = NodeCollector::new(vec![w1, w2], snap, hw, fleet).into_registry();
        let mut text = String::new();
        prometheus::TextEncoder::new().encode_utf8(&reg.gather(), &mut text).unwrap();
        assert!(
            text.contains("dpfleet_port_rx_packets_total{name=\"dtap0\",port=\"0\",role=\"pf\"} 7"),
            "{text}"
        );
        assert!(text.contains("dpfleet_port_rx_missed_total{name=\"dtap0\",port=\"0\",role=\"pf\"} 9"));
        assert!(
            text.contains("dpfleet_port_rx_bytes_total{name=\"dtap0\",port=\"0\",role=\"pf\"} 640"),
            "{text}"
        );
        assert!(text.contains("dpfleet_port_tx_bytes_total{name=\"dtap0\",port=\"0\",role=\"pf\"} 1280"));
        assert!(text.contains("dpfleet_dropped_packets_total{reason=\"no_route\"} 1"));
        assert!(text.contains("dpfleet_config_generation 0"));
        assert!(text.contains("dpfleet_flows{worker=\"0\"} 10"), "{text}");
        assert!(text.contains("dpfleet_flows{worker=\"1\"} 5"));
        assert!(text.contains("dpfleet_flow_capacity{worker=\"0\"} 100"));
        assert!(text.contains("dpfleet_nat_mapping_capacity 64"));
        assert!(text.contains("dpfleet_applied_generation 12"));
        assert!(text.contains("dpfleet_maglev_digest_mismatches_total 2"));
    }
}
