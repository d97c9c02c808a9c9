//! `sluice restore`: a fresh data root from a snapshot, as the seed of a new cluster.
//!
//! Order matters, so that a bad snapshot or a wrong passphrase writes nothing: the file is
//! read and verified whole, the secrets are opened, and only then is anything created. The
//! new data root is assembled in a temporary directory next to the target and renamed into
//! place at the end; a data root already there is moved aside (with `force`), never deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership};
use sluice_cluster::identity::{random_bytes, write_atomically, ClusterPaths};
use sluice_cluster::restored::{new_identity, write_marker, RestoreMarker};
use sluice_snapshot::Secrets;
use sluice_store::state::{Digest, RestoreSource};
use sluice_store::storage::{replay, write_restored, RestoredStart};

use crate::layout::{DataRoot, SECRET_FILES, STORE_DIR, TOKEN_SECRET};
use crate::snapshot::{open_secrets, verify, VerifyError};

/// The node id of a restored node that gets a new identity: the id a single node has, so
/// the restored data root also runs without cluster flags.
pub const FRESH_NODE_ID: u64 = 1;

pub struct RestoreOptions<'a> {
    pub snapshot: &'a Path,
    pub data_dir: &'a Path,
    /// Opens the secrets section; the node's identity and secrets are restored from it.
    pub passphrase: Option<&'a [u8]>,
    /// Move a non-empty data root aside instead of refusing.
    pub force: bool,
    /// Milliseconds since the epoch (names the moved-aside directory).
    pub now_ms: u64,
}

#[derive(Debug)]
pub enum RestoreError {
    /// The snapshot file could not be read.
    Read(String),
    /// The snapshot is refused; nothing was written.
    Snapshot(VerifyError),
    /// The data root is not empty and `force` was not given; nothing was written.
    NotEmpty(PathBuf),
    /// Writing the new data root failed (the old one, if any, is where it was or moved
    /// aside, as `moved_aside` says).
    Write { reason: String, moved_aside: Option<PathBuf> },
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Read(why) => write!(f, "{why}"),
            RestoreError::Snapshot(e) => write!(f, "snapshot refused, nothing was written: {e}"),
            RestoreError::NotEmpty(dir) => write!(
                f,
                "{} is not empty; nothing was written. Restore into an empty directory, or give --force to move \
                 it aside (it is renamed, never deleted)",
                dir.display()
            ),
            RestoreError::Write { reason, moved_aside: Some(old) } => {
                write!(f, "restore failed: {reason} (the previous data root is at {})", old.display())
            }
            RestoreError::Write { reason, moved_aside: None } => write!(f, "restore failed: {reason}"),
        }
    }
}

impl std::error::Error for RestoreError {}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub data_dir: PathBuf,
    pub node_id: u64,
    pub cluster_id: String,
    pub from_cluster_id: String,
    pub index: u64,
    /// Recomputed by replaying the written store (equal to the manifest's, or the restore fails).
    pub state_hash: String,
    pub identity_restored: bool,
    pub moved_aside: Option<PathBuf>,
    pub policy_versions: usize,
    pub tokens: usize,
}

/// Restores `options.snapshot` into `options.data_dir`; `progress` hears about each step.
pub fn restore(options: &RestoreOptions<'_>, progress: &mut dyn FnMut(&str)) -> Result<RestoreReport, RestoreError> {
    progress(&format!("reading {}", options.snapshot.display()));
    let bytes = crate::repository::read_file(options.snapshot).map_err(RestoreError::Read)?;
    progress(&format!("verifying {} bytes (format, checksums, schema, state hash)", bytes.len()));
    let verified = verify(&bytes).map_err(RestoreError::Snapshot)?;
    let secrets = match options.passphrase {
        Some(passphrase) => {
            progress("opening the secrets section");
            Some(open_secrets(&bytes, passphrase).map_err(RestoreError::Snapshot)?)
        }
        None => None,
    };
    let target = options.data_dir;
    if !is_empty_or_missing(target).map_err(RestoreError::Read)? && !options.force {
        return Err(RestoreError::NotEmpty(target.to_path_buf()));
    }

    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    std::fs::create_dir_all(&parent).map_err(|e| RestoreError::Write {
        reason: format!("cannot create {}: {e}", parent.display()),
        moved_aside: None,
    })?;
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let assembled = assemble(&staging, &verified, secrets.as_ref(), progress);
    let (node_id, cluster_id, replayed_hash) = match assembled {
        Ok(ids) => ids,
        Err(reason) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(RestoreError::Write { reason, moved_aside: None });
        }
    };

    // The release slots are the installed software, not state: the restored node runs the
    // release the old data root had (on an appliance, systemd starts releases/current).
    if let Err(reason) = carry_release_slots(target, &staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(RestoreError::Write { reason, moved_aside: None });
    }
    if staging.join(crate::releases::RELEASES_DIR).exists() {
        progress("release slots carried over from the old data root");
    }
    let mut moved_aside = None;
    if target.exists() && !is_empty_or_missing(target).map_err(RestoreError::Read)? {
        let aside = parent.join(format!("{name}.before-restore-{}", options.now_ms));
        progress(&format!("moving the old data root aside to {}", aside.display()));
        std::fs::rename(target, &aside).map_err(|e| RestoreError::Write {
            reason: format!("cannot move {} aside: {e}", target.display()),
            moved_aside: None,
        })?;
        moved_aside = Some(aside);
    } else if target.exists() {
        let _ = std::fs::remove_dir(target);
    }
    std::fs::rename(&staging, target).map_err(|e| RestoreError::Write {
        reason: format!("cannot move the restored data root into {}: {e}", target.display()),
        moved_aside: moved_aside.clone(),
    })?;
    sync_dir(&parent).map_err(|reason| RestoreError::Write { reason, moved_aside: moved_aside.clone() })?;
    let manifest = &verified.manifest;
    Ok(RestoreReport {
        data_dir: target.to_path_buf(),
        node_id,
        cluster_id,
        from_cluster_id: manifest.cluster_id.clone(),
        index: manifest.last_applied.index,
        state_hash: replayed_hash,
        identity_restored: secrets.is_some(),
        moved_aside,
        policy_versions: verified.state.policy_versions().count(),
        tokens: verified.state.tokens().count(),
    })
}

