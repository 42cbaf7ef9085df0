//! Vulnerability scanning in the catalog: the queue of pushed images waiting for an inventory,
//! and the vulnerability database imported from OSV files.
//!
//! A new image manifest (not an index, not an artifact about another image) is queued in the
//! same write as its push; a node's scanner inventories it in the background and commits
//! `ScanDone`, so a push's 201 never waits for a scan and a scanner that dies leaves the image
//! queued for the next pass. The database is kept per package, so matching an inventory reads
//! one key per package and an import is a series of bounded entries: `DbPut` batches under a
//! new generation, then `DbActivate` switches to it in one step; `DbPrune` removes an older
//! generation's keys a bounded number per entry.
//!
//! Keys (`lifecycle` family): `scq\0<repo>\0<digest>` → queued-at ms;
//! `vdb\0<generation, big-endian>\0<ecosystem>\0<package>` → `Vec<Advisory>`;
//! `vdbactive` → [`VulnDbInfo`].

use serde::{Deserialize, Serialize};

/// Packages one `DbPut` entry carries at most.
pub const MAX_PACKAGES_PER_ENTRY: usize = 5_000;
/// Keys one `DbPrune` entry deletes at most.
pub const MAX_PRUNE_PER_ENTRY: usize = 10_000;
/// Advisories kept per package (an import with more keeps the first).
pub const MAX_ADVISORIES_PER_PACKAGE: usize = 2_000;
/// Longest text field of an advisory kept.
pub const MAX_TEXT: usize = 512;

/// How bad a finding is (OSV's `database_specific.severity`, Debian's urgency, or CVSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Severity::Unknown => "UNKNOWN",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    /// A severity name; GitHub's `MODERATE` is MEDIUM.
    pub fn parse(text: &str) -> Option<Severity> {
        if text.eq_ignore_ascii_case("moderate") {
            return Some(Severity::Medium);
        }
        Severity::ALL.into_iter().find(|s| s.name().eq_ignore_ascii_case(text))
    }
}

/// One affected range of a package: versions at or after `introduced` (from the start when
/// absent) and before `fixed` (or up to and including `last_affected`; open when neither).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffectedRange {
    /// `ECOSYSTEM` (the package's own version order) or `SEMVER`.
    pub kind: String,
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
}

/// An advisory as it applies to one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    pub summary: String,
    pub severity: Severity,
    pub ranges: Vec<AffectedRange>,
    /// Versions listed as affected one by one.
    pub versions: Vec<String>,
}

/// The advisories of one package of one ecosystem (OSV's names: `Debian:12`, `PyPI`, `npm`,
/// `Alpine:v3.20`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VulnPackage {
    pub ecosystem: String,
    pub name: String,
    pub advisories: Vec<Advisory>,
}

/// The active database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VulnDbInfo {
    pub generation: u64,
    pub advisories: u64,
    pub packages: u64,
    pub imported_ms: u64,
}

/// A change to the scan queue or the vulnerability database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScanCommand {
    /// The image was inventoried (or needs none): off the queue.
    Done { repo: String, digest: String },
    /// Packages of a database being imported (not active until `DbActivate`).
    DbPut {
        generation: u64,
        packages: Vec<VulnPackage>,
    },
    /// Makes `generation` the active database.
    DbActivate { info: VulnDbInfo },
    /// Deletes up to [`MAX_PRUNE_PER_ENTRY`] keys of generations other than the active one.
    DbPrune,
}

pub(crate) const QUEUE_PREFIX: &[u8] = b"scq\0";
pub(crate) const DB_PREFIX: &[u8] = b"vdb\0";
pub(crate) const ACTIVE_KEY: &[u8] = b"vdbactive";

pub(crate) fn queue_key(repo: &str, digest: &str) -> Vec<u8> {
    [QUEUE_PREFIX, repo.as_bytes(), b"\0", digest.as_bytes()].concat()
}

pub(crate) fn generation_prefix(generation: u64) -> Vec<u8> {
    [DB_PREFIX, &generation.to_be_bytes()[..], b"\0"].concat()
}

pub(crate) fn package_key(generation: u64, ecosystem: &str, name: &str) -> Vec<u8> {
    [
        &generation_prefix(generation)[..],
        ecosystem.as_bytes(),
        b"\0",
        name.as_bytes(),
    ]
    .concat()
}

/// Whether a manifest media type is an image's (the kinds a scanner inventories).
pub fn is_image_manifest(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.manifest.v1+json" | "application/vnd.docker.distribution.manifest.v2+json"
    )
}

/// Why a database batch cannot be applied, when it cannot.
pub fn invalid_batch(packages: &[VulnPackage]) -> Option<String> {
    if packages.len() > MAX_PACKAGES_PER_ENTRY {
        return Some(format!("at most {MAX_PACKAGES_PER_ENTRY} packages per batch"));
    }
    for p in packages {
        let bad = |s: &str| s.is_empty() || s.len() > 214 || s.contains('\0');
        if bad(&p.ecosystem) || bad(&p.name) {
            return Some(format!("package {:?} of {:?} has an invalid name", p.name, p.ecosystem));
        }
        if p.advisories.len() > MAX_ADVISORIES_PER_PACKAGE {
            return Some(format!(
                "package {} has more than {MAX_ADVISORIES_PER_PACKAGE} advisories",
                p.name
            ));
        }
    }
    None
}
