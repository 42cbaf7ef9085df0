//! The web console in a real browser. A node runs with identity enforced and a test clock, a
//! private dockerd gives docker a daemon, and `tests/console/e2e.py` drives Debian's headless
//! Chromium through Playwright: sign in (keyboard only), browse to an image docker pushed, see a
//! `docker pull` raise its pull count, create a repository, make it public and pull it
//! anonymously, delete an image and see its pull fail, check that a readme's `<script>` and a
//! hostile description stay text, be refused a change without the CSRF token, see a policy's
//! syntax error at its line and column before saving, create a token shown once that works for
//! `docker login`, see a read-only user offered no change, visit the cluster page, sign out,
//! and have a session expire when the registry's clock moves past it. The image page shows the
//! image's vulnerability findings (an OSV advisory imported here) and, once it is signed with a
//! key the cluster holds, its verified signature; the repository page shows it signed. Screenshots of the main
//! pages land in `target/console-screenshots/` (or `$KEELSON_SCREENSHOTS`).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::docker::{busybox_rootfs_tar_with, Docker};
use support::tools::{exec, need, tail, tool};
use support::Keelson;

const ADMIN: &str = "console-admin-token-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(120);
/// The advisory the console shows for the pushed image.
const ADVISORY: &str = "GHSA-test-console-lodash";

/// Imports one OSV advisory (lodash before 4.17.21, high) with `keelson vulndb import`.
fn import_advisory(node: &Keelson, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let advisory = serde_json::json!({
        "schema_version": "1.6.0",
        "id": ADVISORY,
        "modified": "2026-12-01T00:00:00Z",
        "summary": "prototype pollution in lodash (console test)",
        "database_specific": { "severity": "HIGH" },
        "affected": [{
            "package": { "ecosystem": "npm", "name": "lodash" },
            "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0" }, { "fixed": "4.17.21" }] }],
        }],
    });
    std::fs::write(dir.join(format!("{ADVISORY}.json")), advisory.to_string()).unwrap();
    let out = exec(
        std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["vulndb", "import"])
            .arg(dir)
            .env("KEELSON_NODE", node.host())
            .env("KEELSON_USER", "keelson/admin")
            .env("KEELSON_TOKEN", ADMIN),
        LIMIT,
    );
    assert!(out.ok, "keelson vulndb import: {}{}", out.stdout, out.stderr);
}

fn screenshots_dir() -> PathBuf {
    std::env::var_os("KEELSON_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("console-screenshots")
        })
}

#[test]
fn the_console_works_in_a_real_browser() {
    need("chromium");
    need("python3");
    let probe = exec(tool("python3").args(["-c", "import playwright.sync_api"]), LIMIT);
    assert!(
        probe.ok,
        "the playwright Python package is missing (scripts/install-deps.sh installs it): {}",
        probe.stderr
    );
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start_with_env(
        &tmp.path().join("node"),
        &[
            ("KEELSON_AUTH", "enforce"),
            ("KEELSON_BOOTSTRAP_TOKEN", ADMIN),
            ("KEELSON_TEST_CLOCK", "true"),
            ("KEELSON_MAX_TOKENS_PER_USER", "5"),
            ("KEELSON_PULL_FLUSH_MS", "600000"),
            ("KEELSON_SCANNER", "true"),
        ],
    );
    let docker = Docker::start(&tmp.path().join("docker"));
    // The pushed image carries an npm lock file with a lodash the advisory below affects; the
    // node scans it and the browser shows the finding.
    let lock = serde_json::json!({
        "name": "web", "lockfileVersion": 3,
        "packages": {
            "": { "name": "web", "dependencies": { "lodash": "^4.17.0" } },
            "node_modules/lodash": { "version": "4.17.20" },
        },
    })
    .to_string();
    let tar = busybox_rootfs_tar_with(
        tmp.path(),
        "shown in the console\n",
        &[("srv/web/package-lock.json", lock.as_bytes())],
        LIMIT,
    );
    import_advisory(&node, &tmp.path().join("osv"));
    let import = exec(docker.cmd().args(["import"]).arg(&tar).arg("console-local:v1"), LIMIT);
    assert!(import.ok, "docker import: {}", import.stderr);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let shots = screenshots_dir();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/e2e.py");
    let out = exec(
        tool("python3")
            .arg(&script)
            .env("KEELSON_URL", node.url())
            .env("ADMIN_TOKEN", ADMIN)
            .env("ADVISORY", ADVISORY)
            .env("DOCKER", need("docker"))
            .env("DOCKER_HOST", docker.host())
            .env("DOCKER_LOCAL", "console-local:v1")
            .env("WORK", &work)
            .env("SCREENSHOTS", &shots),
        Duration::from_secs(600),
    );
    println!("{}", out.stdout);
    assert!(
        out.ok,
        "the browser test failed ({}):\n--- stdout:\n{}\n--- stderr:\n{}\n--- node log:\n{}",
        out.status,
        tail(&out.stdout, 6000),
        tail(&out.stderr, 8000),
        tail(&node.log(), 6000)
    );
    for page in [
        "tenancy",
        "repository",
        "image",
        "image-supply-chain",
        "policy-error",
        "tokens",
        "cluster",
    ] {
        assert!(shots.join(format!("{page}.png")).is_file(), "no screenshot of {page}");
    }
}
