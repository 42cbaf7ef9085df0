//! The cluster management API (`/api/v1/cluster/…`): status, init, add and remove members. The
//! `keelson cluster` subcommands are thin clients of these routes.

use std::collections::BTreeMap;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use keelson_raft::redundancy::PolicyParseError;
use keelson_raft::{CatalogCommand, NodeInfo, RedundancyPolicy};
use serde::Deserialize;

use super::json_reply;
use crate::access::{self, Cx};
use crate::body::Body;
use crate::error::{ApiError, ErrorCode};

/// A member as the management API receives it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct MemberSpec {
    /// The node's id (`--node-id`).
    pub id: u64,
    /// `host:port` of its API and of its peer endpoint.
    pub api_addr: String,
    pub peer_addr: String,
    /// Copies of a blob go to distinct fault domains first (default `default`).
    #[serde(default = "default_domain")]
    pub fault_domain: String,
}

/// The cluster's default redundancy policy as `PUT /api/v1/cluster/redundancy` takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct RedundancyBody {
    /// `replicas=N` or `rs=k+m`.
    redundancy: String,
}

/// `PUT /api/v1/cluster/clock`: how far ahead of real time a test clock runs.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct ClockBody {
    offset_ms: u64,
}

fn default_domain() -> String {
    "default".into()
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unsupported, message).with_status(StatusCode::BAD_REQUEST)
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<Option<T>, ApiError> {
    let bytes = Limited::new(req.into_body(), 64 << 10)
        .collect()
        .await
        .map_err(|e| bad_request(format!("reading the body failed: {e}")))?
        .to_bytes();
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

/// Whether the caller may initialise this pristine node: it presents the bootstrap token the node
/// was given (as a Basic password or a Bearer value), or — when the node was given none — it
/// calls from the node's own host. With identity off, anyone may (local experiments only).
fn may_initialise(cx: &Cx<'_>, headers: &http::HeaderMap) -> Result<(), ApiError> {
    if cx.reg.auth_mode == access::AuthMode::Off {
        return Ok(());
    }
    match &cx.reg.bootstrap_token {
        Some(secret) => {
            let presented = headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| match v.strip_prefix("Bearer ") {
                    Some(bearer) => Some(bearer.to_string()),
                    None => crate::auth::basic_credentials(v).ok().map(|(_, password)| password),
                });
            // Compared as hashes, so the comparison's timing tells nothing about the secret.
            let proven = presented.is_some_and(|p| crate::auth::hash_token(&p) == crate::auth::hash_token(secret));
            match proven {
                true => Ok(()),
                false => Err(access::challenge(&cx.caller.origin, None).with_message(
                    "cluster init needs the bootstrap token this node was given (KEELSON_BOOTSTRAP_TOKEN), \
                     as the password of keelson/admin",
                )),
            }
        }
        None if cx.caller.remote.is_some_and(|ip| ip.is_loopback()) => Ok(()),
        None => Err(ApiError::new(
            ErrorCode::Denied,
            "this node was given no bootstrap token (KEELSON_BOOTSTRAP_TOKEN): run `keelson cluster init` \
             on its own host (127.0.0.1), or restart it with a token and present that",
        )),
    }
}

/// Refuses an erasure-coded policy wider than the cluster's fault domains: its shards could
/// never all be placed, so every large push would fail. (`replicas=N` is capped by the member
/// count, as documented, and needs no check.)
pub(crate) fn satisfiable(cx: &Cx<'_>, policy: RedundancyPolicy) -> Result<(), ApiError> {
    let RedundancyPolicy::Erasure { k, m } = policy else {
        return Ok(());
    };
    let domains: std::collections::BTreeSet<String> = cx
        .catalog
        .members()
        .into_values()
        .map(|(info, _)| info.fault_domain)
        .collect();
    let width = usize::from(k) + usize::from(m);
    match width > domains.len() {
        false => Ok(()),
        true => Err(bad_request(format!(
            "{policy} places {width} shards in distinct fault domains; this cluster has {}: add members first",
            domains.len()
        ))),
    }
}

fn catalog_error(e: keelson_raft::CatalogError) -> ApiError {
    match e {
        keelson_raft::CatalogError::Membership(m) => bad_request(m),
        other => ApiError::from(other),
    }
}

/// The cluster's status as this node sees it, with the blob jobs' view and the region.
pub(crate) fn full_status(reg: &crate::registry::Registry) -> Result<keelson_raft::ClusterStatus, ApiError> {
    let mut status = reg.catalog.status();
    if let Some(view) = reg.blob_health.view() {
        status.under_replicated = Some(view.under_replicated);
        status.bytes_to_move = Some(view.bytes_to_move);
        status.blob_jobs.insert("repair.unavailable".into(), view.unavailable);
        status.blob_jobs.insert("repair.misplaced".into(), view.misplaced);
    }
    status.blob_jobs.extend(reg.blob_health.counters());
    status.blob_jobs.extend(
        reg.store
            .decrypted_counters()
            .into_iter()
            .map(|(name, n)| (name.to_owned(), n)),
    );
    let regions = reg.catalog.reader().regions()?;
    status.home_region = regions.home.clone().or(regions.name.clone());
    status.region = regions.name;
    Ok(status)
}

