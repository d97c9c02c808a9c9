//! Each broken setting or host condition stops `sluice run` with its message and exit code.

mod common;

use common::{good_flags, other_interface, privileged, run, sluice, with};

const POLICY: &str = r#"{ "default_action": "deny", "source_groups": [
  { "id": "apps", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
    "rules": [ { "id": "web", "action": "allow", "match": { "proto": "tcp", "dst_ports": [443] } } ] } ] }"#;

/// Runs `sluice` with `args`; returns (exit code, stderr).
fn start(args: &[String]) -> (i32, String) {
    let (code, _, stderr) = run(sluice().args(args));
    (code, stderr)
}

fn assert_fails(args: &[String], code: i32, texts: &[&str]) {
    let (got, stderr) = start(args);
    assert_eq!(got, code, "{stderr}");
    for t in texts {
        assert!(stderr.contains(t), "missing {t:?} in:\n{stderr}");
    }
}

#[test]
fn unknown_config_key_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "internal_port = \"lo\"\nworkrs = 4\n").unwrap();
    let args = vec!["run".into(), "--config".into(), file.display().to_string()];
    assert_fails(&args, 10, &["unknown field `workrs`", &file.display().to_string(), "line 2", "`workers`"]);
}

#[test]
fn wrong_type_in_config_says_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "snat = \"yes\"\n").unwrap();
    let args = vec!["run".into(), "--config".into(), file.display().to_string()];
    assert_fails(&args, 10, &["expected a boolean", &file.display().to_string()]);
    std::fs::write(&file, "internal_address = \"10.10.0.1\"\n").unwrap();
    assert_fails(&args, 10, &["not an IPv4 address with a prefix length, like 10.10.0.1/24"]);
}

#[test]
fn unreadable_config_file() {
    let args = vec!["run".into(), "--config".into(), "/nonexistent/sluice.toml".into()];
    assert_fails(&args, 10, &["cannot read configuration file /nonexistent/sluice.toml", "--config"]);
}

#[test]
fn missing_setting_names_flag_env_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = good_flags(dir.path());
    let i = args.iter().position(|a| a == "--gateway").unwrap();
    args.drain(i..i + 2);
    assert_fails(&args, 11, &["no gateway given", "--gateway", "SLUICE_GATEWAY", "`gateway`"]);
}

#[test]
fn invalid_settings() {
    let dir = tempfile::tempdir().unwrap();
    let args = good_flags(dir.path());
    let mut zero = args.clone();
    zero.extend(["--workers".into(), "0".into()]);
    assert_fails(&zero, 11, &["workers 0 must be 1 to 256"]);
    let mut level = args.clone();
    level.extend(["--log-level".into(), "verbose".into()]);
    assert_fails(&level, 11, &["log level `verbose` is not a level"]);
    let level = with(&level, "--log-level", "sluice=loud");
    assert_fails(&level, 11, &["log level `sluice=loud` is not understood"]);
    assert_fails(&with(&args, "--gateway", "nonsense"), 2, &["invalid value 'nonsense'"]);
}

#[test]
fn invalid_value_from_environment_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(sluice().args(good_flags(dir.path())).env("SLUICE_WORKERS", "four"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid value 'four' for '--workers <N>'"), "{stderr}");
    assert!(stderr.contains("the value comes from the SLUICE_WORKERS environment variable"), "{stderr}");
    let (code, _, stderr) = run(sluice().args(good_flags(dir.path())).env("SLUICE_SNAT", "yes"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("SLUICE_SNAT"), "{stderr}");
}

#[test]
fn overlapping_networks() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(&good_flags(dir.path()), "--internal-address", "203.0.113.9/16");
    assert_fails(&args, 12, &["internal network 203.0.0.0/16", "overlaps external network 203.0.113.0/24"]);
}

#[test]
fn gateway_off_the_external_network() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(&good_flags(dir.path()), "--gateway", "198.51.100.1");
    assert_fails(&args, 13, &["gateway 198.51.100.1 is not on it", "external network is 203.0.113.0/24"]);
    let args = with(&good_flags(dir.path()), "--gateway", "203.0.113.2");
    assert_fails(&args, 13, &["node's own external address"]);
}

#[test]
fn same_interface_for_both_ports() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(&good_flags(dir.path()), "--external-port", "lo");
    assert_fails(&args, 14, &["`lo` is given as both the internal and the external port"]);
}

#[test]
fn policy_file_errors_show_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{ "default_action": "maybe", "source_groups": [ { "id": "", "priority": 1 } ] }"#)
        .unwrap();
    let mut args = good_flags(dir.path());
    args.extend(["--policy".into(), policy.display().to_string()]);
    let (code, stderr) = start(&args);
    assert_eq!(code, 15, "{stderr}");
    assert!(stderr.contains("default_action: "), "{stderr}");
    assert!(stderr.contains("source_groups[0].id: "), "{stderr}");
    assert!(stderr.contains("source_groups[0].sources: "), "{stderr}");

    let args = with(&args, "--policy", "/nonexistent/policy.json");
    assert_fails(&args, 15, &["cannot read policy file /nonexistent/policy.json"]);
}

#[test]
fn missing_interface() {
    let dir = tempfile::tempdir().unwrap();
    let args = with(&good_flags(dir.path()), "--external-port", "nosuch0");
    if !privileged() {
        return assert_fails(&args, 17, &["not permitted"]);
    }
    assert_fails(&args, 16, &["there is no network interface `nosuch0`", "--external-port"]);
}

