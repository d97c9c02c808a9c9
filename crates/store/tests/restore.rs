//! Restoring a store from a captured state: the new store starts at the captured index with
//! the captured hash, elects its one voter at a higher term, and takes writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, Membership};
use sluice_store::state::{hash_token_secret, Command, Outcome, RestoreSource, Role};
use sluice_store::storage::{replay, write_restored, RestoredStart};
use sluice_store::{Store, StoreConfig};

async fn open(dir: &Path) -> Store {
    Store::open_single_node(StoreConfig::single_node(dir)).await.expect("the store opens")
}

fn alone(node_id: u64) -> Membership<u64, BasicNode> {
    Membership::new(vec![BTreeSet::from([node_id])], BTreeMap::from([(node_id, BasicNode::default())]))
}

#[tokio::test]
async fn a_captured_state_restores_at_its_index_and_hash_and_takes_writes() {
    let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = open(old.path()).await;
    let cluster_id = store.ensure_cluster_identity("test").await.unwrap();
    for n in 0..5 {
        store
            .write("test", Command::PutPolicy { document: format!("{{\"v\":{n}}}"), comment: String::new() })
            .await
            .unwrap();
    }
    store
        .write(
            "test",
            Command::MintToken {
                id: "ops".into(),
                role: Role::Admin,
                secret_hash: hash_token_secret("s"),
                label: String::new(),
                expires_at_ms: None,
            },
        )
        .await
        .unwrap();
    let capture = store.capture();
    let last = capture.last_applied.expect("entries were applied");
    assert_eq!(last.index, capture.state.applied_index(), "state and Raft position are one capture");
    assert_eq!(capture.membership.voter_ids().collect::<Vec<_>>(), vec![1]);
    store.shutdown().await.unwrap();

    write_restored(new.path(), &capture.state, RestoredStart { last_applied: last, membership: alone(1), node_id: 1 })
        .unwrap();
    let replayed = replay(new.path(), None).unwrap();
    assert_eq!(replayed.snapshot_index, last.index);
    assert_eq!(replayed.state.state_hash(), capture.state.state_hash(), "the restored hash is the captured one");

    let restored = open(new.path()).await;
    let status = restored.status();
    assert!(status.applied_index > last.index, "a new leader's blank entry follows the restored index");
    assert!(status.term > last.leader_id.term, "the first term after a restore is above the snapshot's");
    assert_eq!(restored.read(|s| s.policy_versions().count()), 5);
    assert!(restored.read(|s| s.token("ops").is_some()));
    let from = RestoreSource {
        cluster_id: cluster_id.clone(),
        index: last.index,
        state_hash: capture.state.state_hash(),
        snapshot_created_at_ms: 1,
    };
    let applied =
        restored.write("restore", Command::RestoreCluster { cluster_id: "fresh".into(), from }).await.unwrap();
    assert_eq!(
        applied.response,
        Ok(Outcome::ClusterRestored { cluster_id: "fresh".into(), from_cluster_id: cluster_id })
    );
    restored.shutdown().await.unwrap();

    // Restart: the restored snapshot plus the new log replay to the same state.
    let again = open(new.path()).await;
    assert_eq!(again.read(|s| s.cluster().map(|c| c.cluster_id.clone())), Some("fresh".into()));
    again.shutdown().await.unwrap();

    // A second restore into the same directory is refused.
    let error = write_restored(
        new.path(),
        &capture.state,
        RestoredStart { last_applied: last, membership: alone(1), node_id: 1 },
    )
    .unwrap_err();
    assert!(error.to_string().contains("already exists"), "{error}");
}
