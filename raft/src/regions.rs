//! Regions: which region this cluster serves, which region is home for identity, the other
//! regions it knows, and what it replicates to them.
//!
//! One cluster runs per region. The clusters of a deployment know each other as *peers*, added
//! through the management API (never by editing files on every node), so every node of a
//! cluster sees the same peers through Raft. Identity (tenancies, users, groups, policies,
//! tokens, signing keys) is written only in the *home* region and copied whole into the others
//! (`IdentityCommand::ReplaceFromHome`); the state machine refuses any other identity write in a
//! region that is not home, so the rule holds whichever node or client tries.
//!
//! Cross-region image replication is driven by *rules* kept here and by one *mark* per
//! replicated tag (or referrer) and target in the `lifecycle` family, written after the target
//! acknowledged it: what the source has and the marks lack is what is pending.
//!
//! All of it is one small value (`regions` in the `identity` family): peers and rules are few
//! and bounded ([`MAX_PEERS`], [`MAX_RULES`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most peers a cluster keeps.
pub const MAX_PEERS: usize = 32;
/// Most replication rules a cluster keeps (over all tenancies).
pub const MAX_RULES: usize = 256;
/// Most marks one [`RegionCommand::Replicated`] entry carries.
pub const MAX_MARKS: usize = 500;

/// Another region's cluster, as this one reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionPeer {
    /// The region's key, e.g. `fra`.
    pub name: String,
    /// Base URL of its registry API (its load balancer), e.g. `https://fra.registry.example.com`.
    pub url: String,
    /// PEM of the CA that signed its API certificate, when it is not a public one.
    pub ca_pem: Option<String>,
    /// Who this cluster is there: `<namespace>/<user>` (identity is the same everywhere).
    pub username: String,
    /// That user's auth token, sealed under the master key when encryption at rest is on
    /// (`KSEAL1…`), as the node was given it otherwise.
    pub secret: Vec<u8>,
}

/// Replicate a tenancy's matching images from this region to `targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationRule {
    pub id: String,
    pub namespace: String,
    /// Glob over the repository name inside the namespace (`app/*`, `*`).
    pub repos: String,
    /// Glob over tag names (`*`, `v*`).
    pub tags: String,
    /// Region names.
    pub targets: Vec<String>,
    /// Whether removing a tag here removes it in the targets.
    pub deletes: bool,
    /// Throttle for blob bytes sent under this rule (`None`: unthrottled).
    pub bytes_per_second: Option<u64>,
    pub created_ms: u64,
}

/// A repository prefix of a tenancy that caches an upstream registry: `<ns>/<prefix>/<rest>`
/// here is `<upstream_prefix>/<rest>` there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullThroughCache {
    pub namespace: String,
    /// Path inside the namespace, e.g. `hub` (no leading or trailing `/`).
    pub prefix: String,
    /// Base URL of the upstream registry (another Keelson region or any OCI/Docker registry).
    pub upstream: String,
    /// Path prepended upstream (e.g. `library`), empty for none.
    pub upstream_prefix: String,
    /// Upstream credentials: user name and secret (sealed like a peer's token).
    pub username: Option<String>,
    pub secret: Option<Vec<u8>>,
    pub ca_pem: Option<String>,
    /// How long a cached tag is served before it is checked upstream again.
    pub ttl_ms: u64,
}

impl PullThroughCache {
    /// The key of the cache in [`Regions::caches`].
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.prefix)
    }

    /// The upstream repository of `repo` when `repo` is under this cache's prefix.
    pub fn upstream_repo(&self, repo: &str) -> Option<String> {
        let rest = repo.strip_prefix(&self.key())?.strip_prefix('/')?;
        Some(if self.upstream_prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.upstream_prefix)
        })
    }
}

/// Most pull-through caches a cluster keeps.
pub const MAX_CACHES: usize = 256;

/// The last failure of a rule towards a target (cleared by the next success).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationFailure {
    pub message: String,
    pub at_ms: u64,
}

/// What this cluster knows of regions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regions {
    /// This cluster's region; `None` until set.
    pub name: Option<String>,
    /// The region identity is managed in; `None` (or equal to `name`): this one.
    pub home: Option<String>,
    pub peers: BTreeMap<String, RegionPeer>,
    pub rules: BTreeMap<String, ReplicationRule>,
    /// By `rule\0target`.
    pub failures: BTreeMap<String, ReplicationFailure>,
    /// SHA-256 of the identity state last copied from home (hex), what the next copy compares.
    pub identity_version: Option<String>,
    /// Pull-through caches by `<namespace>/<prefix>`.
    pub caches: BTreeMap<String, PullThroughCache>,
}

