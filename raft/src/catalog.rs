//! Read access to the applied catalog, for the API and the storage layer.
//!
//! Reads see the local state machine. Callers that need linearizable answers (a tag read right
//! after a push acknowledged elsewhere) first call [`crate::Catalog::linearizable`], which waits
//! until this node has applied everything committed at the time of the call.

use rocksdb::{Direction, IteratorMode};

use crate::command::*;
use crate::lifecycle::*;
use crate::retention::ImageFacts;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::redundancy::{NodeCapacity, RedundancyPolicy};
use crate::types::NodeId;

use crate::db::Db;
use crate::identity::IdentityState;
use crate::keys::*;
use crate::read_cache::ReadCache;
use crate::state_machine::SharedIdentity;

#[derive(Clone)]
pub struct CatalogReader {
    db: Db,
    identity: SharedIdentity,
    cache: Arc<ReadCache>,
}

/// A failure to read the local catalog (disk or decoding trouble; never "not found").
#[derive(Debug, Clone, thiserror::Error)]
#[error("catalog read failed: {0}")]
pub struct ReadError(String);

type Result<T> = std::result::Result<T, ReadError>;

fn err<E: std::fmt::Display>(e: E) -> ReadError {
    ReadError(e.to_string())
}

/// One page of a sorted listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// True when entries follow the last one returned.
    pub more: bool,
}

impl CatalogReader {
    pub(crate) fn new(db: Db, identity: SharedIdentity, cache: Arc<ReadCache>) -> Self {
        CatalogReader { db, identity, cache }
    }

    /// Runs `f` on the applied identity state (held in memory on every node).
    pub fn with_identity<T>(&self, f: impl FnOnce(&IdentityState) -> T) -> T {
        f(&self.identity.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| ReadError(format!("column family {name} missing")))
    }

