//! Online garbage collection (leader only), in two Raft-fenced phases.
//!
//! *Mark*: blobs that no manifest of any repository references and whose record is older than
//! the grace period are committed as candidates of the current GC epoch (`GcMark`). From then on
//! every `LinkBlob`, `MountBlob` or `PutManifest` that names a candidate removes it from the
//! candidate set as it is applied — deterministically, on every replica.
//!
//! *Sweep*: at least one grace period after the mark, the leader recomputes the garbage (its
//! state now includes the mark, so anything referenced before the mark committed is seen) and
//! commits `GcSweep` with the candidates still garbage; applying it deletes only the ones still
//! candidates at that point, with their repository links, and ends the epoch. Only after the sweep
//! has committed are the files removed, by a `Delete` on each holder, which keeps a file that a
//! concurrent push of the same content has pinned. Files a holder missed (down, pinned) are
//! orphans that the holder's own scrub removes later.

use std::collections::{HashMap, HashSet};

use keelson_raft::command::GC_BATCH;
use keelson_raft::{BlobRecord, CatalogCommand, CatalogResponse, NodeId, SweptBlob};

use super::{BlobJobs, JobError};
use crate::blob_store::Deletion;
use crate::digest::Digest;

/// What one GC pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOutcome {
    /// Candidates committed by a mark.
    pub marked: usize,
    /// Blob records deleted by a sweep.
    pub swept: usize,
    /// Holder files removed after the sweep.
    pub files_deleted: usize,
}

/// The unreferenced blobs old enough to collect: pure, tested without a cluster.
pub fn garbage<'a>(
    records: impl IntoIterator<Item = (&'a str, &'a BlobRecord)>,
    referenced: &HashSet<String>,
    now_ms: u64,
    grace_ms: u64,
) -> Vec<&'a str> {
    records
        .into_iter()
        .filter(|(digest, record)| {
            !referenced.contains(*digest) && record.created_ms.saturating_add(grace_ms) <= now_ms
        })
        .map(|(digest, _)| digest)
        .collect()
}

impl BlobJobs {
    /// One GC pass: a mark when none is pending, else (once the grace period has passed) a sweep
    /// followed by the deletion of the swept blobs' files.
    pub async fn gc_pass(&self) -> Result<GcOutcome, JobError> {
        let mut outcome = GcOutcome::default();
        if !self.is_leader() {
            return Ok(outcome);
        }
        self.catalog.linearizable().await?;
        let reader = self.catalog.reader();
        let state = reader.gc_state()?;
        let now = (self.now_ms)();
        let grace = self.settings.gc_grace.as_millis() as u64;
        if state.marked_ms.is_some_and(|marked| now < marked.saturating_add(grace)) {
            return Ok(outcome);
        }
        let mut referenced = HashSet::new();
        reader.for_each_manifest(|_, _, m| referenced.extend(m.blobs.iter().cloned()))?;
        let records = reader.all_blobs()?;
        let found: HashSet<&str> = garbage(records.iter().map(|(d, r)| (d.as_str(), r)), &referenced, now, grace)
            .into_iter()
            .collect();
        if state.marked_ms.is_none() {
            if found.is_empty() {
                return Ok(outcome);
            }
            let mut candidates: Vec<String> = found.iter().map(|d| d.to_string()).collect();
            candidates.sort();
            // In parts of GC_BATCH, so no Raft entry grows with the number of candidates; a
            // part lost to a crash leaves its blobs for the next epoch.
            for (i, part) in candidates.chunks(GC_BATCH).enumerate() {
                let cmd = if i == 0 {
                    CatalogCommand::GcMark {
                        epoch: state.epoch,
                        candidates: part.to_vec(),
                        now_ms: now,
                    }
                } else {
                    CatalogCommand::GcMarkMore {
                        epoch: state.epoch,
                        candidates: part.to_vec(),
                        now_ms: (self.now_ms)(),
                    }
                };
                if let CatalogResponse::Rejected(r) = self.catalog.propose(cmd).await? {
                    tracing::info!(reason = %r, "GC mark skipped");
                    break;
                }
                outcome.marked += part.len();
            }
            if outcome.marked > 0 {
                tracing::info!(epoch = state.epoch, candidates = outcome.marked, "GC marked");
                self.health.count("gc.marked", outcome.marked as u64);
            }
            return Ok(outcome);
        }

        // Sweep: candidates of this epoch that are still garbage now.
        let candidates: HashSet<String> = reader.gc_candidates()?.into_iter().collect();
        let mut links: HashMap<String, Vec<String>> = HashMap::new();
        for (repo, digest) in reader.blob_links()? {
            if candidates.contains(&digest) {
                links.entry(digest).or_default().push(repo);
            }
        }
        let mut blobs = Vec::new();
        let mut holders: HashMap<String, Vec<NodeId>> = HashMap::new();
        for (digest, record) in &records {
            if found.contains(digest.as_str()) && candidates.contains(digest) {
                blobs.push(SweptBlob {
                    digest: digest.clone(),
                    repos: links.remove(digest).unwrap_or_default(),
                });
                holders.insert(digest.clone(), record.holders.clone());
            }
        }
        // In parts of GC_BATCH; the last (possibly empty) part ends the epoch. A crash between
        // parts leaves the epoch open, and the next pass sweeps the candidates still left.
        let parts = sweep_parts(&blobs);
        let last = parts.len() - 1;
        for (i, part) in parts.into_iter().enumerate() {
            let cmd = if i == last {
                CatalogCommand::GcSweep {
                    epoch: state.epoch,
                    blobs: part.to_vec(),
                }
            } else {
                CatalogCommand::GcSweepPart {
                    epoch: state.epoch,
                    blobs: part.to_vec(),
                }
            };
            if let CatalogResponse::Rejected(r) = self.catalog.propose(cmd).await? {
                tracing::info!(reason = %r, "GC sweep skipped");
                break;
            }
            self.delete_swept(part, &holders, &mut outcome).await?;
        }
        self.health.count("gc.swept", outcome.swept as u64);
        self.health.count("gc.files_deleted", outcome.files_deleted as u64);
        tracing::info!(
            epoch = state.epoch,
            swept = outcome.swept,
            files_deleted = outcome.files_deleted,
            "GC swept"
        );
        Ok(outcome)
    }

