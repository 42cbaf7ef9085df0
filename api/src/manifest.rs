//! Manifest validation: decides the media type, checks the structure with `oci-spec`'s types and
//! extracts what the catalog must record (referenced blobs and manifests, subject, artifact type).

use std::collections::BTreeMap;

use keelson_raft::ManifestRecord;
use keelson_storage::{Algorithm, Digest};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::error::{ApiError, ErrorCode};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::ManifestInvalid, message)
}

/// A manifest that passed validation.
#[derive(Debug)]
pub struct ValidManifest {
    pub digest: Digest,
    pub record: ManifestRecord,
}

/// Validates `body` sent with `content_type`; `now_ms` stamps the record.
///
/// The manifest's digest is taken by `algorithm`: the one of the digest it is pushed by, sha256
/// when pushed by tag.
pub fn validate(
    body: &[u8],
    content_type: Option<&str>,
    now_ms: u64,
    algorithm: Algorithm,
) -> Result<ValidManifest, ApiError> {
    let generic: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    let object = generic
        .as_object()
        .ok_or_else(|| invalid("manifest must be a JSON object"))?;
    if object.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(invalid("schemaVersion must be 2 (Docker schema 1 is not supported)"));
    }
    let declared = match object.get("mediaType") {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| invalid("mediaType must be a string"))?),
    };
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty());
    let is_index = object.contains_key("manifests");
    let media_type = match (declared, header) {
        (Some(d), Some(h)) if d != h && h != "application/json" && h != "application/octet-stream" => {
            return Err(invalid(format!("mediaType {d} does not match Content-Type {h}")));
        }
        (Some(d), _) => d.to_string(),
        (None, Some(h)) if [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&h) => h.to_string(),
        (None, _) if is_index => OCI_INDEX.to_string(),
        (None, _) => OCI_MANIFEST.to_string(),
    };
    let mut record = ManifestRecord {
        media_type: media_type.clone(),
        body: body.to_vec(),
        blobs: Vec::new(),
        manifests: Vec::new(),
        subject: None,
        artifact_type: None,
        annotations: None,
        created_ms: now_ms,
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest =
                serde_json::from_value(generic).map_err(|e| invalid(format!("invalid image manifest: {e}")))?;
            record.blobs.push(descriptor_digest(m.config())?.to_string());
            for layer in m.layers() {
                let digest = descriptor_digest(layer)?;
                // Foreign layers (with URLs) are fetched from elsewhere, not pushed here.
                if layer.urls().as_ref().is_none_or(|u| u.is_empty()) {
                    record.blobs.push(digest.to_string());
                }
            }
            record.subject = subject(m.subject().as_ref())?;
            record.artifact_type = m
                .artifact_type()
                .as_ref()
                .map(|t| t.to_string())
                .or_else(|| Some(m.config().media_type().to_string()));
            record.annotations = sorted(m.annotations());
        }
        OCI_INDEX | DOCKER_LIST => {
            if !is_index {
                return Err(invalid("an index must list manifests"));
            }
            let index: ImageIndex =
                serde_json::from_value(generic).map_err(|e| invalid(format!("invalid image index: {e}")))?;
            for child in index.manifests() {
                record.manifests.push(descriptor_digest(child)?.to_string());
            }
            record.subject = subject(index.subject().as_ref())?;
            record.artifact_type = index.artifact_type().as_ref().map(|t| t.to_string());
            record.annotations = sorted(index.annotations());
        }
        other => return Err(invalid(format!("unsupported manifest media type {other}"))),
    }
    record.blobs.sort();
    record.blobs.dedup();
    record.manifests.sort();
    record.manifests.dedup();
    Ok(ValidManifest {
        digest: Digest::of_with(algorithm, body),
        record,
    })
}

fn descriptor_digest(d: &Descriptor) -> Result<Digest, ApiError> {
    Digest::parse(d.digest().as_ref()).map_err(|e| invalid(format!("descriptor digest: {e}")))
}

fn subject(d: Option<&Descriptor>) -> Result<Option<String>, ApiError> {
    d.map(|d| descriptor_digest(d).map(|x| x.to_string())).transpose()
}

fn sorted(map: &Option<std::collections::HashMap<String, String>>) -> Option<BTreeMap<String, String>> {
    map.as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Whether a client's `Accept` header admits `media_type`. No header, `*/*` or an unparsable
/// one admits everything (old clients send none).
pub fn accepts(accept: &[&str], media_type: &str) -> bool {
    let mut saw_any = false;
    for header in accept {
        for item in header.split(',') {
            let item = item.split(';').next().unwrap_or("").trim();
            if item.is_empty() {
                continue;
            }
            saw_any = true;
            if item == "*/*" || item == media_type || item == "application/*" || item == "application/json" {
                return true;
            }
        }
    }
    !saw_any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_records_blobs_and_subject() {
        let body = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": digest('a'), "size": 2},
            "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": digest('b'), "size": 3}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": digest('c'), "size": 5}
        })
        .to_string();
        let v = validate(body.as_bytes(), Some(OCI_MANIFEST), 7, Algorithm::Sha256).expect("valid");
        assert_eq!(v.record.blobs, vec![digest('a'), digest('b')]);
        assert_eq!(v.record.subject, Some(digest('c')));
        assert_eq!(
            v.record.artifact_type.as_deref(),
            Some("application/vnd.cncf.helm.config.v1+json")
        );
        assert_eq!(v.digest, Digest::of(body.as_bytes()));
    }

    #[test]
    fn rejects_bad_manifests() {
        assert!(validate(b"{", None, 0, Algorithm::Sha256).is_err());
        assert!(validate(b"[]", None, 0, Algorithm::Sha256).is_err());
        assert!(validate(br#"{"schemaVersion":1}"#, None, 0, Algorithm::Sha256).is_err());
        let mismatch = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"{}","size":1}},"layers":[]}}"#,
            digest('a')
        );
        assert!(validate(mismatch.as_bytes(), Some(DOCKER_MANIFEST), 0, Algorithm::Sha256).is_err());
        assert!(validate(mismatch.as_bytes(), Some(OCI_MANIFEST), 0, Algorithm::Sha256).is_ok());
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#;
        assert!(validate(bad_digest.as_bytes(), None, 0, Algorithm::Sha256).is_err());
    }

    #[test]
    fn accept_negotiation() {
        assert!(accepts(&[], OCI_INDEX));
        assert!(accepts(
            &["application/vnd.oci.image.index.v1+json, */*"],
            DOCKER_MANIFEST
        ));
        assert!(!accepts(&[DOCKER_MANIFEST], OCI_INDEX));
        assert!(accepts(&[DOCKER_MANIFEST, OCI_INDEX], OCI_INDEX));
    }
}
