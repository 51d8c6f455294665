//! The reconciler: the leader drives every live node to its desired state.
pub mod bench;
pub mod plan;
