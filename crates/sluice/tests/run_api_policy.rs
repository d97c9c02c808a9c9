//! Policy through the management API, checked against real traffic: a PUT over HTTPS changes
//! which names the node's DNS proxy answers and which addresses and ports open, without a
//! restart; a rollback brings the old behaviour back; and under each version, `explain`
//! (asked through the API) agrees with what a table of real flows does.
//!
//! Needs root, `dig` (Debian: dnsutils) and `dnsmasq` (dnsmasq-base); the `sluice` CLI itself
//! is the HTTPS client.

mod node_harness;

use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

use node_harness::dns::{add_upstream_addresses, connect, dig, status, Acceptor, Dnsmasq, DNS_SERVER, WEB, WEB2};
use node_harness::{require_root, tcp_server, udp_ask, udp_echo, Lab, Launch, Mode, Sluice, SERVER};
use serde_json::Value;

/// Version 1: one name on TCP 80, and UDP echo by address.
const V1: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "hostnames": ["allowed.test"], "proto": "tcp", "dst_ports": [80] } },
        { "id": "echo", "action": "allow", "match": { "proto": "udp", "dst_ports": [7], "dst_cidrs": ["198.51.100.0/24"] } }
      ] }
  ]
}"#;

/// Version 2: other names for the same rule, TCP 22 to one address, no echo.
const V2: &str = r#"{
  "default_action": "deny",
  "source_groups": [
    { "id": "clients", "priority": 10, "sources": { "cidrs": ["10.10.0.0/24"] },
      "rules": [
        { "id": "web", "action": "allow", "match": { "hostnames": ["*.alias.test"], "proto": "tcp", "dst_ports": [80] } },
        { "id": "ssh", "action": "allow", "match": { "proto": "tcp", "dst_ports": [22], "dst_cidrs": ["198.51.100.10/32"] } }
      ] }
  ]
}"#;

/// One flow of the table: what the client does, and what `explain` is asked.
struct Case {
    dst: &'static str,
    proto: &'static str,
    port: u16,
    /// Looked up through the node first (and given to `explain`).
    hostname: Option<&'static str>,
}

/// The first case comes before any lookup in each round: an address nobody looked up stays
/// closed even on a port a hostname rule names (what later cases learn would open it).
const CASES: [Case; 6] = [
    Case { dst: WEB, proto: "tcp", port: 80, hostname: None },
    Case { dst: WEB, proto: "tcp", port: 80, hostname: Some("allowed.test") },
    Case { dst: WEB2, proto: "tcp", port: 80, hostname: Some("www.alias.test") },
    Case { dst: WEB, proto: "tcp", port: 22, hostname: None },
    Case { dst: WEB2, proto: "tcp", port: 22, hostname: None },
    Case { dst: SERVER, proto: "udp", port: 7, hostname: None },
];

/// `sluice ARGS --api … --token …` in the node's namespace; stdout, or a panic with stderr.
fn cli(lab: &Lab, dir: &Path, token: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.node, env!("CARGO_BIN_EXE_sluice")])
        .args(args)
        .args(["--api", "https://127.0.0.1:8443", "--token", token, "--timeout", "20s", "--data-dir"])
        .arg(dir)
        .env_remove("SLUICE_API")
        .env_remove("SLUICE_TOKEN")
        .output()
        .expect("run sluice");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sluice {args:?}:\n{stdout}\n{stderr}");
    stdout.trim().to_owned()
}

/// An admin token over the admin socket (no credential needed as root on the node).
fn admin_token(lab: &Lab, dir: &Path) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.node, env!("CARGO_BIN_EXE_sluice"), "token", "mint", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The DNS status the client gets for `name`, asked like a stub resolver (a few tries: the
/// very first query out waits for the dataplane to resolve the gateway).
fn resolve(lab: &Lab, name: &str) -> String {
    let mut last = String::new();
    for _ in 0..3 {
        last = dig(lab, &[name]);
        if matches!(status(&last), "NOERROR" | "NXDOMAIN") {
            break;
        }
    }
    status(&last).to_owned()
}

/// Whether the node let the flow out: a TCP connection that is answered (accepted or
/// refused by the server) passed; one that times out was dropped. UDP: the echo came back.
fn passes(lab: &Lab, case: &Case) -> bool {
    if case.proto == "udp" {
        return udp_ask(lab, case.port, b"table", 4).is_some();
    }
    match connect(lab, case.dst, case.port) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => true,
        Err(e) if e.kind() == ErrorKind::TimedOut => false,
        Err(e) => panic!("{}:{}: unexpected {e}", case.dst, case.port),
    }
}

