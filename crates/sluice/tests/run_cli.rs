//! The `sluice` CLI client against a real `sluice run` in the lab: the same commands over the
//! admin socket (root on the node, no token) and over HTTPS (`--api`, a bearer token), policy
//! writes and rollbacks that change what traffic the node lets out, the exit codes a script
//! relies on (1 refused document, 4 unreachable, 5 refused request, 6 unauthorized), and the
//! audit trail naming who made each change. Needs root (network namespaces).

mod node_harness;

use std::path::Path;
use std::time::Duration;

use node_harness::cli::{sluice_in, Ran};
use node_harness::{require_root, udp_ask, udp_echo, Lab, Launch, Mode, Sluice, POLICY};
use serde_json::Value;

const API: &str = "https://127.0.0.1:8443";

/// The harness policy without the UDP echo rule.
fn policy_without_echo() -> String {
    let echo = r#"{ "id": "echo", "action": "allow", "match": { "proto": "udp", "dst_ports": [7], "dst_cidrs": ["198.51.100.0/24"] } },"#;
    assert!(POLICY.contains(echo), "the harness policy has the echo rule");
    POLICY.replace(echo, "")
}

/// `sluice ARGS` in the node's namespace (where the API listens on loopback).
fn sluice(lab: &Lab, args: &[&str]) -> Ran {
    sluice_in(&lab.node, args)
}

/// `sluice ARGS` over the admin socket of the node whose data root is `dir`.
fn local(lab: &Lab, dir: &Path, args: &[&str]) -> Ran {
    let dir = dir.to_str().unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", dir]);
    sluice(lab, &all)
}

/// `sluice ARGS` over HTTPS with a token, pinning the node's generated certificate.
fn remote(lab: &Lab, dir: &Path, token: &str, args: &[&str]) -> Ran {
    let ca = dir.join("api-cert.pem");
    let ca = ca.to_str().unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--api", API, "--ca-cert", ca, "--token", token, "--timeout", "20s"]);
    sluice(lab, &all)
}

