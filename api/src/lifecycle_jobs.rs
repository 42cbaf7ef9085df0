//! One pass of each lifecycle background job, callable from the node's timers and from the
//! management API (tests and operators run them on demand instead of waiting an interval):
//! flushing this node's pull counts, and the leader's retention pass over every repository.

use keelson_raft::lifecycle::MAX_PULLS_PER_ENTRY;
use keelson_raft::retention;
use keelson_raft::{CatalogCommand, CatalogResponse};

use crate::registry::Registry;

/// Repositories read from the catalog at a time by a retention pass (bounded memory whatever
/// the catalog's size; each repository's images are then read and judged on their own).
const REPO_PAGE: usize = 500;

/// Writes the pulls this node counted to the catalog, in entries of at most
/// [`MAX_PULLS_PER_ENTRY`]; what could not be written is kept for the next flush. Returns the
/// number of images flushed.
pub async fn flush_pulls(reg: &Registry) -> usize {
    let counts = reg.pulls.take();
    let mut flushed = 0;
    let mut chunks = counts.chunks(MAX_PULLS_PER_ENTRY);
    while let Some(chunk) = chunks.next() {
        let cmd = CatalogCommand::RecordPulls { pulls: chunk.to_vec() };
        match reg.catalog.propose(cmd).await {
            Ok(CatalogResponse::Applied) => flushed += chunk.len(),
            Ok(CatalogResponse::Rejected(r)) => {
                tracing::warn!(reason = %r, "pull counts refused");
            }
            Err(e) => {
                tracing::debug!(error = %e, "pull count flush deferred");
                reg.pulls.restore(chunk.to_vec());
                for rest in chunks.by_ref() {
                    reg.pulls.restore(rest.to_vec());
                }
            }
        }
    }
    flushed
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
