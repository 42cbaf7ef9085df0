//! The audit log on the request path. The server notes each answered change (every method but
//! GET and HEAD, except the upload chunks before a blob's last PUT) and every refused credential
//! as an [`AuditEvent`]; the events wait in a bounded queue and the node's flush task sends them
//! to the catalog in numbered batches (`RecordAudit`, see [`crate::numbered`]), where they are
//! replicated and queryable (`GET /api/v1/audit`). Events a node answered in the last flush
//! interval die with it if it crashes before the flush (like pull counts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use http::Method;
use keelson_raft::audit::{AuditEvent, MAX_AUDIT_PER_ENTRY};
use keelson_raft::CatalogCommand;

use crate::numbered::NumberedBatches;
use crate::registry::Registry;
use crate::routes::Route;

/// Events one node holds between flushes; past it new events are counted as dropped.
const MAX_QUEUED: usize = 20_000;
/// Distinct (user, address) pairs of refused logins one node holds between flushes: a flood of
/// bad credentials becomes at most this many records per flush, each with its count, and can
/// never crowd the changes out of the queue.
const MAX_REFUSAL_KEYS: usize = 1_000;

/// What the request path learned about a request for its audit record.
#[derive(Debug, Default)]
pub struct Note {
    /// Who the request was authenticated as.
    pub actor: Option<String>,
    /// The user named by credentials that were refused.
    pub refused_user: Option<String>,
}

#[derive(Default)]
pub struct AuditLog {
    queue: Mutex<Vec<AuditEvent>>,
    /// Refused logins since the last flush: the first of each (user, address) and how many.
    refusals: Mutex<std::collections::HashMap<(String, String), (AuditEvent, u64)>>,
    dropped: AtomicU64,
    batches: NumberedBatches<AuditEvent>,
}

