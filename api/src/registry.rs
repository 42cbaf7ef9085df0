//! The state every handler shares: the catalog, the local blob store, upload sessions, the clock
//! and the configured limits.

use std::sync::Arc;

use keelson_raft::{Catalog, RedundancyPolicy};
use keelson_storage::{BlobPeers, BlobStore, Uploads};

/// Wall-clock milliseconds, injectable so the simulation can drive time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;

    /// Moves the clock `offset_ms` ahead of real time, when this clock can be moved (a test
    /// clock); returns whether it could.
    fn set_offset_ms(&self, _offset_ms: u64) -> bool {
        false
    }
}

/// The system clock plus an offset that tests move forward (`keelson serve --test-clock`): how
/// end-to-end tests make retention days, cooling periods and expiries pass without waiting.
#[derive(Default)]
pub struct AdjustableClock {
    offset_ms: std::sync::atomic::AtomicU64,
}

impl Clock for AdjustableClock {
    fn now_ms(&self) -> u64 {
        SystemClock
            .now_ms()
            .saturating_add(self.offset_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn set_offset_ms(&self, offset_ms: u64) -> bool {
        self.offset_ms.store(offset_ms, std::sync::atomic::Ordering::Relaxed);
        true
    }
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

/// This node's redundancy settings. The policy a push uses is catalog state (the cluster default,
/// or the repository's own, see [`Registry::policy_for`]); `replicas` and `erasure` only make the
/// bootstrap default, used until a cluster default is committed.
#[derive(Debug, Clone)]
pub struct Redundancy {
    /// Copies of the bootstrap default `replicas=N`.
    pub replicas: usize,
    /// Copies that must be durable before a push is acknowledged (capped by the copies placed).
    pub write_quorum: usize,
    /// The bootstrap default is `rs=k+m` instead.
    pub erasure: Option<keelson_storage::erasure::Scheme>,
    /// Blobs smaller than this are replicated even when their policy is erasure coding.
    pub erasure_min_bytes: u64,
}

impl Redundancy {
    /// The policy of this node's settings (the bootstrap default).
    pub fn bootstrap_policy(&self) -> RedundancyPolicy {
        match self.erasure {
            Some(s) => RedundancyPolicy::Erasure {
                k: s.k as u16,
                m: s.m as u16,
            },
            None => RedundancyPolicy::Replicas(
                self.replicas.clamp(1, keelson_raft::redundancy::MAX_REPLICAS as usize) as u16
            ),
        }
    }
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

impl Registry {
    /// The cluster's default redundancy policy: the committed one, else this node's bootstrap
    /// default.
    pub fn cluster_policy(&self) -> Result<RedundancyPolicy, keelson_raft::catalog::ReadError> {
        Ok(self
            .catalog
            .reader()
            .cluster_redundancy()?
            .unwrap_or_else(|| self.redundancy.bootstrap_policy()))
    }

    /// The redundancy policy pushes to `repo` use: its own, else the cluster default.
    pub fn policy_for(&self, repo: &str) -> Result<RedundancyPolicy, keelson_raft::catalog::ReadError> {
        match self.catalog.reader().repo_redundancy(repo)? {
            Some(policy) => Ok(policy),
            None => self.cluster_policy(),
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
    /// How long a web console session lasts after signing in.
    pub console_session_secs: u64,
    /// This node's Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Audit events this node answered, waiting for the flush.
    pub audit: crate::audit::AuditLog,
    /// Pull events waiting for the flush, and the leader's webhook deliveries.
    pub webhooks: crate::webhooks::Webhooks,
    /// The readiness check's last synced write to the data directory.
    pub storage_probe: crate::health::StorageProbe,
    /// Replica streams of the upload sessions this node owns, between requests.
    pub tees: keelson_storage::tee::ReplicaTees,
    /// Manifest pulls served by this node, flushed to the catalog in batches.
    pub pulls: crate::pulls::PullCounter,
    /// Whether this node's API serves TLS (the token realm is then `https://…`).
    pub tls: bool,
    /// The administrator's token given to this node at bootstrap; `cluster init` must present it.
    pub bootstrap_token: Option<String>,
    /// Request rates per user and address, and the back-off of failed logins.
    pub rate_limits: crate::rate_limit::RateLimits,
    /// Cross-region replication's in-flight uploads and counters on this node.
    pub replicator: crate::regions::replicate::Replicator,
    /// How this node opens connections when not over TCP (the simulation's network): used by
    /// the clients of other regions and upstreams.
    pub dialer: Option<keelson_raft::network::Dialer>,
    /// Pull-through cache fills in flight on this node.
    pub pull_through: crate::regions::pull_through::PullThrough,
    /// Signature checks already made on this node (content-addressed, so never stale).
    pub signature_checks: crate::signatures::Checks,
    /// Vulnerability reports already worked out on this node (per SBOM and database).
    pub scan_reports: crate::scanning::Reports,
    /// This registry as the node shares it, for work that outlives a request (a cache fill);
    /// set once by whoever wraps it in its `Arc`.
    pub this: std::sync::OnceLock<std::sync::Weak<Registry>>,
}

impl Registry {
    /// The master keys a new catalog secret (a signing key, a peer's or an upstream's
    /// credential) is sealed with: this node's, but only once every member has reported holding
    /// the active key. Until then the secret is kept as given and the at-rest pass seals it when
    /// they all do, so no member is handed a secret it cannot open.
    pub fn sealing_keys(&self) -> Option<Arc<keelson_storage::at_rest::MasterKeys>> {
        let keys = self.store.master_keys()?;
        let capacities = self.catalog.reader().capacities().ok()?;
        let members = self.catalog.members().into_keys();
        keelson_raft::redundancy::all_hold_key(&capacities, members, &hex::encode(keys.active_id())).then_some(keys)
    }

    /// A secret as the catalog keeps it: sealed under the master key when every member holds
    /// it (see [`Registry::sealing_keys`]; the at-rest pass seals it later otherwise).
    pub fn keep_secret(&self, secret: &[u8]) -> Vec<u8> {
        match self.sealing_keys() {
            Some(keys) => keys.seal_secret(secret),
            None => secret.to_vec(),
        }
    }

    /// The shared handle of this registry (see [`Registry::this`]).
    pub fn handle(&self) -> Option<Arc<Registry>> {
        self.this.get().and_then(std::sync::Weak::upgrade)
    }
}
