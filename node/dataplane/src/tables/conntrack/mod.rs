//! The per-worker connection-tracking (flow) table.
//!
//! The first packet of a flow walks the whole graph; the graph then [inserts](Conntrack::insert)
//! the flow with the key of each direction and the action each direction's later packets
//! take (rewrite, verdict, output port: an opaque `A` the graph defines). Every later
//! packet, of either direction, is one [`Conntrack::track`]: one hash, one probe, and the
//! cached action.
//!
//! # Ownership and time
//! A table belongs to one worker and is touched by nothing else: no locks, no atomics.
//! It is sans-I/O: time is the caller's monotonic `now_ns`, and the hash seed is the
//! caller's (drawn at random per table, see [`FlowHasher`]).
//!
//! # Layout
//! - An arena of `capacity` entries, allocated once at construction. An entry holds
//!   both directions' keys and both actions (128 bytes with the node's action: two cache
//!   lines). Beside it, one 8-byte word per entry holds what every packet reads or
//!   changes: the expiry tick, the TCP state and a stamp that names the flow in the entry
//!   (see [`crate::tables::conntrack::Conntrack::stamp`]: a cache may remember a flow by
//!   entry and stamp, and check it with one compare, in that dense array alone); free
//!   entries are chained through their expiry field, so the free list costs nothing.
//! - An index: open addressing with linear probing and Robin Hood ordering over
//!   `2.5 × capacity` slots (so at most 80 % full, as every flow has two keys). A slot
//!   is 8 bytes: the high 32 bits of the key's hash (which also give the key's home
//!   slot, by a multiply-shift "fast range") and the entry number with the direction
//!   bit. A probe compares hashes in the index and touches an entry only on a hash
//!   match; deletion shifts the following run back (no tombstones), so the table never
//!   degrades and never rehashes.
//!
//! Why two index keys per flow and not one canonical (ordered) key: with NAT, load
//! balancing or NAT64 the reply direction's key is not the reverse of the original's
//! (the reply is addressed to the NAT IP and port, or comes from an IPv4 host for an IPv6
//! flow), so one canonical form cannot find both. Storing both keys also keeps each
//! direction's translation implicit: a packet of one direction leaves looking like the
//! reverse of the other direction's key. The price is a second 8-byte index slot per
//! flow (20 bytes per flow for both at 80 % load); see [`Footprint`].
//!
//! # Capacity and aging
//! When every entry is taken, [`Conntrack::insert`] refuses new flows with
//! [`InsertError::Full`]; existing flows keep working. A flow expires when idle longer
//! than its timeout: `tcp_established_timeout_s` (default one day, as dpservice) for an
//! established TCP connection, `flow_timeout_s` (`--flow-timeout`, default 30 s) for
//! everything else. Expiry is kept in ticks of an eighth of a second, so a flow expires
//! between its timeout and 125 ms more after its last packet (with whole seconds, a
//! 1-second `--flow-timeout` kept flows up to 2 s, and their NAT ports with them,
//! longer than dpservice's own tests wait). A `u32` of ticks lasts 17 years of the
//! caller's clock; after that, flows no longer expire. Expired flows are absent to
//! lookups at once; their entries are reclaimed by [`Conntrack::age`], which scans a
//! bounded slice of the arena per call (so it never stalls forwarding), or by an
//! insert that needs one of their keys. Whoever frees an entry reports the flow through
//! an `on_remove` callback, so that the caller can release what the flow held (a NAT
//! port).
//!
//! # ICMP errors
//! An ICMP error quotes the header of a packet of the flow as the error's sender saw it,
//! that is after any translation: the reverse of the other direction's key. The graph
//! parses the quoted header into a [`FlowKey`] (with the error's VNI) and calls
//! [`Conntrack::lookup_quoted`], which looks up the quoted key reversed; the hit's
//! direction is the one the error travels in (opposite to the quoted packet's).

mod key;
pub mod tcp;

pub use key::{FlowHasher, FlowKey, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
pub use tcp::TcpState;

/// Settings of one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most flows the table holds.
    pub capacity: usize,
    /// Idle timeout of every flow but established TCP connections, in seconds
    /// (`--flow-timeout`).
    pub flow_timeout_s: u32,
    /// Idle timeout of established TCP connections, in seconds.
    pub tcp_established_timeout_s: u32,
    /// Seed of the table's keyed hash; draw it at random for each table.
    pub seed: u64,
}

impl Config {
    /// Default capacity: 2^20 (1,048,576) flows.
    pub const DEFAULT_CAPACITY: usize = 1 << 20;
    /// Largest capacity: entry numbers and index slot numbers must fit 32 bits.
    pub const MAX_CAPACITY: usize = 1 << 30;
    /// Default `--flow-timeout` (dpservice's): 30 s.
    pub const DEFAULT_FLOW_TIMEOUT_S: u32 = 30;
    /// Default timeout of established TCP connections (dpservice's): one day.
    pub const DEFAULT_TCP_ESTABLISHED_TIMEOUT_S: u32 = 24 * 60 * 60;

