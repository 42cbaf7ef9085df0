//! The catalog state machine: applies committed commands to rocksdb, builds and installs
//! snapshots.
//!
//! Each entry is applied in one write batch together with the new `last_applied` log id, so the
//! catalog and its applied position never disagree after a crash. Writes are not fsynced here:
//! every entry applied is already durable in the log (same rocksdb WAL), and openraft re-applies
//! from `last_applied` on restart. Snapshots are files built from rocksdb checkpoints
//! (`snapshot.rs`).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use rocksdb::WriteBatch;
use serde::Serialize;

use crate::command::*;
use crate::db::Db;
use crate::identity::IdentityState;
use crate::keys::*;
use crate::read_cache::ReadCache;
use crate::snapshot::{SnapshotError, SnapshotFiles};
use crate::types::{Entry, NodeId, NodeInfo, StorageError, TypeConfig};

pub struct StateMachineStore {
    db: Db,
    snapshots: Arc<SnapshotFiles>,
    snapshot_seq: u64,
    identity: SharedIdentity,
    cache: Arc<ReadCache>,
}

/// The in-memory identity state, shared with every reader on this node.
pub type SharedIdentity = Arc<RwLock<IdentityState>>;

fn io_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    pub fn new(db: Db, snapshot_dir: PathBuf) -> Result<Self, std::io::Error> {
        let snapshots = SnapshotFiles::new(snapshot_dir)?;
        if snapshots
            .resume_interrupted_install(&db)
            .map_err(std::io::Error::other)?
        {
            tracing::warn!("a snapshot install was cut short by a crash; installed it again");
        }
        let store = StateMachineStore {
            db,
            snapshots: Arc::new(snapshots),
            snapshot_seq: 0,
            identity: Default::default(),
            cache: Default::default(),
        };
        store
            .reload_identity()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(store)
    }

    pub fn identity(&self) -> SharedIdentity {
        self.identity.clone()
    }

    pub fn read_cache(&self) -> Arc<ReadCache> {
        self.cache.clone()
    }

    /// Loads the persisted identity state into memory.
    fn reload_identity(&self) -> Result<(), StorageError> {
        let state: IdentityState = self.get(CF_IDENTITY, KEY_IDENTITY)?.unwrap_or_default();
        *self.identity.write().unwrap_or_else(|p| p.into_inner()) = state;
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StorageError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| io_err(std::io::Error::other(format!("column family {name} missing"))))
    }

    fn get<T: serde::de::DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.db.get_pinned_cf(self.cf(cf)?, key).map_err(io_err)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(bincode::deserialize(&bytes).map_err(io_err)?)),
        }
    }

    fn exists(&self, cf: &str, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.db.get_pinned_cf(self.cf(cf)?, key).map_err(io_err)?.is_some())
    }

    fn put<T: Serialize>(&self, batch: &mut WriteBatch, cf: &str, key: &[u8], value: &T) -> Result<(), StorageError> {
        batch.put_cf(self.cf(cf)?, key, bincode::serialize(value).map_err(io_err)?);
        Ok(())
    }

    fn ensure_repo(&self, batch: &mut WriteBatch, repo: &str, now_ms: u64) -> Result<(), StorageError> {
        let key = keys_repo(repo);
        if !self.exists(CF_REPOS, &key)? {
            self.put(
                batch,
                CF_REPOS,
                &key,
                &RepoRecord {
                    created_ms: now_ms,
                    public: false,
                    compartment: None,
                },
            )?;
        }
        Ok(())
    }

    /// A reference to `digest` fences it against a pending GC sweep: it stops being a candidate.
    fn unmark(&self, batch: &mut WriteBatch, digest: &str) -> Result<(), StorageError> {
        batch.delete_cf(self.cf(CF_GC)?, gc_candidate_key(digest));
        Ok(())
    }

    /// Records that `holders` keep a copy of `digest`: adds them to its blob record, or creates the
    /// record. Returns whether the record is new.
    fn add_holders(
        &self,
        batch: &mut WriteBatch,
        digest: &str,
        size: u64,
        holders: Vec<NodeId>,
        now_ms: u64,
    ) -> Result<bool, StorageError> {
        let (record, created) = match self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? {
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
        self.put(batch, CF_BLOBS, digest.as_bytes(), &record)?;
        Ok(created)
    }

    /// Links `digest` into `repo`, which also fences it against a pending GC sweep.
    fn link_to_repo(&self, batch: &mut WriteBatch, repo: &str, digest: &str) -> Result<(), StorageError> {
        batch.put_cf(self.cf(CF_REPO_BLOBS)?, join(&[repo, digest]), []);
        self.unmark(batch, digest)
    }

    /// Applies one command into `batch`; returns the answer for the proposer.
    fn apply_command(&self, batch: &mut WriteBatch, cmd: CatalogCommand) -> Result<CatalogResponse, StorageError> {
        use CatalogResponse::{Applied, Rejected};
        Ok(match cmd {
            CatalogCommand::LinkBlob {
                repo,
                digest,
                size,
                holders,
                now_ms,
            } => {
                self.ensure_repo(batch, &repo, now_ms)?;
                self.add_holders(batch, &digest, size, holders, now_ms)?;
                self.link_to_repo(batch, &repo, &digest)?;
                Applied
            }
            CatalogCommand::PutManifest {
                repo,
                digest,
                manifest,
                tag,
                now_ms,
            } => {
                for blob in &manifest.blobs {
                    if !self.exists(CF_REPO_BLOBS, &join(&[&repo, blob]))? || !self.exists(CF_BLOBS, blob.as_bytes())? {
                        return Ok(Rejected(Rejection::BlobUnknown(blob.clone())));
                    }
                }
                for blob in &manifest.blobs {
                    self.unmark(batch, blob)?;
                }
                for child in &manifest.manifests {
                    if !self.exists(CF_MANIFESTS, &join(&[&repo, child]))? {
                        return Ok(Rejected(Rejection::ManifestUnknown(child.clone())));
                    }
                }
                self.ensure_repo(batch, &repo, now_ms)?;
                if let Some(subject) = &manifest.subject {
                    let referrer = ReferrerRecord {
                        media_type: manifest.media_type.clone(),
                        digest: digest.clone(),
                        size: manifest.body.len() as u64,
                        artifact_type: manifest.artifact_type.clone(),
                        annotations: manifest.annotations.clone(),
                    };
                    self.put(batch, CF_REFERRERS, &join(&[&repo, subject, &digest]), &referrer)?;
                }
                if let Some(tag) = &tag {
                    batch.put_cf(self.cf(CF_TAGS)?, join(&[&repo, tag]), digest.as_bytes());
                }
                self.put(batch, CF_MANIFESTS, &join(&[&repo, &digest]), &manifest)?;
                Applied
            }
            CatalogCommand::DeleteTag { repo, tag } => {
                let key = join(&[&repo, &tag]);
                if !self.exists(CF_TAGS, &key)? {
                    return Ok(Rejected(Rejection::TagUnknown(tag)));
                }
                batch.delete_cf(self.cf(CF_TAGS)?, key);
                Applied
            }
            CatalogCommand::DeleteManifest { repo, digest } => {
                let key = join(&[&repo, &digest]);
                let Some(manifest) = self.get::<ManifestRecord>(CF_MANIFESTS, &key)? else {
                    return Ok(Rejected(Rejection::ManifestUnknown(digest)));
                };
                batch.delete_cf(self.cf(CF_MANIFESTS)?, &key);
                if let Some(subject) = &manifest.subject {
                    batch.delete_cf(self.cf(CF_REFERRERS)?, join(&[&repo, subject, &digest]));
                }
                let tags = self.cf(CF_TAGS)?;
                let prefix = repo_prefix(&repo);
                for item in self.db.prefix_iterator_cf(tags, &prefix) {
                    let (tag_key, target) = item.map_err(io_err)?;
                    if !tag_key.starts_with(&prefix) {
                        break;
                    }
                    if *target == *digest.as_bytes() {
                        batch.delete_cf(tags, &tag_key);
                    }
                }
                Applied
            }
            CatalogCommand::CreateRepo {
                repo,
                compartment,
                public,
                now_ms,
            } => {
                let key = keys_repo(&repo);
                if self.exists(CF_REPOS, &key)? {
                    return Ok(Rejected(Rejection::RepoExists));
                }
                self.put(
                    batch,
                    CF_REPOS,
                    &key,
                    &RepoRecord {
                        created_ms: now_ms,
                        public,
                        compartment,
                    },
                )?;
                Applied
            }
            CatalogCommand::UpdateRepo {
                repo,
                public,
                compartment,
            } => {
                let key = keys_repo(&repo);
                let Some(mut record) = self.get::<RepoRecord>(CF_REPOS, &key)? else {
                    return Ok(Rejected(Rejection::RepoUnknown));
                };
                if let Some(public) = public {
                    record.public = public;
                }
                if let Some(compartment) = compartment {
                    record.compartment = compartment;
                }
                self.put(batch, CF_REPOS, &key, &record)?;
                Applied
            }
            CatalogCommand::DeleteRepo { repo } => {
                if !self.exists(CF_REPOS, &keys_repo(&repo))? {
                    return Ok(Rejected(Rejection::RepoUnknown));
                }
                batch.delete_cf(self.cf(CF_REPOS)?, keys_repo(&repo));
                batch.delete_cf(self.cf(CF_PLACEMENT)?, repo_policy_key(&repo));
                let prefix = repo_prefix(&repo);
                for cf_name in [CF_TAGS, CF_MANIFESTS, CF_REPO_BLOBS, CF_REFERRERS] {
                    let cf = self.cf(cf_name)?;
                    for item in self.db.prefix_iterator_cf(cf, &prefix) {
                        let (key, _) = item.map_err(io_err)?;
                        if !key.starts_with(&prefix) {
                            break;
                        }
                        batch.delete_cf(cf, &key);
                    }
                }
                Applied
            }
            CatalogCommand::Identity(cmd) => {
                let mut identity = self.identity.write().unwrap_or_else(|p| p.into_inner());
                match identity.apply(cmd) {
                    Ok(()) => {
                        self.put(batch, CF_IDENTITY, KEY_IDENTITY, &*identity)?;
                        Applied
                    }
                    Err(r) => Rejected(Rejection::Identity(r)),
                }
            }
            CatalogCommand::SetHolders {
                digest,
                expected,
                holders,
            } => {
                let Some(mut record) = self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())? else {
                    return Ok(Rejected(Rejection::BlobUnknown(digest)));
                };
                if record.holders != expected || self.exists(CF_CODED, digest.as_bytes())? {
                    return Ok(Rejected(Rejection::Stale(format!("holders of {digest} changed"))));
                }
                record.holders = holders;
                self.put(batch, CF_BLOBS, digest.as_bytes(), &record)?;
                Applied
            }
            CatalogCommand::MountBlob { repo, digest, now_ms } => {
                if !self.exists(CF_BLOBS, digest.as_bytes())? {
                    return Ok(Rejected(Rejection::BlobUnknown(digest)));
                }
                self.ensure_repo(batch, &repo, now_ms)?;
                self.link_to_repo(batch, &repo, &digest)?;
                Applied
            }
            CatalogCommand::GcMark {
                epoch,
                candidates,
                now_ms,
            } => {
                let mut state: GcState = self.get(CF_GC, KEY_GC_STATE)?.unwrap_or_default();
                if state.epoch != epoch || state.marked_ms.is_some() {
                    return Ok(Rejected(Rejection::Stale(format!("GC epoch {epoch} is not open"))));
                }
                for digest in &candidates {
                    // Only blobs that still exist can become candidates.
                    if self.exists(CF_BLOBS, digest.as_bytes())? {
                        batch.put_cf(self.cf(CF_GC)?, gc_candidate_key(digest), []);
                    }
                }
                state.marked_ms = Some(now_ms);
                self.put(batch, CF_GC, KEY_GC_STATE, &state)?;
                Applied
            }
            CatalogCommand::GcSweep { epoch, blobs } => {
                let mut state: GcState = self.get(CF_GC, KEY_GC_STATE)?.unwrap_or_default();
                if state.epoch != epoch || state.marked_ms.is_none() {
                    return Ok(Rejected(Rejection::Stale(format!("GC epoch {epoch} has no mark"))));
                }
                for blob in &blobs {
                    // Still a candidate: nothing referenced or linked it since the mark.
                    if !self.exists(CF_GC, &gc_candidate_key(&blob.digest))? {
                        continue;
                    }
                    batch.delete_cf(self.cf(CF_BLOBS)?, blob.digest.as_bytes());
                    batch.delete_cf(self.cf(CF_CODED)?, blob.digest.as_bytes());
                    batch.delete_cf(self.cf(CF_PLACEMENT)?, copies_key(&blob.digest));
                    for repo in &blob.repos {
                        batch.delete_cf(self.cf(CF_REPO_BLOBS)?, join(&[repo, &blob.digest]));
                    }
                }
                // The epoch ends: every candidate, swept or not, is dropped.
                let gc = self.cf(CF_GC)?;
                for item in self.db.prefix_iterator_cf(gc, GC_CANDIDATE_PREFIX) {
                    let (key, _) = item.map_err(io_err)?;
                    if !key.starts_with(GC_CANDIDATE_PREFIX) {
                        break;
                    }
                    batch.delete_cf(gc, &key);
                }
                state.epoch += 1;
                state.marked_ms = None;
                self.put(batch, CF_GC, KEY_GC_STATE, &state)?;
                Applied
            }
            CatalogCommand::LinkCoded {
                repo,
                digest,
                size,
                layout,
                now_ms,
            } => {
                self.ensure_repo(batch, &repo, now_ms)?;
                if !self.exists(CF_BLOBS, digest.as_bytes())? {
                    let record = BlobRecord {
                        size,
                        holders: layout.holders(),
                        created_ms: now_ms,
                    };
                    self.put(batch, CF_BLOBS, digest.as_bytes(), &record)?;
                    self.put(batch, CF_CODED, digest.as_bytes(), &layout)?;
                }
                self.link_to_repo(batch, &repo, &digest)?;
                Applied
            }
            CatalogCommand::SetShards {
                digest,
                expected,
                shards,
            } => {
                let (Some(mut record), Some(mut layout)) = (
                    self.get::<BlobRecord>(CF_BLOBS, digest.as_bytes())?,
                    self.get::<CodedLayout>(CF_CODED, digest.as_bytes())?,
                ) else {
                    return Ok(Rejected(Rejection::BlobUnknown(digest)));
                };
                if layout.shards != expected || shards.len() != expected.len() {
                    return Ok(Rejected(Rejection::Stale(format!("shards of {digest} changed"))));
                }
                layout.shards = shards;
                record.holders = layout.holders();
                self.put(batch, CF_BLOBS, digest.as_bytes(), &record)?;
                self.put(batch, CF_CODED, digest.as_bytes(), &layout)?;
                Applied
            }
            CatalogCommand::SetRedundancy { repo, policy } => {
                let key = match &repo {
                    None => KEY_CLUSTER_POLICY.to_vec(),
                    Some(repo) => {
                        if !self.exists(CF_REPOS, &keys_repo(repo))? {
                            return Ok(Rejected(Rejection::RepoUnknown));
                        }
                        repo_policy_key(repo)
                    }
                };
                match policy {
                    Some(policy) => self.put(batch, CF_PLACEMENT, &key, &policy)?,
                    None => batch.delete_cf(self.cf(CF_PLACEMENT)?, key),
                }
                Applied
            }
            CatalogCommand::LinkReplicas {
                repo,
                digest,
                size,
                holders,
                copies,
                now_ms,
            } => {
                self.ensure_repo(batch, &repo, now_ms)?;
                // The first durable layout wins: a coded blob stays coded (this push's copies are
                // orphans the holders' scrub removes), a replicated one keeps its copy count.
                if !self.exists(CF_CODED, digest.as_bytes())?
                    && self.add_holders(batch, &digest, size, holders, now_ms)?
                {
                    self.put(batch, CF_PLACEMENT, &copies_key(&digest), &copies)?;
                }
                self.link_to_repo(batch, &repo, &digest)?;
                Applied
            }
            CatalogCommand::ReportCapacity { node, capacity } => {
                self.put(batch, CF_PLACEMENT, &capacity_key(node), &capacity)?;
                Applied
            }
            CatalogCommand::UnlinkBlob { repo, digest } => {
                let key = join(&[&repo, &digest]);
                if !self.exists(CF_REPO_BLOBS, &key)? {
                    return Ok(Rejected(Rejection::BlobUnknown(digest)));
                }
                batch.delete_cf(self.cf(CF_REPO_BLOBS)?, key);
                Applied
            }
        })
    }
}

