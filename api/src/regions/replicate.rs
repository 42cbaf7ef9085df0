//! Cross-region replication, run by the leader: every change a rule covers is queued in the
//! catalog as it is applied (`changed\0<repo>`), and this worker drains the queue; a periodic
//! full pass over every covered repository repairs anything missed.
//!
//! Per repository and target it compares the source's tags (and referrers) with the *marks* of
//! what the target acknowledged, pushes what differs through the target's registry API —
//! children, blobs, then the manifest by digest, then the tag — and commits the new marks. The
//! tag is written with `If-Match` on the digest the mark says the target has, so a stale
//! worker (an old leader still running) can never move a tag backwards; on a precondition
//! failure the worker learns the target's digest and retries once. Blob uploads are chunked and
//! remembered, so an interrupted large layer continues at the offset the target holds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use http::{Request, StatusCode};
use keelson_raft::regions::{
    failure_key, RegionCommand, ReplicatedMark, ReplicationFailure, ReplicationRule, MAX_MARKS,
};
use keelson_raft::CatalogCommand;

use super::client::{Conditional, PeerClient, PeerError};
use crate::access::Cx;
use crate::body::Body;
use crate::error::ApiError;
use crate::registry::Registry;

/// Bytes per PATCH of a replicated blob (and the unit an interrupted upload resumes at).
pub const CHUNK: u64 = 8 << 20;
/// Repositories taken from the change queue per pass.
const QUEUE_BATCH: usize = 256;

/// Why replicating a repository stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("reading the source: {0}")]
    Source(String),
    #[error("region {0} is not a known peer")]
    UnknownPeer(String),
    #[error("tag {tag} in region {target} keeps changing under replication")]
    Contended { tag: String, target: String },
}

impl From<ApiError> for ReplicationError {
    fn from(e: ApiError) -> Self {
        ReplicationError::Source(e.message)
    }
}

impl From<keelson_raft::catalog::ReadError> for ReplicationError {
    fn from(e: keelson_raft::catalog::ReadError) -> Self {
        ReplicationError::Source(e.to_string())
    }
}

/// This node's replication state: upload sessions in flight, bytes sent, pacing.
#[derive(Default)]
pub struct Replicator {
    /// `(target, repo, digest)` → upload location in the target.
    sessions: Mutex<HashMap<(String, String, String), String>>,
    /// Blob bytes sent, by `rule\0target`.
    sent: Mutex<BTreeMap<String, u64>>,
    /// When each rule may send its next byte (its `bytes_per_second` pacing).
    next_send: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Failing `rule\0target` pairs: consecutive failures and when to try again.
    backoff: Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
}

/// Longest pause after failures towards a target (the reconciliation pass keeps its own period).
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);

impl Replicator {
    /// Blob bytes this node sent for `rule` to `target` since it started.
    pub fn bytes_sent(&self, rule: &str, target: &str) -> u64 {
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.get(&failure_key(rule, target)).copied().unwrap_or(0)
    }

    fn count_sent(&self, rule: &str, target: &str, n: u64) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let entry = sent.entry(failure_key(rule, target)).or_default();
        *entry = entry.saturating_add(n);
    }

    /// Whether `rule` towards `target` is pausing after failures.
    fn backing_off(&self, rule: &str, target: &str) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff
            .get(&failure_key(rule, target))
            .is_some_and(|(_, until)| tokio::time::Instant::now() < *until)
    }

    /// Records the outcome of a try: a failure doubles the pause (from 500 ms up to
    /// [`MAX_BACKOFF`]), a success ends it.
    fn outcome(&self, rule: &str, target: &str, ok: bool) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let key = failure_key(rule, target);
        if ok {
            backoff.remove(&key);
            return;
        }
        let failures = backoff.get(&key).map_or(0, |(n, _)| *n).saturating_add(1);
        let pause = std::time::Duration::from_millis(500u64.saturating_mul(1 << failures.min(5))).min(MAX_BACKOFF);
        backoff.insert(key, (failures, tokio::time::Instant::now() + pause));
    }

    /// Waits until `rule` may send `n` more bytes.
    async fn pace(&self, rule: &ReplicationRule, n: u64) {
        let Some(rate) = rule.bytes_per_second.filter(|r| *r > 0) else {
            return;
        };
        let wait_until = {
            let mut next = self.next_send.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let start = next.get(&rule.id).copied().filter(|t| *t > now).unwrap_or(now);
            let cost = std::time::Duration::from_secs_f64(n as f64 / rate as f64);
            next.insert(rule.id.clone(), start + cost);
            start
        };
        tokio::time::sleep_until(wait_until).await;
    }
}

