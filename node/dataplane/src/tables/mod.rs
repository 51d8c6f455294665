//! Lookup tables read by the stages. Built by the control plane, immutable once published.

pub mod firewall;
pub mod lpm;
