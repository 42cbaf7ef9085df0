//! OCI image layouts on disk for client tests: build a small real image with umoci, copy it with
//! skopeo (private accept-anything policy, so no system policy file is needed), and read a
//! layout's tags and blobs back for byte-for-byte comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::content::{hex_of, pseudo_random, sha256_hex};
use super::tools::{exec, tool};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A skopeo command with a private signature policy (accept anything, written to `policy_dir`)
/// so no system policy file is needed, and no TLS towards the loopback registry.
pub fn skopeo(policy_dir: &Path) -> Command {
    let policy = policy_dir.join("policy.json");
    if !policy.exists() {
        fs::write(&policy, br#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    }
    let mut cmd = tool("skopeo");
    cmd.arg("--policy").arg(policy);
    cmd
}

/// A JSON file, parsed; panics naming the file.
pub fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The blobs of an OCI layout (`blobs/sha256/*`), by hex digest; asserts every blob's content
/// hashes to its name.
pub fn layout_blobs(layout: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut blobs = BTreeMap::new();
    let dir = layout.join("blobs/sha256");
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            name,
            "blob {} in {} does not match its digest",
            name,
            layout.display()
        );
        blobs.insert(name, bytes);
    }
    blobs
}

/// The descriptor that `index.json` of an OCI layout has for `tag`.
pub fn layout_ref(layout: &Path, tag: &str) -> Value {
    let index = read_json(&layout.join("index.json"));
    index["manifests"]
        .as_array()
        .expect("index.json has manifests")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no ref {tag} in {}: {index}", layout.join("index.json").display()))
        .clone()
}

/// Builds a single-platform image with umoci in the OCI layout `layout` (created when missing)
/// under `tag`: two layers (a small text file, then `payload_len` incompressible bytes plus an
/// architecture marker), a config with the given architecture. Every umoci run is bounded by
/// `limit`. Returns the manifest digest.
pub fn umoci_image(
    work: &Path,
    layout: &Path,
    tag: &str,
    arch: &str,
    payload_len: usize,
    seed: u64,
    limit: Duration,
) -> String {
    let umoci = |args: &[&str]| {
        let out = exec(tool("umoci").args(args), limit);
        assert!(
            out.ok,
            "umoci {args:?} failed ({}):\n{}\n{}",
            out.status, out.stdout, out.stderr
        );
    };
    let layout_s = layout.to_str().unwrap();
    let image = format!("{layout_s}:{tag}");
    if !layout.join("index.json").exists() {
        umoci(&["init", "--layout", layout_s]);
    }
    umoci(&["new", "--image", &image]);
    let bundle = work.join(format!("bundle-{tag}-{arch}"));
    let bundle_s = bundle.to_str().unwrap();
    umoci(&["unpack", "--rootless", "--image", &image, bundle_s]);
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/greeting"), format!("hello from {tag}/{arch}\n")).unwrap();
    umoci(&["repack", "--image", &image, bundle_s]);
    // A repack always diffs against the image the bundle was unpacked from: unpack the new image
    // into a fresh bundle for the second layer.
    fs::remove_dir_all(&bundle).unwrap();
    umoci(&["unpack", "--rootless", "--image", &image, bundle_s]);
    fs::create_dir_all(rootfs.join("opt/data")).unwrap();
    fs::write(rootfs.join("opt/data/payload.bin"), pseudo_random(payload_len, seed)).unwrap();
    fs::write(rootfs.join("opt/data/arch"), arch).unwrap();
    umoci(&["repack", "--image", &image, bundle_s]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--architecture",
        arch,
        "--os",
        "linux",
        "--config.entrypoint",
        "/bin/sh",
        "--config.env",
        "KEELSON_TEST=1",
        "--config.label",
        &format!("org.example.arch={arch}"),
    ]);
    umoci(&["gc", "--layout", layout_s]);
    let desc = layout_ref(layout, tag);
    assert_eq!(desc["mediaType"], OCI_MANIFEST);
    let digest = desc["digest"].as_str().unwrap().to_string();
    let manifest = read_json(&layout.join("blobs/sha256").join(hex_of(&digest)));
    assert_eq!(
        manifest["layers"].as_array().map(|l| l.len()),
        Some(2),
        "umoci built {manifest}"
    );
    digest
}

/// Builds amd64 and arm64 images with umoci and assembles them by hand into one OCI layout whose
/// `index.json` points (ref `tag`) at an image index blob with platform fields. Returns
/// (index digest, [(arch, manifest digest)]).
pub fn two_platform_layout(work: &Path, layout: &Path, tag: &str, limit: Duration) -> (String, Vec<(String, String)>) {
    let mut children = Vec::new();
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    for (i, arch) in ["amd64", "arm64"].into_iter().enumerate() {
        let single = work.join(format!("layout-{arch}"));
        let digest = umoci_image(work, &single, "img", arch, 512 << 10, 10 + i as u64, limit);
        let desc = layout_ref(&single, "img");
        for (hex, bytes) in layout_blobs(&single) {
            fs::write(layout.join("blobs/sha256").join(hex), bytes).unwrap();
        }
        children.push((arch.to_string(), digest, desc["size"].as_u64().unwrap()));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(arch, digest, size)| json!({
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        })).collect::<Vec<_>>(),
        "annotations": {"org.example.built-by": "keelson-clients-test"},
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_hex = sha256_hex(&index_bytes);
    fs::write(layout.join("blobs/sha256").join(&index_hex), &index_bytes).unwrap();
    fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_INDEX,
            "digest": format!("sha256:{index_hex}"),
            "size": index_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    (
        format!("sha256:{index_hex}"),
        children.into_iter().map(|(a, d, _)| (a, d)).collect(),
    )
}
