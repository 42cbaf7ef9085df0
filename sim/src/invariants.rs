//! The invariants, checked once every fault is healed and the clients are done:
//!
//! - the cluster converges (one leader, every node applied the same log);
//! - no acknowledged push is lost: every manifest answered 201 (and never the target of a delete)
//!   is readable from every node, and so is every blob it references, with bytes matching its
//!   digest (GC runs, so an acknowledged blob no kept manifest references may be collected);
//! - all nodes end with identical tags (committed entries never change or diverge);
//! - every tag's history is linearizable (final reads included);
//! - at most one node claimed leadership in any term;
//! - redundancy is restored after healing (see [`crate::redundancy`]);
//! - every acknowledged image still there is inventoried exactly once (see [`crate::scanning`]).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use crate::client::{self, Reply};
use crate::cluster::{self, api_addr, NodeSpec};
use crate::history::{now_ms, Shared, TagKey};
use crate::linearizability::{self, RegOp, Verdict};
use crate::workload::{digest_of, short, OCI_MANIFEST};

/// How long the verifier waits for the cluster to settle after healing. A connection that lost
/// segments to a partition is only abandoned once an HTTP/2 keep-alive times out (10 s interval,
/// 20 s timeout), so this is well above 30 s.
const CONVERGE_WITHIN: Duration = Duration::from_secs(90);

/// Search steps the linearizability checker may take per tag before calling it inconclusive.
const CHECK_BUDGET: u64 = 20_000_000;

