//! Blob upload sessions: end-4a/4b, end-5, end-6, end-13, end-14.

use std::time::Duration;

use crate::common::*;

/// Asserts a 202 chunk response: Location, `Range: 0-<end>`, Docker-Upload-UUID (same session).
fn assert_chunk_ok(r: &Resp, received: u64, uuid: &str) -> String {
    r.expect(202);
    r.expect_header("range", &upload_range(received));
    r.expect_header("docker-upload-uuid", uuid);
    r.must_header("location")
}

/// Asserts `GET <location>` → 204 with Location and `Range: 0-<received-1>`.
async fn assert_status(reg: &Reg, location: &str, received: u64, uuid: &str) -> String {
    let r = reg.get(location).await;
    r.expect(204);
    r.expect_header("range", &upload_range(received));
    r.expect_header("docker-upload-uuid", uuid);
    r.must_header("location")
}

/// Asserts a 201 blob response (Location pullable, Docker-Content-Digest) and that the blob
/// GETs back byte-identical.
async fn assert_created(reg: &Reg, r: &Resp, repo: &str, data: &[u8]) {
    let digest = sha256(data);
    r.expect(201);
    r.expect_header("docker-content-digest", &digest);
    let loc = r.must_header("location");
    let g = reg.get(&loc).await;
    g.expect(200);
    assert!(g.body == data, "blob at Location differs:\n{}", g.describe());
    reg.assert_blob(repo, data).await;
}

/// end-4a + end-13: POST opens a session (202, Location containing the UUID,
/// Docker-Upload-UUID); GET on it reports 204 with Location and Range.
#[tokio::test]
async fn post_opens_upload_session() {
    let node = Node::start();
    let reg = node.reg();
    let r = reg.send("POST", "/v2/acme/app/blobs/uploads/", &[], Some(vec![])).await;
    r.expect(202);
    let loc = r.must_header("location");
    let uuid = r.must_header("docker-upload-uuid");
    assert!(
        loc.contains(&uuid),
        "Location {loc} does not contain the session id {uuid}"
    );
    // Two sessions are distinct.
    let other = reg.start_upload("acme/app").await;
    assert_ne!(other.uuid, uuid);
    assert_ne!(other.location, loc);
    // Status of a fresh session.
    let s = reg.get(&loc).await;
    s.expect(204);
    s.must_header("location");
    s.expect_header("docker-upload-uuid", &uuid);
    let range = s.must_header("range");
    assert!(range.starts_with("0-"), "Range of a fresh session: {range}");
    // Nested repository path.
    reg.start_upload("acme/team/web").await;
}

/// end-4b: single POST with `?digest=` and the body → 201 with Location.
#[tokio::test]
async fn monolithic_post_with_digest() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(70_000);
    let d = sha256(&data);
    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/app/blobs/uploads/?digest={d}"),
            &[("Content-Type", "application/octet-stream")],
            Some(data.clone()),
        )
        .await;
    assert_created(&reg, &r, "acme/app", &data).await;
}

/// end-4a then end-6: POST, then PUT `?digest=` with the whole blob → 201; the session is gone.
#[tokio::test]
async fn post_then_put_monolithic() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(300_000);
    let up = reg.start_upload("acme/app").await;
    let r = reg.put_upload(&up.location, &sha256(&data), Some(&data), None).await;
    assert_created(&reg, &r, "acme/app", &data).await;
    assert_error(&reg.get(&up.location).await, 404, "BLOB_UPLOAD_UNKNOWN");
}

/// end-5 + end-6: chunks with `Content-Range: a-b` → 202 with `Range: 0-<end>`; GET status;
/// closing PUT without body → 201.
#[tokio::test]
async fn chunked_upload_then_put_without_body() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(30_000);
    let up = reg.start_upload("acme/app").await;
    let mut loc = up.location.clone();
    for (a, b) in [(0usize, 10_000usize), (10_000, 25_000), (25_000, 30_000)] {
        let r = reg.patch_at(&loc, a as u64, &data[a..b]).await;
        loc = assert_chunk_ok(&r, b as u64, &up.uuid);
        loc = assert_status(&reg, &loc, b as u64, &up.uuid).await;
    }
    let r = reg.put_upload(&loc, &sha256(&data), None, None).await;
    assert_created(&reg, &r, "acme/app", &data).await;
}

