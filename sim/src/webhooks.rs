//! Webhooks under faults. Right after formation the admin gives the clients' tenancy an
//! endpoint on the `hooks` host (a real HTTP server on the simulated network) subscribed to
//! pushes; the leader delivers while the clients push and the faults partition, crash and skew
//! the nodes (and cut the receiver off). The receiver checks every delivery's HMAC signature.
//!
//! After healing, the verifier replaces the endpoint (which retries it at once, whatever its
//! back-off) and checks that every manifest PUT a client saw acknowledged after the endpoint
//! existed arrived as a `push` event with its repository, tag and digest: an event is committed
//! with its change, so no acknowledged push's event may be lost to a crash or a leader change.
//! Events delivered more than once (a leader that died before committing a delivery) are
//! counted, not failed: delivery is at least once.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use keelson_api::webhooks::envelope;
use serde_json::{json, Value};

use crate::cluster::NodeSpec;
use crate::history::{now_ms, Shared};
use crate::retention::TENANCY;

/// The receiver's host and port.
pub const HOOKS_HOST: &str = "hooks";
const HOOKS_PORT: u16 = 8080;
const SECRET: &str = "sim-webhook-secret";
/// How long after healing every expected event has to arrive.
const DELIVER_WITHIN_MS: u64 = 120_000;

/// One event as received: action, repository, tag and digest.
pub type Received = (String, String, Option<String>, String);

/// What the receiver got, and since when events are owed.
#[derive(Default)]
pub struct Seen {
    /// Events by id: (action, repository, tag, digest).
    pub events: RefCell<BTreeMap<String, Received>>,
    pub deliveries: Cell<u64>,
    pub repeated: Cell<u64>,
    /// Sim time the endpoint was acknowledged: pushes called after it owe an event.
    pub since_ms: Cell<Option<u64>>,
}

fn endpoint_body() -> Value {
    json!({
        "url": format!("http://{HOOKS_HOST}:{HOOKS_PORT}/events"),
        "events": ["push", "delete", "retention"],
        "secret": SECRET,
    })
}

/// Creates (or replaces) the endpoint through any node, retried through the faults.
async fn put_endpoint(shared: &Shared, nodes: &[NodeSpec], what: &str) -> bool {
    let path = format!("/api/v1/tenancies/{TENANCY}/webhooks/hooks");
    let body = endpoint_body().to_string();
    let label = format!("webhook {what}");
    if crate::cluster::manage_until_done(shared, nodes, Method::PUT, &path, &body, &label).await {
        return true;
    }
    shared.fail("webhook_endpoint", format!("the webhook endpoint was never {what}"));
    false
}

/// The admin's part: the endpoint exists from here on.
pub async fn register(shared: &Shared, nodes: &[NodeSpec]) {
    if put_endpoint(shared, nodes, "created").await {
        shared.webhooks.since_ms.set(Some(now_ms()));
    }
}

/// The receiver host: answers every POST 200 after recording its events; a delivery whose
/// signature is wrong fails the run.
pub async fn receiver(shared: Rc<Shared>) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, HOOKS_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(receive(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn receive(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let signature = req
        .headers()
        .get(envelope::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return answer(400);
    };
    if signature.as_deref() != Some(envelope::signature(SECRET.as_bytes(), &body).as_str()) {
        shared.fail(
            "webhook_signature",
            format!("a delivery signed {signature:?} does not match its body"),
        );
        return answer(400);
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        shared.fail("webhook_envelope", "a delivery is not JSON");
        return answer(400);
    };
    let seen = &shared.webhooks;
    seen.deliveries.set(seen.deliveries.get() + 1);
    for e in parsed["events"].as_array().into_iter().flatten() {
        let id = e["id"].as_str().unwrap_or_default().to_string();
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let entry = (
            text(&e["action"]),
            text(&e["target"]["repository"]),
            e["target"]["tag"].as_str().map(str::to_string),
            text(&e["target"]["digest"]),
        );
        shared.trace(
            now_ms(),
            format!("hooks got {id} {} {}:{:?}", entry.0, entry.1, entry.2),
        );
        if seen.events.borrow_mut().insert(id, entry).is_some() {
            seen.repeated.set(seen.repeated.get() + 1);
        }
    }
    answer(200)
}

fn answer(status: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    r
}

/// After healing: every acknowledged push since the endpoint existed arrives as an event.
pub async fn check(shared: &Shared, nodes: &[NodeSpec]) {
    let Some(since) = shared.webhooks.since_ms.get() else {
        return; // registering already failed the run
    };
    if !put_endpoint(shared, nodes, "replaced").await {
        return;
    }
    let owed: BTreeSet<(String, String, String)> = shared
        .touches
        .borrow()
        .iter()
        .filter(|t| t.call_ms > since)
        .map(|t| (t.repo.clone(), t.tag.clone(), t.digest.clone()))
        .collect();
    let deadline = now_ms() + DELIVER_WITHIN_MS;
    let missing = loop {
        let got: BTreeSet<(String, String, String)> = shared
            .webhooks
            .events
            .borrow()
            .values()
            .filter(|(action, ..)| action == "push")
            .filter_map(|(_, repo, tag, digest)| Some((repo.clone(), tag.clone()?, digest.clone())))
            .collect();
        let missing: Vec<_> = owed.difference(&got).cloned().collect();
        if missing.is_empty() || now_ms() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    };
    shared.count("webhook.pushes_owed", owed.len() as u64);
    shared.count("webhook.deliveries", shared.webhooks.deliveries.get());
    shared.count("webhook.events_repeated", shared.webhooks.repeated.get());
    if !missing.is_empty() {
        shared.fail(
            "webhook_events_delivered",
            format!(
                "{} acknowledged pushes never arrived as events, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(3)]
            ),
        );
    }
    shared.trace(now_ms(), format!("verify: {} owed push events delivered", owed.len()));
}
