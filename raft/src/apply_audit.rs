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

    pub(crate) fn prune_audit(&mut self, before_ms: u64) -> Applied {
        let old = self
            .tx
            .committed_keys_where(CF_LIFECYCLE, AUDIT_PREFIX, MAX_PRUNE_PER_ENTRY, |key| {
                // The scope ends at the first 0 after the prefix; the time follows.
                key[AUDIT_PREFIX.len()..]
                    .iter()
                    .position(|b| *b == 0)
                    .and_then(|at| time_of_suffix(&key[AUDIT_PREFIX.len() + at + 1..]))
                    .is_some_and(|t| t < before_ms)
            })?;
        for key in old {
            self.tx.delete(CF_LIFECYCLE, &key)?;
        }
        Ok(Done)
    }
}
