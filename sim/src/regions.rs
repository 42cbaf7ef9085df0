//! A second region in the simulation: `fra`, a one-node cluster of its own across a WAN link
//! from the simulated cluster (`iad`, its home region). The admin links the two through the
//! management API, a replication rule copies `sim/app` (with deletes) from `iad` to `fra`, and
//! a writer attaches referrers (signatures) to `sim/app`'s images while the faults run — the
//! WAN is cut, slowed and healed and `fra` crashes (`faults.rs`), on top of the faults inside
//! `iad`. After healing, the check waits until `fra`'s `sim/app` equals `iad`'s: the same tags
//! with the same digests, the same referrers of every tagged image, and every blob a tagged
//! manifest in `fra` names readable there with its digest.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::client;
use crate::cluster::{self, api_addr, NodeSpec, LB_HOST};
use crate::history::{now_ms, Shared};
use crate::workload::digest_of;

/// The host of the second region's only node.
pub const FRA_HOST: &str = "fra1";
/// The repository the rule replicates (of the workload's repositories).
pub const REPLICATED_REPO: &str = "sim/app";
/// How long after healing `fra` has to equal `iad`.
const CONVERGE_WITHIN_MS: u64 = 180_000;
/// The annotation a scanner's inventory carries (`keelson_api::scanning::sbom::MADE_BY`).
const INVENTORY_ANNOTATION: &str = keelson_api::scanning::sbom::MADE_BY;
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// The second region's node (a cluster of one).
pub fn fra_spec(data_dir: std::path::PathBuf) -> NodeSpec {
    NodeSpec {
        id: 1,
        name: FRA_HOST.into(),
        fault_domain: "fra".into(),
        data_dir,
        clock_skew_ms: 0,
    }
}

async fn call(host_addr: &str, method: Method, path: &str, body: Value) -> Result<client::Reply, String> {
    client::request(
        host_addr,
        method,
        path,
        &[("content-type", "application/json")],
        Bytes::from(body.to_string()),
        Duration::from_secs(15),
    )
    .await
    .map_err(|e| e.label().to_string())
}

