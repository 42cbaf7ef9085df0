//! Pull-through caches: a repository prefix of a tenancy that mirrors an upstream registry
//! (another Keelson region, Docker Hub, any OCI registry).
//!
//! - A manifest asked for by tag is served from the cache while the tag was checked upstream
//!   within the cache's TTL; after that the upstream is asked again (one HEAD-sized GET), and a
//!   tag that moved there is fetched. When the upstream cannot be reached, what is cached is
//!   served. A manifest by digest is immutable and never re-checked.
//! - A manifest not cached yet is fetched, answered at once, and *filled* in the background:
//!   its children and blobs are stored through the ordinary upload path (so the cluster's
//!   redundancy applies) and the manifest is committed with its tag when all are in.
//! - A blob not cached yet is streamed from the upstream to the client while it is written into
//!   an upload session; when the stream ends the blob is verified and linked like any push. A
//!   client that goes away does not stop the copy.
//!
//! Cached repositories are ordinary repositories afterwards: listed, counted, and cleaned by
//! retention like the rest.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use keelson_raft::regions::{PullThroughCache, RegionCommand};
use keelson_raft::{CatalogCommand, CatalogResponse};
use keelson_storage::Digest;
use tokio::sync::mpsc;

use super::client::{PeerClient, MANIFEST_ACCEPT};
use crate::access::Cx;
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::names::Reference;
use crate::registry::Registry;

/// Most manifests of one index filled (children of children included).
const MAX_FILL_MANIFESTS: usize = 256;

/// What this node is filling now, so one image or blob is fetched once per node at a time.
#[derive(Default)]
pub struct PullThrough {
    /// `repo@digest` of manifests being filled.
    manifests: Mutex<HashSet<String>>,
    /// `repo@digest` of blobs being copied.
    blobs: Mutex<HashSet<String>>,
    /// Woken whenever a blob copy ends, for those waiting on another copy of the same blob.
    blob_done: tokio::sync::Notify,
}

/// How long a fill waits for another copy of a blob (a client's GET storing it) to end.
const OTHER_COPY_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// A repository under a cache, with its upstream name.
pub struct Cached {
    pub cache: PullThroughCache,
    pub upstream_repo: String,
}

/// The cache `repo` is under, if any.
pub fn cache_for(reg: &Registry, repo: &str) -> Result<Option<Cached>, ApiError> {
    let regions = reg.catalog.reader().regions()?;
    Ok(regions.cache_for(repo).map(|(cache, upstream_repo)| Cached {
        cache: cache.clone(),
        upstream_repo,
    }))
}

fn upstream_unavailable(cached: &Cached, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Unavailable,
        format!("upstream {} of this pull-through cache: {e}", cached.cache.upstream),
    )
}

fn client(reg: &Registry, cached: &Cached) -> Result<PeerClient, ApiError> {
    let keys = reg.store.master_keys();
    PeerClient::upstream(&cached.cache, keys.as_deref(), reg.dialer.as_ref())
        .map_err(|e| upstream_unavailable(cached, e))
}

/// A manifest as the upstream has it.
struct Upstream {
    digest: Digest,
    media_type: String,
    bytes: Bytes,
}

async fn fetch_manifest(client: &PeerClient, cached: &Cached, reference: &str) -> Result<Option<Upstream>, ApiError> {
    let path = format!("/v2/{}/manifests/{reference}", cached.upstream_repo);
    let (status, headers, bytes) = client
        .get(&path, &[("accept", MANIFEST_ACCEPT.into())])
        .await
        .map_err(|e| upstream_unavailable(cached, e))?;
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Ok(None),
        s => return Err(upstream_unavailable(cached, format!("answered {s} for {path}"))),
    }
    // A manifest fetched by digest is kept under that digest (whatever its algorithm) and checked
    // against it; one fetched by tag under its sha256.
    let by_digest = Digest::parse(reference).ok();
    let algorithm = by_digest.as_ref().map(Digest::algorithm).unwrap_or_default();
    let digest = Digest::of_with(algorithm, &bytes);
    if let Some(d) = by_digest {
        if d != digest {
            return Err(upstream_unavailable(
                cached,
                format!("sent other bytes for {reference}"),
            ));
        }
    }
    let media_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default();
    Ok(Some(Upstream {
        digest,
        media_type,
        bytes,
    }))
}

