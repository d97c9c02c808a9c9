//! The real `sluice run` binary in the node namespace of a client / node / upstream lab
//! (the io crate's netns harness, shared here), driven by signals as an operator or the lab
//! tooling would, plus the servers and clients the end-to-end tests talk through it with.
//!
//! Shared by several test files; each uses a different part of it (hence the allows: what
//! one file leaves unused is not dead).
#![allow(dead_code, unused_imports)]

#[path = "../../../io/tests/netns_harness/mod.rs"]
pub mod netns_harness;

mod burst;
pub mod cli;
mod clients;
pub mod cluster_nodes;
pub mod dns;
pub mod mgmt;
mod servers;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use burst::{reset, udp_new_flows, BurstOutcome, LineConn, NewFlowBurst};
pub use clients::{http_get, links, ping, ttl_one_probe, udp_ask};
pub use netns_harness::{in_netns, require_root, spawn_in_netns, Lab, POLICY};
pub use servers::{tcp_server, udp_echo, udp_sink, Server};

/// The upstream server address every helper talks to (on the upstream namespace's `lo`).
pub const SERVER: &str = "198.51.100.10";

/// The EAL arguments of a DPDK node in the lab: no hugepages, no PCI scan, no shared
/// runtime files, no telemetry socket (`--in-memory` cannot be combined with `--no-huge`).
const DPDK_EAL_ARGS: &str = "--no-huge -m 256 --no-pci --no-shconf --no-telemetry";

/// The main lcore (control) and one worker lcore (the dataplane), both free to run on any
/// CPU this process may use, so tests on a small machine are not tied to one CPU.
fn dpdk_lcores() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|s| s.trim().to_string())
        .expect("Cpus_allowed_list in /proc/self/status");
    format!("--lcores=0@({cpus}),1@({cpus})")
}

/// How the node's data ports do packet I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// AF_PACKET on the lab's veths.
    Software,
    /// DPDK's `net_af_packet` poll-mode driver on the same veths, without hugepages.
    Dpdk,
    /// Software mode on AF_XDP sockets (`--software-io af-xdp`) on the same veths.
    Xdp,
}

impl Mode {
    /// The port and dataplane flags of `sluice run` for this mode in `lab`.
    pub fn flags(self, lab: &Lab) -> Vec<String> {
        match self {
            Mode::Software => {
                vec!["--internal-port".into(), lab.node_in.clone(), "--external-port".into(), lab.node_out.clone()]
            }
            Mode::Xdp => {
                let mut flags = Mode::Software.flags(lab);
                flags.extend(["--software-io".into(), "af-xdp".into()]);
                flags
            }
            Mode::Dpdk => vec![
                "--dataplane".into(),
                "dpdk".into(),
                "--internal-port".into(),
                format!("net_af_packet0,iface={}", lab.node_in),
                "--external-port".into(),
                format!("net_af_packet1,iface={}", lab.node_out),
                "--dpdk-eal-args".into(),
                // The prefix keeps concurrent test processes (and labs) apart.
                format!("{} {DPDK_EAL_ARGS} --file-prefix {}", dpdk_lcores(), lab.prefix),
            ],
        }
    }
}

/// What to start a node with. `Launch::default()` is what most tests want: software mode,
/// no policy file, room for 4096 flows.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    pub mode: Mode,
    pub policy: Option<&'a Path>,
    pub flow_capacity: usize,
    /// Numbers the log file, so several runs in one data directory keep their logs apart.
    pub run: usize,
    /// More `sluice run` flags (the DNS proxy's, for instance).
    pub extra: &'a [&'a str],
    /// The binary to start instead of the one this test was built with (a release slot's,
    /// as a service manager starting `releases/current/sluice` would).
    pub binary: Option<&'a Path>,
    /// Environment variables to set (a service manager's `NOTIFY_SOCKET`, for instance).
    pub env: &'a [(&'a str, &'a str)],
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch { mode: Mode::Software, policy: None, flow_capacity: 4096, run: 1, extra: &[], binary: None, env: &[] }
    }
}

