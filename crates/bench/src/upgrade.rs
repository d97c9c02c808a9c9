//! `sluice-bench upgrade` (root): a rolling upgrade of three real nodes, each in its own lab
//! (namespaces, veth data ports, the software dataplane), clustered over their management
//! links (routed through the root namespace), while a client writes policy through the nodes
//! in turn and a poller asks each node's API every 100 ms.
//!
//! - `rolling_upgrade_3_nodes_s`: `sluice upgrade apply --binary v2` from the command to the
//!   rollout's completion (staging, pre-upgrade snapshots, the artifact fetched by the other
//!   two, three restarts, gates and observation windows).
//! - `node_api_unavailable_ms_max`: the longest gap between two answers of one node's API
//!   (through its admin socket, so process start of the CLI is in it: an upper bound).
//! - `failed_writes_during_upgrade`: acknowledged writes missing afterwards (target 0); the
//!   writes that failed and were retried are reported as a note.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_lab::{Lab, Launch, Node};
use sluice_lifecycle::stamp::{write_variant, Fault};

pub struct Report {
    pub figures: Vec<(&'static str, f64, &'static str)>,
    pub notes: Vec<String>,
    /// Acknowledged writes that were lost.
    pub lost: usize,
}

const TARGET_VERSION: &str = "2.0.0-bench";

