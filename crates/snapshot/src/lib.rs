//! The snapshot file: one self-describing file holding a node's replicated state at one
//! applied index (design §7). Pure: it reads and writes byte slices; callers do the I/O.
//!
//! ```text
//! magic            16 bytes  "SLUICE-SNAPSHOT\n"
//! format_version   u32 LE
//! section_count    u32 LE    1..=8
//! section ×count:  kind u32 LE | length u64 LE | SHA-256 of the bytes (32) | bytes
//! trailer          32 bytes  SHA-256 over everything before it
//! ```
//!
//! Sections: the manifest (JSON, first, exactly once), the state image (exactly once), and
//! optionally the node's secrets, encrypted (AES-256-GCM under an argon2id key from the
//! operator's passphrase; the KDF parameters, salt and nonce are in the manifest, and the
//! manifest's bytes are the AEAD's associated data, so sealed secrets cannot be moved to
//! another snapshot).
//!
//! Reading checks, in this order, so that the error names the broken part: magic, format
//! version, the section table against the bytes present, each section's checksum, the file
//! checksum, the manifest, and the manifest against the sections. No length or count is
//! trusted before it is checked against the bytes that remain, and nothing is allocated from
//! a length field.
//!
//! Deliberately absent: streaming (a snapshot is read whole; the state is bounded), compression
//! (the state is small JSON and would make corruption messages vaguer), partial reads.

mod error;
mod format;
mod manifest;
mod secrets;

pub use error::SnapshotError;
pub use format::{
    read, section_offsets, write, write_with_kdf, write_written, SnapshotFile, Written, FORMAT_VERSION, HEADER_LEN,
    MAGIC,
};
pub use manifest::{LogPosition, Manifest, MemberAddress, Membership, SecretsInfo, SectionKind};
pub use secrets::{KdfParams, Secrets, SecretsInput};
