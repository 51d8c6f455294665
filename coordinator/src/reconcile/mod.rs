//! The reconciler: the leader drives every live node to its desired state through the
//! node API.
//!
//! - [`plan`] (pure): a node's desired state from the committed [`FleetState`], and the
//!   ordered calls from what the node holds to it.
//! - [`exec`]: the node API clients (reading a node, making the calls).
//! - [`Reconciler`] (here): runs on every member and acts only while the member is the
//!   Raft leader. When the applied state's generation changes it plans every node that is
//!   joining, active or draining and has an API endpoint (one [`plan::FleetIndex`] per
//!   generation, on a blocking thread) and hands each node's desired state to that node's
//!   task. A node task reconciles when its desired state changes and every
//!   [`ReconcilerConfig::repair_interval`] to repair drift: it checks the node instance
//!   (a restarted node has a new UUID, applied generation 0 and nothing else) and the
//!   status (applied generation, Maglev tables), and reads the whole node when anything
//!   differs from what it last left there, or every
//!   [`ReconcilerConfig::full_read_interval`]. Errors back off per node, exponentially.
//!   Down nodes are not driven; the other nodes lose their routes and neighbor NATs.
//!
//! Per node, [`NodeReconcileStatus`] (lag in generations, last error, error count) is
//! published through a `watch` channel for the metrics.

pub mod bench;
pub mod exec;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::raft_types::{MemberId, Raft};
use crate::state::{FleetState, NodeState};
use crate::store::StateMachineStore;
use exec::{ExecError, Ipv6Routes, NodeClient, NodeStatus};
use plan::{diff, Action, FleetIndex, NodeDesired};

/// Timing of the reconciler.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// How often the driver checks leadership and the state's generation when Raft
    /// reports nothing new (it also checks whenever Raft's metrics change, e.g. an entry
    /// is applied, so a write reaches the node tasks at once).
    pub poll: Duration,
    /// How often a node is checked for drift when nothing changed.
    pub repair_interval: Duration,
    /// How often a node is read completely even when its status looks right.
    pub full_read_interval: Duration,
    /// Deadline of one call to a node (and of connecting).
    pub call_timeout: Duration,
    /// The first wait after an error.
    pub backoff_min: Duration,
    /// The longest wait after errors.
    pub backoff_max: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            poll: Duration::from_millis(200),
            repair_interval: Duration::from_secs(2),
            full_read_interval: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// How reconciling one node goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReconcileStatus {
    /// The state's generation minus the generation the node last reported applied.
    pub lag_generations: u64,
    /// The generation the node last reported applied.
    pub applied_generation: u64,
    /// The last failure, until the next success.
    pub last_error: Option<String>,
    /// Failed reconcile rounds since this member became leader.
    pub errors_total: u64,
    /// Parts of the desired state the node API cannot express (see [`NodeDesired`]).
    pub problems: Vec<String>,
}

/// Every driven node's status, by node name (empty while not leader).
pub type ReconcileStatus = BTreeMap<String, NodeReconcileStatus>;

