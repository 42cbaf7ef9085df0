//! Encryption at rest with real processes: three `keelson serve` nodes in three fault domains,
//! one replicated repository (three whole copies) and one erasure-coded one (rs=2+1), driven
//! over raw HTTP.
//!
//! The cluster starts without encryption, and a layer carrying a marker string is pushed: the
//! marker is then found on every disk (the control that shows the scan can see it). Encryption
//! is turned on by restarting the nodes with a master key file; the background job seals every
//! old file, new pushes are sealed from their first byte (an upload in progress shows no
//! marker in its session files), and after that the marker is found nowhere in any node's data
//! directory — blobs, shards, uploads, rocksdb files, Raft log, snapshots — nor is a token
//! signing key's private half, while a marker in a manifest (catalog metadata, not secret) is.
//! Every image pulls byte-identical through every node, Range reads across record boundaries
//! work, flipped bits in a sealed copy and in a sealed shard are caught by the scrub and
//! healed, and a master-key rotation re-wraps every data key and the signing keys, after which
//! the nodes restart with only the new key and everything still reads.
//!
//! Everything is polled with deadlines, never slept for. Node logs: `<tempdir>/nK/keelson.log`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::cluster::Cluster;
use support::content::{digest_of, hex_of, pseudo_random};
use support::images::{http, pull_image, push_image, Image};

const JOB_ENV: [(&str, &str); 6] = [
    ("KEELSON_REPAIR_INTERVAL_MS", "300"),
    ("KEELSON_SCRUB_INTERVAL_MS", "1000"),
    ("KEELSON_SCRUB_RATE_MIB", "0"),
    ("KEELSON_GC_GRACE_MS", "2000"),
    ("KEELSON_AT_REST_INTERVAL_MS", "300"),
    ("KEELSON_CAPACITY_INTERVAL_MS", "300"),
];
const MIB: usize = 1 << 20;
/// The sealed format's layout (see `keelson_storage::at_rest::sealed`).
const SEALED_HEADER: u64 = 256;
const SEALED_RECORD: u64 = (64 << 10) + 28;
/// DER of the Ed25519 OID followed by the private key's OCTET STRING header: present in every
/// PKCS#8 Ed25519 private key, absent from public keys.
const ED25519_PRIVATE: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// A layer of pseudo-random bytes with `marker` written at several places, one of them across
/// a sealed record boundary.
fn marked_layer(len: usize, seed: u64, marker: &[u8]) -> Arc<Vec<u8>> {
    let mut bytes = pseudo_random(len, seed);
    for at in [1000, (64 << 10) - 7, len / 2, len - marker.len() - 1] {
        bytes[at..at + marker.len()].copy_from_slice(marker);
    }
    Arc::new(bytes)
}

