//! `GET /api/v1/audit`: the audit log, newest first, filtered and paged. A tenancy's
//! administrators read their tenancy's records (`?namespace=<ns>`); the cluster administrator
//! reads any tenancy's and the records that belong to none (no `namespace`).
//!
//! Filters: `actor`, `action` (exact, or a prefix ending in `.` such as `manifest.`),
//! `since` and `until` (milliseconds since the epoch), `failed=true`; paging: `n` (at most
//! 1,000, default 100) and `after` (the `next` of the previous page, also in a `Link` header).

use http::{Method, Request, Response, StatusCode};
use keelson_raft::audit::AuditFilter;
use serde_json::json;

use super::{bad_request, Reply};
use crate::access::{self, Cx};
use crate::body::{self, Body};
use crate::error::ApiError;
use crate::routes::{percent_encode, query_get, query_pairs};

const MAX_PAGE: usize = 1_000;

/// Dispatches `/api/v1/audit/<rest>`.
pub fn route<B>(cx: &Cx<'_>, rest: &[&str], req: &Request<B>) -> Result<Response<Body>, ApiError> {
    match (req.method(), rest) {
        (&Method::GET, []) => page(cx, req),
        _ => Err(ApiError::no_route()),
    }
}

fn page<B>(cx: &Cx<'_>, req: &Request<B>) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(req.uri().query());
    let namespace = query_get(&pairs, "namespace").filter(|n| !n.is_empty());
    match namespace {
        Some(ns) => access::administer_tenancy(cx, ns)?,
        None => access::administer_cluster(cx)?,
    }
    let number = |key: &str| -> Result<Option<u64>, ApiError> {
        query_get(&pairs, key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad_request(format!("{key} must be a number")))
            })
            .transpose()
    };
    let filter = AuditFilter {
        actor: query_get(&pairs, "actor").filter(|v| !v.is_empty()).map(str::to_string),
        action: query_get(&pairs, "action")
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        since_ms: number("since")?,
        until_ms: number("until")?,
        failed_only: match query_get(&pairs, "failed") {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(other) => return Err(bad_request(format!("failed must be true or false, not {other:?}"))),
        },
    };
    let n = number("n")?.map_or(100, |n| n as usize).clamp(1, MAX_PAGE);
    let after = query_get(&pairs, "after").filter(|v| !v.is_empty());
    // A cursor is the hex of a record's key after its scope: 26 bytes.
    if after.is_some_and(|a| a.len() != 52 || !a.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(bad_request("after must be the next cursor of a previous page"));
    }
    let page = cx
        .catalog
        .reader()
        .audit_page(namespace.unwrap_or(""), after, n, &filter)?;
    let doc = json!({ "namespace": namespace, "events": page.events.iter().map(|e| json!({
        "time_ms": e.time_ms, "node": e.node, "actor": e.actor, "namespace": e.scope,
        "action": e.action, "target": e.target, "status": e.status, "source": e.source,
    })).collect::<Vec<_>>(), "next": page.next });
    let bytes = doc.to_string();
    let mut reply = Reply::new(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Content-Length", bytes.len());
    if let Some(next) = &page.next {
        let mut query: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| k != "after")
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        query.push(format!("after={next}"));
        reply = reply.header("Link", format!("</api/v1/audit?{}>; rel=\"next\"", query.join("&")));
    }
    Ok(reply.body(body::full(bytes)))
}