/// Sends one management call until it is answered with a 2xx (or the deadline passes).
async fn until_done(shared: &Shared, what: &str, host_addr: &str, method: Method, path: &str, body: Value) -> bool {
    let deadline = now_ms() + 120_000;
    while now_ms() < deadline {
        let answer = call(host_addr, method.clone(), path, body.clone()).await;
        shared.trace(
            now_ms(),
            format!("wan-admin {what} -> {}", cluster::answer_label(&answer)),
        );
        if matches!(&answer, Ok(r) if (200..300).contains(&r.status)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shared.fail("regions_linked", format!("{what} did not succeed"));
    false
}

/// Forms `fra` and links the regions; then the rule. Runs on the admin host after `iad` formed.
pub async fn link(shared: &Shared, fra: &NodeSpec) {
    if let Err(e) = cluster::form(shared, std::slice::from_ref(fra)).await {
        shared.fail("regions_linked", format!("fra did not form: {e}"));
        return;
    }
    let (iad, fra_addr) = (api_addr(LB_HOST), api_addr(&fra.name));
    let peer = |url: String| json!({ "url": url, "username": "keelson/admin", "token": "sim-link" });
    let steps = [
        (
            "iad names itself",
            &iad,
            Method::PUT,
            "/api/v1/regions/self",
            json!({"name": "iad"}),
        ),
        (
            "fra names itself",
            &fra_addr,
            Method::PUT,
            "/api/v1/regions/self",
            json!({"name": "fra", "home": "iad"}),
        ),
        (
            "iad knows fra",
            &iad,
            Method::PUT,
            "/api/v1/regions/peers/fra",
            peer(format!("http://{fra_addr}")),
        ),
        (
            "fra knows iad",
            &fra_addr,
            Method::PUT,
            "/api/v1/regions/peers/iad",
            peer(format!("http://{iad}")),
        ),
        (
            "rule sim/app to fra",
            &iad,
            Method::POST,
            "/api/v1/replication/rules",
            json!({"namespace": "sim", "repos": "app", "targets": ["fra"], "deletes": true}),
        ),
    ];
    for (what, host, method, path, body) in steps {
        if !until_done(shared, what, host, method, path, body).await {
            return;
        }
    }
    shared.count("wan.linked", 1);
}

/// Attaches a signature to whatever `sim/app:latest`-style tags name, a few times during the
/// faults (through the balancer; failures are fine, only acknowledged ones are expected).
pub async fn referrer_writer(shared: Rc<Shared>, tags: Vec<String>, stop_after_ms: u64) -> turmoil::Result {
    while shared.formed_at.get().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stop = shared.formed_at.get().unwrap_or(0) + stop_after_ms;
    let lb = api_addr(LB_HOST);
    let mut n = 0u64;
    while now_ms() < stop {
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        let tag = &tags[(n as usize) % tags.len()];
        n += 1;
        let Ok(head) = client::request(
            &lb,
            Method::HEAD,
            &format!("/v2/{REPLICATED_REPO}/manifests/{tag}"),
            &[("accept", ACCEPT)],
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        else {
            continue;
        };
        let Some(subject) = head.header("docker-content-digest").map(str::to_string) else {
            continue;
        };
        let signature = format!("signature {n} of {subject}").into_bytes();
        let mut ok = true;
        for blob in [b"{}".to_vec(), signature.clone()] {
            let digest = digest_of(&blob);
            let r = client::request(
                &lb,
                Method::POST,
                &format!("/v2/{REPLICATED_REPO}/blobs/uploads/?digest={digest}"),
                &[],
                Bytes::from(blob),
                Duration::from_secs(10),
            )
            .await;
            ok &= matches!(r, Ok(r) if r.status == 201);
        }
        if !ok {
            continue;
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"), "size": 2},
            "layers": [{"mediaType": "application/vnd.example.signature", "digest": digest_of(&signature), "size": signature.len()}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject, "size": 1},
        });
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let digest = digest_of(&bytes);
        let r = client::request(
            &lb,
            Method::PUT,
            &format!("/v2/{REPLICATED_REPO}/manifests/{digest}"),
            &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
            Bytes::from(bytes),
            Duration::from_secs(10),
        )
        .await;
        let label = match &r {
            Ok(r) => r.status.to_string(),
            Err(e) => e.label().to_string(),
        };
        shared.trace(
            now_ms(),
            format!("wan-writer referrer {digest} of {subject} -> {label}"),
        );
        if matches!(r, Ok(r) if r.status == 201) {
            shared.count("wan.referrers_pushed", 1);
        }
    }
    Ok(())
}

/// `sim/app` as `addr` serves it: tag → digest, and digest → its referrers' digests.
async fn snapshot(addr: &str) -> Result<(BTreeMap<String, String>, BTreeMap<String, BTreeSet<String>>), String> {
    let t = Duration::from_secs(10);
    let list = client::get(addr, &format!("/v2/{REPLICATED_REPO}/tags/list?n=1000"), t)
        .await
        .map_err(|e| e.label().to_string())?;
    let mut tags = BTreeMap::new();
    if list.status == 404 {
        return Ok((tags, BTreeMap::new()));
    }
    if list.status != 200 {
        return Err(format!("tags/list {}", list.status));
    }
    let body: Value = serde_json::from_slice(&list.body).map_err(|e| e.to_string())?;
    for tag in body["tags"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let r = client::request(
            addr,
            Method::HEAD,
            &format!("/v2/{REPLICATED_REPO}/manifests/{tag}"),
            &[("accept", ACCEPT)],
            Bytes::new(),
            t,
        )
        .await
        .map_err(|e| e.label().to_string())?;
        let digest = r
            .header("docker-content-digest")
            .ok_or(format!("{tag}: {}", r.status))?;
        tags.insert(tag.to_string(), digest.to_string());
    }
    let mut referrers = BTreeMap::new();
    for digest in tags.values().collect::<BTreeSet<_>>() {
        let r = client::get(addr, &format!("/v2/{REPLICATED_REPO}/referrers/{digest}"), t)
            .await
            .map_err(|e| e.label().to_string())?;
        let body: Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
        // Each region's scanner attaches its own inventory: those are not replicated.
        let set: BTreeSet<String> = body["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["annotations"].get(INVENTORY_ANNOTATION).is_none())
            .filter_map(|m| m["digest"].as_str().map(str::to_string))
            .collect();
        referrers.insert(digest.clone(), set);
    }
    Ok((tags, referrers))
}

/// After the main verification: `fra` converges to `iad`'s `sim/app`, and every blob a tagged
/// manifest there names is readable with its digest.
pub async fn verifier(shared: Rc<Shared>, nodes: Vec<NodeSpec>) -> turmoil::Result {
    while !shared.verified.get() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if shared.counters.borrow().get("wan.linked").is_none() {
        return Ok(()); // linking already failed the run
    }
    shared.trace(now_ms(), "verify: waiting for fra to equal iad");
    // A final member of iad, not the balancer: it also reaches nodes removed meanwhile, which
    // answer 503.
    let members = shared.final_members.borrow().clone().unwrap_or_default();
    let Some(member) = nodes.iter().find(|n| members.contains(&n.id)) else {
        shared.fail("replication_converges", "iad has no final member to compare with");
        return Ok(());
    };
    let (iad, fra) = (member.api(), api_addr(FRA_HOST));
    let deadline = now_ms() + CONVERGE_WITHIN_MS;
    let mut last = String::new();
    let converged = loop {
        match (snapshot(&iad).await, snapshot(&fra).await) {
            (Ok(source), Ok(target)) if source == target => break Some(source),
            (Ok(source), Ok(target)) => {
                last = format!("iad {source:?} / fra {target:?}");
            }
            (a, b) => last = format!("iad {:?} / fra {:?}", a.err(), b.err()),
        }
        if now_ms() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    };
    let Some((tags, referrers)) = converged else {
        shared.fail("replication_converges", format!("fra never equalled iad: {last}"));
        return Ok(());
    };
    shared.count("wan.tags_replicated", tags.len() as u64);
    shared.count(
        "wan.referrers_replicated",
        referrers.values().map(|r| r.len() as u64).sum(),
    );
    for (tag, digest) in &tags {
        if let Err(e) = blobs_readable(&fra, digest).await {
            shared.fail("replicated_blobs_present", format!("fra {REPLICATED_REPO}:{tag}: {e}"));
        }
    }
    shared.trace(now_ms(), format!("verify: fra equals iad ({} tags)", tags.len()));
    Ok(())
}

async fn blobs_readable(addr: &str, digest: &str) -> Result<(), String> {
    let t = Duration::from_secs(10);
    let r = client::request(
        addr,
        Method::GET,
        &format!("/v2/{REPLICATED_REPO}/manifests/{digest}"),
        &[("accept", ACCEPT)],
        Bytes::new(),
        t,
    )
    .await
    .map_err(|e| e.label().to_string())?;
    let manifest: Value = serde_json::from_slice(&r.body).map_err(|e| format!("manifest {digest}: {e}"))?;
    let blobs = manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(manifest.get("config"));
    for blob in blobs.filter_map(|b| b["digest"].as_str()) {
        let got = client::get(addr, &format!("/v2/{REPLICATED_REPO}/blobs/{blob}"), t)
            .await
            .map_err(|e| e.label().to_string())?;
        if got.status != 200 || digest_of(&got.body) != blob {
            return Err(format!("blob {blob}: status {}", got.status));
        }
    }
    Ok(())
}
