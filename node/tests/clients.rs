//! Real-client integration tests: the registry clients people actually use (skopeo, umoci, docker,
//! containerd's ctr, podman, the `oras` Python library) push to and pull from a real `keelson`
//! process, and every round trip is checked byte for byte.
//!
//! The clients are system packages: `scripts/install-deps.sh` installs them. A missing client makes
//! its test FAIL (never skip) with a message naming that script.
//!
//! Run: `cargo test -p keelson --test clients -- --test-threads=1`.
//!
//! Every directory is a `tempfile::tempdir()`; every daemon (dockerd, containerd) is started by the
//! test itself on sockets inside its temp dir and stopped by a Drop guard; readiness is polled
//! with a deadline, never slept for; every client command runs under a time limit so a hung
//! request fails the test instead of hanging CI.
//!
//! Development hook: with `KEELSON_CLIENTS_EXTERNAL_REGISTRY=127.0.0.1:5099` the tests talk to an
//! already running registry at that address (e.g. Debian's reference `docker-registry`) instead
//! of starting keelson, which is how the client procedures were validated. CI never sets it.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::containerd::Containerd;
use support::content::{hex_of, pseudo_random, sha256_hex};
use support::docker::{busybox_rootfs_tar, pushed_digest, Docker};
use support::oci::{layout_blobs, layout_ref, skopeo, two_platform_layout, umoci_image, OCI_INDEX, OCI_MANIFEST};
use support::tools::{exec, exec_ok, need, tail, tool, INSTALL_HINT};
use support::Keelson;

const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Time limit for one client command (a push or pull of a few MiB takes well under a second).
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// A JSON array of strings, sorted (tag lists: compared as sets).
fn sorted_strings(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s}")).to_string())
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// The registry under test
// ---------------------------------------------------------------------------------------------

/// A keelson node started for one test (or, for development only, an external registry).
struct Registry {
    node: Option<Keelson>,
    external: Option<String>,
    _data: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let data = tempfile::tempdir().expect("tempdir");
        if let Ok(addr) = std::env::var("KEELSON_CLIENTS_EXTERNAL_REGISTRY") {
            if !addr.is_empty() {
                eprintln!("NOTE: KEELSON_CLIENTS_EXTERNAL_REGISTRY set: testing {addr}, NOT keelson");
                return Registry {
                    node: None,
                    external: Some(addr),
                    _data: data,
                };
            }
        }
        let node = Keelson::start(&data.path().join("node"));
        Registry {
            node: Some(node),
            external: None,
            _data: data,
        }
    }

    /// A node with identity enforced and the administrator's token preset.
    fn start_secured(admin_token: &str) -> Registry {
        let data = tempfile::tempdir().expect("tempdir");
        let node = Keelson::start_secured(&data.path().join("node"), admin_token);
        Registry {
            node: Some(node),
            external: None,
            _data: data,
        }
    }

    /// A management API call as the cluster administrator (curl); returns the JSON answer.
    fn admin(&self, admin_token: &str, method: &str, path: &str, body: &str) -> Value {
        let out = self.run(
            tool("curl")
                .args(["-sS", "--fail-with-body", "-X", method, "-u"])
                .arg(format!("keelson/admin:{admin_token}"))
                .args(["-H", "Content-Type: application/json", "--data", body])
                .arg(format!("http://{}/api/v1/{path}", self.host())),
        );
        serde_json::from_str(&out).unwrap_or(Value::Null)
    }

    /// `127.0.0.1:PORT`.
    fn host(&self) -> String {
        match (&self.node, &self.external) {
            (Some(node), _) => node.host(),
            (None, Some(addr)) => addr.clone(),
            _ => unreachable!(),
        }
    }

    /// kill -9 and start again on the same data (a no-op against an external registry).
    fn restart(&mut self) {
        if let Some(node) = self.node.as_mut() {
            node.restart();
        }
    }

    fn log_tail(&self) -> String {
        match &self.node {
            Some(node) => tail(&node.log(), 6000).to_string(),
            None => "(external registry: no keelson log)".into(),
        }
    }

    /// Runs a client command that must succeed; on failure panics with its output and the tail
    /// of the keelson log. Returns stdout.
    fn run(&self, cmd: &mut Command) -> String {
        exec_ok(cmd, COMMAND_LIMIT, || {
            format!("--- keelson.log (tail):\n{}", self.log_tail())
        })
    }

    /// Raw HTTP GET with curl: (status, headers lower-cased, body).
    fn http_get(&self, path: &str, accept: Option<&str>) -> (u16, BTreeMap<String, String>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let headers_file = dir.path().join("headers");
        let body_file = dir.path().join("body");
        let mut cmd = tool("curl");
        cmd.arg("-sS")
            .arg("--max-time")
            .arg("60")
            .arg("-D")
            .arg(&headers_file)
            .arg("-o")
            .arg(&body_file);
        if let Some(accept) = accept {
            cmd.arg("-H").arg(format!("Accept: {accept}"));
        }
        cmd.arg(format!("http://{}{}", self.host(), path));
        self.run(&mut cmd);
        let head = fs::read_to_string(&headers_file).unwrap();
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?} for GET {path}"));
        let mut headers = BTreeMap::new();
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        (status, headers, fs::read(&body_file).unwrap_or_default())
    }
}

