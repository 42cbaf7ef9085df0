//! The two-region compose example in deploy/regions runs: `deploy/image.sh` builds the image
//! from the binary under test, `deploy/regions/up.sh` starts `iad` and `fra` (three nodes and a
//! `keelson lb` each, API and peers on TLS, identity enforced) on a private dockerd with
//! Debian's docker-compose, and the regions then behave as deploy/README.md says:
//!
//! - a user and token made in `iad` log in to `fra` over HTTPS; an identity write in `fra` is
//!   refused naming `iad`; the token's revocation reaches `fra`;
//! - a replication rule copies an image skopeo pushes to `iad` into `fra` over the TLS link
//!   between the regions (same digest);
//! - the wan link is cut (`fra`'s balancer leaves the `keelson-wan` network) while a tag moves
//!   in `iad`: the status shows the failure; once the link is back `fra` serves the new digest;
//! - `up.sh down` removes both regions.
//!
//! Polled with deadlines, never slept for. On failure the message carries every container's log.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::docker::Docker;
use support::free_port;
use support::oci::{skopeo, umoci_image};
use support::tools::{exec, need, tail, tool};

const LIMIT: Duration = Duration::from_secs(180);

/// The deployment under test: the private dockerd, the state folder and the two host ports.
struct Regions {
    docker: Docker,
    dir: PathBuf,
    iad_port: u16,
    fra_port: u16,
}

impl Regions {
    fn script(&self, args: &[&str]) -> Command {
        let mut cmd = tool("bash");
        cmd.arg(repo_root().join("deploy/regions/up.sh"))
            .args(args)
            .env("DOCKER_HOST", self.docker.host())
            .env("KEELSON_BIN", env!("CARGO_BIN_EXE_keelson"))
            .env("IAD_PORT", self.iad_port.to_string())
            .env("FRA_PORT", self.fra_port.to_string());
        cmd
    }

    /// Runs `cmd`, which must succeed; a failure panics with its output and the containers' logs.
    fn run(&self, cmd: &mut Command) -> String {
        let out = exec(cmd, LIMIT);
        assert!(
            out.ok,
            "{cmd:?} failed ({})\n--- stdout:\n{}\n--- stderr:\n{}\n{}",
            out.status,
            tail(&out.stdout, 6000),
            tail(&out.stderr, 6000),
            self.logs()
        );
        out.stdout
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        let names = exec(self.docker.cmd().args(["ps", "-a", "--format", "{{.Names}}"]), LIMIT);
        for name in names.stdout.lines() {
            let log = exec(self.docker.cmd().args(["logs", "--tail", "30", name]), LIMIT);
            all.push_str(&format!("\n--- {name}:\n{}{}", log.stdout, log.stderr));
        }
        all
    }

