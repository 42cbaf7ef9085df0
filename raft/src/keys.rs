//! Key layout of the catalog's column families.
//!
//! Composite keys join their parts with a NUL byte, which no repository name, tag or digest may
//! contain, so a prefix scan over `repo\0` sees exactly one repository's entries in sorted order.

pub const CF_LOGS: &str = "logs";
pub const CF_RAFT: &str = "raft";
pub const CF_SM_META: &str = "sm_meta";
pub const CF_REPOS: &str = "repos";
pub const CF_TAGS: &str = "tags";
pub const CF_MANIFESTS: &str = "manifests";
pub const CF_BLOBS: &str = "blobs";
pub const CF_REPO_BLOBS: &str = "repo_blobs";
pub const CF_REFERRERS: &str = "referrers";
pub const CF_IDENTITY: &str = "identity";
/// Garbage collection: `state` (epoch, mark time) and one `cand\0<digest>` key per candidate.
pub const CF_GC: &str = "gc";
/// Shard layouts of erasure-coded blobs, by digest.
pub const CF_CODED: &str = "coded";
/// Placement inputs: the cluster's redundancy policy (`policy`), each repository's own
/// (`policy\0<repo>`), the copy count of replicated blobs (`copies\0<digest>`) and the nodes'
/// reported capacities (`capacity\0<id, big-endian>`).
pub const CF_PLACEMENT: &str = "placement";

/// What the catalog knows of each image beyond its manifest (`ImageRecord`), by `repo\0digest`.
pub const CF_IMAGES: &str = "images";
/// The tags of each image, `repo\0digest\0tag` (the reverse of `tags`).
pub const CF_IMAGE_TAGS: &str = "image_tags";
/// Lifecycle settings and counters: retention policies (`policy\0<ns>\0<name>`) and their
/// assignment (`assign\0<repo>`), immutable tags (`immutable\0repo\0<repo>`,
/// `immutable\0tenancy\0<ns>`), limits (`limits\0<ns>`), usage (`usage\0repo\0<repo>`,
/// `usage\0tenancy\0<ns>`), description and readme (`info\0<repo>`) and the retention
/// deletion log (`deleted\0<ns>\0<ms, big-endian>\0<repo>\0<digest>`) and the last pull-count
/// batch applied from each node (`pullseq\0<id, big-endian>`).
pub const CF_LIFECYCLE: &str = "lifecycle";

/// The column families holding replicated catalog state (what a snapshot contains).
pub const CATALOG_CFS: [&str; 13] = [
    CF_REPOS,
    CF_TAGS,
    CF_MANIFESTS,
    CF_BLOBS,
    CF_REPO_BLOBS,
    CF_REFERRERS,
    CF_IDENTITY,
    CF_GC,
    CF_CODED,
    CF_PLACEMENT,
    CF_IMAGES,
    CF_IMAGE_TAGS,
    CF_LIFECYCLE,
];

/// The key of an image's tag in the reverse index.
pub fn image_tag_key(repo: &str, digest: &str, tag: &str) -> Vec<u8> {
    join(&[repo, digest, tag])
}

/// `repo\0digest\0`: the prefix of one image's tags.
pub fn image_tags_prefix(repo: &str, digest: &str) -> Vec<u8> {
    let mut key = join(&[repo, digest]);
    key.push(0);
    key
}

pub fn retention_policy_key(ns: &str, name: &str) -> Vec<u8> {
    join(&["policy", ns, name])
}

/// `policy\0<ns>\0`: every retention policy of a tenancy.
pub fn retention_policies_prefix(ns: &str) -> Vec<u8> {
    let mut key = join(&["policy", ns]);
    key.push(0);
    key
}

pub fn retention_assign_key(repo: &str) -> Vec<u8> {
    join(&["assign", repo])
}

/// `assign\0<ns>/`: the policy assignments of a tenancy's repositories.
pub fn retention_assign_prefix(ns: &str) -> Vec<u8> {
    let mut key = join(&["assign", ns]);
    key.push(b'/');
    key
}

pub fn immutable_repo_key(repo: &str) -> Vec<u8> {
    join(&["immutable", "repo", repo])
}

pub fn immutable_tenancy_key(ns: &str) -> Vec<u8> {
    join(&["immutable", "tenancy", ns])
}

pub fn limits_key(ns: &str) -> Vec<u8> {
    join(&["limits", ns])
}

pub fn repo_usage_key(repo: &str) -> Vec<u8> {
    join(&["usage", "repo", repo])
}

