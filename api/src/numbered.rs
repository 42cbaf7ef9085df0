//! Numbered batches from one node to the catalog, for what nodes record in memory and flush
//! through Raft (pull counts, audit events). A flush takes what was recorded into batches
//! numbered above every earlier one; a batch whose commit failed, or whose answer was lost, is
//! sent again with the same number, and the catalog applies each number once per node, so
//! nothing is lost to a failed flush nor recorded twice by a retried one. What is recorded
//! while batches are pending waits for the next flush.

use std::collections::VecDeque;
use std::sync::Mutex;

use keelson_raft::{CatalogCommand, CatalogResponse};

use crate::registry::Registry;

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

/// Sends what `batches` holds, and what `take` yields meanwhile, to the catalog as the commands
/// `command` makes, batch by batch; a batch that could not be committed stays pending and is
/// sent again, with its number, by the next flush. `applied` is the last number the catalog
/// applied from this node: new numbers start above it and above the clock, so a clock set back
/// or a restart never makes a new batch look like a retry. Returns the items flushed.
pub async fn flush<T: Clone>(
    reg: &Registry,
    what: &str,
    batches: &NumberedBatches<T>,
    applied: u64,
    max: usize,
    take: impl Fn() -> Vec<T>,
    command: impl Fn(u64, Vec<T>) -> CatalogCommand,
) -> usize {
    let mut flushed = 0;
    let floor = reg.clock.now_ms().max(applied.saturating_add(1));
    while let Some(batch) = batches.next(floor, max, &take) {
        let n = batch.items.len();
        match reg.catalog.propose(command(batch.seq, batch.items)).await {
            Ok(CatalogResponse::Applied) => flushed += n,
            Ok(CatalogResponse::Rejected(r)) => tracing::warn!(reason = %r, "{what} refused"),
            Err(e) => {
                tracing::debug!(error = %e, "{what} flush deferred");
                return flushed;
            }
        }
        batches.settled(batch.seq);
    }
    flushed
}