/// One pass: the queued repositories, or with `full` every repository a rule covers.
/// Only the leader replicates. Returns how many repositories were brought up to date.
pub async fn replication_pass(reg: &Registry, full: bool) -> usize {
    if !reg.catalog.is_leader() {
        return 0;
    }
    let reader = reg.catalog.reader();
    let Ok(regions) = reader.regions() else { return 0 };
    if regions.rules.is_empty() {
        return 0;
    }
    let queued: Vec<(String, Option<u64>)> = if full {
        let mut repos = BTreeSet::new();
        for rule in regions.rules.values() {
            for repo in reader.tenancy_repos(&rule.namespace).unwrap_or_default() {
                if regions.rules_for(&repo).any(|r| r.id == rule.id) {
                    repos.insert(repo);
                }
            }
        }
        let changes: BTreeMap<String, u64> = reader
            .replication_changes(usize::MAX)
            .unwrap_or_default()
            .into_iter()
            .collect();
        repos
            .into_iter()
            .map(|r| {
                let seq = changes.get(&r).copied();
                (r, seq)
            })
            .collect()
    } else {
        reader
            .replication_changes(QUEUE_BATCH)
            .unwrap_or_default()
            .into_iter()
            .map(|(r, s)| (r, Some(s)))
            .collect()
    };
    let mut clients: HashMap<String, PeerClient> = HashMap::new();
    let keys = reg.store.master_keys();
    let mut synced = 0;
    for (repo, seq) in queued {
        let mut all_ok = true;
        for rule in regions.rules_for(&repo) {
            for target in &rule.targets {
                if reg.replicator.backing_off(&rule.id, target) {
                    all_ok = false;
                    continue;
                }
                let client = match clients.get(target) {
                    Some(c) => Ok(c.clone()),
                    None => match regions.peers.get(target) {
                        Some(peer) => {
                            PeerClient::new(peer, keys.as_deref(), reg.dialer.as_ref()).map_err(ReplicationError::from)
                        }
                        None => Err(ReplicationError::UnknownPeer(target.clone())),
                    },
                };
                let result = match client {
                    Ok(client) => {
                        clients.insert(target.clone(), client.clone());
                        sync_repo(reg, rule, &client, &repo).await
                    }
                    Err(e) => Err(e),
                };
                reg.replicator.outcome(&rule.id, target, result.is_ok());
                let failure_key = failure_key(&rule.id, target);
                let recorded = regions.failures.get(&failure_key);
                let update = match &result {
                    Ok(()) => recorded.map(|_| None),
                    Err(e) => {
                        all_ok = false;
                        tracing::warn!(rule = %rule.id, %target, %repo, error = %e, "replication failed");
                        let message = e.to_string();
                        (recorded.map(|f| &f.message) != Some(&message)).then(|| {
                            Some(ReplicationFailure {
                                message,
                                at_ms: reg.clock.now_ms(),
                            })
                        })
                    }
                };
                if let Some(failure) = update {
                    let _ = reg
                        .catalog
                        .propose(CatalogCommand::Regions(RegionCommand::Failure {
                            rule: rule.id.clone(),
                            target: target.clone(),
                            failure,
                        }))
                        .await;
                }
            }
        }
        if all_ok {
            synced += 1;
            if let Some(seq) = seq {
                let _ = reg
                    .catalog
                    .propose(CatalogCommand::Regions(RegionCommand::Processed { repo, seq }))
                    .await;
            }
        }
    }
    synced
}

