//! A node's Prometheus metrics, served at `/metrics` in the text format by `prometheus-client`.
//! This module owns every metric: the request path reports each answered request here
//! ([`Metrics::record`]) and authentication results, and everything the catalog, the blob jobs
//! and the disks already know is read when Prometheus scrapes ([`Metrics::render`]), so nothing
//! is counted twice and a scrape costs one status read.
//!
//! Labels are bounded by construction: route kinds, methods, status codes, fixed result names,
//! job counter names chosen by the code, rule ids (at most 256) — never repository names,
//! digests, users or addresses.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use crate::registry::Registry;
use crate::routes::Route;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabels {
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicationLabels {
    rule: String,
    target: String,
}

/// How a request's caller was authenticated (or not).
#[derive(Debug, Clone, Copy)]
pub enum AuthResult {
    Anonymous,
    Basic,
    Bearer,
    Session,
    Failed,
}

impl AuthResult {
    fn label(self) -> &'static str {
        match self {
            AuthResult::Anonymous => "anonymous",
            AuthResult::Basic => "basic",
            AuthResult::Bearer => "bearer",
            AuthResult::Session => "session",
            AuthResult::Failed => "failed",
        }
    }
}

/// What a scrape reads from the rest of the node.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub term: u64,
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub members: usize,
    pub open_uploads: usize,
    pub disk_capacity_bytes: Option<u64>,
    pub disk_free_bytes: Option<u64>,
    pub under_replicated: Option<u64>,
    pub bytes_to_move: Option<u64>,
    pub blob_jobs: Vec<(String, u64)>,
    /// (rule, target, lag seconds, pending images, pending bytes, bytes sent).
    pub replication: Vec<(String, String, f64, u64, u64, u64)>,
}

/// How long a scrape's text is served again: several scrapers, or one scraping too often, cost
/// one catalog read per interval.
const SCRAPE_REUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Every metric of one node.
pub struct Metrics {
    registry: PromRegistry,
    /// The last scrape's text and when it was made; held while one is built, so concurrent
    /// scrapes wait for it instead of building their own.
    last_scrape: std::sync::Mutex<Option<(std::time::Instant, String)>>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    auth: Family<ResultLabels, Counter>,
    token_cache: Family<ResultLabels, Counter>,
    rate_limited: Counter,
    pulls: Counter,
    images_scanned: Counter,
    scanned_layer_bytes: Counter,
    inventory_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    raft: RaftGauges,
    open_uploads: Gauge,
    disk_capacity: Gauge,
    disk_free: Gauge,
    under_replicated: Gauge,
    bytes_to_move: Gauge,
    blob_jobs: Family<CounterLabels, Gauge>,
    replication_lag: Family<ReplicationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    replication_pending: Family<ReplicationLabels, Gauge>,
    replication_pending_bytes: Family<ReplicationLabels, Gauge>,
    replication_sent: Family<ReplicationLabels, Gauge>,
}

