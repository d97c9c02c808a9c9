//! What the API needs from the node's snapshot repository, as a trait the runtime implements
//! (the API crate does not depend on the file format or the data root layout). Creating and
//! verifying read and write whole files: the routes call these on the blocking pool.

use std::path::PathBuf;

use serde::Serialize;
use utoipa::ToSchema;

/// One snapshot as the API lists it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SnapshotSummary {
    /// `<kind>-<created at ms>-<applied index>`.
    pub id: String,
    /// `manual`, `scheduled` or `pre-upgrade`.
    pub kind: String,
    pub bytes: u64,
    /// Whether the file passed the format and checksum checks when listed.
    pub valid: bool,
    /// Why it did not, when it did not.
    pub error: Option<String>,
    pub created_at_ms: Option<u64>,
    pub cluster_id: Option<String>,
    /// The node that wrote it.
    pub node_id: Option<u64>,
    pub schema_version: Option<u32>,
    pub release_version: Option<String>,
    pub applied_index: Option<u64>,
    pub term: Option<u64>,
    pub state_hash: Option<String>,
    pub has_secrets: Option<bool>,
    /// SHA-256 of the whole file (shown after a create or verify).
    pub file_sha256: Option<String>,
}

/// Why a snapshot operation failed.
#[derive(Clone, Debug)]
pub enum SnapshotFailure {
    /// The request cannot be served as asked (e.g. an empty passphrase).
    BadRequest { code: &'static str, message: String },
    /// No snapshot has that id.
    NotFound(String),
    /// The snapshot file is refused by verification, with the reason's stable code.
    Invalid { code: &'static str, message: String },
    /// Another snapshot is being taken right now.
    Busy(String),
    /// Reading or writing the repository failed.
    Io(String),
}

pub trait SnapshotService: Send + Sync {
    /// Every snapshot in the node's repository, newest first.
    fn list(&self) -> Result<Vec<SnapshotSummary>, SnapshotFailure>;
    /// Takes a manual snapshot now (secrets sealed under `passphrase` when given) and keeps
    /// it in the repository.
    fn create(&self, passphrase: Option<&[u8]>) -> Result<SnapshotSummary, SnapshotFailure>;
    /// The file of snapshot `id`.
    fn file(&self, id: &str) -> Result<PathBuf, SnapshotFailure>;
    /// Verifies snapshot `id` completely (format, checksums, schema, state hash).
    fn verify(&self, id: &str) -> Result<SnapshotSummary, SnapshotFailure>;
}
