//! Where a pushed blob's copies (or erasure-coded shards) go and where a pull finds them: the
//! API-side glue between the catalog's membership, the placement rule and node-to-node transfer.

use std::collections::BTreeMap;

use bytes::Bytes;
use keelson_raft::{BlobRecord, CodedLayout, NodeId, NodeInfo, RedundancyPolicy};
use keelson_storage::erasure::{Geometry, Scheme, CHUNK};
use keelson_storage::placement::{choose, Candidate};
use keelson_storage::tee::ReplicaTee;
use keelson_storage::{Digest, StorageError};
use tokio::sync::mpsc;

use http_body_util::BodyExt;

use crate::body::Body;
use crate::error::{ApiError, ErrorCode};
use crate::registry::Registry;

/// The `count` nodes among `members` placement picks for `need` bytes (this node first when it
/// has room, then distinct fault domains, weighted by the capacities they reported), spread by
/// `key`.
fn place(
    reg: &Registry,
    members: &BTreeMap<NodeId, (NodeInfo, bool)>,
    count: usize,
    need: u64,
    key: &[u8],
) -> Result<Vec<NodeId>, ApiError> {
    let capacities = reg.catalog.reader().capacities()?;
    let candidates = Candidate::from_members(members, &capacities);
    Ok(choose(&candidates, reg.catalog.node_id(), count, need, key))
}

/// Copies `digest` (already durable locally) to the chosen holders — `copies` nodes in distinct
/// fault domains, weighted by free space — and returns every holder that has it durably. Fails
/// when fewer than the write quorum do. With the upload's `tee`, the holders are the ones chosen
/// when the upload started and the copies already streamed there are only confirmed; a target
/// whose stream failed gets the blob pushed now.
pub async fn replicate(
    reg: &Registry,
    digest: &Digest,
    size: u64,
    copies: usize,
    tee: Option<ReplicaTee>,
) -> Result<Vec<NodeId>, ApiError> {
    let members = reg.catalog.members();
    let local = reg.catalog.node_id();
    let copies = copies.min(members.len()).max(1);
    let quorum = reg.redundancy.write_quorum.min(copies).max(1);
    let tee = tee.filter(|t| t.offset() == size && t.targets().len() == copies);
    let (targets, streamed) = match tee {
        Some(tee) => (tee.targets().to_vec(), tee.finish(digest, size).await),
        None => (place(reg, &members, copies, size, digest.hex().as_bytes())?, Vec::new()),
    };
    let streamed_to = |id: &NodeId| streamed.iter().any(|(s, r)| s == id && r.is_ok());
    for (id, result) in &streamed {
        if let Err(e) = result {
            tracing::info!(node = id, %digest, error = %e, "replica stream failed; pushing the copy instead");
        }
    }
    let pushes = targets
        .iter()
        .filter(|id| **id != local && !streamed_to(id))
        .filter_map(|id| {
            let addr = members.get(id)?.0.peer_addr.clone();
            let id = *id;
            Some(async move { (id, reg.peers.push(&addr, &reg.store, digest, size).await) })
        });
    // The local copy counts only when placement kept it (a nearly full node passes it on).
    let mut holders: Vec<NodeId> = targets
        .iter()
        .copied()
        .filter(|id| *id == local || streamed_to(id))
        .collect();
    let streamed_copies = holders.iter().filter(|id| **id != local).count() as u64;
    let mut pushed_copies = 0;
    for (id, result) in futures_util::future::join_all(pushes).await {
        match result {
            Ok(()) => {
                holders.push(id);
                pushed_copies += 1;
            }
            Err(e) => tracing::warn!(node = id, %digest, error = %e, "replica push failed"),
        }
    }
    // For `cluster status`: how many copies the tees delivered, and how many were sent after.
    reg.blob_health.count("push.streamed_copies", streamed_copies);
    reg.blob_health.count("push.copies_after_upload", pushed_copies);
    if holders.len() < quorum {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("only {} of {quorum} required copies are durable; retry", holders.len()),
        )
        .with_header("Retry-After", "1".into()));
    }
    Ok(holders)
}

