//! Cluster tests with real processes: three (or four) `keelson serve` nodes on loopback, formed
//! with the `keelson cluster` CLI, driven by real clients (skopeo, docker through `keelson lb`)
//! and by a raw-HTTP push load while the leader is killed and while members come and go.
//!
//! Run: `cargo test -p keelson --test cluster`. The tests take a process-wide lock and run one
//! at a time (each starts three or four nodes; on a small machine parallel clusters would only
//! measure CPU starvation). Readiness and convergence are polled with deadlines, never slept for.
//! The clients are system packages (`scripts/install-deps.sh`); a missing one fails its test.
//!
//! Node logs: `<tempdir>/nK/keelson.log`; a failing assertion prints the tail of every node's log.

// Each test holds the process-wide SERIAL guard for its whole body, awaits included: the guard
// only keeps other tests (on other threads, with their own runtimes) waiting.
#![allow(clippy::await_holding_lock)]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::Cluster;
use support::content::{digest_of, hex_of, pseudo_random};
use support::docker::{busybox_rootfs_tar, pushed_digest, Docker};
use support::lb::Lb;
use support::oci::{layout_blobs, layout_ref, skopeo, umoci_image, OCI_MANIFEST};
use support::status::status_of;
use support::tools::{exec, need};
use support::ClusterNode;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// Time limit for one client command.
const COMMAND_LIMIT: Duration = Duration::from_secs(180);

/// One cluster at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The cluster under test
// ---------------------------------------------------------------------------------------------

/// The three nodes 1..=3 of most tests, in fault domains fd1..fd3.
const THREE: [(u64, &str); 3] = [(1, "fd1"), (2, "fd2"), (3, "fd3")];

impl Cluster {
    /// Starts nodes 1..=3 in fault domains fd1..fd3 and forms the cluster with the CLI: `init` on
    /// node 1, then `add 2`, `add 3` (each returns once the node is a caught-up voter).
    fn three(dir: &Path) -> Cluster {
        Cluster::form(dir, &THREE, |_| Vec::new())
    }

    /// [`Cluster::three`] with extra environment for every node.
    fn three_with_env(dir: &Path, env: &[(&str, &str)]) -> Cluster {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Cluster::form(dir, &THREE, move |_| env.clone())
    }
}

