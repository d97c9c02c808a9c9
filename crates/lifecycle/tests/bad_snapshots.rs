//! Bad snapshots are refused by `restore` with a message that says which part and why, and
//! nothing is written; a snapshot of the previous schema restores and migrates.

use std::path::{Path, PathBuf};

use sluice_lifecycle::restore::{restore, RestoreError, RestoreOptions};
use sluice_lifecycle::snapshot::{create, verify, Writer};
use sluice_snapshot::{section_offsets, LogPosition, Manifest, Membership, Secrets, SecretsInput};
use sluice_store::state::{hash_token_secret, Command, Role};
use sluice_store::{Store, StoreConfig};

const PASS: &[u8] = b"the passphrase";

async fn snapshot(with_secrets: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_single_node(StoreConfig::single_node(dir.path())).await.unwrap();
    store.ensure_cluster_identity("test").await.unwrap();
    store.write("test", Command::PutPolicy { document: "{\"v\":1}".into(), comment: String::new() }).await.unwrap();
    let mint = Command::MintToken {
        id: "ops".into(),
        role: Role::Admin,
        secret_hash: hash_token_secret("s"),
        label: String::new(),
        expires_at_ms: None,
    };
    store.write("test", mint).await.unwrap();
    let secrets = Secrets { node_id: 1, files: [("bootstrap-token".to_owned(), "tok\n".to_owned())].into() };
    let writer = Writer { release_version: "test".into(), node_id: 1 };
    let bytes = create(&store, &writer, 1_733_000_000_000, with_secrets.then_some((&secrets, PASS))).unwrap().bytes;
    store.shutdown().await.unwrap();
    bytes
}

/// Restores `bytes` into a fresh target; returns the error and checks nothing was written.
fn refused(bytes: &[u8], passphrase: Option<&[u8]>) -> String {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("bad.snap");
    std::fs::write(&file, bytes).unwrap();
    let target: PathBuf = work.path().join("data");
    let options = RestoreOptions { snapshot: &file, data_dir: &target, passphrase, force: false, now_ms: 1 };
    let error = restore(&options, &mut |_| {}).expect_err("refused");
    assert!(matches!(error, RestoreError::Snapshot(_)), "{error}");
    assert!(!target.exists(), "nothing written for: {error}");
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 1, "only the snapshot file is there: {error}");
    error.to_string()
}

fn restores(bytes: &[u8], passphrase: Option<&[u8]>) -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("good.snap");
    std::fs::write(&file, bytes).unwrap();
    let target = work.path().join("data");
    let options = RestoreOptions { snapshot: &file, data_dir: &target, passphrase, force: false, now_ms: 1 };
    restore(&options, &mut |_| {}).unwrap();
    (work, target)
}

#[tokio::test]
async fn truncated_corrupted_foreign_or_future_snapshots_are_refused_and_nothing_is_written() {
    let bytes = snapshot(true).await;
    for len in [0, 10, 23, 24, 60, bytes.len() / 2, bytes.len() - 33, bytes.len() - 1] {
        let message = refused(&bytes[..len], None);
        assert!(message.contains("truncated"), "{len}: {message}");
    }
    for (kind, range) in section_offsets(&bytes).unwrap() {
        let mut bad = bytes.clone();
        bad[range.start + range.len() / 2] ^= 0x40;
        let message = refused(&bad, Some(PASS));
        assert!(message.contains(&format!("the {} section is corrupted", kind.as_str())), "{message}");
    }
    let mut bad = bytes.clone();
    bad[..6].copy_from_slice(b"NOTSNA");
    assert!(refused(&bad, None).contains("wrong magic"));
    let mut future = bytes.clone();
    future[16..20].copy_from_slice(&2u32.to_le_bytes());
    assert!(refused(&future, None).contains("format version 2 is newer"));
    assert!(refused(&bytes, Some(b"not it")).contains("wrong passphrase"));
    let plain = snapshot(false).await;
    assert!(refused(&plain, Some(PASS)).contains("no secrets section"));
}

/// A snapshot file around `state` (an image of any schema) with a manifest that matches it.
fn wrap(state: &[u8], schema: u32, index: u64, hash: &str, cluster: &str) -> Vec<u8> {
    let manifest = Manifest {
        format_version: 0,
        cluster_id: cluster.into(),
        node_id: 1,
        schema_version: schema,
        release_version: "old".into(),
        last_applied: LogPosition { term: 1, leader_node_id: 1, index },
        membership: Membership { voters: vec![1], ..Membership::default() },
        state_hash: hash.into(),
        created_at_ms: 1,
        sections: vec![],
        state_bytes: 0,
        secrets: None,
    };
    sluice_snapshot::write(manifest, state, None::<SecretsInput>).unwrap()
}

