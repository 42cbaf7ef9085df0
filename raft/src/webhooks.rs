//! Webhooks in the catalog: per-tenancy endpoints, the queue of events each one has yet to
//! receive, and what delivering them did.
//!
//! Events are born where the change is committed. A manifest push, a manifest or tag deletion
//! made through the API carries its origin (`CatalogCommand::Attributed`), and applying it
//! appends one event to the queue of every endpoint of the tenancy that subscribed, in the same
//! write as the change; retention deletions do the same. So the event of an acknowledged push
//! is exactly as durable as the push, and queues survive restarts and leader changes. Pulls are
//! not catalog writes: the nodes that served them send them in numbered batches
//! (`RecordPulls`, applied once per number, like pull counts and audit events).
//!
//! The leader delivers (`keelson_api::webhooks`) and commits each outcome: `Delivered` drops
//! what the endpoint acknowledged, `Failed` records the attempt and when to try again. A
//! leader that dies between a delivery and its commit leaves the events queued, and the next
//! leader sends them again: delivery is at least once, and events carry stable ids.
//!
//! Keys (`lifecycle` family), namespaces and endpoint names hold no NUL:
//! - `whk\0<ns>\0<name>` → [`WebhookEndpoint`]
//! - `whs\0<ns>\0<name>` → [`EndpointState`]
//! - `whq\0<ns>\0<name>\0<seq, big-endian>` → [`WebhookEvent`]
//! - `whseq\0<node>` → the last pull-event batch applied from a node
//! - `whid` → the last event id given

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// Endpoints one tenancy may have.
pub const MAX_ENDPOINTS_PER_TENANCY: usize = 20;
/// Events one endpoint's queue holds; past it the oldest are dropped (and counted).
pub const MAX_QUEUED_PER_ENDPOINT: u64 = 10_000;
/// Pull events one `RecordPulls` entry carries (a node splits bigger flushes).
pub const MAX_EVENTS_PER_ENTRY: usize = 500;
/// Delivery attempts kept per endpoint (newest last).
pub const MAX_ATTEMPTS_KEPT: usize = 20;
/// Longest endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Repository prefixes one endpoint may filter on.
pub const MAX_PREFIXES: usize = 20;
/// Longest text kept in one field of an event or attempt (longer text is cut).
pub const MAX_FIELD_LEN: usize = 512;
/// Longest secret.
pub const MAX_SECRET_LEN: usize = 256;

/// What an endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A manifest was pushed (by digest or by tag).
    Push,
    /// A manifest was pulled (GET).
    Pull,
    /// A manifest or a tag was deleted through the API.
    Delete,
    /// A tag was set to a manifest (a push by tag).
    Tag,
    /// A retention policy deleted an image.
    Retention,
    /// A test event asked for through the API (every endpoint receives its own).
    Ping,
}

impl EventKind {
    pub const SUBSCRIBABLE: [EventKind; 5] = [
        EventKind::Push,
        EventKind::Pull,
        EventKind::Delete,
        EventKind::Tag,
        EventKind::Retention,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::Pull => "pull",
            EventKind::Delete => "delete",
            EventKind::Tag => "tag",
            EventKind::Retention => "retention",
            EventKind::Ping => "ping",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::SUBSCRIBABLE.into_iter().find(|k| k.name() == name)
    }

    /// The `action` of CNCF distribution's envelope: a retention deletion is a `delete` there
    /// (its actor names the policy), so tools written for distribution see it as one.
    pub fn action(self) -> &'static str {
        match self {
            EventKind::Retention => "delete",
            other => other.name(),
        }
    }
}

/// One endpoint, as its tenancy's administrator set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// `http://` or `https://`.
    pub url: String,
    /// Sorted, without duplicates.
    pub events: Vec<EventKind>,
    /// Repository names (with the namespace) or prefixes ending in `/`; empty: every
    /// repository of the tenancy.
    pub repositories: Vec<String>,
    /// The HMAC key, sealed under the cluster master key when encryption at rest is on.
    pub secret: Vec<u8>,
    pub enabled: bool,
    pub created_ms: u64,
}

impl WebhookEndpoint {
    /// Whether an event of `kind` in `repo` goes to this endpoint.
    pub fn wants(&self, kind: EventKind, repo: &str) -> bool {
        self.enabled
            && self.events.contains(&kind)
            && (self.repositories.is_empty()
                || self.repositories.iter().any(|r| {
                    if r.ends_with('/') {
                        repo.starts_with(r.as_str())
                    } else {
                        repo == r
                    }
                }))
    }

