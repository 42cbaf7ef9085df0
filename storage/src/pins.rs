//! Pins: digests this node is receiving or has just received for a push (or a repair) whose
//! catalog record may not be committed yet. Garbage collection never deletes a pinned blob file,
//! so a push racing with a sweep of the same content keeps its bytes.
//!
//! A pin lasts `ttl` (the GC grace period) from its last refresh; pin and delete take the same
//! lock, so a deletion either happens entirely before a pin (and the pinning writer then stores
//! the bytes afresh) or sees it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::digest::Digest;

/// Default pin lifetime when the node has not configured one.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

pub struct Pins {
    inner: Mutex<Inner>,
}

struct Inner {
    ttl: Duration,
    pinned: HashMap<Digest, Instant>,
}

impl Default for Pins {
    fn default() -> Self {
        Pins {
            inner: Mutex::new(Inner {
                ttl: DEFAULT_TTL,
                pinned: HashMap::new(),
            }),
        }
    }
}

/// The pin table, locked: deletions run while holding it.
pub struct PinGuard<'a>(MutexGuard<'a, Inner>);

impl PinGuard<'_> {
    pub fn is_pinned(&self, digest: &Digest) -> bool {
        let ttl = self.0.ttl;
        self.0.pinned.get(digest).is_some_and(|at| at.elapsed() < ttl)
    }
}

impl Pins {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a pin protects its blob.
    pub fn set_ttl(&self, ttl: Duration) {
        self.lock().ttl = ttl;
    }

    /// Pins (or refreshes the pin of) `digest`.
    pub fn pin(&self, digest: &Digest) {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.pinned.len() > 4096 {
            let ttl = inner.ttl;
            inner.pinned.retain(|_, at| now.duration_since(*at) < ttl);
        }
        inner.pinned.insert(digest.clone(), now);
    }

    /// Locks the table (for a check-then-delete that no pin may overtake).
    pub fn guard(&self) -> PinGuard<'_> {
        PinGuard(self.lock())
    }

    pub fn is_pinned(&self, digest: &Digest) -> bool {
        self.guard().is_pinned(digest)
    }
}
