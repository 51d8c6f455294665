//! DHCPv4 messages (RFC 2131, options RFC 2132/3004/3442): field offsets, constants, a
//! zero-copy view and an option iterator.

use std::net::Ipv4Addr;

/// Field offsets of the fixed BOOTP/DHCP header.
pub mod field {
    use core::ops::Range;
    /// Message op (request/reply).
    pub const OP: usize = 0;
    /// Hardware address type.
    pub const HTYPE: usize = 1;
    /// Hardware address length.
    pub const HLEN: usize = 2;
    /// Relay hops.
    pub const HOPS: usize = 3;
    /// Transaction id.
    pub const XID: Range<usize> = 4..8;
    /// Seconds since the client began.
    pub const SECS: Range<usize> = 8..10;
    /// Flags (broadcast bit).
    pub const FLAGS: Range<usize> = 10..12;
    /// Client address (when it has one).
    pub const CIADDR: Range<usize> = 12..16;
    /// "Your" (client) address.
    pub const YIADDR: Range<usize> = 16..20;
    /// Next server address.
    pub const SIADDR: Range<usize> = 20..24;
    /// Relay agent address.
    pub const GIADDR: Range<usize> = 24..28;
    /// Client hardware address (16 bytes, Ethernet uses 6).
    pub const CHADDR: Range<usize> = 28..44;
    /// Server host name.
    pub const SNAME: Range<usize> = 44..108;
    /// Boot file name.
    pub const FILE: Range<usize> = 108..236;
    /// Magic cookie.
    pub const MAGIC: Range<usize> = 236..240;
    /// Start of the options.
    pub const OPTIONS: usize = 240;
}

/// Length of the fixed part, magic cookie included.
pub const FIXED_LEN: usize = field::OPTIONS;
/// The magic cookie that marks DHCP options.
pub const MAGIC_COOKIE: u32 = 0x6382_5363;
/// UDP port of the server.
pub const SERVER_PORT: u16 = 67;
/// UDP port of the client.
pub const CLIENT_PORT: u16 = 68;
/// op: request.
pub const OP_REQUEST: u8 = 1;
/// op: reply.
pub const OP_REPLY: u8 = 2;

/// Option codes.
pub mod opt {
    /// Padding.
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Interface MTU.
    pub const INTERFACE_MTU: u8 = 26;
    /// Lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Vendor class identifier.
    pub const VENDOR_CLASS_ID: u8 = 60;
    /// User class (RFC 3004).
    pub const USER_CLASS: u8 = 77;
    /// Classless static routes (RFC 3442).
    pub const CLASSLESS_ROUTE: u8 = 121;
    /// End of options.
    pub const END: u8 = 255;
}

/// Message types (option 53).
pub mod msg {
    /// Client looks for servers.
    pub const DISCOVER: u8 = 1;
    /// Server offers an address.
    pub const OFFER: u8 = 2;
    /// Client asks for the offered address.
    pub const REQUEST: u8 = 3;
    /// Client found the address in use.
    pub const DECLINE: u8 = 4;
    /// Server confirms.
    pub const ACK: u8 = 5;
    /// Server refuses.
    pub const NAK: u8 = 6;
    /// Client gives the address up.
    pub const RELEASE: u8 = 7;
    /// Client asks for configuration only.
    pub const INFORM: u8 = 8;
}

/// A view of a DHCP message (the UDP payload).
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buf` when it holds the fixed part; no accessor panics afterwards.
    pub fn new_checked(buf: T) -> Option<Self> {
        (buf.as_ref().len() >= FIXED_LEN).then_some(Packet { buf })
    }
    /// op.
    pub fn op(&self) -> u8 {
        self.buf.as_ref()[field::OP]
    }
    /// Transaction id.
    pub fn xid(&self) -> u32 {
        be32(&self.buf.as_ref()[field::XID])
    }
    /// Magic cookie.
    pub fn magic(&self) -> u32 {
        be32(&self.buf.as_ref()[field::MAGIC])
    }
    /// "Your" address.
    pub fn yiaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.be32_at(field::YIADDR.start))
    }
    /// Next server address.
    pub fn siaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.be32_at(field::SIADDR.start))
    }
    /// Relay agent address.
    pub fn giaddr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.be32_at(field::GIADDR.start))
    }
    /// Boot file name field (128 bytes, NUL padded).
    pub fn file(&self) -> &[u8] {
        &self.buf.as_ref()[field::FILE]
    }
    /// The options.
    pub fn options(&self) -> Options<'_> {
        Options { data: &self.buf.as_ref()[field::OPTIONS..], done: false }
    }
    fn be32_at(&self, off: usize) -> u32 {
        be32(&self.buf.as_ref()[off..off + 4])
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A truncated option (a code without a length, or a length beyond the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadOption;

/// Iterator over `(code, data)` of an option list; skips PAD, stops at END, and yields
/// one `Err(BadOption)` (then stops) at a truncated option.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    data: &'a [u8],
    done: bool,
}

impl<'a> Options<'a> {
    /// Iterates over a raw option list.
    pub fn new(data: &'a [u8]) -> Self {
        Options { data, done: false }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u8, &'a [u8]), BadOption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let (&code, rest) = self.data.split_first()?;
            match code {
                opt::PAD => self.data = rest,
                opt::END => {
                    self.done = true;
                    return None;
                }
                _ => {
                    let item = rest.split_first().and_then(|(&len, rest)| {
                        let len = usize::from(len);
                        (rest.len() >= len).then(|| (&rest[..len], &rest[len..]))
                    });
                    return match item {
                        Some((value, after)) => {
                            self.data = after;
                            Some(Ok((code, value)))
                        }
                        None => {
                            self.done = true;
                            Some(Err(BadOption))
                        }
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_iterate_and_stop() {
        let raw = [0, 0, 53, 1, 1, 0, 12, 2, b'v', b'm', 255, 53, 1, 3];
        let v: Vec<_> = Options::new(&raw).collect();
        assert_eq!(v, [Ok((53, &[1u8][..])), Ok((12, &b"vm"[..]))]);
        // no END: runs to the end of the data
        let v: Vec<_> = Options::new(&raw[..10]).collect();
        assert_eq!(v.len(), 2);
        // code without length, length beyond data
        assert_eq!(Options::new(&[53]).collect::<Vec<_>>(), [Err(BadOption)]);
        assert_eq!(Options::new(&[53, 2, 1]).collect::<Vec<_>>(), [Err(BadOption)]);
        assert_eq!(Options::new(&[]).count(), 0);
    }

    #[test]
    fn fixed_fields() {
        let mut raw = [0u8; 241];
        raw[field::OP] = OP_REQUEST;
        raw[field::XID].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        raw[field::YIADDR].copy_from_slice(&[10, 0, 0, 1]);
        raw[field::SIADDR].copy_from_slice(&[10, 0, 0, 2]);
        raw[field::GIADDR].copy_from_slice(&[10, 0, 0, 3]);
        raw[field::MAGIC].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        raw[field::OPTIONS] = opt::END;
        assert!(Packet::new_checked(&raw[..239]).is_none());
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert_eq!((p.op(), p.xid(), p.magic()), (1, 0x1234_5678, MAGIC_COOKIE));
        assert_eq!(p.yiaddr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.siaddr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.giaddr(), Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(p.file(), &[0u8; 128][..]);
        assert_eq!(p.options().count(), 0);
    }
}
