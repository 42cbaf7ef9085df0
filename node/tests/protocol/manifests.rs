//! Manifests: end-3, end-7a, end-9; media types, validation and repository names.

use serde_json::json;

use crate::common::*;

/// Pushes a config and `n` layers of the given media types to `repo`.
async fn push_parts(reg: &Reg, repo: &str, config_type: &str, layer_type: &str, n: usize) -> (Desc, Vec<Desc>) {
    let config = reg.push_desc(repo, config_type, &config_bytes()).await;
    let mut layers = vec![];
    for i in 0..n {
        layers.push(reg.push_desc(repo, layer_type, &random_bytes(1000 + i * 100)).await);
    }
    (config, layers)
}

/// Checks GET and HEAD by tag and by digest.
async fn assert_pullable(reg: &Reg, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
    let digest = sha256(body);
    for reference in [tag, digest.as_str()] {
        reg.assert_manifest(repo, reference, media_type, body).await;
        let h = reg.head_manifest(repo, reference).await;
        h.expect(200);
        assert_eq!(
            content_type(&h).as_deref(),
            Some(media_type),
            "HEAD Content-Type:\n{}",
            h.describe()
        );
        h.expect_header("docker-content-digest", &digest);
        assert_eq!(
            h.content_length(),
            Some(body.len() as u64),
            "HEAD Content-Length:\n{}",
            h.describe()
        );
        assert!(h.body.is_empty());
    }
}

/// end-7a + end-3: OCI image manifest by tag → 201 + Docker-Content-Digest + Location; GET/HEAD
/// by tag and digest; the Location is pullable.
#[tokio::test]
async fn oci_image_manifest_round_trip() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/app", OCI_CONFIG, OCI_LAYER, 2).await;
    let body = oci_manifest(&config, &layers, json!({"annotations": {"org.example.k": "v"}}));
    let r = reg.put_manifest("acme/app", "v1.0", OCI_MANIFEST, &body).await;
    r.expect(201);
    let digest = sha256(&body);
    r.expect_header("docker-content-digest", &digest);
    let loc = r.must_header("location");
    let g = reg.send("GET", &loc, &[("Accept", ACCEPT_ALL)], None).await;
    g.expect(200);
    assert!(g.body == body, "manifest at Location differs:\n{}", g.describe());
    assert_pullable(&reg, "acme/app", "v1.0", OCI_MANIFEST, &body).await;

    // Re-putting the same bytes is idempotent.
    reg.put_manifest_ok("acme/app", "v1.0", OCI_MANIFEST, &body).await;
    // Same bytes under a second tag.
    reg.put_manifest_ok("acme/app", "stable", OCI_MANIFEST, &body).await;
    assert_pullable(&reg, "acme/app", "stable", OCI_MANIFEST, &body).await;
    // A manifest with no layers is valid.
    let empty = oci_manifest(&config, &[], json!({}));
    reg.put_manifest_ok("acme/app", "nolayers", OCI_MANIFEST, &empty).await;
    assert_pullable(&reg, "acme/app", "nolayers", OCI_MANIFEST, &empty).await;
}

/// A tag moves when another manifest is pushed under it; the old one stays reachable by digest.
#[tokio::test]
async fn tag_overwrite_moves_tag() {
    let node = Node::start();
    let reg = node.reg();
    let (d1, b1) = reg.push_image("acme/app", "latest").await;
    let (d2, b2) = reg.push_image("acme/app", "latest").await;
    assert_ne!(d1, d2);
    reg.assert_manifest("acme/app", "latest", OCI_MANIFEST, &b2).await;
    reg.assert_manifest("acme/app", &d1, OCI_MANIFEST, &b1).await;
}

/// Docker image manifest v2 schema 2.
#[tokio::test]
async fn docker_schema2_manifest() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/dock", DOCKER_CONFIG, DOCKER_LAYER, 3).await;
    let body = docker_manifest(&config, &layers);
    reg.put_manifest_ok("acme/dock", "latest", DOCKER_MANIFEST, &body).await;
    assert_pullable(&reg, "acme/dock", "latest", DOCKER_MANIFEST, &body).await;
}

