//! The gossip contract between nodes and coordinators: the chitchat cluster id, member
//! id prefixes and the keys each member publishes. Nodes publish them
//! (`node/src/gossip.rs`), coordinators read them (`coordinator/src/gossip.rs`); both
//! take the names from here so that they cannot drift apart.

/// The chitchat cluster id every node and coordinator of the fleet uses.
pub const CLUSTER_ID: &str = "dpfleet";
/// The `node_id` prefix of dataplane nodes: `node/<name>`.
pub const NODE_PREFIX: &str = "node/";
/// The `node_id` prefix of coordinator members: `coordinator/<raft id>`.
pub const COORDINATOR_PREFIX: &str = "coordinator/";

/// The keys members publish.
pub mod keys {
    /// [`ROLE_NODE`] or [`ROLE_COORDINATOR`].
    pub const ROLE: &str = "role";
    /// A node's underlay IPv6 address (`--ipv6`).
    pub const UNDERLAY: &str = "underlay";
    /// A node's API endpoint, `host:port` (`--api-advertise`).
    pub const API: &str = "api";
    /// The software version.
    pub const VERSION: &str = "version";
    /// The generation of desired state a node has applied (decimal).
    pub const GENERATION: &str = "generation";
    /// A node's VF device names, comma-separated (CreateInterface `device_name`).
    pub const DEVICES: &str = "devices";
    /// A node's number of tracked flows, all workers (decimal).
    pub const LOAD_FLOWS: &str = "load.flows";
    /// A node's NAT port mappings in use, all workers (decimal).
    pub const LOAD_NAT_PORTS_USED: &str = "load.nat_ports_used";
    /// A coordinator's Raft member id (decimal).
    pub const RAFT_ID: &str = "raft_id";
    /// A coordinator's gRPC endpoint (Raft and cluster API), `host:port`.
    pub const RAFT_ADDR: &str = "raft_addr";
    /// The value of [`ROLE`] for a node.
    pub const ROLE_NODE: &str = "node";
    /// The value of [`ROLE`] for a coordinator.
    pub const ROLE_COORDINATOR: &str = "coordinator";
}
