//! The graph: the stages a packet can visit, why it can be dropped, and the runner.
//!
//! ```text
//!   VF rx ─ classify ─┬─ arp ───────────────────────────────────┐ (reply on the rx port)
//!                     ├─ nd (ICMPv6 133-137, IPv6 overlay) ─────┤
//!                     ├─ dhcp / dhcpv6 ─────────────────────────┘
//!                     ├─ virtsvc (IPv4 to a virtual service) ─ pf tx
//!                     └─ conntrack ─ route4 / route6 (per-VNI LPM) ─┬─ vf tx
//!                          │  (flow lookup or creation: firewall,   └─ encap ─ pf tx
//!                          │   VIP, NAT; cached rewrite)
//!   PF rx ─ classify ─ virtsvc (reply of a virtual service) ─ vf tx
//!                    └ decap (outer dst = one of the node's underlay addresses)
//!                          └─ conntrack ─┬─ vf tx (interface, alias/LB prefix, VIP, NAT reply)
//!                                        │   (lb: target of a new flow to an LB VIP)
//!                                        └─ relay ─ encap ─ pf tx (same PF: neighbour NAT,
//!                                                                  remote LB target, echo to a
//!                                                                  NAT IP or an LB VIP)
//!   every stage ─ drop(reason)
//! ```
//!
//! The runner ([`Pipeline::process_burst`]) gives every packet of a burst a [`Verdict`];
//! the caller (the worker) groups packets by output port and transmits them in bursts.
//!
//! Each stage is a function in its own file under `stages/` that looks at one packet
//! and returns where it goes next ([`Next`]). The runner keeps the per-packet `Next` of
//! a chunk of up to [`CHUNK`] packets and runs the stages in graph order, each stage
//! over all packets waiting for it, so a stage's code and tables stay hot while it works
//! through the vector (VPP's habit). Each stage has a queue of the indexes of the packets
//! waiting for it, so a stage visits only its own packets and an idle stage costs
//! nothing. What depends only on the input port (its interface, the VNI's tables) is
//! looked up once per burst ([`Ctx::new`]); counters are added once per stage and chunk.
//! Nothing on this path allocates or returns an error.
//!
//! Connection tracking is the one stage that runs in two halves: before its packets are
//! processed one by one, [`stages::conntrack::prepare`] runs over all of them (parse,
//! zone, hashes) and the flow table is warmed for their lookups
//! ([`Conntrack::warm`]), so that the cache misses of a large table overlap. Every
//! packet reaches the stage from classification or decapsulation, both earlier in
//! [`ORDER`], so the whole vector is known when the stage's turn comes.
//!
//! Per-packet facts that dpservice keeps in its mbuf metadata (`dp_flow`) are either
//! re-read from the headers (cheap, and always consistent with the bytes), carried in
//! the `Next` value (the output port, the flow hash), or, for the one that does not fit
//! there, kept in the runner's per-packet [`Underlay`] slot. Without an address in it,
//! a `Next` packs into a `u64`, which is how the runner keeps it per packet (`packed`):
//! copied whole as the compiler lays the enum out, right after a stage wrote it field by
//! field, it stalled on failed store-to-load forwarding at every step.

use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::buf::PacketBuf;
use crate::config::{Flush, Interface, Mac, PortId, PortInfo, PortRole, Snapshot, VniTables};
use crate::counters::{Counters, MAX_PORTS};
use crate::stages;
use crate::stages::conntrack::{self as ct_stage, FlowAction, FlowKind, Flows, Origin};
use crate::stages::express::NO_RECORD;
use crate::tables::conntrack::{self as ct, Conntrack, Flow, Ticks};
use crate::tables::nat::{MappingsConfig, NatConfigError, NatMappings};
use packed::PackedNext;

mod packed;
#[cfg(test)]
mod stateful_tests;
pub mod testkit;
#[cfg(test)]
mod tests;

/// What happens to a packet at the end of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it out of this port.
    Tx(PortId),
    /// Free it, counting the reason.
    Drop(DropReason),
}

macro_rules! counted_enum {
    ($(#[$m:meta])* $vis:vis enum $name:ident { $($(#[$vm:meta])* $v:ident => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            /// Every variant, in counter-index order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Stable snake_case label for metrics.
            pub fn label(self) -> &'static str {
                match self { $($name::$v => $label,)* }
            }
        }
    };
}

