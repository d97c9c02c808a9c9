//! Running the real `sluice` binary with a clean `SLUICE_*` environment.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub const VARS: &[&str] = &[
    "SLUICE_CONFIG",
    "SLUICE_INTERNAL_PORT",
    "SLUICE_EXTERNAL_PORT",
    "SLUICE_DATAPLANE",
    "SLUICE_DPDK_EAL_ARGS",
    "SLUICE_INTERNAL_ADDRESS",
    "SLUICE_EXTERNAL_ADDRESS",
    "SLUICE_GATEWAY",
    "SLUICE_SNAT",
    "SLUICE_FLOW_CAPACITY",
    "SLUICE_WORKERS",
    "SLUICE_DATA_DIR",
    "SLUICE_POLICY",
    "SLUICE_LOG_FORMAT",
    "SLUICE_LOG_LEVEL",
];

/// `sluice` with none of the `SLUICE_*` variables of the test's own environment.
pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    for var in VARS {
        cmd.env_remove(var);
    }
    cmd
}

pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("sluice runs");
    (
        status.code().expect("exit code"),
        String::from_utf8_lossy(&stdout).into(),
        String::from_utf8_lossy(&stderr).into(),
    )
}

/// A valid set of `run` flags on real interfaces (`lo` and another), with the data dir in `dir`.
pub fn good_flags(dir: &Path) -> Vec<String> {
    let other = other_interface().unwrap_or_else(|| "lo".into());
    [
        "run",
        "--internal-port",
        "lo",
        "--external-port",
        &other,
        "--internal-address",
        "10.10.0.1/24",
        "--external-address",
        "203.0.113.2/24",
        "--gateway",
        "203.0.113.1",
        "--data-dir",
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An interface other than `lo`, if the host has one.
pub fn other_interface() -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().next()
}

/// Whether this process may open data ports, so `run` gets past the permission check.
pub fn privileged() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // SAFETY: geteuid has no preconditions.
    sluice::checks::check_permission(unsafe { libc::geteuid() }, &status).is_ok()
}

pub fn with(args: &[String], key: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    let i = out.iter().position(|a| a == key).expect("flag present");
    out[i + 1] = value.to_string();
    out
}
