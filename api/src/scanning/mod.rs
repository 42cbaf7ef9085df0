//! Vulnerability scanning: every pushed image is inventoried in the background by the node that
//! holds its largest layer (the leader for erasure-coded layers), the inventory is attached to
//! the image as a CycloneDX SBOM referrer, and findings are the SBOM matched against the
//! imported OSV database — worked out again from the SBOM whenever the database changes, never
//! by reading layers again. A push's 201 never waits: images wait in the catalog's scan queue
//! (`keelson_raft::scanning`), one scan at a time per node.

pub mod binaries;
pub mod inventory;
pub mod osv;
pub mod sbom;
pub mod versions;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use keelson_raft::scanning::{ScanCommand, Severity};
use keelson_raft::{CatalogCommand, CatalogResponse};
use keelson_storage::{Algorithm, Digest};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::access::Cx;
use crate::error::{ApiError, ErrorCode};
use crate::registry::Registry;
use inventory::Layers;

/// Largest SBOM read back for matching.
const MAX_SBOM_BYTES: u64 = 64 << 20;
/// Images looked at per scanner round.
const QUEUE_PAGE: usize = 64;
/// Reports remembered per node.
const CACHED_REPORTS: usize = 2_000;

/// Findings already worked out: (SBOM manifest, database generation) → report.
pub struct Reports(quick_cache::sync::Cache<(String, u64), Arc<Report>>);

impl Default for Reports {
    fn default() -> Self {
        Reports(quick_cache::sync::Cache::new(CACHED_REPORTS))
    }
}

/// One advisory affecting one installed package.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: String,
    pub severity: &'static str,
    pub ecosystem: String,
    pub package: String,
    pub installed: String,
    pub fixed: Option<String>,
    pub summary: String,
    pub location: String,
}

/// An image's findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `scanned`, `queued` (waiting for its inventory) or `not_scanned` (not an image with
    /// layers, or pushed before scanning existed).
    pub state: &'static str,
    pub sbom: Option<String>,
    pub database_generation: u64,
    pub database_imported_ms: u64,
    pub packages: usize,
    /// Findings per severity name.
    pub counts: BTreeMap<&'static str, usize>,
    pub findings: Vec<Finding>,
}

impl Report {
    fn empty(state: &'static str) -> Report {
        Report {
            state,
            sbom: None,
            database_generation: 0,
            database_imported_ms: 0,
            packages: 0,
            counts: BTreeMap::new(),
            findings: Vec::new(),
        }
    }

    /// The worst finding at or above `at`, when there is one.
    pub fn worst_at_least(&self, at: Severity) -> Option<&Finding> {
        self.findings
            .iter()
            .filter(|f| Severity::parse(f.severity).is_some_and(|s| s >= at))
            .max_by_key(|f| Severity::parse(f.severity))
    }
}

/// The SBOM referrer Keelson's scanner attached to image `digest`, when there is one.
fn sbom_manifest(cx: &Cx<'_>, repo: &str, digest: &str) -> Result<Option<String>, ApiError> {
    Ok(cx
        .catalog
        .reader()
        .referrers(repo, digest)?
        .into_iter()
        .find(is_inventory)
        .map(|r| r.digest))
}

/// Whether a referrer is an inventory a Keelson scanner attached (an SBOM annotated as its).
/// Each region inventories its own copy of an image, so replication leaves these behind.
pub fn is_inventory(referrer: &keelson_raft::ReferrerRecord) -> bool {
    referrer.artifact_type.as_deref() == Some(sbom::MEDIA_TYPE)
        && referrer
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(sbom::MADE_BY))
}

