//! Node configuration: command-line flags, an optional TOML file with the same keys, and the
//! defaults that make `keelson serve` with no flags a complete single-node registry under
//! `./keelson-data` on 127.0.0.1:5000. A flag wins over the file, the file over the default.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use keelson_raft::tls::PeerTls;
use keelson_storage::jobs::JobSettings;
use serde::Deserialize;

/// Flags of `keelson serve` (all optional; see [`ServeConfig::resolve`]).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// A TOML file with any of these keys (`data-dir = "…"`, `listen = "…"`, …).
    #[arg(long, env = "KEELSON_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where the catalog, blobs and upload sessions live [default: ./keelson-data].
    #[arg(long, env = "KEELSON_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the registry API [default: 127.0.0.1:5000].
    #[arg(long, env = "KEELSON_LISTEN")]
    pub listen: Option<String>,
    /// Address of the peer endpoint (Raft, blob transfer). Without it the node runs alone and
    /// bootstraps itself as a one-node cluster.
    #[arg(long, env = "KEELSON_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// Address peers and clients should use for this node's API, when it differs from --listen.
    #[arg(long, env = "KEELSON_ADVERTISE")]
    pub advertise: Option<String>,
    /// Address peers should use for this node's peer endpoint, when it differs from --peer-listen
    /// (e.g. bound to 0.0.0.0 behind a DNS name).
    #[arg(long, env = "KEELSON_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// This node's id in the cluster [default: 1].
    #[arg(long, env = "KEELSON_NODE_ID")]
    pub node_id: Option<u64>,
    /// Fault-domain label used by blob placement [default: fd1].
    #[arg(long, env = "KEELSON_FAULT_DOMAIN")]
    pub fault_domain: Option<String>,
    /// Region this cluster serves (one cluster per region) [default: local].
    #[arg(long, env = "KEELSON_REGION")]
    pub region: Option<String>,
    /// Bootstrap default redundancy `replicas=N`: copies kept of every blob (capped by the
    /// member count); see --erasure [default: 3].
    #[arg(long, env = "KEELSON_REPLICAS")]
    pub replicas: Option<usize>,
    /// `enforce` (default): identity and policies on every route; `off`: anonymous full access,
    /// for local experiments and benchmarks only.
    #[arg(long, env = "KEELSON_AUTH")]
    pub auth: Option<AuthSetting>,
    /// The cluster administrator's auth token, set at bootstrap instead of a generated one. It
    /// is also the bootstrap secret: with it, `cluster init` must present it (as the password of
    /// keelson/admin); without it, only a caller on this node's own host (loopback) may run
    /// `cluster init`, and only then is a generated token shown.
    #[arg(long, env = "KEELSON_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// Auth tokens a user may hold at once [default: 2].
    #[arg(long, env = "KEELSON_MAX_TOKENS_PER_USER")]
    pub max_tokens_per_user: Option<usize>,
    /// Seconds a web console session lasts after signing in [default: 28800, eight hours].
    #[arg(long, env = "KEELSON_CONSOLE_SESSION_SECS")]
    pub console_session_secs: Option<u64>,
    /// Milliseconds between two repair passes of the leader [default: 30000].
    #[arg(long, env = "KEELSON_REPAIR_INTERVAL_MS")]
    pub repair_interval_ms: Option<u64>,
    /// A member silent (no ping, no Raft progress) this long counts as lost and its copies are
    /// re-created elsewhere [default: 300000].
    #[arg(long, env = "KEELSON_REPAIR_LOST_AFTER_MS")]
    pub repair_lost_after_ms: Option<u64>,
    /// MiB per second repair may copy, 0 for unlimited [default: 64].
    #[arg(long, env = "KEELSON_REPAIR_RATE_MIB")]
    pub repair_rate_mib: Option<u64>,
    /// Milliseconds between two scrub passes over the local blobs [default: 86400000].
    #[arg(long, env = "KEELSON_SCRUB_INTERVAL_MS")]
    pub scrub_interval_ms: Option<u64>,
    /// MiB per second scrub may read, 0 for unlimited [default: 32].
    #[arg(long, env = "KEELSON_SCRUB_RATE_MIB")]
    pub scrub_rate_mib: Option<u64>,
    /// Milliseconds between two garbage-collection passes of the leader [default: 600000].
    #[arg(long, env = "KEELSON_GC_INTERVAL_MS")]
    pub gc_interval_ms: Option<u64>,
    /// Unreferenced blobs younger than this are kept, and a GC mark waits this long before its
    /// sweep [default: 3600000].
    #[arg(long, env = "KEELSON_GC_GRACE_MS")]
    pub gc_grace_ms: Option<u64>,
    /// Bootstrap default redundancy: erasure-code large blobs as `k+m` shards on k+m nodes in
    /// distinct fault domains (e.g. `4+2`). Committed as the cluster default by `cluster init`
    /// when none is set; afterwards the catalog's setting (`keelson admin redundancy-set`) rules
    /// and this flag is ignored [default: off, `replicas=N`].
    #[arg(long, env = "KEELSON_ERASURE")]
    pub erasure: Option<String>,
    /// Bytes of this node's disk Keelson may fill with blobs [default: the whole filesystem].
    /// Placement weighs nodes by their free space and skips nearly full ones (5% left).
    #[arg(long, env = "KEELSON_CAPACITY_BYTES")]
    pub capacity_bytes: Option<u64>,
    /// Milliseconds between two capacity measurements (reported through Raft when they
    /// changed by 1% or more); 0 turns reports off, and placement then weighs this node like
    /// an average one [default: 30000].
    #[arg(long, env = "KEELSON_CAPACITY_INTERVAL_MS")]
    pub capacity_interval_ms: Option<u64>,
    /// Blobs smaller than this many bytes are replicated even when erasure coding is on
    /// [default: 1048576].
    #[arg(long, env = "KEELSON_ERASURE_MIN_BYTES")]
    pub erasure_min_bytes: Option<u64>,
    /// Log entries applied between two catalog snapshots; older entries are then purged and a
    /// member that lags further behind is sent the snapshot [default: 20000].
    #[arg(long, env = "KEELSON_SNAPSHOT_EVERY_LOGS")]
    pub snapshot_every_logs: Option<u64>,
    /// This node's certificate (PEM) for mutual TLS on the peer endpoint; with --peer-tls-key
    /// and --peer-tls-ca, peers talk only TLS and accept only certificates of that CA
    /// (`deploy/certs.sh` makes them) [default: plain TCP].
    #[arg(long, env = "KEELSON_PEER_TLS_CERT")]
    pub peer_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --peer-tls-cert.
    #[arg(long, env = "KEELSON_PEER_TLS_KEY")]
    pub peer_tls_key: Option<PathBuf>,
    /// The cluster CA (PEM) every peer's certificate must chain to.
    #[arg(long, env = "KEELSON_PEER_TLS_CA")]
    pub peer_tls_ca: Option<PathBuf>,
    /// Certificate chain (PEM) the registry API serves TLS with; with --tls-key every client
    /// (docker, containerd, kubelet, the console) talks HTTPS to this node. Reloaded when the
    /// file changes [default: plain HTTP, on loopback only].
    #[arg(long, env = "KEELSON_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "KEELSON_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) the other nodes' API certificates chain to, trusted when this
    /// node relays a request to another node's API [default: --peer-tls-ca, else the system's
    /// trust store].
    #[arg(long, env = "KEELSON_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Milliseconds between two checks of --tls-cert and --tls-key for a renewed certificate
    /// [default: 5000].
    #[arg(long, env = "KEELSON_TLS_RELOAD_MS")]
    pub tls_reload_ms: Option<u64>,
    /// Serve the API in plain HTTP on an address other hosts can reach (without TLS only
    /// loopback addresses are allowed): credentials and images then cross the network in the
    /// clear [default: false].
    #[arg(long, env = "KEELSON_INSECURE_HTTP")]
    pub insecure_http: Option<bool>,
    /// A file of master keys that turns encryption at rest on: blobs, shards and upload files are
    /// stored sealed with AES-256-GCM under per-file data keys wrapped by the first key, and the
    /// catalog's signing keys are sealed too. One key per line, 64 hex digits (`openssl rand -hex
    /// 32`); the first is active, later ones are retired keys still read during a rotation. Every
    /// node needs the same file; it is reloaded when it changes [default: off].
    #[arg(long, env = "KEELSON_ENCRYPTION_KEY_FILE")]
    pub encryption_key_file: Option<PathBuf>,
    /// The master keys themselves, as the key file's lines separated by commas, for deployments
    /// that pass secrets in the environment (never reloaded) [default: off].
    #[arg(long, env = "KEELSON_ENCRYPTION_KEYS", hide_env_values = true)]
    #[serde(skip)]
    pub encryption_keys: Option<String>,
    /// Milliseconds between two encryption-at-rest passes (sealing files written before
    /// encryption was on, re-wrapping data keys after a rotation) [default: 60000].
    #[arg(long, env = "KEELSON_AT_REST_INTERVAL_MS")]
    pub at_rest_interval_ms: Option<u64>,
    /// MiB of memory for decrypted 1 MiB windows of the sealed blobs pulled most, so a hot
    /// layer is decrypted once rather than on every pull (plaintext in memory only, never on
    /// disk); 0 turns it off. Used only with encryption at rest [default: 256].
    #[arg(long, env = "KEELSON_DECRYPTED_CACHE_MIB")]
    pub decrypted_cache_mib: Option<u64>,
    /// Milliseconds an upload session may stay unused before it expires with its files
    /// [default: 3600000].
    #[arg(long, env = "KEELSON_UPLOAD_IDLE_MS")]
    pub upload_idle_ms: Option<u64>,
    /// Milliseconds between two sweeps for expired upload sessions [default: 60000].
    #[arg(long, env = "KEELSON_UPLOAD_SWEEP_MS")]
    pub upload_sweep_ms: Option<u64>,
    /// Upload sessions one user may hold open on one node [default: 256].
    #[arg(long, env = "KEELSON_MAX_UPLOADS_PER_USER")]
    pub max_uploads_per_user: Option<usize>,
    /// Requests per second one user may make to this node (a token bucket holding twice as
    /// many); 0 for no limit. A tenancy's own `requests_per_second` limit replaces it for its
    /// users. Over the limit the answer is 429 with Retry-After [default: 0].
    #[arg(long, env = "KEELSON_RATE_LIMIT_PER_USER")]
    pub rate_limit_per_user: Option<u32>,
    /// Requests per second one source address may make to this node; 0 for no limit. Behind a
    /// balancer that hides client addresses, leave it off or set it high [default: 0].
    #[arg(long, env = "KEELSON_RATE_LIMIT_PER_ADDRESS")]
    pub rate_limit_per_address: Option<u32>,
    /// Count manifest pulls per image (`false` only to measure what counting costs)
    /// [default: true].
    #[arg(long, env = "KEELSON_COUNT_PULLS")]
    pub count_pulls: Option<bool>,
    /// Milliseconds between two flushes of this node's pull counts to the catalog; at most this
    /// much counting is lost when the node dies [default: 10000].
    #[arg(long, env = "KEELSON_PULL_FLUSH_MS")]
    pub pull_flush_ms: Option<u64>,
    /// Milliseconds between two retention passes of the leader over every repository
    /// [default: 3600000].
    #[arg(long, env = "KEELSON_RETENTION_INTERVAL_MS")]
    pub retention_interval_ms: Option<u64>,
    /// Milliseconds between two flushes of this node's audit events to the catalog; events of
    /// at most this long are lost when the node dies [default: 1000].
    #[arg(long, env = "KEELSON_AUDIT_FLUSH_MS")]
    pub audit_flush_ms: Option<u64>,
    /// Days the audit log keeps a record; the leader's retention pass prunes older ones
    /// [default: 90].
    #[arg(long, env = "KEELSON_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u64>,
    /// Milliseconds between two rounds of the webhook task: this node's pull events go to the
    /// catalog, and the leader starts a delivery to every endpoint with events due
    /// [default: 500].
    #[arg(long, env = "KEELSON_WEBHOOK_POLL_MS")]
    pub webhook_poll_ms: Option<u64>,
    /// Inventory pushed images in the background (the vulnerability scanner) [default: true].
    #[arg(long, env = "KEELSON_SCANNER")]
    pub scanner: Option<bool>,
    /// Milliseconds between two rounds of the vulnerability scanner, which inventories the
    /// pushed images whose largest layer this node holds, one at a time [default: 1000].
    #[arg(long, env = "KEELSON_SCAN_POLL_MS")]
    pub scan_poll_ms: Option<u64>,
    /// Milliseconds between two copies of identity from the home region (in a region whose
    /// home is elsewhere): a token revoked at home stops working here within about this long
    /// [default: 2000].
    #[arg(long, env = "KEELSON_IDENTITY_SYNC_MS")]
    pub identity_sync_ms: Option<u64>,
    /// Milliseconds between two looks of the leader at the cross-region replication queue
    /// [default: 500].
    #[arg(long, env = "KEELSON_REPLICATION_POLL_MS")]
    pub replication_poll_ms: Option<u64>,
    /// Milliseconds between two full replication passes over every repository a rule covers,
    /// which repair anything the queue missed [default: 60000].
    #[arg(long, env = "KEELSON_REPLICATION_RECONCILE_MS")]
    pub replication_reconcile_ms: Option<u64>,
    /// Let the cluster administrator move this node's clock forward
    /// (`PUT /api/v1/cluster/clock`), for end-to-end tests of retention days and cooling
    /// periods. Never in production [default: false].
    #[arg(long, env = "KEELSON_TEST_CLOCK")]
    pub test_clock: Option<bool>,
}