// ---------------------------------------------------------------------------------------------
// skopeo / umoci / OCI layouts
// ---------------------------------------------------------------------------------------------

/// The skopeo `dir:` transport's files: manifest.json plus one file per blob (named by hex).
fn dir_blobs(dir: &Path) -> (Vec<u8>, BTreeMap<String, Vec<u8>>) {
    let manifest = fs::read(dir.join("manifest.json")).expect("dir: has manifest.json");
    let mut blobs = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            blobs.insert(name, fs::read(entry.path()).unwrap());
        }
    }
    (manifest, blobs)
}

/// The config and layer digests (hex) that a manifest references.
fn referenced_blobs(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).expect("manifest JSON");
    let mut out = vec![hex_of(m["config"]["digest"].as_str().unwrap()).to_string()];
    for layer in m["layers"].as_array().unwrap() {
        out.push(hex_of(layer["digest"].as_str().unwrap()).to_string());
    }
    out.sort();
    out
}

#[test]
fn skopeo_umoci_single_arch() {
    need("skopeo");
    need("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let mut reg = Registry::start();
    let host = reg.host();

    let layout = tmp.path().join("src-layout");
    let digest = umoci_image(tmp.path(), &layout, "v1", "amd64", 3 << 20, 1, COMMAND_LIMIT);
    let src_blobs = layout_blobs(&layout);
    let manifest_bytes = src_blobs[hex_of(&digest)].clone();

    // Push.
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/demo/app:v1")),
    );

    // The registry serves the manifest byte for byte, under the tag and under its digest.
    let raw = reg.run(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{host}/demo/app:v1")),
    );
    assert_eq!(
        raw.as_bytes(),
        &manifest_bytes[..],
        "manifest by tag differs from the pushed one"
    );
    let raw = reg.run(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{host}/demo/app@{digest}")),
    );
    assert_eq!(
        raw.as_bytes(),
        &manifest_bytes[..],
        "manifest by digest differs from the pushed one"
    );

    let info: Value = serde_json::from_str(
        &reg.run(
            skopeo(tmp.path())
                .args(["inspect", "--tls-verify=false"])
                .arg(format!("docker://{host}/demo/app:v1")),
        ),
    )
    .unwrap();
    assert_eq!(info["Digest"], digest.as_str(), "skopeo inspect: {info}");
    assert_eq!(info["Architecture"], "amd64", "skopeo inspect: {info}");
    assert_eq!(
        info["Labels"]["org.example.arch"], "amd64",
        "skopeo inspect (config blob): {info}"
    );
    assert_eq!(
        info["Layers"].as_array().map(|l| l.len()),
        Some(2),
        "skopeo inspect: {info}"
    );

    let tags: Value = serde_json::from_str(
        &reg.run(
            skopeo(tmp.path())
                .args(["list-tags", "--tls-verify=false"])
                .arg(format!("docker://{host}/demo/app")),
        ),
    )
    .unwrap();
    assert_eq!(sorted_strings(&tags["Tags"]), ["v1"], "list-tags: {tags}");

    // Pull back into a fresh OCI layout: same manifest digest, byte-identical blobs.
    let back = tmp.path().join("back-layout");
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/demo/app:v1"))
            .arg(format!("oci:{}:v1", back.display())),
    );
    assert_eq!(
        layout_ref(&back, "v1")["digest"],
        digest.as_str(),
        "manifest digest did not round-trip"
    );
    assert_eq!(
        layout_blobs(&back),
        src_blobs,
        "blobs pulled into oci: differ from the pushed ones"
    );

    // And into `dir:` (by digest): manifest.json is the manifest, every blob is byte-identical.
    let dir = tmp.path().join("back-dir");
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/demo/app@{digest}"))
            .arg(format!("dir:{}", dir.display())),
    );
    let (dir_manifest, dir_blob_map) = dir_blobs(&dir);
    assert_eq!(dir_manifest, manifest_bytes, "dir: manifest.json differs");
    assert_eq!(
        dir_blob_map.keys().cloned().collect::<Vec<_>>(),
        referenced_blobs(&manifest_bytes)
    );
    for (hex, bytes) in &dir_blob_map {
        assert_eq!(sha256_hex(bytes), *hex, "dir: blob {hex} corrupted");
        assert_eq!(bytes, &src_blobs[hex], "dir: blob {hex} differs from the pushed one");
    }

    // A second tag of the same image (blobs already there) and a restart: all still served.
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg(format!("docker://{host}/demo/app:v1"))
            .arg(format!("docker://{host}/demo/app:v1-again")),
    );
    reg.restart();
    let host = reg.host();
    let raw = reg.run(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{host}/demo/app:v1-again")),
    );
    assert_eq!(raw.as_bytes(), &manifest_bytes[..], "second tag after restart");
    let after = tmp.path().join("after-restart");
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/demo/app:v1"))
            .arg(format!("oci:{}:v1", after.display())),
    );
    assert_eq!(layout_blobs(&after), src_blobs, "blobs after restart differ");
    let tags: Value = serde_json::from_str(
        &reg.run(
            skopeo(tmp.path())
                .args(["list-tags", "--tls-verify=false"])
                .arg(format!("docker://{host}/demo/app")),
        ),
    )
    .unwrap();
    assert_eq!(
        sorted_strings(&tags["Tags"]),
        ["v1", "v1-again"],
        "list-tags after restart: {tags}"
    );
}