counted_enum! {
    /// Why a packet was dropped. Doubles as the drop counter index.
    pub enum DropReason {
        /// Shorter than the headers it claims to have, or lengths that disagree.
        Malformed => "malformed",
        /// An IPv4 header checksum that does not verify.
        BadChecksum => "bad_checksum",
        /// An ethertype the node does not handle.
        UnknownEthertype => "unknown_ethertype",
        /// Arrived on a port the node does not use.
        UnknownPort => "unknown_port",
        /// Arrived on a VF port that has no interface configured.
        NoInterface => "no_interface",
        /// ARP that is not a request for the gateway.
        ArpNotForUs => "arp_not_for_us",
        /// ICMPv6/ND that the node does not answer.
        NdNotForUs => "nd_not_for_us",
        /// A DHCP message the server ignores (wrong type, not a request).
        DhcpIgnored => "dhcp_ignored",
        /// Traffic for a load balancer that has no target for it (no such LB in the
        /// VNI, a protocol or port it does not serve, or no targets).
        LbNoTarget => "lb_no_target",
        /// A DHCPv6 message the server ignores.
        Dhcpv6Ignored => "dhcpv6_ignored",
        /// IPv6 from a VM while the IPv6 overlay is off.
        Ipv6Disabled => "ipv6_disabled",
        /// No route in the VNI.
        NoRoute => "no_route",
        /// TTL or hop limit would reach zero.
        TtlExpired => "ttl_expired",
        /// Tunnel traffic for an underlay address that no interface owns.
        UnknownUnderlay => "unknown_underlay",
        /// An IP protocol other than TCP, UDP, ICMP or ICMPv6 (IPv6 extension headers
        /// included): dpservice's connection tracking drops these.
        UnsupportedProtocol => "unsupported_protocol",
        /// Tunnel traffic with an inner protocol other than IPv4 or IPv6.
        BadInnerProtocol => "bad_inner_protocol",
        /// Non-tunnel traffic on a PF port (the node is not an underlay host).
        NotTunnel => "not_tunnel",
        /// No headroom or tailroom left to build the packet.
        NoRoom => "no_room",
        /// Frame larger than the node forwards.
        TooBig => "too_big",
        /// The route points to a VF whose port is gone.
        PortDown => "port_down",
        /// The TX queue was full.
        TxFull => "tx_full",
        /// The firewall denied the flow (only with `--enforce-firewall`).
        FirewallDenied => "firewall_denied",
        /// The flow table (or the NAT mapping table) is full: new flows are refused.
        FlowTableFull => "flow_table_full",
        /// Every NAT port of the interface is taken towards this destination.
        NatExhausted => "nat_exhausted",
        /// Traffic to a NAT IP for a port no flow, local range or neighbour owns.
        NatPortUnowned => "nat_port_unowned",
        /// An ICMPv4 message connection tracking cannot key (not an echo, not a
        /// destination-unreachable 2, 3 or 4 quoting TCP or UDP): dpservice drops these.
        UntrackedIcmp => "untracked_icmp",
    }
}

counted_enum! {
    /// The stages of the graph. Doubles as the per-stage counter index.
    pub enum Stage {
        /// First look at every packet that does not take the fast path.
        Classify => "classify",
        /// The established-flow fast path: a packet of a known flow, from a VM or
        /// through the tunnel, tracked and given its cached action before the rest of
        /// its stages (counted with theirs) run at once (see [`stages::fast`]).
        FastPath => "fast_path",
        /// Of those, the packets the fast path's express lane took: the outcome recorded
        /// for their flow applied without a look-up (see [`stages::express`]).
        Express => "express",
        /// ARP responder.
        Arp => "arp",
        /// IPv6 neighbor discovery responder.
        Nd => "nd",
        /// DHCPv4 server.
        Dhcp => "dhcp",
        /// DHCPv6 server.
        Dhcpv6 => "dhcpv6",
        /// IPv4 overlay routing.
        Route4 => "route4",
        /// IPv6 overlay routing.
        Route6 => "route6",
        /// IP-in-IPv6 encapsulation towards the underlay.
        Encap => "encap",
        /// Re-encapsulation of tunnel traffic back out of the PF it came in on: relays to
        /// another node (replies for a neighbour's NAT ports, flows to a load-balancer
        /// target elsewhere) and the node's answers to tunnelled echo requests.
        Relay => "relay",
        /// IP-in-IPv6 decapsulation from the underlay.
        Decap => "decap",
        /// Connection tracking, firewall, VIP, NAT and neighbour NAT.
        Conntrack => "conntrack",
        /// Virtual services (IPv4 to an IPv6 service and back).
        Virtsvc => "virtsvc",
        /// Delivery to a VF.
        VfTx => "vf_tx",
        /// Delivery to a PF.
        PfTx => "pf_tx",
    }
}

/// What every stage sees besides the packet.
///
/// Everything that depends only on the snapshot and the input port is looked up once
/// per burst ([`Ctx::new`]), not per packet: `port`, `iface` and `vni_tables` always
/// agree with `snap` and `in_port`.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The configuration in force for this burst.
    pub snap: &'a Snapshot,
    /// The port the packet arrived on.
    pub in_port: PortId,
    /// Monotonic time in nanoseconds, from the caller.
    pub now_ns: u64,
    /// `now_ns` in the flow table's expiry ticks.
    pub now_ticks: Ticks,
    /// `snap.port(in_port)`.
    pub port: Option<&'a PortInfo>,
    /// `snap.iface(in_port)`: the interface behind the input port, if it is a VF with one.
    pub iface: Option<&'a Interface>,
    /// The routing tables of that interface's VNI (`None` without an interface, or
    /// while the VNI has no tables).
    pub vni_tables: Option<&'a VniTables>,
}

impl<'a> Ctx<'a> {
    /// The context of a burst received on `in_port`.
    pub fn new(snap: &'a Snapshot, in_port: PortId, now_ns: u64) -> Self {
        let iface = snap.iface(in_port);
        Ctx {
            snap,
            in_port,
            now_ns,
            now_ticks: Ticks::at(now_ns),
            port: snap.port(in_port),
            iface,
            vni_tables: iface.and_then(|i| snap.vnis.get(&i.vni)),
        }
    }
}

