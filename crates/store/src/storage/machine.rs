//! The state machine (openraft v2 `RaftStateMachine`): the pure `State` in memory, snapshots
//! in redb, and the applied view published to subscribers.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, SnapshotId, StorageIOError};
use redb::{Database, Durability};
use tokio::sync::watch;

use super::{blocking, read_snapshot, write_with, DbError, SNAPSHOT};
use crate::raft::{ApplyResult, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state::{decode_image, encode_image, Outcome, State};
use crate::view::AppliedView;

/// Applies one log entry to the state: the single definition used by the live state machine
/// and by offline replay, so both compute the same hash.
pub(crate) fn apply_entry(state: &mut State, entry: &Entry) -> ApplyResult {
    let index = entry.log_id.index;
    let outcome = match &entry.payload {
        EntryPayload::Blank => {
            state.apply_blank(index);
            Ok(Outcome::Internal)
        }
        EntryPayload::Normal(request) => state.apply(index, request),
        EntryPayload::Membership(membership) => {
            state.apply_membership(index, &canonical_membership(membership));
            Ok(Outcome::Internal)
        }
    };
    ApplyResult { index, outcome, state_hash: state.state_hash() }
}

/// Voter sets and node addresses in a fixed order and encoding of our own, so the hash does
/// not depend on how openraft serializes its types.
fn canonical_membership(membership: &openraft::Membership<u64, openraft::BasicNode>) -> Vec<u8> {
    let configs: Vec<Vec<u64>> =
        membership.get_joint_config().iter().map(|set| set.iter().copied().collect()).collect();
    let nodes: Vec<(u64, &str)> = membership.nodes().map(|(id, node)| (*id, node.addr.as_str())).collect();
    serde_json::to_vec(&(configs, nodes)).expect("membership serializes")
}

/// What the `Store` handle and the state machine share: the state for reads and the channel
/// announcing each newly applied view.
pub(crate) struct Shared {
    pub(crate) state: RwLock<State>,
    /// The Raft log id and membership of the last applied entry. Only written while the
    /// `state` write lock is held, so a reader holding the `state` read lock sees the pair
    /// that belongs to the state it reads (a snapshot is consistent at one index).
    pub(crate) position: RwLock<(Option<LogId>, StoredMembership)>,
    pub(crate) view: watch::Sender<Arc<AppliedView>>,
}

impl Shared {
    pub(crate) fn new(state: State, last_applied: Option<LogId>, membership: StoredMembership) -> Arc<Shared> {
        let view = Arc::new(AppliedView::of(&state));
        Arc::new(Shared {
            state: RwLock::new(state),
            position: RwLock::new((last_applied, membership)),
            view: watch::Sender::new(view),
        })
    }

    fn set_position(&self, last_applied: Option<LogId>, membership: &StoredMembership) {
        let mut position = self.position.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *position = (last_applied, membership.clone());
    }

    fn publish(&self, state: &State) {
        let view = AppliedView::of(state);
        self.view.send_if_modified(|current| {
            if current.applied_index == view.applied_index && current.state_hash == view.state_hash {
                return false;
            }
            *current = Arc::new(view);
            true
        });
    }
}

pub struct StateMachineStore {
    db: Arc<Database>,
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

impl StateMachineStore {
    /// Loads the latest snapshot, if any; Raft re-applies the committed log after it.
    pub(crate) fn open(db: Arc<Database>) -> Result<(StateMachineStore, Arc<Shared>), DbError> {
        let (state, last_applied, last_membership) = match read_snapshot(&db)? {
            Some((meta, data)) => {
                let state = decode_image(&data)?;
                let covered = meta.last_log_id.map_or(0, |id| id.index);
                if state.applied_index() != covered {
                    return Err(DbError::Inconsistent(format!(
                        "snapshot meta covers index {covered} but its state is at {}",
                        state.applied_index()
                    )));
                }
                (state, meta.last_log_id, meta.last_membership)
            }
            None => (State::default(), None, StoredMembership::default()),
        };
        let shared = Shared::new(state, last_applied, last_membership.clone());
        Ok((StateMachineStore { db, shared: shared.clone(), last_applied, last_membership }, shared))
    }

    /// Opens the state machine without a `Store` around it (storage tests, tools).
    pub fn open_detached(db: Arc<Database>) -> Result<StateMachineStore, DbError> {
        Ok(StateMachineStore::open(db)?.0)
    }
}

fn sm_write_error(e: &DbError) -> StorageError {
    StorageIOError::write_state_machine(e).into()
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut state = self.shared.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in entries {
            results.push(apply_entry(&mut state, &entry));
            if let EntryPayload::Membership(membership) = entry.payload {
                self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            self.last_applied = Some(entry.log_id);
        }
        self.shared.set_position(self.last_applied, &self.last_membership);
        self.shared.publish(&state);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let state = self.shared.state.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        SnapshotBuilder {
            db: self.db.clone(),
            state,
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        let state = decode_image(&data).map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        let covered = meta.last_log_id.map_or(0, |id| id.index);
        if state.applied_index() != covered {
            let e = DbError::Inconsistent(format!(
                "snapshot meta covers index {covered} but its state is at {}",
                state.applied_index()
            ));
            return Err(StorageIOError::read_snapshot(signature, &e).into());
        }
        save_snapshot(&self.db, meta.clone(), data).await.map_err(|e| sm_write_error(&e))?;
        let mut current = self.shared.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = state;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.shared.set_position(self.last_applied, &self.last_membership);
        self.shared.publish(&current);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let db = self.db.clone();
        let stored = blocking(move || read_snapshot(&db)).await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

async fn save_snapshot(db: &Arc<Database>, meta: SnapshotMeta, data: Vec<u8>) -> Result<(), DbError> {
    let meta_bytes = serde_json::to_vec(&meta)?;
    let db = db.clone();
    blocking(move || {
        write_with(&db, Durability::Immediate, |txn| {
            let mut table = txn.open_table(SNAPSHOT)?;
            table.insert("meta", meta_bytes.as_slice())?;
            table.insert("data", data.as_slice())?;
            Ok(())
        })
    })
    .await
}

/// A copy of the state taken when Raft asked for a snapshot; building it writes the image.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    state: State,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = encode_image(&self.state);
        let snapshot_id: SnapshotId = match self.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, &self.state.state_hash().to_hex()[..16]),
            None => format!("empty-{}", &self.state.state_hash().to_hex()[..16]),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.last_membership.clone(), snapshot_id };
        save_snapshot(&self.db, meta.clone(), data.clone())
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{BasicNode, Membership};

    use super::{canonical_membership, save_snapshot, StateMachineStore};
    use crate::raft::SnapshotMeta;
    use crate::state::{encode_image, ImageError, State, SCHEMA_VERSION};
    use crate::storage::{open_database, DbError};

    #[tokio::test]
    async fn a_snapshot_from_a_newer_schema_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(dir.path()).unwrap();
        let mut image: serde_json::Value = serde_json::from_slice(&encode_image(&State::default())).unwrap();
        image["schema_version"] = serde_json::json!(SCHEMA_VERSION + 1);
        save_snapshot(&db, SnapshotMeta::default(), serde_json::to_vec(&image).unwrap()).await.unwrap();
        match StateMachineStore::open(db) {
            Err(DbError::Image(ImageError::TooNew { found, .. })) => assert_eq!(found, SCHEMA_VERSION + 1),
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a newer schema was accepted"),
        }
    }

    #[tokio::test]
    async fn a_snapshot_whose_state_disagrees_with_its_meta_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(dir.path()).unwrap();
        let mut state = State::default();
        state.apply_blank(5);
        save_snapshot(&db, SnapshotMeta::default(), encode_image(&state)).await.unwrap();
        let error = StateMachineStore::open(db).err().expect("refused");
        assert!(matches!(error, DbError::Inconsistent(_)), "{error}");
    }

    /// A data root written by the schema-1 release: its snapshot holds a schema-1 image. The
    /// store opens it, migrates it forward, and the node carries on from it.
    #[tokio::test]
    async fn a_data_root_of_the_previous_schema_opens_migrated_and_takes_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_database(dir.path()).unwrap();
        let image = include_bytes!("../../tests/fixtures/state-schema-1.json").to_vec();
        let last = openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 7);
        let members = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, BasicNode::default())]));
        let meta = SnapshotMeta {
            last_log_id: Some(last),
            last_membership: crate::raft::StoredMembership::new(Some(last), members),
            snapshot_id: "schema-1".into(),
        };
        save_snapshot(&db, meta, image).await.unwrap();
        drop(db);
        let store = crate::Store::open_single_node(crate::StoreConfig::single_node(dir.path())).await.unwrap();
        let (schema, cluster, versions) = store.read(|s| {
            (s.schema_version(), s.cluster().cloned(), s.policy_versions().map(|p| p.version).collect::<Vec<_>>())
        });
        assert_eq!(schema, SCHEMA_VERSION);
        let cluster = cluster.unwrap();
        assert_eq!((cluster.cluster_id.as_str(), cluster.created_at_ms), ("c-v1", 1_700_000_000_002));
        assert_eq!(versions, vec![1, 2]);
        let applied = store
            .write("test", crate::state::Command::PutPolicy { document: "{}".into(), comment: String::new() })
            .await
            .unwrap();
        assert!(applied.index > 7);
        assert_eq!(store.read(|s| s.active_policy().map(|p| p.version)), Some(3), "version numbers carry on");
        store.shutdown().await.unwrap();
    }

    #[test]
    fn the_membership_encoding_is_our_own_and_pinned() {
        let nodes = BTreeMap::from([(1, BasicNode::new("10.0.0.1:9600")), (2, BasicNode::default())]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        let encoded = String::from_utf8(canonical_membership(&membership)).unwrap();
        assert_eq!(encoded, r#"[[[1,2]],[[1,"10.0.0.1:9600"],[2,""]]]"#);
    }
}