    fn wait(&self, what: &str, mut check: impl FnMut() -> Result<(), String>) {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            match check() {
                Ok(()) => return,
                Err(e) if std::time::Instant::now() >= deadline => {
                    panic!("{what}: not reached in {} s; last: {e}{}", LIMIT.as_secs(), self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn ca(&self, region: &str) -> PathBuf {
        self.dir.join("certs").join(region).join("ca.pem")
    }

    fn url(&self, region: &str) -> String {
        let port = if region == "iad" { self.iad_port } else { self.fra_port };
        format!("https://127.0.0.1:{port}")
    }

    /// `curl` against a region's balancer, trusting that region's CA: (status, body).
    fn curl(&self, region: &str, creds: &str, args: &[&str], path: &str) -> (u16, String) {
        let out = exec(
            tool("curl")
                .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
                .arg(self.ca(region))
                .args(["-u", creds])
                .args(args)
                .arg(format!("{}{path}", self.url(region))),
            LIMIT,
        );
        let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The `keelson` CLI against a region's balancer as `user`.
    fn keelson(&self, region: &str, user: &str, token: &str, args: &[&str]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keelson"));
        cmd.args(&args[..1])
            .arg("--node")
            .arg(self.url(region))
            .arg("--ca")
            .arg(self.ca(region))
            .args(&args[1..])
            .env("KEELSON_USER", user)
            .env("KEELSON_TOKEN", token);
        self.run(&mut cmd)
    }

    /// A tag's manifest digest in a region, or the status that answered instead.
    fn digest(&self, region: &str, creds: &str, repo: &str, tag: &str) -> Result<String, String> {
        let out = exec(
            tool("curl")
                .args(["-sS", "-I", "--cacert"])
                .arg(self.ca(region))
                .args(["-u", creds, "-H"])
                .arg("Accept: application/vnd.oci.image.manifest.v1+json")
                .arg(format!("{}/v2/{repo}/manifests/{tag}", self.url(region))),
            LIMIT,
        );
        out.stdout
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| v.trim().to_string())
            })
            .ok_or_else(|| tail(&out.stdout, 300).to_string())
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn two_region_compose_example_runs_replicates_and_heals() {
    for bin in ["docker-compose", "skopeo", "umoci", "curl", "busybox"] {
        need(bin);
    }
    let tmp = tempfile::tempdir().unwrap();
    let regions = Regions {
        docker: Docker::start(&tmp.path().join("docker")),
        dir: tmp.path().join("two-regions"),
        iad_port: free_port(),
        fra_port: free_port(),
    };
    let dir = regions.dir.to_str().unwrap().to_string();
    let up = regions.run(regions.script(&[&dir]).env("KEELSON_IMAGE", "keelson:compose-test"));
    println!("{up}");
    assert!(
        up.contains("--- iad: init (exit 0)") && up.contains("--- fra: init (exit 0)"),
        "{up}"
    );
    assert!(up.contains("region fra  home iad"), "{up}");
    let admin_token = std::fs::read_to_string(regions.dir.join("admin.token")).unwrap();
    let admin_creds = format!("keelson/admin:{admin_token}");

    // --- Identity from home, over HTTPS ------------------------------------------------------
    let admin = |args: &[&str]| -> Value {
        let out = regions.keelson("iad", "keelson/admin", &admin_token, &[&["admin"], args].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    admin(&["tenancy-create", "acme"]);
    admin(&["user-create", "acme", "ann"]);
    admin(&["group-add", "acme", "Administrators", "ann"]);
    let token = admin(&["token-create", "acme", "ann"]);
    let ann_token = token["token"].as_str().unwrap().to_string();
    let ann_id = token["id"].as_str().unwrap().to_string();
    let ann = format!("acme/ann:{ann_token}");
    regions.wait("ann's token works in fra", || {
        let (status, body) = regions.curl("fra", &ann, &[], "/v2/");
        (status == 200).then_some(()).ok_or(format!("{status} {body}"))
    });
    let (status, body) = regions.curl(
        "fra",
        &admin_creds,
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"namespace":"other"}"#,
        ],
        "/api/v1/tenancies",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("home region iad"), "{body}");

    // --- A replication rule; skopeo pushes to iad, fra serves the same digest ------------------
    let rule = regions.keelson(
        "iad",
        "acme/ann",
        &ann_token,
        &["replication", "add-rule", "acme", "--to", "fra", "--repos", "app/*"],
    );
    assert!(rule.starts_with("rule "), "{rule}");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let layout = work.join("layout");
    let v1 = umoci_image(&work, &layout, "v1", "amd64", 200 << 10, 7, LIMIT);
    let v2 = umoci_image(&work, &layout, "v2", "amd64", 200 << 10, 8, LIMIT);
    let cert_dir = work.join("iad-ca");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(regions.ca("iad"), cert_dir.join("ca.crt")).unwrap();
    let push = |tag: &str| {
        regions.run(
            skopeo(&work)
                .args(["copy", "--dest-creds", &ann, "--dest-cert-dir"])
                .arg(&cert_dir)
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://127.0.0.1:{}/acme/app/web:live", regions.iad_port)),
        );
    };
    push("v1");
    regions.wait("fra serves what iad was given", || {
        let there = regions.digest("fra", &ann, "acme/app/web", "live")?;
        (there == v1).then_some(()).ok_or(format!("fra has {there}, want {v1}"))
    });

    // --- Revocation reaches fra --------------------------------------------------------------
    let doomed = admin(&["token-create", "acme", "ann"]);
    let doomed_creds = format!("acme/ann:{}", doomed["token"].as_str().unwrap());
    regions.wait("the second token works in fra", || {
        let (status, _) = regions.curl("fra", &doomed_creds, &[], "/v2/");
        (status == 200).then_some(()).ok_or(format!("{status}"))
    });
    admin(&["token-revoke", "acme", "ann", doomed["id"].as_str().unwrap()]);
    regions.wait("the revocation reaches fra", || {
        let (status, _) = regions.curl("fra", &doomed_creds, &[], "/v2/");
        (status == 401).then_some(()).ok_or(format!("{status}"))
    });
    let _ = ann_id;

    // --- The wan link is cut while the tag moves; it heals -----------------------------------
    let fra_lb = regions.run(regions.docker.cmd().args([
        "ps",
        "-q",
        "--filter",
        "label=com.docker.compose.project=fra",
        "--filter",
        "label=com.docker.compose.service=lb",
    ]));
    let fra_lb = fra_lb.trim();
    assert!(!fra_lb.is_empty(), "no balancer container in fra");
    regions.run(
        regions
            .docker
            .cmd()
            .args(["network", "disconnect", "keelson-wan", fra_lb]),
    );
    push("v2");
    regions.wait("the status shows the cut", || {
        let status = regions.keelson(
            "iad",
            "acme/ann",
            &ann_token,
            &["replication", "status", "--namespace", "acme", "--json"],
        );
        let status: Value = serde_json::from_str(&status).map_err(|e| e.to_string())?;
        let row = &status["targets"][0];
        (row["pending_images"].as_u64() >= Some(1) && row["last_error"].is_string())
            .then_some(())
            .ok_or(format!("{status}"))
    });
    assert_eq!(regions.digest("fra", &ann, "acme/app/web", "live"), Ok(v1.clone()));
    regions.run(regions.docker.cmd().args([
        "network",
        "connect",
        "--alias",
        "fra.registry.test",
        "keelson-wan",
        fra_lb,
    ]));
    regions.wait("fra follows the moved tag after the link heals", || {
        let there = regions.digest("fra", &ann, "acme/app/web", "live")?;
        (there == v2).then_some(()).ok_or(format!("fra has {there}, want {v2}"))
    });
    let status = regions.keelson(
        "iad",
        "acme/ann",
        &ann_token,
        &["replication", "status", "--namespace", "acme"],
    );
    println!("{status}");
    // Whichever node the balancer picked, the status carries the leader's count of bytes sent.
    let status = regions.keelson(
        "iad",
        "acme/ann",
        &ann_token,
        &["replication", "status", "--namespace", "acme", "--json"],
    );
    let status: Value = serde_json::from_str(&status).unwrap();
    let sent = status["targets"][0]["bytes_sent"].as_u64().unwrap_or(0);
    assert!(sent >= 2 * (200 << 10), "two images' layers were sent: {status}");

    // --- Down ----------------------------------------------------------------------------------
    regions.run(
        regions
            .script(&["down", &dir])
            .env("KEELSON_IMAGE", "keelson:compose-test"),
    );
    let left = regions.run(regions.docker.cmd().args(["ps", "-aq"]));
    assert!(left.trim().is_empty(), "containers left after down: {left}");
}
