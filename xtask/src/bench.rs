//! `cargo xtask bench <suite>`: build a benchmark binary with the `bench` profile and run one
//! suite. The binary prints `BENCH <name> <value> <unit>` lines and checks its own verdicts;
//! xtask forwards its output and exit code and keeps a JSON copy under `target/bench/`.

use crate::run::{self, Error, Result};

/// One benchmark suite: which binary runs it and with what.
#[derive(Debug)]
pub struct Suite {
    /// Name on the xtask command line; also the binary's first argument and the JSON file stem.
    pub name: &'static str,
    pub about: &'static str,
    pub package: &'static str,
    pub bin: &'static str,
    /// Cargo features the suite needs (e.g. a DPDK build).
    pub features: &'static [&'static str],
    /// Packages whose binaries the suite runs, built first with the same profile.
    pub binaries: &'static [&'static str],
}

/// Every suite `cargo xtask bench` knows. To add one, add an entry.
pub const SUITES: &[Suite] = &[
    Suite {
        name: "engine",
        about: "policy compiler and packet engine in memory, no I/O",
        package: "sluice-bench",
        bin: "sluice-bench",
        features: &[],
        binaries: &[],
    },
    Suite {
        name: "dpdk",
        about: "engine over DPDK net_ring ports vs dpdk-testpmd io forwarding, one core",
        package: "sluice-bench",
        bin: "sluice-bench",
        features: &["dpdk"],
        binaries: &[],
    },
    Suite {
        name: "afpacket",
        about: "packet socket bursts: recvmmsg/sendmmsg vs PACKET_MMAP rings on a veth (root)",
        package: "sluice-bench",
        bin: "sluice-bench",
        features: &[],
        binaries: &[],
    },
    Suite {
        name: "dns",
        about: "DNS proxy vs dnsmasq as a forwarder in the lab, dnsperf (root)",
        package: "sluice-bench",
        bin: "sluice-bench",
        features: &[],
        binaries: &["sluice"],
    },
    Suite {
        name: "store",
        about: "store + HTTPS API in-process: policy PUT latency (fsync), GET rate under wrk, store writes/s",
        package: "sluice-bench",
        bin: "sluice-bench",
        features: &[],
        binaries: &[],
    },
    Suite {
        name: "cluster",
        about: "three members over the real mTLS transport on loopback: PUT p50, failover, join",
        package: "sluice-bench",
        bin: "sluice-bench",
        features: &[],
        binaries: &[],
    },
    Suite {
        name: "snapshot",
        about: "snapshot create (with sealed secrets), verify and restore of 1000 policy versions + 10000 tokens",
        package: "sluice-bench",
        bin: "sluice-bench",
        features: &[],
        binaries: &[],
    },
    Suite {
        name: "upgrade",
        about: "rolling upgrade of three real nodes in the lab with a client writing policy (root)",
        package: "sluice-bench",
        bin: "sluice-bench",
        features: &[],
        binaries: &["sluice"],
    },
    Suite {
        name: "veth",
        about: "Sluice software and DPDK modes vs kernel forwarding, trafgen load on veths (root)",
        package: "sluice-lab",
        bin: "sluice-bench-veth",
        features: &[],
        binaries: &[],
    },
];

pub fn find(name: &str) -> Result<&'static Suite> {
    SUITES
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| Error::usage(format!("unknown bench suite `{name}`\n{}", list())))
}

/// The known suites, one per line, for help and error messages.
pub fn list() -> String {
    let mut text = String::from("known suites:");
    for suite in SUITES {
        text.push_str(&format!("\n  {:<8} {}", suite.name, suite.about));
    }
    text
}

/// Where a suite's JSON results go, relative to the workspace root.
pub fn json_path(suite: &Suite) -> String {
    format!("target/bench/{}.json", suite.name)
}

/// The full `cargo run` command line for a suite, without running it.
pub fn command(suite: &Suite, quick: bool, extra: &[String]) -> std::process::Command {
    let mut cmd = run::cargo();
    cmd.args(["run", "--profile", "bench", "-p", suite.package]);
    cmd.args(["--bin", suite.bin]);
    if !suite.features.is_empty() {
        cmd.args(["--features", &suite.features.join(",")]);
    }
    cmd.args(["--", suite.name]);
    if quick {
        cmd.arg("--quick");
    }
    cmd.args(["--json", &json_path(suite)]);
    cmd.args(extra);
    cmd
}

/// Run a suite; a failing benchmark fails with the binary's exit code.
pub fn run(name: &str, quick: bool, extra: &[String]) -> Result<()> {
    let suite = find(name)?;
    // The veth suite drives a DPDK build of `sluice`, built here first.
    let extra = if suite.name == "veth" { crate::veth::prepare(extra)? } else { extra.to_vec() };
    let dir = run::root().join("target").join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| Error::failed(format!("cannot create {}: {e}", dir.display())))?;
    for package in suite.binaries {
        run::run(run::cargo().args(["build", "--profile", "bench", "-p", package]))?;
    }
    run::run(&mut command(suite, quick, &extra)).map_err(|mut e| {
        e.message = format!("bench suite `{}` failed: {}", suite.name, e.message);
        e
    })?;
    println!("results: {}", json_path(suite));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_command_line() {
        let suite = find("engine").unwrap();
        let cmd = command(suite, true, &["--filter".into(), "nat".into()]);
        let line = run::show(&cmd);
        assert!(
            line.ends_with(
                "cargo run --profile bench -p sluice-bench --bin sluice-bench -- \
                 engine --quick --json target/bench/engine.json --filter nat"
            ),
            "{line}"
        );
    }

    #[test]
    fn dpdk_command_line_enables_the_feature() {
        let line = run::show(&command(find("dpdk").unwrap(), false, &[]));
        assert!(
            line.ends_with(
                "cargo run --profile bench -p sluice-bench --bin sluice-bench --features dpdk -- \
                 dpdk --json target/bench/dpdk.json"
            ),
            "{line}"
        );
    }

    #[test]
    fn veth_suite_runs_the_lab_binary() {
        let line = run::show(&command(find("veth").unwrap(), true, &["--sluice".into(), "S".into()]));
        assert!(
            line.ends_with(
                "cargo run --profile bench -p sluice-lab --bin sluice-bench-veth -- \
                 veth --quick --json target/bench/veth.json --sluice S"
            ),
            "{line}"
        );
    }

    #[test]
    fn store_command_line() {
        let line = run::show(&command(find("store").unwrap(), true, &[]));
        assert!(
            line.ends_with(
                "cargo run --profile bench -p sluice-bench --bin sluice-bench -- \
                 store --quick --json target/bench/store.json"
            ),
            "{line}"
        );
    }

    #[test]
    fn unknown_suite_lists_the_known_ones() {
        let err = find("nope").unwrap_err();
        assert_eq!(err.code, 2);
        assert!(err.message.contains("engine"), "{}", err.message);
    }

    #[test]
    fn suite_names_are_unique() {
        for (i, a) in SUITES.iter().enumerate() {
            assert!(SUITES[i + 1..].iter().all(|b| b.name != a.name), "{}", a.name);
        }
    }
}