pub fn tenancy_usage_key(ns: &str) -> Vec<u8> {
    join(&["usage", "tenancy", ns])
}

/// The last pull-count batch applied from a node.
pub fn pull_seq_key(node: u64) -> Vec<u8> {
    let mut key = join(&["pullseq", ""]);
    key.extend_from_slice(&node.to_be_bytes());
    key
}

pub fn repo_info_key(repo: &str) -> Vec<u8> {
    join(&["info", repo])
}

/// `deleted\0<ns>\0`: a tenancy's retention deletion log, oldest first.
pub fn deletion_log_prefix(ns: &str) -> Vec<u8> {
    let mut key = join(&["deleted", ns]);
    key.push(0);
    key
}

pub fn deletion_log_key(ns: &str, at_ms: u64, repo: &str, digest: &str) -> Vec<u8> {
    let mut key = deletion_log_prefix(ns);
    key.extend_from_slice(&at_ms.to_be_bytes());
    key.push(0);
    key.extend_from_slice(&join(&[repo, digest]));
    key
}

pub const KEY_CLUSTER_POLICY: &[u8] = b"policy";
pub const REPO_POLICY_PREFIX: &[u8] = b"policy\0";
pub const COPIES_PREFIX: &[u8] = b"copies\0";
pub const CAPACITY_PREFIX: &[u8] = b"capacity\0";

fn prefixed(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(rest);
    key
}

/// The key of a repository's own redundancy policy.
pub fn repo_policy_key(repo: &str) -> Vec<u8> {
    prefixed(REPO_POLICY_PREFIX, repo.as_bytes())
}

/// The key of a replicated blob's target copy count.
pub fn copies_key(digest: &str) -> Vec<u8> {
    prefixed(COPIES_PREFIX, digest.as_bytes())
}

/// The key of a node's reported capacity.
pub fn capacity_key(node: u64) -> Vec<u8> {
    prefixed(CAPACITY_PREFIX, &node.to_be_bytes())
}

pub const KEY_GC_STATE: &[u8] = b"state";
pub const GC_CANDIDATE_PREFIX: &[u8] = b"cand\0";

/// The key of one GC candidate.
pub fn gc_candidate_key(digest: &str) -> Vec<u8> {
    let mut key = GC_CANDIDATE_PREFIX.to_vec();
    key.extend_from_slice(digest.as_bytes());
    key
}

pub const KEY_IDENTITY: &[u8] = b"state";
/// The [`crate::regions::Regions`] value, beside the identity state.
pub const KEY_REGIONS: &[u8] = b"regions";

/// The counter numbering replication changes, in `lifecycle`.
pub const CHANGE_SEQ_KEY: &[u8] = b"changeseq";

/// `changed\0<repo>`: a repository with changes not yet replicated (value: change number).
pub fn change_key(repo: &str) -> Vec<u8> {
    join(&["changed", repo])
}

/// The prefix of every queued change.
pub const CHANGES_PREFIX: &[u8] = b"changed\0";

/// `cached\0<repo>\0<tag>`: when a pull-through cache last checked the tag upstream.
pub fn cache_validated_key(repo: &str, tag: &str) -> Vec<u8> {
    join(&["cached", repo, tag])
}

/// A replication mark: `repl\0<rule>\0<target>\0<repo>\0<tag or @digest>` in `lifecycle`.
pub fn replication_mark_key(rule: &str, target: &str, repo: &str, key: &str) -> Vec<u8> {
    join(&["repl", rule, target, repo, key])
}

/// `repl\0<rule>\0<target>\0<repo>\0`: the marks of one repository.
pub fn replication_marks_prefix(rule: &str, target: &str, repo: &str) -> Vec<u8> {
    let mut key = join(&["repl", rule, target, repo]);
    key.push(0);
    key
}

pub const KEY_VOTE: &[u8] = b"vote";
pub const KEY_COMMITTED: &[u8] = b"committed";
pub const KEY_LAST_PURGED: &[u8] = b"last_purged";
pub const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub const KEY_MEMBERSHIP: &[u8] = b"membership";
/// Set while a snapshot is being installed (its id); see `snapshot.rs`.
pub const KEY_INSTALLING: &[u8] = b"installing";

/// Joins key parts with NUL separators.
pub fn join(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// `repo\0`: the prefix of every entry of one repository.
pub fn repo_prefix(repo: &str) -> Vec<u8> {
    let mut key = join(&[repo]);
    key.push(0);
    key
}

/// Log index as a big-endian key, so the log sorts by index.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}
