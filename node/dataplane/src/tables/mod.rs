//! Lookup tables read by the stages. Built by the control plane, immutable once published.

/// Per-worker interned IPv6 addresses that flow actions refer to.
pub mod addrpool;
/// Per-worker flow table: unlike the other tables, owned and changed by its worker.
pub mod conntrack;
pub mod firewall;
/// DPDK's jhash and the keys dpservice hashes with it.
pub mod jhash;
pub mod lb;
pub mod lpm;
pub(crate) mod mix;
pub mod nat;