/// Docker manifest list and OCI image index over pushed child manifests.
#[tokio::test]
async fn manifest_list_and_image_index() {
    let node = Node::start();
    let reg = node.reg();
    let repo = "acme/multi";
    // Docker children.
    let mut docker_children = vec![];
    for arch in ["amd64", "arm64"] {
        let (config, layers) = push_parts(&reg, repo, DOCKER_CONFIG, DOCKER_LAYER, 1).await;
        let body = docker_manifest(&config, &layers);
        reg.put_manifest_ok(repo, &format!("docker-{arch}"), DOCKER_MANIFEST, &body)
            .await;
        docker_children.push((
            desc(DOCKER_MANIFEST, &body),
            json!({"architecture": arch, "os": "linux"}),
        ));
    }
    let list = index(DOCKER_LIST, &docker_children, json!({}));
    reg.put_manifest_ok(repo, "docker", DOCKER_LIST, &list).await;
    assert_pullable(&reg, repo, "docker", DOCKER_LIST, &list).await;

    // OCI children, the second pushed by digest only (untagged).
    let mut oci_children = vec![];
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let (config, layers) = push_parts(&reg, repo, OCI_CONFIG, OCI_LAYER, 1).await;
        let body = oci_manifest(&config, &layers, json!({}));
        let reference = if i == 0 { format!("oci-{arch}") } else { sha256(&body) };
        reg.put_manifest_ok(repo, &reference, OCI_MANIFEST, &body).await;
        oci_children.push((desc(OCI_MANIFEST, &body), json!({"architecture": arch, "os": "linux"})));
    }
    let idx = index(OCI_INDEX, &oci_children, json!({"annotations": {"org.example": "idx"}}));
    reg.put_manifest_ok(repo, "oci", OCI_INDEX, &idx).await;
    assert_pullable(&reg, repo, "oci", OCI_INDEX, &idx).await;

    // An index of indexes.
    let nested = index(
        OCI_INDEX,
        &[(desc(OCI_INDEX, &idx), serde_json::Value::Null)],
        json!({}),
    );
    reg.put_manifest_ok(repo, "nested", OCI_INDEX, &nested).await;
    assert_pullable(&reg, repo, "nested", OCI_INDEX, &nested).await;
}

/// A manifest referencing a blob the repository does not have → 400 MANIFEST_BLOB_UNKNOWN, and
/// nothing is stored.
#[tokio::test]
async fn manifest_with_missing_blob_rejected() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/app", OCI_CONFIG, OCI_LAYER, 1).await;
    let missing = desc(OCI_LAYER, &random_bytes(77));
    let missing_cfg = desc(OCI_CONFIG, &config_bytes());

    let b1 = oci_manifest(&config, &[layers[0].clone(), missing], json!({}));
    assert_error(
        &reg.put_manifest("acme/app", "t1", OCI_MANIFEST, &b1).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
    let b2 = oci_manifest(&missing_cfg, &layers, json!({}));
    assert_error(
        &reg.put_manifest("acme/app", "t2", OCI_MANIFEST, &b2).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );
    let b3 = docker_manifest(&desc(DOCKER_CONFIG, &config_bytes()), &[]);
    assert_error(
        &reg.put_manifest("acme/app", "t3", DOCKER_MANIFEST, &b3).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    );

    for (t, b) in [("t1", &b1), ("t2", &b2), ("t3", &b3)] {
        assert_error(&reg.get_manifest("acme/app", t).await, 404, "MANIFEST_UNKNOWN");
        assert_error(&reg.get_manifest("acme/app", &sha256(b)).await, 404, "MANIFEST_UNKNOWN");
    }
}

/// Invalid manifests → 400 MANIFEST_INVALID.
#[tokio::test]
async fn invalid_manifest_rejected() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/app", OCI_CONFIG, OCI_LAYER, 1).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"this is not json".to_vec()),
        ("truncated JSON", br#"{"schemaVersion": 2, "mediaType": "#.to_vec()),
        (
            "image manifest without config",
            serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [layers[0].json()]}))
                .unwrap(),
        ),
        (
            "layers is not an array",
            serde_json::to_vec(
                &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.json(), "layers": "x"}),
            )
            .unwrap(),
        ),
        (
            "schemaVersion 1",
            serde_json::to_vec(
                &json!({"schemaVersion": 1, "mediaType": OCI_MANIFEST, "config": config.json(), "layers": []}),
            )
            .unwrap(),
        ),
    ];
    for (what, body) in cases {
        let r = reg.put_manifest("acme/app", "bad", OCI_MANIFEST, &body).await;
        assert!(r.status == 400, "{what}:\n{}", r.describe());
        assert_error(&r, 400, "MANIFEST_INVALID");
    }
    assert_error(&reg.get_manifest("acme/app", "bad").await, 404, "MANIFEST_UNKNOWN");
}