/// Image `digest`'s findings against the active database.
pub async fn report(cx: &Cx<'_>, repo: &str, digest: &str) -> Result<Arc<Report>, ApiError> {
    let reader = cx.catalog.reader();
    let Some(sbom_digest) = sbom_manifest(cx, repo, digest)? else {
        let state = if reader.scan_queued(repo, digest)? {
            "queued"
        } else {
            "not_scanned"
        };
        return Ok(Arc::new(Report::empty(state)));
    };
    let db = reader.vulndb()?;
    let key = (sbom_digest.clone(), db.generation);
    if let Some(report) = cx.scan_reports.0.get(&key) {
        return Ok(report);
    }
    let record = reader
        .manifest(repo, &sbom_digest)?
        .ok_or_else(|| ApiError::new(ErrorCode::ManifestUnknown, "the SBOM was deleted meanwhile"))?;
    let layer: serde_json::Value =
        serde_json::from_slice(&record.body).map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
    let layer = &layer["layers"][0];
    let (Some(blob_digest), Some(size)) = (layer["digest"].as_str(), layer["size"].as_u64()) else {
        return Err(ApiError::new(
            ErrorCode::ManifestInvalid,
            "the SBOM manifest names no SBOM",
        ));
    };
    let blob = reader
        .blob_in_repo(repo, blob_digest)?
        .ok_or_else(|| ApiError::new(ErrorCode::BlobUnknown, "the SBOM blob is gone"))?;
    let parsed = Digest::parse(blob_digest)?;
    let bytes = crate::placement::read_whole(cx, &parsed, &blob, MAX_SBOM_BYTES.max(size)).await?;
    let packages = sbom::packages(&bytes).map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, e))?;
    let mut findings = Vec::new();
    if db.generation > 0 {
        for p in &packages {
            for ecosystem in osv::ecosystems_for(p) {
                for advisory in reader.advisories(db.generation, &ecosystem, &p.name)? {
                    if !osv::affects(&advisory, &p.ecosystem, &p.version) {
                        continue;
                    }
                    if findings
                        .iter()
                        .any(|f: &Finding| f.id == advisory.id && f.package == p.name && f.location == p.location)
                    {
                        continue;
                    }
                    findings.push(Finding {
                        id: advisory.id.clone(),
                        severity: advisory.severity.name(),
                        ecosystem: p.ecosystem.clone(),
                        package: p.name.clone(),
                        installed: format!("{}@{}", p.installed_name, p.installed_version),
                        fixed: osv::fixed_in(&advisory, &p.ecosystem, &p.version),
                        summary: advisory.summary.clone(),
                        location: p.location.clone(),
                    });
                }
            }
        }
    }
    findings.sort_by(|a, b| {
        Severity::parse(b.severity)
            .cmp(&Severity::parse(a.severity))
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.package.cmp(&b.package))
    });
    let mut counts = BTreeMap::new();
    for f in &findings {
        *counts.entry(f.severity).or_insert(0) += 1;
    }
    let report = Arc::new(Report {
        state: "scanned",
        sbom: Some(sbom_digest),
        database_generation: db.generation,
        database_imported_ms: db.imported_ms,
        packages: packages.len(),
        counts,
        findings,
    });
    cx.scan_reports.0.insert(key, report.clone());
    Ok(report)
}

/// A layer of a manifest being scanned.
struct Layer {
    digest: String,
    size: u64,
}

/// What a scanner round decides about one queued image.
enum Decision {
    /// Another node scans it.
    Elsewhere,
    /// Nothing to scan (deleted, or no filesystem layers): off the queue.
    Nothing,
    Scan(Vec<Layer>),
}

/// Whether a layer media type is a (possibly gzip-compressed) tar this scanner reads.
fn readable_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

fn decide(reg: &Registry, repo: &str, digest: &str) -> Result<Decision, ApiError> {
    let reader = reg.catalog.reader();
    let Some(record) = reader.manifest(repo, digest)? else {
        return Ok(Decision::Nothing);
    };
    let manifest: serde_json::Value = serde_json::from_slice(&record.body).unwrap_or_default();
    let layers: Vec<Layer> = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["mediaType"].as_str().is_some_and(readable_layer))
        .filter_map(|l| {
            Some(Layer {
                digest: l["digest"].as_str()?.to_string(),
                size: l["size"].as_u64()?,
            })
        })
        .collect();
    let Some(largest) = layers.iter().max_by_key(|l| l.size) else {
        return Ok(Decision::Nothing);
    };
    let members = reg.catalog.members();
    let holder = reader
        .blob(&largest.digest)?
        .and_then(|b| b.holders.into_iter().filter(|h| members.contains_key(h)).min());
    let me = reg.catalog.node_id();
    let mine = match holder {
        Some(h) => h == me,
        None => reg.catalog.is_leader(),
    };
    Ok(if mine {
        Decision::Scan(layers)
    } else {
        Decision::Elsewhere
    })
}

/// The background scanner of one node: where it is in the scan queue.
#[derive(Default)]
pub struct Scanner {
    /// The last queued image the previous round looked at; the next round reads on from there,
    /// and starts over after the queue's end.
    cursor: std::sync::Mutex<Option<(String, String)>>,
}

impl Scanner {
    /// One round: inventories the queued images of one page that this node is responsible for.
    pub async fn tick(&self, reg: &Arc<Registry>) {
        let after = self.cursor.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let after = after.as_ref().map(|(r, d)| (r.as_str(), d.as_str()));
        let queue = match reg.catalog.reader().scan_queue(after, QUEUE_PAGE) {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "scan queue unreadable");
                return;
            }
        };
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) =
            queue.last().filter(|_| queue.len() == QUEUE_PAGE).cloned();
        scan_page(reg, queue).await;
    }
}

/// Inventories the images of `queue` this node is responsible for and takes them off the queue.
async fn scan_page(reg: &Arc<Registry>, queue: Vec<(String, String)>) {
    for (repo, digest) in queue {
        let outcome = match decide(reg, &repo, &digest) {
            Ok(Decision::Elsewhere) => continue,
            Ok(Decision::Nothing) => Ok(()),
            Ok(Decision::Scan(layers)) => scan(reg, &repo, &digest, layers).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::warn!(repo, digest, error = %e.message, "scanning an image failed; it stays queued");
            continue;
        }
        let done = CatalogCommand::Scanning(ScanCommand::Done {
            repo: repo.clone(),
            digest: digest.clone(),
        });
        if let Err(e) = reg.catalog.propose(done).await {
            tracing::warn!(repo, digest, error = %e, "could not take a scanned image off the queue");
        }
    }
}

