//! Validated domain types shared by the APIs.
//!
//! API layers convert wire messages into these at the edge (`TryFrom`), so that code
//! behind them never sees an out-of-range value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a value was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// A VNI needs more than 24 bits.
    #[error("VNI {0} does not fit in 24 bits")]
    VniTooLarge(u32),
    /// A prefix length above 32 (IPv4) or 128 (IPv6).
    #[error("prefix length {len} is too long for {family}")]
    PrefixTooLong {
        /// The rejected length.
        len: u32,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
}

/// A virtual network identifier of the fleet: 24 bits, as carried by VXLAN/Geneve and
/// allocated by the coordinator.
///
/// Note: dpservice's node API itself accepts any 32-bit VNI (its IP-in-IPv6 tunnels carry
/// no VNI on the wire), so the dpservice-compatible API keeps plain `u32` VNIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vni(u32);

impl Vni {
    /// The largest VNI.
    pub const MAX: u32 = 0x00FF_FFFF;

    /// A VNI, if `value` fits in 24 bits.
    pub fn new(value: u32) -> Result<Self, TypeError> {
        if value > Self::MAX {
            return Err(TypeError::VniTooLarge(value));
        }
        Ok(Vni(value))
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = TypeError;
    fn try_from(value: u32) -> Result<Self, TypeError> {
        Vni::new(value)
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An IPv4 or IPv6 prefix whose length fits its family.
///
/// Host bits are kept as given: dpservice accepts `10.0.0.7/24`, routes it as
/// `10.0.0.0/24` and reports alias prefixes back as given. [`Prefix::network`] is the
/// masked form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix of `len` bits starting at `addr`.
    pub fn new(addr: IpAddr, len: u32) -> Result<Self, TypeError> {
        let (max, family) = match addr {
            IpAddr::V4(_) => (32, "IPv4"),
            IpAddr::V6(_) => (128, "IPv6"),
        };
        if len > max {
            return Err(TypeError::PrefixTooLong { len, family });
        }
        #[allow(clippy::cast_possible_truncation)] // len <= 128
        Ok(Prefix { addr, len: len as u8 })
    }

    /// The address as given (host bits included).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn length(&self) -> u8 {
        self.len
    }

    /// Whether this is an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The address with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    /// Whether bits beyond the prefix length are set.
    pub fn has_host_bits(&self) -> bool {
        self.network() != self.addr
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vni_is_24_bits() {
        assert_eq!(Vni::new(0xFF_FFFF).map(Vni::get), Ok(0xFF_FFFF));
        assert_eq!(Vni::new(0x100_0000), Err(TypeError::VniTooLarge(0x100_0000)));
        assert_eq!(Vni::try_from(100).map(Vni::get), Ok(100));
    }

    #[test]
    fn prefix_length_is_checked_per_family() {
        let v4: IpAddr = "10.0.0.7".parse().unwrap();
        let v6: IpAddr = "2000:64::1".parse().unwrap();
        assert!(Prefix::new(v4, 32).is_ok());
        assert_eq!(Prefix::new(v4, 33), Err(TypeError::PrefixTooLong { len: 33, family: "IPv4" }));
        assert!(Prefix::new(v6, 128).is_ok());
        assert!(Prefix::new(v6, 129).is_err());
    }

    #[test]
    fn network_clears_host_bits() {
        let p = Prefix::new("10.0.0.7".parse().unwrap(), 24).unwrap();
        assert_eq!(p.network(), "10.0.0.0".parse::<IpAddr>().unwrap());
        assert!(p.has_host_bits());
        assert_eq!(p.to_string(), "10.0.0.7/24");
        let all = Prefix::new("10.0.0.7".parse().unwrap(), 0).unwrap();
        assert_eq!(all.network(), "0.0.0.0".parse::<IpAddr>().unwrap());
        let p6 = Prefix::new("2a10:defe:dede:f4::1".parse().unwrap(), 124).unwrap();
        assert_eq!(p6.network(), "2a10:defe:dede:f4::".parse::<IpAddr>().unwrap());
        let host = Prefix::new("2a10::1".parse().unwrap(), 128).unwrap();
        assert!(!host.has_host_bits());
    }
}
