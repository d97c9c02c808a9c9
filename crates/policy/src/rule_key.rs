//! How a hostname rule's [`RuleKey`] is derived.
//!
//! The key must be the same on every run, every build and every platform, because the
//! dataplane keeps learned addresses under it across policy reloads. `std`'s hasher is
//! randomly seeded and may change between releases, so the hash is written out here:
//! 64-bit FNV-1a over an unambiguous byte encoding, followed by a 64-bit finaliser so that
//! keys differing in one input byte spread over all bits (the dataplane hashes them again,
//! but well-mixed keys keep its tables even when it uses them directly).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::decision::RuleKey;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Changing the encoding below must change this tag, so old and new keys can never collide.
const KEY_DOMAIN: &[u8] = b"sluice.rule-key.v1";

struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(FNV_OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// Writes `bytes` followed by a NUL terminator. Ids and hostnames cannot contain NUL, so
    /// the concatenation of fields is unambiguous ("ab"+"c" differs from "a"+"bc").
    fn write_field(&mut self, bytes: &[u8]) {
        self.write(bytes);
        self.write(&[0]);
    }

    fn finish(self) -> u64 {
        // The MurmurHash3 64-bit finaliser: FNV-1a's low bits depend weakly on late input.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

impl RuleKey {
    /// The key of hostname rule `rule_id` in group `group_id` with these patterns.
    ///
    /// Patterns are normalised the way documents are (lowercase, no trailing dot) and taken
    /// as a set: order and duplicates do not change the key, so reformatting a policy keeps
    /// learned addresses. Ports, protocol and action are deliberately not part of the key:
    /// the addresses learned for a name stay valid when only the ports change.
    pub fn for_rule<S: AsRef<str>>(group_id: &str, rule_id: &str, hostnames: &[S]) -> RuleKey {
        let mut patterns: Vec<String> = hostnames.iter().map(|h| crate::hostname::normalise_name(h.as_ref())).collect();
        patterns.sort_unstable();
        patterns.dedup();
        let mut hasher = Fnv1a::new();
        hasher.write_field(KEY_DOMAIN);
        hasher.write_field(group_id.as_bytes());
        hasher.write_field(rule_id.as_bytes());
        for pattern in &patterns {
            hasher.write_field(pattern.as_bytes());
        }
        RuleKey(hasher.finish())
    }
}

/// Sixteen lowercase hex digits: logs and the API show keys this way, and a JSON number
/// would lose precision above 2^53 in most clients.
impl fmt::Display for RuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for RuleKey {
    type Err = std::num::ParseIntError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(text, 16).map(RuleKey)
    }
}

impl Serialize for RuleKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RuleKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_published_test_vectors() {
        // Reference values of 64-bit FNV-1a, which pin the implementation down for good.
        let hash = |bytes: &[u8]| {
            let mut h = Fnv1a::new();
            h.write(bytes);
            h.0
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn key_value_is_pinned() {
        // If this changes, every deployed allowlist is invalidated on upgrade: bump KEY_DOMAIN
        // deliberately rather than by accident.
        let key = RuleKey::for_rule("apps", "api", &["api.example.com", "*.cdn.example.com"]);
        assert_eq!(key, RuleKey(PINNED_KEY));
    }

    const PINNED_KEY: u64 = 0x7377_7748_f06b_6bb5;

    #[test]
    fn key_ignores_pattern_order_case_duplicates_and_trailing_dots() {
        let a = RuleKey::for_rule("g", "r", &["b.example.com", "a.example.com"]);
        let b = RuleKey::for_rule("g", "r", &["A.example.com.", "b.example.com", "a.example.com"]);
        assert_eq!(a, b);
    }

    #[test]
    fn key_separates_fields() {
        let a = RuleKey::for_rule("ab", "c", &["x.com"]);
        let b = RuleKey::for_rule("a", "bc", &["x.com"]);
        let c = RuleKey::for_rule("ab", "c", &["x.co", "m"]);
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn display_and_parse_round_trip() {
        let key = RuleKey(0x00ab_cdef_0123_4567);
        assert_eq!(key.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<RuleKey>().unwrap(), key);
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, "\"00abcdef01234567\"");
        assert_eq!(serde_json::from_str::<RuleKey>(&json).unwrap(), key);
    }
}
