//! `cargo xtask bench veth`: the suite's binary (`sluice-bench-veth` in tests/lab) drives a
//! `sluice` that can run both dataplanes, so the DPDK build of `sluice` is built first (same
//! `bench` profile) and handed over with `--sluice`.

use std::path::PathBuf;

use crate::lab;
use crate::run::{self, Result};

/// The `cargo build` of `sluice` with DPDK that the veth suite runs.
pub fn build_command() -> std::process::Command {
    let mut cmd = run::cargo();
    cmd.args(["build", "--profile", "bench", "-p", "sluice", "--bin", "sluice", "--features", "dpdk"]);
    cmd
}

/// Where that build puts the binary (cargo's `bench` profile builds into `release/`).
pub fn sluice_binary() -> PathBuf {
    lab::target_dir().join("release").join("sluice")
}

/// Build `sluice` with DPDK and return the suite's arguments with `--sluice <BIN>` first.
pub fn prepare(extra: &[String]) -> Result<Vec<String>> {
    run::run(&mut build_command())?;
    let mut args = vec!["--sluice".to_string(), sluice_binary().to_string_lossy().into_owned()];
    args.extend_from_slice(extra);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_sluice_with_dpdk_in_the_bench_profile() {
        let line = run::show(&build_command());
        assert!(line.ends_with("cargo build --profile bench -p sluice --bin sluice --features dpdk"), "{line}");
        assert!(sluice_binary().ends_with("release/sluice"));
    }
}
