//! Digest algorithms (distribution spec 1.1, "Pulling blobs" / "Pushing blobs": a digest is
//! `algorithm:encoded` as the image spec's "Digests" section defines; sha256 and sha512 are
//! registered) and the Range header on blob GET (RFC 9110 §14).
//!
//! sha512 content is pushed, pulled, ranged, mounted, referenced by manifests, pushed as
//! manifests by digest and used as a referrers subject, each through raw HTTP (skopeo and oras
//! push sha256 only; `clients.rs` covers them).

use serde_json::json;
use sha2::{Digest as _, Sha512};

use crate::common::*;

fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

fn desc512(media_type: &str, data: &[u8]) -> Desc {
    Desc {
        media_type: media_type.into(),
        digest: sha512(data),
        size: data.len() as u64,
    }
}

/// Pushes `data` as a sha512 blob in two chunks (POST, PATCH, PUT ?digest=sha512:…).
async fn push512(reg: &Reg, repo: &str, data: &[u8]) -> String {
    let digest = sha512(data);
    let up = reg.start_upload(repo).await;
    let half = data.len() / 2;
    reg.patch_at(&up.location, 0, &data[..half]).await.expect(202);
    let r = reg
        .put_upload(
            &up.location,
            &digest,
            Some(&data[half..]),
            Some((half as u64, data.len() as u64 - 1)),
        )
        .await;
    r.expect(201);
    r.expect_header("docker-content-digest", &digest);
    digest
}

/// "Pushing blobs" with `?digest=sha512:…`, chunked and monolithic: stored under that digest,
/// served by GET/HEAD with `Docker-Content-Digest: sha512:…`, stored apart from the same bytes
/// under sha256, and refused with 400 DIGEST_INVALID when the bytes are other.
#[tokio::test]
async fn sha512_blobs_push_pull_and_verify() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(300_000);
    let d = push512(&reg, "acme/app", &data).await;
    assert_eq!(d.len(), "sha512:".len() + 128);

    let g = reg.get(&format!("/v2/acme/app/blobs/{d}")).await;
    g.expect(200);
    g.expect_header("docker-content-digest", &d);
    assert!(g.body == data, "sha512 blob body differs");
    let h = reg.head(&format!("/v2/acme/app/blobs/{d}")).await;
    h.expect(200);
    assert_eq!(h.content_length(), Some(data.len() as u64), "{}", h.describe());

    // The same bytes under sha256 are another blob, not yet in this repository.
    let d256 = sha256(&data);
    assert_eq!(reg.head(&format!("/v2/acme/app/blobs/{d256}")).await.status, 404);
    reg.push_blob("acme/app", &data).await;
    reg.assert_blob("acme/app", &data).await;

    // Monolithic POST ?digest=sha512:… (the "single POST" form).
    let small = random_bytes(777);
    let ds = sha512(&small);
    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/app/blobs/uploads/?digest={ds}"),
            &[("Content-Type", "application/octet-stream")],
            Some(small.clone()),
        )
        .await;
    assert!(r.status == 201 || r.status == 202, "{}", r.describe());
    if r.status == 202 {
        // A registry may decline the single POST and open a session instead.
        let loc = r.must_header("location");
        reg.put_upload(&loc, &ds, Some(&small), None).await.expect(201);
    }
    let g = reg.get(&format!("/v2/acme/app/blobs/{ds}")).await;
    g.expect(200);
    assert!(g.body == small);

    // Wrong bytes for a sha512 digest: 400 DIGEST_INVALID, and nothing stored.
    let claimed = sha512(b"something else");
    let up = reg.start_upload("acme/app").await;
    let r = reg.put_upload(&up.location, &claimed, Some(b"these bytes"), None).await;
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_eq!(reg.head(&format!("/v2/acme/app/blobs/{claimed}")).await.status, 404);

    // An algorithm the spec does not register here, and a sha512 of the wrong length.
    let r = reg.get(&format!("/v2/acme/app/blobs/sha384:{}", "a".repeat(96))).await;
    assert_eq!(r.status, 400, "{}", r.describe());
    let r = reg.get(&format!("/v2/acme/app/blobs/sha512:{}", "a".repeat(64))).await;
    assert_error(&r, 400, "DIGEST_INVALID");

    // Survives a restart (stored under its own algorithm's directory).
    let mut node = node;
    node.restart();
    let reg = node.reg();
    let g = reg.get(&format!("/v2/acme/app/blobs/{d}")).await;
    g.expect(200);
    assert!(g.body == data, "sha512 blob differs after restart");
}

/// "Mounting a blob from another repository" with a sha512 digest, with and without `from`;
/// ranges of a sha512 blob (RFC 9110 §14.1.2).
#[tokio::test]
async fn sha512_mount_and_range() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(5000);
    let d = push512(&reg, "acme/src", &data).await;
    reg.push_image("acme/dst", "v1").await;
    for (target, query) in [
        ("acme/dst", format!("mount={d}&from=acme/src")),
        ("acme/other", format!("mount={d}")),
    ] {
        let r = reg
            .send(
                "POST",
                &format!("/v2/{target}/blobs/uploads/?{query}"),
                &[],
                Some(Vec::new()),
            )
            .await;
        assert_eq!(r.status, 201, "mount into {target}:\n{}", r.describe());
        r.expect_header("docker-content-digest", &d);
        let g = reg.get(&format!("/v2/{target}/blobs/{d}")).await;
        g.expect(200);
        assert!(g.body == data);
    }
    let r = reg
        .send(
            "GET",
            &format!("/v2/acme/dst/blobs/{d}"),
            &[("Range", "bytes=100-199")],
            None,
        )
        .await;
    r.expect(206);
    assert_eq!(r.must_header("content-range"), "bytes 100-199/5000");
    assert!(r.body == data[100..200]);
}