/// The registry API's TLS: where its certificate and key live (watched for renewals) and what
/// relays to other nodes trust.
#[derive(Debug, Clone)]
pub struct ApiTlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Trust for relays to other nodes' APIs (`None`: the system's trust store).
    pub ca: Option<PathBuf>,
    pub reload_every: Duration,
}

/// Upload sessions: when idle ones expire and how many one user may hold.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub idle: Duration,
    pub sweep_every: Duration,
    pub limits: keelson_storage::upload::UploadLimits,
}

/// The lifecycle layer's settings: pull counting and retention.
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    pub count_pulls: bool,
    pub pull_flush: Duration,
    pub retention_interval: Duration,
    pub audit_flush: Duration,
    pub audit_retention: Duration,
    pub webhook_poll: Duration,
    pub scanner: bool,
    pub scan_poll: Duration,
    pub test_clock: bool,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            count_pulls: true,
            // Ten seconds: totals are at most this stale, and a node's death loses at most this
            // much counting, while 3 nodes cost one small Raft entry each per interval.
            pull_flush: Duration::from_secs(10),
            // Hourly, as OCIR evaluates its cleanup policies.
            retention_interval: Duration::from_secs(3600),
            // One second: an audit record is replicated about this soon after the change.
            audit_flush: Duration::from_secs(1),
            audit_retention: Duration::from_secs(90 * 24 * 3600),
            // Half a second: a queued event leaves about this soon after its change commits.
            webhook_poll: Duration::from_millis(500),
            scanner: true,
            // A second: an image's inventory starts about this soon after its push.
            scan_poll: Duration::from_secs(1),
            test_clock: false,
        }
    }
}

