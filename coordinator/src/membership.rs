//! The leader's membership manager: turns what gossip sees into node state changes to
//! commit through Raft.
//!
//! [`Membership::decide`] is a pure function of the gossip view, the committed fleet
//! state, the time passed in and the manager's own memory (when it last saw each node
//! live). It returns [`Transition`]s, each carrying the [`Op`] to commit; it commits
//! nothing itself and reads no clock. The rules, for each node:
//!
//! - live in gossip, unknown to the state, keys valid → `RegisterNode` (it starts
//!   `joining`);
//! - known, live, and its underlay, API endpoint or devices differ from the state →
//!   `RegisterNode` again (the state keeps its lifecycle state);
//! - not live for longer than [`MembershipConfig::node_down_after`], and not `down` →
//!   `SetNodeState down`. "Not live" means chitchat's failure detector deems it dead or it
//!   is absent from gossip; a node is never declared down on one missed heartbeat: the
//!   failure detector needs several, and the grace period runs after that;
//! - `down` and live again (same or new chitchat generation) → `SetNodeState joining`;
//! - `joining`, and the desired-state generation it reports as applied is at least the
//!   generation at which it (re-)joined → `SetNodeState active`. The reconciler publishes
//!   nothing itself: the node reports its applied generation in gossip once the
//!   reconciler has converged it;
//! - `draining` stays `draining` while live (the operator drains a node through the
//!   cluster API; undraining is the API setting it `active` again); a draining node that
//!   goes down becomes `down`, and `joining` when it comes back, like any node.
//!
//! A node the manager has never seen live starts its grace period when the manager
//! first looks at it: a new leader does not declare nodes down before gossip had the
//! time to tell it about them. Every member runs the manager (keeping its memory
//! current) and only the leader commits what it returns, so a new leader starts with a
//! memory as recent as its gossip.
//!
//! Idempotence: the returned transitions depend only on the committed state, the view
//! and the memory, and each moves the state to where the same inputs return nothing for
//! that node, so once they are committed, deciding again with the same view proposes
//! nothing.
//!
//! A restart shorter than the failure detection plus the grace period leaves the node's
//! state as it was (the node is live again with a new chitchat generation before it is
//! declared down); the reconciler repairs the node's configuration, as after any drift.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::gossip::{GossipView, NodeKeys};
use crate::state::{FleetState, Node, NodeState, Op};

/// The default grace period before a node that is not live is declared down.
pub const DEFAULT_NODE_DOWN_AFTER: Duration = Duration::from_secs(3);

/// The manager's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How long a node may be not live before it is declared down (strictly longer).
    pub node_down_after: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig { node_down_after: DEFAULT_NODE_DOWN_AFTER }
    }
}

/// Why a transition is proposed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Live in gossip and unknown to the state.
    Discovered,
    /// Its underlay, API endpoint or devices changed.
    EndpointChanged,
    /// Not live for this long, longer than the grace period.
    NotLive(Duration),
    /// Down, and live again with this chitchat generation.
    LiveAgain {
        /// The chitchat generation seen live.
        generation_id: u64,
    },
    /// Joining, and has applied a generation at least the one it joined at.
    Converged {
        /// The generation it reports as applied.
        applied: u64,
        /// The generation it joined at.
        joined: u64,
    },
}

/// A change the leader should commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The node.
    pub node: String,
    /// Its state in the committed state before the change (`None`: unknown).
    pub from: Option<NodeState>,
    /// The operation to commit.
    pub op: Op,
    /// Why.
    pub reason: Reason,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = |s: Option<NodeState>| match s {
            None => "unknown",
            Some(NodeState::Joining) => "joining",
            Some(NodeState::Active) => "active",
            Some(NodeState::Draining) => "draining",
            Some(NodeState::Down) => "down",
        };
        match &self.op {
            Op::RegisterNode { underlay, api_endpoint, .. } => write!(
                f,
                "node {} ({}) registered: underlay {underlay}, API {api_endpoint}",
                self.node,
                state(self.from)
            )?,
            Op::SetNodeState { state: to, .. } => {
                write!(f, "node {}: {} -> {}", self.node, state(self.from), state(Some(*to)))?
            }
            op => write!(f, "node {}: {op:?}", self.node)?,
        }
        match &self.reason {
            Reason::Discovered => write!(f, " (new in gossip)"),
            Reason::EndpointChanged => write!(f, " (its gossiped address, endpoint or devices changed)"),
            Reason::NotLive(d) => write!(f, " (not live for {} ms)", d.as_millis()),
            Reason::LiveAgain { generation_id } => {
                write!(f, " (live again, gossip generation {generation_id})")
            }
            Reason::Converged { applied, joined } => {
                write!(f, " (applied generation {applied} >= joined generation {joined})")
            }
        }
    }
}

