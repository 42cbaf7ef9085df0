//! Durability across kill -9: everything acknowledged survives, including under concurrent load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;

use crate::common::*;

/// Pushes a mix of content, kills the node with SIGKILL, restarts it (twice) and checks that
/// every acknowledged write — and every acknowledged delete — is still in effect.
#[tokio::test]
async fn acknowledged_writes_survive_kill9() {
    let mut node = Node::start();
    let reg = node.reg();

    // Blobs by every upload flavour.
    let mono = random_bytes(200_000);
    reg.push_blob("acme/app", &mono).await;
    let single = random_bytes(50_000);
    reg.send(
        "POST",
        &format!("/v2/acme/app/blobs/uploads/?digest={}", sha256(&single)),
        &[],
        Some(single.clone()),
    )
    .await
    .expect(201);
    let chunked = random_bytes(300_000);
    let up = reg.start_upload("acme/app").await;
    let r = reg.patch_at(&up.location, 0, &chunked[..100_000]).await;
    r.expect(202);
    let r = reg
        .patch_at(&r.must_header("location"), 100_000, &chunked[100_000..])
        .await;
    r.expect(202);
    reg.put_upload(&r.must_header("location"), &sha256(&chunked), None, None)
        .await
        .expect(201);
    reg.put_upload(&reg.start_upload("acme/app").await.location, EMPTY_DIGEST, None, None)
        .await
        .expect(201);

    // Manifests: OCI image, Docker image, index, referrer.
    let config = reg.push_desc("acme/app", OCI_CONFIG, &config_bytes()).await;
    let layers = vec![
        desc(OCI_LAYER, &mono),
        desc(OCI_LAYER, &chunked),
        desc(OCI_LAYER, &single),
    ];
    let image = oci_manifest(&config, &layers, json!({}));
    let image_d = reg.put_manifest_ok("acme/app", "v1", OCI_MANIFEST, &image).await;
    reg.put_manifest_ok("acme/app", "latest", OCI_MANIFEST, &image).await;
    let dcfg = reg.push_desc("acme/app", DOCKER_CONFIG, &config_bytes()).await;
    let docker = docker_manifest(&dcfg, &[desc(DOCKER_LAYER, &mono)]);
    reg.put_manifest_ok("acme/app", "docker", DOCKER_MANIFEST, &docker)
        .await;
    let idx = index(
        OCI_INDEX,
        &[(
            desc(OCI_MANIFEST, &image),
            json!({"architecture": "amd64", "os": "linux"}),
        )],
        json!({}),
    );
    reg.put_manifest_ok("acme/app", "multi", OCI_INDEX, &idx).await;
    let empty = reg.push_desc("acme/app", OCI_EMPTY, b"{}").await;
    let art = oci_manifest(
        &empty,
        std::slice::from_ref(&empty),
        json!({"artifactType": "application/vnd.example.sbom.v1", "subject": desc(OCI_MANIFEST, &image).json()}),
    );
    let art_d = reg.put_manifest_ok("acme/app", &sha256(&art), OCI_MANIFEST, &art).await;

    // A mount into a second repository and a manifest there.
    reg.send(
        "POST",
        &format!("/v2/acme/mirror/blobs/uploads/?mount={}&from=acme/app", sha256(&mono)),
        &[],
        Some(vec![]),
    )
    .await
    .expect(201);
    let (other_d, other) = reg.push_image("beta/other", "v9").await;

    // Acknowledged deletes.
    let gone_blob = random_bytes(1234);
    reg.push_blob("acme/app", &gone_blob).await;
    reg.delete(&format!("/v2/acme/app/blobs/{}", sha256(&gone_blob)))
        .await
        .expect(202);
    reg.put_manifest_ok("acme/app", "doomed", OCI_MANIFEST, &image).await;
    reg.delete("/v2/acme/app/manifests/doomed").await.expect(202);
    let (gone_m, _) = reg.push_image("acme/app", "gone").await;
    reg.delete(&format!("/v2/acme/app/manifests/{gone_m}"))
        .await
        .expect(202);

    for round in 0..2 {
        node.restart();
        let reg = node.reg();
        let ctx = format!("after restart #{}", round + 1);
        for b in [&mono, &single, &chunked, &b"".to_vec(), &b"{}".to_vec()] {
            reg.assert_blob("acme/app", b).await;
        }
        reg.assert_blob("acme/mirror", &mono).await;
        for t in ["v1", "latest", image_d.as_str()] {
            reg.assert_manifest("acme/app", t, OCI_MANIFEST, &image).await;
        }
        reg.assert_manifest("acme/app", "docker", DOCKER_MANIFEST, &docker)
            .await;
        reg.assert_manifest("acme/app", "multi", OCI_INDEX, &idx).await;
        reg.assert_manifest("acme/app", &art_d, OCI_MANIFEST, &art).await;
        reg.assert_manifest("beta/other", "v9", OCI_MANIFEST, &other).await;
        reg.assert_manifest("beta/other", &other_d, OCI_MANIFEST, &other).await;

        let (tags, _) = reg.tags("acme/app", "").await;
        assert_eq!(tags, vec!["docker", "latest", "multi", "v1"], "{ctx}");
        let r = reg.get(&format!("/v2/acme/app/referrers/{image_d}")).await;
        r.expect(200);
        let v = r.json();
        let m = v["manifests"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: {}", r.describe()));
        assert!(
            m.iter().any(|d| d["digest"] == json!(art_d)),
            "{ctx}: referrer lost:\n{}",
            r.describe()
        );
        let r = reg.get("/v2/_catalog").await;
        r.expect(200);
        let repos = string_list(&r.json()["repositories"], &r);
        for want in ["acme/app", "beta/other"] {
            assert!(
                repos.iter().any(|x| x == want),
                "{ctx}: {want} missing from catalog {repos:?}"
            );
        }

        assert_error(
            &reg.get(&format!("/v2/acme/app/blobs/{}", sha256(&gone_blob))).await,
            404,
            "BLOB_UNKNOWN",
        );
        assert_error(&reg.get_manifest("acme/app", "doomed").await, 404, "MANIFEST_UNKNOWN");
        assert_error(&reg.get_manifest("acme/app", "gone").await, 404, "MANIFEST_UNKNOWN");
        assert_error(&reg.get_manifest("acme/app", &gone_m).await, 404, "MANIFEST_UNKNOWN");
    }
}

/// One acknowledged push (blob or tagged manifest).
#[derive(Clone)]
enum Acked {
    Blob {
        repo: String,
        data: Arc<Vec<u8>>,
    },
    Manifest {
        repo: String,
        tag: String,
        body: Arc<Vec<u8>>,
    },
}

/// A manifest PUT that was sent but not acknowledged when the node died.
#[derive(Clone)]
struct InFlight {
    repo: String,
    tag: String,
    body: Arc<Vec<u8>>,
}

struct Shared {
    acked: Mutex<Vec<Acked>>,
    manifests_acked: AtomicUsize,
    in_flight: Mutex<HashMap<usize, InFlight>>,
    protocol_errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// Pushes one blob by a randomly chosen flavour; Ok(true) on 201, Ok(false) on a protocol
/// error (recorded), Err on a transport error (node gone).
async fn push_blob_any(reg: &Reg, repo: &str, data: &[u8], flavour: u32, shared: &Shared) -> Result<bool, String> {
    let d = sha256(data);
    let fail = |what: &str, r: &Resp| {
        if !shared.stop.load(Ordering::SeqCst) {
            shared
                .protocol_errors
                .lock()
                .unwrap()
                .push(format!("{what}:\n{}", r.describe()));
        }
        Ok(false)
    };
    match flavour % 3 {
        0 => {
            let r = reg
                .try_send(
                    "POST",
                    &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                    &[],
                    Some(data.to_vec()),
                )
                .await?;
            if r.status != 201 {
                return fail("single POST", &r);
            }
        }
        1 => {
            let r = reg
                .try_send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], Some(vec![]))
                .await?;
            if r.status != 202 {
                return fail("POST", &r);
            }
            let loc = r.header("location").unwrap_or_default();
            let r = reg
                .try_send(
                    "PUT",
                    &with_query(&loc, &format!("digest={d}")),
                    &[],
                    Some(data.to_vec()),
                )
                .await?;
            if r.status != 201 {
                return fail("PUT", &r);
            }
        }
        _ => {
            let r = reg
                .try_send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], Some(vec![]))
                .await?;
            if r.status != 202 {
                return fail("POST", &r);
            }
            let mut loc = r.header("location").unwrap_or_default();
            let mut off = 0usize;
            for chunk in data.chunks(8192) {
                let cr = format!("{}-{}", off, off + chunk.len() - 1);
                let r = reg
                    .try_send("PATCH", &loc, &[("Content-Range", &cr)], Some(chunk.to_vec()))
                    .await?;
                if r.status != 202 {
                    return fail("PATCH", &r);
                }
                loc = r.header("location").unwrap_or(loc);
                off += chunk.len();
            }
            let r = reg
                .try_send("PUT", &with_query(&loc, &format!("digest={d}")), &[], Some(vec![]))
                .await?;
            if r.status != 201 {
                return fail("closing PUT", &r);
            }
        }
    }
    Ok(true)
}

