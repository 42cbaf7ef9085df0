//! Two regions with real processes: `iad` (home) and `fra`, three `keelson serve` nodes each
//! behind its own `keelson lb`, linked with `keelson region` and replicating with
//! `keelson replication`, with identity enforced.
//!
//! - Identity comes from the home region: `fra`'s own bootstrap administrator is replaced by
//!   `iad`'s, a token created in `iad` works in `fra`, its revocation reaches `fra` (the delay
//!   is printed), and an identity write in `fra` is refused naming `iad`.
//! - A replication rule copies what skopeo and docker push in `iad` (a single-platform image,
//!   a two-platform index, a signature attached as a referrer) to `fra`, byte-identical
//!   (skopeo pulls it back from `fra`); the lag is printed. Tags outside the rule's pattern
//!   stay home.
//! - The link is cut (every `fra` node killed) while pushes and a tag move continue; the status
//!   shows what is pending and the failure; after `fra` returns it converges to exactly `iad`'s
//!   tags and digests, a deleted tag included (the rule replicates deletes).
//! - A 1 GiB layer under a throttled rule is cut off mid-copy; after `fra` returns the copy
//!   resumes where it stopped: the bytes sent stay far below twice the layer.
//!
//! Everything is polled with deadlines, never slept for. Logs: `<tempdir>/{iad,fra}/nK/keelson.log`.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::cluster::Cluster;
use support::content::{digest_of, pseudo_random};
use support::docker::{busybox_rootfs_tar, pushed_digest, Docker};
use support::lb::Lb;
use support::oci::{layout_blobs, skopeo, two_platform_layout, umoci_image};
use support::tools::need;

const IAD_ADMIN: &str = "iad-administrator-token-0123456789abcdef";
const FRA_ADMIN: &str = "fra-administrator-token-fedcba9876543210";
const LIMIT: Duration = Duration::from_secs(120);
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