    fn get<T: serde::de::DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        match self.db.get_pinned_cf(self.cf(cf)?, key).map_err(err)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(bincode::deserialize(&bytes).map_err(err)?)),
        }
    }

    pub fn repo(&self, repo: &str) -> Result<Option<RepoRecord>> {
        self.cache
            .read_through(&self.cache.repos, repo.as_bytes().to_vec(), || {
                self.get(CF_REPOS, repo.as_bytes())
            })
    }

    /// The blob's record, only when it is linked into `repo`.
    pub fn blob_in_repo(&self, repo: &str, digest: &str) -> Result<Option<BlobRecord>> {
        let key = join(&[repo, digest]);
        self.cache.read_through(&self.cache.repo_blobs, key.clone(), || {
            if self
                .db
                .get_pinned_cf(self.cf(CF_REPO_BLOBS)?, &key)
                .map_err(err)?
                .is_none()
            {
                return Ok(None);
            }
            self.blob(digest)
        })
    }

    /// The blob's record, in whatever repo.
    pub fn blob(&self, digest: &str) -> Result<Option<BlobRecord>> {
        self.get(CF_BLOBS, digest.as_bytes())
    }

    /// The digest a tag points at.
    pub fn tag(&self, repo: &str, tag: &str) -> Result<Option<String>> {
        let key = join(&[repo, tag]);
        self.cache.read_through(&self.cache.tags, key.clone(), || {
            match self.db.get_pinned_cf(self.cf(CF_TAGS)?, &key).map_err(err)? {
                None => Ok(None),
                Some(bytes) => Ok(Some(String::from_utf8(bytes.to_vec()).map_err(err)?)),
            }
        })
    }

    pub fn manifest(&self, repo: &str, digest: &str) -> Result<Option<ManifestRecord>> {
        let key = join(&[repo, digest]);
        let cached = self.cache.read_through(&self.cache.manifests, key.clone(), || {
            Ok(self.get::<ManifestRecord>(CF_MANIFESTS, &key)?.map(Arc::new))
        })?;
        Ok(cached.map(|m| (*m).clone()))
    }

    /// Tags of `repo` in lexical order, after `last`, at most `limit`.
    pub fn tags(&self, repo: &str, last: Option<&str>, limit: usize) -> Result<Page> {
        self.list_with_prefix(CF_TAGS, &repo_prefix(repo), last, limit)
    }

    /// Repository names in lexical order, after `last`, at most `limit`.
    pub fn repos(&self, last: Option<&str>, limit: usize) -> Result<Page> {
        self.list_with_prefix(CF_REPOS, b"", last, limit)
    }

    fn list_with_prefix(&self, cf: &str, prefix: &[u8], last: Option<&str>, limit: usize) -> Result<Page> {
        let mut start = prefix.to_vec();
        if let Some(last) = last {
            start.extend_from_slice(last.as_bytes());
            start.push(0); // the smallest key strictly after `last`
        }
        let mut items = Vec::new();
        let mut more = false;
        for item in self
            .db
            .iterator_cf(self.cf(cf)?, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, _) = item.map_err(err)?;
            if !key.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(String::from_utf8(key[prefix.len()..].to_vec()).map_err(err)?);
        }
        Ok(Page { items, more })
    }

    /// Up to `limit` blob records in digest order, after `after` (for background scans that page
    /// through every blob).
    pub fn blobs_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, BlobRecord)>> {
        let mut start = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
        if after.is_some() {
            start.push(0);
        }
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_BLOBS)?, IteratorMode::From(&start, Direction::Forward))
        {
            if out.len() == limit {
                break;
            }
            let (key, value) = item.map_err(err)?;
            let digest = String::from_utf8(key.to_vec()).map_err(err)?;
            out.push((digest, bincode::deserialize(&value).map_err(err)?));
        }
        Ok(out)
    }

    /// Every blob record in digest order, read a page at a time (for background passes that
    /// survey all blobs).
    pub fn all_blobs(&self) -> Result<Vec<(String, BlobRecord)>> {
        const PAGE: usize = 1000;
        let mut records = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.blobs_page(after.as_deref(), PAGE)?;
            let full = page.len() == PAGE;
            after = page.last().map(|(d, _)| d.clone());
            records.extend(page);
            if !full {
                return Ok(records);
            }
        }
    }

    /// Calls `f(repo, digest, manifest)` for every manifest of every repository.
    pub fn for_each_manifest(&self, mut f: impl FnMut(&str, &str, &ManifestRecord)) -> Result<()> {
        for item in self.db.iterator_cf(self.cf(CF_MANIFESTS)?, IteratorMode::Start) {
            let (key, value) = item.map_err(err)?;
            let (repo, digest) = split_pair(&key)?;
            let manifest: ManifestRecord = bincode::deserialize(&value).map_err(err)?;
            f(repo, digest, &manifest);
        }
        Ok(())
    }

    /// Every (repository, blob digest) link.
    pub fn blob_links(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_REPO_BLOBS)?, IteratorMode::Start) {
            let (key, _) = item.map_err(err)?;
            let (repo, digest) = split_pair(&key)?;
            out.push((repo.to_string(), digest.to_string()));
        }
        Ok(out)
    }

    /// The shard layout of an erasure-coded blob (`None`: replicated, or unknown).
    pub fn coded(&self, digest: &str) -> Result<Option<CodedLayout>> {
        self.get(CF_CODED, digest.as_bytes())
    }

    /// The cluster's default redundancy policy, when one was committed.
    pub fn cluster_redundancy(&self) -> Result<Option<RedundancyPolicy>> {
        self.get(CF_PLACEMENT, KEY_CLUSTER_POLICY)
    }

    /// The repository's own redundancy policy (`None`: it uses the cluster default).
    pub fn repo_redundancy(&self, repo: &str) -> Result<Option<RedundancyPolicy>> {
        self.get(CF_PLACEMENT, &repo_policy_key(repo))
    }

    /// The copy count a replicated blob was placed for (`None`: coded, unknown, or pushed
    /// before copy counts were recorded).
    pub fn blob_copies(&self, digest: &str) -> Result<Option<u16>> {
        self.get(CF_PLACEMENT, &copies_key(digest))
    }

    /// Every node's last reported capacity.
    pub fn capacities(&self) -> Result<BTreeMap<NodeId, NodeCapacity>> {
        let mut out = BTreeMap::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_PLACEMENT)?, CAPACITY_PREFIX) {
            let (key, value) = item.map_err(err)?;
            let Some(id) = key.strip_prefix(CAPACITY_PREFIX) else {
                break;
            };
            let id: [u8; 8] = id.try_into().map_err(err)?;
            out.insert(NodeId::from_be_bytes(id), bincode::deserialize(&value).map_err(err)?);
        }
        Ok(out)
    }

    /// The garbage collector's epoch and pending mark.
    pub fn gc_state(&self) -> Result<GcState> {
        Ok(self.get(CF_GC, KEY_GC_STATE)?.unwrap_or_default())
    }

    /// The digests marked by the pending GC epoch and not referenced since.
    pub fn gc_candidates(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_GC)?, GC_CANDIDATE_PREFIX) {
            let (key, _) = item.map_err(err)?;
            let Some(digest) = key.strip_prefix(GC_CANDIDATE_PREFIX) else {
                break;
            };
            out.push(String::from_utf8(digest.to_vec()).map_err(err)?);
        }
        Ok(out)
    }

    /// True when `digest` is a candidate of the pending GC epoch.
    pub fn is_gc_candidate(&self, digest: &str) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_GC)?, gc_candidate_key(digest))
            .map_err(err)?
            .is_some())
    }

    /// Manifests in `repo` whose `subject` is `subject`.
    pub fn referrers(&self, repo: &str, subject: &str) -> Result<Vec<ReferrerRecord>> {
        let mut prefix = join(&[repo, subject]);
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(CF_REFERRERS)?, &prefix) {
            let (key, value) = item.map_err(err)?;
            if !key.starts_with(&prefix) {
                break;
            }
            out.push(bincode::deserialize(&value).map_err(err)?);
        }
        Ok(out)
    }
}

