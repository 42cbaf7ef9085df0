//! Image signatures: finding an image's signatures, checking them against the keys its
//! tenancy trusts for its repository, verification policies that refuse pulls of images
//! without a valid one, and server-side signing with keys the cluster holds.
//!
//! An image's signatures are the cosign signature manifest under its `.sig` tag and its
//! referrers of a signature artifact type (cosign's OCI 1.1 mode, Notary v2 / notation). A
//! check of one signature manifest for one image by one key is a pure function of three
//! content addresses (the manifest fixes its payloads and signatures), so its outcome is
//! cached on the node without ever going stale; what changes (the `.sig` tag, the referrers,
//! the registered keys) is read from the catalog on every check.

pub mod cosign;
pub mod keys;
pub mod notation;

use keelson_raft::lifecycle::tenancy_of;
use keelson_raft::scanning::Severity;
use keelson_raft::signing::TrustedKey;
use keelson_raft::ManifestRecord;
use keelson_storage::Digest;
use serde::Serialize;

use crate::access::Cx;
use crate::error::{ApiError, ErrorCode};
use keys::Material;

/// Signature manifests looked at per image.
pub const MAX_SIGNATURE_MANIFESTS: usize = 32;
/// Largest signature payload or envelope read.
pub const MAX_PAYLOAD_BYTES: u64 = 64 * 1024;
/// Checks remembered per node.
const CACHED_CHECKS: usize = 20_000;

/// What one signature manifest checked against one key came to: `None` verified, else why not.
type Outcome = Option<String>;

/// Checks already made: (signature manifest, image, key fingerprint) → outcome.
pub struct Checks(quick_cache::sync::Cache<(String, String, String), Outcome>);

impl Default for Checks {
    fn default() -> Self {
        Checks(quick_cache::sync::Cache::new(CACHED_CHECKS))
    }
}

/// Where an image stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A trusted key verifies at least one signature.
    Signed,
    /// Signatures exist but no trusted key verifies any (tampered, another key's, or for
    /// another image).
    Invalid,
    /// No signature.
    Unsigned,
}

/// One signature manifest of an image, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `cosign` or `notation`.
    pub format: &'static str,
    /// The signature manifest.
    pub manifest: String,
    /// The trusted keys that verify it.
    pub verified_by: Vec<String>,
    /// Why no trusted key verifies it (the first key's reason, or that none applies).
    pub problem: Option<String>,
}

/// An image's signatures, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub status: Status,
    pub signatures: Vec<Finding>,
}

impl Verification {
    /// Whether one of `keys` verifies a signature.
    pub fn verified_by_any(&self, keys: &[String]) -> bool {
        self.signatures
            .iter()
            .any(|f| f.verified_by.iter().any(|k| keys.contains(k)))
    }
}

/// A signature manifest of an image and its format.
struct Candidate {
    format: &'static str,
    digest: String,
    record: ManifestRecord,
}

/// The keys trusted for `repo`, parsed (a key that no longer parses is skipped).
struct Trusted {
    name: String,
    fingerprint: String,
    material: Material,
}

fn trusted_for(cx: &Cx<'_>, repo: &str) -> Result<Vec<Trusted>, ApiError> {
    let reader = cx.catalog.reader();
    let ns = tenancy_of(repo);
    let keys = reader.signing_keys(ns)?;
    if keys.keys.is_empty() {
        return Ok(Vec::new());
    }
    let ancestry = ancestry(cx, repo)?;
    Ok(keys
        .keys
        .into_iter()
        .filter(|(_, k)| k.scope.covers(repo, &ancestry))
        .filter_map(|(name, k)| {
            let material = Material::parse(k.material, &k.pem).ok()?;
            Some(Trusted {
                name,
                fingerprint: material.fingerprint(),
                material,
            })
        })
        .collect())
}

/// The compartment chain of `repo` (its compartment first, up to the root).
fn ancestry(cx: &Cx<'_>, repo: &str) -> Result<Vec<String>, ApiError> {
    let compartment = cx.catalog.reader().repo(repo)?.and_then(|r| r.compartment);
    let ns = tenancy_of(repo);
    Ok(cx
        .catalog
        .reader()
        .with_identity(|s| s.ancestry(ns, compartment.as_deref())))
}

/// The signature manifests of image `digest` in `repo`.
fn candidates(cx: &Cx<'_>, repo: &str, digest: &str) -> Result<Vec<Candidate>, ApiError> {
    let reader = cx.catalog.reader();
    let mut found = Vec::new();
    if let Some(sig) = reader.tag(repo, &cosign::signature_tag(digest))? {
        if let Some(record) = reader.manifest(repo, &sig)? {
            found.push(Candidate {
                format: "cosign",
                digest: sig,
                record,
            });
        }
    }
    for referrer in reader.referrers(repo, digest)? {
        if found.len() >= MAX_SIGNATURE_MANIFESTS {
            break;
        }
        let format = match referrer.artifact_type.as_deref() {
            Some(cosign::ARTIFACT_TYPE) => "cosign",
            Some(notation::ARTIFACT_TYPE) => "notation",
            _ => continue,
        };
        if let Some(record) = reader.manifest(repo, &referrer.digest)? {
            found.push(Candidate {
                format,
                digest: referrer.digest,
                record,
            });
        }
    }
    Ok(found)
}