fn region_env(token: &'static str) -> impl Fn(u64) -> Vec<(String, String)> {
    move |_| {
        [
            ("KEELSON_AUTH", "enforce"),
            ("KEELSON_BOOTSTRAP_TOKEN", token),
            ("KEELSON_REPLICAS", "2"),
            ("KEELSON_IDENTITY_SYNC_MS", "300"),
            ("KEELSON_REPLICATION_POLL_MS", "200"),
            ("KEELSON_REPLICATION_RECONCILE_MS", "1000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

const THREE: [(u64, &str); 3] = [(1, "fd1"), (2, "fd2"), (3, "fd3")];

/// `keelson <args>` against `node` as `user`/`token`; must succeed. Returns stdout.
fn keelson(cluster: &Cluster, node: &str, token: &str, args: &[&str]) -> String {
    cluster.run(
        Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(args)
            .args(["--node", node])
            .env("KEELSON_USER", "keelson/admin")
            .env("KEELSON_TOKEN", token),
        LIMIT,
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The status of a GET of `/v2/` at `host` as `user` with `token`.
async fn login_status(c: &reqwest::Client, host: &str, user: &str, token: &str) -> u16 {
    c.get(format!("http://{host}/v2/"))
        .basic_auth(user, Some(token))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Every tag of every repository of `acme` that `host` serves, with its digest (an `error`
/// entry when the region does not answer).
async fn tags_of(c: &reqwest::Client, host: &str, repos: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Err(e) = collect_tags(c, host, repos, &mut out).await {
        out.insert("error".into(), e);
    }
    out
}

/// The tags every member serves, or an "error" entry naming the first member that differs:
/// a wait on this holds until each member has applied what the balancer may route to it.
async fn tags_on_every_member(c: &reqwest::Client, members: &[String], repos: &[&str]) -> BTreeMap<String, String> {
    let Some((first, rest)) = members.split_first() else {
        return BTreeMap::new();
    };
    let seen = tags_of(c, first, repos).await;
    for host in rest {
        if tags_of(c, host, repos).await != seen {
            return BTreeMap::from([("error".to_string(), format!("{host} differs from {first}"))]);
        }
    }
    seen
}

async fn collect_tags(
    c: &reqwest::Client,
    host: &str,
    repos: &[&str],
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for repo in repos {
        let r = c
            .get(format!("http://{host}/v2/{repo}/tags/list?n=1000"))
            .basic_auth("keelson/admin", Some(IAD_ADMIN))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() == 404 {
            continue;
        }
        if r.status() != 200 {
            return Err(format!("tags of {repo}: {}", r.status()));
        }
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        for tag in body["tags"].as_array().into_iter().flatten() {
            let tag = tag.as_str().unwrap_or_default();
            let r = c
                .head(format!("http://{host}/v2/{repo}/manifests/{tag}"))
                .header("accept", ACCEPT)
                .basic_auth("keelson/admin", Some(IAD_ADMIN))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let digest = r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .ok_or(format!("{repo}:{tag}: {}", r.status()))?;
            out.insert(format!("{repo}:{tag}"), digest.to_string());
        }
    }
    Ok(())
}

/// Fetches `repo@reference` from `host` with everything it references (child manifests,
/// blobs), checking each digest; returns digest → size.
async fn fetch_tree(
    c: &reqwest::Client,
    host: &str,
    repo: &str,
    reference: &str,
) -> Result<BTreeMap<String, usize>, String> {
    let mut out = BTreeMap::new();
    let mut manifests = vec![reference.to_string()];
    while let Some(reference) = manifests.pop() {
        let r = c
            .get(format!("http://{host}/v2/{repo}/manifests/{reference}"))
            .header("accept", ACCEPT)
            .basic_auth("keelson/admin", Some(IAD_ADMIN))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != 200 {
            return Err(format!("{host} {repo}:{reference}: {}", r.status()));
        }
        let bytes = r.bytes().await.map_err(|e| e.to_string())?;
        out.insert(digest_of(&bytes), bytes.len());
        let m: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        for child in m["manifests"].as_array().into_iter().flatten() {
            manifests.push(child["digest"].as_str().unwrap_or_default().to_string());
        }
        let blobs = m["layers"].as_array().into_iter().flatten().chain(m.get("config"));
        for blob in blobs {
            let digest = blob["digest"].as_str().unwrap_or_default();
            let r = c
                .get(format!("http://{host}/v2/{repo}/blobs/{digest}"))
                .basic_auth("keelson/admin", Some(IAD_ADMIN))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() != 200 {
                return Err(format!("{host} blob {digest}: {}", r.status()));
            }
            let bytes = r.bytes().await.map_err(|e| e.to_string())?;
            if digest_of(&bytes) != digest {
                return Err(format!("{host} blob {digest} has other bytes"));
            }
            out.insert(digest.to_string(), bytes.len());
        }
    }
    Ok(out)
}

/// Pushes a blob monolithically as the administrator.
async fn push_blob(c: &reqwest::Client, host: &str, repo: &str, bytes: Vec<u8>) -> String {
    let digest = digest_of(&bytes);
    let r = c
        .post(format!("http://{host}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .basic_auth("keelson/admin", Some(IAD_ADMIN))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "push blob: {}", r.text().await.unwrap_or_default());
    digest
}

async fn put_manifest(c: &reqwest::Client, host: &str, repo: &str, reference: &str, manifest: &Value) -> String {
    let bytes = serde_json::to_vec(manifest).unwrap();
    let r = c
        .put(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .basic_auth("keelson/admin", Some(IAD_ADMIN))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "put manifest: {}", r.text().await.unwrap_or_default());
    digest_of(&bytes)
}

/// A small image of one layer pushed over HTTP; its manifest digest.
async fn push_small_image(c: &reqwest::Client, host: &str, repo: &str, tag: &str, seed: u64) -> String {
    let config = push_blob(
        c,
        host,
        repo,
        serde_json::to_vec(&json!({"architecture":"amd64","os":"linux","seed":seed})).unwrap(),
    )
    .await;
    let layer = pseudo_random(200 << 10, seed);
    let layer_len = layer.len();
    let layer = push_blob(c, host, repo, layer).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 47},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}],
    });
    put_manifest(c, host, repo, tag, &manifest).await
}

async fn replication_status(c: &reqwest::Client, host: &str) -> Value {
    c.get(format!("http://{host}/api/v1/replication/status?namespace=acme"))
        .basic_auth("keelson/admin", Some(IAD_ADMIN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The status row of `rule` (towards `fra`) on whichever `iad` node reports bytes sent.
async fn rule_row(c: &reqwest::Client, hosts: &[String], rule: &str) -> Value {
    let mut best = json!({});
    for host in hosts {
        let status = replication_status(c, host).await;
        for row in status["targets"].as_array().into_iter().flatten() {
            if row["rule"] == rule && row["bytes_sent"].as_u64() >= best["bytes_sent"].as_u64() {
                best = row.clone();
            }
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_share_identity_from_home_and_replicate_images_through_outages() {
    need("skopeo");
    need("umoci");
    need("docker");
    need("dockerd");
    let tmp = tempfile::tempdir().unwrap();
    let iad = Cluster::form(&tmp.path().join("iad"), &THREE, region_env(IAD_ADMIN));
    let mut fra = Cluster::form(&tmp.path().join("fra"), &THREE, region_env(FRA_ADMIN));
    let iad_lb = Lb::start(
        &tmp.path().join("iad"),
        &iad.nodes.iter().map(|n| n.host()).collect::<Vec<_>>(),
        None,
    );
    let fra_lb = Lb::start(
        &tmp.path().join("fra"),
        &fra.nodes.iter().map(|n| n.host()).collect::<Vec<_>>(),
        None,
    );
    let (iad_host, fra_host) = (iad_lb.addr.clone(), fra_lb.addr.clone());
    let c = client();
    let token_file = tmp.path().join("iad-admin.token");
    std::fs::write(&token_file, IAD_ADMIN).unwrap();
    let token_file = token_file.to_str().unwrap();

    // --- Regions and identity from home ------------------------------------------------------
    keelson(&iad, &iad_host, IAD_ADMIN, &["region", "set", "iad"]);
    keelson(&fra, &fra_host, FRA_ADMIN, &["region", "set", "fra", "--home", "iad"]);
    let iad_url = format!("http://{iad_host}");
    keelson(
        &fra,
        &fra_host,
        FRA_ADMIN,
        &[
            "region",
            "add-peer",
            "iad",
            "--url",
            &iad_url,
            "--peer-user",
            "keelson/admin",
            "--token-file",
            token_file,
        ],
    );
    // fra takes iad's identity whole: iad's administrator now works there, fra's own does not.
    // Every member must have applied the copy, since the balancer may send the next call anywhere.
    let fra_members: Vec<String> = fra.nodes.iter().map(|n| n.host()).collect();
    fra.wait("fra copies identity from iad", LIMIT, || {
        for host in &fra_members {
            let ok = futures_block(login_status(&c, host, "keelson/admin", IAD_ADMIN));
            let old = futures_block(login_status(&c, host, "keelson/admin", FRA_ADMIN));
            if !(ok == 200 && old == 401) {
                return Err(format!("{host}: iad admin {ok}, fra admin {old}"));
            }
        }
        Ok(())
    });
    fra.admin_token = Some(IAD_ADMIN.to_string());
    let shown = keelson(&fra, &fra_host, IAD_ADMIN, &["region", "show"]);
    assert!(
        shown.contains("region fra") && shown.contains("home iad"),
        "region show: {shown}"
    );
    let fra_url = format!("http://{fra_host}");
    keelson(
        &iad,
        &iad_host,
        IAD_ADMIN,
        &[
            "region",
            "add-peer",
            "fra",
            "--url",
            &fra_url,
            "--peer-user",
            "keelson/admin",
            "--token-file",
            token_file,
        ],
    );
    let v2 = c
        .get(format!("http://{fra_host}/v2/"))
        .basic_auth("keelson/admin", Some(IAD_ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(
        v2.headers().get("keelson-region").map(|v| v.to_str().unwrap()),
        Some("fra")
    );

    // A user and token made at home log in to fra.
    let admin = |args: &[&str]| -> Value {
        let out = keelson(&iad, &iad_host, IAD_ADMIN, &[&["admin"], args].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    admin(&["tenancy-create", "acme"]);
    admin(&["user-create", "acme", "ann"]);
    admin(&["group-add", "acme", "Administrators", "ann"]);
    let token = admin(&["token-create", "acme", "ann"]);
    let (ann_token, ann_token_id) = (
        token["token"].as_str().unwrap().to_string(),
        token["id"].as_str().unwrap().to_string(),
    );
    fra.wait("ann's token works in fra", LIMIT, || {
        let s = futures_block(login_status(&c, &fra_host, "acme/ann", &ann_token));
        (s == 200).then_some(()).ok_or(format!("status {s}"))
    });
    // Identity writes outside home are refused, naming home.
    let refused = c
        .post(format!("http://{fra_host}/api/v1/tenancies"))
        .basic_auth("keelson/admin", Some(IAD_ADMIN))
        .json(&json!({"namespace": "other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let text = refused.text().await.unwrap();
    assert!(text.contains("home region iad"), "refusal: {text}");
    // A second token for revocation, so ann keeps one.
    let doomed = admin(&["token-create", "acme", "ann"]);
    let (doomed_token, doomed_id) = (
        doomed["token"].as_str().unwrap().to_string(),
        doomed["id"].as_str().unwrap().to_string(),
    );
    fra.wait("the second token works in fra", LIMIT, || {
        let s = futures_block(login_status(&c, &fra_host, "acme/ann", &doomed_token));
        (s == 200).then_some(()).ok_or(format!("status {s}"))
    });
    let revoked_at = Instant::now();
    admin(&["token-revoke", "acme", "ann", &doomed_id]);
    fra.wait("the revocation reaches fra", LIMIT, || {
        let s = futures_block(login_status(&c, &fra_host, "acme/ann", &doomed_token));
        (s == 401).then_some(()).ok_or(format!("status {s}"))
    });
    println!(
        "revocation reached fra {} ms after it was made in iad",
        revoked_at.elapsed().as_millis()
    );
    let _ = ann_token_id;

    // --- A replication rule ------------------------------------------------------------------
    let rule_out = keelson(
        &iad,
        &iad_host,
        IAD_ADMIN,
        &[
            "replication",
            "add-rule",
            "acme",
            "--to",
            "fra",
            "--repos",
            "app/*",
            "--deletes",
        ],
    );
    let rule = rule_out.trim().strip_prefix("rule ").unwrap().to_string();
    // skopeo: one platform, then an index of two.
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let single = work.join("single");
    let single_digest = umoci_image(&work, &single, "v1", "amd64", 300 << 10, 31, LIMIT);
    let multi = work.join("multi");
    let (index_digest, _) = two_platform_layout(&work, &multi, "v1", LIMIT);
    let creds = format!("keelson/admin:{IAD_ADMIN}");
    for (layout, repo) in [(&single, "acme/app/web"), (&multi, "acme/app/multi")] {
        iad.run(
            skopeo(&work)
                .args(["copy", "--all", "--dest-tls-verify=false", "--dest-creds", &creds])
                .arg(format!("oci:{}:v1", layout.display()))
                .arg(format!("docker://{iad_host}/{repo}:v1")),
            LIMIT,
        );
    }
    // docker: an imported busybox root filesystem.
    let docker = Docker::start(&tmp.path().join("docker"));
    let tar = busybox_rootfs_tar(tmp.path(), "replicated across regions\n", LIMIT);
    iad.run(docker.cmd().args(["import"]).arg(&tar).arg("regions-local:v1"), LIMIT);
    iad.run(
        docker
            .cmd()
            .args(["login", &iad_host, "-u", "keelson/admin", "--password-stdin"])
            .stdin_str(IAD_ADMIN),
        LIMIT,
    );
    let docker_image = format!("{iad_host}/acme/app/tool:v1");
    iad.run(docker.cmd().args(["tag", "regions-local:v1", &docker_image]), LIMIT);
    let docker_digest = pushed_digest(&iad.run(docker.cmd().args(["push", &docker_image]), LIMIT));
    // A signature attached to the single-platform image as a referrer.
    let empty = push_blob(&c, &iad_host, "acme/app/web", b"{}".to_vec()).await;
    let signature = push_blob(&c, &iad_host, "acme/app/web", b"signature-bytes-of-web-v1".to_vec()).await;
    let referrer = put_manifest(
        &c,
        &iad_host,
        "acme/app/web",
        &format!("sha256-{}", &single_digest[7..]),
        &json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/vnd.example.signature", "digest": signature, "size": 25}],
            "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": single_digest, "size": 0},
        }),
    )
    .await;
    // Outside the rule: stays home.
    push_small_image(&c, &iad_host, "acme/base", "v1", 5).await;
    let pushed_at = Instant::now();

    let repos = ["acme/app/web", "acme/app/multi", "acme/app/tool", "acme/base"];
    let want_fra = |home: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        home.iter()
            .filter(|(k, _)| k.starts_with("acme/app/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let home_tags = tags_of(&c, &iad_host, &repos).await;
    assert_eq!(home_tags["acme/app/web:v1"], single_digest);
    assert_eq!(home_tags["acme/app/multi:v1"], index_digest);
    assert_eq!(home_tags["acme/app/tool:v1"], docker_digest);
    fra.wait("fra has every image the rule covers", LIMIT, || {
        let there = futures_block(tags_on_every_member(&c, &fra_members, &repos));
        (there == want_fra(&home_tags))
            .then_some(())
            .ok_or(format!("fra has {there:?}"))
    });
    println!(
        "replication lag: every covered image visible in fra {} ms after the last push",
        pushed_at.elapsed().as_millis()
    );
    // Byte-identical, referrer included; the repository outside the rule is not there.
    for (repo, reference) in [
        ("acme/app/web", "v1"),
        ("acme/app/multi", "v1"),
        ("acme/app/tool", "v1"),
        ("acme/app/web", referrer.as_str()),
    ] {
        let here = fetch_tree(&c, &iad_host, repo, reference).await.unwrap();
        let there = fetch_tree(&c, &fra_host, repo, reference).await.unwrap();
        assert_eq!(here, there, "{repo}:{reference} differs between regions");
    }
    let referrers: Value = c
        .get(format!("http://{fra_host}/v2/acme/app/web/referrers/{single_digest}"))
        .basic_auth("keelson/admin", Some(IAD_ADMIN))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(referrers["manifests"][0]["digest"], referrer.as_str(), "{referrers}");
    let pulled = work.join("pulled");
    fra.run(
        skopeo(&work)
            .args(["copy", "--all", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(format!("docker://{fra_host}/acme/app/multi:v1"))
            .arg(format!("oci:{}:v1", pulled.display())),
        LIMIT,
    );
    assert_eq!(
        layout_blobs(&pulled),
        layout_blobs(&multi),
        "skopeo pulls the index byte-identical from fra"
    );
    let status = rule_row(&c, &iad.nodes.iter().map(|n| n.host()).collect::<Vec<_>>(), &rule).await;
    assert_eq!(status["pending_images"], 0, "{status}");

    // --- The link is cut while pushes continue --------------------------------------------------
    for node in fra.nodes.iter_mut() {
        node.kill();
    }
    push_small_image(&c, &iad_host, "acme/app/web", "v2", 6).await;
    push_small_image(&c, &iad_host, "acme/app/late", "v1", 7).await;
    // A tag moves, and one is deleted.
    push_small_image(&c, &iad_host, "acme/app/web", "v1", 8).await;
    let deleted = c
        .delete(format!("http://{iad_host}/v2/acme/app/tool/manifests/v1"))
        .basic_auth("keelson/admin", Some(IAD_ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let hosts: Vec<String> = iad.nodes.iter().map(|n| n.host()).collect();
    iad.wait("the status shows the cut", LIMIT, || {
        let row = futures_block(rule_row(&c, &hosts, &rule));
        (row["pending_images"].as_u64() >= Some(3) && row["last_error"].is_string())
            .then_some(())
            .ok_or(format!("{row}"))
    });
    let cut = keelson(
        &iad,
        &iad_host,
        IAD_ADMIN,
        &["replication", "status", "--namespace", "acme"],
    );
    println!("while fra is down:\n{cut}");
    for node in fra.nodes.iter_mut() {
        node.restart();
    }
    let repos = [
        "acme/app/web",
        "acme/app/multi",
        "acme/app/tool",
        "acme/app/late",
        "acme/base",
    ];
    let home_tags = tags_of(&c, &iad_host, &repos).await;
    assert!(!home_tags.contains_key("acme/app/tool:v1"));
    fra.wait("fra converges to exactly iad's tags and digests", LIMIT, || {
        let there = futures_block(tags_on_every_member(&c, &fra_members, &repos));
        (there == want_fra(&home_tags))
            .then_some(())
            .ok_or(format!("fra has {there:?}, iad {home_tags:?}"))
    });
    iad.wait("the failure clears", LIMIT, || {
        let row = futures_block(rule_row(&c, &hosts, &rule));
        (row["pending_images"] == 0 && row["last_error"].is_null())
            .then_some(())
            .ok_or(format!("{row}"))
    });

    // --- A 1 GiB layer cut off mid-copy resumes ----------------------------------------------------
    let big_rule_out = keelson(
        &iad,
        &iad_host,
        IAD_ADMIN,
        &[
            "replication",
            "add-rule",
            "acme",
            "--to",
            "fra",
            "--repos",
            "big/*",
            "--bytes-per-second",
            "120000000",
        ],
    );
    let big_rule = big_rule_out.trim().strip_prefix("rule ").unwrap().to_string();
    let gib = 1usize << 30;
    let layer = pseudo_random(gib, 99);
    let layer_digest = push_blob(&c, &iad_host, "acme/big/data", layer).await;
    let config = push_blob(&c, &iad_host, "acme/big/data", b"{\"os\":\"linux\"}".to_vec()).await;
    put_manifest(
        &c,
        &iad_host,
        "acme/big/data",
        "v1",
        &json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 14},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": gib}],
        }),
    )
    .await;
    iad.wait("the big layer is a third copied", LIMIT, || {
        let row = futures_block(rule_row(&c, &hosts, &big_rule));
        (row["bytes_sent"].as_u64() >= Some(gib as u64 / 3))
            .then_some(())
            .ok_or(format!("{row}"))
    });
    for node in fra.nodes.iter_mut() {
        node.kill();
    }
    let at_cut = rule_row(&c, &hosts, &big_rule).await["bytes_sent"].as_u64().unwrap();
    assert!(at_cut < gib as u64, "cut before the end: {at_cut}");
    for node in fra.nodes.iter_mut() {
        node.restart();
    }
    fra.wait("the big image arrives", Duration::from_secs(300), || {
        let there = futures_block(tags_of(&c, &fra_host, &["acme/big/data"]));
        there
            .contains_key("acme/big/data:v1")
            .then_some(())
            .ok_or(format!("{there:?}"))
    });
    let sent = rule_row(&c, &hosts, &big_rule).await["bytes_sent"].as_u64().unwrap();
    println!("1 GiB layer: {at_cut} bytes sent before the cut, {sent} in all");
    // Bytes count once a PATCH is acknowledged: the chunk cut mid-way counts only for what the
    // target had not kept, so the total is the layer less at most one chunk.
    assert!(sent + (8 << 20) >= gib as u64, "every byte was sent: {sent}");
    assert!(
        sent < gib as u64 + gib as u64 / 2,
        "the copy resumed instead of restarting: {sent} bytes sent"
    );
    let there = fetch_tree(&c, &fra_host, "acme/big/data", "v1").await.unwrap();
    assert_eq!(there.get(&layer_digest), Some(&gib));

    // Home is cut off: fra keeps authenticating with the identity it copied last.
    let mut iad = iad;
    for node in iad.nodes.iter_mut() {
        node.kill();
    }
    assert_eq!(login_status(&c, &fra_host, "acme/ann", &ann_token).await, 200);
    let r = c
        .get(format!("http://{fra_host}/v2/acme/app/web/manifests/v2"))
        .header("accept", ACCEPT)
        .basic_auth("acme/ann", Some(&ann_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "fra serves its replicas while iad is down");
}

/// Runs a future to completion from a synchronous poll closure.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

trait StdinStr {
    fn stdin_str(&mut self, text: &str) -> &mut Self;
}

impl StdinStr for Command {
    /// Feeds `text` on stdin through a file (the run helpers only capture output).
    fn stdin_str(&mut self, text: &str) -> &mut Self {
        let path = std::env::temp_dir().join(format!("keelson-stdin-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        self.stdin(std::fs::File::open(&path).unwrap())
    }
}
