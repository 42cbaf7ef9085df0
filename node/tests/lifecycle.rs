//! The image lifecycle end to end, with real clients and real node processes: the image list
//! after skopeo, umoci and docker pushes (sizes to the byte, untagged images, platforms,
//! referrers, pull counts), the CLI over it, limits and immutable tags as docker and concurrent
//! pushers meet them, and on a 3-node cluster pull counts that add up across nodes and survive a
//! killed node, and retention whose deletions GC removes from every disk while every kept image
//! still pulls byte-identical.
//!
//! Time is moved with each node's test clock (`--test-clock true`, `PUT /api/v1/cluster/clock`),
//! never waited for; pull counts are flushed on demand (`POST /api/v1/cluster/pulls/flush`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::cluster::Cluster;
use support::content::{pseudo_random, sha256_hex};
use support::docker::{busybox_rootfs_tar, pushed_digest, Docker};
use support::oci::{layout_blobs, layout_ref, read_json, skopeo, two_platform_layout, umoci_image};
use support::tools::{exec, exec_ok, need, tool, wait_until};
use support::Keelson;

const LIMIT: Duration = Duration::from_secs(300);
const DAY_MS: u64 = 24 * 3600 * 1000;

/// An HTTP exchange with curl: (status, body as JSON or a string).
fn http(method: &str, url: &str, body: Option<&str>, content_type: &str) -> (u16, Value) {
    support::tools::curl_json(method, url, body, content_type, None)
}

fn api(method: &str, host: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string());
    let (status, value) = http(
        method,
        &format!("http://{host}{path}"),
        body.as_deref(),
        "application/json",
    );
    assert!((200..300).contains(&status), "{method} {path}: {status} {value}");
    value
}

fn run(cmd: &mut Command) -> String {
    exec_ok(cmd, LIMIT, String::new)
}

fn keelson_cli(host: &str, args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_keelson"))
        .args(args)
        .env("KEELSON_NODE", host)
        .env_remove("KEELSON_USER")
        .env_remove("KEELSON_TOKEN"))
}

/// The images of `repo` as the API lists them, by digest.
fn images(host: &str, repo: &str, query: &str) -> BTreeMap<String, Value> {
    let list = api("GET", host, &format!("/api/v1/repos/{repo}/images?{query}"), None);
    list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["digest"].as_str().unwrap().to_string(), i.clone()))
        .collect()
}

/// Total bytes of the blobs of an OCI layout (each file once), i.e. what an image and everything
/// it references occupies.
fn layout_bytes(layout: &Path, digests: &[String]) -> u64 {
    let blobs = layout_blobs(layout);
    digests
        .iter()
        .map(|d| blobs[d.trim_start_matches("sha256:")].len() as u64)
        .sum()
}

