//! What the background jobs report: the leader's redundancy view (under-replicated blobs,
//! bytes still to copy) and per-node counters. `cluster status` shows both.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The leader's view of blob redundancy, as of its last repair survey.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedundancyView {
    /// Blobs with fewer live copies than wanted (and at least one).
    pub under_replicated: u64,
    /// Bytes repair still has to copy.
    pub bytes_to_move: u64,
    /// Blobs with no live copy at all (nothing to repair from).
    pub unavailable: u64,
    /// Blobs at full redundancy whose copies or shards rebalancing still moves (crowded into
    /// one fault domain while another has room, or more copies than wanted).
    pub misplaced: u64,
}

#[derive(Default)]
pub struct BlobHealth {
    view: Mutex<Option<RedundancyView>>,
    counters: Mutex<BTreeMap<String, u64>>,
}

impl BlobHealth {
    /// The last survey (`None` on a node that is not the leader).
    pub fn view(&self) -> Option<RedundancyView> {
        *self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_view(&self, view: Option<RedundancyView>) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Adds `n` to counter `name`.
    pub fn count(&self, name: &str, n: u64) {
        if n == 0 {
            return;
        }
        *self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default() += n;
    }

    /// Sets gauge `name` to `value` (what is left to do, rather than what was done).
    pub fn set(&self, name: &str, value: u64) {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), value);
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
