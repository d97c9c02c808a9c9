//! The node's snapshot repository as the API sees it, and the snapshot schedule
//! (`--snapshot-interval`, `--snapshot-keep`).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_api::snapshots::{SnapshotFailure, SnapshotService, SnapshotSummary};
use sluice_lifecycle::layout::DataRoot;
use sluice_lifecycle::repository::{read_file, Entry, Kind, Repository};
use sluice_lifecycle::snapshot::{collect_secrets, create, verify, CreateError, Writer};
use sluice_store::Store;
use tracing::{error, info};

use crate::config::SnapshotSchedule;

pub struct NodeSnapshots {
    store: Arc<Store>,
    root: DataRoot,
    repository: Repository,
    /// One snapshot at a time: each holds a copy of the state and a whole file in memory.
    busy: Mutex<()>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn summary(entry: &Entry, file_sha256: Option<String>) -> SnapshotSummary {
    let manifest = entry.manifest.as_ref().ok();
    SnapshotSummary {
        id: entry.id.to_string(),
        kind: entry.id.kind.as_str().into(),
        bytes: entry.bytes,
        valid: entry.manifest.is_ok(),
        error: entry.manifest.as_ref().err().cloned(),
        created_at_ms: manifest.map(|m| m.created_at_ms),
        cluster_id: manifest.map(|m| m.cluster_id.clone()),
        node_id: manifest.map(|m| m.node_id),
        schema_version: manifest.map(|m| m.schema_version),
        release_version: manifest.map(|m| m.release_version.clone()),
        applied_index: manifest.map(|m| m.last_applied.index),
        term: manifest.map(|m| m.last_applied.term),
        state_hash: manifest.map(|m| m.state_hash.clone()),
        has_secrets: manifest.map(|m| m.secrets.is_some()),
        file_sha256,
    }
}

impl NodeSnapshots {
    pub fn new(store: Arc<Store>, root: DataRoot) -> NodeSnapshots {
        let repository = Repository::new(root.snapshots_dir());
        NodeSnapshots { store, root, repository, busy: Mutex::new(()) }
    }

    /// Takes a snapshot of `kind` now and keeps it.
    pub fn take(&self, kind: Kind, passphrase: Option<&[u8]>) -> Result<SnapshotSummary, SnapshotFailure> {
        let Ok(_guard) = self.busy.try_lock() else {
            return Err(SnapshotFailure::Busy("another snapshot is being taken on this node; try again".into()));
        };
        let node_id = self.store.status().node_id;
        let writer = Writer { release_version: crate::build_info::version(), node_id };
        let secrets = match passphrase {
            Some(_) => Some(collect_secrets(&self.root, node_id).map_err(|e| SnapshotFailure::Io(e.to_string()))?),
            None => None,
        };
        let sealed = secrets.as_ref().zip(passphrase);
        let written = create(&self.store, &writer, now_ms(), sealed).map_err(|e| match e {
            CreateError::Empty => SnapshotFailure::BadRequest { code: "nothing_to_snapshot", message: e.to_string() },
            other => SnapshotFailure::Io(other.to_string()),
        })?;
        let (manifest, bytes) = (&written.manifest, &written.bytes);
        let entry = self.repository.save(kind, manifest, bytes).map_err(SnapshotFailure::Io)?;
        info!(
            id = %entry.id,
            kind = kind.as_str(),
            applied_index = manifest.last_applied.index,
            state_hash = %manifest.state_hash,
            bytes = bytes.len(),
            secrets = passphrase.is_some(),
            path = %entry.path.display(),
            "snapshot taken"
        );
        Ok(summary(&entry, Some(written.file_sha256_hex)))
    }
}

impl SnapshotService for NodeSnapshots {
    fn list(&self) -> Result<Vec<SnapshotSummary>, SnapshotFailure> {
        let entries = self.repository.list().map_err(SnapshotFailure::Io)?;
        Ok(entries.iter().map(|e| summary(e, None)).collect())
    }

    fn create(&self, passphrase: Option<&[u8]>) -> Result<SnapshotSummary, SnapshotFailure> {
        self.take(Kind::Manual, passphrase)
    }

    fn file(&self, id: &str) -> Result<std::path::PathBuf, SnapshotFailure> {
        self.repository
            .find(id)
            .map(|(_, path)| path)
            .ok_or_else(|| SnapshotFailure::NotFound(format!("no snapshot {id:?} on this node")))
    }

