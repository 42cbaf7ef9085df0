//! The workloads: for each, the setup done before timing starts (push the blob to pull,
//! the manifest to get, the 100 tags to list, and check the registry returns them
//! correctly) and the one operation the runner repeats.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::blob::{digest_of, Blob, BlobSizeError, BlobSource};
use crate::client::{HttpError, Registry};
use crate::manifest::{config_json, manifest_json, OCI_MANIFEST};
use crate::ops;
use crate::runner::{self, Op, Outcome, Plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// POST, then PUT ?digest= with the whole blob; a distinct blob per push.
    BlobPush,
    /// POST, PATCH chunks of --chunk bytes, PUT ?digest=; a distinct blob per push.
    BlobPushChunked,
    /// Push one blob of --size, then GET it repeatedly.
    BlobPull,
    /// Push a config and a layer once, then PUT distinct manifests under distinct tags.
    ManifestPut,
    /// Push one manifest, then GET it by tag with Docker's Accept header.
    ManifestGetTag,
    /// Push one manifest, then GET it by digest with Docker's Accept header.
    ManifestGetDigest,
    /// Push --tags tags on one repository, then GET tags/list.
    TagsList,
    /// Push --tags distinct images (one tag each) on one repository, then GET the first page of
    /// 50 of its image list (`/api/v1/repos/<repo>/images?n=50`, newest first), the page the
    /// console's repository view shows: Keelson only.
    ImagesPage,
    /// GET --path repeatedly (no setup): for non-registry targets such as bare-server.
    Get,
    /// Half pulls of one blob, half pushes of new --size blobs; 429s counted apart; every
    /// acknowledged push read back afterwards (see `load`).
    Load,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::BlobPush => "blob-push",
            Workload::BlobPushChunked => "blob-push-chunked",
            Workload::BlobPull => "blob-pull",
            Workload::ManifestPut => "manifest-put",
            Workload::ManifestGetTag => "manifest-get-tag",
            Workload::ManifestGetDigest => "manifest-get-digest",
            Workload::TagsList => "tags-list",
            Workload::ImagesPage => "images-page",
            Workload::Get => "get",
            Workload::Load => "load",
        }
    }
}

/// Why a workload's setup failed (before anything was measured).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    BlobSize(#[from] BlobSizeError),
    #[error("registry check failed: {0}")]
    Check(String),
}

pub struct Params {
    pub repo: String,
    pub size: u64,
    pub chunk: u64,
    pub verify: bool,
    pub tags: usize,
    pub path: String,
    /// blob-pull: the blob's content comes from this seed (the same blob in every run).
    pub seed: Option<u64>,
}

/// What a run did: the measurement, and the digest of the one blob a pull run read (so a
/// script can find which nodes of a cluster hold it).
pub struct Ran {
    pub outcome: Outcome,
    pub blob_digest: Option<String>,
}

