//! The management API of a real `sluice run` in the lab: a token minted over the admin
//! socket, policy writes and rollbacks through HTTPS that change what traffic the node lets
//! out without a restart, readiness, metrics, the store winning over `--policy` on restart,
//! and a clean stop. Needs root (network namespaces); curl talks HTTPS from the node's
//! namespace, pinning the certificate the node generated.

mod node_harness;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use node_harness::{in_netns, links, require_root, udp_ask, udp_echo, Lab, Launch, Mode, Sluice, POLICY};
use serde_json::Value;

const API: &str = "https://127.0.0.1:8443";
const METRICS: &str = "127.0.0.1:9100";

/// The harness policy without the UDP echo rule.
fn policy_without_echo() -> String {
    let echo = r#"{ "id": "echo", "action": "allow", "match": { "proto": "udp", "dst_ports": [7], "dst_cidrs": ["198.51.100.0/24"] } },"#;
    assert!(POLICY.contains(echo), "the harness policy has the echo rule");
    POLICY.replace(echo, "")
}

/// One HTTPS request from the node's namespace: (status, body as JSON or Null).
fn api(lab: &Lab, dir: &Path, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.node, "curl", "-sS", "--max-time", "20", "-X", method, "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(dir.join("api-cert.pem"));
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", body]);
    }
    let out = cmd.arg(format!("{API}{path}")).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or_else(|| panic!("curl said: {text} {:?}", out.stderr));
    let status = status.trim().parse().unwrap_or_else(|_| panic!("no status from curl: {text}"));
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Mints an admin token with `sluice token mint` (over the admin socket, no credential).
fn mint_admin_token(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["token", "mint", "--role", "admin", "--label", "lab test", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("role admin") && !stderr.contains(stdout.trim()), "the secret only on stdout: {stderr}");
    stdout.trim().to_owned()
}