impl AuditLog {
    /// Notes a request's outcome, if it is one the log keeps.
    #[allow(clippy::too_many_arguments)]
    pub fn note(
        &self,
        node: u64,
        now_ms: u64,
        method: &Method,
        path: &str,
        route: &Route<'_>,
        status: u16,
        note: &Note,
        source: Option<std::net::IpAddr>,
    ) {
        let Some(action) = action_of(method, route, status, note) else {
            return;
        };
        let actor = match (&note.refused_user, &note.actor) {
            (Some(user), _) if action == "auth.failed" => user.clone(),
            (_, Some(actor)) => actor.clone(),
            _ => "anonymous".to_string(),
        };
        let scope = scope_of(route, &actor);
        let event = AuditEvent {
            time_ms: now_ms,
            node,
            actor,
            scope,
            action,
            target: path.to_string(),
            status,
            source: source.map(|ip| ip.to_string()).unwrap_or_default(),
        }
        .bounded();
        if event.action == "auth.failed" {
            let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            let key = (event.actor.clone(), event.source.clone());
            if let Some((_, count)) = refusals.get_mut(&key) {
                *count = count.saturating_add(1);
            } else if refusals.len() < MAX_REFUSAL_KEYS {
                refusals.insert(key, (event, 1));
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= MAX_QUEUED {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push(event);
    }

    /// Events dropped because the queue was full (a flush has not succeeded for a long time).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Everything noted since the last flush; repeated refusals as one record saying how many.
    fn take(&self) -> Vec<AuditEvent> {
        let mut events = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        let refusals = std::mem::take(&mut *self.refusals.lock().unwrap_or_else(|p| p.into_inner()));
        let mut refused: Vec<AuditEvent> = refusals
            .into_values()
            .map(|(mut event, count)| {
                if count > 1 {
                    event.target = format!("{} (and {} more)", event.target, count - 1);
                }
                event.bounded()
            })
            .collect();
        // A batch's content never depends on hashing order (replayable simulations).
        refused.sort_by(|a, b| (a.time_ms, &a.actor, &a.source).cmp(&(b.time_ms, &b.actor, &b.source)));
        events.extend(refused);
        events
    }
}

/// What a request did, in the log's words, or `None` when the log does not keep it.
fn action_of(method: &Method, route: &Route<'_>, status: u16, note: &Note) -> Option<String> {
    if note.refused_user.is_some() && status == 401 {
        return Some("auth.failed".into());
    }
    let verb = match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => return None,
        Method::PUT => "put",
        Method::POST => "post",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    };
    let kind = match route {
        Route::Manifest { .. } => "manifest",
        Route::Blob { .. } => "blob",
        // A push is audited once, by the PUT that completes the blob.
        Route::Uploads { .. } => return None,
        Route::Upload { .. } if *method == Method::PUT => return Some("blob.push".into()),
        Route::Upload { .. } => return None,
        Route::Manage { rest } => return Some(manage_action(rest, verb)),
        Route::Cluster { rest } => return Some(format!("cluster.{}.{verb}", first_segment(rest))),
        Route::Console { rest } if *rest == "api/session" => {
            return Some(
                if *method == Method::DELETE {
                    "console.sign-out"
                } else {
                    "console.sign-in"
                }
                .into(),
            )
        }
        Route::Token => return None,
        _ => return None,
    };
    Some(format!("{kind}.{verb}"))
}

/// `tenancy.users.post`, `repos.patch`, `tenancies.policies.put`, … from `/api/v1/<rest>`.
fn manage_action(rest: &str, verb: &str) -> String {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    // Within a tenancy, the innermost collection named: `users/ann/tokens/x` is about tokens.
    const COLLECTIONS: [&str; 10] = [
        "users",
        "tokens",
        "groups",
        "members",
        "policies",
        "compartments",
        "limits",
        "retention-policies",
        "immutable-tags",
        "policy-check",
    ];
    let resource = match parts.as_slice() {
        ["tenancies", _, rest @ ..] if !rest.is_empty() => {
            let kind = rest.iter().rev().find(|p| COLLECTIONS.contains(p)).unwrap_or(&rest[0]);
            format!("tenancy.{kind}")
        }
        ["tenancies", ..] => "tenancy".to_string(),
        ["repos", ..] if parts.contains(&"tags") => "tag".to_string(),
        ["repos", ..] if parts.contains(&"images") => "image".to_string(),
        ["repos", ..] => "repo".to_string(),
        [first, ..] => first.to_string(),
        [] => "api".to_string(),
    };
    format!("{resource}.{verb}")
}

fn first_segment(rest: &str) -> &str {
    rest.split('/').next().filter(|s| !s.is_empty()).unwrap_or("root")
}

/// The tenancy a request concerns: the first segment of a repository name, the namespace of a
/// tenancy route, else the actor's own namespace (empty for the administrator and strangers).
fn scope_of(route: &Route<'_>, actor: &str) -> String {
    let from_repo = |name: &str| name.split('/').next().unwrap_or_default().to_string();
    match route {
        Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::Upload { name, .. }
        | Route::Uploads { name }
        | Route::Tags { name }
        | Route::Referrers { name, .. } => from_repo(name),
        Route::Manage { rest } => {
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                ["tenancies", ns, ..] => ns.to_string(),
                ["repos", name, ..] if !name.is_empty() => name.to_string(),
                _ => actor_scope(actor),
            }
        }
        Route::Cluster { .. } => String::new(),
        _ => actor_scope(actor),
    }
}

fn actor_scope(actor: &str) -> String {
    match crate::auth::split_username(actor) {
        Some((ns, _)) if ns != crate::auth::SYSTEM_NAMESPACE => ns.to_string(),
        _ => String::new(),
    }
}

/// Sends this node's audit events to the catalog (see [`crate::numbered::flush`]). Returns the
/// events flushed.
pub async fn flush(reg: &Registry) -> usize {
    let node = reg.catalog.node_id();
    let applied = reg.catalog.reader().audit_seq(node).unwrap_or(0);
    crate::numbered::flush(
        reg,
        "audit events",
        &reg.audit.batches,
        applied,
        MAX_AUDIT_PER_ENTRY,
        || reg.audit.take(),
        |seq, events| CatalogCommand::RecordAudit { node, seq, events },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::parse;

    fn action(method: Method, path: &str, status: u16) -> Option<String> {
        action_of(&method, &parse(path), status, &Note::default())
    }

    #[test]
    fn changes_are_named_and_reads_are_not_kept() {
        assert_eq!(
            action(Method::PUT, "/v2/acme/app/manifests/v1", 201).as_deref(),
            Some("manifest.put")
        );
        assert_eq!(action(Method::GET, "/v2/acme/app/manifests/v1", 200), None);
        assert_eq!(action(Method::PATCH, "/v2/acme/app/blobs/uploads/abc", 202), None);
        assert_eq!(
            action(Method::PUT, "/v2/acme/app/blobs/uploads/abc", 201).as_deref(),
            Some("blob.push")
        );
        assert_eq!(
            action(Method::PUT, "/api/v1/tenancies/acme/policies/p", 200).as_deref(),
            Some("tenancy.policies.put")
        );
        assert_eq!(
            action(Method::DELETE, "/api/v1/repos/acme/app/tags/v1", 200).as_deref(),
            Some("tag.delete")
        );
        assert_eq!(
            action(Method::PATCH, "/api/v1/repos/acme/app", 200).as_deref(),
            Some("repo.patch")
        );
        assert_eq!(
            action(Method::POST, "/api/v1/cluster/members", 200).as_deref(),
            Some("cluster.members.post")
        );
        let refused = Note {
            actor: None,
            refused_user: Some("acme/ann".into()),
        };
        assert_eq!(
            action_of(&Method::GET, &parse("/v2/"), 401, &refused).as_deref(),
            Some("auth.failed")
        );
    }

    #[test]
    fn a_flood_of_refused_logins_becomes_one_record_per_user_and_address() {
        let log = AuditLog::default();
        let refused = Note {
            actor: None,
            refused_user: Some("acme/ann".into()),
        };
        let ip = Some(std::net::IpAddr::from([10, 0, 0, 9]));
        for t in 0..5_000 {
            log.note(1, t, &Method::GET, "/v2/", &parse("/v2/"), 401, &refused, ip);
        }
        let change = Note {
            actor: Some("acme/ann".into()),
            refused_user: None,
        };
        let path = "/v2/acme/app/manifests/v1";
        log.note(1, 9, &Method::PUT, path, &parse(path), 201, &change, ip);
        let events = log.take();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].action, "manifest.put");
        assert_eq!(events[1].action, "auth.failed");
        assert_eq!(events[1].target, "/v2/ (and 4999 more)");
        assert!(log.take().is_empty());
    }

    #[test]
    fn scopes_follow_the_tenancy() {
        assert_eq!(scope_of(&parse("/v2/acme/app/manifests/v1"), "keelson/admin"), "acme");
        assert_eq!(
            scope_of(&parse("/api/v1/tenancies/acme/users"), "keelson/admin"),
            "acme"
        );
        assert_eq!(scope_of(&parse("/api/v1/repos/acme/app"), "keelson/admin"), "acme");
        assert_eq!(scope_of(&parse("/api/v1/cluster/members"), "keelson/admin"), "");
        assert_eq!(scope_of(&parse("/v2/"), "acme/ann"), "acme");
        assert_eq!(scope_of(&parse("/v2/"), "keelson/admin"), "");
    }
}
