//! The records of the image lifecycle layer: what the catalog knows about each image beyond its
//! manifest (sizes, push, tag and pull times, pull counts), the settings tenants give their
//! repositories (retention policies, immutable tags, description and readme), the limits the
//! cluster administrator sets per tenancy and the usage counted against them.
//!
//! These are catalog state, changed only through Raft, so every node shows the same images and
//! enforces the same limits; the decisions over them live in `retention.rs` (what to delete) and
//! in the state machine (limits and immutability, checked where concurrent writes are ordered).

use serde::{Deserialize, Serialize};

/// Milliseconds in a day (retention rules count in days).
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Default cooling period: an image pushed, tagged or pulled within it is never deleted by a
/// policy, so a policy can never race a CI pipeline that has just pushed (24 h, as Harbor and
/// OCIR users expect from "recent").
pub const DEFAULT_COOLING_MS: u64 = DAY_MS;

/// The retention policy every tenancy has; it keeps every image until a tenant changes it.
pub const GLOBAL_POLICY: &str = "global";

/// Default repositories per tenancy (OCIR's service limit per region).
pub const DEFAULT_MAX_REPOS: u64 = 500;
/// Default images per repository (OCIR's service limit).
pub const DEFAULT_MAX_IMAGES_PER_REPO: u64 = 100_000;

/// Most pull counts one `RecordPulls` entry carries (a node splits bigger flushes), which bounds
/// the entry at a few hundred KiB.
pub const MAX_PULLS_PER_ENTRY: usize = 2_000;
/// Most deletion units one `RetentionDelete` entry carries.
pub const MAX_UNITS_PER_ENTRY: usize = 200;
/// Most images (an image with its children and referrers) in one deletion unit.
pub const MAX_UNIT_MEMBERS: usize = 1_000;
/// Largest repository readme accepted (markdown), and description.
pub const MAX_README_BYTES: usize = 64 << 10;
pub const MAX_DESCRIPTION_BYTES: usize = 1 << 10;
/// Most exempt tag patterns in a policy or an immutability setting.
pub const MAX_PATTERNS: usize = 100;

/// What the catalog knows about one image (a manifest in a repository) besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ImageRecord {
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// The image this one refers to (a signature, SBOM, …), when it is a referrer.
    pub subject: Option<String>,
    /// Child manifests, when this is an index.
    pub children: Vec<String>,
    /// Config and layers with their sizes (empty for an index: its children carry theirs).
    pub blobs: Vec<(String, u64)>,
    /// The manifest's own length.
    pub manifest_bytes: u64,
    /// Manifest + config + layers; for an index its own manifest plus its children's manifests
    /// and their unique blobs, each counted once.
    pub size: u64,
    /// First push.
    pub pushed_ms: u64,
    /// Latest push of the same manifest (a re-push restarts the cooling period).
    pub last_pushed_ms: u64,
    pub last_tagged_ms: Option<u64>,
    pub last_untagged_ms: Option<u64>,
    /// Since when the image has carried no tag (`None` while it has one).
    pub untagged_since_ms: Option<u64>,
    pub last_pulled_ms: Option<u64>,
    pub pulls: u64,
    /// Bumped by every change that could save the image from a policy (push, tag change, pull,
    /// a new referrer or a new index using it): retention deletes compare-and-set on it.
    pub generation: u64,
}

impl ImageRecord {
    /// The latest time the image was pushed, tagged or pulled (what the cooling period counts
    /// from).
    pub fn last_activity_ms(&self) -> u64 {
        self.last_pushed_ms
            .max(self.last_tagged_ms.unwrap_or(0))
            .max(self.last_pulled_ms.unwrap_or(0))
    }
}

/// One node's pulls of one image since its last flush.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PullCount {
    pub repo: String,
    pub digest: String,
    pub count: u64,
    pub last_ms: u64,
}