struct RaftGauges {
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    last_log: Gauge,
    committed: Gauge,
    applied: Gauge,
    snapshot: Gauge,
    members: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = PromRegistry::with_prefix("keelson");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route kind, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.5, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer's head (bodies stream after)",
            latency.clone(),
        );
        let bytes_in = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_request_bytes",
            "Request body bytes announced by Content-Length",
            bytes_in.clone(),
        );
        let bytes_out = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_response_bytes",
            "Response body bytes announced by Content-Length",
            bytes_out.clone(),
        );
        let auth = Family::<ResultLabels, Counter>::default();
        registry.register("auth_results", "Callers by how they authenticated", auth.clone());
        let token_cache = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_cache",
            "Registry tokens found in (hit) or added to (miss) the verified-token cache",
            token_cache.clone(),
        );
        let rate_limited = Counter::default();
        registry.register("rate_limited_requests", "Requests answered 429", rate_limited.clone());
        let pulls = Counter::default();
        registry.register(
            "pulls",
            "Manifest GETs answered 200 (what pull counts count)",
            pulls.clone(),
        );
        let images_scanned = Counter::default();
        registry.register(
            "images_scanned",
            "Images this node inventoried (layers read; re-matching reads none)",
            images_scanned.clone(),
        );
        let scanned_layer_bytes = Counter::default();
        registry.register(
            "scanned_layer_bytes",
            "Layer bytes (as stored, compressed) this node's scanner read for inventories",
            scanned_layer_bytes.clone(),
        );
        let inventory_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "inventory_seconds",
            "Time this node's scanner spent reading layers for inventories (seconds)",
            inventory_seconds.clone(),
        );
        let gauge = |registry: &mut PromRegistry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let raft = RaftGauges {
            term: gauge(&mut registry, "raft_term", "Current Raft term"),
            leader: gauge(
                &mut registry,
                "raft_leader_id",
                "Id of the leader this node knows (0: none)",
            ),
            is_leader: gauge(&mut registry, "raft_is_leader", "1 on the leader"),
            last_log: gauge(&mut registry, "raft_last_log_index", "Last index in this node's log"),
            committed: gauge(&mut registry, "raft_committed_index", "Highest index known committed"),
            applied: gauge(
                &mut registry,
                "raft_applied_index",
                "Highest index applied to the catalog",
            ),
            snapshot: gauge(
                &mut registry,
                "raft_snapshot_index",
                "Last index covered by the newest snapshot",
            ),
            members: gauge(&mut registry, "raft_members", "Members of the cluster"),
        };
        let open_uploads = gauge(
            &mut registry,
            "upload_sessions_open",
            "Upload sessions open on this node",
        );
        let disk_capacity = gauge(
            &mut registry,
            "disk_capacity_bytes",
            "Size of this node's data filesystem",
        );
        let disk_free = gauge(
            &mut registry,
            "disk_free_bytes",
            "Free space on this node's data filesystem",
        );
        let under_replicated = gauge(
            &mut registry,
            "blobs_under_replicated",
            "Blobs below their redundancy at the leader's last repair pass (-1: not counted)",
        );
        let bytes_to_move = gauge(
            &mut registry,
            "blobs_bytes_to_move",
            "Bytes repair still has to copy (-1: not counted)",
        );
        let blob_jobs = Family::<CounterLabels, Gauge>::default();
        registry.register(
            "blob_jobs",
            "Work done by this node's repair, scrub, GC and rebalance since it started",
            blob_jobs.clone(),
        );
        let replication_lag = Family::<ReplicationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "replication_lag_seconds",
            "Age of the oldest change a replication target has not received",
            replication_lag.clone(),
        );
        let replication_pending = Family::<ReplicationLabels, Gauge>::default();
        registry.register(
            "replication_pending_images",
            "Images a replication target lacks",
            replication_pending.clone(),
        );
        let replication_pending_bytes = Family::<ReplicationLabels, Gauge>::default();
        registry.register(
            "replication_pending_bytes",
            "Bytes of the images a replication target lacks",
            replication_pending_bytes.clone(),
        );
        let replication_sent = Family::<ReplicationLabels, Gauge>::default();
        registry.register(
            "replication_sent_bytes",
            "Bytes the leader sent to a replication target since it became leader",
            replication_sent.clone(),
        );
        Metrics {
            registry,
            last_scrape: std::sync::Mutex::new(None),
            requests,
            latency,
            bytes_in,
            bytes_out,
            auth,
            token_cache,
            rate_limited,
            pulls,
            images_scanned,
            scanned_layer_bytes,
            inventory_seconds,
            raft,
            open_uploads,
            disk_capacity,
            disk_free,
            under_replicated,
            bytes_to_move,
            blob_jobs,
            replication_lag,
            replication_pending,
            replication_pending_bytes,
            replication_sent,
        }
    }

    /// Every metric, with the catalog's storage timings (its log appends, applies and
    /// snapshots) among them.
    pub fn with_raft(timings: &keelson_raft::timings::RaftTimings) -> Metrics {
        let mut metrics = Metrics::new();
        let r = &mut metrics.registry;
        r.register(
            "raft_append_duration_seconds",
            "Time from a log append until its entries are fsynced (group commit included)",
            timings.append_seconds.clone(),
        );
        r.register(
            "raft_apply_duration_seconds",
            "Time to apply one batch of committed entries to the catalog",
            timings.apply_seconds.clone(),
        );
        r.register(
            "raft_snapshot_build_duration_seconds",
            "Time to build a catalog snapshot",
            timings.snapshot_build_seconds.clone(),
        );
        r.register(
            "raft_snapshot_install_duration_seconds",
            "Time to install a snapshot received from the leader",
            timings.snapshot_install_seconds.clone(),
        );
        r.register(
            "raft_snapshot_bytes",
            "Size of the last snapshot built or installed",
            timings.snapshot_bytes.clone(),
        );
        metrics
    }

    /// Counts one answered request.
    pub fn record(
        &self,
        route: &'static str,
        method: &http::Method,
        status: u16,
        took: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels { route, method, status })
            .inc();
        let labels = RouteLabels { route, method };
        self.latency.get_or_create(&labels).observe(took.as_secs_f64());
        if bytes_in > 0 {
            self.bytes_in.get_or_create(&labels).inc_by(bytes_in);
        }
        if bytes_out > 0 {
            self.bytes_out.get_or_create(&labels).inc_by(bytes_out);
        }
        if status == 429 {
            self.rate_limited.inc();
        }
        if route == "manifest" && method == "GET" && status == 200 {
            self.pulls.inc();
        }
    }

    /// One image inventoried by this node's scanner: `layer_bytes` read in `reading`.
    pub fn count_scan(&self, layer_bytes: u64, reading: std::time::Duration) {
        self.images_scanned.inc();
        self.scanned_layer_bytes.inc_by(layer_bytes);
        self.inventory_seconds.inc_by(reading.as_secs_f64());
    }

    pub fn auth(&self, result: AuthResult) {
        self.auth.get_or_create(&ResultLabels { result: result.label() }).inc();
    }

    pub fn token_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.token_cache.get_or_create(&ResultLabels { result }).inc();
    }

    /// The text exposition, rebuilt with `snapshot()` at most once per [`SCRAPE_REUSE`].
    pub fn scrape(&self, snapshot: impl FnOnce() -> Snapshot) -> String {
        let mut last = self.last_scrape.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, text)) = last.as_ref() {
            if at.elapsed() < SCRAPE_REUSE {
                return text.clone();
            }
        }
        let text = self.render(&snapshot());
        *last = Some((std::time::Instant::now(), text.clone()));
        text
    }

    /// The text exposition, after setting the scrape-time gauges from `now`.
    pub fn render(&self, now: &Snapshot) -> String {
        let r = &self.raft;
        r.term.set(clamp(now.term));
        r.leader.set(now.leader.map_or(0, clamp));
        r.is_leader.set(i64::from(now.is_leader));
        r.last_log.set(clamp(now.last_log_index));
        r.committed.set(clamp(now.committed_index));
        r.applied.set(clamp(now.applied_index));
        r.snapshot.set(clamp(now.snapshot_index));
        r.members.set(clamp(now.members as u64));
        self.open_uploads.set(clamp(now.open_uploads as u64));
        self.disk_capacity.set(now.disk_capacity_bytes.map_or(-1, clamp));
        self.disk_free.set(now.disk_free_bytes.map_or(-1, clamp));
        self.under_replicated.set(now.under_replicated.map_or(-1, clamp));
        self.bytes_to_move.set(now.bytes_to_move.map_or(-1, clamp));
        for (counter, value) in &now.blob_jobs {
            self.blob_jobs
                .get_or_create(&CounterLabels {
                    counter: counter.clone(),
                })
                .set(clamp(*value));
        }
        self.replication_lag.clear();
        self.replication_pending.clear();
        self.replication_pending_bytes.clear();
        self.replication_sent.clear();
        for (rule, target, lag, pending, pending_bytes, sent) in &now.replication {
            let labels = ReplicationLabels {
                rule: rule.clone(),
                target: target.clone(),
            };
            self.replication_lag.get_or_create(&labels).set(*lag);
            self.replication_pending.get_or_create(&labels).set(clamp(*pending));
            self.replication_pending_bytes
                .get_or_create(&labels)
                .set(clamp(*pending_bytes));
            self.replication_sent.get_or_create(&labels).set(clamp(*sent));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Reads what a scrape reports from the catalog, the blob jobs, the uploads and the rules.
pub fn snapshot(reg: &Registry) -> Snapshot {
    let mut now = Snapshot {
        open_uploads: reg.uploads.open_count(),
        ..Snapshot::default()
    };
    if let Ok(status) = crate::handlers::admin::full_status(reg) {
        let me = status.node_id;
        let mine = status.members.iter().find(|m| m.id == me);
        now.term = status.term;
        now.leader = status.leader;
        now.is_leader = status.leader == Some(me);
        now.last_log_index = status.last_log_index.unwrap_or(0);
        now.committed_index = status.committed_index.unwrap_or(0);
        now.applied_index = status.applied_index.unwrap_or(0);
        now.snapshot_index = status.snapshot_index.unwrap_or(0);
        now.members = status.members.len();
        now.disk_capacity_bytes = mine.and_then(|m| m.capacity_bytes);
        now.disk_free_bytes = mine.and_then(|m| m.free_bytes);
        now.under_replicated = status.under_replicated;
        now.bytes_to_move = status.bytes_to_move;
        now.blob_jobs = status.blob_jobs.into_iter().collect();
    }
    if let Ok(regions) = reg.catalog.reader().regions() {
        for rule in regions.rules.values() {
            for t in crate::regions::status::rule_status(reg, rule).unwrap_or_default() {
                now.replication.push((
                    t.rule,
                    t.target,
                    t.lag_ms as f64 / 1000.0,
                    t.pending_images,
                    t.pending_bytes,
                    t.bytes_sent,
                ));
            }
        }
    }
    now
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The bounded label of a route.
pub fn route_label(route: &Route<'_>) -> &'static str {
    match route {
        Route::Base => "base",
        Route::Catalog => "catalog",
        Route::Tags { .. } => "tags",
        Route::Manifest { .. } => "manifest",
        Route::Blob { .. } => "blob",
        Route::Uploads { .. } | Route::Upload { .. } => "upload",
        Route::Referrers { .. } => "referrers",
        Route::Cluster { .. } => "cluster",
        Route::Manage { .. } => "manage",
        Route::Token => "token",
        Route::Console { .. } => "console",
        Route::Metrics => "metrics",
        Route::Healthz | Route::Readyz => "health",
        Route::NotFound => "not_found",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_scrape_gauges_are_exposed_with_bounded_labels() {
        let m = Metrics::new();
        m.record("manifest", &http::Method::GET, 200, Duration::from_millis(2), 0, 512);
        m.record("blob", &http::Method::PUT, 429, Duration::from_millis(1), 100, 0);
        m.auth(AuthResult::Failed);
        let text = m.render(&Snapshot {
            term: 3,
            leader: Some(2),
            replication: vec![("r1".into(), "fra".into(), 1.5, 2, 300, 4096)],
            ..Snapshot::default()
        });
        for line in [
            r#"keelson_http_requests_total{route="manifest",method="GET",status="200"} 1"#,
            r#"keelson_http_response_bytes_total{route="manifest",method="GET"} 512"#,
            "keelson_rate_limited_requests_total 1",
            "keelson_pulls_total 1",
            r#"keelson_auth_results_total{result="failed"} 1"#,
            "keelson_raft_term 3",
            "keelson_raft_leader_id 2",
            r#"keelson_replication_lag_seconds{rule="r1",target="fra"} 1.5"#,
            "keelson_disk_free_bytes -1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