    /// The defaults, with the hash seed `seed`.
    pub fn new(seed: u64) -> Self {
        Config {
            capacity: Self::DEFAULT_CAPACITY,
            flow_timeout_s: Self::DEFAULT_FLOW_TIMEOUT_S,
            tcp_established_timeout_s: Self::DEFAULT_TCP_ESTABLISHED_TIMEOUT_S,
            seed,
        }
    }
}

/// Why a table could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The capacity is 0 or above [`Config::MAX_CAPACITY`].
    #[error("flow table capacity {0} out of range (1 to 2^30 flows)")]
    Capacity(usize),
    /// A timeout of 0 seconds.
    #[error("flow timeouts must be at least 1 second")]
    Timeout,
}

/// Why a flow was not inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// Every entry holds a flow: new flows are refused until some expire.
    #[error("flow table full")]
    Full,
    /// A live flow already has one of the keys (as its `dir` direction).
    #[error("a live flow already has this key")]
    Exists {
        /// The flow that has the key.
        id: FlowId,
        /// Which of its directions has it.
        dir: Dir,
    },
}

/// One direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The direction of the packet that created the flow.
    #[default]
    Orig = 0,
    /// The other direction.
    Reply = 1,
}

impl Dir {
    /// 0 for `Orig`, 1 for `Reply`: the index into a flow's keys and actions.
    pub fn index(self) -> usize {
        self as usize
    }
    /// The other direction.
    #[must_use]
    pub fn flip(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
    fn from_bit(b: u32) -> Dir {
        if b & 1 == 0 {
            Dir::Orig
        } else {
            Dir::Reply
        }
    }
}

/// Names a flow's entry while the flow lives. Once the flow is removed the number may be
/// reused by another flow, so do not keep it across calls that remove flows
/// ([`Conntrack::insert`], [`Conntrack::set_key`], [`Conntrack::age`], ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowId(u32);

impl FlowId {
    /// The entry number (below the table's capacity).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a lookup finds: the flow, the direction the key belongs to, that direction's
/// cached action and the TCP state after the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit<A> {
    /// The flow.
    pub id: FlowId,
    /// The direction of the looked-up key.
    pub dir: Dir,
    /// That direction's action.
    pub action: A,
    /// The TCP state (`TcpState::None` for other protocols).
    pub tcp: TcpState,
}

/// A copy of one flow, as [`Conntrack::flow`], [`Conntrack::iter`] and the `on_remove`
/// callbacks show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow<A> {
    /// Its entry.
    pub id: FlowId,
    /// The keys of the original and the reply direction (equal when the reverse of a
    /// packet is the packet itself).
    pub keys: [FlowKey; 2],
    /// The actions of the original and the reply direction.
    pub actions: [A; 2],
    /// The TCP state, for TCP flows (by the original key's protocol).
    pub tcp: Option<TcpState>,
    /// The second (of the caller's clock, rounded up) after which the flow is expired.
    pub expires_s: u32,
}

/// The exact heap memory of a table, computed from its capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Flows the table holds.
    pub capacity: usize,
    /// Bytes of the entry arena and of the entries' expiry and state words.
    pub entry_bytes: usize,
    /// Bytes of the index.
    pub index_bytes: usize,
}

impl Footprint {
    /// Total heap bytes.
    pub fn total(&self) -> usize {
        self.entry_bytes + self.index_bytes
    }
    /// Bytes per flow at full capacity.
    pub fn per_flow(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)] // a report, sizes far below 2^52
        let r = self.total() as f64 / self.capacity as f64;
        r
    }
}

const KIND_FREE: u8 = 0;
const KIND_OTHER: u8 = 1;
const KIND_TCP: u8 = 2;
/// No next free entry.
const NIL: u32 = u32::MAX;
/// An empty index slot (no real slot: entry references stay below 2^31).
const EMPTY: u64 = u64::MAX;

/// In [`Meta::state`]: both keys are equal, and only the original one is indexed.
const SINGLE: u8 = 0x80;
// The TCP states, stored as `u8`, stay clear of it.
const _: () = assert!((TcpState::Closed as u8) < SINGLE);

/// What a flow's keys and actions are: read by look-ups and the graph.
#[derive(Clone, Copy, Debug)]
struct Entry<A> {
    keys: [FlowKey; 2],
    actions: [A; 2],
}

/// What changes with every packet of a flow, and what says whether the entry holds one:
/// beside the entries in an array of its own, eight bytes each, so that a cache that
/// remembers a flow by entry and stamp (the express lane) checks and counts a packet in
/// one dense array instead of a line of a large entry (the live flows' words of a
/// worker's 65,536 flows fit half a megabyte).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(8))]
struct Meta {
    /// Live: the tick after which the flow is expired. Free: the next free entry.
    expires_or_next: u32,
    /// Moves on whenever the entry takes a flow or its flow's keys or actions change
    /// (see [`Conntrack::stamp`]); kept while the entry is free.
    stamp: u16,
    kind: u8,
    /// The TCP state, and [`SINGLE`].
    state: u8,
}