/// Dispatches `/api/v1/cluster/<rest>`.
pub async fn cluster(reg: &Cx<'_>, rest: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["status"]) => {
            access::administer_cluster(reg)?;
            let status = serde_json::to_value(full_status(reg)?).map_err(|e| bad_request(e.to_string()))?;
            Ok(json_reply(StatusCode::OK, &status))
        }
        (&Method::POST, ["init"]) => {
            // A pristine cluster has no identity yet: the caller proves the bootstrap secret, or
            // calls from the node's own host. Once initialised, only the administrator may.
            if reg.catalog.is_initialized().await? {
                access::administer_cluster(reg)?;
            } else {
                may_initialise(reg, req.headers())?;
            }
            let members: BTreeMap<u64, NodeInfo> = match read_json::<Vec<MemberSpec>>(req).await? {
                Some(list) if !list.is_empty() => list.into_iter().map(|m| (m.id, node_info(m))).collect(),
                _ => BTreeMap::from([(reg.catalog.node_id(), reg.self_node.clone())]),
            };
            reg.catalog.initialize(members).await.map_err(catalog_error)?;
            reg.catalog.wait_for_leader(std::time::Duration::from_secs(30)).await?;
            let token = super::identity::bootstrap_admin(reg, reg.bootstrap_token.clone()).await?;
            bootstrap_redundancy(reg).await?;
            let mut answer = serde_json::json!({ "initialized": true, "admin_user": "keelson/admin" });
            if let Some(token) = token {
                // Shown once, to whoever initialised the cluster.
                answer["admin_token"] = serde_json::json!(token);
            }
            Ok(json_reply(StatusCode::OK, &answer))
        }
        (&Method::GET, ["redundancy"]) => {
            access::administer_cluster(reg)?;
            let committed = reg.catalog.reader().cluster_redundancy()?.is_some();
            let answer = serde_json::json!({ "redundancy": reg.cluster_policy()?.to_string(), "committed": committed });
            Ok(json_reply(StatusCode::OK, &answer))
        }
        (&Method::PUT, ["redundancy"]) => {
            access::administer_cluster(reg)?;
            let body: RedundancyBody = read_json(req)
                .await?
                .ok_or_else(|| bad_request("{\"redundancy\": \"replicas=N\" or \"rs=k+m\"} required"))?;
            let policy: RedundancyPolicy = body
                .redundancy
                .parse()
                .map_err(|e: PolicyParseError| bad_request(e.to_string()))?;
            satisfiable(reg, policy)?;
            let cmd = CatalogCommand::SetRedundancy {
                repo: None,
                policy: Some(policy),
            };
            super::commit(reg, cmd).await?;
            Ok(json_reply(
                StatusCode::OK,
                &serde_json::json!({ "redundancy": policy.to_string(), "committed": true }),
            ))
        }
        (&Method::PUT, ["clock"]) => {
            access::administer_cluster(reg)?;
            let body: ClockBody = read_json(req)
                .await?
                .ok_or_else(|| bad_request("{\"offset_ms\": N} required"))?;
            if !reg.clock.set_offset_ms(body.offset_ms) {
                return Err(bad_request(
                    "this node's clock cannot be moved (start it with --test-clock true)",
                ));
            }
            Ok(json_reply(
                StatusCode::OK,
                &serde_json::json!({ "offset_ms": body.offset_ms, "now_ms": reg.clock.now_ms() }),
            ))
        }
        (&Method::POST, ["pulls", "flush"]) => {
            access::administer_cluster(reg)?;
            let flushed = crate::lifecycle_jobs::flush_pulls(reg).await;
            Ok(json_reply(StatusCode::OK, &serde_json::json!({ "flushed": flushed })))
        }
        (&Method::POST, ["retention", "run"]) => {
            access::administer_cluster(reg)?;
            if !reg.catalog.is_leader() {
                return Err(bad_request("retention passes run on the leader; send this to it"));
            }
            let report = crate::lifecycle_jobs::retention_pass(reg)
                .await
                .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
            let report = serde_json::to_value(report).map_err(|e| bad_request(e.to_string()))?;
            Ok(json_reply(StatusCode::OK, &report))
        }
        (&Method::POST, ["members"]) => {
            access::administer_cluster(reg)?;
            let spec: MemberSpec = read_json(req)
                .await?
                .ok_or_else(|| bad_request("member JSON required"))?;
            let id = spec.id;
            reg.catalog
                .add_member(id, node_info(spec))
                .await
                .map_err(catalog_error)?;
            Ok(json_reply(StatusCode::OK, &serde_json::json!({ "added": id })))
        }
        (&Method::DELETE, ["members", id]) => {
            access::administer_cluster(reg)?;
            let id: u64 = id.parse().map_err(|_| bad_request("member id must be a number"))?;
            if !reg.catalog.members().contains_key(&id) {
                return Err(bad_request(format!("node {id} is not a member")).with_status(StatusCode::NOT_FOUND));
            }
            let told = reg.catalog.remove_member(id).await.map_err(catalog_error)?;
            Ok(json_reply(
                StatusCode::OK,
                &serde_json::json!({ "removed": id, "told": told }),
            ))
        }
        _ => Err(ApiError::no_route()),
    }
}

fn node_info(m: MemberSpec) -> NodeInfo {
    NodeInfo {
        api_addr: m.api_addr,
        peer_addr: m.peer_addr,
        fault_domain: m.fault_domain,
    }
}

/// Commits this node's redundancy settings as the cluster default when none is committed yet
/// (on `cluster init`), so that every node places blobs alike from then on, whatever flags the
/// others were started with.
pub async fn bootstrap_redundancy(reg: &crate::registry::Registry) -> Result<(), ApiError> {
    if reg.catalog.reader().cluster_redundancy()?.is_some() {
        return Ok(());
    }
    let policy = reg.redundancy.bootstrap_policy();
    super::commit(
        reg,
        CatalogCommand::SetRedundancy {
            repo: None,
            policy: Some(policy),
        },
    )
    .await
}
