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

/// A `Range` header against a blob of `size` bytes, read as RFC 9110 §14 says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// No header, a unit other than bytes (§14.2: MUST be ignored), several ranges that do not
    /// make one span (§14.2 lets a server ignore them rather than send multipart/byteranges), or
    /// an empty blob with a suffix range (§14.1.3: the whole, empty, representation).
    Whole,
    /// One span, inclusive; several overlapping or adjacent ranges are coalesced (§14.2).
    Part { start: u64, end: u64 },
    /// No range overlaps the blob (§14.1.3): 416 with `Content-Range: bytes */size` (§15.5.17).
    Unsatisfiable,
    /// An invalid ranges-specifier (§14.1.1), rejected (§14.2) with 416 and the reason.
    Malformed(&'static str),
}

/// More ranges than this in one header are refused: §14.2 names many small ranges as a sign of a
/// denial-of-service attempt.
const MAX_RANGES: usize = 64;

pub(crate) fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Whole;
    };
    let Some((unit, set)) = header.trim().split_once('=') else {
        return RangeRequest::Malformed("a Range header is unit=ranges, e.g. bytes=0-1023");
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeRequest::Whole;
    }
    // range-set = 1#range-spec: a list, whose empty elements are tolerated (§5.6.1).
    let specs: Vec<&str> = set.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if specs.is_empty() {
        return RangeRequest::Malformed("the Range header names no range");
    }
    if specs.len() > MAX_RANGES {
        return RangeRequest::Malformed("the Range header names more than 64 ranges");
    }
    let mut spans = Vec::with_capacity(specs.len());
    let mut empty_suffix = false;
    for spec in specs {
        match parse_spec(spec, size) {
            Ok(Some(span)) => spans.push(span),
            Ok(None) => {}
            Err(SpecError::EmptyBlobSuffix) => empty_suffix = true,
            Err(SpecError::Invalid(why)) => return RangeRequest::Malformed(why),
        }
    }
    spans.sort_unstable();
    let mut merged: Option<(u64, u64)> = None;
    for (start, end) in spans {
        merged = match merged {
            None => Some((start, end)),
            // Overlapping or adjacent: one span.
            Some((s, e)) if start <= e.saturating_add(1) => Some((s, e.max(end))),
            Some(_) => return RangeRequest::Whole,
        };
    }
    match merged {
        Some((start, end)) => RangeRequest::Part { start, end },
        None if empty_suffix => RangeRequest::Whole,
        None => RangeRequest::Unsatisfiable,
    }
}

enum SpecError {
    Invalid(&'static str),
    /// A suffix range of an empty blob: satisfiable, yet no byte can be named.
    EmptyBlobSuffix,
}

/// One range-spec: `first-last`, `first-` or `-suffix` (§14.1.1); `None` when it does not
/// overlap the blob.
fn parse_spec(spec: &str, size: u64) -> Result<Option<(u64, u64)>, SpecError> {
    let (first, last) = spec
        .split_once('-')
        .ok_or(SpecError::Invalid("a range is first-last, first- or -suffix"))?;
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Positions past u64 are past any blob: saturate rather than refuse valid syntax.
    let number = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
    match (digits(first), first.is_empty(), digits(last), last.is_empty()) {
        (false, true, true, false) => {
            let suffix = number(last);
            if suffix == 0 {
                Ok(None)
            } else if size == 0 {
                Err(SpecError::EmptyBlobSuffix)
            } else {
                Ok(Some((size.saturating_sub(suffix), size - 1)))
            }
        }
        (true, false, true, false) | (true, false, false, true) => {
            let start = number(first);
            let end = if last.is_empty() { u64::MAX } else { number(last) };
            if end < start {
                return Err(SpecError::Invalid("a range's last byte comes before its first"));
            }
            if start >= size {
                return Ok(None);
            }
            Ok(Some((start, end.min(size - 1))))
        }
        _ => Err(SpecError::Invalid(
            "a range is first-last, first- or -suffix, in decimal digits",
        )),
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
    let etag = format!("\"{digest}\"");
    // If-Range (RFC 9110 §13.1.5): a Range applies only while the validator still matches, by
    // strong comparison; a date never matches, since blobs carry no Last-Modified.
    let range = match header(req, "if-range") {
        Some(validator) if validator.trim() != etag => None,
        _ => header(req, "range"),
    };
    let (status, start, len) = match parse_range(range, size) {
        RangeRequest::Whole => (StatusCode::OK, 0, size),
        RangeRequest::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::new(
                ErrorCode::RangeInvalid,
                format!("no requested range overlaps the blob's {size} bytes"),
            )
            .with_header("Content-Range", format!("bytes */{size}")));
        }
        RangeRequest::Malformed(why) => {
            return Err(
                ApiError::new(ErrorCode::RangeInvalid, format!("invalid Range header: {why}"))
                    .with_header("Content-Range", format!("bytes */{size}")),
            );
        }
    };
    let mut reply = Reply::new(status)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", len)
        .header("Docker-Content-Digest", &digest)
        .header("ETag", &etag)
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
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        let malformed = |h: &str| matches!(parse_range(Some(h), 10), Malformed(_));
        assert_eq!(parse_range(None, 10), Whole);
        // §14.1.1 forms.
        assert_eq!(parse_range(Some("bytes=0-9"), 10), Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=5-"), 10), Part { start: 5, end: 9 });
        assert_eq!(parse_range(Some("bytes=-4"), 10), Part { start: 6, end: 9 });
        assert_eq!(parse_range(Some("bytes=-40"), 10), Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=2-100"), 10), Part { start: 2, end: 9 });
        assert_eq!(parse_range(Some("BYTES=1-1"), 10), Part { start: 1, end: 1 });
        assert_eq!(
            parse_range(Some("bytes=3-99999999999999999999999"), 10),
            Part { start: 3, end: 9 }
        );
        // §14.1.3: unsatisfiable.
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=10-20,30-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Whole);
        // §14.1.1: invalid specifiers are rejected, not ignored.
        assert!(malformed("bytes=5-2"));
        assert!(malformed("bytes=x-"));
        assert!(malformed("bytes=-"));
        assert!(malformed("bytes="));
        assert!(malformed("bytes=+1-2"));
        assert!(malformed("bytes=0-1,junk"));
        assert!(malformed("bytes 0-1"));
        assert!(malformed(&format!("bytes={}", vec!["0-0"; 65].join(","))));
        // §14.2: an unknown unit is ignored; overlapping ranges coalesce; disjoint ones get the whole.
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-3, 2-5,6-6"), 10), Part { start: 0, end: 6 });
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,20-30"), 10), Part { start: 0, end: 1 });
    }
}
