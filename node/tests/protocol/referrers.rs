//! OCI 1.1 referrers API (end-12a/12b) and `subject` handling on manifest PUT.

use serde_json::{json, Value};

use crate::common::*;

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG_CONFIG: &str = "application/vnd.example.signature.config.v1+json";

/// GET referrers; asserts 200, the index media type (header and body) and schemaVersion.
async fn referrers(reg: &Reg, repo: &str, digest: &str, query: &str) -> (Vec<Value>, Resp) {
    let r = reg.get(&format!("/v2/{repo}/referrers/{digest}{query}")).await;
    r.expect(200);
    assert_eq!(
        content_type(&r).as_deref(),
        Some(OCI_INDEX),
        "referrers Content-Type:\n{}",
        r.describe()
    );
    let v = r.json();
    assert_eq!(v["schemaVersion"], json!(2), "{}", r.describe());
    assert_eq!(v["mediaType"], json!(OCI_INDEX), "{}", r.describe());
    let list = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("`manifests` must be an array (empty when none):\n{}", r.describe()))
        .clone();
    (list, r)
}

fn find<'a>(list: &'a [Value], digest: &str) -> Option<&'a Value> {
    list.iter().find(|d| d["digest"] == json!(digest))
}

/// Pushes the empty config blob `{}` and returns its descriptor.
async fn empty_config(reg: &Reg, repo: &str) -> Desc {
    reg.push_desc(repo, OCI_EMPTY, b"{}").await
}

