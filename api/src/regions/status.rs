//! Replication status per rule and target, computed from the catalog: what the source has and
//! the target's marks lack is pending; the lag is the age of the oldest pending change.

use keelson_raft::regions::{failure_key, ReplicationRule};
use serde::Serialize;

use super::replicate::{covered_tags, ReplicationError};
use crate::registry::Registry;

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub rule: String,
    pub namespace: String,
    pub target: String,
    /// Tags (and referrers) the target does not have as the source has them.
    pub pending_images: u64,
    /// Their sizes summed.
    pub pending_bytes: u64,
    /// How long the oldest pending change has waited (0: none pending).
    pub lag_ms: u64,
    /// Blob bytes this node sent under the rule (the leader does the sending).
    pub bytes_sent: u64,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
}

/// The status of `rule` towards each of its targets.
pub fn rule_status(reg: &Registry, rule: &ReplicationRule) -> Result<Vec<TargetStatus>, ReplicationError> {
    let reader = reg.catalog.reader();
    let regions = reader.regions()?;
    let now = reg.clock.now_ms();
    let repos: Vec<String> = reader
        .tenancy_repos(&rule.namespace)?
        .into_iter()
        .filter(|repo| regions.rules_for(repo).any(|r| r.id == rule.id))
        .collect();
    let mut out = Vec::new();
    for target in &rule.targets {
        let mut status = TargetStatus {
            rule: rule.id.clone(),
            namespace: rule.namespace.clone(),
            target: target.clone(),
            pending_images: 0,
            pending_bytes: 0,
            lag_ms: 0,
            bytes_sent: reg.replicator.bytes_sent(&rule.id, target),
            last_error: None,
            last_error_ms: None,
        };
        if let Some(f) = regions.failures.get(&failure_key(&rule.id, target)) {
            status.last_error = Some(f.message.clone());
            status.last_error_ms = Some(f.at_ms);
        }
        for repo in &repos {
            let marks = reader.replication_marks(&rule.id, target, repo)?;
            for (tag, digest) in covered_tags(reg, rule, repo)? {
                if marks.get(&tag).map(|m| &m.digest) == Some(&digest) {
                    continue;
                }
                status.pending_images += 1;
                if let Some(image) = reader.image(repo, &digest)? {
                    status.pending_bytes = status.pending_bytes.saturating_add(image.size);
                    let since = image.last_tagged_ms.unwrap_or(image.last_pushed_ms);
                    status.lag_ms = status.lag_ms.max(now.saturating_sub(since));
                }
            }
        }
        out.push(status);
    }
    Ok(out)
}