impl Regions {
    /// The home region when it is another one: identity writes here are refused.
    pub fn remote_home(&self) -> Option<&str> {
        let home = self.home.as_deref()?;
        (self.name.as_deref() != Some(home)).then_some(home)
    }

    /// The pull-through cache `repo` is under, with the upstream repository.
    pub fn cache_for(&self, repo: &str) -> Option<(&PullThroughCache, String)> {
        self.caches
            .values()
            .find_map(|cache| cache.upstream_repo(repo).map(|upstream| (cache, upstream)))
    }

    /// The rules of `namespace` whose repository glob matches `repo` (the full name).
    pub fn rules_for<'a>(&'a self, repo: &'a str) -> impl Iterator<Item = &'a ReplicationRule> + 'a {
        self.rules.values().filter(move |rule| {
            repo.strip_prefix(&rule.namespace)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|inside| glob_match(&rule.repos, inside))
        })
    }
}

/// The key of a failure in [`Regions::failures`].
pub fn failure_key(rule: &str, target: &str) -> String {
    format!("{rule}\0{target}")
}

/// A change to [`Regions`] or to the replication marks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegionCommand {
    /// Name this cluster's region and its home region.
    SetRegion {
        name: String,
        home: String,
    },
    PutPeer(RegionPeer),
    RemovePeer {
        name: String,
    },
    PutRule(ReplicationRule),
    DeleteRule {
        id: String,
    },
    /// Targets acknowledged these tags and referrers (at most [`MAX_MARKS`]).
    Replicated {
        marks: Vec<ReplicatedMark>,
    },
    /// A rule's replication to `target` failed (`Some`) or worked again (`None`).
    Failure {
        rule: String,
        target: String,
        failure: Option<ReplicationFailure>,
    },
    /// The identity state copied from home now has this version.
    IdentityCopied {
        version: String,
    },
    /// Every rule's targets have `repo` as of change `seq`: dequeue it unless it changed again.
    Processed {
        repo: String,
        seq: u64,
    },
    PutCache(PullThroughCache),
    DeleteCache {
        key: String,
    },
    /// Credentials sealed anew under the active master key (encryption turned on, or a
    /// rotation); each replaces the stored bytes only while they still hash to `was_sha256`.
    ResealSecrets {
        secrets: Vec<ResealedSecret>,
    },
    /// The upstream was asked about `tag` of cached `repo` at `at_ms` and agreed with what is
    /// cached (or the new image was cached): served without asking again for the cache's TTL.
    CacheValidated {
        repo: String,
        tag: String,
        at_ms: u64,
    },
}

/// One tag (or referrer, `key` = `@<digest>`) of `repo` that `target` now has as `digest`
/// (`None`: removed there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedMark {
    pub rule: String,
    pub target: String,
    pub repo: String,
    pub key: String,
    pub digest: Option<String>,
    pub at_ms: u64,
}

/// A peer's (`peer`) or a pull-through cache's credential, sealed anew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealedSecret {
    pub peer: bool,
    /// The peer's name or the cache's key.
    pub name: String,
    pub was_sha256: [u8; 32],
    pub sealed: Vec<u8>,
}

/// What a mark stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkRecord {
    pub digest: String,
    pub at_ms: u64,
}

/// Why a region command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RegionRejection {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} does not exist")]
    Missing(String),
}

