//! Shared helpers for the HTTP protocol tests: a node wrapper, a small HTTP client that keeps
//! whole responses for assertion messages, a raw HTTP/1.1 client for requests reqwest would
//! normalise or refuse to send, digest helpers, error-body checks and manifest builders.
//!
//! Everything here is written from the OCI Distribution Spec v1.1 and the Docker Registry HTTP
//! API V2 text, not from Keelson's implementation.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;
use reqwest::header::HeaderMap;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// sha256 of the empty string.
pub const EMPTY_DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Error codes a registry may put in `errors[].code`: the OCI table plus the Docker Registry
/// HTTP API V2 codes (the OCI spec lists TAG_INVALID / MANIFEST_UNVERIFIED as legacy codes).
pub const KNOWN_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
    // Docker Registry HTTP API V2 / legacy
    "TAG_INVALID",
    "MANIFEST_UNVERIFIED",
    "PAGINATION_NUMBER_INVALID",
    "RANGE_INVALID",
];

// ---------------------------------------------------------------------------------------------
// Node under test
// ---------------------------------------------------------------------------------------------

/// The registry under test: the real `keelson` binary (via `support::Keelson`), or — when
/// `PROTOCOL_REFERENCE_REGISTRY=/usr/bin/docker-registry` is set — the CNCF distribution
/// reference registry, to sanity-check the tests' expectations (it lacks referrers and the
/// two-segment name rule, so some tests are expected to fail against it).
pub struct Node {
    inner: Inner,
    // Dropped after `inner` (declaration order), so the process dies before its data goes.
    dir: tempfile::TempDir,
}

enum Inner {
    Keelson(support::Keelson),
    Reference(Reference),
}

struct Reference {
    bin: String,
    root: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Reference {
    fn spawn(&mut self) {
        let cfg = self.root.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: protocol-tests\n",
                self.root.join("store").display(),
                self.port
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("registry.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn reference registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let req = "GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut buf = String::new();
                    let _ = s.read_to_string(&mut buf);
                    if buf.starts_with("HTTP/1.1 200") {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "reference registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Node {
    pub fn start() -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = match std::env::var("PROTOCOL_REFERENCE_REGISTRY") {
            Ok(bin) if !bin.is_empty() => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                let mut r = Reference {
                    bin,
                    root: dir.path().to_path_buf(),
                    port,
                    child: None,
                };
                r.spawn();
                Inner::Reference(r)
            }
            _ => Inner::Keelson(support::Keelson::start(&dir.path().join("data"))),
        };
        Node { inner, dir }
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        match &self.inner {
            Inner::Keelson(k) => k.url(),
            Inner::Reference(r) => format!("http://127.0.0.1:{}", r.port),
        }
    }

    /// `host:port`.
    pub fn host(&self) -> String {
        self.url().trim_start_matches("http://").to_string()
    }

    /// A fresh client for the node's current address.
    pub fn reg(&self) -> Reg {
        Reg::new(self.url())
    }

    /// kill -9, then start again on the same data directory. Blocking.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// kill -9 (no graceful shutdown).
    pub fn kill(&mut self) {
        match &mut self.inner {
            Inner::Keelson(k) => k.kill(),
            Inner::Reference(r) => r.kill(),
        }
    }

    /// Starts the (killed) node again on the same data directory. Blocking.
    pub fn start_again(&mut self) {
        match &mut self.inner {
            Inner::Keelson(k) => {
                let data = k.data_dir.clone();
                *k = support::Keelson::start(&data);
            }
            Inner::Reference(r) => r.spawn(),
        }
    }

    /// The node's log (for failure messages).
    pub fn log(&self) -> String {
        match &self.inner {
            Inner::Keelson(k) => k.log(),
            Inner::Reference(r) => std::fs::read_to_string(r.root.join("registry.log")).unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// A whole HTTP response, kept for assertions.
pub struct Resp {
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn headers_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The header's value; panics (with the whole response) when missing.
    pub fn must_header(&self, name: &str) -> String {
        self.header(name)
            .unwrap_or_else(|| panic!("missing header `{name}` in response:\n{}", self.describe()))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}):\n{}", self.describe()))
    }

    pub fn describe(&self) -> String {
        let mut s = format!("{} -> {}\n", self.what, self.status);
        for (k, v) in self.headers.iter() {
            s.push_str(&format!("  {}: {}\n", k, String::from_utf8_lossy(v.as_bytes())));
        }
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(1500)]).into_owned();
        s.push_str(&format!("  body ({} bytes): {body}", self.body.len()));
        s
    }

    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status; response:\n{}", self.describe());
        self
    }

