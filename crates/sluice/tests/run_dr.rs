//! The disaster-recovery drill with real processes, end to end: a three-node cluster with
//! policy history and tokens serves traffic; a snapshot with secrets is taken; all three data
//! roots are destroyed; `sluice restore` writes one node's data root; it starts as the seed
//! of a new cluster and two fresh nodes join it; policy, history and tokens are intact, the
//! traffic passes through all three again, the restored state hash equals the snapshot's
//! manifest, and a member of the destroyed cluster is refused by the new one. Needs root.

mod node_harness;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use node_harness::cluster_nodes::{check_ok, form, hashes_agree, labs, policy_without_echo, wait_until, Node};
use node_harness::mgmt::Mgmt;
use node_harness::{require_root, POLICY};
use serde_json::Value;

fn sluice(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn empty(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// One HTTPS request from the node's namespace with curl: (status, body).
fn curl(node: &Node, api: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
    let cert = node.dir.path().join("api-cert.pem");
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &node.lab.node,
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ])
    .arg("--cacert")
    .arg(&cert)
    .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", body]);
    }
    let out = cmd.arg(format!("{api}{path}")).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or_else(|| panic!("curl said: {text}"));
    (status.trim().parse().unwrap_or_else(|_| panic!("no status from curl: {text}")), body.to_owned())
}

