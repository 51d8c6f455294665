//! DHCPv6 messages (RFC 8415): constants, layout and an option iterator.
//!
//! A client/server message is a message type, a 3-byte transaction id and a list of
//! options, each `code: u16, len: u16, data[len]`.

/// UDP port of the client.
pub const CLIENT_PORT: u16 = 546;
/// UDP port of the server.
pub const SERVER_PORT: u16 = 547;
/// Length of the message type and transaction id.
pub const HEADER_LEN: usize = 4;
/// Length of an option's code and length.
pub const OPT_HEADER_LEN: usize = 4;
/// "Infinity" for lifetimes and T1/T2.
pub const INFINITY: u32 = 0xffff_ffff;

/// Message types.
pub mod msg {
    /// Client looks for servers.
    pub const SOLICIT: u8 = 1;
    /// Server offers.
    pub const ADVERTISE: u8 = 2;
    /// Client asks for addresses.
    pub const REQUEST: u8 = 3;
    /// Client checks its addresses still fit the link.
    pub const CONFIRM: u8 = 4;
    /// Client extends its lease with the server that gave it.
    pub const RENEW: u8 = 5;
    /// Client extends its lease with any server.
    pub const REBIND: u8 = 6;
    /// Server answers.
    pub const REPLY: u8 = 7;
    /// Client gives addresses up.
    pub const RELEASE: u8 = 8;
    /// Client found an address in use.
    pub const DECLINE: u8 = 9;
    /// Client asks for configuration only.
    pub const INFORMATION_REQUEST: u8 = 11;
}

/// Option codes.
pub mod opt {
    /// Client identifier (a DUID).
    pub const CLIENTID: u16 = 1;
    /// Server identifier (a DUID).
    pub const SERVERID: u16 = 2;
    /// Identity association for non-temporary addresses.
    pub const IA_NA: u16 = 3;
    /// An address inside an IA.
    pub const IAADDR: u16 = 5;
    /// Status code.
    pub const STATUS_CODE: u16 = 13;
    /// Rapid commit (two-message exchange).
    pub const RAPID_COMMIT: u16 = 14;
    /// User class.
    pub const USER_CLASS: u16 = 15;
    /// Vendor class.
    pub const VENDOR_CLASS: u16 = 16;
    /// DNS recursive name servers (RFC 3646).
    pub const DNS_SERVERS: u16 = 23;
    /// Boot file URL (RFC 5970).
    pub const BOOTFILE_URL: u16 = 59;
}

/// Status code: success.
pub const STATUS_SUCCESS: u16 = 0;
/// DUID type: link-layer address.
pub const DUID_LL: u16 = 3;
/// Length of the fixed part of IA_NA data (IAID, T1, T2).
pub const IA_NA_FIXED_LEN: usize = 12;
/// Length of the fixed part of IAADDR data (address, preferred and valid lifetimes).
pub const IAADDR_FIXED_LEN: usize = 24;

/// A truncated option (a header or data beyond the end of the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadOption;

/// Iterator over `(code, data)` of an option list; yields one `Err(BadOption)` (then
/// stops) at a truncated option.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    data: &'a [u8],
}

impl<'a> Options<'a> {
    /// Iterates over a raw option list.
    pub fn new(data: &'a [u8]) -> Self {
        Options { data }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u16, &'a [u8]), BadOption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let d = self.data;
        let parsed = d.get(..OPT_HEADER_LEN).and_then(|h| {
            let code = u16::from_be_bytes([h[0], h[1]]);
            let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let value = d.get(OPT_HEADER_LEN..OPT_HEADER_LEN + len)?;
            Some((code, value, OPT_HEADER_LEN + len))
        });
        match parsed {
            Some((code, value, used)) => {
                self.data = &d[used..];
                Some(Ok((code, value)))
            }
            None => {
                self.data = &[];
                Some(Err(BadOption))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_iterate() {
        let raw = [0, 14, 0, 0, 0, 8, 0, 2, 0, 0, 0, 1, 0, 1, 0xaa, 0, 2, 0];
        let v: Vec<_> = Options::new(&raw).collect();
        assert_eq!(v, [Ok((14, &[][..])), Ok((8, &[0, 0][..])), Ok((1, &[0xaa][..])), Err(BadOption)]);
        assert_eq!(Options::new(&raw[..3]).collect::<Vec<_>>(), [Err(BadOption)]);
        assert_eq!(Options::new(&raw[..15]).count(), 3);
        assert_eq!(Options::new(&raw[..14]).last(), Some(Err(BadOption)));
    }
}
