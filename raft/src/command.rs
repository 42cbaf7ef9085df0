//! The commands the catalog log carries, the records they leave in the state machine, and the
//! deterministic answers applying them gives.
//!
//! Commands carry everything apply needs (including the proposer's clock reading), so that every
//! replica computes the same state from the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::identity::{IdentityCommand, IdentityRejection};
use crate::lifecycle::{DeletionUnit, ImmutableTags, PullCount, RetentionPolicy, Scope, TenancyLimits};
use crate::redundancy::{NodeCapacity, RedundancyPolicy};
use crate::regions::{RegionCommand, RegionRejection};
use crate::types::NodeId;

/// A change to the catalog. Digests are `algorithm:hex` strings validated by the proposer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CatalogCommand {
    /// A blob's bytes are durable on `holders`; link it into `repo` (creating the repo).
    LinkBlob {
        repo: String,
        digest: String,
        size: u64,
        holders: Vec<NodeId>,
        now_ms: u64,
    },
    /// Store a manifest in `repo` and optionally point `tag` at it. Rejected when a blob or child
    /// manifest it references is not in the repo at apply time.
    PutManifest {
        repo: String,
        digest: String,
        manifest: ManifestRecord,
        tag: Option<String>,
        now_ms: u64,
    },
    /// Store a manifest in `repo` and point every one of `tags` at it, all or none (a manifest
    /// PUT by digest with `?tag=` parameters); at most [`MAX_TAGS_PER_PUT`] tags.
    PutManifestTags {
        repo: String,
        digest: String,
        manifest: ManifestRecord,
        tags: Vec<String>,
        now_ms: u64,
    },
    /// Remove a tag (the manifest stays).
    DeleteTag { repo: String, tag: String, now_ms: u64 },
    /// Remove a manifest, every tag that points at it and its referrer entry.
    DeleteManifest { repo: String, digest: String },
    /// Remove a blob's link from a repo (bytes are reclaimed by garbage collection).
    UnlinkBlob { repo: String, digest: String },
    /// Create an empty repository explicitly.
    CreateRepo {
        repo: String,
        compartment: Option<String>,
        public: bool,
        now_ms: u64,
    },
    /// Change a repository's visibility and/or compartment.
    UpdateRepo {
        repo: String,
        public: Option<bool>,
        compartment: Option<Option<String>>,
    },
    /// Delete a repository with all its tags, manifests and blob links.
    DeleteRepo { repo: String },
    /// A change to tenancies, users, groups, policies, tokens or signing keys.
    Identity(IdentityCommand),
    /// Repair: replace a blob's holders with `holders`, only while they still are `expected`
    /// (compare-and-set, so a record changed meanwhile is left alone).
    SetHolders {
        digest: String,
        expected: Vec<NodeId>,
        holders: Vec<NodeId>,
    },
    /// Link a blob that is already stored into `repo` (cross-repository mount). Unlike
    /// [`CatalogCommand::LinkBlob`] it never creates the record: it is rejected when the blob has
    /// been garbage collected meanwhile.
    MountBlob { repo: String, digest: String, now_ms: u64 },
    /// GC phase 1 (mark): `candidates` are unreferenced blobs; starts GC epoch `epoch` when no
    /// other mark is pending. Any later command that references a candidate removes it.
    GcMark {
        epoch: u64,
        candidates: Vec<String>,
        now_ms: u64,
    },
    /// GC phase 2 (sweep): deletes the records (and the listed repository links) of the `blobs`
    /// that are still candidates of `epoch`, then ends the epoch.
    GcSweep { epoch: u64, blobs: Vec<SweptBlob> },
    /// An erasure-coded blob's shards are durable where `layout` says; link it into `repo`
    /// (creating the record and its layout unless the blob is already stored).
    LinkCoded {
        repo: String,
        digest: String,
        size: u64,
        layout: CodedLayout,
        now_ms: u64,
    },
    /// Repair of a coded blob: replace its shard holders, only while they still are `expected`.
    SetShards {
        digest: String,
        expected: Vec<Option<NodeId>>,
        shards: Vec<Option<NodeId>>,
    },
    /// Set (`Some`) or clear (`None`) the redundancy policy of `repo`, or with `repo: None` the
    /// cluster default. A repository without a policy of its own uses the default. Rejected for
    /// an unknown repository.
    SetRedundancy {
        repo: Option<String>,
        policy: Option<RedundancyPolicy>,
    },
    /// A blob's bytes are durable on `holders`, placed for `copies` copies; link it into `repo`
    /// (creating the repo). The first durable layout of a blob wins: when the blob is already
    /// stored (replicated or coded), it is only linked, and its target copy count stays.
    LinkReplicas {
        repo: String,
        digest: String,
        size: u64,
        holders: Vec<NodeId>,
        copies: u16,
        now_ms: u64,
    },
    /// Node `node` measured its disk: placement weighs it by `capacity.free`.
    ReportCapacity { node: NodeId, capacity: NodeCapacity },
    /// Pulls counted by node `node` since its last flush (at most
    /// [`crate::lifecycle::MAX_PULLS_PER_ENTRY`]); images deleted meanwhile are skipped. `seq`
    /// grows with every batch a node sends: a batch whose `seq` is not above the node's last
    /// applied one is a retry of a batch already counted and changes nothing (exactly once).
    RecordPulls {
        node: NodeId,
        seq: u64,
        pulls: Vec<PullCount>,
    },
    /// Create or replace (`Some`) or delete (`None`) a tenancy's named retention policy. Deleting
    /// a policy returns its repositories to the tenancy's global policy; deleting the global
    /// policy makes it keep everything again.
    SetRetentionPolicy {
        namespace: String,
        name: String,
        policy: Option<RetentionPolicy>,
    },
    /// Assign a repository a policy of its tenancy (`None`: back to the global policy).
    AssignRetention { repo: String, policy: Option<String> },
    /// Set or clear the immutable-tag setting of a repository or a tenancy's default.
    SetImmutableTags {
        scope: Scope,
        setting: Option<ImmutableTags>,
    },
    /// Set (`Some`) or reset to the defaults (`None`) a tenancy's limits.
    SetLimits {
        namespace: String,
        limits: Option<TenancyLimits>,
    },
    /// Change a repository's description and/or readme.
    SetRepoInfo {
        repo: String,
        description: Option<String>,
        readme: Option<String>,
    },
    /// Delete what a retention evaluation decided, unit by unit, each only while every member
    /// still has the generation it was judged at and carries no exempt or frozen tag; changed
    /// units are skipped. Rejected whole when the repository is no longer governed by the policy
    /// `policy` with exactly the rules `rules` it was judged under. Every deletion is logged.
    RetentionDelete {
        repo: String,
        policy: String,
        rules: RetentionPolicy,
        units: Vec<DeletionUnit>,
        now_ms: u64,
    },
    /// GC phase 1 continued: more candidates of the epoch `epoch` that a [`CatalogCommand::GcMark`]
    /// opened (a mark of many blobs is split to keep every entry small). The sweep then waits
    /// its grace period from this, the latest, part.
    GcMarkMore {
        epoch: u64,
        candidates: Vec<String>,
        now_ms: u64,
    },
    /// GC phase 2 in parts: deletes like [`CatalogCommand::GcSweep`] but keeps the epoch open
    /// for the next part; the last part is a `GcSweep`, which ends it.
    GcSweepPart { epoch: u64, blobs: Vec<SweptBlob> },
    /// Regions, peers, replication rules and marks (`regions.rs`).
    Regions(RegionCommand),
    /// Applies `then` (a `PutManifest` naming `tag`, or a `DeleteTag` of it) only while `tag` of
    /// `repo` points at `expected` (`None`: does not exist): an HTTP `If-Match` on a tag, how
    /// cross-region replication keeps a tag from ever moving backwards in its target.
    TagIf {
        repo: String,
        tag: String,
        expected: Option<String>,
        then: Box<CatalogCommand>,
    },
    /// Audit events answered by node `node` since its last flush (at most
    /// [`crate::audit::MAX_AUDIT_PER_ENTRY`]); like `RecordPulls`, a `seq` not above the node's
    /// last applied one is a retry and changes nothing.
    RecordAudit {
        node: NodeId,
        seq: u64,
        events: Vec<crate::audit::AuditEvent>,
    },
    /// Deletes audit records older than `before_ms` (at most
    /// [`crate::audit::MAX_PRUNE_PER_ENTRY`] per entry; the leader's pass repeats).
    PruneAudit { before_ms: u64 },
    /// A change to webhook endpoints or their queues.
    Webhooks(crate::webhooks::WebhookCommand),
    /// A change to a tenancy's trusted signing keys or verification policies.
    Signing(crate::signing::SigningCommand),
    /// The scan queue and the vulnerability database.
    Scanning(crate::scanning::ScanCommand),
    /// A manifest push or a manifest or tag deletion (possibly under a `TagIf`) made through
    /// the API, with who made it: applying it queues its webhook events.
    Attributed {
        origin: crate::webhooks::EventOrigin,
        then: Box<CatalogCommand>,
    },
    /// Several writes of the push path committed in one entry (group commit on the leader, see
    /// `write_batch`): each is applied in order as if it were its own entry, a rejected one
    /// changing nothing, and answered in [`EntryAnswer::Batch`]. Never nested.
    Batch(Vec<CatalogCommand>),
}

