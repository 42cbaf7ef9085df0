//! A read-through cache of the hottest catalog lookups (repositories, tags, manifests, blob links)
//! in front of rocksdb, kept exactly consistent with the applied state.
//!
//! A fence orders the two sides: readers hold it shared across "look up, load from rocksdb, fill
//! the cache"; applying a catalog change holds it exclusively across "write rocksdb, clear the
//! cache". No reader can therefore fill the cache with a value older than the last applied write,
//! and no reader sees a cached value after the write that replaced it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::command::{BlobRecord, ManifestRecord, RepoRecord};

/// Entries per map before it is simply emptied (a crude bound; the cache refills on demand).
const MAX_ENTRIES: usize = 200_000;

pub struct Memo<V> {
    map: Mutex<HashMap<Vec<u8>, V>>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Memo<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, V>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

#[derive(Default)]
pub struct ReadCache {
    fence: RwLock<()>,
    pub repos: Memo<RepoRecord>,
    pub tags: Memo<String>,
    pub manifests: Memo<Arc<ManifestRecord>>,
    pub repo_blobs: Memo<BlobRecord>,
}

impl ReadCache {
    /// Returns the cached value for `key`, or loads it (and caches it when present).
    pub fn read_through<V: Clone, E>(
        &self,
        memo: &Memo<V>,
        key: Vec<u8>,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E> {
        let _shared = self.fence.read().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = memo.lock().get(&key) {
            return Ok(Some(v.clone()));
        }
        let loaded = load()?;
        if let Some(v) = &loaded {
            let mut map = memo.lock();
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key, v.clone());
        }
        Ok(loaded)
    }

    /// Runs a catalog write and empties the cache, excluding readers meanwhile.
    pub fn write<T>(&self, write: impl FnOnce() -> T) -> T {
        let _exclusive = self.fence.write().unwrap_or_else(|p| p.into_inner());
        let result = write();
        self.repos.clear();
        self.tags.clear();
        self.manifests.clear();
        self.repo_blobs.clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_clears() {
        let cache = ReadCache::default();
        let mut loads = 0;
        for _ in 0..3 {
            let v = cache
                .read_through(&cache.tags, b"k".to_vec(), || {
                    loads += 1;
                    Ok::<_, ()>(Some("d1".to_string()))
                })
                .unwrap();
            assert_eq!(v.as_deref(), Some("d1"));
        }
        assert_eq!(loads, 1);
        cache.write(|| ());
        let v = cache
            .read_through(&cache.tags, b"k".to_vec(), || Ok::<_, ()>(Some("d2".to_string())))
            .unwrap();
        assert_eq!(v.as_deref(), Some("d2"));
        // Absent values are not cached.
        let none = cache
            .read_through(&cache.tags, b"x".to_vec(), || Ok::<_, ()>(None))
            .unwrap();
        assert!(none.is_none());
        let later = cache
            .read_through(&cache.tags, b"x".to_vec(), || Ok::<_, ()>(Some("y".to_string())))
            .unwrap();
        assert_eq!(later.as_deref(), Some("y"));
    }
}