/// The replica tee for the bytes of an upload request that start at `offset`: the session's
/// own from its earlier requests, or a new one when these are its first bytes and the
/// repository keeps whole copies on other nodes. Placement is decided now, from the declared
/// length and the digest when the client already named it (else the upload id spreads it).
pub fn tee_for(
    reg: &Registry,
    repo: &str,
    upload: &str,
    offset: u64,
    length: Option<u64>,
    digest: Option<&str>,
) -> Option<ReplicaTee> {
    if let Some(tee) = reg.tees.take(upload) {
        return (tee.offset() == offset).then_some(tee);
    }
    // A single node (the common case) answers before any catalog read.
    let members = reg.catalog.members();
    if offset != 0 || members.len() < 2 {
        return None;
    }
    let RedundancyPolicy::Replicas(copies) = reg.policy_for(repo).ok()? else {
        return None;
    };
    let copies = (copies as usize).min(members.len());
    if copies < 2 {
        return None;
    }
    let local = reg.catalog.node_id();
    let spread_key = match digest.and_then(|d| Digest::parse(d).ok()) {
        Some(d) => d.hex().as_bytes().to_vec(),
        None => upload.as_bytes().to_vec(),
    };
    let targets = place(reg, &members, copies, length.unwrap_or(0), &spread_key).ok()?;
    let remote: Vec<(NodeId, String)> = targets
        .iter()
        .filter(|id| **id != local)
        .filter_map(|id| Some((*id, members.get(id)?.0.peer_addr.clone())))
        .collect();
    if remote.is_empty() {
        return None;
    }
    Some(ReplicaTee::open(&reg.peers, targets, &remote))
}

/// Streams a blob range from a node that holds it, trying each holder in turn.
pub async fn fetch_remote(
    reg: &Registry,
    digest: &Digest,
    record: &BlobRecord,
    offset: u64,
    len: u64,
) -> Result<mpsc::Receiver<std::io::Result<Bytes>>, ApiError> {
    let members = reg.catalog.members();
    let mut last = None;
    for holder in &record.holders {
        if *holder == reg.catalog.node_id() {
            continue;
        }
        let Some((node, _)) = members.get(holder) else { continue };
        match reg.peers.fetch(&node.peer_addr, digest, offset, len).await {
            Ok(rx) => return Ok(rx),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or(StorageError::BlobMissing(digest.clone()));
    tracing::warn!(%digest, error = %e, "no holder could serve the blob");
    Err(
        ApiError::new(ErrorCode::Unavailable, "no node holding the blob is reachable; retry")
            .with_header("Retry-After", "1".into()),
    )
}

/// Blob ranges at least this long are relayed from a holder's API (HTTP, served there from a
/// memory map) rather than streamed over the peer channel, whose HTTP/2 frames are small.
pub const RELAY_MIN: u64 = 1 << 20;

/// Relays a range of a blob this node does not hold from a holder's API: the same GET, with the
/// client's credentials (every node verifies them alike), marked as forwarded so the holder
/// never relays it on. `None` when no holder answered with exactly that range; the caller then
/// falls back to the peer channel.
pub async fn relay_from_holder(
    reg: &Registry,
    repo: &str,
    digest: &Digest,
    record: &BlobRecord,
    authorization: Option<&http::HeaderValue>,
    offset: u64,
    len: u64,
) -> Option<Body> {
    let members = reg.catalog.members();
    let path = format!("/v2/{repo}/blobs/{digest}");
    let range = format!("bytes={}-{}", offset, offset + len - 1);
    for holder in record.holders.iter().filter(|h| **h != reg.catalog.node_id()) {
        let Some((node, _)) = members.get(holder) else { continue };
        let mut headers = http::HeaderMap::new();
        if let Some(auth) = authorization {
            headers.insert(http::header::AUTHORIZATION, auth.clone());
        }
        if let Ok(value) = http::HeaderValue::from_str(&range) {
            headers.insert(http::header::RANGE, value);
        }
        match reg.proxy.get(&node.api_addr, &path, headers).await {
            Ok(response) if answers_range(&response, len) => {
                return Some(response.into_body().map_err(std::io::Error::other).boxed());
            }
            Ok(response) => {
                tracing::debug!(node = holder, %digest, status = %response.status(), "holder did not serve the range")
            }
            Err(e) => tracing::debug!(node = holder, %digest, error = %e.message, "holder unreachable for a relay"),
        }
    }
    None
}

/// Whether a holder's answer is the 206 for a range of exactly `len` bytes.
fn answers_range<B>(response: &http::Response<B>, len: u64) -> bool {
    response.status() == http::StatusCode::PARTIAL_CONTENT
        && response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            == Some(len)
}

/// Erasure-codes `digest` (already durable locally) into `k+m` shards on `k+m` nodes, distinct
/// fault domains first; succeeds once at least `k+1` shards are durable (a push then survives
/// the loss of any one more shard holder before repair restores the rest). Shards that failed
/// are `None` in the layout, for repair to rebuild.
pub async fn store_coded(reg: &Registry, digest: &Digest, size: u64, scheme: Scheme) -> Result<CodedLayout, ApiError> {
    let members = reg.catalog.members();
    let n = scheme.k + scheme.m;
    let shard_bytes = Geometry::new(scheme.k, scheme.m, CHUNK, size).shard_bytes();
    let targets = place(reg, &members, n, shard_bytes, digest.hex().as_bytes())?;
    let addrs: Vec<String> = targets
        .iter()
        .filter_map(|id| members.get(id).map(|(node, _)| node.peer_addr.clone()))
        .collect();
    if addrs.len() != n {
        return Err(
            ApiError::new(ErrorCode::Unavailable, "not enough members for erasure coding; retry")
                .with_header("Retry-After", "1".into()),
        );
    }
    let geometry = Geometry::new(scheme.k, scheme.m, CHUNK, size);
    let results =
        keelson_storage::erasure::write::store_coded(&reg.peers, &reg.store, digest, geometry, &addrs).await?;
    let mut shards = Vec::with_capacity(n);
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) => shards.push(Some(targets[i])),
            Err(e) => {
                tracing::warn!(%digest, shard = i, node = targets[i], error = %e, "shard push failed");
                shards.push(None);
            }
        }
    }
    let durable = shards.iter().flatten().count();
    if durable < scheme.k + 1 {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("only {durable} of {} required shards are durable; retry", scheme.k + 1),
        )
        .with_header("Retry-After", "1".into()));
    }
    Ok(CodedLayout {
        k: scheme.k as u16,
        m: scheme.m as u16,
        chunk: CHUNK as u32,
        shards,
    })
}

