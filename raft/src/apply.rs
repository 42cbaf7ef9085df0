//! Applying one catalog command: one function per command over a [`Txn`], so each command's
//! checks and effects read in one screen. A command is applied whole or not at all: on a
//! rejection the state machine throws the transaction away.
//!
//! The bookkeeping every command shares lives here too, in one place each: linking a blob into a
//! repository (and counting its bytes), creating a repository on first push (within the
//! tenancy's repository limit), moving tags (the reverse index and each image's tagged/untagged
//! times) and removing an image. Lifecycle commands (pulls, retention, limits) are in
//! `apply_lifecycle.rs`.

use crate::command::*;
use crate::keys::*;
use crate::lifecycle::*;
use crate::state_machine::SharedIdentity;
use crate::txn::{Txn, TxnError};
use crate::types::NodeId;

/// The tags cosign's tag scheme hangs off an image, after `<alg>-<hex>`: its signatures,
/// attestations and SBOM.
const COSIGN_TAG_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

pub type Applied = Result<CatalogResponse, TxnError>;

pub(crate) use CatalogResponse::Applied as Done;

pub fn rejected(r: Rejection) -> Applied {
    Ok(CatalogResponse::Rejected(r))
}

pub struct Applier<'a> {
    pub tx: Txn,
    pub identity: &'a SharedIdentity,
}

/// Stops the command with `rejection` when the check found one.
macro_rules! check {
    ($e:expr) => {
        if let Some(r) = $e? {
            return rejected(r);
        }
    };
}