/// end-6: the final chunk carried by the closing PUT, with and without Content-Range.
#[tokio::test]
async fn chunked_upload_final_chunk_in_put() {
    let node = Node::start();
    let reg = node.reg();
    for with_range in [false, true] {
        let data = random_bytes(20_000);
        let up = reg.start_upload("acme/app").await;
        let r = reg.patch_at(&up.location, 0, &data[..12_000]).await;
        let loc = assert_chunk_ok(&r, 12_000, &up.uuid);
        let range = with_range.then_some((12_000u64, 19_999u64));
        let r = reg.put_upload(&loc, &sha256(&data), Some(&data[12_000..]), range).await;
        assert_created(&reg, &r, "acme/app", &data).await;
    }
}

/// Chunks out of order → 416 (first chunk not at 0, a gap, a rewind, an overlap, a final PUT
/// chunk out of order); the session survives and the right chunks complete it.
#[tokio::test]
async fn out_of_order_chunks_get_416() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(40);
    let up = reg.start_upload("acme/app").await;
    let loc = up.location.clone();

    let r = reg.patch(&loc, Some((5, 9)), &data[5..10]).await;
    assert_eq!(r.status, 416, "first chunk not starting at 0:\n{}", r.describe());

    let r = reg.patch(&loc, Some((0, 9)), &data[..10]).await;
    let loc = assert_chunk_ok(&r, 10, &up.uuid);

    for (a, b, what) in [(20u64, 29u64, "gap"), (0, 9, "rewind/retransmit"), (5, 14, "overlap")] {
        let r = reg.patch(&loc, Some((a, b)), &data[a as usize..=b as usize]).await;
        assert_eq!(r.status, 416, "{what} chunk {a}-{b}:\n{}", r.describe());
    }
    let loc = assert_status(&reg, &loc, 10, &up.uuid).await;

    let r = reg.patch(&loc, Some((10, 19)), &data[10..20]).await;
    let loc = assert_chunk_ok(&r, 20, &up.uuid);

    // Final chunk in the PUT, out of order.
    let r = reg
        .put_upload(&loc, &sha256(&data), Some(&data[30..40]), Some((30, 39)))
        .await;
    assert_eq!(r.status, 416, "final PUT chunk out of order:\n{}", r.describe());
    let loc = assert_status(&reg, &loc, 20, &up.uuid).await;

    let r = reg
        .put_upload(&loc, &sha256(&data), Some(&data[20..40]), Some((20, 39)))
        .await;
    assert_created(&reg, &r, "acme/app", &data).await;
}

/// Docker "stream" upload: PATCH without Content-Range, the body sent with chunked
/// transfer-encoding (no Content-Length), then a second PATCH appending; PUT → 201.
#[tokio::test]
async fn streamed_patch_without_content_range() {
    let node = Node::start();
    let reg = node.reg();
    let host = node.host();
    let data = random_bytes(200_000);
    let up = reg.start_upload("acme/app").await;
    let target = reg.abs(&up.location).trim_start_matches(reg.base.as_str()).to_string();

    // 1) chunked transfer-encoding, written in pieces with pauses.
    let head = format!(
        "PATCH {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let mut parts = vec![head];
    for piece in data[..150_000].chunks(16_384) {
        parts.push(http_chunk(piece));
    }
    parts.push(b"0\r\n\r\n".to_vec());
    let r = raw_http(&host, parts, Duration::from_millis(5), false)
        .await
        .expect("streamed PATCH");
    assert_eq!(r.status, 202, "streamed PATCH:\n{}", r.describe());
    assert_eq!(
        r.header("range").as_deref(),
        Some(upload_range(150_000).as_str()),
        "{}",
        r.describe()
    );
    let loc = r
        .header("location")
        .unwrap_or_else(|| panic!("no Location:\n{}", r.describe()));

    // 2) a second PATCH without Content-Range (plain Content-Length) appends.
    let r = reg.patch(&loc, None, &data[150_000..]).await;
    let loc = assert_chunk_ok(&r, 200_000, &up.uuid);

    let r = reg.put_upload(&loc, &sha256(&data), None, None).await;
    assert_created(&reg, &r, "acme/app", &data).await;
}

/// A digest that does not match the content → 400 DIGEST_INVALID (POST+PUT, single POST,
/// chunked); nothing becomes readable.
#[tokio::test]
async fn wrong_digest_is_digest_invalid() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(5000);
    let wrong = unknown_digest();

    let up = reg.start_upload("acme/app").await;
    let r = reg.put_upload(&up.location, &wrong, Some(&data), None).await;
    assert_error(&r, 400, "DIGEST_INVALID");

    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/app/blobs/uploads/?digest={wrong}"),
            &[],
            Some(data.clone()),
        )
        .await;
    assert_error(&r, 400, "DIGEST_INVALID");

    let up = reg.start_upload("acme/app").await;
    let r = reg.patch_at(&up.location, 0, &data).await;
    let loc = assert_chunk_ok(&r, data.len() as u64, &up.uuid);
    let r = reg.put_upload(&loc, &wrong, None, None).await;
    assert_error(&r, 400, "DIGEST_INVALID");

    for d in [wrong, sha256(&data)] {
        assert_error(&reg.get(&format!("/v2/acme/app/blobs/{d}")).await, 404, "BLOB_UNKNOWN");
    }
}

