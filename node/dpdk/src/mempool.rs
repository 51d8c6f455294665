//! Pools of packet buffers.

use std::ffi::{c_int, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::eal::Eal;
use crate::error::{rte_errno, strerror, Error};
use crate::live;
use crate::sys;

/// Data room per mbuf the daemon uses: 2048 bytes of packet plus
/// `RTE_PKTMBUF_HEADROOM` (128) of headroom, so every frame fits in one segment.
pub const DEFAULT_DATA_ROOM: u16 = 2048 + 128;

/// A DPDK pktmbuf pool (`rte_pktmbuf_pool_create`).
///
/// Cloning is cheap (reference counted); a [`crate::Port`] keeps a clone for as long as
/// its rx queues may allocate from the pool. When the last clone is dropped the pool
/// is freed only if every mbuf is back in it (`rte_mempool_avail_count` equals the pool
/// size, per-lcore caches included). Otherwise its memory is deliberately leaked so
/// that outstanding [`crate::Mbuf`]s stay valid, and `rte_eal_cleanup` is skipped.
/// The check is a safety net for mbufs that are *held*; mbufs must not be freed
/// concurrently with the drop of the last handle, so join the workers first.
#[derive(Clone, Debug)]
pub struct Mempool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ptr: NonNull<sys::rte_mempool>,
    name: String,
    _live: live::Token,
}

// SAFETY: DPDK mempools are built for concurrent use: the default ops ("ring_mp_mc")
// are multi-producer/multi-consumer and per-lcore caches are only touched by their own
// lcore (non-EAL threads bypass them). The handle itself is immutable.
unsafe impl Send for Inner {}
// SAFETY: see Send; every operation through &Mempool is thread-safe in DPDK.
unsafe impl Sync for Inner {}

impl Mempool {
    /// Creates a pool named `name` (unique in the process, at most 25 bytes) of `size`
    /// mbufs with a per-lcore cache of `cache_size` (at most 512, and `size` should be
    /// a multiple of it) and `data_room` bytes of buffer each, headroom included (use
    /// [`DEFAULT_DATA_ROOM`]). `socket` is the NUMA socket, `None` for any.
    pub fn new(
        _eal: &Eal,
        name: &str,
        size: u32,
        cache_size: u32,
        data_room: u16,
        socket: Option<u32>,
    ) -> Result<Mempool, Error> {
        let err = |reason: String| Error::Mempool { name: name.to_owned(), reason };
        let cname = CString::new(name).map_err(|_| err("name contains a NUL byte".into()))?;
        let socket = match socket {
            None => sys::SOCKET_ID_ANY,
            Some(s) => c_int::try_from(s).map_err(|_| err(format!("bad socket {s}")))?,
        };
        // SAFETY: EAL is initialised (we hold &Eal); name is NUL-terminated and copied.
        let ptr =
            unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), size, cache_size, 0, data_room, socket) };
        let Some(ptr) = NonNull::new(ptr) else {
            return Err(err(strerror(rte_errno())));
        };
        Ok(Mempool { inner: Arc::new(Inner { ptr, name: name.to_owned(), _live: live::Token::new() }) })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The raw pool pointer, valid while this handle lives.
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.inner.ptr.as_ptr()
    }

    /// Number of mbufs in the pool, free or not.
    pub fn capacity(&self) -> u32 {
        // SAFETY: the pool is alive while self is; `size` is immutable after creation.
        unsafe { (*self.inner.ptr.as_ptr()).size }
    }

    /// Number of free mbufs (approximate while other threads use the pool).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive while self is; the count is read-only and thread-safe.
        unsafe { sys::rte_mempool_avail_count(self.inner.ptr.as_ptr()) }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mp = self.ptr.as_ptr();
        // SAFETY: the pool is alive; this is the last handle.
        let full = unsafe { sys::rte_mempool_avail_count(mp) == (*mp).size };
        if full {
            // SAFETY: last handle and every mbuf is back in the pool, so nothing refers
            // to its memory any more.
            unsafe { sys::rte_mempool_free(mp) };
        } else {
            live::mark_leaked();
        }
    }
}
