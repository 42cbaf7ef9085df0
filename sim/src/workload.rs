//! The clients: each pushes blobs (monolithic `POST …/blobs/uploads/?digest=`), pushes manifests
//! under tags, moves tags to other manifests, deletes tags and manifests and pulls, against a node
//! chosen at random for every request (as a load balancer would). Every answer is recorded: the
//! acknowledged pushes for the durability checks, and every tag operation, with its call and
//! return, for the linearizability check.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest as _, Sha256};

use crate::client::{self, HttpError, Reply};
use crate::cluster::api_addr;
use crate::history::{now_ms, AckedBlob, AckedManifest, Shared, TagKey};
use crate::linearizability::RegOp;

/// Media type of the manifests the clients push.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// How long a client waits for any one answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one client does.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Host name (`client<n>`).
    pub name: String,
    pub seed: u64,
    /// Host names to spread requests over: the nodes and the load balancer.
    pub nodes: Vec<String>,
    pub repos: Vec<String>,
    pub tags: Vec<String>,
    /// Operations to run (fewer if `stop_after_ms` passes first).
    pub ops: usize,
    /// Sim time after the cluster formed at which the client stops starting operations.
    pub stop_after_ms: u64,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How an answer counts.
enum Answer {
    /// The status the operation succeeds with.
    Done(Reply),
    /// 4xx: the operation definitely did not happen (with the answer to tell which).
    Refused(Reply),
    /// No answer, or a 5xx: it may or may not have happened.
    Unknown(String),
}

fn classify(result: Result<Reply, HttpError>, success: u16) -> Answer {
    match result {
        Ok(r) if r.status == success => Answer::Done(r),
        Ok(r) if (400..500).contains(&r.status) => Answer::Refused(r),
        Ok(r) => Answer::Unknown(format!("{}", r.status)),
        Err(e) => Answer::Unknown(e.label().to_string()),
    }
}

fn label(answer: &Answer) -> String {
    match answer {
        Answer::Done(r) | Answer::Refused(r) => format!("{} {}", r.status, error_code(r)),
        Answer::Unknown(why) => why.clone(),
    }
}

/// The path (and query) of a `Location` header, absolute or not.
fn path_of(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => rest
            .find('/')
            .map_or_else(|| "/".to_string(), |i| rest[i..].to_string()),
        None => location.to_string(),
    }
}

