//! Bounds-checked writers into byte slices, for building option lists and text fields
//! without allocating.

use core::fmt;

/// Appends bytes to a slice; remembers (instead of panicking) when they did not fit.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0, overflow: false }
    }
    /// Appends `data`, or marks the writer overflowed (writing nothing) if it does not fit.
    pub fn put(&mut self, data: &[u8]) -> &mut Self {
        match self.buf.get_mut(self.pos..self.pos + data.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(data);
                self.pos += data.len();
            }
            _ => self.overflow = true,
        }
        self
    }
    /// Appends a byte.
    pub fn put_u8(&mut self, v: u8) -> &mut Self {
        self.put(&[v])
    }
    /// Appends a big-endian u16.
    pub fn put_u16(&mut self, v: u16) -> &mut Self {
        self.put(&v.to_be_bytes())
    }
    /// Appends a big-endian u32.
    pub fn put_u32(&mut self, v: u32) -> &mut Self {
        self.put(&v.to_be_bytes())
    }
    /// Bytes written so far.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// The number of bytes written, or `None` if anything did not fit.
    pub fn finish(&self) -> Option<usize> {
        (!self.overflow).then_some(self.pos)
    }
}

/// Formats text into a fixed slice, cutting it off where the slice ends (like C's
/// `snprintf` without the terminating NUL).
#[derive(Debug)]
pub struct TruncatingText<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> TruncatingText<'a> {
    /// A writer at the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        TruncatingText { buf, len: 0 }
    }
    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Write for TruncatingText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write as _;

    #[test]
    fn writer_stops_at_the_end() {
        let mut b = [0u8; 7];
        let mut w = Writer::new(&mut b);
        w.put_u8(1).put_u16(0x0203).put_u32(0x0405_0607);
        assert_eq!(w.finish(), Some(7));
        w.put_u8(8);
        assert_eq!((w.finish(), w.pos()), (None, 7));
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7]);
        let mut b = [0u8; 3];
        let mut w = Writer::new(&mut b);
        w.put_u32(1).put_u8(9);
        assert_eq!(w.finish(), None, "stays overflowed even when later data would fit");
        assert_eq!(b, [0; 3]);
    }

    #[test]
    fn text_is_cut() {
        let mut b = [0u8; 10];
        let mut t = TruncatingText::new(&mut b);
        write!(t, "http://{}/x", std::net::Ipv4Addr::new(1, 2, 3, 4)).unwrap();
        assert_eq!(t.len(), 10);
        assert_eq!(&b, b"http://1.2");
    }
}
