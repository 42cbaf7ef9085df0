//! The Raft log and the vote, in rocksdb, with group commit.
//!
//! `append` writes entries to rocksdb unsynced (so they are readable at once) and hands the
//! flush callback to one flusher task. The flusher takes every callback that queued up, issues a
//! single `fsync` of the write-ahead log and only then reports the entries durable. Many concurrent
//! pushes therefore share one fsync, and nothing is acknowledged before it is on disk.
//!
//! The flusher is a task of the node's runtime (not a detached thread), so it ends, and releases
//! the database, when the log store is dropped or the runtime stops.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};
use tokio::sync::mpsc;

use crate::db::Db;
use crate::keys::*;
use crate::timings::RaftTimings;
use crate::types::{Entry, NodeId, StorageError, TypeConfig};

/// A flush callback and when its entries were handed to the log.
type Waiting = (LogFlushed<TypeConfig>, std::time::Instant);

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    flusher: mpsc::UnboundedSender<Waiting>,
}

impl LogStore {
    pub fn new(db: Db, timings: RaftTimings) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Waiting>();
        tokio::spawn(group_commit(db.clone(), rx, timings));
        LogStore { db, flusher: tx }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db.cf_handle(name).ok_or_else(|| missing_cf(name))
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let raw = self
            .db
            .get_cf(self.cf(CF_RAFT)?, key)
            .map_err(|e| StorageIOError::read(&e))?;
        match raw {
            None => Ok(None),
            Some(bytes) => Ok(Some(
                bincode::deserialize(&bytes).map_err(|e| StorageIOError::read(&e))?,
            )),
        }
    }

    fn put_meta_synced<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let bytes = bincode::serialize(value).map_err(|e| StorageIOError::write(&e))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_RAFT)?, key, bytes);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| StorageIOError::write(&e).into())
    }
}

/// The flusher: one WAL fsync for every batch of callbacks that queued up while the last ran.
async fn group_commit(db: Db, mut rx: mpsc::UnboundedReceiver<Waiting>, timings: RaftTimings) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let flush_db = db.clone();
        let result = match tokio::task::spawn_blocking(move || flush_db.flush_wal(true)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        for (callback, since) in waiting {
            timings.append_seconds.observe(since.elapsed().as_secs_f64());
            callback.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
}

fn missing_cf(name: &str) -> StorageError {
    StorageIOError::read(&std::io::Error::other(format!("column family {name} missing"))).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let cf = self.cf(CF_LOGS)?;
        let mut entries = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&log_key(start), Direction::Forward))
        {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index =
                log_index(&key).ok_or_else(|| StorageIOError::read_logs(&std::io::Error::other("bad log key")))?;
            if !range.contains(&index) {
                break;
            }
            entries.push(bincode::deserialize(&value).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(KEY_LAST_PURGED)?;
        let cf = self.cf(CF_LOGS)?;
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry = bincode::deserialize(&value).map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.log_id)
            }
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta_synced(KEY_VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError> {
        // Unsynced on purpose: it rides on the next synced log write, and a stale value only
        // means re-applying entries that are already applied (apply is keyed by log id).
        let bytes = bincode::serialize(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.db
            .put_cf(self.cf(CF_RAFT)?, KEY_COMMITTED, bytes)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let cf = self.cf(CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = bincode::serialize(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf, log_key(entry.log_id.index), bytes);
        }
        self.db.write(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        self.flusher
            .send((callback, started))
            .map_err(|_| StorageIOError::write_logs(&std::io::Error::other("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let cf = self.cf(CF_LOGS)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_key(log_id.index), log_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.put_meta_synced(KEY_LAST_PURGED, &log_id)?;
        let cf = self.cf(CF_LOGS)?;
        self.db
            .delete_range_cf(cf, log_key(0), log_key(log_id.index + 1))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