    pub fn expect_header(&self, name: &str, value: &str) -> &Self {
        assert_eq!(
            self.header(name).as_deref(),
            Some(value),
            "header `{name}`; response:\n{}",
            self.describe()
        );
        self
    }

    /// `Content-Length` from the header (not from the body: HEAD has none).
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad Content-Length in\n{}", self.describe()))
        })
    }
}

/// Client bound to one node address.
#[derive(Clone)]
pub struct Reg {
    pub base: String,
    pub http: reqwest::Client,
}

impl Reg {
    pub fn new(base: String) -> Reg {
        let http = reqwest::Client::builder()
            // The spec allows a redirect on any request; documented statuses are those after
            // following it.
            .redirect(reqwest::redirect::Policy::limited(5))
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Reg { base, http }
    }

    /// Turns a path (`/v2/...`), a relative Location or an absolute Location into a URL for this
    /// node. Absolute Locations are re-based onto the node's current address (it may have moved
    /// ports across a restart).
    pub fn abs(&self, p: &str) -> String {
        if let Some(rest) = p.strip_prefix("http://").or_else(|| p.strip_prefix("https://")) {
            let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
            format!("{}{}", self.base, path)
        } else if p.starts_with('/') {
            format!("{}{}", self.base, p)
        } else {
            format!("{}/{}", self.base, p)
        }
    }

    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Resp, String> {
        let url = self.abs(path);
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, &url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let what = format!("{method} {url}");
        let r = rb.send().await.map_err(|e| format!("{what}: {e:?}"))?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r
            .bytes()
            .await
            .map_err(|e| format!("{what}: reading body: {e:?}"))?
            .to_vec();
        Ok(Resp {
            what,
            status,
            headers,
            body,
        })
    }

    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Resp {
        self.try_send(method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, &[], None).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        self.send("HEAD", path, &[], None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send("DELETE", path, &[], None).await
    }

    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Resp {
        self.send(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", ACCEPT_ALL)],
            None,
        )
        .await
    }

    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Resp {
        self.send(
            "HEAD",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", ACCEPT_ALL)],
            None,
        )
        .await
    }

    // ----- uploads -------------------------------------------------------------------------

    /// `POST /v2/<repo>/blobs/uploads/` with `Content-Length: 0`; asserts 202 + Location +
    /// Docker-Upload-UUID.
    pub async fn start_upload(&self, repo: &str) -> Upload {
        let r = self
            .send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], Some(Vec::new()))
            .await;
        r.expect(202);
        let location = r.must_header("location");
        let uuid = r.must_header("docker-upload-uuid");
        assert!(!uuid.is_empty(), "empty Docker-Upload-UUID:\n{}", r.describe());
        Upload { location, uuid }
    }

    /// `PATCH <location>` with an optional `Content-Range: a-b`.
    pub async fn patch(&self, location: &str, range: Option<(u64, u64)>, data: &[u8]) -> Resp {
        let cr;
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/octet-stream")];
        if let Some((a, b)) = range {
            cr = format!("{a}-{b}");
            h.push(("Content-Range", &cr));
        }
        self.send("PATCH", location, &h, Some(data.to_vec())).await
    }

    /// `PATCH` the chunk that starts at `start`; Content-Range derived from the data length.
    pub async fn patch_at(&self, location: &str, start: u64, data: &[u8]) -> Resp {
        assert!(!data.is_empty());
        self.patch(location, Some((start, start + data.len() as u64 - 1)), data)
            .await
    }

    /// `PUT <location>?digest=<digest>` with an optional final chunk (and optional
    /// Content-Range for it).
    pub async fn put_upload(
        &self,
        location: &str,
        digest: &str,
        data: Option<&[u8]>,
        range: Option<(u64, u64)>,
    ) -> Resp {
        let url = with_query(location, &format!("digest={digest}"));
        let cr;
        let mut h: Vec<(&str, &str)> = vec![];
        if data.is_some() {
            h.push(("Content-Type", "application/octet-stream"));
        }
        if let Some((a, b)) = range {
            cr = format!("{a}-{b}");
            h.push(("Content-Range", &cr));
        }
        self.send("PUT", &url, &h, Some(data.map(|d| d.to_vec()).unwrap_or_default()))
            .await
    }

    /// Pushes a blob by POST then PUT; asserts 201 and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let up = self.start_upload(repo).await;
        let r = self.put_upload(&up.location, &digest, Some(data), None).await;
        r.expect(201);
        r.must_header("location");
        r.expect_header("docker-content-digest", &digest);
        digest
    }

    /// Pushes a blob and returns its descriptor.
    pub async fn push_desc(&self, repo: &str, media_type: &str, data: &[u8]) -> Desc {
        self.push_blob(repo, data).await;
        desc(media_type, data)
    }

    // ----- manifests -----------------------------------------------------------------------

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Resp {
        self.send(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            Some(body.to_vec()),
        )
        .await
    }

    /// PUT a manifest; asserts 201, Location and Docker-Content-Digest = sha256(body).
    pub async fn put_manifest_ok(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let r = self.put_manifest(repo, reference, media_type, body).await;
        r.expect(201);
        r.must_header("location");
        let digest = sha256(body);
        r.expect_header("docker-content-digest", &digest);
        digest
    }

    /// Pushes a small OCI image (config + one layer) and tags it; returns (manifest digest,
    /// manifest bytes).
    pub async fn push_image(&self, repo: &str, tag: &str) -> (String, Vec<u8>) {
        let config = self.push_desc(repo, OCI_CONFIG, &config_bytes()).await;
        let layer = self.push_desc(repo, OCI_LAYER, &random_bytes(512)).await;
        let body = oci_manifest(&config, &[layer], json!({}));
        let d = self.put_manifest_ok(repo, tag, OCI_MANIFEST, &body).await;
        (d, body)
    }

    /// Fetches a blob; asserts 200, Docker-Content-Digest and byte identity.
    pub async fn assert_blob(&self, repo: &str, data: &[u8]) {
        let digest = sha256(data);
        let r = self.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        r.expect(200);
        r.expect_header("docker-content-digest", &digest);
        assert!(
            r.body == data,
            "blob body differs ({} vs {} bytes) for\n{}",
            r.body.len(),
            data.len(),
            r.describe()
        );
    }

    /// Fetches a manifest; asserts 200, Content-Type, Docker-Content-Digest, Content-Length
    /// and byte identity.
    pub async fn assert_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let digest = sha256(body);
        let r = self.get_manifest(repo, reference).await;
        r.expect(200);
        assert_eq!(
            content_type(&r).as_deref(),
            Some(media_type),
            "Content-Type:\n{}",
            r.describe()
        );
        r.expect_header("docker-content-digest", &digest);
        assert!(r.body == body, "manifest body not byte-identical:\n{}", r.describe());
        if let Some(cl) = r.content_length() {
            assert_eq!(cl, body.len() as u64, "Content-Length:\n{}", r.describe());
        }
    }

    /// GET tags list, asserting 200; returns (tags, Link header).
    pub async fn tags(&self, repo: &str, query: &str) -> (Vec<String>, Option<String>) {
        let r = self.get(&format!("/v2/{repo}/tags/list{query}")).await;
        r.expect(200);
        let v = r.json();
        assert_eq!(v["name"], json!(repo), "tags list name:\n{}", r.describe());
        (string_list(&v["tags"], &r), r.header("link"))
    }
}

