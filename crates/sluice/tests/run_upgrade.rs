//! Upgrade and automatic return on a single node, end to end with real release artifacts
//! (copies of the built binary with their release stamp rewritten: another version, one that
//! never becomes ready, one that crashes at start) and real traffic through the node:
//! - v1 -> v2 with `sluice upgrade apply --binary`: a pre-upgrade snapshot, the exec keeps
//!   the PID, the node reports v2 and forwards, the slots say current v2 / previous v1;
//! - v2 -> never-ready: the node returns to v2 on its own when its deadline passes; the
//!   rollout reports why and ends rolled back;
//! - v2 -> crash-at-start: the boot guard starts the previous release after each crash until
//!   the start limit, then the node stays on v2; same report;
//! - `sluice rollback --to v1` before finalize works; after an upgrade is finalized,
//!   rollback is refused with the restore hint.
//!
//! Needs root (network namespaces).

mod node_harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use node_harness::cli::{sluice_in, Ran};
use node_harness::cluster_nodes::wait_until;
use node_harness::{require_root, udp_ask, udp_echo, Lab, Launch, Mode, Sluice, POLICY};
use serde_json::Value;
use sluice_lifecycle::stamp::{write_variant, Fault};

const V1: &str = env!("CARGO_PKG_VERSION");

fn local(lab: &Lab, dir: &Path, args: &[&str]) -> Ran {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", dir.to_str().unwrap()]);
    sluice_in(&lab.node, &all)
}

fn variant(dir: &Path, version: &str, fault: Fault) -> PathBuf {
    let out = dir.join(format!("sluice-{version}"));
    write_variant(Path::new(env!("CARGO_BIN_EXE_sluice")), &out, version, fault).unwrap();
    out
}

fn pid(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("sluice.pid")).unwrap().trim().parse().unwrap()
}

/// The release the running node reports, if its API answers.
fn release(lab: &Lab, dir: &Path) -> Option<String> {
    let status = local(lab, dir, &["upgrade", "status", "--json"]);
    (status.code == 0).then(|| status.json()["node"]["release"].as_str().unwrap_or_default().to_owned())
}

fn ready(lab: &Lab, dir: &Path) -> bool {
    local(lab, dir, &["status", "--json"]).code == 0
}

fn rollout(lab: &Lab, dir: &Path) -> Value {
    local(lab, dir, &["upgrade", "status", "--json"]).ok().json()["rollout"].clone()
}

fn passes(lab: &Lab) -> bool {
    udp_ask(lab, 7, b"through the node", 6).is_some()
}

struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string(self.0.join("sluice.pid")) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                // SAFETY: kill(2) on the node's pid from its pid file.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn a_single_node_upgrades_returns_on_its_own_and_rolls_back() {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let artifacts = tempfile::tempdir().unwrap();
    let a = artifacts.path();
    let policy = d.join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    let extra = ["--http-bind", "127.0.0.1:8443"];
    let node = Sluice::start(
        &lab,
        d,
        &Launch { mode: Mode::Software, policy: Some(&policy), extra: &extra, ..Launch::default() },
    );
    let _kill = KillOnDrop(d.to_path_buf());
    let _echo = udp_echo(&lab.upstream, 7);
    assert!(passes(&lab), "traffic passes before the upgrade");
    let first_pid = pid(d);

    // Staging refuses what is not a release, with the reason.
    let junk = a.join("junk");
    std::fs::write(&junk, b"#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&junk, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let refused = local(&lab, d, &["release", "stage", junk.to_str().unwrap()]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(refused.stderr.contains("not_a_release"), "{}", refused.stderr);

    // v1 -> v2.
    let v2 = variant(a, "2.0.0-test", Fault::None);
    let applied =
        local(&lab, d, &["upgrade", "apply", "--binary", v2.to_str().unwrap(), "--observe", "2s", "--wait", "3m"]);
    assert_eq!(applied.code, 0, "stdout:\n{}\nstderr:\n{}\nlog:\n{}", applied.stdout, applied.stderr, node.log_text());
    assert!(applied.stdout.contains("completed"), "{}", applied.stdout);
    assert_eq!(release(&lab, d).as_deref(), Some("2.0.0-test"));
    assert_eq!(pid(d), first_pid, "the exec kept the PID");
    let exe = std::fs::read_link(format!("/proc/{first_pid}/exe")).unwrap();
    assert!(exe.ends_with("releases/2.0.0-test/sluice"), "{}", exe.display());
    assert!(passes(&lab), "traffic passes after the upgrade");
    let slots = local(&lab, d, &["release", "list", "--json"]).ok().json();
    let marked =
        |v: &str, key: &str| slots.as_array().unwrap().iter().any(|s| s["manifest"]["version"] == v && s[key] == true);
    assert!(marked("2.0.0-test", "current") && marked(V1, "previous"), "{slots:#}");
    let plan = rollout(&lab, d);
    assert_eq!(plan["phase"], "completed", "{plan:#}");
    let snapshot = plan["snapshots"].as_object().unwrap().values().next().unwrap().as_str().unwrap().to_owned();
    assert!(snapshot.starts_with("pre-upgrade-"), "{snapshot}");
    assert!(d.join("snapshots").join(format!("{snapshot}.snap")).exists());

    // v2 -> a release that never becomes ready: back on v2 on its own.
    let never = variant(a, "3.0.0-never", Fault::NeverReady);
    let failed = local(
        &lab,
        d,
        &[
            "upgrade",
            "apply",
            "--binary",
            never.to_str().unwrap(),
            "--ready-timeout",
            "8s",
            "--observe",
            "1s",
            "--wait",
            "3m",
        ],
    );
    assert_eq!(failed.code, 5, "stdout:\n{}\nstderr:\n{}", failed.stdout, failed.stderr);
    let plan = rollout(&lab, d);
    assert_eq!(plan["phase"], "rolled_back", "{plan:#}");
    assert_eq!(plan["stop"]["trigger"], "returned_on_its_own", "{plan:#}");
    assert!(plan["stop"]["message"].as_str().unwrap().contains("not ready within 8 s"), "{plan:#}");
    assert!(plan["diagnostics"].as_object().is_some_and(|d| !d.is_empty()), "{plan:#}");
    wait_until("the node to be ready on v2", Duration::from_secs(30), || ready(&lab, d));
    assert_eq!(release(&lab, d).as_deref(), Some("2.0.0-test"));
    assert!(passes(&lab));
    let history = local(&lab, d, &["release", "history", "--json"]).ok().json();
    assert!(
        history.as_array().unwrap().iter().any(|e| e["event"] == "returned" && e["from"] == "3.0.0-never"),
        "{history:#}"
    );

    // v2 -> a release that crashes at start: the guard brings the node back each time.
    let crash = variant(a, "3.0.1-crash", Fault::CrashAtStart);
    let failed = local(
        &lab,
        d,
        &[
            "upgrade",
            "apply",
            "--binary",
            crash.to_str().unwrap(),
            "--max-starts",
            "2",
            "--ready-timeout",
            "60s",
            "--wait",
            "3m",
        ],
    );
    assert_eq!(failed.code, 5, "stdout:\n{}\nstderr:\n{}", failed.stdout, failed.stderr);
    let plan = rollout(&lab, d);
    assert_eq!(plan["phase"], "rolled_back", "{plan:#}");
    assert!(plan["stop"]["message"].as_str().unwrap().contains("2 time(s) in a row"), "{plan:#}");
    wait_until("the node to be ready on v2", Duration::from_secs(30), || ready(&lab, d));
    assert_eq!(release(&lab, d).as_deref(), Some("2.0.0-test"));
    assert!(passes(&lab));

    // Nothing completed since: finalize has nothing to do.
    assert_eq!(local(&lab, d, &["upgrade", "finalize"]).code, 5);
    // Rollback to v1 before finalize.
    let back = local(&lab, d, &["rollback", "--to", V1, "--wait", "3m"]);
    assert_eq!(back.code, 0, "stdout:\n{}\nstderr:\n{}", back.stdout, back.stderr);
    assert_eq!(release(&lab, d).as_deref(), Some(V1));
    assert!(passes(&lab));

    // Upgrade again, finalize, and rollback is refused with the restore hint.
    local(&lab, d, &["upgrade", "apply", "--version", "2.0.0-test", "--observe", "1s", "--wait", "3m"]).ok();
    let finalized = local(&lab, d, &["upgrade", "finalize", "--json"]).ok().json();
    assert_eq!(finalized["finalized"], true);
    let refused = local(&lab, d, &["rollback", "--to", V1]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(refused.stderr.contains("restore the pre-upgrade snapshot"), "{}", refused.stderr);
    assert!(refused.stderr.contains("sluice restore"), "{}", refused.stderr);
    drop(node);
}