/// The running reconciler of one coordinator member.
pub struct Reconciler {
    status: watch::Receiver<ReconcileStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Reconciler {
    /// Starts the driver on member `id`; it acts while `raft` says this member leads.
    pub fn start(id: MemberId, raft: Raft, state: StateMachineStore, config: ReconcilerConfig) -> Self {
        let (status_tx, status) = watch::channel(ReconcileStatus::new());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(drive(id, raft, state, config, Arc::new(status_tx), stop_rx));
        Reconciler { status, stop, task }
    }

    /// The per-node status, updated as nodes are reconciled.
    pub fn status(&self) -> watch::Receiver<ReconcileStatus> {
        self.status.clone()
    }

    /// Stops the driver and every node task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What a node task is given for one generation.
struct Assignment {
    desired: NodeDesired,
    /// Where neighbor NATs may be: every NAT gateway's public IP, and those of gateways
    /// deleted (or changed) since this member became leader — the node API lists neighbor
    /// NATs only by IP, so entries left on a retired IP would never be found otherwise.
    nat_ips: Arc<BTreeSet<Ipv4Addr>>,
}

struct NodeTask {
    endpoint: String,
    desired: watch::Sender<Arc<Assignment>>,
    handle: JoinHandle<()>,
}

/// Plans every node to drive: (endpoint, assignment) by node. `nat_ips_seen` holds the
/// NAT IPs of earlier generations (see [`Assignment::nat_ips`]) and gains this one's.
fn plan_nodes(
    fleet: &FleetState,
    nat_ips_seen: &mut BTreeSet<Ipv4Addr>,
) -> BTreeMap<String, (String, Assignment)> {
    let index = FleetIndex::new(fleet);
    nat_ips_seen.extend(fleet.nat_gateways().values().flat_map(|g| g.spec().public_ips.iter().copied()));
    let nat_ips = Arc::new(nat_ips_seen.clone());
    fleet
        .nodes()
        .values()
        .filter(|n| n.state != NodeState::Down && !n.api_endpoint.is_empty())
        .filter_map(|n| {
            let desired = index.desired(&n.id)?;
            Some((n.id.clone(), (n.api_endpoint.clone(), Assignment { desired, nat_ips: nat_ips.clone() })))
        })
        .collect()
}

async fn drive(
    id: MemberId,
    raft: Raft,
    state: StateMachineStore,
    config: ReconcilerConfig,
    status: Arc<watch::Sender<ReconcileStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks: BTreeMap<String, NodeTask> = BTreeMap::new();
    let mut planned: Option<u64> = None;
    // Applied entries and leadership changes show in the metrics: waking on them rather
    // than on the poll alone saves a write up to a whole poll interval on its way to the
    // nodes (the fleet-apply-latency bench measured every write taking ~200 ms).
    let mut raft_metrics = Some(raft.metrics());
    // Every NAT IP of this leadership (see `Assignment::nat_ips`).
    let mut nat_ips_seen: BTreeSet<Ipv4Addr> = BTreeSet::new();
    // The IPv6 routes made on each node during this leadership (see `SharedIpv6Routes`).
    let mut ipv6_routes: BTreeMap<String, SharedIpv6Routes> = BTreeMap::new();
    let stop_all = |tasks: &mut BTreeMap<String, NodeTask>| {
        for (_, t) in std::mem::take(tasks) {
            t.handle.abort();
        }
        status.send_replace(ReconcileStatus::new());
    };
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(config.poll) => {}
            changed = async { raft_metrics.as_mut()?.changed().await.ok() }, if raft_metrics.is_some() => {
                if changed.is_none() {
                    // Raft has shut down: no more changes to wait for.
                    raft_metrics = None;
                }
            }
        }
        let leading = raft.metrics().borrow().current_leader == Some(id);
        if !leading {
            if !tasks.is_empty() {
                tracing::info!("not the leader any more: reconciler paused");
                stop_all(&mut tasks);
            }
            planned = None;
            nat_ips_seen.clear();
            ipv6_routes.clear();
            continue;
        }
        let generation = state.read(|s| s.fleet.generation());
        if planned == Some(generation) {
            continue;
        }
        let fleet = state.read(|s| s.fleet.clone());
        let mut seen = nat_ips_seen.clone();
        let planned_nodes = tokio::task::spawn_blocking(move || {
            let plans = plan_nodes(&fleet, &mut seen);
            (plans, seen)
        });
        let Ok((plans, seen)) = planned_nodes.await else {
            tracing::error!("planning the nodes failed");
            continue;
        };
        nat_ips_seen = seen;
        planned = Some(generation);
        tasks.retain(|node, t| {
            let keep = plans.get(node).is_some_and(|(endpoint, _)| *endpoint == t.endpoint);
            if !keep {
                t.handle.abort();
                status.send_modify(|s| {
                    s.remove(node);
                });
            }
            keep
        });
        for (node, (endpoint, assignment)) in plans {
            let assignment = Arc::new(assignment);
            match tasks.get(&node) {
                Some(t) => {
                    t.desired.send_replace(assignment);
                }
                None => {
                    let (tx, rx) = watch::channel(assignment);
                    let routes = ipv6_routes.entry(node.clone()).or_default().clone();
                    let handle = tokio::spawn(node_task(
                        node.clone(),
                        endpoint.clone(),
                        rx,
                        routes,
                        status.clone(),
                        config.clone(),
                    ));
                    tasks.insert(node, NodeTask { endpoint, desired: tx, handle });
                }
            }
        }
    }
    stop_all(&mut tasks);
}

