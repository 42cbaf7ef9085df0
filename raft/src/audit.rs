//! The audit log's records and keys. Every change made through the registry or management API
//! and every failed authentication becomes an [`AuditEvent`] on the node that answered it;
//! nodes send their events in numbered batches (`RecordAudit`, applied once per number, like
//! pull counts), so the log is replicated with the catalog and survives the loss of a node.
//! The leader's lifecycle pass prunes what is older than the retention (`PruneAudit`).
//!
//! Keys (`lifecycle` family): `audit\0<scope>\0` + (u64::MAX − time ms) + node + batch + index,
//! all big-endian, so a forward scan of one scope reads newest first. A scope is a tenancy's
//! namespace, or empty for what belongs to no tenancy (membership, cluster settings, failed
//! logins of unknown users).

use serde::{Deserialize, Serialize};

/// Most events one `RecordAudit` entry carries (a node splits bigger flushes).
pub const MAX_AUDIT_PER_ENTRY: usize = 500;
/// Longest text kept in one field of an event (longer text is cut).
pub const MAX_FIELD_LEN: usize = 512;
/// Most records one `PruneAudit` entry deletes (the pass repeats while more are due).
pub const MAX_PRUNE_PER_ENTRY: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time_ms: u64,
    /// The node that answered.
    pub node: u64,
    /// Who acted: `<namespace>/<user>`, `keelson/admin`, `anonymous`, or the user a failed
    /// login named.
    pub actor: String,
    /// The tenancy it concerns (empty: none).
    pub scope: String,
    /// What was done: `manifest.put`, `tag.delete`, `policy.put`, `auth.failed`, …
    pub action: String,
    /// What it was done to (a path without its query).
    pub target: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The client's address as the node saw it.
    pub source: String,
}

impl AuditEvent {
    /// Cuts every text field to [`MAX_FIELD_LEN`] bytes (on a character boundary).
    pub fn bounded(mut self) -> AuditEvent {
        // The scope is part of the key, ended by a NUL: it cannot hold one.
        self.scope.retain(|c| c != '\0');
        for field in [
            &mut self.actor,
            &mut self.scope,
            &mut self.action,
            &mut self.target,
            &mut self.source,
        ] {
            if field.len() > MAX_FIELD_LEN {
                let mut cut = MAX_FIELD_LEN;
                while !field.is_char_boundary(cut) {
                    cut -= 1;
                }
                field.truncate(cut);
            }
        }
        self
    }
}

pub(crate) const AUDIT_PREFIX: &[u8] = b"audit\0";

/// The prefix of one scope's records.
pub fn scope_prefix(scope: &str) -> Vec<u8> {
    let mut key = AUDIT_PREFIX.to_vec();
    key.extend_from_slice(scope.as_bytes());
    key.push(0);
    key
}

/// A record's key: newest first within its scope.
pub(crate) fn event_key(event: &AuditEvent, batch: u64, index: u16) -> Vec<u8> {
    let mut key = scope_prefix(&event.scope);
    key.extend_from_slice(&(u64::MAX - event.time_ms).to_be_bytes());
    key.extend_from_slice(&event.node.to_be_bytes());
    key.extend_from_slice(&batch.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The time of a record from its key suffix (after the scope prefix).
#[cfg(test)]
pub(crate) fn time_of_suffix(suffix: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = suffix.get(..8)?.try_into().ok()?;
    Some(u64::MAX - u64::from_be_bytes(bytes))
}

pub(crate) fn seq_key(node: u64) -> Vec<u8> {
    let mut key = b"auditseq\0".to_vec();
    key.extend_from_slice(&node.to_be_bytes());
    key
}

/// Which records a query wants.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// An action or an action prefix ending in `.` (`manifest.`).
    pub action: Option<String>,
    /// Records at or after this time.
    pub since_ms: Option<u64>,
    /// Records before this time.
    pub until_ms: Option<u64>,
    /// Only failures (status 400 and above).
    pub failed_only: bool,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self.action.as_ref().is_none_or(|a| match a.strip_suffix('.') {
                Some(prefix) => e.action.starts_with(prefix) && e.action[prefix.len()..].starts_with('.'),
                None => &e.action == a,
            })
            && self.since_ms.is_none_or(|t| e.time_ms >= t)
            && self.until_ms.is_none_or(|t| e.time_ms < t)
            && (!self.failed_only || e.status >= 400)
    }
}

/// One page of records, newest first, and the cursor of the next page.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `after` to read on (hex of the last record's key suffix).
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time_ms: u64, action: &str, status: u16) -> AuditEvent {
        AuditEvent {
            time_ms,
            node: 1,
            actor: "acme/ann".into(),
            scope: "acme".into(),
            action: action.into(),
            target: "/v2/acme/app/manifests/v1".into(),
            status,
            source: "127.0.0.1".into(),
        }
    }

    #[test]
    fn newer_records_sort_first() {
        let old = event_key(&event(1_000, "manifest.put", 201), 1, 0);
        let new = event_key(&event(2_000, "manifest.put", 201), 1, 0);
        assert!(new < old);
        let suffix = &new[scope_prefix("acme").len()..];
        assert_eq!(time_of_suffix(suffix), Some(2_000));
    }

    #[test]
    fn filters_by_actor_action_prefix_time_and_failure() {
        let e = event(5_000, "manifest.put", 201);
        assert!(AuditFilter::default().matches(&e));
        let f = AuditFilter {
            action: Some("manifest.".into()),
            since_ms: Some(5_000),
            ..Default::default()
        };
        assert!(f.matches(&e));
        assert!(!AuditFilter {
            action: Some("manifest".into()),
            ..Default::default()
        }
        .matches(&e));
        assert!(!AuditFilter {
            action: Some("mani.".into()),
            ..Default::default()
        }
        .matches(&e));
        assert!(!AuditFilter {
            until_ms: Some(5_000),
            ..Default::default()
        }
        .matches(&e));
        assert!(!AuditFilter {
            failed_only: true,
            ..Default::default()
        }
        .matches(&e));
        assert!(!AuditFilter {
            actor: Some("acme/bob".into()),
            ..Default::default()
        }
        .matches(&e));
    }

    #[test]
    fn long_fields_are_cut_on_character_boundaries() {
        let mut e = event(1, "x", 200);
        e.target = "é".repeat(400);
        let e = e.bounded();
        assert!(e.target.len() <= MAX_FIELD_LEN);
        assert!(e.target.chars().all(|c| c == 'é'));
    }
}
