//! Blob GET/HEAD (with single `Range` requests) and DELETE.

use http::{Request, Response, StatusCode};
use keelson_raft::CatalogCommand;
use keelson_storage::Digest;

use super::{authorize_repo, commit, header, linked_blob, Reply};
use crate::access::{Action, Cx};
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};

/// Blobs up to this size are read in one call instead of streamed.
const SMALL_BLOB: u64 = 256 << 10;

fn unknown() -> ApiError {
    ApiError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
}

/// A parsed `Range: bytes=…` header against a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    Whole,
    Part { start: u64, end: u64 },
    Unsatisfiable,
}

pub(crate) fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole; // multiple ranges: serving the whole blob is allowed
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeRequest::Whole;
            };
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return RangeRequest::Whole,
                }
            };
            (start, end)
        }
        (true, false) => {
            let Ok(suffix) = b.parse::<u64>() else {
                return RangeRequest::Whole;
            };
            if suffix == 0 {
                return RangeRequest::Unsatisfiable;
            }
            (size.saturating_sub(suffix), size.saturating_sub(1))
        }
        (true, true) => return RangeRequest::Whole,
    };
    if parsed.0 >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part {
        start: parsed.0,
        end: parsed.1,
    }
}

pub async fn get<B>(
    reg: &Cx<'_>,
    name: &str,
    digest: &str,
    req: &Request<B>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Pull)?;
    let digest = Digest::parse(digest)?;
    let record = match linked_blob(reg, name, &digest.to_string()).await? {
        Some(record) => record,
        None => {
            return match crate::regions::pull_through::cache_for(reg, name)? {
                Some(cached) => {
                    crate::regions::pull_through::blob(reg, &cached, name, &digest, header(req, "range"), head).await
                }
                None => Err(unknown()),
            };
        }
    };
    let size = record.size;
    let (status, start, len) = match parse_range(header(req, "range"), size) {
        RangeRequest::Whole => (StatusCode::OK, 0, size),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            return Err(
                ApiError::new(ErrorCode::RangeInvalid, "requested range not satisfiable")
                    .with_header("Content-Range", format!("bytes */{size}")),
            );
        }
    };
    let mut reply = Reply::new(status)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", len)
        .header("Docker-Content-Digest", &digest)
        .header("ETag", format!("\"{digest}\""))
        .header("Accept-Ranges", "bytes")
        .header("Cache-Control", "max-age=31536000");
    if status == StatusCode::PARTIAL_CONTENT {
        reply = reply.header("Content-Range", format!("bytes {}-{}/{}", start, start + len - 1, size));
    }
    if head {
        touch_if_collectable(reg, name, &digest).await;
    }
    if head || len == 0 {
        return Ok(reply.body(body::empty()));
    }
    let body = if let Some(bytes) = reg.store.cached_range(&digest, start, len) {
        body::full(bytes)
    } else if !reg.store.contains(&digest) {
        if let Some(layout) = reg.catalog.reader().coded(&digest.to_string())? {
            // Erasure-coded: rebuilt from any k shards, reading only the stripes of the range.
            let rx = crate::placement::fetch_coded(reg, &digest, size, &layout, start, len);
            return Ok(reply.body(body::channel(rx)));
        }
        if record.holders.contains(&reg.catalog.node_id()) {
            // Listed here but gone from the disk: the healer fetches it back.
            reg.store.heal_queue().push(digest.clone());
        }
        // Recorded in the catalog but held elsewhere: large ranges are relayed from a holder's
        // API (unless this request is itself a relay), the rest streamed over the peer channel.
        let relayed = if len >= crate::placement::RELAY_MIN && !crate::proxy::is_forwarded(req.headers()) {
            let auth = req.headers().get(http::header::AUTHORIZATION);
            crate::placement::relay_from_holder(reg, name, &digest, &record, auth, start, len).await
        } else {
            None
        };
        match relayed {
            Some(body) => {
                // RFC 9110 §7.6.3: a proxy names itself in `Via` on what it forwards.
                reply = reply.header("Via", format!("1.1 keelson-{}", reg.catalog.node_id()));
                body
            }
            None => body::channel(crate::placement::fetch_remote(reg, &digest, &record, start, len).await?),
        }
    } else if len <= SMALL_BLOB {
        let store = reg.store.clone();
        let d = digest.clone();
        let read = tokio::task::spawn_blocking(move || store.read_small(&d, size, start, len))
            .await
            .map_err(|e| keelson_storage::StorageError::Io(std::io::Error::other(e)))?;
        match read {
            Ok(bytes) => body::full(bytes),
            // The local copy failed verification (now quarantined): serve another holder's.
            Err(keelson_storage::StorageError::Corrupt(_)) => {
                body::channel(crate::placement::fetch_remote(reg, &digest, &record, start, len).await?)
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        let mapped = reg
            .store
            .map_range(&digest, start, len)
            .map_err(keelson_storage::StorageError::Io)?;
        match mapped {
            Some(pieces) => body::chunks(pieces),
            // A sealed copy is decrypted as it streams (and verified when whole).
            None => {
                let rx = reg
                    .store
                    .stream_range(&digest, start, len)
                    .map_err(keelson_storage::StorageError::Io)?;
                body::channel(rx)
            }
        }
    };
    Ok(reply.body(body))
}

/// A pusher checks with HEAD whether a blob is already there and then skips its upload: if the
/// blob is a candidate of a pending GC sweep, re-link it (which fences it out of the sweep) so
/// the manifest that follows still finds it.
async fn touch_if_collectable(reg: &Cx<'_>, name: &str, digest: &Digest) {
    if !reg
        .catalog
        .reader()
        .is_gc_candidate(&digest.to_string())
        .unwrap_or(false)
    {
        return;
    }
    let touch = CatalogCommand::MountBlob {
        repo: name.to_string(),
        digest: digest.to_string(),
        now_ms: reg.clock.now_ms(),
    };
    if let Err(e) = reg.catalog.propose(touch).await {
        tracing::warn!(%digest, error = %e, "could not fence a GC candidate on HEAD");
    }
}

pub async fn delete(reg: &Cx<'_>, name: &str, digest: &str) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Delete)?;
    let digest = Digest::parse(digest)?;
    commit(
        reg,
        CatalogCommand::UnlinkBlob {
            repo: name.to_string(),
            digest: digest.to_string(),
        },
    )
    .await
    .map_err(|e| {
        if e.code == ErrorCode::ManifestBlobUnknown {
            unknown()
        } else {
            e
        }
    })?;
    Ok(Reply::new(StatusCode::ACCEPTED).empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 10), Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=5-"), 10), Part { start: 5, end: 9 });
        assert_eq!(parse_range(Some("bytes=-4"), 10), Part { start: 6, end: 9 });
        assert_eq!(parse_range(Some("bytes=-40"), 10), Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=2-100"), 10), Part { start: 2, end: 9 });
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=x-"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
    }
}