/// The IPv6 routes the reconciler made on one node (the node API cannot list them). It
/// outlives the node's task: a node that goes down (its task stops) and comes back
/// without a restart still has them, and the new task must know them to remove those no
/// longer desired.
type SharedIpv6Routes = Arc<Mutex<Ipv6Routes>>;

fn lock(routes: &SharedIpv6Routes) -> std::sync::MutexGuard<'_, Ipv6Routes> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a node task remembers between rounds.
#[derive(Default)]
struct Memory {
    client: Option<NodeClient>,
    ipv6: SharedIpv6Routes,
    /// The desired state last applied without error on this node instance.
    last_good: Option<Arc<Assignment>>,
    /// The generation last recorded on the node.
    last_set: u64,
    last_full_read: Option<Instant>,
    /// The generation the node last reported.
    node_applied: u64,
}

async fn node_task(
    node: String,
    endpoint: String,
    mut desired: watch::Receiver<Arc<Assignment>>,
    ipv6: SharedIpv6Routes,
    status: Arc<watch::Sender<ReconcileStatus>>,
    config: ReconcilerConfig,
) {
    let mut mem = Memory { ipv6, ..Memory::default() };
    let mut backoff = config.backoff_min;
    loop {
        let assignment = desired.borrow_and_update().clone();
        let generation = assignment.desired.generation;
        let result = reconcile_once(&endpoint, &assignment, &mut mem, &config).await;
        let failed = result.is_err();
        status.send_modify(|s| {
            let entry = s.entry(node.clone()).or_default();
            entry.applied_generation = mem.node_applied;
            entry.lag_generations = generation.saturating_sub(mem.node_applied);
            entry.problems.clone_from(&assignment.desired.problems);
            match &result {
                Ok(()) => entry.last_error = None,
                Err(e) => {
                    entry.errors_total += 1;
                    entry.last_error = Some(e.to_string());
                }
            }
        });
        if let Err(e) = result {
            tracing::warn!(node = %node, endpoint = %endpoint, "reconcile failed: {e}");
            if matches!(e, ExecError::Connect { .. } | ExecError::Rpc { .. }) {
                mem.client = None;
            }
        }
        if failed {
            // Back off whatever changes meanwhile; the next round takes the latest state.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.backoff_max);
            continue;
        }
        backoff = config.backoff_min;
        tokio::select! {
            r = desired.changed() => if r.is_err() { return },
            () = tokio::time::sleep(config.repair_interval) => {}
        }
    }
}

/// Whether two desired states hold the same objects (generations aside).
fn same_objects(a: &NodeDesired, b: &NodeDesired) -> bool {
    a.interfaces == b.interfaces
        && a.routes == b.routes
        && a.neighbor_nats == b.neighbor_nats
        && a.load_balancers == b.load_balancers
}

/// Whether the node's reported tables are the desired ones.
fn tables_match(status: &NodeStatus, desired: &NodeDesired) -> bool {
    status.tables.len() == desired.load_balancers.len()
        && desired.load_balancers.iter().all(|(id, lb)| {
            status.tables.get(id).is_some_and(|t| match &lb.table {
                Some(want) => t.epoch == want.epoch && t.digest == want.digest,
                None => t.targets == 0,
            })
        })
}

