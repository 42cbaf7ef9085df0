//! Blob uploads: start (plain, monolithic, cross-repository mount), PATCH chunks, status, finish
//! and cancel. Bodies stream straight into the session writer; a blob is linked into the
//! repository through Raft only after its bytes are verified and durable.

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use keelson_raft::{CatalogCommand, CatalogResponse, RedundancyPolicy};
use keelson_storage::erasure::Scheme;
use keelson_storage::{Digest, StorageError};

use super::{authorize_repo, commit, header, Reply};
use crate::access::{Action, Cx};
use crate::body::Body;
use crate::error::{upload_range, ApiError, ErrorCode};
use crate::names;
use crate::routes::{query_get, query_pairs};

/// Longest pause tolerated between two pieces of an upload body.
const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

/// 202 for an open session at `offset`.
fn accepted(name: &str, id: &str, offset: u64) -> Response<Body> {
    Reply::new(StatusCode::ACCEPTED)
        .header("Location", upload_location(name, id))
        .header("Range", upload_range(offset))
        .header("Docker-Upload-UUID", id)
        .empty()
}

/// 201 for a blob now in the repository.
fn created(name: &str, digest: &Digest) -> Response<Body> {
    Reply::new(StatusCode::CREATED)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest)
        .empty()
}

/// `Content-Range: <start>-<end>` of a chunk (also accepts a `bytes ` prefix).
fn chunk_start(req: &Request<Incoming>) -> Result<Option<u64>, ApiError> {
    match header(req, "content-range") {
        None => Ok(None),
        Some(text) => content_range_start(text, header(req, "content-length")).map(Some),
    }
}

/// The first byte of a chunk from its `Content-Range` (`<start>-<end>`, optionally `bytes `
/// and `/<total>`), which must describe exactly the `Content-Length` bytes that follow.
pub(crate) fn content_range_start(text: &str, content_length: Option<&str>) -> Result<u64, ApiError> {
    let text = text.trim().trim_start_matches("bytes ").trim_start_matches("bytes=");
    let bad = || {
        ApiError::new(ErrorCode::BlobUploadInvalid, "Content-Range must be <start>-<end>")
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
    };
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end: u64 = end.split('/').next().unwrap_or("").trim().parse().map_err(|_| bad())?;
    // Checked: `0-18446744073709551615` spans 2^64 bytes, one more than a u64 holds.
    let span = end.checked_sub(start).and_then(|d| d.checked_add(1)).ok_or_else(bad)?;
    if let Some(len) = content_length.and_then(|l| l.trim().parse::<u64>().ok()) {
        if len != span {
            return Err(ApiError::new(
                ErrorCode::BlobUploadInvalid,
                format!("Content-Range {start}-{end} does not match Content-Length {len}"),
            )
            .with_status(StatusCode::RANGE_NOT_SATISFIABLE));
        }
    }
    Ok(start)
}

/// Streams the request body into the session, and to the replicas' streams when the blob is
/// replicated; returns the new offset.
async fn append(reg: &Cx<'_>, name: &str, id: &str, req: Request<Incoming>) -> Result<u64, ApiError> {
    let start = chunk_start(&req)?;
    let mut writer = reg
        .uploads
        .writer(id, name, start)
        .await
        .map_err(|e| with_location(e.into(), name, id))?;
    let length = header(&req, "content-length").and_then(|l| l.trim().parse::<u64>().ok());
    if length != Some(0) {
        let digest = query_get(&query_pairs(req.uri().query()), "digest").map(str::to_string);
        let tee = crate::placement::tee_for(reg, name, id, writer.start(), length, digest.as_deref());
        if let Some(tee) = tee {
            writer.attach_tee(tee);
        }
    }
    let mut body = req.into_body();
    let mut failure = None;
    // A body that stops arriving must not hold the session (and a disk thread) forever.
    loop {
        let Ok(next) = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await else {
            let idle = format!("no body bytes for {} s", BODY_IDLE_TIMEOUT.as_secs());
            failure = Some(ApiError::from(StorageError::Body(idle)));
            break;
        };
        let Some(frame) = next else { break };
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if let Err(e) = writer.write(data).await {
                        failure = Some(ApiError::from(e));
                        break;
                    }
                }
            }
            Err(e) => {
                failure = Some(ApiError::from(StorageError::Body(e.to_string())));
                break;
            }
        }
    }
    let (closed, tee) = writer.close_with_tee().await;
    let offset = closed?;
    match failure {
        Some(e) => Err(e),
        None => {
            // The tee goes on with the session's next request, or is dropped with this one.
            if let Some(tee) = tee.filter(|t| t.offset() == offset) {
                reg.tees.keep(id, tee);
            }
            Ok(offset)
        }
    }
}

fn with_location(e: ApiError, name: &str, id: &str) -> ApiError {
    if e.status == StatusCode::RANGE_NOT_SATISFIABLE {
        e.with_header("Location", upload_location(name, id))
            .with_header("Docker-Upload-UUID", id.to_string())
    } else {
        e
    }
}

