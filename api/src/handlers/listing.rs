//! `GET /v2/`, `_catalog`, tags lists and referrers: the read-only listings, with the spec's
//! `n`/`last` pagination and `Link` headers.

use http::{Request, Response, StatusCode};
use keelson_storage::Digest;
use serde_json::json;

use super::{authorize_repo, Reply};
use crate::access::{self, Action, Cx};
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::manifest::OCI_INDEX;
use crate::routes::{query_get, query_pairs};

pub fn base() -> Response<Body> {
    Reply::new(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Content-Length", 2)
        .body(body::full("{}"))
}

/// The `n` and `last` query parameters.
struct Pagination {
    n: Option<usize>,
    last: Option<String>,
}

fn pagination<B>(req: &Request<B>, max_page: usize) -> Result<Pagination, ApiError> {
    let pairs = query_pairs(req.uri().query());
    let n = match query_get(&pairs, "n") {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<usize>()
                .map_err(|_| {
                    ApiError::new(ErrorCode::Unsupported, "n must be a non-negative integer")
                        .with_status(StatusCode::BAD_REQUEST)
                })?
                .min(max_page),
        ),
    };
    let last = query_get(&pairs, "last").filter(|l| !l.is_empty()).map(str::to_string);
    Ok(Pagination { n, last })
}

/// Answers one page, with a `Link` to the next when more follow.
fn page_response(
    path: &str,
    key: &str,
    extra: Option<(&str, &str)>,
    page: keelson_raft::catalog::Page,
    n: Option<usize>,
) -> Response<Body> {
    let mut doc = json!({ key: page.items });
    if let Some((k, v)) = extra {
        doc[k] = json!(v);
    }
    let bytes = doc.to_string();
    let mut reply = Reply::new(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Content-Length", bytes.len());
    if let (true, Some(n), Some(last)) = (page.more, n, page.items.last()) {
        reply = reply.header("Link", format!("<{path}?n={n}&last={last}>; rel=\"next\""));
    }
    reply.body(body::full(bytes))
}

pub async fn catalog<B>(reg: &Cx<'_>, req: &Request<B>) -> Result<Response<Body>, ApiError> {
    access::require_identity(reg, Some("registry:catalog:*"))?;
    let p = pagination(req, reg.limits.max_page)?;
    reg.catalog.linearizable().await?;
    let page = visible_repos(reg, p.last.as_deref(), p.n.unwrap_or(usize::MAX))?;
    Ok(page_response("/v2/_catalog", "repositories", None, page, p.n))
}

/// One page of the repositories the caller may see.
fn visible_repos(cx: &Cx<'_>, last: Option<&str>, limit: usize) -> Result<keelson_raft::catalog::Page, ApiError> {
    let reader = cx.catalog.reader();
    let mut items = Vec::new();
    let mut cursor = last.map(str::to_string);
    loop {
        let batch = reader.repos(cursor.as_deref(), 1000)?;
        for repo in &batch.items {
            if access::may_list(cx, repo) {
                if items.len() == limit {
                    return Ok(keelson_raft::catalog::Page { items, more: true });
                }
                items.push(repo.clone());
            }
        }
        match (batch.more, batch.items.last()) {
            (true, Some(l)) => cursor = Some(l.clone()),
            _ => return Ok(keelson_raft::catalog::Page { items, more: false }),
        }
    }
}

pub async fn tags<B>(reg: &Cx<'_>, name: &str, req: &Request<B>) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Inspect)?;
    let p = pagination(req, reg.limits.max_page)?;
    reg.catalog.linearizable().await?;
    let reader = reg.catalog.reader();
    if reader.repo(name)?.is_none() {
        return Err(ApiError::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        ));
    }
    let page = reader.tags(name, p.last.as_deref(), p.n.unwrap_or(usize::MAX))?;
    Ok(page_response(
        &format!("/v2/{name}/tags/list"),
        "tags",
        Some(("name", name)),
        page,
        p.n,
    ))
}

pub async fn referrers<B>(
    reg: &Cx<'_>,
    name: &str,
    digest: &str,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Pull)?;
    let subject = Digest::parse(digest)?;
    let pairs = query_pairs(req.uri().query());
    let filter = query_get(&pairs, "artifactType").filter(|t| !t.is_empty());
    reg.catalog.linearizable().await?;
    let manifests: Vec<_> = reg
        .catalog
        .reader()
        .referrers(name, &subject.to_string())?
        .into_iter()
        .filter(|r| filter.is_none() || r.artifact_type.as_deref() == filter)
        .map(|r| {
            let mut d = json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.size });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = json!(t);
            }
            if let Some(a) = r.annotations {
                d["annotations"] = json!(a);
            }
            d
        })
        .collect();
    let bytes = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }).to_string();
    let mut reply = Reply::new(StatusCode::OK)
        .header("Content-Type", OCI_INDEX)
        .header("Content-Length", bytes.len());
    if filter.is_some() {
        reply = reply.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(reply.body(body::full(bytes)))
}