/// Writes the whole new data root into `dir`; returns the node id, the new cluster id, and
/// the state hash recomputed from the written store.
fn assemble(
    dir: &Path,
    verified: &crate::snapshot::Verified,
    secrets: Option<&Secrets>,
    progress: &mut dyn FnMut(&str),
) -> Result<(u64, String, String), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let root = DataRoot::with_cluster_paths(dir, ClusterPaths::under(dir));
    let manifest = &verified.manifest;
    let node_id = secrets.map_or(FRESH_NODE_ID, |s| s.node_id);
    let cluster_id: String = random_bytes::<16>()?.iter().map(|b| format!("{b:02x}")).collect();

    progress(&format!(
        "writing the store at index {} (state hash {})",
        manifest.last_applied.index, manifest.state_hash
    ));
    let store_dir = dir.join(STORE_DIR);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&store_dir)
        .map_err(|e| format!("cannot create {}: {e}", store_dir.display()))?;
    let position = &manifest.last_applied;
    let last_applied = LogId::new(CommittedLeaderId::new(position.term, position.leader_node_id), position.index);
    let membership =
        Membership::new(vec![BTreeSet::from([node_id])], BTreeMap::from([(node_id, BasicNode::default())]));
    write_restored(&store_dir, &verified.state, RestoredStart { last_applied, membership, node_id })
        .map_err(|e| format!("cannot write the store: {e}"))?;

    progress("checking the written store replays to the snapshot's state hash");
    let replayed = replay(&store_dir, None).map_err(|e| format!("cannot read back the written store: {e}"))?;
    if replayed.state.state_hash().to_hex() != manifest.state_hash || replayed.snapshot_index != position.index {
        return Err(format!(
            "the written store replays to index {} hash {}, not the snapshot's {} {}",
            replayed.snapshot_index,
            replayed.state.state_hash().to_hex(),
            position.index,
            manifest.state_hash
        ));
    }

    progress(&format!("minting cluster {cluster_id}: a new CA and node certificate for node {node_id}"));
    let identity = new_identity(node_id, &cluster_id)?;
    identity.save(&root.cluster)?;
    let token = match secrets.and_then(|s| s.files.get(TOKEN_SECRET)) {
        Some(token) => token.clone(),
        None => random_bytes::<32>()?.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n",
    };
    write_atomically(&root.cluster.bootstrap_token_path, &token, 0o600)?;
    if let Some(secrets) = secrets {
        progress("restoring the node's secrets (API certificate and key)");
        for name in SECRET_FILES {
            if let Some(text) = secrets.files.get(name) {
                let mode = if name.ends_with("key.pem") { 0o600 } else { 0o644 };
                write_atomically(&dir.join(name), text, mode)?;
            }
        }
    }
    let state_hash = Digest::from_hex(&manifest.state_hash).ok_or("the manifest's state hash is not hex")?;
    let marker = RestoreMarker {
        cluster_id: cluster_id.clone(),
        from: RestoreSource {
            cluster_id: manifest.cluster_id.clone(),
            index: position.index,
            state_hash,
            snapshot_created_at_ms: manifest.created_at_ms,
        },
    };
    write_marker(&root.cluster.cluster_dir, &marker)?;
    sync_dir(dir)?;
    Ok((node_id, cluster_id, replayed.state.state_hash().to_hex()))
}

fn is_empty_or_missing(dir: &Path) -> Result<bool, String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

/// Copies `old/releases` into `new/releases`: every slot (binary and manifest), the
/// `current` and `previous` pointers and the history; not a pending attempt (`boot.json`),
/// which belonged to the old node's life. Nothing to do when `old` has no slots.
fn carry_release_slots(old: &Path, new: &Path) -> Result<(), String> {
    let from = old.join(crate::releases::RELEASES_DIR);
    let Ok(entries) = std::fs::read_dir(&from) else { return Ok(()) };
    let to = new.join(crate::releases::RELEASES_DIR);
    std::fs::create_dir_all(&to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        let name = entry.file_name();
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type().map_err(|e| format!("{}: {e}", src.display()))?;
        let copied = if kind.is_symlink() {
            std::fs::read_link(&src).and_then(|link| std::os::unix::fs::symlink(link, &dst))
        } else if kind.is_dir() && crate::releases::check_version(&name.to_string_lossy()).is_ok() {
            std::fs::create_dir_all(&dst).and_then(|()| {
                for file in std::fs::read_dir(&src)? {
                    let file = file?;
                    if file.file_type()?.is_file() {
                        std::fs::copy(file.path(), dst.join(file.file_name()))?;
                    }
                }
                Ok(())
            })
        } else if kind.is_file() && name == "history.jsonl" {
            std::fs::copy(&src, &dst).map(drop)
        } else {
            Ok(())
        };
        copied.map_err(|e| format!("cannot carry the release slot {} over: {e}", src.display()))?;
    }
    sync_dir(&to)
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}
