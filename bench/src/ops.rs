//! The OCI distribution (Docker V2) operations the workloads are made of: blob uploads
//! (monolithic and chunked), blob GETs, manifest PUT/GET and tag listing. Each checks
//! the status codes and headers the spec requires and returns what the caller measures.

use bytes::Bytes;
use http::header::{HeaderName, ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Method, StatusCode};

use crate::auth::query_escape;
use crate::blob::Blob;
use crate::body::ReqBody;
use crate::client::{drain, excerpt, expect, header_str, read_all, read_counting, HttpError, Registry, Req};
use crate::manifest::DOCKER_ACCEPT;

const OCTET: HeaderValue = HeaderValue::from_static("application/octet-stream");
const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const CONTENT_RANGE: HeaderName = HeaderName::from_static("content-range");

fn len_header(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

fn body_error(req: &Req, detail: String) -> HttpError {
    HttpError::Body {
        method: req.method.clone(),
        url: req.url.clone(),
        detail,
    }
}

/// `url` with `key=value` appended to its query.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", query_escape(value))
}

fn location(reg: &Registry, resp: &http::Response<hyper::body::Incoming>, req: &Req) -> Result<String, HttpError> {
    header_str(resp, LOCATION)
        .map(|l| reg.resolve(l))
        .ok_or_else(|| HttpError::MissingHeader {
            method: req.method.clone(),
            url: req.url.clone(),
            header: "Location",
        })
}

/// POST /v2/<name>/blobs/uploads/ → the upload session's absolute URL.
pub async fn start_upload(reg: &Registry, repo: &str) -> Result<String, HttpError> {
    let req =
        Req::new(Method::POST, reg.url(&format!("/v2/{repo}/blobs/uploads/"))).header(CONTENT_LENGTH, len_header(0));
    let resp = expect(reg.send(&req).await?, &[StatusCode::ACCEPTED], &req).await?;
    let loc = location(reg, &resp, &req)?;
    drain(resp).await.map_err(|d| body_error(&req, d))?;
    Ok(loc)
}

/// Finishes an upload with PUT <location>?digest=, carrying `body` (maybe empty).
async fn finish_upload(reg: &Registry, loc: &str, blob: &Blob, body: ReqBody) -> Result<(), HttpError> {
    let req = Req::new(Method::PUT, with_query(loc, "digest", &blob.digest))
        .header(CONTENT_TYPE, OCTET)
        .header(CONTENT_LENGTH, len_header(body.len()))
        .body(body);
    let resp = expect(reg.send(&req).await?, &[StatusCode::CREATED], &req).await?;
    if let Some(d) = header_str(&resp, DOCKER_CONTENT_DIGEST) {
        if d != blob.digest {
            return Err(HttpError::Verify {
                method: req.method.clone(),
                url: req.url.clone(),
                what: format!("Docker-Content-Digest {d} but pushed {}", blob.digest),
            });
        }
    }
    drain(resp).await.map_err(|d| body_error(&req, d))?;
    Ok(())
}

/// POST then one PUT with the whole blob.
pub async fn push_monolithic(reg: &Registry, repo: &str, blob: &Blob) -> Result<(), HttpError> {
    let loc = start_upload(reg, repo).await?;
    finish_upload(reg, &loc, blob, blob.body()).await
}

/// POST, PATCH chunks of `chunk` bytes (with Content-Range), then PUT with no body.
pub async fn push_chunked(reg: &Registry, repo: &str, blob: &Blob, chunk: u64) -> Result<(), HttpError> {
    let mut loc = start_upload(reg, repo).await?;
    let total = blob.len();
    let mut off = 0u64;
    while off < total {
        let end = (off + chunk).min(total);
        let range = HeaderValue::from_str(&format!("{}-{}", off, end - 1)).map_err(|e| HttpError::Build {
            url: loc.clone(),
            source: e.into(),
        })?;
        let req = Req::new(Method::PATCH, loc.clone())
            .header(CONTENT_TYPE, OCTET)
            .header(CONTENT_RANGE, range)
            .header(CONTENT_LENGTH, len_header(end - off))
            .body(blob.range(off, end));
        let resp = expect(reg.send(&req).await?, &[StatusCode::ACCEPTED], &req).await?;
        loc = location(reg, &resp, &req)?;
        drain(resp).await.map_err(|d| body_error(&req, d))?;
        off = end;
    }
    finish_upload(reg, &loc, blob, ReqBody::empty()).await
}