    /// The checks apply repeats whatever the API checked: bounded, well-formed, in `ns`.
    pub fn invalid(&self, ns: &str) -> Option<String> {
        if self.url.len() > MAX_URL_LEN || !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Some(format!(
                "a webhook URL is http:// or https:// and at most {MAX_URL_LEN} bytes"
            ));
        }
        if self.events.is_empty() || self.events.contains(&EventKind::Ping) {
            return Some("a webhook subscribes to push, pull, delete, tag or retention events".into());
        }
        if self.repositories.len() > MAX_PREFIXES
            || self
                .repositories
                .iter()
                .any(|r| r.len() > MAX_FIELD_LEN || !r.starts_with(&format!("{ns}/")))
        {
            return Some(format!(
                "at most {MAX_PREFIXES} repositories or prefixes, each in tenancy {ns}"
            ));
        }
        if self.secret.is_empty() || self.secret.len() > MAX_SECRET_LEN + 128 {
            return Some(format!("a webhook secret has 1 to {MAX_SECRET_LEN} bytes"));
        }
        None
    }
}

/// Where an endpoint's queue stands and what its last deliveries did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// The number the next queued event gets.
    pub next_seq: u64,
    /// The oldest event not yet delivered (`next_seq` when the queue is empty).
    pub head_seq: u64,
    pub delivered: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Failed attempts since the last delivery.
    pub failures: u32,
    /// No attempt before this time (registry clock), after a failure.
    pub next_attempt_ms: u64,
    /// The last attempts, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

impl EndpointState {
    pub fn queued(&self) -> u64 {
        self.next_seq.saturating_sub(self.head_seq)
    }

    pub(crate) fn remember(&mut self, attempt: DeliveryAttempt) {
        self.attempts.push(attempt.bounded());
        if self.attempts.len() > MAX_ATTEMPTS_KEPT {
            let extra = self.attempts.len() - MAX_ATTEMPTS_KEPT;
            self.attempts.drain(..extra);
        }
    }
}

/// One POST to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    pub at_ms: u64,
    /// The node that sent it.
    pub node: NodeId,
    /// The queue numbers of the first and last event it carried.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The endpoint's answer, when it answered.
    pub status: Option<u16>,
    /// Why it failed (no answer, a refusal), when it did.
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl DeliveryAttempt {
    fn bounded(mut self) -> DeliveryAttempt {
        if let Some(e) = &mut self.error {
            cut(e);
        }
        self
    }
}

/// Who caused an event and through which request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventOrigin {
    /// `<namespace>/<user>`, `keelson/admin`, `anonymous`, `retention/<policy>`.
    pub actor: String,
    /// The client's address.
    pub addr: String,
    /// The Host the client asked for (the registry's public name).
    pub host: String,
    /// `http` or `https`, as the client reached the registry.
    pub scheme: String,
    pub method: String,
    pub user_agent: String,
    pub request_id: String,
    /// The node that answered.
    pub node: NodeId,
    pub time_ms: u64,
}

impl EventOrigin {
    pub fn bounded(mut self) -> EventOrigin {
        for field in [
            &mut self.actor,
            &mut self.addr,
            &mut self.host,
            &mut self.scheme,
            &mut self.method,
            &mut self.user_agent,
            &mut self.request_id,
        ] {
            cut(field);
        }
        self
    }
}

/// One event on its way to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Unique in the cluster (the same for every endpoint that receives it).
    pub id: u64,
    pub kind: EventKind,
    pub repository: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub tag: Option<String>,
    pub origin: EventOrigin,
}

impl WebhookEvent {
    pub fn bounded(mut self) -> WebhookEvent {
        for field in [&mut self.repository, &mut self.digest, &mut self.media_type] {
            cut(field);
        }
        if let Some(tag) = &mut self.tag {
            cut(tag);
        }
        self.origin = self.origin.bounded();
        self
    }
}

/// Cuts `field` to [`MAX_FIELD_LEN`] bytes on a character boundary.
fn cut(field: &mut String) {
    if field.len() > MAX_FIELD_LEN {
        let mut at = MAX_FIELD_LEN;
        while !field.is_char_boundary(at) {
            at -= 1;
        }
        field.truncate(at);
    }
}

