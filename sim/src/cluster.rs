//! The cluster as its operators see it: the nodes' hosts (a real Keelson node each, on the
//! simulated network and clock), forming the cluster through the management API, and the monitor
//! that samples every node's Raft status for the leadership invariant.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use keelson::{Environment, Listener, ServeArgs};
use serde::Deserialize;
use turmoil::net::TcpListener;

use crate::client;
use crate::history::{now_ms, Shared};
pub use crate::net::PEER_PORT;
use crate::net::{self, API_PORT};

/// Unix time (ms) the simulated clock starts at.
pub const EPOCH_MS: u64 = 1_750_000_000_000;

/// One node of the simulated cluster.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: u64,
    /// Host name (`node<id>`).
    pub name: String,
    pub fault_domain: String,
    /// Outside the host, so a crashed and restarted node reopens the same stores.
    pub data_dir: PathBuf,
    /// How far this node's wall clock is off true (simulated) time.
    pub clock_skew_ms: i64,
}

impl NodeSpec {
    pub fn api(&self) -> String {
        api_addr(&self.name)
    }

    /// The JSON body of `POST /api/v1/cluster/members` that adds this node.
    pub fn member_json(&self) -> String {
        let ip = turmoil::lookup(self.name.as_str());
        serde_json::json!({
            "id": self.id,
            "api_addr": self.api(),
            "peer_addr": format!("{ip}:{PEER_PORT}"),
            "fault_domain": self.fault_domain,
        })
        .to_string()
    }
}

pub fn api_addr(host: &str) -> String {
    format!("{host}:{API_PORT}")
}

/// The simulated wall clock handed to the node, off by the node's skew.
struct SimClock {
    skew_ms: i64,
}

impl keelson_api::Clock for SimClock {
    fn now_ms(&self) -> u64 {
        (EPOCH_MS + now_ms()).saturating_add_signed(self.skew_ms)
    }
}

/// Whether simulated node `id` encrypts at rest (the even-numbered ones).
pub fn encrypts(id: u64) -> bool {
    id.is_multiple_of(2)
}

/// The master key of the simulated nodes that encrypt at rest.
pub const SIM_MASTER_KEY: &str = "5a1e5a1e0123456789abcdef0123456789abcdef0123456789abcdef5a1e5a1e";

