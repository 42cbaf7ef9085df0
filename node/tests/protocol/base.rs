//! `/v2/` and malformed input.

use serde_json::json;

use crate::common::*;

/// end-1: `GET /v2/` → 200 with `Docker-Distribution-API-Version: registry/2.0`.
#[tokio::test]
async fn api_version_check() {
    let node = Node::start();
    let reg = node.reg();
    let r = reg.get("/v2/").await;
    r.expect(200);
    r.expect_header("docker-distribution-api-version", "registry/2.0");
    let h = reg.head("/v2/").await;
    h.expect(200);
}

/// One row of the garbage table.
struct Case {
    what: &'static str,
    req: Vec<u8>,
    /// Acceptable statuses; empty = anything below 500.
    statuses: &'static [u16],
    /// Acceptable error codes when the status is 4xx; empty = any known code.
    codes: &'static [&'static str],
    /// Whether a 4xx must carry a JSON error body (false only for HTTP-framing garbage that
    /// the HTTP layer rejects before routing).
    json: bool,
}

/// Bad methods, paths, parameters and bodies: never a 5xx, always a JSON error body on 4xx, and
/// the node still answers afterwards.
#[tokio::test]
async fn garbage_requests_never_get_5xx() {
    let node = Node::start();
    let reg = node.reg();
    let host = node.host();
    let h = host.as_str();

    // Some real state to aim at.
    let (mdigest, _) = reg.push_image("acme/app", "latest").await;
    let blob = random_bytes(100);
    let bdigest = reg.push_blob("acme/app", &blob).await;
    let unknown = unknown_digest();
    // Upload sessions as origin-form targets (a failed PUT may end a session, so each PUT
    // case gets its own).
    let mut sessions = vec![];
    for _ in 0..10 {
        let u = reg.start_upload("acme/app").await;
        sessions.push(reg.abs(&u.location).trim_start_matches(reg.base.as_str()).to_string());
    }
    let up = |i: usize| sessions[i].clone();
    let up_put = |i: usize, q: &str| with_query(&sessions[i], q);
    let long_tag = "a".repeat(200);
    let long_name = format!("acme/{}", "a".repeat(10_000));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let q = |m: &str, t: &str| raw_request(h, m, t, &[], b"");
    let qh = |m: &str, t: &str, hs: &[(&str, &str)], b: &[u8]| raw_request(h, m, t, hs, b);
    let mput = |body: &[u8]| {
        raw_request(
            h,
            "PUT",
            "/v2/acme/app/manifests/garbage",
            &[("Content-Type", OCI_MANIFEST)],
            body,
        )
    };
    let bad_desc_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:xyz", "size": 2},
        "layers": []
    }))
    .unwrap();
    let neg_size_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": bdigest, "size": -5},
        "layers": []
    }))
    .unwrap();
    let wrong_types_manifest =
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":"x","layers":7}}"#).into_bytes();

    const NF: &[u16] = &[404, 405];
    const BAD: &[u16] = &[400];
    const B_OR_NF: &[u16] = &[400, 404];
    const ANY: &[u16] = &[];

    let cases: Vec<Case> = vec![
        // --- methods ---
        Case { what: "PUT /v2/", req: q("PUT", "/v2/"), statuses: NF, codes: &[], json: true },
        Case { what: "DELETE /v2/", req: q("DELETE", "/v2/"), statuses: NF, codes: &[], json: true },
        Case { what: "POST /v2/<name>/manifests/<tag>", req: q("POST", "/v2/acme/app/manifests/latest"), statuses: NF, codes: &[], json: true },
        Case { what: "PATCH /v2/<name>/manifests/<tag>", req: q("PATCH", "/v2/acme/app/manifests/latest"), statuses: NF, codes: &[], json: true },
        Case { what: "POST /v2/<name>/tags/list", req: q("POST", "/v2/acme/app/tags/list"), statuses: NF, codes: &[], json: true },
        Case { what: "DELETE /v2/<name>/tags/list", req: q("DELETE", "/v2/acme/app/tags/list"), statuses: NF, codes: &[], json: true },
        Case { what: "PUT /v2/<name>/blobs/<digest>", req: q("PUT", &format!("/v2/acme/app/blobs/{bdigest}")), statuses: NF, codes: &[], json: true },
        Case { what: "PATCH /v2/<name>/blobs/<digest>", req: q("PATCH", &format!("/v2/acme/app/blobs/{bdigest}")), statuses: NF, codes: &[], json: true },
        Case { what: "POST /v2/<name>/blobs/<digest>", req: q("POST", &format!("/v2/acme/app/blobs/{bdigest}")), statuses: NF, codes: &[], json: true },
        Case { what: "PUT /v2/_catalog", req: q("PUT", "/v2/_catalog"), statuses: NF, codes: &[], json: true },
        Case { what: "POST /v2/<name>/referrers/<d>", req: q("POST", &format!("/v2/acme/app/referrers/{mdigest}")), statuses: NF, codes: &[], json: true },
        Case { what: "unknown method FROB /v2/", req: q("FROB", "/v2/"), statuses: &[400, 404, 405, 501], codes: &[], json: true },
        // --- paths ---
        Case { what: "GET /", req: q("GET", "/"), statuses: &[404], codes: &[], json: true },
        Case { what: "GET /v3/", req: q("GET", "/v3/"), statuses: &[404], codes: &[], json: true },
        Case { what: "GET /v2/<name>/nonsense", req: q("GET", "/v2/acme/app/nonsense"), statuses: B_OR_NF, codes: &[], json: true },
        Case { what: "GET /v2/<name>", req: q("GET", "/v2/acme/app"), statuses: B_OR_NF, codes: &[], json: true },
        Case { what: "GET /v2/<name>/blobs/uploads/ (no id)", req: q("GET", "/v2/acme/app/blobs/uploads/"), statuses: NF, codes: &[], json: true },
        Case { what: "GET blob not-a-digest", req: q("GET", "/v2/acme/app/blobs/not-a-digest"), statuses: B_OR_NF, codes: &["DIGEST_INVALID", "BLOB_UNKNOWN"], json: true },
        Case { what: "GET blob sha256:zzzz", req: q("GET", "/v2/acme/app/blobs/sha256:zzzz"), statuses: B_OR_NF, codes: &["DIGEST_INVALID", "BLOB_UNKNOWN"], json: true },
        Case { what: "GET blob sha256:<63 hex>", req: q("GET", &format!("/v2/acme/app/blobs/{}", &unknown[..unknown.len() - 1])), statuses: B_OR_NF, codes: &["DIGEST_INVALID", "BLOB_UNKNOWN"], json: true },
        Case { what: "GET blob unknown algorithm", req: q("GET", "/v2/acme/app/blobs/foo:abcdef"), statuses: B_OR_NF, codes: &["DIGEST_INVALID", "BLOB_UNKNOWN", "UNSUPPORTED"], json: true },
        Case { what: "GET manifest sha256:1234", req: q("GET", "/v2/acme/app/manifests/sha256:1234"), statuses: B_OR_NF, codes: &["DIGEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_INVALID"], json: true },
        Case { what: "GET manifest with 200-char tag", req: q("GET", &format!("/v2/acme/app/manifests/{long_tag}")), statuses: B_OR_NF, codes: &[], json: true },
        Case { what: "GET manifest with tag `-bad`", req: q("GET", "/v2/acme/app/manifests/-bad"), statuses: B_OR_NF, codes: &[], json: true },
        Case { what: "GET manifest empty reference", req: q("GET", "/v2/acme/app/manifests/"), statuses: B_OR_NF, codes: &[], json: true },
        Case { what: "GET referrers not-a-digest", req: q("GET", "/v2/acme/app/referrers/not-a-digest"), statuses: BAD, codes: &[], json: true },
        Case { what: "GET referrers of a tag", req: q("GET", "/v2/acme/app/referrers/latest"), statuses: BAD, codes: &[], json: true },
        Case { what: "GET 10000-char name", req: q("GET", &format!("/v2/{long_name}/tags/list")), statuses: &[400, 404, 414, 431], codes: &[], json: false },
        Case { what: "GET /v2/acme%2Fapp/tags/list", req: q("GET", "/v2/acme%2Fapp/tags/list"), statuses: ANY, codes: &[], json: true },
        Case { what: "GET /v2/acme/app%00/tags/list", req: q("GET", "/v2/acme/app%00/tags/list"), statuses: B_OR_NF, codes: &[], json: true },
        Case { what: "GET /v2/acme/app%ff/tags/list", req: q("GET", "/v2/acme/app%ff/tags/list"), statuses: B_OR_NF, codes: &[], json: true },
        Case { what: "GET /v2//acme/app/tags/list", req: q("GET", "/v2//acme/app/tags/list"), statuses: ANY, codes: &[], json: true },
        Case { what: "GET /v2/acme/../x/tags/list", req: q("GET", "/v2/acme/../x/tags/list"), statuses: B_OR_NF, codes: &[], json: true },
        // --- query parameters ---
        Case { what: "tags/list?n=abc", req: q("GET", "/v2/acme/app/tags/list?n=abc"), statuses: BAD, codes: &[], json: true },
        Case { what: "tags/list?n=-1", req: q("GET", "/v2/acme/app/tags/list?n=-1"), statuses: BAD, codes: &[], json: true },
        Case { what: "tags/list?n=1.5", req: q("GET", "/v2/acme/app/tags/list?n=1.5"), statuses: BAD, codes: &[], json: true },
        Case { what: "tags/list?n=<huge>", req: q("GET", "/v2/acme/app/tags/list?n=99999999999999999999999999"), statuses: &[200, 400], codes: &[], json: true },
        Case { what: "tags/list?last=", req: q("GET", "/v2/acme/app/tags/list?last="), statuses: ANY, codes: &[], json: true },
        Case { what: "_catalog?n=abc", req: q("GET", "/v2/_catalog?n=abc"), statuses: BAD, codes: &[], json: true },
        Case { what: "_catalog?n=-3", req: q("GET", "/v2/_catalog?n=-3"), statuses: BAD, codes: &[], json: true },
        Case { what: "referrers?artifactType=", req: q("GET", &format!("/v2/acme/app/referrers/{mdigest}?artifactType=")), statuses: ANY, codes: &[], json: true },
        // --- uploads ---
        Case { what: "PATCH Content-Range: garbage", req: qh("PATCH", &up(4), &[("Content-Range", "garbage")], b"hello"), statuses: &[400, 416], codes: &[], json: true },
        Case { what: "PATCH Content-Range: 5-2", req: qh("PATCH", &up(5), &[("Content-Range", "5-2")], b"hello"), statuses: &[400, 416], codes: &[], json: true },
        Case { what: "PATCH Content-Range: -1-3", req: qh("PATCH", &up(6), &[("Content-Range", "-1-3")], b"hello"), statuses: &[400, 416], codes: &[], json: true },
        Case { what: "PATCH Content-Range: 0-99999999999999999999999", req: qh("PATCH", &up(7), &[("Content-Range", "0-99999999999999999999999")], b"hello"), statuses: &[400, 416], codes: &[], json: true },
        Case { what: "PATCH Content-Range 0-9 with a 5-byte body", req: qh("PATCH", &up(8), &[("Content-Range", "0-9")], b"hello"), statuses: &[400, 416], codes: &[], json: true },
        Case { what: "PATCH Content-Range: bytes 0-4/5", req: qh("PATCH", &up(9), &[("Content-Range", "bytes 0-4/5")], b"hello"), statuses: &[202, 400, 416], codes: &[], json: true },
        Case { what: "PUT upload without digest", req: qh("PUT", &sessions[1], &[], b""), statuses: BAD, codes: &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"], json: true },
        Case { what: "PUT upload digest=", req: qh("PUT", &up_put(2, "digest="), &[], b""), statuses: BAD, codes: &["DIGEST_INVALID", "BLOB_UPLOAD_INVALID"], json: true },
        Case { what: "PUT upload digest=sha256:nothex", req: qh("PUT", &up_put(3, "digest=sha256:nothex"), &[], b""), statuses: BAD, codes: &["DIGEST_INVALID"], json: true },
        Case { what: "POST uploads ?digest=sha256:bad with body", req: qh("POST", "/v2/acme/app/blobs/uploads/?digest=sha256:bad", &[], b"hello"), statuses: BAD, codes: &["DIGEST_INVALID"], json: true },
        Case { what: "POST uploads ?mount=garbage", req: qh("POST", "/v2/acme/app/blobs/uploads/?mount=garbage&from=acme/other", &[], b""), statuses: &[202, 400], codes: &[], json: true },
        Case { what: "POST uploads ?mount=<d>&from=NOT/Valid", req: qh("POST", &format!("/v2/acme/app/blobs/uploads/?mount={unknown}&from=NOT/Valid..x"), &[], b""), statuses: &[202, 400], codes: &[], json: true },
        Case { what: "POST uploads ?mount=<d> without from", req: qh("POST", &format!("/v2/acme/other/blobs/uploads/?mount={unknown}"), &[], b""), statuses: &[201, 202, 400], codes: &[], json: true },
        Case { what: "GET upload not-a-uuid", req: q("GET", "/v2/acme/app/blobs/uploads/not-a-uuid"), statuses: B_OR_NF, codes: &["BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"], json: true },
        Case { what: "GET upload ../../etc", req: q("GET", "/v2/acme/app/blobs/uploads/..%2F..%2Fetc"), statuses: B_OR_NF, codes: &[], json: true },
        // --- manifests ---
        Case { what: "PUT manifest empty body", req: mput(b""), statuses: BAD, codes: &["MANIFEST_INVALID"], json: true },
        Case { what: "PUT manifest JSON null", req: mput(b"null"), statuses: BAD, codes: &["MANIFEST_INVALID"], json: true },
        Case { what: "PUT manifest JSON array", req: mput(b"[1,2,3]"), statuses: BAD, codes: &["MANIFEST_INVALID"], json: true },
        Case { what: "PUT manifest 100000-deep nesting", req: mput(deep.as_bytes()), statuses: &[400, 413], codes: &["MANIFEST_INVALID", "SIZE_INVALID"], json: true },
        Case { what: "PUT manifest invalid UTF-8", req: mput(b"{\"schemaVersion\":2,\"mediaType\":\"\xff\xfe\"}"), statuses: BAD, codes: &["MANIFEST_INVALID"], json: true },
        Case { what: "PUT manifest wrong field types", req: mput(&wrong_types_manifest), statuses: BAD, codes: &["MANIFEST_INVALID"], json: true },
        Case { what: "PUT manifest with malformed descriptor digest", req: mput(&bad_desc_manifest), statuses: BAD, codes: &["MANIFEST_INVALID", "DIGEST_INVALID"], json: true },
        Case { what: "PUT manifest with negative size", req: mput(&neg_size_manifest), statuses: BAD, codes: &["MANIFEST_INVALID"], json: true },
        Case { what: "PUT manifest by malformed digest", req: raw_request(h, "PUT", "/v2/acme/app/manifests/sha256:xyz", &[("Content-Type", OCI_MANIFEST)], b"{}"), statuses: BAD, codes: &["DIGEST_INVALID", "MANIFEST_INVALID", "TAG_INVALID"], json: true },
        Case { what: "DELETE unknown manifest digest", req: q("DELETE", &format!("/v2/acme/app/manifests/{unknown}")), statuses: &[404], codes: &["MANIFEST_UNKNOWN"], json: true },
        Case { what: "DELETE unknown blob", req: q("DELETE", &format!("/v2/acme/app/blobs/{unknown}")), statuses: &[404], codes: &["BLOB_UNKNOWN"], json: true },
        // --- blob Range garbage ---
        Case { what: "GET blob Range: bytes=abc", req: qh("GET", &format!("/v2/acme/app/blobs/{bdigest}"), &[("Range", "bytes=abc")], b""), statuses: &[200, 416], codes: &[], json: true },
        Case { what: "GET blob Range: bytes=50-10", req: qh("GET", &format!("/v2/acme/app/blobs/{bdigest}"), &[("Range", "bytes=50-10")], b""), statuses: &[200, 416], codes: &[], json: true },
        Case { what: "GET blob Range: items=0-1", req: qh("GET", &format!("/v2/acme/app/blobs/{bdigest}"), &[("Range", "items=0-1")], b""), statuses: &[200, 416], codes: &[], json: true },
        Case { what: "GET blob multi-range", req: qh("GET", &format!("/v2/acme/app/blobs/{bdigest}"), &[("Range", "bytes=0-1,5-6")], b""), statuses: &[200, 206, 416], codes: &[], json: true },
        Case { what: "GET blob Range: bytes=-0", req: qh("GET", &format!("/v2/acme/app/blobs/{bdigest}"), &[("Range", "bytes=-0")], b""), statuses: &[200, 416], codes: &[], json: true },
        // --- HTTP framing garbage (rejected before routing; no JSON required) ---
        Case { what: "PUT with Content-Length: abc", req: format!("PUT /v2/acme/app/manifests/x HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\nContent-Length: abc\r\n\r\n").into_bytes(), statuses: ANY, codes: &[], json: false },
        Case { what: "request line garbage", req: b"\x00\x01\x02 garbage\r\n\r\n".to_vec(), statuses: ANY, codes: &[], json: false },
    ];

    let mut failures = vec![];
    for c in cases {
        match raw_once(h, c.req).await {
            Err(e) => {
                // Closing the connection on HTTP-framing garbage is acceptable; otherwise not.
                if c.json {
                    failures.push(format!("{}: no response: {e}", c.what));
                }
            }
            Ok(r) => {
                if r.status >= 500 && !(c.statuses.contains(&r.status)) {
                    failures.push(format!("{}: 5xx\n{}", c.what, r.describe()));
                    continue;
                }
                if !c.statuses.is_empty() && !c.statuses.contains(&r.status) {
                    failures.push(format!(
                        "{}: expected status {:?}\n{}",
                        c.what,
                        c.statuses,
                        r.describe()
                    ));
                    continue;
                }
                if r.status >= 400 && c.json {
                    match error_codes(&r.body) {
                        Err(e) => failures.push(format!("{}: {e}\n{}", c.what, r.describe())),
                        Ok(codes) => {
                            if !c.codes.is_empty() && !codes.iter().any(|x| c.codes.contains(&x.as_str())) {
                                failures.push(format!("{}: expected code {:?}\n{}", c.what, c.codes, r.describe()));
                            }
                        }
                    }
                }
            }
        }
    }

    // Still alive and intact.
    reg.get("/v2/").await.expect(200);
    reg.assert_blob("acme/app", &blob).await;
    reg.get_manifest("acme/app", &mdigest).await.expect(200);
    // The garbage manifests were not stored under the tag.
    let r = reg.get_manifest("acme/app", "garbage").await;
    if r.status != 404 {
        failures.push(format!("a garbage manifest got stored:\n{}", r.describe()));
    }
    assert!(
        failures.is_empty(),
        "{} garbage request(s) mishandled:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
