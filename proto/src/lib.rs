//! dpfleet-proto (being written).