/// A node host's software: the real node on simulated listeners, running until crashed.
pub async fn node_host(spec: NodeSpec) -> turmoil::Result {
    let ip = turmoil::lookup(spec.name.as_str());
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let api = TcpListener::bind((any, API_PORT)).await?;
    let peer = TcpListener::bind((any, PEER_PORT)).await?;
    // Through the flags' resolution, so settings added to the node later get their defaults.
    let config = ServeArgs {
        data_dir: Some(spec.data_dir.clone()),
        listen: Some(spec.api()),
        peer_listen: Some(format!("{}:{PEER_PORT}", spec.name)),
        advertise: Some(spec.api()),
        node_id: Some(spec.id),
        fault_domain: Some(spec.fault_domain.clone()),
        region: Some("sim".into()),
        replicas: Some(crate::redundancy::REPLICAS),
        repair_interval_ms: Some(crate::redundancy::REPAIR_INTERVAL_MS),
        gc_interval_ms: Some(crate::skew::GC_INTERVAL_MS),
        gc_grace_ms: Some(crate::skew::GC_GRACE_MS),
        auth: Some(keelson::config::AuthSetting::Off),
        // The simulated network is private to the process.
        insecure_http: Some(true),
        // The real disk's free space would make runs of one seed differ; every node then
        // weighs alike in placement.
        capacity_interval_ms: Some(0),
        retention_interval_ms: Some(crate::retention::RETENTION_INTERVAL_MS),
        pull_flush_ms: Some(crate::retention::PULL_FLUSH_MS),
        upload_idle_ms: Some(crate::uploads::UPLOAD_IDLE_MS),
        upload_sweep_ms: Some(crate::uploads::UPLOAD_SWEEP_MS),
        // Even-numbered nodes keep their files sealed (encryption at rest), so sealed uploads,
        // replicas and shards go through the same crashes, partitions and expiries as plain
        // ones, and members of both kinds copy blobs to each other.
        encryption_keys: encrypts(spec.id).then(|| SIM_MASTER_KEY.to_string()),
        scanner: Some(true),
        scan_poll_ms: Some(crate::scanning::SCAN_POLL_MS),
        ..Default::default()
    }
    .resolve()?;
    let env = Environment {
        dialer: Some(net::dialer()),
        clock: Arc::new(SimClock {
            skew_ms: spec.clock_skew_ms,
        }),
    };
    let node = keelson::start_with(
        config,
        Listener {
            incoming: net::incoming(api),
            addr: SocketAddr::new(ip, API_PORT),
        },
        Some(Listener {
            incoming: net::incoming(peer),
            addr: SocketAddr::new(ip, PEER_PORT),
        }),
        env,
    )
    .await;
    let node = match node {
        Ok(node) => node,
        // A removed node refuses to start on its old data, as the binary does; the host stays
        // down (its crash-restart after the removal is a no-op, not a failure of the run).
        Err(keelson::StartError::Catalog(keelson_raft::CatalogError::Removed(_))) => {
            std::future::pending::<()>().await;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    std::future::pending::<()>().await;
    drop(node);
    Ok(())
}

/// The load balancer's host name (clients reach it at `lb:<API_PORT>`).
pub const LB_HOST: &str = "lb";

/// The load balancer host: `keelson lb`'s round-robin relay on the simulated network, over every
/// node (a node that is down or not a member is skipped or answers for itself, as in a real
/// deployment whose balancer lags the membership).
pub async fn lb_host(backends: Vec<String>) -> turmoil::Result {
    let listener = TcpListener::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), API_PORT)).await?;
    let listener = &listener;
    let accept = move || async move { listener.accept().await.map(|(stream, _)| stream) };
    let connect = |addr: String| turmoil::net::TcpStream::connect(addr);
    // No readiness prober here: the simulation's balancer knows only whether a node accepts.
    let readiness = std::sync::Arc::new(keelson::lb::Readiness::all_ready(backends.len()));
    keelson::lb::balance(accept, backends, readiness, connect).await?;
    Ok(())
}

/// A member as `cluster status` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub voter: bool,
}

/// `GET /api/v1/cluster/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub node_id: u64,
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// The repair job's last survey (set on the leader once a pass ran).
    #[serde(default)]
    pub under_replicated: Option<u64>,
    #[serde(default)]
    pub blob_jobs: std::collections::BTreeMap<String, u64>,
}

pub async fn status(host: &str, timeout: Duration) -> Result<Status, String> {
    let reply = client::get(&api_addr(host), "/api/v1/cluster/status", timeout)
        .await
        .map_err(|e| e.label().to_string())?;
    if reply.status != 200 {
        return Err(format!("status {}", reply.status));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("bad status JSON: {e}"))
}

pub async fn post_json(host: &str, path: &str, body: String) -> Result<client::Reply, String> {
    client::request(
        &api_addr(host),
        Method::POST,
        path,
        &[("content-type", "application/json")],
        Bytes::from(body),
        Duration::from_secs(15),
    )
    .await
    .map_err(|e| e.label().to_string())
}