/// One writer: loops pushing config + layers + a uniquely tagged manifest until the node dies.
async fn writer(reg: Reg, worker: usize, round: usize, shared: Arc<Shared>) {
    let mut rng = rand::rngs::StdRng::from_entropy();
    let repo = format!("acme/crash{}", worker % 3);
    for i in 0.. {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let mut blobs = vec![];
        let cfg =
            serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "nonce": rng.gen::<u64>()})).unwrap();
        blobs.push((OCI_CONFIG, cfg));
        for _ in 0..rng.gen_range(1..=3) {
            let n = match rng.gen_range(0..10) {
                0 => 0,
                1..=6 => rng.gen_range(1..4096),
                _ => rng.gen_range(4096..200_000),
            };
            let mut b = vec![0u8; n];
            rng.fill_bytes(&mut b);
            blobs.push((OCI_LAYER, b));
        }
        for (_, b) in &blobs {
            let flavour = rng.gen::<u32>();
            match push_blob_any(&reg, &repo, b, flavour, &shared).await {
                Ok(true) => shared.acked.lock().unwrap().push(Acked::Blob {
                    repo: repo.clone(),
                    data: Arc::new(b.clone()),
                }),
                Ok(false) | Err(_) => return,
            }
        }
        let descs: Vec<Desc> = blobs.iter().map(|(t, b)| desc(t, b)).collect();
        let body = Arc::new(oci_manifest(&descs[0], &descs[1..], json!({})));
        let tag = format!("r{round}-w{worker}-{i}");
        shared.in_flight.lock().unwrap().insert(
            worker,
            InFlight {
                repo: repo.clone(),
                tag: tag.clone(),
                body: body.clone(),
            },
        );
        let r = reg
            .try_send(
                "PUT",
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("Content-Type", OCI_MANIFEST)],
                Some(body.to_vec()),
            )
            .await;
        match r {
            Ok(r) if r.status == 201 => {
                if r.header("docker-content-digest").as_deref() != Some(sha256(&body).as_str()) {
                    shared
                        .protocol_errors
                        .lock()
                        .unwrap()
                        .push(format!("manifest PUT digest:\n{}", r.describe()));
                }
                shared.acked.lock().unwrap().push(Acked::Manifest {
                    repo: repo.clone(),
                    tag,
                    body,
                });
                shared.in_flight.lock().unwrap().remove(&worker);
                shared.manifests_acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                if !shared.stop.load(Ordering::SeqCst) {
                    shared
                        .protocol_errors
                        .lock()
                        .unwrap()
                        .push(format!("manifest PUT:\n{}", r.describe()));
                }
                return;
            }
            Err(_) => return,
        }
    }
}