fn required_digest(req: &Request<Incoming>) -> Result<Digest, ApiError> {
    let pairs = query_pairs(req.uri().query());
    let text = query_get(&pairs, "digest")
        .ok_or_else(|| ApiError::new(ErrorCode::DigestInvalid, "digest parameter missing"))?;
    Ok(Digest::parse(text)?)
}

/// Verifies, stores and links the session's blob.
pub(crate) async fn complete(reg: &Cx<'_>, name: &str, id: &str, digest: &Digest) -> Result<Response<Body>, ApiError> {
    // Taken first, so that every way out of here (a failure included) drops it.
    let tee = reg.tees.take(id);
    let size = reg.uploads.finish(id, name, digest).await?;
    // Content the cluster already stores (pushed to another repository) is linked, not copied
    // again; this node's upload is then an orphan its scrub removes after the grace period.
    let members = reg.catalog.members();
    if let Some(existing) = reg.catalog.reader().blob(&digest.to_string())? {
        if existing.size == size && existing.holders.iter().any(|h| members.contains_key(h)) {
            let mount = CatalogCommand::MountBlob {
                repo: name.to_string(),
                digest: digest.to_string(),
                now_ms: reg.clock.now_ms(),
            };
            if reg.catalog.propose(mount).await? == CatalogResponse::Applied {
                return Ok(created(name, digest));
            }
        }
    }
    let policy = reg.policy_for(name)?;
    let copies = match policy {
        RedundancyPolicy::Replicas(n) => n,
        RedundancyPolicy::Erasure { k, m } => {
            let scheme = Scheme {
                k: k as usize,
                m: m as usize,
            };
            if size >= reg.redundancy.erasure_min_bytes && members.len() >= scheme.k + scheme.m {
                let layout = crate::placement::store_coded(reg, digest, size, scheme).await?;
                commit(
                    reg,
                    CatalogCommand::LinkCoded {
                        repo: name.to_string(),
                        digest: digest.to_string(),
                        size,
                        layout,
                        now_ms: reg.clock.now_ms(),
                    },
                )
                .await?;
                // The whole-blob file was only the encoder's input; this node's scrub removes
                // it after the grace period (it is pinned until then).
                return Ok(created(name, digest));
            }
            // Small blobs (and clusters too small for k+m) are replicated, with at least as
            // many losses survivable as the code allows.
            small_blob_copies(m)
        }
    };
    let holders = crate::placement::replicate(reg, digest, size, copies as usize, tee).await?;
    commit(
        reg,
        CatalogCommand::LinkReplicas {
            repo: name.to_string(),
            digest: digest.to_string(),
            size,
            holders,
            copies,
            now_ms: reg.clock.now_ms(),
        },
    )
    .await?;
    Ok(created(name, digest))
}

/// Stores `bytes` as a blob of `name` the way a push does (an upload session, verified, placed
/// with the repository's redundancy and linked), for content the registry itself writes
/// (server-side signatures). Returns the blob's sha256 digest.
pub(crate) async fn store_bytes(cx: &Cx<'_>, name: &str, owner: &str, bytes: bytes::Bytes) -> Result<Digest, ApiError> {
    let digest = Digest::of(&bytes);
    let id = cx.uploads.create(name, Some(owner))?;
    let stored = async {
        let mut writer = cx.uploads.writer(&id, name, None).await?;
        writer.write(bytes).await?;
        writer.close().await?;
        complete(cx, name, &id, &digest).await
    }
    .await;
    if let Err(e) = stored {
        let _ = cx.uploads.cancel(&id, name).await;
        return Err(e);
    }
    Ok(digest)
}

/// Copies of a small blob in a repository coded with `m` parity shards: three, or `m + 1` when
/// the code survives more losses.
fn small_blob_copies(m: u16) -> u16 {
    (m + 1).max(3)
}

