//! The manifest: what a snapshot is of, read before anything else is trusted.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    Manifest,
    State,
    Secrets,
}

impl SectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SectionKind::Manifest => "manifest",
            SectionKind::State => "state",
            SectionKind::Secrets => "secrets",
        }
    }

    pub(crate) fn code(self) -> u32 {
        match self {
            SectionKind::Manifest => 1,
            SectionKind::State => 2,
            SectionKind::Secrets => 3,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<SectionKind> {
        match code {
            1 => Some(SectionKind::Manifest),
            2 => Some(SectionKind::State),
            3 => Some(SectionKind::Secrets),
            _ => None,
        }
    }

    /// The largest section of this kind a reader accepts.
    pub(crate) fn max_len(self) -> u64 {
        match self {
            SectionKind::Manifest => 1 << 20,
            SectionKind::State => 2 << 30,
            SectionKind::Secrets => 16 << 20,
        }
    }
}

/// The Raft position of the last entry the state applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub term: u64,
    pub leader_node_id: u64,
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    pub id: u64,
    pub addr: String,
}

/// The cluster's membership at the snapshot's index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub nodes: Vec<MemberAddress>,
}

/// How the secrets section's key is derived and the AEAD nonce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsInfo {
    /// Always `argon2id`.
    pub kdf: String,
    pub m_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// 16 bytes, hex.
    pub salt_hex: String,
    /// 12 bytes, hex.
    pub nonce_hex: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Filled by the writer.
    pub format_version: u32,
    pub cluster_id: String,
    /// The node that wrote the snapshot.
    pub node_id: u64,
    /// The state section's schema version.
    pub schema_version: u32,
    /// The release that wrote it.
    pub release_version: String,
    pub last_applied: LogPosition,
    pub membership: Membership,
    /// The state hash at `last_applied.index`, 64 lowercase hex digits.
    pub state_hash: String,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// The sections present, in order. Filled by the writer.
    pub sections: Vec<SectionKind>,
    /// The state section's length. Filled by the writer.
    pub state_bytes: u64,
    /// Present exactly when a secrets section is. Filled by the writer.
    pub secrets: Option<SecretsInfo>,
}

pub(crate) fn is_hex(text: &str, bytes: usize) -> bool {
    text.len() == bytes * 2 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if !is_hex(text, N) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digit = |b: u8| if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 };
        out[i] = (digit(pair[0]) << 4) | digit(pair[1]);
    }
    Some(out)
}
