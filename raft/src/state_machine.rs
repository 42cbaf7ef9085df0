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

use crate::apply::Applier;
use crate::command::*;
use crate::db::Db;
use crate::identity::IdentityState;
use crate::keys::*;
use crate::read_cache::ReadCache;
use crate::snapshot::{SnapshotError, SnapshotFiles};
use crate::timings::RaftTimings;
use crate::txn::Txn;
use crate::types::{Entry, NodeId, NodeInfo, StorageError, TypeConfig};

pub struct StateMachineStore {
    db: Db,
    snapshots: Arc<SnapshotFiles>,
    snapshot_seq: u64,
    identity: SharedIdentity,
    cache: Arc<ReadCache>,
    timings: RaftTimings,
}

/// The in-memory identity state, shared with every reader on this node.
pub type SharedIdentity = Arc<RwLock<IdentityState>>;

fn io_err<E: std::error::Error + 'static>(e: E) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    pub fn new(db: Db, snapshot_dir: PathBuf, timings: RaftTimings) -> Result<Self, std::io::Error> {
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
            timings,
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
}

/// Whether applying `cmd` may change what the read cache holds (repositories, tags, manifests,
/// blob links); pull counts, capacities, identity and lifecycle settings do not, so their
/// frequent entries leave the cache warm.
fn touches_cached_state(cmd: &CatalogCommand) -> bool {
    !matches!(
        cmd,
        CatalogCommand::Identity(_)
            | CatalogCommand::Regions(_)
            | CatalogCommand::ReportCapacity { .. }
            | CatalogCommand::RecordPulls { .. }
            | CatalogCommand::RecordAudit { .. }
            | CatalogCommand::PruneAudit { .. }
            | CatalogCommand::Webhooks(_)
            | CatalogCommand::Signing(_)
            | CatalogCommand::Scanning(_)
            | CatalogCommand::SetRetentionPolicy { .. }
            | CatalogCommand::AssignRetention { .. }
            | CatalogCommand::SetImmutableTags { .. }
            | CatalogCommand::SetLimits { .. }
            | CatalogCommand::SetRepoInfo { .. }
    )
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.snapshot_seq += 1;
        let started = std::time::Instant::now();
        let (db, snapshots, seq) = (self.db.clone(), self.snapshots.clone(), self.snapshot_seq);
        let (meta, file) = tokio::task::spawn_blocking(move || snapshots.build(&db, seq))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.timings
            .snapshot_build_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Ok(m) = file.metadata() {
            self.timings
                .snapshot_bytes
                .set(i64::try_from(m.len()).unwrap_or(i64::MAX));
        }
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<EntryAnswer>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut answers = Vec::new();
        for entry in entries {
            let touches_cached = matches!(&entry.payload, EntryPayload::Normal(c) if touches_cached_state(c));
            let mut tx = Txn::new(self.db.clone());
            let answer = match entry.payload {
                EntryPayload::Blank => EntryAnswer::One(CatalogResponse::Applied),
                EntryPayload::Normal(CatalogCommand::Batch(cmds)) => {
                    // Group commit: each command as if it were its own entry, in order.
                    let mut applier = Applier {
                        tx,
                        identity: &self.identity,
                    };
                    let mut answers = Vec::with_capacity(cmds.len());
                    for cmd in cmds {
                        applier.tx.savepoint();
                        let answer = applier.apply(cmd).map_err(io_err)?;
                        if matches!(answer, CatalogResponse::Rejected(_)) {
                            applier.tx.rollback();
                        }
                        answers.push(answer);
                    }
                    tx = applier.tx;
                    EntryAnswer::Batch(answers)
                }
                EntryPayload::Normal(cmd) => {
                    let mut applier = Applier {
                        tx,
                        identity: &self.identity,
                    };
                    let answer = applier.apply(cmd).map_err(io_err)?;
                    tx = applier.tx;
                    if matches!(answer, CatalogResponse::Rejected(_)) {
                        // A rejected command changes nothing but the applied position.
                        tx.rollback();
                    }
                    EntryAnswer::One(answer)
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    tx.put(CF_SM_META, KEY_MEMBERSHIP, &stored).map_err(io_err)?;
                    EntryAnswer::One(CatalogResponse::Applied)
                }
            };
            tx.put(CF_SM_META, KEY_LAST_APPLIED, &Some(entry.log_id))
                .map_err(io_err)?;
            let batch = tx.into_batch().map_err(io_err)?;
            if touches_cached {
                self.cache.write(|| self.db.write(batch)).map_err(io_err)?;
            } else {
                self.db.write(batch).map_err(io_err)?;
            }
            answers.push(answer);
        }
        self.timings.apply_seconds.observe(started.elapsed().as_secs_f64());
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineStore {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            snapshot_seq: self.snapshot_seq + 1,
            identity: self.identity.clone(),
            cache: self.cache.clone(),
            timings: self.timings.clone(),
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
        if let Ok(m) = snapshot.metadata().await {
            self.timings
                .snapshot_bytes
                .set(i64::try_from(m.len()).unwrap_or(i64::MAX));
        }
        drop(snapshot);
        let started = std::time::Instant::now();
        let (db, snapshots, owned_meta) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        let cache = self.cache.clone();
        let installed: Result<(), SnapshotError> =
            tokio::task::spawn_blocking(move || cache.write(|| snapshots.install_received(&db, &owned_meta)))
                .await
                .map_err(|e| failed(&e))?;
        installed.map_err(|e| failed(&e))?;
        self.timings
            .snapshot_install_seconds
            .observe(started.elapsed().as_secs_f64());
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
