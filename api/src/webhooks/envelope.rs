//! What an endpoint receives: CNCF distribution's notification envelope
//! (`application/vnd.docker.distribution.events.v1+json`, `{"events":[…]}`), so tools written
//! for distribution's notifications work unchanged, signed with the endpoint's secret.
//!
//! The signature is `X-Keelson-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>` over the
//! exact bytes sent, GitHub's scheme: a receiver recomputes it over the body it read and compares
//! in constant time.

use hmac::{Hmac, Mac};
use keelson_raft::webhooks::{EventKind, WebhookEvent};
use serde_json::{json, Value};
use sha2::Sha256;

pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
pub const SIGNATURE_HEADER: &str = "x-keelson-signature-256";
pub const DELIVERY_HEADER: &str = "x-keelson-delivery";

/// The body of one delivery.
pub fn envelope(events: &[WebhookEvent], source_addr: &str, instance: &str) -> Vec<u8> {
    let events: Vec<Value> = events.iter().map(|e| event_json(e, source_addr, instance)).collect();
    serde_json::to_vec(&json!({ "events": events })).unwrap_or_default()
}

fn event_json(e: &WebhookEvent, source_addr: &str, instance: &str) -> Value {
    let o = &e.origin;
    let mut target = json!({
        "mediaType": e.media_type,
        "size": e.size,
        "length": e.size,
        "digest": e.digest,
        "repository": e.repository,
    });
    if !o.host.is_empty() && !e.repository.is_empty() {
        let scheme = if o.scheme.is_empty() { "http" } else { o.scheme.as_str() };
        let reference = if e.digest.is_empty() {
            e.tag.as_deref().unwrap_or("")
        } else {
            &e.digest
        };
        target["url"] = json!(format!(
            "{scheme}://{}/v2/{}/manifests/{reference}",
            o.host, e.repository
        ));
    }
    if let Some(tag) = &e.tag {
        target["tag"] = json!(tag);
    }
    let mut event = json!({
        "id": format!("{:020}", e.id),
        "timestamp": timestamp(o.time_ms),
        "action": e.kind.action(),
        "target": target,
        "request": {
            "id": o.request_id,
            "addr": o.addr,
            "host": o.host,
            "method": o.method,
            "useragent": o.user_agent,
        },
        "actor": { "name": o.actor },
        "source": { "addr": source_addr, "instanceID": instance },
    });
    // Distribution has no retention or ping events: say what they are beside its fields.
    if matches!(e.kind, EventKind::Retention | EventKind::Ping) {
        event["keelson"] = json!({ "kind": e.kind.name() });
    }
    event
}

fn timestamp(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_raft::webhooks::EventOrigin;

    fn push() -> WebhookEvent {
        WebhookEvent {
            id: 7,
            kind: EventKind::Push,
            repository: "acme/app".into(),
            digest: "sha256:abc".into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 420,
            tag: Some("v1".into()),
            origin: EventOrigin {
                actor: "acme/ann".into(),
                addr: "10.0.0.9".into(),
                host: "registry.test".into(),
                scheme: "https".into(),
                method: "PUT".into(),
                user_agent: "docker/27".into(),
                request_id: "r1".into(),
                node: 2,
                time_ms: 1_700_000_000_123,
            },
        }
    }

    #[test]
    fn the_envelope_has_distributions_fields() {
        let body: Value = serde_json::from_slice(&envelope(&[push()], "n2:5000", "n2")).unwrap();
        let e = &body["events"][0];
        assert_eq!(e["action"], "push");
        assert_eq!(e["id"], "00000000000000000007");
        assert_eq!(e["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(e["target"]["repository"], "acme/app");
        assert_eq!(e["target"]["tag"], "v1");
        assert_eq!(e["target"]["size"], 420);
        assert_eq!(
            e["target"]["url"],
            "https://registry.test/v2/acme/app/manifests/sha256:abc"
        );
        assert_eq!(e["request"]["useragent"], "docker/27");
        assert_eq!(e["actor"]["name"], "acme/ann");
        assert_eq!(e["source"]["instanceID"], "n2");
        assert!(e.get("keelson").is_none());
    }

    #[test]
    fn retention_deletions_are_deletes_that_say_so() {
        let mut e = push();
        e.kind = EventKind::Retention;
        let body: Value = serde_json::from_slice(&envelope(&[e], "", "")).unwrap();
        assert_eq!(body["events"][0]["action"], "delete");
        assert_eq!(body["events"][0]["keelson"]["kind"], "retention");
    }

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