/// "Pushing manifests" by a sha512 digest: the registry checks the body against that digest,
/// serves it by it (with `Docker-Content-Digest: sha512:…`), its layers may be sha512 blobs,
/// `?tag=` applies to it, and it can be the subject of a referrer (OCI-Subject, the referrers
/// list) and be deleted by digest.
#[tokio::test]
async fn sha512_manifests_referrers_and_tags() {
    let node = Node::start();
    let reg = node.reg();
    let repo = "acme/app";
    let config = config_bytes();
    let layer = random_bytes(2048);
    push512(&reg, repo, &config).await;
    push512(&reg, repo, &layer).await;
    let body = oci_manifest(&desc512(OCI_CONFIG, &config), &[desc512(OCI_LAYER, &layer)], json!({}));
    let md = sha512(&body);

    // Mismatched body for the digest: 400 DIGEST_INVALID.
    let wrong = sha512(b"not the manifest");
    let r = reg.put_manifest(repo, &wrong, OCI_MANIFEST, &body).await;
    assert_error(&r, 400, "DIGEST_INVALID");

    let r = reg
        .send(
            "PUT",
            &format!("/v2/{repo}/manifests/{md}?tag=v512"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(body.clone()),
        )
        .await;
    r.expect(201);
    r.expect_header("docker-content-digest", &md);
    assert_eq!(r.headers_all("oci-tag"), vec!["v512".to_string()], "{}", r.describe());

    for reference in [md.as_str(), "v512"] {
        let g = reg.get_manifest(repo, reference).await;
        g.expect(200);
        g.expect_header("docker-content-digest", &md);
        assert!(g.body == body, "manifest by {reference} differs");
    }

    // A referrer whose subject is the sha512 manifest.
    let empty = reg.push_desc(repo, OCI_EMPTY, b"{}").await;
    let sig = oci_manifest(
        &empty,
        std::slice::from_ref(&empty),
        json!({
            "artifactType": "application/vnd.example.signature.v1",
            "subject": {"mediaType": OCI_MANIFEST, "digest": md, "size": body.len()},
        }),
    );
    let sig_digest = sha256(&sig);
    let r = reg.put_manifest(repo, &sig_digest, OCI_MANIFEST, &sig).await;
    r.expect(201);
    r.expect_header("oci-subject", &md);
    let list = reg.get(&format!("/v2/{repo}/referrers/{md}")).await;
    list.expect(200);
    let v = list.json();
    let found: Vec<&str> = v["manifests"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["digest"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(found, vec![sig_digest.as_str()], "{}", list.describe());

    reg.delete(&format!("/v2/{repo}/manifests/{md}")).await.expect(202);
    assert_error(&reg.get_manifest(repo, &md).await, 404, "MANIFEST_UNKNOWN");
    assert_error(&reg.get_manifest(repo, "v512").await, 404, "MANIFEST_UNKNOWN");
}

/// RFC 9110 on blob GET: §14.1.1 invalid specifiers are rejected with 416 (§14.2 allows
/// "ignore or reject"; a silent 200 would hide a client's bug), §14.2 an unknown range unit is
/// ignored, overlapping ranges are coalesced into one 206, disjoint ones get the whole blob,
/// and §13.1.5 If-Range with another validator gets the whole blob.
#[tokio::test]
async fn range_edge_cases_follow_rfc_9110() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(100);
    let d = reg.push_blob("acme/app", &data).await;
    let path = format!("/v2/acme/app/blobs/{d}");
    let get = |headers: Vec<(&'static str, String)>| {
        let reg = &reg;
        let path = &path;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            reg.send("GET", path, &h, None).await
        }
    };
    for malformed in [
        "bytes=50-10",
        "bytes=x-",
        "bytes=",
        "bytes=-",
        "bytes 0-1",
        "bytes=0-1,junk",
    ] {
        let r = get(vec![("Range", malformed.to_string())]).await;
        assert_error(&r, 416, "RANGE_INVALID");
        assert_eq!(r.header("content-range").as_deref(), Some("bytes */100"), "{malformed}");
    }
    let r = get(vec![("Range", "items=0-1".into())]).await;
    r.expect(200);
    assert!(r.body == data);
    let r = get(vec![("Range", "bytes=0-9, 5-19".into())]).await;
    r.expect(206);
    assert_eq!(r.must_header("content-range"), "bytes 0-19/100");
    assert!(r.body == data[..20]);
    let r = get(vec![("Range", "bytes=0-9,50-59".into())]).await;
    r.expect(200);
    assert!(r.body == data);
    let r = get(vec![("Range", "bytes=10-19".into()), ("If-Range", format!("\"{d}\""))]).await;
    r.expect(206);
    assert!(r.body == data[10..20]);
    let other = format!("\"{}\"", unknown_digest());
    let r = get(vec![("Range", "bytes=10-19".into()), ("If-Range", other)]).await;
    r.expect(200);
    assert!(r.body == data);
}
