//! Boot state: a release on probation must prove itself (design §7). Restarting into a
//! release records an *attempt* (`releases/boot.json`): the release, the one to return to, a
//! deadline and how many starts it may take. Until the candidate is ready and marks the
//! attempt good, `current` still names the release the node came from, so whatever starts
//! the node after a crash (systemd's `Restart=`, or the boot guard on a bare host) starts the
//! *previous* release, which counts the failed start and either tries the candidate again or
//! gives up on it.
//!
//! [`decide`] is the whole policy, pure: given the stored state, the version of the binary
//! that is starting and the time, it says what to do and what to store.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::releases::{sync_dir, write_synced, ReleaseError, Releases};

const BOOT_FILE: &str = "boot.json";

/// A release on probation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub version: String,
    /// The release to return to if this one fails.
    pub previous: String,
    pub started_at_ms: u64,
    /// Not ready by then: it failed.
    pub deadline_ms: u64,
    /// Starts of the candidate so far (counted before each exec).
    pub starts: u32,
    /// A candidate that has been started this often without becoming ready has failed.
    pub max_starts: u32,
    /// Why: `upgrade`, `rollback`, or a rollout's id.
    pub reason: String,
}

/// How the last attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastOutcome {
    pub version: String,
    /// `good` or `returned`.
    pub outcome: String,
    pub at_ms: u64,
    /// Why it was returned from (empty when good).
    #[serde(default)]
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootState {
    pub attempt: Option<Attempt>,
    pub last: Option<LastOutcome>,
}

/// What the starting binary does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run this binary; `probation` is the deadline by which it must be ready, if it is a
    /// candidate.
    Run { probation: Option<u64> },
    /// Replace this process with slot `version`'s binary (same arguments, same PID).
    Exec { version: String },
}

/// The decision and what to store before acting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub state: BootState,
    /// Set when the attempt failed now: why (for the log and the history).
    pub failed: Option<String>,
}

/// Decides what the binary of release `own` does when it starts at `now_ms`.
pub fn decide(state: &BootState, own: &str, now_ms: u64) -> Decision {
    let Some(attempt) = &state.attempt else {
        return Decision { action: Action::Run { probation: None }, state: state.clone(), failed: None };
    };
    let fail = |why: String| {
        let next = BootState {
            attempt: None,
            last: Some(LastOutcome {
                version: attempt.version.clone(),
                outcome: "returned".into(),
                at_ms: now_ms,
                reason: why.clone(),
            }),
        };
        let action = if own == attempt.previous {
            Action::Run { probation: None }
        } else {
            Action::Exec { version: attempt.previous.clone() }
        };
        Decision { action, state: next, failed: Some(why) }
    };
    if now_ms > attempt.deadline_ms {
        return fail(format!(
            "release {} was not ready within {} s",
            attempt.version,
            attempt.deadline_ms.saturating_sub(attempt.started_at_ms) / 1000
        ));
    }
    if own == attempt.version {
        // Started by the exec that counted this start.
        return Decision {
            action: Action::Run { probation: Some(attempt.deadline_ms) },
            state: state.clone(),
            failed: None,
        };
    }
    if attempt.starts >= attempt.max_starts {
        return fail(format!(
            "release {} stopped before it was ready {} time(s) in a row (crash at start?)",
            attempt.version, attempt.starts
        ));
    }
    let mut next = state.clone();
    next.attempt.as_mut().expect("checked above").starts += 1;
    Decision { action: Action::Exec { version: attempt.version.clone() }, state: next, failed: None }
}

/// The candidate is ready: what to store.
pub fn mark_good(state: &BootState, own: &str, now_ms: u64) -> Option<BootState> {
    let attempt = state.attempt.as_ref().filter(|a| a.version == own)?;
    Some(BootState {
        attempt: None,
        last: Some(LastOutcome {
            version: attempt.version.clone(),
            outcome: "good".into(),
            at_ms: now_ms,
            reason: String::new(),
        }),
    })
}

