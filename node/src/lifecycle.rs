//! The lifecycle layer's timers: every node flushes its pull counts, the leader runs retention.
//! The passes themselves are in `keelson_api::lifecycle_jobs`, where the management API can also
//! run them on demand.

use std::sync::Arc;
use std::time::Duration;

use keelson_api::lifecycle_jobs;
use keelson_api::Registry;
use tokio::task::JoinHandle;

use crate::jobs::every;

/// Flushes this node's pull counts every `period`.
pub fn spawn_pull_flush(registry: Arc<Registry>, period: Duration) -> JoinHandle<()> {
    every(period, move || {
        let registry = registry.clone();
        async move {
            lifecycle_jobs::flush_pulls(&registry).await;
        }
    })
}

/// Runs the retention pass every `period` (it acts only while this node leads).
pub fn spawn_retention(registry: Arc<Registry>, period: Duration) -> JoinHandle<()> {
    every(period, move || {
        let registry = registry.clone();
        async move {
            match lifecycle_jobs::retention_pass(&registry).await {
                Ok(report) if report.images_planned > 0 => tracing::info!(?report, "retention pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
        }
    })
}