/// An upload session.
pub struct Upload {
    pub location: String,
    pub uuid: String,
}

/// `Content-Type` without parameters.
pub fn content_type(r: &Resp) -> Option<String> {
    r.header("content-type")
        .map(|v| v.split(';').next().unwrap().trim().to_string())
}

/// A JSON array of strings (an empty list for `[]`); panics on anything else (incl. null).
pub fn string_list(v: &Value, r: &Resp) -> Vec<String> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .unwrap_or_else(|| panic!("non-string in list:\n{}", r.describe()))
                    .to_string()
            })
            .collect(),
        _ => panic!("expected a JSON array, got {v}:\n{}", r.describe()),
    }
}

/// Appends a query parameter to a URL that may already have a query.
pub fn with_query(url: &str, kv: &str) -> String {
    if url.contains('?') {
        format!("{url}&{kv}")
    } else {
        format!("{url}?{kv}")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = String::from_utf8_lossy(&b[i + 1..i + 3]).into_owned();
            if let Ok(v) = u8::from_str_radix(&h, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses an RFC 5988 `Link: <url>; rel="next"` header: returns the URL (asserting rel=next).
pub fn link_next(link: &str) -> String {
    let start = link.find('<').unwrap_or_else(|| panic!("Link without <url>: {link}"));
    let end = link.find('>').unwrap_or_else(|| panic!("Link without <url>: {link}"));
    let params = &link[end + 1..];
    assert!(
        params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        }),
        "Link header without rel=\"next\": {link}"
    );
    link[start + 1..end].to_string()
}

/// Splits `path?query` into the path and decoded query pairs.
pub fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let url = if let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) {
        rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
    } else {
        url
    };
    let (path, q) = url.split_once('?').unwrap_or((url, ""));
    let pairs = q
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect();
    (path.to_string(), pairs)
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Checks a `{"errors":[{"code":..,"message":..}]}` body; returns the codes, or why it is not one.
pub fn error_codes(body: &[u8]) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("error body is not JSON: {e}"))?;
    let errs = v
        .get("errors")
        .and_then(|e| e.as_array())
        .ok_or_else(|| "error body has no `errors` array".to_string())?;
    if errs.is_empty() {
        return Err("`errors` is empty".into());
    }
    let mut codes = vec![];
    for e in errs {
        let code = e
            .get("code")
            .and_then(|c| c.as_str())
            .ok_or_else(|| format!("error without string `code`: {e}"))?;
        if code.is_empty() || !code.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            return Err(format!("code `{code}` is not uppercase letters and underscores"));
        }
        if !KNOWN_CODES.contains(&code) {
            return Err(format!("code `{code}` is not an OCI/Docker registry error code"));
        }
        match e.get("message") {
            Some(Value::String(_)) => {}
            other => return Err(format!("error `{code}` has no string `message` (got {other:?})")),
        }
        codes.push(code.to_string());
    }
    Ok(codes)
}