/// Sets `workload` up through `setup` (the registry itself, or another node of the same
/// cluster), then runs it against `reg` as `plan` says.
pub async fn run(
    workload: Workload,
    reg: Arc<Registry>,
    setup: Arc<Registry>,
    p: &Params,
    plan: &Plan,
) -> Result<Ran, SetupError> {
    if workload != Workload::Get {
        reg.authenticate().await?;
        if !Arc::ptr_eq(&reg, &setup) {
            setup.authenticate().await?;
        }
    }
    let repo = p.repo.clone();
    let mut blob_digest = None;
    let outcome = match workload {
        Workload::BlobPush | Workload::BlobPushChunked => {
            let op = BlobPush {
                reg,
                repo,
                src: BlobSource::new(p.size)?,
                chunk: (workload == Workload::BlobPushChunked).then_some(p.chunk.max(1)),
            };
            runner::run(op, plan).await
        }
        Workload::BlobPull => {
            let src = match p.seed {
                Some(seed) => BlobSource::seeded(p.size, seed)?,
                None => BlobSource::new(p.size)?,
            };
            let blob = src.blob(0);
            ops::push_monolithic(&setup, &repo, &blob).await?;
            // One verified read, so a corrupt registry fails setup, not just --verify runs.
            ops::get_blob(&reg, &repo, &blob.digest, blob.len(), true).await?;
            blob_digest = Some(blob.digest.clone());
            let op = BlobPull {
                reg,
                repo,
                len: blob.len(),
                digest: blob.digest,
                verify: p.verify,
            };
            runner::run(op, plan).await
        }
        Workload::ManifestPut => {
            let (config, layer) = push_image_blobs(&reg, &repo, p.size).await?;
            let op = ManifestPut {
                reg,
                repo,
                config,
                layer,
                nonce: rand::random(),
            };
            runner::run(op, plan).await
        }
        Workload::ManifestGetTag | Workload::ManifestGetDigest => {
            let (config, layer) = push_image_blobs(&setup, &repo, p.size).await?;
            let doc = Bytes::from(manifest_json(&config, &layer, "get"));
            let digest = digest_of(&doc);
            ops::put_manifest(&setup, &repo, "bench-get", OCI_MANIFEST, doc.clone()).await?;
            let reference = if workload == Workload::ManifestGetTag {
                "bench-get".to_string()
            } else {
                digest.clone()
            };
            check_manifest(&reg, &repo, &reference, &doc, &digest).await?;
            let op = ManifestGet {
                reg,
                repo,
                reference,
                len: doc.len() as u64,
            };
            runner::run(op, plan).await
        }
        Workload::TagsList => {
            let (config, layer) = push_image_blobs(&setup, &repo, p.size).await?;
            let doc = Bytes::from(manifest_json(&config, &layer, "tags"));
            let tags: Vec<String> = (0..p.tags).map(|i| format!("tag-{i:04}")).collect();
            for t in &tags {
                ops::put_manifest(&setup, &repo, t, OCI_MANIFEST, doc.clone()).await?;
            }
            let (len, body) = ops::tags_list(&reg, &repo, true).await?;
            check_tags(&body.unwrap_or_default(), &tags)?;
            runner::run(TagsList { reg, repo, len }, plan).await
        }
        Workload::ImagesPage => {
            let (config, layer) = push_image_blobs(&setup, &repo, p.size).await?;
            for i in 0..p.tags {
                let doc = Bytes::from(manifest_json(&config, &layer, &format!("page-{i}")));
                ops::put_manifest(&setup, &repo, &format!("img-{i:06}"), OCI_MANIFEST, doc).await?;
            }
            let path = format!("/api/v1/repos/{repo}/images?n=50");
            let first = ops::get_path(&reg, &path).await?;
            if first == 0 {
                return Err(SetupError::Check(format!("{path} answered an empty body")));
            }
            runner::run(Get { reg, path }, plan).await
        }
        Workload::Load => {
            let pulled = BlobSource::new(p.size)?.blob(0);
            ops::push_monolithic(&setup, &repo, &pulled).await?;
            let load = Arc::new(crate::load::Load {
                reg,
                repo,
                pulled,
                src: BlobSource::new(p.size)?,
                acked: Default::default(),
                throttled: Default::default(),
            });
            let outcome = runner::run(SharedOp(load.clone()), plan).await;
            let (acked, failed) = load.read_back().await;
            let throttled = load.throttled.load(std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "load: {acked} pushes acknowledged and read back, {} failed; {throttled} operations answered 429",
                failed.len()
            );
            if !failed.is_empty() {
                return Err(SetupError::Check(format!(
                    "acknowledged pushes do not read back: {}",
                    failed.join("; ")
                )));
            }
            outcome
        }
        Workload::Get => {
            let op = Get {
                reg,
                path: p.path.clone(),
            };
            runner::run(op, plan).await
        }
    };
    Ok(Ran { outcome, blob_digest })
}

/// Pushes a layer of `size` bytes and a config naming it; returns (config, layer).
async fn push_image_blobs(reg: &Registry, repo: &str, size: u64) -> Result<(Bytes, Blob), SetupError> {
    let layer = BlobSource::new(size)?.blob(0);
    ops::push_monolithic(reg, repo, &layer).await?;
    let config = Bytes::from(config_json(&layer));
    ops::push_monolithic(reg, repo, &Blob::from_bytes(config.clone())).await?;
    Ok((config, layer))
}

async fn check_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    doc: &Bytes,
    digest: &str,
) -> Result<(), SetupError> {
    let got = ops::get_manifest(reg, repo, reference, true).await?;
    if got.body.as_ref() != Some(doc) {
        return Err(SetupError::Check(format!(
            "GET manifest {reference} returned other bytes than were pushed ({} vs {} bytes)",
            got.len,
            doc.len()
        )));
    }
    if let Some(d) = got.digest_header.as_deref() {
        if d != digest {
            return Err(SetupError::Check(format!(
                "GET manifest {reference}: Docker-Content-Digest {d}, expected {digest}"
            )));
        }
    }
    if got.content_type.as_deref() != Some(OCI_MANIFEST) {
        return Err(SetupError::Check(format!(
            "GET manifest {reference}: Content-Type {:?}, expected {OCI_MANIFEST}",
            got.content_type
        )));
    }
    Ok(())
}

