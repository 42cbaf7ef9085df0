//! Coalesced read-index: many concurrent linearizable reads share one leadership confirmation.
//!
//! A read must use a read index taken *after* it arrived. Reads that arrive while a confirmation
//! is in flight therefore wait for the next one, which starts as soon as the current one ends and
//! serves all of them. Under load this turns one Raft round trip per read into one per batch.

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::node::CatalogError;

type Waiter = oneshot::Sender<Result<(), CatalogError>>;

#[derive(Default)]
pub struct ReadBatcher {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: bool,
    waiting: Vec<Waiter>,
}

impl ReadBatcher {
    /// Queues a reader; returns true when the caller must start the batch loop.
    pub fn join(&self, waiter: Waiter) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.waiting.push(waiter);
        !std::mem::replace(&mut state.running, true)
    }

    /// The readers queued since the last batch; `None` (and the loop stops) when there are none.
    pub fn next_batch(&self) -> Option<Vec<Waiter>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.waiting.is_empty() {
            state.running = false;
            return None;
        }
        Some(std::mem::take(&mut state.waiting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_whoever_waited_and_stops_when_idle() {
        let b = ReadBatcher::default();
        let (t1, _r1) = oneshot::channel();
        let (t2, _r2) = oneshot::channel();
        assert!(b.join(t1), "first reader starts the loop");
        assert!(!b.join(t2), "second reader joins the running loop");
        assert_eq!(b.next_batch().map(|v| v.len()), Some(2));
        let (t3, _r3) = oneshot::channel();
        assert!(!b.join(t3), "a reader during a batch waits for the next");
        assert_eq!(b.next_batch().map(|v| v.len()), Some(1));
        assert!(b.next_batch().is_none());
        let (t4, _r4) = oneshot::channel();
        assert!(b.join(t4), "after the loop stopped, the next reader restarts it");
    }
}