/// Finds and checks the signatures of image `digest` in `repo`.
pub async fn verify(cx: &Cx<'_>, repo: &str, digest: &str) -> Result<Verification, ApiError> {
    verify_with(cx, repo, digest, &mut None).await
}

/// [`verify`] with the repository's trusted keys read and parsed at most once into `trusted`,
/// however many images of the repository it is called for.
async fn verify_with(
    cx: &Cx<'_>,
    repo: &str,
    digest: &str,
    trusted: &mut Option<Vec<Trusted>>,
) -> Result<Verification, ApiError> {
    let found = candidates(cx, repo, digest)?;
    if found.is_empty() {
        return Ok(Verification {
            status: Status::Unsigned,
            signatures: Vec::new(),
        });
    }
    if trusted.is_none() {
        *trusted = Some(trusted_for(cx, repo)?);
    }
    let trusted: &[Trusted] = trusted.as_deref().unwrap_or_default();
    let mut signatures = Vec::with_capacity(found.len());
    for candidate in found {
        let mut finding = Finding {
            format: candidate.format,
            manifest: candidate.digest.clone(),
            verified_by: Vec::new(),
            problem: None,
        };
        for key in trusted {
            let cache_key = (candidate.digest.clone(), digest.to_string(), key.fingerprint.clone());
            let outcome = match cx.signature_checks.0.get(&cache_key) {
                Some(outcome) => outcome,
                None => {
                    let outcome = check(cx, repo, digest, &candidate, &key.material).await?;
                    cx.signature_checks.0.insert(cache_key, outcome.clone());
                    outcome
                }
            };
            match outcome {
                None => finding.verified_by.push(key.name.clone()),
                Some(why) => {
                    finding
                        .problem
                        .get_or_insert_with(|| format!("key {}: {why}", key.name));
                }
            }
        }
        if trusted.is_empty() {
            finding.problem = Some("no trusted key applies to this repository".into());
        }
        if !finding.verified_by.is_empty() {
            finding.problem = None;
        }
        signatures.push(finding);
    }
    let status = if signatures.iter().any(|f| !f.verified_by.is_empty()) {
        Status::Signed
    } else {
        Status::Invalid
    };
    Ok(Verification { status, signatures })
}

/// Checks one signature manifest for image `digest` with one key. Errors are only the
/// registry's own (a blob it cannot read now); every fault of the signature is an outcome.
async fn check(
    cx: &Cx<'_>,
    repo: &str,
    digest: &str,
    candidate: &Candidate,
    key: &Material,
) -> Result<Outcome, ApiError> {
    match candidate.format {
        "notation" => {
            let envelopes = match notation::envelopes(&candidate.record.body) {
                Ok(e) => e,
                Err(why) => return Ok(Some(why)),
            };
            let mut last = Some("no signature envelope".to_string());
            for envelope in envelopes {
                let Some(bytes) = blob(cx, repo, &envelope.digest, envelope.size).await? else {
                    last = Some(format!("envelope {} is not in the repository", envelope.digest));
                    continue;
                };
                match notation::verify(&bytes, &envelope.media_type, digest, key, cx.clock.now_ms()) {
                    Ok(()) => return Ok(None),
                    Err(why) => last = Some(why),
                }
            }
            Ok(last)
        }
        _ => {
            let claims = match cosign::claims(&candidate.record.body) {
                Ok(c) => c,
                Err(why) => return Ok(Some(why)),
            };
            let mut last = Some("no signature".to_string());
            for claim in claims {
                let Some(payload) = blob(cx, repo, &claim.payload_digest, claim.payload_size).await? else {
                    last = Some(format!("payload {} is not in the repository", claim.payload_digest));
                    continue;
                };
                if !key.verifies(&payload, &claim.signature) {
                    last = Some("the signature does not verify with this key".into());
                    continue;
                }
                match cosign::check_payload(&payload, digest) {
                    Ok(()) => return Ok(None),
                    Err(why) => last = Some(why),
                }
            }
            Ok(last)
        }
    }
}