/// The OCI error code of an error answer ("" when none).
fn error_code(reply: &Reply) -> String {
    serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A client's memory of what it pushed and saw acknowledged.
struct Client {
    shared: Rc<Shared>,
    spec: WorkerSpec,
    rng: StdRng,
    /// Acknowledged blobs per repository: (digest, size).
    blobs: HashMap<String, Vec<(String, usize)>>,
    /// Acknowledged manifests per repository: (digest, body).
    manifests: HashMap<String, Vec<(String, Bytes)>>,
    counter: u64,
}

/// A client host's software.
pub async fn worker(shared: Rc<Shared>, spec: WorkerSpec) -> turmoil::Result {
    while shared.formed_at.get().is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stop_at = shared.formed_at.get().unwrap_or(0) + spec.stop_after_ms;
    let mut client = Client {
        rng: StdRng::seed_from_u64(spec.seed),
        shared: shared.clone(),
        spec,
        blobs: HashMap::new(),
        manifests: HashMap::new(),
        counter: 0,
    };
    for _ in 0..client.spec.ops {
        if now_ms() >= stop_at {
            break;
        }
        client.one_op().await;
        let pause = client.rng.gen_range(0..150);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    shared.workers_done.set(shared.workers_done.get() + 1);
    Ok(())
}

impl Client {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.gen_range(0..items.len())]
    }

    fn node(&mut self) -> String {
        let nodes = self.spec.nodes.clone();
        self.pick(&nodes).clone()
    }

    fn trace(&self, node: &str, what: String) {
        self.shared
            .trace(now_ms(), format!("{} {} {}", self.spec.name, node, what));
    }

    async fn one_op(&mut self) {
        let repos = self.spec.repos.clone();
        let tags = self.spec.tags.clone();
        let repo = self.pick(&repos).clone();
        let tag = self.pick(&tags).clone();
        let has_manifest = self.manifests.get(&repo).is_some_and(|m| !m.is_empty());
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=14 => {
                self.push_blob(&repo).await;
            }
            15..=39 => self.push_manifest(&repo, &tag).await,
            40..=54 if has_manifest => self.move_tag(&repo, &tag).await,
            55..=62 => self.delete_tag(&repo, &tag).await,
            63..=66 if has_manifest => self.delete_manifest(&repo).await,
            67..=89 => self.pull_tag(&repo, &tag).await,
            90..=95 => self.pull_blob(&repo).await,
            _ => self.abandon_upload(&repo).await,
        }
    }

    /// Pushes a fresh random blob; returns its digest and size when acknowledged.
    async fn push_blob(&mut self, repo: &str) -> Option<(String, usize)> {
        let len = self.rng.gen_range(1..4096);
        let mut data = vec![0u8; len];
        self.rng.fill_bytes(&mut data);
        let digest = digest_of(&data);
        let node = self.node();
        let pushed_at_ms = now_ms();
        let (what, answer) = if self.rng.gen_bool(0.4) {
            let pieces = self.rng.gen_range(2..=4);
            (
                "push-chunked",
                self.upload_chunked(&node, repo, &data, &digest, pieces).await,
            )
        } else {
            let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
            let result = client::request(
                &api_addr(&node),
                Method::POST,
                &path,
                &[("content-type", "application/octet-stream")],
                Bytes::from(data),
                REQUEST_TIMEOUT,
            )
            .await;
            ("push-blob", classify(result, 201))
        };
        self.trace(&node, format!("{what} {repo} {} -> {}", short(&digest), label(&answer)));
        self.shared.count(format!("op.{what}.{}", outcome(&answer)), 1);
        match answer {
            Answer::Done(_) => {
                self.shared.acked_blobs.borrow_mut().push(AckedBlob {
                    repo: repo.to_string(),
                    digest: digest.clone(),
                    pushed_at_ms,
                });
                self.blobs
                    .entry(repo.to_string())
                    .or_default()
                    .push((digest.clone(), len));
                Some((digest, len))
            }
            _ => None,
        }
    }

    /// Opens an upload, sends its first chunk and walks away (the session must expire).
    async fn abandon_upload(&mut self, repo: &str) {
        let node = self.node();
        let addr = api_addr(&node);
        let outcome = match start_upload(&addr, repo).await {
            Err(answer) => outcome(&answer),
            Ok(location) => {
                let chunk = Bytes::from(vec![7u8; 100]);
                let headers = [("content-type", "application/octet-stream"), ("content-range", "0-99")];
                let patched = client::request(&addr, Method::PATCH, &location, &headers, chunk, REQUEST_TIMEOUT).await;
                outcome(&classify(patched, 202))
            }
        };
        self.trace(&node, format!("abandon-upload {repo} {outcome}"));
    }

    /// A chunked upload through `entry` (a node, or the load balancer, which sends every request
    /// to the next node, so the session's owner is reached through the upload proxy): `POST`,
    /// `pieces` `PATCH`es with `Content-Range`, then `PUT ?digest=`. Answers the first step that
    /// did not succeed, or the final `PUT`.
    async fn upload_chunked(&mut self, entry: &str, repo: &str, data: &[u8], digest: &str, pieces: usize) -> Answer {
        let addr = api_addr(entry);
        let mut location = match start_upload(&addr, repo).await {
            Ok(location) => location,
            Err(answer) => return answer,
        };
        let step = data.len().div_ceil(pieces).max(1);
        for (i, piece) in data.chunks(step).enumerate() {
            let start = i * step;
            let range = format!("{start}-{}", start + piece.len() - 1);
            let patched = client::request(
                &addr,
                Method::PATCH,
                &location,
                &[("content-type", "application/octet-stream"), ("content-range", &range)],
                Bytes::copy_from_slice(piece),
                REQUEST_TIMEOUT,
            )
            .await;
            location = match classify(patched, 202) {
                Answer::Done(r) => match r.header("location") {
                    Some(l) => path_of(l),
                    None => return Answer::Unknown("patch-no-location".into()),
                },
                other => return other,
            };
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let finished = client::request(
            &addr,
            Method::PUT,
            &format!("{location}{sep}digest={digest}"),
            &[],
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await;
        classify(finished, 201)
    }

    /// A new manifest over two acknowledged blobs of `repo` (pushing them first if needed).
    async fn new_manifest(&mut self, repo: &str) -> Option<Bytes> {
        while self.blobs.get(repo).map_or(0, Vec::len) < 2 {
            self.push_blob(repo).await?;
        }
        let blobs = self.blobs.get(repo)?.clone();
        let config = self.pick(&blobs).clone();
        let layer = self.pick(&blobs).clone();
        self.counter += 1;
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.0,
                "size": config.1,
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer.0,
                "size": layer.1,
            }],
            "annotations": { "sim.push": format!("{}-{}", self.spec.name, self.counter) },
        });
        Some(Bytes::from(body.to_string()))
    }

    async fn push_manifest(&mut self, repo: &str, tag: &str) {
        if let Some(body) = self.new_manifest(repo).await {
            self.put_tag(repo, tag, body, "push-manifest").await;
        }
    }

    /// Points `tag` at a manifest pushed before (usually a different one).
    async fn move_tag(&mut self, repo: &str, tag: &str) {
        let Some(known) = self.manifests.get(repo).cloned() else {
            return;
        };
        let (_, body) = self.pick(&known).clone();
        self.put_tag(repo, tag, body, "move-tag").await;
    }

    /// When the push of the earliest pushed blob `manifest` names started (blobs this run pushed).
    fn oldest_push_ms(&self, manifest: &[u8]) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_slice(manifest).ok()?;
        let layers = v["layers"].as_array().cloned().unwrap_or_default();
        let named: Vec<String> = std::iter::once(&v["config"])
            .chain(layers.iter())
            .filter_map(|d| d["digest"].as_str().map(str::to_string))
            .collect();
        self.shared
            .acked_blobs
            .borrow()
            .iter()
            .filter(|b| named.contains(&b.digest))
            .map(|b| b.pushed_at_ms)
            .min()
    }

    async fn put_tag(&mut self, repo: &str, tag: &str, body: Bytes, what: &str) {
        let digest = digest_of(&body);
        let value = self.shared.intern(&digest);
        let key: TagKey = (repo.to_string(), tag.to_string());
        let node = self.node();
        let call = self.shared.tick();
        let call_ms = now_ms();
        let result = client::request(
            &api_addr(&node),
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("content-type", OCI_MANIFEST)],
            body.clone(),
            REQUEST_TIMEOUT,
        )
        .await;
        let ret = self.shared.tick();
        let answer = classify(result, 201);
        self.trace(
            &node,
            format!("{what} {repo}:{tag} {} -> {}", short(&digest), label(&answer)),
        );
        self.shared.count(format!("op.{what}.{}", outcome(&answer)), 1);
        match &answer {
            Answer::Done(reply) => {
                if reply.header("docker-content-digest") != Some(digest.as_str()) {
                    self.shared.fail(
                        "manifest_digest",
                        format!(
                            "PUT {repo}:{tag} answered digest {:?}, body is {digest}",
                            reply.header("docker-content-digest")
                        ),
                    );
                }
                self.shared.register_op(&key, RegOp::Write(value), call, Some(ret));
                self.shared.touches.borrow_mut().push(crate::retention::Touch {
                    repo: repo.to_string(),
                    tag: tag.to_string(),
                    digest: digest.clone(),
                    call_ms,
                    ack_ms: now_ms(),
                });
                self.shared.acked_manifests.borrow_mut().push(AckedManifest {
                    repo: repo.to_string(),
                    digest: digest.clone(),
                    body: body.clone(),
                });
                let list = self.manifests.entry(repo.to_string()).or_default();
                if !list.iter().any(|(d, _)| *d == digest) {
                    list.push((digest, body));
                }
            }
            Answer::Refused(reply) => {
                let code = error_code(reply);
                if code == "MANIFEST_BLOB_UNKNOWN" || code == "BLOB_UNKNOWN" {
                    // Only blobs whose push was acknowledged are referenced; GC may have
                    // collected one unreferenced long enough (see `crate::skew`), never a fresh one.
                    let oldest = self.oldest_push_ms(&body);
                    if oldest.is_some_and(|t| call_ms < t + crate::skew::never_collected_within_ms()) {
                        self.shared.fail(
                            "acked_blob_unknown",
                            format!(
                                "PUT {repo}:{tag} on {node}: {} {code} for blobs acknowledged less than {} ms before",
                                reply.status,
                                crate::skew::never_collected_within_ms()
                            ),
                        );
                    } else {
                        self.shared.count("op.push-manifest.blob-collected", 1);
                        // Push fresh blobs for the next manifests of this repository.
                        self.blobs.remove(repo);
                    }
                }
            }
            Answer::Unknown(_) => self.shared.register_op(&key, RegOp::Write(value), call, None),
        }
    }

    async fn delete_tag(&mut self, repo: &str, tag: &str) {
        let key: TagKey = (repo.to_string(), tag.to_string());
        let node = self.node();
        let call = self.shared.tick();
        let result = client::request(
            &api_addr(&node),
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[],
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await;
        let ret = self.shared.tick();
        let answer = classify(result, 202);
        self.trace(&node, format!("delete-tag {repo}:{tag} -> {}", label(&answer)));
        self.shared.count(format!("op.delete-tag.{}", outcome(&answer)), 1);
        match &answer {
            Answer::Done(_) => self.shared.register_op(&key, RegOp::DeleteTag, call, Some(ret)),
            Answer::Refused(r) if r.status == 404 => {
                self.shared.register_op(&key, RegOp::DeleteTagAbsent, call, Some(ret))
            }
            Answer::Refused(_) => {}
            Answer::Unknown(_) => self.shared.register_op(&key, RegOp::DeleteTagMaybe, call, None),
        }
    }

    async fn delete_manifest(&mut self, repo: &str) {
        let Some(known) = self.manifests.get(repo).cloned() else {
            return;
        };
        let (digest, _) = self.pick(&known).clone();
        if let Some(list) = self.manifests.get_mut(repo) {
            list.retain(|(d, _)| *d != digest);
        }
        self.shared
            .delete_attempted
            .borrow_mut()
            .insert((repo.to_string(), digest.clone()));
        let value = self.shared.intern(&digest);
        let node = self.node();
        let call = self.shared.tick();
        let result = client::request(
            &api_addr(&node),
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{digest}"),
            &[],
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await;
        let ret = self.shared.tick();
        let answer = classify(result, 202);
        self.trace(
            &node,
            format!("delete-manifest {repo}@{} -> {}", short(&digest), label(&answer)),
        );
        self.shared.count(format!("op.delete-manifest.{}", outcome(&answer)), 1);
        let (op, ret) = match &answer {
            Answer::Done(_) => (RegOp::DeleteManifest(value), Some(ret)),
            Answer::Refused(r) if r.status == 404 => (RegOp::DeleteManifestAbsent(value), Some(ret)),
            Answer::Refused(_) => return,
            Answer::Unknown(_) => (RegOp::DeleteManifest(value), None),
        };
        for tag in self.spec.tags.clone() {
            self.shared.register_op(&(repo.to_string(), tag), op, call, ret);
        }
    }

    async fn pull_tag(&mut self, repo: &str, tag: &str) {
        let key: TagKey = (repo.to_string(), tag.to_string());
        let node = self.node();
        *self.shared.pulls_sent.borrow_mut().entry(repo.to_string()).or_default() += 1;
        let call = self.shared.tick();
        let result = client::request(
            &api_addr(&node),
            Method::GET,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("accept", OCI_MANIFEST)],
            Bytes::new(),
            REQUEST_TIMEOUT,
        )
        .await;
        let ret = self.shared.tick();
        let answer = classify(result, 200);
        match &answer {
            Answer::Done(reply) => {
                let digest = digest_of(&reply.body);
                if reply.header("docker-content-digest") != Some(digest.as_str()) {
                    self.shared.fail(
                        "pulled_manifest_digest",
                        format!(
                            "GET {repo}:{tag} on {node}: header {:?}, body hashes to {digest}",
                            reply.header("docker-content-digest")
                        ),
                    );
                }
                let value = self.shared.intern(&digest);
                self.trace(&node, format!("pull-tag {repo}:{tag} -> 200 {}", short(&digest)));
                self.shared.register_op(&key, RegOp::Read(Some(value)), call, Some(ret));
            }
            Answer::Refused(r) if r.status == 404 => {
                self.trace(&node, format!("pull-tag {repo}:{tag} -> 404"));
                self.shared.register_op(&key, RegOp::Read(None), call, Some(ret));
            }
            other => self.trace(&node, format!("pull-tag {repo}:{tag} -> {}", label(other))),
        }
        self.shared.count(format!("op.pull-tag.{}", outcome(&answer)), 1);
    }

    /// Pulls a blob some client pushed and saw acknowledged; checks the bytes.
    async fn pull_blob(&mut self, repo: &str) {
        let acked: Vec<String> = self
            .shared
            .acked_blobs
            .borrow()
            .iter()
            .filter(|b| b.repo == repo)
            .map(|b| b.digest.clone())
            .collect();
        if acked.is_empty() {
            return;
        }
        let digest = self.pick(&acked).clone();
        let node = self.node();
        let result = client::get(&api_addr(&node), &format!("/v2/{repo}/blobs/{digest}"), REQUEST_TIMEOUT).await;
        let answer = classify(result, 200);
        self.trace(
            &node,
            format!("pull-blob {repo}@{} -> {}", short(&digest), label(&answer)),
        );
        self.shared.count(format!("op.pull-blob.{}", outcome(&answer)), 1);
        if let Answer::Done(reply) = &answer {
            let got = digest_of(&reply.body);
            if got != digest {
                self.shared.fail(
                    "pulled_blob_bytes",
                    format!("GET {repo}@{digest} on {node} returned bytes hashing to {got}"),
                );
            }
        }
    }
}

/// `POST /v2/<repo>/blobs/uploads/` on `addr`: the session's location, or the answer that was
/// not one.
async fn start_upload(addr: &str, repo: &str) -> Result<String, Answer> {
    let started = client::request(
        addr,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        Bytes::new(),
        REQUEST_TIMEOUT,
    )
    .await;
    match classify(started, 202) {
        Answer::Done(r) => r
            .header("location")
            .map(path_of)
            .ok_or_else(|| Answer::Unknown("post-no-location".into())),
        other => Err(other),
    }
}

fn outcome(answer: &Answer) -> String {
    match answer {
        Answer::Done(_) => "ok".into(),
        Answer::Refused(r) => format!("{}", r.status),
        Answer::Unknown(why) => why.clone(),
    }
}

/// The first 12 hex digits of a digest, for traces.
pub fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}
