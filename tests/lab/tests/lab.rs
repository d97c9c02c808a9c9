//! The lab itself, with the real `sluice` binary: the topology comes up, the services answer,
//! a node forwards and re-reads its policy on SIGHUP, and nothing is left behind.
//!
//! Needs root (namespaces), dnsmasq (Debian `dnsmasq-base`, installed by `cargo xtask
//! install`) and the `sluice` binary next to this test's directory (`cargo nextest run
//! --workspace` builds it; `SLUICE_BIN` overrides). Without them the tests fail and say so.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_lab::{in_netns, namespaces, probe, Lab, BLOCKED, DNS, HTTP_PORT, RESOLVER, WEB};

fn lab_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice-lab"))
}

fn sluice_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_BIN") {
        return path.into();
    }
    // target/<profile>/deps/<this test> -> target/<profile>/sluice
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(|d| d.parent()).unwrap().join("sluice");
    assert!(
        path.exists(),
        "no sluice binary at {}: build it (cargo build -p sluice) or set SLUICE_BIN",
        path.display()
    );
    path
}

fn root() {
    assert!(sluice_lab::is_root(), "the lab tests build network namespaces: run them as root (cargo xtask test does)");
}

const DEMO_POLICY: &str = include_str!("../../../examples/demo-policy.json");

fn http(lab: &Lab, addr: &'static str) -> Result<(String, String), String> {
    in_netns(&lab.client, move || probe::http_get(addr, HTTP_PORT, Duration::from_secs(2))).unwrap()
}

#[test]
fn node_forwards_reloads_and_the_lab_is_removed() {
    root();
    let prefix;
    {
        let mut lab = Lab::unique().expect("lab");
        prefix = lab.prefix.clone();
        lab.start_services(&lab_binary()).expect("services");
        // The services answer inside the upstream namespace.
        let answer = in_netns(&lab.upstream, || probe::dns_query(DNS, "blocked.test", Duration::from_secs(2))).unwrap();
        assert_eq!(answer.unwrap(), [BLOCKED]);
        let nx = in_netns(&lab.upstream, || probe::dns_query(DNS, "nope.example", Duration::from_secs(2))).unwrap();
        assert!(nx.is_err(), "{nx:?}");

        let policy = lab.dir.join("policy.json");
        std::fs::write(&policy, DEMO_POLICY).unwrap();
        let mut node = lab.start_node(&sluice_binary(), &policy, None).expect("node");
        // The web rule is a hostname rule: the client resolves through the node first.
        let resolved =
            in_netns(&lab.client, || probe::dns_query(RESOLVER, "allowed.test", Duration::from_secs(3))).unwrap();
        assert_eq!(resolved.unwrap(), [WEB], "{}", node.log_text());
        let (status, body) = http(&lab, WEB).expect("HTTP to the allowed server");
        assert!(status.contains("200"), "{status}");
        assert!(body.contains("203.0.113.2"), "the server sees the node's address: {body}");
        assert!(http(&lab, BLOCKED).is_err(), "HTTP to {BLOCKED} is dropped");
        let counters = node.fresh_counters().unwrap();
        let get = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert!(get("flows_opened").unwrap_or(0) >= 1, "{counters:?}");
        assert!(get("policy_denied").unwrap_or(0) >= 1, "{counters:?}");

        // Remove the web rule and reload: new HTTP connections are dropped.
        let without_web: String = DEMO_POLICY.lines().filter(|l| !l.contains("\"id\": \"web\"")).collect();
        assert_ne!(without_web.len(), DEMO_POLICY.len());
        std::fs::write(&policy, without_web).unwrap();
        node.reload().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while node.stats().unwrap()["counters"]["policy_generation"].as_u64() != Some(2) {
            assert!(Instant::now() < deadline, "the node never applied the new policy:\n{}", node.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(http(&lab, WEB).is_err(), "HTTP is dropped after the reload");

        let status = node.stop().unwrap();
        assert!(status.success(), "sluice exits 0 on SIGTERM: {status}\n{}", node.log_text());
    }
    assert!(namespaces(&prefix).is_empty(), "the lab left namespaces behind");
}

/// `sluice-lab up|demo --software-io af-xdp`: the lab's node on AF_XDP ports resolves and
/// forwards like the default one.
#[test]
fn the_lab_node_runs_on_af_xdp_ports() {
    root();
    let mut lab = Lab::unique().expect("lab");
    lab.start_services(&lab_binary()).expect("services");
    let policy = lab.dir.join("policy.json");
    std::fs::write(&policy, DEMO_POLICY).unwrap();
    let mut node = lab.start_node(&sluice_binary(), &policy, Some("af-xdp")).expect("node");
    assert_eq!(node.stats().unwrap()["port_io"], "af-xdp", "{}", node.log_text());
    let resolved =
        in_netns(&lab.client, || probe::dns_query(RESOLVER, "allowed.test", Duration::from_secs(3))).unwrap();
    assert_eq!(resolved.unwrap(), [WEB], "{}", node.log_text());
    let (status, _) = http(&lab, WEB).expect("HTTP to the allowed server");
    assert!(status.contains("200"), "{status}");
    assert!(http(&lab, BLOCKED).is_err(), "HTTP to {BLOCKED} is dropped");
    let status = node.stop().unwrap();
    assert!(status.success(), "sluice exits 0 on SIGTERM: {status}\n{}", node.log_text());
}

#[test]
fn a_node_that_fails_to_start_shows_its_output() {
    root();
    let lab = Lab::unique().expect("lab");
    let policy = lab.dir.join("broken.json");
    std::fs::write(&policy, r#"{ "default_action": "sometimes" }"#).unwrap();
    let err = lab.start_node(&sluice_binary(), &policy, None).err().expect("the node must not start");
    assert!(err.0.contains("did not start"), "{err}");
    assert!(err.0.contains("default_action"), "the error shows the node's output: {err}");
}

#[test]
fn down_removes_what_a_crashed_run_left() {
    root();
    let lab = Lab::unique().expect("lab");
    let prefix = lab.prefix.clone();
    std::mem::forget(lab);
    assert_eq!(namespaces(&prefix).len(), 3);
    let removed = sluice_lab::down(&prefix);
    assert!(removed.iter().any(|r| r.starts_with("namespace")), "{removed:?}");
    assert!(namespaces(&prefix).is_empty());
    let links = sluice_lab::sh(&["ip", "-o", "link", "show"]).unwrap();
    assert!(!links.contains(&format!("{prefix}mh")), "{links}");
}
