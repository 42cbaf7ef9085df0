//! The leader's delivery of webhook queues. Each endpoint has at most one delivery in flight
//! (its events arrive in order); endpoints are delivered to independently, so a slow or dead one
//! delays no other. A delivery POSTs the oldest queued events (at most [`BATCH_EVENTS`], about
//! [`BATCH_BYTES`]) and commits what happened: `Delivered` (a 2xx answer) drops them from the
//! queue, `Failed` records the attempt and backs the endpoint off exponentially, on the
//! registry's clock, up to [`MAX_BACKOFF_MS`].
//!
//! A leader that dies after the POST and before the commit leaves the events queued; the next
//! leader sends them again (at least once; event ids let a receiver drop repeats). Within one
//! run of attempts no event is sent twice: a batch is taken from the queue's head only after the
//! previous one's outcome is committed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request};
use keelson_raft::webhooks::{DeliveryAttempt, EndpointView, WebhookCommand};
use keelson_raft::{CatalogCommand, CatalogResponse};

use super::envelope;
use crate::registry::Registry;

/// Most events one POST carries.
pub const BATCH_EVENTS: usize = 100;
/// About the most bytes of events one POST carries.
pub const BATCH_BYTES: usize = 1 << 20;
/// The longest wait for an endpoint's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// The first wait after a failure; each further failure doubles it.
const FIRST_BACKOFF_MS: u64 = 2_000;
pub const MAX_BACKOFF_MS: u64 = 300_000;

/// How long to wait after `failures` failed attempts in a row.
pub fn backoff_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(20);
    FIRST_BACKOFF_MS.saturating_mul(1u64 << doublings).min(MAX_BACKOFF_MS)
}

/// On the leader, starts a delivery to every endpoint that has events, is enabled, is not
/// backing off and has none in flight.
pub fn start_due(reg: &Arc<Registry>) {
    if !reg.catalog.is_leader() {
        return;
    }
    let Ok(endpoints) = reg.catalog.reader().all_webhooks() else {
        return;
    };
    let now = reg.clock.now_ms();
    for view in endpoints {
        if !view.endpoint.enabled || view.state.queued() == 0 || view.state.next_attempt_ms > now {
            continue;
        }
        let key = (view.ns.clone(), view.name.clone());
        if !reg
            .webhooks
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            continue;
        }
        let reg = reg.clone();
        tokio::spawn(async move {
            deliver(&reg, &view).await;
            reg.webhooks
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        });
    }
}

/// One POST of the endpoint's oldest events and the commit of its outcome.
async fn deliver(reg: &Registry, view: &EndpointView) {
    let (ns, name) = (&view.ns, &view.name);
    let events = match reg.catalog.reader().webhook_queue(ns, name, BATCH_EVENTS, BATCH_BYTES) {
        Ok(events) if !events.is_empty() => events,
        _ => return,
    };
    let first_seq = events.first().map_or(0, |(seq, _)| *seq);
    let last_seq = events.last().map_or(0, |(seq, _)| *seq);
    let events: Vec<_> = events.into_iter().map(|(_, e)| e).collect();
    let node = reg.catalog.node_id();
    let body = envelope::envelope(&events, &reg.self_node.api_addr, &format!("keelson-node-{node}"));
    let started_ms = reg.clock.now_ms();
    let started = Instant::now();
    let outcome = post(reg, view, &body, first_seq, last_seq).await;
    let mut attempt = DeliveryAttempt {
        at_ms: started_ms,
        node,
        first_seq,
        last_seq,
        status: None,
        error: None,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let cmd = match outcome {
        Ok(status) if (200..300).contains(&status) => {
            attempt.status = Some(status);
            WebhookCommand::Delivered {
                ns: ns.clone(),
                name: name.clone(),
                through_seq: last_seq,
                attempt,
            }
        }
        failed => {
            match failed {
                Ok(status) => {
                    attempt.status = Some(status);
                    attempt.error = Some(format!("the endpoint answered {status}"));
                }
                Err(e) => attempt.error = Some(e),
            }
            tracing::debug!(%ns, %name, error = ?attempt.error, "webhook delivery failed");
            WebhookCommand::Failed {
                ns: ns.clone(),
                name: name.clone(),
                attempt,
                next_attempt_ms: reg
                    .clock
                    .now_ms()
                    .saturating_add(backoff_ms(view.state.failures.saturating_add(1))),
            }
        }
    };
    match reg.catalog.propose(CatalogCommand::Webhooks(cmd)).await {
        Ok(CatalogResponse::Applied) => {}
        Ok(CatalogResponse::Rejected(r)) => tracing::warn!(%ns, %name, reason = %r, "webhook outcome refused"),
        // Not committed: the events stay queued and go out again.
        Err(e) => tracing::debug!(%ns, %name, error = %e, "webhook outcome not committed"),
    }
}

/// POSTs `body`; the endpoint's status, or why there was none.
async fn post(reg: &Registry, view: &EndpointView, body: &[u8], first_seq: u64, last_seq: u64) -> Result<u16, String> {
    let secret = keelson_storage::at_rest::keys::open_secret(reg.store.master_keys().as_deref(), &view.endpoint.secret)
        .map_err(|_| "the endpoint's secret cannot be opened (is the master key missing?)".to_string())?;
    let transport = reg
        .webhooks
        .transport(reg)
        .ok_or_else(|| "no HTTP client for webhooks".to_string())?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(&view.endpoint.url)
        .header("content-type", envelope::MEDIA_TYPE)
        .header("user-agent", concat!("keelson/", env!("CARGO_PKG_VERSION")))
        .header(envelope::SIGNATURE_HEADER, envelope::signature(&secret, body))
        .header(
            envelope::DELIVERY_HEADER,
            format!("{}/{}/{first_seq}-{last_seq}", view.ns, view.name),
        )
        .body(crate::body::full(body.to_vec()))
        .map_err(|e| format!("cannot make a request to {}: {e}", view.endpoint.url))?;
    let response = transport.send(request, ANSWER_WITHIN).await?;
    Ok(response.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        assert_eq!(backoff_ms(0), 2_000);
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(2), 4_000);
        assert_eq!(backoff_ms(5), 32_000);
        assert_eq!(backoff_ms(9), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }
}
