//! The background blob jobs of a node, on timers: repair and GC (they act only while this node
//! leads), scrub and the healer (every node). Each pass recomputes its work from the catalog and
//! the disk, so a failed or interrupted pass is simply followed by the next one.

use std::sync::Arc;
use std::time::Duration;

use keelson_api::Registry;
use keelson_storage::jobs::{BlobJobs, JobSettings};
use tokio::task::JoinHandle;

/// How often the healer looks again at copies it could not restore yet.
const HEAL_RETRY: Duration = Duration::from_secs(5);

/// Starts the jobs; the handles end them when aborted.
pub fn spawn(registry: &Arc<Registry>, mut settings: JobSettings) -> Vec<JoinHandle<()>> {
    settings.replicas = registry.redundancy.replicas;
    let clock = registry.clock.clone();
    let jobs = Arc::new(BlobJobs::new(
        registry.catalog.clone(),
        registry.store.clone(),
        registry.uploads.clone(),
        registry.peers.clone(),
        settings.clone(),
        registry.blob_health.clone(),
        Arc::new(move || clock.now_ms()),
    ));
    let repair = jobs.clone();
    let gc = jobs.clone();
    let scrub = jobs.clone();
    let seal = jobs.clone();
    let heal = jobs;
    vec![
        every(settings.repair_interval, move || {
            let jobs = repair.clone();
            async move {
                if let Err(e) = jobs.repair_pass().await {
                    tracing::warn!(error = %e, "repair pass failed");
                }
            }
        }),
        every(settings.gc_interval, move || {
            let jobs = gc.clone();
            async move {
                if let Err(e) = jobs.gc_pass().await {
                    tracing::warn!(error = %e, "GC pass failed");
                }
            }
        }),
        every(settings.scrub_interval, move || {
            let jobs = scrub.clone();
            async move {
                if let Err(e) = jobs.scrub_pass().await {
                    tracing::warn!(error = %e, "scrub pass failed");
                }
            }
        }),
        every(settings.at_rest_interval, move || {
            let jobs = seal.clone();
            async move {
                if let Err(e) = jobs.seal_pass().await {
                    tracing::warn!(error = %e, "encryption-at-rest pass failed");
                }
            }
        }),
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = heal.store.heal_queue().wait() => {}
                    _ = tokio::time::sleep(HEAL_RETRY) => {}
                }
                if let Err(e) = heal.heal_pass().await {
                    tracing::warn!(error = %e, "heal pass failed");
                }
            }
        }),
    ]
}

/// Removes this node's upload sessions that stayed unused for `settings.idle`, with their files.
pub fn expire_uploads(registry: Arc<Registry>, settings: &crate::config::UploadSettings) -> JoinHandle<()> {
    let idle_ms = settings.idle.as_millis().try_into().unwrap_or(u64::MAX);
    every(settings.sweep_every, move || {
        let registry = registry.clone();
        async move {
            let expired = registry.uploads.expire_idle(idle_ms).await;
            if expired > 0 {
                tracing::info!(
                    expired,
                    open = registry.uploads.open_count(),
                    "idle upload sessions expired"
                );
            }
        }
    })
}

/// Serves a renewed API certificate once its files change (checked every `period`).
pub fn reload_certificate(tls: keelson_api::tls::ServerTls, period: Duration) -> JoinHandle<()> {
    every(period, move || {
        let tls = tls.clone();
        async move {
            match tls.reload_if_changed() {
                Ok(true) => tracing::info!(cert = %tls.cert_path().display(), "API certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "API certificate changed but does not load; still serving the previous one")
                }
            }
        }
    })
}

/// How often the master key file is checked for a change (a stat, nothing more).
const KEY_RELOAD: Duration = Duration::from_secs(2);

/// Takes up a changed master key file (a rotation step); a file that does not parse keeps the
/// keys in force.
pub fn reload_master_keys(ring: Arc<keelson_storage::at_rest::KeyRing>) -> JoinHandle<()> {
    every(KEY_RELOAD, move || {
        let ring = ring.clone();
        async move {
            if let Err(e) = ring.reload_if_changed() {
                tracing::warn!(error = %e, "master key file changed but does not load; keeping the keys in force");
            }
        }
    })
}

/// Forgets idle callers' rate buckets every minute, so the maps hold recent callers only.
pub fn shrink_rate_limits(registry: Arc<Registry>) -> JoinHandle<()> {
    every(Duration::from_secs(60), move || {
        let registry = registry.clone();
        async move { registry.rate_limits.shrink() }
    })
}

/// Runs `pass` every `period` (first after one period; a slow pass delays the next).
pub(crate) fn every<F, Fut>(period: Duration, pass: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let period = period.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            pass().await;
        }
    })
}
