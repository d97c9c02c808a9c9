//! Taking a snapshot of a running store and verifying a snapshot file completely.

use std::collections::BTreeMap;
use std::fmt;

use sluice_snapshot::{
    KdfParams, LogPosition, Manifest, MemberAddress, Membership, Secrets, SecretsInput, SnapshotError, Written,
};
use sluice_store::state::{
    decode_image, encode_image, Digest, ImageError, State, MIN_READABLE_SCHEMA_VERSION, SCHEMA_VERSION,
};
use sluice_store::Store;

use crate::layout::{DataRoot, SECRET_FILES, TOKEN_SECRET};

/// Who writes a snapshot.
#[derive(Clone, Debug)]
pub struct Writer {
    /// The release that writes it (`sluice --version`).
    pub release_version: String,
    pub node_id: u64,
}

/// Why a snapshot could not be taken.
#[derive(Debug)]
pub enum CreateError {
    /// The store has applied nothing yet: there is nothing to restore from.
    Empty,
    /// A secret file could not be read.
    Secrets(String),
    Format(SnapshotError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Empty => f.write_str("the store has applied no entry yet; there is nothing to snapshot"),
            CreateError::Secrets(why) => write!(f, "cannot collect the secrets: {why}"),
            CreateError::Format(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CreateError {}

/// Reads the node's identity and secret files for a snapshot's secrets section.
pub fn collect_secrets(data_root: &DataRoot, node_id: u64) -> Result<Secrets, CreateError> {
    let mut files = BTreeMap::new();
    let read = |path: &std::path::Path| match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CreateError::Secrets(format!("{}: {e}", path.display()))),
    };
    if let Some(token) = read(&data_root.cluster.bootstrap_token_path)? {
        files.insert(TOKEN_SECRET.to_owned(), token);
    }
    for name in SECRET_FILES {
        if let Some(text) = read(&data_root.root.join(name))? {
            files.insert(name.to_owned(), text);
        }
    }
    Ok(Secrets { node_id, files })
}

/// A snapshot file of `store`'s applied state at one index, with the node's secrets sealed
/// under `passphrase` when given. The state is copied under the store's lock; encoding and
/// sealing happen after, without holding it.
pub fn create(
    store: &Store,
    writer: &Writer,
    created_at_ms: u64,
    secrets: Option<(&Secrets, &[u8])>,
) -> Result<Written, CreateError> {
    let capture = store.capture();
    let last = capture.last_applied.ok_or(CreateError::Empty)?;
    let state = &capture.state;
    let membership = Membership {
        voters: capture.membership.voter_ids().collect(),
        learners: capture.membership.learner_ids().collect(),
        nodes: capture
            .membership
            .nodes()
            .map(|(id, node)| MemberAddress { id: *id, addr: node.addr.clone() })
            .collect(),
    };
    let manifest = Manifest {
        format_version: sluice_snapshot::FORMAT_VERSION,
        cluster_id: state.cluster().map(|c| c.cluster_id.clone()).unwrap_or_default(),
        node_id: writer.node_id,
        schema_version: state.schema_version(),
        release_version: writer.release_version.clone(),
        last_applied: LogPosition {
            term: last.leader_id.term,
            leader_node_id: last.leader_id.node_id,
            index: last.index,
        },
        membership,
        state_hash: state.state_hash().to_hex(),
        created_at_ms,
        sections: Vec::new(),
        state_bytes: 0,
        secrets: None,
    };
    let image = encode_image(state);
    let input = secrets.map(|(secrets, passphrase)| SecretsInput { secrets, passphrase });
    sluice_snapshot::write_written(manifest, &image, input, KdfParams::DEFAULT).map_err(CreateError::Format)
}

/// Why a snapshot file is refused.
#[derive(Debug)]
pub enum VerifyError {
    Format(SnapshotError),
    /// The state section was written with a schema this release cannot read.
    Schema {
        found: u32,
        readable: (u32, u32),
    },
    /// The state section does not decode.
    State(String),
    /// The state decodes but is not the state the manifest describes.
    Mismatch(String),
}

impl VerifyError {
    /// A stable machine-readable code (the API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Format(e) => e.code(),
            VerifyError::Schema { found, .. } if *found > SCHEMA_VERSION => "snapshot_schema_too_new",
            VerifyError::Schema { .. } => "snapshot_schema_too_old",
            VerifyError::State(_) => "snapshot_state_malformed",
            VerifyError::Mismatch(_) => "snapshot_state_mismatch",
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Format(e) => write!(f, "{e}"),
            VerifyError::Schema { found, readable: (low, high) } if found > high => write!(
                f,
                "the snapshot's state has schema version {found}, newer than this release reads ({low} to {high}); \
                 restore it with the release that wrote it or a newer one"
            ),
            VerifyError::Schema { found, readable: (low, high) } => write!(
                f,
                "the snapshot's state has schema version {found}, older than this release reads ({low} to {high}); \
                 restore it with an earlier release first"
            ),
            VerifyError::State(why) => write!(f, "the state section does not decode: {why}"),
            VerifyError::Mismatch(why) => write!(f, "the state section is not the state its manifest describes: {why}"),
        }
    }
}

