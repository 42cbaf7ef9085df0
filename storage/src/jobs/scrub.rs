//! Scrub (every node): re-hashes the local blob files at a limited rate. A file whose bytes do
//! not match its digest is quarantined and queued for the healer. Files that no blob record
//! lists on this node — leftovers of failed pushes, of GC deletions this node missed, of repairs
//! whose commit lost a race — are removed once older than the grace period and not pinned.

use std::time::SystemTime;

use super::throttle::Throttle;
use super::{BlobJobs, JobError};
use crate::blob_store::Deletion;

/// What one scrub pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubOutcome {
    pub verified: usize,
    pub corrupt: usize,
    pub orphans_deleted: usize,
}

impl BlobJobs {
    pub async fn scrub_pass(&self) -> Result<ScrubOutcome, JobError> {
        let mut outcome = ScrubOutcome::default();
        let store = self.store.clone();
        let files = tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        // Orphans are only judged on an up-to-date view of the catalog.
        let fresh = self.catalog.linearizable().await.is_ok();
        let me = self.node_id();
        let grace = self.settings.gc_grace;
        let mut throttle = Throttle::new(self.settings.scrub_rate);
        for file in files {
            let key = file.digest.to_string();
            let record = self.catalog.reader().blob(&key)?;
            // A coded blob's whole file (the encoder's input) is never a copy to keep.
            let listed = record.as_ref().is_some_and(|r| r.holders.contains(&me))
                && self.catalog.reader().coded(&key)?.is_none();
            if !listed {
                let old = file
                    .modified
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|age| age >= grace);
                if fresh && old {
                    let store = self.store.clone();
                    let digest = file.digest.clone();
                    let done = tokio::task::spawn_blocking(move || store.delete_file_unpinned(&digest))
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))??;
                    if done == Deletion::Deleted {
                        outcome.orphans_deleted += 1;
                        tracing::info!(digest = %file.digest, "orphan blob file removed");
                    }
                }
                continue;
            }
            throttle.pace(file.size).await;
            let store = self.store.clone();
            let digest = file.digest.clone();
            let intact = tokio::task::spawn_blocking(move || store.verify(&digest))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            match intact {
                Ok(true) => outcome.verified += 1,
                Ok(false) => {
                    outcome.corrupt += 1;
                    self.store.quarantine(&file.digest)?;
                }
                // Deleted or replaced meanwhile: nothing to judge.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.scrub_shards(fresh, &mut outcome, &mut throttle).await?;
        self.health.count("scrub.verified", outcome.verified as u64);
        self.health.count("scrub.corrupt", outcome.corrupt as u64);
        self.health.count("gc.orphans_deleted", outcome.orphans_deleted as u64);
        if outcome.corrupt > 0 || outcome.orphans_deleted > 0 {
            tracing::info!(?outcome, "scrub pass");
        }
        Ok(outcome)
    }

    /// The same for shard files: each chunk's seal is checked; shards the layout does not give
    /// to this node are orphans.
    async fn scrub_shards(
        &self,
        fresh: bool,
        outcome: &mut ScrubOutcome,
        throttle: &mut Throttle,
    ) -> Result<(), JobError> {
        let store = self.store.clone();
        let shards = tokio::task::spawn_blocking(move || store.list_shards())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        let me = self.node_id();
        for shard in shards {
            let layout = self.catalog.reader().coded(&shard.digest.to_string())?;
            let listed = layout
                .as_ref()
                .is_some_and(|l| l.shards.get(shard.index).copied().flatten() == Some(me));
            if !listed {
                let old = shard
                    .modified
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .is_some_and(|age| age >= self.settings.gc_grace);
                if fresh && old {
                    let store = self.store.clone();
                    let (digest, index) = (shard.digest.clone(), shard.index);
                    let done = tokio::task::spawn_blocking(move || store.delete_shard_unpinned(&digest, index))
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))??;
                    if done == Deletion::Deleted {
                        outcome.orphans_deleted += 1;
                        tracing::info!(digest = %shard.digest, index = shard.index, "orphan shard removed");
                    }
                }
                continue;
            }
            let Some(layout) = layout else { continue };
            throttle.pace(shard.size).await;
            let store = self.store.clone();
            let (digest, index, chunk) = (shard.digest.clone(), shard.index, layout.chunk as usize);
            let intact = tokio::task::spawn_blocking(move || store.verify_shard(&digest, index, chunk))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            match intact {
                Ok(true) => outcome.verified += 1,
                Ok(false) => {
                    outcome.corrupt += 1;
                    self.store.quarantine_shard(&shard.digest, shard.index)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
