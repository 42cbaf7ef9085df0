//! The region routes of the management API: this cluster's region and home, the peer regions
//! (`/api/v1/regions…`, cluster administrator), the identity export other regions copy, and
//! replication rules and their status (`/api/v1/replication…`) and pull-through caches
//! (`/api/v1/pull-through`), both for tenancy administrators. `keelson region`,
//! `keelson replication` and `keelson cache` are thin clients of these routes.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use keelson_raft::regions::{PullThroughCache, RegionCommand, RegionPeer, ReplicationRule};
use keelson_raft::CatalogCommand;
use serde::Deserialize;
use serde_json::json;

use super::{bad_request, commit, json_reply, ok, read_json};
use crate::access::{self, Cx};
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::regions::{identity, status};

/// This cluster's region and the region identity is managed in.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = RegionSelfBody)]
pub(crate) struct SelfBody {
    name: String,
    /// Defaults to `name`: this region is home.
    #[serde(default)]
    home: Option<String>,
}

/// A peer region: its URL and the credentials this region uses there.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = RegionPeerBody)]
pub(crate) struct PeerBody {
    /// The peer's API, `http://` or `https://`.
    url: String,
    /// A user of the peer (`<namespace>/<user>`) and one of its auth tokens (at most 512 bytes).
    username: String,
    token: String,
    /// CA certificates (PEM, at most 64 KiB) to trust for the peer instead of the system's.
    #[serde(default)]
    ca_pem: Option<String>,
}

/// A replication rule: a tenancy's matching tags are copied to the target regions.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = ReplicationRuleBody)]
pub(crate) struct RuleBody {
    namespace: String,
    /// Glob over the repository name inside the namespace (default `*`).
    #[serde(default = "everything")]
    repos: String,
    /// Glob over tag names (default `*`).
    #[serde(default = "everything")]
    tags: String,
    /// 1 to 16 region names.
    targets: Vec<String>,
    /// Whether removing a tag here removes it in the targets.
    #[serde(default)]
    deletes: bool,
    /// Throttle for the blob bytes sent under this rule (absent: unthrottled).
    #[serde(default)]
    bytes_per_second: Option<u64>,
}

/// A pull-through cache: `<namespace>/<prefix>/<rest>` here is `<upstream_prefix>/<rest>` upstream.
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PullThroughCacheBody)]
pub(crate) struct CacheBody {
    namespace: String,
    /// Path inside the namespace, e.g. `hub`.
    prefix: String,
    /// Base URL of the upstream registry.
    upstream: String,
    /// Path prepended upstream (e.g. `library`).
    #[serde(default)]
    upstream_prefix: String,
    /// Upstream credentials, when it needs any.
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    /// CA certificates (PEM) to trust for the upstream instead of the system's.
    #[serde(default)]
    ca_pem: Option<String>,
    /// How long a cached tag is trusted before the upstream is asked again (default 3600).
    #[serde(default = "default_ttl")]
    ttl_seconds: u64,
}

/// How long a cached tag is trusted before the upstream is asked again (Harbor's proxy cache
/// re-checks on every pull; an hour keeps pulls local yet follows moved tags the same day).
fn default_ttl() -> u64 {
    3600
}

fn everything() -> String {
    "*".into()
}

/// Region keys: short lower-case names (`iad`, `eu-frankfurt-1`).
fn valid_region(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok.then_some(())
        .ok_or_else(|| bad_request(format!("invalid region name {name:?} (lower-case letters, digits, -)")))
}

fn valid_url(url: &str) -> Result<(), ApiError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= 512
        && url.parse::<http::Uri>().is_ok();
    ok.then_some(())
        .ok_or_else(|| bad_request(format!("invalid URL {url:?}")))
}

fn valid_ca(pem: &Option<String>) -> Result<(), ApiError> {
    if let Some(pem) = pem {
        if pem.len() > 64 << 10 {
            return Err(bad_request("ca_pem is larger than 64 KiB"));
        }
        crate::tls::client_config_pem(Some(pem)).map_err(|e| bad_request(e.to_string()))?;
    }
    Ok(())
}

/// A secret as the catalog keeps it: sealed under the master key when every member holds it
/// (see `Registry::sealing_keys`; the at-rest pass seals it later otherwise).
fn keep_secret(cx: &Cx<'_>, secret: &str) -> Vec<u8> {
    match cx.sealing_keys() {
        Some(keys) => keys.seal_secret(secret.as_bytes()),
        None => secret.as_bytes().to_vec(),
    }
}

fn valid_glob(glob: &str) -> Result<(), ApiError> {
    let ok = !glob.is_empty() && glob.len() <= 256 && !glob.contains('\0');
    ok.then_some(())
        .ok_or_else(|| bad_request(format!("invalid pattern {glob:?}")))
}

fn not_found(message: String) -> ApiError {
    ApiError::new(ErrorCode::NotFound, message)
}