/// Where a packet goes after a stage: the next stage (with what it needs to know), or
/// the end of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// ARP responder (VF, interface present).
    Arp,
    /// Neighbor discovery responder.
    Nd,
    /// DHCPv4 server.
    Dhcp,
    /// DHCPv6 server.
    Dhcpv6,
    /// Tunnel decapsulation (PF, IPv6 with next header 4 or 41).
    Decap,
    /// Connection tracking and the stateful services.
    Conntrack(Origin),
    /// A VM's request to the virtual service with this index.
    VirtsvcRequest(u16),
    /// A reply of the virtual service with this index.
    VirtsvcReply(u16),
    /// IPv4 overlay routing, with the packet's dpservice flow hash (see
    /// [`crate::tables::jhash::DpsFlowKey`]), which picks the PF under `--wcmp`.
    Route4(u32),
    /// IPv6 overlay routing.
    Route6,
    /// Encapsulation towards the packet's underlay address (see [`Underlay`]), with the
    /// flow hash that picks the PF under `--wcmp` (`None`: always pf0, as for IPv6
    /// overlay traffic).
    Encap(Option<u32>),
    /// Encapsulation towards the packet's underlay address (see [`Underlay`]), out of
    /// the PF the packet came in on (neighbour-NAT relay, the node's echo replies).
    Relay,
    /// Ethernet rewrite and delivery to this VF port.
    VfTx(PortId),
    /// Ethernet header for, and delivery to, this PF port.
    PfTx(PortId),
    /// Out of the graph.
    Done(Verdict),
}

impl Next {
    /// The stage this packet waits for, if any.
    pub fn stage(self) -> Option<Stage> {
        Some(match self {
            Next::Arp => Stage::Arp,
            Next::Nd => Stage::Nd,
            Next::Dhcp => Stage::Dhcp,
            Next::Dhcpv6 => Stage::Dhcpv6,
            Next::Decap => Stage::Decap,
            Next::Conntrack(_) => Stage::Conntrack,
            Next::VirtsvcRequest(_) | Next::VirtsvcReply(_) => Stage::Virtsvc,
            Next::Route4(_) => Stage::Route4,
            Next::Route6 => Stage::Route6,
            Next::Encap(..) => Stage::Encap,
            Next::Relay => Stage::Relay,
            Next::VfTx(_) => Stage::VfTx,
            Next::PfTx(_) => Stage::PfTx,
            Next::Done(_) => return None,
        })
    }

    /// Shorthand for a drop.
    pub fn drop(reason: DropReason) -> Next {
        Next::Done(Verdict::Drop(reason))
    }
}

/// The underlay address that goes with a packet through the graph: decapsulation
/// writes the tunnel's outer source (where the node's answers and relays of the packet
/// go back to); whatever sends a packet towards the underlay ([`Next::Encap`],
/// [`Next::Relay`]) writes the outer destination first, unless it is that same source.
/// One slot per packet of a chunk, owned by the runner.
pub type Underlay = Ipv6Addr;

/// The stages after classification, in graph order: every edge goes from a stage to a
/// later one, so one pass over this list finishes every packet.
const ORDER: [Stage; 13] = [
    Stage::Arp,
    Stage::Nd,
    Stage::Dhcp,
    Stage::Dhcpv6,
    Stage::Decap,
    Stage::Virtsvc,
    Stage::Conntrack,
    Stage::Route4,
    Stage::Route6,
    Stage::Encap,
    Stage::Relay,
    Stage::VfTx,
    Stage::PfTx,
];

/// Packets the runner handles as one vector; longer bursts are cut into chunks. At most
/// 256, so that a packet's index in its chunk fits the `u8` of a stage queue.
pub const CHUNK: usize = 64;
const _: () = assert!(CHUNK <= 256);

/// Appends packet `i` to the queue of the stage `nx` waits for, if any.
#[inline]
fn enqueue(queue: &mut [[u8; CHUNK]], queued: &mut [usize], i: usize, nx: Next) {
    if let Some(stage) = nx.stage() {
        let s = stage as usize;
        #[allow(clippy::cast_possible_truncation)] // i < CHUNK <= 256
        let i = i as u8;
        // `% CHUNK` never wraps (see run_chunk); it keeps the index in bounds for free.
        queue[s][queued[s] % CHUNK] = i;
        queued[s] += 1;
    }
}

/// The Ethernet neighbour of each port, learned on the fast path: for a VF, the VM's MAC
/// (dpservice learns it from the VM's ARP replies, DHCP requests and neighbour
/// solicitations; the node takes the source of any unicast frame the VM sends); for a PF
/// without a configured router MAC, the source of tunnel traffic received there.
///
/// Shared by all workers (one `Arc`), lock-free: one atomic word per port, written only
/// when the value changes.
#[derive(Debug)]
pub struct NeighTable {
    macs: Vec<AtomicU64>,
}