fn keys_repo(repo: &str) -> Vec<u8> {
    repo.as_bytes().to_vec()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.snapshot_seq += 1;
        let (db, snapshots, seq) = (self.db.clone(), self.snapshots.clone(), self.snapshot_seq);
        let (meta, file) = tokio::task::spawn_blocking(move || snapshots.build(&db, seq))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>), StorageError> {
        let applied = self
            .get::<Option<LogId<NodeId>>>(CF_SM_META, KEY_LAST_APPLIED)?
            .flatten();
        let membership = self.get(CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CatalogResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        for entry in entries {
            let mut batch = WriteBatch::default();
            let touches_catalog = matches!(&entry.payload, EntryPayload::Normal(c) if !matches!(c, CatalogCommand::Identity(_) | CatalogCommand::ReportCapacity { .. }));
            let answer = match entry.payload {
                EntryPayload::Blank => CatalogResponse::Applied,
                EntryPayload::Normal(cmd) => self.apply_command(&mut batch, cmd)?,
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    self.put(&mut batch, CF_SM_META, KEY_MEMBERSHIP, &stored)?;
                    CatalogResponse::Applied
                }
            };
            self.put(&mut batch, CF_SM_META, KEY_LAST_APPLIED, &Some(entry.log_id))?;
            if touches_catalog {
                self.cache.write(|| self.db.write(batch)).map_err(io_err)?;
            } else {
                self.db.write(batch).map_err(io_err)?;
            }
            answers.push(answer);
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineStore {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            snapshot_seq: self.snapshot_seq + 1,
            identity: self.identity.clone(),
            cache: self.cache.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.snapshots.receiving_path();
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt;
        let signature = meta.signature();
        let failed = |e: &dyn std::fmt::Display| {
            StorageIOError::write_snapshot(Some(signature.clone()), &std::io::Error::other(e.to_string()))
        };
        // Chunks were written through tokio's file, which finishes writes in the background.
        snapshot.flush().await.map_err(|e| failed(&e))?;
        drop(snapshot);
        let (db, snapshots, owned_meta) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        let cache = self.cache.clone();
        let installed: Result<(), SnapshotError> =
            tokio::task::spawn_blocking(move || cache.write(|| snapshots.install_received(&db, &owned_meta)))
                .await
                .map_err(|e| failed(&e))?;
        installed.map_err(|e| failed(&e))?;
        self.reload_identity()
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let current = self
            .snapshots
            .open_current()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
