//! openraft's own storage conformance suite, run against the redb log and state machine on
//! real files.

use openraft::testing::{StoreBuilder, Suite};
use sluice_store::raft::{StorageError, TypeConfig};
use sluice_store::storage::{open_database, LogStore, StateMachineStore};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = open_database(dir.path()).expect("a fresh database");
        let state_machine = StateMachineStore::open_detached(db.clone()).expect("an empty state machine");
        Ok((dir, LogStore::new(db), state_machine))
    }
}

#[test]
fn redb_storage_passes_the_openraft_suite() {
    Suite::test_all(RedbBuilder).expect("every conformance test passes");
}