/// Asserts the status and that the JSON error body carries `code`.
pub fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_error_in(r, &[status], &[code]);
}

/// Asserts the status is one of `statuses` and the JSON error body carries one of `codes`
/// (any known code when `codes` is empty).
pub fn assert_error_in(r: &Resp, statuses: &[u16], codes: &[&str]) {
    assert!(
        statuses.contains(&r.status),
        "expected status {statuses:?} with error {codes:?}; response:\n{}",
        r.describe()
    );
    match error_codes(&r.body) {
        Ok(got) => assert!(
            codes.is_empty() || got.iter().any(|c| codes.contains(&c.as_str())),
            "expected error code {codes:?}, got {got:?}; response:\n{}",
            r.describe()
        ),
        Err(e) => panic!("{e}; expected error code {codes:?}; response:\n{}", r.describe()),
    }
}

// ---------------------------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------------------------

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// A random hex string (for unique names / fake ids).
pub fn random_hex(n_bytes: usize) -> String {
    hex::encode(random_bytes(n_bytes))
}

/// A digest of valid syntax for content nobody pushed.
pub fn unknown_digest() -> String {
    sha256(&random_bytes(32))
}

/// A small, unique image config.
pub fn config_bytes() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Labels": {"nonce": random_hex(8)}}
    }))
    .unwrap()
}

/// An OCI descriptor.
#[derive(Clone, Debug)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Desc {
    pub fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

pub fn desc(media_type: &str, data: &[u8]) -> Desc {
    Desc {
        media_type: media_type.into(),
        digest: sha256(data),
        size: data.len() as u64,
    }
}

fn merge(mut base: Map<String, Value>, extra: Value) -> Value {
    if let Value::Object(m) = extra {
        for (k, v) in m {
            base.insert(k, v);
        }
    }
    Value::Object(base)
}

/// An OCI image manifest (pretty-printed, so byte identity is meaningful); `extra` fields
/// (artifactType, subject, annotations, …) are merged in.
pub fn oci_manifest(config: &Desc, layers: &[Desc], extra: Value) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("schemaVersion".into(), json!(2));
    m.insert("mediaType".into(), json!(OCI_MANIFEST));
    m.insert("config".into(), config.json());
    m.insert("layers".into(), Value::Array(layers.iter().map(|l| l.json()).collect()));
    serde_json::to_vec_pretty(&merge(m, extra)).unwrap()
}

/// A Docker image manifest v2 schema 2.
pub fn docker_manifest(config: &Desc, layers: &[Desc]) -> Vec<u8> {
    let v = json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.json(),
        "layers": layers.iter().map(|l| l.json()).collect::<Vec<_>>(),
    });
    // Docker's own formatting: 3-space indent.
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(&v, &mut ser).unwrap();
    out
}

/// An image index / manifest list of `media_type` over (descriptor, platform).
pub fn index(media_type: &str, manifests: &[(Desc, Value)], extra: Value) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("schemaVersion".into(), json!(2));
    m.insert("mediaType".into(), json!(media_type));
    m.insert(
        "manifests".into(),
        Value::Array(
            manifests
                .iter()
                .map(|(d, p)| {
                    let mut j = d.json();
                    if !p.is_null() {
                        j["platform"] = p.clone();
                    }
                    j
                })
                .collect(),
        ),
    );
    serde_json::to_vec_pretty(&merge(m, extra)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 (for requests reqwest would normalise or refuse)
// ---------------------------------------------------------------------------------------------

pub struct RawResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn describe(&self) -> String {
        let mut s = format!("{}\n", self.status);
        for (k, v) in &self.headers {
            s.push_str(&format!("  {k}: {v}\n"));
        }
        s.push_str(&format!(
            "  body ({} bytes): {}",
            self.body.len(),
            String::from_utf8_lossy(&self.body[..self.body.len().min(800)])
        ));
        s
    }
}