impl Meta {
    /// Both keys are equal: only the original one is indexed.
    #[inline]
    fn single(&self) -> bool {
        self.state & SINGLE != 0
    }

    /// The TCP state, as stored.
    #[inline]
    fn tcp(&self) -> u8 {
        self.state & !SINGLE
    }
}

/// The flow table. See the module documentation.
#[derive(Clone, Debug)]
pub struct Conntrack<A> {
    entries: Box<[Entry<A>]>,
    /// One per entry (see [`Meta`]).
    meta: Box<[Meta]>,
    slots: Box<[u64]>,
    /// `slots.len()` (fits 32 bits by [`Config::MAX_CAPACITY`]).
    n_slots: u32,
    free_head: u32,
    len: usize,
    /// Entries below this may be live; every entry from it on is free and has never been
    /// taken since the last [`Conntrack::clear`]. The free list starts in entry order
    /// and reuses the last freed entry first, so this is the most flows the table has
    /// held at once: aging and flushes scan only these entries, not the whole arena.
    used: usize,
    cursor: usize,
    hasher: FlowHasher,
    /// `Config::flow_timeout_s` in ticks.
    flow_timeout: u32,
    /// `Config::tcp_established_timeout_s` in ticks.
    tcp_established_timeout: u32,
    /// How often an entry's stamp has passed 0, after which it may come round to a
    /// value it had before (see [`Conntrack::stamp`]).
    era: u64,
}

fn index_slots(capacity: usize) -> usize {
    (capacity * 5).div_ceil(2).max(2)
}

/// Expiry ticks per second (see the module docs).
const TICKS_PER_S: u32 = 8;

/// The stamp after `stamp` (see [`Conntrack::stamp`]); `era` moves on when it comes
/// round to 0.
#[inline]
fn next_stamp(stamp: u16, era: &mut u64) -> u16 {
    let next = stamp.wrapping_add(1);
    if next == 0 {
        *era += 1;
    }
    next
}

/// A time in the table's expiry ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticks(u32);

impl Ticks {
    /// A time on the caller's clock, in nanoseconds, in ticks.
    #[inline]
    pub fn at(now_ns: u64) -> Ticks {
        Ticks(ticks(now_ns))
    }
}

/// The caller's clock in expiry ticks.
fn ticks(now_ns: u64) -> u32 {
    u32::try_from(now_ns / (1_000_000_000 / u64::from(TICKS_PER_S))).unwrap_or(u32::MAX)
}

#[allow(clippy::cast_possible_truncation)] // the high half of a 64-bit hash
fn tag_of(h: u64) -> u32 {
    (h >> 32) as u32
}

fn slot_tag(s: u64) -> u32 {
    tag_of(s)
}

#[allow(clippy::cast_possible_truncation)] // the low half of a slot
fn slot_ref(s: u64) -> u32 {
    s as u32
}

impl<A: Copy + Default> Conntrack<A> {
    /// An empty table with every entry and index slot allocated.
    pub fn new(cfg: &Config) -> Result<Self, ConfigError> {
        if cfg.capacity == 0 || cfg.capacity > Config::MAX_CAPACITY {
            return Err(ConfigError::Capacity(cfg.capacity));
        }
        if cfg.flow_timeout_s == 0 || cfg.tcp_established_timeout_s == 0 {
            return Err(ConfigError::Timeout);
        }
        let n = index_slots(cfg.capacity);
        let free =
            Entry { keys: [FlowKey::v4(0, 0.into(), 0.into(), 0, 0, 0); 2], actions: [A::default(); 2] };
        let free_meta = Meta { expires_or_next: NIL, stamp: 0, kind: KIND_FREE, state: 0 };
        let mut t = Conntrack {
            entries: vec![free; cfg.capacity].into_boxed_slice(),
            meta: vec![free_meta; cfg.capacity].into_boxed_slice(),
            slots: vec![EMPTY; n].into_boxed_slice(),
            n_slots: u32::try_from(n).map_err(|_| ConfigError::Capacity(cfg.capacity))?,
            free_head: NIL,
            len: 0,
            used: 0,
            cursor: 0,
            hasher: FlowHasher::new(cfg.seed),
            flow_timeout: cfg.flow_timeout_s.saturating_mul(TICKS_PER_S),
            tcp_established_timeout: cfg.tcp_established_timeout_s.saturating_mul(TICKS_PER_S),
            era: 0,
        };
        t.clear();
        Ok(t)
    }

    /// The heap memory a table of `capacity` flows takes (what [`Conntrack::new`]
    /// allocates; the struct itself is a few dozen bytes more).
    pub fn footprint(capacity: usize) -> Footprint {
        Footprint {
            capacity,
            entry_bytes: capacity * (std::mem::size_of::<Entry<A>>() + std::mem::size_of::<Meta>()),
            index_bytes: index_slots(capacity) * std::mem::size_of::<u64>(),
        }
    }