/// Verifies everything acknowledged so far; returns failures.
async fn verify(reg: &Reg, acked: &[Acked], in_flight: &[InFlight]) -> Vec<String> {
    let mut failures = vec![];
    for a in acked {
        match a {
            Acked::Blob { repo, data } => {
                let d = sha256(data);
                match reg.try_send("GET", &format!("/v2/{repo}/blobs/{d}"), &[], None).await {
                    Ok(r) if r.status == 200 && sha256(&r.body) == d => {}
                    Ok(r) => failures.push(format!(
                        "acknowledged blob {repo}@{d} ({} bytes):\n{}",
                        data.len(),
                        r.describe()
                    )),
                    Err(e) => failures.push(e),
                }
            }
            Acked::Manifest { repo, tag, body } => {
                let d = sha256(body);
                for reference in [tag.as_str(), d.as_str()] {
                    match reg
                        .try_send(
                            "GET",
                            &format!("/v2/{repo}/manifests/{reference}"),
                            &[("Accept", ACCEPT_ALL)],
                            None,
                        )
                        .await
                    {
                        Ok(r)
                            if r.status == 200
                                && r.body == **body
                                && r.header("docker-content-digest").as_deref() == Some(d.as_str()) => {}
                        Ok(r) => failures.push(format!(
                            "acknowledged manifest {repo}:{tag} ({d}) via {reference}:\n{}",
                            r.describe()
                        )),
                        Err(e) => failures.push(e),
                    }
                }
            }
        }
    }
    // Unacknowledged manifest PUTs may or may not have landed, but never half: either the tag
    // is unknown, or it resolves to exactly the bytes that were sent.
    for f in in_flight {
        match reg
            .try_send(
                "GET",
                &format!("/v2/{}/manifests/{}", f.repo, f.tag),
                &[("Accept", ACCEPT_ALL)],
                None,
            )
            .await
        {
            Ok(r) if r.status == 404 => {}
            Ok(r) if r.status == 200 && r.body == *f.body => {}
            Ok(r) => failures.push(format!(
                "in-flight manifest {}:{} is neither absent nor whole:\n{}",
                f.repo,
                f.tag,
                r.describe()
            )),
            Err(e) => failures.push(e),
        }
    }
    failures
}

