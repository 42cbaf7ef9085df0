//! Everything one run records, shared by the simulation driver and the client hosts (all of
//! which run on one thread): the event sequence counter that orders the run, the trace and its
//! hash, the register history of every tag, what was acknowledged, Raft leadership claims, the
//! counters the report shows and the invariant failures found.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use sha2::{Digest as _, Sha256};

use crate::linearizability::{Op, RegOp};

/// A tag: `(repository, tag)`.
pub type TagKey = (String, String);

/// An invariant that did not hold.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Failure {
    /// Which invariant (a stable label).
    pub invariant: String,
    pub detail: String,
}

/// A blob push that was answered 201.
#[derive(Debug, Clone)]
pub struct AckedBlob {
    pub repo: String,
    pub digest: String,
    /// Sim time (ms) at which its push started.
    pub pushed_at_ms: u64,
}

/// A manifest push that was answered 201.
#[derive(Debug, Clone)]
pub struct AckedManifest {
    pub repo: String,
    pub digest: String,
    pub body: bytes::Bytes,
}

/// The shared record of one run.
#[derive(Default)]
pub struct Shared {
    seq: Cell<u64>,
    trace_hash: RefCell<Sha256>,
    /// Trace lines, kept only when asked for (`--trace`).
    pub trace_lines: RefCell<Option<Vec<String>>>,
    registers: RefCell<BTreeMap<TagKey, Vec<Op>>>,
    interned: RefCell<HashMap<String, u32>>,
    pub acked_blobs: RefCell<Vec<AckedBlob>>,
    pub acked_manifests: RefCell<Vec<AckedManifest>>,
    /// Manifests some client tried to delete (whatever the answer): they may be gone.
    pub delete_attempted: RefCell<BTreeSet<(String, String)>>,
    /// Images a retention policy deleted (read from the deletion log by the verifier).
    pub retention_deleted: RefCell<BTreeSet<(String, String)>>,
    /// Acknowledged pushes and tags, per image, with their times (for the cooling check).
    pub touches: RefCell<Vec<crate::retention::Touch>>,
    /// Manifest GETs sent per repository, whatever their answer.
    pub pulls_sent: RefCell<BTreeMap<String, u64>>,
    /// What the webhook receiver got.
    pub webhooks: crate::webhooks::Seen,
    /// Terms in which each node claimed leadership.
    pub leader_claims: RefCell<BTreeMap<u64, BTreeSet<u64>>>,
    /// The leader most recently seen by the monitor (for faults aimed at the leader).
    pub leader: Cell<Option<u64>>,
    /// Sim time (ms) at which the cluster was formed.
    pub formed_at: Cell<Option<u64>>,
    /// Sim time (ms) at which every fault was healed.
    pub healed_at: Cell<Option<u64>>,
    pub workers_done: Cell<usize>,
    /// The members once the membership changes are done (node ids); the verifier checks these.
    pub final_members: RefCell<Option<Vec<u64>>>,
    pub verified: Cell<bool>,
    pub counters: RefCell<BTreeMap<String, u64>>,
    pub failures: RefCell<Vec<Failure>>,
}

/// The current simulated time in milliseconds (inside a host; 0 outside one).
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

impl Shared {
    pub fn new(keep_lines: bool) -> Shared {
        let shared = Shared::default();
        if keep_lines {
            *shared.trace_lines.borrow_mut() = Some(Vec::new());
        }
        shared
    }

    /// The next event number: every call, return, fault and check takes one, in the order the
    /// single simulation thread executes them, which is the order they happened in.
    pub fn tick(&self) -> u64 {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        n
    }

    /// Appends a line to the trace (and its hash).
    pub fn trace(&self, at_ms: u64, line: impl AsRef<str>) {
        let line = format!("{at_ms:>8}ms {}", line.as_ref());
        {
            let mut hash = self.trace_hash.borrow_mut();
            hash.update(line.as_bytes());
            hash.update(b"\n");
        }
        if let Some(lines) = self.trace_lines.borrow_mut().as_mut() {
            lines.push(line);
        }
    }

    /// The hash of the trace so far.
    pub fn trace_hash(&self) -> String {
        hex::encode(self.trace_hash.borrow().clone().finalize())
    }

    pub fn count(&self, key: impl Into<String>, by: u64) {
        *self.counters.borrow_mut().entry(key.into()).or_default() += by;
    }

    pub fn fail(&self, invariant: &str, detail: impl Into<String>) {
        let detail = detail.into();
        self.trace(now_ms(), format!("VIOLATION {invariant}: {detail}"));
        self.failures.borrow_mut().push(Failure {
            invariant: invariant.to_string(),
            detail,
        });
    }

    /// A small integer standing for a digest in register histories.
    pub fn intern(&self, digest: &str) -> u32 {
        let mut map = self.interned.borrow_mut();
        let next = map.len() as u32;
        *map.entry(digest.to_string()).or_insert(next)
    }

    /// Records an operation on a tag's register.
    pub fn register_op(&self, tag: &TagKey, op: RegOp, call: u64, ret: Option<u64>) {
        self.registers
            .borrow_mut()
            .entry(tag.clone())
            .or_default()
            .push(Op { call, ret, op });
    }

    /// Every tag's history.
    pub fn registers(&self) -> BTreeMap<TagKey, Vec<Op>> {
        self.registers.borrow().clone()
    }

    /// Blobs that GC must never collect: those referenced by an acknowledged manifest that no
    /// client tried to delete.
    /// Whether the manifest may be gone: a client tried to delete it, or a policy deleted it.
    pub fn maybe_deleted(&self, repo: &str, digest: &str) -> bool {
        let key = (repo.to_string(), digest.to_string());
        self.delete_attempted.borrow().contains(&key) || self.retention_deleted.borrow().contains(&key)
    }

    pub fn protected_blobs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for m in self.acked_manifests.borrow().iter() {
            if self.maybe_deleted(&m.repo, &m.digest) {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.body) else {
                continue;
            };
            let layers = v["layers"].as_array().cloned().unwrap_or_default();
            for d in std::iter::once(&v["config"]).chain(layers.iter()) {
                if let Some(d) = d["digest"].as_str() {
                    out.insert(d.to_string());
                }
            }
        }
        out
    }

    /// The digest an interned number stands for (for failure messages).
    pub fn digest_of(&self, id: u32) -> String {
        self.interned
            .borrow()
            .iter()
            .find(|(_, v)| **v == id)
            .map_or_else(|| format!("#{id}"), |(k, _)| k.clone())
    }
}
