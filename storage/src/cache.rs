//! An in-memory cache of small blobs (configs, small layers, Helm charts), which pullers request
//! far more often than large layers. Blobs are immutable, so a cached blob can never go stale;
//! only its deletion must evict it. Eviction is first-in-first-out within a byte budget.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::digest::Digest;

pub struct SmallBlobCache {
    max_bytes: usize,
    max_entry: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Digest, Bytes>,
    order: VecDeque<Digest>,
    bytes: usize,
}

impl SmallBlobCache {
    pub fn new(max_bytes: usize, max_entry: usize) -> Self {
        SmallBlobCache {
            max_bytes,
            max_entry,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Largest blob the cache keeps.
    pub fn max_entry(&self) -> usize {
        self.max_entry
    }

    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .get(digest)
            .cloned()
    }

    pub fn insert(&self, digest: &Digest, bytes: Bytes) {
        if bytes.len() > self.max_entry || bytes.len() > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.map.contains_key(digest) {
            return;
        }
        while inner.bytes + bytes.len() > self.max_bytes {
            let Some(old) = inner.order.pop_front() else { break };
            if let Some(evicted) = inner.map.remove(&old) {
                inner.bytes -= evicted.len();
            }
        }
        inner.bytes += bytes.len();
        inner.order.push_back(digest.clone());
        inner.map.insert(digest.clone(), bytes);
    }

    pub fn remove(&self, digest: &Digest) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(evicted) = inner.map.remove(digest) {
            inner.bytes -= evicted.len();
            inner.order.retain(|d| d != digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_budget_fifo() {
        let cache = SmallBlobCache::new(10, 6);
        let d = |b: &[u8]| Digest::of(b);
        cache.insert(&d(b"a"), Bytes::from_static(b"aaaa"));
        cache.insert(&d(b"b"), Bytes::from_static(b"bbbb"));
        cache.insert(&d(b"big"), Bytes::from_static(b"toolarge"));
        assert!(cache.get(&d(b"big")).is_none());
        cache.insert(&d(b"c"), Bytes::from_static(b"cccc"));
        assert!(cache.get(&d(b"a")).is_none(), "oldest evicted");
        assert_eq!(cache.get(&d(b"c")).as_deref(), Some(&b"cccc"[..]));
        cache.remove(&d(b"c"));
        assert!(cache.get(&d(b"c")).is_none());
    }
}