/// Dispatches `/api/v1/regions…` and `/api/v1/replication…` (`parts` split at `/`).
pub async fn route(cx: &Cx<'_>, parts: &[&str], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    match (&method, parts) {
        (&Method::GET, ["regions"]) => {
            access::administer_cluster(cx)?;
            let regions = cx.catalog.reader().regions()?;
            ok(json!({
                "name": regions.name,
                "home": regions.home.clone().or(regions.name.clone()),
                "identity_version": regions.identity_version,
                "peers": regions.peers.values().map(|p| json!({
                    "name": p.name, "url": p.url, "username": p.username, "custom_ca": p.ca_pem.is_some(),
                })).collect::<Vec<_>>(),
            }))
        }
        (&Method::PUT, ["regions", "self"]) => {
            access::administer_cluster(cx)?;
            let body: SelfBody = read_json(req).await?;
            valid_region(&body.name)?;
            let home = body.home.unwrap_or_else(|| body.name.clone());
            valid_region(&home)?;
            commit(
                cx,
                CatalogCommand::Regions(RegionCommand::SetRegion {
                    name: body.name.clone(),
                    home: home.clone(),
                }),
            )
            .await?;
            ok(json!({ "name": body.name, "home": home }))
        }
        (&Method::PUT, ["regions", "peers", name]) => {
            access::administer_cluster(cx)?;
            valid_region(name)?;
            let body: PeerBody = read_json(req).await?;
            valid_url(&body.url)?;
            if body.token.is_empty() || body.token.len() > 512 || body.username.len() > 200 {
                return Err(bad_request("username and token are required (token at most 512 bytes)"));
            }
            valid_ca(&body.ca_pem)?;
            let secret = keep_secret(cx, &body.token);
            let peer = RegionPeer {
                name: name.to_string(),
                url: body.url.trim_end_matches('/').to_string(),
                ca_pem: body.ca_pem,
                username: body.username,
                secret,
            };
            commit(cx, CatalogCommand::Regions(RegionCommand::PutPeer(peer))).await?;
            ok(json!({ "name": name }))
        }
        (&Method::DELETE, ["regions", "peers", name]) => {
            access::administer_cluster(cx)?;
            commit(
                cx,
                CatalogCommand::Regions(RegionCommand::RemovePeer { name: name.to_string() }),
            )
            .await?;
            ok(json!({ "removed": name }))
        }
        (&Method::GET, ["regions", "identity"]) => {
            access::administer_cluster(cx)?;
            let export = identity::export(cx).map_err(|m| ApiError::new(ErrorCode::Unavailable, m))?;
            let tag = format!("\"{}\"", export.version);
            let unchanged = req
                .headers()
                .get("if-none-match")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == tag);
            if unchanged {
                return Ok(crate::handlers::Reply::new(StatusCode::NOT_MODIFIED)
                    .header("ETag", &tag)
                    .body(body::empty()));
            }
            let bytes =
                serde_json::to_vec(&export).map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
            Ok(crate::handlers::Reply::new(StatusCode::OK)
                .header("Content-Type", "application/json")
                .header("ETag", &tag)
                .header("Content-Length", bytes.len())
                .body(body::full(bytes)))
        }
        (&Method::POST, ["replication", "rules"]) => {
            let body: RuleBody = read_json(req).await?;
            access::administer_tenancy(cx, &body.namespace)?;
            valid_glob(&body.repos)?;
            valid_glob(&body.tags)?;
            if body.targets.is_empty() || body.targets.len() > 16 {
                return Err(bad_request("a rule names 1 to 16 target regions"));
            }
            for t in &body.targets {
                valid_region(t)?;
            }
            if body.bytes_per_second == Some(0) {
                return Err(bad_request("bytes_per_second must be positive"));
            }
            let id = hex::encode(rand::random::<[u8; 6]>());
            let rule = ReplicationRule {
                id: id.clone(),
                namespace: body.namespace,
                repos: body.repos,
                tags: body.tags,
                targets: body.targets,
                deletes: body.deletes,
                bytes_per_second: body.bytes_per_second,
                created_ms: cx.clock.now_ms(),
            };
            commit(cx, CatalogCommand::Regions(RegionCommand::PutRule(rule.clone()))).await?;
            Ok(json_reply(StatusCode::CREATED, &json!(rule)))
        }
        (&Method::GET, ["replication", "rules"]) => {
            let rules = visible_rules(cx, &req)?;
            ok(json!({ "rules": rules }))
        }
        (&Method::DELETE, ["replication", "rules", id]) => {
            let regions = cx.catalog.reader().regions()?;
            let rule = regions
                .rules
                .get(*id)
                .ok_or_else(|| not_found(format!("rule {id} does not exist")))?;
            access::administer_tenancy(cx, &rule.namespace)?;
            commit(
                cx,
                CatalogCommand::Regions(RegionCommand::DeleteRule { id: id.to_string() }),
            )
            .await?;
            ok(json!({ "removed": id }))
        }
        (&Method::GET, ["replication", "status"]) => {
            // Bytes sent are counted by the leader's replicator, so a follower asks the leader.
            if !cx.catalog.is_leader() && !crate::proxy::is_forwarded(req.headers()) {
                let leader = cx.catalog.wait_for_leader(std::time::Duration::from_secs(5)).await?;
                if let Some((info, _)) = cx.catalog.members().get(&leader) {
                    return cx.proxy.forward(&info.api_addr, req).await;
                }
            }
            let mut targets = Vec::new();
            for rule in visible_rules(cx, &req)? {
                targets.extend(
                    status::rule_status(cx, &rule).map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?,
                );
            }
            let region = cx.catalog.reader().regions()?.name;
            ok(json!({ "region": region, "targets": targets }))
        }
        (&Method::POST, ["pull-through"]) => {
            let body: CacheBody = read_json(req).await?;
            access::administer_tenancy(cx, &body.namespace)?;
            let prefix = body.prefix.trim_matches('/').to_string();
            crate::names::validate_repo(&format!("{}/{prefix}/x", body.namespace))
                .map_err(|_| bad_request(format!("invalid prefix {:?}", body.prefix)))?;
            valid_url(&body.upstream)?;
            valid_ca(&body.ca_pem)?;
            let upstream_prefix = body.upstream_prefix.trim_matches('/').to_string();
            if !upstream_prefix.is_empty() {
                crate::names::validate_repo(&format!("{upstream_prefix}/x"))
                    .map_err(|_| bad_request(format!("invalid upstream prefix {:?}", body.upstream_prefix)))?;
            }
            let ttl_ms = body
                .ttl_seconds
                .checked_mul(1000)
                .filter(|t| *t > 0)
                .ok_or_else(|| bad_request("ttl_seconds must be positive and reasonable"))?;
            if body.password.as_ref().is_some_and(|p| p.len() > 4096)
                || body.username.as_ref().is_some_and(|u| u.len() > 256)
            {
                return Err(bad_request("upstream credentials are too long"));
            }
            let cache = PullThroughCache {
                namespace: body.namespace,
                prefix,
                upstream: body.upstream.trim_end_matches('/').to_string(),
                upstream_prefix,
                secret: body.password.as_deref().map(|p| keep_secret(cx, p)),
                username: body.username,
                ca_pem: body.ca_pem,
                ttl_ms,
            };
            commit(cx, CatalogCommand::Regions(RegionCommand::PutCache(cache.clone()))).await?;
            Ok(json_reply(StatusCode::CREATED, &cache_view(&cache)))
        }
        (&Method::GET, ["pull-through"]) => {
            let pairs = crate::routes::query_pairs(req.uri().query());
            let namespace =
                crate::routes::query_get(&pairs, "namespace").ok_or_else(|| bad_request("namespace is required"))?;
            access::administer_tenancy(cx, namespace)?;
            let regions = cx.catalog.reader().regions()?;
            let caches: Vec<_> = regions
                .caches
                .values()
                .filter(|c| c.namespace == namespace)
                .map(cache_view)
                .collect();
            ok(json!({ "caches": caches }))
        }
        (&Method::DELETE, ["pull-through"]) => {
            let pairs = crate::routes::query_pairs(req.uri().query());
            let (Some(namespace), Some(prefix)) = (
                crate::routes::query_get(&pairs, "namespace"),
                crate::routes::query_get(&pairs, "prefix"),
            ) else {
                return Err(bad_request("namespace and prefix are required"));
            };
            access::administer_tenancy(cx, namespace)?;
            let key = format!("{namespace}/{}", prefix.trim_matches('/'));
            commit(
                cx,
                CatalogCommand::Regions(RegionCommand::DeleteCache { key: key.clone() }),
            )
            .await?;
            ok(json!({ "removed": key }))
        }
        _ => Err(ApiError::no_route()),
    }
}

/// A cache as the API shows it (never its secret).
fn cache_view(cache: &PullThroughCache) -> serde_json::Value {
    json!({
        "namespace": cache.namespace,
        "prefix": cache.prefix,
        "upstream": cache.upstream,
        "upstream_prefix": cache.upstream_prefix,
        "username": cache.username,
        "custom_ca": cache.ca_pem.is_some(),
        "ttl_seconds": cache.ttl_ms / 1000,
    })
}

/// The rules the caller administers, optionally of one `?namespace=`.
fn visible_rules(cx: &Cx<'_>, req: &Request<Incoming>) -> Result<Vec<ReplicationRule>, ApiError> {
    let pairs = crate::routes::query_pairs(req.uri().query());
    let namespace = crate::routes::query_get(&pairs, "namespace");
    match namespace {
        Some(ns) => access::administer_tenancy(cx, ns)?,
        None => access::administer_cluster(cx)?,
    }
    let regions = cx.catalog.reader().regions()?;
    Ok(regions
        .rules
        .into_values()
        .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
        .collect())
}