/// GET with a few retries for transient answers (5xx, no answer).
pub(crate) async fn get_settled(addr: &str, path: &str, accept: Option<&str>) -> Result<Reply, String> {
    let mut last = String::new();
    for attempt in 0..4 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let headers: Vec<(&str, &str)> = accept.map(|a| vec![("accept", a)]).unwrap_or_default();
        match client::request(
            addr,
            http::Method::GET,
            path,
            &headers,
            bytes::Bytes::new(),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(r) if r.status < 500 => return Ok(r),
            Ok(r) => last = format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The verifier host's software.
pub async fn verifier(
    shared: Rc<Shared>,
    nodes: Vec<NodeSpec>,
    workers: usize,
    repos: Vec<String>,
    tags: Vec<String>,
) -> turmoil::Result {
    while shared.healed_at.get().is_none()
        || shared.workers_done.get() < workers
        || shared.final_members.borrow().is_none()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the final members: a removed node's view and copies do not count.
    let members = shared.final_members.borrow().clone().unwrap_or_default();
    let nodes: Vec<NodeSpec> = nodes.into_iter().filter(|n| members.contains(&n.id)).collect();
    crate::retention::stop(&shared, &nodes).await;
    crate::scanning::check(&shared, &nodes).await;
    shared.trace(now_ms(), "verify: waiting for convergence");
    converge(&shared, &nodes).await;
    crate::retention::check(&shared, &nodes, &repos).await;
    crate::redundancy::check(&shared, &nodes).await;
    crate::webhooks::check(&shared, &nodes).await;
    final_tags(&shared, &nodes, &repos, &tags).await;
    acked_blobs(&shared, &nodes).await;
    acked_manifests(&shared, &nodes).await;
    crate::uploads::check(&shared, &nodes).await;
    shared.trace(now_ms(), "verify: done");
    shared.verified.set(true);
    Ok(())
}

/// Waits until every node reports the same leader and term and the same applied index twice in
/// a row.
async fn converge(shared: &Shared, nodes: &[NodeSpec]) {
    let deadline = now_ms() + CONVERGE_WITHIN.as_millis() as u64;
    let mut previous: Option<(u64, u64, Option<u64>)> = None;
    let mut last_seen = String::new();
    while now_ms() < deadline {
        let mut views = Vec::new();
        for node in nodes {
            match cluster::status(&node.name, Duration::from_secs(1)).await {
                Ok(s) => views.push(Some(s)),
                Err(_) => views.push(None),
            }
        }
        last_seen = views
            .iter()
            .zip(nodes)
            .map(|(v, n)| match v {
                Some(s) => format!(
                    "{}: {} term {} leader {:?} applied {:?}",
                    n.name, s.state, s.term, s.leader, s.applied_index
                ),
                None => format!("{}: no answer", n.name),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let all: Option<Vec<_>> = views.into_iter().collect();
        if let Some(all) = all {
            let first = &all[0];
            let agreed = first.leader.is_some()
                && all.iter().all(|s| {
                    s.leader == first.leader
                        && s.term == first.term
                        && s.applied_index == first.applied_index
                        && s.members.iter().filter(|m| m.voter).count() == nodes.len()
                });
            if agreed {
                let view = (first.term, first.applied_index.unwrap_or(0), first.leader);
                if previous == Some(view) {
                    shared.trace(
                        now_ms(),
                        format!("verify: converged term {} applied {}", view.0, view.1),
                    );
                    shared.count("inv.converged", 1);
                    return;
                }
                previous = Some(view);
            } else {
                previous = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shared.fail(
        "convergence",
        format!("no agreement on leader and applied log {CONVERGE_WITHIN:?} after healing: {last_seen}"),
    );
}

/// Reads every tag on every node (linearizable reads, recorded in the tag histories) and checks
/// that all nodes hold the same tags.
async fn final_tags(shared: &Shared, nodes: &[NodeSpec], repos: &[String], tags: &[String]) {
    let mut views: Vec<(String, BTreeMap<TagKey, Option<String>>)> = Vec::new();
    for node in nodes {
        let addr = api_addr(&node.name);
        let mut view = BTreeMap::new();
        for repo in repos {
            let listed: Option<Vec<String>> = match get_settled(&addr, &format!("/v2/{repo}/tags/list"), None).await {
                Ok(r) if r.status == 200 => serde_json::from_slice::<serde_json::Value>(&r.body)
                    .ok()
                    .and_then(|v| v["tags"].as_array().cloned())
                    .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect()),
                Ok(r) if r.status == 404 => Some(Vec::new()),
                _ => None,
            };
            for tag in tags {
                let key: TagKey = (repo.clone(), tag.clone());
                let call = shared.tick();
                let answer = get_settled(&addr, &format!("/v2/{repo}/manifests/{tag}"), Some(OCI_MANIFEST)).await;
                let ret = shared.tick();
                let value = match answer {
                    Ok(r) if r.status == 200 => {
                        let digest = digest_of(&r.body);
                        shared.register_op(&key, RegOp::Read(Some(shared.intern(&digest))), call, Some(ret));
                        Some(digest)
                    }
                    Ok(r) if r.status == 404 => {
                        shared.register_op(&key, RegOp::Read(None), call, Some(ret));
                        None
                    }
                    other => {
                        shared.fail(
                            "final_read",
                            format!("GET {repo}:{tag} on {} after healing: {other:?}", node.name),
                        );
                        continue;
                    }
                };
                if let Some(listed) = &listed {
                    if listed.contains(tag) != value.is_some() {
                        shared.fail(
                            "tag_listing",
                            format!("{} lists {repo} tags {listed:?} but {tag} reads {value:?}", node.name),
                        );
                    }
                }
                shared.trace(
                    now_ms(),
                    format!(
                        "verify {} {repo}:{tag} = {}",
                        node.name,
                        value.as_deref().map_or("-", short)
                    ),
                );
                view.insert(key, value);
            }
        }
        views.push((node.name.clone(), view));
    }
    shared.count("inv.catalog_compared_nodes", views.len() as u64);
    if let Some((first_name, first)) = views.first() {
        for (name, view) in &views[1..] {
            if view != first {
                let diff: Vec<String> = first
                    .iter()
                    .filter(|(k, v)| view.get(*k) != Some(*v))
                    .map(|((r, t), v)| {
                        format!(
                            "{r}:{t} {first_name}={:?} {name}={:?}",
                            v,
                            view.get(&(r.clone(), t.clone()))
                        )
                    })
                    .collect();
                shared.fail(
                    "catalog_divergence",
                    format!("{first_name} and {name} differ: {}", diff.join(", ")),
                );
            }
        }
    }
}

/// Every acknowledged blob GC must keep (see [`Shared::protected_blobs`]) from every node; the
/// others may have been collected.
async fn acked_blobs(shared: &Shared, nodes: &[NodeSpec]) {
    let blobs = shared.acked_blobs.borrow().clone();
    let protected = shared.protected_blobs();
    for blob in blobs {
        if !protected.contains(&blob.digest) {
            shared.count("inv.blobs_collectable_skipped", 1);
            continue;
        }
        let mut served = Vec::new();
        let mut refused = Vec::new();
        for node in nodes {
            shared.count("inv.blob_reads", 1);
            let path = format!("/v2/{}/blobs/{}", blob.repo, blob.digest);
            match get_settled(&api_addr(&node.name), &path, None).await {
                Ok(r) if r.status == 200 && digest_of(&r.body) == blob.digest => served.push(node.name.clone()),
                Ok(r) if r.status == 200 => {
                    shared.fail(
                        "blob_bytes",
                        format!("{}@{} on {} returned other bytes", blob.repo, blob.digest, node.name),
                    );
                }
                Ok(r) => refused.push(format!("{} {}", node.name, r.status)),
                Err(e) => refused.push(format!("{} {}", node.name, first_line(&e))),
            }
        }
        if served.is_empty() {
            shared.fail(
                "acked_blob_lost",
                format!(
                    "{}@{} acknowledged but no node serves it ({})",
                    blob.repo,
                    short(&blob.digest),
                    refused.join(", ")
                ),
            );
        } else if !refused.is_empty() {
            shared.fail(
                "acked_blob_not_everywhere",
                format!(
                    "{}@{} served by {} but not by {}",
                    blob.repo,
                    short(&blob.digest),
                    served.join(","),
                    refused.join(", ")
                ),
            );
        }
    }
}

/// Every acknowledged manifest that no client tried to delete and no policy deleted, by digest
/// from every node.
async fn acked_manifests(shared: &Shared, nodes: &[NodeSpec]) {
    let manifests = shared.acked_manifests.borrow().clone();
    let mut seen = std::collections::BTreeSet::new();
    for m in manifests {
        if shared.maybe_deleted(&m.repo, &m.digest) || !seen.insert((m.repo.clone(), m.digest.clone())) {
            continue;
        }
        for node in nodes {
            shared.count("inv.manifest_reads", 1);
            let path = format!("/v2/{}/manifests/{}", m.repo, m.digest);
            match get_settled(&api_addr(&node.name), &path, Some(OCI_MANIFEST)).await {
                Ok(r) if r.status == 200 && r.body == m.body => {}
                other => shared.fail(
                    "acked_manifest_lost",
                    format!(
                        "{}@{} on {}: {}",
                        m.repo,
                        short(&m.digest),
                        node.name,
                        match other {
                            Ok(r) => format!("{} {}", r.status, first_line(&String::from_utf8_lossy(&r.body))),
                            Err(e) => first_line(&e),
                        }
                    ),
                ),
            }
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(160).collect()
}

/// Checks run after the simulation: leadership per term and linearizability of every tag.
pub fn after_run(shared: &Shared) {
    let claims = shared.leader_claims.borrow().clone();
    shared.count("inv.leader_terms", claims.len() as u64);
    for (term, leaders) in &claims {
        if leaders.len() > 1 {
            shared.fail("two_leaders", format!("term {term} had leaders {leaders:?}"));
        }
    }
    for (key, ops) in shared.registers() {
        shared.count("inv.tag_histories", 1);
        shared.count("inv.tag_ops", ops.len() as u64);
        match linearizability::check(&ops, None, CHECK_BUDGET) {
            Verdict::Linearizable => {}
            Verdict::Inconclusive => shared.count("inv.tag_histories_inconclusive", 1),
            Verdict::NotLinearizable { deepest } => {
                let mut sorted = ops.clone();
                sorted.sort_by_key(|o| o.call);
                let listing: Vec<String> = sorted
                    .iter()
                    .map(|o| {
                        let what = match o.op {
                            RegOp::Write(v) => format!("write {}", short(&shared.digest_of(v))),
                            RegOp::Read(Some(v)) => format!("read {}", short(&shared.digest_of(v))),
                            RegOp::Read(None) => "read -".into(),
                            RegOp::DeleteTag => "delete-tag".into(),
                            RegOp::DeleteTagAbsent => "delete-tag 404".into(),
                            RegOp::DeleteTagMaybe => "delete-tag ?".into(),
                            RegOp::DeleteManifest(v) => format!("delete-manifest {}", short(&shared.digest_of(v))),
                            RegOp::DeleteManifestAbsent(v) => {
                                format!("delete-manifest {} 404", short(&shared.digest_of(v)))
                            }
                        };
                        let ret = o.ret.map_or("?".to_string(), |r| r.to_string());
                        format!("[{}..{}] {what}", o.call, ret)
                    })
                    .collect();
                shared.fail(
                    "tag_linearizability",
                    format!(
                        "{}:{} has no linearization (deepest prefix {deepest} of {}): {}",
                        key.0,
                        key.1,
                        ops.len(),
                        listing.join("; ")
                    ),
                );
            }
        }
    }
}
