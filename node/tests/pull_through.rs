//! A pull-through cache in front of a real upstream: Debian's `docker-registry` (CNCF
//! distribution 2.8.2) started by the test, with an image pushed to it by skopeo.
//!
//! Through Keelson (`acme/hub/…` caches the upstream's `library/…`): the first pull is served
//! while the cache fills, byte-identical; with the upstream stopped a second pull still works
//! from the cache; a tag moved upstream is not seen within the TTL and is seen once the clock
//! (Keelson's test clock) passes it; with the upstream stopped again and the TTL passed, the
//! cached tag is still served. The cached image is an ordinary image afterwards (listed with
//! its size). Everything is polled with deadlines, never slept for.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::distribution::Distribution;
use support::oci::{layout_blobs, layout_ref, skopeo, umoci_image};
use support::tools::{exec, need, wait_until};
use support::Keelson;

const ADMIN: &str = "pull-through-administrator-token-0123456789";
const LIMIT: Duration = Duration::from_secs(120);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Runs a future to completion from synchronous code inside the test's runtime.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// `skopeo copy` of `from` to `to` that must succeed.
fn copy(work: &std::path::Path, args: &[&str], from: &str, to: &str) {
    let out = exec(skopeo(work).arg("copy").args(args).arg(from).arg(to), LIMIT);
    assert!(out.ok, "skopeo copy {from} {to}: {}\n{}", out.stdout, out.stderr);
}

