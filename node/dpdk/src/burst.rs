//! A fixed-capacity vector of mbufs for rx/tx bursts, without heap allocation.

use crate::mbuf::Mbuf;
use crate::sys;

/// Up to `N` owned mbufs, stored inline as raw pointers (the layout `rte_eth_rx_burst`
/// and `rte_eth_tx_burst` use). Slots `0..len` each own one live mbuf; the rest are
/// unused. Dropping the burst frees the mbufs it holds.
pub struct Burst<const N: usize> {
    len: usize,
    slots: [*mut sys::rte_mbuf; N],
}

// SAFETY: the burst owns its mbufs exclusively, and Mbuf is Send.
unsafe impl<const N: usize> Send for Burst<N> {}

impl<const N: usize> Default for Burst<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> std::fmt::Debug for Burst<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).field("capacity", &N).finish()
    }
}

impl<const N: usize> Burst<N> {
    /// An empty burst.
    pub const fn new() -> Self {
        Burst { len: 0, slots: [std::ptr::null_mut(); N] }
    }

    /// Number of mbufs held.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no mbuf is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `N` mbufs are held.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Appends `m`, or gives it back when the burst is full.
    #[inline]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == N {
            return Err(m);
        }
        self.slots[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last mbuf.
    #[inline]
    pub fn pop(&mut self) -> Option<Mbuf> {
        self.len = self.len.checked_sub(1)?;
        // SAFETY: slot `len` (before the decrement, `len - 1`) held a live owned mbuf,
        // and it is no longer counted, so ownership moves to the returned Mbuf.
        unsafe { Mbuf::from_raw(self.slots[self.len]) }
    }

    /// The held mbufs.
    #[inline]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: Mbuf is #[repr(transparent)] over NonNull<rte_mbuf>, which has the same
        // layout as *mut rte_mbuf, and every slot below len holds a live, non-null mbuf.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The held mbufs, mutable (e.g. to run the pipeline over them as `PacketBuf`s).
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in as_slice; &mut self makes the access exclusive. Callers may swap
        // mbufs within the slice, which keeps every slot owning exactly one live mbuf.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Moves every mbuf out, in order, leaving the burst empty. Mbufs the iterator does
    /// not yield are freed when it is dropped.
    pub fn drain(&mut self) -> Drain<'_, N> {
        let end = std::mem::replace(&mut self.len, 0);
        Drain { burst: self, next: 0, end }
    }

    /// Frees every held mbuf.
    pub fn clear(&mut self) {
        let n = std::mem::replace(&mut self.len, 0);
        if n > 0 {
            // n <= N, and N is far below u32::MAX for any realistic burst; saturate anyway.
            let count = u32::try_from(n).unwrap_or(u32::MAX);
            // SAFETY: slots 0..n own live mbufs that are no longer counted by the burst.
            unsafe { sys::rte_pktmbuf_free_bulk(self.slots.as_mut_ptr(), count) };
        }
    }

    /// Pointer to the first free slot and the number of free slots (for rx).
    #[inline]
    pub(crate) fn spare_raw(&mut self) -> (*mut *mut sys::rte_mbuf, u16) {
        let free = u16::try_from(N - self.len).unwrap_or(u16::MAX);
        // SAFETY: len <= N, so the pointer is in bounds or one past the end.
        (unsafe { self.slots.as_mut_ptr().add(self.len) }, free)
    }

    /// Counts `n` more slots as holding live mbufs.
    ///
    /// # Safety
    /// The `n` slots after the current length must have been filled with owned mbufs,
    /// and `len + n <= N`.
    #[inline]
    pub(crate) unsafe fn commit(&mut self, n: usize) {
        debug_assert!(self.len + n <= N);
        self.len += n;
    }

    /// Pointer to the held mbufs and their number (for tx).
    #[inline]
    pub(crate) fn held_raw(&mut self) -> (*mut *mut sys::rte_mbuf, u16) {
        (self.slots.as_mut_ptr(), u16::try_from(self.len).unwrap_or(u16::MAX))
    }

    /// Forgets the first `n` mbufs (ownership was passed on) and moves the rest to the
    /// front.
    ///
    /// # Safety
    /// The first `n` held mbufs must no longer be owned by the burst; `n <= len`.
    #[inline]
    pub(crate) unsafe fn consume_front(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        self.slots.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl<const N: usize> Drop for Burst<N> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Iterator returned by [`Burst::drain`].
pub struct Drain<'a, const N: usize> {
    burst: &'a mut Burst<N>,
    next: usize,
    end: usize,
}

impl<const N: usize> Iterator for Drain<'_, N> {
    type Item = Mbuf;

    #[inline]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next >= self.end {
            return None;
        }
        let p = self.burst.slots[self.next];
        self.next += 1;
        // SAFETY: slots next..end still own live mbufs (the burst's len is already 0, so
        // nothing else frees them); each is yielded once.
        unsafe { Mbuf::from_raw(p) }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl<const N: usize> ExactSizeIterator for Drain<'_, N> {}

impl<const N: usize> Drop for Drain<'_, N> {
    fn drop(&mut self) {
        for p in &self.burst.slots[self.next..self.end] {
            // SAFETY: these slots still own live mbufs that were not yielded.
            unsafe { sys::rte_pktmbuf_free(*p) };
        }
    }
}
