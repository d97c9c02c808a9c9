//! Everything that touches redb: the Raft log, the vote, the committed index and the latest
//! snapshot, all in one database file. The rest of the crate sees only `LogStore`,
//! `StateMachineStore` and `replay`; no redb type leaves this module.
//!
//! Durability: a log append, a truncation, a purge, a vote and a snapshot are each one redb
//! transaction committed with `Durability::Immediate` (fsync) before Raft is told they are
//! done. The committed index is saved without fsync (it is a hint for a faster restart; a
//! lost one only means the leader re-commits on its first term). The state machine itself is
//! not written on apply: on start it is the latest snapshot plus the log replayed.

mod log;
mod machine;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};

pub use log::LogStore;
pub(crate) use machine::{apply_entry, Shared};
pub use machine::{SnapshotBuilder, StateMachineStore};

use crate::raft::{Entry, SnapshotMeta};
use crate::state::{decode_image, ImageError, State};

/// The database file inside the store's data directory.
pub const DB_FILE: &str = "store.redb";

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Keys: `vote`, `committed`, `last_purged`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// Keys: `meta` (serde JSON of the snapshot meta), `data` (the state image).
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// A storage failure, with what was being done.
#[derive(Debug)]
pub enum DbError {
    Redb(redb::Error),
    Codec(serde_json::Error),
    Image(ImageError),
    Inconsistent(String),
    Task(String),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Redb(e) => write!(f, "database: {e}"),
            DbError::Codec(e) => write!(f, "stored record does not decode: {e}"),
            DbError::Image(e) => write!(f, "{e}"),
            DbError::Inconsistent(reason) => write!(f, "store is inconsistent: {reason}"),
            DbError::Task(reason) => write!(f, "storage task failed: {reason}"),
        }
    }
}

impl std::error::Error for DbError {}

macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for DbError {
            fn from(e: $error) -> DbError {
                DbError::Redb(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<serde_json::Error> for DbError {
    fn from(e: serde_json::Error) -> DbError {
        DbError::Codec(e)
    }
}

impl From<ImageError> for DbError {
    fn from(e: ImageError) -> DbError {
        DbError::Image(e)
    }
}

/// Opens (creating if needed) the database in `data_dir` and makes sure every table exists.
pub fn open_database(data_dir: &Path) -> Result<Arc<Database>, DbError> {
    let db = Database::create(data_dir.join(DB_FILE))?;
    let txn = db.begin_write()?;
    txn.open_table(LOG)?;
    txn.open_table(META)?;
    txn.open_table(SNAPSHOT)?;
    txn.commit()?;
    Ok(Arc::new(db))
}

/// Runs blocking database work off the async worker threads.
async fn blocking<T, F>(work: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DbError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| DbError::Task(e.to_string()))?
}

/// Writes in one transaction with the given durability.
fn write_with<T>(
    db: &Database,
    durability: Durability,
    work: impl FnOnce(&WriteTransaction) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    let value = work(&txn)?;
    txn.commit()?;
    Ok(value)
}

fn read_meta<T: serde::de::DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(META)?;
    match table.get(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
        None => Ok(None),
    }
}

fn read_snapshot(db: &Database) -> Result<Option<(SnapshotMeta, Vec<u8>)>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SNAPSHOT)?;
    let (Some(meta), Some(data)) = (table.get("meta")?, table.get("data")?) else {
        return Ok(None);
    };
    Ok(Some((serde_json::from_slice(meta.value())?, data.value().to_vec())))
}

/// One applied index and the state hash there, as a replay computed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayPoint {
    pub index: u64,
    pub state_hash: crate::state::StateHash,
}

/// The result of replaying a store's snapshot and log from its files.
#[derive(Clone, Debug)]
pub struct Replay {
    /// The index the latest snapshot covers (0 without one).
    pub snapshot_index: u64,
    /// The hash at the snapshot's index (when there is a snapshot), then after every later log
    /// entry, in order.
    pub points: Vec<ReplayPoint>,
    /// The state after the last entry replayed.
    pub state: State,
}

