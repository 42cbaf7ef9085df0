//! One pass of each lifecycle background job, callable from the node's timers and from the
//! management API (tests and operators run them on demand instead of waiting an interval):
//! flushing this node's pull counts, and the leader's retention pass over every repository.

use keelson_raft::lifecycle::MAX_PULLS_PER_ENTRY;
use keelson_raft::retention;
use keelson_raft::CatalogCommand;

use crate::registry::Registry;

/// Repositories read from the catalog at a time by a retention pass (bounded memory whatever
/// the catalog's size; each repository's images are then read and judged on their own).
const REPO_PAGE: usize = 500;

/// Writes the pulls this node counted to the catalog, at most [`MAX_PULLS_PER_ENTRY`] images
/// per batch (see [`crate::numbered::flush`]). Returns the number of images flushed.
pub async fn flush_pulls(reg: &Registry) -> usize {
    let node = reg.catalog.node_id();
    let applied = reg.catalog.reader().pull_seq(node).unwrap_or(0);
    crate::numbered::flush(
        reg,
        "pull counts",
        reg.pulls.batches(),
        applied,
        MAX_PULLS_PER_ENTRY,
        || reg.pulls.take(),
        |seq, pulls| CatalogCommand::RecordPulls { node, seq, pulls },
    )
    .await
}

/// Prune entries the leader proposes per retention pass.
const PRUNE_ENTRIES_PER_PASS: usize = 8;

/// Deletes audit records older than `keep` (on the leader), one bounded entry at a time.
pub async fn prune_audit(reg: &Registry, keep: std::time::Duration) {
    if !reg.catalog.is_leader() {
        return;
    }
    let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
    let before_ms = reg.clock.now_ms().saturating_sub(keep_ms);
    // Each entry deletes at most MAX_PRUNE_PER_ENTRY records; a few per pass keep up with any
    // plausible rate of changes (an entry with nothing left to delete costs one seek per scope).
    for _ in 0..PRUNE_ENTRIES_PER_PASS {
        if let Err(e) = reg.catalog.propose(CatalogCommand::PruneAudit { before_ms }).await {
            tracing::debug!(error = %e, "audit pruning deferred");
            return;
        }
    }
}

/// What one retention pass did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PassReport {
    pub repos_judged: usize,
    pub images_planned: usize,
    pub entries: usize,
    pub entries_refused: usize,
}

/// Runs every repository's retention policy once (on the leader; elsewhere it does nothing).
/// Each repository is evaluated on its own, after catching up with the log, and its deletions
/// are committed with compare-and-set; the pass yields between repositories.
pub async fn retention_pass(reg: &Registry) -> Result<PassReport, retention::RunError> {
    let mut report = PassReport::default();
    if !reg.catalog.is_leader() {
        return Ok(report);
    }
    let mut last: Option<String> = None;
    loop {
        let page = reg.catalog.reader().repos(last.as_deref(), REPO_PAGE)?;
        for repo in &page.items {
            if reg.catalog.reader().effective_retention(repo)?.1.keeps_everything() {
                continue;
            }
            let (plan, outcome) = retention::run(&reg.catalog, repo, reg.clock.now_ms()).await?;
            report.repos_judged += 1;
            report.images_planned += plan.units.len();
            report.entries += outcome.entries;
            report.entries_refused += outcome.rejected_entries;
            tokio::task::yield_now().await;
        }
        if !page.more {
            return Ok(report);
        }
        last = page.items.last().cloned();
    }
}
