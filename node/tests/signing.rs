//! Image signing end to end: signatures in cosign's format and notation JWS envelopes made by an
//! independent implementation (`tests/signing/sigtool.py`, on the `cryptography` package) verify
//! in Keelson against the keys a tenancy registers, and fail when tampered with, made by another
//! key or made for another image; signatures Keelson makes with a key it holds
//! (`keelson images sign`) verify with that independent implementation; and a verification
//! policy refuses `docker pull` of an unsigned image while a signed one pulls.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::content::{digest_of, pseudo_random};
use support::docker::{busybox_rootfs_tar, pushed_digest, Docker};
use support::images::{http, push_blob, push_image, Image, OCI_MANIFEST};
use support::tools::{api_json as api, api_json_ok as api_ok, exec, exec_ok, need, tool};
use support::Keelson;

const LIMIT: Duration = Duration::from_secs(300);
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const COSIGN_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

fn sigtool() -> Command {
    let mut cmd = tool("python3");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/signing/sigtool.py"));
    cmd
}

fn run(cmd: &mut Command) -> String {
    exec_ok(cmd, LIMIT, String::new)
}

fn keelson_cli(host: &str, args: &[&str]) -> support::tools::Output {
    exec(
        Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(args)
            .env("KEELSON_NODE", host)
            .env_remove("KEELSON_USER")
            .env_remove("KEELSON_TOKEN"),
        LIMIT,
    )
}

/// The image detail's signature verdict and findings.
fn verdict(host: &str, repo: &str, digest: &str) -> (String, Vec<Value>) {
    let detail = api_ok("GET", host, &format!("/api/v1/repos/{repo}/images/{digest}"), None);
    (
        detail["signature"].as_str().unwrap_or_default().to_string(),
        detail["signatures"].as_array().cloned().unwrap_or_default(),
    )
}

/// cosign's simple-signing payload for `digest`, written here from cosign's specification.
fn cosign_payload(reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// Pushes a cosign signature manifest carrying `payload` signed as `signature_b64`: under the
/// `.sig` tag of `tag_for`, or (with `subject`) as a referrer of that manifest.
async fn push_cosign_signature(
    host: &str,
    repo: &str,
    tag_for: &str,
    payload: &[u8],
    signature_b64: &str,
    subject: Option<(&str, usize)>,
) -> String {
    let c = http();
    let payload_digest = digest_of(payload);
    push_blob(&c, host, repo, &payload_digest, payload, None).await.unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": { "type": "layers", "diff_ids": [payload_digest] },
    }))
    .unwrap();
    push_blob(&c, host, repo, &digest_of(&config), &config, None)
        .await
        .unwrap();
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len() },
        "layers": [{
            "mediaType": SIMPLE_SIGNING, "digest": payload_digest, "size": payload.len(),
            "annotations": { COSIGN_ANNOTATION: signature_b64 },
        }],
    });
    let reference = match subject {
        Some((digest, size)) => {
            manifest["artifactType"] = json!("application/vnd.dev.cosign.artifact.sig.v1+json");
            manifest["subject"] = json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": size });
            None
        }
        None => Some(format!("{}.sig", tag_for.replacen(':', "-", 1))),
    };
    let body = serde_json::to_vec(&manifest).unwrap();
    let reference = reference.unwrap_or_else(|| digest_of(&body));
    let r = c
        .put(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    digest_of(&body)
}

/// Signs `payload` with the private key at `key` through the independent implementation.
fn independent_sign(dir: &Path, key: &Path, payload: &[u8]) -> String {
    let file = dir.join(format!("payload-{}", rand_suffix()));
    std::fs::write(&file, payload).unwrap();
    run(sigtool().arg("sign").arg(key).arg(&file)).trim().to_string()
}

fn rand_suffix() -> String {
    format!("{:x}", rand::random::<u64>())
}

async fn push_test_image(host: &str, repo: &str, tag: &str, seed: u64) -> Image {
    let image = Image::new(repo, tag, &[Arc::new(pseudo_random(4096, seed))]);
    push_image(&http(), host, &image, &Default::default()).await.unwrap();
    image
}