/// An image whose manifest carries `annotation` (catalog metadata).
fn annotated(repo: &str, tag: &str, layers: &[Arc<Vec<u8>>], annotation: &str) -> Image {
    let mut image = Image::new(repo, tag, layers);
    let mut manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["annotations"] = json!({ "org.example.note": annotation });
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    image
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    // Files may vanish while the scan runs (rocksdb, uploads): skip those.
                    if let Ok(bytes) = std::fs::read(&path) {
                        if bytes.windows(needle.len()).any(|w| w == needle) {
                            found.push(path);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// The blob and shard files under a node's data directory, by file name.
fn stored_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["blobs/sha256", "blobs/shards"] {
        for fan in std::fs::read_dir(data_dir.join(sub)).into_iter().flatten().flatten() {
            if fan.file_name() == "tmp" {
                continue;
            }
            out.extend(
                std::fs::read_dir(fan.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|f| f.path()),
            );
        }
    }
    out
}

/// Flips one bit inside the ciphertext of record `record` of a sealed file.
fn flip_ciphertext_bit(path: &Path, record: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let at = SEALED_HEADER + record * SEALED_RECORD + 12 + 500;
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    f.sync_all().unwrap();
}

/// A fresh random 32-byte master key as the key file's hex line.
fn new_key() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl support::cluster::Cluster {
    fn counter(&self, id: u64, name: &str) -> u64 {
        self.status(id)
            .ok()
            .and_then(|s| s["blob_jobs"][name].as_u64())
            .unwrap_or(0)
    }

    /// Waits until every node's encryption-at-rest pass has run on key ring generation
    /// `generation` (or later) and left every file sealed under the active key, and the
    /// catalog's secrets too.
    fn wait_sealed(&self, what: &str, ids: &[u64], generation: u64) {
        self.wait(what, Duration::from_secs(60), || {
            for id in ids {
                let s = self.status(*id)?;
                let jobs = &s["blob_jobs"];
                let at = |k: &str| jobs[k].as_u64();
                if at("at_rest.generation").unwrap_or(0) < generation
                    || at("at_rest.settled") != Some(1)
                    || at("at_rest.files_left") != Some(0)
                    || at("at_rest.secrets_left") != Some(0)
                {
                    return Err(format!("node {id}: {jobs}"));
                }
            }
            Ok(())
        })
    }

    /// Restarts every node (one after the other) and waits for the cluster to converge.
    fn restart_all(&mut self, ids: &[u64]) {
        for id in ids {
            self.node_mut(*id).restart();
        }
        self.wait_converged("the restarted nodes converge", ids, Duration::from_secs(60));
    }
}

/// Pushes `bytes` as a blob of `repo` through a chunked upload (POST, two PATCHes, PUT),
/// calling `mid_upload` between the two PATCHes.
async fn chunked_push(c: &reqwest::Client, node: &str, repo: &str, bytes: &[u8], mid_upload: impl FnOnce()) {
    let digest = digest_of(bytes);
    let r = c
        .post(format!("http://{node}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut location = r.headers()["location"].to_str().unwrap().to_string();
    let half = bytes.len() / 2;
    let absolute = |location: &str| {
        if location.starts_with("http") {
            location.to_string()
        } else {
            format!("http://{node}{location}")
        }
    };
    let mut mid_upload = Some(mid_upload);
    for (start, part) in [(0, &bytes[..half]), (half, &bytes[half..])] {
        let url = absolute(&location);
        let r = c
            .patch(url)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{start}-{}", start + part.len() - 1))
            .body(part.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
        location = r.headers()["location"].to_str().unwrap().to_string();
        if let Some(check) = mid_upload.take() {
            check();
        }
    }
    let url = absolute(&location);
    let sep = if url.contains('?') { '&' } else { '?' };
    let r = c.put(format!("{url}{sep}digest={digest}")).send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// A Range GET of `blob` through `node` must answer 206 with exactly those bytes.
async fn check_range(c: &reqwest::Client, node: &str, repo: &str, blob: &[u8], start: usize, end: usize) {
    let r = c
        .get(format!("http://{node}/v2/{repo}/blobs/{}", digest_of(blob)))
        .header("range", format!("bytes={start}-{end}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206, "range {start}-{end} through {node}");
    let got = r.bytes().await.unwrap();
    assert!(
        got.as_ref() == &blob[start..=end],
        "range {start}-{end} through {node} differs"
    );
}

async fn pull_all(cluster: &Cluster, c: &reqwest::Client, ids: &[u64], images: &[&Image]) {
    for id in ids {
        for image in images {
            if let Err(e) = pull_image(c, &cluster.node(*id).host(), image).await {
                panic!("pull through node {id}: {e}{}", cluster.logs());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_shards_uploads_and_signing_keys_are_sealed_rotated_scrubbed_and_healed() {
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("master.key");
    let spec = [(1, "fd1"), (2, "fd2"), (3, "fd3")];
    let ids = [1, 2, 3];
    let env: Vec<(String, String)> = JOB_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut cluster = Cluster::form(tmp.path(), &spec, move |_| env.clone());
    let c = http();
    let n1 = cluster.node(1).host();
    cluster.admin(&n1, &["repo-create", "enc/rs", "--redundancy", "rs=2+1"]);

    // Before encryption: the marker is on the disks (whole copies and shards) for all to read.
    let marker = b"KEELSON-AT-REST-MARKER-7f3a9c";
    let old_replicated = marked_layer(3 * MIB, 1, marker);
    let old_coded = marked_layer(3 * MIB + 777, 2, marker);
    let img_old = Image::new("enc/rep", "old", std::slice::from_ref(&old_replicated));
    let img_old_rs = Image::new("enc/rs", "old", std::slice::from_ref(&old_coded));
    for image in [&img_old, &img_old_rs] {
        if let Err(e) = push_image(&c, &n1, image, &BTreeMap::new()).await {
            panic!("push failed: {e}{}", cluster.logs());
        }
    }
    cluster.wait(
        "the layer's copies and shards are on the disks",
        Duration::from_secs(30),
        || {
            let holders: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| !files_containing(&cluster.node(*id).data_dir.join("blobs"), marker).is_empty())
                .collect();
            if holders.len() == 3 {
                Ok(())
            } else {
                Err(format!("marker found on nodes {holders:?} only"))
            }
        },
    );

    // Encryption on: every node restarts with the same master key file.
    let k1 = new_key();
    std::fs::write(&key_file, format!("# active\n{k1}\n")).unwrap();
    for id in ids {
        cluster
            .node_mut(id)
            .set_env("KEELSON_ENCRYPTION_KEY_FILE", key_file.to_str().unwrap());
    }
    cluster.restart_all(&ids);
    cluster.wait_sealed("every old file is sealed", &ids, 0);

    // New pushes are sealed from their first byte: an upload in progress holds no marker.
    let new_replicated = marked_layer(2 * MIB + 5, 3, marker);
    let new_coded = marked_layer(4 * MIB, 4, marker);
    let n2 = cluster.node(2).host();
    let n2_dir = cluster.node(2).data_dir.clone();
    chunked_push(&c, &n2, "enc/rep", &new_replicated, || {
        let sessions = files_containing(&n2_dir.join("uploads"), b"KLSNSEAL");
        assert!(!sessions.is_empty(), "no sealed upload session file on node 2");
        let leaked = files_containing(&n2_dir.join("uploads"), marker);
        assert!(
            leaked.is_empty(),
            "upload files hold the marker in the clear: {leaked:?}"
        );
    })
    .await;
    let catalog_marker = "KEELSON-CATALOG-MARKER-55e1";
    let img_new = annotated("enc/rep", "new", std::slice::from_ref(&new_replicated), catalog_marker);
    let img_new_rs = Image::new("enc/rs", "new", std::slice::from_ref(&new_coded));
    for image in [&img_new, &img_new_rs] {
        if let Err(e) = push_image(&c, &n2, image, &BTreeMap::new()).await {
            panic!("push failed: {e}{}", cluster.logs());
        }
    }
    // The first token request creates the cluster's signing key (sealed).
    let token = c
        .get(format!("http://{n1}/token?service=keelson"))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let images = [&img_old, &img_old_rs, &img_new, &img_new_rs];
    pull_all(&cluster, &c, &ids, &images).await;
    cluster.wait_sealed("the new files and the signing key are sealed", &ids, 0);
    // Nothing readable is left anywhere: not the layers' marker, not a private key; the
    // manifest's annotation (metadata) shows the scan does read the catalog's files.
    for id in ids {
        let dir = &cluster.node(id).data_dir;
        let leaked = files_containing(dir, marker);
        assert!(leaked.is_empty(), "node {id}: marker in the clear in {leaked:?}");
        let keys = files_containing(dir, ED25519_PRIVATE);
        assert!(keys.is_empty(), "node {id}: a private key in the clear in {keys:?}");
        let files = stored_files(dir);
        assert!(!files.is_empty());
        for f in &files {
            assert!(
                f.to_string_lossy().ends_with(".sealed"),
                "node {id}: {} is not sealed",
                f.display()
            );
        }
    }
    let catalog_hits: usize = ids
        .iter()
        .map(|id| files_containing(&cluster.node(*id).data_dir, catalog_marker.as_bytes()).len())
        .sum();
    assert!(
        catalog_hits > 0,
        "the scan found no catalog record (the manifest annotation)"
    );

    // Range reads decrypt only what they serve, across record boundaries.
    let rec = 64 << 10;
    for node in [&n1, &n2] {
        check_range(&c, node, "enc/rep", &old_replicated, rec - 10, rec + 10).await;
        check_range(&c, node, "enc/rep", &new_replicated, 3 * rec + 1, 5 * rec).await;
        check_range(&c, node, "enc/rs", &new_coded, 1, 2 * MIB + 3).await;
        check_range(
            &c,
            node,
            "enc/rs",
            &old_coded,
            old_coded.len() - 100,
            old_coded.len() - 1,
        )
        .await;
    }

    // A sealed layer pulled again is served from its decrypted windows (decrypted once, kept
    // in memory), byte-identical, whole and in ranges across window edges.
    let hits = cluster.counter(1, "decrypted_cache.hits");
    pull_all(&cluster, &c, &[1], &[&img_old, &img_old]).await;
    check_range(&c, &n1, "enc/rep", &old_replicated, MIB - 3, 2 * MIB + 2).await;
    assert!(
        cluster.counter(1, "decrypted_cache.hits") > hits,
        "no pull was served from node 1's decrypted windows"
    );
    assert!(cluster.counter(1, "decrypted_cache.bytes") >= 3 * MIB as u64);

    // A flipped bit in a sealed whole copy (node 3) and in a sealed shard (node 1) is caught
    // by the scrub and healed from the other copies / shards.
    let copy = cluster
        .node(3)
        .data_dir
        .join("blobs/sha256")
        .join(&hex_of(&digest_of(&old_replicated))[..2])
        .join(format!("{}.sealed", hex_of(&digest_of(&old_replicated))));
    let shard = stored_files(&cluster.node(1).data_dir)
        .into_iter()
        .find(|p| {
            p.to_string_lossy().contains(hex_of(&digest_of(&new_coded))) && p.to_string_lossy().contains("shards")
        })
        .expect("node 1 holds a shard of the coded layer");
    let corrupt_before = (cluster.counter(3, "scrub.corrupt"), cluster.counter(1, "scrub.corrupt"));
    flip_ciphertext_bit(&copy, 2);
    flip_ciphertext_bit(&shard, 1);
    cluster.wait("the scrub catches both flipped bits", Duration::from_secs(30), || {
        let now = (cluster.counter(3, "scrub.corrupt"), cluster.counter(1, "scrub.corrupt"));
        if now.0 > corrupt_before.0 && now.1 > corrupt_before.1 {
            Ok(())
        } else {
            Err(format!(
                "scrub.corrupt on nodes 3 and 1: {now:?} (before {corrupt_before:?})"
            ))
        }
    });
    cluster.wait("the healer restores both files", Duration::from_secs(60), || {
        if copy.is_file() && shard.is_file() {
            Ok(())
        } else {
            Err(format!("copy {} shard {}", copy.is_file(), shard.is_file()))
        }
    });
    for file in [&copy, &shard] {
        assert!(
            files_containing(file, marker).is_empty(),
            "the healed {} is not sealed",
            file.display()
        );
    }
    pull_all(&cluster, &c, &[3, 1], &images).await;

    // Rotation: the new key first, the old one retired below it; every data key and the
    // signing key are re-wrapped, then the old key leaves the file and the nodes restart.
    let k2 = new_key();
    std::fs::write(&key_file, format!("{k2}\n{k1}\n")).unwrap();
    let rewrapped_before: u64 = ids.iter().map(|id| cluster.counter(*id, "at_rest.rewrapped")).sum();
    cluster.wait_sealed("every file is re-wrapped under the new key", &ids, 1);
    let rewrapped: u64 = ids.iter().map(|id| cluster.counter(*id, "at_rest.rewrapped")).sum();
    assert!(rewrapped > rewrapped_before, "no data key was re-wrapped");
    std::fs::write(&key_file, format!("{k2}\n")).unwrap();
    cluster.wait_sealed("no file needs the retired key", &ids, 2);
    cluster.restart_all(&ids);
    pull_all(&cluster, &c, &ids, &images).await;
    check_range(&c, &n2, "enc/rep", &new_replicated, rec - 1, rec).await;
    let token = c
        .get(format!("http://{n2}/token?service=keelson"))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200, "signing with the re-sealed key");
}
