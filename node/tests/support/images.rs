//! OCI images as raw HTTP sees them: an [`Image`] is a manifest and its blobs, pushed the way
//! registry clients do (HEAD, mount or upload, then the manifest) and pulled back with every
//! byte compared. The redundancy and encryption-at-rest tests drive clusters with them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::content::digest_of;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image as pushed: its manifest bytes and every blob it references.
#[derive(Clone)]
pub struct Image {
    pub repo: String,
    pub tag: String,
    pub manifest: Vec<u8>,
    pub blobs: Vec<(String, Arc<Vec<u8>>)>,
}

impl Image {
    /// An OCI image of a small unique config and the given layers.
    pub fn new(repo: &str, tag: &str, layers: &[Arc<Vec<u8>>]) -> Image {
        let config = Arc::new(
            serde_json::to_vec(&json!({
                "architecture": "amd64", "os": "linux",
                "config": { "Labels": { "image": format!("{repo}:{tag}") } },
                "rootfs": { "type": "layers", "diff_ids": [] },
            }))
            .unwrap(),
        );
        let descriptor =
            |media: &str, bytes: &[u8]| json!({ "mediaType": media, "digest": digest_of(bytes), "size": bytes.len() });
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
        }))
        .unwrap();
        let mut blobs = vec![(digest_of(&config), config)];
        blobs.extend(layers.iter().map(|l| (digest_of(l), l.clone())));
        Image {
            repo: repo.to_string(),
            tag: tag.to_string(),
            manifest,
            blobs,
        }
    }

    pub fn digest(&self) -> String {
        digest_of(&self.manifest)
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Pushes a blob the way registry clients do: HEAD, then (when `mount_from` is given) a
/// cross-repository mount, else a monolithic upload.
pub async fn push_blob(
    c: &reqwest::Client,
    node: &str,
    repo: &str,
    digest: &str,
    bytes: &[u8],
    mount_from: Option<&str>,
) -> Result<(), String> {
    let head = c
        .head(format!("http://{node}/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if head.status() == 200 {
        return Ok(());
    }
    if let Some(from) = mount_from {
        let r = c
            .post(format!(
                "http://{node}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
            ))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() == 201 {
            return Ok(());
        }
        // 202: not mountable (collected meanwhile): upload into the session it opened.
        if r.status() == 202 {
            let location = r
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or("mount fallback without Location")?
                .to_string();
            let url = if location.starts_with("http") {
                location
            } else {
                format!("http://{node}{location}")
            };
            let sep = if url.contains('?') { '&' } else { '?' };
            let put = c
                .put(format!("{url}{sep}digest={digest}"))
                .body(bytes.to_vec())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            return match put.status().as_u16() {
                201 => Ok(()),
                s => Err(format!(
                    "upload after refused mount of {digest}: {s} {}",
                    put.text().await.unwrap_or_default()
                )),
            };
        }
        return Err(format!("mount of {digest}: {}", r.status()));
    }
    let r = c
        .post(format!("http://{node}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(bytes.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        201 => Ok(()),
        s => Err(format!(
            "push of {digest} to {repo}: {s} {}",
            r.text().await.unwrap_or_default()
        )),
    }
}

pub async fn push_image(
    c: &reqwest::Client,
    node: &str,
    image: &Image,
    mount_from: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (digest, bytes) in &image.blobs {
        push_blob(
            c,
            node,
            &image.repo,
            digest,
            bytes,
            mount_from.get(digest).map(String::as_str),
        )
        .await?;
    }
    let r = c
        .put(format!("http://{node}/v2/{}/manifests/{}", image.repo, image.tag))
        .header("content-type", OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match r.status().as_u16() {
        201 => Ok(()),
        s => Err(format!(
            "manifest {}:{}: {s} {}",
            image.repo,
            image.tag,
            r.text().await.unwrap_or_default()
        )),
    }
}

/// Pulls an image through `node`; every byte must match what was pushed.
pub async fn pull_image(c: &reqwest::Client, node: &str, image: &Image) -> Result<(), String> {
    let r = c
        .get(format!("http://{node}/v2/{}/manifests/{}", image.repo, image.tag))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("{node}: manifest {}:{}: {}", image.repo, image.tag, r.status()));
    }
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    if body.as_ref() != image.manifest.as_slice() {
        return Err(format!("{node}: manifest {}:{} differs", image.repo, image.tag));
    }
    for (digest, bytes) in &image.blobs {
        let r = c
            .get(format!("http://{node}/v2/{}/blobs/{digest}", image.repo))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!("{node}: blob {digest}: {}", r.status()));
        }
        let got = r
            .bytes()
            .await
            .map_err(|e| format!("{node}: blob {digest} body: {e}"))?;
        if got.len() != bytes.len() || digest_of(&got) != *digest {
            return Err(format!("{node}: blob {digest} differs ({} bytes)", got.len()));
        }
    }
    Ok(())
}