/// The path of a blob in a node's local store.
fn blob_path(node: &ClusterNode, digest: &str) -> PathBuf {
    let hex = hex_of(digest);
    node.data_dir.join("blobs/sha256").join(&hex[..2]).join(hex)
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Formation with the CLI, skopeo through one node and back through the others, placement
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_formed_with_cli_replicate_images_and_blobs() {
    need("skopeo");
    need("umoci");
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::three(tmp.path());

    // `cluster status --json` through a follower: three voters, one leader, our addresses.
    let leader = cluster.wait_converged("formed", &[1, 2, 3], Duration::from_secs(30));
    let status: Value = serde_json::from_str(&cluster.cli(&cluster.node(2).host(), &["status", "--json"])).unwrap();
    assert_eq!(status["leader"].as_u64(), Some(leader), "{status}");
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{status}");
    for n in &cluster.nodes {
        let m = members
            .iter()
            .find(|m| m["id"].as_u64() == Some(n.id))
            .unwrap_or_else(|| panic!("node {} missing from {status}", n.id));
        assert_eq!(m["voter"], true, "{status}");
        assert_eq!(m["api_addr"], n.host(), "{status}");
        assert_eq!(m["peer_addr"], n.peer.to_string(), "{status}");
        assert_eq!(m["fault_domain"], n.fault_domain, "{status}");
    }
    // The human table (asked of node 3): one leader row, two voter rows.
    let table = cluster.cli(&cluster.node(3).host(), &["status"]);
    eprintln!("keelson cluster status:\n{table}");
    let roles: Vec<&str> = table
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{table}");
    assert_eq!(roles.iter().filter(|r| **r == "voter").count(), 2, "{table}");

    // Push through node 1 with skopeo.
    let layout = tmp.path().join("src-layout");
    let digest = umoci_image(tmp.path(), &layout, "v1", "amd64", 1 << 20, 7, COMMAND_LIMIT);
    let src_blobs = layout_blobs(&layout);
    let n1 = cluster.node(1).host();
    let out = exec(
        skopeo(tmp.path())
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{n1}/demo/app:v1")),
        COMMAND_LIMIT,
    );
    assert!(
        out.ok,
        "skopeo push to node 1 failed: {}\n{}{}",
        out.stdout,
        out.stderr,
        cluster.logs()
    );

    // Pull through nodes 2 and 3: same manifest digest, byte-identical blobs.
    for id in [2, 3] {
        let host = cluster.node(id).host();
        let back = tmp.path().join(format!("back-{id}"));
        let out = exec(
            skopeo(tmp.path())
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!("docker://{host}/demo/app:v1"))
                .arg(format!("oci:{}:v1", back.display())),
            COMMAND_LIMIT,
        );
        assert!(
            out.ok,
            "skopeo pull from node {id} failed: {}\n{}{}",
            out.stdout,
            out.stderr,
            cluster.logs()
        );
        assert_eq!(
            layout_ref(&back, "v1")["digest"],
            digest.as_str(),
            "node {id} serves another manifest"
        );
        assert_eq!(layout_blobs(&back), src_blobs, "blobs pulled from node {id} differ");
    }

    // Three members in three fault domains, replicas 3: the config and layers pushed through
    // node 1 are on every node's disk.
    let manifest: Value = serde_json::from_slice(&src_blobs[hex_of(&digest)]).unwrap();
    let mut referenced = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for l in manifest["layers"].as_array().unwrap() {
        referenced.push(l["digest"].as_str().unwrap().to_string());
    }
    for d in &referenced {
        for n in &cluster.nodes {
            let on_disk = fs::read(blob_path(n, d))
                .unwrap_or_else(|e| panic!("blob {d} (pushed via node 1) is not on node {}'s disk: {e}", n.id));
            assert_eq!(on_disk, src_blobs[hex_of(d)], "node {} holds other bytes for {d}", n.id);
        }
    }

    // skopeo's uploads (POST, PATCH, PUT) were teed: each copy on nodes 2 and 3 was streamed
    // while the upload arrived, none had to be sent after it.
    let jobs = &status_of(cluster.node(1).api).unwrap()["blob_jobs"];
    assert_eq!(
        jobs["push.streamed_copies"].as_u64(),
        Some(2 * referenced.len() as u64),
        "{jobs}"
    );
    assert!(jobs["push.copies_after_upload"].is_null(), "{jobs}");

    // A blob pushed on node 3 (monolithic POST): acknowledged only once it is durable on the
    // nodes placement chose; with three nodes in three domains that is all of them.
    let client = http_client();
    let bytes = pseudo_random(300 << 10, 99);
    let d = digest_of(&bytes);
    let resp = client
        .post(format!(
            "{}/v2/demo/app/blobs/uploads/?digest={d}",
            cluster.node(3).url()
        ))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(
        status,
        201,
        "push on node 3: {}{}",
        resp.text().await.unwrap_or_default(),
        cluster.logs()
    );
    for n in &cluster.nodes {
        let on_disk = fs::read(blob_path(n, &d))
            .unwrap_or_else(|e| panic!("blob pushed on node 3 is not on node {}'s disk at its 201: {e}", n.id));
        assert_eq!(on_disk, bytes, "node {} holds other bytes", n.id);
        let got = client
            .get(format!("{}/v2/demo/app/blobs/{d}", n.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "GET blob from node {}", n.id);
        assert_eq!(got.bytes().await.unwrap(), bytes, "node {} serves other bytes", n.id);
    }
}

// ---------------------------------------------------------------------------------------------
// 2. docker push / rmi / pull through `keelson lb`
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_and_pull_through_the_load_balancer() {
    need("docker");
    need("dockerd");
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::three(tmp.path());
    let lb = Lb::start(
        tmp.path(),
        &cluster.nodes.iter().map(|n| n.host()).collect::<Vec<_>>(),
        None,
    );
    let tar = busybox_rootfs_tar(tmp.path(), "pushed through keelson lb\n", COMMAND_LIMIT);
    let docker = Docker::start(&tmp.path().join("docker"));
    let run = |cmd: &mut Command| cluster.run(cmd, COMMAND_LIMIT);

    let image = format!("{}/demo/through-lb:v1", lb.addr);
    run(docker
        .cmd()
        .args(["import", "--change", r#"CMD ["/bin/sh"]"#])
        .arg(&tar)
        .arg("lb-local:v1"));
    run(docker.cmd().args(["tag", "lb-local:v1", &image]));
    let image_id = run(docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &image]))
        .trim()
        .to_string();
    assert!(image_id.starts_with("sha256:"), "image id {image_id:?}");

    // docker opens several connections; the lb spreads them over the nodes, so the upload
    // session's POST, PATCH and PUT may land on different nodes.
    let push = run(docker.cmd().args(["push", &image]));
    let digest = pushed_digest(&push);

    // Every node serves the manifest docker pushed.
    let client = http_client();
    for n in &cluster.nodes {
        let resp = client
            .get(format!("{}/v2/demo/through-lb/manifests/v1", n.url()))
            .header(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET manifest by tag on node {}", n.id);
        assert_eq!(
            resp.headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok()),
            Some(digest.as_str()),
            "node {}",
            n.id
        );
        assert_eq!(
            digest_of(&resp.bytes().await.unwrap()),
            digest,
            "node {} serves other bytes",
            n.id
        );
    }

    // Forget the image locally, pull it back through the lb: same image id.
    run(docker.cmd().args(["rmi", &image, "lb-local:v1"]));
    let gone = exec(docker.cmd().args(["image", "inspect", &image]), COMMAND_LIMIT);
    assert!(!gone.ok, "image still present after rmi");
    let pull = run(docker.cmd().args(["pull", &image]));
    assert!(
        pull.contains(&digest),
        "docker pull reported another digest than {digest}:\n{pull}"
    );
    let pulled_id = run(docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &image]))
        .trim()
        .to_string();
    assert_eq!(pulled_id, image_id, "image id changed through push/pull via the lb");
    let out = run(docker.cmd().args([
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "/bin/cat",
        "/etc/keelson-marker",
    ]));
    assert_eq!(out, "pushed through keelson lb\n");
}

// ---------------------------------------------------------------------------------------------
// Push load: small images over raw HTTP, round-robin over a changeable set of nodes
// ---------------------------------------------------------------------------------------------