/// The manifest, config and layer digests of a layout's image `tag`.
fn image_digests(layout: &Path, tag: &str) -> Vec<String> {
    let desc = layout_ref(layout, tag);
    let digest = desc["digest"].as_str().unwrap().to_string();
    let manifest = read_json(&layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:")));
    let mut out = vec![digest, manifest["config"]["digest"].as_str().unwrap().to_string()];
    for layer in manifest["layers"].as_array().unwrap() {
        out.push(layer["digest"].as_str().unwrap().to_string());
    }
    out
}

fn push_layout(work: &Path, layout: &Path, tag: &str, target: &str) {
    run(skopeo(work)
        .args(["copy", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{target}")));
}

#[test]
fn image_list_shows_what_real_clients_pushed() {
    need("skopeo");
    need("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start_with_env(
        &tmp.path().join("node"),
        &[("KEELSON_AUTH", "off"), ("KEELSON_PULL_FLUSH_MS", "3600000")],
    );
    let host = node.host();

    // A single-arch image, then another under the same tag: the first is left untagged.
    let layout = tmp.path().join("layout");
    let first = umoci_image(tmp.path(), &layout, "one", "amd64", 256 << 10, 1, LIMIT);
    let second = umoci_image(tmp.path(), &layout, "two", "amd64", 128 << 10, 2, LIMIT);
    push_layout(tmp.path(), &layout, "one", &format!("{host}/demo/app:v1"));
    push_layout(tmp.path(), &layout, "two", &format!("{host}/demo/app:v1"));
    let listed = images(&host, "demo/app", "");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (digest, tag) in [(&first, "one"), (&second, "two")] {
        let expected = layout_bytes(&layout, &image_digests(&layout, tag));
        assert_eq!(listed[digest]["size"], json!(expected), "size of {digest}");
        assert_eq!(
            listed[digest]["media_type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
    }
    assert_eq!(listed[&second]["tags"], json!(["v1"]));
    assert_eq!(listed[&first]["tags"], json!([]));
    assert!(listed[&first]["untagged_since_ms"].as_u64().is_some());
    assert!(listed[&second]["untagged_since_ms"].is_null());
    let untagged = images(&host, "demo/app", "tagged=false");
    assert_eq!(untagged.keys().collect::<Vec<_>>(), vec![&first]);

    // A two-platform index: its size counts its children's manifests and unique blobs once.
    let multi = tmp.path().join("multi");
    let (index, children) = two_platform_layout(tmp.path(), &multi, "v1", LIMIT);
    push_layout(tmp.path(), &multi, "v1", &format!("{host}/demo/multi:v1"));
    let listed = images(&host, "demo/multi", "sort=size");
    assert_eq!(listed.len(), 3);
    let all_blobs: u64 = layout_blobs(&multi).values().map(|b| b.len() as u64).sum();
    assert_eq!(listed[&index]["size"], json!(all_blobs), "index size");
    assert_eq!(listed[&index]["platforms"], json!(["linux/amd64", "linux/arm64"]));
    for (_, child) in &children {
        assert!(listed.contains_key(child));
    }
    let detail = api("GET", &host, &format!("/api/v1/repos/demo/multi/images/{index}"), None);
    assert_eq!(detail["children"].as_array().unwrap().len(), 2, "{detail}");

    // A referrer (an SBOM-like artifact) of the tagged image is counted and shown.
    let empty = "{}";
    let empty_digest = format!("sha256:{}", sha256_hex(empty.as_bytes()));
    let (status, _) = http(
        "POST",
        &format!("http://{host}/v2/demo/app/blobs/uploads/?digest={empty_digest}"),
        Some(empty),
        "application/octet-stream",
    );
    assert_eq!(status, 201);
    let subject_size = fs::metadata(layout.join("blobs/sha256").join(second.trim_start_matches("sha256:")))
        .unwrap()
        .len();
    let sbom = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2}],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": second, "size": subject_size},
    })
    .to_string();
    let sbom_digest = format!("sha256:{}", sha256_hex(sbom.as_bytes()));
    let (status, _) = http(
        "PUT",
        &format!("http://{host}/v2/demo/app/manifests/{sbom_digest}"),
        Some(&sbom),
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(status, 201);
    let listed = images(&host, "demo/app", "");
    assert_eq!(listed[&second]["referrers"], json!(1));
    assert_eq!(listed[&sbom_digest]["artifact_type"], "application/spdx+json");
    let detail = api("GET", &host, &format!("/api/v1/repos/demo/app/images/{second}"), None);
    assert_eq!(detail["referrers"][0]["digest"], json!(sbom_digest));
    assert_eq!(detail["layers"].as_array().unwrap().len(), 2);

    // Pulls: three GETs count, HEADs do not.
    for _ in 0..3 {
        let (status, _) = http("GET", &format!("http://{host}/v2/demo/app/manifests/v1"), None, "x/y");
        assert_eq!(status, 200);
    }
    for _ in 0..2 {
        let out = run(tool("curl").args(["-sS", "-I", &format!("http://{host}/v2/demo/app/manifests/v1")]));
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    }
    assert_eq!(api("GET", &host, "/api/v1/repos/demo/app", None)["pulls"], json!(0));
    assert_eq!(
        api("POST", &host, "/api/v1/cluster/pulls/flush", None)["flushed"],
        json!(1)
    );
    let listed = images(&host, "demo/app", "sort=pulls");
    assert_eq!(listed[&second]["pulls"], json!(3));
    assert!(listed[&second]["last_pulled_ms"].as_u64().is_some());
    assert_eq!(listed[&first]["pulls"], json!(0));

    // The CLI over the same routes.
    let table = keelson_cli(&host, &["images", "list", "demo/app"]);
    assert!(table.contains("3 images"), "{table}");
    assert!(
        table.lines().any(|l| l.contains(&second[7..19]) && l.contains("v1")),
        "{table}"
    );
    let summary = keelson_cli(&host, &["repo", "show", "demo/app"]);
    assert!(summary.contains("images:       3"), "{summary}");
    assert!(summary.contains("pulls:        3"), "{summary}");
    keelson_cli(&host, &["images", "untag", "demo/app:v1"]);
    assert_eq!(images(&host, "demo/app", "tagged=true").len(), 0);
    assert_eq!(images(&host, "demo/app", "").len(), 3, "untag keeps the image");
    keelson_cli(&host, &["images", "delete", &format!("demo/app@{first}")]);
    let left = images(&host, "demo/app", "");
    assert!(!left.contains_key(&first) && left.len() == 2, "{left:?}");
    let (status, _) = http(
        "GET",
        &format!("http://{host}/v2/demo/app/manifests/{first}"),
        None,
        "x/y",
    );
    assert_eq!(status, 404);
    let summary = api("GET", &host, "/api/v1/repos/demo/app", None);
    assert_eq!(
        (summary["images"].clone(), summary["tags"].clone()),
        (json!(2), json!(0))
    );

    // docker's own manifest format is listed with its exact size.
    need("dockerd");
    let docker = Docker::start(&tmp.path().join("docker"));
    let tar = busybox_rootfs_tar(tmp.path(), "listed by keelson\n", LIMIT);
    let image = format!("{host}/demo/docker:v1");
    run(docker.cmd().args(["import"]).arg(&tar).arg(&image));
    let digest = pushed_digest(&run(docker.cmd().args(["push", &image])));
    let raw = run(tool("curl").args([
        "-sS",
        "-H",
        "Accept: application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{host}/v2/demo/docker/manifests/{digest}"),
    ]));
    let parsed: Value = serde_json::from_str(&raw).unwrap();
    let expected = raw.len() as u64
        + parsed["config"]["size"].as_u64().unwrap()
        + parsed["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();
    let listed = images(&host, "demo/docker", "");
    assert_eq!(listed[&digest]["size"], json!(expected));
    assert_eq!(
        listed[&digest]["media_type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

/// A monolithic blob push of `bytes` into `repo`: the status and the body.
fn push_blob(host: &str, repo: &str, bytes: &[u8]) -> (u16, Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    fs::write(&file, bytes).unwrap();
    let digest = format!("sha256:{}", sha256_hex(bytes));
    let out = run(tool("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{host}/v2/{repo}/blobs/uploads/?digest={digest}")));
    let (text, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), serde_json::from_str(text).unwrap_or(Value::Null))
}

#[test]
fn limits_and_immutable_tags_meet_docker_and_racing_pushers() {
    need("dockerd");
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start_with_env(&tmp.path().join("node"), &[("KEELSON_AUTH", "off")]);
    let host = node.host();
    api(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/limits",
        Some(json!({ "max_repos": 1 })),
    );
    let docker = Docker::start(&tmp.path().join("docker"));
    let tar = busybox_rootfs_tar(tmp.path(), "original\n", LIMIT);
    let original = format!("{host}/demo/one:v1");
    run(docker.cmd().args(["import"]).arg(&tar).arg(&original));
    let digest = pushed_digest(&run(docker.cmd().args(["push", &original])));

    // The tenancy's one repository exists: a push to a second one is refused, naming the limit.
    let second = format!("{host}/demo/two:v1");
    run(docker.cmd().args(["tag", &original, &second]));
    let refused = exec(docker.cmd().args(["push", &second]), LIMIT);
    assert!(!refused.ok, "push over the repository limit succeeded");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(said.contains("limit of 1 repositories"), "{said}");
    let usage = api("GET", &host, "/api/v1/tenancies/demo/limits", None);
    assert_eq!(usage["usage"]["repos"], json!(1));

    // Immutable tags: a changed image cannot take v1; the original still pulls; the same image
    // pushed again succeeds (a CI retry).
    api(
        "PATCH",
        &host,
        "/api/v1/repos/demo/one",
        Some(json!({ "immutable_tags": { "enabled": true, "exempt": ["latest"] } })),
    );
    let changed_tar = busybox_rootfs_tar(&tmp.path().join("changed"), "changed\n", LIMIT);
    run(docker.cmd().args(["import"]).arg(&changed_tar).arg(&original));
    let refused = exec(docker.cmd().args(["push", &original]), LIMIT);
    assert!(!refused.ok, "a changed image replaced an immutable tag");
    let said = format!("{}{}", refused.stdout, refused.stderr);
    assert!(said.contains("tag v1 in demo/one is immutable"), "{said}");
    assert!(said.contains("exempt: latest"), "{said}");
    let latest = format!("{host}/demo/one:latest");
    run(docker.cmd().args(["tag", &original, &latest]));
    run(docker.cmd().args(["push", &latest]));
    run(docker.cmd().args(["rmi", &original, &latest]));
    let pulled = run(docker.cmd().args(["pull", &original]));
    assert!(pulled.contains(&digest), "{pulled}");
    let again = pushed_digest(&run(docker.cmd().args(["push", &original])));
    assert_eq!(again, digest);
    let (status, body) = http(
        "DELETE",
        &format!("http://{host}/v2/demo/one/manifests/v1"),
        None,
        "x/y",
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["code"], "DENIED");

    // Eight pushers race for the last repository slot: exactly one gets it.
    api(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/limits",
        Some(json!({ "max_repos": 2 })),
    );
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let host = host.clone();
                s.spawn(move || push_blob(&host, &format!("demo/race-{i}"), &pseudo_random(4096, i)))
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let won = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(won, 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 403, "{body}");
        assert_eq!(body["errors"][0]["code"], "DENIED");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("limit of 2 repositories") && message.contains("it has"),
            "{message}"
        );
    }
    let summary = api("GET", &host, "/api/v1/tenancies/demo/summary", None);
    assert_eq!(summary["usage"]["repos"], json!(2));
    assert_eq!(summary["repositories"].as_array().unwrap().len(), 2);
}

/// `PUT /api/v1/cluster/clock` on every node: all clocks `offset_ms` ahead.
fn move_clocks(cluster: &Cluster, offset_ms: u64) {
    for node in &cluster.nodes {
        api(
            "PUT",
            &node.host(),
            "/api/v1/cluster/clock",
            Some(json!({ "offset_ms": offset_ms })),
        );
    }
}

fn pulls_of(host: &str, repo: &str, digest: &str) -> u64 {
    api("GET", host, &format!("/api/v1/repos/{repo}/images/{digest}"), None)["pulls"]
        .as_u64()
        .unwrap()
}

fn get_manifest(host: &str, reference: &str, times: usize) {
    for _ in 0..times {
        let (status, body) = http(
            "GET",
            &format!("http://{host}/v2/demo/app/manifests/{reference}"),
            None,
            "x/y",
        );
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn cluster_counts_pulls_exactly_and_retention_frees_every_disk() {
    need("skopeo");
    need("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::form(tmp.path(), &[(1, "fd1"), (2, "fd2"), (3, "fd3")], |_| {
        [
            ("KEELSON_AUTH", "off"),
            ("KEELSON_TEST_CLOCK", "true"),
            ("KEELSON_PULL_FLUSH_MS", "3600000"),
            ("KEELSON_GC_INTERVAL_MS", "300"),
            ("KEELSON_GC_GRACE_MS", "60000"),
            ("KEELSON_REPAIR_INTERVAL_MS", "1000"),
            ("KEELSON_SCRUB_INTERVAL_MS", "1000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    });
    let hosts: Vec<String> = cluster.nodes.iter().map(|n| n.host()).collect();
    let layout = tmp.path().join("layout");
    let mut pushed = BTreeMap::new();
    for (tag, seed) in [("keep", 1), ("old", 2), ("release-1", 3), ("new", 4)] {
        let digest = umoci_image(tmp.path(), &layout, tag, "amd64", 200 << 10, seed, LIMIT);
        pushed.insert(tag, digest);
    }
    for tag in ["keep", "old", "release-1"] {
        push_layout(tmp.path(), &layout, tag, &format!("{}/demo/app:{tag}", hosts[0]));
    }
    // `new` takes the tag `old`: the image pushed as `old` is now untagged. `release-1` loses its
    // tag name too but keeps an exempt one.
    push_layout(tmp.path(), &layout, "new", &format!("{}/demo/app:old", hosts[1]));

    // Pull counts: 3 + 2 + 4 pulls on three nodes add up after each node's flush.
    let keep = pushed["keep"].clone();
    for (host, n) in hosts.iter().zip([3, 2, 4]) {
        get_manifest(host, "keep", n);
    }
    for host in &hosts {
        api("POST", host, "/api/v1/cluster/pulls/flush", None);
    }
    for host in &hosts {
        wait_until("9 pulls on every node", Duration::from_secs(30), || {
            let n = pulls_of(host, "demo/app", &keep);
            (n == 9).then_some(()).ok_or(format!("{host} shows {n}"))
        });
    }
    // A node that flushed and then died keeps its pulls in the totals.
    get_manifest(&hosts[2], &keep, 5);
    api("POST", &hosts[2], "/api/v1/cluster/pulls/flush", None);
    cluster.node_mut(3).kill();
    for host in &hosts[..2] {
        wait_until("14 pulls after node 3 died", Duration::from_secs(30), || {
            let n = pulls_of(host, "demo/app", &keep);
            (n == 14).then_some(()).ok_or(format!("{host} shows {n}"))
        });
    }
    cluster.node_mut(3).restart();
    cluster.wait_converged("node 3 back", &[1, 2, 3], Duration::from_secs(60));

    // Retention: untagged for 7 days, release-* exempt. Eight days on, only the image that lost
    // its tag goes; the preview names it and the run deletes exactly that.
    api(
        "PUT",
        &hosts[0],
        "/api/v1/tenancies/demo/retention-policies/cleanup",
        Some(json!({ "untagged_days": 7, "exempt_tags": ["release-*"] })),
    );
    api(
        "PATCH",
        &hosts[1],
        "/api/v1/repos/demo/app",
        Some(json!({ "retention_policy": "cleanup" })),
    );
    let old = pushed["old"].clone();
    move_clocks(&cluster, 8 * DAY_MS);
    let preview = api("GET", &hosts[2], "/api/v1/repos/demo/app/retention/preview", None);
    let planned: Vec<&str> = preview["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap())
        .collect();
    assert_eq!(planned, vec![old.as_str()], "{preview}");
    assert_eq!(preview["images"][0]["rule"], "untagged");
    let leader = hosts
        .iter()
        .find(|h| {
            let (status, _) = http(
                "POST",
                &format!("http://{h}/api/v1/cluster/retention/run"),
                None,
                "application/json",
            );
            status == 200
        })
        .expect("one node leads and runs the pass")
        .clone();
    let log = api("GET", &leader, "/api/v1/tenancies/demo/retention-deletions", None);
    let deleted: Vec<&str> = log["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, planned, "{log}");
    assert_eq!(log["deletions"][0]["policy"], "cleanup");
    assert_eq!(log["deletions"][0]["bytes_freed"], preview["images"][0]["bytes_freed"]);

    // GC then frees the deleted image's own blobs on every node's disk.
    let kept_tags = ["keep", "release-1", "new"];
    let kept_blobs: BTreeSet<String> = kept_tags.iter().flat_map(|t| image_digests(&layout, t)).collect();
    let gone: Vec<String> = image_digests(&layout, "old")
        .into_iter()
        .filter(|d| !kept_blobs.contains(d))
        .collect();
    assert!(gone.len() >= 2, "the old image had blobs of its own: {gone:?}");
    // GC's grace periods count on the clock: each poll moves every clock two more minutes on.
    let mut offset = 8 * DAY_MS;
    for node in &cluster.nodes {
        wait_until(
            "the deleted image's blob files are gone",
            Duration::from_secs(90),
            || {
                offset += 120_000;
                move_clocks(&cluster, offset);
                let left: Vec<&String> = gone
                    .iter()
                    .filter(|d| {
                        let hex = d.trim_start_matches("sha256:");
                        node.data_dir.join("blobs/sha256").join(&hex[..2]).join(hex).exists()
                    })
                    .collect();
                let gc_lines: Vec<String> = cluster
                    .logs()
                    .lines()
                    .filter(|l| l.contains("GC") || l.contains("gc"))
                    .map(str::to_string)
                    .collect();
                left.is_empty()
                    .then_some(())
                    .ok_or(format!("{left:?} still on disk; GC log: {}", gc_lines.join("\n")))
            },
        );
    }

    // Every kept image still pulls, byte-identical, from every node.
    for (host, tag) in hosts.iter().zip(["keep", "release-1", "old"]) {
        let dest = tmp.path().join(format!("pulled-{tag}"));
        run(skopeo(tmp.path())
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/demo/app:{tag}"))
            .arg(format!("dir:{}", dest.display())));
        let source_tag = if tag == "old" { "new" } else { tag };
        let blobs = layout_blobs(&layout);
        for digest in image_digests(&layout, source_tag) {
            let hex = digest.trim_start_matches("sha256:");
            let name = if digest == image_digests(&layout, source_tag)[0] {
                "manifest.json".to_string()
            } else {
                hex.to_string()
            };
            let got = fs::read(dest.join(&name)).unwrap_or_else(|e| panic!("{tag}: {name}: {e}"));
            assert_eq!(sha256_hex(&got), sha256_hex(&blobs[hex]), "{tag}: {name}");
        }
    }
}

/// The status and OCI error code of a request.
fn refusal(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let (status, value) = http(method, url, body, "application/json");
    let code = value["errors"][0]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

#[test]
fn lifecycle_routes_answer_hostile_input_with_oci_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start_with_env(&tmp.path().join("node"), &[("KEELSON_AUTH", "off")]);
    let host = node.host();
    let (status, _) = push_blob(&host, "demo/app", b"{}");
    assert_eq!(status, 201);
    let zeros = format!("sha256:{}", "0".repeat(64));
    let images = format!("http://{host}/api/v1/repos/demo/app/images");
    let policies = format!("http://{host}/api/v1/tenancies/demo/retention-policies");
    let big_readme = json!({ "readme": "x".repeat(70 << 10) }).to_string();
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("GET", format!("{images}?sort=bogus"), None, 400, "BAD_REQUEST"),
        ("GET", format!("{images}?n=-1"), None, 400, "BAD_REQUEST"),
        (
            "GET",
            format!("{images}?n=99999999999999999999999"),
            None,
            400,
            "BAD_REQUEST",
        ),
        ("GET", format!("{images}?tagged=maybe"), None, 400, "BAD_REQUEST"),
        ("GET", format!("{images}?order=sideways"), None, 400, "BAD_REQUEST"),
        ("GET", format!("{images}?last={zeros}"), None, 400, "BAD_REQUEST"),
        (
            "GET",
            format!("http://{host}/api/v1/repos/demo/none/images"),
            None,
            404,
            "NAME_UNKNOWN",
        ),
        ("GET", format!("{images}/sha256:zz"), None, 400, "DIGEST_INVALID"),
        ("GET", format!("{images}/{zeros}"), None, 404, "MANIFEST_UNKNOWN"),
        ("DELETE", format!("{images}/{zeros}"), None, 404, "MANIFEST_UNKNOWN"),
        (
            "DELETE",
            format!("http://{host}/api/v1/repos/demo/app/tags/nope"),
            None,
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            "PUT",
            format!("{policies}/p1"),
            Some(r#"{"exempt_tags": ["a/b"]}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PUT",
            format!("{policies}/p1"),
            Some(r#"{"not_pulled_days": -1}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PUT",
            format!("{policies}/p1"),
            Some(r#"{"cooling_hours": 4000000000}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PUT",
            format!("{policies}/p1"),
            Some(r#"{"cooling_hours": 1, "cooling_ms": 5}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PUT",
            format!("{policies}/bad%20name!"),
            Some("{}".into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PUT",
            format!("{policies}/p1"),
            Some("not json".into()),
            400,
            "BAD_REQUEST",
        ),
        ("DELETE", format!("{policies}/never-made"), None, 400, "BAD_REQUEST"),
        ("GET", format!("{policies}/never-made"), None, 404, "NOT_FOUND"),
        (
            "PATCH",
            format!("http://{host}/api/v1/repos/demo/app"),
            Some(r#"{"retention_policy": "never-made"}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PATCH",
            format!("http://{host}/api/v1/repos/demo/app"),
            Some(big_readme),
            400,
            "BAD_REQUEST",
        ),
        (
            "PATCH",
            format!("http://{host}/api/v1/repos/demo/app"),
            Some(r#"{"immutable_tags": {"enabled": true, "exempt": ["*/*"]}}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PUT",
            format!("http://{host}/api/v1/tenancies/demo/limits"),
            Some(r#"{"max_repos": "many"}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PUT",
            format!("http://{host}/api/v1/tenancies/demo/limits"),
            Some(r#"{"max_repos": -5}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            "PUT",
            format!("http://{host}/api/v1/cluster/clock"),
            Some(r#"{"offset_ms": 1000}"#.into()),
            400,
            "UNSUPPORTED",
        ),
        (
            "POST",
            format!("http://{host}/api/v1/repos/demo/none/retention/run"),
            None,
            404,
            "NAME_UNKNOWN",
        ),
        (
            "GET",
            format!("http://{host}/api/v1/repos/demo/none/retention/preview"),
            None,
            404,
            "NAME_UNKNOWN",
        ),
    ];
    for (method, url, body, status, code) in cases {
        let got = refusal(method, &url, body.as_deref());
        assert_eq!(got, (status, code.to_string()), "{method} {url}");
    }
    // Nothing was half-applied: the repository still has its global policy and no readme.
    let repo = api("GET", &host, "/api/v1/repos/demo/app", None);
    assert_eq!(
        (repo["retention_policy"].clone(), repo["readme"].clone()),
        (json!("global"), json!(""))
    );
}