/// Builds a request head with `Host` and `Connection: close`.
pub fn raw_request(host: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut s = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding") {
            has_len = true;
        }
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        s.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Sends `parts` (written one after another, `gap` apart) and reads one response.
pub async fn raw_http(host: &str, parts: Vec<Vec<u8>>, gap: Duration, head_request: bool) -> Result<RawResp, String> {
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 && !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        if s.write_all(p).await.is_err() {
            break; // the server may answer early and close; read what it said
        }
    }
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(r) = parse_raw(&buf, head_request, false)? {
            return Ok(r);
        }
        let mut tmp = vec![0u8; 65536];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, s.read(&mut tmp)).await {
            Err(_) => return Err(format!("timed out; got {} bytes", buf.len())),
            Ok(Err(e)) => {
                if buf.is_empty() {
                    return Err(format!("read: {e}"));
                }
                0
            }
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return parse_raw(&buf, head_request, true)?.ok_or_else(|| {
                format!(
                    "connection closed after {} bytes: {:?}",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                )
            });
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// One request, written at once. A redirect answering a GET is followed (up to 3 hops) with
/// a plain GET of the Location's path, since the spec's statuses are those after redirects.
pub async fn raw_once(host: &str, req: Vec<u8>) -> Result<RawResp, String> {
    let is_get = req.starts_with(b"GET ");
    let mut r = raw_http(host, vec![req], Duration::ZERO, false).await?;
    for _ in 0..3 {
        if !(is_get && (300..400).contains(&r.status)) {
            break;
        }
        let Some(loc) = r.header("location") else {
            break;
        };
        let (path, _) = split_url(&loc);
        let query = loc.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
        let target = if path.starts_with('/') {
            format!("{path}{query}")
        } else {
            format!("/{path}{query}")
        };
        r = raw_http(
            host,
            vec![raw_request(host, "GET", &target, &[], b"")],
            Duration::ZERO,
            false,
        )
        .await?;
    }
    Ok(r)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_raw(buf: &[u8], head_request: bool, eof: bool) -> Result<Option<RawResp>, String> {
    let mut buf = buf;
    loop {
        let Some(hend) = find(buf, b"\r\n\r\n") else {
            return if eof && !buf.is_empty() {
                Err(format!("truncated head: {:?}", String::from_utf8_lossy(buf)))
            } else {
                Ok(None)
            };
        };
        let head = String::from_utf8_lossy(&buf[..hend]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let rest = &buf[hend + 4..];
        if (100..200).contains(&status) {
            buf = rest;
            continue;
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        if head_request || status == 204 || status == 304 {
            return Ok(Some(RawResp {
                status,
                headers,
                body: vec![],
            }));
        }
        if get("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false)
        {
            let mut body = Vec::new();
            let mut p = rest;
            loop {
                let Some(le) = find(p, b"\r\n") else {
                    return Ok(None);
                };
                let size_s = String::from_utf8_lossy(&p[..le]).into_owned();
                let size = usize::from_str_radix(size_s.split(';').next().unwrap().trim(), 16)
                    .map_err(|_| format!("bad chunk size {size_s:?}"))?;
                if size == 0 {
                    return Ok(Some(RawResp { status, headers, body }));
                }
                if p.len() < le + 2 + size + 2 {
                    return if eof {
                        Err("truncated chunked body".into())
                    } else {
                        Ok(None)
                    };
                }
                body.extend_from_slice(&p[le + 2..le + 2 + size]);
                p = &p[le + 2 + size + 2..];
            }
        }
        if let Some(cl) = get("content-length") {
            let cl: usize = cl.parse().map_err(|_| format!("bad content-length {cl}"))?;
            if rest.len() >= cl {
                return Ok(Some(RawResp {
                    status,
                    headers,
                    body: rest[..cl].to_vec(),
                }));
            }
            return if eof { Err("truncated body".into()) } else { Ok(None) };
        }
        return if eof {
            Ok(Some(RawResp {
                status,
                headers,
                body: rest.to_vec(),
            }))
        } else {
            Ok(None)
        };
    }
}

/// Encodes `data` as one HTTP/1.1 chunk.
pub fn http_chunk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// `Range: 0-<end>` as the spec defines it for `n` bytes received (n > 0).
pub fn upload_range(n: u64) -> String {
    format!("0-{}", n - 1)
}