/// Mints a readonly token speaking the admin socket's protocol directly (docs/api.md).
fn mint_readonly_token_over_the_socket(dir: &Path) -> String {
    let mut socket = UnixStream::connect(dir.join("admin.sock")).expect("connect to the admin socket");
    socket.write_all(b"{\"command\":\"mint_token\",\"role\":\"readonly\",\"label\":\"lab test\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(socket).read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).expect("a JSON answer");
    assert_eq!(answer["ok"], true, "{answer}");
    answer["token"].as_str().expect("the token").to_owned()
}

fn start(lab: &Lab, dir: &Path, mode: Mode, policy: &Path, run: usize) -> Sluice {
    let extra = ["--http-bind", "127.0.0.1:8443", "--metrics-bind", METRICS];
    Sluice::start(lab, dir, &Launch { mode, policy: Some(policy), run, extra: &extra, ..Launch::default() })
}

#[test]
fn policy_writes_through_the_api_change_traffic_without_a_restart() {
    policy_writes_through_the_api(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_policy_writes_through_the_api_change_traffic_without_a_restart() {
    policy_writes_through_the_api(Mode::Dpdk);
}

fn policy_writes_through_the_api(mode: Mode) {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, policy_without_echo()).unwrap();
    let mut node = start(&lab, dir.path(), mode, &policy, 1);
    let _echo = udp_echo(&lab.upstream, 7);

    let (status, ready) = api(&lab, dir.path(), "GET", "/ready", None, None);
    assert_eq!(status, 200, "{ready:#}");
    for check in ["dataplane", "dns", "policy", "store", "draining"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{check}: {ready:#}");
    }
    assert!(node.log_text().contains("the store was empty; the --policy file is stored as version 1"));

    let token = mint_admin_token(dir.path());
    let readonly = mint_readonly_token_over_the_socket(dir.path());
    let (status, refused) = api(&lab, dir.path(), "PUT", "/api/v1/policy", Some(&readonly), Some(POLICY));
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("forbidden")), "a readonly token cannot write");
    let (status, _) = api(&lab, dir.path(), "PUT", "/api/v1/policy", None, Some(POLICY));
    assert_eq!(status, 401, "no token, no write");
    let (status, active) = api(&lab, dir.path(), "GET", "/api/v1/policy", Some(&token), None);
    assert_eq!((status, active["version"].as_u64(), active["created_by"].as_str()), (200, Some(1), Some("bootstrap")));

    assert_eq!(udp_ask(&lab, 7, b"denied?", 3), None, "version 1 has no echo rule");
    let (status, written) = api(&lab, dir.path(), "PUT", "/api/v1/policy?comment=echo", Some(&token), Some(POLICY));
    assert_eq!((status, written["version"].as_u64(), &written["applied"]), (200, Some(2), &Value::Bool(true)));
    assert_eq!(udp_ask(&lab, 7, b"allowed", 10).as_deref(), Some(&b"allowed"[..]), "version 2 lets echo out");
    assert_eq!(node.counter("policy_generation"), 2, "the worker runs the second generation");

    let (status, rolled) = api(&lab, dir.path(), "POST", "/api/v1/policy/rollback", Some(&token), Some("{}"));
    assert_eq!((status, rolled["version"].as_u64(), rolled["previous"].as_u64()), (200, Some(1), Some(2)), "{rolled}");
    assert_eq!(udp_ask(&lab, 7, b"denied again?", 3), None, "the rollback restores the old behaviour");

    let (status, stats) = api(&lab, dir.path(), "GET", "/api/v1/stats", Some(&readonly), None);
    assert_eq!(status, 200, "{stats:#}");
    assert!(stats["node"]["counters"]["policy_denied"].as_u64() >= Some(1), "the stats.json document: {stats:#}");
    assert_eq!(stats["policy"]["applied_version"].as_u64(), Some(1), "{stats:#}");

    let scrape = in_netns(&lab.node, || {
        let out = Command::new("curl").args(["-sS", &format!("http://{METRICS}/metrics")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    assert!(scrape.contains("sluice_policy_applied_version 1"), "{scrape}");
    assert!(scrape.contains("sluice_dataplane_events_total{counter=\"policy_denied\"}"), "{scrape}");

    let (status, took) = node.stop(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", node.log_text());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let log = node.log_text();
    assert!(log.contains("draining") && log.contains("store closed") && log.contains("service lane removed"), "{log}");
    assert!(!dir.path().join("admin.sock").exists(), "the admin socket is removed");
    assert!(!links(&lab).contains("sl-lane"), "the TAP is gone:\n{}", links(&lab));

    // Restarted with a --policy that allows echo: the store's active version (1) wins, and
    // the token minted before the restart still works.
    std::fs::write(&policy, POLICY).unwrap();
    let mut again = start(&lab, dir.path(), mode, &policy, 2);
    assert!(again.log_text().contains("the store's active version 1 is in force"), "{}", again.log_text());
    let (status, active) = api(&lab, dir.path(), "GET", "/api/v1/policy", Some(&token), None);
    assert_eq!((status, active["version"].as_u64(), active["applied_version"].as_u64()), (200, Some(1), Some(1)));
    assert_eq!(udp_ask(&lab, 7, b"still denied?", 3), None, "the store's policy is in force, not the file");
    let (status, _) = api(&lab, dir.path(), "GET", "/ready", None, None);
    assert_eq!(status, 200);

    // SIGHUP writes the file to the store as a new version, which the node then runs.
    again.signal(libc::SIGHUP);
    again.wait_log("policy reloaded: stored as version 3");
    again.wait_log("policy applied");
    assert_eq!(udp_ask(&lab, 7, b"allowed by sighup", 10).as_deref(), Some(&b"allowed by sighup"[..]));
    let (status, versions) = api(&lab, dir.path(), "GET", "/api/v1/policy/versions", Some(&token), None);
    assert_eq!((status, versions["active"].as_u64()), (200, Some(3)), "{versions:#}");

    let (status, _) = again.stop(libc::SIGTERM, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", again.log_text());
    for log in [node.log_text(), again.log_text()] {
        assert!(!log.contains(&token) && !log.contains(&readonly), "a token secret in the log");
    }
}

#[test]
fn a_taken_api_address_stops_the_node_with_exit_25() {
    require_root();
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let squatter = in_netns(&lab.node, || TcpListener::bind("127.0.0.1:8443").expect("bind 127.0.0.1:8443"));
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.node, env!("CARGO_BIN_EXE_sluice"), "run"])
        .args(["--internal-port", &lab.node_in, "--external-port", &lab.node_out])
        .args(["--internal-address", "10.10.0.1/24", "--external-address", "203.0.113.2/24"])
        .args(["--gateway", "203.0.113.1", "--data-dir"])
        .arg(dir.path())
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_HTTP_BIND")
        .output()
        .unwrap();
    drop(squatter);
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(25), "{log}");
    assert!(log.contains("cannot start the management API") && log.contains("127.0.0.1:8443"), "{log}");
    assert!(!links(&lab).contains("sl-lane"), "the dataplane it started is gone:\n{}", links(&lab));
}

#[test]
fn token_mint_without_a_running_node_says_why_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["token", "mint", "--data-dir"])
        .arg(dir.path())
        .env_remove("SLUICE_DATA_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("admin.sock") && stderr.contains("Is `sluice run` running"), "{stderr}");
    assert!(out.stdout.is_empty(), "no secret printed");
}
