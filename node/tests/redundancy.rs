//! Blob redundancy with real processes: six `keelson serve` nodes in three fault domains
//! (replicas = 3), and six in six with erasure-coded and replicated repositories side by side,
//! driven over raw HTTP.
//!
//! One cluster goes through the whole life of its blobs: pushes land as three copies in three
//! fault domains (disk overhead 3.0×); a whole fault domain is killed and every image still pulls
//! byte-identical from every survivor; repair restores three live copies (`cluster status`
//! reaches zero under-replicated blobs and zero bytes to move), also after the dead nodes are
//! removed and replaced; flipped bits in stored files are caught (on read for small blobs, by the
//! scrub for large ones) and healed from another holder; and online GC removes deleted images'
//! blobs from every disk while concurrent pushes that share (and re-use) their layers all stay
//! pullable.
//!
//! The background jobs run on short test intervals (environment variables of `keelson serve`).
//! Everything is polled with deadlines, never slept for. Node logs: `<tempdir>/nK/keelson.log`.
//! Run: `cargo test -p keelson --test redundancy -- --nocapture` (prints the measured overheads).

// Each test holds the process-wide SERIAL guard for its whole body (six node processes per test
// are plenty for two cores).
#![allow(clippy::await_holding_lock)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::cluster::Cluster;
use support::content::{digest_of, pseudo_random};
use support::images::{http, pull_image, push_image, Image};
use support::status::status_of;

/// Background job settings for the test: fast passes, short grace, no throttling.
const JOB_ENV: [(&str, &str); 8] = [
    ("KEELSON_REPAIR_INTERVAL_MS", "300"),
    ("KEELSON_REPAIR_LOST_AFTER_MS", "3000"),
    ("KEELSON_REPAIR_RATE_MIB", "0"),
    ("KEELSON_SCRUB_INTERVAL_MS", "1500"),
    ("KEELSON_SCRUB_RATE_MIB", "0"),
    ("KEELSON_GC_INTERVAL_MS", "500"),
    ("KEELSON_GC_GRACE_MS", "4000"),
    ("KEELSON_CAPACITY_INTERVAL_MS", "300"),
];
/// One cluster at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Utilities
// ---------------------------------------------------------------------------------------------