    /// Removes the files of a committed sweep part's blobs from their holders.
    async fn delete_swept(
        &self,
        part: &[SweptBlob],
        holders: &HashMap<String, Vec<NodeId>>,
        outcome: &mut GcOutcome,
    ) -> Result<(), JobError> {
        let reader = self.catalog.reader();
        for blob in part {
            // A record present again was re-pushed after the sweep: its files are live.
            if reader.blob(&blob.digest)?.is_some() {
                continue;
            }
            outcome.swept += 1;
            let Ok(digest) = Digest::parse(&blob.digest) else {
                continue;
            };
            for holder in holders.get(&blob.digest).map(Vec::as_slice).unwrap_or_default() {
                if self.delete_copy(*holder, &digest).await {
                    outcome.files_deleted += 1;
                }
            }
        }
        Ok(())
    }

    /// Removes `holder`'s copy of a swept blob; false when it could not (left to its scrub).
    async fn delete_copy(&self, holder: NodeId, digest: &Digest) -> bool {
        if holder == self.node_id() {
            let store = self.store.clone();
            let d = digest.clone();
            return matches!(
                tokio::task::spawn_blocking(move || store.delete_unpinned(&d)).await,
                Ok(Ok(Deletion::Deleted | Deletion::Absent))
            );
        }
        let Some(addr) = self.peer_addrs(&[holder]).pop() else {
            return false;
        };
        match self.peers.ask_delete(&addr, digest).await {
            Ok(gone) => gone,
            Err(e) => {
                tracing::info!(%digest, holder, error = %e, "GC delete deferred to the holder's scrub");
                false
            }
        }
    }
}

/// Bytes of swept blobs per sweep part: a swept blob names every repository that links it, so
/// parts are cut by size as well as by count, well below the Raft entry bound.
const SWEEP_PART_BYTES: usize = 4 << 20;

/// `blobs` in consecutive parts of at most `GC_BATCH` blobs and about `SWEEP_PART_BYTES`
/// (one part, empty, when there is nothing to sweep: the epoch still ends).
fn sweep_parts(blobs: &[SweptBlob]) -> Vec<&[SweptBlob]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, blob) in blobs.iter().enumerate() {
        let size = 16 + blob.digest.len() + blob.repos.iter().map(|r| r.len() + 8).sum::<usize>();
        if i > start && (i - start >= GC_BATCH || bytes + size > SWEEP_PART_BYTES) {
            parts.push(&blobs[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    parts.push(&blobs[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_parts_are_bounded_by_count_and_by_size() {
        let blob = |repos: usize| SweptBlob {
            digest: format!("sha256:{}", "a".repeat(64)),
            repos: (0..repos).map(|r| format!("tenant/repository-{r:06}")).collect(),
        };
        assert_eq!(sweep_parts(&[]).len(), 1, "an empty sweep still ends the epoch");
        let many: Vec<SweptBlob> = (0..25_000).map(|_| blob(1)).collect();
        let parts = sweep_parts(&many);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![10_000, 10_000, 5_000]
        );
        // 10,000 blobs linked into 20 repositories each would be about 7 MiB in one part.
        let wide: Vec<SweptBlob> = (0..10_000).map(|_| blob(20)).collect();
        let parts = sweep_parts(&wide);
        assert!(parts.len() >= 2, "{} parts", parts.len());
        assert_eq!(parts.iter().map(|p| p.len()).sum::<usize>(), 10_000);
        for part in parts {
            // What the part costs as a Raft command.
            let bytes = bincode::serialized_size(part).unwrap();
            assert!(bytes <= 5 << 20, "a part of {bytes} bytes");
        }
    }

    #[test]
    fn garbage_is_unreferenced_and_old() {
        let rec = |created_ms| BlobRecord {
            size: 1,
            holders: vec![1],
            created_ms,
        };
        let records = [
            ("old-free".to_string(), rec(0)),
            ("old-used".to_string(), rec(0)),
            ("young-free".to_string(), rec(950)),
        ];
        let referenced = HashSet::from(["old-used".to_string()]);
        let g = garbage(records.iter().map(|(d, r)| (d.as_str(), r)), &referenced, 1000, 100);
        assert_eq!(g, vec!["old-free"]);
    }
}