/// The membership manager and its memory.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    config: MembershipConfig,
    /// When each node was last seen live (or first looked at).
    last_live: BTreeMap<String, Instant>,
}

/// The devices the state holds for `node`.
fn committed_devices(node: &Node) -> Option<&[String]> {
    Some(&node.devices)
}

/// The `RegisterNode` for `name` with its gossiped keys.
fn register_op(name: &str, keys: &NodeKeys) -> Op {
    Op::RegisterNode {
        id: name.to_owned(),
        underlay: keys.underlay,
        api_endpoint: keys.api.clone(),
        devices: keys.devices.clone(),
    }
}

impl Membership {
    /// A manager with an empty memory.
    pub fn new(config: MembershipConfig) -> Self {
        Membership { config, ..Default::default() }
    }

    /// The settings.
    pub fn config(&self) -> MembershipConfig {
        self.config
    }

    /// The transitions to commit, given what gossip sees, the committed state and the
    /// time now. Updates the memory of when nodes were last live.
    pub fn decide(&mut self, view: &GossipView, state: &FleetState, now: Instant) -> Vec<Transition> {
        let grace = self.config.node_down_after;
        let committed = state.nodes();
        self.last_live.retain(|name, _| committed.contains_key(name) || view.nodes.contains_key(name));
        let mut names: Vec<&String> = committed.keys().chain(view.nodes.keys()).collect();
        names.sort();
        names.dedup();

        let mut out = Vec::new();
        for name in names {
            let gossip = view.nodes.get(name);
            let live = gossip.is_some_and(|g| g.live);
            let last_live = self.last_live.entry(name.clone()).or_insert(now);
            if live {
                *last_live = now;
            }
            let not_live_for = now.saturating_duration_since(*last_live);
            let keys = gossip.and_then(|g| g.keys.as_ref().ok());
            let transition = |op, reason| Transition {
                node: name.clone(),
                from: committed.get(name).map(|n| n.state),
                op,
                reason,
            };
            let set_state = |state| Op::SetNodeState { id: name.clone(), state };

            let Some(node) = committed.get(name) else {
                if let (true, Some(keys)) = (live, keys) {
                    out.push(transition(register_op(name, keys), Reason::Discovered));
                }
                continue;
            };
            if !live {
                if node.state != NodeState::Down && not_live_for > grace {
                    out.push(transition(set_state(NodeState::Down), Reason::NotLive(not_live_for)));
                }
                continue;
            }
            if let Some(keys) = keys {
                let devices_changed = committed_devices(node).is_some_and(|d| d != keys.devices.as_slice());
                if node.underlay != keys.underlay || node.api_endpoint != keys.api || devices_changed {
                    out.push(transition(register_op(name, keys), Reason::EndpointChanged));
                }
            }
            match node.state {
                NodeState::Down => {
                    let generation_id = gossip.map_or(0, |g| g.generation_id);
                    out.push(transition(set_state(NodeState::Joining), Reason::LiveAgain { generation_id }));
                }
                NodeState::Joining => {
                    let joined = node.joined_generation;
                    if let Some(applied) = keys.and_then(|k| k.applied_generation) {
                        if applied >= joined {
                            out.push(transition(
                                set_state(NodeState::Active),
                                Reason::Converged { applied, joined },
                            ));
                        }
                    }
                }
                // Undraining is the cluster API's: it sets the node active.
                NodeState::Active | NodeState::Draining => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr};

    use super::*;
    use crate::gossip::{GossipNode, KeyError};
    use crate::state::Command;

    const GRACE: Duration = Duration::from_secs(3);
    const MS: Duration = Duration::from_millis(1);

    fn underlay(i: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, i)
    }

    fn keys(i: u16, applied: Option<u64>) -> NodeKeys {
        NodeKeys {
            underlay: underlay(i),
            api: format!("[{}]:1337", underlay(i)),
            version: Some("0.1.0".into()),
            applied_generation: applied,
            devices: vec!["net_tap1".into()],
            load_flows: None,
            load_nat_ports_used: None,
        }
    }

    fn gossip_node(
        name: &str,
        generation_id: u64,
        live: bool,
        keys: Result<NodeKeys, KeyError>,
    ) -> GossipNode {
        let gossip_addr: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        GossipNode { name: name.into(), generation_id, gossip_addr, live, keys }
    }

    /// A gossip view: (name, chitchat generation, live, keys).
    fn view(nodes: &[(&str, u64, bool, Result<NodeKeys, KeyError>)]) -> GossipView {
        let nodes = nodes
            .iter()
            .map(|(name, generation, live, keys)| {
                ((*name).to_owned(), gossip_node(name, *generation, *live, keys.clone()))
            })
            .collect();
        GossipView { nodes, coordinators: BTreeMap::new() }
    }

    /// One live node `n<i>` with valid keys.
    fn live(i: u16, generation_id: u64, applied: Option<u64>) -> GossipView {
        view(&[(&format!("n{i}"), generation_id, true, Ok(keys(i, applied)))])
    }

    fn dead(i: u16, generation_id: u64) -> GossipView {
        view(&[(&format!("n{i}"), generation_id, false, Ok(keys(i, None)))])
    }

    /// The manager with the state it drives: every decision is committed, like the
    /// leader does.
    struct Sim {
        m: Membership,
        state: FleetState,
        t0: Instant,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                m: Membership::new(MembershipConfig { node_down_after: GRACE }),
                state: FleetState::new(),
                t0: Instant::now(),
            }
        }