/// A named retention (cleanup) policy of a tenancy. An image is deleted when at least one rule
/// matches it and nothing protects it (see `retention.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete images not pulled for this many days (counted from the push when never pulled).
    pub not_pulled_days: Option<u32>,
    /// Delete images that have carried no tag for this many days (counted from when the last tag
    /// went, or from the push when they never had one).
    pub untagged_days: Option<u32>,
    /// Delete every top-level image that is not among the newest K pushed.
    pub keep_newest: Option<u32>,
    /// Tags (exact names or globs such as `release-*`) whose images are never deleted.
    pub exempt_tags: Vec<String>,
    /// Images pushed, tagged or pulled within this period are never deleted.
    pub cooling_ms: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            not_pulled_days: None,
            untagged_days: None,
            keep_newest: None,
            exempt_tags: Vec::new(),
            cooling_ms: DEFAULT_COOLING_MS,
        }
    }
}

impl RetentionPolicy {
    /// True when the policy deletes nothing (the global policy's default).
    pub fn keeps_everything(&self) -> bool {
        self.not_pulled_days.is_none() && self.untagged_days.is_none() && self.keep_newest.is_none()
    }
}

/// Immutable tags of a repository (or a tenancy's default): once a tag names a manifest it can
/// neither move nor be deleted, except tags matching `exempt` (e.g. `latest`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ImmutableTags {
    pub enabled: bool,
    pub exempt: Vec<String>,
}

impl ImmutableTags {
    /// Whether `tag` is frozen by this setting.
    pub fn freezes(&self, tag: &str) -> bool {
        self.enabled && !matches_any(&self.exempt, tag)
    }
}

/// Where an immutability setting applies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Scope {
    Repo(String),
    Tenancy(String),
}

/// Service limits of a tenancy, set by the cluster administrator.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenancyLimits {
    pub max_repos: u64,
    pub max_images_per_repo: u64,
    /// `None`: unlimited.
    pub max_stored_bytes: Option<u64>,
    /// Requests per second each user of the tenancy may make on one node (`None`: the node's
    /// default).
    pub requests_per_second: Option<u32>,
}

impl Default for TenancyLimits {
    fn default() -> Self {
        TenancyLimits {
            max_repos: DEFAULT_MAX_REPOS,
            max_images_per_repo: DEFAULT_MAX_IMAGES_PER_REPO,
            max_stored_bytes: None,
            requests_per_second: None,
        }
    }
}

impl TenancyLimits {
    /// Why these limits cannot be set (`None`: they can). A zero would lock the tenancy out of
    /// what it already has; a request rate of zero would refuse every request.
    pub fn invalid(&self) -> Option<String> {
        let zero = [
            ("max_repos", self.max_repos == 0),
            ("max_images_per_repo", self.max_images_per_repo == 0),
            ("max_stored_bytes", self.max_stored_bytes == Some(0)),
            ("requests_per_second", self.requests_per_second == Some(0)),
        ];
        zero.iter()
            .find(|(_, is_zero)| *is_zero)
            .map(|(name, _)| format!("{name} must be at least 1 (null removes an optional limit)"))
    }

    /// Why tenancy `ns`, holding `usage`, cannot take one more repository (`None`: it can).
    pub fn refuses_repo(&self, ns: &str, usage: &TenancyUsage) -> Option<String> {
        (usage.repos >= self.max_repos).then(|| {
            format!(
                "tenancy {ns} has reached its limit of {} repositories (it has {})",
                self.max_repos, usage.repos
            )
        })
    }

    /// Why tenancy `ns`, holding `usage`, cannot store `extra` more bytes (`None`: it can).
    pub fn refuses_bytes(&self, ns: &str, usage: &TenancyUsage, extra: u64) -> Option<String> {
        let max = self.max_stored_bytes?;
        let used = usage.stored_bytes;
        (used.saturating_add(extra) > max).then(|| {
            format!("tenancy {ns} has reached its stored-bytes limit of {max} bytes (used {used}, {extra} more needed)")
        })
    }
}

/// What one repository holds, counted as the catalog changes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RepoUsage {
    pub images: u64,
    pub tags: u64,
    /// Blobs linked into the repository (each counted once) plus its manifests.
    pub stored_bytes: u64,
    pub last_push_ms: Option<u64>,
    pub pulls: u64,
    pub last_pull_ms: Option<u64>,
}

/// What one tenancy holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TenancyUsage {
    pub repos: u64,
    pub stored_bytes: u64,
}

/// A repository's description and readme (markdown), set by whoever may manage it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RepoInfo {
    pub description: String,
    pub readme: String,
}