async fn reconcile_once(
    endpoint: &str,
    assignment: &Arc<Assignment>,
    mem: &mut Memory,
    config: &ReconcilerConfig,
) -> Result<(), ExecError> {
    let desired = &assignment.desired;
    let client = match &mut mem.client {
        Some(c) => c,
        slot @ None => slot.insert(NodeClient::connect(endpoint, config.call_timeout).await?),
    };
    let instance = client.ensure_initialized().await?;
    {
        let mut routes = lock(&mem.ipv6);
        if routes.instance != instance {
            if !routes.instance.is_empty() {
                tracing::info!(endpoint, instance = %instance, "the node restarted: repairing it");
            }
            *routes = Ipv6Routes { instance, routes: BTreeMap::new() };
            mem.last_good = None;
        }
    }
    let status = client.status().await?;
    mem.node_applied = status.applied_generation;
    let unchanged = mem.last_good.as_ref().is_some_and(|g| same_objects(&g.desired, desired))
        && mem.last_full_read.is_some_and(|t| t.elapsed() < config.full_read_interval)
        && status.applied_generation == mem.last_set
        && tables_match(&status, desired);
    let actions = if unchanged {
        let mut a = Vec::new();
        if status.applied_generation != desired.generation {
            a.push(Action::SetAppliedGeneration {
                generation: desired.generation,
                force: status.applied_generation > desired.generation,
            });
        }
        a
    } else {
        let routes = lock(&mem.ipv6).clone();
        let actual = client.read(&status, &routes, &assignment.nat_ips).await?;
        mem.last_full_read = Some(Instant::now());
        diff(&actual, desired)
    };
    if !actions.is_empty() {
        tracing::debug!(endpoint, actions = actions.len(), generation = desired.generation, "reconciling");
    }
    let mut first_error = None;
    for action in &actions {
        if matches!(action, Action::SetAppliedGeneration { .. }) && first_error.is_some() {
            break;
        }
        let result = client.call(action).await;
        if result.is_ok() {
            lock(&mem.ipv6).record(action);
        }
        if let Err(e) = result {
            tracing::warn!(endpoint, "{e}");
            let fatal = !matches!(e, ExecError::Refused { .. });
            first_error.get_or_insert(e);
            if fatal {
                break;
            }
        }
    }
    if let Some(e) = first_error {
        mem.last_good = None;
        return Err(e);
    }
    lock(&mem.ipv6).retain_vnis(&desired.vnis);
    mem.last_good = Some(assignment.clone());
    mem.last_set = desired.generation;
    mem.node_applied = desired.generation;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::state::{Command, NatGatewaySpec, Op};

    fn apply(s: &mut FleetState, op: Op) {
        s.apply(Command::new(op.clone())).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }

    #[test]
    fn neighbor_nats_are_looked_for_on_the_ips_of_deleted_gateways_too() {
        let mut s = FleetState::new();
        apply(
            &mut s,
            Op::RegisterNode {
                id: "n1".into(),
                underlay: Ipv6Addr::new(0xfc00, 1, 0, 0, 0, 0, 0, 1),
                api_endpoint: "[::1]:1337".into(),
                devices: vec!["net_tap2".into()],
            },
        );
        apply(&mut s, Op::CreateVni { vni: 100 });
        let gw = |id: &str, ip: [u8; 4]| NatGatewaySpec {
            id: id.into(),
            vni: 100,
            public_ips: vec![Ipv4Addr::from(ip)],
            port_min: 1024,
            port_max: 2048,
            block_size: 256,
        };
        apply(&mut s, Op::CreateNatGateway(gw("gw1", [45, 86, 6, 100])));
        apply(&mut s, Op::CreateNatGateway(gw("gw2", [45, 86, 6, 101])));
        let mut seen = BTreeSet::new();
        let plans = plan_nodes(&s, &mut seen);
        let both: BTreeSet<Ipv4Addr> =
            ["45.86.6.100".parse().unwrap(), "45.86.6.101".parse().unwrap()].into();
        assert_eq!(*plans["n1"].1.nat_ips, both);
        apply(&mut s, Op::DeleteNatGateway { id: "gw1".into() });
        let plans = plan_nodes(&s, &mut seen);
        assert_eq!(*plans["n1"].1.nat_ips, both, "gw1's IP is still looked at");
        assert_eq!(seen, both);
    }
}
