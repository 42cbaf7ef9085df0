//! Pull counts, kept in memory on the node that served the pulls and flushed to the catalog in
//! bounded batches (the node's flush task), never one Raft write per pull.
//!
//! A manifest GET costs one lock of one shard (chosen by the digest) and, for an image not
//! pulled since the last flush, two small allocations. What was counted since the last flush is
//! lost if the node dies before the next one; a flush that fails is put back and retried.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

use keelson_raft::lifecycle::PullCount;

/// Shards of the counter map: enough that the API's worker threads rarely meet on one lock.
const SHARDS: usize = 16;

/// Distinct images one node counts between flushes before new ones are dropped (bounded memory
/// under a flood of pulls of distinct images; the flush runs long before this on real traffic).
const MAX_PENDING_IMAGES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Pending {
    count: u64,
    last_ms: u64,
}

/// Per repository, per digest.
type Shard = HashMap<String, HashMap<String, Pending>>;

pub struct PullCounter {
    enabled: bool,
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for PullCounter {
    fn default() -> Self {
        PullCounter::new(true)
    }
}

impl PullCounter {
    /// A counter; a disabled one records nothing (for measuring what counting costs).
    pub fn new(enabled: bool) -> PullCounter {
        PullCounter {
            enabled,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, digest: &str) -> &Mutex<Shard> {
        let mut h = self.hasher.build_hasher();
        digest.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// One pull of `digest` in `repo` at `now_ms`.
    pub fn record(&self, repo: &str, digest: &str, now_ms: u64) {
        if !self.enabled {
            return;
        }
        self.add(repo, digest, 1, now_ms);
    }

    fn add(&self, repo: &str, digest: &str, count: u64, last_ms: u64) {
        let mut shard = self.shard(digest).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(images) = shard.get_mut(repo) {
            if let Some(p) = images.get_mut(digest) {
                p.count = p.count.saturating_add(count);
                p.last_ms = p.last_ms.max(last_ms);
                return;
            }
        }
        let pending: usize = shard.values().map(HashMap::len).sum();
        if pending >= MAX_PENDING_IMAGES / SHARDS {
            return;
        }
        shard
            .entry(repo.to_string())
            .or_default()
            .insert(digest.to_string(), Pending { count, last_ms });
    }

    /// Takes everything counted since the last call.
    pub fn take(&self) -> Vec<PullCount> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            for (repo, images) in taken {
                for (digest, p) in images {
                    out.push(PullCount {
                        repo: repo.clone(),
                        digest,
                        count: p.count,
                        last_ms: p.last_ms,
                    });
                }
            }
        }
        out
    }

    /// Puts back counts whose flush failed, to go with the next one.
    pub fn restore(&self, counts: Vec<PullCount>) {
        for c in counts {
            self.add(&c.repo, &c.digest, c.count, c.last_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_and_survive_a_failed_flush() {
        let counter = PullCounter::default();
        counter.record("a/b", "sha256:1", 10);
        counter.record("a/b", "sha256:1", 30);
        counter.record("a/b", "sha256:1", 20);
        counter.record("a/c", "sha256:1", 5);
        let mut taken = counter.take();
        taken.sort_by(|x, y| x.repo.cmp(&y.repo));
        assert_eq!(taken.len(), 2);
        assert_eq!((taken[0].count, taken[0].last_ms), (3, 30));
        assert!(counter.take().is_empty());
        counter.restore(taken);
        counter.record("a/b", "sha256:1", 40);
        let again = counter.take();
        let b = again.iter().find(|c| c.repo == "a/b").unwrap();
        assert_eq!((b.count, b.last_ms), (4, 40));
    }

    #[test]
    fn a_disabled_counter_records_nothing() {
        let counter = PullCounter::new(false);
        counter.record("a/b", "sha256:1", 10);
        assert!(counter.take().is_empty());
    }
}