/// Artifacts with a `subject` → `OCI-Subject`; the referrers list carries mediaType, size,
/// digest, artifactType (from `artifactType`, else the config media type; omitted for an index
/// without one) and annotations; `artifactType` filtering; other repositories and unknown
/// digests give empty lists; deleting a referrer removes it.
#[tokio::test]
async fn referrers_listing_and_filtering() {
    let node = Node::start();
    let reg = node.reg();
    let repo = "acme/app";
    let (subject_digest, subject_body) = reg.push_image(repo, "v1").await;
    let subject = desc(OCI_MANIFEST, &subject_body);
    assert_eq!(subject.digest, subject_digest);

    // 1) an SBOM artifact with artifactType and the empty config, pushed by digest.
    let empty = empty_config(&reg, repo).await;
    let sbom_layer = reg
        .push_desc(repo, "application/spdx+json", br#"{"spdxVersion":"SPDX-2.3"}"#)
        .await;
    let sbom = oci_manifest(
        &empty,
        &[sbom_layer],
        json!({
            "artifactType": SBOM,
            "subject": subject.json(),
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "org.example.sbom.format": "spdx"}
        }),
    );
    let sbom_digest = sha256(&sbom);
    let r = reg.put_manifest(repo, &sbom_digest, OCI_MANIFEST, &sbom).await;
    r.expect(201);
    r.expect_header("oci-subject", &subject_digest);
    r.expect_header("docker-content-digest", &sbom_digest);

    // 2) a signature without artifactType: artifactType comes from the config media type.
    let sig_cfg = reg.push_desc(repo, SIG_CONFIG, br#"{"sig":"cfg"}"#).await;
    let sig_layer = reg
        .push_desc(repo, "application/vnd.example.signature.v1", &random_bytes(64))
        .await;
    let sig = oci_manifest(
        &sig_cfg,
        &[sig_layer],
        json!({"subject": subject.json(), "annotations": {"org.example.fp": "abcd"}}),
    );
    let sig_digest = sha256(&sig);
    let r = reg.put_manifest(repo, "sig-tag", OCI_MANIFEST, &sig).await;
    r.expect(201);
    r.expect_header("oci-subject", &subject_digest);

    // 3) an index with a subject and no artifactType.
    let idx = index(
        OCI_INDEX,
        &[(desc(OCI_MANIFEST, &sig), Value::Null)],
        json!({"subject": subject.json(), "annotations": {"k": "v"}}),
    );
    let idx_digest = sha256(&idx);
    let r = reg.put_manifest(repo, &idx_digest, OCI_INDEX, &idx).await;
    r.expect(201);
    r.expect_header("oci-subject", &subject_digest);

    // An unrelated image (no subject) has no OCI-Subject header and is not a referrer.
    let (plain, _) = reg.push_image(repo, "plain").await;

    let (list, resp) = referrers(&reg, repo, &subject_digest, "").await;
    assert_eq!(list.len(), 3, "want exactly sbom, sig and index:\n{}", resp.describe());
    assert!(find(&list, &plain).is_none());

    let d = find(&list, &sbom_digest).unwrap_or_else(|| panic!("sbom missing:\n{}", resp.describe()));
    assert_eq!(d["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(d["size"], json!(sbom.len()));
    assert_eq!(d["artifactType"], json!(SBOM));
    assert_eq!(d["annotations"]["org.example.sbom.format"], json!("spdx"));
    assert_eq!(
        d["annotations"]["org.opencontainers.image.created"],
        json!("2024-01-01T00:00:00Z")
    );

    let d = find(&list, &sig_digest).unwrap_or_else(|| panic!("signature missing:\n{}", resp.describe()));
    assert_eq!(d["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(d["size"], json!(sig.len()));
    assert_eq!(
        d["artifactType"],
        json!(SIG_CONFIG),
        "artifactType must fall back to config.mediaType"
    );
    assert_eq!(d["annotations"]["org.example.fp"], json!("abcd"));

    let d = find(&list, &idx_digest).unwrap_or_else(|| panic!("index missing:\n{}", resp.describe()));
    assert_eq!(d["mediaType"], json!(OCI_INDEX));
    assert_eq!(d["size"], json!(idx.len()));
    assert!(
        d.get("artifactType").map(|a| a.is_null()).unwrap_or(true),
        "index without artifactType must omit it: {d}"
    );
    assert_eq!(d["annotations"]["k"], json!("v"));

    // Filtering.
    let (list, r) = referrers(&reg, repo, &subject_digest, &format!("?artifactType={}", pct(SBOM))).await;
    r.expect_header("oci-filters-applied", "artifactType");
    assert_eq!(list.len(), 1, "{}", r.describe());
    assert_eq!(list[0]["digest"], json!(sbom_digest));
    let (list, r) = referrers(
        &reg,
        repo,
        &subject_digest,
        &format!("?artifactType={}", pct(SIG_CONFIG)),
    )
    .await;
    r.expect_header("oci-filters-applied", "artifactType");
    assert_eq!(list.len(), 1, "{}", r.describe());
    assert_eq!(list[0]["digest"], json!(sig_digest));
    let (list, r) = referrers(&reg, repo, &subject_digest, "?artifactType=application%2Fnone").await;
    r.expect_header("oci-filters-applied", "artifactType");
    assert!(list.is_empty(), "{}", r.describe());

    // Unknown digest → 200 with an empty list; another repository sees none.
    let (list, r) = referrers(&reg, repo, &unknown_digest(), "").await;
    assert!(list.is_empty(), "{}", r.describe());
    reg.push_image("acme/other", "v1").await;
    let (list, r) = referrers(&reg, "acme/other", &subject_digest, "").await;
    assert!(
        list.is_empty(),
        "referrers leaked across repositories:\n{}",
        r.describe()
    );

    // Invalid digest → 400.
    let r = reg.get(&format!("/v2/{repo}/referrers/sha256:nothex")).await;
    assert_eq!(r.status, 400, "{}", r.describe());
    error_codes(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.describe()));

    // Deleting a referrer removes it from the list.
    reg.delete(&format!("/v2/{repo}/manifests/{sbom_digest}"))
        .await
        .expect(202);
    let (list, r) = referrers(&reg, repo, &subject_digest, "").await;
    assert_eq!(list.len(), 2, "{}", r.describe());
    assert!(
        find(&list, &sbom_digest).is_none(),
        "deleted referrer still listed:\n{}",
        r.describe()
    );
}

/// A manifest whose subject does not exist (yet) is accepted (spec MUST) and listed; the
/// subject can be pushed afterwards.
#[tokio::test]
async fn referrer_before_subject() {
    let node = Node::start();
    let reg = node.reg();
    let repo = "acme/app";
    // Prepare the subject's blobs and bytes, but do not push the subject manifest yet.
    let config = reg.push_desc(repo, OCI_CONFIG, &config_bytes()).await;
    let layer = reg.push_desc(repo, OCI_LAYER, &random_bytes(300)).await;
    let subject_body = oci_manifest(&config, &[layer], json!({}));
    let subject = desc(OCI_MANIFEST, &subject_body);

    let empty = empty_config(&reg, repo).await;
    let art = oci_manifest(
        &empty,
        std::slice::from_ref(&empty),
        json!({"artifactType": SBOM, "subject": subject.json()}),
    );
    let art_digest = sha256(&art);
    let r = reg.put_manifest(repo, &art_digest, OCI_MANIFEST, &art).await;
    r.expect(201);
    r.expect_header("oci-subject", &subject.digest);

    let (list, r) = referrers(&reg, repo, &subject.digest, "").await;
    assert_eq!(list.len(), 1, "{}", r.describe());
    assert_eq!(list[0]["digest"], json!(art_digest));
    assert_eq!(list[0]["artifactType"], json!(SBOM));

    reg.put_manifest_ok(repo, "v1", OCI_MANIFEST, &subject_body).await;
    let (list, _) = referrers(&reg, repo, &subject.digest, "").await;
    assert_eq!(list.len(), 1);
}

/// The referrers of a Docker manifest list / an OCI index (subject of index type).
#[tokio::test]
async fn referrers_of_an_index() {
    let node = Node::start();
    let reg = node.reg();
    let repo = "acme/multi";
    let (child, child_body) = reg.push_image(repo, "child").await;
    let idx = index(
        OCI_INDEX,
        &[(
            desc(OCI_MANIFEST, &child_body),
            json!({"architecture": "amd64", "os": "linux"}),
        )],
        json!({}),
    );
    let idx_digest = reg.put_manifest_ok(repo, "multi", OCI_INDEX, &idx).await;
    let empty = empty_config(&reg, repo).await;
    let art = oci_manifest(
        &empty,
        std::slice::from_ref(&empty),
        json!({"artifactType": SBOM, "subject": desc(OCI_INDEX, &idx).json()}),
    );
    let r = reg.put_manifest(repo, &sha256(&art), OCI_MANIFEST, &art).await;
    r.expect(201);
    r.expect_header("oci-subject", &idx_digest);
    let (list, _) = referrers(&reg, repo, &idx_digest, "").await;
    assert_eq!(list.len(), 1);
    let (list, _) = referrers(&reg, repo, &child, "").await;
    assert!(list.is_empty());
}
