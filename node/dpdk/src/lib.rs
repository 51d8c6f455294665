//! Bindings to the system DPDK (22.11) and the few safe wrappers the dpfleet node needs.
//!
//! This is the only crate of dpfleet with `unsafe` code; every `unsafe` block says why it
//! is sound. The raw bindings live in [`sys`]; everything else is a thin safe layer:
//!
//! - [`Eal`]: process-wide EAL initialisation, lcores, launching workers, cleanup.
//! - [`Mempool`]: a pool of packet buffers (single-segment pktmbuf pool).
//! - [`Port`], [`RxQueue`], [`TxQueue`]: an ethdev port, configured and started by the
//!   control thread, polled by workers through per-queue handles.
//! - [`Mbuf`], [`Burst`]: an owned packet buffer implementing
//!   [`dpfleet_dataplane::buf::PacketBuf`], and a fixed-size vector of them.
//! - [`hugemem`]: transparent huge pages for the pipeline's large heap tables (not DPDK
//!   memory, but the same kind of unsafe edge).
//!
//! # Threads
//!
//! - [`Eal`] is neither `Send` nor `Sync`: it stays on the thread that initialised it,
//!   which is DPDK's main lcore. Launching and waiting for workers happen there.
//! - A [`Port`] is `Send + Sync`; control operations (`start`, `stop`, ...) take
//!   `&mut self`, so at most one thread reconfigures a port at a time. `stats` takes
//!   `&self` and may run on any thread.
//! - Each queue of a port is polled through exactly one [`RxQueue`] / [`TxQueue`] handle.
//!   Handles are `Send` but not `Sync` and are handed out once, so a queue is only ever
//!   used by one thread at a time, as DPDK requires. A port cannot be stopped while any
//!   of its queue handles exists.
//!
//! # Ownership of packets
//!
//! An [`Mbuf`] owns one reference to a DPDK mbuf and frees it when dropped. `rx_burst`
//! hands ownership of received mbufs to the caller; `tx_burst` takes ownership of the
//! mbufs it sent and leaves the unsent ones in the [`Burst`]. Mbufs never hold on to
//! their pool handle; instead the pool's memory is only returned to DPDK when every mbuf
//! is back in it (see [`Mempool`]), and `rte_eal_cleanup` only runs when no pool or port
//! is left (see [`Eal`]).
//!
//! # Shutdown order
//!
//! Stop polling (let worker closures return), [`Eal::wait_all`], drop the queue handles
//! and ports, drop the bursts and mbufs, drop the pools, and last drop the [`Eal`].

#![warn(missing_docs)]

mod burst;
mod eal;
mod error;
pub mod hugemem;
mod mbuf;
mod mempool;
mod port;

pub use burst::{Burst, Drain};
pub use eal::{current_lcore, tsc_cycles, Eal};
pub use error::Error;
pub use mbuf::Mbuf;
pub use mempool::{Mempool, DEFAULT_DATA_ROOM};
pub use port::{Port, PortConfig, PortInfo, PortStats, RxQueue, TxQueue};

/// Raw bindings to DPDK 22.11, generated at build time by `build.rs`.
///
/// `build.rs` runs bindgen over `csrc/dpdk.h` with the full `pkg-config --cflags
/// libdpdk` as clang arguments and an allowlist of `rte_eal_*`, `rte_lcore*`,
/// `rte_get_*lcore*`, `rte_eth_*`, `rte_pktmbuf_*`, `rte_mbuf_*`, `rte_mempool_*`,
/// `rte_strerror`, `rte_socket_id`, `rte_get_tsc_*` and the `dpfleet_*` shims. DPDK's
/// `static inline` functions (burst rx/tx, mbuf alloc/free/prepend, ...) are reached
/// through C wrappers that bindgen's `wrap_static_fns` generates and `cc` compiles;
/// macros and thread-locals go through the hand-written shims in `csrc/shim.c`.
/// Layout tests are not generated.
pub mod sys {
    #![allow(
        non_upper_case_globals,
        non_camel_case_types,
        non_snake_case,
        dead_code,
        missing_docs,
        clippy::all,
        clippy::undocumented_unsafe_blocks
    )]
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

/// Book-keeping that decides whether `rte_eal_cleanup` may run (see [`Eal`]).
pub(crate) mod live {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Pools and ports that exist right now.
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    /// Set once a pool was dropped while some of its mbufs were still out; its memory
    /// stays mapped, so EAL must not be cleaned up.
    static LEAKED: AtomicBool = AtomicBool::new(false);

    /// Held by every pool and port; while one exists, EAL is not cleaned up.
    #[derive(Debug)]
    pub(crate) struct Token(());

    impl Token {
        pub(crate) fn new() -> Token {
            LIVE.fetch_add(1, Ordering::AcqRel);
            Token(())
        }
    }

    impl Drop for Token {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn mark_leaked() {
        LEAKED.store(true, Ordering::Release);
    }

    /// Whether nothing DPDK-backed remains, so `rte_eal_cleanup` is safe.
    pub(crate) fn nothing_left() -> bool {
        LIVE.load(Ordering::Acquire) == 0 && !LEAKED.load(Ordering::Acquire)
    }
}