/// An acknowledged push: the manifest PUT answered 201 with the manifest's digest.
#[derive(Clone)]
struct Acked {
    repo: String,
    tag: String,
    digest: String,
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
    node: u64,
    started: Instant,
}

/// Background writers; `targets` may be changed while they run.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    /// (when the push started, the node it went to, what failed)
    failures: Arc<Mutex<Vec<(Instant, u64, String)>>>,
    targets: Arc<Mutex<Vec<(u64, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(writers: usize, targets: Vec<(u64, String)>, repo: &str) -> Load {
        let load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            acked: Arc::default(),
            failures: Arc::default(),
            targets: Arc::new(Mutex::new(targets)),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (stop, acked, failures, targets) = (
                load.stop.clone(),
                load.acked.clone(),
                load.failures.clone(),
                load.targets.clone(),
            );
            let repo = format!("{repo}/w{w}");
            tasks.push(tokio::spawn(async move {
                let client = http_client();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let target = {
                        let t = targets.lock().unwrap();
                        t[(i as usize + w) % t.len()].clone()
                    };
                    let seed = (w as u64) << 32 | i;
                    let started = Instant::now();
                    match push_image(&client, &target, &repo, &format!("t{i}"), seed).await {
                        Ok(a) => acked.lock().unwrap().push(a),
                        Err(e) => {
                            failures.lock().unwrap().push((started, target.0, e));
                            // A failed push is not retried (it stays unacknowledged); pace the
                            // next attempt a little so a dead node is not hammered.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    i += 1;
                }
            }));
        }
        Load { tasks, ..load }
    }

    fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap().clone()
    }

    fn acked_since(&self, t: Instant) -> usize {
        self.acked.lock().unwrap().iter().filter(|a| a.started >= t).count()
    }

    fn set_targets(&self, targets: Vec<(u64, String)>) {
        *self.targets.lock().unwrap() = targets;
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().iter().map(|f| f.2.clone()).collect()
    }

    /// Failed pushes that started at or after `t` on a node other than `except`.
    fn failed_since(&self, t: Instant, except: u64) -> Vec<String> {
        let failures = self.failures.lock().unwrap();
        failures
            .iter()
            .filter(|(started, node, _)| *started >= t && *node != except)
            .map(|f| f.2.clone())
            .collect()
    }

    /// Failed (unacknowledged) pushes grouped by node, step and the start of the error.
    fn failure_summary(&self) -> String {
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        let failures = self.failures();
        for f in &failures {
            let key: String = f.splitn(3, ": ").take(2).collect::<Vec<_>>().join(": ");
            *kinds.entry(key.chars().take(100).collect()).or_default() += 1;
        }
        let mut out: String = kinds.iter().map(|(k, n)| format!("  {n:>4} x {k}\n")).collect();
        // Each kind's last occurrence in full.
        for k in kinds.keys() {
            if let Some(f) = failures.iter().rev().find(|f| f.starts_with(k.as_str())) {
                out.push_str(&format!("  e.g. {}\n", &f[..f.len().min(400)]));
            }
        }
        out
    }

    /// Waits until `pred(self)` holds; panics (with the failure list) after `limit`.
    async fn wait_for(&self, what: &str, limit: Duration, cluster: &Cluster, pred: impl Fn(&Load) -> bool) {
        let deadline = Instant::now() + limit;
        while !pred(self) {
            if Instant::now() >= deadline {
                let f = self.failures();
                panic!(
                    "{what}: not reached in {} s ({} acknowledged, {} failed; last failures: {:#?}){}",
                    limit.as_secs(),
                    self.acked.lock().unwrap().len(),
                    f.len(),
                    &f[f.len().saturating_sub(5)..],
                    cluster.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.await.expect("writer task panicked");
        }
    }
}

/// Pushes one small image to `target` (config + one layer, monolithic POSTs, then the manifest
/// under `tag`). Ok only when every step was acknowledged.
async fn push_image(
    client: &reqwest::Client,
    target: &(u64, String),
    repo: &str,
    tag: &str,
    seed: u64,
) -> Result<Acked, String> {
    let started = Instant::now();
    let (node, base) = target;
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"seed": seed.to_string()}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let layer = pseudo_random(2048 + (seed % 4096) as usize, seed ^ 0xABCD);
    let mut blobs = Vec::new();
    for bytes in [config, layer] {
        let d = digest_of(&bytes);
        let resp = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(bytes.clone())
            .send()
            .await
            .map_err(|e| format!("node {node}: blob POST: {e}"))?;
        if resp.status() != 201 {
            let s = resp.status();
            return Err(format!(
                "node {node}: blob POST {s}: {}",
                resp.text().await.unwrap_or_default()
            ));
        }
        blobs.push((d, bytes));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": blobs[0].0, "size": blobs[0].1.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": blobs[1].0, "size": blobs[1].1.len()}],
    }))
    .unwrap();
    let digest = digest_of(&manifest);
    let resp = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .map_err(|e| format!("node {node}: manifest PUT: {e}"))?;
    let s = resp.status();
    let answered = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if s != 201 {
        return Err(format!(
            "node {node}: manifest PUT {s}: {}",
            resp.text().await.unwrap_or_default()
        ));
    }
    if answered.as_deref() != Some(digest.as_str()) {
        return Err(format!(
            "node {node}: manifest PUT answered digest {answered:?}, expected {digest}"
        ));
    }
    Ok(Acked {
        repo: repo.to_string(),
        tag: tag.to_string(),
        digest,
        manifest,
        blobs,
        node: *node,
        started,
    })
}

