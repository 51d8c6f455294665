//! An owned packet buffer.

use std::ptr::NonNull;

use dpfleet_dataplane::buf::PacketBuf;

use crate::mempool::Mempool;
use crate::sys;

/// One owned DPDK mbuf, freed (`rte_pktmbuf_free`) when dropped.
///
/// The daemon uses single-segment pools ([`crate::DEFAULT_DATA_ROOM`] per mbuf), so a
/// frame is one contiguous segment. [`PacketBuf::data`] covers the **first segment
/// only**; chained mbufs (which a PMD could produce for jumbo frames) are recognised
/// with [`Mbuf::is_contiguous`] and should be dropped as malformed. On a chained mbuf
/// `append` fails and `truncate` does nothing.
///
/// Mbufs come from pools this crate creates or from rx queues; both hand out direct
/// mbufs with a reference count of one, so mutating the data never affects another
/// owner.
#[repr(transparent)]
#[derive(Debug)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is the only owner of its mbuf; DPDK allows an mbuf to be used and freed
// on any thread (freeing goes to the pool, which is thread-safe, see Mempool).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Allocates an empty mbuf from `pool` (headroom reset, length 0); `None` when the
    /// pool is exhausted. Does not allocate on the heap.
    pub fn alloc(pool: &Mempool) -> Option<Mbuf> {
        // SAFETY: the pool is alive while `pool` is; rte_pktmbuf_alloc is thread-safe.
        let m = unsafe { sys::rte_pktmbuf_alloc(pool.as_ptr()) };
        NonNull::new(m).map(Mbuf)
    }

    /// An mbuf from `pool` holding a copy of `bytes`; `None` when the pool is empty or
    /// the bytes do not fit behind the headroom.
    pub fn from_bytes(pool: &Mempool, bytes: &[u8]) -> Option<Mbuf> {
        let mut m = Mbuf::alloc(pool)?;
        if !m.append(bytes.len()) {
            return None;
        }
        m.data_mut().copy_from_slice(bytes);
        Some(m)
    }

    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be null or a valid mbuf that the caller owns (one reference) and does
    /// not use afterwards.
    pub unsafe fn from_raw(ptr: *mut sys::rte_mbuf) -> Option<Mbuf> {
        NonNull::new(ptr).map(Mbuf)
    }

    /// Gives up ownership; the caller must free the mbuf (or hand it to DPDK).
    #[inline]
    pub fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    /// The raw pointer, still owned by `self`.
    #[inline]
    pub fn as_ptr(&self) -> *mut sys::rte_mbuf {
        self.0.as_ptr()
    }

    #[inline]
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: self owns a live mbuf; no other reference to it exists, and &self
        // prevents mutation for the lifetime of the returned reference.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn raw_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: self owns a live mbuf (direct, reference count one, see the type's
        // docs); &mut self makes this the only reference for its lifetime.
        unsafe { self.0.as_mut() }
    }

    /// Whether the packet is a single segment, i.e. [`PacketBuf::data`] is all of it.
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.raw().nb_segs == 1
    }

    /// Length of the whole packet, all segments.
    #[inline]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// The port the packet was received on (set by the PMD).
    #[inline]
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    /// Free bytes in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        usize::from(self.raw().data_off)
    }

    /// Free bytes behind the data of the first segment.
    #[inline]
    pub fn tailroom(&self) -> usize {
        let m = self.raw();
        usize::from(m.buf_len).saturating_sub(usize::from(m.data_off) + usize::from(m.data_len))
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf and it is not used after this.
        unsafe { sys::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl PacketBuf for Mbuf {
    #[inline]
    fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: rte_pktmbuf_mtod: the first segment's bytes are at buf_addr + data_off,
        // data_len long, inside the buffer (DPDK keeps data_off + data_len <= buf_len).
        // The mbuf is owned by self, so nothing else writes them while &self lives.
        unsafe {
            let start = m.buf_addr.cast::<u8>().add(usize::from(m.data_off));
            std::slice::from_raw_parts(start, usize::from(m.data_len))
        }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let m = self.0.as_ptr();
        // SAFETY: as in data(); &mut self makes the access exclusive, and our mbufs are
        // direct with refcount 1, so no other owner sees the bytes.
        unsafe {
            let start = (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off));
            std::slice::from_raw_parts_mut(start, usize::from((*m).data_len))
        }
    }

    // prepend/adj/append/truncate edit the mbuf header in Rust, with the checks and
    // field updates of DPDK 22.11's rte_pktmbuf_prepend/adj/append/trim (rte_mbuf.h),
    // instead of calling the exported wrappers of those inline functions: one C call
    // per encapsulated or trimmed packet costs more than the edit. They keep DPDK's
    // invariant data_off + data_len <= buf_len, which data() relies on; given it, the
    // wrapping operations below never wrap (they only rule out a panic path).

    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let m = self.raw_mut();
        // As rte_pktmbuf_prepend: refused, changing nothing, beyond the headroom.
        let Ok(n) = u16::try_from(n) else { return false };
        if n > m.data_off {
            return false;
        }
        // data_off + data_len stays the same, so it stays <= buf_len (and fits u16).
        m.data_off = m.data_off.wrapping_sub(n);
        m.data_len = m.data_len.wrapping_add(n);
        m.pkt_len = m.pkt_len.wrapping_add(u32::from(n));
        true
    }

    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        let m = self.raw_mut();
        // As rte_pktmbuf_adj: refused beyond the first segment's length.
        let Ok(n) = u16::try_from(n) else { return false };
        if n > m.data_len {
            return false;
        }
        // data_off + data_len stays the same.
        m.data_len = m.data_len.wrapping_sub(n);
        m.data_off = m.data_off.wrapping_add(n);
        m.pkt_len = m.pkt_len.wrapping_sub(u32::from(n));
        true
    }

    #[inline]
    fn append(&mut self, n: usize) -> bool {
        // rte_pktmbuf_append grows the last segment; data() shows the first only, so
        // chained mbufs are refused.
        if !self.is_contiguous() {
            return false;
        }
        let tailroom = self.tailroom();
        let m = self.raw_mut();
        let Ok(n) = u16::try_from(n) else { return false };
        if usize::from(n) > tailroom {
            return false;
        }
        // n <= buf_len - data_off - data_len, so data_off + data_len stays <= buf_len.
        m.data_len = m.data_len.wrapping_add(n);
        m.pkt_len = m.pkt_len.wrapping_add(u32::from(n));
        true
    }

    #[inline]
    fn truncate(&mut self, len: usize) {
        if !self.is_contiguous() {
            return;
        }
        let m = self.raw_mut();
        // As rte_pktmbuf_trim on the only segment; never grows.
        let Ok(len) = u16::try_from(len) else { return };
        if len >= m.data_len {
            return;
        }
        let cut = m.data_len - len;
        m.data_len = len;
        m.pkt_len = m.pkt_len.wrapping_sub(u32::from(cut));
    }
}
