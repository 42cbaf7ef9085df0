//! Webhooks on the node: the origin of the events a request causes, the pull events this node
//! served (sent to the catalog in numbered batches, like pull counts), and the leader's delivery
//! of every endpoint's queue ([`deliver`]). The queues themselves are catalog state
//! (`keelson_raft::webhooks`), so what is queued survives restarts and leader changes.
//!
//! Pulls are the only events born here: a manifest GET costs one read lock when no endpoint of
//! the tenancy wants pulls. Which tenancies do is read from the catalog by the node's webhook
//! task (about every second), so an endpoint created a moment ago may miss the pulls of that
//! moment; pull events a node served in its last flush interval die with it if it crashes.

pub mod deliver;
pub mod envelope;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use http::Request;
use keelson_raft::webhooks::{EventKind, EventOrigin, WebhookEvent, MAX_EVENTS_PER_ENTRY};
use keelson_raft::CatalogCommand;

use crate::access::Cx;
use crate::numbered::NumberedBatches;
use crate::registry::Registry;

/// Pull events one node holds between flushes; past it new ones are counted as dropped.
const MAX_PENDING_PULLS: usize = 20_000;

#[derive(Default)]
pub struct Webhooks {
    /// Tenancies with an enabled endpoint that wants pulls.
    pull_tenancies: RwLock<Arc<HashSet<String>>>,
    pulls: Mutex<Vec<WebhookEvent>>,
    dropped: AtomicU64,
    batches: NumberedBatches<WebhookEvent>,
    /// Endpoints this node is delivering to right now (`ns`, `name`).
    in_flight: Mutex<HashSet<(String, String)>>,
    /// The client deliveries use (made on first use).
    transport: std::sync::OnceLock<crate::outbound::Transport>,
}

impl Webhooks {
    /// Notes a manifest GET of `digest` (stored as `record`) in `repo`, by `tag` when it was
    /// asked by tag.
    pub fn note_pull<B>(
        &self,
        cx: &Cx<'_>,
        req: &Request<B>,
        repo: &str,
        tag: Option<&str>,
        digest: &str,
        record: &keelson_raft::ManifestRecord,
    ) {
        let ns = keelson_raft::lifecycle::tenancy_of(repo);
        if !self
            .pull_tenancies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(ns)
        {
            return;
        }
        let event = WebhookEvent {
            id: 0,
            kind: EventKind::Pull,
            repository: repo.to_string(),
            digest: digest.to_string(),
            media_type: record.media_type.clone(),
            size: record.body.len() as u64,
            tag: tag.map(str::to_string),
            origin: origin(cx, req),
        }
        .bounded();
        let mut pulls = self.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if pulls.len() >= MAX_PENDING_PULLS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pulls.push(event);
    }

    /// Pull events dropped because no flush succeeded for a long time.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn take(&self) -> Vec<WebhookEvent> {
        std::mem::take(&mut *self.pulls.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads again which tenancies want pull events.
    pub fn refresh(&self, reg: &Registry) {
        let Ok(all) = reg.catalog.reader().all_webhooks() else {
            return;
        };
        let wanted: HashSet<String> = all
            .into_iter()
            .filter(|v| v.endpoint.enabled && v.endpoint.events.contains(&EventKind::Pull))
            .map(|v| v.ns)
            .collect();
        *self.pull_tenancies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(wanted);
    }

    fn transport(&self, reg: &Registry) -> Option<&crate::outbound::Transport> {
        if self.transport.get().is_none() {
            match crate::outbound::Transport::new(None, reg.dialer.as_ref()) {
                Ok(t) => {
                    let _ = self.transport.set(t);
                }
                Err(e) => tracing::warn!(error = %e, "no client for webhook deliveries"),
            }
        }
        self.transport.get()
    }
}

/// Who caused an event and through which request.
pub fn origin<B>(cx: &Cx<'_>, req: &Request<B>) -> EventOrigin {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let host = match req.uri().authority() {
        Some(a) => a.to_string(),
        None => header("host"),
    };
    EventOrigin {
        actor: match &cx.caller.principal {
            crate::auth::Principal::Anonymous => "anonymous".to_string(),
            p => p.subject(),
        },
        addr: cx.caller.remote.map(|ip| ip.to_string()).unwrap_or_default(),
        host,
        scheme: if cx.tls { "https" } else { "http" }.to_string(),
        method: req.method().to_string(),
        user_agent: header("user-agent"),
        request_id: header("x-request-id"),
        node: cx.catalog.node_id(),
        time_ms: cx.clock.now_ms(),
    }
    .bounded()
}

/// `cmd` with the origin of the request that asked for it: applying it queues its events.
pub fn attributed<B>(cx: &Cx<'_>, req: &Request<B>, cmd: CatalogCommand) -> CatalogCommand {
    CatalogCommand::Attributed {
        origin: origin(cx, req),
        then: Box::new(cmd),
    }
}

/// Sends this node's pull events to the catalog (see [`crate::numbered::flush`]).
pub async fn flush(reg: &Registry) -> usize {
    let node = reg.catalog.node_id();
    let applied = reg.catalog.reader().webhook_pull_seq(node).unwrap_or(0);
    crate::numbered::flush(
        reg,
        "webhook pull events",
        &reg.webhooks.batches,
        applied,
        MAX_EVENTS_PER_ENTRY,
        || reg.webhooks.take(),
        |seq, events| {
            CatalogCommand::Webhooks(keelson_raft::webhooks::WebhookCommand::RecordPulls { node, seq, events })
        },
    )
    .await
}

/// One round of the node's webhook task: which tenancies want pulls, this node's pull events
/// to the catalog, and (on the leader) a delivery to every endpoint that is due.
pub async fn tick(reg: &Arc<Registry>) {
    reg.webhooks.refresh(reg);
    flush(reg).await;
    deliver::start_due(reg);
}