/// A malformed digest on the closing PUT / single POST → 400 DIGEST_INVALID.
#[tokio::test]
async fn malformed_digest_is_digest_invalid() {
    let node = Node::start();
    let reg = node.reg();
    let data = b"some blob".to_vec();
    let good = sha256(&data);
    let hexpart = good.trim_start_matches("sha256:").to_string();
    let malformed = vec![
        "sha256:xyz".to_string(),
        format!("sha256:{}", &hexpart[..63]),
        format!("sha256:{hexpart}0"),
        format!("sha256:{}", hexpart.to_uppercase()),
        hexpart.clone(),
        format!("sha256{hexpart}"),
        format!(":{hexpart}"),
        "sha256:".to_string(),
        format!("SHA256:{hexpart}"),
    ];
    for d in &malformed {
        let up = reg.start_upload("acme/app").await;
        let r = reg.put_upload(&up.location, &pct(d), Some(&data), None).await;
        assert_error(&r, 400, "DIGEST_INVALID");
        let r = reg
            .send(
                "POST",
                &format!("/v2/acme/app/blobs/uploads/?digest={}", pct(d)),
                &[],
                Some(data.clone()),
            )
            .await;
        assert_error(&r, 400, "DIGEST_INVALID");
    }
}

/// Unknown upload ids → 404 BLOB_UPLOAD_UNKNOWN on GET/PATCH/PUT/DELETE; a session is bound to
/// its repository.
#[tokio::test]
async fn unknown_upload_is_blob_upload_unknown() {
    let node = Node::start();
    let reg = node.reg();
    reg.push_image("acme/app", "v1").await; // the repository exists
    let fake = format!(
        "/v2/acme/app/blobs/uploads/{}-{}-4{}-a{}-{}",
        random_hex(4),
        random_hex(2),
        &random_hex(2)[..3],
        &random_hex(2)[..3],
        random_hex(6)
    );
    let data = b"abc".to_vec();
    assert_error(&reg.get(&fake).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.patch_at(&fake, 0, &data).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &reg.put_upload(&fake, &sha256(&data), Some(&data), None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(&reg.delete(&fake).await, 404, "BLOB_UPLOAD_UNKNOWN");

    // A real session of acme/app addressed through acme/other.
    let up = reg.start_upload("acme/app").await;
    let path = split_url(&reg.abs(&up.location)).0;
    let moved = path.replacen("/v2/acme/app/", "/v2/acme/other/", 1);
    assert_ne!(moved, path, "Location {path} is not under /v2/acme/app/");
    assert_error(&reg.get(&moved).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.patch_at(&moved, 0, &data).await, 404, "BLOB_UPLOAD_UNKNOWN");
    // ...and is untouched.
    let r = reg.patch_at(&up.location, 0, &data).await;
    assert_chunk_ok(&r, 3, &up.uuid);
}

/// end-14: DELETE a session → 204; then it is unknown everywhere.
#[tokio::test]
async fn cancel_upload() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(1000);
    let up = reg.start_upload("acme/app").await;
    let r = reg.patch_at(&up.location, 0, &data).await;
    let loc = assert_chunk_ok(&r, 1000, &up.uuid);
    let r = reg.delete(&loc).await;
    r.expect(204);
    assert_error(&reg.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(&reg.patch_at(&loc, 1000, b"x").await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &reg.put_upload(&loc, &sha256(&data), None, None).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    );
    assert_error(&reg.delete(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN");
    assert_error(
        &reg.get(&format!("/v2/acme/app/blobs/{}", sha256(&data))).await,
        404,
        "BLOB_UNKNOWN",
    );
}

/// The empty blob, by POST+PUT and by single POST; GET/HEAD give Content-Length 0.
#[tokio::test]
async fn zero_length_blob() {
    let node = Node::start();
    let reg = node.reg();
    assert_eq!(sha256(b""), EMPTY_DIGEST);
    let up = reg.start_upload("acme/app").await;
    let r = reg.put_upload(&up.location, EMPTY_DIGEST, None, None).await;
    r.expect(201);
    r.expect_header("docker-content-digest", EMPTY_DIGEST);
    r.must_header("location");

    let g = reg.get(&format!("/v2/acme/app/blobs/{EMPTY_DIGEST}")).await;
    g.expect(200);
    g.expect_header("docker-content-digest", EMPTY_DIGEST);
    assert_eq!(g.content_length(), Some(0), "{}", g.describe());
    assert!(g.body.is_empty());
    let h = reg.head(&format!("/v2/acme/app/blobs/{EMPTY_DIGEST}")).await;
    h.expect(200);
    h.expect_header("docker-content-digest", EMPTY_DIGEST);
    assert_eq!(h.content_length(), Some(0), "{}", h.describe());

    let r = reg
        .send(
            "POST",
            &format!("/v2/acme/other/blobs/uploads/?digest={EMPTY_DIGEST}"),
            &[],
            Some(vec![]),
        )
        .await;
    r.expect(201);
    r.expect_header("docker-content-digest", EMPTY_DIGEST);
    reg.assert_blob("acme/other", b"").await;
}

/// 1-byte chunks: every step reports the exact Range.
#[tokio::test]
async fn one_byte_chunks() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(64);
    let up = reg.start_upload("acme/app").await;
    let mut loc = up.location.clone();
    for i in 0..data.len() {
        let r = reg.patch(&loc, Some((i as u64, i as u64)), &data[i..=i]).await;
        loc = assert_chunk_ok(&r, i as u64 + 1, &up.uuid);
    }
    assert_status(&reg, &loc, 64, &up.uuid).await;
    let r = reg.put_upload(&loc, &sha256(&data), None, None).await;
    assert_created(&reg, &r, "acme/app", &data).await;
}

/// Many chunks (512 × 4 KiB = 2 MiB) and an uneven last chunk.
#[tokio::test]
async fn many_chunks() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(2 * 1024 * 1024 + 123);
    let up = reg.start_upload("acme/app").await;
    let mut loc = up.location.clone();
    let mut off = 0usize;
    for chunk in data.chunks(4096) {
        let r = reg.patch_at(&loc, off as u64, chunk).await;
        off += chunk.len();
        loc = assert_chunk_ok(&r, off as u64, &up.uuid);
    }
    let r = reg.put_upload(&loc, &sha256(&data), None, None).await;
    assert_created(&reg, &r, "acme/app", &data).await;
}

/// A session survives kill -9: PATCH half, restart, GET status shows the offset, PATCH the rest,
/// PUT → 201, the blob reads back identical.
#[tokio::test]
async fn upload_resumes_after_restart() {
    let mut node = Node::start();
    let reg = node.reg();
    let data = random_bytes(1_000_000);
    let half = 400_000usize;
    let up = reg.start_upload("acme/app").await;
    let r = reg.patch_at(&up.location, 0, &data[..half]).await;
    let loc = assert_chunk_ok(&r, half as u64, &up.uuid);

    node.restart();
    let reg = node.reg();

    let loc = assert_status(&reg, &loc, half as u64, &up.uuid).await;
    // Out-of-order after restart still 416.
    let r = reg.patch(&loc, Some((0, 9)), &data[..10]).await;
    assert_eq!(r.status, 416, "rewind after restart:\n{}", r.describe());
    let r = reg.patch_at(&loc, half as u64, &data[half..]).await;
    let loc = assert_chunk_ok(&r, data.len() as u64, &up.uuid);
    let r = reg.put_upload(&loc, &sha256(&data), None, None).await;
    assert_created(&reg, &r, "acme/app", &data).await;
}

/// A large monolithic upload (16 MiB) round-trips.
#[tokio::test]
async fn large_monolithic_blob() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(16 * 1024 * 1024);
    let up = reg.start_upload("acme/app").await;
    let r = reg.put_upload(&up.location, &sha256(&data), Some(&data), None).await;
    assert_created(&reg, &r, "acme/app", &data).await;
}

/// Uploading a blob that already exists (dedup) succeeds again and leaves it readable.
#[tokio::test]
async fn reupload_existing_blob() {
    let node = Node::start();
    let reg = node.reg();
    let data = random_bytes(10_000);
    reg.push_blob("acme/app", &data).await;
    reg.push_blob("acme/app", &data).await;
    reg.push_blob("acme/other", &data).await;
    reg.assert_blob("acme/app", &data).await;
    reg.assert_blob("acme/other", &data).await;
}
