//! The write transaction one catalog command is applied in: a rocksdb write batch plus the values
//! the command has written so far, so that a command reading a key it already changed (a usage
//! counter touched by two links, an image record touched by a tag move and a push) sees its own
//! write. The batch is written with the new applied position in one atomic write.

use std::collections::HashMap;

use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::db::Db;

/// A failure of the local store while applying (never a rejection of the command).
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("column family {0} missing")]
    MissingFamily(String),
    #[error(transparent)]
    Db(#[from] rocksdb::Error),
    #[error("catalog record does not decode: {0}")]
    Decode(#[from] bincode::Error),
}

fn family<'d>(db: &'d Db, name: &str) -> Result<&'d rocksdb::ColumnFamily, TxnError> {
    db.cf_handle(name)
        .ok_or_else(|| TxnError::MissingFamily(name.to_string()))
}

/// A key and its value as stored.
pub type KeyValue = (Vec<u8>, Vec<u8>);

pub struct Txn {
    db: Db,
    batch: WriteBatch,
    /// Written in this transaction: `Some(bytes)` put, `None` deleted.
    written: HashMap<(&'static str, Vec<u8>), Option<Vec<u8>>>,
}

impl Txn {
    pub fn new(db: Db) -> Txn {
        Txn {
            db,
            batch: WriteBatch::default(),
            written: HashMap::new(),
        }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, TxnError> {
        family(&self.db, name)
    }

    /// The raw value of `key`, as this transaction left it.
    pub fn get_raw(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, TxnError> {
        if let Some(written) = self.written.get(&(cf, key.to_vec())) {
            return Ok(written.clone());
        }
        Ok(self.db.get_pinned_cf(self.cf(cf)?, key)?.map(|v| v.to_vec()))
    }

    pub fn get<T: DeserializeOwned>(&self, cf: &'static str, key: &[u8]) -> Result<Option<T>, TxnError> {
        match self.get_raw(cf, key)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(bincode::deserialize(&bytes)?)),
        }
    }

    pub fn exists(&self, cf: &'static str, key: &[u8]) -> Result<bool, TxnError> {
        if let Some(written) = self.written.get(&(cf, key.to_vec())) {
            return Ok(written.is_some());
        }
        Ok(self.db.get_pinned_cf(self.cf(cf)?, key)?.is_some())
    }

    pub fn put_raw(&mut self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<(), TxnError> {
        self.batch.put_cf(family(&self.db, cf)?, key, value);
        self.written.insert((cf, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    pub fn put<T: Serialize>(&mut self, cf: &'static str, key: &[u8], value: &T) -> Result<(), TxnError> {
        let bytes = bincode::serialize(value)?;
        self.put_raw(cf, key, &bytes)
    }

    pub fn delete(&mut self, cf: &'static str, key: &[u8]) -> Result<(), TxnError> {
        self.batch.delete_cf(family(&self.db, cf)?, key);
        self.written.insert((cf, key.to_vec()), None);
        Ok(())
    }

    /// Keys under `prefix` as the store holds them before this transaction (with their values).
    pub fn scan_committed(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<KeyValue>, TxnError> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(cf)?, prefix) {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Up to `limit` committed keys at or after `start` that still begin with `prefix`, in key
    /// order (a bounded read of one range).
    pub fn committed_keys_from(
        &self,
        cf: &'static str,
        start: &[u8],
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, TxnError> {
        let mut out = Vec::new();
        let mode = rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(cf)?, mode) {
            let (key, _) = item?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push(key.to_vec());
        }
        Ok(out)
    }

    /// Keys under `prefix` as this transaction sees them: committed ones not deleted here, plus
    /// ones written here.
    pub fn scan_keys(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<Vec<u8>>, TxnError> {
        let mut keys: Vec<Vec<u8>> = self
            .scan_committed(cf, prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !matches!(self.written.get(&(cf, k.clone())), Some(None)))
            .collect();
        for ((family, key), value) in &self.written {
            if *family == cf && key.starts_with(prefix) && value.is_some() && !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys.sort();
        Ok(keys)
    }

    pub fn into_batch(self) -> WriteBatch {
        self.batch
    }
}
