//! Retention and pull counting under faults. Right after formation the admin gives the clients'
//! tenancy a global policy that deletes every untagged image once its cooling period
//! ([`COOLING_MS`]) has passed; the leader runs it every [`RETENTION_INTERVAL_MS`] while the
//! clients push, move and delete tags and pull, and every node flushes its pull counts every
//! [`PULL_FLUSH_MS`] — all during the seed's partitions, crashes and clock skews.
//!
//! After healing, the verifier reads the deletion log and checks:
//!
//! - no image was deleted within the cooling period after a client's acknowledged push or tag
//!   of it (judged on the nodes' skewed clocks, so within [`MAX_SKEW_MS`] twice);
//! - every manifest the clients pushed and did not delete themselves is either in the log or
//!   still served, with every blob it references, from every member (the durability checks of
//!   `invariants` skip exactly the logged deletions);
//! - the pulls the catalog counted per repository never exceed the GETs clients sent there
//!   (a retried flush never counts twice);
//!
//! and the tag histories stay linearizable: retention never removes a tag, since an image that
//! gains one between evaluation and commit is saved by the compare-and-set.

use http::Method;
use serde_json::Value;

use crate::cluster::{api_addr, NodeSpec, EPOCH_MS};
use crate::history::Shared;
use crate::skew::MAX_SKEW_MS;

/// The cooling period of the simulation's policy: long enough to be longer than the skew bound
/// twice, short enough that images go during a run.
pub const COOLING_MS: u64 = 15_000;
/// How often the leader runs retention in the simulation.
pub const RETENTION_INTERVAL_MS: u64 = 3_000;
/// How often each node flushes its pull counts in the simulation.
pub const PULL_FLUSH_MS: u64 = 2_000;
/// The clients' tenancy.
pub const TENANCY: &str = "sim";

/// A client's acknowledged push or tag of an image.
#[derive(Debug, Clone)]
pub struct Touch {
    pub repo: String,
    pub tag: String,
    pub digest: String,
    /// Sim time the request was sent and answered.
    pub call_ms: u64,
    pub ack_ms: u64,
}

/// Sets the tenancy's global policy (retried through the faults until a node accepts it).
pub async fn set_policy(shared: &Shared, nodes: &[NodeSpec]) {
    let body = format!("{{\"untagged_days\": 0, \"cooling_ms\": {COOLING_MS}}}");
    change_policy(shared, nodes, Method::PUT, body, "set").await
}

/// Before the verifier reads the deletion log: the global policy keeps everything again, so no
/// deletion can commit after the log is read (a plan judged under the old rules is refused).
pub async fn stop(shared: &Shared, nodes: &[NodeSpec]) {
    change_policy(shared, nodes, Method::DELETE, String::new(), "stopped").await
}

async fn change_policy(shared: &Shared, nodes: &[NodeSpec], method: Method, body: String, what: &str) {
    let path = format!("/api/v1/tenancies/{TENANCY}/retention-policies/global");
    let label = format!("retention policy {what}");
    if crate::cluster::manage_until_done(shared, nodes, method, &path, &body, &label).await {
        shared.count(format!("retention.policy_{what}"), 1);
    } else {
        shared.fail(
            "retention_policy",
            format!("no node accepted the policy change ({what}) in 120 s"),
        );
    }
}

/// One logged deletion: the image and what went with it, and when (the judging node's clock).
struct Deleted {
    repo: String,
    digests: Vec<String>,
    deleted_ms: u64,
}

fn deletions(log: &Value) -> Vec<Deleted> {
    log["deletions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| Deleted {
            repo: d["repo"].as_str().unwrap_or_default().to_string(),
            digests: std::iter::once(&d["digest"])
                .chain(d["with"].as_array().into_iter().flatten())
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            deleted_ms: d["deleted_ms"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// Reads the deletion log (marking those images deleted for the durability checks that follow)
/// and checks the cooling period and the pull counts.
pub async fn check(shared: &Shared, nodes: &[NodeSpec], repos: &[String]) {
    let Some(first) = nodes.first() else { return };
    let path = format!("/api/v1/tenancies/{TENANCY}/retention-deletions?n=10000");
    let log = match crate::invariants::get_settled(&api_addr(&first.name), &path, None).await {
        Ok(r) if r.status == 200 => serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null),
        other => {
            shared.fail(
                "retention_log",
                format!("{path} on {}: {:?}", first.name, other.map(|r| r.status)),
            );
            return;
        }
    };
    let touches = shared.touches.borrow().clone();
    let skew = MAX_SKEW_MS as u64;
    for deleted in deletions(&log) {
        shared.count("retention.deleted_images", deleted.digests.len() as u64);
        // When the judging node's clock read `deleted_ms`, true time was within the skew bound.
        let earliest = deleted.deleted_ms.saturating_sub(EPOCH_MS + skew);
        let latest = deleted.deleted_ms.saturating_sub(EPOCH_MS).saturating_add(skew);
        for digest in &deleted.digests {
            shared
                .retention_deleted
                .borrow_mut()
                .insert((deleted.repo.clone(), digest.clone()));
            for t in touches.iter().filter(|t| t.repo == deleted.repo && &t.digest == digest) {
                shared.count("inv.retention_cooling_checks", 1);
                // The push or tag was committed before the judgement and its cooling period,
                // stamped by another skewed clock, certainly had not passed.
                if t.ack_ms < earliest && latest + 2 * skew < t.call_ms + COOLING_MS {
                    shared.fail(
                        "retention_within_cooling",
                        format!(
                            "{}@{} deleted at ~{earliest}..{latest} ms, pushed or tagged at {}..{} ms (cooling {COOLING_MS} ms)",
                            deleted.repo,
                            crate::workload::short(digest),
                            t.call_ms,
                            t.ack_ms
                        ),
                    );
                }
            }
        }
    }
    for repo in repos {
        let path = format!("/api/v1/repos/{repo}/images?n=10000");
        let Ok(reply) = crate::invariants::get_settled(&api_addr(&first.name), &path, None).await else {
            continue;
        };
        let Ok(list) = serde_json::from_slice::<Value>(&reply.body) else {
            continue;
        };
        let counted: u64 = list["images"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["pulls"].as_u64())
            .sum();
        // Deleted images took their counts with them, so this is a lower bound of the pulls
        // counted; it may never exceed the GETs sent.
        let sent = shared.pulls_sent.borrow().get(repo).copied().unwrap_or(0);
        shared.count("retention.pulls_counted", counted);
        if counted > sent {
            shared.fail(
                "pulls_overcounted",
                format!("{repo}: the catalog counts {counted} pulls of images still there, clients sent {sent} GETs"),
            );
        }
    }
}