/// N writers push blobs + tagged manifests concurrently; the test kills the node (SIGKILL) once
/// a random number of manifest pushes has been acknowledged, restarts it, and checks every push
/// that got its 201 before the kill. Five rounds on the same data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_during_concurrent_pushes() {
    const WRITERS: usize = 6;
    const ROUNDS: usize = 5;
    let mut node = Node::start();
    let mut all_acked: Vec<Acked> = vec![];
    let mut report = vec![];
    for round in 0..ROUNDS {
        let reg = node.reg();
        let shared = Arc::new(Shared {
            acked: Mutex::new(vec![]),
            manifests_acked: AtomicUsize::new(0),
            in_flight: Mutex::new(HashMap::new()),
            protocol_errors: Mutex::new(vec![]),
            stop: AtomicBool::new(false),
        });
        let target = rand::thread_rng().gen_range(20..80);
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(reg.clone(), w, round, shared.clone())))
            .collect();

        let deadline = Instant::now() + Duration::from_secs(300);
        while shared.manifests_acked.load(Ordering::SeqCst) < target {
            let errs = shared.protocol_errors.lock().unwrap().clone();
            assert!(
                errs.is_empty(),
                "round {round}: protocol errors under load before the kill:\n{}",
                errs.join("\n\n")
            );
            assert!(
                tasks.iter().any(|t| !t.is_finished()),
                "round {round}: all writers stopped before the kill ({} acked)",
                shared.manifests_acked.load(Ordering::SeqCst)
            );
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} manifests acked in 300 s",
                shared.manifests_acked.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Kill -9 while the writers are mid-flight. `stop` is set only after the process is
        // gone, so anything acknowledged before the kill is recorded as acknowledged.
        node.kill();
        shared.stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.expect("writer panicked");
        }
        let errs = shared.protocol_errors.lock().unwrap().clone();
        assert!(
            errs.is_empty(),
            "round {round}: protocol errors under load:\n{}",
            errs.join("\n\n")
        );

        let acked = shared.acked.lock().unwrap().clone();
        let in_flight: Vec<InFlight> = shared.in_flight.lock().unwrap().values().cloned().collect();
        let manifests = acked.iter().filter(|a| matches!(a, Acked::Manifest { .. })).count();
        report.push(format!(
            "round {round}: {} acked blobs, {manifests} acked manifests, {} in flight at kill",
            acked.len() - manifests,
            in_flight.len()
        ));
        all_acked.extend(acked);

        tokio::task::block_in_place(|| node.start_again());
        let reg = node.reg();
        let failures = verify(&reg, &all_acked, &in_flight).await;
        assert!(
            failures.is_empty(),
            "round {round}: {} acknowledged write(s) lost or damaged after kill -9 ({}):\n\n{}",
            failures.len(),
            report.join("; "),
            failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n\n")
        );
    }
    eprintln!("crash test: {}", report.join("; "));
}
