//! Numbered batches from one node to the catalog, for what nodes record in memory and flush
//! through Raft (pull counts, audit events). A flush takes what was recorded into batches
//! numbered above every earlier one; a batch whose commit failed, or whose answer was lost, is
//! sent again with the same number, and the catalog applies each number once per node, so
//! nothing is lost to a failed flush nor recorded twice by a retried one. What is recorded
//! while batches are pending waits for the next flush.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Items on their way to the catalog under one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered<T> {
    pub seq: u64,
    pub items: Vec<T>,
}

/// The batches taken but not yet known to be applied, oldest first, and the last number given.
pub struct NumberedBatches<T> {
    pending: Mutex<(VecDeque<Numbered<T>>, u64)>,
}

impl<T> Default for NumberedBatches<T> {
    fn default() -> Self {
        NumberedBatches {
            pending: Mutex::new((VecDeque::new(), 0)),
        }
    }
}

impl<T: Clone> NumberedBatches<T> {
    /// The oldest batch still to be sent; when none is pending, `take()` (what was recorded
    /// since the last flush) becomes new batches of at most `max` items, numbered above every
    /// earlier one and at least `floor`.
    pub fn next(&self, floor: u64, max: usize, take: impl FnOnce() -> Vec<T>) -> Option<Numbered<T>> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.0.is_empty() {
            for chunk in take().chunks(max.max(1)) {
                let seq = pending.1.saturating_add(1).max(floor);
                pending.1 = seq;
                pending.0.push_back(Numbered {
                    seq,
                    items: chunk.to_vec(),
                });
            }
        }
        pending.0.front().cloned()
    }

    /// The batch numbered `seq` was applied (or refused for good): it is not sent again.
    pub fn settled(&self, seq: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.0.front().is_some_and(|b| b.seq == seq) {
            pending.0.pop_front();
        }
    }
}
