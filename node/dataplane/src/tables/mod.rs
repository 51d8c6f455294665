//! Lookup tables read by the stages. Built by the control plane, immutable once published.

/// Per-worker flow table: unlike the other tables, owned and changed by its worker.
pub mod conntrack;
pub mod firewall;
pub mod lpm;
pub mod nat;