#[cfg(not(feature = "dpdk"))]
#[test]
fn dpdk_not_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = good_flags(dir.path());
    args.extend(["--dataplane".into(), "dpdk".into()]);
    assert_fails(&args, 18, &["built without DPDK", "--features dpdk"]);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_without_hugepages() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    if sluice::checks::parse_hugepages_total(&meminfo) != Some(0) || !privileged() {
        return eprintln!("skipped: the host has hugepages, or ports cannot be opened");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = good_flags(dir.path());
    args.extend(["--dataplane".into(), "dpdk".into(), "--dpdk-eal-args".into(), "-l 0".into()]);
    assert_fails(&args, 19, &["DPDK needs hugepages", "--no-huge"]);
    // With --no-huge the check passes, and DPDK starts, but one lcore is not enough.
    let args = with(&args, "--dpdk-eal-args", "-l 0 --no-huge -m 128 --no-pci --no-shconf --no-telemetry");
    assert_fails(&args, 23, &["needs a worker lcore besides the main one", "-l 0,1"]);
}

/// EAL arguments for a no-hugepage DPDK run with a main and a worker lcore on any CPU.
#[cfg(feature = "dpdk")]
const EAL_TWO_LCORES: &str = "--lcores=0@(0-1),1@(0-1) --no-huge -m 128 --no-pci --no-shconf --no-telemetry";

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_eal_arguments_refused() {
    if !privileged() {
        return assert_fails(&good_flags(tempfile::tempdir().unwrap().path()), 17, &["not permitted"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = good_flags(dir.path());
    args.extend(["--dataplane".into(), "dpdk".into(), "--dpdk-eal-args".into(), "--no-huge --no-such-eal-flag".into()]);
    assert_fails(&args, 23, &["DPDK could not start", "--no-such-eal-flag", "rte_eal_init"]);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_port_that_does_not_exist() {
    if !privileged() {
        return assert_fails(&good_flags(tempfile::tempdir().unwrap().path()), 17, &["not permitted"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = with(&good_flags(dir.path()), "--internal-port", "net_af_packet0,iface=nosuch0");
    args = with(&args, "--external-port", "net_af_packet1,iface=nosuch1");
    args.extend(["--dataplane".into(), "dpdk".into(), "--dpdk-eal-args".into(), EAL_TWO_LCORES.into()]);
    assert_fails(
        &args,
        22,
        &["cannot open the internal port `net_af_packet0,iface=nosuch0` with DPDK", "net_af_packet0,iface=eth1"],
    );
}

#[test]
fn port_busy_when_another_holder_has_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let Some(other) = other_interface() else { return eprintln!("skipped: the host has only lo") };
    if !privileged() {
        return eprintln!("skipped: not permitted to open ports");
    }
    let mut args = good_flags(dir.path());
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, POLICY).unwrap();
    args.extend(["--policy".into(), policy.display().to_string()]);

    let held = sluice::checks::lock_port("external", &other, dir.path()).unwrap();
    let lock = dir.path().join("locks").join(format!("{other}.lock"));
    let (code, stderr) = start(&args);
    assert_eq!(code, 20, "{stderr}");
    assert!(stderr.contains(&format!("external port `{other}` is in use by another sluice")), "{stderr}");
    assert!(stderr.contains(&format!("(process {})", std::process::id())), "{stderr}");
    assert!(stderr.contains(&lock.display().to_string()), "{stderr}");

    // Released: every check passes, and opening the ports is what fails: `lo` (the internal
    // port, opened first, so the host's real interface is never touched) is not Ethernet.
    drop(held);
    let (code, stderr) = start(&args);
    assert_eq!(code, 22, "{stderr}");
    assert!(stderr.contains("policy loaded") && stderr.contains("startup checks passed"), "{stderr}");
    assert!(stderr.contains("cannot open the internal port `lo`"), "{stderr}");
    assert!(stderr.contains("is not an Ethernet device"), "{stderr}");
}

#[test]
fn more_than_one_software_worker_is_refused_plainly() {
    if !privileged() {
        return eprintln!("skipped: not permitted to open ports");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = good_flags(dir.path());
    args.extend(["--workers".into(), "2".into()]);
    assert_fails(&args, 11, &["--workers 2", "single worker", "use --workers 1"]);
}

#[test]
fn unusable_data_dir() {
    if !privileged() {
        return eprintln!("skipped: not permitted to open ports");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let args = with(&good_flags(dir.path()), "--data-dir", file.to_str().unwrap());
    assert_fails(&args, 21, &["cannot create", "--data-dir"]);
}

#[test]
fn run_help_lists_every_exit_code() {
    let (code, stdout, _) = run(sluice().args(["run", "--help"]));
    assert_eq!(code, 0);
    for c in ["10", "11", "12", "13", "14", "15", "16", "17", "18", "19", "20", "21", "22", "23", "30"] {
        assert!(stdout.lines().any(|l| l.trim_start().starts_with(&format!("{c} "))), "exit code {c}:\n{stdout}");
    }
    for flag in ["--internal-port", "--dpdk-eal-args", "--snat", "--flow-capacity", "SLUICE_DATA_DIR", "Default: 1."] {
        assert!(stdout.contains(flag), "{flag}");
    }
}
