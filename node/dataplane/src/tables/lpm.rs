//! Longest-prefix-match tables for IPv4 and IPv6.
//!
//! One hash map per prefix length plus a bitmap of the lengths in use; a lookup probes
//! the used lengths from longest to shortest. Lookups do not allocate. Typical route
//! tables use few distinct lengths, so a lookup is a handful of hash probes. The maps
//! use FxHash (one multiply per key word): their keys are routes from the control
//! plane, and a lookup key from a packet cannot degrade a table it does not insert into.

use std::net::{Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

/// IPv4 longest-prefix-match table with values of type `T`.
#[derive(Clone, Debug)]
pub struct Lpm4<T> {
    by_len: Vec<FxHashMap<u32, T>>,
    used: u64,
}

impl<T> Default for Lpm4<T> {
    fn default() -> Self {
        Lpm4 { by_len: (0..=32).map(|_| FxHashMap::default()).collect(), used: 0 }
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
}

fn mask6(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) }
}

impl<T> Lpm4<T> {
    /// Inserts or replaces the entry for `addr/len` (host bits are ignored). Returns the
    /// previous value. `len` above 32 is clamped.
    pub fn insert(&mut self, addr: Ipv4Addr, len: u8, value: T) -> Option<T> {
        let len = len.min(32);
        let key = u32::from(addr) & mask4(len);
        self.used |= 1 << len;
        self.by_len[usize::from(len)].insert(key, value)
    }
    /// Removes the entry for exactly `addr/len`.
    pub fn remove(&mut self, addr: Ipv4Addr, len: u8) -> Option<T> {
        let len = len.min(32);
        let key = u32::from(addr) & mask4(len);
        let map = &mut self.by_len[usize::from(len)];
        let old = map.remove(&key);
        if map.is_empty() {
            self.used &= !(1 << len);
        }
        old
    }
    /// The entry for exactly `addr/len`.
    pub fn get_exact(&self, addr: Ipv4Addr, len: u8) -> Option<&T> {
        let len = len.min(32);
        self.by_len[usize::from(len)].get(&(u32::from(addr) & mask4(len)))
    }
    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&T> {
        let a = u32::from(addr);
        let mut used = self.used;
        while used != 0 {
            let len = 63 - used.leading_zeros();
            used &= !(1u64 << len);
            #[allow(clippy::cast_possible_truncation)] // len <= 32
            let l = len as u8;
            if let Some(v) = self.by_len[len as usize].get(&(a & mask4(l))) {
                return Some(v);
            }
        }
        None
    }
    /// All entries as (network, length, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, u8, &T)> {
        self.by_len.iter().enumerate().flat_map(|(len, m)| {
            #[allow(clippy::cast_possible_truncation)] // len <= 32
            m.iter().map(move |(k, v)| (Ipv4Addr::from(*k), len as u8, v))
        })
    }
}

/// IPv6 longest-prefix-match table with values of type `T`.
#[derive(Clone, Debug)]
pub struct Lpm6<T> {
    by_len: Vec<FxHashMap<u128, T>>,
    used: [u64; 3],
}

impl<T> Default for Lpm6<T> {
    fn default() -> Self {
        Lpm6 { by_len: (0..=128).map(|_| FxHashMap::default()).collect(), used: [0; 3] }
    }
}

impl<T> Lpm6<T> {
    fn set_used(&mut self, len: u8, on: bool) {
        let (w, b) = (usize::from(len) / 64, u32::from(len) % 64);
        if on {
            self.used[w] |= 1 << b;
        } else {
            self.used[w] &= !(1 << b);
        }
    }
    /// Inserts or replaces the entry for `addr/len` (host bits are ignored). Returns the
    /// previous value. `len` above 128 is clamped.
    pub fn insert(&mut self, addr: Ipv6Addr, len: u8, value: T) -> Option<T> {
        let len = len.min(128);
        let key = u128::from(addr) & mask6(len);
        self.set_used(len, true);
        self.by_len[usize::from(len)].insert(key, value)
    }
    /// Removes the entry for exactly `addr/len`.
    pub fn remove(&mut self, addr: Ipv6Addr, len: u8) -> Option<T> {
        let len = len.min(128);
        let key = u128::from(addr) & mask6(len);
        let map = &mut self.by_len[usize::from(len)];
        let old = map.remove(&key);
        if map.is_empty() {
            self.set_used(len, false);
        }
        old
    }
    /// The entry for exactly `addr/len`.
    pub fn get_exact(&self, addr: Ipv6Addr, len: u8) -> Option<&T> {
        let len = len.min(128);
        self.by_len[usize::from(len)].get(&(u128::from(addr) & mask6(len)))
    }
    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv6Addr) -> Option<&T> {
        let a = u128::from(addr);
        for w in (0..3).rev() {
            let mut used = self.used[w];
            while used != 0 {
                let bit = 63 - used.leading_zeros();
                used &= !(1u64 << bit);
                let len = w * 64 + bit as usize;
                #[allow(clippy::cast_possible_truncation)] // len <= 128
                let l = len as u8;
                if let Some(v) = self.by_len[len].get(&(a & mask6(l))) {
                    return Some(v);
                }
            }
        }
        None
    }
    /// All entries as (network, length, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv6Addr, u8, &T)> {
        self.by_len.iter().enumerate().flat_map(|(len, m)| {
            #[allow(clippy::cast_possible_truncation)] // len <= 128
            m.iter().map(move |(k, v)| (Ipv6Addr::from(*k), len as u8, v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_v4() {
        let mut t = Lpm4::default();
        t.insert("0.0.0.0".parse().unwrap(), 0, 'd');
        t.insert("10.0.0.0".parse().unwrap(), 8, 'a');
        t.insert("10.1.0.0".parse().unwrap(), 16, 'b');
        t.insert("10.1.2.3".parse().unwrap(), 32, 'h');
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(&'h'));
        assert_eq!(t.lookup("10.1.9.9".parse().unwrap()), Some(&'b'));
        assert_eq!(t.lookup("10.9.9.9".parse().unwrap()), Some(&'a'));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), Some(&'d'));
        assert_eq!(t.remove("0.0.0.0".parse().unwrap(), 0), Some('d'));
        assert_eq!(t.lookup("11.0.0.1".parse().unwrap()), None);
        // host bits in the inserted prefix are ignored
        t.insert("192.168.7.7".parse().unwrap(), 24, 'x');
        assert_eq!(t.lookup("192.168.7.1".parse().unwrap()), Some(&'x'));
        assert_eq!(t.iter().count(), 4);
    }

    #[test]
    fn longest_prefix_wins_v6() {
        let mut t = Lpm6::default();
        t.insert("::".parse().unwrap(), 0, 0);
        t.insert("2000:100:2::".parse().unwrap(), 104, 1);
        t.insert("2000:100:1::1".parse().unwrap(), 128, 2);
        assert_eq!(t.lookup("2000:100:2::7b".parse().unwrap()), Some(&1));
        assert_eq!(t.lookup("2000:100:1::1".parse().unwrap()), Some(&2));
        assert_eq!(t.lookup("2001::1".parse().unwrap()), Some(&0));
        assert_eq!(t.get_exact("2000:100:2::".parse().unwrap(), 104), Some(&1));
        t.remove("::".parse().unwrap(), 0);
        assert_eq!(t.lookup("2001::1".parse().unwrap()), None);
    }
}
