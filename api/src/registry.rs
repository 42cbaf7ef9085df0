//! The state every handler shares: the catalog, the local blob store, upload sessions, the clock
//! and the configured limits.

use std::sync::Arc;

use keelson_raft::Catalog;
use keelson_storage::{BlobPeers, BlobStore, Uploads};

/// Wall-clock milliseconds, injectable so the simulation can drive time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest manifest body accepted.
    pub max_manifest_bytes: usize,
    /// Largest page a listing returns, whatever `n` asks for.
    pub max_page: usize,
}

/// How many copies of each blob the cluster keeps.
#[derive(Debug, Clone)]
pub struct Redundancy {
    /// Copies placed for every blob (capped by the number of members).
    pub replicas: usize,
    /// Copies that must be durable before a push is acknowledged (capped likewise).
    pub write_quorum: usize,
    /// Erasure coding of large blobs (`k+m` shards) instead of copies; needs at least k+m
    /// members, else blobs are replicated.
    pub erasure: Option<keelson_storage::erasure::Scheme>,
    /// Blobs smaller than this are replicated even with erasure coding on.
    pub erasure_min_bytes: u64,
}

impl Default for Redundancy {
    fn default() -> Self {
        Redundancy {
            replicas: 3,
            write_quorum: 2,
            erasure: None,
            erasure_min_bytes: 1 << 20,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: crate::manifest::MAX_MANIFEST_BYTES,
            max_page: 10_000,
        }
    }
}

/// One node's registry.
pub struct Registry {
    /// This node as the cluster knows it.
    pub self_node: keelson_raft::NodeInfo,
    pub catalog: Catalog,
    pub store: BlobStore,
    pub uploads: Arc<Uploads>,
    pub peers: BlobPeers,
    pub proxy: crate::proxy::Proxy,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub redundancy: Redundancy,
    /// What the background blob jobs (repair, scrub, GC) report, for `cluster status`.
    pub blob_health: Arc<keelson_storage::jobs::BlobHealth>,
    pub auth_mode: crate::access::AuthMode,
    /// Auth-token uses seen by this node, flushed to the catalog in batches.
    pub token_uses: crate::auth::TokenUses,
    /// Registry tokens already verified on this node.
    pub verified: crate::auth::VerifiedTokens,
    /// Auth tokens a user may hold at once.
    pub max_tokens_per_user: usize,
}
