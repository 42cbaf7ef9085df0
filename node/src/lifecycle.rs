//! The lifecycle layer's timers: every node flushes its pull counts, audit events and webhook
//! pull events; the leader delivers webhooks, runs retention (and prunes the audit log), copies
//! identity from the home region and replicates images to other regions.
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

/// Sends this node's audit events to the catalog every `period`.
pub fn spawn_audit_flush(registry: Arc<Registry>, period: Duration) -> JoinHandle<()> {
    every(period, move || {
        let registry = registry.clone();
        async move {
            keelson_api::audit::flush(&registry).await;
        }
    })
}

/// Runs a round of the webhook task every `period` (see `keelson_api::webhooks::tick`).
pub fn spawn_webhooks(registry: Arc<Registry>, period: Duration) -> JoinHandle<()> {
    every(period, move || {
        let registry = registry.clone();
        async move {
            keelson_api::webhooks::tick(&registry).await;
        }
    })
}

/// Inventories queued images every `period` (those whose largest layer this node holds).
pub fn spawn_scanner(registry: Arc<Registry>, period: Duration) -> JoinHandle<()> {
    let scanner = Arc::new(keelson_api::scanning::Scanner::default());
    every(period, move || {
        let (registry, scanner) = (registry.clone(), scanner.clone());
        async move {
            scanner.tick(&registry).await;
        }
    })
}

/// Runs the retention pass every `period` (it acts only while this node leads), and prunes
/// audit records older than `audit_retention`.
pub fn spawn_retention(registry: Arc<Registry>, period: Duration, audit_retention: Duration) -> JoinHandle<()> {
    every(period, move || {
        let registry = registry.clone();
        async move {
            match lifecycle_jobs::retention_pass(&registry).await {
                Ok(report) if report.images_planned > 0 => tracing::info!(?report, "retention pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
            lifecycle_jobs::prune_audit(&registry, audit_retention).await;
        }
    })
}

/// Copies identity from the home region every `period` (acts only on the leader of a region
/// whose home is elsewhere).
pub fn spawn_identity_sync(registry: Arc<Registry>, period: Duration) -> JoinHandle<()> {
    every(period, move || {
        let registry = registry.clone();
        async move {
            match keelson_api::regions::identity::sync_from_home(&registry).await {
                Ok(true) => tracing::info!("copied identity from the home region"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "copying identity from the home region failed"),
            }
        }
    })
}

/// Drains the replication queue every `poll` and runs a full pass every `reconcile` (only
/// while this node leads).
pub fn spawn_replication(registry: Arc<Registry>, poll: Duration, reconcile: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_full = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let full = last_full.elapsed() >= reconcile;
            if full {
                last_full = tokio::time::Instant::now();
            }
            keelson_api::regions::replicate::replication_pass(&registry, full).await;
        }
    })
}
