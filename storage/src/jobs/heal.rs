//! The healer (every node): re-fetches local copies that were found corrupt (and quarantined)
//! or missing, from the blob's other holders, so the catalog's holder list stays true.

use super::{BlobJobs, JobError};

impl BlobJobs {
    /// Re-fetches everything queued; what fails stays queued for the next pass. Returns the
    /// number of copies restored.
    pub async fn heal_pass(&self) -> Result<usize, JobError> {
        let queued = self.store.heal_queue().take();
        let me = self.node_id();
        let mut restored = 0;
        for digest in queued {
            let Some(record) = self.catalog.reader().blob(&digest.to_string())? else {
                continue; // collected meanwhile
            };
            if let Some(layout) = self.catalog.reader().coded(&digest.to_string())? {
                restored += self.heal_shards(&digest, record.size, &layout).await;
                continue;
            }
            if !record.holders.contains(&me) || self.store.contains(&digest) {
                continue;
            }
            let others: Vec<_> = record.holders.iter().copied().filter(|h| *h != me).collect();
            let sources = self.peer_addrs(&others);
            match self
                .peers
                .copy_from(&sources, &self.uploads, &self.store, &digest, record.size)
                .await
            {
                Ok(_) => {
                    restored += 1;
                    self.health.count("scrub.repaired", 1);
                    tracing::info!(%digest, "local copy restored from another holder");
                }
                Err(e) => {
                    tracing::warn!(%digest, error = %e, "cannot restore local copy yet");
                    self.store.heal_queue().push_quiet(digest);
                }
            }
        }
        Ok(restored)
    }

    /// Rebuilds the shards the layout gives to this node that are missing here.
    async fn heal_shards(
        &self,
        digest: &crate::digest::Digest,
        size: u64,
        layout: &keelson_raft::CodedLayout,
    ) -> usize {
        let me = self.node_id();
        let members = self.catalog.members();
        let sources: Vec<Option<String>> = layout
            .shards
            .iter()
            .map(|h| h.and_then(|h| members.get(&h).map(|(n, _)| n.peer_addr.clone())))
            .collect();
        let geometry = crate::erasure::Geometry::new(layout.k as usize, layout.m as usize, layout.chunk as usize, size);
        let mut restored = 0;
        for (index, holder) in layout.shards.iter().enumerate() {
            if *holder != Some(me) || self.store.has_shard(digest, index) {
                continue;
            }
            match crate::erasure::write::rebuild_shard(&self.peers, &self.store, digest, geometry, &sources, index)
                .await
            {
                Ok(_) => {
                    restored += 1;
                    self.health.count("scrub.repaired", 1);
                    tracing::info!(%digest, index, "local shard rebuilt from the others");
                }
                Err(e) => {
                    tracing::warn!(%digest, index, error = %e, "cannot rebuild local shard yet");
                    self.store.heal_queue().push_quiet(digest.clone());
                }
            }
        }
        restored
    }
}