/// Reads `releases/boot.json` (absent: nothing pending).
pub fn load(releases: &Releases) -> Result<BootState, ReleaseError> {
    let path = releases.dir().join(BOOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ReleaseError::Io(format!("{}: not a boot state: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BootState::default()),
        Err(e) => Err(ReleaseError::Io(format!("{}: {e}", path.display()))),
    }
}

/// Stores the boot state atomically (synced before it is renamed into place).
pub fn store(releases: &Releases, state: &BootState) -> Result<(), ReleaseError> {
    let dir = releases.dir();
    std::fs::create_dir_all(dir).map_err(|e| ReleaseError::Io(format!("{}: {e}", dir.display())))?;
    let tmp = dir.join(".boot.json.tmp");
    write_synced(&tmp, &serde_json::to_vec_pretty(state).expect("boot state serializes"))?;
    let path = dir.join(BOOT_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| ReleaseError::Io(format!("{}: {e}", path.display())))?;
    sync_dir(dir)
}

/// Whether the boot file exists (for tests and the guard).
pub fn path(releases: &Releases) -> std::path::PathBuf {
    releases.dir().join(BOOT_FILE)
}

/// Convenience for callers holding a data root.
pub fn load_from(data_root: &Path) -> Result<BootState, ReleaseError> {
    load(&Releases::new(data_root))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(starts: u32) -> BootState {
        BootState {
            attempt: Some(Attempt {
                version: "2.0.0".into(),
                previous: "1.0.0".into(),
                started_at_ms: 1_000,
                deadline_ms: 61_000,
                starts,
                max_starts: 3,
                reason: "upgrade".into(),
            }),
            last: None,
        }
    }

    #[test]
    fn nothing_pending_runs_as_is() {
        let d = decide(&BootState::default(), "1.0.0", 5);
        assert_eq!(d.action, Action::Run { probation: None });
        assert!(d.failed.is_none());
    }

    #[test]
    fn the_previous_release_counts_a_start_and_execs_the_candidate() {
        let d = decide(&pending(0), "1.0.0", 2_000);
        assert_eq!(d.action, Action::Exec { version: "2.0.0".into() });
        assert_eq!(d.state.attempt.unwrap().starts, 1);
    }

    #[test]
    fn the_candidate_runs_on_probation_until_its_deadline() {
        let d = decide(&pending(1), "2.0.0", 2_000);
        assert_eq!(d.action, Action::Run { probation: Some(61_000) });
        assert_eq!(d.state, pending(1));
    }

    #[test]
    fn too_many_starts_return_to_the_previous_release() {
        let d = decide(&pending(3), "1.0.0", 2_000);
        assert_eq!(d.action, Action::Run { probation: None });
        assert!(d.failed.unwrap().contains("3 time(s) in a row"));
        assert!(d.state.attempt.is_none());
        assert_eq!(d.state.last.unwrap().outcome, "returned");
    }

    #[test]
    fn a_missed_deadline_returns_even_from_the_candidate_itself() {
        let d = decide(&pending(1), "2.0.0", 61_001);
        assert_eq!(d.action, Action::Exec { version: "1.0.0".into() });
        assert!(d.failed.unwrap().contains("not ready within 60 s"));
    }

    #[test]
    fn a_third_binary_returns_to_the_previous_one() {
        let d = decide(&pending(3), "0.9.0", 2_000);
        assert_eq!(d.action, Action::Exec { version: "1.0.0".into() });
    }

    #[test]
    fn only_the_candidate_marks_itself_good() {
        assert!(mark_good(&pending(1), "1.0.0", 9).is_none());
        let good = mark_good(&pending(1), "2.0.0", 9).unwrap();
        assert!(good.attempt.is_none());
        assert_eq!(good.last.unwrap().outcome, "good");
    }
}