/// Every acknowledged push is pullable from `node`: the tag resolves to the pushed manifest,
/// byte for byte, and every blob reads back byte-identical. Returns the problems found.
async fn check_pullable(client: &reqwest::Client, node: &ClusterNode, acked: &[Acked], blobs: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for a in acked {
        let url = format!("{}/v2/{}/manifests/{}", node.url(), a.repo, a.tag);
        match client.get(&url).header("Accept", OCI_MANIFEST).send().await {
            Err(e) => problems.push(format!("GET {url}: {e}")),
            Ok(resp) => {
                let status = resp.status();
                let got = resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = resp.bytes().await.unwrap_or_default();
                if status != 200 || got.as_deref() != Some(a.digest.as_str()) || body != a.manifest {
                    problems.push(format!(
                        "node {}: GET {}:{} (pushed via node {}) -> {status}, digest {got:?} (want {}), body {}",
                        node.id,
                        a.repo,
                        a.tag,
                        a.node,
                        a.digest,
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ));
                }
            }
        }
        if !blobs {
            continue;
        }
        for (d, bytes) in &a.blobs {
            let url = format!("{}/v2/{}/blobs/{d}", node.url(), a.repo);
            match client.get(&url).send().await {
                Err(e) => problems.push(format!("GET {url}: {e}")),
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.bytes().await.unwrap_or_default();
                    if status != 200 || body != bytes[..] {
                        problems.push(format!(
                            "node {}: GET blob {d} of {}:{} (pushed via node {}) -> {status}, {} bytes: {}",
                            node.id,
                            a.repo,
                            a.tag,
                            a.node,
                            body.len(),
                            if status == 200 {
                                "different bytes".to_string()
                            } else {
                                String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
                            }
                        ));
                    }
                }
            }
        }
    }
    problems
}

fn assert_no_problems(what: &str, problems: &[String], cluster: &Cluster) {
    assert!(
        problems.is_empty(),
        "{what}: {} problems, first ones:\n{}{}",
        problems.len(),
        problems.iter().take(10).cloned().collect::<Vec<_>>().join("\n"),
        cluster.logs()
    );
}

fn targets(cluster: &Cluster, ids: &[u64]) -> Vec<(u64, String)> {
    ids.iter().map(|id| (*id, cluster.node(*id).url())).collect()
}

/// Applied index as `node` reports it.
fn applied(node: &ClusterNode) -> Option<u64> {
    status_of(node.api).ok()?["applied_index"].as_u64()
}

// ---------------------------------------------------------------------------------------------
// 3. Leader crash under load
// ---------------------------------------------------------------------------------------------

/// A number `node` reports in its status.
fn status_number(node: &ClusterNode, field: &str) -> Option<u64> {
    status_of(node.api).ok()?[field].as_u64()
}

