//! cosign's signature format (sigstore/cosign `specs/SIGNATURE_SPEC.md`): a "simple signing"
//! JSON payload that names the image's manifest digest, signed, and carried as a layer of an
//! OCI manifest whose annotation holds the base64 signature. The manifest is found under the
//! tag `<algorithm>-<hex>.sig` (cosign's default scheme) or among the image's referrers
//! (artifactType `application/vnd.dev.cosign.artifact.sig.v1+json`, cosign's OCI 1.1 mode).
//!
//! This module reads and writes that format; `super` decides which keys to check it with.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// The media type of a payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The artifactType of a signature pushed as a referrer.
pub const ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The `critical.type` a payload must carry.
const PAYLOAD_TYPE: &str = "cosign container image signature";
/// Layers one signature manifest may carry that are read.
pub const MAX_CLAIMS: usize = 16;

/// The tag cosign keeps an image's signatures under: `sha256:ab…` → `sha256-ab….sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// Whether `tag` is one of cosign's attached-artifact tags (signatures, attestations, SBOMs).
pub fn is_attached_tag(tag: &str) -> bool {
    let attached = [".sig", ".att", ".sbom"].iter().any(|s| tag.ends_with(s));
    attached && (tag.starts_with("sha256-") || tag.starts_with("sha512-"))
}

/// One signed payload a signature manifest carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The payload blob.
    pub payload_digest: String,
    pub payload_size: u64,
    pub signature: Vec<u8>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The claims of a signature manifest: its simple-signing layers with their signatures.
pub fn claims(manifest: &[u8]) -> Result<Vec<Claim>, String> {
    let m: Manifest = serde_json::from_slice(manifest).map_err(|e| format!("not a signature manifest: {e}"))?;
    let mut out = Vec::new();
    for layer in m
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING)
        .take(MAX_CLAIMS)
    {
        let Some(signature) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature.trim())
            .map_err(|e| format!("signature annotation of {} is not base64: {e}", layer.digest))?;
        out.push(Claim {
            payload_digest: layer.digest.clone(),
            payload_size: layer.size,
            signature,
        });
    }
    if out.is_empty() {
        return Err("no signed simple-signing layer".into());
    }
    Ok(out)
}

/// Checks that a payload is a cosign signature payload for the image `digest`.
pub fn check_payload(payload: &[u8], digest: &str) -> Result<(), String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    let critical = &v["critical"];
    if critical["type"].as_str() != Some(PAYLOAD_TYPE) {
        return Err(format!("payload type is not {PAYLOAD_TYPE:?}"));
    }
    match critical["image"]["docker-manifest-digest"].as_str() {
        Some(d) if d == digest => Ok(()),
        Some(other) => Err(format!("the signature is for {other}, not this image")),
        None => Err("payload names no manifest digest".into()),
    }
}

/// The payload cosign signs for image `digest` pulled as `reference` (`host/repository`).
pub fn payload(reference: &str, digest: &str) -> Vec<u8> {
    // serde_json's map keeps keys sorted, which is cosign's field order too.
    let v = json!({
        "critical": {
            "identity": { "docker-reference": reference },
            "image": { "docker-manifest-digest": digest },
            "type": PAYLOAD_TYPE,
        },
        "optional": null,
    });
    v.to_string().into_bytes()
}

/// A descriptor of a blob in a manifest being built.
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// The config blob of a signature manifest, as cosign writes it: a rootfs naming each payload.
pub fn config(layers: &[Blob]) -> Vec<u8> {
    let v = json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "",
        "rootfs": {
            "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
            "type": "layers",
        },
    });
    v.to_string().into_bytes()
}

/// The layers of an existing signature manifest, kept as they are when a signature is added.
pub fn existing_layers(manifest: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Value>(manifest)
        .ok()
        .and_then(|m| m["layers"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l["mediaType"] == SIMPLE_SIGNING)
        .take(MAX_CLAIMS - 1)
        .collect()
}

/// A payload layer with its signature.
pub fn layer(payload: &Blob, signature: &[u8]) -> Value {
    json!({
        "mediaType": SIMPLE_SIGNING,
        "digest": payload.digest,
        "size": payload.size,
        "annotations": {
            SIGNATURE_ANNOTATION: base64::engine::general_purpose::STANDARD.encode(signature),
        },
    })
}

/// The signature manifest carrying `layers` with the config blob `config`.
pub fn manifest(config: &Blob, layers: Vec<Value>) -> Vec<u8> {
    let v = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest,
            "size": config.size,
        },
        "layers": layers,
    });
    v.to_string().into_bytes()
}

/// Payload layer descriptors of layers built by [`layer`] (for the config's rootfs).
pub fn blobs_of(layers: &[Value]) -> Vec<Blob> {
    layers
        .iter()
        .filter_map(|l| {
            Some(Blob {
                digest: l["digest"].as_str()?.to_string(),
                size: l["size"].as_u64()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_names_its_image() {
        let d = format!("sha256:{}", "a".repeat(64));
        let p = payload("reg.example/acme/app", &d);
        let text = String::from_utf8(p.clone()).expect("utf8");
        assert!(text.starts_with(r#"{"critical":{"identity":{"docker-reference":"reg.example/acme/app"}"#));
        assert_eq!(check_payload(&p, &d), Ok(()));
        let other = format!("sha256:{}", "b".repeat(64));
        assert!(check_payload(&p, &other).unwrap_err().contains("not this image"));
        assert!(check_payload(b"{}", &d).is_err());
    }

    #[test]
    fn manifests_carry_claims() {
        let payload = Blob {
            digest: format!("sha256:{}", "c".repeat(64)),
            size: 10,
        };
        let layers = vec![layer(&payload, b"sig")];
        let cfg = Blob {
            digest: format!("sha256:{}", "d".repeat(64)),
            size: 5,
        };
        let m = manifest(&cfg, layers);
        let c = claims(&m).expect("claims");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].signature, b"sig");
        assert_eq!(c[0].payload_digest, payload.digest);
        assert_eq!(existing_layers(&m).len(), 1);
        assert!(claims(br#"{"layers":[]}"#).is_err());
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
        assert!(is_attached_tag("sha256-abc.sig"));
        assert!(!is_attached_tag("v1.sig"));
    }
}
