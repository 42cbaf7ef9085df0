//! Operating a cluster: health probes, Prometheus metrics and real load balancers. Three real
//! nodes, Debian's HAProxy running `deploy/haproxy/haproxy.cfg` and `keelson lb` in front:
//!
//! - every node answers `/healthz` and `/readyz` with 200;
//! - skopeo pushes through HAProxy and pulls back through `keelson lb`, byte-identical;
//! - `/metrics` is the Prometheus text format with the requests just made (by route and
//!   status), pulls, auth results and Raft state, and serves every series the Grafana
//!   dashboard in `deploy/grafana/` uses;
//! - the audit log records the push, a policy change and failed logins (on `/v2/` and on the
//!   token endpoint, as `docker login` checks a password) with actor, action, target, status,
//!   source and node; a tenancy administrator reads her tenancy's records and no other's;
//!   filters and pages work through the API and `keelson audit`; the records survive the loss
//!   of the node that answered them;
//! - a member removed from the cluster answers `/readyz` with 503 naming the reason, and both
//!   balancers stop sending it new connections: a run of requests through each succeeds
//!   without one reaching it (it would answer 503 to every one).
//!
//! Polled with deadlines, never slept for.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::cluster::Cluster;
use support::daemon::Daemon;
use support::free_port;
use support::lb::Lb;
use support::oci::{layout_blobs, skopeo, umoci_image};
use support::tools::{need, tool, wait_until};
use support::wire;

const THREE: [(u64, &str); 3] = [(1, "fd1"), (2, "fd2"), (3, "fd3")];
const ADMIN: &str = "operability-admin-token-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn get(addr: &str, path: &str, auth: &str) -> Result<(u16, String), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    wire::get(addr, None, path, auth).map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned()))
}

/// HAProxy with the deploy file, listening on `listen`, over the three nodes.
fn haproxy(dir: &Path, listen: &str, nodes: &[String]) -> Daemon {
    need("haproxy");
    let mut cmd = tool("haproxy");
    cmd.arg("-f")
        .arg(repo_root().join("deploy/haproxy/haproxy.cfg"))
        .arg("-db")
        .env("KEELSON_LISTEN", listen)
        .env("KEELSON_NODE1", &nodes[0])
        .env("KEELSON_NODE2", &nodes[1])
        .env("KEELSON_NODE3", &nodes[2])
        .env("KEELSON_CHECK_TLS", "");
    Daemon::spawn("haproxy", &mut cmd, dir.join("haproxy.log"))
}

/// The metric names a PromQL expression mentions (`keelson_…`, histogram suffixes kept).
fn series_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("keelson_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.push(name);
    }
    out
}