/// Recomputes the state from the files of a closed store: the latest snapshot, then every log
/// entry after it up to `up_to` (all of them when `None`). Nothing is written.
pub fn replay(data_dir: &Path, up_to: Option<u64>) -> Result<Replay, DbError> {
    let db = Database::open(data_dir.join(DB_FILE))?;
    // Raft's first entry (the initial membership) has index 0, so "covered up to" is
    // `Option`al: `None` means no entry has been applied yet.
    let (covered, mut state) = match read_snapshot(&db)? {
        Some((meta, data)) => (meta.last_log_id.map(|id| id.index), decode_image(&data)?),
        None => (None, State::default()),
    };
    let snapshot_index = covered.unwrap_or(0);
    let first = covered.map_or(0, |index| index + 1);
    let txn = db.begin_read()?;
    let table = txn.open_table(LOG)?;
    let mut points = Vec::new();
    if let Some(index) = covered {
        points.push(ReplayPoint { index, state_hash: state.state_hash() });
    }
    for row in table.range(first..)? {
        let (index, bytes) = row?;
        let index = index.value();
        if up_to.is_some_and(|limit| index > limit) {
            break;
        }
        let entry: Entry = serde_json::from_slice(bytes.value())?;
        if entry.log_id.index != index {
            return Err(DbError::Inconsistent(format!("log row {index} holds entry {}", entry.log_id.index)));
        }
        let result = apply_entry(&mut state, &entry);
        points.push(ReplayPoint { index, state_hash: result.state_hash });
    }
    Ok(Replay { snapshot_index, points, state })
}

/// Where a restored store starts: the restored state is its snapshot at `last_applied`, with
/// `membership` (the restored node alone) as the configuration of that snapshot.
pub struct RestoredStart {
    pub last_applied: crate::raft::LogId,
    pub membership: openraft::Membership<crate::raft::NodeId, openraft::BasicNode>,
    pub node_id: crate::raft::NodeId,
}

/// Writes a new store in `data_dir` whose only content is `state` as its snapshot (the
/// offline half of a restore): Raft starts from it, purges the log up to it, and this node,
/// the one voter of `start.membership`, elects itself at a term above the snapshot's.
///
/// The vote is saved at the snapshot's term so that the first election is for a higher
/// term than every entry in the snapshot (a leader's entries must never carry a lower term
/// than the entries before them). Refuses to touch an existing database.
pub fn write_restored(data_dir: &Path, state: &State, start: RestoredStart) -> Result<(), DbError> {
    if data_dir.join(DB_FILE).exists() {
        return Err(DbError::Inconsistent(format!(
            "{} already exists; a restore writes only into an empty store directory",
            data_dir.join(DB_FILE).display()
        )));
    }
    if state.applied_index() != start.last_applied.index {
        return Err(DbError::Inconsistent(format!(
            "the state is at index {} but the restore starts at {}",
            state.applied_index(),
            start.last_applied.index
        )));
    }
    let image = crate::state::encode_image(state);
    let membership = crate::raft::StoredMembership::new(Some(start.last_applied), start.membership);
    let snapshot_id = format!(
        "restored-{}-{}-{}",
        start.last_applied.leader_id,
        start.last_applied.index,
        &state.state_hash().to_hex()[..16]
    );
    let meta = SnapshotMeta { last_log_id: Some(start.last_applied), last_membership: membership, snapshot_id };
    let vote = openraft::Vote::new(start.last_applied.leader_id.term, start.node_id);
    let db = open_database(data_dir)?;
    let (meta, vote) = (serde_json::to_vec(&meta)?, serde_json::to_vec(&vote)?);
    write_with(&db, Durability::Immediate, |txn| {
        let mut snapshot = txn.open_table(SNAPSHOT)?;
        snapshot.insert("meta", meta.as_slice())?;
        snapshot.insert("data", image.as_slice())?;
        txn.open_table(META)?.insert("vote", vote.as_slice())?;
        Ok(())
    })
}
