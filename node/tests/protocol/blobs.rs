//! Blob GET/HEAD/Range/DELETE (end-2, end-10), per-repository visibility and cross-repository
//! mount (end-11).

use crate::common::*;

/// end-2: GET and HEAD → 200 with Content-Length and Docker-Content-Digest; body identical.
#[tokio::test]
async fn get_and_head_blob() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(100_000);
    let d = reg.push_blob("acme/app", &data).await;

    let g = reg.get(&format!("/v2/acme/app/blobs/{d}")).await;
    g.expect(200);
    g.expect_header("docker-content-digest", &d);
    assert_eq!(
        g.content_length(),
        Some(data.len() as u64),
        "GET Content-Length:\n{}",
        g.describe()
    );
    assert!(g.body == data, "GET body differs");

    let h = reg.head(&format!("/v2/acme/app/blobs/{d}")).await;
    h.expect(200);
    h.expect_header("docker-content-digest", &d);
    assert_eq!(
        h.content_length(),
        Some(data.len() as u64),
        "HEAD Content-Length:\n{}",
        h.describe()
    );
    assert!(h.body.is_empty());

    // Also under a nested repository path.
    let d2 = reg.push_blob("acme/team/web", &data).await;
    assert_eq!(d2, d);
    reg.assert_blob("acme/team/web", &data).await;
}

/// Unknown blob → 404 BLOB_UNKNOWN (known repository); unknown repository → 404.
#[tokio::test]
async fn unknown_blob_is_404() {
    let node = Node::start();
    let reg = node.reg();
    reg.push_image("acme/app", "v1").await;
    let d = unknown_digest();
    assert_error(&reg.get(&format!("/v2/acme/app/blobs/{d}")).await, 404, "BLOB_UNKNOWN");
    let h = reg.head(&format!("/v2/acme/app/blobs/{d}")).await;
    assert_eq!(h.status, 404, "{}", h.describe());
    assert!(h.body.is_empty(), "HEAD must have no body");
    assert_error_in(
        &reg.get(&format!("/v2/acme/nothing/blobs/{d}")).await,
        &[404],
        &["BLOB_UNKNOWN", "NAME_UNKNOWN"],
    );
}

/// RFC 9110 ranges on blob GET: 206 + Content-Range; unsatisfiable → 416.
#[tokio::test]
async fn blob_range_requests() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(100);
    let d = reg.push_blob("acme/app", &data).await;
    let path = format!("/v2/acme/app/blobs/{d}");

    let cases: [(&str, usize, usize); 5] = [
        ("bytes=0-9", 0, 9),
        ("bytes=5-", 5, 99),
        ("bytes=-4", 96, 99),
        ("bytes=90-500", 90, 99), // last-pos past the end is clamped
        ("bytes=99-99", 99, 99),
    ];
    for (range, a, b) in cases {
        let r = reg.send("GET", &path, &[("Range", range)], None).await;
        assert_eq!(r.status, 206, "Range {range}:\n{}", r.describe());
        let cr = r.must_header("content-range");
        assert!(
            cr == format!("bytes {a}-{b}/100") || cr == format!("bytes {a}-{b}/*"),
            "Range {range}: Content-Range `{cr}`, want `bytes {a}-{b}/100`"
        );
        assert_eq!(
            r.content_length(),
            Some((b - a + 1) as u64),
            "Range {range}:\n{}",
            r.describe()
        );
        assert!(r.body == data[a..=b], "Range {range}: wrong bytes");
    }

    for range in ["bytes=100-200", "bytes=100-", "bytes=1000-1001"] {
        let r = reg.send("GET", &path, &[("Range", range)], None).await;
        assert_eq!(r.status, 416, "unsatisfiable Range {range}:\n{}", r.describe());
        // RFC 9110 §15.5.17: SHOULD send Content-Range: bytes */<length>.
        assert_eq!(
            r.header("content-range").as_deref(),
            Some("bytes */100"),
            "Range {range}:\n{}",
            r.describe()
        );
    }
}

/// end-10: DELETE → 202; afterwards GET/HEAD → 404 and a second DELETE → 404.
#[tokio::test]
async fn delete_blob() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(2000);
    let keep = random_bytes(2000);
    let d = reg.push_blob("acme/app", &data).await;
    reg.push_blob("acme/app", &keep).await;
    let path = format!("/v2/acme/app/blobs/{d}");
    reg.delete(&path).await.expect(202);
    assert_error(&reg.get(&path).await, 404, "BLOB_UNKNOWN");
    assert_eq!(reg.head(&path).await.status, 404);
    assert_error(&reg.delete(&path).await, 404, "BLOB_UNKNOWN");
    reg.assert_blob("acme/app", &keep).await;
    // Pushing it again brings it back.
    reg.push_blob("acme/app", &data).await;
    reg.assert_blob("acme/app", &data).await;
}