fn digest_through(c: &reqwest::Client, keelson: &Keelson, reference: &str) -> Result<String, String> {
    let r = block(
        c.head(format!("{}/v2/acme/hub/app/manifests/{reference}", keelson.url()))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .basic_auth("keelson/admin", Some(ADMIN))
            .send(),
    )
    .map_err(|e| e.to_string())?;
    r.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or(format!("status {}", r.status()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_through_cache_fills_from_distribution_serves_through_outages_and_revalidates_after_its_ttl() {
    need("skopeo");
    need("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut upstream = Distribution::start(&tmp.path().join("upstream"));
    let first = work.join("first");
    let first_digest = umoci_image(&work, &first, "v1", "amd64", 700 << 10, 41, LIMIT);
    copy(
        &work,
        &["--dest-tls-verify=false"],
        &format!("oci:{}:v1", first.display()),
        &format!("docker://{}/library/app:v1", upstream.addr),
    );

    let keelson = Keelson::start_with_env(
        &tmp.path().join("keelson"),
        &[
            ("KEELSON_AUTH", "enforce"),
            ("KEELSON_BOOTSTRAP_TOKEN", ADMIN),
            ("KEELSON_TEST_CLOCK", "true"),
        ],
    );
    let cli = |args: &[&str]| {
        let out = exec(
            std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
                .args(args)
                .args(["--node", &keelson.host()])
                .env("KEELSON_USER", "keelson/admin")
                .env("KEELSON_TOKEN", ADMIN),
            LIMIT,
        );
        assert!(
            out.ok,
            "keelson {args:?}: {}\n{}\n{}",
            out.stdout,
            out.stderr,
            keelson.log()
        );
        out.stdout
    };
    cli(&["admin", "tenancy-create", "acme"]);
    let upstream_url = format!("http://{}", upstream.addr);
    cli(&[
        "cache",
        "add",
        "acme",
        "hub",
        "--upstream",
        &upstream_url,
        "--upstream-prefix",
        "library",
        "--ttl-seconds",
        "600",
    ]);
    let listed = cli(&["cache", "list", "acme"]);
    assert!(
        listed.contains("acme/hub") && listed.contains(&upstream_url),
        "{listed}"
    );

    // First pull: through Keelson, byte-identical to what the upstream has.
    let creds = format!("keelson/admin:{ADMIN}");
    let src = format!("docker://{}/acme/hub/app:v1", keelson.host());
    let pulled = work.join("pulled-1");
    copy(
        &work,
        &["--src-tls-verify=false", "--src-creds", &creds],
        &src,
        &format!("oci:{}:v1", pulled.display()),
    );
    assert_eq!(layout_blobs(&pulled), layout_blobs(&first));
    assert_eq!(layout_ref(&pulled, "v1")["digest"], first_digest.as_str());
    // The cache fills: the image becomes a stored image of the repository.
    let c = client();
    wait_until("the image is cached", LIMIT, || {
        let body: Value = block(async {
            let r = c
                .get(format!("{}/api/v1/repos/acme/hub/app/images", keelson.url()))
                .basic_auth("keelson/admin", Some(ADMIN))
                .send()
                .await?;
            r.json().await
        })
        .map_err(|e| e.to_string())?;
        let found = body["images"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["digest"] == first_digest.as_str() && i["tags"] == json!(["v1"]));
        found
            .then_some(())
            .ok_or_else(|| format!("images: {body}\n--- node log:\n{}", keelson.log()))
    });

    // The upstream goes away: the cache still serves the image.
    upstream.stop();
    let pulled = work.join("pulled-2");
    copy(
        &work,
        &["--src-tls-verify=false", "--src-creds", &creds],
        &src,
        &format!("oci:{}:v1", pulled.display()),
    );
    assert_eq!(layout_blobs(&pulled), layout_blobs(&first));

    // The tag moves upstream: not seen within the TTL, seen after it.
    upstream.restart();
    let second = work.join("second");
    let build = work.join("build-second");
    std::fs::create_dir_all(&build).unwrap();
    let second_digest = umoci_image(&build, &second, "v1", "amd64", 300 << 10, 42, LIMIT);
    assert_ne!(second_digest, first_digest);
    copy(
        &work,
        &["--dest-tls-verify=false"],
        &format!("oci:{}:v1", second.display()),
        &format!("docker://{}/library/app:v1", upstream.addr),
    );
    assert_eq!(
        digest_through(&c, &keelson, "v1").unwrap(),
        first_digest,
        "within the TTL the cached tag is served"
    );
    let moved = c
        .put(format!("{}/api/v1/cluster/clock", keelson.url()))
        .basic_auth("keelson/admin", Some(ADMIN))
        .json(&json!({"offset_ms": 601_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    assert_eq!(
        digest_through(&c, &keelson, "v1").unwrap(),
        second_digest,
        "after the TTL the moved tag is seen"
    );
    let pulled = work.join("pulled-3");
    copy(
        &work,
        &["--src-tls-verify=false", "--src-creds", &creds],
        &src,
        &format!("oci:{}:v1", pulled.display()),
    );
    assert_eq!(layout_blobs(&pulled), layout_blobs(&second));
    wait_until("the new image is cached under the tag", LIMIT, || {
        let body: Value = block(async {
            let r = c
                .get(format!("{}/v2/acme/hub/app/tags/list", keelson.url()))
                .basic_auth("keelson/admin", Some(ADMIN))
                .send()
                .await?;
            r.json().await
        })
        .map_err(|e| e.to_string())?;
        let fresh = digest_through(&c, &keelson, "v1")?;
        (body["tags"] == json!(["v1"]) && fresh == second_digest)
            .then_some(())
            .ok_or(format!("{body} {fresh}"))
    });

    // Upstream out and the TTL passed again: what is cached is still served.
    upstream.stop();
    let moved = c
        .put(format!("{}/api/v1/cluster/clock", keelson.url()))
        .basic_auth("keelson/admin", Some(ADMIN))
        .json(&json!({"offset_ms": 1_300_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let pulled = work.join("pulled-4");
    copy(
        &work,
        &["--src-tls-verify=false", "--src-creds", &creds],
        &src,
        &format!("oci:{}:v1", pulled.display()),
    );
    assert_eq!(layout_blobs(&pulled), layout_blobs(&second));
    // A tag never cached, with the upstream out, is unavailable (not unknown: the upstream
    // could not be asked).
    let r = c
        .get(format!("{}/v2/acme/hub/app/manifests/nope", keelson.url()))
        .basic_auth("keelson/admin", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "upstream down and nothing cached: unavailable");
}
