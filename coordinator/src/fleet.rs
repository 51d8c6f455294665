//! The membership loop: the I/O around [`Membership`].
//!
//! Every member runs it. Each tick (250 ms by default) it takes the latest gossip view
//! and the applied fleet state and asks the manager what to change, which keeps every
//! member's memory of when nodes were last live current. Only a leader that has applied
//! every entry committed before its term (so its state is the committed state) commits
//! the transitions, one `client_write` each, and logs each one at info level once it is
//! committed; the manager's rules make them idempotent, so nothing is proposed twice
//! once committed. A write refused with `ForwardToLeader` means leadership was lost: the
//! rest of the round is dropped and the new leader decides for itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::gossip::GossipView;
use crate::membership::{Membership, MembershipConfig};
use crate::raft_types::Raft;
use crate::state::Command;
use crate::store::StateMachineStore;

/// The loop's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// How often the loop runs.
    pub tick: Duration,
    /// The manager's settings.
    pub membership: MembershipConfig,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig { tick: Duration::from_millis(250), membership: MembershipConfig::default() }
    }
}

/// The running loop.
pub struct MembershipLoop {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MembershipLoop {
    /// Starts the loop for the member whose Raft handle and state these are, reading
    /// gossip from `view`.
    pub fn spawn(
        raft: Raft,
        state: StateMachineStore,
        view: watch::Receiver<Arc<GossipView>>,
        config: FleetConfig,
    ) -> MembershipLoop {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(raft, state, view, config, stopped));
        MembershipLoop { stop, task }
    }

    /// Stops the loop (a write in flight is abandoned; Raft may still commit it).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Whether this member is a leader whose applied state includes everything committed
/// before its term: the blank entry of its own term is applied.
fn ready_leader(raft: &Raft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    m.state == ServerState::Leader
        && m.current_leader == Some(m.id)
        && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
}

/// Logs each node's key problem once, when it appears or changes, and when it is gone.
fn report_key_errors(view: &GossipView, reported: &mut BTreeMap<String, String>) {
    for (name, node) in &view.nodes {
        match &node.keys {
            Err(e) => {
                let e = e.to_string();
                if reported.get(name) != Some(&e) {
                    tracing::warn!(node = %name, generation_id = node.generation_id, error = %e, "node gossips unusable keys");
                    reported.insert(name.clone(), e);
                }
            }
            Ok(_) => {
                if reported.remove(name).is_some() {
                    tracing::info!(node = %name, "node gossips valid keys again");
                }
            }
        }
    }
    reported.retain(|name, _| view.nodes.contains_key(name));
}

async fn run(
    raft: Raft,
    state: StateMachineStore,
    view: watch::Receiver<Arc<GossipView>>,
    config: FleetConfig,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut membership = Membership::new(config.membership);
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut key_errors = BTreeMap::new();
    // The last refusal logged per node, so a persistent one is logged once.
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    tracing::info!(
        node_down_after_ms = config.membership.node_down_after.as_millis(),
        "membership manager started"
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stopped => return,
        }
        let view = view.borrow().clone();
        report_key_errors(&view, &mut key_errors);
        let now = Instant::now();
        let transitions = state.read(|applied| membership.decide(&view, &applied.fleet, now));
        if transitions.is_empty() || !ready_leader(&raft) {
            continue;
        }
        for t in transitions {
            match raft.client_write(Command::new(t.op.clone())).await {
                Ok(reply) => match reply.data {
                    Ok(_) => {
                        tracing::info!(node = %t.node, log_index = reply.log_id.index, "{t}");
                        refused.remove(&t.node);
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if refused.get(&t.node) != Some(&e) {
                            tracing::warn!(node = %t.node, error = %e, "the state refused a membership change: {t}");
                            refused.insert(t.node.clone(), e);
                        }
                    }
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    tracing::debug!(leader = ?f.leader_id, "leadership lost; membership changes left to the new leader");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "committing a membership change failed: {t}");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{GossipNode, KeyError};

    #[test]
    fn key_errors_are_reported_once_per_change() {
        let node = |keys| GossipNode {
            name: "n1".into(),
            generation_id: 1,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            live: true,
            keys,
        };
        let view = |keys| GossipView {
            nodes: [("n1".to_owned(), node(keys))].into_iter().collect(),
            coordinators: BTreeMap::new(),
        };
        let mut reported = BTreeMap::new();
        report_key_errors(&view(Err(KeyError::Missing("api"))), &mut reported);
        assert_eq!(reported["n1"], "key \"api\" is missing");
        report_key_errors(&view(Err(KeyError::Missing("underlay"))), &mut reported);
        assert_eq!(reported["n1"], "key \"underlay\" is missing");
        report_key_errors(&GossipView::default(), &mut reported);
        assert!(reported.is_empty());
    }
}
