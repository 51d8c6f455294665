//! The coordinator's Prometheus metrics and its `/metrics` endpoint.
//!
//! Raft gauges follow openraft's metrics watch ([`spawn_raft_observer`]), which is also
//! where leader changes are counted; the fleet-state and gossip gauges are refreshed
//! from the applied state and the gossip view when Prometheus scrapes ([`serve`] calls
//! its `refresh` first). The reconciler reports through [`ReconcileMetrics`]. Every
//! metric is documented in `docs/metrics.md`.

use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::{BasicNode, RaftMetrics, ServerState};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::gossip::GossipView;
use crate::raft_types::{MemberId, Raft};
use crate::state::{FleetState, NodeState};

fn gauge(name: &str, help: &str) -> IntGauge {
    // The names and labels are constants of this file: a failure is a programming error.
    IntGauge::new(name, help).expect("valid metric definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The reconciler's per-node metrics: a cheap clonable handle.
#[derive(Clone)]
pub struct ReconcileMetrics {
    lag: IntGaugeVec,
    errors: IntCounterVec,
}

impl ReconcileMetrics {
    /// Sets how many generations `node`'s applied state is behind the desired state.
    pub fn set_lag(&self, node: &str, generations: u64) {
        self.lag.with_label_values(&[node]).set(clamp(generations));
    }

    /// Counts a failed reconciliation step of `node`.
    pub fn inc_errors(&self, node: &str) {
        self.errors.with_label_values(&[node]).inc();
    }

    /// Counts `n` failed reconciliation steps of `node`.
    pub fn add_errors(&self, node: &str, n: u64) {
        self.errors.with_label_values(&[node]).inc_by(n);
    }

    /// Drops `node`'s series (the node was removed from the fleet).
    pub fn forget(&self, node: &str) {
        let _ = self.lag.remove_label_values(&[node]);
        let _ = self.errors.remove_label_values(&[node]);
    }
}

/// The coordinator's metrics and their registry.
pub struct CoordinatorMetrics {
    registry: Registry,
    raft_term: IntGauge,
    raft_last_log_index: IntGauge,
    raft_applied_index: IntGauge,
    raft_is_leader: IntGauge,
    raft_leader_changes: IntCounter,
    state_generation: IntGauge,
    gossip_members: IntGaugeVec,
    nat_blocks: IntGaugeVec,
    reconcile: ReconcileMetrics,
    /// The last leader seen, to count changes.
    last_leader: Mutex<Option<MemberId>>,
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoordinatorMetrics {
    /// A registry with every coordinator metric.
    pub fn new() -> Self {
        let m = CoordinatorMetrics {
            registry: Registry::new(),
            raft_term: gauge("dpfleet_coordinator_raft_term", "Current Raft term of this member"),
            raft_last_log_index: gauge(
                "dpfleet_coordinator_raft_last_log_index",
                "Index of the last entry appended to this member's Raft log",
            ),
            raft_applied_index: gauge(
                "dpfleet_coordinator_raft_applied_index",
                "Index of the last Raft entry applied to this member's fleet state",
            ),
            raft_is_leader: gauge(
                "dpfleet_coordinator_raft_is_leader",
                "1 if this member is the Raft leader",
            ),
            raft_leader_changes: IntCounter::new(
                "dpfleet_coordinator_raft_leader_changes_total",
                "Times this member saw a different Raft leader",
            )
            .expect("valid metric definition"),
            state_generation: gauge(
                "dpfleet_coordinator_state_generation",
                "Generation of the fleet state applied on this member",
            ),
            gossip_members: gauge_vec(
                "dpfleet_coordinator_gossip_members",
                "Fleet members: nodes by committed state, coordinator members by gossip liveness",
                &["role", "state"],
            ),
            nat_blocks: gauge_vec(
                "dpfleet_coordinator_nat_gateway_blocks",
                "NAT port blocks of each gateway, used and total",
                &["gateway", "state"],
            ),
            reconcile: ReconcileMetrics {
                lag: gauge_vec(
                    "dpfleet_coordinator_node_reconcile_lag_generations",
                    "Generations a node's applied state is behind the desired state",
                    &["node"],
                ),
                errors: counter_vec(
                    "dpfleet_coordinator_node_reconcile_errors_total",
                    "Failed reconciliation steps per node",
                    &["node"],
                ),
            },
            last_leader: Mutex::new(None),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 10] = [
            Box::new(m.raft_term.clone()),
            Box::new(m.raft_last_log_index.clone()),
            Box::new(m.raft_applied_index.clone()),
            Box::new(m.raft_is_leader.clone()),
            Box::new(m.raft_leader_changes.clone()),
            Box::new(m.state_generation.clone()),
            Box::new(m.gossip_members.clone()),
            Box::new(m.nat_blocks.clone()),
            Box::new(m.reconcile.lag.clone()),
            Box::new(m.reconcile.errors.clone()),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// The registry (for [`serve`]).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The reconciler's handle.
    pub fn reconcile(&self) -> ReconcileMetrics {
        self.reconcile.clone()
    }

    /// Updates the Raft gauges and counts a leader change.
    pub fn observe_raft(&self, m: &RaftMetrics<MemberId, BasicNode>) {
        self.raft_term.set(clamp(m.current_term));
        self.raft_last_log_index.set(clamp(m.last_log_index.unwrap_or(0)));
        self.raft_applied_index.set(clamp(m.last_applied.map_or(0, |l| l.index)));
        self.raft_is_leader.set(i64::from(m.state == ServerState::Leader && m.current_leader == Some(m.id)));
        if let Some(leader) = m.current_leader {
            let mut last = self.last_leader.lock().unwrap_or_else(|e| e.into_inner());
            if *last != Some(leader) {
                *last = Some(leader);
                self.raft_leader_changes.inc();
            }
        }
    }

    /// Updates the gauges read from the fleet state: nodes by state, NAT blocks.
    pub fn observe_state(&self, fleet: &FleetState) {
        self.state_generation.set(clamp(fleet.generation()));
        for (state, label) in [
            (NodeState::Joining, "joining"),
            (NodeState::Active, "active"),
            (NodeState::Draining, "draining"),
            (NodeState::Down, "down"),
        ] {
            let n = fleet.nodes().values().filter(|n| n.state == state).count();
            self.gossip_members.with_label_values(&["node", label]).set(clamp(n as u64));
        }
        // Gateways come and go: rebuild the family.
        self.nat_blocks.reset();
        for (id, gw) in fleet.nat_gateways() {
            let (used, total) = gw.usage();
            self.nat_blocks.with_label_values(&[id.as_str(), "used"]).set(clamp(used));
            self.nat_blocks.with_label_values(&[id.as_str(), "total"]).set(clamp(total));
        }
    }

    /// Updates the gauges read from gossip: coordinator members live and dead.
    pub fn observe_gossip(&self, view: &GossipView) {
        let live = view.coordinators.values().filter(|c| c.live).count() as u64;
        let dead = view.coordinators.len() as u64 - live;
        self.gossip_members.with_label_values(&["coordinator", "live"]).set(clamp(live));
        self.gossip_members.with_label_values(&["coordinator", "dead"]).set(clamp(dead));
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> Result<String, prometheus::Error> {
        let mut body = String::new();
        prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut body)?;
        Ok(body)
    }
}

/// Follows `raft`'s metrics into `metrics` until Raft shuts down.
pub fn spawn_raft_observer(metrics: Arc<CoordinatorMetrics>, raft: &Raft) -> JoinHandle<()> {
    let mut rx = raft.metrics();
    tokio::spawn(async move {
        loop {
            metrics.observe_raft(&rx.borrow_and_update());
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Serves `GET /metrics` in the Prometheus text format on `listener` until `shutdown`
/// resolves, calling `refresh` before each scrape.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<CoordinatorMetrics>,
    refresh: impl Fn(&CoordinatorMetrics) + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let refresh = Arc::new(refresh);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            let refresh = refresh.clone();
            async move {
                refresh(&metrics);
                match metrics.encode() {
                    Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Keeps the reconcile metrics equal to what the reconciler reports: lag per node, and
/// its error counts as counter increments (a new leader's counts start again at 0).
pub fn spawn_reconcile_observer(
    metrics: Arc<CoordinatorMetrics>,
    mut status: tokio::sync::watch::Receiver<crate::reconcile::ReconcileStatus>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeMap::new();
        loop {
            observe_reconcile(&metrics.reconcile(), &mut seen, &status.borrow_and_update());
            if status.changed().await.is_err() {
                return;
            }
        }
    })
}

/// One look of [`spawn_reconcile_observer`] at the reconciler's status `now`, given the
/// error counts `seen` at the previous look (updated).
fn observe_reconcile(
    r: &ReconcileMetrics,
    seen: &mut std::collections::BTreeMap<String, u64>,
    now: &crate::reconcile::ReconcileStatus,
) {
    for (node, st) in now {
        r.set_lag(node, st.lag_generations);
        let before = seen.get(node).copied().unwrap_or(0);
        // A count below the last one is a new reconcile task's (the node was dropped
        // and driven again between two looks, which a watch channel does not show):
        // all of it is new.
        let new = if st.errors_total >= before { st.errors_total - before } else { st.errors_total };
        if new > 0 {
            r.add_errors(node, new);
        }
        seen.insert(node.clone(), st.errors_total);
    }
    seen.retain(|node, _| {
        let keep = now.contains_key(node);
        if !keep {
            // Not driven (down, removed, or this member no longer leads): no lag to
            // report, rather than a misleading 0.
            r.forget(node);
        }
        keep
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use openraft::{CommittedLeaderId, LogId};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::gossip::{CoordinatorKeys, GossipCoordinator};
    use crate::state::{Command, InterfaceSpec, NatGatewaySpec, Op};

    fn fleet() -> FleetState {
        let mut s = FleetState::new();
        let mut apply = |op| s.apply(Command::new(op)).unwrap();
        for i in 1..=3u16 {
            apply(Op::RegisterNode {
                id: format!("n{i}"),
                underlay: Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, i),
                api_endpoint: format!("n{i}:1337"),
                devices: vec![],
            });
        }
        apply(Op::SetNodeState { id: "n1".into(), state: NodeState::Active });
        apply(Op::SetNodeState { id: "n2".into(), state: NodeState::Down });
        apply(Op::CreateVni { vni: 100 });
        apply(Op::CreateNatGateway(NatGatewaySpec {
            id: "gw".into(),
            vni: 100,
            public_ips: vec![Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2)],
            port_min: 1024,
            port_max: 2048,
            block_size: 256,
        }));
        apply(Op::CreateInterface(InterfaceSpec {
            id: "vm1".into(),
            vni: 100,
            node: Some("n1".into()),
            device: Some("vf0".into()),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            ipv6: None,
        }));
        apply(Op::AttachNat { gateway: "gw".into(), interface: "vm1".into() });
        s
    }

    fn coordinator(name: &str, live: bool) -> GossipCoordinator {
        GossipCoordinator {
            name: name.into(),
            generation_id: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            live,
            keys: Ok(CoordinatorKeys { raft_id: 1, raft_addr: "127.0.0.1:7001".into(), version: None }),
        }
    }

    fn has(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
    }

    #[test]
    fn state_gossip_and_reconciler_series() {
        let m = CoordinatorMetrics::new();
        let state = fleet();
        m.observe_state(&state);
        let view = GossipView {
            nodes: BTreeMap::new(),
            coordinators: [("1", true), ("2", true), ("3", false)]
                .into_iter()
                .map(|(n, live)| (n.to_owned(), coordinator(n, live)))
                .collect(),
        };
        m.observe_gossip(&view);
        let r = m.reconcile();
        r.set_lag("n1", 4);
        r.inc_errors("n3");
        r.inc_errors("n3");
        let text = m.encode().unwrap();
        has(&text, &format!("dpfleet_coordinator_state_generation {}", state.generation()));
        has(&text, r#"dpfleet_coordinator_gossip_members{role="node",state="active"} 1"#);
        has(&text, r#"dpfleet_coordinator_gossip_members{role="node",state="down"} 1"#);
        has(&text, r#"dpfleet_coordinator_gossip_members{role="node",state="joining"} 1"#);
        has(&text, r#"dpfleet_coordinator_gossip_members{role="node",state="draining"} 0"#);
        has(&text, r#"dpfleet_coordinator_gossip_members{role="coordinator",state="live"} 2"#);
        has(&text, r#"dpfleet_coordinator_gossip_members{role="coordinator",state="dead"} 1"#);
        has(&text, r#"dpfleet_coordinator_nat_gateway_blocks{gateway="gw",state="used"} 1"#);
        has(&text, r#"dpfleet_coordinator_nat_gateway_blocks{gateway="gw",state="total"} 8"#);
        has(&text, r#"dpfleet_coordinator_node_reconcile_lag_generations{node="n1"} 4"#);
        has(&text, r#"dpfleet_coordinator_node_reconcile_errors_total{node="n3"} 2"#);

        // A deleted gateway and a forgotten node disappear.
        let mut state = state;
        state.apply(Command::new(Op::DeleteInterface { id: "vm1".into() })).unwrap();
        state.apply(Command::new(Op::DeleteNatGateway { id: "gw".into() })).unwrap();
        m.observe_state(&state);
        r.forget("n3");
        let text = m.encode().unwrap();
        assert!(!text.contains("gateway=\"gw\""), "{text}");
        assert!(!text.contains("node=\"n3\""), "{text}");
    }

    #[test]
    fn reconcile_errors_only_ever_count_up() {
        let m = CoordinatorMetrics::new();
        let r = m.reconcile();
        let status = |errors_total| {
            let st = crate::reconcile::NodeReconcileStatus { errors_total, ..Default::default() };
            BTreeMap::from([("n1".to_owned(), st)])
        };
        let mut seen = BTreeMap::new();
        observe_reconcile(&r, &mut seen, &status(3));
        observe_reconcile(&r, &mut seen, &status(5));
        has(&m.encode().unwrap(), r#"dpfleet_coordinator_node_reconcile_errors_total{node="n1"} 5"#);
        // The node was dropped and driven again between two looks: its new task counts
        // from 0, and its 2 errors are new ones.
        observe_reconcile(&r, &mut seen, &status(2));
        has(&m.encode().unwrap(), r#"dpfleet_coordinator_node_reconcile_errors_total{node="n1"} 7"#);
        // Dropped at a look: the series goes.
        observe_reconcile(&r, &mut seen, &BTreeMap::new());
        assert!(!m.encode().unwrap().contains("node=\"n1\""));
    }

    #[test]
    fn raft_gauges_and_leader_changes() {
        let m = CoordinatorMetrics::new();
        let mut rm = RaftMetrics::<MemberId, BasicNode>::new_initial(2);
        m.observe_raft(&rm);
        // No leader yet: no change counted.
        has(&m.encode().unwrap(), "dpfleet_coordinator_raft_leader_changes_total 0");
        rm.current_term = 3;
        rm.current_leader = Some(1);
        rm.last_log_index = Some(12);
        rm.last_applied = Some(LogId::new(CommittedLeaderId::new(3, 1), 11));
        m.observe_raft(&rm);
        m.observe_raft(&rm);
        let text = m.encode().unwrap();
        has(&text, "dpfleet_coordinator_raft_term 3");
        has(&text, "dpfleet_coordinator_raft_last_log_index 12");
        has(&text, "dpfleet_coordinator_raft_applied_index 11");
        has(&text, "dpfleet_coordinator_raft_is_leader 0");
        has(&text, "dpfleet_coordinator_raft_leader_changes_total 1");
        // This member wins the next election.
        rm.current_term = 4;
        rm.current_leader = Some(2);
        rm.state = ServerState::Leader;
        m.observe_raft(&rm);
        let text = m.encode().unwrap();
        has(&text, "dpfleet_coordinator_raft_is_leader 1");
        has(&text, "dpfleet_coordinator_raft_leader_changes_total 2");
    }

    #[tokio::test]
    async fn serves_metrics_over_http_refreshed_on_scrape() {
        let m = Arc::new(CoordinatorMetrics::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = fleet();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, m, move |m| m.observe_state(&state), async {
            let _ = stopped.await;
        }));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let reply = get("/metrics").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("text/plain; version=0.0.4"), "{reply}");
        has(&reply, r#"dpfleet_coordinator_nat_gateway_blocks{gateway="gw",state="used"} 1"#);
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
