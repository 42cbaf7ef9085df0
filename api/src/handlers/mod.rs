//! Route handlers, one module per resource, and the small helpers they share.

pub mod admin;
pub mod audit;
pub mod blobs;
pub mod identity;
pub mod lifecycle;
pub mod listing;
pub mod manifests;
pub mod regions;
pub mod signing;
pub mod token;
pub mod uploads;
pub mod vulndb;
pub mod webhooks;

use http::{Request, Response, StatusCode};
use keelson_raft::{CatalogCommand, CatalogResponse};

use crate::access::{self, Action, Cx};
use crate::body::{self, Body};
use crate::error::ApiError;
use crate::names;
use crate::registry::Registry;
use crate::server::plain;

/// A response under construction; header values that cannot be encoded turn into a bare 500
/// instead of a panic (they are all built from validated names and digests).
pub(crate) struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl ToString) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn body(self, body: Body) -> Response<Body> {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(body)
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// No body; `Content-Length: 0` unless a length was set.
    pub fn empty(self) -> Response<Body> {
        let has_length = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        let reply = if has_length {
            self
        } else {
            self.header("Content-Length", 0)
        };
        reply.body(body::empty())
    }
}

/// A JSON answer of the management API.
pub(crate) fn json_reply(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = value.to_string();
    Reply::new(status)
        .header("Content-Type", "application/json")
        .header("Content-Length", bytes.len())
        .body(body::full(bytes))
}

/// 200 with `value`.
pub(crate) fn ok(value: serde_json::Value) -> Result<Response<Body>, ApiError> {
    Ok(json_reply(StatusCode::OK, &value))
}

/// A management request the API cannot take as sent.
pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(crate::error::ErrorCode::BadRequest, message)
}

/// Largest JSON body a management route reads (a readme is the biggest thing sent).
const MAX_JSON_BODY: usize = 1 << 20;

/// The request's JSON body (an empty body reads as `{}`).
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<hyper::body::Incoming>,
) -> Result<T, ApiError> {
    use http_body_util::BodyExt;
    let bytes = http_body_util::Limited::new(req.into_body(), MAX_JSON_BODY)
        .collect()
        .await
        .map_err(|e| bad_request(format!("reading the body failed: {e}")))?
        .to_bytes();
    let bytes = if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        &b"{}"[..]
    } else {
        &bytes[..]
    };
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

/// A request header as text (absent when missing or not visible ASCII).
pub(crate) fn header<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Validates the repository name and authorises `action` on it.
pub(crate) fn authorize_repo(cx: &Cx<'_>, name: &str, action: Action) -> Result<(), ApiError> {
    names::validate_repo(name)?;
    access::authorize(cx, action, name)
}

/// Commits a command; a rejection becomes the matching OCI error.
pub(crate) async fn commit(reg: &Registry, cmd: CatalogCommand) -> Result<(), ApiError> {
    match reg.catalog.propose(cmd).await? {
        CatalogResponse::Applied => Ok(()),
        CatalogResponse::Rejected(r) => Err(r.into()),
    }
}

/// A blob's record in `repo`, linearizably: a miss is re-checked after catching up with the
/// leader, so a blob acknowledged by any node is found here (content never changes, so a hit
/// needs no such wait).
pub(crate) async fn linked_blob(
    cx: &Cx<'_>,
    repo: &str,
    digest: &str,
) -> Result<Option<keelson_raft::BlobRecord>, ApiError> {
    if let Some(record) = cx.catalog.reader().blob_in_repo(repo, digest)? {
        return Ok(Some(record));
    }
    cx.catalog.linearizable().await?;
    Ok(cx.catalog.reader().blob_in_repo(repo, digest)?)
}