    /// Where the table's three large allocations (the entry arena, the entries' expiry
    /// and state words, and the index) lie: (address, bytes) of each, for the daemon to
    /// ask the kernel for huge pages there. Every lookup touches each at a random place;
    /// with 4 KiB pages a large table costs a TLB miss per lookup (measured on the node:
    /// VF to VF 10 % faster with transparent huge pages).
    pub fn memory(&self) -> [(usize, usize); 3] {
        [
            (self.entries.as_ptr().addr(), std::mem::size_of_val(&*self.entries)),
            (self.meta.as_ptr().addr(), std::mem::size_of_val(&*self.meta)),
            (self.slots.as_ptr().addr(), std::mem::size_of_val(&*self.slots)),
        ]
    }

    /// The heap memory this table holds.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries)
            + std::mem::size_of_val(&*self.meta)
            + std::mem::size_of_val(&*self.slots)
    }

    /// Most flows the table holds.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Flows held, including expired ones not reclaimed yet.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no flow.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every flow (without reporting them). Takes time proportional to the
    /// capacity: not for the packet path.
    pub fn clear(&mut self) {
        self.slots.fill(EMPTY);
        let cap = self.meta.len();
        for (i, m) in self.meta.iter_mut().enumerate() {
            m.kind = KIND_FREE;
            // Entry numbers fit 32 bits by MAX_CAPACITY; the last entry ends the chain.
            m.expires_or_next = if i + 1 < cap { u32::try_from(i + 1).unwrap_or(NIL) } else { NIL };
        }
        self.free_head = 0;
        self.len = 0;
        self.used = 0;
        self.cursor = 0;
    }

    // ---- the packet path ----

    /// Looks up a packet's key and, when a live flow has it, counts the packet: the flow's
    /// TCP state advances on `tcp_flags` (the TCP header's flags byte; ignored for other
    /// protocols, pass 0) and its expiry moves to `now_ns` plus the state's timeout.
    /// Expired flows are absent. One hash and one index probe.
    #[inline]
    pub fn track(&mut self, key: &FlowKey, tcp_flags: u8, now_ns: u64) -> Option<Hit<A>> {
        self.track_at(key, self.hasher.hash(key), tcp_flags, ticks(now_ns))
    }

    /// [`Conntrack::track`] with the key's hash `hash` already computed by the caller with
    /// [`Conntrack::hasher`] (it must be that hash, or the key is not found). Returns only
    /// the flow and the direction, small enough to come back in registers: the action is
    /// then read where it lies with [`Conntrack::action_ref`] (a copy of it, stored field
    /// by field and read back at once, would wait for store-to-load forwarding).
    #[inline]
    pub fn track_hashed(
        &mut self,
        key: &FlowKey,
        hash: u64,
        tcp_flags: u8,
        now_ns: u64,
    ) -> Option<(FlowId, Dir)> {
        debug_assert_eq!(hash, self.hasher.hash(key));
        self.track_at(key, hash, tcp_flags, ticks(now_ns)).map(|h| (h.id, h.dir))
    }

    /// Warms the cache for the lookups of a vector of keys, given their hashes: reads
    /// the index slot where each lookup starts, then, for each slot whose tag matches,
    /// the parts of the entry it names that a hit reads. Each pass is a tight loop of
    /// independent loads, so that the CPU overlaps their cache misses (with much work
    /// between them it waits for each in turn: measured on the node with 65,536 live
    /// flows, over half of the worker's time went to the first load of each lookup).
    /// Changes nothing.
    pub fn warm(&self, hashes: impl Iterator<Item = u64> + Clone) {
        self.warm_slots(hashes.clone());
        let mut acc = 0u64;
        for h in hashes {
            let s = self.slots[self.home(tag_of(h))];
            if s != EMPTY && slot_tag(s) == tag_of(h) {
                let i = (slot_ref(s) >> 1) as usize;
                if let (Some(e), Some(m)) = (self.entries.get(i), self.meta.get(i)) {
                    // Read the key and the action of the slot's direction and the
                    // expiry, as the lookup will.
                    let k = &e.keys[(s & 1) as usize];
                    acc ^= u64::from(k.vni()) ^ u64::from(k.zone()) ^ u64::from(m.expires_or_next);
                    std::hint::black_box(e.actions[(s & 1) as usize]);
                }
            }
        }
        // Keeps the loads from being optimised away.
        std::hint::black_box(acc);
    }

    /// The first half of [`Conntrack::warm`]: reads the index slot where each lookup
    /// starts. For a caller that then looks up the whole vector in one tight loop, whose
    /// independent lookups overlap their misses on the entries by themselves.
    #[inline]
    pub fn warm_slots(&self, hashes: impl Iterator<Item = u64>) {
        let mut acc = 0u64;
        for h in hashes {
            acc ^= self.slots[self.home(tag_of(h))];
        }
        // Keeps the loads from being optimised away.
        std::hint::black_box(acc);
    }

    /// Starts loading the line of flow `id`'s expiry and state that
    /// [`Conntrack::is_current`] and [`Conntrack::touch`] use (nothing if `id` is no
    /// entry).
    #[inline]
    pub fn prefetch_expiry(&self, id: FlowId) {
        dpfleet_mem::prefetch::read_at(&self.meta, id.index());
    }

    /// Whether entry `i` holds a flow.
    #[inline]
    fn is_live(&self, i: usize) -> bool {
        self.meta.get(i).is_some_and(|m| m.kind != KIND_FREE)
    }

    /// The action of one direction of a flow, in place (`None` if `id` is no flow).
    #[inline]
    pub fn action_ref(&self, id: FlowId, dir: Dir) -> Option<&A> {
        let e = self.entries.get(id.index()).filter(|_| self.is_live(id.index()))?;
        Some(&e.actions[dir.index()])
    }

    /// The table's keyed hash.
    pub fn hasher(&self) -> &FlowHasher {
        &self.hasher
    }

    /// [`Conntrack::track`] for a burst: `out[i]` is the result for `keys[i]` with
    /// `tcp_flags[i]` (up to the shortest of the three slices). The same as calling
    /// `track` for each key in order, but the lookups of a group of keys overlap their
    /// memory accesses (the group is [warmed](Conntrack::warm) first, then the work is
    /// done), so that the CPU can overlap the cache misses of a large table.
    /// Measured (benches/conntrack.rs): about 1.6× the rate of single lookups with 2^20
    /// live flows, but slower than them when the live flows fit the last-level cache
    /// (65,536 flows), where the extra passes cost more than the misses they overlap.
    pub fn track_burst(
        &mut self,
        keys: &[FlowKey],
        tcp_flags: &[u8],
        now_ns: u64,
        out: &mut [Option<Hit<A>>],
    ) {
        const GROUP: usize = 16;
        let now = ticks(now_ns);
        let n = keys.len().min(tcp_flags.len()).min(out.len());
        let mut base = 0;
        while base < n {
            let m = (n - base).min(GROUP);
            let mut hashes = [0u64; GROUP];
            for (h, k) in hashes.iter_mut().zip(&keys[base..base + m]) {
                *h = self.hasher.hash(k);
            }
            self.warm(hashes[..m].iter().copied());
            for (i, &h) in hashes[..m].iter().enumerate() {
                let j = base + i;
                out[j] = self.track_at(&keys[j], h, tcp_flags[j], now);
            }
            base += m;
        }
    }

    /// The live flow with key `key` (hash `hash`, as for [`Conntrack::track_hashed`]) and
    /// its direction, without counting a packet: for a caller that decides what to do
    /// with the packet first and then counts it with [`Conntrack::touch`].
    #[inline]
    pub fn lookup_hashed(&self, key: &FlowKey, hash: u64, now_ns: u64) -> Option<(FlowId, Dir)> {
        debug_assert_eq!(hash, self.hasher.hash(key));
        let r = self.find_live(key, hash, ticks(now_ns))?;
        Some((FlowId(r >> 1), Dir::from_bit(r)))
    }

    /// Counts a packet of the live flow `id` that [`Conntrack::lookup_hashed`] just found
    /// (same `now_ns`, no change to the table in between): the same as the
    /// [`Conntrack::track`] that would have found it.
    #[inline]
    pub fn touch(&mut self, id: FlowId, tcp_flags: u8, now_ns: u64) {
        self.count(id.index(), tcp_flags, ticks(now_ns));
    }

    /// [`Conntrack::touch`] at a time already in ticks ([`Ticks::at`]), for a
    /// caller that touches many flows at one time.
    #[inline]
    pub fn touch_at(&mut self, id: FlowId, tcp_flags: u8, now: Ticks) {
        self.count(id.index(), tcp_flags, now.0);
    }

    /// The stamp of flow `id` (`None` if `id` is no flow). A flow's stamp stays the same
    /// for as long as it lives with the same keys and actions, and an entry's stamp
    /// only comes round to an earlier value after [`Conntrack::era`] has moved on: so
    /// `(id, stamp)` names one flow, unchanged, within an era ([`Conntrack::is_current`]).
    #[inline]
    pub fn stamp(&self, id: FlowId) -> Option<u16> {
        self.meta.get(id.index()).filter(|m| m.kind != KIND_FREE).map(|m| m.stamp)
    }

    /// See [`Conntrack::stamp`]. Starts at 0; moves on once in 65,536 new flows of one
    /// entry at most.
    #[inline]
    pub fn era(&self) -> u64 {
        self.era
    }

    /// Whether `(id, stamp)` (from [`Conntrack::stamp`], in this [`Conntrack::era`]) is
    /// a live, unexpired flow: the same flow, with the same keys and actions, as when
    /// the stamp was read.
    #[inline]
    pub fn is_current(&self, id: FlowId, stamp: u16, now_ns: u64) -> bool {
        self.meta
            .get(id.index())
            .is_some_and(|m| m.stamp == stamp && m.kind != KIND_FREE && ticks(now_ns) <= m.expires_or_next)
    }

    /// The entry reference of the live flow with key `key` (hash `h`) at tick `now`.
    #[inline]
    fn find_live(&self, key: &FlowKey, h: u64, now: u32) -> Option<u32> {
        let r = self.find(key, h)?.1;
        (now <= self.meta[(r >> 1) as usize].expires_or_next).then_some(r)
    }

    /// Counts a packet of the flow in entry `idx` at tick `now`: its TCP state advances
    /// on `tcp_flags` and its expiry moves to `now` plus the state's timeout.
    #[inline]
    fn count(&mut self, idx: usize, tcp_flags: u8, now: u32) -> TcpState {
        let (established, short) = (self.tcp_established_timeout, self.flow_timeout);
        let Some(m) = self.meta.get_mut(idx) else { return TcpState::None };
        let mut tcp = TcpState::None;
        let mut timeout = short;
        if m.kind == KIND_TCP {
            tcp = TcpState::from_u8(m.tcp()).next(tcp_flags);
            m.state = tcp as u8 | (m.state & SINGLE);
            if tcp == TcpState::Established {
                timeout = established;
            }
        }
        m.expires_or_next = now.saturating_add(timeout);
        tcp
    }

    #[inline]
    fn track_at(&mut self, key: &FlowKey, h: u64, tcp_flags: u8, now: u32) -> Option<Hit<A>> {
        let r = self.find_live(key, h, now)?;
        let tcp = self.count((r >> 1) as usize, tcp_flags, now);
        let dir = Dir::from_bit(r);
        Some(Hit {
            id: FlowId(r >> 1),
            dir,
            action: self.entries[(r >> 1) as usize].actions[dir.index()],
            tcp,
        })
    }

    /// Looks up a key without counting a packet. Expired flows are absent.
    pub fn get(&self, key: &FlowKey, now_ns: u64) -> Option<Hit<A>> {
        let r = self.find_live(key, self.hasher.hash(key), ticks(now_ns))?;
        let (e, m) = (&self.entries[(r >> 1) as usize], &self.meta[(r >> 1) as usize]);
        let dir = Dir::from_bit(r);
        let tcp = if m.kind == KIND_TCP { TcpState::from_u8(m.tcp()) } else { TcpState::None };
        Some(Hit { id: FlowId(r >> 1), dir, action: e.actions[dir.index()], tcp })
    }

    /// The flow an ICMP error belongs to, from the key of the packet the error quotes
    /// (parsed by the caller from the quoted header, with the error's VNI): the flow
    /// whose key is the quoted one reversed. The hit's direction is the one the error
    /// travels in. Does not count a packet.
    pub fn lookup_quoted(&self, quoted: &FlowKey, now_ns: u64) -> Option<Hit<A>> {
        self.get(&quoted.reversed(), now_ns)
    }

    // ---- creating and changing flows ----

    /// Inserts a flow whose first packet had key `orig` (and TCP flags `tcp_flags`, 0
    /// for other protocols), whose replies will have key `reply`, with the action of
    /// each direction. The flow is TCP when `orig` is.
    ///
    /// A key held by an expired flow is taken over: that flow is removed and reported to
    /// `on_remove`. A key held by a live flow refuses the insert ([`InsertError::Exists`]),
    /// and so does a full table ([`InsertError::Full`]); the table then holds the same live
    /// flows as before.
    pub fn insert(
        &mut self,
        orig: FlowKey,
        reply: FlowKey,
        actions: [A; 2],
        tcp_flags: u8,
        now_ns: u64,
        mut on_remove: impl FnMut(&Flow<A>),
    ) -> Result<FlowId, InsertError> {
        let now = ticks(now_ns);
        let h0 = self.hasher.hash(&orig);
        let single = orig == reply;
        let h1 = if single { h0 } else { self.hasher.hash(&reply) };
        self.claim(&orig, h0, now, &mut on_remove)?;
        if !single {
            self.claim(&reply, h1, now, &mut on_remove)?;
        }
        let idx = self.free_head;
        if idx == NIL {
            return Err(InsertError::Full);
        }
        let (kind, tcp, timeout) = if orig.proto() == PROTO_TCP {
            let s = TcpState::None.next(tcp_flags);
            let t = if s == TcpState::Established { self.tcp_established_timeout } else { self.flow_timeout };
            (KIND_TCP, s as u8, t)
        } else {
            (KIND_OTHER, 0, self.flow_timeout)
        };
        let m = &mut self.meta[idx as usize];
        self.free_head = m.expires_or_next;
        self.used = self.used.max(idx as usize + 1);
        let stamp = next_stamp(m.stamp, &mut self.era);
        *m = Meta {
            expires_or_next: now.saturating_add(timeout),
            stamp,
            kind,
            state: tcp | if single { SINGLE } else { 0 },
        };
        self.entries[idx as usize] = Entry { keys: [orig, reply], actions };
        self.len += 1;
        self.index_insert(tag_of(h0), idx << 1);
        if !single {
            self.index_insert(tag_of(h1), idx << 1 | 1);
        }
        Ok(FlowId(idx))
    }

    /// Replaces the key of one direction of a live flow (for a stage that decides a
    /// translation after the flow was created). The same rules as
    /// [`Conntrack::insert`] apply to the new key; on error the flow is unchanged.
    /// Returns `Ok` without change when `id` is no live flow.
    pub fn set_key(
        &mut self,
        id: FlowId,
        dir: Dir,
        key: FlowKey,
        now_ns: u64,
        mut on_remove: impl FnMut(&Flow<A>),
    ) -> Result<(), InsertError> {
        let Some(e) = self.entries.get(id.index()) else { return Ok(()) };
        if !self.is_live(id.index()) || e.keys[dir.index()] == key {
            return Ok(());
        }
        let h = self.hasher.hash(&key);
        // The other direction's key may equal the new one: that is this flow, not a clash.
        let other = e.keys[dir.flip().index()];
        if other != key {
            self.claim(&key, h, ticks(now_ns), &mut on_remove)?;
        }
        self.unlink(id.0);
        let e = &mut self.entries[id.index()];
        e.keys[dir.index()] = key;
        let single = e.keys[0] == e.keys[1];
        let m = &mut self.meta[id.index()];
        m.state = m.tcp() | if single { SINGLE } else { 0 };
        m.stamp = next_stamp(m.stamp, &mut self.era);
        self.link(id.0);
        Ok(())
    }

    /// The action of one direction of a flow (`None` if `id` is no flow).
    pub fn action(&self, id: FlowId, dir: Dir) -> Option<A> {
        self.action_ref(id, dir).copied()
    }

    /// Replaces the action of one direction of a flow. Returns whether `id` is a flow.
    pub fn set_action(&mut self, id: FlowId, dir: Dir, action: A) -> bool {
        match (self.entries.get_mut(id.index()), self.meta.get_mut(id.index())) {
            (Some(e), Some(m)) if m.kind != KIND_FREE => {
                e.actions[dir.index()] = action;
                m.stamp = next_stamp(m.stamp, &mut self.era);
                true
            }
            _ => false,
        }
    }

    /// A copy of a flow (`None` if `id` is no flow; expired flows not reclaimed yet are
    /// shown).
    pub fn flow(&self, id: FlowId) -> Option<Flow<A>> {
        self.is_live(id.index()).then(|| self.view(id.0))
    }

    /// Removes a flow and returns it (`None` if `id` is no flow).
    pub fn remove(&mut self, id: FlowId) -> Option<Flow<A>> {
        let f = self.flow(id)?;
        self.unlink(id.0);
        self.release(id.0);
        Some(f)
    }

    // ---- housekeeping ----

    /// Reclaims expired flows among the next `max_scan` entries of the arena (a cursor
    /// goes round the entries ever taken, see `used`, from call to call). Returns how
    /// many were removed. Call it often enough that the cursor goes round within the
    /// timeout; `max_scan` bounds the work of one call (a read per scanned entry, a cache
    /// miss when the table is large, plus a removal per flow).
    pub fn age(&mut self, now_ns: u64, max_scan: usize) -> usize {
        self.age_with(now_ns, max_scan, |_| {})
    }

    /// [`Conntrack::age`], reporting each removed flow to `on_remove`.
    pub fn age_with(&mut self, now_ns: u64, max_scan: usize, mut on_remove: impl FnMut(&Flow<A>)) -> usize {
        let now = ticks(now_ns);
        let end = self.used;
        let mut removed = 0;
        for _ in 0..max_scan.min(end) {
            let i = if self.cursor < end { self.cursor } else { 0 };
            self.cursor = i + 1;
            let m = &self.meta[i];
            if m.kind != KIND_FREE && now > m.expires_or_next {
                // i < capacity <= MAX_CAPACITY fits 32 bits.
                let id = u32::try_from(i).unwrap_or(NIL);
                on_remove(&self.view(id));
                self.unlink(id);
                self.release(id);
                removed += 1;
            }
        }
        removed
    }

    /// Removes every flow (expired or not) for which `keep` says no, reporting each to
    /// `on_remove`; returns how many. Scans the entries ever taken (a few milliseconds
    /// per million): for flushes the control plane asks for (a NAT or interface
    /// deleted), not for every burst.
    pub fn retain(
        &mut self,
        mut keep: impl FnMut(&Flow<A>) -> bool,
        mut on_remove: impl FnMut(&Flow<A>),
    ) -> usize {
        let mut removed = 0;
        for i in 0..self.used {
            if !self.is_live(i) {
                continue;
            }
            let id = u32::try_from(i).unwrap_or(NIL);
            let f = self.view(id);
            if !keep(&f) {
                on_remove(&f);
                self.unlink(id);
                self.release(id);
                removed += 1;
            }
        }
        removed
    }

    /// Every flow held (expired ones not reclaimed yet included), in entry order. Scans
    /// the entries ever taken (see `used`).
    pub fn iter(&self) -> impl Iterator<Item = Flow<A>> + '_ {
        self.meta[..self.used]
            .iter()
            .zip(0u32..)
            .filter(|(m, _)| m.kind != KIND_FREE)
            .map(|(_, i)| self.view(i))
    }

    // ---- internals ----

    /// The flow in entry `id`, which holds one.
    fn view(&self, id: u32) -> Flow<A> {
        let (e, m) = (&self.entries[id as usize], &self.meta[id as usize]);
        Flow {
            id: FlowId(id),
            keys: e.keys,
            actions: e.actions,
            tcp: (m.kind == KIND_TCP).then(|| TcpState::from_u8(m.tcp())),
            expires_s: m.expires_or_next.div_ceil(TICKS_PER_S),
        }
    }

    /// The home slot of a hash tag: `tag × n / 2^32`, uniform over the slots.
    #[inline]
    fn home(&self, tag: u32) -> usize {
        ((u64::from(tag) * u64::from(self.n_slots)) >> 32) as usize
    }

    #[inline]
    fn next_slot(&self, pos: usize) -> usize {
        if pos + 1 == self.slots.len() {
            0
        } else {
            pos + 1
        }
    }

    /// How far the slot content `s` at `pos` sits from its home.
    #[inline]
    fn displacement(&self, s: u64, pos: usize) -> usize {
        let home = self.home(slot_tag(s));
        if pos >= home {
            pos - home
        } else {
            pos + self.slots.len() - home
        }
    }

    /// The slot position and entry reference of `key` (hash `h`), expired or not.
    #[inline]
    fn find(&self, key: &FlowKey, h: u64) -> Option<(usize, u32)> {
        let tag = tag_of(h);
        let mut pos = self.home(tag);
        let mut d = 0;
        loop {
            let s = self.slots[pos];
            if s == EMPTY {
                return None;
            }
            if slot_tag(s) == tag {
                let r = slot_ref(s);
                if self.entries[(r >> 1) as usize].keys[(r & 1) as usize] == *key {
                    return Some((pos, r));
                }
            } else if self.displacement(s, pos) < d {
                // Robin Hood order: the key would sit before a slot closer to its home.
                return None;
            }
            d += 1;
            pos = self.next_slot(pos);
        }
    }

    /// Makes sure no live flow holds `key`: refuses if one does, removes (and reports)
    /// an expired one.
    fn claim(
        &mut self,
        key: &FlowKey,
        h: u64,
        now: u32,
        on_remove: &mut impl FnMut(&Flow<A>),
    ) -> Result<(), InsertError> {
        if let Some((_, r)) = self.find(key, h) {
            let idx = r >> 1;
            if now <= self.meta[idx as usize].expires_or_next {
                return Err(InsertError::Exists { id: FlowId(idx), dir: Dir::from_bit(r) });
            }
            on_remove(&self.view(idx));
            self.unlink(idx);
            self.release(idx);
        }
        Ok(())
    }

    /// Adds an index slot (the key is known to be absent).
    fn index_insert(&mut self, tag: u32, r: u32) {
        let mut carry = u64::from(tag) << 32 | u64::from(r);
        let mut pos = self.home(tag);
        let mut d = 0;
        // The index is at most 80 % full, so an empty slot comes.
        loop {
            let s = self.slots[pos];
            if s == EMPTY {
                self.slots[pos] = carry;
                return;
            }
            let ds = self.displacement(s, pos);
            if ds < d {
                self.slots[pos] = carry;
                carry = s;
                d = ds;
            }
            d += 1;
            pos = self.next_slot(pos);
        }
    }

    /// Removes the index slot holding reference `r` to a key with hash `h`.
    fn index_remove(&mut self, h: u64, r: u32) {
        let target = u64::from(tag_of(h)) << 32 | u64::from(r);
        let mut pos = self.home(tag_of(h));
        loop {
            let s = self.slots[pos];
            if s == target {
                break;
            }
            if s == EMPTY {
                debug_assert!(false, "flow table index lost a key");
                return;
            }
            pos = self.next_slot(pos);
        }
        // Backward shift: pull the rest of the run one slot closer to home.
        loop {
            let next = self.next_slot(pos);
            let s = self.slots[next];
            if s == EMPTY || self.displacement(s, next) == 0 {
                self.slots[pos] = EMPTY;
                return;
            }
            self.slots[pos] = s;
            pos = next;
        }
    }

    /// Indexes a live entry's keys.
    fn link(&mut self, idx: u32) {
        let [k0, k1] = self.entries[idx as usize].keys;
        let single = self.meta[idx as usize].single();
        self.index_insert(tag_of(self.hasher.hash(&k0)), idx << 1);
        if !single {
            self.index_insert(tag_of(self.hasher.hash(&k1)), idx << 1 | 1);
        }
    }

    /// Removes a live entry's keys from the index.
    fn unlink(&mut self, idx: u32) {
        let [k0, k1] = self.entries[idx as usize].keys;
        let single = self.meta[idx as usize].single();
        self.index_remove(self.hasher.hash(&k0), idx << 1);
        if !single {
            self.index_remove(self.hasher.hash(&k1), idx << 1 | 1);
        }
    }

    /// Returns an unlinked entry to the free list.
    fn release(&mut self, idx: u32) {
        let m = &mut self.meta[idx as usize];
        m.kind = KIND_FREE;
        m.expires_or_next = self.free_head;
        self.free_head = idx;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests;