/// Streams a range of an erasure-coded blob, rebuilt from any `k` of its shards.
pub fn fetch_coded(
    reg: &Registry,
    digest: &Digest,
    size: u64,
    layout: &CodedLayout,
    offset: u64,
    len: u64,
) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let members = reg.catalog.members();
    let sources = layout
        .shards
        .iter()
        .map(|h| h.and_then(|h| members.get(&h).map(|(node, _)| node.peer_addr.clone())))
        .collect();
    let geometry = Geometry::new(layout.k as usize, layout.m as usize, layout.chunk as usize, size);
    keelson_storage::erasure::read::stream_range(reg.peers.clone(), digest.clone(), geometry, sources, offset, len)
}

/// A small blob's whole content, wherever the cluster keeps it (here, on another holder, or in
/// shards), checked against its digest: for the registry's own reads of content it interprets
/// (signature payloads). Blobs over `max` bytes are refused.
pub async fn read_whole(reg: &Registry, digest: &Digest, record: &BlobRecord, max: u64) -> Result<Bytes, ApiError> {
    let size = record.size;
    if size > max {
        return Err(ApiError::new(
            ErrorCode::ManifestInvalid,
            format!("blob {digest} has {size} bytes; at most {max} are read here"),
        ));
    }
    if let Some(bytes) = reg.store.cached_range(digest, 0, size) {
        return Ok(bytes);
    }
    let local = if reg.store.contains(digest) {
        let (store, d) = (reg.store.clone(), digest.clone());
        tokio::task::spawn_blocking(move || store.read_small(&d, size, 0, size))
            .await
            .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
            .ok()
    } else {
        None
    };
    let bytes = match local {
        Some(bytes) => bytes,
        None => {
            let mut rx = match reg.catalog.reader().coded(&digest.to_string())? {
                Some(layout) => fetch_coded(reg, digest, size, &layout, 0, size),
                None => fetch_remote(reg, digest, record, 0, size).await?,
            };
            let mut whole = bytes::BytesMut::with_capacity(size as usize);
            while let Some(piece) = rx.recv().await {
                let piece = piece.map_err(StorageError::Io)?;
                if whole.len() + piece.len() > size as usize {
                    break;
                }
                whole.extend_from_slice(&piece);
            }
            whole.freeze()
        }
    };
    if bytes.len() as u64 != size || !digest.matches(&bytes) {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("blob {digest} could not be read whole; retry"),
        ));
    }
    Ok(bytes)
}
