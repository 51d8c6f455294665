//! The contract between dpfleet's parts.
//!
//! - [`dpdkironcore::v1`]: the node API, wire-compatible with dpservice (generated from
//!   `dpdk.proto`; server and client).
//! - [`dpfleet::node::v1`]: dpfleet's own node API (`dpfleet_node.proto`): applied
//!   generation, node status, Maglev tables from the coordinator.
//! - [`types`]: validated domain types shared by the APIs.
//! - [`flowhash`]: the flow hash every process computes identically.
//! - [`maglev`]: the Maglev table builder shared by the coordinator and the nodes.
#![forbid(unsafe_code)]

/// dpservice's API package `dpdkironcore`.
pub mod dpdkironcore {
    /// Version 1 of the API (`dpdkironcore.v1`): messages, the `DPDKironcore` server
    /// trait (`dpd_kironcore_server`) and client (`dpd_kironcore_client`).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("dpdkironcore.v1");
    }
}

/// dpfleet's own APIs.
pub mod dpfleet {
    /// The node's dpfleet API.
    pub mod node {
        /// Version 1 (`dpfleet.node.v1`): messages, the `FleetNode` server trait
        /// (`fleet_node_server`) and client (`fleet_node_client`).
        #[allow(missing_docs, clippy::all, clippy::pedantic)]
        pub mod v1 {
            tonic::include_proto!("dpfleet.node.v1");
        }
    }
}

pub mod flowhash;
pub mod gossip;
pub mod maglev;
pub mod types;
