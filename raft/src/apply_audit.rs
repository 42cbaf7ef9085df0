//! Applying the audit log's commands: numbered batches of events from each node (applied once
//! per number) and the pruning of records past the retention.

use crate::apply::{rejected, Applied, Applier, Done};
use crate::audit::*;
use crate::command::Rejection;
use crate::keys::CF_LIFECYCLE;
use crate::types::NodeId;

impl Applier<'_> {
    pub(crate) fn record_audit(&mut self, node: NodeId, seq: u64, events: Vec<AuditEvent>) -> Applied {
        if events.len() > MAX_AUDIT_PER_ENTRY {
            return rejected(Rejection::Invalid(format!(
                "{} audit events in one entry, at most {MAX_AUDIT_PER_ENTRY}",
                events.len()
            )));
        }
        let seq_key = seq_key(node);
        let last: u64 = self.tx.get(CF_LIFECYCLE, &seq_key)?.unwrap_or(0);
        if seq <= last {
            return Ok(Done); // a retry of a batch already recorded
        }
        self.tx.put(CF_LIFECYCLE, &seq_key, &seq)?;
        for (i, event) in events.into_iter().enumerate() {
            let event = event.bounded();
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            self.tx.put(CF_LIFECYCLE, &event_key(&event, seq, index), &event)?;
        }
        Ok(Done)
    }

    /// Deletes records older than `before_ms`, at most [`MAX_PRUNE_PER_ENTRY`]: in each scope
    /// the old records are the last ones (newest first), so each scope costs one seek.
    pub(crate) fn prune_audit(&mut self, before_ms: u64) -> Applied {
        let oldest_kept = (u64::MAX - before_ms).to_be_bytes();
        let mut budget = MAX_PRUNE_PER_ENTRY;
        let mut cursor = AUDIT_PREFIX.to_vec();
        while budget > 0 {
            // The next scope: the first record at or after the cursor.
            let Some(first) = self
                .tx
                .committed_keys_from(CF_LIFECYCLE, &cursor, AUDIT_PREFIX, 1)?
                .pop()
            else {
                break;
            };
            let Some(end) = first[AUDIT_PREFIX.len()..].iter().position(|b| *b == 0) else {
                break;
            };
            let scope = first[..AUDIT_PREFIX.len() + end + 1].to_vec();
            // Inverted times above `u64::MAX - before_ms` are records older than `before_ms`.
            let mut from = scope.clone();
            from.extend_from_slice(&oldest_kept);
            from.push(0xff);
            for key in self.tx.committed_keys_from(CF_LIFECYCLE, &from, &scope, budget)? {
                self.tx.delete(CF_LIFECYCLE, &key)?;
                budget -= 1;
            }
            // Past this scope: its terminating 0 becomes 1.
            cursor = scope;
            if let Some(last) = cursor.last_mut() {
                *last = 1;
            }
        }
        Ok(Done)
    }
}
