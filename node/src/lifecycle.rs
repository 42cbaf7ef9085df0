//! The lifecycle layer's timers: every node flushes its pull counts, the leader runs retention.
//! The passes themselves are in `keelson_api::lifecycle_jobs`, where the management API can also
//! run them on demand.

use std::sync::Arc;
use std::time::Duration;

use keelson_api::lifecycle_jobs;
use keelson_api::Registry;
use tokio::task::JoinHandle;

/// Flushes this node's pull counts every `period`.
pub async fn flush_pulls(registry: Arc<Registry>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        lifecycle_jobs::flush_pulls(&registry).await;
    }
}

/// Runs the retention pass every `period` (it acts only while this node leads).
pub fn spawn_retention(registry: Arc<Registry>, period: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match lifecycle_jobs::retention_pass(&registry).await {
                Ok(report) if report.images_planned > 0 => tracing::info!(?report, "retention pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
        }
    })
}