/// The region timers: copying identity from home, and cross-region replication.
#[derive(Debug, Clone)]
pub struct RegionTimers {
    pub identity_sync: Duration,
    pub replication_poll: Duration,
    pub replication_reconcile: Duration,
}

/// The `auth` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthSetting {
    Enforce,
    Off,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    pub peer_listen: Option<String>,
    pub advertise: Option<String>,
    pub advertise_peer: Option<String>,
    pub node_id: u64,
    pub fault_domain: String,
    pub region: String,
    pub replicas: usize,
    pub auth: AuthSetting,
    pub max_tokens_per_user: usize,
    pub console_session_secs: u64,
    /// The administrator's token given at bootstrap (and the bootstrap secret).
    pub bootstrap_token: Option<String>,
    pub snapshot_every_logs: u64,
    /// Mutual TLS between peers, when configured.
    pub peer_tls: Option<PeerTls>,
    /// TLS on the registry API, when configured.
    pub api_tls: Option<ApiTlsSettings>,
    /// Plain HTTP on a non-loopback address was asked for explicitly.
    pub insecure_http: bool,
    /// Background blob jobs: repair, scrub, GC (`replicas` is taken from the field above).
    pub blob_jobs: JobSettings,
    /// Bytes of the disk blobs may use (`None`: the filesystem's size).
    pub capacity_bytes: Option<u64>,
    /// Time between two capacity measurements (`None`: no reports).
    pub capacity_interval: Option<Duration>,
    pub lifecycle: LifecycleSettings,
    pub regions: RegionTimers,
    pub uploads: UploadSettings,
    pub rates: keelson_api::rate_limit::RateSettings,
    /// Master keys when encryption at rest is on.
    pub key_ring: Option<std::sync::Arc<keelson_storage::at_rest::KeyRing>>,
    /// Memory for decrypted windows of sealed blobs.
    pub decrypted_cache_bytes: u64,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid configuration in {0}: {1}")]
    Parse(String, toml::de::Error),
    #[error(transparent)]
    Erasure(keelson_storage::erasure::ErasureError),
    #[error("peer TLS needs all of peer-tls-cert, peer-tls-key and peer-tls-ca (missing {0})")]
    PartialTls(&'static str),
    #[error(transparent)]
    Tls(#[from] keelson_raft::tls::TlsError),
    #[error("API TLS needs both tls-cert and tls-key (missing {0})")]
    PartialApiTls(&'static str),
    #[error(
        "refusing to serve plain HTTP on {0}, which other hosts can reach: give --tls-cert and \
         --tls-key, listen on 127.0.0.1, or pass --insecure-http to accept clear-text credentials"
    )]
    InsecureListen(String),
    #[error("encryption at rest: {0}")]
    MasterKeys(#[from] keelson_storage::at_rest::KeyError),
    #[error("give the master keys once: encryption-key-file or KEELSON_ENCRYPTION_KEYS, not both")]
    TwoKeySources,
}

/// Whether `listen` (`host:port`) is reachable from this host only.
fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    matches!(listen.rsplit_once(':'), Some(("localhost", _)))
}