impl Default for NeighTable {
    fn default() -> Self {
        NeighTable { macs: (0..MAX_PORTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

const NEIGH_VALID: u64 = 1 << 48;

impl NeighTable {
    /// Records `mac` as the neighbour on `port` (ports beyond [`MAX_PORTS`] are ignored).
    pub fn learn(&self, port: PortId, mac: Mac) {
        if let Some(slot) = self.macs.get(usize::from(port)) {
            let mut w = [0u8; 8];
            w[2..].copy_from_slice(&mac);
            let v = u64::from_be_bytes(w) | NEIGH_VALID;
            if slot.load(Ordering::Relaxed) != v {
                slot.store(v, Ordering::Relaxed);
            }
        }
    }
    /// The destination MAC of a frame delivered on `port` without a configured
    /// neighbour: the learned one, else broadcast (see [`stages::vf_tx`]).
    #[inline]
    pub fn mac_or_broadcast(&self, port: PortId) -> Mac {
        self.get(port).unwrap_or(crate::wire::ethernet::BROADCAST)
    }
    /// The neighbour learned on `port`.
    pub fn get(&self, port: PortId) -> Option<Mac> {
        let v = self.macs.get(usize::from(port))?.load(Ordering::Relaxed);
        if v & NEIGH_VALID == 0 {
            return None;
        }
        let w = v.to_be_bytes();
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&w[2..]);
        Some(mac)
    }
    /// Forgets what was learned on `port` (call when its interface is deleted).
    pub fn forget(&self, port: PortId) {
        if let Some(slot) = self.macs.get(usize::from(port)) {
            slot.store(0, Ordering::Relaxed);
        }
    }
}

/// Settings of one worker's pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineConfig {
    /// The flow table (`--flow-capacity`, `--flow-timeout`).
    pub flows: ct::Config,
    /// The NAT port mappings (capacity, this worker's index and the worker count).
    pub nat: MappingsConfig,
    /// Drop flows the firewall denies (`--enforce-firewall`).
    pub enforce_firewall: bool,
    /// Let packets of known flows take the fast path ([`stages::fast`]); on by
    /// default. Off, every packet takes the whole graph (the same results: tests
    /// compare the two).
    pub fast_path: bool,
    /// Records of the fast path's express lane ([`stages::express`]), 64 bytes each.
    pub express_slots: usize,
}

impl PipelineConfig {
    /// Capacity of [`PipelineConfig::small`]: enough for tests and benchmarks.
    pub const SMALL_CAPACITY: usize = 4096;
    /// Most express-lane records by default: 2^18 (16 MiB), for a working set of some
    /// 130,000 flow directions (measured: 65,536 flows one way all kept at 2^18, 1 %
    /// of them lost to collisions at 2^17 and 23 % at 2^16).
    pub const MAX_EXPRESS_SLOTS: usize = 1 << 18;

    /// A pipeline of worker 0 of 1 with a small flow table
    /// ([`PipelineConfig::SMALL_CAPACITY`]), default timeouts and fixed hash seeds.
    pub fn small() -> Self {
        Self::new(Self::SMALL_CAPACITY, ct::Config::DEFAULT_FLOW_TIMEOUT_S, 0, 1, 0x5eed)
    }

    /// Worker `worker` of `workers` with room for `capacity` flows, idle timeout
    /// `flow_timeout_s`, hash seeds derived from `seed`.
    pub fn new(capacity: usize, flow_timeout_s: u32, worker: usize, workers: usize, seed: u64) -> Self {
        let mut flows = ct::Config::new(seed);
        flows.capacity = capacity;
        flows.flow_timeout_s = flow_timeout_s;
        PipelineConfig {
            flows,
            nat: MappingsConfig {
                capacity,
                slots: MAX_PORTS,
                worker,
                workers,
                seed: seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            },
            enforce_firewall: false,
            fast_path: true,
            express_slots: capacity.clamp(1 << 10, Self::MAX_EXPRESS_SLOTS),
        }
    }
}

/// Why a pipeline could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// Bad flow table settings.
    #[error(transparent)]
    Flows(#[from] ct::ConfigError),
    /// Bad NAT settings.
    #[error(transparent)]
    Nat(#[from] NatConfigError),
}

/// One worker's pipeline: its counters and per-worker state (learned neighbours
/// shared, the flow table and NAT mappings its own).
#[derive(Debug)]
pub struct Pipeline {
    /// This worker's counters, shared read-only with the metrics exporter (the worker is
    /// the only writer; see [`crate::counters`]).
    pub counters: Arc<Counters>,
    neigh: Arc<NeighTable>,
    flows: Flows,
    /// The generation of the last snapshot the flow state was synchronised with.
    synced: Option<u64>,
    /// The sequence number of the last flush applied.
    flushed: u64,
    /// Virtual-service connections.
    virtsvc: stages::virtsvc::Connections,
    /// The `--flow-timeout` the virtual-service connections age with.
    flow_timeout_s: u32,
    /// The [`Underlay`] slot of each packet of the chunk being run.
    underlay: [Underlay; CHUNK],
    /// What the conntrack stage prepared for each packet of the chunk waiting for it.
    ct_prepared: Box<[ct_stage::Prepared; CHUNK]>,
    /// Chunks run so far: with the packet's index in its chunk, the tag of what the
    /// conntrack stage prepared for it.
    chunks: u64,
    /// [`PipelineConfig::fast_path`].
    fast_path: bool,
    /// What the fast path's first pass found for each packet of the chunk being run.
    fast: Box<[stages::fast::Candidate; CHUNK]>,
    /// The chunk being run took the fast path, whose first pass learned the MACs of
    /// all its packets (decapsulation must not learn them again, out of order).
    learned: bool,
    /// The fast path's express lane.
    express: stages::express::Express,
    /// The lane's per-chunk arrays, kept from chunk to chunk (not filled anew for each).
    express_scratch: Box<stages::express::Scratch>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new(Arc::default())
    }
}

/// Whether every one of `verdicts` is `Tx` on the same port (and there is one), and
/// which.
#[inline]
pub(crate) fn single_output(verdicts: &[Verdict]) -> Option<PortId> {
    let Some(&Verdict::Tx(out)) = verdicts.first() else { return None };
    verdicts.iter().all(|v| *v == Verdict::Tx(out)).then_some(out)
}

impl Pipeline {
    /// A pipeline sharing learned neighbours with the other workers' pipelines, with
    /// [`PipelineConfig::small`].
    pub fn new(neigh: Arc<NeighTable>) -> Self {
        match Pipeline::with_config(neigh, &PipelineConfig::small()) {
            Ok(p) => p,
            // The small configuration is valid by construction.
            Err(e) => unreachable!("small pipeline configuration refused: {e}"),
        }
    }

    /// A pipeline with these settings. Allocates the flow table and the NAT mappings.
    pub fn with_config(neigh: Arc<NeighTable>, cfg: &PipelineConfig) -> Result<Self, PipelineError> {
        Ok(Pipeline {
            counters: Arc::new(Counters::default()),
            neigh,
            flows: Flows {
                table: Conntrack::new(&cfg.flows)?,
                nat: NatMappings::new(cfg.nat)?,
                addrs: crate::tables::addrpool::AddrPool::new(
                    crate::tables::addrpool::AddrPool::DEFAULT_CAPACITY,
                ),
                enforce_firewall: cfg.enforce_firewall,
                lb: crate::tables::lb::RoundRobin::default(),
            },
            synced: None,
            flushed: 0,
            virtsvc: stages::virtsvc::Connections::default(),
            flow_timeout_s: cfg.flows.flow_timeout_s,
            underlay: [Ipv6Addr::UNSPECIFIED; CHUNK],
            ct_prepared: Box::new([ct_stage::Prepared::default(); CHUNK]),
            chunks: 0,
            fast_path: cfg.fast_path,
            fast: Box::new([stages::fast::Candidate::default(); CHUNK]),
            learned: false,
            express: stages::express::Express::new(cfg.express_slots),
            express_scratch: Box::default(),
        })
    }

    /// Sets the node's virtual services (`--udp-virtsvc`, `--tcp-virtsvc`) and
    /// allocates this worker's connection tables for them (forgetting any connection).
    pub fn set_virtual_services(&mut self, services: Arc<stages::virtsvc::VirtualServices>) {
        self.virtsvc = stages::virtsvc::Connections::new(services, self.flow_timeout_s);
    }

    /// The virtual-service connections.
    pub fn virtsvc(&self) -> &stages::virtsvc::Connections {
        &self.virtsvc
    }

    /// The learned neighbours (shared).
    pub fn neighbours(&self) -> &Arc<NeighTable> {
        &self.neigh
    }

    /// Where the pipeline's large tables lie, (address, bytes) each: the flow table's
    /// entries, their expiry words and index (see [`Conntrack::memory`]) and the express
    /// lane's records.
    pub fn table_memory(&self) -> [(usize, usize); 4] {
        let [entries, meta, index] = self.flows.table.memory();
        [entries, meta, index, self.express.region()]
    }

    /// The flow table.
    pub fn flows(&self) -> &Conntrack<FlowAction> {
        &self.flows.table
    }

    /// The addresses the flows' actions refer to.
    pub fn flow_addrs(&self) -> &crate::tables::addrpool::AddrPool {
        &self.flows.addrs
    }

    /// The NAT port mappings.
    pub fn nat_mappings(&self) -> &NatMappings {
        &self.flows.nat
    }

    /// Writes how full the flow and NAT tables are to [`Counters::occupancy`], for the
    /// metrics and gossip (a few dozen relaxed stores; call it now and then, not per
    /// packet).
    pub fn publish_occupancy(&self) {
        let o = &self.counters.occupancy;
        o.flows.set(self.flows.table.len() as u64);
        o.flow_capacity.set(self.flows.table.capacity() as u64);
        o.nat_mappings.set(self.flows.nat.len() as u64);
        o.nat_capacity.set(self.flows.nat.capacity() as u64);
        for (port, c) in o.nat_by_port.iter().enumerate() {
            c.set(self.flows.nat.slot_live(port) as u64);
        }
    }

    /// Removes expired flows among the next `max_scan` entries of the flow table and
    /// releases their NAT ports; returns how many were removed. Call it every polling
    /// round with a small `max_scan`, so that aging never stalls forwarding.
    pub fn age(&mut self, now_ns: u64, max_scan: usize) -> usize {
        let nat = &mut self.flows.nat;
        let addrs = &mut self.flows.addrs;
        self.flows.table.age_with(now_ns, max_scan, |f| ct_stage::release(nat, addrs, f))
    }

    /// Brings the flow state in line with a new snapshot: applies the flushes not
    /// applied yet, then the NAT configuration of every port. Scans the flow table per
    /// flush (a few milliseconds per million flows): configuration changes are rare.
    fn sync(&mut self, snap: &Snapshot) {
        self.synced = Some(snap.generation);
        self.express.new_epoch();
        for &(seq, flush) in snap.flushes.iter() {
            if seq <= self.flushed {
                continue;
            }
            self.flushed = seq;
            if let Flush::Interface { port, .. } = flush {
                self.virtsvc.forget_port(port);
            }
            // Verdicts only matter when enforced: without enforcement a denied flow is
            // forwarded like any other, and ending it would only make its next packet
            // a new flow (a VIP connection's reply would then leave through the NAT).
            if flush == Flush::Denied && !self.flows.enforce_firewall {
                continue;
            }
            let nat = &mut self.flows.nat;
            let addrs = &mut self.flows.addrs;
            self.flows.table.retain(|f| !flush_hits(&flush, f), |f| ct_stage::release(nat, addrs, f));
        }
        for port in 0..MAX_PORTS {
            #[allow(clippy::cast_possible_truncation)] // MAX_PORTS fits u16
            let nat = snap.iface(port as u16).and_then(|i| i.nat.as_ref());
            self.flows.nat.set_slot(port, nat);
        }
    }

    /// Runs a burst received on `in_port` through the graph and writes the verdict of
    /// `pkts[i]` to `verdicts[i]`. Buffers are edited in place (replies, decapsulation,
    /// encapsulation); a packet with verdict `Tx(p)` is ready to send on port `p`.
    ///
    /// Counts stage entries and drop reasons; port rx/tx counters are the worker's job.
    /// Only `min(pkts.len(), verdicts.len())` packets are processed: size both alike.
    ///
    /// The answer is the port every packet leaves on, when there is one (every verdict
    /// `Tx(p)` with the same `p`, and at least one packet): the worker can then hand the
    /// burst on whole without reading the verdicts.
    pub fn process_burst<B: PacketBuf>(
        &mut self,
        snap: &Snapshot,
        in_port: PortId,
        now_ns: u64,
        pkts: &mut [B],
        verdicts: &mut [Verdict],
    ) -> Option<PortId> {
        let n = pkts.len().min(verdicts.len());
        if self.synced != Some(snap.generation) {
            self.sync(snap);
        }
        self.express.sync_era(&self.flows);
        let ctx = Ctx::new(snap, in_port, now_ns);
        let mut single = None;
        for (i, (p, v)) in pkts[..n].chunks_mut(CHUNK).zip(verdicts[..n].chunks_mut(CHUNK)).enumerate() {
            let out = self.run_chunk(&ctx, p, v);
            single = if i == 0 { out } else { out.filter(|&o| single == Some(o)) };
        }
        single
    }

    /// Runs one chunk; the answer is [`Pipeline::process_burst`]'s for the chunk.
    fn run_chunk<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        pkts: &mut [B],
        verdicts: &mut [Verdict],
    ) -> Option<PortId> {
        self.chunks = self.chunks.wrapping_add(1);
        // On the fast path the MACs are learned in its first pass, for the whole chunk.
        self.learned = self.fast_path && stages::fast::applies(ctx, self.virtsvc.services());
        let start = if self.learned {
            stages::fast::learn_chunk(ctx, &self.neigh, pkts);
            // The run the express lane holds, then the rest as usual.
            let (done, single) = self.run_held(ctx, pkts, verdicts);
            if done >= pkts.len() {
                return single;
            }
            done
        } else {
            0
        };
        if let (Some(p), Some(v)) = (pkts.get_mut(start..), verdicts.get_mut(start..)) {
            self.run_graph(ctx, p, v);
        }
        single_output(verdicts)
    }

    /// The part of a chunk the express lane did not hold, through the fast path's
    /// passes (with its MACs learned) or the classifier, then the graph.
    fn run_graph<B: PacketBuf>(&mut self, ctx: &Ctx<'_>, pkts: &mut [B], verdicts: &mut [Verdict]) {
        // Packed: see `packed` for why.
        let mut next = [PackedNext::from(Next::drop(DropReason::Malformed)); CHUNK];
        // Per stage, the indexes of the packets waiting for it, in arrival order. A packet
        // only ever moves to a later stage of ORDER, so it is queued at most once per
        // stage and no queue holds more than the chunk's packets.
        let mut queue = [[0u8; CHUNK]; Stage::ALL.len()];
        let mut queued = [0usize; Stage::ALL.len()];
        if self.learned {
            self.run_fast(ctx, pkts, &mut next, &mut queue, &mut queued);
        } else {
            for (i, (nx, buf)) in next.iter_mut().zip(pkts.iter_mut()).enumerate() {
                let n = stages::classify::process(ctx, &self.neigh, self.virtsvc.services(), buf);
                *nx = n.into();
                enqueue(&mut queue, &mut queued, i, n);
            }
            self.counters.stage_add(Stage::Classify, pkts.len());
        }
        for stage in ORDER {
            let s = stage as usize;
            let n = queued[s].min(CHUNK);
            if stage == Stage::Conntrack {
                // The first half of the stage for the whole vector (see `Prepared`).
                for &i in &queue[s][..n] {
                    let i = usize::from(i);
                    let tag = prep_tag(self.chunks, i);
                    let (Some(nx), Some(buf), Some(out)) =
                        (next.get(i), pkts.get(i), self.ct_prepared.get_mut(i))
                    else {
                        continue;
                    };
                    if let Next::Conntrack(origin) = Next::from(*nx) {
                        stages::conntrack::prepare(ctx, &self.flows, origin, buf, tag, out);
                    }
                }
                let prepared = &self.ct_prepared;
                let hashes =
                    queue[s][..n].iter().filter_map(|&i| prepared.get(usize::from(i))?.lookup_hash());
                self.flows.table.warm(hashes);
            }
            for j in 0..n {
                let i = usize::from(queue[s][j]);
                let (Some(nx), Some(buf)) = (next.get_mut(i), pkts.get_mut(i)) else { continue };
                let n = self.step(ctx, (*nx).into(), buf, i);
                *nx = n.into();
                enqueue(&mut queue, &mut queued, i, n);
            }
            self.counters.stage_add(stage, n);
        }
        for (v, nx) in verdicts.iter_mut().zip(next.iter()) {
            *v = match Next::from(*nx) {
                Next::Done(v) => v,
                // ORDER is topological, so nothing is left waiting; should a future edge
                // point backwards, the packet is dropped rather than lost.
                _ => Verdict::Drop(DropReason::Malformed),
            };
            if let Verdict::Drop(r) = *v {
                self.counters.count_drop(r);
            }
        }
    }

    /// The start of a chunk on the fast path that the express lane holds (see
    /// [`stages::express::Express::run_held`]): how many packets it took, counted, and
    /// the one port they all leave on, if there is one.
    #[inline]
    fn run_held<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        pkts: &mut [B],
        verdicts: &mut [Verdict],
    ) -> (usize, Option<PortId>) {
        let mut ran = [0usize; Stage::ALL.len()];
        let (lane, neigh, flows, scratch) =
            (&self.express, &self.neigh, &mut self.flows, &mut *self.express_scratch);
        let whole = if ctx.port.is_some_and(|p| p.role == PortRole::Vf) {
            // A VM's MACs are learned for the whole chunk already (`learn_chunk`).
            let vm = |b: &B| Some((stages::fast::vm_raw(b.data())?, 0));
            lane.run_held(ctx, neigh, flows, pkts, verdicts, &mut ran, scratch, vm, |_| {})
        } else {
            let mut memo = None;
            let tunnel = |b: &B| stages::fast::tunnel_raw(ctx, b, &mut memo);
            let learn = |run: &[B]| stages::decap::learn_last(ctx, neigh, run);
            lane.run_held(ctx, neigh, flows, pkts, verdicts, &mut ran, scratch, tunnel, learn)
        };
        for (&stage, &n) in Stage::ALL.iter().zip(ran.iter()) {
            self.counters.stage_add(stage, n);
        }
        if whole.single.is_none() {
            for v in verdicts.iter().take(whole.done) {
                if let Verdict::Drop(r) = *v {
                    self.counters.count_drop(r);
                }
            }
        }
        (whole.done, whole.single)
    }