/// PUT by digest: matching → 201; mismatching → 400 DIGEST_INVALID.
#[tokio::test]
async fn put_manifest_by_digest() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/app", OCI_CONFIG, OCI_LAYER, 1).await;
    let body = oci_manifest(&config, &layers, json!({}));
    let d = sha256(&body);
    reg.put_manifest_ok("acme/app", &d, OCI_MANIFEST, &body).await;
    reg.assert_manifest("acme/app", &d, OCI_MANIFEST, &body).await;

    let other = oci_manifest(&config, &[], json!({}));
    let wrong = unknown_digest();
    let r = reg.put_manifest("acme/app", &wrong, OCI_MANIFEST, &other).await;
    assert_error(&r, 400, "DIGEST_INVALID");
    assert_error(&reg.get_manifest("acme/app", &wrong).await, 404, "MANIFEST_UNKNOWN");
    assert_error(
        &reg.get_manifest("acme/app", &sha256(&other)).await,
        404,
        "MANIFEST_UNKNOWN",
    );
}

/// Over 4 MiB → 413 SIZE_INVALID (the spec: clients must be able to push manifests of at least
/// 4 MB, so exactly 4 MiB is accepted).
#[tokio::test]
async fn manifest_size_limit() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/app", OCI_CONFIG, OCI_LAYER, 1).await;
    let sized = |target: usize| -> Vec<u8> {
        let base = oci_manifest(&config, &layers, json!({"annotations": {"pad": ""}}));
        let pad = target - base.len();
        let b = oci_manifest(&config, &layers, json!({"annotations": {"pad": "x".repeat(pad)}}));
        assert_eq!(b.len(), target);
        b
    };
    let limit = 4 * 1024 * 1024;
    let big = sized(limit + 1);
    // A client must be able to read the 413: answering early and closing the connection while
    // the body is still arriving (no drain / lingering close, RFC 9112 §9.6) makes ordinary
    // clients see a broken pipe or reset instead of the error.
    let r = match reg
        .try_send(
            "PUT",
            "/v2/acme/app/manifests/big",
            &[("Content-Type", OCI_MANIFEST)],
            Some(big.clone()),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let host = node.host();
            let raw = raw_http(
                &host,
                vec![raw_request(
                    &host,
                    "PUT",
                    "/v2/acme/app/manifests/big",
                    &[("Content-Type", OCI_MANIFEST)],
                    &big,
                )],
                std::time::Duration::ZERO,
                false,
            )
            .await;
            panic!(
                "4 MiB + 1 manifest: the HTTP client got no response (transport error: {e}); the \
                 server closed the connection while the request body was still being sent. A raw \
                 client that ignores write errors saw: {}",
                match raw {
                    Ok(r) => r.describe(),
                    Err(e) => e,
                }
            );
        }
    };
    assert!(
        r.status == 413,
        "4 MiB + 1 manifest: want 413 SIZE_INVALID:\n{}",
        r.describe()
    );
    assert_error(&r, 413, "SIZE_INVALID");
    assert_error(&reg.get_manifest("acme/app", "big").await, 404, "MANIFEST_UNKNOWN");

    let ok = sized(limit);
    reg.put_manifest_ok("acme/app", "four-mib", OCI_MANIFEST, &ok).await;
    reg.assert_manifest("acme/app", "four-mib", OCI_MANIFEST, &ok).await;
}

