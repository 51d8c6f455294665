//! The packet buffer abstraction the pipeline works on.

/// A packet: a contiguous byte buffer with headroom in front and tailroom behind.
///
/// Implemented by the DPDK mbuf wrapper in `dpfleet-dpdk` (single-segment mbufs only)
/// and by [`TestBuf`]. All edits happen in place.
pub trait PacketBuf {
    /// The packet bytes, starting at the Ethernet header.
    fn data(&self) -> &[u8];
    /// The packet bytes, mutable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the packet by `n` bytes at the front (into headroom). The new bytes are
    /// unspecified. Returns false, changing nothing, when the headroom is too small.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front. Returns false, changing nothing, when the
    /// packet is shorter than `n`.
    fn adj(&mut self, n: usize) -> bool;
    /// Grows the packet by `n` bytes at the end (into tailroom). The new bytes are
    /// unspecified. Returns false, changing nothing, when the tailroom is too small.
    fn append(&mut self, n: usize) -> bool;
    /// Shortens the packet to `len` bytes; does nothing when it is not longer.
    fn truncate(&mut self, len: usize);

    /// Current packet length in bytes.
    #[inline]
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the packet holds no bytes.
    #[inline]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sets the length to exactly `len`, growing or shrinking at the tail.
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        let cur = self.len();
        if len >= cur {
            self.append(len - cur)
        } else {
            self.truncate(len);
            true
        }
    }
}

/// Headroom a [`TestBuf`] gets by default; matches DPDK's `RTE_PKTMBUF_HEADROOM`.
pub const DEFAULT_HEADROOM: usize = 128;
/// Room a [`TestBuf`] has in all by default; matches a DPDK mbuf's 2048-byte data room.
pub const DEFAULT_CAPACITY: usize = 2048 + DEFAULT_HEADROOM;

/// A heap-backed packet buffer for tests, benchmarks and fuzzing, with mbuf-like
/// headroom and tailroom limits.
#[derive(Clone, Debug)]
pub struct TestBuf {
    mem: Vec<u8>,
    start: usize,
    end: usize,
}

impl TestBuf {
    /// A buffer holding `frame`, with [`DEFAULT_HEADROOM`] in front and room up to
    /// [`DEFAULT_CAPACITY`] (or more, if the frame is larger).
    pub fn new(frame: &[u8]) -> Self {
        let cap = DEFAULT_CAPACITY.max(DEFAULT_HEADROOM + frame.len());
        let mut mem = vec![0u8; cap];
        mem[DEFAULT_HEADROOM..DEFAULT_HEADROOM + frame.len()].copy_from_slice(frame);
        TestBuf { mem, start: DEFAULT_HEADROOM, end: DEFAULT_HEADROOM + frame.len() }
    }

    /// Replaces the content with `frame`, resetting headroom (reuse without allocating
    /// when the frame fits).
    #[inline]
    pub fn reset(&mut self, frame: &[u8]) {
        if DEFAULT_HEADROOM + frame.len() > self.mem.len() {
            *self = TestBuf::new(frame);
            return;
        }
        self.start = DEFAULT_HEADROOM;
        self.end = DEFAULT_HEADROOM + frame.len();
        self.mem[self.start..self.end].copy_from_slice(frame);
    }

    /// The bytes, owned.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data().to_vec()
    }
}

impl PacketBuf for TestBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.mem[self.start..self.end]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.end]
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    #[inline]
    fn append(&mut self, n: usize) -> bool {
        if self.end + n > self.mem.len() {
            return false;
        }
        self.end += n;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        if len < self.end - self.start {
            self.end = self.start + len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_and_tailroom_are_bounded() {
        let mut b = TestBuf::new(&[1, 2, 3]);
        assert!(b.prepend(DEFAULT_HEADROOM));
        assert!(!b.prepend(1));
        assert_eq!(b.len(), DEFAULT_HEADROOM + 3);
        assert!(b.adj(DEFAULT_HEADROOM));
        assert_eq!(b.data(), &[1, 2, 3]);
        assert!(!b.adj(4));
        assert!(b.set_len(10));
        assert_eq!(b.len(), 10);
        assert!(!b.append(DEFAULT_CAPACITY));
        b.truncate(2);
        assert_eq!(b.data(), &[1, 2]);
    }
}
