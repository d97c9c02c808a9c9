//! Release slots in the data root (design §7): every release the node may run, each in its
//! own directory with the binary and a manifest, and the `current` and `previous` pointers.
//!
//! ```text
//! releases/<version>/sluice          the binary (mode 0755)
//! releases/<version>/manifest.json   version, sha256, size, schema range, staged at
//! releases/current  -> <version>     what the node runs (a symlink, so a service manager
//! releases/previous -> <version>     can start releases/current/sluice)
//! releases/history.jsonl             what ran when, one event per line
//! releases/boot.json                 the release on probation (see crate::boot)
//! ```
//!
//! Staging never leaves a half-written slot: the binary is copied into a staging directory,
//! synced, checksummed and probed (it must run and report its version and schema range),
//! then the directory is renamed into place. A slot's binary is never rewritten: staging the
//! same version again with other bytes is refused.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The releases directory inside the data root.
pub const RELEASES_DIR: &str = "releases";
/// The binary's name inside a slot.
pub const BINARY: &str = "sluice";
const MANIFEST: &str = "manifest.json";
const HISTORY: &str = "history.jsonl";
/// The largest binary accepted into a slot.
pub const MAX_BINARY_BYTES: u64 = 1 << 30;
/// How long a probe (`<binary> version --json`) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// History lines kept (older ones are dropped when the file is rewritten).
pub const HISTORY_LIMIT: usize = 1000;

/// What a binary says about itself (`sluice version --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryInfo {
    pub version: String,
    /// The oldest state schema it reads (and migrates forward).
    pub schema_min: u32,
    /// The schema it writes when the cluster's active schema allows.
    pub schema_max: u32,
}

impl BinaryInfo {
    pub fn supports(&self, schema: u32) -> bool {
        (self.schema_min..=self.schema_max).contains(&schema)
    }
}

/// A slot's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    pub version: String,
    pub sha256: String,
    pub bytes: u64,
    pub schema_min: u32,
    pub schema_max: u32,
    pub staged_at_ms: u64,
}

impl ReleaseManifest {
    pub fn info(&self) -> BinaryInfo {
        BinaryInfo { version: self.version.clone(), schema_min: self.schema_min, schema_max: self.schema_max }
    }
}

/// One line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub at_ms: u64,
    /// `staged`, `adopted`, `trying`, `good`, `returned`, `rollback`, `removed`.
    pub event: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseError {
    /// The version string cannot name a slot.
    BadVersion(String),
    /// The file is not a usable release (unreadable, too large, does not run, says nothing).
    NotARelease(String),
    /// The release cannot read the cluster's active schema.
    SchemaUnsupported {
        version: String,
        schema_min: u32,
        schema_max: u32,
        active: u32,
    },
    /// A slot with this version holds other bytes.
    Conflict {
        version: String,
        existing: String,
        offered: String,
    },
    /// A checksum given with the file does not match it.
    ChecksumMismatch {
        expected: String,
        actual: String,
    },
    /// No slot has this version.
    Unknown(String),
    Io(String),
}