/// The snapshot routes over HTTPS: roles, refusals and verification.
fn snapshot_routes(node: &Node, api: &str, admin: &str) {
    let reader = node.cli(&["token", "mint", "--role", "readonly", "--id", "dr-reader-2"]).ok().stdout;
    let reader = reader.trim();
    let (status, body) = curl(node, api, "GET", "/api/v1/snapshots", reader, None);
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let id = list["snapshots"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = curl(node, api, "POST", &format!("/api/v1/snapshots/{id}/verify"), reader, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["file_sha256"].as_str().map(str::len), Some(64));
    let (status, _) = curl(node, api, "GET", &format!("/api/v1/snapshots/{id}"), reader, None);
    assert_eq!(status, 403, "a readonly token cannot download a snapshot");
    let (status, _) = curl(node, api, "POST", "/api/v1/snapshots", reader, Some("{}"));
    assert_eq!(status, 403, "a readonly token cannot take one");
    let (status, body) = curl(node, api, "POST", "/api/v1/snapshots", admin, Some(r#"{"include_secrets":true}"#));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("passphrase_required"), "{body}");
    let (status, body) = curl(node, api, "GET", "/api/v1/snapshots/manual-1-..%2F..%2Fstore", admin, None);
    assert_eq!(status, 404, "{body}");
}

fn versions(node: &Node) -> Vec<u64> {
    let body = node.cli(&["policy", "versions", "--json"]).ok().json();
    body["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect()
}

fn token_ids(node: &Node) -> Vec<String> {
    let body = node.cli(&["token", "list", "--json"]).ok().json();
    let mut ids: Vec<String> =
        body["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[test]
fn a_destroyed_cluster_is_restored_from_a_snapshot_and_serves_again() {
    require_root();
    let (_mgmt, mut nodes) = labs(4);
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("policy.json");
    std::fs::write(&first, policy_without_echo()).unwrap();
    let with_echo = work.path().join("with-echo.json");
    std::fs::write(&with_echo, POLICY).unwrap();

    // A serving cluster with history (v1 without echo, v2 with) and tokens.
    let token = form(&mut nodes[..3], Some(&first));
    nodes[1].cli(&["policy", "put", with_echo.to_str().unwrap(), "--comment", "echo allowed"]).ok();
    for node in &nodes[..3] {
        wait_until("version 2 everywhere", Duration::from_secs(10), || node.echo_passes());
    }
    let admin = nodes[0].cli(&["token", "mint", "--role", "admin", "--id", "dr-admin"]).ok().stdout;
    nodes[2].cli(&["token", "mint", "--role", "readonly", "--id", "dr-reader"]).ok();
    wait_until("equal state hashes", Duration::from_secs(10), || hashes_agree(&nodes[0]));
    let old_cluster_id = nodes[0].cluster()["cluster_id"].as_str().unwrap().to_owned();
    let tokens_before = token_ids(&nodes[1]);
    assert_eq!(versions(&nodes[1]), vec![1, 2]);

    // A snapshot with secrets, taken through the admin socket of the node whose machine will
    // be restored (its identity includes the API certificate, which names its address).
    let passphrase = work.path().join("passphrase");
    std::fs::write(&passphrase, "drill passphrase\n").unwrap();
    let snapshot = work.path().join("cluster.snap");
    let created = nodes[0]
        .cli(&[
            "snapshot",
            "create",
            "--include-secrets",
            "--passphrase-file",
            passphrase.to_str().unwrap(),
            "--out",
            snapshot.to_str().unwrap(),
        ])
        .ok();
    assert!(created.stdout.contains("secrets sealed") && created.stdout.contains("verified"), "{}", created.stdout);
    let listed = nodes[0].cli(&["snapshot", "list", "--json"]).ok().json();
    assert_eq!(listed["snapshots"].as_array().unwrap().len(), 1, "{listed:#}");
    let (code, inspected, err) = sluice(&["snapshot", "inspect", snapshot.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let manifest: Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(manifest["cluster_id"], old_cluster_id.as_str());
    assert_eq!(manifest["has_secrets"], true);
    assert_eq!(manifest["state"]["policy_versions"], 2);

    // Disaster: every node dies and its data root is lost. One old member's data root
    // survives elsewhere (a machine that was switched off), to try to come back later.
    for node in &mut nodes[..3] {
        node.process.as_mut().unwrap().stop(libc::SIGKILL, Duration::from_secs(5));
    }
    let old_member = work.path().join("old-member");
    copy_tree(nodes[2].dir.path(), &old_member);
    for node in &nodes[..3] {
        empty(node.dir.path());
    }

    // Restore on node 0's machine, as the seed of a new cluster.
    let target = nodes[0].dir.path().to_str().unwrap().to_owned();
    let (code, out, err) = sluice(&[
        "restore",
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--data-dir",
        &target,
        "--passphrase-file",
        passphrase.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("verifying") && err.contains("replays"), "progress is shown: {err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["state_hash"], manifest["state_hash"], "the restored state hash is the manifest's");
    assert_eq!(report["applied_index"], manifest["applied_index"]);
    assert_eq!(report["identity_restored"], true);
    let new_cluster_id = report["cluster_id"].as_str().unwrap().to_owned();
    assert_ne!(new_cluster_id, old_cluster_id, "a new cluster id is minted");
    assert_eq!(std::fs::read_to_string(nodes[0].dir.path().join("bootstrap-token")).unwrap(), token);

    nodes[0].start(None, false);
    assert!(nodes[0].log().contains("Restored"), "{}", nodes[0].log());
    for node in &mut nodes[1..3] {
        std::fs::write(node.dir.path().join("bootstrap-token"), &token).unwrap();
        node.start(None, true);
    }
    for node in &nodes[..3] {
        wait_until("every node ready", Duration::from_secs(30), || {
            let ready = node.ready();
            check_ok(&ready, "cluster") && check_ok(&ready, "policy_replication") && ready["ready"]["ready"] == true
        });
    }
    let cluster = nodes[2].cluster();
    assert_eq!(cluster["cluster_id"], new_cluster_id.as_str(), "{cluster:#}");
    assert_eq!(cluster["members"].as_array().unwrap().len(), 3);

    // Policy, history and tokens are intact; traffic passes through all three nodes again.
    for node in &nodes[..3] {
        assert_eq!(versions(node), vec![1, 2], "node {}", node.index);
        assert_eq!(token_ids(node), tokens_before, "node {}", node.index);
        wait_until("the echo rule enforced again", Duration::from_secs(10), || node.echo_passes());
    }
    wait_until("equal state hashes in the new cluster", Duration::from_secs(10), || hashes_agree(&nodes[0]));
    let api = format!("https://{}:8443", Mgmt::address(0));
    let data_dir = nodes[0].dir.path().to_str().unwrap().to_owned();
    let status = node_harness::cli::sluice_in(
        &nodes[0].lab.node,
        &["status", "--api", &api, "--token", admin.trim(), "--data-dir", &data_dir, "--json"],
    );
    assert_eq!(status.code, 0, "a token minted before the disaster works: {}\n{}", status.stdout, status.stderr);
    // A snapshot of the new cluster, taken and downloaded over HTTPS with the old admin
    // token, names where its state came from.
    let later = work.path().join("later.snap");
    let over_https = node_harness::cli::sluice_in(
        &nodes[0].lab.node,
        &[
            "snapshot",
            "create",
            "--out",
            later.to_str().unwrap(),
            "--api",
            &api,
            "--token",
            admin.trim(),
            "--data-dir",
            &data_dir,
        ],
    );
    assert_eq!(over_https.code, 0, "{}\n{}", over_https.stdout, over_https.stderr);
    snapshot_routes(&nodes[0], &api, admin.trim());
    let (_, inspected, _) = sluice(&["snapshot", "inspect", later.to_str().unwrap(), "--json"]);
    let later: Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(later["state"]["lineage"], serde_json::json!([old_cluster_id]));

    // The member of the destroyed cluster, started with --join at the new seed, is refused.
    let old = &nodes[3];
    let flags = old.flags(true);
    let mut args: Vec<&str> = vec!["netns", "exec", &old.lab.node, env!("CARGO_BIN_EXE_sluice"), "run"];
    let port_flags = node_harness::Mode::Software.flags(&old.lab);
    args.extend(port_flags.iter().map(String::as_str));
    args.extend([
        "--internal-address",
        "10.10.0.1/24",
        "--external-address",
        "203.0.113.2/24",
        "--gateway",
        "203.0.113.1",
    ]);
    args.extend(flags.iter().map(String::as_str));
    let old_dir = old_member.to_str().unwrap();
    args.extend(["--data-dir", old_dir]);
    let refused = Command::new("ip").args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(26), "{stderr}");
    let reason = format!("cluster {old_cluster_id} was restored from a snapshot as cluster {new_cluster_id}");
    assert!(stderr.contains(&reason), "{stderr}");
    assert_eq!(nodes[0].cluster()["members"].as_array().unwrap().len(), 3, "the new cluster is unchanged");

    for node in &mut nodes[..3] {
        let (status, _) = node.process.as_mut().unwrap().stop(libc::SIGTERM, Duration::from_secs(10));
        assert_eq!(status.code(), Some(0), "{}", node.log());
    }
}