/// cosign-format signatures from the independent implementation verify against the registered
/// public key (the `.sig` tag scheme and a referrer alike); a signature for another image, by
/// another key, or whose payload was altered does not; notation envelopes chained to a
/// registered CA verify, and one from another CA does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_signatures_verify_in_keelson() {
    need("python3");
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start(tmp.path());
    let host = node.host();
    let repo = "demo/app";
    let signed = push_test_image(&host, repo, "v1", 1).await;
    let other = push_test_image(&host, repo, "v2", 2).await;
    let referred = push_test_image(&host, repo, "v3", 3).await;
    let (d1, d2, d3) = (signed.digest(), other.digest(), referred.digest());

    let (ci_key, ci_pub) = (tmp.path().join("ci.key"), tmp.path().join("ci.pub"));
    run(sigtool().arg("keygen").arg(&ci_key).arg(&ci_pub));
    let (rogue_key, rogue_pub) = (tmp.path().join("rogue.key"), tmp.path().join("rogue.pub"));
    run(sigtool().arg("keygen").arg(&rogue_key).arg(&rogue_pub));

    assert_eq!(verdict(&host, repo, &d1).0, "unsigned");
    let ci_pem = std::fs::read_to_string(&ci_pub).unwrap();
    let (status, _) = api(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/signing-keys/ci",
        Some(json!({ "scope": "repository:demo/app", "public_key": ci_pem })),
    );
    assert_eq!(status, 201);

    // The .sig tag scheme.
    let payload = cosign_payload(&format!("{host}/{repo}"), &d1);
    let signature = independent_sign(tmp.path(), &ci_key, &payload);
    push_cosign_signature(&host, repo, &d1, &payload, &signature, None).await;
    let (state, findings) = verdict(&host, repo, &d1);
    assert_eq!(state, "signed", "{findings:?}");
    assert_eq!(findings[0]["verified_by"], json!(["ci"]), "{findings:?}");
    assert_eq!(findings[0]["format"], json!("cosign"));

    // A valid signature of image 1 placed as image 2's signature: for another image.
    push_cosign_signature(&host, repo, &d2, &payload, &signature, None).await;
    let (state, findings) = verdict(&host, repo, &d2);
    assert_eq!(state, "invalid", "{findings:?}");
    assert!(
        findings[0]["problem"].as_str().unwrap().contains("not this image"),
        "{findings:?}"
    );

    // Referrer mode: by another key, then with an altered payload, then valid.
    let payload3 = cosign_payload(&format!("{host}/{repo}"), &d3);
    let rogue_sig = independent_sign(tmp.path(), &rogue_key, &payload3);
    let subject = Some((d3.as_str(), referred.manifest.len()));
    push_cosign_signature(&host, repo, &d3, &payload3, &rogue_sig, subject).await;
    let (state, findings) = verdict(&host, repo, &d3);
    assert_eq!(state, "invalid", "{findings:?}");
    assert!(
        findings[0]["problem"].as_str().unwrap().contains("does not verify"),
        "{findings:?}"
    );
    let good_sig = independent_sign(tmp.path(), &ci_key, &payload3);
    let mut altered = payload3.clone();
    altered.extend_from_slice(b" ");
    push_cosign_signature(&host, repo, &d3, &altered, &good_sig, subject).await;
    assert_eq!(verdict(&host, repo, &d3).0, "invalid");
    push_cosign_signature(&host, repo, &d3, &payload3, &good_sig, subject).await;
    let (state, findings) = verdict(&host, repo, &d3);
    assert_eq!(state, "signed", "{findings:?}");
    assert_eq!(findings.len(), 3, "{findings:?}");
    assert_eq!(
        findings.iter().filter(|f| f["verified_by"] == json!(["ci"])).count(),
        1,
        "{findings:?}"
    );

    // The image list carries each image's verdict.
    let list = api_ok("GET", &host, &format!("/api/v1/repos/{repo}/images?tagged=true"), None);
    let state_of = |d: &str| {
        list["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["digest"] == json!(d))
            .map(|i| i["signature"].clone())
    };
    assert_eq!(state_of(&d1), Some(json!("signed")));
    assert_eq!(state_of(&d2), Some(json!("invalid")));

    // Notation: an envelope chained to the registered CA verifies; another CA's does not.
    for label in ["trusted", "stranger"] {
        run(sigtool().arg("notation-ca").arg(tmp.path()).arg(label));
    }
    let ca_pem = std::fs::read_to_string(tmp.path().join("trusted-ca.pem")).unwrap();
    let (status, answer) = api(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/signing-keys/notary-ca",
        Some(json!({ "scope": "tenancy", "certificate": ca_pem })),
    );
    assert_eq!(status, 201, "{answer}");
    let descriptor = tmp.path().join("descriptor.json");
    std::fs::write(
        &descriptor,
        json!({ "mediaType": OCI_MANIFEST, "digest": d2, "size": other.manifest.len() }).to_string(),
    )
    .unwrap();
    for (label, expect_verified) in [("stranger", false), ("trusted", true)] {
        let envelope = run(sigtool()
            .arg("notation-sign")
            .arg(tmp.path())
            .arg(label)
            .arg(&descriptor));
        push_notation(&host, repo, &d2, other.manifest.len(), envelope.trim().as_bytes()).await;
        let (state, findings) = verdict(&host, repo, &d2);
        let notation: Vec<&Value> = findings.iter().filter(|f| f["format"] == json!("notation")).collect();
        let verified = notation.iter().any(|f| f["verified_by"] == json!(["notary-ca"]));
        assert_eq!(verified, expect_verified, "{label}: {findings:?}");
        assert_eq!(
            state,
            if expect_verified { "signed" } else { "invalid" },
            "{findings:?}"
        );
    }

    // The CLI's verdict, and its exit status.
    let out = keelson_cli(&host, &["images", "verify", &format!("{repo}@{d2}")]);
    assert!(out.ok, "{}", out.stderr);
    let out = keelson_cli(&host, &["images", "verify", &format!("{repo}:v2")]);
    assert!(out.ok);
    let unsigned = push_test_image(&host, repo, "v4", 4).await;
    let out = keelson_cli(&host, &["images", "verify", &format!("{repo}@{}", unsigned.digest())]);
    assert!(!out.ok, "an unsigned image must fail verify");
    assert!(out.stdout.contains("unsigned"));

    // Hostile key material and scopes are refused where they enter.
    for body in [
        json!({ "scope": "tenancy", "public_key": "not a key" }),
        json!({ "scope": "tenancy", "certificate": ci_pem }),
        json!({ "scope": "compartment:nowhere", "public_key": ci_pem }),
        json!({ "scope": "repository:other/app", "public_key": ci_pem }),
        json!({ "scope": "tenancy", "public_key": ci_pem, "generate": true }),
    ] {
        let (status, answer) = api(
            "PUT",
            &host,
            "/api/v1/tenancies/demo/signing-keys/bad",
            Some(body.clone()),
        );
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, _) = api(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/verification-policies/p",
        Some(json!({ "scope": "tenancy", "keys": ["missing"] })),
    );
    assert_eq!(status, 400);
}

