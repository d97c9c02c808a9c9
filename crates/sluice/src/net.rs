//! An interface address with its prefix, as written by operators: `10.10.0.1/24`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// The node's own address on a port and the prefix length of the connected network. Unlike a
/// network CIDR, host bits are kept: they are the node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceAddr {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl IfaceAddr {
    pub fn netmask(self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix_len))
        }
    }

    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip) & self.netmask())
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.netmask() == u32::from(self.ip) & self.netmask()
    }

    /// Whether the two connected networks share any address.
    pub fn overlaps(self, other: IfaceAddr) -> bool {
        let mask = self.netmask() & other.netmask();
        u32::from(self.ip) & mask == u32::from(other.ip) & mask
    }
}

impl fmt::Display for IfaceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

impl FromStr for IfaceAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<IfaceAddr, String> {
        let expected = || format!("`{s}` is not an IPv4 address with a prefix length, like 10.10.0.1/24");
        let (ip, len) = s.split_once('/').ok_or_else(expected)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| expected())?;
        let prefix_len: u8 = len.parse().map_err(|_| expected())?;
        if !(1..=30).contains(&prefix_len) {
            return Err(format!(
                "`{s}`: the prefix length must be 1 to 30 (a network with room for the node and a neighbour)"
            ));
        }
        let addr = IfaceAddr { ip, prefix_len };
        let host = u32::from(ip) & !addr.netmask();
        if host == 0 || host == !addr.netmask() {
            return Err(format!(
                "`{s}` is the network or broadcast address of {}/{}; give the node's own address",
                addr.network(),
                prefix_len
            ));
        }
        Ok(addr)
    }
}

impl<'de> Deserialize<'de> for IfaceAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IfaceAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let a: IfaceAddr = "10.10.0.1/24".parse().unwrap();
        assert_eq!((a.ip, a.prefix_len), (Ipv4Addr::new(10, 10, 0, 1), 24));
        assert_eq!(a.to_string(), "10.10.0.1/24");
        for bad in ["10.10.0.1", "10.10.0.1/33", "10.10.0.1/0", "10.10.0/24", "x/24", "10.10.0.0/24", "10.10.0.255/24"]
        {
            assert!(bad.parse::<IfaceAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_and_contains() {
        let a: IfaceAddr = "10.10.0.1/24".parse().unwrap();
        let b: IfaceAddr = "10.10.0.200/25".parse().unwrap();
        let c: IfaceAddr = "10.11.0.1/24".parse().unwrap();
        let d: IfaceAddr = "10.0.0.1/8".parse().unwrap();
        assert!(a.overlaps(b) && b.overlaps(a));
        assert!(!a.overlaps(c));
        assert!(d.overlaps(a) && a.overlaps(d));
        assert!(a.contains(Ipv4Addr::new(10, 10, 0, 77)) && !a.contains(Ipv4Addr::new(10, 11, 0, 1)));
    }
}