/// Unknown tag / digest → 404 MANIFEST_UNKNOWN; unknown repository → 404.
#[tokio::test]
async fn unknown_manifest_is_404() {
    let node = Node::start();
    let reg = node.reg();
    reg.push_image("acme/app", "v1").await;
    assert_error(&reg.get_manifest("acme/app", "nope").await, 404, "MANIFEST_UNKNOWN");
    assert_error(
        &reg.get_manifest("acme/app", &unknown_digest()).await,
        404,
        "MANIFEST_UNKNOWN",
    );
    let h = reg.head_manifest("acme/app", "nope").await;
    assert_eq!(h.status, 404, "{}", h.describe());
    assert_error_in(
        &reg.get_manifest("acme/nothing", "v1").await,
        &[404],
        &["MANIFEST_UNKNOWN", "NAME_UNKNOWN"],
    );
    assert_error(&reg.get("/v2/acme/nothing/tags/list").await, 404, "NAME_UNKNOWN");
}

/// An invalid tag on PUT → 400 (TAG_INVALID / MANIFEST_INVALID).
#[tokio::test]
async fn invalid_tag_rejected() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/app", OCI_CONFIG, OCI_LAYER, 1).await;
    let body = oci_manifest(&config, &layers, json!({}));
    for tag in ["-lead", ".lead", &"a".repeat(129), "bad%21tag"] {
        let r = reg.put_manifest("acme/app", tag, OCI_MANIFEST, &body).await;
        assert_error_in(&r, &[400], &["TAG_INVALID", "MANIFEST_INVALID"]);
    }
    // 128 characters and the full alphabet are fine.
    for tag in ["a".repeat(128), "_A-z.0_9-".to_string()] {
        reg.put_manifest_ok("acme/app", &tag, OCI_MANIFEST, &body).await;
    }
}