#[test]
fn the_cli_drives_a_node_over_the_admin_socket_and_over_https() {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let policy = d.join("policy.json");
    std::fs::write(&policy, policy_without_echo()).unwrap();
    let with_echo = d.join("with-echo.json");
    std::fs::write(&with_echo, POLICY).unwrap();
    let broken = d.join("broken.json");
    std::fs::write(&broken, POLICY.replace("\"dst_ports\": [7]", "\"dst_ports\": [0]")).unwrap();
    let extra = ["--http-bind", "127.0.0.1:8443"];
    let mut node = Sluice::start(
        &lab,
        d,
        &Launch { mode: Mode::Software, policy: Some(&policy), run: 1, extra: &extra, ..Launch::default() },
    );
    let _echo = udp_echo(&lab.upstream, 7);

    // Root on the node needs no credential: status and a token over the admin socket.
    let status = local(&lab, d, &["status"]).ok();
    assert!(status.stdout.starts_with("node: ready"), "{}", status.stdout);
    for check in ["dataplane", "dns", "policy", "store", "draining"] {
        assert!(status.stdout.lines().any(|l| l.trim_start().starts_with(check) && l.contains(" ok ")), "{check}");
    }
    assert!(status.stdout.contains("policy: version 1 active, version 1 applied"), "{}", status.stdout);
    let minted = local(&lab, d, &["token", "mint", "--role", "admin", "--label", "cli test"]).ok();
    let admin = minted.stdout.clone();
    assert!(admin.len() >= 20 && !admin.contains(char::is_whitespace), "only the secret on stdout: {admin:?}");
    assert!(minted.stderr.contains("role admin") && !minted.stderr.contains(&admin), "{}", minted.stderr);

    // The same status over HTTPS, as JSON for scripts.
    let status = remote(&lab, d, &admin, &["status", "--json"]).ok().json();
    assert_eq!(status["ready"]["ready"], true, "{status:#}");
    assert_eq!(status["stats"]["policy"]["applied_version"].as_u64(), Some(1), "{status:#}");

    // A readonly token minted through the API by the admin token.
    let readonly = remote(&lab, d, &admin, &["token", "mint", "--role", "readonly", "--id", "ro-cli"]).ok();
    assert!(readonly.stderr.contains("minted token ro-cli (role readonly)"), "{}", readonly.stderr);
    let readonly = readonly.stdout;

    // Validation on the node: exit 1 and the field paths, reported on stdout like the offline
    // check (it is the command's answer, not a failure of the command); nothing stored.
    let refused = remote(&lab, d, &readonly, &["policy", "validate", broken.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stdout.starts_with("source_groups[0].rules[1].match.dst_ports[0]: "), "{}", refused.stdout);
    let valid = remote(&lab, d, &readonly, &["policy", "validate", with_echo.to_str().unwrap()]).ok();
    assert!(valid.stdout.contains("1 source groups, 3 rules"), "{}", valid.stdout);
    let put_broken = remote(&lab, d, &admin, &["policy", "put", broken.to_str().unwrap()]);
    assert_eq!(put_broken.code, 1, "{}", put_broken.stderr);
    assert!(put_broken.stdout.contains("dst_ports[0]"), "{}", put_broken.stdout);

    // Roles: a readonly token cannot write (6); neither can a made-up one.
    let forbidden = remote(&lab, d, &readonly, &["policy", "put", with_echo.to_str().unwrap()]);
    assert_eq!(forbidden.code, 6, "{}", forbidden.stderr);
    assert!(forbidden.stderr.contains("forbidden"), "{}", forbidden.stderr);
    let made_up = remote(&lab, d, "sl_not_a_real_token_at_all", &["policy", "versions"]);
    assert_eq!(made_up.code, 6, "{}", made_up.stderr);

    // A policy written over HTTPS changes traffic without a restart.
    assert_eq!(udp_ask(&lab, 7, b"denied?", 3), None, "version 1 has no echo rule");
    let put = remote(&lab, d, &admin, &["policy", "put", with_echo.to_str().unwrap(), "--comment", "allow echo"]).ok();
    assert_eq!(put.stdout, "stored as version 2; the dataplane runs it");
    assert_eq!(udp_ask(&lab, 7, b"allowed", 10).as_deref(), Some(&b"allowed"[..]), "version 2 lets echo out");

    // Explain under the node's active policy agrees with what the traffic just did.
    let explained = local(
        &lab,
        d,
        &["policy", "explain", "--src", "10.10.0.2", "--dst", "198.51.100.10", "--proto", "udp", "--port", "7"],
    )
    .ok();
    assert!(
        explained.stdout.contains("version: 2") && explained.stdout.contains("verdict: allow"),
        "{}",
        explained.stdout
    );
    assert!(explained.stdout.contains("rule: echo"), "{}", explained.stdout);
    let older = ["policy", "explain", "--version", "1", "--src", "10.10.0.2", "--dst", "198.51.100.10"];
    let older = local(&lab, d, &[&older[..], &["--proto", "udp", "--port", "7"]].concat()).ok();
    assert!(older.stdout.contains("verdict: deny"), "{}", older.stdout);

    // Get returns the document ready to put back; an unknown version is a refusal (5).
    let got = remote(&lab, d, &readonly, &["policy", "get"]).ok();
    let document: Value = serde_json::from_str(&got.stdout).expect("the document is JSON");
    assert_eq!(document["source_groups"][0]["rules"][1]["id"], "echo", "{document:#}");
    assert!(got.stderr.contains("version 2 (active)") && got.stderr.contains("allow echo"), "{}", got.stderr);
    let unknown = remote(&lab, d, &readonly, &["policy", "get", "--version", "99"]);
    assert_eq!(unknown.code, 5, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("99"), "{}", unknown.stderr);

    // Rollback over the socket restores the old behaviour; the history shows both writers.
    let rolled = local(&lab, d, &["policy", "rollback"]).ok();
    assert_eq!(rolled.stdout, "version 1 is active again (was 2)");
    assert_eq!(udp_ask(&lab, 7, b"denied again?", 3), None, "the rollback restores the old behaviour");
    let versions = local(&lab, d, &["policy", "versions", "--json"]).ok().json();
    assert_eq!(versions["active"].as_u64(), Some(1), "{versions:#}");
    let by = |n: u64| {
        versions["versions"].as_array().unwrap().iter().find(|v| v["version"] == n).unwrap()["created_by"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(by(1), "bootstrap");
    assert_eq!(by(2), "token:".to_owned() + &minted_id(&minted.stderr));
    let table = remote(&lab, d, &readonly, &["policy", "versions"]).ok();
    assert!(table.stdout.lines().nth(1).is_some_and(|l| l.starts_with("2 ")), "newest first:\n{}", table.stdout);

    // A write over the socket is recorded as the local root caller.
    let put = local(&lab, d, &["policy", "put", with_echo.to_str().unwrap(), "--comment", "from the node"]).ok();
    assert_eq!(put.stdout, "stored as version 3; the dataplane runs it");
    let latest = local(&lab, d, &["policy", "get", "--json"]).ok().json();
    assert_eq!(latest["created_by"], "admin-socket:uid=0", "{latest:#}");

    // Tokens: listed without secrets, revoked, and then refused.
    let list = remote(&lab, d, &admin, &["token", "list"]).ok();
    assert!(list.stdout.contains("ro-cli") && list.stdout.contains("readonly"), "{}", list.stdout);
    assert!(!list.stdout.contains(&readonly) && !list.stdout.contains(&admin), "no secret in a listing");
    let revoked = local(&lab, d, &["token", "revoke", "ro-cli"]).ok();
    assert_eq!(revoked.stdout, "token ro-cli revoked");
    let after = remote(&lab, d, &readonly, &["status"]);
    assert_eq!(after.code, 6, "a revoked token is refused: {}", after.stderr);
    let again = local(&lab, d, &["token", "revoke", "ro-cli"]);
    assert_eq!(again.code, 5, "revoking an unknown id is a refusal: {}", again.stderr);

    // Settings: shown, then the history bound lowered over the socket, which drops the oldest
    // inactive version at once; a readonly token may look but not change.
    let shown = remote(&lab, d, &admin, &["settings"]).ok();
    assert!(shown.stdout.starts_with("policy_history_limit 50 "), "{}", shown.stdout);
    let changed = local(&lab, d, &["settings", "--policy-history-limit", "2"]).ok();
    assert!(changed.stdout.contains("dropped policy versions: 1"), "{}", changed.stdout);
    let versions = local(&lab, d, &["policy", "versions", "--json"]).ok().json();
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(2), "{versions:#}");

    // The audit log, newest first, names each writer.
    let audit = remote(&lab, d, &admin, &["audit", "--limit", "3"]).ok();
    let lines: Vec<&str> = audit.stdout.lines().collect();
    for (line, action) in [(1, "settings.update"), (2, "token.revoke id=ro-cli"), (3, "policy.put version=3")] {
        assert!(lines[line].contains("admin-socket:uid=0") && lines[line].contains(action), "{}", audit.stdout);
    }
    assert!(audit.stdout.contains("(older entries: --before "), "{}", audit.stdout);
    let whole = local(&lab, d, &["audit", "--limit", "1000", "--json"]).ok().json();
    let actors: Vec<&str> = whole["entries"].as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
    assert!(actors.contains(&"bootstrap") && actors.iter().any(|a| a.starts_with("token:")), "{actors:?}");

    // Usage mistakes and an unreachable node.
    let token_without_api = sluice(&lab, &["status", "--token", "x", "--data-dir", d.to_str().unwrap()]);
    assert_eq!(token_without_api.code, 2, "{}", token_without_api.stderr);
    let unreachable = sluice(&lab, &["status", "--api", "https://127.0.0.1:1", "--token", &admin, "--timeout", "3s"]);
    assert_eq!(unreachable.code, 4, "{}", unreachable.stderr);
    assert!(unreachable.stderr.contains("127.0.0.1:1"), "{}", unreachable.stderr);

    let (status, _) = node.stop(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    let log = node.log_text();
    assert!(!log.contains(&admin) && !log.contains(&readonly), "a token secret in the log");

    // With the node gone, the socket is gone too: exit 3 with the reason.
    let gone = local(&lab, d, &["status"]);
    assert_eq!(gone.code, 3, "{}", gone.stderr);
    assert!(gone.stderr.contains("admin.sock"), "{}", gone.stderr);
}

/// The token id from `minted token <id> (role …)` on stderr.
fn minted_id(stderr: &str) -> String {
    let rest = stderr.split("minted token ").nth(1).unwrap_or_else(|| panic!("{stderr}"));
    rest.split_whitespace().next().unwrap().to_owned()
}