/// Reads the layers in order, attaches the SBOM.
async fn scan(reg: &Arc<Registry>, repo: &str, digest: &str, layers: Vec<Layer>) -> Result<(), ApiError> {
    let cx = Cx::internal(reg);
    if sbom_manifest(&cx, repo, digest)?.is_some() {
        return Ok(()); // attached before a crash took the node down before `Done`
    }
    let mut files = Layers::default();
    let reading = std::time::Instant::now();
    let layer_bytes = layers.iter().map(|l| l.size).fold(0u64, u64::saturating_add);
    for layer in &layers {
        let rx = open_layer(reg, &layer.digest, layer.size).await?;
        let (back, applied) = apply_layer(files, rx).await?;
        files = back;
        if let Err(e) = applied {
            // A layer that is not a readable tar (or whose stream broke) contributes nothing;
            // the scan goes on with what the other layers hold.
            tracing::warn!(repo, layer = layer.digest, error = %e, "layer not readable for the inventory");
        }
    }
    let inventory = files.inventory();
    let reading = reading.elapsed();
    let now = reg.clock.now_ms();
    let document = sbom::document(repo, digest, &inventory, now);
    let owner = "keelson/scanner";
    let document_size = document.len();
    let sbom_blob = crate::handlers::uploads::store_bytes(&cx, repo, owner, Bytes::from(document)).await?;
    let empty = crate::handlers::uploads::store_bytes(&cx, repo, owner, Bytes::from_static(b"{}")).await?;
    let subject = cx
        .catalog
        .reader()
        .manifest(repo, digest)?
        .ok_or_else(|| ApiError::new(ErrorCode::ManifestUnknown, "the image was deleted meanwhile"))?;
    let created = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(now));
    let body = json!({
        "schemaVersion": 2,
        "mediaType": crate::manifest::OCI_MANIFEST,
        "artifactType": sbom::MEDIA_TYPE,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2 },
        "layers": [{ "mediaType": sbom::MEDIA_TYPE, "digest": sbom_blob.to_string(), "size": document_size }],
        "subject": { "mediaType": subject.media_type, "digest": digest, "size": subject.body.len() },
        "annotations": {
            sbom::MADE_BY: format!("{} packages", inventory.packages.len()),
            "org.opencontainers.image.created": created.to_string(),
        },
    })
    .to_string()
    .into_bytes();
    let valid = crate::manifest::validate(&body, Some(crate::manifest::OCI_MANIFEST), now, Algorithm::Sha256)?;
    let put = CatalogCommand::PutManifest {
        repo: repo.to_string(),
        digest: valid.digest.to_string(),
        manifest: valid.record,
        tag: None,
        now_ms: now,
    };
    match reg.catalog.propose(put).await? {
        CatalogResponse::Applied => {
            tracing::info!(repo, digest, packages = inventory.packages.len(), "image inventoried");
            reg.metrics.count_scan(layer_bytes, reading);
            Ok(())
        }
        // A repository at its image limit, or the image deleted meanwhile: nothing to attach to.
        CatalogResponse::Rejected(r) => {
            tracing::warn!(repo, digest, rejection = ?r, "the SBOM could not be attached");
            Ok(())
        }
    }
}

/// A stream of a layer's bytes, wherever the cluster keeps it.
async fn open_layer(reg: &Registry, digest: &str, size: u64) -> Result<mpsc::Receiver<io::Result<Bytes>>, ApiError> {
    let parsed = Digest::parse(digest)?;
    if reg.store.contains(&parsed) {
        return Ok(reg
            .store
            .stream_range_once(&parsed, 0, size)
            .map_err(keelson_storage::StorageError::Io)?);
    }
    let reader = reg.catalog.reader();
    if let Some(layout) = reader.coded(digest)? {
        return Ok(crate::placement::fetch_coded(reg, &parsed, size, &layout, 0, size));
    }
    let record = reader
        .blob(digest)?
        .ok_or_else(|| ApiError::new(ErrorCode::BlobUnknown, format!("layer {digest} is gone")))?;
    crate::placement::fetch_remote(reg, &parsed, &record, 0, size).await
}

/// Applies one layer's stream to `files` on a thread of the scanner's own. Not tokio's blocking
/// pool: the reader waits for bytes that may come over the network (another holder's copy,
/// shards), and a blocking-pool task in flight stops a simulated host's clock, so it must only
/// ever wait for the disk. A thread of its own parks like any other between pieces.
async fn apply_layer(
    files: Layers,
    rx: mpsc::Receiver<io::Result<Bytes>>,
) -> Result<(Layers, io::Result<()>), ApiError> {
    let (tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("keelson-scan".into())
        .spawn(move || {
            let mut files = files;
            let applied = files.apply(ChannelReader {
                rx,
                current: Bytes::new(),
            });
            let _ = tx.send((files, applied));
        })
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, format!("no scanner thread: {e}")))?;
    done.await
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "the layer reader stopped"))
}

/// A blocking reader over a stream of byte pieces.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