/// Invalid repository names → 400 NAME_INVALID on every endpoint; valid edge cases accepted.
#[tokio::test]
async fn invalid_names_rejected() {
    let node = Node::start();
    let reg = node.reg();
    let host = node.host();
    let long = format!("acme/{}", "a".repeat(251)); // 256 chars
    assert_eq!(long.len(), 256);
    let invalid: Vec<String> = vec![
        "acme".into(),     // single segment
        "ACME/app".into(), // uppercase
        "acme/App".into(),
        "acme/a..b".into(), // `..`
        "acme/-app".into(),
        "acme/app-".into(),
        "acme/a___b".into(),
        "acme/app.".into(),
        long,
    ];
    let d = unknown_digest();
    let mut failures = vec![];
    for name in &invalid {
        let reqs: Vec<(&str, String)> = vec![
            ("GET", format!("/v2/{name}/tags/list")),
            ("GET", format!("/v2/{name}/manifests/latest")),
            ("HEAD", format!("/v2/{name}/manifests/latest")),
            ("PUT", format!("/v2/{name}/manifests/latest")),
            ("DELETE", format!("/v2/{name}/manifests/{d}")),
            ("GET", format!("/v2/{name}/blobs/{d}")),
            ("DELETE", format!("/v2/{name}/blobs/{d}")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
            ("POST", format!("/v2/{name}/blobs/uploads/?digest={EMPTY_DIGEST}")),
            ("POST", format!("/v2/acme/app/blobs/uploads/?mount={d}&from={name}")),
            ("GET", format!("/v2/{name}/referrers/{d}")),
        ];
        for (m, p) in reqs {
            let (h, body): (Vec<(&str, &str)>, Option<Vec<u8>>) = match m {
                "PUT" => (vec![("Content-Type", OCI_MANIFEST)], Some(b"{}".to_vec())),
                "POST" => (vec![], Some(vec![])),
                _ => (vec![], None),
            };
            let r = reg.send(m, &p, &h, body).await;
            let from_param = p.contains("&from=");
            if from_param {
                // An invalid `from` may be rejected (400 NAME_INVALID) or ignored (202 session).
                if r.status == 202
                    || (r.status == 400
                        && error_codes(&r.body)
                            .map(|c| c.contains(&"NAME_INVALID".to_string()))
                            .unwrap_or(false))
                {
                    continue;
                }
                failures.push(format!(
                    "{m} {p} (invalid `from`): want 202 or 400 NAME_INVALID\n{}",
                    r.describe()
                ));
                continue;
            }
            if r.status != 400 {
                failures.push(format!("{m} {p}: want 400 NAME_INVALID\n{}", r.describe()));
            } else if m != "HEAD" {
                match error_codes(&r.body) {
                    Ok(c) if c.iter().any(|c| c == "NAME_INVALID") => {}
                    other => failures.push(format!("{m} {p}: want NAME_INVALID, got {other:?}\n{}", r.describe())),
                }
            }
        }
    }
    // `..` segments, which URL parsers would normalise: raw requests. Taken literally the name
    // is invalid, and normalised (e.g. via a redirect) it is a single segment: NAME_INVALID
    // either way.
    for target in ["/v2/acme/../x/tags/list", "/v2/acme/x/../../y/tags/list"] {
        match raw_once(&host, raw_request(&host, "GET", target, &[], b"")).await {
            Ok(r)
                if r.status == 400
                    && error_codes(&r.body)
                        .map(|c| c.contains(&"NAME_INVALID".to_string()))
                        .unwrap_or(false) => {}
            Ok(r) => failures.push(format!("GET {target}: want 400 NAME_INVALID\n{}", r.describe())),
            Err(e) => failures.push(format!("GET {target}: {e}")),
        }
    }

    // Valid names at the edges.
    let max = format!("acme/{}", "b".repeat(250)); // 255 chars
    assert_eq!(max.len(), 255);
    for name in [
        "acme/app",
        "acme/team/web",
        "a0/b1/c2/d3",
        "acme/my-app_x.y",
        "acme/a--b",
        "acme/a__b",
        &max,
    ] {
        let r = reg
            .send("POST", &format!("/v2/{name}/blobs/uploads/"), &[], Some(vec![]))
            .await;
        if r.status != 202 {
            failures.push(format!("valid name {name}: want 202\n{}", r.describe()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} name check(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A Helm chart (OCI artifact): Helm config + chart layer media types; also a chart manifest
/// without a `mediaType` field (older Helm), typed only by Content-Type.
#[tokio::test]
async fn helm_chart_artifact() {
    let node = Node::start();
    let reg = node.reg();
    let repo = "acme/charts/mychart";
    let cfg = br#"{"name":"mychart","version":"0.1.0","description":"A Helm chart","apiVersion":"v2"}"#;
    let config = reg
        .push_desc(repo, "application/vnd.cncf.helm.config.v1+json", cfg)
        .await;
    let chart = reg
        .push_desc(
            repo,
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            &random_bytes(4096),
        )
        .await;
    let prov = reg
        .push_desc(
            repo,
            "application/vnd.cncf.helm.chart.provenance.v1.prov",
            b"-----BEGIN PGP SIGNED MESSAGE-----",
        )
        .await;
    let body = oci_manifest(
        &config,
        &[chart.clone(), prov],
        json!({"annotations": {"org.opencontainers.image.title": "mychart", "org.opencontainers.image.version": "0.1.0"}}),
    );
    reg.put_manifest_ok(repo, "0.1.0", OCI_MANIFEST, &body).await;
    assert_pullable(&reg, repo, "0.1.0", OCI_MANIFEST, &body).await;
    reg.assert_blob(repo, cfg).await;

    let old_style = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": config.json(),
        "layers": [chart.json()],
    }))
    .unwrap();
    reg.put_manifest_ok(repo, "0.0.9", OCI_MANIFEST, &old_style).await;
    assert_pullable(&reg, repo, "0.0.9", OCI_MANIFEST, &old_style).await;
    let (tags, _) = reg.tags(repo, "").await;
    assert_eq!(tags, vec!["0.0.9", "0.1.0"]);
}

/// end-9 by digest → 202; the digest and all its tags → 404; tags list no longer shows them.
#[tokio::test]
async fn delete_manifest_by_digest() {
    let node = Node::start();
    let reg = node.reg();
    let (d, body) = reg.push_image("acme/app", "t1").await;
    reg.put_manifest_ok("acme/app", "t2", OCI_MANIFEST, &body).await;
    let (_, keep) = reg.push_image("acme/app", "keep").await;

    reg.delete(&format!("/v2/acme/app/manifests/{d}")).await.expect(202);
    for reference in [d.as_str(), "t1", "t2"] {
        assert_error(&reg.get_manifest("acme/app", reference).await, 404, "MANIFEST_UNKNOWN");
        assert_eq!(reg.head_manifest("acme/app", reference).await.status, 404);
    }
    let (tags, _) = reg.tags("acme/app", "").await;
    assert_eq!(tags, vec!["keep"]);
    reg.assert_manifest("acme/app", "keep", OCI_MANIFEST, &keep).await;
    assert_error(
        &reg.delete(&format!("/v2/acme/app/manifests/{d}")).await,
        404,
        "MANIFEST_UNKNOWN",
    );

    // It can be pushed again.
    reg.put_manifest_ok("acme/app", "t1", OCI_MANIFEST, &body).await;
    reg.assert_manifest("acme/app", &d, OCI_MANIFEST, &body).await;
}

/// end-9 by tag → 202 removes only that tag; the manifest and its other tags remain.
#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let node = Node::start();
    let reg = node.reg();
    let (d, body) = reg.push_image("acme/app", "a").await;
    reg.put_manifest_ok("acme/app", "b", OCI_MANIFEST, &body).await;
    reg.delete("/v2/acme/app/manifests/a").await.expect(202);
    assert_error(&reg.get_manifest("acme/app", "a").await, 404, "MANIFEST_UNKNOWN");
    reg.assert_manifest("acme/app", "b", OCI_MANIFEST, &body).await;
    reg.assert_manifest("acme/app", &d, OCI_MANIFEST, &body).await;
    let (tags, _) = reg.tags("acme/app", "").await;
    assert_eq!(tags, vec!["b"]);
    assert_error(&reg.delete("/v2/acme/app/manifests/a").await, 404, "MANIFEST_UNKNOWN");
}

/// Parameters on the PUT Content-Type are ignored (registry SHOULD), and the GET Content-Type
/// carries the bare media type (registry SHOULD NOT add parameters).
#[tokio::test]
async fn content_type_parameters_ignored() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/app", OCI_CONFIG, OCI_LAYER, 1).await;
    let body = oci_manifest(&config, &layers, json!({}));
    let r = reg
        .send(
            "PUT",
            "/v2/acme/app/manifests/params",
            &[(
                "Content-Type",
                "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
            )],
            Some(body.clone()),
        )
        .await;
    r.expect(201);
    r.expect_header("docker-content-digest", &sha256(&body));
    let g = reg.get_manifest("acme/app", "params").await;
    g.expect(200);
    g.expect_header("content-type", OCI_MANIFEST);
    assert!(g.body == body);
}

/// Distribution spec 1.1, "Pushing Manifests" with `?tag=`: a PUT by digest with tag
/// parameters applies every tag and names each in an `OCI-Tag` header; an invalid tag among them
/// refuses the PUT and applies none.
#[tokio::test]
async fn manifest_put_by_digest_with_tag_parameters() {
    let node = Node::start();
    let reg = node.reg();
    let (config, layers) = push_parts(&reg, "acme/tagged", OCI_CONFIG, OCI_LAYER, 1).await;
    let body = oci_manifest(&config, &layers, json!({}));
    let digest = sha256(&body);
    let refused = reg
        .put_manifest(
            "acme/tagged",
            &format!("{digest}?tag=ok&tag=not%20a%20tag"),
            OCI_MANIFEST,
            &body,
        )
        .await;
    assert_error(&refused, 400, "TAG_INVALID");
    reg.get_manifest("acme/tagged", "ok").await.expect(404);
    let r = reg
        .put_manifest(
            "acme/tagged",
            &format!("{digest}?tag=v1&tag=stable&tag=v1"),
            OCI_MANIFEST,
            &body,
        )
        .await;
    r.expect(201);
    r.expect_header("docker-content-digest", &digest);
    assert_eq!(r.headers_all("oci-tag"), ["v1", "stable"], "{}", r.describe());
    for tag in ["v1", "stable"] {
        assert_pullable(&reg, "acme/tagged", tag, OCI_MANIFEST, &body).await;
    }
    // A PUT by tag answers no OCI-Tag (the tag is the reference).
    let r = reg.put_manifest("acme/tagged", "v2", OCI_MANIFEST, &body).await;
    r.expect(201);
    assert!(r.headers_all("oci-tag").is_empty(), "{}", r.describe());
}