/// A change to webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookCommand {
    /// Creates or replaces an endpoint (a replaced one keeps its queue and is tried again at
    /// once, whatever its back-off).
    Put {
        ns: String,
        name: String,
        endpoint: WebhookEndpoint,
    },
    /// Removes an endpoint with its queue.
    Delete { ns: String, name: String },
    /// Queues a ping event for one endpoint.
    Ping {
        ns: String,
        name: String,
        origin: EventOrigin,
    },
    /// Pull events node `node` served since its last flush (at most [`MAX_EVENTS_PER_ENTRY`]);
    /// a `seq` not above the node's last applied one is a retry and changes nothing.
    RecordPulls {
        node: NodeId,
        seq: u64,
        events: Vec<WebhookEvent>,
    },
    /// The endpoint acknowledged every event up to `through_seq`.
    Delivered {
        ns: String,
        name: String,
        through_seq: u64,
        attempt: DeliveryAttempt,
    },
    /// An attempt failed; the next one waits until `next_attempt_ms`.
    Failed {
        ns: String,
        name: String,
        attempt: DeliveryAttempt,
        next_attempt_ms: u64,
    },
    /// Secrets sealed anew under the active master key; each replaces the stored bytes only
    /// while they still hash to `was_sha256`.
    ResealSecrets { secrets: Vec<ResealedWebhookSecret> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealedWebhookSecret {
    pub ns: String,
    pub name: String,
    pub was_sha256: [u8; 32],
    pub sealed: Vec<u8>,
}

pub(crate) const ENDPOINT_PREFIX: &[u8] = b"whk\0";
pub(crate) const STATE_PREFIX: &[u8] = b"whs\0";
const QUEUE_PREFIX: &[u8] = b"whq\0";
pub(crate) const LAST_ID_KEY: &[u8] = b"whid";

fn key(prefix: &[u8], parts: &[&str]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// The prefix of a tenancy's endpoints (with the separator after the namespace).
pub(crate) fn endpoints_prefix(ns: &str) -> Vec<u8> {
    let mut k = key(ENDPOINT_PREFIX, &[ns]);
    k.push(0);
    k
}

pub(crate) fn endpoint_key(ns: &str, name: &str) -> Vec<u8> {
    key(ENDPOINT_PREFIX, &[ns, name])
}

pub(crate) fn state_key(ns: &str, name: &str) -> Vec<u8> {
    key(STATE_PREFIX, &[ns, name])
}

/// The prefix of one endpoint's queue.
pub(crate) fn queue_prefix(ns: &str, name: &str) -> Vec<u8> {
    let mut k = key(QUEUE_PREFIX, &[ns, name]);
    k.push(0);
    k
}

pub(crate) fn queue_key(ns: &str, name: &str, seq: u64) -> Vec<u8> {
    let mut k = queue_prefix(ns, name);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn seq_key(node: NodeId) -> Vec<u8> {
    let mut k = b"whseq\0".to_vec();
    k.extend_from_slice(&node.to_be_bytes());
    k
}

/// Splits a `<ns>\0<name>` key suffix.
pub(crate) fn split_name(suffix: &[u8]) -> Option<(String, String)> {
    let at = suffix.iter().position(|b| *b == 0)?;
    let ns = std::str::from_utf8(&suffix[..at]).ok()?;
    let name = std::str::from_utf8(&suffix[at + 1..]).ok()?;
    Some((ns.to_string(), name.to_string()))
}

/// An endpoint with where its queue stands, as the catalog answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub ns: String,
    pub name: String,
    pub endpoint: WebhookEndpoint,
    pub state: EndpointState,
}

/// A valid endpoint name: 1 to 64 of `a-z 0-9 - _ .`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(repos: &[&str]) -> WebhookEndpoint {
        WebhookEndpoint {
            url: "http://hooks.test/x".into(),
            events: vec![EventKind::Push],
            repositories: repos.iter().map(|s| s.to_string()).collect(),
            secret: b"s".to_vec(),
            enabled: true,
            created_ms: 0,
        }
    }

    #[test]
    fn an_endpoint_wants_its_kinds_in_its_repositories() {
        let all = endpoint(&[]);
        assert!(all.wants(EventKind::Push, "acme/app"));
        assert!(!all.wants(EventKind::Pull, "acme/app"));
        let some = endpoint(&["acme/team/", "acme/app"]);
        assert!(some.wants(EventKind::Push, "acme/team/x"));
        assert!(some.wants(EventKind::Push, "acme/app"));
        assert!(!some.wants(EventKind::Push, "acme/app2"));
        assert!(!some.wants(EventKind::Push, "acme/teamx"));
        let mut off = endpoint(&[]);
        off.enabled = false;
        assert!(!off.wants(EventKind::Push, "acme/app"));
    }

    #[test]
    fn endpoints_are_checked_against_their_tenancy() {
        assert_eq!(endpoint(&["acme/app"]).invalid("acme"), None);
        assert!(endpoint(&["other/app"]).invalid("acme").is_some());
        let mut ftp = endpoint(&[]);
        ftp.url = "ftp://x".into();
        assert!(ftp.invalid("acme").is_some());
        let mut none = endpoint(&[]);
        none.events.clear();
        assert!(none.invalid("acme").is_some());
    }

    #[test]
    fn queue_keys_sort_by_number() {
        assert!(queue_key("a", "b", 255) < queue_key("a", "b", 256));
        assert!(queue_key("a", "b", 1).starts_with(&queue_prefix("a", "b")));
        assert!(!queue_key("a", "bc", 1).starts_with(&queue_prefix("a", "b")));
        assert_eq!(split_name(b"acme\0hook"), Some(("acme".into(), "hook".into())));
    }

    #[test]
    fn attempts_kept_are_bounded() {
        let mut state = EndpointState::default();
        for i in 0..(MAX_ATTEMPTS_KEPT as u64 + 5) {
            state.remember(DeliveryAttempt {
                at_ms: i,
                node: 1,
                first_seq: i,
                last_seq: i,
                status: None,
                error: Some("x".repeat(2000)),
                duration_ms: 0,
            });
        }
        assert_eq!(state.attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(state.attempts[0].at_ms, 5);
        assert!(state.attempts[0]
            .error
            .as_ref()
            .is_some_and(|e| e.len() == MAX_FIELD_LEN));
    }
}