impl std::error::Error for VerifyError {}

impl From<SnapshotError> for VerifyError {
    fn from(e: SnapshotError) -> VerifyError {
        VerifyError::Format(e)
    }
}

/// A snapshot that passed every check, with its state decoded (migrated to this release's
/// schema when it was written with the previous one).
pub struct Verified {
    pub manifest: Manifest,
    pub state: State,
    pub file_sha256: String,
}

/// Opens the secrets section of a verified file's `bytes` with `passphrase` (the KDF runs
/// only here, never while merely verifying or listing).
pub fn open_secrets(bytes: &[u8], passphrase: &[u8]) -> Result<Secrets, VerifyError> {
    Ok(sluice_snapshot::read(bytes)?.open_secrets(passphrase)?)
}

/// Checks everything without touching any state: format, section and file checksums, the
/// manifest, the schema, and that the decoded state is at the manifest's index with its hash.
pub fn verify(bytes: &[u8]) -> Result<Verified, VerifyError> {
    let file = sluice_snapshot::read(bytes)?;
    let manifest = file.manifest.clone();
    let found = manifest.schema_version;
    if !(MIN_READABLE_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&found) {
        return Err(VerifyError::Schema { found, readable: (MIN_READABLE_SCHEMA_VERSION, SCHEMA_VERSION) });
    }
    let state = decode_image(file.state).map_err(|e| match e {
        ImageError::TooNew { found, .. } | ImageError::TooOld { found, .. } => {
            VerifyError::Schema { found, readable: (MIN_READABLE_SCHEMA_VERSION, SCHEMA_VERSION) }
        }
        ImageError::Malformed(why) => VerifyError::State(why),
    })?;
    if state.applied_index() != manifest.last_applied.index {
        return Err(VerifyError::Mismatch(format!(
            "the state is at index {}, the manifest says {}",
            state.applied_index(),
            manifest.last_applied.index
        )));
    }
    let hash = Digest::from_hex(&manifest.state_hash).ok_or_else(|| {
        VerifyError::Mismatch(format!("the manifest's state hash {:?} is not a SHA-256", manifest.state_hash))
    })?;
    if state.state_hash() != hash {
        return Err(VerifyError::Mismatch(format!(
            "the state hash is {}, the manifest says {}",
            state.state_hash().to_hex(),
            manifest.state_hash
        )));
    }
    let state_cluster = state.cluster().map(|c| c.cluster_id.as_str()).unwrap_or_default();
    if state_cluster != manifest.cluster_id {
        return Err(VerifyError::Mismatch(format!(
            "the state belongs to cluster {state_cluster:?}, the manifest says {:?}",
            manifest.cluster_id
        )));
    }
    Ok(Verified { file_sha256: file.file_sha256_hex.clone(), manifest, state })
}