/// The source's tags of `repo` that `rule` covers, with their digests.
pub fn covered_tags(
    reg: &Registry,
    rule: &ReplicationRule,
    repo: &str,
) -> Result<BTreeMap<String, String>, ReplicationError> {
    let reader = reg.catalog.reader();
    let mut tags = BTreeMap::new();
    let mut last: Option<String> = None;
    loop {
        let page = reader.tags(repo, last.as_deref(), 1000)?;
        for tag in &page.items {
            if keelson_raft::regions::glob_match(&rule.tags, tag) {
                if let Some(digest) = reader.tag(repo, tag)? {
                    tags.insert(tag.clone(), digest);
                }
            }
        }
        match (page.more, page.items.last()) {
            (true, Some(l)) => last = Some(l.clone()),
            _ => break,
        }
    }
    Ok(tags)
}

/// Brings `repo` in `target` up to the source under `rule`.
async fn sync_repo(
    reg: &Registry,
    rule: &ReplicationRule,
    target: &PeerClient,
    repo: &str,
) -> Result<(), ReplicationError> {
    let reader = reg.catalog.reader();
    let tags = covered_tags(reg, rule, repo)?;
    let marks = reader.replication_marks(&rule.id, &target.name, repo)?;
    let mut new_marks = Vec::new();
    let mut pushed = BTreeSet::new();
    let mark = |key: &str, digest: Option<String>| ReplicatedMark {
        rule: rule.id.clone(),
        target: target.name.clone(),
        repo: repo.to_string(),
        key: key.to_string(),
        digest,
        at_ms: reg.clock.now_ms(),
    };
    for (tag, digest) in &tags {
        if marks.get(tag).map(|m| &m.digest) == Some(digest) {
            continue;
        }
        push_image(reg, rule, target, repo, digest, &mut pushed).await?;
        let record = reader
            .manifest(repo, digest)?
            .ok_or_else(|| ReplicationError::Source(format!("{repo}@{digest} vanished")))?;
        let mut expected = marks.get(tag).map(|m| m.digest.clone());
        let mut attempts = 0;
        loop {
            let outcome = target
                .put_manifest(
                    repo,
                    tag,
                    &record.media_type,
                    bytes::Bytes::from(record.body.clone()),
                    Some(expected.as_deref()),
                )
                .await?;
            if outcome == Conditional::Done {
                break;
            }
            attempts += 1;
            if attempts > 2 {
                return Err(ReplicationError::Contended {
                    tag: tag.clone(),
                    target: target.name.clone(),
                });
            }
            // The target is not where the mark says (a mark lost to a crash, or another
            // worker got there first): learn where it is and move it forward from there.
            expected = target.manifest_digest(repo, tag).await?;
            if expected.as_deref() == Some(digest.as_str()) {
                break;
            }
        }
        new_marks.push(mark(tag, Some(digest.clone())));
        flush_marks(reg, &mut new_marks, false).await?;
    }
    // Referrers (signatures, SBOMs) travel with their subjects; not the scanner's inventory:
    // the target queues the image for its own, like any push, and two would then hang off it.
    let subjects: BTreeSet<&String> = tags.values().collect();
    for subject in subjects {
        for referrer in reader.referrers(repo, subject)? {
            if crate::scanning::is_inventory(&referrer) {
                continue;
            }
            let key = format!("@{}", referrer.digest);
            if marks.contains_key(&key) {
                continue;
            }
            push_image(reg, rule, target, repo, &referrer.digest, &mut pushed).await?;
            new_marks.push(mark(&key, Some(referrer.digest.clone())));
            flush_marks(reg, &mut new_marks, false).await?;
        }
    }
    if rule.deletes {
        for (key, record) in &marks {
            if key.starts_with('@') || tags.contains_key(key) || !keelson_raft::regions::glob_match(&rule.tags, key) {
                continue;
            }
            // Gone here: remove it there, unless someone moved it there meanwhile.
            target.delete_tag(repo, key, &record.digest).await?;
            new_marks.push(mark(key, None));
            flush_marks(reg, &mut new_marks, false).await?;
        }
    }
    flush_marks(reg, &mut new_marks, true).await
}