impl Regions {
    /// Applies a settings command (marks are written by the applier); on rejection the value
    /// is unchanged.
    pub fn apply(&mut self, cmd: &RegionCommand) -> Result<(), RegionRejection> {
        match cmd {
            RegionCommand::SetRegion { name, home } => {
                self.name = Some(name.clone());
                self.home = Some(home.clone());
            }
            RegionCommand::PutPeer(peer) => {
                if Some(&peer.name) == self.name.as_ref() {
                    return Err(RegionRejection::Invalid(format!("{} is this region", peer.name)));
                }
                if !self.peers.contains_key(&peer.name) && self.peers.len() >= MAX_PEERS {
                    return Err(RegionRejection::Invalid(format!("at most {MAX_PEERS} peers")));
                }
                self.peers.insert(peer.name.clone(), peer.clone());
            }
            RegionCommand::RemovePeer { name } => {
                if self.rules.values().any(|r| r.targets.contains(name)) {
                    return Err(RegionRejection::Invalid(format!(
                        "replication rules still target {name}; delete them first"
                    )));
                }
                self.peers
                    .remove(name)
                    .ok_or_else(|| RegionRejection::Missing(format!("peer {name}")))?;
            }
            RegionCommand::PutRule(rule) => {
                if let Some(missing) = rule.targets.iter().find(|t| !self.peers.contains_key(*t)) {
                    return Err(RegionRejection::Missing(format!("peer region {missing}")));
                }
                if !self.rules.contains_key(&rule.id) && self.rules.len() >= MAX_RULES {
                    return Err(RegionRejection::Invalid(format!("at most {MAX_RULES} rules")));
                }
                self.rules.insert(rule.id.clone(), rule.clone());
            }
            RegionCommand::DeleteRule { id } => {
                self.rules
                    .remove(id)
                    .ok_or_else(|| RegionRejection::Missing(format!("rule {id}")))?;
                self.failures.retain(|key, _| !key.starts_with(&format!("{id}\0")));
            }
            RegionCommand::Failure { rule, target, failure } => {
                let key = failure_key(rule, target);
                match failure {
                    Some(f) if self.rules.contains_key(rule) => {
                        self.failures.insert(key, f.clone());
                    }
                    _ => {
                        self.failures.remove(&key);
                    }
                }
            }
            RegionCommand::IdentityCopied { version } => self.identity_version = Some(version.clone()),
            RegionCommand::Processed { .. } | RegionCommand::CacheValidated { .. } => {}
            RegionCommand::ResealSecrets { secrets } => {
                let same = |stored: &[u8], was: &[u8; 32]| crate::identity::stored_sha256(stored) == *was;
                for s in secrets {
                    if s.peer {
                        if let Some(p) = self.peers.get_mut(&s.name).filter(|p| same(&p.secret, &s.was_sha256)) {
                            p.secret = s.sealed.clone();
                        }
                    } else if let Some(c) = self.caches.get_mut(&s.name) {
                        if c.secret.as_deref().is_some_and(|stored| same(stored, &s.was_sha256)) {
                            c.secret = Some(s.sealed.clone());
                        }
                    }
                }
            }
            RegionCommand::PutCache(cache) => {
                let key = cache.key();
                if !self.caches.contains_key(&key) && self.caches.len() >= MAX_CACHES {
                    return Err(RegionRejection::Invalid(format!(
                        "at most {MAX_CACHES} pull-through caches"
                    )));
                }
                if self
                    .caches
                    .keys()
                    .any(|k| k != &key && (k.starts_with(&format!("{key}/")) || key.starts_with(&format!("{k}/"))))
                {
                    return Err(RegionRejection::Invalid(format!(
                        "{key} overlaps another pull-through cache"
                    )));
                }
                self.caches.insert(key, cache.clone());
            }
            RegionCommand::DeleteCache { key } => {
                self.caches
                    .remove(key)
                    .ok_or_else(|| RegionRejection::Missing(format!("pull-through cache {key}")))?;
            }
            RegionCommand::Replicated { marks } => {
                if marks.len() > MAX_MARKS {
                    return Err(RegionRejection::Invalid(format!("at most {MAX_MARKS} marks per entry")));
                }
            }
        }
        Ok(())
    }
}

/// Repository and tag patterns are the lifecycle layer's globs (`*` any run, `/` included;
/// `?` one character).
pub use crate::lifecycle::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "app/web"));
        assert!(glob_match("app/*", "app/web"));
        assert!(!glob_match("app/*", "base/web"));
        assert!(glob_match("v?.*", "v1.2"));
        assert!(!glob_match("v?.*", "v10.2"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn home_and_rules() {
        let mut r = Regions::default();
        assert_eq!(r.remote_home(), None);
        r.apply(&RegionCommand::SetRegion {
            name: "fra".into(),
            home: "iad".into(),
        })
        .unwrap();
        assert_eq!(r.remote_home(), Some("iad"));
        let rule = ReplicationRule {
            id: "r1".into(),
            namespace: "acme".into(),
            repos: "app/*".into(),
            tags: "*".into(),
            targets: vec!["iad".into()],
            deletes: false,
            bytes_per_second: None,
            created_ms: 0,
        };
        assert!(
            r.apply(&RegionCommand::PutRule(rule.clone())).is_err(),
            "unknown target"
        );
        r.apply(&RegionCommand::PutPeer(RegionPeer {
            name: "iad".into(),
            url: "https://iad".into(),
            ca_pem: None,
            username: "keelson/admin".into(),
            secret: b"t".to_vec(),
        }))
        .unwrap();
        r.apply(&RegionCommand::PutRule(rule)).unwrap();
        assert_eq!(r.rules_for("acme/app/web").count(), 1);
        assert_eq!(r.rules_for("acme/base").count(), 0);
        assert_eq!(r.rules_for("acmex/app/web").count(), 0);
        assert!(r.apply(&RegionCommand::RemovePeer { name: "iad".into() }).is_err());
    }
}