/// `sluice ARGS --data-dir DIR` inside `ns`: exit code and stdout.
fn cli(sluice: &Path, ns: &str, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("ip").args(["netns", "exec", ns]).arg(sluice).args(args).arg("--data-dir").arg(dir).output();
    match out {
        Ok(o) => (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Err(_) => (-1, String::new()),
    }
}

fn sh(args: &[&str]) -> Result<String, String> {
    sluice_lab::sh(args).map_err(|e| e.to_string())
}

struct Member {
    lab: Lab,
    node: Option<Node>,
    dir: PathBuf,
}

/// Puts the root namespace's forwarding back as it was.
struct Forwarding(String);

impl Drop for Forwarding {
    fn drop(&mut self) {
        let _ = sh(&["sysctl", "-qw", &format!("net.ipv4.ip_forward={}", self.0)]);
    }
}

fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

pub fn run(quick: bool, sluice: &Path, parent: &Path) -> Result<Report, String> {
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let work = tempfile::Builder::new().prefix("upgrade-").tempdir_in(parent).map_err(|e| e.to_string())?;
    let mut notes = Vec::new();
    let before = sh(&["sysctl", "-n", "net.ipv4.ip_forward"])?.trim().to_owned();
    let _forwarding = Forwarding(before);
    sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;

    let policy = work.path().join("policy.json");
    std::fs::write(&policy, r#"{"default_action":"deny","source_groups":[]}"#).map_err(|e| e.to_string())?;
    let mut members = Vec::new();
    for i in 0..3u8 {
        let lab = Lab::named(&format!("su{i}-"), 210 + i).map_err(|e| e.to_string())?;
        // The members reach each other through the root namespace.
        sh(&["ip", "-n", &lab.node, "route", "add", "192.168.0.0/16", "via", &lab.mgmt_host_addr])?;
        let dir = work.path().join(format!("node{i}"));
        members.push(Member { lab, node: None, dir });
    }
    let seed = members[0].lab.mgmt_node_addr.clone();
    for i in 0..3 {
        if i > 0 {
            let token = std::fs::read(members[0].dir.join("bootstrap-token")).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&members[i].dir).map_err(|e| e.to_string())?;
            std::fs::write(members[i].dir.join("bootstrap-token"), token).map_err(|e| e.to_string())?;
        }
        let m = &members[i];
        let me = m.lab.mgmt_node_addr.clone();
        let mut launch = Launch::software(&m.lab);
        launch.extra = vec!["--http-bind".into(), format!("{me}:8443"), "--cluster-bind".into(), format!("{me}:9600")];
        if i > 0 {
            launch.extra.extend(["--join".into(), format!("{seed}:9601")]);
        }
        let node = Node::start_with(&m.lab, sluice, &policy, &m.dir, &launch).map_err(|e| e.to_string())?;
        members[i].node = Some(node);
        let (ns, dir) = (members[i].lab.node.clone(), members[i].dir.clone());
        wait(&format!("node {i} ready"), Duration::from_secs(60), || cli(sluice, &ns, &dir, &["status"]).0 == 0)?;
    }
    let (ns0, dir0) = (members[0].lab.node.clone(), members[0].dir.clone());
    if cli(sluice, &ns0, &dir0, &["settings", "--policy-history-limit", "10000"]).0 != 0 {
        return Err("cannot raise the policy history limit".into());
    }
    let v2 = work.path().join(format!("sluice-{TARGET_VERSION}"));
    write_variant(sluice, &v2, TARGET_VERSION, Fault::None)?;

    let stop = Arc::new(AtomicBool::new(false));
    let targets: Vec<(String, PathBuf)> = members.iter().map(|m| (m.lab.node.clone(), m.dir.clone())).collect();
    // The writer: one policy version every 200 ms through the nodes in turn.
    let writer = {
        let (stop, targets, sluice, policy) = (stop.clone(), targets.clone(), sluice.to_path_buf(), policy.clone());
        std::thread::spawn(move || {
            let (mut acked, mut failed, mut i) = (Vec::new(), 0usize, 0usize);
            while !stop.load(Ordering::SeqCst) {
                let (ns, dir) = &targets[i % targets.len()];
                i += 1;
                let comment = format!("bench {i}");
                let args =
                    ["policy", "put", policy.to_str().unwrap_or_default(), "--comment", &comment, "--timeout", "10s"];
                let (code, out) = cli(&sluice, ns, dir, &args);
                let version = out
                    .strip_prefix("stored as version ")
                    .and_then(|rest| rest.split(';').next())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                match (code, version) {
                    (0, Some(v)) => acked.push(v),
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (acked, failed)
        })
    };
    // The pollers: the longest gap between two answers of each node's API (exit 0 ready, 5
    // answered but not ready; anything else is no answer).
    let gaps = Arc::new(Mutex::new(vec![Duration::ZERO; targets.len()]));
    let pollers: Vec<_> = targets
        .iter()
        .enumerate()
        .map(|(i, (ns, dir))| {
            let (stop, gaps, sluice, ns, dir) =
                (stop.clone(), gaps.clone(), sluice.to_path_buf(), ns.clone(), dir.clone());
            std::thread::spawn(move || {
                let mut last = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let (code, _) = cli(&sluice, &ns, &dir, &["status", "--timeout", "2s"]);
                    if code == 0 || code == 5 {
                        let gap = last.elapsed();
                        let mut gaps = gaps.lock().unwrap_or_else(|p| p.into_inner());
                        gaps[i] = gaps[i].max(gap);
                        last = Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    gaps.lock().unwrap_or_else(|p| p.into_inner()).fill(Duration::ZERO);

    let observe = if quick { "1s" } else { "5s" };
    let started = Instant::now();
    let (code, out) = cli(
        sluice,
        &ns0,
        &dir0,
        &["upgrade", "apply", "--binary", v2.to_str().unwrap_or_default(), "--observe", observe, "--wait", "10m"],
    );
    let rolling = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (acked, failed) = writer.join().map_err(|_| "the writer panicked")?;
    for poller in pollers {
        let _ = poller.join();
    }
    if code != 0 {
        return Err(format!("the upgrade did not complete (exit {code}):\n{out}"));
    }
    let (_, versions) = cli(sluice, &ns0, &dir0, &["policy", "versions", "--json"]);
    let kept: std::collections::BTreeSet<u64> = serde_json::from_str::<serde_json::Value>(&versions)
        .map_err(|e| format!("policy versions: {e}"))?["versions"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["version"].as_u64()).collect())
        .unwrap_or_default();
    let lost = acked.iter().filter(|v| !kept.contains(v)).count();
    let gap_max = gaps.lock().unwrap_or_else(|p| p.into_inner()).iter().max().copied().unwrap_or_default();
    notes.push(format!(
        "3 nodes, software dataplane, observation window {observe}; {} writes acknowledged during the upgrade, {failed} \
         failed and were retried; API polled every 100 ms through the admin socket",
        acked.len()
    ));
    for m in &mut members {
        if let Some(mut node) = m.node.take() {
            let _ = node.stop();
        }
    }
    Ok(Report {
        figures: vec![
            ("rolling_upgrade_3_nodes_s", rolling.as_secs_f64(), "s"),
            ("node_api_unavailable_ms_max", gap_max.as_secs_f64() * 1000.0, "ms"),
            ("failed_writes_during_upgrade", lost as f64, "writes"),
        ],
        notes,
        lost,
    })
}