/// Forms the cluster through the management API: `init` on the first node, then every other
/// node added (learner, caught up, promoted) through it. Waits until all are voters.
pub async fn form(shared: &Shared, nodes: &[NodeSpec]) -> Result<(), String> {
    let first = &nodes[0];
    let deadline = now_ms() + 60_000;
    // init: retried until the first node reports itself leader (a lost answer to an init that
    // took effect makes the retry fail, which is fine).
    loop {
        if now_ms() > deadline {
            return Err("cluster init did not take effect".into());
        }
        match status(&first.name, Duration::from_secs(2)).await {
            Ok(s) if s.leader == Some(first.id) => break,
            _ => {}
        }
        let answer = post_json(&first.name, "/api/v1/cluster/init", "[]".into()).await;
        shared.trace(
            now_ms(),
            format!("admin init {} -> {}", first.name, answer_label(&answer)),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in &nodes[1..] {
        let body = node.member_json();
        loop {
            if now_ms() > deadline {
                return Err(format!("adding {} did not succeed", node.name));
            }
            let answer = post_json(&first.name, "/api/v1/cluster/members", body.clone()).await;
            shared.trace(
                now_ms(),
                format!("admin add {} -> {}", node.name, answer_label(&answer)),
            );
            if matches!(&answer, Ok(r) if r.status == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    loop {
        if now_ms() > deadline {
            return Err("members did not all become voters".into());
        }
        if let Ok(s) = status(&first.name, Duration::from_secs(2)).await {
            let voters = s.members.iter().filter(|m| m.voter).count();
            if voters == nodes.len() && s.leader.is_some() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `DELETE` on the management API.
pub async fn delete(host: &str, path: &str) -> Result<client::Reply, String> {
    client::request(
        &api_addr(host),
        Method::DELETE,
        path,
        &[],
        Bytes::new(),
        Duration::from_secs(15),
    )
    .await
    .map_err(|e| e.label().to_string())
}

pub fn answer_label(answer: &Result<client::Reply, String>) -> String {
    match answer {
        Ok(r) => r.status.to_string(),
        Err(e) => e.clone(),
    }
}

/// How often the monitor samples every node's status.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Samples every node's Raft status until the run is verified: records which node claimed
/// leadership in which term, and the leader the fault injector aims at. Changes of a node's
/// (state, term, leader) go into the trace.
pub async fn monitor(shared: Rc<Shared>, nodes: Vec<NodeSpec>) -> turmoil::Result {
    let mut last: Vec<Option<(String, u64, Option<u64>)>> = vec![None; nodes.len()];
    while !shared.verified.get() {
        for (i, node) in nodes.iter().enumerate() {
            let Ok(s) = status(&node.name, Duration::from_millis(500)).await else {
                continue;
            };
            shared.count("raft.status_samples", 1);
            if s.state == "leader" {
                shared
                    .leader_claims
                    .borrow_mut()
                    .entry(s.term)
                    .or_default()
                    .insert(s.node_id);
                shared.leader.set(Some(s.node_id));
            }
            let view = (s.state.clone(), s.term, s.leader);
            if last[i].as_ref() != Some(&view) {
                shared.trace(
                    now_ms(),
                    format!(
                        "raft {} state={} term={} leader={:?}",
                        node.name, s.state, s.term, s.leader
                    ),
                );
                last[i] = Some(view);
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    Ok(())
}

/// Sends one management call to `nodes` in turn, through the faults, until one answers with a
/// 2xx or 120 s pass; each try is traced as `admin <what> via <node> -> <answer>`. Whether one
/// succeeded.
pub async fn manage_until_done(
    shared: &Shared,
    nodes: &[NodeSpec],
    method: Method,
    path: &str,
    body: &str,
    what: &str,
) -> bool {
    let deadline = now_ms() + 120_000;
    let mut i = 0usize;
    while now_ms() < deadline && !nodes.is_empty() {
        let node = &nodes[i % nodes.len()];
        i += 1;
        let answer = client::request(
            &api_addr(&node.name),
            method.clone(),
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
            Duration::from_secs(10),
        )
        .await;
        let ok = matches!(&answer, Ok(r) if (200..300).contains(&r.status));
        let label = match &answer {
            Ok(r) => r.status.to_string(),
            Err(e) => e.label().to_string(),
        };
        shared.trace(now_ms(), format!("admin {what} via {} -> {label}", node.name));
        if ok {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}
