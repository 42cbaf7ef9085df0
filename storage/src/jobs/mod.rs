//! Background blob jobs: repair and rebalancing (leader), garbage collection (leader), scrub and
//! heal (every node). Each job is a `pass` function that recomputes what to do from the catalog and the
//! local disk, so a pass interrupted by a crash or a leader change is simply redone by the next
//! one; the node crate runs the passes on timers.
//!
//! Every decision that changes the catalog goes through Raft with a compare-and-set or an epoch
//! fence (see [`keelson_raft::CatalogCommand::SetHolders`], `GcMark`, `GcSweep`).

pub mod at_rest;
pub mod gc;
pub mod heal;
pub mod health;
pub mod liveness;
pub mod rebalance;
pub mod repair;
pub mod scrub;
pub mod throttle;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keelson_raft::{Catalog, NodeId};

use crate::blob_store::BlobStore;
use crate::transfer::BlobPeers;
use crate::upload::Uploads;

pub use health::BlobHealth;

/// How the background jobs run (intervals, rates, grace periods).
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Copies each blob should have (capped by the number of live members).
    pub replicas: usize,
    /// Time between two repair passes.
    pub repair_interval: Duration,
    /// A member the leader has had no sign of life from for this long counts as lost.
    pub lost_after: Duration,
    /// Bytes per second repair may copy (0: unlimited).
    pub repair_rate: u64,
    /// Time between two scrub passes over the local disk.
    pub scrub_interval: Duration,
    /// Bytes per second scrub may read (0: unlimited).
    pub scrub_rate: u64,
    /// Time between two GC passes.
    pub gc_interval: Duration,
    /// Unreferenced blobs younger than this are kept; a GC mark waits this long before its sweep;
    /// in-flight pushes are pinned this long.
    pub gc_grace: Duration,
    /// Erasure coding of large blobs (`None`: every blob is replicated).
    pub erasure: Option<crate::erasure::Scheme>,
    /// Blobs smaller than this are always replicated.
    pub erasure_min_bytes: u64,
    /// Time between two encryption-at-rest passes (see [`at_rest`]).
    pub at_rest_interval: Duration,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            replicas: 3,
            repair_interval: Duration::from_secs(30),
            lost_after: Duration::from_secs(300),
            repair_rate: 64 << 20,
            scrub_interval: Duration::from_secs(24 * 3600),
            scrub_rate: 32 << 20,
            gc_interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(3600),
            erasure: None,
            erasure_min_bytes: 1 << 20,
            at_rest_interval: Duration::from_secs(60),
        }
    }
}

/// Everything a background pass needs.
pub struct BlobJobs {
    pub catalog: Catalog,
    pub store: BlobStore,
    pub uploads: Arc<Uploads>,
    pub peers: BlobPeers,
    pub settings: JobSettings,
    pub health: Arc<BlobHealth>,
    /// Wall-clock milliseconds (the node's injectable clock).
    pub now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
    liveness: Mutex<liveness::Liveness>,
    /// The key ring generation whose files the last encryption-at-rest pass left all sealed
    /// under the active key: later passes skip the walk over the disk until keys change.
    sealed_generation: Mutex<Option<u64>>,
}

/// Why a pass stopped early (it is retried by the next one).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Catalog(#[from] keelson_raft::CatalogError),
    #[error(transparent)]
    Read(#[from] keelson_raft::catalog::ReadError),
    #[error(transparent)]
    Storage(#[from] crate::error::StorageError),
    #[error("local disk: {0}")]
    Io(#[from] std::io::Error),
}

impl BlobJobs {
    pub fn new(
        catalog: Catalog,
        store: BlobStore,
        uploads: Arc<Uploads>,
        peers: BlobPeers,
        settings: JobSettings,
        health: Arc<BlobHealth>,
        now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> BlobJobs {
        store.pins().set_ttl(settings.gc_grace);
        BlobJobs {
            catalog,
            store,
            uploads,
            peers,
            settings,
            health,
            now_ms,
            liveness: Mutex::default(),
            sealed_generation: Mutex::default(),
        }
    }

    fn node_id(&self) -> NodeId {
        self.catalog.node_id()
    }

    fn is_leader(&self) -> bool {
        self.catalog.is_leader()
    }

    /// Peer addresses of `ids` that are members (in the given order).
    fn peer_addrs(&self, ids: &[NodeId]) -> Vec<String> {
        let members = self.catalog.members();
        ids.iter()
            .filter_map(|id| members.get(id).map(|(n, _)| n.peer_addr.clone()))
            .collect()
    }
}

/// A blob record with `holders`, for the jobs' unit tests.
#[cfg(test)]
pub(crate) fn test_record(size: u64, holders: &[NodeId]) -> keelson_raft::BlobRecord {
    keelson_raft::BlobRecord {
        size,
        holders: holders.to_vec(),
        created_ms: 0,
    }
}