    /// The start of a chunk on the fast path (see [`stages::fast`]): the candidates of
    /// the chunk are found and looked up; then, in arrival order, a packet of a known
    /// flow is run to the end of the graph and every other one is classified and queued
    /// as usual.
    fn run_fast<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        pkts: &mut [B],
        next: &mut [PackedNext; CHUNK],
        queue: &mut [[u8; CHUNK]],
        queued: &mut [usize],
    ) {
        let mut memo = None;
        for (buf, c) in pkts.iter().zip(self.fast.iter_mut()) {
            stages::fast::prepare(ctx, &self.neigh, &self.flows, buf, &mut memo, c);
        }
        // The express lane's records first, in three loops so that the cache misses of
        // different packets overlap: where each packet's record is, then its flow's
        // entry warmed, then whether the record holds. The candidates without one get
        // their key now.
        let n = pkts.len().min(CHUNK);
        let mut express = [NO_RECORD; CHUNK];
        let mut keyed = 0;
        for (e, c) in express.iter_mut().zip(&self.fast[..n]) {
            if let Some(raw) = c.raw() {
                *e = self.express.locate(ctx, raw, c.target_code());
            }
        }
        self.express.warm_flows(&self.flows, &express[..n]);
        for ((e, c), buf) in express.iter_mut().zip(self.fast.iter_mut()).zip(pkts.iter()) {
            if c.raw().is_some() {
                if !self.express.holds(ctx, &self.flows, *e) {
                    *e = NO_RECORD;
                    stages::fast::key_now(ctx, &self.flows, buf, c);
                    keyed += 1;
                }
            } else if c.key().is_some() {
                keyed += 1;
            }
        }
        let fast = &self.fast[..n];
        let mut found = [None; CHUNK];
        if keyed > 0 {
            self.flows.table.warm_slots(fast.iter().filter_map(|c| Some(c.key()?.hash())));
            // Every candidate's look-up first, in one loop: the look-ups change nothing
            // and the tracking below only moves a flow's expiry forward, so each finds
            // what it would find right before its packet; and the loop's independent
            // look-ups overlap their misses on the flow entries.
            for (f, c) in found.iter_mut().zip(fast) {
                *f = c.key().and_then(|k| ct_stage::lookup_fast(ctx, &self.flows, k));
            }
        }
        let mut ran = [0usize; Stage::ALL.len()];
        // Packets the express lane may record once the chunk is through.
        let mut fill = [false; CHUNK];
        let mut fills = 0;
        for (i, (nx, buf)) in next.iter_mut().zip(pkts.iter_mut()).enumerate() {
            if let (Some(&e), Some(c)) = (express.get(i), self.fast.get(i)) {
                if let (Some(raw), true) = (c.raw(), e != NO_RECORD) {
                    let v = self.express.apply(ctx, &self.neigh, &mut self.flows, e, raw, buf, &mut ran);
                    *nx = Next::Done(v).into();
                    continue;
                }
            }
            let hit = match (self.fast.get(i), self.underlay.get_mut(i), found.get(i)) {
                // `and_then`, not `map`: measured 13 instructions per packet shorter.
                #[allow(clippy::bind_instead_of_map)]
                (Some(c), Some(underlay), Some(&Some(flow))) => c.key().and_then(|k| {
                    if let Some(t) = c.tunnel() {
                        ran[Stage::Decap as usize] += 1;
                        let n = stages::decap::strip(t, buf, underlay);
                        if !matches!(n, Next::Conntrack(_)) {
                            return Some(n);
                        }
                    }
                    Some(ct_stage::track_fast(ctx, &mut self.flows, c.origin(), k, flow, buf, underlay))
                }),
                _ => None,
            };
            match hit {
                Some(mut n) => {
                    ran[Stage::FastPath as usize] += 1;
                    // Every stage the packet has left, at once. Edges only go forward
                    // (see ORDER), so this ends, with the packet out of the graph.
                    while let Some(stage) = n.stage() {
                        ran[stage as usize] += 1;
                        // Delivery, the last stage, always ends the graph. Its two
                        // arms repeat `step`'s on purpose: calling `step` and then
                        // breaking measured 46 more instructions per packet
                        // (`burst_loop`).
                        match n {
                            Next::VfTx(port) => {
                                n = stages::vf_tx::process(ctx, &self.neigh, port, buf);
                                break;
                            }
                            Next::PfTx(port) => {
                                n = stages::pf_tx::process(ctx, &self.neigh, port, buf);
                                break;
                            }
                            _ => n = self.step(ctx, n, buf, i),
                        }
                    }
                    if let Some(f) = fill.get_mut(i) {
                        *f = matches!(n, Next::Done(Verdict::Tx(_)));
                        fills += usize::from(*f);
                    }
                    *nx = n.into();
                }
                None => {
                    ran[Stage::Classify as usize] += 1;
                    let n = stages::classify::dispatch(ctx, self.virtsvc.services(), buf);
                    *nx = n.into();
                    enqueue(queue, queued, i, n);
                }
            }
        }
        for (&stage, &n) in Stage::ALL.iter().zip(ran.iter()) {
            self.counters.stage_add(stage, n);
        }
        if fills == 0 {
            return;
        }
        for (i, buf) in pkts.iter().enumerate() {
            let (Some(true), Some(c), Some(&Some(flow)), Some(nx)) =
                (fill.get(i).copied(), self.fast.get(i), found.get(i), next.get(i))
            else {
                continue;
            };
            if let (Some(raw), Next::Done(v)) = (c.raw(), Next::from(*nx)) {
                self.express.fill(ctx, &self.flows, raw, c.target(), flow, v, buf);
            }
        }
    }

    /// Runs packet `i` of the chunk (`buf`) through the stage `nx` names.
    #[inline(always)]
    fn step<B: PacketBuf>(&mut self, ctx: &Ctx<'_>, nx: Next, buf: &mut B, i: usize) -> Next {
        let Some(underlay) = self.underlay.get_mut(i) else { return Next::drop(DropReason::Malformed) };
        match (nx, ctx.iface) {
            (Next::Arp, Some(i)) => Next::Done(stages::arp::process(ctx, i, buf)),
            (Next::Nd, Some(i)) => Next::Done(stages::nd::process(ctx, i, buf)),
            (Next::Dhcp, Some(i)) => Next::Done(stages::dhcp::process(ctx, i, buf)),
            (Next::Dhcpv6, Some(i)) => Next::Done(stages::dhcpv6::process(ctx, i, buf)),
            (Next::Arp | Next::Nd | Next::Dhcp | Next::Dhcpv6, None) => Next::drop(DropReason::NoInterface),
            (Next::Decap, _) => stages::decap::process(ctx, &self.neigh, buf, underlay, !self.learned),
            (Next::Conntrack(origin), _) => match self.ct_prepared.get_mut(i) {
                Some(prep) => {
                    // Prepared with the vector unless an edge into the stage from a later
                    // stage of ORDER appears: then prepared here, alone.
                    let tag = prep_tag(self.chunks, i);
                    if !prep.is_for(tag) {
                        stages::conntrack::prepare(ctx, &self.flows, origin, buf, tag, prep);
                    }
                    stages::conntrack::process(ctx, &mut self.flows, origin, prep, buf, underlay)
                }
                None => Next::drop(DropReason::Malformed),
            },
            (Next::VirtsvcRequest(svc), _) => stages::virtsvc::request(ctx, &mut self.virtsvc, svc, buf),
            (Next::VirtsvcReply(svc), _) => stages::virtsvc::reply(ctx, &mut self.virtsvc, svc, buf),
            (Next::Route4(hash), _) => stages::route4::process(ctx, hash, buf, underlay),
            (Next::Route6, _) => stages::route6::process(ctx, buf, underlay),
            (Next::Encap(hash), _) => stages::encap::process(ctx, *underlay, None, hash, buf),
            (Next::Relay, _) => stages::encap::process(ctx, *underlay, Some(ctx.in_port), None, buf),
            (Next::VfTx(port), _) => stages::vf_tx::process(ctx, &self.neigh, port, buf),
            (Next::PfTx(port), _) => stages::pf_tx::process(ctx, &self.neigh, port, buf),
            (Next::Done(v), _) => Next::Done(v),
        }
    }
}