/// Answers a manifest GET or HEAD on a cached repository when the cache has something to say:
/// `None` means "serve what is stored here" (cached and fresh, or by digest and present).
pub async fn manifest(
    cx: &Cx<'_>,
    cached: &Cached,
    repo: &str,
    reference: &str,
    accepts: &[&str],
    head: bool,
) -> Result<Option<Response<Body>>, ApiError> {
    let reader = cx.catalog.reader();
    let reference = Reference::parse(reference)?;
    let now = cx.clock.now_ms();
    let (local, tag) = match &reference {
        Reference::Tag(tag) => {
            cx.catalog.linearizable().await?;
            let local = reader.tag(repo, tag)?;
            let fresh = reader
                .cache_validated(repo, tag)?
                .is_some_and(|at| now < at.saturating_add(cached.cache.ttl_ms));
            if local.is_some() && fresh {
                return Ok(None);
            }
            (local, Some(tag.clone()))
        }
        Reference::Digest(d) => {
            if reader.manifest(repo, &d.to_string())?.is_some() {
                return Ok(None);
            }
            (None, None)
        }
    };
    let client = client(cx, cached)?;
    let reference_text = match &reference {
        Reference::Tag(t) => t.clone(),
        Reference::Digest(d) => d.to_string(),
    };
    let upstream = match fetch_manifest(&client, cached, &reference_text).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return Err(ApiError::new(
                ErrorCode::ManifestUnknown,
                format!("{} has no manifest {reference_text}", cached.cache.upstream),
            ))
        }
        // The upstream is out: serve what is cached, if anything.
        Err(e) if local.is_some() => {
            tracing::warn!(repo, error = %e.message, "upstream unreachable; serving the cached tag");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if let Some(tag) = &tag {
        if local.as_deref() == Some(upstream.digest.to_string().as_str()) {
            validated(cx, repo, tag).await;
            return Ok(None);
        }
    }
    if !crate::manifest::accepts(accepts, &upstream.media_type) {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest is {}, which the request does not accept", upstream.media_type),
        ));
    }
    let valid = crate::manifest::validate(
        &upstream.bytes,
        Some(&upstream.media_type),
        now,
        upstream.digest.algorithm(),
    )?;
    if let Some(registry) = cx.handle() {
        start_fill(registry, cached, repo, valid.digest.to_string(), valid.record, tag);
    }
    let reply = crate::handlers::Reply::new(StatusCode::OK)
        .header("Content-Type", &upstream.media_type)
        .header("Content-Length", upstream.bytes.len())
        .header("Docker-Content-Digest", upstream.digest.to_string())
        .header("ETag", format!("\"{}\"", upstream.digest));
    if head {
        return Ok(Some(reply.body(body::empty())));
    }
    cx.pulls.record(repo, &upstream.digest.to_string(), now);
    Ok(Some(reply.body(body::full(upstream.bytes))))
}

async fn validated(reg: &Registry, repo: &str, tag: &str) {
    let cmd = CatalogCommand::Regions(RegionCommand::CacheValidated {
        repo: repo.to_string(),
        tag: tag.to_string(),
        at_ms: reg.clock.now_ms(),
    });
    if let Err(e) = reg.catalog.propose(cmd).await {
        tracing::warn!(repo, tag, error = %e, "could not record the cache check");
    }
}

fn start_fill(
    reg: Arc<Registry>,
    cached: &Cached,
    repo: &str,
    digest: String,
    record: keelson_raft::ManifestRecord,
    tag: Option<String>,
) {
    let key = format!("{repo}@{digest}");
    if !reg
        .pull_through
        .manifests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone())
    {
        return; // already being filled on this node
    }
    let cached = Cached {
        cache: cached.cache.clone(),
        upstream_repo: cached.upstream_repo.clone(),
    };
    let repo = repo.to_string();
    tokio::spawn(async move {
        let mut budget = MAX_FILL_MANIFESTS;
        let result = fill(&reg, &cached, &repo, &digest, record, tag, &mut budget).await;
        if let Err(e) = result {
            tracing::warn!(repo, digest, error = %e.message, "filling the pull-through cache failed");
        }
        reg.pull_through
            .manifests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    });
}

/// Stores everything `record` needs, then the manifest itself (with `tag`).
async fn fill(
    reg: &Registry,
    cached: &Cached,
    repo: &str,
    digest: &str,
    record: keelson_raft::ManifestRecord,
    tag: Option<String>,
    budget: &mut usize,
) -> Result<(), ApiError> {
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| ApiError::new(ErrorCode::ManifestInvalid, "index too deep or wide to cache"))?;
    let client = client(reg, cached)?;
    let reader = reg.catalog.reader();
    for child in &record.manifests {
        if reader.manifest(repo, child)?.is_some() {
            continue;
        }
        let upstream = fetch_manifest(&client, cached, child)
            .await?
            .ok_or_else(|| upstream_unavailable(cached, format!("has no manifest {child}")))?;
        let valid = crate::manifest::validate(
            &upstream.bytes,
            Some(&upstream.media_type),
            reg.clock.now_ms(),
            upstream.digest.algorithm(),
        )?;
        Box::pin(fill(reg, cached, repo, child, valid.record, None, budget)).await?;
    }
    for blob in &record.blobs {
        if reader.blob_in_repo(repo, blob)?.is_some() {
            continue;
        }
        let response = client
            .get_streaming(&format!("/v2/{}/blobs/{blob}", cached.upstream_repo), &[])
            .await
            .map_err(|e| upstream_unavailable(cached, e))?;
        if response.status() != StatusCode::OK {
            return Err(upstream_unavailable(
                cached,
                format!("answered {} for blob {blob}", response.status()),
            ));
        }
        let digest = Digest::parse(blob)?;
        copy_blob(reg, repo, &digest, response.into_body(), None).await?;
    }
    let put = CatalogCommand::PutManifest {
        repo: repo.to_string(),
        digest: digest.to_string(),
        manifest: record,
        tag: tag.clone(),
        now_ms: reg.clock.now_ms(),
    };
    match reg.catalog.propose(put).await? {
        CatalogResponse::Applied => {}
        CatalogResponse::Rejected(r) => return Err(r.into()),
    }
    if let Some(tag) = tag {
        validated(reg, repo, &tag).await;
    }
    Ok(())
}