        /// Decides at `t0 + at` and commits what was decided.
        fn step(&mut self, view: &GossipView, at: Duration) -> Vec<Transition> {
            let out = self.m.decide(view, &self.state, self.t0 + at);
            for t in &out {
                self.state.apply(Command::new(t.op.clone())).expect("transition applies");
            }
            // Idempotent: the same inputs now propose nothing.
            assert_eq!(self.m.decide(view, &self.state, self.t0 + at), vec![], "after {out:?}");
            out
        }

        fn node_state(&self, name: &str) -> Option<NodeState> {
            self.state.nodes().get(name).map(|n| n.state)
        }

        fn set(&mut self, name: &str, state: NodeState) {
            self.state.apply(Command::new(Op::SetNodeState { id: name.into(), state })).unwrap();
        }
    }

    fn ops(ts: &[Transition]) -> Vec<Op> {
        ts.iter().map(|t| t.op.clone()).collect()
    }

    fn set_state(name: &str, state: NodeState) -> Op {
        Op::SetNodeState { id: name.into(), state }
    }

    #[test]
    fn a_live_unknown_node_is_registered_joining() {
        let mut s = Sim::new();
        let out = s.step(&live(1, 100, Some(0)), Duration::ZERO);
        assert_eq!(
            ops(&out),
            vec![Op::RegisterNode {
                id: "n1".into(),
                underlay: underlay(1),
                api_endpoint: "[fc00::1]:1337".into(),
                devices: vec!["net_tap1".into()],
            }]
        );
        assert_eq!(out[0].reason, Reason::Discovered);
        assert_eq!(out[0].from, None);
        assert_eq!(s.node_state("n1"), Some(NodeState::Joining));
    }

    #[test]
    fn unknown_nodes_that_are_dead_or_malformed_are_not_registered() {
        let mut s = Sim::new();
        assert_eq!(s.step(&dead(1, 100), Duration::ZERO), vec![]);
        let bad = view(&[("n2", 1, true, Err(KeyError::Missing("underlay")))]);
        assert_eq!(s.step(&bad, Duration::ZERO), vec![]);
        assert!(s.state.nodes().is_empty());
    }

    #[test]
    fn a_changed_endpoint_is_registered_again_keeping_the_state() {
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        s.set("n1", NodeState::Active);
        let mut moved = keys(1, Some(5));
        moved.api = "[fc00::1]:1338".into();
        let out = s.step(&view(&[("n1", 100, true, Ok(moved))]), Duration::from_secs(1));
        assert_eq!(
            ops(&out),
            vec![Op::RegisterNode {
                id: "n1".into(),
                underlay: underlay(1),
                api_endpoint: "[fc00::1]:1338".into(),
                devices: vec!["net_tap1".into()],
            }]
        );
        assert_eq!(out[0].reason, Reason::EndpointChanged);
        assert_eq!(s.node_state("n1"), Some(NodeState::Active));
        assert_eq!(s.state.nodes()["n1"].api_endpoint, "[fc00::1]:1338");
        let mut renumbered = keys(1, Some(5));
        renumbered.underlay = underlay(9);
        let out = s.step(&view(&[("n1", 100, true, Ok(renumbered))]), Duration::from_secs(2));
        assert_eq!(out.len(), 1);
        assert_eq!(s.state.nodes()["n1"].underlay, underlay(9));
    }

    #[test]
    fn down_only_after_the_grace_period() {
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        s.set("n1", NodeState::Active);
        // Last seen live at 1 s; dead from then on.
        s.step(&live(1, 100, Some(0)), Duration::from_secs(1));
        for at in [Duration::from_millis(1250), Duration::from_secs(2), Duration::from_secs(4)] {
            assert_eq!(s.step(&dead(1, 100), at), vec![]);
        }
        // Exactly the grace period after: still not down.
        assert_eq!(s.step(&dead(1, 100), Duration::from_secs(1) + GRACE), vec![]);
        // Absent from gossip counts as not live too.
        let out = s.step(&GossipView::default(), Duration::from_secs(1) + GRACE + MS);
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Down)]);
        assert_eq!(out[0].reason, Reason::NotLive(GRACE + MS));
        assert_eq!(out[0].from, Some(NodeState::Active));
        // Down stays down while dead.
        assert_eq!(s.step(&dead(1, 100), Duration::from_secs(60)), vec![]);
    }

    #[test]
    fn one_missed_beat_or_flapping_never_takes_a_node_down() {
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        s.set("n1", NodeState::Active);
        // Live 250 ms, dead 2.75 s, over and over for a minute: never longer than the grace.
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(60) {
            assert_eq!(s.step(&live(1, 100, Some(0)), t), vec![]);
            for dt in (250..=3000).step_by(250) {
                assert_eq!(
                    s.step(&dead(1, 100), t + Duration::from_millis(dt)),
                    vec![],
                    "at {t:?} + {dt} ms"
                );
            }
            t += Duration::from_secs(3);
        }
        assert_eq!(s.node_state("n1"), Some(NodeState::Active));
    }

    #[test]
    fn the_grace_period_starts_when_the_manager_first_looks() {
        // A new leader: the state knows an active node gossip has not told it about yet.
        let mut s = Sim::new();
        s.state
            .apply(Command::new(Op::RegisterNode {
                id: "n1".into(),
                underlay: underlay(1),
                api_endpoint: "[fc00::1]:1337".into(),
                devices: vec!["net_tap1".into()],
            }))
            .unwrap();
        s.set("n1", NodeState::Active);
        let start = Duration::from_secs(100);
        assert_eq!(s.step(&GossipView::default(), start), vec![]);
        assert_eq!(s.step(&GossipView::default(), start + GRACE), vec![]);
        let out = s.step(&GossipView::default(), start + GRACE + MS);
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Down)]);
    }

    #[test]
    fn a_down_node_live_again_rejoins_with_the_same_or_a_new_generation() {
        for generation in [100, 200] {
            let mut s = Sim::new();
            s.step(&live(1, 100, Some(0)), Duration::ZERO);
            s.set("n1", NodeState::Active);
            s.step(&dead(1, 100), GRACE + MS);
            assert_eq!(s.node_state("n1"), Some(NodeState::Down));
            // Live again; it applied nothing yet (a restarted node starts empty).
            let out = s.step(&live(1, generation, Some(0)), Duration::from_secs(10));
            assert_eq!(ops(&out), vec![set_state("n1", NodeState::Joining)]);
            assert_eq!(out[0].reason, Reason::LiveAgain { generation_id: generation });
            assert_eq!(s.node_state("n1"), Some(NodeState::Joining));
        }
    }

    #[test]
    fn a_restart_seen_as_two_generations_rejoins_once() {
        // chitchat remembers the dead old generation next to the new live one; the view
        // shows the live one (gossip::GossipView::from_members), so the node rejoins.
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        s.set("n1", NodeState::Active);
        s.step(&dead(1, 100), GRACE + MS);
        let out = s.step(&live(1, 200, Some(0)), Duration::from_secs(5));
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Joining)]);
        // A restart shorter than the grace period changes nothing (see the module docs).
        s.set("n1", NodeState::Active);
        assert_eq!(s.step(&dead(1, 200), Duration::from_secs(6)), vec![]);
        assert_eq!(s.step(&live(1, 300, Some(0)), Duration::from_secs(7)), vec![]);
    }

    #[test]
    fn joining_becomes_active_once_it_applied_the_joined_generation() {
        let mut s = Sim::new();
        let out = s.step(&live(1, 100, None), Duration::ZERO);
        let joined = s.state.generation();
        assert_eq!(out.len(), 1);
        // Nothing applied reported, or less than the joined generation: still joining.
        assert_eq!(s.step(&live(1, 100, None), Duration::from_secs(1)), vec![]);
        assert_eq!(s.step(&live(1, 100, Some(joined - 1)), Duration::from_secs(1)), vec![]);
        // Other changes to the fleet do not move the bar.
        s.state.apply(Command::new(Op::CreateVni { vni: 7 })).unwrap();
        let out = s.step(&live(1, 100, Some(joined)), Duration::from_secs(2));
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Active)]);
        assert_eq!(out[0].reason, Reason::Converged { applied: joined, joined });
        // Active stays active.
        assert_eq!(s.step(&live(1, 100, Some(joined)), Duration::from_secs(3)), vec![]);
    }

    #[test]
    fn a_rejoin_raises_the_bar_to_the_rejoin_generation() {
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        let first = s.state.generation();
        s.step(&live(1, 100, Some(first)), Duration::ZERO);
        assert_eq!(s.node_state("n1"), Some(NodeState::Active));
        s.step(&dead(1, 100), GRACE + MS);
        // Back with a new generation but still reporting the old applied generation.
        s.step(&live(1, 200, Some(first)), Duration::from_secs(10));
        let rejoined = s.state.generation();
        assert!(rejoined > first);
        assert_eq!(s.node_state("n1"), Some(NodeState::Joining));
        assert_eq!(s.step(&live(1, 200, Some(rejoined - 1)), Duration::from_secs(11)), vec![]);
        let out = s.step(&live(1, 200, Some(rejoined)), Duration::from_secs(12));
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Active)]);
    }

    #[test]
    fn a_join_by_an_earlier_leader_waits_for_the_current_generation() {
        // The manager did not commit the registration: the committed joined generation
        // is what counts.
        let mut s = Sim::new();
        s.state
            .apply(Command::new(Op::RegisterNode {
                id: "n1".into(),
                underlay: underlay(1),
                api_endpoint: "[fc00::1]:1337".into(),
                devices: vec!["net_tap1".into()],
            }))
            .unwrap();
        let joined = s.state.generation();
        s.state.apply(Command::new(Op::CreateVni { vni: 7 })).unwrap();
        assert_eq!(s.step(&live(1, 100, Some(joined - 1)), Duration::ZERO), vec![]);
        let out = s.step(&live(1, 100, Some(joined)), Duration::ZERO);
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Active)]);
    }

    #[test]
    fn draining_stays_draining_unless_it_goes_down() {
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        s.set("n1", NodeState::Draining);
        assert_eq!(s.step(&live(1, 100, Some(99)), Duration::from_secs(1)), vec![]);
        let out = s.step(&dead(1, 100), Duration::from_secs(1) + GRACE + MS);
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Down)]);
        assert_eq!(out[0].from, Some(NodeState::Draining));
        let out = s.step(&live(1, 100, Some(0)), Duration::from_secs(10));
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Joining)]);
    }

    #[test]
    fn a_down_node_with_a_new_endpoint_is_registered_and_rejoins() {
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        s.step(&dead(1, 100), GRACE + MS);
        let mut moved = keys(1, Some(0));
        moved.api = "[fc00::1]:2000".into();
        let out = s.step(&view(&[("n1", 200, true, Ok(moved))]), Duration::from_secs(10));
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[0].op, Op::RegisterNode { api_endpoint, .. } if api_endpoint == "[fc00::1]:2000")
        );
        assert_eq!(out[1].op, set_state("n1", NodeState::Joining));
    }

    #[test]
    fn malformed_keys_count_for_liveness_only() {
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        let bad = |live| view(&[("n1", 100, live, Err(KeyError::Missing("api")))]);
        // Live with bad keys: not down however long, but neither re-registered nor
        // activated.
        assert_eq!(s.step(&bad(true), Duration::from_secs(10)), vec![]);
        assert_eq!(s.node_state("n1"), Some(NodeState::Joining));
        let out = s.step(&bad(false), Duration::from_secs(10) + GRACE + MS);
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Down)]);
        let out = s.step(&bad(true), Duration::from_secs(20));
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Joining)]);
    }

    #[test]
    fn two_nodes_are_judged_independently() {
        let mut s = Sim::new();
        let both = |l1: bool, l2: bool, applied: Option<u64>| {
            view(&[("n1", 100, l1, Ok(keys(1, applied))), ("n2", 500, l2, Ok(keys(2, applied)))])
        };
        let out = s.step(&both(true, true, Some(0)), Duration::ZERO);
        assert_eq!(out.iter().map(|t| t.node.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
        let g = s.state.generation();
        let out = s.step(&both(true, true, Some(g)), Duration::from_secs(1));
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Active), set_state("n2", NodeState::Active)]);
        // n2 goes silent, n1 keeps gossiping.
        assert_eq!(s.step(&both(true, false, Some(g)), Duration::from_secs(2)), vec![]);
        let out = s.step(&both(true, false, Some(g)), Duration::from_secs(4) + GRACE);
        assert_eq!(ops(&out), vec![set_state("n2", NodeState::Down)]);
        assert_eq!(s.node_state("n1"), Some(NodeState::Active));
        // n1 silent too: down on its own clock (last live at 4 s + grace).
        let t1 = Duration::from_secs(4) + GRACE;
        assert_eq!(s.step(&both(false, false, Some(g)), t1 + GRACE), vec![]);
        let out = s.step(&both(false, false, Some(g)), t1 + GRACE + MS);
        assert_eq!(ops(&out), vec![set_state("n1", NodeState::Down)]);
    }

    #[test]
    fn forgotten_nodes_leave_the_memory() {
        let mut s = Sim::new();
        s.step(&live(1, 100, Some(0)), Duration::ZERO);
        s.state.apply(Command::new(Op::RemoveNode { id: "n1".into() })).unwrap();
        s.step(&GossipView::default(), Duration::from_secs(1));
        assert!(s.m.last_live.is_empty());
    }

    #[test]
    fn transitions_read_well_in_logs() {
        let mut s = Sim::new();
        let out = s.step(&live(1, 100, Some(0)), Duration::ZERO);
        assert_eq!(
            out[0].to_string(),
            "node n1 (unknown) registered: underlay fc00::1, API [fc00::1]:1337 (new in gossip)"
        );
        let out = s.step(&dead(1, 100), GRACE + MS);
        assert_eq!(out[0].to_string(), "node n1: joining -> down (not live for 3001 ms)");
    }
}