/// Most tags one manifest PUT may apply.
pub const MAX_TAGS_PER_PUT: usize = 32;

/// Candidates or swept blobs per GC command: a digest is about 71 bytes, a swept blob names its
/// repositories too, so a part stays far below `node::MAX_COMMAND_BYTES`.
pub const GC_BATCH: usize = 10_000;

/// Where the shards of an erasure-coded blob live: `k` data and `m` parity shards, striped in
/// `chunk`-byte chunks; `shards[i]` holds shard `i` (`None`: lost, to be rebuilt by repair).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CodedLayout {
    pub k: u16,
    pub m: u16,
    pub chunk: u32,
    pub shards: Vec<Option<NodeId>>,
}

impl CodedLayout {
    /// The distinct nodes holding at least one shard (a coded blob's `holders`).
    pub fn holders(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for id in self.shards.iter().flatten() {
            if !out.contains(id) {
                out.push(*id);
            }
        }
        out
    }
}

/// A blob the GC sweep deletes, with the repositories it is linked into.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SweptBlob {
    pub digest: String,
    pub repos: Vec<String>,
}

/// The garbage collector's fence: the current epoch and when its mark committed (`None`: no mark
/// pending). Candidates are kept one key each beside it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct GcState {
    pub epoch: u64,
    pub marked_ms: Option<u64>,
}

