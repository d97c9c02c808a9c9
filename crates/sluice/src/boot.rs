//! Releases at start: which release this process should be, restarting into another one by
//! `exec` (same PID, same arguments, same environment), and the boot guard that brings a
//! bare node (no service manager) back when a candidate release dies before it is ready.
//!
//! The policy is `sluice_lifecycle::boot::decide`; this module does its I/O. Under systemd
//! (`INVOCATION_ID` set) no guard is started: `Restart=` starts `releases/current/sluice`,
//! which is the previous release until the candidate marked itself good, and that binary's
//! own start counts the failed start.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_lifecycle::boot::{self, Action, Attempt};
use sluice_lifecycle::releases::{HistoryEvent, ReleaseError, Releases};
use tracing::{error, info, warn};

use crate::build_info;
use crate::exit::{Exit, Failure};

/// After its deadline, how long the guard lets a candidate return on its own before it
/// stops it.
const GUARD_GRACE: Duration = Duration::from_secs(15);
/// How long a stopped candidate gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn failure(e: ReleaseError) -> Failure {
    Failure::new(Exit::DataDir, format!("release slots: {e}"))
}

/// A candidate release's probation: ready by `deadline_ms` or it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probation {
    pub version: String,
    pub deadline_ms: u64,
}

/// What `sluice run` does at start.
pub enum Start {
    Run(Option<Probation>),
    Exec(PathBuf),
}

/// Decides at start (and again after a stop that asked for a restart) which release this
/// process runs, storing the boot state's change first.
pub fn on_start(data_dir: &Path) -> Result<Start, Failure> {
    // The data root holds the boot state: it must be a directory this node can write.
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Failure::new(
            Exit::DataDir,
            format!(
                "cannot create {}: {e}; give a writable directory with --data-dir (or SLUICE_DATA_DIR)",
                data_dir.display()
            ),
        )
    })?;
    let releases = Releases::new(data_dir);
    let own = build_info::version();
    let now = now_ms();
    let state = boot::load(&releases).map_err(failure)?;
    let decision = boot::decide(&state, &own, now);
    if decision.state != state {
        boot::store(&releases, &decision.state).map_err(failure)?;
    }
    if let (Some(why), Some(attempt)) = (&decision.failed, &state.attempt) {
        error!(release = %attempt.version, returning_to = %attempt.previous, "release failed: {why}");
        let event = HistoryEvent {
            at_ms: now,
            event: "returned".into(),
            version: attempt.previous.clone(),
            from: Some(attempt.version.clone()),
            detail: why.clone(),
        };
        if let Err(e) = releases.record(event) {
            warn!("cannot record the return in the release history: {e}");
        }
    }
    match decision.action {
        Action::Run { probation } => {
            Ok(Start::Run(probation.map(|deadline_ms| Probation { version: own, deadline_ms })))
        }
        Action::Exec { version } => {
            let binary = releases.binary(&version);
            if let Some(attempt) = decision.state.attempt.as_ref().filter(|a| a.version == version) {
                info!(release = %version, start = attempt.starts, of = attempt.max_starts, "starting the candidate release");
                if std::env::var_os("INVOCATION_ID").is_none() {
                    spawn_guard(&releases, data_dir, attempt);
                }
            } else {
                info!(release = %version, "returning to the previous release");
            }
            Ok(Start::Exec(binary))
        }
    }
}

/// Replaces this process with `binary`, keeping the arguments and environment. Returns only
/// if the exec failed.
pub fn exec(binary: &Path) -> Failure {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    info!(binary = %binary.display(), "exec: restarting into another release (same PID)");
    let e = Command::new(binary).args(args).exec();
    Failure::new(Exit::DataDir, format!("cannot exec {}: {e}", binary.display()))
}