impl Applier<'_> {
    pub fn apply(&mut self, cmd: CatalogCommand) -> Applied {
        use CatalogCommand as C;
        match cmd {
            C::LinkBlob {
                repo,
                digest,
                size,
                holders,
                now_ms,
            } => {
                check!(self.ensure_repo(&repo, now_ms));
                self.add_holders(&digest, size, holders, now_ms)?;
                check!(self.link_to_repo(&repo, &digest));
                Ok(Done)
            }
            C::PutManifest {
                repo,
                digest,
                manifest,
                tag,
                now_ms,
            } => self.put_manifest(repo, digest, manifest, tag, now_ms),
            C::PutManifestTags {
                repo,
                digest,
                manifest,
                tags,
                now_ms,
            } => {
                if tags.is_empty() || tags.len() > MAX_TAGS_PER_PUT {
                    return rejected(Rejection::Invalid(format!(
                        "a manifest PUT applies 1 to {MAX_TAGS_PER_PUT} tags"
                    )));
                }
                // A refusal of any tag (immutable, a limit) refuses the entry: none is applied.
                for tag in tags {
                    let answer =
                        self.put_manifest(repo.clone(), digest.clone(), manifest.clone(), Some(tag), now_ms)?;
                    if answer != Done {
                        return Ok(answer);
                    }
                }
                Ok(Done)
            }
            C::DeleteTag { repo, tag, now_ms } => self.delete_tag(&repo, &tag, now_ms),
            C::DeleteManifest { repo, digest } => {
                if !self.tx.exists(CF_MANIFESTS, &join(&[&repo, &digest]))? {
                    return rejected(Rejection::ManifestUnknown(digest));
                }
                for tag in self.image_tags(&repo, &digest)? {
                    check!(self.frozen(&repo, &tag));
                }
                self.remove_image(&repo, &digest)?;
                Ok(Done)
            }
            C::UnlinkBlob { repo, digest } => {
                if !self.tx.exists(CF_REPO_BLOBS, &join(&[&repo, &digest]))? {
                    return rejected(Rejection::BlobUnknown(digest));
                }
                self.unlink_from_repo(&repo, &digest)?;
                Ok(Done)
            }
            C::CreateRepo {
                repo,
                compartment,
                public,
                now_ms,
            } => {
                if self.tx.exists(CF_REPOS, repo.as_bytes())? {
                    return rejected(Rejection::RepoExists);
                }
                check!(self.ensure_repo(&repo, now_ms));
                let record = RepoRecord {
                    created_ms: now_ms,
                    public,
                    compartment,
                };
                self.tx.put(CF_REPOS, repo.as_bytes(), &record)?;
                Ok(Done)
            }
            C::UpdateRepo {
                repo,
                public,
                compartment,
            } => {
                let Some(mut record) = self.tx.get::<RepoRecord>(CF_REPOS, repo.as_bytes())? else {
                    return rejected(Rejection::RepoUnknown);
                };
                if let Some(public) = public {
                    record.public = public;
                }
                if let Some(compartment) = compartment {
                    record.compartment = compartment;
                }
                self.tx.put(CF_REPOS, repo.as_bytes(), &record)?;
                Ok(Done)
            }
            C::DeleteRepo { repo } => self.delete_repo(&repo),
            C::Identity(cmd) => self.identity_command(cmd),
            C::Regions(cmd) => self.region_command(cmd),
            C::TagIf {
                repo,
                tag,
                expected,
                then,
            } => self.tag_if(repo, tag, expected, *then),
            C::Webhooks(cmd) => self.webhook_command(cmd),
            C::Signing(cmd) => self.signing_command(cmd),
            C::Scanning(cmd) => self.scan_command(cmd),
            C::Attributed { origin, then } => self.attributed(origin, *then),
            // Only an entry's own payload may be a batch (the state machine unpacks it).
            C::Batch(_) => rejected(Rejection::Invalid(
                "a batch of catalog writes inside another command".into(),
            )),
            C::SetHolders {
                digest,
                expected,
                holders,
            } => {
                let Some(mut record) = self.tx.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? else {
                    return rejected(Rejection::BlobUnknown(digest));
                };
                if record.holders != expected || self.tx.exists(CF_CODED, digest.as_bytes())? {
                    return rejected(Rejection::Stale(format!("holders of {digest} changed")));
                }
                record.holders = holders;
                self.tx.put(CF_BLOBS, digest.as_bytes(), &record)?;
                Ok(Done)
            }
            C::MountBlob { repo, digest, now_ms } => {
                if !self.tx.exists(CF_BLOBS, digest.as_bytes())? {
                    return rejected(Rejection::BlobUnknown(digest));
                }
                check!(self.ensure_repo(&repo, now_ms));
                check!(self.link_to_repo(&repo, &digest));
                Ok(Done)
            }
            C::GcMark {
                epoch,
                candidates,
                now_ms,
            } => self.gc_mark(epoch, candidates, now_ms),
            C::GcSweep { epoch, blobs } => self.gc_sweep(epoch, blobs, true),
            C::GcMarkMore {
                epoch,
                candidates,
                now_ms,
            } => self.gc_mark_more(epoch, candidates, now_ms),
            C::GcSweepPart { epoch, blobs } => self.gc_sweep(epoch, blobs, false),
            C::LinkCoded {
                repo,
                digest,
                size,
                layout,
                now_ms,
            } => {
                check!(self.ensure_repo(&repo, now_ms));
                if !self.tx.exists(CF_BLOBS, digest.as_bytes())? {
                    let record = BlobRecord {
                        size,
                        holders: layout.holders(),
                        created_ms: now_ms,
                    };
                    self.tx.put(CF_BLOBS, digest.as_bytes(), &record)?;
                    self.tx.put(CF_CODED, digest.as_bytes(), &layout)?;
                }
                check!(self.link_to_repo(&repo, &digest));
                Ok(Done)
            }
            C::SetShards {
                digest,
                expected,
                shards,
            } => {
                let (Some(mut record), Some(mut layout)) = (
                    self.tx.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())?,
                    self.tx.get::<CodedLayout>(CF_CODED, digest.as_bytes())?,
                ) else {
                    return rejected(Rejection::BlobUnknown(digest));
                };
                if layout.shards != expected || shards.len() != expected.len() {
                    return rejected(Rejection::Stale(format!("shards of {digest} changed")));
                }
                layout.shards = shards;
                record.holders = layout.holders();
                self.tx.put(CF_BLOBS, digest.as_bytes(), &record)?;
                self.tx.put(CF_CODED, digest.as_bytes(), &layout)?;
                Ok(Done)
            }
            C::SetRedundancy { repo, policy } => {
                let key = match &repo {
                    None => KEY_CLUSTER_POLICY.to_vec(),
                    Some(repo) => {
                        if !self.tx.exists(CF_REPOS, repo.as_bytes())? {
                            return rejected(Rejection::RepoUnknown);
                        }
                        repo_policy_key(repo)
                    }
                };
                match policy {
                    Some(policy) => self.tx.put(CF_PLACEMENT, &key, &policy)?,
                    None => self.tx.delete(CF_PLACEMENT, &key)?,
                }
                Ok(Done)
            }
            C::LinkReplicas {
                repo,
                digest,
                size,
                holders,
                copies,
                now_ms,
            } => {
                check!(self.ensure_repo(&repo, now_ms));
                // The first durable layout wins: a coded blob stays coded (this push's copies are
                // orphans the holders' scrub removes), a replicated one keeps its copy count.
                if !self.tx.exists(CF_CODED, digest.as_bytes())? && self.add_holders(&digest, size, holders, now_ms)? {
                    self.tx.put(CF_PLACEMENT, &copies_key(&digest), &copies)?;
                }
                check!(self.link_to_repo(&repo, &digest));
                Ok(Done)
            }
            C::ReportCapacity { node, capacity } => {
                self.tx.put(CF_PLACEMENT, &capacity_key(node), &capacity)?;
                Ok(Done)
            }
            C::RecordPulls { node, seq, pulls } => self.record_pulls(node, seq, pulls),
            C::RecordAudit { node, seq, events } => self.record_audit(node, seq, events),
            C::PruneAudit { before_ms } => self.prune_audit(before_ms),
            C::SetRetentionPolicy {
                namespace,
                name,
                policy,
            } => self.set_retention_policy(&namespace, &name, policy),
            C::AssignRetention { repo, policy } => self.assign_retention(&repo, policy),
            C::SetImmutableTags { scope, setting } => self.set_immutable_tags(scope, setting),
            C::SetLimits { namespace, limits } => {
                if let Some(why) = limits.as_ref().and_then(TenancyLimits::invalid) {
                    return rejected(Rejection::Invalid(why));
                }
                match limits {
                    Some(limits) => self.tx.put(CF_LIFECYCLE, &limits_key(&namespace), &limits)?,
                    None => self.tx.delete(CF_LIFECYCLE, &limits_key(&namespace))?,
                }
                Ok(Done)
            }
            C::SetRepoInfo {
                repo,
                description,
                readme,
            } => self.set_repo_info(&repo, description, readme),
            C::RetentionDelete {
                repo,
                policy,
                rules,
                units,
                now_ms,
            } => self.retention_delete(&repo, (&policy, &rules), units, now_ms),
        }
    }

    // ---- repositories and blob links ---------------------------------------------------------

    pub fn limits(&self, ns: &str) -> Result<TenancyLimits, TxnError> {
        Ok(self.tx.get(CF_LIFECYCLE, &limits_key(ns))?.unwrap_or_default())
    }

    pub fn repo_usage(&self, repo: &str) -> Result<RepoUsage, TxnError> {
        Ok(self.tx.get(CF_LIFECYCLE, &repo_usage_key(repo))?.unwrap_or_default())
    }

    pub fn tenancy_usage(&self, ns: &str) -> Result<TenancyUsage, TxnError> {
        Ok(self.tx.get(CF_LIFECYCLE, &tenancy_usage_key(ns))?.unwrap_or_default())
    }

    /// Changes a repository's counters (and its tenancy's stored bytes by the same amount).
    pub fn count(&mut self, repo: &str, change: impl FnOnce(&mut RepoUsage)) -> Result<(), TxnError> {
        let before = self.repo_usage(repo)?;
        let mut after = before;
        change(&mut after);
        self.tx.put(CF_LIFECYCLE, &repo_usage_key(repo), &after)?;
        if after.stored_bytes != before.stored_bytes {
            let ns = tenancy_of(repo);
            let mut tenancy = self.tenancy_usage(ns)?;
            tenancy.stored_bytes = (tenancy.stored_bytes + after.stored_bytes).saturating_sub(before.stored_bytes);
            self.tx.put(CF_LIFECYCLE, &tenancy_usage_key(ns), &tenancy)?;
        }
        Ok(())
    }

    /// Refuses `extra` more stored bytes in `repo`'s tenancy when that would pass its quota.
    fn within_quota(&self, repo: &str, extra: u64) -> Result<Option<Rejection>, TxnError> {
        let ns = tenancy_of(repo);
        let usage = self.tenancy_usage(ns)?;
        Ok(self
            .limits(ns)?
            .refuses_bytes(ns, &usage, extra)
            .map(Rejection::LimitExceeded))
    }

    /// Creates `repo` (private, in the root compartment) when missing, within its tenancy's
    /// repository limit.
    fn ensure_repo(&mut self, repo: &str, now_ms: u64) -> Result<Option<Rejection>, TxnError> {
        if self.tx.exists(CF_REPOS, repo.as_bytes())? {
            return Ok(None);
        }
        let ns = tenancy_of(repo);
        let mut usage = self.tenancy_usage(ns)?;
        if let Some(why) = self.limits(ns)?.refuses_repo(ns, &usage) {
            return Ok(Some(Rejection::LimitExceeded(why)));
        }
        usage.repos += 1;
        self.tx.put(CF_LIFECYCLE, &tenancy_usage_key(ns), &usage)?;
        let record = RepoRecord {
            created_ms: now_ms,
            public: false,
            compartment: None,
        };
        self.tx.put(CF_REPOS, repo.as_bytes(), &record)?;
        Ok(None)
    }

    /// A reference to `digest` fences it against a pending GC sweep: it stops being a candidate.
    fn unmark(&mut self, digest: &str) -> Result<(), TxnError> {
        self.tx.delete(CF_GC, &gc_candidate_key(digest))
    }

    /// Records that `holders` keep a copy of `digest`: adds them to its blob record, or creates
    /// the record. Returns whether the record is new.
    fn add_holders(&mut self, digest: &str, size: u64, holders: Vec<NodeId>, now_ms: u64) -> Result<bool, TxnError> {
        let (record, created) = match self.tx.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? {
            Some(mut existing) => {
                for h in holders {
                    if !existing.holders.contains(&h) {
                        existing.holders.push(h);
                    }
                }
                (existing, false)
            }
            None => (
                BlobRecord {
                    size,
                    holders,
                    created_ms: now_ms,
                },
                true,
            ),
        };
        self.tx.put(CF_BLOBS, digest.as_bytes(), &record)?;
        Ok(created)
    }

    /// Links `digest` into `repo` (counting its bytes there the first time, within the tenancy's
    /// quota), which also fences it against a pending GC sweep.
    fn link_to_repo(&mut self, repo: &str, digest: &str) -> Result<Option<Rejection>, TxnError> {
        let key = join(&[repo, digest]);
        if !self.tx.exists(CF_REPO_BLOBS, &key)? {
            let size = self
                .tx
                .get::<BlobRecord>(CF_BLOBS, digest.as_bytes())?
                .map_or(0, |r| r.size);
            if let Some(r) = self.within_quota(repo, size)? {
                return Ok(Some(r));
            }
            self.tx.put_raw(CF_REPO_BLOBS, &key, &[])?;
            self.count(repo, |u| u.stored_bytes = u.stored_bytes.saturating_add(size))?;
        }
        self.unmark(digest)?;
        Ok(None)
    }

    /// Removes `digest`'s link from `repo` and its bytes from the repository's usage.
    fn unlink_from_repo(&mut self, repo: &str, digest: &str) -> Result<(), TxnError> {
        let key = join(&[repo, digest]);
        if !self.tx.exists(CF_REPO_BLOBS, &key)? {
            return Ok(());
        }
        let size = self
            .tx
            .get::<BlobRecord>(CF_BLOBS, digest.as_bytes())?
            .map_or(0, |r| r.size);
        self.tx.delete(CF_REPO_BLOBS, &key)?;
        self.count(repo, |u| u.stored_bytes = u.stored_bytes.saturating_sub(size))
    }

    fn delete_repo(&mut self, repo: &str) -> Applied {
        if !self.tx.exists(CF_REPOS, repo.as_bytes())? {
            return rejected(Rejection::RepoUnknown);
        }
        self.note_change(repo)?;
        let usage = self.repo_usage(repo)?;
        let ns = tenancy_of(repo);
        let mut tenancy = self.tenancy_usage(ns)?;
        tenancy.repos = tenancy.repos.saturating_sub(1);
        tenancy.stored_bytes = tenancy.stored_bytes.saturating_sub(usage.stored_bytes);
        self.tx.put(CF_LIFECYCLE, &tenancy_usage_key(ns), &tenancy)?;
        self.tx.delete(CF_REPOS, repo.as_bytes())?;
        self.tx.delete(CF_PLACEMENT, &repo_policy_key(repo))?;
        for key in [
            repo_usage_key(repo),
            retention_assign_key(repo),
            immutable_repo_key(repo),
            repo_info_key(repo),
        ] {
            self.tx.delete(CF_LIFECYCLE, &key)?;
        }
        let prefix = repo_prefix(repo);
        for cf in [
            CF_TAGS,
            CF_MANIFESTS,
            CF_REPO_BLOBS,
            CF_REFERRERS,
            CF_IMAGES,
            CF_IMAGE_TAGS,
        ] {
            for (key, _) in self.tx.scan_committed(cf, &prefix)? {
                self.tx.delete(cf, &key)?;
            }
        }
        Ok(Done)
    }

    // ---- manifests, tags and images ----------------------------------------------------------

    pub fn image(&self, repo: &str, digest: &str) -> Result<Option<ImageRecord>, TxnError> {
        self.tx.get(CF_IMAGES, &join(&[repo, digest]))
    }

    fn put_image(&mut self, repo: &str, digest: &str, image: &ImageRecord) -> Result<(), TxnError> {
        self.tx.put(CF_IMAGES, &join(&[repo, digest]), image)
    }

    /// Bumps an image's generation (something now depends on it), when it has a record.
    fn touch_image(&mut self, repo: &str, digest: &str) -> Result<(), TxnError> {
        if let Some(mut image) = self.image(repo, digest)? {
            image.generation += 1;
            self.put_image(repo, digest, &image)?;
        }
        Ok(())
    }

    /// The tags an image carries, as this transaction sees them.
    pub fn image_tags(&self, repo: &str, digest: &str) -> Result<Vec<String>, TxnError> {
        let prefix = image_tags_prefix(repo, digest);
        Ok(self
            .tx
            .scan_keys(CF_IMAGE_TAGS, &prefix)?
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect())
    }

    /// The immutability setting that governs `repo`: its own, else its tenancy's default.
    pub fn immutability(&self, repo: &str) -> Result<Option<ImmutableTags>, TxnError> {
        match self.tx.get(CF_LIFECYCLE, &immutable_repo_key(repo))? {
            Some(own) => Ok(Some(own)),
            None => self.tx.get(CF_LIFECYCLE, &immutable_tenancy_key(tenancy_of(repo))),
        }
    }

    /// Refuses to move or delete `tag` when it is immutable.
    fn frozen(&self, repo: &str, tag: &str) -> Result<Option<Rejection>, TxnError> {
        let Some(setting) = self.immutability(repo)? else {
            return Ok(None);
        };
        if !setting.freezes(tag) {
            return Ok(None);
        }
        let rule = if setting.exempt.is_empty() {
            "immutable tags are on, with no exempt tags".to_string()
        } else {
            format!("immutable tags are on, exempt: {}", setting.exempt.join(", "))
        };
        Ok(Some(Rejection::TagImmutable {
            repo: repo.to_string(),
            tag: tag.to_string(),
            rule,
        }))
    }

    /// The image record of a manifest pushed for the first time: blob sizes and total size.
    fn new_image(&self, repo: &str, manifest: &ManifestRecord, now_ms: u64) -> Result<ImageRecord, TxnError> {
        let mut blobs = Vec::with_capacity(manifest.blobs.len());
        for digest in &manifest.blobs {
            let size = self
                .tx
                .get::<BlobRecord>(CF_BLOBS, digest.as_bytes())?
                .map_or(0, |r| r.size);
            if !blobs.iter().any(|(d, _): &(String, u64)| d == digest) {
                blobs.push((digest.clone(), size));
            }
        }
        let manifest_bytes = manifest.body.len() as u64;
        let mut size = manifest_bytes;
        let mut counted: Vec<&str> = Vec::new();
        for (digest, blob_size) in &blobs {
            counted.push(digest);
            size = size.saturating_add(*blob_size);
        }
        // An index: its children's manifests and their unique blobs.
        let children: Vec<ImageRecord> = manifest
            .manifests
            .iter()
            .filter_map(|c| self.image(repo, c).transpose())
            .collect::<Result<_, _>>()?;
        let mut seen: std::collections::HashSet<String> = counted.iter().map(|d| d.to_string()).collect();
        for child in &children {
            size = size.saturating_add(child.manifest_bytes);
            for (digest, blob_size) in &child.blobs {
                if seen.insert(digest.clone()) {
                    size = size.saturating_add(*blob_size);
                }
            }
        }
        Ok(ImageRecord {
            media_type: manifest.media_type.clone(),
            artifact_type: manifest.artifact_type.clone(),
            subject: manifest.subject.clone(),
            children: manifest.manifests.clone(),
            blobs,
            manifest_bytes,
            size,
            pushed_ms: now_ms,
            last_pushed_ms: now_ms,
            untagged_since_ms: Some(now_ms),
            generation: 1,
            ..Default::default()
        })
    }

    fn put_manifest(
        &mut self,
        repo: String,
        digest: String,
        manifest: ManifestRecord,
        tag: Option<String>,
        now_ms: u64,
    ) -> Applied {
        for blob in &manifest.blobs {
            if !self.tx.exists(CF_REPO_BLOBS, &join(&[&repo, blob]))? || !self.tx.exists(CF_BLOBS, blob.as_bytes())? {
                return rejected(Rejection::BlobUnknown(blob.clone()));
            }
        }
        for child in &manifest.manifests {
            if !self.tx.exists(CF_MANIFESTS, &join(&[&repo, child]))? {
                return rejected(Rejection::ManifestUnknown(child.clone()));
            }
        }
        for blob in &manifest.blobs {
            self.unmark(blob)?;
        }
        check!(self.ensure_repo(&repo, now_ms));
        let manifest_key = join(&[&repo, &digest]);
        let is_new = !self.tx.exists(CF_MANIFESTS, &manifest_key)?;
        let image = match self.image(&repo, &digest)? {
            Some(mut image) if !is_new => {
                image.last_pushed_ms = now_ms;
                image.generation += 1;
                image
            }
            _ => self.new_image(&repo, &manifest, now_ms)?,
        };
        if is_new {
            let ns = tenancy_of(&repo);
            let max = self.limits(ns)?.max_images_per_repo;
            let images = self.repo_usage(&repo)?.images;
            if images >= max {
                return rejected(Rejection::LimitExceeded(format!(
                    "repository {repo} has reached the limit of {max} images per repository of tenancy {ns} (it has {images})"
                )));
            }
            check!(self.within_quota(&repo, image.manifest_bytes));
            let bytes = image.manifest_bytes;
            self.count(&repo, |u| {
                u.images += 1;
                u.stored_bytes = u.stored_bytes.saturating_add(bytes);
            })?;
        }
        self.count(&repo, |u| u.last_push_ms = Some(now_ms))?;
        if let Some(subject) = &manifest.subject {
            let referrer = ReferrerRecord {
                media_type: manifest.media_type.clone(),
                digest: digest.clone(),
                size: manifest.body.len() as u64,
                artifact_type: manifest.artifact_type.clone(),
                annotations: manifest.annotations.clone(),
            };
            self.tx
                .put(CF_REFERRERS, &join(&[&repo, subject, &digest]), &referrer)?;
            if subject != &digest {
                self.touch_image(&repo, subject)?;
            }
        }
        for child in &manifest.manifests {
            if child != &digest {
                self.touch_image(&repo, child)?;
            }
        }
        self.put_image(&repo, &digest, &image)?;
        if let Some(tag) = &tag {
            check!(self.point_tag(&repo, tag, &digest, now_ms));
        }
        if tag.is_some() || manifest.subject.is_some() {
            self.note_change(&repo)?;
        }
        if is_new && manifest.subject.is_none() && crate::scanning::is_image_manifest(&manifest.media_type) {
            self.queue_scan(&repo, &digest, now_ms)?;
        }
        self.tx.put(CF_MANIFESTS, &manifest_key, &manifest)?;
        Ok(Done)
    }

    /// Points `tag` at `digest` (whose image record exists): refuses to move an immutable tag,
    /// keeps the reverse index and both images' tagged/untagged times.
    fn point_tag(&mut self, repo: &str, tag: &str, digest: &str, now_ms: u64) -> Result<Option<Rejection>, TxnError> {
        let tag_key = join(&[repo, tag]);
        let previous = self
            .tx
            .get_raw(CF_TAGS, &tag_key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        if let Some(previous) = &previous {
            if previous != digest {
                if let Some(r) = self.frozen(repo, tag)? {
                    return Ok(Some(r));
                }
                self.untag_image(repo, previous, tag, now_ms)?;
            }
        } else {
            self.count(repo, |u| u.tags += 1)?;
        }
        self.tx.put_raw(CF_TAGS, &tag_key, digest.as_bytes())?;
        self.tx.put_raw(CF_IMAGE_TAGS, &image_tag_key(repo, digest, tag), &[])?;
        if let Some(mut image) = self.image(repo, digest)? {
            image.last_tagged_ms = Some(now_ms);
            image.untagged_since_ms = None;
            image.generation += 1;
            self.put_image(repo, digest, &image)?;
        }
        Ok(None)
    }

    /// `tag` no longer names `digest`: drops it from the reverse index; the image becomes
    /// untagged when that was its last tag.
    fn untag_image(&mut self, repo: &str, digest: &str, tag: &str, now_ms: u64) -> Result<(), TxnError> {
        self.tx.delete(CF_IMAGE_TAGS, &image_tag_key(repo, digest, tag))?;
        if let Some(mut image) = self.image(repo, digest)? {
            image.last_untagged_ms = Some(now_ms);
            if self.image_tags(repo, digest)?.is_empty() {
                image.untagged_since_ms = Some(now_ms);
            }
            image.generation += 1;
            self.put_image(repo, digest, &image)?;
        }
        Ok(())
    }

    fn delete_tag(&mut self, repo: &str, tag: &str, now_ms: u64) -> Applied {
        let key = join(&[repo, tag]);
        let Some(target) = self.tx.get_raw(CF_TAGS, &key)? else {
            return rejected(Rejection::TagUnknown(tag.to_string()));
        };
        check!(self.frozen(repo, tag));
        let target = String::from_utf8_lossy(&target).into_owned();
        self.tx.delete(CF_TAGS, &key)?;
        self.untag_image(repo, &target, tag, now_ms)?;
        self.count(repo, |u| u.tags = u.tags.saturating_sub(1))?;
        self.note_change(repo)?;
        Ok(Done)
    }

    /// Removes an image and what is about it: its referrers (signatures, SBOMs, and their own
    /// referrers) and the manifests cosign's tag scheme attaches to it (`<alg>-<hex>.sig`,
    /// `.att`, `.sbom`). An artifact whose image is gone describes nothing, and left behind it
    /// would still count against the repository's limits.
    pub fn remove_image(&mut self, repo: &str, digest: &str) -> Result<(), TxnError> {
        let mut doomed = vec![digest.to_string()];
        // Tags are not content addresses: two `.sig` tags may point at each other's images.
        let mut seen = std::collections::BTreeSet::new();
        while let Some(next) = doomed.pop() {
            if !seen.insert(next.clone()) {
                continue;
            }
            let mut prefix = join(&[repo, &next]);
            prefix.push(0);
            for key in self.tx.scan_keys(CF_REFERRERS, &prefix)? {
                if let Some(referrer) = key.get(prefix.len()..).and_then(|d| std::str::from_utf8(d).ok()) {
                    doomed.push(referrer.to_string());
                }
            }
            for suffix in COSIGN_TAG_SUFFIXES {
                let tag = format!("{}{suffix}", next.replacen(':', "-", 1));
                if let Some(target) = self.tx.get_raw(CF_TAGS, &join(&[repo, &tag]))? {
                    if let Ok(target) = String::from_utf8(target) {
                        if target != next {
                            doomed.push(target);
                        }
                    }
                }
            }
            self.remove_one_image(repo, &next)?;
        }
        Ok(())
    }

    /// Removes one image: its manifest, its tags, its referrer entry, its record, and its share
    /// of the repository's counters. Blobs stay linked until GC finds them unreferenced.
    fn remove_one_image(&mut self, repo: &str, digest: &str) -> Result<(), TxnError> {
        let key = join(&[repo, digest]);
        let Some(manifest) = self.tx.get::<ManifestRecord>(CF_MANIFESTS, &key)? else {
            return Ok(());
        };
        self.note_change(repo)?;
        self.tx.delete(CF_MANIFESTS, &key)?;
        // A deleted image needs no inventory: the scan queue holds at most the images there are.
        self.tx
            .delete(CF_LIFECYCLE, &crate::scanning::queue_key(repo, digest))?;
        if let Some(subject) = &manifest.subject {
            self.tx.delete(CF_REFERRERS, &join(&[repo, subject, digest]))?;
        }
        let tags = self.image_tags(repo, digest)?;
        for tag in &tags {
            self.tx.delete(CF_TAGS, &join(&[repo, tag]))?;
            self.tx.delete(CF_IMAGE_TAGS, &image_tag_key(repo, digest, tag))?;
        }
        self.tx.delete(CF_IMAGES, &key)?;
        let bytes = manifest.body.len() as u64;
        let untagged = tags.len() as u64;
        self.count(repo, |u| {
            u.images = u.images.saturating_sub(1);
            u.tags = u.tags.saturating_sub(untagged);
            u.stored_bytes = u.stored_bytes.saturating_sub(bytes);
        })
    }

    // ---- garbage collection ------------------------------------------------------------------

    fn gc_mark(&mut self, epoch: u64, candidates: Vec<String>, now_ms: u64) -> Applied {
        let mut state: GcState = self.tx.get(CF_GC, KEY_GC_STATE)?.unwrap_or_default();
        if state.epoch != epoch || state.marked_ms.is_some() {
            return rejected(Rejection::Stale(format!("GC epoch {epoch} is not open")));
        }
        self.add_gc_candidates(&candidates)?;
        state.marked_ms = Some(now_ms);
        self.tx.put(CF_GC, KEY_GC_STATE, &state)?;
        Ok(Done)
    }

    fn gc_mark_more(&mut self, epoch: u64, candidates: Vec<String>, now_ms: u64) -> Applied {
        let mut state: GcState = self.tx.get(CF_GC, KEY_GC_STATE)?.unwrap_or_default();
        let Some(marked) = state.marked_ms.filter(|_| state.epoch == epoch) else {
            return rejected(Rejection::Stale(format!("GC epoch {epoch} has no mark to extend")));
        };
        self.add_gc_candidates(&candidates)?;
        state.marked_ms = Some(marked.max(now_ms));
        self.tx.put(CF_GC, KEY_GC_STATE, &state)?;
        Ok(Done)
    }

    fn add_gc_candidates(&mut self, candidates: &[String]) -> Result<(), TxnError> {
        for digest in candidates {
            // Only blobs that still exist can become candidates.
            if self.tx.exists(CF_BLOBS, digest.as_bytes())? {
                self.tx.put_raw(CF_GC, &gc_candidate_key(digest), &[])?;
            }
        }
        Ok(())
    }

    /// Deletes the `blobs` still candidates of `epoch`; the last part (`ends`) closes the epoch.
    fn gc_sweep(&mut self, epoch: u64, blobs: Vec<SweptBlob>, ends: bool) -> Applied {
        let mut state: GcState = self.tx.get(CF_GC, KEY_GC_STATE)?.unwrap_or_default();
        if state.epoch != epoch || state.marked_ms.is_none() {
            return rejected(Rejection::Stale(format!("GC epoch {epoch} has no mark")));
        }
        for blob in &blobs {
            // Still a candidate: nothing referenced or linked it since the mark.
            if !self.tx.exists(CF_GC, &gc_candidate_key(&blob.digest))? {
                continue;
            }
            for repo in &blob.repos {
                self.unlink_from_repo(repo, &blob.digest)?;
            }
            self.tx.delete(CF_BLOBS, blob.digest.as_bytes())?;
            self.tx.delete(CF_CODED, blob.digest.as_bytes())?;
            self.tx.delete(CF_PLACEMENT, &copies_key(&blob.digest))?;
            self.tx.delete(CF_GC, &gc_candidate_key(&blob.digest))?;
        }
        if !ends {
            return Ok(Done);
        }
        // The epoch ends: every candidate, swept or not, is dropped.
        for key in self.tx.scan_keys(CF_GC, GC_CANDIDATE_PREFIX)? {
            self.tx.delete(CF_GC, &key)?;
        }
        state.epoch += 1;
        state.marked_ms = None;
        self.tx.put(CF_GC, KEY_GC_STATE, &state)?;
        Ok(Done)
    }
}