#[test]
fn skopeo_two_platform_index() {
    need("skopeo");
    need("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let host = reg.host();

    let layout = tmp.path().join("multi");
    let (index_digest, children) = two_platform_layout(tmp.path(), &layout, "v1", COMMAND_LIMIT);
    let src_blobs = layout_blobs(&layout);
    assert_eq!(src_blobs.len(), 1 + 2 * 4, "index + 2 x (manifest, config, 2 layers)");

    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/demo/multi:v1")),
    );

    // The index and each child manifest are served byte for byte.
    let raw = reg.run(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{host}/demo/multi:v1")),
    );
    assert_eq!(
        raw.as_bytes(),
        &src_blobs[hex_of(&index_digest)][..],
        "index by tag differs"
    );
    for (arch, digest) in &children {
        let raw = reg.run(
            skopeo(tmp.path())
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{host}/demo/multi@{digest}")),
        );
        assert_eq!(
            raw.as_bytes(),
            &src_blobs[hex_of(digest)][..],
            "{arch} manifest by digest differs"
        );
    }
    let (status, headers, body) = reg.http_get(
        "/v2/demo/multi/manifests/v1",
        Some(&format!("{OCI_INDEX}, {OCI_MANIFEST}")),
    );
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some(OCI_INDEX),
        "headers: {headers:?}"
    );
    assert_eq!(
        headers.get("docker-content-digest"),
        Some(&index_digest),
        "headers: {headers:?}"
    );
    assert_eq!(body, src_blobs[hex_of(&index_digest)]);

    // Pull everything back: identical index, child manifests, configs and layers.
    let back = tmp.path().join("back");
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{host}/demo/multi:v1"))
            .arg(format!("oci:{}:v1", back.display())),
    );
    let desc = layout_ref(&back, "v1");
    assert_eq!(desc["digest"], index_digest.as_str(), "index digest did not round-trip");
    assert_eq!(desc["mediaType"], OCI_INDEX);
    assert_eq!(layout_blobs(&back), src_blobs, "blobs pulled with --all differ");

    // Platform selection through the index: asking for arm64 yields the arm64 manifest.
    for (arch, digest) in &children {
        let one = tmp.path().join(format!("only-{arch}"));
        reg.run(
            skopeo(tmp.path())
                .args([
                    "--override-arch",
                    arch,
                    "--override-os",
                    "linux",
                    "copy",
                    "--src-tls-verify=false",
                ])
                .arg(format!("docker://{host}/demo/multi:v1"))
                .arg(format!("oci:{}:v1", one.display())),
        );
        assert_eq!(
            layout_ref(&one, "v1")["digest"],
            digest.as_str(),
            "platform {arch} resolved to the wrong manifest"
        );
        let config_hex = {
            let m: Value = serde_json::from_slice(&src_blobs[hex_of(digest)]).unwrap();
            hex_of(m["config"]["digest"].as_str().unwrap()).to_string()
        };
        let config: Value = serde_json::from_slice(&layout_blobs(&one)[&config_hex]).unwrap();
        assert_eq!(config["architecture"], arch.as_str());
    }
}

