//! The image documents the manifest workloads push: a small config blob and OCI image
//! manifests that differ only in one annotation, so each PUT stores a new manifest.

use serde_json::json;

use crate::blob::{digest_of, Blob};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The Accept header Docker's pull sends for manifests (containerd resolver style).
pub const DOCKER_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, */*";

/// A config blob whose rootfs names the layer.
pub fn config_json(layer: &Blob) -> Vec<u8> {
    let doc = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
    });
    doc.to_string().into_bytes()
}

/// An image manifest for `config` + `layer`, annotated with `stamp`.
pub fn manifest_json(config: &[u8], layer: &Blob, stamp: &str) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": digest_of(config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": OCI_LAYER,
            "digest": layer.digest,
            "size": layer.len(),
        }],
        "annotations": { "dev.keelson.bench.stamp": stamp },
    });
    doc.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BlobSource;

    #[test]
    fn manifests_differ_by_stamp() {
        let src = BlobSource::new(1024).expect("size");
        let layer = src.blob(0);
        let cfg = config_json(&layer);
        let a = manifest_json(&cfg, &layer, "a");
        let b = manifest_json(&cfg, &layer, "b");
        assert_ne!(digest_of(&a), digest_of(&b));
        let v: serde_json::Value = serde_json::from_slice(&a).expect("json");
        assert_eq!(v["layers"][0]["size"], 1024);
    }
}