/// The `sluice` binary running in the node namespace, with its log in a file.
pub struct Sluice {
    child: Child,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Sluice {
    /// Starts `sluice run` for `lab` and waits until it forwards (or panics with its log).
    pub fn start(lab: &Lab, data_dir: &Path, launch: &Launch<'_>) -> Sluice {
        let log = data_dir.join(format!("sluice-{}.log", launch.run));
        let _ = std::fs::remove_file(data_dir.join("stats.json"));
        let mut cmd = Command::new("ip");
        let binary = launch.binary.unwrap_or(Path::new(env!("CARGO_BIN_EXE_sluice")));
        cmd.args(["netns", "exec", &lab.node])
            .arg(binary)
            .arg("run")
            .args(launch.mode.flags(lab))
            .args(["--internal-address", "10.10.0.1/24", "--external-address", "203.0.113.2/24"])
            .args(["--gateway", "203.0.113.1", "--log-format", "json"])
            .args(["--flow-capacity", &launch.flow_capacity.to_string()])
            .args(launch.policy.map(|p| ["--policy".as_ref(), p.as_os_str()]).into_iter().flatten())
            .args(launch.extra)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        for (var, _) in std::env::vars() {
            if var.starts_with("SLUICE_") {
                cmd.env_remove(var);
            }
        }
        cmd.envs(launch.env.iter().copied());
        let child = cmd.spawn().expect("start sluice");
        let mut s = Sluice { child, data_dir: data_dir.to_path_buf(), log };
        // A joining node enrols and catches up before its dataplane starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(s.log_text().contains("node running") && s.data_dir.join("stats.json").exists()) {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("sluice ({:?} mode) exited at start ({status}):\n{}", launch.mode, s.log_text());
            }
            assert!(Instant::now() < deadline, "sluice did not start within 30 s:\n{}", s.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill with a valid signal number on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }

    pub fn stats(&self) -> Value {
        let text = std::fs::read_to_string(self.data_dir.join("stats.json")).expect("stats.json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats.json is not JSON ({e}):\n{text}"))
    }

    /// A counter from the current stats.json, as it is (see [`Sluice::counter`] to wait for
    /// a fresh one).
    pub fn counter_now(&self, name: &str) -> u64 {
        self.stats()["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// A stats file whose values were read after this call: its timestamp (taken just after
    /// the values) is comfortably later than the call. Polled, so a control loop slowed by a
    /// loaded machine delays the answer instead of giving an old file.
    pub fn fresh_stats(&self) -> Value {
        let unix_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let after = unix_ms() + 250;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // A missing or half-written file is retried like an old one.
            let doc = std::fs::read_to_string(self.data_dir.join("stats.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok());
            if let Some(doc) = doc.filter(|d| d["time_unix_ms"].as_u64().is_some_and(|t| t >= after)) {
                return doc;
            }
            assert!(Instant::now() < deadline, "stats.json was not rewritten within 20 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A counter from a stats file written after this call (see [`Sluice::fresh_stats`]).
    pub fn counter(&self, name: &str) -> u64 {
        self.fresh_stats()["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// Waits until the stats file shows policy generation `generation`.
    pub fn wait_generation(&self, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.stats()["policy_generation"].as_u64() != Some(generation) {
            assert!(Instant::now() < deadline, "stats.json never showed generation {generation}: {:#}", self.stats());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `text`.
    pub fn wait_log(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log_text();
            if log.contains(text) {
                return log;
            }
            assert!(Instant::now() < deadline, "no `{text}` in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits up to `within` for the exit; returns the status and the time taken.
    pub fn stop(&mut self, sig: libc::c_int, within: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        self.signal(sig);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, t0.elapsed());
            }
            assert!(t0.elapsed() < within, "sluice still running {within:?} after the signal:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
