//! The write transaction one catalog command is applied in: a rocksdb write batch plus the values
//! the command has written so far, so that a command reading a key it already changed (a usage
//! counter touched by two links, an image record touched by a tag move and a push) sees its own
//! write. The batch is written with the new applied position in one atomic write.
//!
//! An entry may carry several commands (group commit, `write_batch`): each runs after a
//! [`Txn::savepoint`], so a rejected one is rolled back ([`Txn::rollback`]) while the writes
//! of those before it stay. The rocksdb batch is therefore built from the final state of every
//! key only when the transaction ends ([`Txn::into_batch`]).

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

type WrittenKey = (&'static str, Vec<u8>);
/// A written key and its state before the write (`None`: not written before in this transaction).
type Undo = (WrittenKey, Option<Option<Vec<u8>>>);

pub struct Txn {
    db: Db,
    /// Written in this transaction: `Some(bytes)` put, `None` deleted.
    written: HashMap<WrittenKey, Option<Vec<u8>>>,
    /// What was overwritten since the last savepoint (`None`: none was made), oldest first.
    undo: Option<Vec<Undo>>,
}

impl Txn {
    pub fn new(db: Db) -> Txn {
        Txn {
            db,
            written: HashMap::new(),
            undo: None,
        }
    }

    /// Marks the point [`Txn::rollback`] returns to (forgetting the previous one).
    pub fn savepoint(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Undoes every write since the last savepoint (everything, when none was made).
    pub fn rollback(&mut self) {
        let Some(undo) = self.undo.as_mut() else {
            self.written.clear();
            return;
        };
        while let Some((key, before)) = undo.pop() {
            match before {
                Some(value) => self.written.insert(key, value),
                None => self.written.remove(&key),
            };
        }
    }

    fn write(&mut self, cf: &'static str, key: &[u8], value: Option<Vec<u8>>) -> Result<(), TxnError> {
        self.cf(cf)?;
        let before = self.written.insert((cf, key.to_vec()), value);
        if let Some(undo) = self.undo.as_mut() {
            undo.push(((cf, key.to_vec()), before));
        }
        Ok(())
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
        self.write(cf, key, Some(value.to_vec()))
    }

    pub fn put<T: Serialize>(&mut self, cf: &'static str, key: &[u8], value: &T) -> Result<(), TxnError> {
        let bytes = bincode::serialize(value)?;
        self.put_raw(cf, key, &bytes)
    }

    pub fn delete(&mut self, cf: &'static str, key: &[u8]) -> Result<(), TxnError> {
        self.write(cf, key, None)
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

    /// The rocksdb batch of every key's final state.
    pub fn into_batch(self) -> Result<WriteBatch, TxnError> {
        let mut batch = WriteBatch::default();
        for ((cf, key), value) in self.written {
            let family = family(&self.db, cf)?;
            match value {
                Some(value) => batch.put_cf(family, key, value),
                None => batch.delete_cf(family, key),
            }
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{CF_REPOS, CF_TAGS};

    fn state(tx: &Txn, cf: &'static str, key: &[u8]) -> Option<Vec<u8>> {
        tx.get_raw(cf, key).unwrap()
    }

    #[test]
    fn a_rollback_undoes_only_what_followed_its_savepoint_and_the_batch_holds_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        db.put_cf(db.cf_handle(CF_TAGS).unwrap(), b"committed", b"0").unwrap();

        let mut tx = Txn::new(db.clone());
        tx.put_raw(CF_TAGS, b"a", b"1").unwrap();
        tx.savepoint();
        tx.put_raw(CF_TAGS, b"a", b"2").unwrap();
        tx.put_raw(CF_TAGS, b"b", b"1").unwrap();
        tx.delete(CF_TAGS, b"committed").unwrap();
        assert_eq!(state(&tx, CF_TAGS, b"a"), Some(b"2".to_vec()));
        assert_eq!(state(&tx, CF_TAGS, b"committed"), None);
        tx.rollback();
        // Back to the savepoint: the first write stays, the later ones are gone.
        assert_eq!(state(&tx, CF_TAGS, b"a"), Some(b"1".to_vec()));
        assert_eq!(state(&tx, CF_TAGS, b"b"), None);
        assert_eq!(state(&tx, CF_TAGS, b"committed"), Some(b"0".to_vec()));
        // A later savepoint keeps what came before it.
        tx.savepoint();
        tx.put_raw(CF_REPOS, b"r", b"x").unwrap();
        tx.savepoint();
        tx.put_raw(CF_REPOS, b"r", b"y").unwrap();
        tx.rollback();
        assert_eq!(state(&tx, CF_REPOS, b"r"), Some(b"x".to_vec()));

        db.write(tx.into_batch().unwrap()).unwrap();
        let read = |cf: &str, key: &[u8]| db.get_cf(db.cf_handle(cf).unwrap(), key).unwrap();
        assert_eq!(read(CF_TAGS, b"a"), Some(b"1".to_vec()));
        assert_eq!(read(CF_TAGS, b"b"), None);
        assert_eq!(read(CF_TAGS, b"committed"), Some(b"0".to_vec()));
        assert_eq!(read(CF_REPOS, b"r"), Some(b"x".to_vec()));
    }

    #[test]
    fn without_a_savepoint_a_rollback_undoes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let mut tx = Txn::new(db.clone());
        tx.put_raw(CF_TAGS, b"a", b"1").unwrap();
        tx.rollback();
        assert_eq!(state(&tx, CF_TAGS, b"a"), None);
        assert_eq!(tx.into_batch().unwrap().len(), 0);
    }
}