/// POST `/v2/<name>/blobs/uploads/` (`?digest=` monolithic, `?mount=&from=` cross-mount).
pub async fn start(reg: &Cx<'_>, name: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(req.uri().query());
    if let Err(e) = authorize_repo(reg, name, Action::Push) {
        // A cross-repository mount's challenge asks for the source's pull scope too, so a
        // token client fetches one token good for both and mounts instead of uploading
        // (distribution spec, "Mounting a blob from another repository").
        return Err(match query_get(&pairs, "from") {
            Some(from) if e.status == StatusCode::UNAUTHORIZED && names::validate_repo(from).is_ok() => {
                crate::access::challenge(
                    &reg.caller.origin,
                    Some(format!("repository:{name}:pull,push repository:{from}:pull")),
                )
            }
            _ => e,
        });
    }
    super::lifecycle::admits_upload(reg, name)?;
    if let Some(mount) = query_get(&pairs, "mount") {
        let digest = Digest::parse(mount)?;
        // Without `from`, the registry looks for the blob in the tenancy's other repositories
        // (distribution spec 1.1, "Mounting a blob from another repository").
        let source = match query_get(&pairs, "from") {
            Some(from) => (names::validate_repo(from).is_ok() && authorize_repo(reg, from, Action::Pull).is_ok())
                .then(|| from.to_string()),
            None => mount_source(reg, name, &digest.to_string())?,
        };
        let linked = match &source {
            Some(from) => super::linked_blob(reg, from, &digest.to_string()).await?.is_some(),
            None => false,
        };
        if linked {
            // MountBlob never re-creates a record: if GC collected the blob meanwhile it is
            // rejected and the client uploads the bytes instead.
            let mount = CatalogCommand::MountBlob {
                repo: name.to_string(),
                digest: digest.to_string(),
                now_ms: reg.clock.now_ms(),
            };
            match reg.catalog.propose(mount).await? {
                CatalogResponse::Applied => return Ok(created(name, &digest)),
                CatalogResponse::Rejected(r) => tracing::info!(%digest, reason = %r, "mount refused; uploading"),
            }
        }
        // Not mountable: fall back to a fresh upload session.
    }
    let monolithic = match query_get(&pairs, "digest") {
        Some(text) => Some(Digest::parse(text)?),
        None => None,
    };
    let id = reg.uploads.create(name, Some(&reg.caller.principal.subject()))?;
    match monolithic {
        None => Ok(accepted(name, &id, 0)),
        Some(digest) => {
            let result = async {
                append(reg, name, &id, req).await?;
                complete(reg, name, &id, &digest).await
            }
            .await;
            if result.is_err() {
                let _ = reg.uploads.cancel(&id, name).await;
            }
            result
        }
    }
}

/// Repositories a mount without `from` looks through, at most.
const MOUNT_SEARCH_REPOS: usize = 5_000;

/// Another repository of `name`'s tenancy that links `digest` and that the caller may pull from:
/// the first in name order, among at most [`MOUNT_SEARCH_REPOS`].
fn mount_source(reg: &Cx<'_>, name: &str, digest: &str) -> Result<Option<String>, ApiError> {
    let prefix = format!("{}/", keelson_raft::lifecycle::tenancy_of(name));
    let reader = reg.catalog.reader();
    let mut last = prefix.clone();
    let mut seen = 0usize;
    while seen < MOUNT_SEARCH_REPOS {
        let page = reader.repos(Some(&last), 500)?;
        for repo in &page.items {
            if !repo.starts_with(&prefix) {
                return Ok(None);
            }
            seen += 1;
            if repo != name
                && reader.blob_in_repo(repo, digest)?.is_some()
                && authorize_repo(reg, repo, Action::Pull).is_ok()
            {
                return Ok(Some(repo.clone()));
            }
        }
        match page.items.last() {
            Some(l) if page.more => last = l.clone(),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Where the session lives when another node owns it (its API address).
fn remote_owner(reg: &Cx<'_>, id: &str) -> Option<String> {
    let owner = keelson_storage::Uploads::owner_of(id)?
        .strip_prefix('n')?
        .parse::<u64>()
        .ok()?;
    if owner == reg.catalog.node_id() {
        return None;
    }
    reg.catalog.members().get(&owner).map(|(node, _)| node.api_addr.clone())
}

/// Serves an upload request here, or relays it to the node that owns the session.
pub async fn route(reg: &Cx<'_>, name: &str, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Push)?;
    if let Some(api_addr) = remote_owner(reg, id) {
        return reg.proxy.forward(&api_addr, req).await;
    }
    match *req.method() {
        http::Method::GET => status(reg, name, id).await,
        http::Method::PATCH => patch(reg, name, id, req).await,
        http::Method::PUT => finish(reg, name, id, req).await,
        http::Method::DELETE => cancel(reg, name, id).await,
        ref m => Err(ApiError::new(
            ErrorCode::Unsupported,
            format!("method {m} is not supported on this route"),
        )),
    }
}

async fn status(reg: &Cx<'_>, name: &str, id: &str) -> Result<Response<Body>, ApiError> {
    let offset = reg.uploads.offset(id, name).await?;
    Ok(Reply::new(StatusCode::NO_CONTENT)
        .header("Location", upload_location(name, id))
        .header("Range", upload_range(offset))
        .header("Docker-Upload-UUID", id)
        .empty())
}

pub async fn patch(reg: &Cx<'_>, name: &str, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Push)?;
    let offset = append(reg, name, id, req).await?;
    Ok(accepted(name, id, offset))
}

pub async fn finish(reg: &Cx<'_>, name: &str, id: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Push)?;
    let digest = required_digest(&req)?;
    append(reg, name, id, req).await?;
    complete(reg, name, id, &digest).await
}

async fn cancel(reg: &Cx<'_>, name: &str, id: &str) -> Result<Response<Body>, ApiError> {
    drop(reg.tees.take(id));
    reg.uploads.cancel(id, name).await?;
    Ok(Reply::new(StatusCode::NO_CONTENT).empty())
}