/// Writes `incoming` into a new upload session of `repo` and completes it as `digest` (verified,
/// placed and linked like a push), handing each chunk to `client` too while it listens.
async fn copy_blob(
    reg: &Registry,
    repo: &str,
    digest: &Digest,
    mut incoming: hyper::body::Incoming,
    client: Option<mpsc::Sender<std::io::Result<Bytes>>>,
) -> Result<(), ApiError> {
    let key = format!("{repo}@{digest}");
    let first = reg
        .pull_through
        .blobs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone());
    let result = async {
        let mut client = client;
        if !first {
            // Another copy on this node stores it: only relay to the client.
            while let Some(frame) = incoming.frame().await {
                let data = frame.map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
                if let (Ok(data), Some(tx)) = (data.into_data(), client.as_ref()) {
                    if tx.send(Ok(data)).await.is_err() {
                        client = None;
                    }
                }
            }
            // The client has every byte; the caller (a manifest fill links the manifest next)
            // must not go on before the other copy has stored and linked the blob.
            drop(client);
            return wait_for_other_copy(reg, &key).await;
        }
        let id = reg.uploads.create(repo, Some("keelson/pull-through"))?;
        let copied = async {
            let mut writer = reg.uploads.writer(&id, repo, None).await?;
            while let Some(frame) = incoming.frame().await {
                let frame =
                    frame.map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("upstream stream: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    if let Some(tx) = client.as_ref() {
                        if tx.send(Ok(data.clone())).await.is_err() {
                            client = None; // the client left; the cache still fills
                        }
                    }
                    writer.write(data).await?;
                }
            }
            writer.close().await?;
            crate::handlers::uploads::complete(&Cx::internal(reg), repo, &id, digest).await?;
            Ok::<(), ApiError>(())
        }
        .await;
        if copied.is_err() {
            let _ = reg.uploads.cancel(&id, repo).await;
        }
        copied
    }
    .await;
    if first {
        reg.pull_through
            .blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        reg.pull_through.blob_done.notify_waiters();
    }
    result
}

/// Waits until no copy of `key` is in progress on this node (bounded by [`OTHER_COPY_WAIT`]).
async fn wait_for_other_copy(reg: &Registry, key: &str) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + OTHER_COPY_WAIT;
    loop {
        let done = reg.pull_through.blob_done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        let busy = reg
            .pull_through
            .blobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key);
        if !busy {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, done).await.is_err() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("another copy of {key} did not finish"),
            ));
        }
    }
}

/// Answers a blob GET or HEAD on a cached repository whose blob is not stored here: streamed
/// from the upstream (and stored on the way, for a whole-blob GET).
pub async fn blob(
    cx: &Cx<'_>,
    cached: &Cached,
    repo: &str,
    digest: &Digest,
    range: Option<&str>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let client = client(cx, cached)?;
    let path = format!("/v2/{}/blobs/{digest}", cached.upstream_repo);
    let mut headers = Vec::new();
    if let Some(range) = range {
        headers.push(("range", range.to_string()));
    }
    let response = client
        .get_streaming(&path, &headers)
        .await
        .map_err(|e| upstream_unavailable(cached, e))?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        return Err(ApiError::new(ErrorCode::BlobUnknown, "blob unknown to registry"));
    }
    if status != StatusCode::OK && status != StatusCode::PARTIAL_CONTENT {
        return Err(upstream_unavailable(
            cached,
            format!("answered {status} for blob {digest}"),
        ));
    }
    let mut reply = crate::handlers::Reply::new(status)
        .header("Content-Type", "application/octet-stream")
        .header("Docker-Content-Digest", digest)
        .header("Accept-Ranges", "bytes");
    for name in ["content-length", "content-range"] {
        if let Some(v) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
            reply = reply.header(name, v);
        }
    }
    if head {
        return Ok(reply.body(body::empty()));
    }
    let incoming = response.into_body();
    match (status, cx.handle()) {
        (StatusCode::OK, Some(registry)) => {
            let (tx, rx) = mpsc::channel(8);
            let repo = repo.to_string();
            let digest = digest.clone();
            tokio::spawn(async move {
                let failed = tx.clone();
                if let Err(e) = copy_blob(&registry, &repo, &digest, incoming, Some(tx)).await {
                    tracing::warn!(repo, %digest, error = %e.message, "caching a blob failed");
                    let _ = failed.send(Err(std::io::Error::other(e.message))).await;
                }
            });
            Ok(reply.body(body::channel(rx)))
        }
        // A range (or no handle to store with): relay only.
        _ => Ok(reply.body(incoming.map_err(std::io::Error::other).boxed())),
    }
}