/// Flips every bit of one byte in the middle of a file.
fn flip_byte(path: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
    f.sync_all().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The cluster under test
// ---------------------------------------------------------------------------------------------

/// Starts `(id, fault domain)` nodes with [`JOB_ENV`], `extra_env` on every node and
/// `node_env` (node id, name, value) on single ones, and forms them into one cluster (init on
/// the first). Nodes started later get the same environment.
fn form(
    dir: &Path,
    spec: &[(u64, &str)],
    extra_env: &[(&'static str, &'static str)],
    node_env: &[(u64, &'static str, &'static str)],
) -> Cluster {
    let env: Vec<(&str, &str)> = JOB_ENV.iter().chain(extra_env).copied().collect();
    let node_env = node_env.to_vec();
    Cluster::form(dir, spec, move |id| {
        let own = node_env.iter().filter(|(n, _, _)| *n == id).map(|(_, k, v)| (*k, *v));
        env.iter()
            .copied()
            .chain(own)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

impl Cluster {
    /// Waits until every member's capacity report is in the catalog (seen by the leader);
    /// returns free bytes by node id.
    fn wait_capacities(&self, alive: &[u64]) -> BTreeMap<u64, u64> {
        self.wait("every member reported its capacity", Duration::from_secs(30), || {
            let s = self.leader_status(alive)?;
            let mut free = BTreeMap::new();
            for m in s["members"].as_array().ok_or("no members")? {
                let id = m["id"].as_u64().ok_or("member without id")?;
                let f = m["free_bytes"].as_u64().ok_or(format!("node {id} has not reported"))?;
                free.insert(id, f);
            }
            Ok(free)
        })
    }

    /// Fault domains of the nodes among `ids` holding a whole copy of `digest`, with the holders.
    fn copy_domains(&self, ids: &[u64], digest: &str) -> (Vec<u64>, BTreeSet<String>) {
        let holders = self.holders(ids, digest);
        let domains = holders.iter().map(|id| self.node(*id).fault_domain.clone()).collect();
        (holders, domains)
    }

    /// The status as the current leader reports it (only the leader runs repair).
    fn leader_status(&self, alive: &[u64]) -> Result<Value, String> {
        let any = status_of(self.node(alive[0]).api)?;
        let leader = any["leader"].as_u64().ok_or("no leader")?;
        if !alive.contains(&leader) {
            return Err(format!("leader {leader} is not among {alive:?}"));
        }
        status_of(self.node(leader).api)
    }

    /// Waits until the leader has made at least `copies` repair copies and its last repair pass
    /// reports nothing under-replicated and nothing to move.
    fn wait_repaired(&self, what: &str, alive: &[u64], copies: u64) -> Value {
        self.wait(what, Duration::from_secs(60), || {
            let s = self.leader_status(alive)?;
            let made = s["blob_jobs"]["repair.copies"].as_u64().unwrap_or(0);
            if s["under_replicated"] == json!(0) && s["bytes_to_move"] == json!(0) && made >= copies {
                Ok(s)
            } else {
                Err(format!(
                    "leader reports under_replicated={} bytes_to_move={} repair.copies={made}",
                    s["under_replicated"], s["bytes_to_move"]
                ))
            }
        })
    }

    fn blob_path(&self, id: u64, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.node(id).data_dir.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    /// The nodes among `ids` whose disk holds `digest`.
    fn holders(&self, ids: &[u64], digest: &str) -> Vec<u64> {
        ids.iter()
            .copied()
            .filter(|id| self.blob_path(*id, digest).is_file())
            .collect()
    }

    /// Bytes of blob and shard files on the disks of `ids`.
    fn disk_bytes(&self, ids: &[u64]) -> u64 {
        let mut total = 0;
        for id in ids {
            for dir in ["blobs/sha256", "blobs/shards"] {
                let root = self.node(*id).data_dir.join(dir);
                for fan in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                    if fan.file_name() == "tmp" {
                        continue;
                    }
                    for f in std::fs::read_dir(fan.path()).into_iter().flatten().flatten() {
                        total += f.metadata().map(|m| m.len()).unwrap_or(0);
                    }
                }
            }
        }
        total
    }

    /// Bytes of the whole-blob files of `digest` on the disks of `ids`.
    fn disk_bytes_of(&self, ids: &[u64], digest: &str) -> u64 {
        ids.iter()
            .filter_map(|id| std::fs::metadata(self.blob_path(*id, digest)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The shard files of `digest` on the disks of `ids`: (node, shard index).
    fn shards(&self, ids: &[u64], digest: &str) -> Vec<(u64, usize)> {
        let hex = digest.trim_start_matches("sha256:");
        let mut out = Vec::new();
        for id in ids {
            let dir = self.node(*id).data_dir.join("blobs/shards").join(&hex[..2]);
            for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(index) = name.strip_prefix(&format!("{hex}.")).and_then(|i| i.parse().ok()) {
                    out.push((*id, index));
                }
            }
        }
        out
    }

    /// Disk bytes on `ids` over the logical bytes of the distinct blobs of `images`; waits (with
    /// a deadline) until it is within `tolerance` of `expected` (orphans are cleaned up lazily).
    fn overhead(&self, what: &str, ids: &[u64], images: &[&Image], expected: f64, tolerance: f64) -> f64 {
        let logical: u64 = images
            .iter()
            .flat_map(|i| i.blobs.iter())
            .map(|(d, b)| (d.clone(), b.len() as u64))
            .collect::<BTreeMap<_, _>>()
            .values()
            .sum();
        let ratio = self.wait(what, Duration::from_secs(30), || {
            let ratio = self.disk_bytes(ids) as f64 / logical as f64;
            if (ratio - expected).abs() <= tolerance {
                Ok(ratio)
            } else {
                Err(format!(
                    "overhead {ratio:.3} (want {expected} ± {tolerance}) on nodes {ids:?}: {} bytes on disk, {logical} logical",
                    self.disk_bytes(ids)
                ))
            }
        });
        println!(
            "disk overhead {what}: {ratio:.3}x ({} logical bytes on nodes {ids:?})",
            logical
        );
        ratio
    }
}

/// Pulls every image through every node of `ids` (a blob shared by images of one repository is
/// fetched once per node).
async fn pull_everywhere(cluster: &Cluster, c: &reqwest::Client, ids: &[u64], images: &[&Image]) {
    for id in ids {
        let host = cluster.node(*id).host();
        let mut seen = BTreeSet::new();
        for image in images {
            let mut fresh = (*image).clone();
            fresh
                .blobs
                .retain(|(d, _)| seen.insert((image.repo.clone(), d.clone())));
            if let Err(e) = pull_image(c, &host, &fresh).await {
                panic!("pull through node {id} failed: {e}{}", cluster.logs());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replicas: fault-domain loss, repair, replacement, scrub, GC under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_survive_a_fault_domain_repair_scrub_and_gc_under_load() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let spec = [(1, "fd1"), (2, "fd1"), (3, "fd2"), (4, "fd2"), (5, "fd3"), (6, "fd3")];
    // Capacity skew: node 2 may use no disk at all (always nearly full), node 4 only 256 MiB,
    // the others the whole filesystem.
    let quotas = [
        (2, "KEELSON_CAPACITY_BYTES", "1"),
        (4, "KEELSON_CAPACITY_BYTES", "268435456"),
    ];
    let mut cluster = form(tmp.path(), &spec, &[], &quotas);
    let c = http();
    let free = cluster.wait_capacities(&[1, 2, 3, 4, 5, 6]);
    assert!(free[&2] <= 1, "{free:?}");
    assert!(free[&4] <= 256 << 20 && free[&3] > free[&4], "{free:?}");

    // Images: `shared` is in img-a and img-b; `reused` (in img-a) is re-used by the load below
    // only after img-a was deleted; every image also has a layer of its own.
    let layer = |seed| Arc::new(pseudo_random(3 * MIB, seed));
    let (shared, reused) = (layer(1), layer(2));
    let img_a = Image::new("test/a", "v1", &[shared.clone(), layer(3), reused.clone()]);
    let img_b = Image::new("test/b", "v1", &[shared.clone(), layer(4)]);
    let img_c = Image::new("test/c", "v1", &[layer(5), layer(6)]);
    let no_mounts = BTreeMap::new();
    for (image, via) in [(&img_a, 1), (&img_b, 3), (&img_c, 5)] {
        if let Err(e) = push_image(&c, &cluster.node(via).host(), image, &no_mounts).await {
            panic!("push failed: {e}{}", cluster.logs());
        }
    }
    let all = [1, 2, 3, 4, 5, 6];
    // Three copies of every blob, one per fault domain (a layer pushed again into another
    // repository is linked, and the second upload's file is removed by that node's scrub).
    for image in [&img_a, &img_b, &img_c] {
        for (digest, _) in &image.blobs {
            cluster.wait("three copies in three fault domains", Duration::from_secs(30), || {
                let holders = cluster.holders(&all, digest);
                let domains: BTreeSet<&str> = holders
                    .iter()
                    .map(|id| cluster.node(*id).fault_domain.as_str())
                    .collect();
                if (holders.len(), domains.len()) == (3, 3) {
                    Ok(())
                } else {
                    Err(format!("{digest} on {holders:?}"))
                }
            });
        }
    }
    // Placement follows capacity: nothing on the full node 2 (fd1's copies are all on node 1),
    // and in fd2 the node with far more free space holds more copies.
    let distinct: BTreeSet<&String> = [&img_a, &img_b, &img_c]
        .iter()
        .flat_map(|i| i.blobs.iter().map(|(d, _)| d))
        .collect();
    let copies_on = |id: u64| distinct.iter().filter(|d| cluster.blob_path(id, d).is_file()).count();
    let per_node: BTreeMap<u64, usize> = all.iter().map(|id| (*id, copies_on(*id))).collect();
    println!("copies per node with node 2 full and node 4 capped at 256 MiB: {per_node:?}");
    assert_eq!(per_node[&2], 0, "{per_node:?}");
    assert_eq!(per_node[&1], distinct.len(), "{per_node:?}");
    assert!(per_node[&3] > per_node[&4], "{per_node:?}");
    let replicated = cluster.overhead("after the pushes", &all, &[&img_a, &img_b, &img_c], 3.0, 0.01);

    // Lose fault domain fd3 entirely: every image still pulls, byte-identical, from every survivor.
    for id in [5, 6] {
        cluster.nodes.iter_mut().find(|n| n.id == id).unwrap().kill();
    }
    let alive = [1, 2, 3, 4];
    pull_everywhere(&cluster, &c, &alive, &[&img_a, &img_b, &img_c]).await;

    // The leader notices the silent members and re-creates their copies in the other domains:
    // every blob lost exactly one copy.
    cluster.wait_repaired("repair after losing fd3", &alive, distinct.len() as u64);
    cluster.overhead(
        "after repair, on the four survivors",
        &alive,
        &[&img_a, &img_b, &img_c],
        3.0,
        0.01,
    );

    // Replace the dead nodes: remove them, add two fresh ones in fd3.
    let n1 = cluster.node(1).host();
    cluster.cli(&n1, &["remove", "5"]);
    cluster.cli(&n1, &["remove", "6"]);
    cluster.start_node(7, "fd3");
    cluster.start_node(8, "fd3");
    cluster.add(&n1, 7);
    cluster.add(&n1, 8);
    let alive = [1, 2, 3, 4, 7, 8];
    // After the repair every blob had two copies in fd1 or fd2; with fd3 back, rebalancing moves
    // one of them to fd3 (new copy committed first, old one deleted after) until every blob's
    // three copies are in three fault domains again.
    let status = cluster.wait_repaired("repair after replacing fd3", &alive, distinct.len() as u64);
    for digest in &distinct {
        cluster.wait(
            "copies rebalanced over three fault domains",
            Duration::from_secs(30),
            || match cluster.copy_domains(&alive, digest) {
                (holders, domains) if holders.len() == 3 && domains.len() == 3 => Ok(()),
                (holders, _) => Err(format!("{digest} on {holders:?}")),
            },
        );
    }
    let moved = cluster.leader_status(&alive).unwrap()["blob_jobs"]["rebalance.copies"]
        .as_u64()
        .unwrap_or(0);
    assert!(moved >= distinct.len() as u64, "rebalance.copies = {moved}");
    let table = cluster.cli(&n1, &["status"]);
    println!("keelson cluster status after the replacement:\n{table}");
    assert!(
        table.contains("under-replicated: 0  bytes to move: 0  misplaced: 0"),
        "{table}"
    );
    assert_eq!(status["members"].as_array().map(|m| m.len()), Some(6), "{status}");
    pull_everywhere(&cluster, &c, &[7], &[&img_a, &img_b, &img_c]).await;
    let repaired = cluster.overhead("after replacing fd3", &alive, &[&img_a, &img_b, &img_c], 3.0, 0.01);

    // Bit rot. A small blob (a fresh image's config, never read yet) is verified when read: the
    // pull through its holder still succeeds, from another copy, and the copy is healed.
    let img_d = Image::new("test/d", "v1", &[layer(7)]);
    push_image(&c, &cluster.node(7).host(), &img_d, &no_mounts)
        .await
        .unwrap();
    let (config, _) = &img_d.blobs[0];
    let x = cluster.holders(&alive, config)[0];
    flip_byte(&cluster.blob_path(x, config));
    if let Err(e) = pull_image(&c, &cluster.node(x).host(), &img_d).await {
        panic!(
            "pull through node {x} with a corrupt config copy: {e}{}",
            cluster.logs()
        );
    }
    // A large layer is caught by the scrub, quarantined and fetched again.
    let (big, big_bytes) = &img_c.blobs[1];
    let y = cluster.holders(&alive, big)[0];
    flip_byte(&cluster.blob_path(y, big));
    for (id, digest, bytes) in [(x, config, &img_d.blobs[0].1), (y, big, big_bytes)] {
        cluster.wait("corrupt copy healed", Duration::from_secs(30), || {
            let now = std::fs::read(cluster.blob_path(id, digest)).map_err(|e| e.to_string())?;
            if now == **bytes {
                Ok(())
            } else {
                Err(format!("node {id}'s copy of {digest} is still corrupt"))
            }
        });
    }
    let s = status_of(cluster.node(y).api).unwrap();
    assert!(s["blob_jobs"]["scrub.repaired"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(cluster.node(y).log().contains("corrupt blob copy quarantined"));
    pull_everywhere(&cluster, &c, &[x, y], &[&img_c, &img_d]).await;

    // GC under load: delete img-a while a pusher keeps pushing images that share its `shared`
    // layer; once GC has marked img-a's blobs, the pusher also starts re-using `reused` (by a
    // cross-repository mount from test/a, falling back to an upload when it was collected).
    let gone: Vec<String> = img_a
        .blobs
        .iter()
        .map(|(d, _)| d.clone())
        .filter(|d| *d != digest_of(&shared) && *d != digest_of(&reused))
        .collect();
    let r = c
        .delete(format!(
            "http://{}/v2/test/a/manifests/{}",
            cluster.node(2).host(),
            img_a.digest()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let stop = Arc::new(AtomicBool::new(false));
    let reuse = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (stop, reuse) = (stop.clone(), reuse.clone());
        let (shared, reused) = (shared.clone(), reused.clone());
        let hosts: Vec<String> = alive.iter().map(|id| cluster.node(*id).host()).collect();
        let mounts = BTreeMap::from([(digest_of(&reused), "test/a".to_string())]);
        tokio::spawn(async move {
            let c = http();
            let mut acked = Vec::new();
            let mut failures = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) && k < 400 {
                let layers = if reuse.load(Ordering::SeqCst) {
                    vec![shared.clone(), reused.clone()]
                } else {
                    vec![shared.clone()]
                };
                let image = Image::new("load/app", &format!("t{k}"), &layers);
                match push_image(&c, &hosts[k % hosts.len()], &image, &mounts).await {
                    Ok(()) => acked.push(image),
                    Err(e) => failures.push(e),
                }
                k += 1;
                // Pacing of the load generator (not synchronisation).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (acked, failures)
        })
    };
    let leader_counter = |name: &str| -> Result<u64, String> {
        Ok(cluster.leader_status(&alive)?["blob_jobs"][name].as_u64().unwrap_or(0))
    };
    cluster.wait("GC marks img-a's blobs", Duration::from_secs(30), || {
        if leader_counter("gc.marked")? > 0 {
            Ok(())
        } else {
            Err("no mark yet".into())
        }
    });
    reuse.store(true, Ordering::SeqCst);
    cluster.wait(
        "img-a's own blobs gone from every disk",
        Duration::from_secs(60),
        || {
            let left: Vec<(String, Vec<u64>)> = gone
                .iter()
                .map(|d| (d.clone(), cluster.holders(&alive, d)))
                .filter(|(_, h)| !h.is_empty())
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("still on disk: {left:?}"))
            }
        },
    );
    stop.store(true, Ordering::SeqCst);
    let (acked, failures) = pusher.await.unwrap();
    assert!(
        failures.is_empty(),
        "pushes under GC failed: {failures:?}{}",
        cluster.logs()
    );
    assert!(
        acked.iter().any(|i| i.blobs.len() == 3),
        "no pushed image re-used the marked layer"
    );
    println!("GC under load: {} images pushed while img-a was collected", acked.len());
    let s = cluster.leader_status(&alive).unwrap();
    println!("leader's blob job counters: {}", s["blob_jobs"]);
    assert!(
        s["blob_jobs"]["gc.swept"].as_u64().unwrap_or(0) >= gone.len() as u64,
        "{s}"
    );
    // Everything acknowledged stays pullable; img-a is gone, img-b (sharing a layer) is not.
    let acked_refs: Vec<&Image> = acked.iter().collect();
    pull_everywhere(&cluster, &c, &[1, 8], &acked_refs).await;
    pull_everywhere(&cluster, &c, &[3, 7], &[&img_b, &img_c, &img_d]).await;
    assert!(pull_image(&c, &cluster.node(4).host(), &img_a).await.is_err());
    let mut live: Vec<&Image> = vec![&img_b, &img_c, &img_d];
    live.extend(acked.iter());
    let after_gc = cluster.overhead("after GC", &alive, &live, 3.0, 0.01);
    println!(
        "measured disk overhead (replicas=3): {replicated:.3}x after push, {repaired:.3}x after repair, {after_gc:.3}x after GC"
    );
}

// ---------------------------------------------------------------------------------------------
// Reed-Solomon 4+2: six nodes in six fault domains, any two lost
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reed_solomon_4_2_and_replicas_per_repo_survive_losing_any_two_nodes() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let spec = [(1, "fd1"), (2, "fd2"), (3, "fd3"), (4, "fd4"), (5, "fd5"), (6, "fd6")];
    let mut cluster = form(tmp.path(), &spec, &[], &[]);
    let c = http();
    // The cluster default (committed by `cluster init` from the first node's settings) is
    // replicas=3; repositories rs/x and rs/y are erasure coded, rep/z keeps the default.
    let n1 = cluster.node(1).host();
    let default = cluster.admin(&n1, &["redundancy"]);
    assert_eq!(default, json!({ "redundancy": "replicas=3", "committed": true }));
    cluster.admin(&n1, &["repo-create", "rs/x", "--redundancy", "rs=4+2"]);
    cluster.admin(&n1, &["repo-create", "rs/y"]);
    let set = cluster.admin(&n1, &["repo-redundancy", "rs/y", "rs=4+2"]);
    assert_eq!(set["redundancy"], "rs=4+2", "{set}");
    let shown = cluster.admin(&cluster.node(4).host(), &["repo-show", "rs/y"]);
    assert_eq!(
        (&shown["redundancy"], &shown["redundancy_source"]),
        (&json!("rs=4+2"), &json!("repo"))
    );
    // Large layers are coded (one of a size that is no multiple of a stripe); the small layer
    // and the configs are replicated.
    let big = Arc::new(pseudo_random(5 * MIB + 12345, 11));
    let img_x = Image::new("rs/x", "v1", &[Arc::new(pseudo_random(3 * MIB, 12)), big.clone()]);
    let img_y = Image::new(
        "rs/y",
        "v1",
        &[
            Arc::new(pseudo_random(100 << 10, 13)),
            Arc::new(pseudo_random(2 * MIB, 14)),
        ],
    );
    // rep/z shares `big` with rs/x: the first durable layout (coded) stays, rep/z links it.
    let z_own = Arc::new(pseudo_random(3 * MIB, 15));
    let img_z = Image::new("rep/z", "v1", &[z_own.clone(), big.clone()]);
    let no_mounts = BTreeMap::new();
    for (image, via) in [(&img_x, 1), (&img_y, 4), (&img_z, 2)] {
        if let Err(e) = push_image(&c, &cluster.node(via).host(), image, &no_mounts).await {
            panic!("push failed: {e}{}", cluster.logs());
        }
    }
    let shown = cluster.admin(&n1, &["repo-show", "rep/z"]);
    assert_eq!(
        (&shown["redundancy"], &shown["redundancy_source"]),
        (&json!("replicas=3"), &json!("cluster"))
    );
    let all = [1, 2, 3, 4, 5, 6];
    let z_own_digest = digest_of(&z_own);
    assert!(cluster.shards(&all, &z_own_digest).is_empty());
    cluster.wait(
        "rep/z's own layer: three whole copies",
        Duration::from_secs(30),
        || match cluster.copy_domains(&all, &z_own_digest) {
            (holders, domains) if holders.len() == 3 && domains.len() == 3 => Ok(()),
            (holders, _) => Err(format!("on {holders:?}")),
        },
    );
    // Every large blob of the rs repositories: six shards, one per node (hence one per fault
    // domain).
    let (k, m, chunk, sum) = (4u64, 2u64, 256u64 << 10, 32u64);
    let mut expected_disk = 0u64;
    let mut coded_logical = 0u64;
    let mut counted = BTreeSet::new();
    for image in [&img_x, &img_y, &img_z] {
        for (digest, bytes) in &image.blobs {
            if !counted.insert(digest.clone()) {
                continue;
            }
            let size = bytes.len() as u64;
            if size < MIB as u64 || !image.repo.starts_with("rs/") {
                expected_disk += 3 * size;
                continue;
            }
            let shards = cluster.shards(&all, digest);
            let nodes: BTreeSet<u64> = shards.iter().map(|(n, _)| *n).collect();
            let indexes: BTreeSet<usize> = shards.iter().map(|(_, i)| *i).collect();
            assert_eq!(
                (shards.len(), nodes.len(), indexes.len()),
                (6, 6, 6),
                "{digest}: {shards:?}"
            );
            let stripes = size.div_ceil(k * chunk);
            expected_disk += (k + m) * stripes * (chunk + sum);
            coded_logical += size;
        }
    }
    let logical: u64 = [&img_x, &img_y, &img_z]
        .iter()
        .flat_map(|i| i.blobs.iter())
        .map(|(d, b)| (d.clone(), b.len() as u64))
        .collect::<BTreeMap<_, _>>()
        .values()
        .sum();
    let want = expected_disk as f64 / logical as f64;
    // The pushing node's whole-blob input file (and rep/z's upload of `big`, linked to the coded
    // blob) is removed by its scrub after the grace period.
    let measured = cluster.overhead(
        "rs=4+2 and replicas=3 repositories after the pushes",
        &all,
        &[&img_x, &img_y, &img_z],
        want,
        0.005,
    );
    // Per coded blob: shard bytes on all disks over the blob's size, (k+m)/k = 1.5 plus the
    // chunk seals (32 B per 256 KiB) and, for sizes that are no multiple of a stripe, padding.
    for image in [&img_x, &img_y] {
        for (digest, bytes) in image.blobs.iter().filter(|(_, b)| b.len() >= MIB) {
            let on_disk: u64 = cluster
                .shards(&all, digest)
                .iter()
                .map(|(n, i)| {
                    let hex = digest.trim_start_matches("sha256:");
                    let path = cluster
                        .node(*n)
                        .data_dir
                        .join("blobs/shards")
                        .join(&hex[..2])
                        .join(format!("{hex}.{i}"));
                    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
                })
                .sum();
            let ratio = on_disk as f64 / bytes.len() as f64;
            println!("rs=4+2 blob of {} bytes: {ratio:.4}x on disk", bytes.len());
            if bytes.len() % (4 * (256 << 10)) == 0 {
                assert!((ratio - 1.5).abs() < 0.001, "{digest}: {ratio}");
            }
        }
    }
    let coded_only = (expected_disk - 3 * (logical - coded_logical)) as f64 / coded_logical as f64;
    let z_ratio = cluster.disk_bytes_of(&all, &z_own_digest) as f64 / z_own.len() as f64;
    println!(
        "measured disk overhead per policy: rs=4+2 {coded_only:.3}x (coded blobs), replicas=3 {z_ratio:.3}x (rep/z's own layer), {measured:.3}x overall"
    );
    assert!((z_ratio - 3.0).abs() < 1e-9, "{z_ratio}");

    // A damaged data shard: reads use a parity shard for the damaged stripe (its seal fails),
    // and the shard is quarantined and rebuilt, byte for byte, from the others.
    let three = &img_x.blobs[1].0;
    let (holder, index) = *cluster.shards(&all, three).iter().find(|(_, i)| *i == 0).unwrap();
    let hex = three.trim_start_matches("sha256:");
    let shard_file = cluster
        .node(holder)
        .data_dir
        .join("blobs/shards")
        .join(&hex[..2])
        .join(format!("{hex}.{index}"));
    let original = std::fs::read(&shard_file).unwrap();
    flip_byte(&shard_file);
    let other = all.iter().copied().find(|id| *id != holder).unwrap();
    pull_everywhere(&cluster, &c, &[other], &[&img_x]).await;
    cluster.wait(
        "damaged shard rebuilt",
        Duration::from_secs(30),
        || match std::fs::read(&shard_file) {
            Ok(now) if now == original => Ok(()),
            Ok(_) => Err("shard still damaged".into()),
            Err(e) => Err(format!("shard not back yet: {e}")),
        },
    );

    // Lose two nodes (no leader among them): every image still pulls, byte-identical, from every
    // survivor, and ranges read only what they need.
    for id in [2, 5] {
        cluster.nodes.iter_mut().find(|n| n.id == id).unwrap().kill();
    }
    let alive = [1, 3, 4, 6];
    pull_everywhere(&cluster, &c, &alive, &[&img_x, &img_y, &img_z]).await;
    let big_digest = digest_of(&big);
    for (from, to) in [
        (0u64, 99u64),
        (1_048_570, 2_200_000),
        (5 * MIB as u64, 5 * MIB as u64 + 12344),
    ] {
        let r = c
            .get(format!("http://{}/v2/rs/x/blobs/{big_digest}", cluster.node(3).host()))
            .header("range", format!("bytes={from}-{to}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        let got = r.bytes().await.unwrap();
        assert!(
            got.as_ref() == &big[from as usize..=to as usize],
            "range {from}-{to} differs"
        );
    }

    // Repair rebuilds the two lost shards of each coded blob on the survivors.
    let s = cluster.wait("coded blobs repaired", Duration::from_secs(60), || {
        let s = cluster.leader_status(&alive)?;
        let rebuilt = s["blob_jobs"]["repair.shards"].as_u64().unwrap_or(0);
        if s["under_replicated"] == json!(0) && rebuilt >= 6 {
            Ok(s)
        } else {
            Err(format!(
                "under_replicated={} repair.shards={rebuilt}",
                s["under_replicated"]
            ))
        }
    });
    println!("leader's blob job counters (rs): {}", s["blob_jobs"]);
    // The layout is whole again: the six shards of each coded blob on the four survivors, so
    // some hold two. Remove the dead nodes from the membership (keeping a Raft majority), then
    // lose a survivor holding two shards of the large layer: exactly k = 4 shards are left, and
    // every image still pulls.
    let victim = alive
        .iter()
        .copied()
        .max_by_key(|id| cluster.shards(&[*id], &big_digest).len())
        .unwrap();
    assert_eq!(cluster.shards(&alive, &big_digest).len(), 6);
    assert_eq!(cluster.shards(&[victim], &big_digest).len(), 2);
    let via = cluster
        .node(alive.iter().copied().find(|id| *id != victim).unwrap())
        .host();
    cluster.cli(&via, &["remove", "2"]);
    cluster.cli(&via, &["remove", "5"]);
    cluster.nodes.iter_mut().find(|n| n.id == victim).unwrap().kill();
    let rest: Vec<u64> = alive.iter().copied().filter(|id| *id != victim).collect();
    pull_everywhere(&cluster, &c, &rest, &[&img_x, &img_y, &img_z]).await;
}
