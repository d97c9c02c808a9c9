//! The `Store` on real redb files: writes, reads, the applied view, restart and replay.

use std::path::Path;

use sluice_store::state::{hash_token_secret, Command, CommandError, Outcome, Role, State, StateHash};
use sluice_store::storage::replay;
use sluice_store::{Applied, Store, StoreConfig};

const T0: u64 = 1_700_000_000_000;

async fn open(dir: &Path) -> Store {
    Store::open_single_node(StoreConfig::single_node(dir)).await.expect("the store opens")
}

fn put(document: &str) -> Command {
    Command::PutPolicy { document: document.into(), comment: "test".into() }
}

/// A history touching every kind of command, refusals included.
fn history() -> Vec<Command> {
    vec![
        Command::InitCluster { cluster_id: "cluster-a".into() },
        put("{\"v\":1}"),
        Command::MintToken {
            id: "ops".into(),
            role: Role::Admin,
            secret_hash: hash_token_secret("ops-secret"),
            label: "operator".into(),
            expires_at_ms: None,
        },
        Command::MintToken {
            id: "dash".into(),
            role: Role::Readonly,
            secret_hash: hash_token_secret("dash-secret"),
            label: String::new(),
            expires_at_ms: Some(T0 + 3_600_000),
        },
        put("{\"v\":2}"),
        Command::ActivatePolicy { version: 99 },
        Command::UpdateSettings { policy_history_limit: Some(2), audit_log_limit: Some(100) },
        put("{\"v\":3}"),
        Command::ActivatePolicy { version: 2 },
        Command::RevokeToken { id: "dash".into() },
    ]
}

async fn write_all(store: &Store, commands: Vec<Command>) -> Vec<Applied> {
    let mut applied = Vec::new();
    for (n, command) in commands.into_iter().enumerate() {
        applied.push(store.write_at("tester", T0 + n as u64, command).await.expect("committed"));
    }
    applied
}