/// The killed leader comes back after the survivors have snapshotted and purged the log it
/// would need, so it can only catch up by installing a snapshot streamed from the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_stream_loses_no_acknowledged_push() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::three_with_env(tmp.path(), &[("KEELSON_SNAPSHOT_EVERY_LOGS", "40")]);
    let old_leader = cluster.wait_converged("formed", &[1, 2, 3], Duration::from_secs(30));
    let survivors: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old_leader).collect();

    let mut load = Load::start(2, targets(&cluster, &[1, 2, 3]), "load/crash");
    load.wait_for(
        "30 pushes acknowledged before the crash",
        Duration::from_secs(60),
        &cluster,
        |l| l.acked.lock().unwrap().len() >= 30,
    )
    .await;

    // kill -9 the leader while the writers keep going (round-robin still includes it: pushes
    // sent to the dead node fail and stay unacknowledged). Its log ends a few entries at most
    // after the last index it reports.
    let log_at_kill = status_number(cluster.node(old_leader), "last_log_index").expect("leader status");
    cluster.node_mut(old_leader).kill();
    let killed_at = Instant::now();
    let before = load.acked().len();

    // A new leader among the survivors, and pushes acknowledged again.
    let new_leader = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen: Vec<Option<u64>> = survivors
                .iter()
                .map(|id| status_of(cluster.node(*id).api).ok().and_then(|s| s["leader"].as_u64()))
                .collect();
            if let [Some(a), Some(b)] = seen[..] {
                if a == b && a != old_leader {
                    break a;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new leader among {survivors:?} in 30 s: {seen:?}{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let elected_at = Instant::now();
    eprintln!(
        "leader {old_leader} killed; node {new_leader} leads after {} ms",
        killed_at.elapsed().as_millis()
    );
    load.wait_for(
        "20 pushes started after the kill acknowledged",
        Duration::from_secs(60),
        &cluster,
        |l| l.acked_since(killed_at) >= 20,
    )
    .await;
    // Keep pushing until the new leader has purged its log well past the dead node's.
    let purged_past = log_at_kill + 100;
    let deadline = Instant::now() + Duration::from_secs(90);
    let purged = loop {
        let purged = status_number(cluster.node(new_leader), "purged_index");
        if purged > Some(purged_past) {
            break purged.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "leader {new_leader} did not purge its log past {purged_past} in 90 s (purged {purged:?}){}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    load.stop().await;
    let acked = load.acked();
    let after = acked.iter().filter(|a| a.started >= killed_at).count();
    eprintln!(
        "{} pushes acknowledged ({before} before the kill, {after} started after it), {} failed",
        acked.len(),
        load.failures().len()
    );
    eprint!("failed pushes:\n{}", load.failure_summary());
    assert!(after >= 20);
    // Once both survivors name the new leader, pushes to them succeed: a second of grace for
    // requests that were already waiting on the dead leader when it was replaced.
    let late = load.failed_since(elected_at + Duration::from_secs(1), old_leader);
    assert!(
        late.is_empty(),
        "{} pushes to survivors failed after node {new_leader} was leader, e.g. {:?}{}",
        late.len(),
        &late[..late.len().min(5)],
        cluster.logs()
    );
    assert!(
        acked
            .iter()
            .filter(|a| a.started >= killed_at)
            .all(|a| a.node != old_leader),
        "a push to the dead node was acknowledged"
    );

    // Every acknowledged push is pullable from each survivor.
    let client = http_client();
    for id in &survivors {
        let problems = check_pullable(&client, cluster.node(*id), &acked, true).await;
        assert_no_problems(&format!("survivor {id}"), &problems, &cluster);
    }

    // The killed node comes back on its data dir and catches up with the leader.
    cluster.node_mut(old_leader).restart();
    let target = applied(cluster.node(new_leader)).expect("leader status");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status_of(cluster.node(old_leader).api);
        let caught_up = s.as_ref().ok().and_then(|s| s["applied_index"].as_u64()) >= Some(target)
            && s.as_ref().ok().and_then(|s| s["leader"].as_u64()) == Some(new_leader);
        if caught_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node {old_leader} did not catch up to applied index {target} in 60 s: {s:?}{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snapshot = status_number(cluster.node(old_leader), "snapshot_index");
    eprintln!(
        "node {old_leader} (log ended near {log_at_kill}) caught up with the leader's log purged to {purged}: \
         snapshot index {snapshot:?}"
    );
    assert!(
        snapshot >= Some(purged),
        "node {old_leader} caught up without a snapshot covering the purged log ({snapshot:?} < {purged})"
    );
    cluster.wait_converged("three voters again", &[1, 2, 3], Duration::from_secs(30));

    // It serves the tags pushed while it was down (and, pulled through it, their blobs).
    let while_down: Vec<Acked> = acked.iter().filter(|a| a.started >= killed_at).cloned().collect();
    let problems = check_pullable(&client, cluster.node(old_leader), &while_down, false).await;
    assert_no_problems(
        &format!("restarted node {old_leader}: tags pushed while it was down"),
        &problems,
        &cluster,
    );
    let problems = check_pullable(&client, cluster.node(old_leader), &acked, true).await;
    assert_no_problems(
        &format!("restarted node {old_leader}: every acknowledged image, blobs included"),
        &problems,
        &cluster,
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Membership changes under load
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_added_and_removed_under_load() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::three(tmp.path());
    let mut load = Load::start(2, targets(&cluster, &[1, 2, 3]), "load/members");
    load.wait_for("20 pushes acknowledged", Duration::from_secs(60), &cluster, |l| {
        l.acked.lock().unwrap().len() >= 20
    })
    .await;

    // Add node 4 (its own fault domain) through node 2 while the pushes continue: learner,
    // caught up, voter.
    cluster.start_node(4, "fd4");
    let added_at = Instant::now();
    // Watch node 4's role from node 2 while the CLI adds it (informational: the learner phase
    // may be too short to sample).
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (watching, n2) = (watching.clone(), cluster.node(2).api);
        std::thread::spawn(move || {
            let mut roles: Vec<&'static str> = Vec::new();
            while watching.load(Ordering::SeqCst) {
                let role = status_of(n2).ok().and_then(|s| {
                    s["members"].as_array()?.iter().find(|m| m["id"] == 4).map(|m| {
                        if m["voter"] == true {
                            "voter"
                        } else {
                            "learner"
                        }
                    })
                });
                let role = role.unwrap_or("absent");
                if roles.last() != Some(&role) {
                    roles.push(role);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            roles
        })
    };
    cluster.add(&cluster.node(2).host(), 4);
    cluster.wait_converged("four voters", &[1, 2, 3, 4], Duration::from_secs(30));
    watching.store(false, Ordering::SeqCst);
    eprintln!(
        "node 4 as node 2 saw it during `cluster add`: {:?}",
        watcher.join().unwrap()
    );
    load.set_targets(targets(&cluster, &[1, 2, 3, 4]));
    load.wait_for(
        "pushes acknowledged after node 4 joined, some through it",
        Duration::from_secs(60),
        &cluster,
        |l| {
            let acked = l.acked.lock().unwrap();
            let since: Vec<&Acked> = acked.iter().filter(|a| a.started >= added_at).collect();
            since.len() >= 20 && since.iter().any(|a| a.node == 4)
        },
    )
    .await;

    // Remove node 1 (the first voter, most likely the leader) through node 3.
    load.set_targets(targets(&cluster, &[2, 3, 4]));
    let removed_at = Instant::now();
    let printed = cluster.cli(&cluster.node(3).host(), &["remove", "1"]);
    assert!(printed.contains("node 1 removed"), "remove printed {printed:?}");
    let leader = cluster.wait_converged("voters 2, 3, 4", &[2, 3, 4], Duration::from_secs(30));
    load.wait_for(
        "20 pushes acknowledged after node 1 left",
        Duration::from_secs(60),
        &cluster,
        |l| l.acked_since(removed_at) >= 20,
    )
    .await;
    load.stop().await;

    // Node 1 was told: it says so, answers clients with 503, and will not start again on its
    // old data (its catalog stopped following the cluster).
    assert!(printed.contains("it was told"), "remove printed {printed:?}");
    let s = status_of(cluster.node(1).api).expect("removed node's status");
    assert_eq!(s["state"], "removed", "{s}");
    let answer = http_client()
        .get(format!("{}/v2/", cluster.node(1).url()))
        .send()
        .await
        .expect("removed node answers");
    assert_eq!(answer.status(), 503);
    let body: Value = answer.json().await.expect("OCI error JSON");
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    cluster.node_mut(1).kill();
    let restart = exec(
        Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--peer-listen",
                "127.0.0.1:0",
                "--node-id",
                "1",
            ])
            .arg("--data-dir")
            .arg(&cluster.node(1).data_dir)
            .env("KEELSON_AUTH", "off"),
        Duration::from_secs(60),
    );
    assert!(
        !restart.ok && restart.stderr.contains("was removed from its cluster"),
        "a removed node started again on its old data: {} {}",
        restart.status,
        restart.stderr
    );
    let acked = load.acked();
    eprintln!(
        "{} pushes acknowledged, {} failed; leader now {leader}",
        acked.len(),
        load.failures().len()
    );
    eprint!("failed pushes:\n{}", load.failure_summary());

    // The CLI shows the new membership.
    let status: Value = serde_json::from_str(&cluster.cli(&cluster.node(4).host(), &["status", "--json"])).unwrap();
    let members: BTreeMap<u64, (String, bool)> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                (m["fault_domain"].as_str().unwrap().to_string(), m["voter"] == true),
            )
        })
        .collect();
    assert_eq!(
        members,
        BTreeMap::from([
            (2, ("fd2".to_string(), true)),
            (3, ("fd3".to_string(), true)),
            (4, ("fd4".to_string(), true)),
        ]),
        "{status}"
    );
    assert_eq!(status["leader"].as_u64(), Some(leader), "{status}");
    eprintln!(
        "keelson cluster status:\n{}",
        cluster.cli(&cluster.node(4).host(), &["status"])
    );

    // Everything acknowledged stays pullable from the remaining members.
    let client = http_client();
    for id in [2, 3, 4] {
        let problems = check_pullable(&client, cluster.node(id), &acked, false).await;
        assert_no_problems(&format!("node {id}: manifests by tag"), &problems, &cluster);
    }
    for id in [2, 3, 4] {
        let problems = check_pullable(&client, cluster.node(id), &acked, true).await;
        assert_no_problems(&format!("node {id}: images with their blobs"), &problems, &cluster);
    }
}

/// An upload session lives on the node that opened it; a load balancer may send its PATCH, status
/// and PUT requests to any node, which relays them to the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_session_requests_reach_their_owner_from_any_node() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::three(tmp.path());
    cluster.wait_converged("formed", &[1, 2, 3], Duration::from_secs(30));
    let client = http_client();
    let url = |id: u64, path: &str| format!("http://{}{path}", cluster.node(id).host());
    let body = pseudo_random(3 << 20, 42);
    let (first, second) = body.split_at(1 << 20);

    let resp = client
        .post(url(1, "/v2/demo/relay/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.contains("/uploads/n1-"),
        "session id names its owner: {location}"
    );

    let resp = client
        .patch(url(2, &location))
        .header("Content-Range", format!("0-{}", first.len() - 1))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "PATCH relayed from node 2");
    assert_eq!(resp.headers()["range"], format!("0-{}", first.len() - 1).as_str());

    let resp = client.get(url(3, &location)).send().await.unwrap();
    assert_eq!(resp.status(), 204, "status relayed from node 3");
    assert_eq!(resp.headers()["range"], format!("0-{}", first.len() - 1).as_str());

    let resp = client
        .patch(url(3, &location))
        .header("Content-Range", format!("{}-{}", first.len(), body.len() - 1))
        .body(second.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let digest = digest_of(&body);
    let resp = client
        .put(format!("{}?digest={digest}", url(2, &location)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        201,
        "PUT relayed from node 2: {}",
        resp.text().await.unwrap_or_default()
    );
    for id in [1, 2, 3] {
        let got = client
            .get(url(id, &format!("/v2/demo/relay/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(
            digest_of(&got.bytes().await.unwrap()),
            digest,
            "node {id} serves the blob"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5a. A fresh auth token on every node
// ---------------------------------------------------------------------------------------------

/// An auth token answered by one node logs in at once on the others, though they may not have
/// applied it yet: as a Basic credential on a registry call, at the token endpoint (what
/// `docker login` does) and at the console's sign-in. Each round makes a new token and uses it
/// on every other node straight away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_auth_token_logs_in_on_every_node_at_once() {
    const ADMIN_TOKEN: &str = "fresh-token-test-administrator-token-0123";
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let env = [("KEELSON_AUTH", "enforce"), ("KEELSON_BOOTSTRAP_TOKEN", ADMIN_TOKEN)];
    let cluster = Cluster::three_with_env(tmp.path(), &env);
    let client = http_client();
    let url = |id: u64, path: &str| format!("http://{}{path}", cluster.node(id).host());
    let admin = |id: u64, path: &str, body: Value| {
        client
            .post(url(id, &format!("/api/v1/{path}")))
            .basic_auth("keelson/admin", Some(ADMIN_TOKEN))
            .json(&body)
            .send()
    };
    let resp = admin(1, "tenancies", json!({ "namespace": "fresh" })).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap_or_default());
    // A user holds two tokens at most: one user per round.
    for round in 0..12u64 {
        let made_on = round % 3 + 1;
        let user = format!("ann{round}");
        let login = format!("fresh/{user}");
        let resp = admin(made_on, "tenancies/fresh/users", json!({ "name": user }))
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap_or_default());
        let resp = admin(made_on, &format!("tenancies/fresh/users/{user}/tokens"), json!({}))
            .await
            .unwrap();
        assert!(resp.status().is_success(), "token on node {made_on}");
        let made: Value = resp.json().await.unwrap();
        let token = made["token"].as_str().expect("token shown once").to_string();
        for id in (1..=3).filter(|id| *id != made_on) {
            let base = client
                .get(url(id, "/v2/"))
                .basic_auth(&login, Some(&token))
                .send()
                .await
                .unwrap();
            assert_eq!(base.status(), 200, "round {round}: /v2/ on node {id}");
            let exchanged = client
                .get(url(id, "/token?service=keelson"))
                .basic_auth(&login, Some(&token))
                .send()
                .await
                .unwrap();
            assert_eq!(exchanged.status(), 200, "round {round}: /token on node {id}");
            let console = client
                .post(url(id, "/console/api/session"))
                .json(&json!({ "username": login, "token": token }))
                .send()
                .await
                .unwrap();
            assert_eq!(console.status(), 200, "round {round}: console sign-in on node {id}");
        }
    }
    // A wrong token is still refused everywhere, after the node caught up.
    for id in 1..=3 {
        let refused = client
            .get(url(id, "/v2/"))
            .basic_auth("fresh/ann0", Some("not-a-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401, "node {id}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5b. Large blob GETs on a node without a copy
// ---------------------------------------------------------------------------------------------

/// With two copies of every blob among three nodes, one node holds none. A large GET there is
/// relayed from a holder's API carrying the client's own credentials (Basic or Bearer), whole or
/// by range, and the relaying node names itself in `Via`; a small GET comes over the peer
/// channel instead; without credentials the node refuses before relaying anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blob_gets_on_a_non_holder_are_relayed_from_a_holder_with_the_clients_credentials() {
    const ADMIN_TOKEN: &str = "relay-test-administrator-token-0123456789";
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("KEELSON_AUTH", "enforce"),
        ("KEELSON_BOOTSTRAP_TOKEN", ADMIN_TOKEN),
        ("KEELSON_REPLICAS", "2"),
    ];
    let cluster = Cluster::three_with_env(tmp.path(), &env);
    let client = http_client();
    let url = |id: u64, path: &str| format!("http://{}{path}", cluster.node(id).host());
    let basic = |req: reqwest::RequestBuilder| req.basic_auth("keelson/admin", Some(ADMIN_TOKEN));

    let big = pseudo_random((3 << 20) + 12345, 7);
    let small = pseudo_random(64 << 10, 8);
    let mut holders = BTreeMap::new();
    for (what, bytes) in [("big", &big), ("small", &small)] {
        let d = digest_of(bytes);
        let resp = basic(client.post(url(1, &format!("/v2/keelson/relay/app/blobs/uploads/?digest={d}"))))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            201,
            "{what} push: {}",
            resp.text().await.unwrap_or_default()
        );
        let on: Vec<u64> = cluster
            .nodes
            .iter()
            .filter(|n| blob_path(n, &d).exists())
            .map(|n| n.id)
            .collect();
        assert_eq!(
            on.len(),
            2,
            "replicas=2 keeps two copies of the {what} blob, found on {on:?}"
        );
        holders.insert(what, (d, on));
    }
    let jobs = &cluster.status(1).unwrap()["blob_jobs"];
    assert_eq!(
        jobs["push.streamed_copies"].as_u64(),
        Some(2),
        "both second copies streamed: {jobs}"
    );
    let (big_digest, big_holders) = &holders["big"];
    let outsider = (1..=3).find(|id| !big_holders.contains(id)).unwrap();
    let path = format!("/v2/keelson/relay/app/blobs/{big_digest}");

    // Whole, with Basic credentials, from the node without a copy.
    let resp = basic(client.get(url(outsider, &path))).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", cluster.logs());
    let via = resp.headers().get("via").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(via.as_deref(), Some(format!("1.1 keelson-{outsider}").as_str()));
    assert_eq!(resp.headers()["docker-content-digest"], big_digest.as_str());
    assert!(resp.bytes().await.unwrap() == big, "relayed bytes differ");

    // A range, with a Bearer token from the token endpoint.
    let token: Value = basic(client.get(url(
        outsider,
        "/token?service=keelson&scope=repository:keelson/relay/app:pull",
    )))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let bearer = token["token"].as_str().expect("access token").to_string();
    let (start, end) = (1_000_001usize, (2 << 20) + 17);
    let resp = client
        .get(url(outsider, &path))
        .bearer_auth(&bearer)
        .header("Range", format!("bytes={start}-{end}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206, "{}", cluster.logs());
    assert!(resp.headers().contains_key("via"), "a large range is relayed");
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes {start}-{end}/{}", big.len()).as_str()
    );
    assert!(resp.bytes().await.unwrap() == big[start..=end], "relayed range differs");

    // On a holder nothing is relayed.
    let resp = basic(client.get(url(big_holders[0], &path))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("via"), "a holder serves its own copy");
    assert!(resp.bytes().await.unwrap() == big);

    // A small blob on a node without it comes over the peer channel.
    let (small_digest, small_holders) = &holders["small"];
    let small_outsider = (1..=3).find(|id| !small_holders.contains(id)).unwrap();
    let resp = basic(client.get(url(
        small_outsider,
        &format!("/v2/keelson/relay/app/blobs/{small_digest}"),
    )))
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("via"), "small blobs are not relayed");
    assert!(resp.bytes().await.unwrap() == small);

    // No credentials, or a wrong token: refused by the node asked, nothing relayed.
    let resp = client.get(url(outsider, &path)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!resp.headers().contains_key("via"));
    let resp = client
        .get(url(outsider, &path))
        .basic_auth("keelson/admin", Some("not-the-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!resp.headers().contains_key("via"));
}

// ---------------------------------------------------------------------------------------------
// 6. Mutual TLS between peers
// ---------------------------------------------------------------------------------------------

/// `curl` against a node's peer endpoint; true when an HTTP answer came back (any status).
fn curl_reaches(args: &[&str]) -> (bool, String) {
    let out = exec(
        Command::new(need("curl"))
            .args(["-sS", "-o", "/dev/null", "--max-time", "10"])
            .args(args),
        Duration::from_secs(30),
    );
    (out.ok, format!("{} {}", out.status, out.stderr.trim()))
}

/// With certificates configured, the cluster forms, replicates and serves over mutual TLS only:
/// the peer endpoint refuses plaintext, a client without a certificate and a certificate of
/// another CA, and answers a certificate of the cluster's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_speak_mutual_tls_when_certificates_are_configured() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let rogue = tmp.path().join("rogue");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certs.sh");
    for (dir, nodes) in [
        (&certs, vec!["node1=127.0.0.1", "node2=127.0.0.1", "node3=127.0.0.1"]),
        (&rogue, vec!["node1=127.0.0.1"]),
    ] {
        let out = exec(
            Command::new(need("bash")).arg(&script).arg(dir).args(nodes),
            Duration::from_secs(60),
        );
        assert!(out.ok, "certs.sh failed: {} {}", out.stdout, out.stderr);
    }
    let pem = |dir: &Path, name: &str| dir.join(name).display().to_string();
    let node_certs = certs.clone();
    let cluster = Cluster::form(tmp.path(), &THREE, move |id| {
        vec![
            (
                "KEELSON_PEER_TLS_CERT".into(),
                pem(&node_certs, &format!("node{id}.pem")),
            ),
            (
                "KEELSON_PEER_TLS_KEY".into(),
                pem(&node_certs, &format!("node{id}.key")),
            ),
            ("KEELSON_PEER_TLS_CA".into(), pem(&node_certs, "ca.pem")),
        ]
    });

    // Writes forwarded from a follower, blob copies and reads across nodes all cross TLS.
    let leader = cluster.wait_converged("formed over TLS", &[1, 2, 3], Duration::from_secs(30));
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let client = http_client();
    let mut acked = Vec::new();
    for i in 0..5 {
        let target = (follower, cluster.node(follower).url());
        let pushed = push_image(&client, &target, "tls/app", &format!("v{i}"), 7000 + i).await;
        acked.push(pushed.unwrap_or_else(|e| panic!("push over TLS peers failed: {e}{}", cluster.logs())));
    }
    for id in [1, 2, 3] {
        let problems = check_pullable(&client, cluster.node(id), &acked, true).await;
        assert_no_problems(&format!("node {id} over TLS peers"), &problems, &cluster);
    }

    let peer = cluster.node(1).peer;
    let url = format!("https://{peer}/");
    let (plain_ok, plain) = curl_reaches(&["--http2-prior-knowledge", &format!("http://{peer}/")]);
    assert!(
        !plain_ok,
        "plaintext HTTP/2 reached the TLS-only peer endpoint ({plain})"
    );
    let (anonymous_ok, anonymous) = curl_reaches(&["--http2", "--cacert", &pem(&certs, "ca.pem"), &url]);
    assert!(!anonymous_ok, "a client without a certificate was served ({anonymous})");
    let (rogue_ok, rogue_said) = curl_reaches(&[
        "--http2",
        "--cacert",
        &pem(&certs, "ca.pem"),
        "--cert",
        &pem(&rogue, "node1.pem"),
        "--key",
        &pem(&rogue, "node1.key"),
        &url,
    ]);
    assert!(!rogue_ok, "a certificate of another CA was accepted ({rogue_said})");
    let (member_ok, member) = curl_reaches(&[
        "--http2",
        "--cacert",
        &pem(&certs, "ca.pem"),
        "--cert",
        &pem(&certs, "node2.pem"),
        "--key",
        &pem(&certs, "node2.key"),
        &url,
    ]);
    assert!(member_ok, "a certificate of the cluster CA was refused ({member})");
}
