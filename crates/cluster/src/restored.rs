//! The cluster side of a restore from snapshot (design §7).
//!
//! The offline `sluice restore` writes a data root whose store holds the snapshot's state
//! (which still names the old cluster), a fresh identity for a **new** cluster (new id, new
//! CA, so no certificate of the old cluster is accepted by it), and a marker saying what the
//! state was restored from. On its first start the node leads its one-voter group and writes
//! `RestoreCluster`, which renames the cluster in the replicated state and records the old id
//! in its lineage; then the marker is removed. Until that entry is applied the marker is what
//! allows the store's cluster id (the old one) to differ from the identity's (the new one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_store::state::{Command, CommandError, Outcome, RestoreSource};
use sluice_store::Store;

use crate::identity::{write_atomically, Identity};

/// The marker's file name inside the cluster directory.
pub const MARKER_FILE: &str = "restored-from.json";

/// What `sluice restore` leaves for the node's first start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMarker {
    /// The new cluster's id (the identity's).
    pub cluster_id: String,
    /// The snapshot the state came from.
    pub from: RestoreSource,
}

pub fn marker_path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join(MARKER_FILE)
}

pub fn write_marker(cluster_dir: &Path, marker: &RestoreMarker) -> Result<(), String> {
    let text = serde_json::to_string_pretty(marker).map_err(|e| e.to_string())?;
    write_atomically(&marker_path(cluster_dir), &format!("{text}\n"), 0o644)
}

pub fn read_marker(cluster_dir: &Path) -> Result<Option<RestoreMarker>, String> {
    let path = marker_path(cluster_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: not a restore marker: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A new identity for a restored node: the given node id in a new cluster with a new CA.
pub fn new_identity(node_id: u64, cluster_id: &str) -> Result<Identity, String> {
    let ca = crate::pki::new_ca(cluster_id).map_err(|e| e.to_string())?;
    let key = crate::pki::new_node_key(node_id).map_err(|e| e.to_string())?;
    let cert = crate::pki::sign_node_csr(&ca, &key.csr_pem, node_id).map_err(|e| e.to_string())?;
    Ok(Identity { node_id, cluster_id: cluster_id.to_owned(), ca, node_cert_pem: cert, node_key_pem: key.key_pem })
}

/// Whether the store's cluster id may differ from the identity's because a restore is not
/// finished yet.
pub fn explains_mismatch(marker: Option<&RestoreMarker>, store_cluster: &str, identity_cluster: &str) -> bool {
    marker.is_some_and(|m| m.from.cluster_id == store_cluster && m.cluster_id == identity_cluster)
}

/// Writes `RestoreCluster` once this node leads (it is the only voter of a restored store),
/// then removes the marker. Safe to repeat: a state already renamed only loses its marker.
pub async fn finish(store: &Store, cluster_dir: &Path, marker: &RestoreMarker) -> Result<(), String> {
    let current = store.read(|s| s.cluster().map(|c| c.cluster_id.clone()));
    if current.as_deref() != Some(marker.cluster_id.as_str()) {
        let node_id = store.status().node_id;
        store
            .raft()
            .wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.current_leader == Some(node_id), "the restored node leads its group")
            .await
            .map_err(|e| format!("the restored node did not become leader of its own group: {e}"))?;
        let command = Command::RestoreCluster { cluster_id: marker.cluster_id.clone(), from: marker.from.clone() };
        let applied = store.write("restore", command).await.map_err(|e| e.to_string())?;
        match applied.response {
            Ok(Outcome::ClusterRestored { .. }) => {}
            // Written by an earlier start that stopped before removing the marker.
            Err(CommandError::ClusterIdMismatch { existing, .. }) if existing == marker.cluster_id => {}
            other => return Err(format!("the restore could not rename the cluster: {other:?}")),
        }
        tracing::info!(
            cluster_id = %marker.cluster_id,
            from_cluster_id = %marker.from.cluster_id,
            from_index = marker.from.index,
            from_state_hash = %marker.from.state_hash.to_hex(),
            "restored state now belongs to the new cluster"
        );
    }
    let path = marker_path(cluster_dir);
    std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    std::fs::File::open(cluster_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", cluster_dir.display()))
}