/// The application content of a state, without its applied index and hash.
fn content(state: &State) -> String {
    let versions: Vec<_> = state.policy_versions().map(|p| (p.version, p.document.to_string(), p.sha256)).collect();
    let tokens: Vec<_> = state.tokens().cloned().collect();
    let audit: Vec<_> = state.audit_log().cloned().collect();
    format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}",
        state.cluster(),
        versions,
        state.active_policy().map(|p| p.version),
        tokens,
        state.settings(),
        audit
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_return_after_apply_with_their_index_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let status = store.status();
    assert_eq!((status.leader, status.voters.as_slice(), status.learners.len()), (Some(1), &[1][..], 0));

    let applied = write_all(&store, history()).await;
    for pair in applied.windows(2) {
        assert_eq!(pair[1].index, pair[0].index + 1);
        assert_ne!(pair[1].state_hash, pair[0].state_hash);
    }
    assert_eq!(applied[1].response, Ok(Outcome::PolicyStored { version: 1, evicted: vec![] }));
    assert_eq!(applied[5].response, Err(CommandError::UnknownPolicyVersion { version: 99 }));
    assert_eq!(applied[8].response, Ok(Outcome::PolicyActivated { version: 2, previous: Some(3) }));

    let last = applied.last().unwrap();
    let status = store.status();
    assert_eq!((status.applied_index, status.state_hash), (last.index, last.state_hash));
    assert_eq!(status.schema_version, sluice_store::state::SCHEMA_VERSION);
    store.read(|state| {
        assert_eq!(state.active_policy().unwrap().version, 2);
        assert_eq!(state.policy_versions().map(|p| p.version).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(state.tokens().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["ops"]);
        assert_eq!(state.authenticate(&hash_token_secret("ops-secret"), T0).unwrap().role, Role::Admin);
    });
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_each_newly_active_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut views = store.subscribe();
    views.borrow_and_update();

    let applied = store.write_at("tester", T0, put("{\"first\":true}")).await.unwrap();
    views.changed().await.unwrap();
    let view = views.borrow_and_update().clone();
    assert_eq!((view.applied_index, view.state_hash), (applied.index, applied.state_hash));
    let active = view.active_policy.as_ref().unwrap();
    assert_eq!((active.version, &*active.document), (1, "{\"first\":true}"));

    store.write_at("tester", T0, put("{\"second\":true}")).await.unwrap();
    store.write_at("tester", T0, Command::ActivatePolicy { version: 1 }).await.unwrap();
    views.changed().await.unwrap();
    // The view always converges on the latest applied state, even if a reader skips some.
    let view = views.borrow_and_update().clone();
    assert_eq!(view.applied_index, store.status().applied_index);
    assert_eq!(view.active_policy.as_ref().unwrap().version, 1);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_policies_tokens_settings_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let applied = write_all(&store, history()).await;
    let before = store.read(content);
    let status_before = store.status();
    store.shutdown().await.unwrap();

    let store = open(dir.path()).await;
    assert_eq!(store.read(content), before);
    // A lone voter resumes leadership with its stored vote; if it started a new term, that
    // term's blank entry would be the only addition.
    let status = store.status();
    assert_eq!(status_before.applied_index, applied.last().unwrap().index);
    if status.term == status_before.term {
        assert_eq!((status.applied_index, status.state_hash), (status_before.applied_index, status_before.state_hash));
    } else {
        assert_eq!(status.applied_index, status_before.applied_index + 1);
    }
    let next = store.write_at("tester", T0, put("{\"after\":true}")).await.unwrap();
    assert_eq!(next.response, Ok(Outcome::PolicyStored { version: 4, evicted: vec![2] }));
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_identity_is_minted_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let id = store.ensure_cluster_identity("seed").await.unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(store.ensure_cluster_identity("seed").await.unwrap(), id);
    store.shutdown().await.unwrap();

    let store = open(dir.path()).await;
    assert_eq!(store.ensure_cluster_identity("seed").await.unwrap(), id);
    let other = tempfile::tempdir().unwrap();
    let other_store = open(other.path()).await;
    assert_ne!(other_store.ensure_cluster_identity("seed").await.unwrap(), id);
    store.shutdown().await.unwrap();
    other_store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fed_the_same_requests_report_the_same_hash_at_each_index() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(dir_a.path()).await, open(dir_b.path()).await);
    let applied_a = write_all(&a, history()).await;
    let applied_b = write_all(&b, history()).await;
    assert_eq!(applied_a, applied_b);
    assert_eq!(a.read(content), b.read(content));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_the_log_gives_the_same_hash_at_every_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let applied = write_all(&store, history()).await;
    let final_status = store.status();
    store.shutdown().await.unwrap();

    let replayed = replay(dir.path(), None).unwrap();
    assert_eq!(replayed.snapshot_index, 0);
    for write in &applied {
        let point = replayed.points.iter().find(|p| p.index == write.index).expect("the entry is in the log");
        assert_eq!(point.state_hash, write.state_hash, "index {}", write.index);
    }
    assert_eq!(replayed.state.applied_index(), final_status.applied_index);
    assert_eq!(replayed.state.state_hash(), final_status.state_hash);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_log_purges_keep_the_state_and_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { snapshot_every: 8, ..StoreConfig::single_node(dir.path()) };
    let store = Store::open_single_node(config.clone()).await.unwrap();
    let mut applied = write_all(&store, history()).await;
    applied.extend(write_all(&store, (0..30).map(|n| put(&format!("{{\"n\":{n}}}"))).collect()).await);
    // Snapshots are built in the background; wait for one that covers most of the log.
    let last_index = applied.last().unwrap().index;
    store
        .raft()
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index + 8 >= last_index), "a recent snapshot")
        .await
        .expect("a snapshot is built");
    let before = store.read(content);
    let status_before = store.status();
    store.shutdown().await.unwrap();

    let replayed = replay(dir.path(), None).unwrap();
    assert!(replayed.snapshot_index > 0, "the replay starts from the snapshot");
    assert_eq!(replayed.state.state_hash(), status_before.state_hash);
    for point in &replayed.points {
        let write = applied.iter().find(|w| w.index == point.index);
        if let Some(write) = write {
            assert_eq!(point.state_hash, write.state_hash);
        }
    }

    let store = Store::open_single_node(config).await.unwrap();
    assert_eq!(store.read(content), before);
    store.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_database_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(sluice_store::storage::DB_FILE), b"this is not a database").unwrap();
    let error = Store::open_single_node(StoreConfig::single_node(dir.path())).await.err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("store.redb"), "{message}");
    assert_ne!(StateHash::default().to_hex(), message);
}
