//! `/api/v1/tenancies/<ns>/webhooks…`: a tenancy's webhook endpoints, managed by the tenancy's
//! administrators. An endpoint names a URL, the events it wants (push, pull, delete, tag,
//! retention), optionally the repositories (names, or prefixes ending in `/`), and a secret
//! the deliveries are signed with: given, or made here and answered once. Reading an endpoint
//! shows its queue and its last delivery attempts.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use keelson_raft::webhooks::{self as hooks, EndpointView, EventKind, WebhookCommand, WebhookEndpoint};
use keelson_raft::CatalogCommand;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bad_request, commit, json_reply, ok, read_json};
use crate::access::{self, Cx};
use crate::body::Body;
use crate::error::{ApiError, ErrorCode};

/// What `PUT …/webhooks/<name>` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub repositories: Vec<String>,
    /// The HMAC key; kept as it was when absent (made anew for a new endpoint).
    pub secret: Option<String>,
    pub enabled: Option<bool>,
}

/// Dispatches `/api/v1/tenancies/<ns>/webhooks/<rest…>`.
pub async fn route(cx: &Cx<'_>, ns: &str, rest: &[&str], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    access::administer_tenancy(cx, ns)?;
    let method = req.method().clone();
    let reader = cx.catalog.reader();
    match (&method, rest) {
        (&Method::GET, []) => {
            let endpoints: Vec<Value> = reader.webhooks(ns)?.iter().map(|v| view_json(v, false)).collect();
            ok(json!({ "webhooks": endpoints }))
        }
        (&Method::GET, [name]) => match reader.webhook(ns, name)? {
            Some(view) => ok(view_json(&view, true)),
            None => Err(unknown(name)),
        },
        (&Method::PUT, [name]) => {
            if !hooks::valid_name(name) {
                return Err(bad_request(format!(
                    "{name:?} is not a webhook name (1 to 64 of a-z 0-9 - _ .)"
                )));
            }
            let origin = crate::webhooks::origin(cx, &req);
            let body: EndpointBody = read_json(req).await?;
            let existing = reader.webhook(ns, name)?;
            let (endpoint, made_secret) = endpoint_of(cx, ns, body, existing.as_ref(), origin.time_ms)?;
            commit(
                cx,
                CatalogCommand::Webhooks(WebhookCommand::Put {
                    ns: ns.to_string(),
                    name: name.to_string(),
                    endpoint,
                }),
            )
            .await?;
            let view = reader.webhook(ns, name)?.ok_or_else(|| unknown(name))?;
            let mut answer = view_json(&view, false);
            if let Some(secret) = made_secret {
                answer["secret"] = json!(secret);
            }
            let status = if existing.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_reply(status, &answer))
        }
        (&Method::DELETE, [name]) => {
            if reader.webhook(ns, name)?.is_none() {
                return Err(unknown(name));
            }
            commit(
                cx,
                CatalogCommand::Webhooks(WebhookCommand::Delete {
                    ns: ns.to_string(),
                    name: name.to_string(),
                }),
            )
            .await?;
            ok(json!({ "deleted": name }))
        }
        (&Method::POST, [name, "ping"]) => {
            if reader.webhook(ns, name)?.is_none() {
                return Err(unknown(name));
            }
            let origin = crate::webhooks::origin(cx, &req);
            commit(
                cx,
                CatalogCommand::Webhooks(WebhookCommand::Ping {
                    ns: ns.to_string(),
                    name: name.to_string(),
                    origin,
                }),
            )
            .await?;
            Ok(json_reply(StatusCode::ACCEPTED, &json!({ "queued": "ping" })))
        }
        _ => Err(ApiError::no_route()),
    }
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no webhook {name}"))
}

/// The endpoint a PUT asks for, checked; and the secret made for it, when one was.
fn endpoint_of(
    cx: &Cx<'_>,
    ns: &str,
    body: EndpointBody,
    existing: Option<&EndpointView>,
    now_ms: u64,
) -> Result<(WebhookEndpoint, Option<String>), ApiError> {
    let uri: http::Uri = body
        .url
        .parse()
        .map_err(|_| bad_request(format!("{:?} is not a URL", body.url)))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(bad_request("a webhook URL is http:// or https:// with a host"));
    }
    let mut events = Vec::with_capacity(body.events.len());
    for name in &body.events {
        let kind = EventKind::parse(name)
            .ok_or_else(|| bad_request(format!("unknown event {name:?}: push, pull, delete, tag or retention")))?;
        events.push(kind);
    }
    events.sort();
    events.dedup();
    let (secret, made) = match (body.secret, existing) {
        (Some(s), _) if s.is_empty() || s.len() > hooks::MAX_SECRET_LEN => {
            return Err(bad_request(format!(
                "a webhook secret has 1 to {} bytes",
                hooks::MAX_SECRET_LEN
            )))
        }
        (Some(s), _) => (cx.keep_secret(s.as_bytes()), None),
        (None, Some(view)) => (view.endpoint.secret.clone(), None),
        (None, None) => {
            let made = hex::encode(rand::random::<[u8; 32]>());
            (cx.keep_secret(made.as_bytes()), Some(made))
        }
    };
    let endpoint = WebhookEndpoint {
        url: body.url,
        events,
        repositories: body.repositories,
        secret,
        enabled: body.enabled.unwrap_or(true),
        created_ms: existing.map_or(now_ms, |v| v.endpoint.created_ms),
    };
    if let Some(why) = endpoint.invalid(ns) {
        return Err(bad_request(why));
    }
    Ok((endpoint, made))
}

/// An endpoint as the API shows it (never its secret); with its last attempts when `detail`.
fn view_json(view: &EndpointView, detail: bool) -> Value {
    let (e, s) = (&view.endpoint, &view.state);
    let mut answer = json!({
        "name": view.name,
        "url": e.url,
        "events": e.events.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "repositories": e.repositories,
        "enabled": e.enabled,
        "created_ms": e.created_ms,
        "queued": s.queued(),
        "delivered": s.delivered,
        "dropped": s.dropped,
        "failures": s.failures,
        "next_attempt_ms": s.next_attempt_ms,
    });
    if detail {
        answer["attempts"] = s
            .attempts
            .iter()
            .rev()
            .map(|a| {
                json!({
                    "at_ms": a.at_ms,
                    "node": a.node,
                    "first_seq": a.first_seq,
                    "last_seq": a.last_seq,
                    "events": a.last_seq.saturating_sub(a.first_seq).saturating_add(1),
                    "status": a.status,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                })
            })
            .collect();
    }
    answer
}