// ---------------------------------------------------------------------------------------------
// containerd, private to one test (dockerd: support::docker)
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// docker
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_push_pull() {
    need("docker");
    need("dockerd");
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let host = reg.host();
    let tar = busybox_rootfs_tar(tmp.path(), "imported through keelson\n", COMMAND_LIMIT);
    let docker = Docker::start(&tmp.path().join("docker"));
    let image = format!("{host}/demo/imported:v1");

    let imported = reg.run(
        docker
            .cmd()
            .args(["import", "--change", r#"CMD ["/bin/sh"]"#])
            .arg(&tar)
            .arg("demo-local:v1"),
    );
    assert!(
        imported.trim().starts_with("sha256:"),
        "docker import printed {imported:?}"
    );
    reg.run(docker.cmd().args(["tag", "demo-local:v1", &image]));
    let image_id = reg
        .run(docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &image]))
        .trim()
        .to_string();

    let push = reg.run(docker.cmd().args(["push", &image]));
    let digest = pushed_digest(&push);

    // What docker pushed is what the registry serves (docker's own manifest format).
    let (status, headers, body) = reg.http_get(
        &format!("/v2/demo/imported/manifests/{digest}"),
        Some("application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"),
    );
    assert_eq!(status, 200, "GET manifest by digest");
    assert_eq!(
        format!("sha256:{}", sha256_hex(&body)),
        digest,
        "served manifest does not hash to the pushed digest"
    );
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/vnd.docker.distribution.manifest.v2+json"),
        "headers: {headers:?}"
    );

    // Remove every local trace of the image, then pull it back.
    reg.run(docker.cmd().args(["rmi", &image, "demo-local:v1"]));
    let gone = exec(docker.cmd().args(["image", "inspect", &image]), COMMAND_LIMIT);
    assert!(!gone.ok, "image still present after rmi");
    let pull = reg.run(docker.cmd().args(["pull", &image]));
    assert!(
        pull.contains(&digest),
        "docker pull reported another digest than {digest}:\n{pull}"
    );
    let pulled_id = reg
        .run(docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &image]))
        .trim()
        .to_string();
    assert_eq!(pulled_id, image_id, "image id changed through push/pull");
    let repo_digests = reg.run(
        docker
            .cmd()
            .args(["image", "inspect", "-f", "{{json .RepoDigests}}", &image]),
    );
    assert!(
        repo_digests.contains(&format!("{host}/demo/imported@{digest}")),
        "RepoDigests: {repo_digests}"
    );

    // The pulled image runs.
    let out = reg.run(docker.cmd().args([
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "/bin/sh",
        "-c",
        "echo hello; cat /etc/keelson-marker",
    ]));
    assert_eq!(out, "hello\nimported through keelson\n");

    // Another repository in the same namespace: docker tries a cross-repository blob mount;
    // same content, so the same manifest digest. Then pull it by digest.
    let other = format!("{host}/demo/imported-copy:v2");
    reg.run(docker.cmd().args(["tag", &image, &other]));
    let push2 = reg.run(docker.cmd().args(["push", &other]));
    assert_eq!(
        pushed_digest(&push2),
        digest,
        "same image pushed to a second repo got another digest"
    );
    reg.run(docker.cmd().args(["rmi", &image, &other]));
    let by_digest = format!("{host}/demo/imported-copy@{digest}");
    reg.run(docker.cmd().args(["pull", &by_digest]));
    let id3 = reg
        .run(docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &by_digest]))
        .trim()
        .to_string();
    assert_eq!(id3, image_id, "pull by digest from the second repo");
    drop(docker);
}

// ---------------------------------------------------------------------------------------------
// containerd (ctr)
// ---------------------------------------------------------------------------------------------