impl ReleaseError {
    pub fn code(&self) -> &'static str {
        match self {
            ReleaseError::BadVersion(_) => "bad_release_version",
            ReleaseError::NotARelease(_) => "not_a_release",
            ReleaseError::SchemaUnsupported { .. } => "schema_unsupported",
            ReleaseError::Conflict { .. } => "release_conflict",
            ReleaseError::ChecksumMismatch { .. } => "checksum_mismatch",
            ReleaseError::Unknown(_) => "unknown_release",
            ReleaseError::Io(_) => "release_io",
        }
    }
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseError::BadVersion(v) => write!(
                f,
                "release version {v:?} cannot name a slot: 1 to 64 of A-Z a-z 0-9 . _ + -, not starting with a dot"
            ),
            ReleaseError::NotARelease(why) => write!(f, "not a sluice release: {why}"),
            ReleaseError::SchemaUnsupported { version, schema_min, schema_max, active } => write!(
                f,
                "release {version} reads state schemas {schema_min}..={schema_max}, but the cluster's active schema \
                 is {active}: it could not read the state"
            ),
            ReleaseError::Conflict { version, existing, offered } => write!(
                f,
                "release {version} is already staged with sha256 {existing}; this file is {offered}: a version names \
                 one binary"
            ),
            ReleaseError::ChecksumMismatch { expected, actual } => {
                write!(f, "the file's sha256 is {actual}, not the expected {expected}")
            }
            ReleaseError::Unknown(v) => write!(f, "no release {v} is staged on this node (see sluice release list)"),
            ReleaseError::Io(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ReleaseError {}

fn io(what: impl fmt::Display, e: std::io::Error) -> ReleaseError {
    ReleaseError::Io(format!("{what}: {e}"))
}

pub fn check_version(version: &str) -> Result<(), ReleaseError> {
    let ok = (1..=64).contains(&version.len())
        && !version.starts_with('.')
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        && !matches!(version, "current" | "previous");
    if ok {
        Ok(())
    } else {
        Err(ReleaseError::BadVersion(version.to_owned()))
    }
}

/// SHA-256 of a file, hex, with its length; refuses files over [`MAX_BINARY_BYTES`].
pub fn sha256_file(path: &Path) -> Result<(String, u64), ReleaseError> {
    let mut file = std::fs::File::open(path).map_err(|e| io(path.display(), e))?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| io(path.display(), e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_BINARY_BYTES {
            return Err(ReleaseError::NotARelease(format!("larger than {MAX_BINARY_BYTES} bytes")));
        }
        context.update(&buffer[..n]);
    }
    Ok((hex(context.finish().as_ref()), total))
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `<binary> version --json` (bounded in time and output) and reads what it says.
pub fn probe(binary: &Path) -> Result<BinaryInfo, ReleaseError> {
    let mut child = Command::new(binary)
        .args(["version", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| ReleaseError::NotARelease(format!("{} does not run: {e}", binary.display())))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| io(binary.display(), e))? {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ReleaseError::NotARelease(format!(
                    "`{} version --json` did not finish within {PROBE_TIMEOUT:?}",
                    binary.display()
                )));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout.take(64 * 1024).read_to_end(&mut out).map_err(|e| io(binary.display(), e))?;
    }
    if !status.success() {
        return Err(ReleaseError::NotARelease(format!("`{} version --json` failed ({status})", binary.display())));
    }
    let info: BinaryInfo = serde_json::from_slice(&out)
        .map_err(|e| ReleaseError::NotARelease(format!("`version --json` did not report a version: {e}")))?;
    check_version(&info.version)?;
    if info.schema_min > info.schema_max {
        return Err(ReleaseError::NotARelease(format!(
            "it reports the schema range {}..={}",
            info.schema_min, info.schema_max
        )));
    }
    Ok(info)
}

/// One staged release, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Slot {
    pub manifest: ReleaseManifest,
    pub current: bool,
    pub previous: bool,
}

/// The release slots of one data root.
#[derive(Clone, Debug)]
pub struct Releases {
    dir: PathBuf,
}

impl Releases {
    pub fn new(data_root: &Path) -> Releases {
        Releases { dir: data_root.join(RELEASES_DIR) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn binary(&self, version: &str) -> PathBuf {
        self.dir.join(version).join(BINARY)
    }

    fn ensure_dir(&self) -> Result<(), ReleaseError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(self.dir.display(), e))
    }