/// The answer to one applied command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CatalogResponse {
    Applied,
    Rejected(Rejection),
}

/// What applying one Raft entry answered: its command's answer, or a batch's answers (one per
/// command of a [`CatalogCommand::Batch`], in its order). Kept apart from [`CatalogResponse`]
/// so that a caller of `propose`, which always gets its own command's answer, never sees a
/// batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum EntryAnswer {
    One(CatalogResponse),
    Batch(Vec<CatalogResponse>),
}

/// Why a command changed nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("blob {0} is not in the repository")]
    BlobUnknown(String),
    #[error("manifest {0} is not in the repository")]
    ManifestUnknown(String),
    #[error("tag {0} is not in the repository")]
    TagUnknown(String),
    #[error("repository is not known")]
    RepoUnknown,
    #[error("repository already exists")]
    RepoExists,
    #[error(transparent)]
    Identity(#[from] IdentityRejection),
    /// A compare-and-set (repair's holder change, a GC epoch) found the state changed meanwhile.
    #[error("the record changed meanwhile: {0}")]
    Stale(String),
    /// A tenancy limit (repositories, images per repository, stored bytes) would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// The tag is immutable: it cannot move to another manifest or be deleted.
    #[error("tag {tag} in {repo} is immutable ({rule}); push a new tag instead")]
    TagImmutable { repo: String, tag: String, rule: String },
    /// A command out of bounds (too many entries, a reference to nothing).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Region(#[from] RegionRejection),
    /// Identity is written only in the home region.
    #[error("identity is managed in the home region {home}; make this change there")]
    NotHome { home: String },
    /// A `TagIf` found the tag elsewhere.
    #[error("tag {tag} is {actual}, not {expected}")]
    PreconditionFailed {
        tag: String,
        expected: String,
        actual: String,
    },
}

/// A repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RepoRecord {
    pub created_ms: u64,
    pub public: bool,
    /// The compartment holding the repository; `None` is the tenancy's root compartment.
    pub compartment: Option<String>,
}

/// A blob's size and the nodes holding its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobRecord {
    pub size: u64,
    pub holders: Vec<NodeId>,
    pub created_ms: u64,
}

/// A manifest as pushed: its exact bytes plus what the registry needs to know about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestRecord {
    pub media_type: String,
    pub body: Vec<u8>,
    /// Blobs (config, layers) that must be in the repo.
    pub blobs: Vec<String>,
    /// Child manifests (of an index) that must be in the repo.
    pub manifests: Vec<String>,
    /// The `subject` digest, when this manifest refers to another one.
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub created_ms: u64,
}

/// One entry of a subject's referrers list (an OCI descriptor).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReferrerRecord {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}