#[test]
fn containerd_ctr_pull() {
    need("skopeo");
    need("umoci");
    need("containerd");
    need("ctr");
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let host = reg.host();

    let layout = tmp.path().join("layout");
    let digest = umoci_image(tmp.path(), &layout, "v1", "amd64", 1 << 20, 2, COMMAND_LIMIT);
    let blobs = layout_blobs(&layout);
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/demo/app:v1")),
    );

    let containerd = Containerd::start(&tmp.path().join("containerd"));
    let reference = format!("{host}/demo/app:v1");
    reg.run(
        containerd
            .ctr()
            .args(["images", "pull", "--plain-http", "--snapshotter", "native", &reference]),
    );

    let listing = reg.run(containerd.ctr().args(["images", "ls"]));
    let row = listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reference.as_str()))
        .unwrap_or_else(|| panic!("{reference} not in `ctr images ls`:\n{listing}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(1).copied(), Some(OCI_MANIFEST), "ctr images ls row: {row}");
    assert_eq!(
        cols.get(2).copied(),
        Some(digest.as_str()),
        "ctr images ls shows another digest: {row}"
    );

    // containerd's content store holds exactly the bytes that were pushed.
    let manifest = reg.run(containerd.ctr().args(["content", "get", &digest]));
    assert_eq!(
        manifest.as_bytes(),
        &blobs[hex_of(&digest)][..],
        "ctr content get {digest}"
    );
    let store = tmp
        .path()
        .join("containerd/root/io.containerd.content.v1.content/blobs/sha256");
    for hex in std::iter::once(hex_of(&digest).to_string()).chain(referenced_blobs(&blobs[hex_of(&digest)])) {
        let bytes = fs::read(store.join(&hex)).unwrap_or_else(|e| panic!("blob {hex} not in containerd's store: {e}"));
        assert_eq!(bytes, blobs[&hex], "containerd got different bytes for {hex}");
    }

    // The image was unpacked (layers applied through the native snapshotter).
    let snapshots = reg.run(containerd.ctr().args(["snapshots", "--snapshotter", "native", "ls"]));
    assert!(
        snapshots.lines().count() >= 3,
        "expected two committed layer snapshots:\n{snapshots}"
    );
}

// ---------------------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------------------

fn podman(dir: &Path) -> Command {
    let mut c = tool("podman");
    c.arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .args([
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]);
    c
}

#[test]
fn podman_push_pull() {
    need("skopeo");
    need("umoci");
    need("podman");
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let host = reg.host();
    let pm = tmp.path().join("podman");
    fs::create_dir_all(&pm).unwrap();

    let layout = tmp.path().join("layout");
    let digest = umoci_image(tmp.path(), &layout, "v1", "amd64", 1 << 20, 3, COMMAND_LIMIT);
    let config_hex = referenced_blobs(&layout_blobs(&layout)[hex_of(&digest)])
        .into_iter()
        .find(|h| {
            let m: Value = serde_json::from_slice(&layout_blobs(&layout)[hex_of(&digest)]).unwrap();
            m["config"]["digest"] == format!("sha256:{h}")
        })
        .unwrap();
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/demo/app:v1")),
    );

    // Pull what skopeo pushed.
    let src = format!("{host}/demo/app:v1");
    reg.run(podman(&pm).args(["pull", "--tls-verify=false", &src]));
    let inspect = |r: &str, fmt: &str| {
        reg.run(podman(&pm).args(["image", "inspect", "--format", fmt, r]))
            .trim()
            .to_string()
    };
    assert_eq!(inspect(&src, "{{.Digest}}"), digest, "podman pulled another manifest");
    assert_eq!(
        inspect(&src, "{{.ID}}"),
        config_hex,
        "podman image id is not the config digest"
    );

    // Push to a new repository (OCI format, as pulled) and in Docker schema 2 format.
    let copy = format!("{host}/demo/podman-copy:v1");
    let digest_file = tmp.path().join("podman-digest");
    reg.run(
        podman(&pm)
            .args(["push", "--tls-verify=false", "--digestfile"])
            .arg(&digest_file)
            .arg(&src)
            .arg(&copy),
    );
    let pushed = fs::read_to_string(&digest_file).unwrap().trim().to_string();
    assert!(pushed.starts_with("sha256:"), "digest file: {pushed:?}");
    let raw = reg.run(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{copy}")),
    );
    assert_eq!(
        format!("sha256:{}", sha256_hex(raw.as_bytes())),
        pushed,
        "registry serves another manifest than podman pushed"
    );

    let v2s2 = format!("{host}/demo/podman-v2s2:v1");
    let digest_file2 = tmp.path().join("podman-digest-v2s2");
    reg.run(
        podman(&pm)
            .args(["push", "--tls-verify=false", "--format", "v2s2", "--digestfile"])
            .arg(&digest_file2)
            .arg(&src)
            .arg(&v2s2),
    );
    let pushed_v2s2 = fs::read_to_string(&digest_file2).unwrap().trim().to_string();
    let raw: Value = serde_json::from_str(
        &reg.run(
            skopeo(tmp.path())
                .args(["inspect", "--raw", "--tls-verify=false"])
                .arg(format!("docker://{v2s2}")),
        ),
    )
    .unwrap();
    assert_eq!(
        raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{raw}"
    );
    let (status, headers, _) = reg.http_get(
        "/v2/demo/podman-v2s2/manifests/v1",
        Some("application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"),
    );
    assert_eq!(status, 200);
    assert_eq!(headers.get("docker-content-digest"), Some(&pushed_v2s2));
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );

    // Forget everything locally, pull both copies back: same digests, same image.
    reg.run(podman(&pm).args(["rmi", "--all", "--force"]));
    let none = reg.run(podman(&pm).args(["images", "--quiet"]));
    assert!(none.trim().is_empty(), "images left after rmi --all: {none}");
    reg.run(podman(&pm).args(["pull", "--tls-verify=false", &copy]));
    assert_eq!(
        inspect(&copy, "{{.Digest}}"),
        pushed,
        "pulled digest differs from pushed digest"
    );
    assert_eq!(inspect(&copy, "{{.ID}}"), config_hex);
    reg.run(podman(&pm).args(["pull", "--tls-verify=false", &v2s2]));
    // Same image (config) as the first copy, so podman keeps one image with both manifests: its
    // RepoDigests must name the v2s2 manifest under the v2s2 repository.
    let repo_digests = inspect(&v2s2, "{{json .RepoDigests}}");
    assert!(
        repo_digests.contains(&format!("{host}/demo/podman-v2s2@{pushed_v2s2}")),
        "pulled v2s2 manifest is not the pushed one ({pushed_v2s2}); RepoDigests: {repo_digests}"
    );
    assert_eq!(inspect(&v2s2, "{{.ID}}"), config_hex);
}