fn fixture() -> (String, serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/tests/fixtures/state-schema-1.json");
    let text = std::fs::read_to_string(path).unwrap();
    let value = serde_json::from_str(&text).unwrap();
    (text, value)
}

#[tokio::test]
async fn a_newer_schema_is_refused_naming_the_versions() {
    let (_, mut value) = fixture();
    value["schema_version"] = serde_json::json!(3);
    let hash = value["state_hash"].as_str().unwrap().to_owned();
    let bytes = wrap(&serde_json::to_vec(&value).unwrap(), 3, 7, &hash, "c-v1");
    let message = refused(&bytes, None);
    assert!(message.contains("schema version 3, newer than this release reads (1 to 2)"), "{message}");
}

#[tokio::test]
async fn a_snapshot_of_the_previous_schema_restores_migrated() {
    let (text, value) = fixture();
    let hash = value["state_hash"].as_str().unwrap().to_owned();
    let bytes = wrap(text.as_bytes(), 1, 7, &hash, "c-v1");
    let verified = verify(&bytes).unwrap();
    assert_eq!(verified.state.schema_version(), sluice_store::state::SCHEMA_VERSION);
    let (_work, target) = restores(&bytes, None);
    let replayed = sluice_store::storage::replay(&target.join("store"), None).unwrap();
    assert_eq!(replayed.state.state_hash().to_hex(), hash);
    assert_eq!(replayed.state.policy_versions().count(), 2);
    assert_eq!(replayed.state.cluster().unwrap().created_at_ms, 1_700_000_000_002);

    // A manifest that claims another hash than the state has is refused.
    let mut wrong = hash.clone();
    wrong.replace_range(..1, if wrong.starts_with('0') { "1" } else { "0" });
    let message = refused(&wrap(text.as_bytes(), 1, 7, &wrong, "c-v1"), None);
    assert!(message.contains("the state hash is"), "{message}");
    let message = refused(&wrap(text.as_bytes(), 1, 8, &hash, "c-v1"), None);
    assert!(message.contains("index 7, the manifest says 8"), "{message}");
}

#[tokio::test]
async fn force_moves_a_non_empty_data_root_aside_and_never_deletes_it() {
    let bytes = snapshot(false).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("good.snap");
    std::fs::write(&file, &bytes).unwrap();
    let target = work.path().join("data");
    std::fs::create_dir_all(target.join("store")).unwrap();
    std::fs::write(target.join("store/precious"), "old state").unwrap();
    // The installed release (as on an appliance): slots, pointers, history, an old attempt.
    let slot = target.join("releases/1.0.0");
    std::fs::create_dir_all(&slot).unwrap();
    std::fs::write(slot.join("sluice"), "the binary").unwrap();
    std::fs::write(slot.join("manifest.json"), "{}").unwrap();
    std::os::unix::fs::symlink("1.0.0", target.join("releases/current")).unwrap();
    std::fs::write(target.join("releases/history.jsonl"), "{}\n").unwrap();
    std::fs::write(target.join("releases/boot.json"), "{}").unwrap();
    let options = RestoreOptions { snapshot: &file, data_dir: &target, passphrase: None, force: false, now_ms: 42 };
    assert!(matches!(restore(&options, &mut |_| {}), Err(RestoreError::NotEmpty(_))));
    assert_eq!(std::fs::read_to_string(target.join("store/precious")).unwrap(), "old state", "untouched");

    let report = restore(&RestoreOptions { force: true, ..options }, &mut |_| {}).unwrap();
    let aside = report.moved_aside.expect("moved aside");
    assert_eq!(aside, work.path().join("data.before-restore-42"));
    assert_eq!(std::fs::read_to_string(aside.join("store/precious")).unwrap(), "old state", "kept, not deleted");
    assert!(target.join("store/store.redb").is_file() && !target.join("store/precious").exists());
    assert_eq!(report.node_id, sluice_lifecycle::restore::FRESH_NODE_ID, "no secrets: a new identity");
    assert!(target.join("bootstrap-token").is_file() && target.join("cluster/ca.pem").is_file());
    // The release slots came along: the service manager still finds releases/current.
    assert_eq!(std::fs::read_to_string(target.join("releases/current/sluice")).unwrap(), "the binary");
    assert!(target.join("releases/1.0.0/manifest.json").is_file() && target.join("releases/history.jsonl").is_file());
    assert!(!target.join("releases/boot.json").exists(), "an old attempt is not carried over");
    assert!(aside.join("releases/1.0.0/sluice").is_file(), "the old root keeps its own copy");
}
