//! Snapshot and restore of a real cluster in one process (loopback, mutual TLS, fsync): a
//! snapshot with secrets taken on a follower, the cluster destroyed, the restore started as
//! the seed of a new cluster, a fresh node joining it, and an old member refused by it.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_cluster::identity::ClusterPaths;
use sluice_cluster::{Cluster, ClusterConfig, Role};
use sluice_lifecycle::layout::DataRoot;
use sluice_lifecycle::repository::{Kind, Repository};
use sluice_lifecycle::restore::{restore, RestoreError, RestoreOptions};
use sluice_lifecycle::snapshot::{collect_secrets, create, verify, Writer};
use sluice_store::state::{hash_token_secret, Command, Role as TokenRole};
use sluice_store::Store;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn config(dir: &Path, join: Option<String>) -> ClusterConfig {
    let (port, join_port) = (free_port(), free_port());
    ClusterConfig {
        store_dir: dir.join("store"),
        paths: ClusterPaths::under(dir),
        bind: SocketAddr::from(([127, 0, 0, 1], port)),
        join_bind: SocketAddr::from(([127, 0, 0, 1], join_port)),
        advertise: format!("127.0.0.1:{port}"),
        join,
        expected_cluster_id: None,
    }
}

async fn start(config: &ClusterConfig) -> (Cluster, Arc<Store>) {
    Cluster::start(config).await.unwrap_or_else(|e| panic!("start: {e}"))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop(cluster: Cluster, store: Arc<Store>) {
    cluster.shutdown().await;
    drop(cluster);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_destroyed_cluster_is_restored_as_a_new_one_that_old_members_cannot_join() {
    let old: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let seed_config = config(old[0].path(), None);
    let (seed, seed_store) = start(&seed_config).await;
    let token = std::fs::read_to_string(&seed_config.paths.bootstrap_token_path).unwrap();
    std::fs::write(old[1].path().join("bootstrap-token"), &token).unwrap();
    std::fs::write(old[1].path().join("api-key.pem"), "KEY OF THE API\n").unwrap();
    let follower_config = config(old[1].path(), Some(seed_config.join_bind.to_string()));
    let (follower, follower_store) = start(&follower_config).await;
    for n in 0..4 {
        let document = format!("{{\"default_action\":\"deny\",\"source_groups\":[],\"n\":{n}}}");
        follower_store.write("test", Command::PutPolicy { document, comment: format!("v{n}") }).await.unwrap();
    }
    follower_store
        .write(
            "test",
            Command::MintToken {
                id: "ops".into(),
                role: TokenRole::Admin,
                secret_hash: hash_token_secret("ops-secret"),
                label: String::new(),
                expires_at_ms: None,
            },
        )
        .await
        .unwrap();
    let old_cluster_id = seed_store.read(|s| s.cluster().unwrap().cluster_id.clone());
    let leader_index = seed_store.status().applied_index;
    wait_for("the follower to catch up", || follower_store.status().applied_index >= leader_index).await;

    // A snapshot with secrets, taken on the follower, kept in its repository.
    let node_id = follower_store.status().node_id;
    let root = DataRoot::new(old[1].path());
    let secrets = collect_secrets(&root, node_id).unwrap();
    let writer = Writer { release_version: "test".into(), node_id };
    let sluice_snapshot::Written { manifest, bytes, .. } =
        create(&follower_store, &writer, 1_733_000_000_000, Some((&secrets, b"correct horse"))).unwrap();
    assert_eq!(manifest.cluster_id, old_cluster_id);
    assert_eq!(manifest.membership.voters.len(), 2);
    let verified = verify(&bytes).unwrap();
    assert_eq!(verified.state.policy_versions().count(), 4);
    let entry = Repository::new(root.snapshots_dir()).save(Kind::Manual, &manifest, &bytes).unwrap();
    let snapshot_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(&entry.path, snapshot_file.path()).unwrap();

    // The old cluster goes away; the follower's data root stays, as a forgotten old member.
    stop(follower, follower_store).await;
    stop(seed, seed_store).await;

    let new_parent = tempfile::tempdir().unwrap();
    let new_root = new_parent.path().join("data");
    // A wrong passphrase writes nothing.
    let wrong = RestoreOptions {
        snapshot: snapshot_file.path(),
        data_dir: &new_root,
        passphrase: Some(b"wrong"),
        force: false,
        now_ms: 1,
    };
    let error = restore(&wrong, &mut |_| {}).unwrap_err();
    assert!(matches!(error, RestoreError::Snapshot(_)), "{error}");
    assert!(!new_root.exists(), "nothing written");
    assert_eq!(std::fs::read_dir(new_parent.path()).unwrap().count(), 0, "no staging left behind");

    let mut steps = Vec::new();
    let options = RestoreOptions { passphrase: Some(b"correct horse"), ..wrong };
    let report = restore(&options, &mut |step| steps.push(step.to_owned())).unwrap();
    assert!(steps.len() >= 5, "{steps:?}");
    assert_eq!((report.node_id, report.identity_restored), (node_id, true));
    assert_ne!(report.cluster_id, old_cluster_id, "a new cluster id");
    assert_eq!((report.index, report.state_hash.as_str()), (manifest.last_applied.index, manifest.state_hash.as_str()));
    assert_eq!(std::fs::read_to_string(new_root.join("bootstrap-token")).unwrap(), token, "token restored");
    assert_eq!(std::fs::read_to_string(new_root.join("api-key.pem")).unwrap(), "KEY OF THE API\n");

    // A second restore into it is refused without --force; with --force the restored root
    // is moved aside, not deleted.
    assert!(matches!(restore(&options, &mut |_| {}), Err(RestoreError::NotEmpty(_))));

    // The restored node starts as the seed of the new cluster with the restored state.
    let restored_config = config(&new_root, None);
    let (restored, restored_store) = start(&restored_config).await;
    assert_eq!(restored.role, Role::Restored);
    let cluster = restored_store.read(|s| s.cluster().cloned()).unwrap();
    assert_eq!(cluster.cluster_id, report.cluster_id);
    let origin = cluster.descends_from(&old_cluster_id).expect("lineage");
    assert_eq!((origin.index, origin.state_hash.to_hex()), (manifest.last_applied.index, manifest.state_hash.clone()));
    assert_eq!(restored_store.read(|s| s.policy_versions().count()), 4);
    assert!(restored_store.read(|s| s.token("ops").is_some()));
    assert!(!new_root.join("cluster/restored-from.json").exists(), "the marker is gone once the rename is applied");

    // A fresh node joins the new cluster with the (restored) bootstrap token.
    let fresh = tempfile::tempdir().unwrap();
    std::fs::write(fresh.path().join("bootstrap-token"), &token).unwrap();
    let (joined, joined_store) = start(&config(fresh.path(), Some(restored_config.join_bind.to_string()))).await;
    assert_eq!(joined.role, Role::Joined);
    assert_eq!(joined_store.read(|s| s.policy_versions().count()), 4);
    // The seed goes on applying the join's membership entries meanwhile: compare the two
    // states at one index, once the joiner has reached the seed's.
    wait_for("the joiner to catch up to the seed's index with an equal state hash", || {
        let index = restored_store.status().applied_index;
        joined_store.status().applied_index == index
            && joined_store.read(|s| s.state_hash()) == restored_store.read(|s| s.state_hash())
    })
    .await;

    // The old member, still holding its data root, is refused by the new cluster, and says
    // why: its cluster was restored as another.
    let old_member = config(old[1].path(), Some(restored_config.join_bind.to_string()));
    let refusal = Cluster::start(&old_member).await.err().expect("an old member is refused");
    assert!(
        refusal.contains(&format!(
            "cluster {old_cluster_id} was restored from a snapshot as cluster {}",
            report.cluster_id
        )),
        "{refusal}"
    );
    assert_eq!(restored_store.status().voters.len(), 2, "nothing changed in the new cluster");

    stop(joined, joined_store).await;
    stop(restored, restored_store).await;
}