// ---------------------------------------------------------------------------------------------
// oras (Python library): a Helm chart as an OCI artifact
// ---------------------------------------------------------------------------------------------

const ORAS_SCRIPT: &str = r#"
import json, sys
import oras.client

mode, host, target = sys.argv[1], sys.argv[2], sys.argv[3]
client = oras.client.OrasClient(hostname=host, insecure=True)
if mode == "push":
    chart, config, chunked = sys.argv[4], sys.argv[5], sys.argv[6] == "chunked"
    resp = client.push(
        target=target,
        files=[chart + ":application/vnd.cncf.helm.chart.content.v1.tar+gzip"],
        manifest_config=config + ":application/vnd.cncf.helm.config.v1+json",
        disable_path_validation=True,
        do_chunked=chunked,
        chunk_size=65536,
        quiet=True,
    )
    print(json.dumps({"status": resp.status_code, "digest": resp.headers.get("Docker-Content-Digest")}))
elif mode == "pull":
    files = client.pull(target=target, outdir=sys.argv[4])
    print(json.dumps({"files": files}))
else:
    sys.exit("unknown mode " + mode)
"#;

/// A Helm-like chart .tgz (Chart.yaml, values.yaml, a binary file) made with tar.
fn make_chart(dir: &Path, name: &str, version: &str, seed: u64) -> PathBuf {
    let src = dir.join(format!("chart-src-{version}"));
    let chart_dir = src.join(name);
    fs::create_dir_all(chart_dir.join("templates")).unwrap();
    fs::write(
        chart_dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )
    .unwrap();
    fs::write(chart_dir.join("values.yaml"), "replicaCount: 1\n").unwrap();
    fs::write(chart_dir.join("templates/blob.bin"), pseudo_random(200 << 10, seed)).unwrap();
    let tgz = dir.join(format!("{name}-{version}.tgz"));
    let out = exec(
        tool("tar").arg("-C").arg(&src).arg("-czf").arg(&tgz).arg(name),
        COMMAND_LIMIT,
    );
    assert!(out.ok, "tar failed: {}", out.stderr);
    tgz
}