/// Pushes a notation signature manifest (an envelope layer, the empty config, `subject`).
async fn push_notation(host: &str, repo: &str, subject: &str, subject_size: usize, envelope: &[u8]) {
    let c = http();
    let empty = b"{}";
    push_blob(&c, host, repo, &digest_of(empty), empty, None).await.unwrap();
    push_blob(&c, host, repo, &digest_of(envelope), envelope, None)
        .await
        .unwrap();
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.cncf.notary.signature",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(empty), "size": 2 },
        "layers": [{ "mediaType": "application/jose+json", "digest": digest_of(envelope), "size": envelope.len() }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size },
    }))
    .unwrap();
    let r = c
        .put(format!("http://{host}/v2/{repo}/manifests/{}", digest_of(&body)))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

/// `keelson images sign` with a key the cluster made: the signature it pushes verifies with the
/// independent implementation against the key's public PEM; and a verification policy refuses
/// `docker pull` of an unsigned image, naming itself, while the signed one pulls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_signing_and_the_pull_policy() {
    need("python3");
    need("dockerd");
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start(tmp.path());
    let host = node.host();
    let docker = Docker::start(&tmp.path().join("docker"));
    let mut digests = Vec::new();
    for tag in ["signed", "unsigned"] {
        let work = tmp.path().join(tag);
        std::fs::create_dir_all(&work).unwrap();
        let tar = busybox_rootfs_tar(&work, &format!("{tag}\n"), LIMIT);
        let image = format!("{host}/demo/secure:{tag}");
        run(docker.cmd().args(["import"]).arg(&tar).arg(&image));
        digests.push(pushed_digest(&run(docker.cmd().args(["push", &image]))));
        run(docker.cmd().args(["rmi", &image]));
    }

    let made = api_ok(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/signing-keys/vault",
        Some(json!({ "scope": "tenancy", "generate": true })),
    );
    assert_eq!(made["held_by_cluster"], json!(true));
    let public = made["pem"].as_str().unwrap().to_string();
    assert!(
        !made.to_string().contains("PRIVATE"),
        "the private key never leaves: {made}"
    );
    let public_path = tmp.path().join("vault.pub");
    std::fs::write(&public_path, &public).unwrap();

    let out = keelson_cli(&host, &["images", "sign", "demo/secure:signed", "--key", "vault"]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains(&digests[0]));

    // What Keelson pushed, checked by the independent implementation.
    let c = http();
    let tag = format!("{}.sig", digests[0].replacen(':', "-", 1));
    let manifest: Value = c
        .get(format!("http://{host}/v2/demo/secure/manifests/{tag}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], json!(SIMPLE_SIGNING), "{manifest}");
    let payload = c
        .get(format!(
            "http://{host}/v2/demo/secure/blobs/{}",
            layer["digest"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["critical"]["image"]["docker-manifest-digest"], json!(digests[0]));
    assert_eq!(claims["critical"]["type"], json!("cosign container image signature"));
    let payload_path = tmp.path().join("payload.json");
    std::fs::write(&payload_path, &payload).unwrap();
    let signature = layer["annotations"][COSIGN_ANNOTATION].as_str().unwrap();
    run(sigtool()
        .arg("verify")
        .arg(&public_path)
        .arg(&payload_path)
        .arg(signature));
    // ...and not with another key.
    let (other_key, other_pub) = (tmp.path().join("o.key"), tmp.path().join("o.pub"));
    run(sigtool().arg("keygen").arg(&other_key).arg(&other_pub));
    let wrong = exec(
        sigtool()
            .arg("verify")
            .arg(&other_pub)
            .arg(&payload_path)
            .arg(signature),
        LIMIT,
    );
    assert!(!wrong.ok);
    let raw = base64::engine::general_purpose::STANDARD.decode(signature).unwrap();
    assert!(raw.len() > 60, "a DER ECDSA signature");

    // The policy.
    let (status, answer) = api(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/verification-policies/signed-only",
        Some(json!({ "scope": "repository:demo/secure", "keys": ["vault"] })),
    );
    assert_eq!(status, 201, "{answer}");
    let refused = exec(
        docker.cmd().args(["pull", &format!("{host}/demo/secure:unsigned")]),
        LIMIT,
    );
    assert!(!refused.ok, "an unsigned image must not pull");
    let said = refused.stderr.clone();
    assert!(said.contains("signed-only"), "docker should show the policy: {said}");
    run(docker.cmd().args(["pull", &format!("{host}/demo/secure:signed")]));
    let listed = run(docker.cmd().args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(listed.contains("demo/secure:signed"), "{listed}");
    // A key a policy requires cannot be deleted; the policy can, and the image pulls again.
    let (status, _) = api("DELETE", &host, "/api/v1/tenancies/demo/signing-keys/vault", None);
    assert_eq!(status, 400);
    api_ok(
        "DELETE",
        &host,
        "/api/v1/tenancies/demo/verification-policies/signed-only",
        None,
    );
    run(docker.cmd().args(["pull", &format!("{host}/demo/secure:unsigned")]));
    let list = api_ok("GET", &host, "/api/v1/repos/demo/secure/images?tagged=true", None);
    let states: Vec<(String, String)> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["tags"][0].as_str().unwrap_or("").to_string(),
                i["signature"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(states.contains(&("signed".into(), "signed".into())), "{states:?}");
    assert!(states.contains(&("unsigned".into(), "unsigned".into())), "{states:?}");
}