impl ServeArgs {
    /// Merges flags over the file over the defaults.
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            None => ServeArgs::default(),
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(name.clone(), e))?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(name, e))?
            }
        };
        let peer_tls_ca = self.peer_tls_ca.clone().or(file.peer_tls_ca.clone());
        let api_tls = match (self.tls_cert.or(file.tls_cert), self.tls_key.or(file.tls_key)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ApiTlsSettings {
                cert,
                key,
                ca: self.tls_ca.or(file.tls_ca).or(peer_tls_ca),
                reload_every: Duration::from_millis(self.tls_reload_ms.or(file.tls_reload_ms).unwrap_or(5000).max(10)),
            }),
            (None, _) => return Err(ConfigError::PartialApiTls("tls-cert")),
            (_, None) => return Err(ConfigError::PartialApiTls("tls-key")),
        };
        let listen = self.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:5000".into());
        let insecure_http = self.insecure_http.or(file.insecure_http).unwrap_or(false);
        if api_tls.is_none() && !insecure_http && !is_loopback(&listen) {
            return Err(ConfigError::InsecureListen(listen));
        }
        let key_ring = match (
            self.encryption_key_file.or(file.encryption_key_file),
            self.encryption_keys,
        ) {
            (None, None) => None,
            (Some(path), None) => Some(std::sync::Arc::new(keelson_storage::at_rest::KeyRing::from_file(
                &path,
            )?)),
            (None, Some(text)) => Some(std::sync::Arc::new(keelson_storage::at_rest::KeyRing::fixed(
                keelson_storage::at_rest::MasterKeys::parse(&text.replace(',', "\n"))?,
            ))),
            (Some(_), Some(_)) => return Err(ConfigError::TwoKeySources),
        };
        Ok(ServeConfig {
            key_ring,
            decrypted_cache_bytes: self
                .decrypted_cache_mib
                .or(file.decrypted_cache_mib)
                .map(|m| m.saturating_mul(1 << 20))
                .unwrap_or(keelson_storage::blob_store::DEFAULT_DECRYPTED_CACHE_BYTES),
            api_tls,
            insecure_http,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./keelson-data")),
            listen,
            peer_listen: self.peer_listen.or(file.peer_listen),
            advertise: self.advertise.or(file.advertise),
            advertise_peer: self.advertise_peer.or(file.advertise_peer),
            node_id: self.node_id.or(file.node_id).unwrap_or(1),
            fault_domain: self.fault_domain.or(file.fault_domain).unwrap_or_else(|| "fd1".into()),
            region: self.region.or(file.region).unwrap_or_else(|| "local".into()),
            replicas: self.replicas.or(file.replicas).unwrap_or(3),
            auth: self.auth.or(file.auth).unwrap_or(AuthSetting::Enforce),
            max_tokens_per_user: self.max_tokens_per_user.or(file.max_tokens_per_user).unwrap_or(2),
            console_session_secs: self
                .console_session_secs
                .or(file.console_session_secs)
                .unwrap_or(8 * 3600)
                .clamp(60, 30 * 24 * 3600),
            bootstrap_token: self.bootstrap_token.or(file.bootstrap_token).filter(|t| !t.is_empty()),
            snapshot_every_logs: self
                .snapshot_every_logs
                .or(file.snapshot_every_logs)
                .unwrap_or(20_000)
                .max(1),
            peer_tls: match (
                self.peer_tls_cert.or(file.peer_tls_cert),
                self.peer_tls_key.or(file.peer_tls_key),
                self.peer_tls_ca.or(file.peer_tls_ca),
            ) {
                (None, None, None) => None,
                (Some(cert), Some(key), Some(ca)) => Some(PeerTls::load(&cert, &key, &ca)?),
                (None, _, _) => return Err(ConfigError::PartialTls("peer-tls-cert")),
                (_, None, _) => return Err(ConfigError::PartialTls("peer-tls-key")),
                (_, _, None) => return Err(ConfigError::PartialTls("peer-tls-ca")),
            },
            capacity_bytes: self.capacity_bytes.or(file.capacity_bytes),
            rates: keelson_api::rate_limit::RateSettings {
                per_user: self.rate_limit_per_user.or(file.rate_limit_per_user).unwrap_or(0),
                per_address: self.rate_limit_per_address.or(file.rate_limit_per_address).unwrap_or(0),
            },
            uploads: UploadSettings {
                idle: Duration::from_millis(self.upload_idle_ms.or(file.upload_idle_ms).unwrap_or(3_600_000).max(1)),
                sweep_every: Duration::from_millis(
                    self.upload_sweep_ms.or(file.upload_sweep_ms).unwrap_or(60_000).max(10),
                ),
                limits: keelson_storage::upload::UploadLimits {
                    per_owner: self
                        .max_uploads_per_user
                        .or(file.max_uploads_per_user)
                        .unwrap_or(keelson_storage::upload::UploadLimits::default().per_owner)
                        .max(1),
                    ..Default::default()
                },
            },
            lifecycle: {
                let d = LifecycleSettings::default();
                let ms = |flag: Option<u64>, file: Option<u64>, default: Duration| {
                    flag.or(file)
                        .map(|m| Duration::from_millis(m.max(10)))
                        .unwrap_or(default)
                };
                LifecycleSettings {
                    count_pulls: self.count_pulls.or(file.count_pulls).unwrap_or(d.count_pulls),
                    pull_flush: ms(self.pull_flush_ms, file.pull_flush_ms, d.pull_flush),
                    retention_interval: ms(
                        self.retention_interval_ms,
                        file.retention_interval_ms,
                        d.retention_interval,
                    ),
                    audit_flush: ms(self.audit_flush_ms, file.audit_flush_ms, d.audit_flush),
                    audit_retention: self
                        .audit_retention_days
                        .or(file.audit_retention_days)
                        .map_or(d.audit_retention, |days| {
                            Duration::from_secs(days.clamp(1, 36_500).saturating_mul(24 * 3600))
                        }),
                    webhook_poll: ms(self.webhook_poll_ms, file.webhook_poll_ms, d.webhook_poll),
                    scanner: self.scanner.or(file.scanner).unwrap_or(d.scanner),
                    scan_poll: ms(self.scan_poll_ms, file.scan_poll_ms, d.scan_poll),
                    test_clock: self.test_clock.or(file.test_clock).unwrap_or(false),
                }
            },
            regions: {
                let ms = |flag: Option<u64>, file: Option<u64>, default: u64| {
                    Duration::from_millis(flag.or(file).unwrap_or(default).max(10))
                };
                RegionTimers {
                    identity_sync: ms(self.identity_sync_ms, file.identity_sync_ms, 2000),
                    replication_poll: ms(self.replication_poll_ms, file.replication_poll_ms, 500),
                    replication_reconcile: ms(self.replication_reconcile_ms, file.replication_reconcile_ms, 60_000),
                }
            },
            capacity_interval: match self
                .capacity_interval_ms
                .or(file.capacity_interval_ms)
                .unwrap_or(30_000)
            {
                0 => None,
                ms => Some(Duration::from_millis(ms.max(10))),
            },
            blob_jobs: {
                let d = JobSettings::default();
                let ms = |flag: Option<u64>, file: Option<u64>, default: Duration| {
                    flag.or(file).map(Duration::from_millis).unwrap_or(default)
                };
                let mib = |flag: Option<u64>, file: Option<u64>, default: u64| {
                    flag.or(file).map(|m| m.saturating_mul(1 << 20)).unwrap_or(default)
                };
                JobSettings {
                    replicas: d.replicas,
                    repair_interval: ms(self.repair_interval_ms, file.repair_interval_ms, d.repair_interval),
                    lost_after: ms(self.repair_lost_after_ms, file.repair_lost_after_ms, d.lost_after),
                    repair_rate: mib(self.repair_rate_mib, file.repair_rate_mib, d.repair_rate),
                    scrub_interval: ms(self.scrub_interval_ms, file.scrub_interval_ms, d.scrub_interval),
                    scrub_rate: mib(self.scrub_rate_mib, file.scrub_rate_mib, d.scrub_rate),
                    gc_interval: ms(self.gc_interval_ms, file.gc_interval_ms, d.gc_interval),
                    gc_grace: ms(self.gc_grace_ms, file.gc_grace_ms, d.gc_grace),
                    erasure: match self.erasure.or(file.erasure) {
                        None => None,
                        Some(text) if text == "off" || text.is_empty() => None,
                        Some(text) => Some(text.parse().map_err(ConfigError::Erasure)?),
                    },
                    erasure_min_bytes: self
                        .erasure_min_bytes
                        .or(file.erasure_min_bytes)
                        .unwrap_or(d.erasure_min_bytes),
                    at_rest_interval: ms(self.at_rest_interval_ms, file.at_rest_interval_ms, d.at_rest_interval),
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:7000\"\nnode-id = 4\nfault-domain = \"rack-b\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            node_id: Some(9),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(
            (c.listen.as_str(), c.node_id, c.fault_domain.as_str()),
            ("127.0.0.1:7000", 9, "rack-b")
        );
        assert_eq!(c.data_dir, PathBuf::from("./keelson-data"));
        assert_eq!(c.blob_jobs.erasure, None);
        assert_eq!(c.blob_jobs.gc_grace, Duration::from_secs(3600));
        std::fs::write(&file, "erasure = \"4+2\"\ngc-grace-ms = 5\nrepair-rate-mib = 2\n").unwrap();
        let c = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            c.blob_jobs.erasure,
            Some(keelson_storage::erasure::Scheme { k: 4, m: 2 })
        );
        assert_eq!(
            (c.blob_jobs.gc_grace, c.blob_jobs.repair_rate),
            (Duration::from_millis(5), 2 << 20)
        );
        std::fs::write(&file, "erasure = \"4\"\n").unwrap();
        assert!(ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        }
        .resolve()
        .is_err());
        std::fs::write(&file, "lisen = 1\n").unwrap();
        assert!(ServeArgs {
            config: Some(file),
            ..Default::default()
        }
        .resolve()
        .is_err());
    }
}
