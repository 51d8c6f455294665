//! End-to-end test harness for `dpfleet-node`.
//!
//! Every test starts the real node binary in a network namespace of its own
//! ([`netns::Netns`], [`node::Node`]), talks to it through its gRPC API ([`api::Api`])
//! and through the kernel side of its TAP ports ([`tap::Tap`]) with frames built and
//! checked by [`frames`]. Addresses and options follow dpservice's own test suite
//! ([`topo`]). [`fixture::Fixture`] sets up the usual scene: a node, initialized, with
//! VMs and routes.
//!
//! The tests need root and fail (never skip) without it. Tests of one test binary run
//! their nodes one after another (nodes busy-poll their ports).

#![forbid(unsafe_code)]

pub mod api;
pub mod cluster;
pub mod fixture;
pub mod frames;
pub mod lbflow;
pub mod netns;
pub mod node;
pub mod tap;
pub mod topo;

use std::time::Duration;

/// What can go wrong while setting up a test scene.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command (`ip`, `sysctl`) failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its standard error.
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Anything else in the test setup.
    #[error("{0}")]
    Setup(String),
    /// The node exited while the test waited for it.
    #[error("dpfleet-node exited ({status}) during start; its log:\n{log}")]
    NodeDied {
        /// Exit status.
        status: String,
        /// Its output.
        log: String,
    },
    /// The node did not answer on its gRPC port in time.
    #[error("dpfleet-node did not open its gRPC port within {after:?}; its log:\n{log}")]
    NodeNotReady {
        /// How long the test waited.
        after: Duration,
        /// Its output.
        log: String,
    },
    /// A gRPC call failed at the transport or with a gRPC status.
    #[error("gRPC {method}: {status}")]
    Grpc {
        /// The method called.
        method: &'static str,
        /// What tonic reported.
        status: String,
    },
}
