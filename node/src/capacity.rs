//! Capacity reports: every node measures the disk its blobs live on and commits the result
//! through Raft (`ReportCapacity`), so that placement on every node weighs the members by the
//! same free-space figures. A report is committed when the free space moved by 1% of the
//! capacity or more since the last one, when the master keys it holds changed, and at least
//! every ten measurements otherwise; a node not yet in a cluster simply retries at the next
//! measurement. The key ids tell the cluster when catalog secrets may be sealed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keelson_api::Registry;
use keelson_raft::{CatalogCommand, NodeCapacity};
use keelson_storage::capacity::{measure, DiskSpace};
use tokio::task::JoinHandle;

/// Measurements after which an unchanged capacity is reported again anyway.
const REFRESH_EVERY: u32 = 10;

/// Starts the reporter for the blobs under `blob_root` (capped by `quota`).
pub fn spawn(registry: Arc<Registry>, blob_root: PathBuf, quota: Option<u64>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<DiskSpace> = None;
        let mut since_report = 0u32;
        let mut last_keys: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let root = blob_root.clone();
            let space = match tokio::task::spawn_blocking(move || measure(&root, quota)).await {
                Ok(Ok(space)) => space,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "capacity measurement failed");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "capacity measurement panicked");
                    continue;
                }
            };
            since_report += 1;
            let key_ids: Vec<String> = registry
                .store
                .master_keys()
                .map(|k| k.ids().iter().map(hex::encode).collect())
                .unwrap_or_default();
            if !worth_reporting(last, space) && since_report < REFRESH_EVERY && key_ids == last_keys {
                continue;
            }
            let cmd = CatalogCommand::ReportCapacity {
                node: registry.catalog.node_id(),
                capacity: NodeCapacity {
                    total: space.total,
                    free: space.free,
                    reported_ms: registry.clock.now_ms(),
                    key_ids: key_ids.clone(),
                },
            };
            match registry.catalog.propose(cmd).await {
                Ok(_) => {
                    last = Some(space);
                    last_keys = key_ids;
                    since_report = 0;
                }
                Err(e) => tracing::debug!(error = %e, "capacity report deferred"),
            }
        }
    })
}

/// True when `now` differs from the last report by 1% of the capacity or more.
fn worth_reporting(last: Option<DiskSpace>, now: DiskSpace) -> bool {
    match last {
        None => true,
        Some(last) => {
            let step = (now.total / 100).max(1);
            last.total != now.total || last.free.abs_diff(now.free) >= step
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_changes_of_one_percent() {
        let at = |free| DiskSpace { total: 1000, free };
        assert!(worth_reporting(None, at(500)));
        assert!(!worth_reporting(Some(at(500)), at(505)));
        assert!(worth_reporting(Some(at(500)), at(490)));
        assert!(worth_reporting(Some(at(500)), DiskSpace { total: 2000, free: 500 }));
    }
}