#[test]
fn probes_metrics_and_balancers_that_follow_readiness() {
    need("skopeo");
    need("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::form(tmp.path(), &THREE, |_| {
        vec![
            ("KEELSON_AUTH".to_string(), "enforce".to_string()),
            ("KEELSON_BOOTSTRAP_TOKEN".to_string(), ADMIN.to_string()),
        ]
    });
    let token = ADMIN.to_string();
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.host()).collect();

    // --- Probes ----------------------------------------------------------------------------------
    for node in &nodes {
        assert_eq!(get(node, "/healthz", "").unwrap().0, 200, "{node} /healthz");
        cluster.wait("every node ready", LIMIT, || match get(node, "/readyz", "") {
            Ok((200, body)) if body.starts_with("ready") => Ok(()),
            other => Err(format!("{node}: {other:?}")),
        });
    }

    // --- Push through HAProxy, pull through keelson lb ---------------------------------------------
    let ha_addr = format!("127.0.0.1:{}", free_port());
    let _ha = haproxy(tmp.path(), &ha_addr, &nodes);
    wait_until("haproxy answers", LIMIT, || match get(&ha_addr, "/v2/", "") {
        Ok((200 | 401, _)) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let lb = Lb::start(tmp.path(), &nodes, None);
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let layout = work.join("layout");
    umoci_image(&work, &layout, "v1", "amd64", 256 << 10, 5, LIMIT);
    let creds = format!("keelson/admin:{token}");
    cluster.run(
        skopeo(&work)
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", &creds])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{ha_addr}/ops/app:v1")),
        LIMIT,
    );
    let pulled = work.join("pulled");
    cluster.run(
        skopeo(&work)
            .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(format!("docker://{}/ops/app:v1", lb.addr))
            .arg(format!("oci:{}:v1", pulled.display())),
        LIMIT,
    );
    assert_eq!(
        layout_blobs(&pulled),
        layout_blobs(&layout),
        "pulled through keelson lb"
    );

    // A replication rule towards a region that cannot be reached: its lag and pending image
    // are what the replication series report.
    let keelson = |args: &[&str]| {
        cluster.run(
            Command::new(env!("CARGO_BIN_EXE_keelson"))
                .args(&args[..1])
                .args(["--node", &nodes[0]])
                .args(&args[1..])
                .env("KEELSON_USER", "keelson/admin")
                .env("KEELSON_TOKEN", &token),
            LIMIT,
        )
    };
    let peer_token = tmp.path().join("peer.token");
    std::fs::write(&peer_token, "unused-peer-token-0123456789").unwrap();
    keelson(&["region", "set", "iad"]);
    keelson(&[
        "region",
        "add-peer",
        "fra",
        "--url",
        &format!("http://127.0.0.1:{}", free_port()),
        "--peer-user",
        "keelson/admin",
        "--token-file",
        peer_token.to_str().unwrap(),
    ]);
    keelson(&["replication", "add-rule", "ops", "--to", "fra"]);

    // --- Metrics -------------------------------------------------------------------------------------
    let mut all_series = BTreeSet::new();
    let mut manifest_puts = 0u64;
    for node in &nodes {
        let (status, text) = get(node, "/metrics", "").unwrap();
        assert_eq!(status, 200, "{node} /metrics");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics/Prometheus text ends with # EOF");
        for line in text.lines() {
            // A family with no samples yet (no replication rule, say) is still declared.
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let name = declared.split(' ').next().unwrap_or_default();
                for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                    all_series.insert(format!("{name}{suffix}"));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name: String = line.chars().take_while(|c| *c != '{' && *c != ' ').collect();
            all_series.insert(name);
            if line.starts_with(r#"keelson_http_requests_total{route="manifest",method="PUT",status="201"}"#) {
                manifest_puts += line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
            }
        }
        assert!(
            text.contains(r#"keelson_replication_pending_images{rule=""#) && text.contains(r#"target="fra"} 1"#),
            "{node}: the pushed image is pending for fra: {text}"
        );
        assert!(text.contains("keelson_raft_term 1"), "{node}: {text}");
        assert!(text.contains("keelson_raft_members 3"), "{node}: {text}");
    }
    assert!(manifest_puts >= 1, "the manifest PUT is counted on some node");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/keelson-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            used.extend(series_in(target["expr"].as_str().unwrap()));
        }
    }
    assert!(used.len() >= 15, "the dashboard uses {used:?}");
    let missing: Vec<&String> = used.iter().filter(|s| !all_series.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses series no node serves: {missing:?}"
    );

    // --- The audit log ------------------------------------------------------------------------------
    let admin = |args: &[&str]| -> serde_json::Value {
        let out = cluster.run(
            Command::new(env!("CARGO_BIN_EXE_keelson"))
                .args(["admin", "--node", &nodes[1]])
                .args(args)
                .env("KEELSON_USER", "keelson/admin")
                .env("KEELSON_TOKEN", &token),
            LIMIT,
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    admin(&["tenancy-create", "acme"]);
    admin(&["user-create", "acme", "ann"]);
    admin(&["group-add", "acme", "Administrators", "ann"]);
    let ann = admin(&["token-create", "acme", "ann"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    admin(&[
        "policy-set",
        "acme",
        "admins",
        "allow group Administrators to manage repos in tenancy",
    ]);
    // Two refused logins: Basic on /v2/, and the token endpoint docker login uses.
    let wrong = |user: &str| {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("{user}:not-the-token"));
        format!("Authorization: Basic {raw}\r\n")
    };
    assert_eq!(get(&nodes[0], "/v2/", &wrong("acme/ann")).unwrap().0, 401);
    assert_eq!(
        get(
            &nodes[0],
            "/token?service=keelson&scope=repository:acme/x:pull",
            &wrong("acme/mallory")
        )
        .unwrap()
        .0,
        401
    );
    let audit = |node: &str, query: &str, who: &str| -> Result<serde_json::Value, String> {
        let (status, body) = get(node, &format!("/api/v1/audit?{query}"), who)?;
        if status != 200 {
            return Err(format!("{status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| e.to_string())
    };
    let ann_auth = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.encode(format!("acme/ann:{ann}"));
        format!("Authorization: Basic {raw}\r\n")
    };
    let actions = |page: &serde_json::Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    };
    cluster.wait(
        "the audit log holds the push, the policy and the failed logins",
        LIMIT,
        || {
            let ops = audit(&nodes[2], "namespace=ops", &basic_header(&token))?;
            let acme = audit(&nodes[2], "namespace=acme", &ann_auth)?;
            let (ops, acme) = (actions(&ops), actions(&acme));
            (ops.contains(&"manifest.put".to_string())
                && ops.contains(&"blob.push".to_string())
                && acme.contains(&"tenancy.policies.put".to_string())
                && acme.iter().filter(|a| *a == "auth.failed").count() == 2)
                .then_some(())
                .ok_or(format!("ops {ops:?}, acme {acme:?}"))
        },
    );
    let push = &audit(&nodes[2], "namespace=ops&action=manifest.", &basic_header(&token)).unwrap()["events"][0];
    assert_eq!(push["actor"], "keelson/admin", "{push}");
    assert_eq!(push["status"], 201, "{push}");
    assert_eq!(push["target"], "/v2/ops/app/manifests/v1", "{push}");
    assert_eq!(push["source"], "127.0.0.1", "{push}");
    assert!(push["node"].as_u64().is_some_and(|n| (1..=3).contains(&n)), "{push}");
    let failed = audit(&nodes[2], "namespace=acme&failed=true", &ann_auth).unwrap();
    let failed_actors: BTreeSet<&str> = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(failed_actors, BTreeSet::from(["acme/ann", "acme/mallory"]), "{failed}");
    // ann administers acme, not ops.
    let (status, _) = get(&nodes[2], "/api/v1/audit?namespace=ops", &ann_auth).unwrap();
    assert_eq!(status, 403);
    // Pages of one: each page's cursor leads to the next, older record.
    let first = audit(&nodes[2], "namespace=acme&n=1", &ann_auth).unwrap();
    let cursor = first["next"].as_str().expect("a next cursor").to_string();
    let second = audit(&nodes[2], &format!("namespace=acme&n=1&after={cursor}"), &ann_auth).unwrap();
    assert!(
        second["events"][0]["time_ms"].as_u64() <= first["events"][0]["time_ms"].as_u64()
            && second["events"][0] != first["events"][0],
        "{first} then {second}"
    );
    // The records are replicated: with the node that answered the push down, another has them.
    let answered = push["node"].as_u64().unwrap();
    cluster.node_mut(answered).kill();
    let survivor = cluster.nodes.iter().find(|n| n.id != answered).unwrap().host();
    let printed = cluster.run(
        Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args([
                "audit",
                "--node",
                &survivor,
                "--namespace",
                "ops",
                "--action",
                "manifest.put",
            ])
            .env("KEELSON_USER", "keelson/admin")
            .env("KEELSON_TOKEN", &token),
        LIMIT,
    );
    assert!(
        printed.contains("manifest.put") && printed.contains("/v2/ops/app/manifests/v1"),
        "{printed}"
    );
    println!("{printed}");
    cluster.node_mut(answered).restart();
    for node in &nodes {
        cluster.wait("every node ready again", LIMIT, || match get(node, "/readyz", "") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{node}: {other:?}")),
        });
    }

    // --- A removed member is not ready, and the balancers go around it --------------------------------
    cluster.cli(&nodes[0], &["remove", "3"]);
    let (status, body) = get(&nodes[2], "/readyz", "").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("removed"), "{body}");
    for (name, addr) in [("haproxy", ha_addr.as_str()), ("keelson lb", lb.addr.as_str())] {
        cluster.wait(&format!("{name} stops sending to the removed node"), LIMIT, || {
            for i in 0..12 {
                match get(addr, "/v2/ops/app/tags/list", &basic_header(&token)) {
                    Ok((200, _)) => {}
                    other => return Err(format!("request {i}: {other:?}")),
                }
            }
            Ok(())
        });
    }
}

fn basic_header(token: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("keelson/admin:{token}"));
    format!("Authorization: Basic {encoded}\r\n")
}
