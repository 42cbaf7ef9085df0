//! Logs and versions an operator relies on: `keelson --version` names the commit it was built
//! from; `--log-format json` (here `KEELSON_LOG_FORMAT=json`) writes one JSON object per line;
//! a request's id — the client's `X-Request-Id`, or one the node makes — is named in the answer
//! and follows the request to the leader when a follower forwards its write, so the leader's log
//! lines about it carry the same id.
//!
//! Polled with deadlines, never slept for.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::cluster::Cluster;
use support::tools::exec;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn version_names_the_commit() {
    let out = exec(
        std::process::Command::new(env!("CARGO_BIN_EXE_keelson")).arg("--version"),
        LIMIT,
    );
    assert!(out.ok, "{}", out.stderr);
    let git = exec(
        std::process::Command::new("git")
            .args(["describe", "--always", "--abbrev=12"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
        LIMIT,
    );
    let commit = if git.ok {
        git.stdout.trim().to_string()
    } else {
        "unknown".to_string()
    };
    assert_eq!(
        out.stdout.trim(),
        format!("keelson {} ({commit})", env!("CARGO_PKG_VERSION"))
    );
}

/// One `curl` request; (status, headers in lower case, body).
fn call(method: &str, url: &str, headers: &[&str], body: Option<&str>) -> (u16, String, String) {
    let mut cmd = support::tools::tool("curl");
    cmd.args(["-sS", "--max-time", "30", "-D", "-", "-X", method]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(url);
    let out = exec(&mut cmd, LIMIT);
    assert!(out.ok, "curl {method} {url}: {}", out.stderr);
    let (head, body) = out.stdout.split_once("\r\n\r\n").unwrap_or((&out.stdout, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[test]
fn json_logs_carry_the_request_id_across_forwarding() {
    support::tools::need("curl");
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::form(tmp.path(), &[(1, "fd1"), (2, "fd2"), (3, "fd3")], |_| {
        vec![
            ("KEELSON_AUTH".to_string(), "off".to_string()),
            ("KEELSON_LOG_FORMAT".to_string(), "json".to_string()),
            (
                "RUST_LOG".to_string(),
                "info,openraft=warn,keelson_raft=debug".to_string(),
            ),
        ]
    });
    let leader = cluster.wait_converged("one leader", &[1, 2, 3], LIMIT);
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let at = cluster.node(follower).host();

    // A write on a follower, forwarded to the leader, under the client's id.
    let (status, head, body) = call(
        "POST",
        &format!("http://{at}/api/v1/repos"),
        &["X-Request-Id: trace-me-0042"],
        Some(r#"{"name":"logs/app"}"#),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(header(&head, "x-request-id"), Some("trace-me-0042"));
    // Without one, the node makes one and names it.
    let (_, head, _) = call("GET", &format!("http://{at}/v2/"), &[], None);
    let made = header(&head, "x-request-id").expect("an id made for the request");
    assert_eq!(made.len(), 24, "{made}");
    // An unusable id (too long) is replaced.
    let long = format!("X-Request-Id: {}", "x".repeat(300));
    let (_, head, _) = call("GET", &format!("http://{at}/v2/"), &[&long], None);
    assert_eq!(header(&head, "x-request-id").map(str::len), Some(24));

    // The leader logged the forwarded write under the same id.
    cluster.wait("the leader's log names the request", LIMIT, || {
        let log = cluster.node(leader).log();
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|l| l["span"]["id"] == "trace-me-0042" && l["span"]["name"] == "request")
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "no line of the leader's log carries the id:\n{}",
                    support::tools::tail(&log, 3000)
                )
            })
    });
    // Every line every node wrote is one JSON object with a level and a message.
    for id in [1, 2, 3] {
        let log = cluster.node(id).log();
        assert!(!log.contains('\u{1b}'), "node {id}: no colour codes in a log file");
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("node {id}: {e}: {line}"));
            assert!(v["level"].is_string() && v["fields"].is_object(), "node {id}: {line}");
        }
    }
}