/// GET /v2/<name>/blobs/<digest>; checks the length and, if asked, the digest.
/// Returns the bytes received.
pub async fn get_blob(
    reg: &Registry,
    repo: &str,
    digest: &str,
    expect_len: u64,
    verify: bool,
) -> Result<u64, HttpError> {
    let req = Req::new(Method::GET, reg.url(&format!("/v2/{repo}/blobs/{digest}")));
    let resp = expect(reg.get_following(&req).await?, &[StatusCode::OK], &req).await?;
    let (n, got) = read_counting(resp, &req, verify).await?;
    if n != expect_len {
        return Err(HttpError::Verify {
            method: req.method,
            url: req.url,
            what: format!("body is {n} bytes, expected {expect_len}"),
        });
    }
    if let Some(got) = got {
        if got != digest {
            return Err(HttpError::Verify {
                method: req.method,
                url: req.url,
                what: format!("body hashes to {got}"),
            });
        }
    }
    Ok(n)
}

/// PUT /v2/<name>/manifests/<reference>; returns the digest the registry reports.
pub async fn put_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &'static str,
    doc: Bytes,
) -> Result<Option<String>, HttpError> {
    let req = Req::new(Method::PUT, reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header(CONTENT_TYPE, HeaderValue::from_static(media_type))
        .header(CONTENT_LENGTH, len_header(doc.len() as u64))
        .body(ReqBody::from(doc));
    let resp = expect(reg.send(&req).await?, &[StatusCode::CREATED], &req).await?;
    let digest = header_str(&resp, DOCKER_CONTENT_DIGEST).map(str::to_string);
    drain(resp).await.map_err(|d| body_error(&req, d))?;
    Ok(digest)
}

/// What a manifest GET returned.
pub struct ManifestGot {
    pub len: u64,
    pub digest_header: Option<String>,
    pub content_type: Option<String>,
    pub body: Option<Bytes>,
}

/// GET /v2/<name>/manifests/<reference> with Docker's Accept header. With `keep` the
/// body is returned, else only counted.
pub async fn get_manifest(reg: &Registry, repo: &str, reference: &str, keep: bool) -> Result<ManifestGot, HttpError> {
    let req = Req::new(Method::GET, reg.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header(ACCEPT, HeaderValue::from_static(DOCKER_ACCEPT));
    let resp = expect(reg.send(&req).await?, &[StatusCode::OK], &req).await?;
    let digest_header = header_str(&resp, DOCKER_CONTENT_DIGEST).map(str::to_string);
    let content_type = header_str(&resp, CONTENT_TYPE).map(str::to_string);
    if keep {
        let body = read_all(resp, &req).await?;
        Ok(ManifestGot {
            len: body.len() as u64,
            digest_header,
            content_type,
            body: Some(body),
        })
    } else {
        let (len, _) = read_counting(resp, &req, false).await?;
        Ok(ManifestGot {
            len,
            digest_header,
            content_type,
            body: None,
        })
    }
}

/// GET /v2/<name>/tags/list; returns the body (kept) or its length.
pub async fn tags_list(reg: &Registry, repo: &str, keep: bool) -> Result<(u64, Option<Bytes>), HttpError> {
    let req = Req::new(Method::GET, reg.url(&format!("/v2/{repo}/tags/list")));
    let resp = expect(reg.send(&req).await?, &[StatusCode::OK], &req).await?;
    if keep {
        let body = read_all(resp, &req).await?;
        Ok((body.len() as u64, Some(body)))
    } else {
        let (n, _) = read_counting(resp, &req, false).await?;
        Ok((n, None))
    }
}

/// GET of an arbitrary path (the bare-server ceiling); any 2xx counts.
pub async fn get_path(reg: &Registry, path: &str) -> Result<u64, HttpError> {
    let req = Req::new(Method::GET, reg.url(path));
    let resp = reg.send(&req).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(HttpError::Status {
            method: req.method,
            url: req.url,
            expected: "2xx".into(),
            status,
            body: excerpt(resp).await,
        });
    }
    let (n, _) = read_counting(resp, &req, false).await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query() {
        assert_eq!(
            with_query("http://h/v2/a/b/blobs/uploads/x", "digest", "sha256:ab"),
            "http://h/v2/a/b/blobs/uploads/x?digest=sha256%3Aab"
        );
        assert_eq!(
            with_query("http://h/u?_state=1", "digest", "sha256:ab"),
            "http://h/u?_state=1&digest=sha256%3Aab"
        );
    }
}
