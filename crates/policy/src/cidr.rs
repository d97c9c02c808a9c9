//! IPv4 CIDR blocks as written in policy documents.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network `a.b.c.d/len` whose host bits are zero. The fields are private so a value
/// of this type is always a valid block, whoever built it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: u32,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The block `network/prefix_len`; `None` when the prefix is over 32 or host bits are set.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        let network = u32::from(network);
        if prefix_len > 32 || network & !mask(prefix_len) != 0 {
            return None;
        }
        Some(Ipv4Cidr { network, prefix_len })
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// First address of the block, host order.
    pub fn first(&self) -> u32 {
        self.network
    }

    /// Last address of the block, host order (inclusive).
    pub fn last(&self) -> u32 {
        self.network | !mask(self.prefix_len)
    }

    pub fn contains(&self, addr: u32) -> bool {
        addr & mask(self.prefix_len) == self.network
    }
}

/// Netmask for a prefix length of at most 32 (`/0` is the whole space, which a plain shift
/// by 32 cannot express).
fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

/// Why a CIDR string was rejected; the message is written for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(pub String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    /// Accepts `a.b.c.d/len`, and a bare `a.b.c.d` as a single host (`/32`).
    fn from_str(text: &str) -> Result<Self, CidrError> {
        let not_a_cidr = || CidrError(format!("`{text}` is not an IPv4 CIDR (expected a.b.c.d/len, e.g. 10.0.0.0/24)"));
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        // std rejects leading zeros in octets ("010.0.0.1"), which some tools read as octal:
        // refusing them avoids silently meaning a different network than the author did.
        let addr = Ipv4Addr::from_str(addr_text).map_err(|_| not_a_cidr())?;
        let prefix_len = match prefix_text {
            None => 32,
            Some(p) => parse_prefix_len(p).ok_or_else(|| {
                let plain_number = !p.is_empty() && p.len() <= 3 && !p.starts_with('0');
                if plain_number && p.bytes().all(|b| b.is_ascii_digit()) {
                    CidrError(format!("prefix length in `{text}` is out of range 0..=32"))
                } else {
                    not_a_cidr()
                }
            })?,
        };
        Ipv4Cidr::new(addr, prefix_len).ok_or_else(|| {
            let network = Ipv4Addr::from(u32::from(addr) & mask(prefix_len));
            CidrError(format!("{text} has host bits set; did you mean {network}/{prefix_len}?"))
        })
    }
}

/// A decimal prefix length 0..=32 without sign or leading zeros.
fn parse_prefix_len(text: &str) -> Option<u8> {
    let canonical = !text.is_empty()
        && text.len() <= 2
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() > 1 && text.starts_with('0'));
    if !canonical {
        return None;
    }
    let value: u8 = text.parse().ok()?;
    (value <= 32).then_some(value)
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Sorted, disjoint, non-adjacent inclusive intervals covering the same addresses as `blocks`.
pub(crate) fn merge_blocks(blocks: &[Ipv4Cidr]) -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = blocks.iter().map(|b| (b.first(), b.last())).collect();
    merge_ranges(&mut ranges);
    ranges
}

/// Sorts and merges overlapping or touching inclusive ranges in place.
pub(crate) fn merge_ranges<T>(ranges: &mut Vec<(T, T)>)
where
    T: Copy + Ord + Into<u64>,
{
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        if let Some(last) = merged.last_mut() {
            if touches(last.1, lo) {
                if hi > last.1 {
                    last.1 = hi;
                }
                continue;
            }
        }
        merged.push((lo, hi));
    }
    *ranges = merged;
}

/// True when a range ending at `end` (inclusive) overlaps or touches one starting at `start`.
fn touches<T: Into<u64>>(end: T, start: T) -> bool {
    start.into() <= end.into() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Ipv4Cidr, String> {
        text.parse::<Ipv4Cidr>().map_err(|e| e.0)
    }

    #[test]
    fn parses_blocks_and_bare_addresses() {
        let block = parse("10.10.0.0/24").unwrap();
        assert_eq!(block.first(), u32::from(Ipv4Addr::new(10, 10, 0, 0)));
        assert_eq!(block.last(), u32::from(Ipv4Addr::new(10, 10, 0, 255)));
        assert_eq!(parse("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        let everything = parse("0.0.0.0/0").unwrap();
        assert_eq!((everything.first(), everything.last()), (0, u32::MAX));
        assert!(everything.contains(u32::MAX));
    }

    #[test]
    fn host_bits_error_suggests_the_network() {
        assert_eq!(parse("10.10.0.1/24").unwrap_err(), "10.10.0.1/24 has host bits set; did you mean 10.10.0.0/24?");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "10.10.0/24", "10.10.0.0/", "10.10.0.0/-1", "10.0.0.0/08", "010.0.0.0/8", "a/8", " 10.0.0.0/8"]
        {
            assert!(parse(bad).unwrap_err().contains("is not an IPv4 CIDR"), "{bad}");
        }
        assert!(parse("10.0.0.0/33").unwrap_err().contains("out of range"));
    }

    #[test]
    fn merges_overlapping_and_touching_blocks() {
        let blocks: Vec<Ipv4Cidr> =
            ["10.0.1.0/24", "10.0.0.0/24", "10.0.0.128/25", "10.0.3.0/24"].iter().map(|t| t.parse().unwrap()).collect();
        let a = |x: u8, y: u8| u32::from(Ipv4Addr::new(10, 0, x, y));
        assert_eq!(merge_blocks(&blocks), vec![(a(0, 0), a(1, 255)), (a(3, 0), a(3, 255))]);
        let mut top = vec![(u32::MAX - 1, u32::MAX), (0, 5), (u32::MAX, u32::MAX)];
        merge_ranges(&mut top);
        assert_eq!(top, vec![(0, 5), (u32::MAX - 1, u32::MAX)]);
    }
}
