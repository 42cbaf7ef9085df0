//! The vulnerability scanner under faults. Every node runs its scanner while the clients push
//! and the faults crash, partition and skew the nodes: an image is queued for its inventory in
//! the same entry as its push, the node holding its layer reads it and attaches an SBOM, then
//! takes the image off the queue; a node that crashes between the two finds the SBOM and only
//! dequeues.
//!
//! After healing (and before convergence is judged, since scanning proposes entries until the
//! queue is empty) the verifier checks that every acknowledged image still there is inventoried
//! exactly once: its report says `scanned` and it has exactly one SBOM referrer. No scan may be
//! lost to a crash, and none may be done twice.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{api_addr, NodeSpec};
use crate::history::{now_ms, Shared};
use crate::invariants::get_settled;
use crate::workload::short;

/// How often every node's scanner looks at the queue.
pub const SCAN_POLL_MS: u64 = 500;
/// How long after healing every acknowledged image has to be inventoried.
const SCANNED_WITHIN_MS: u64 = 240_000;
const SBOM: &str = "application/vnd.cyclonedx%2Bjson";

/// What a node answers about an image's inventory: `Some(state)`, or `None` when the image is
/// gone (a client or retention deleted it).
async fn state(addr: &str, repo: &str, digest: &str) -> Result<Option<String>, String> {
    let path = format!("/api/v1/repos/{repo}/images/{digest}/vulnerabilities");
    let reply = get_settled(addr, &path, None).await?;
    match reply.status {
        200 => {
            let report: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
            Ok(report["state"].as_str().map(str::to_string))
        }
        404 => Ok(None),
        other => Err(format!("{other} {}", String::from_utf8_lossy(&reply.body))),
    }
}

/// Waits until every acknowledged image still there is inventoried, and checks it has one SBOM.
pub async fn check(shared: &Shared, nodes: &[NodeSpec]) {
    let Some(first) = nodes.first() else { return };
    let addr = api_addr(&first.name);
    let manifests = shared.acked_manifests.borrow().clone();
    let deadline = now_ms() + SCANNED_WITHIN_MS;
    let mut seen = BTreeSet::new();
    shared.trace(now_ms(), "verify: waiting for every image's inventory");
    for m in manifests {
        if !seen.insert((m.repo.clone(), m.digest.clone())) {
            continue;
        }
        let image = format!("{}@{}", m.repo, short(&m.digest));
        let scanned = loop {
            match state(&addr, &m.repo, &m.digest).await {
                Ok(Some(s)) if s == "scanned" => break true,
                Ok(None) => break false, // deleted
                Ok(Some(_)) | Err(_) if now_ms() < deadline => {
                    tokio::time::sleep(Duration::from_millis(SCAN_POLL_MS)).await;
                }
                other => {
                    shared.fail(
                        "image_not_inventoried",
                        format!("{image} within {SCANNED_WITHIN_MS} ms of healing: {other:?}"),
                    );
                    break false;
                }
            }
        };
        if !scanned {
            continue;
        }
        shared.count("scan.images_inventoried", 1);
        let path = format!("/v2/{}/referrers/{}?artifactType={SBOM}", m.repo, m.digest);
        let sboms = match get_settled(&addr, &path, None).await {
            Ok(r) if r.status == 200 => serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["manifests"].as_array().map(Vec::len)),
            _ => None,
        };
        if sboms != Some(1) {
            shared.fail(
                "sbom_count",
                format!("{image} has {sboms:?} SBOM referrers, not exactly one"),
            );
        }
    }
}