/// The tag of what the conntrack stage prepares for packet `i` (below [`CHUNK`]) of the
/// `chunks`-th chunk.
fn prep_tag(chunks: u64, i: usize) -> u64 {
    chunks << 8 | i as u64
}

/// Whether a flush removes this flow.
fn flush_hits(flush: &Flush, f: &Flow<FlowAction>) -> bool {
    let a = f.actions[0];
    match *flush {
        Flush::Interface { port, vni, ipv4, ipv6 } => {
            let k = &f.keys[0];
            let to_it = k.dst() == std::net::IpAddr::V4(ipv4) || ipv6.is_some_and(|a| k.dst() == a);
            a.port == port || (k.vni() == vni && to_it)
        }
        Flush::Vip(port) => a.port == port && a.kind == FlowKind::Vip,
        Flush::Nat(port) => a.port == port && a.kind == FlowKind::Nat,
        Flush::Denied => f.actions.iter().any(|a| a.denied),
        Flush::Neighbor(n) => f.keys.iter().any(|k| {
            k.vni() == n.vni && k.dst() == std::net::IpAddr::V4(n.nat_ip) && n.range.contains(k.dst_port())
        }),
        Flush::Prefix { port, vni, addr, len } => {
            let (k, prefix) = (&f.keys[0], crate::tables::firewall::Cidr::new(addr, len));
            a.port == port && k.vni() == vni && (prefix.contains(k.dst()) || prefix.contains(k.src()))
        }
    }
}
