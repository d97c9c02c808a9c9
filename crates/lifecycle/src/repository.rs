//! The node's snapshot directory (`<data root>/snapshots`): one file per snapshot named by
//! its id, written atomically, listed newest first, pruned by kind.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sluice_snapshot::Manifest;

/// The largest snapshot file read into memory.
pub const MAX_SNAPSHOT_FILE_BYTES: u64 = 4 << 30;
const EXTENSION: &str = "snap";

/// Why a snapshot was taken; retention applies per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Asked for by an operator (CLI or API); kept until removed by hand.
    Manual,
    /// Taken by `--snapshot-interval`; the newest `--snapshot-keep` are kept.
    Scheduled,
    /// Taken before an upgrade.
    PreUpgrade,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Manual => "manual",
            Kind::Scheduled => "scheduled",
            Kind::PreUpgrade => "pre-upgrade",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        [Kind::Manual, Kind::Scheduled, Kind::PreUpgrade].into_iter().find(|k| k.as_str() == text)
    }
}

/// A snapshot id: `<kind>-<created at, ms since the epoch>-<applied index>`. Only ids of
/// this shape name files, so an id from a request cannot point outside the directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnapshotId {
    pub created_at_ms: u64,
    pub index: u64,
    pub kind: Kind,
}

impl SnapshotId {
    pub fn parse(text: &str) -> Option<SnapshotId> {
        let (rest, index) = text.rsplit_once('-')?;
        let (kind, created) = rest.rsplit_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(index) || !digits(created) {
            return None;
        }
        Some(SnapshotId { kind: Kind::parse(kind)?, created_at_ms: created.parse().ok()?, index: index.parse().ok()? })
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.kind.as_str(), self.created_at_ms, self.index)
    }
}

/// One file of the directory, as the listing shows it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: SnapshotId,
    pub path: PathBuf,
    pub bytes: u64,
    /// The manifest when the file passed the format checks; else why not.
    pub manifest: Result<Manifest, String>,
}

pub struct Repository {
    dir: PathBuf,
}

impl Repository {
    pub fn new(dir: impl Into<PathBuf>) -> Repository {
        Repository { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, id: &SnapshotId) -> PathBuf {
        self.dir.join(format!("{id}.{EXTENSION}"))
    }

    /// Writes a snapshot file atomically (temporary file, fsync, rename, fsync of the
    /// directory), readable by its owner only: it holds token hashes and maybe secrets.
    pub fn save(&self, kind: Kind, manifest: &Manifest, bytes: &[u8]) -> Result<Entry, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let mut id = SnapshotId { kind, created_at_ms: manifest.created_at_ms, index: manifest.last_applied.index };
        // Two snapshots in the same millisecond at the same index: the later one moves on a ms.
        while self.path_of(&id).exists() {
            id.created_at_ms += 1;
        }
        let path = self.path_of(&id);
        let tmp = self.dir.join(format!(".{id}.tmp"));
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
            file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path).map_err(|e| format!("cannot move {} into place: {e}", path.display()))?;
            sync_dir(&self.dir)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        Ok(Entry { id, path, bytes: bytes.len() as u64, manifest: Ok(manifest.clone()) })
    }

    /// Every snapshot file, newest first, each checked against the format (checksums
    /// included; the state is not decoded). Other files are ignored.
    pub fn list(&self) -> Result<Vec<Entry>, String> {
        let read_dir = match std::fs::read_dir(&self.dir) {
            Ok(read_dir) => read_dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot list {}: {e}", self.dir.display())),
        };
        let mut entries = Vec::new();
        for item in read_dir {
            let item = item.map_err(|e| format!("cannot list {}: {e}", self.dir.display()))?;
            let name = item.file_name();
            let Some(id) =
                name.to_str().and_then(|n| n.strip_suffix(&format!(".{EXTENSION}"))).and_then(SnapshotId::parse)
            else {
                continue;
            };
            let path = item.path();
            let (bytes, manifest) = match read_file(&path) {
                Ok(data) => {
                    (data.len() as u64, sluice_snapshot::read(&data).map(|f| f.manifest).map_err(|e| e.to_string()))
                }
                Err(e) => (0, Err(e)),
            };
            entries.push(Entry { id, path, bytes, manifest });
        }
        entries.sort_by_key(|e| std::cmp::Reverse((e.id.created_at_ms, e.id.index)));
        Ok(entries)
    }

    /// The file of snapshot `id`, if it exists.
    pub fn find(&self, id: &str) -> Option<(SnapshotId, PathBuf)> {
        let id = SnapshotId::parse(id)?;
        let path = self.path_of(&id);
        path.is_file().then_some((id, path))
    }

    /// Removes the oldest snapshots of `kind` beyond the newest `keep`; returns their ids.
    pub fn prune(&self, kind: Kind, keep: usize) -> Result<Vec<SnapshotId>, String> {
        let of_kind: Vec<Entry> = self.list()?.into_iter().filter(|e| e.id.kind == kind).collect();
        let mut removed = Vec::new();
        for entry in of_kind.into_iter().skip(keep) {
            std::fs::remove_file(&entry.path).map_err(|e| format!("cannot remove {}: {e}", entry.path.display()))?;
            removed.push(entry.id);
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

/// Reads a snapshot file whole, refusing one larger than [`MAX_SNAPSHOT_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !metadata.is_file() {
        return Err(format!("{} is not a file", path.display()));
    }
    if metadata.len() > MAX_SNAPSHOT_FILE_BYTES {
        return Err(format!(
            "{} is {} bytes, larger than any snapshot ({} bytes at most)",
            path.display(),
            metadata.len(),
            MAX_SNAPSHOT_FILE_BYTES
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::{Kind, SnapshotId};

    #[test]
    fn ids_round_trip_and_nothing_else_parses() {
        let id = SnapshotId { kind: Kind::PreUpgrade, created_at_ms: 1_733_000_000_000, index: 42 };
        assert_eq!(id.to_string(), "pre-upgrade-1733000000000-42");
        assert_eq!(SnapshotId::parse(&id.to_string()), Some(id));
        for bad in [
            "",
            "manual",
            "manual-1",
            "manual--1",
            "x-1-2",
            "manual-1-2/../../etc",
            "../manual-1-2",
            "manual-1-2 ",
            "manual-+1-2",
        ] {
            assert_eq!(SnapshotId::parse(bad), None, "{bad:?}");
        }
    }
}
