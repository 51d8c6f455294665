//! dpfleet-dpdk (being written).