/// Which retention rule matched an image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    Untagged,
    NotPulled,
    KeepNewest,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Untagged => "untagged",
            RuleKind::NotPulled => "not-pulled",
            RuleKind::KeepNewest => "keep-newest",
        }
    }
}

/// One image as a retention decision saw it: deleted only while its generation is unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JudgedImage {
    pub digest: String,
    pub generation: u64,
}

/// An image a policy deletes, with the images that go with it (children no kept index uses,
/// referrers of anything deleted): all of them or none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletionUnit {
    pub image: JudgedImage,
    pub rule: RuleKind,
    /// Children and referrers that go with the image.
    pub with: Vec<JudgedImage>,
    /// The tags the image carried when judged.
    pub tags: Vec<String>,
    /// Bytes the repository frees (blobs no kept image uses, plus the manifests).
    pub bytes_freed: u64,
}

/// A deletion a policy made, as the log keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeletionRecord {
    pub repo: String,
    pub policy: String,
    pub rule: RuleKind,
    pub digest: String,
    pub tags: Vec<String>,
    /// Children and referrers deleted with it.
    pub with: Vec<String>,
    pub bytes_freed: u64,
    pub deleted_ms: u64,
}

/// The policy governing a repository assigned `assigned` (`None`: the global one), looked up
/// with `lookup`; a policy that no longer exists means the global one.
pub fn resolve_policy<E>(
    assigned: Option<String>,
    lookup: impl Fn(&str) -> Result<Option<RetentionPolicy>, E>,
) -> Result<(String, RetentionPolicy), E> {
    let name = assigned.unwrap_or_else(|| GLOBAL_POLICY.to_string());
    Ok(match lookup(&name)? {
        Some(policy) => (name, policy),
        None if name == GLOBAL_POLICY => (name, RetentionPolicy::default()),
        None => (GLOBAL_POLICY.to_string(), lookup(GLOBAL_POLICY)?.unwrap_or_default()),
    })
}

/// Whether `tag` matches one of `patterns` (exact names or globs with `*` and `?`).
pub fn matches_any(patterns: &[String], tag: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, tag))
}

/// Glob match over bytes: `*` any run, `?` any one character, everything else literal. Tags are
/// ASCII, so bytes are characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

/// A pattern list from a tenant: bounded, each a plausible tag glob.
pub fn valid_patterns(patterns: &[String]) -> Result<(), String> {
    if patterns.len() > MAX_PATTERNS {
        return Err(format!("at most {MAX_PATTERNS} tag patterns"));
    }
    for p in patterns {
        let ok =
            !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-*?".contains(&b));
        if !ok {
            return Err(format!(
                "invalid tag pattern {p:?} (letters, digits, _ . - and the globs * ?)"
            ));
        }
    }
    Ok(())
}

/// The tenancy a repository belongs to: the first segment of its name.
pub fn tenancy_of(repo: &str) -> &str {
    repo.split_once('/').map_or(repo, |(ns, _)| ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("release-*", "release-1.2"));
        assert!(glob_match("release-*", "release-"));
        assert!(!glob_match("release-*", "release"));
        assert!(glob_match("v?.*", "v1.0"));
        assert!(!glob_match("v?.*", "v10.0"));
        assert!(glob_match("*", ""));
        assert!(glob_match("latest", "latest"));
        assert!(!glob_match("latest", "latest2"));
        assert!(glob_match("*-rc*", "1.0-rc2"));
        assert!(!glob_match("a*b*c", "aXbY"));
    }

    #[test]
    fn immutability_respects_exemptions() {
        let setting = ImmutableTags {
            enabled: true,
            exempt: vec!["latest".into(), "dev-*".into()],
        };
        assert!(setting.freezes("v1"));
        assert!(!setting.freezes("latest"));
        assert!(!setting.freezes("dev-abc"));
        assert!(!ImmutableTags::default().freezes("v1"));
    }

    #[test]
    fn patterns_are_bounded() {
        assert!(valid_patterns(&["release-*".into()]).is_ok());
        assert!(valid_patterns(&["".into()]).is_err());
        assert!(valid_patterns(&["a/b".into()]).is_err());
        assert!(valid_patterns(&vec!["x".into(); MAX_PATTERNS + 1]).is_err());
    }
}