    fn verify(&self, id: &str) -> Result<SnapshotSummary, SnapshotFailure> {
        let path = self.file(id)?;
        let bytes = read_file(&path).map_err(SnapshotFailure::Io)?;
        let verified =
            verify(&bytes).map_err(|e| SnapshotFailure::Invalid { code: e.code(), message: e.to_string() })?;
        let entry = Entry {
            id: self.repository.find(id).map(|(id, _)| id).ok_or_else(|| SnapshotFailure::NotFound(id.into()))?,
            path,
            bytes: bytes.len() as u64,
            manifest: Ok(verified.manifest),
        };
        Ok(summary(&entry, Some(verified.file_sha256)))
    }
}

/// Takes a scheduled snapshot every `schedule.interval` and keeps the newest
/// `schedule.keep` of them. Failures are logged and retried at the next tick; the node goes on.
pub async fn run_schedule(snapshots: Arc<NodeSnapshots>, schedule: SnapshotSchedule) {
    let Some(interval) = schedule.interval else { return };
    info!(interval_s = interval.as_secs(), keep = schedule.keep, "scheduled snapshots on");
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let worker = snapshots.clone();
        let keep = schedule.keep;
        let result = tokio::task::spawn_blocking(move || {
            let taken = worker.take(Kind::Scheduled, None);
            let pruned = worker.repository.prune(Kind::Scheduled, keep);
            (taken, pruned)
        })
        .await;
        match result {
            Ok((Ok(_), Ok(pruned))) if !pruned.is_empty() => {
                let ids: Vec<String> = pruned.iter().map(ToString::to_string).collect();
                info!(removed = %ids.join(","), "old scheduled snapshots removed (--snapshot-keep)");
            }
            Ok((Ok(_), Ok(_))) => {}
            Ok((Err(e), _)) => error!("scheduled snapshot failed: {e:?}; retrying at the next interval"),
            Ok((_, Err(e))) => error!("removing old scheduled snapshots failed: {e}"),
            Err(e) => error!("scheduled snapshot task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use sluice_store::StoreConfig;

    /// A runtime and a single-node store with a cluster identity in `dir/store`.
    fn open_store(dir: &std::path::Path) -> (tokio::runtime::Runtime, Arc<Store>) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store = rt.block_on(async {
            let store = Store::open_single_node(StoreConfig::single_node(dir.join("store"))).await.unwrap();
            store.ensure_cluster_identity("test").await.unwrap();
            Arc::new(store)
        });
        (rt, store)
    }

    #[test]
    fn scheduled_snapshots_are_taken_and_pruned_and_manual_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, store) = open_store(dir.path());
        let snapshots = Arc::new(NodeSnapshots::new(store.clone(), DataRoot::new(dir.path())));
        let manual = snapshots.take(Kind::Manual, Some(b"pass")).unwrap();
        assert_eq!((manual.kind.as_str(), manual.has_secrets), ("manual", Some(true)));
        let schedule = SnapshotSchedule { interval: Some(Duration::from_millis(40)), keep: 2 };
        let task = rt.spawn(run_schedule(snapshots.clone(), schedule));
        let deadline = Instant::now() + Duration::from_secs(20);
        // Wait until more scheduled snapshots were taken than are kept, so pruning has happened.
        let scheduled_names = || -> Vec<String> {
            std::fs::read_dir(dir.path().join("snapshots"))
                .map(|d| {
                    d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .filter(|name| name.starts_with("scheduled-"))
                        .collect()
                })
                .unwrap_or_default()
        };
        let scheduled = || scheduled_names().len();
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 5 {
            assert!(Instant::now() < deadline, "the schedule took only {} snapshots in 20 s", seen.len());
            let now = scheduled_names();
            // The new snapshot is made durable before the oldest is removed, so a crash in
            // between never leaves fewer than `keep`; for that moment there are `keep + 1`.
            assert!(now.len() <= 3, "at most --snapshot-keep plus the one being taken, saw {now:?}");
            seen.extend(now);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        task.abort();
        // Aborting does not stop a take-and-prune already on the blocking pool: let the one
        // in flight (taken, not yet pruned) finish before counting.
        let settle = Instant::now() + Duration::from_secs(10);
        while scheduled() != 2 || {
            std::thread::sleep(Duration::from_millis(150));
            scheduled() != 2
        } {
            assert!(Instant::now() < settle, "scheduled snapshots never settled at 2: {}", scheduled());
            std::thread::sleep(Duration::from_millis(20));
        }
        let listed = snapshots.list().unwrap();
        let kinds: Vec<&str> = listed.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(kinds.iter().filter(|k| **k == "scheduled").count(), 2, "{kinds:?}");
        assert!(listed.iter().any(|s| s.id == manual.id), "a manual snapshot is never pruned");
        assert!(listed.iter().all(|s| s.valid));
        assert!(listed.windows(2).all(|w| w[0].created_at_ms >= w[1].created_at_ms), "newest first");
    }

    #[test]
    fn verify_and_file_lookup_refuse_what_they_should() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, store) = open_store(dir.path());
        let snapshots = NodeSnapshots::new(store, DataRoot::new(dir.path()));
        let taken = snapshots.create(None).unwrap();
        let verified = snapshots.verify(&taken.id).unwrap();
        assert_eq!(verified.state_hash, taken.state_hash);
        assert!(verified.file_sha256.is_some());
        for bad in ["../store/store.redb", "manual-1-2", "nope"] {
            assert!(matches!(snapshots.file(bad), Err(SnapshotFailure::NotFound(_))), "{bad}");
        }
        let path = snapshots.file(&taken.id).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        match snapshots.verify(&taken.id) {
            Err(SnapshotFailure::Invalid { code, message }) => {
                assert_eq!(code, "snapshot_corrupted", "{message}");
            }
            other => panic!("a corrupted snapshot verified: {other:?}"),
        }
        let listed = snapshots.list().unwrap();
        assert!(!listed[0].valid && listed[0].error.as_deref().unwrap_or("").contains("corrupted"));
    }
}