    /// The manifest of slot `version`.
    pub fn manifest(&self, version: &str) -> Result<ReleaseManifest, ReleaseError> {
        check_version(version)?;
        let path = self.dir.join(version).join(MANIFEST);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReleaseError::Unknown(version.into())),
            Err(e) => return Err(io(path.display(), e)),
        };
        serde_json::from_slice(&text).map_err(|e| ReleaseError::Io(format!("{}: not a manifest: {e}", path.display())))
    }

    /// Copies `file` into slot `version`-as-it-reports, after checking it: its sha256 (when
    /// `expected_sha256` is given), that it runs and reports a version (`probe`), and that it
    /// reads `active_schema`. Staging a version already staged with the same bytes is a no-op.
    pub fn stage(
        &self,
        file: &Path,
        expected_sha256: Option<&str>,
        active_schema: u32,
        now_ms: u64,
        probe: impl Fn(&Path) -> Result<BinaryInfo, ReleaseError>,
    ) -> Result<ReleaseManifest, ReleaseError> {
        self.ensure_dir()?;
        let staging = self.dir.join(format!(".staging-{}-{now_ms}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(|e| io(staging.display(), e))?;
        let result = self.stage_in(&staging, file, expected_sha256, active_schema, now_ms, probe);
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    fn stage_in(
        &self,
        staging: &Path,
        file: &Path,
        expected_sha256: Option<&str>,
        active_schema: u32,
        now_ms: u64,
        probe: impl Fn(&Path) -> Result<BinaryInfo, ReleaseError>,
    ) -> Result<ReleaseManifest, ReleaseError> {
        let binary = staging.join(BINARY);
        copy_synced(file, &binary)?;
        let (sha256, bytes) = sha256_file(&binary)?;
        if let Some(expected) = expected_sha256 {
            if !expected.eq_ignore_ascii_case(&sha256) {
                return Err(ReleaseError::ChecksumMismatch { expected: expected.to_owned(), actual: sha256 });
            }
        }
        let info = probe(&binary)?;
        if !info.supports(active_schema) {
            return Err(ReleaseError::SchemaUnsupported {
                version: info.version,
                schema_min: info.schema_min,
                schema_max: info.schema_max,
                active: active_schema,
            });
        }
        match self.manifest(&info.version) {
            Ok(existing) if existing.sha256 == sha256 => return Ok(existing),
            Ok(existing) => {
                return Err(ReleaseError::Conflict {
                    version: info.version,
                    existing: existing.sha256,
                    offered: sha256,
                })
            }
            Err(ReleaseError::Unknown(_)) => {}
            Err(e) => return Err(e),
        }
        let manifest = ReleaseManifest {
            version: info.version.clone(),
            sha256,
            bytes,
            schema_min: info.schema_min,
            schema_max: info.schema_max,
            staged_at_ms: now_ms,
        };
        write_synced(&staging.join(MANIFEST), &serde_json::to_vec_pretty(&manifest).expect("manifests serialize"))?;
        sync_dir(staging)?;
        let slot = self.dir.join(&info.version);
        // A slot left without a manifest by a crash is not a release: replace it.
        if slot.exists() {
            std::fs::remove_dir_all(&slot).map_err(|e| io(slot.display(), e))?;
        }
        std::fs::rename(staging, &slot).map_err(|e| io(slot.display(), e))?;
        sync_dir(&self.dir)?;
        self.record(HistoryEvent {
            at_ms: now_ms,
            event: "staged".into(),
            version: manifest.version.clone(),
            from: None,
            detail: format!("sha256 {}", manifest.sha256),
        })?;
        Ok(manifest)
    }

    /// Every slot, newest staged first.
    pub fn list(&self) -> Result<Vec<Slot>, ReleaseError> {
        let current = self.current()?;
        let previous = self.previous()?;
        let mut slots = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(slots),
            Err(e) => return Err(io(self.dir.display(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io(self.dir.display(), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_version(&name).is_err() || !entry.path().is_dir() || entry.path().is_symlink() {
                continue;
            }
            if let Ok(manifest) = self.manifest(&name) {
                slots.push(Slot {
                    current: current.as_deref() == Some(&name),
                    previous: previous.as_deref() == Some(&name),
                    manifest,
                });
            }
        }
        slots.sort_by_key(|s| std::cmp::Reverse(s.manifest.staged_at_ms));
        Ok(slots)
    }

    fn pointer(&self, name: &str) -> Result<Option<String>, ReleaseError> {
        let path = self.dir.join(name);
        match std::fs::read_link(&path) {
            Ok(target) => Ok(Some(target.to_string_lossy().into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path.display(), e)),
        }
    }

    pub fn current(&self) -> Result<Option<String>, ReleaseError> {
        self.pointer("current")
    }

    pub fn previous(&self) -> Result<Option<String>, ReleaseError> {
        self.pointer("previous")
    }

    /// Points `name` at slot `version`, atomically (a new symlink renamed over the old).
    fn set_pointer(&self, name: &str, version: &str) -> Result<(), ReleaseError> {
        self.manifest(version)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(version, &tmp).map_err(|e| io(tmp.display(), e))?;
        std::fs::rename(&tmp, self.dir.join(name)).map_err(|e| io(self.dir.join(name).display(), e))?;
        sync_dir(&self.dir)
    }

    /// Makes `version` current; the release that was current becomes previous (unless it is
    /// the same one).
    pub fn promote(&self, version: &str, now_ms: u64, event: &str, detail: &str) -> Result<(), ReleaseError> {
        let old = self.current()?;
        if let Some(old) = old.as_deref().filter(|old| *old != version) {
            if self.manifest(old).is_ok() {
                self.set_pointer("previous", old)?;
            }
        }
        self.set_pointer("current", version)?;
        self.record(HistoryEvent {
            at_ms: now_ms,
            event: event.into(),
            version: version.into(),
            from: old,
            detail: detail.into(),
        })
    }

    /// Registers the running binary as a release when the data root has none, so there is
    /// always a release to return to. Returns whether it did.
    pub fn adopt(&self, running: &Path, info: &BinaryInfo, now_ms: u64) -> Result<bool, ReleaseError> {
        if self.current()?.is_some() {
            return Ok(false);
        }
        let schema = info.schema_max;
        let manifest = match self.manifest(&info.version) {
            Ok(m) => m,
            Err(ReleaseError::Unknown(_)) => self.stage(running, None, schema, now_ms, |_| Ok(info.clone()))?,
            Err(e) => return Err(e),
        };
        self.promote(&manifest.version, now_ms, "adopted", "the release that started the node first")?;
        Ok(true)
    }

    /// Appends one event to the history (bounded: rewritten without the oldest lines when
    /// over [`HISTORY_LIMIT`]).
    pub fn record(&self, event: HistoryEvent) -> Result<(), ReleaseError> {
        self.ensure_dir()?;
        let path = self.dir.join(HISTORY);
        let mut line = serde_json::to_vec(&event).expect("events serialize");
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| io(path.display(), e))?;
        file.write_all(&line).and_then(|()| file.sync_all()).map_err(|e| io(path.display(), e))?;
        let history = self.history()?;
        if history.len() > HISTORY_LIMIT {
            let keep = &history[history.len() - HISTORY_LIMIT..];
            let mut text = Vec::new();
            for event in keep {
                text.extend(serde_json::to_vec(event).expect("events serialize"));
                text.push(b'\n');
            }
            let tmp = self.dir.join(".history.tmp");
            write_synced(&tmp, &text)?;
            std::fs::rename(&tmp, &path).map_err(|e| io(path.display(), e))?;
        }
        Ok(())
    }

    /// The history, oldest first (lines that do not parse are skipped: a torn last line
    /// after a crash must not hide the rest).
    pub fn history(&self) -> Result<Vec<HistoryEvent>, ReleaseError> {
        let path = self.dir.join(HISTORY);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(path.display(), e)),
        };
        Ok(text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
    }

    /// Free bytes on the data root's filesystem.
    pub fn free_bytes(&self) -> Result<u64, ReleaseError> {
        self.ensure_dir()?;
        free_bytes(&self.dir).map_err(|e| io(self.dir.display(), e))
    }
}

pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn copy_synced(from: &Path, to: &Path) -> Result<(), ReleaseError> {
    let meta = std::fs::metadata(from).map_err(|e| io(from.display(), e))?;
    if !meta.is_file() {
        return Err(ReleaseError::NotARelease(format!("{} is not a file", from.display())));
    }
    if meta.len() > MAX_BINARY_BYTES {
        return Err(ReleaseError::NotARelease(format!("{} is larger than {MAX_BINARY_BYTES} bytes", from.display())));
    }
    std::fs::copy(from, to).map_err(|e| io(format!("copying {} to {}", from.display(), to.display()), e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).map_err(|e| io(to.display(), e))?;
    std::fs::File::open(to).and_then(|f| f.sync_all()).map_err(|e| io(to.display(), e))
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ReleaseError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| io(path.display(), e))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| io(path.display(), e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), ReleaseError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir.display(), e))
}