/// Records an attempt at `version` (its slot must exist) from the release running now, which
/// is registered as a slot first so there is always one to return to.
pub fn request_restart(
    data_dir: &Path,
    version: &str,
    ready_timeout: Duration,
    max_starts: u32,
    reason: &str,
) -> Result<(), String> {
    let releases = Releases::new(data_dir);
    let own = build_info::info();
    let now = now_ms();
    releases.manifest(version).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running binary: {e}"))?;
    if releases.manifest(&own.version).is_err() || releases.current().ok().flatten().is_none() {
        releases.adopt(&exe, &own, now).map_err(|e| e.to_string())?;
        if releases.current().ok().flatten().as_deref() != Some(own.version.as_str()) {
            releases.promote(&own.version, now, "adopted", "the running release").map_err(|e| e.to_string())?;
        }
    }
    let mut state = boot::load(&releases).map_err(|e| e.to_string())?;
    if let Some(pending) = &state.attempt {
        return Err(format!("release {} is still on probation on this node", pending.version));
    }
    // A new attempt starts with a clean record: a stale "returned" must not be read as this
    // attempt's outcome.
    state.last = None;
    state.attempt = Some(Attempt {
        version: version.to_owned(),
        previous: own.version.clone(),
        started_at_ms: now,
        deadline_ms: now + ready_timeout.as_millis() as u64,
        starts: 0,
        max_starts: max_starts.max(1),
        reason: reason.to_owned(),
    });
    boot::store(&releases, &state).map_err(|e| e.to_string())?;
    releases
        .record(HistoryEvent {
            at_ms: now,
            event: "trying".into(),
            version: version.to_owned(),
            from: Some(own.version),
            detail: reason.to_owned(),
        })
        .map_err(|e| e.to_string())
}

/// The candidate is ready: it becomes `current`, the release it replaced `previous`.
pub fn mark_good(data_dir: &Path, probation: &Probation) -> Result<(), String> {
    let releases = Releases::new(data_dir);
    let state = boot::load(&releases).map_err(|e| e.to_string())?;
    let now = now_ms();
    let Some(next) = boot::mark_good(&state, &probation.version, now) else { return Ok(()) };
    let reason = state.attempt.as_ref().map(|a| a.reason.clone()).unwrap_or_default();
    releases.promote(&probation.version, now, "good", &format!("ready ({reason})")).map_err(|e| e.to_string())?;
    boot::store(&releases, &next).map_err(|e| e.to_string())
}

fn stopped_marker(releases: &Releases, pid: u32) -> PathBuf {
    releases.dir().join(format!(".stopped-{pid}"))
}

/// A clean stop (SIGTERM) during probation: tells the guard not to start the node again.
pub fn note_clean_stop(data_dir: &Path) {
    let releases = Releases::new(data_dir);
    let _ = std::fs::write(stopped_marker(&releases, std::process::id()), b"");
}

fn spawn_guard(releases: &Releases, data_dir: &Path, attempt: &Attempt) {
    let guard_binary = releases.binary(&attempt.previous);
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut command = Command::new(&guard_binary);
    command
        .arg("boot-guard")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg("--release")
        .arg(&attempt.version)
        .arg("--")
        .args(args)
        .stdin(Stdio::null());
    // SAFETY: setsid is async-signal-safe; the guard must outlive this process's session.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match command.spawn() {
        Ok(child) => info!(guard_pid = child.id(), release = %attempt.version, "boot guard started"),
        Err(e) => warn!(
            "cannot start the boot guard ({}): {e}; if the candidate dies, restart the node by hand",
            guard_binary.display()
        ),
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses; a zombie is dead.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// `sluice boot-guard` (started by the node, not by people): watches the candidate `pid`
/// until its attempt at `release` is resolved; if it dies first, or is still not ready past
/// its deadline, starts the previous release with the node's arguments in its place.
pub fn guard(data_dir: &Path, pid: u32, release: &str, args: &[OsString]) -> Failure {
    let releases = Releases::new(data_dir);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let attempt = match boot::load(&releases) {
            Ok(state) => state.attempt,
            Err(e) => return Failure::new(Exit::DataDir, e.to_string()),
        };
        let Some(attempt) = attempt.filter(|a| a.version == release) else {
            // Resolved: marked good, or returned from by the node itself.
            return Failure::new(Exit::Success, "");
        };
        let marker = stopped_marker(&releases, pid);
        if marker.exists() {
            let _ = std::fs::remove_file(marker);
            return Failure::new(Exit::Success, "");
        }
        let overdue = now_ms() > attempt.deadline_ms + GUARD_GRACE.as_millis() as u64;
        if alive(pid) && !overdue {
            continue;
        }
        if alive(pid) {
            eprintln!("boot guard: release {release} (pid {pid}) is not ready past its deadline; stopping it");
            // SAFETY: plain kill(2) on a pid we watched.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            let until = std::time::Instant::now() + STOP_GRACE;
            while alive(pid) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(pid) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        eprintln!("boot guard: release {release} (pid {pid}) stopped before it was ready; starting the node again");
        let binary = releases.binary(&attempt.previous);
        let e = Command::new(&binary).args(args).exec();
        return Failure::new(Exit::DataDir, format!("boot guard: cannot exec {}: {e}", binary.display()));
    }
}
