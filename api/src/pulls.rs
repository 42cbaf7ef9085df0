//! Pull counts, kept in memory on the node that served the pulls and flushed to the catalog in
//! bounded batches (the node's flush task), never one Raft write per pull.
//!
//! A manifest GET costs one lock of one shard (chosen by the digest) and, for an image not
//! pulled since the last flush, two small allocations. What was counted since the last flush is
//! lost if the node dies before the next one.
//!
//! A flush takes the counts into numbered batches and sends them one by one; a batch whose
//! commit failed (or whose answer was lost) is sent again with the same number, and the catalog
//! applies each number once, so a count is never lost to a failed flush nor counted twice by a
//! retried one. New counts wait in the map while batches are pending.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use keelson_raft::lifecycle::PullCount;

use crate::numbered::NumberedBatches;

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
    /// Batches taken but not yet known to be applied.
    pending: NumberedBatches<PullCount>,
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
            pending: NumberedBatches::default(),
        }
    }

    /// The batches taken but not yet known to be applied (see [`crate::numbered::flush`]).
    pub fn batches(&self) -> &NumberedBatches<PullCount> {
        &self.pending
    }

    fn shard(&self, digest: &str) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(digest) as usize) % SHARDS]
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
        // A batch's content never depends on hashing order (replayable simulations).
        out.sort_by(|a, b| (&a.repo, &a.digest).cmp(&(&b.repo, &b.digest)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_merge_counts_and_are_resent_until_settled() {
        let counter = PullCounter::default();
        counter.record("a/b", "sha256:1", 10);
        counter.record("a/b", "sha256:1", 30);
        counter.record("a/b", "sha256:1", 20);
        counter.record("a/c", "sha256:1", 5);
        let first = counter.batches().next(100, 1, || counter.take()).unwrap();
        assert_eq!(first.seq, 100);
        assert_eq!(first.items.len(), 1);
        // Not settled (the commit failed): the same batch again, whatever was counted since.
        counter.record("a/b", "sha256:1", 40);
        assert_eq!(counter.batches().next(200, 1, || counter.take()), Some(first.clone()));
        counter.batches().settled(first.seq);
        let second = counter.batches().next(200, 1, || counter.take()).unwrap();
        assert_eq!(second.seq, 101, "numbers grow past the clock once taken");
        counter.batches().settled(second.seq);
        // The count made while batches were pending goes in the next flush.
        let third = counter.batches().next(50, 10, || counter.take()).unwrap();
        assert_eq!(third.seq, 102);
        assert_eq!(third.items.len(), 1);
        let p = &third.items[0];
        assert_eq!((p.repo.as_str(), p.count, p.last_ms), ("a/b", 1, 40));
        let mut all: Vec<(String, u64, u64)> = first
            .items
            .iter()
            .chain(second.items.iter())
            .map(|p| (p.repo.clone(), p.count, p.last_ms))
            .collect();
        all.sort();
        assert_eq!(all, vec![("a/b".into(), 3, 30), ("a/c".into(), 1, 5)]);
        counter.batches().settled(third.seq);
        assert_eq!(counter.batches().next(60, 10, || counter.take()), None);
    }

    #[test]
    fn a_disabled_counter_records_nothing() {
        let counter = PullCounter::new(false);
        counter.record("a/b", "sha256:1", 10);
        assert_eq!(counter.batches().next(1, 10, || counter.take()), None);
    }
}