async fn flush_marks(reg: &Registry, marks: &mut Vec<ReplicatedMark>, all: bool) -> Result<(), ReplicationError> {
    if marks.is_empty() || (!all && marks.len() < MAX_MARKS) {
        return Ok(());
    }
    let batch = std::mem::take(marks);
    reg.catalog
        .propose(CatalogCommand::Regions(RegionCommand::Replicated { marks: batch }))
        .await
        .map_err(|e| ReplicationError::Source(e.to_string()))?;
    Ok(())
}

/// Pushes the manifest `digest` of `repo` with everything it needs (child manifests, blobs),
/// unless the target has it already.
async fn push_image(
    reg: &Registry,
    rule: &ReplicationRule,
    target: &PeerClient,
    repo: &str,
    digest: &str,
    pushed: &mut BTreeSet<String>,
) -> Result<(), ReplicationError> {
    if pushed.contains(digest) || target.manifest_digest(repo, digest).await?.is_some() {
        return Ok(());
    }
    let record = reg
        .catalog
        .reader()
        .manifest(repo, digest)?
        .ok_or_else(|| ReplicationError::Source(format!("{repo}@{digest} vanished")))?;
    for child in &record.manifests {
        Box::pin(push_image(reg, rule, target, repo, child, pushed)).await?;
    }
    for blob in &record.blobs {
        push_blob(reg, rule, target, repo, blob).await?;
    }
    target
        .put_manifest(
            repo,
            digest,
            &record.media_type,
            bytes::Bytes::from(record.body.clone()),
            None,
        )
        .await?;
    pushed.insert(digest.to_string());
    Ok(())
}

/// Uploads blob `digest` of `repo` in chunks, continuing a session this node started before.
async fn push_blob(
    reg: &Registry,
    rule: &ReplicationRule,
    target: &PeerClient,
    repo: &str,
    digest: &str,
) -> Result<(), ReplicationError> {
    if target.has_blob(repo, digest).await? {
        return Ok(());
    }
    let size = reg
        .catalog
        .reader()
        .blob_in_repo(repo, digest)?
        .ok_or_else(|| ReplicationError::Source(format!("blob {digest} of {repo} vanished")))?
        .size;
    let key = (target.name.clone(), repo.to_string(), digest.to_string());
    let remembered = reg
        .replicator
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned();
    let (mut location, mut offset) = match remembered {
        Some(location) => match target.upload_offset(&location).await? {
            Some(offset) if offset <= size => (location, offset),
            _ => (target.start_upload(repo).await?, 0),
        },
        None => (target.start_upload(repo).await?, 0),
    };
    remember(reg, &key, &location);
    while offset < size {
        let n = (size - offset).min(CHUNK);
        reg.replicator.pace(rule, n).await;
        let data = read_source(reg, repo, digest, offset, n).await?;
        location = target.patch(&location, offset, n, data).await?;
        remember(reg, &key, &location);
        reg.replicator.count_sent(&rule.id, &target.name, n);
        offset += n;
    }
    target.finish(&location, digest).await?;
    reg.replicator
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&key);
    Ok(())
}

fn remember(reg: &Registry, key: &(String, String, String), location: &str) {
    reg.replicator
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone(), location.to_string());
}

/// `len` bytes at `offset` of the source blob, through the same read path a client's GET takes
/// (local copy, another holder, or coded shards).
async fn read_source(
    reg: &Registry,
    repo: &str,
    digest: &str,
    offset: u64,
    len: u64,
) -> Result<Body, ReplicationError> {
    let request = Request::builder()
        .header("range", format!("bytes={offset}-{}", offset + len - 1))
        .body(())
        .map_err(|e| ReplicationError::Source(e.to_string()))?;
    let cx = Cx::internal(reg);
    let response = crate::handlers::blobs::get(&cx, repo, digest, &request, false).await?;
    match response.status() {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(response.into_body()),
        s => Err(ReplicationError::Source(format!("reading {digest} answered {s}"))),
    }
}
