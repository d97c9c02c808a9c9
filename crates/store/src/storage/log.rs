//! The Raft log storage (openraft v2 `RaftLogStorage`) on redb.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use redb::{Database, Durability, ReadableTable};

use super::{blocking, read_meta, write_with, DbError, LOG, META};
use crate::raft::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The log, the vote and the committed index. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
        durability: Durability,
    ) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(value)?;
        let db = self.db.clone();
        blocking(move || {
            write_with(&db, durability, |txn| {
                txn.open_table(META)?.insert(key, bytes.as_slice())?;
                Ok(())
            })
        })
        .await
    }

    async fn get_meta<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, DbError> {
        let db = self.db.clone();
        blocking(move || read_meta(&db, key)).await
    }
}

fn read_error(e: DbError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_error(e: DbError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let bounds: (Bound<u64>, Bound<u64>) = (range.start_bound().cloned(), range.end_bound().cloned());
        let db = self.db.clone();
        blocking(move || {
            let txn = redb::ReadableDatabase::begin_read(&*db)?;
            let table = txn.open_table(LOG)?;
            let mut entries = Vec::new();
            for row in table.range(bounds)? {
                let (_, bytes) = row?;
                entries.push(serde_json::from_slice(bytes.value())?);
            }
            Ok(entries)
        })
        .await
        .map_err(read_error)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta("last_purged").await.map_err(read_error)?.flatten();
        let db = self.db.clone();
        let last_entry: Option<Entry> = blocking(move || {
            let txn = redb::ReadableDatabase::begin_read(&*db)?;
            let table = txn.open_table(LOG)?;
            let last = match table.last()? {
                Some((_, bytes)) => Some(serde_json::from_slice(bytes.value())?),
                None => None,
            };
            Ok(last)
        })
        .await
        .map_err(read_error)?;
        let last_log_id = last_entry.map(|entry| entry.log_id).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta("vote", vote, Durability::Immediate).await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta("vote").await.map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // No fsync: losing the last committed index in a crash only delays re-applying
        // entries until the leader commits again; the entries themselves are durable.
        self.put_meta("committed", &committed, Durability::None).await.map_err(write_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>("committed").await.map_err(read_error)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| write_error(e.into()))?;
            rows.push((entry.log_id.index, bytes));
        }
        let db = self.db.clone();
        let result = blocking(move || {
            write_with(&db, Durability::Immediate, |txn| {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &rows {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
        })
        .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            write_with(&db, Durability::Immediate, |txn| {
                txn.open_table(LOG)?.retain_in(log_id.index.., |_, _| false)?;
                Ok(())
            })
        })
        .await
        .map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(&Some(log_id)).map_err(|e| write_error(e.into()))?;
        let db = self.db.clone();
        blocking(move || {
            write_with(&db, Durability::Immediate, |txn| {
                txn.open_table(META)?.insert("last_purged", bytes.as_slice())?;
                txn.open_table(LOG)?.retain_in(..=log_id.index, |_, _| false)?;
                Ok(())
            })
        })
        .await
        .map_err(write_error)
    }
}