/// A small blob of `repo` read whole; `None` when it is not linked there or is too large.
async fn blob(cx: &Cx<'_>, repo: &str, digest: &str, size: u64) -> Result<Option<bytes::Bytes>, ApiError> {
    let Ok(parsed) = Digest::parse(digest) else {
        return Ok(None);
    };
    let Some(record) = cx.catalog.reader().blob_in_repo(repo, digest)? else {
        return Ok(None);
    };
    if record.size != size || size > MAX_PAYLOAD_BYTES {
        return Ok(None);
    }
    crate::placement::read_whole(cx, &parsed, &record, MAX_PAYLOAD_BYTES)
        .await
        .map(Some)
}

/// Refuses a pull of image `digest` (`record`) from `repo` that a verification policy of its
/// tenancy forbids: with 403 DENIED naming the policy. A tenancy without policies costs one
/// catalog read.
pub async fn enforce(cx: &Cx<'_>, repo: &str, digest: &str, record: &ManifestRecord) -> Result<(), ApiError> {
    let ns = tenancy_of(repo);
    let policies = cx.catalog.reader().verification_policies(ns)?;
    if policies.policies.is_empty() {
        return Ok(());
    }
    let ancestry = ancestry(cx, repo)?;
    let applying: Vec<_> = policies.applying(repo, &ancestry).collect();
    if applying.is_empty() {
        return Ok(());
    }
    // Signatures, attestations and other artifacts about an image are read by verifiers
    // before they trust it: never refused.
    if is_artifact_about_an_image(record) {
        return Ok(());
    }
    let needs_signature = applying.iter().any(|(_, p)| !p.keys.is_empty());
    let verification = match needs_signature {
        true => Some(verify(cx, repo, digest).await?),
        false => None,
    };
    // Read once, however many policies name a severity.
    let mut findings: Option<std::sync::Arc<crate::scanning::Report>> = None;
    for (name, policy) in &applying {
        if let Some(at) = policy.refuse_severity {
            let report = match &findings {
                Some(report) => report.clone(),
                None => findings
                    .insert(crate::scanning::report(cx, repo, digest).await?)
                    .clone(),
            };
            if let Some(worst) = report.worst_at_least(at) {
                return Err(ApiError::new(
                    ErrorCode::Denied,
                    format!(
                        "verification policy {name} refuses images with vulnerabilities of severity {} or above: \
                         {repo}@{digest} has {} {} in {} ({} findings at or above)",
                        at.name(),
                        worst.severity,
                        worst.id,
                        worst.installed,
                        report
                            .findings
                            .iter()
                            .filter(|f| Severity::parse(f.severity).is_some_and(|s| s >= at))
                            .count()
                    ),
                ));
            }
        }
        let Some(verification) = verification.as_ref().filter(|_| !policy.keys.is_empty()) else {
            continue;
        };
        if verification.verified_by_any(&policy.keys) {
            continue;
        }
        let why = match verification.status {
            Status::Unsigned => "it is not signed".to_string(),
            _ => format!("no signature of it verifies with key {}", policy.keys.join(" or ")),
        };
        return Err(ApiError::new(
            ErrorCode::Denied,
            format!("verification policy {name} requires a valid signature by key {}: {repo}@{digest} is refused because {why}", policy.keys.join(" or ")),
        ));
    }
    Ok(())
}

/// Whether a manifest is a signature or another artifact attached to an image.
fn is_artifact_about_an_image(record: &ManifestRecord) -> bool {
    if record.subject.is_some() {
        return true;
    }
    #[derive(serde::Deserialize)]
    struct Layers {
        #[serde(default)]
        layers: Vec<LayerType>,
    }
    #[derive(serde::Deserialize)]
    struct LayerType {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    serde_json::from_slice::<Layers>(&record.body).is_ok_and(|m| {
        m.layers.iter().any(|l| {
            matches!(
                l.media_type.as_str(),
                cosign::SIMPLE_SIGNING | notation::JWS | notation::COSE | "application/vnd.dsse.envelope.v1+json"
            )
        })
    })
}

/// Status of each image of `digests` in `repo`, for image lists (unsigned without looking at
/// keys when an image has no signature manifest).
pub async fn statuses(cx: &Cx<'_>, repo: &str, digests: &[String]) -> Result<Vec<Status>, ApiError> {
    let mut out = Vec::with_capacity(digests.len());
    let mut trusted = None;
    for digest in digests {
        out.push(verify_with(cx, repo, digest, &mut trusted).await?.status);
    }
    Ok(out)
}

/// A key held by the cluster, opened for signing.
pub fn open_private(cx: &Cx<'_>, name: &str, key: &TrustedKey) -> Result<Vec<u8>, ApiError> {
    let sealed = key.private.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Denied,
            format!("key {name} is a registered public key; the cluster holds no private key to sign with"),
        )
        .with_status(http::StatusCode::BAD_REQUEST)
    })?;
    let keys = cx.store.master_keys();
    keelson_storage::at_rest::keys::open_secret(keys.as_deref(), sealed).map_err(|e| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("key {name} cannot be opened on this node: {e}"),
        )
    })
}