#[test]
fn oras_helm_chart() {
    need("python3");
    need("curl");
    let check = exec(tool("python3").args(["-c", "import oras.client"]), COMMAND_LIMIT);
    assert!(
        check.ok,
        "the `oras` Python package is not installed ({}): {INSTALL_HINT}",
        check.stderr.trim()
    );
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start();
    let host = reg.host();
    let script = tmp.path().join("oras_client.py");
    fs::write(&script, ORAS_SCRIPT).unwrap();

    let cases = [("0.1.0", "chunked", 21u64), ("0.2.0", "monolithic", 22u64)];
    for (version, mode, seed) in cases {
        let chart = make_chart(tmp.path(), "mychart", version, seed);
        let chart_bytes = fs::read(&chart).unwrap();
        let config_bytes = format!(r#"{{"name":"mychart","version":"{version}","apiVersion":"v2"}}"#).into_bytes();
        let config = tmp.path().join(format!("config-{version}.json"));
        fs::write(&config, &config_bytes).unwrap();
        let target = format!("{host}/demo/charts/mychart:{version}");

        let pushed: Value = serde_json::from_str(
            &reg.run(
                tool("python3")
                    .arg(&script)
                    .args(["push", &host, &target])
                    .arg(&chart)
                    .arg(&config)
                    .arg(mode),
            ),
        )
        .unwrap();
        assert_eq!(pushed["status"], 201, "manifest PUT status ({mode} upload): {pushed}");
        let digest = pushed["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("no Docker-Content-Digest on manifest PUT: {pushed}"))
            .to_string();

        // Pull it back with oras: the chart is byte-identical.
        let out_dir = tmp.path().join(format!("pulled-{version}"));
        let pulled: Value = serde_json::from_str(
            &reg.run(
                tool("python3")
                    .arg(&script)
                    .args(["pull", &host, &target])
                    .arg(&out_dir),
            ),
        )
        .unwrap();
        assert_eq!(
            pulled["files"].as_array().map(|f| f.len()),
            Some(1),
            "oras pull: {pulled}"
        );
        let got = fs::read(out_dir.join(format!("mychart-{version}.tgz"))).expect("pulled chart file");
        assert_eq!(
            sha256_hex(&got),
            sha256_hex(&chart_bytes),
            "pulled chart differs ({mode} upload)"
        );

        // Raw HTTP: the manifest keeps its OCI media type and the Helm config/layer types.
        let (status, headers, body) = reg.http_get(
            &format!("/v2/demo/charts/mychart/manifests/{version}"),
            Some(OCI_MANIFEST),
        );
        assert_eq!(status, 200, "GET manifest: {}", String::from_utf8_lossy(&body));
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some(OCI_MANIFEST),
            "headers: {headers:?}"
        );
        assert_eq!(
            headers.get("docker-content-digest"),
            Some(&digest),
            "headers: {headers:?}"
        );
        assert_eq!(format!("sha256:{}", sha256_hex(&body)), digest);
        let manifest: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(manifest["config"]["mediaType"], HELM_CONFIG, "{manifest}");
        assert_eq!(
            manifest["config"]["digest"],
            format!("sha256:{}", sha256_hex(&config_bytes)),
            "{manifest}"
        );
        assert_eq!(manifest["layers"][0]["mediaType"], HELM_CHART, "{manifest}");
        assert_eq!(manifest["layers"][0]["size"], chart_bytes.len(), "{manifest}");
        assert_eq!(
            manifest["layers"][0]["digest"],
            format!("sha256:{}", sha256_hex(&chart_bytes)),
            "{manifest}"
        );

        // Raw HTTP: the config blob and the chart blob.
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
        let (status, _, blob) = reg.http_get(&format!("/v2/demo/charts/mychart/blobs/{config_digest}"), None);
        assert_eq!(status, 200);
        assert_eq!(blob, config_bytes, "config blob differs");
        let chart_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
        let (status, _, blob) = reg.http_get(&format!("/v2/demo/charts/mychart/blobs/{chart_digest}"), None);
        assert_eq!(status, 200);
        assert_eq!(blob, chart_bytes, "chart blob differs");
    }

    let (status, _, body) = reg.http_get("/v2/demo/charts/mychart/tags/list", None);
    assert_eq!(status, 200);
    let tags: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(tags["name"], "demo/charts/mychart", "{tags}");
    assert_eq!(sorted_strings(&tags["tags"]), ["0.1.0", "0.2.0"], "{tags}");
}

/// The identity path through real clients: `docker login` with `<namespace>/<user>` and an auth
/// token (then push and pull through Docker's token flow), `skopeo --creds`, `ctr --user` (the
/// Kubernetes imagePullSecret path); wrong and revoked tokens fail; a public repository pulls
/// anonymously while a private one does not.
#[test]
fn authenticated_clients() {
    need("docker");
    need("dockerd");
    need("skopeo");
    need("ctr");
    const ADMIN: &str = "clients-admin-token-0123456789abcdef";
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start_secured(ADMIN);
    let host = reg.host();
    reg.admin(ADMIN, "POST", "tenancies", r#"{"namespace":"demo"}"#);
    reg.admin(ADMIN, "POST", "tenancies/demo/groups", r#"{"name":"devs"}"#);
    reg.admin(
        ADMIN,
        "PUT",
        "tenancies/demo/policies/devs",
        r#"{"statements":["allow group devs to manage repos in tenancy"]}"#,
    );
    reg.admin(ADMIN, "POST", "tenancies/demo/users", r#"{"name":"ann"}"#);
    reg.admin(ADMIN, "PUT", "tenancies/demo/groups/devs/members/ann", "{}");
    let created = reg.admin(
        ADMIN,
        "POST",
        "tenancies/demo/users/ann/tokens",
        r#"{"description":"laptop"}"#,
    );
    let token = created["token"].as_str().expect("token shown once").to_string();
    let token_id = created["id"].as_str().unwrap().to_string();
    let creds = format!("demo/ann:{token}");

    // skopeo with --creds pushes; with a wrong token it cannot.
    let layout = tmp.path().join("layout");
    let digest = umoci_image(tmp.path(), &layout, "v1", "amd64", 1 << 16, 7, COMMAND_LIMIT);
    let src = format!("oci:{}:v1", layout.display());
    let denied = exec(
        skopeo(tmp.path())
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", "demo/ann:wrong"])
            .arg(&src)
            .arg(format!("docker://{host}/demo/secure:v1")),
        COMMAND_LIMIT,
    );
    assert!(!denied.ok, "a wrong token must not push");
    reg.run(
        skopeo(tmp.path())
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds])
            .arg(&src)
            .arg(format!("docker://{host}/demo/secure:v1")),
    );
    let raw = reg.run(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
            .arg(format!("docker://{host}/demo/secure:v1")),
    );
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest);

    // docker login with <namespace>/<user> and the token; push and pull through the token flow.
    let docker = Docker::start(&tmp.path().join("docker"));
    let bad = exec(
        docker
            .cmd()
            .args(["login", &host, "-u", "demo/ann", "-p", "not-a-token"]),
        COMMAND_LIMIT,
    );
    assert!(!bad.ok, "docker login with a wrong token must fail");
    reg.run(docker.cmd().args(["login", &host, "-u", "demo/ann", "-p", &token]));
    let tar = busybox_rootfs_tar(tmp.path(), "imported through keelson\n", COMMAND_LIMIT);
    let image = format!("{host}/demo/web:v1");
    reg.run(docker.cmd().args(["import"]).arg(&tar).arg(&image));
    let id = reg
        .run(docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &image]))
        .trim()
        .to_string();
    reg.run(docker.cmd().args(["push", &image]));
    reg.run(docker.cmd().args(["rmi", &image]));
    reg.run(docker.cmd().args(["pull", &image]));
    assert_eq!(
        reg.run(docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &image]))
            .trim(),
        id
    );

    // ctr --user: the imagePullSecret path. Without credentials the private image is refused.
    let containerd = Containerd::start(&tmp.path().join("containerd"));
    let reference = format!("{host}/demo/secure:v1");
    let anonymous = exec(
        containerd
            .ctr()
            .args(["images", "pull", "--plain-http", "--snapshotter", "native", &reference]),
        COMMAND_LIMIT,
    );
    assert!(!anonymous.ok, "an anonymous pull of a private repository must fail");
    reg.run(containerd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        "--user",
        &creds,
        &reference,
    ]));

    // Public: anonymous pulls work.
    reg.admin(ADMIN, "PATCH", "repos/demo/web", r#"{"public":true}"#);
    reg.run(
        containerd
            .ctr()
            .args(["images", "pull", "--plain-http", "--snapshotter", "native", &image]),
    );

    // A revoked token stops working at once, for every client.
    reg.admin(
        ADMIN,
        "DELETE",
        &format!("tenancies/demo/users/ann/tokens/{token_id}"),
        "{}",
    );
    let revoked = exec(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
            .arg(format!("docker://{host}/demo/secure:v1")),
        COMMAND_LIMIT,
    );
    assert!(!revoked.ok, "a revoked token must not pull");
    let relogin = exec(
        docker.cmd().args(["login", &host, "-u", "demo/ann", "-p", &token]),
        COMMAND_LIMIT,
    );
    assert!(!relogin.ok, "docker login with a revoked token must fail");
}