fn check_tags(body: &[u8], want: &[String]) -> Result<(), SetupError> {
    #[derive(Deserialize)]
    struct TagList {
        tags: Option<Vec<String>>,
    }
    let list: TagList = serde_json::from_slice(body).map_err(|e| {
        SetupError::Check(format!(
            "tags/list is not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })?;
    let have: std::collections::HashSet<&str> = list.tags.iter().flatten().map(String::as_str).collect();
    let missing = want.iter().filter(|t| !have.contains(t.as_str())).count();
    if missing > 0 {
        return Err(SetupError::Check(format!(
            "tags/list lacks {missing} of the {} tags pushed",
            want.len()
        )));
    }
    Ok(())
}

struct BlobPush {
    reg: Arc<Registry>,
    repo: String,
    src: BlobSource,
    chunk: Option<u64>,
}

impl Op for BlobPush {
    async fn run(&self, seq: u64) -> Result<u64, HttpError> {
        // seq 0 is left for blob-pull style setups; pushes use 1.. to stay distinct.
        let blob = self.src.blob(seq + 1);
        match self.chunk {
            None => ops::push_monolithic(&self.reg, &self.repo, &blob).await?,
            Some(c) => ops::push_chunked(&self.reg, &self.repo, &blob, c).await?,
        }
        Ok(blob.len())
    }
}

struct BlobPull {
    reg: Arc<Registry>,
    repo: String,
    digest: String,
    len: u64,
    verify: bool,
}

impl Op for BlobPull {
    async fn run(&self, _seq: u64) -> Result<u64, HttpError> {
        ops::get_blob(&self.reg, &self.repo, &self.digest, self.len, self.verify).await
    }
}

struct ManifestPut {
    reg: Arc<Registry>,
    repo: String,
    config: Bytes,
    layer: Blob,
    nonce: u32,
}

impl Op for ManifestPut {
    async fn run(&self, seq: u64) -> Result<u64, HttpError> {
        let stamp = format!("{:08x}-{seq}", self.nonce);
        let doc = Bytes::from(manifest_json(&self.config, &self.layer, &stamp));
        let n = doc.len() as u64;
        ops::put_manifest(&self.reg, &self.repo, &format!("t{stamp}"), OCI_MANIFEST, doc).await?;
        Ok(n)
    }
}

struct ManifestGet {
    reg: Arc<Registry>,
    repo: String,
    reference: String,
    len: u64,
}

impl Op for ManifestGet {
    async fn run(&self, _seq: u64) -> Result<u64, HttpError> {
        let got = ops::get_manifest(&self.reg, &self.repo, &self.reference, false).await?;
        if got.len != self.len {
            return Err(HttpError::Verify {
                method: http::Method::GET,
                url: self.reg.url(&format!("/v2/{}/manifests/{}", self.repo, self.reference)),
                what: format!("manifest is {} bytes, expected {}", got.len, self.len),
            });
        }
        Ok(got.len)
    }
}

struct TagsList {
    reg: Arc<Registry>,
    repo: String,
    len: u64,
}

impl Op for TagsList {
    async fn run(&self, _seq: u64) -> Result<u64, HttpError> {
        let (n, _) = ops::tags_list(&self.reg, &self.repo, false).await?;
        if n != self.len {
            return Err(HttpError::Verify {
                method: http::Method::GET,
                url: self.reg.url(&format!("/v2/{}/tags/list", self.repo)),
                what: format!("body is {n} bytes, expected {}", self.len),
            });
        }
        Ok(n)
    }
}

/// An operation shared with the code that inspects it after the run.
struct SharedOp<O>(Arc<O>);

impl<O: Op> Op for SharedOp<O> {
    async fn run(&self, seq: u64) -> Result<u64, HttpError> {
        self.0.run(seq).await
    }
}

struct Get {
    reg: Arc<Registry>,
    path: String,
}

impl Op for Get {
    async fn run(&self, _seq: u64) -> Result<u64, HttpError> {
        ops::get_path(&self.reg, &self.path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_check() {
        let want = vec!["a".to_string(), "b".to_string()];
        assert!(check_tags(br#"{"name":"x/y","tags":["b","a","c"]}"#, &want).is_ok());
        assert!(check_tags(br#"{"name":"x/y","tags":["a"]}"#, &want).is_err());
        assert!(check_tags(br#"{"name":"x/y","tags":null}"#, &want).is_err());
        assert!(check_tags(b"nope", &want).is_err());
    }
}