/// Asks `explain` for every case through the API, then sends the flow for real, and checks
/// that they agree. Returns the verdicts, for the caller to check against the version's intent.
fn explain_agrees_with_traffic(lab: &Lab, dir: &Path, token: &str, version: u64, cases: &[Case]) -> Vec<bool> {
    let mut verdicts = Vec::new();
    for case in cases {
        let port = case.port.to_string();
        let mut args = vec!["policy", "explain", "--json", "--src", "10.10.0.2", "--dst", case.dst];
        args.extend(["--proto", case.proto, "--port", &port]);
        if let Some(name) = case.hostname {
            args.extend(["--hostname", name]);
        }
        let explained: Value = serde_json::from_str(&cli(lab, dir, token, &args)).unwrap();
        assert_eq!(explained["version"].as_u64(), Some(version), "{explained:#}");
        let explained_allow = explained["action"] == "allow";
        if let Some(name) = case.hostname {
            let forwarded = explained["dns"]["allowed"] == true;
            let dns = resolve(lab, name);
            assert_eq!(dns == "NOERROR", forwarded, "v{version} {name}: dig says {dns}, explain says {explained:#}");
        }
        let observed = passes(lab, case);
        assert_eq!(
            observed,
            explained_allow,
            "v{version} {} {}:{} (hostname {:?}): traffic {} but explain says {explained:#}",
            case.proto,
            case.dst,
            case.port,
            case.hostname,
            if observed { "passed" } else { "was dropped" },
        );
        verdicts.push(observed);
    }
    verdicts
}

#[test]
fn policy_put_and_rollback_through_the_api_change_dns_and_traffic_as_explain_says() {
    require_root();
    let lab = Lab::new();
    add_upstream_addresses(&lab);
    let _dns = Dnsmasq::start(&lab);
    let (_web, _ssh, _echo) =
        (tcp_server(&lab.upstream, 80), tcp_server(&lab.upstream, 22), udp_echo(&lab.upstream, 7));
    let _web2 = Acceptor::start(&lab, WEB2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1_file = d.join("v1.json");
    std::fs::write(&v1_file, V1).unwrap();
    let v2_file = d.join("v2.json");
    std::fs::write(&v2_file, V2).unwrap();
    let extra = ["--http-bind", "127.0.0.1:8443", "--dns-upstream", DNS_SERVER];
    let node = Sluice::start(
        &lab,
        d,
        &Launch { mode: Mode::Software, policy: Some(&v1_file), extra: &extra, ..Launch::default() },
    );
    let token = admin_token(&lab, d);

    // Version 1 (the bootstrap file): allowed.test resolves and opens 80; echo passes.
    let v1 = explain_agrees_with_traffic(&lab, d, &token, 1, &CASES);
    assert_eq!(v1, [false, true, false, false, false, true], "version 1 as written");

    // Version 2 through the API: the rule's names change, so allowed.test is NXDOMAIN and
    // what was learned for it is gone; *.alias.test resolves and opens; 22 opens by address.
    let put = cli(&lab, d, &token, &["policy", "put", v2_file.to_str().unwrap(), "--comment", "names and ssh"]);
    assert_eq!(put, "stored as version 2; the dataplane runs it");
    let v2 = explain_agrees_with_traffic(&lab, d, &token, 2, &CASES);
    assert_eq!(v2, [false, false, true, true, false, false], "version 2 as written");

    // Rollback through the API: version 1's behaviour is back, names and all.
    let rolled = cli(&lab, d, &token, &["policy", "rollback", "--to", "1"]);
    assert_eq!(rolled, "version 1 is active again (was 2)");
    // What version 1 learned comes back with it: the first round's answer for allowed.test is
    // within its 300 s TTL and belongs to the restored rule again (learned entries are keyed
    // by the rule's identity, names and ports), so the address is open before any new lookup,
    // as it would be for a client still holding that answer. Version 2 learned nothing for it.
    assert!(passes(&lab, &CASES[0]), "version 1's learned address is open again after the rollback");
    let back = explain_agrees_with_traffic(&lab, d, &token, 1, &CASES[1..]);
    assert_eq!(back, v1[1..], "the rollback restores version 1's behaviour");
    assert_eq!(node.counter("policy_generation"), 3, "two changes, no restart");
}