/// A blob pushed to one repository is not visible in another (404 BLOB_UNKNOWN), cannot be
/// referenced by a manifest there (400 MANIFEST_BLOB_UNKNOWN) until it is mounted, and deleting
/// it from one repository leaves the other intact.
#[tokio::test]
async fn blobs_are_scoped_to_their_repository() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(3000);
    let d = reg.push_blob("acme/a", &data).await;
    reg.push_image("acme/b", "v1").await; // acme/b exists
    for repo in ["acme/b", "beta/a"] {
        let r = reg.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_error_in(&r, &[404], &["BLOB_UNKNOWN", "NAME_UNKNOWN"]);
        assert_eq!(reg.head(&format!("/v2/{repo}/blobs/{d}")).await.status, 404);
    }
    // A manifest in acme/b may not reference acme/a's blob.
    let config = reg.push_desc("acme/b", OCI_CONFIG, &config_bytes()).await;
    let m = oci_manifest(&config, &[desc(OCI_LAYER, &data)], serde_json::json!({}));
    assert_error(
        &reg.put_manifest("acme/b", "borrowed", OCI_MANIFEST, &m).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );

    // Mount, then it is visible and referencable.
    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/b/blobs/uploads/?mount={d}&from=acme/a"),
            &[],
            Some(vec![]),
        )
        .await;
    r.expect(201);
    reg.assert_blob("acme/b", &data).await;
    reg.put_manifest_ok("acme/b", "borrowed", OCI_MANIFEST, &m).await;

    // Deleting it from acme/a keeps acme/b's copy.
    reg.delete(&format!("/v2/acme/a/blobs/{d}")).await.expect(202);
    assert_error(&reg.get(&format!("/v2/acme/a/blobs/{d}")).await, 404, "BLOB_UNKNOWN");
    reg.assert_blob("acme/b", &data).await;
}

/// end-11: mount → 201 with Location (and Docker-Content-Digest); the blob reads back from the
/// Location and from the target repository.
#[tokio::test]
async fn cross_repo_mount() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(50_000);
    let d = reg.push_blob("acme/a", &data).await;
    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/team/b/blobs/uploads/?mount={d}&from=acme/a"),
            &[],
            Some(vec![]),
        )
        .await;
    r.expect(201);
    let loc = r.must_header("location");
    r.expect_header("docker-content-digest", &d);
    let g = reg.get(&loc).await;
    g.expect(200);
    assert!(g.body == data);
    reg.assert_blob("acme/team/b", &data).await;
    reg.assert_blob("acme/a", &data).await;
}

/// Distribution spec 1.1, "Mounting a blob from another repository": a mount without `from`
/// finds the blob in another repository of the same tenancy (201); a blob only another
/// tenancy holds is not found there, and the client uploads instead (202).
#[tokio::test]
async fn mount_without_from_searches_the_tenancy() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(30_000);
    let d = reg.push_blob("acme/src/one", &data).await;
    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/dst/blobs/uploads/?mount={d}"),
            &[],
            Some(vec![]),
        )
        .await;
    r.expect(201);
    r.expect_header("docker-content-digest", &d);
    reg.assert_blob("acme/dst", &data).await;
    let elsewhere = random_bytes(30_000);
    let e = reg.push_blob("other/app", &elsewhere).await;
    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/dst/blobs/uploads/?mount={e}"),
            &[],
            Some(vec![]),
        )
        .await;
    r.expect(202);
    r.must_header("docker-upload-uuid");
}

/// Mount of a blob the source repository does not have → 202, an ordinary upload session
/// (Location + Docker-Upload-UUID) that can then be completed.
#[tokio::test]
async fn mount_unknown_blob_falls_back_to_upload() {
    let node = Node::start();
    let reg = node.reg();
    reg.push_image("acme/a", "v1").await;
    let data = random_bytes(4000);
    let d = sha256(&data);
    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/b/blobs/uploads/?mount={d}&from=acme/a"),
            &[],
            Some(vec![]),
        )
        .await;
    r.expect(202);
    let loc = r.must_header("location");
    r.must_header("docker-upload-uuid");
    let s = reg.get(&loc).await;
    s.expect(204);
    let p = reg.put_upload(&loc, &d, Some(&data), None).await;
    p.expect(201);
    reg.assert_blob("acme/b", &data).await;

    // From a repository that does not exist at all.
    let d2 = unknown_digest();
    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/c/blobs/uploads/?mount={d2}&from=acme/never"),
            &[],
            Some(vec![]),
        )
        .await;
    r.expect(202);
    r.must_header("location");
}
