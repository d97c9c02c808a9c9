//! Why a snapshot file is refused: each error says which part is wrong and why.

use std::fmt;

use crate::manifest::SectionKind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The file ends before a part it declares.
    Truncated(String),
    WrongMagic,
    FutureFormat {
        found: u32,
        supported: u32,
    },
    /// The section table is malformed (count, kinds, order, lengths).
    BadSectionTable(String),
    SectionCorrupted {
        kind: SectionKind,
    },
    FileChecksum,
    TrailingBytes {
        extra: usize,
    },
    /// The manifest section is not a manifest.
    Manifest(String),
    /// The manifest disagrees with the sections present.
    Inconsistent(String),
    NoSecrets,
    WrongPassphrase,
    BadKdfParams(String),
    EmptyPassphrase,
    TooLarge {
        what: &'static str,
        bytes: u64,
        limit: u64,
    },
    Crypto(String),
}

impl SnapshotError {
    /// A stable machine-readable code (the API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            SnapshotError::Truncated(_) => "snapshot_truncated",
            SnapshotError::WrongMagic => "snapshot_wrong_magic",
            SnapshotError::FutureFormat { .. } => "snapshot_future_format",
            SnapshotError::BadSectionTable(_) => "snapshot_bad_section_table",
            SnapshotError::SectionCorrupted { .. } | SnapshotError::FileChecksum => "snapshot_corrupted",
            SnapshotError::TrailingBytes { .. } => "snapshot_trailing_bytes",
            SnapshotError::Manifest(_) => "snapshot_bad_manifest",
            SnapshotError::Inconsistent(_) => "snapshot_inconsistent",
            SnapshotError::NoSecrets => "snapshot_no_secrets",
            SnapshotError::WrongPassphrase => "snapshot_wrong_passphrase",
            SnapshotError::BadKdfParams(_) => "snapshot_bad_kdf_params",
            SnapshotError::EmptyPassphrase => "snapshot_empty_passphrase",
            SnapshotError::TooLarge { .. } => "snapshot_too_large",
            SnapshotError::Crypto(_) => "snapshot_crypto",
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Truncated(what) => write!(f, "truncated: {what}"),
            SnapshotError::WrongMagic => f.write_str("not a Sluice snapshot (wrong magic)"),
            SnapshotError::FutureFormat { found, supported } => write!(
                f,
                "snapshot format version {found} is newer than the {supported} this release reads; use a newer release"
            ),
            SnapshotError::BadSectionTable(why) => write!(f, "the section table is malformed: {why}"),
            SnapshotError::SectionCorrupted { kind } => {
                write!(f, "the {} section is corrupted: its SHA-256 does not match", kind.as_str())
            }
            SnapshotError::FileChecksum => f.write_str(
                "the file checksum does not match: the file is corrupted outside its sections (headers or trailer)",
            ),
            SnapshotError::TrailingBytes { extra } => {
                write!(f, "{extra} unexpected bytes after the trailer (two files concatenated?)")
            }
            SnapshotError::Manifest(why) => write!(f, "the manifest is malformed: {why}"),
            SnapshotError::Inconsistent(why) => write!(f, "the manifest disagrees with the file: {why}"),
            SnapshotError::NoSecrets => f.write_str(
                "the snapshot holds no secrets section (it was created without --include-secrets); restore without \
                 a passphrase to give the node a new identity",
            ),
            SnapshotError::WrongPassphrase => {
                f.write_str("the passphrase does not open the secrets section (wrong passphrase)")
            }
            SnapshotError::BadKdfParams(why) => write!(f, "the secrets' key derivation parameters are refused: {why}"),
            SnapshotError::EmptyPassphrase => f.write_str("the passphrase is empty"),
            SnapshotError::TooLarge { what, bytes, limit } => {
                write!(f, "the {what} is {bytes} bytes, more than the {limit} a snapshot may hold")
            }
            SnapshotError::Crypto(why) => write!(f, "cryptography failed: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}
