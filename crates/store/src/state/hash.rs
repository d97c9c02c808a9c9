//! Digests: the state hash chain and token secret hashes.
//!
//! The state hash after log index `n` is
//! `SHA-256(hash(n-1) || n || kind || len || entry bytes || len || outcome bytes)`, starting from
//! 32 zero bytes. Every log entry advances it (blank and membership entries too), and the
//! outcome is part of it, so two nodes that applied the same entries but reached different
//! results (a divergent binary) report different hashes at the same index.

use std::fmt;

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A SHA-256 digest shown and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest(pub [u8; 32]);

/// The hash of the applied state at an applied index.
pub type StateHash = Digest;

/// The SHA-256 of an API token's secret; the secret itself is never stored.
pub type TokenHash = Digest;

/// What kind of log entry advanced the chain (part of the hashed bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) enum EntryKind {
    Blank = 0,
    Membership = 1,
    Command = 2,
}

impl Digest {
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    pub fn from_hex(text: &str) -> Option<Digest> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Digest(out))
    }

    /// SHA-256 of arbitrary bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        let digest = ring::digest::digest(&SHA256, bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Digest(out)
    }

    /// Compares in time independent of where the digests differ.
    pub fn constant_time_eq(&self, other: &Digest) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            diff |= a ^ b;
        }
        diff == 0
    }
}

/// Hashes an API token secret the way the store keeps it.
pub fn hash_token_secret(secret: &str) -> TokenHash {
    Digest::of(secret.as_bytes())
}

/// One step of the state hash chain.
pub(crate) fn chain(previous: &StateHash, index: u64, kind: EntryKind, entry: &[u8], outcome: &[u8]) -> StateHash {
    let mut context = Context::new(&SHA256);
    context.update(&previous.0);
    context.update(&index.to_be_bytes());
    context.update(&[kind as u8]);
    context.update(&(entry.len() as u64).to_be_bytes());
    context.update(entry);
    context.update(&(outcome.len() as u64).to_be_bytes());
    context.update(outcome);
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    Digest(out)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_known_digest() {
        let digest = Digest::of(b"abc");
        assert_eq!(digest.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(Digest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn chain_depends_on_every_input() {
        let zero = Digest::default();
        let base = chain(&zero, 1, EntryKind::Command, b"a", b"b");
        assert_ne!(base, chain(&Digest::of(b"x"), 1, EntryKind::Command, b"a", b"b"));
        assert_ne!(base, chain(&zero, 2, EntryKind::Command, b"a", b"b"));
        assert_ne!(base, chain(&zero, 1, EntryKind::Blank, b"a", b"b"));
        assert_ne!(base, chain(&zero, 1, EntryKind::Command, b"ab", b""));
        assert_eq!(base, chain(&zero, 1, EntryKind::Command, b"a", b"b"));
    }

    #[test]
    fn constant_time_eq_agrees_with_eq() {
        let a = Digest::of(b"a");
        assert!(a.constant_time_eq(&a));
        assert!(!a.constant_time_eq(&Digest::of(b"b")));
    }
}