/// The lifecycle layer: images, their tags and statistics, retention, immutability, limits and
/// usage.
impl CatalogReader {
    fn lifecycle<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        self.get(CF_LIFECYCLE, key)
    }

    fn scan(&self, cf: &str, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>) -> Result<()> {
        for item in self.db.prefix_iterator_cf(self.cf(cf)?, prefix) {
            let (key, value) = item.map_err(err)?;
            if !key.starts_with(prefix) || !f(&key[prefix.len()..], &value)? {
                break;
            }
        }
        Ok(())
    }

    pub fn image(&self, repo: &str, digest: &str) -> Result<Option<ImageRecord>> {
        self.get(CF_IMAGES, &join(&[repo, digest]))
    }

    /// Every image of `repo` with its tags, in digest order.
    pub fn images(&self, repo: &str) -> Result<Vec<ImageFacts>> {
        let prefix = repo_prefix(repo);
        let mut images: Vec<ImageFacts> = Vec::new();
        self.scan(CF_IMAGES, &prefix, |digest, value| {
            images.push(ImageFacts {
                digest: String::from_utf8(digest.to_vec()).map_err(err)?,
                record: bincode::deserialize(value).map_err(err)?,
                tags: Vec::new(),
            });
            Ok(true)
        })?;
        let mut at = 0usize;
        self.scan(CF_IMAGE_TAGS, &prefix, |rest, _| {
            let (digest, tag) = split_pair(rest)?;
            while at < images.len() && images[at].digest.as_str() < digest {
                at += 1;
            }
            if let Some(image) = images.get_mut(at).filter(|i| i.digest == digest) {
                image.tags.push(tag.to_string());
            }
            Ok(true)
        })?;
        Ok(images)
    }

    /// The tags of one image, in order.
    pub fn image_tags(&self, repo: &str, digest: &str) -> Result<Vec<String>> {
        let mut tags = Vec::new();
        self.scan(CF_IMAGE_TAGS, &image_tags_prefix(repo, digest), |tag, _| {
            tags.push(String::from_utf8(tag.to_vec()).map_err(err)?);
            Ok(true)
        })?;
        Ok(tags)
    }

    /// This cluster's region settings, peers and replication rules.
    pub fn regions(&self) -> Result<crate::regions::Regions> {
        Ok(self.get(CF_IDENTITY, KEY_REGIONS)?.unwrap_or_default())
    }

    /// What `target` acknowledged of `repo` under `rule`: tag (or `@digest` for a referrer) →
    /// digest.
    pub fn replication_marks(
        &self,
        rule: &str,
        target: &str,
        repo: &str,
    ) -> Result<BTreeMap<String, crate::regions::MarkRecord>> {
        let mut marks = BTreeMap::new();
        self.scan(
            CF_LIFECYCLE,
            &replication_marks_prefix(rule, target, repo),
            |key, value| {
                let key = String::from_utf8(key.to_vec()).map_err(err)?;
                marks.insert(key, bincode::deserialize(value).map_err(err)?);
                Ok(true)
            },
        )?;
        Ok(marks)
    }

    /// When the pull-through cache last checked `tag` of `repo` upstream.
    pub fn cache_validated(&self, repo: &str, tag: &str) -> Result<Option<u64>> {
        self.get(CF_LIFECYCLE, &cache_validated_key(repo, tag))
    }

    /// Repositories with changes not yet replicated, with their change numbers (at most `limit`).
    pub fn replication_changes(&self, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        self.scan(CF_LIFECYCLE, CHANGES_PREFIX, |repo, value| {
            out.push((
                String::from_utf8(repo.to_vec()).map_err(err)?,
                bincode::deserialize(value).map_err(err)?,
            ));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Up to `limit` audit records of `scope` that `filter` accepts, newest first, starting
    /// after the cursor `after` (a page's `next`). A page reads at most 100,000 records, so a
    /// filter that matches little returns a short page with a cursor to go on from.
    pub fn audit_page(
        &self,
        scope: &str,
        after: Option<&str>,
        limit: usize,
        filter: &crate::audit::AuditFilter,
    ) -> Result<crate::audit::AuditPage> {
        const MAX_READ: usize = 100_000;
        let prefix = crate::audit::scope_prefix(scope);
        let mut start = prefix.clone();
        if let Some(after) = after {
            start.extend_from_slice(&hex::decode(after).map_err(|_| err("bad audit cursor"))?);
            start.push(0); // strictly after
        }
        let mut page = crate::audit::AuditPage::default();
        let mut read = 0;
        let mut last_key = None;
        let mut iter = self
            .db
            .iterator_cf(self.cf(CF_LIFECYCLE)?, IteratorMode::From(&start, Direction::Forward));
        for item in iter.by_ref() {
            let (key, value) = item.map_err(err)?;
            if !key.starts_with(&prefix) {
                return Ok(page); // the scope's last record was read
            }
            read += 1;
            let event: crate::audit::AuditEvent = bincode::deserialize(&value).map_err(err)?;
            if filter.matches(&event) {
                page.events.push(event);
            }
            last_key = Some(key[prefix.len()..].to_vec());
            if page.events.len() >= limit || read >= MAX_READ {
                break;
            }
        }
        // Stopped early: more may follow when another record of the scope does.
        let more = iter
            .next()
            .transpose()
            .map_err(err)?
            .is_some_and(|(key, _)| key.starts_with(&prefix));
        page.next = last_key.filter(|_| more).map(hex::encode);
        Ok(page)
    }

    /// How many referrers name `digest` as their subject in `repo`.
    pub fn referrer_count(&self, repo: &str, digest: &str) -> Result<usize> {
        let mut prefix = join(&[repo, digest]);
        prefix.push(0);
        let mut n = 0;
        self.scan(CF_REFERRERS, &prefix, |_, _| {
            n += 1;
            Ok(true)
        })?;
        Ok(n)
    }

    /// Repository names of tenancy `ns`, in order.
    pub fn tenancy_repos(&self, ns: &str) -> Result<Vec<String>> {
        let prefix = format!("{ns}/");
        let mut out = Vec::new();
        self.scan(CF_REPOS, prefix.as_bytes(), |rest, _| {
            out.push(format!("{prefix}{}", String::from_utf8_lossy(rest)));
            Ok(true)
        })?;
        Ok(out)
    }

    pub fn retention_policy(&self, ns: &str, name: &str) -> Result<Option<RetentionPolicy>> {
        self.lifecycle(&retention_policy_key(ns, name))
    }

    /// Every retention policy a tenancy defined, by name (the global one only when changed).
    pub fn retention_policies(&self, ns: &str) -> Result<Vec<(String, RetentionPolicy)>> {
        let mut out = Vec::new();
        self.scan(CF_LIFECYCLE, &retention_policies_prefix(ns), |name, value| {
            out.push((
                String::from_utf8_lossy(name).into_owned(),
                bincode::deserialize(value).map_err(err)?,
            ));
            Ok(true)
        })?;
        Ok(out)
    }

    /// The policy `repo` was assigned (`None`: the global one).
    pub fn retention_assignment(&self, repo: &str) -> Result<Option<String>> {
        self.lifecycle(&retention_assign_key(repo))
    }

    /// The policy governing `repo`, with its name.
    pub fn effective_retention(&self, repo: &str) -> Result<(String, RetentionPolicy)> {
        let ns = tenancy_of(repo);
        resolve_policy(self.retention_assignment(repo)?, |name| self.retention_policy(ns, name))
    }

    /// Repositories of `ns` assigned a policy of their own, with its name.
    pub fn retention_assignments(&self, ns: &str) -> Result<Vec<(String, String)>> {
        let prefix = retention_assign_prefix(ns);
        let mut out = Vec::new();
        self.scan(CF_LIFECYCLE, &prefix, |rest, value| {
            let repo = format!("{ns}/{}", String::from_utf8_lossy(rest));
            out.push((repo, bincode::deserialize(value).map_err(err)?));
            Ok(true)
        })?;
        Ok(out)
    }

    /// A repository's own immutability setting and its tenancy's default.
    pub fn immutability(&self, repo: &str) -> Result<(Option<ImmutableTags>, Option<ImmutableTags>)> {
        Ok((
            self.lifecycle(&immutable_repo_key(repo))?,
            self.lifecycle(&immutable_tenancy_key(tenancy_of(repo)))?,
        ))
    }

    /// The immutability setting governing `repo`.
    pub fn effective_immutability(&self, repo: &str) -> Result<Option<ImmutableTags>> {
        let (own, tenancy) = self.immutability(repo)?;
        Ok(own.or(tenancy))
    }

    pub fn tenancy_immutability(&self, ns: &str) -> Result<Option<ImmutableTags>> {
        self.lifecycle(&immutable_tenancy_key(ns))
    }

    pub fn limits(&self, ns: &str) -> Result<TenancyLimits> {
        Ok(self.lifecycle(&limits_key(ns))?.unwrap_or_default())
    }

    pub fn repo_usage(&self, repo: &str) -> Result<RepoUsage> {
        Ok(self.lifecycle(&repo_usage_key(repo))?.unwrap_or_default())
    }

    pub fn tenancy_usage(&self, ns: &str) -> Result<TenancyUsage> {
        Ok(self.lifecycle(&tenancy_usage_key(ns))?.unwrap_or_default())
    }

    /// The number of the last pull-count batch applied from `node` (0: none).
    pub fn pull_seq(&self, node: NodeId) -> Result<u64> {
        Ok(self.lifecycle(&pull_seq_key(node))?.unwrap_or(0))
    }

    /// The number of the last audit batch applied from `node`.
    pub fn audit_seq(&self, node: NodeId) -> Result<u64> {
        Ok(self.lifecycle(&crate::audit::seq_key(node))?.unwrap_or(0))
    }

    pub fn repo_info(&self, repo: &str) -> Result<RepoInfo> {
        Ok(self.lifecycle(&repo_info_key(repo))?.unwrap_or_default())
    }

    /// A tenancy's retention deletions, oldest first, at most `limit` after the `skip` first.
    pub fn deletions(&self, ns: &str, skip: usize, limit: usize) -> Result<(Vec<DeletionRecord>, bool)> {
        let mut out = Vec::new();
        let mut seen = 0usize;
        let mut more = false;
        self.scan(CF_LIFECYCLE, &deletion_log_prefix(ns), |_, value| {
            seen += 1;
            if seen <= skip {
                return Ok(true);
            }
            if out.len() == limit {
                more = true;
                return Ok(false);
            }
            out.push(bincode::deserialize(value).map_err(err)?);
            Ok(true)
        })?;
        Ok((out, more))
    }
}

/// Splits a `first\0second` key.
fn split_pair(key: &[u8]) -> Result<(&str, &str)> {
    let at = key
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| ReadError("composite key without separator".into()))?;
    let first = std::str::from_utf8(&key[..at]).map_err(err)?;
    let second = std::str::from_utf8(&key[at + 1..]).map_err(err)?;
    Ok((first, second))
}

/// Webhooks: endpoints, where their queues stand, and the queued events.
impl CatalogReader {
    fn endpoint_views(&self, prefix: &[u8]) -> Result<Vec<crate::webhooks::EndpointView>> {
        use crate::webhooks::*;
        let mut found = Vec::new();
        self.scan(CF_LIFECYCLE, prefix, |suffix, value| {
            let mut key = prefix[ENDPOINT_PREFIX.len()..].to_vec();
            key.extend_from_slice(suffix);
            let (ns, name) = split_name(&key).ok_or_else(|| err("webhook key without a name"))?;
            found.push((ns, name, bincode::deserialize::<WebhookEndpoint>(value).map_err(err)?));
            Ok(true)
        })?;
        found
            .into_iter()
            .map(|(ns, name, endpoint)| {
                let state = self.lifecycle(&state_key(&ns, &name))?.unwrap_or_default();
                Ok(EndpointView {
                    ns,
                    name,
                    endpoint,
                    state,
                })
            })
            .collect()
    }

    /// The signing keys a tenancy trusts, by name.
    pub fn signing_keys(&self, ns: &str) -> Result<crate::signing::TenancyKeys> {
        Ok(self.lifecycle(&crate::signing::keys_key(ns))?.unwrap_or_default())
    }

    /// Every tenancy's signing keys (for the at-rest pass), by namespace.
    pub fn all_signing_keys(&self) -> Result<Vec<(String, crate::signing::TenancyKeys)>> {
        let mut found = Vec::new();
        self.scan(CF_LIFECYCLE, crate::signing::KEYS_PREFIX, |ns, value| {
            let ns = std::str::from_utf8(ns).map_err(err)?.to_string();
            found.push((ns, bincode::deserialize(value).map_err(err)?));
            Ok(true)
        })?;
        Ok(found)
    }

    /// A tenancy's verification policies, by name.
    pub fn verification_policies(&self, ns: &str) -> Result<crate::signing::TenancyPolicies> {
        Ok(self.lifecycle(&crate::signing::policies_key(ns))?.unwrap_or_default())
    }

    /// Images waiting for an inventory, in key order after `after` (from the start when
    /// `None`): (repository, digest), at most `limit`. A scanner walks the queue with it as a
    /// cursor, so images it cannot take now (another node's, or failing) never hide the rest.
    pub fn scan_queue(&self, after: Option<(&str, &str)>, limit: usize) -> Result<Vec<(String, String)>> {
        let last = after.map(|(repo, digest)| format!("{repo}\0{digest}"));
        let page = self.list_with_prefix(CF_LIFECYCLE, crate::scanning::QUEUE_PREFIX, last.as_deref(), limit)?;
        page.items
            .into_iter()
            .map(|key| {
                key.split_once('\0')
                    .map(|(repo, digest)| (repo.to_string(), digest.to_string()))
                    .ok_or_else(|| err("scan queue key"))
            })
            .collect()
    }

    /// Whether an image is waiting for its inventory.
    pub fn scan_queued(&self, repo: &str, digest: &str) -> Result<bool> {
        Ok(self
            .lifecycle::<u64>(&crate::scanning::queue_key(repo, digest))?
            .is_some())
    }

    /// The active vulnerability database (generation 0: none imported).
    pub fn vulndb(&self) -> Result<crate::scanning::VulnDbInfo> {
        Ok(self.lifecycle(crate::scanning::ACTIVE_KEY)?.unwrap_or_default())
    }

    /// The advisories of one package in database `generation`.
    pub fn advisories(&self, generation: u64, ecosystem: &str, name: &str) -> Result<Vec<crate::scanning::Advisory>> {
        Ok(self
            .lifecycle(&crate::scanning::package_key(generation, ecosystem, name))?
            .unwrap_or_default())
    }

    /// A tenancy's webhook endpoints, by name.
    pub fn webhooks(&self, ns: &str) -> Result<Vec<crate::webhooks::EndpointView>> {
        self.endpoint_views(&crate::webhooks::endpoints_prefix(ns))
    }

    /// Every tenancy's webhook endpoints (at most 20 per tenancy).
    pub fn all_webhooks(&self) -> Result<Vec<crate::webhooks::EndpointView>> {
        self.endpoint_views(crate::webhooks::ENDPOINT_PREFIX)
    }

    pub fn webhook(&self, ns: &str, name: &str) -> Result<Option<crate::webhooks::EndpointView>> {
        use crate::webhooks::*;
        let Some(endpoint) = self.lifecycle::<WebhookEndpoint>(&endpoint_key(ns, name))? else {
            return Ok(None);
        };
        let state = self.lifecycle(&state_key(ns, name))?.unwrap_or_default();
        Ok(Some(EndpointView {
            ns: ns.to_string(),
            name: name.to_string(),
            endpoint,
            state,
        }))
    }

    /// The oldest queued events of an endpoint with their numbers: at most `max` events and
    /// about `max_bytes` of them (always at least one).
    pub fn webhook_queue(
        &self,
        ns: &str,
        name: &str,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, crate::webhooks::WebhookEvent)>> {
        let prefix = crate::webhooks::queue_prefix(ns, name);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        self.scan(CF_LIFECYCLE, &prefix, |suffix, value| {
            if out.len() >= max || (bytes >= max_bytes && !out.is_empty()) {
                return Ok(false);
            }
            let seq = u64::from_be_bytes(suffix.try_into().map_err(|_| err("bad webhook queue key"))?);
            bytes = bytes.saturating_add(value.len());
            out.push((seq, bincode::deserialize(value).map_err(err)?));
            Ok(true)
        })?;
        Ok(out)
    }

    /// The number of the last pull-event batch applied from `node` (0: none).
    pub fn webhook_pull_seq(&self, node: NodeId) -> Result<u64> {
        Ok(self.lifecycle(&crate::webhooks::seq_key(node))?.unwrap_or(0))
    }
}
