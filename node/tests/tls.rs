//! TLS for every client: a 3-node cluster whose API and peer certificates come from
//! `deploy/certs.sh`, behind `keelson lb` (which passes TLS through untouched). Real docker (the
//! CA where docker looks for it, no insecure-registry setting), containerd's `ctr` and skopeo
//! push and pull over HTTPS; a request relayed between nodes crosses in TLS with the caller's
//! identity; a certificate renewed on disk is served by every node without a restart while a
//! connection that started before the renewal keeps working; a plaintext client is refused.
//! The same binary checks what a node refuses to start with.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::cluster::Cluster;
use support::containerd::Containerd;
use support::content::{digest_of, pseudo_random, sha256_hex};
use support::docker::{busybox_rootfs_tar, Docker};
use support::lb::Lb;
use support::oci::skopeo;
use support::tools::{exec, need, wait_until};
use support::wire::{self, Conn};

const COMMAND_LIMIT: Duration = Duration::from_secs(300);
const ADMIN: &str = "tls-admin-token-0123456789abcdef";

/// `deploy/certs.sh DIR specs…`: the script operators run.
fn certs(dir: &Path, specs: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certs.sh");
    let out = exec(Command::new("bash").arg(script).arg(dir).args(specs), COMMAND_LIMIT);
    assert!(out.ok, "certs.sh failed: {}{}", out.stdout, out.stderr);
}

/// `/etc/docker/certs.d/<host:port>/ca.crt`, where dockerd looks for a registry's CA; removed
/// on drop.
struct DockerCa(PathBuf);

impl DockerCa {
    fn install(host: &str, ca: &Path) -> DockerCa {
        let dir = Path::new("/etc/docker/certs.d").join(host);
        fs::create_dir_all(&dir).expect("create /etc/docker/certs.d/<host> (tests run as root)");
        fs::copy(ca, dir.join("ca.crt")).unwrap();
        DockerCa(dir)
    }
}

impl Drop for DockerCa {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(cluster: &Cluster, cmd: &mut Command) -> String {
    cluster.run(cmd, COMMAND_LIMIT)
}

/// `keelson admin --node https://… --ca … --token ADMIN args…`.
fn admin(cluster: &Cluster, node: &str, ca: &Path, args: &[&str]) -> String {
    run(
        cluster,
        Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["admin", "--node", node, "--token", ADMIN])
            .arg("--ca")
            .arg(ca)
            .args(args),
    )
}

#[test]
fn tls_cluster_behind_the_balancer() {
    need("docker");
    need("dockerd");
    need("skopeo");
    need("ctr");
    need("openssl");
    let tmp = tempfile::tempdir().unwrap();
    let certs_dir = tmp.path().join("certs");
    // Peer certificates (mutual TLS between nodes) and API certificates, from one CA. The API
    // certificates name 127.0.0.1, which is both the nodes' and the balancer's address here.
    let api_specs = [
        "api1=127.0.0.1,localhost",
        "api2=127.0.0.1,localhost",
        "api3=127.0.0.1,localhost",
    ];
    let mut specs = vec!["peer1=127.0.0.1", "peer2=127.0.0.1", "peer3=127.0.0.1"];
    specs.extend(api_specs);
    certs(&certs_dir, &specs);
    let ca = certs_dir.join("ca.pem");
    let dir = certs_dir.clone();
    let cluster = Cluster::form(tmp.path(), &[(1, "fd1"), (2, "fd2"), (3, "fd3")], move |id| {
        let file = |name: String| dir.join(name).display().to_string();
        vec![
            ("KEELSON_AUTH".into(), "enforce".into()),
            ("KEELSON_BOOTSTRAP_TOKEN".into(), ADMIN.into()),
            ("KEELSON_TLS_CERT".into(), file(format!("api{id}.pem"))),
            ("KEELSON_TLS_KEY".into(), file(format!("api{id}.key"))),
            ("KEELSON_TLS_CA".into(), file("ca.pem".into())),
            ("KEELSON_TLS_RELOAD_MS".into(), "100".into()),
            ("KEELSON_PEER_TLS_CERT".into(), file(format!("peer{id}.pem"))),
            ("KEELSON_PEER_TLS_KEY".into(), file(format!("peer{id}.key"))),
            ("KEELSON_PEER_TLS_CA".into(), file("ca.pem".into())),
        ]
    });
    let lb = Lb::start(
        tmp.path(),
        &cluster.nodes.iter().map(|n| n.host()).collect::<Vec<_>>(),
        Some(&ca),
    );
    let lb_url = format!("https://{}", lb.addr);

    // A plaintext client gets no registry answer, from the balancer or from a node.
    for addr in [lb.addr.clone(), cluster.nodes[0].host()] {
        let plain = wire::get(addr.parse().unwrap(), None, "/v2/", "");
        assert!(
            !matches!(plain, Ok((200 | 401, _))),
            "plain HTTP to {addr} was answered: {plain:?}"
        );
    }
    // The Bearer challenge sends clients to the token endpoint over HTTPS.
    let mut conn = Conn::new(wire::tls_connect(lb.addr.parse().unwrap(), &ca).unwrap(), &lb.addr);
    let challenge = conn.request("GET", "/v2/", "", b"").unwrap();
    assert_eq!(challenge.status, 401);
    let realm = challenge.header("www-authenticate").unwrap_or_default().to_string();
    assert!(
        realm.contains(&format!("realm=\"https://{}/token\"", lb.addr)),
        "{realm}"
    );

    // Identity, administered over HTTPS with the CLI.
    admin(&cluster, &lb_url, &ca, &["tenancy-create", "demo"]);
    admin(&cluster, &lb_url, &ca, &["group-create", "demo", "devs"]);
    admin(&cluster, &lb_url, &ca, &["user-create", "demo", "ann"]);
    admin(&cluster, &lb_url, &ca, &["group-add", "demo", "devs", "ann"]);
    admin(
        &cluster,
        &lb_url,
        &ca,
        &[
            "policy-set",
            "demo",
            "devs",
            "allow group devs to manage repos in tenancy",
        ],
    );
    let created: serde_json::Value =
        serde_json::from_str(&admin(&cluster, &lb_url, &ca, &["token-create", "demo", "ann"])).unwrap();
    let token = created["token"].as_str().expect("token shown once").to_string();
    let creds = format!("demo/ann:{token}");
    let basic = {
        use base64::Engine;
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(&creds)
        )
    };

    // An upload opened on node 1 and finished on node 2: node 2 relays the PUT to node 1 over
    // TLS, with the caller's credentials, and node 3 serves the blob.
    let blob = pseudo_random(3 << 20, 41);
    let digest = digest_of(&blob);
    let (n1, n2, n3) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let mut on1 = Conn::new(wire::tls_connect(n1.api, &ca).unwrap(), &n1.host());
    let opened = on1
        .request("POST", "/v2/demo/relayed/blobs/uploads/", &basic, b"")
        .unwrap();
    assert_eq!(opened.status, 202, "{}", String::from_utf8_lossy(&opened.body));
    let location = opened.header("location").unwrap().to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    let mut on2 = Conn::new(wire::tls_connect(n2.api, &ca).unwrap(), &n2.host());
    let anonymous = on2
        .request("PUT", &format!("{location}{sep}digest={digest}"), "", b"")
        .unwrap();
    assert_eq!(
        anonymous.status, 401,
        "a relayed write without credentials must be refused"
    );
    let mut on2 = Conn::new(wire::tls_connect(n2.api, &ca).unwrap(), &n2.host());
    let put = on2
        .request("PUT", &format!("{location}{sep}digest={digest}"), &basic, &blob)
        .unwrap();
    assert_eq!(
        put.status,
        201,
        "{}{}",
        String::from_utf8_lossy(&put.body),
        cluster.logs()
    );
    let mut on3 = Conn::new(wire::tls_connect(n3.api, &ca).unwrap(), &n3.host());
    let got = on3
        .request("GET", &format!("/v2/demo/relayed/blobs/{digest}"), &basic, b"")
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(sha256_hex(&got.body), sha256_hex(&blob));

    // docker: the CA where docker looks for it, and no insecure-registry setting.
    let _docker_ca = DockerCa::install(&lb.addr, &ca);
    let docker = Docker::start(&tmp.path().join("docker"));
    run(
        &cluster,
        docker.cmd().args(["login", &lb.addr, "-u", "demo/ann", "-p", &token]),
    );
    let tar = busybox_rootfs_tar(tmp.path(), "pushed over TLS\n", COMMAND_LIMIT);
    let image = format!("{}/demo/web:v1", lb.addr);
    run(&cluster, docker.cmd().arg("import").arg(&tar).arg(&image));
    let id = run(
        &cluster,
        docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &image]),
    );
    run(&cluster, docker.cmd().args(["push", &image]));
    run(&cluster, docker.cmd().args(["rmi", &image]));
    run(&cluster, docker.cmd().args(["pull", &image]));
    assert_eq!(
        run(
            &cluster,
            docker.cmd().args(["image", "inspect", "-f", "{{.Id}}", &image])
        ),
        id
    );

    // skopeo with the CA in a certificate directory (TLS verification on, the default).
    let skopeo_certs = tmp.path().join("skopeo-certs");
    fs::create_dir_all(&skopeo_certs).unwrap();
    fs::copy(&ca, skopeo_certs.join("ca.crt")).unwrap();
    let copied = tmp.path().join("copied");
    run(
        &cluster,
        skopeo(tmp.path())
            .args(["copy", "--src-creds", &creds, "--src-cert-dir"])
            .arg(&skopeo_certs)
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}:v1", copied.display())),
    );
    let without_ca = exec(
        skopeo(tmp.path())
            .args(["inspect", "--raw", "--creds", &creds])
            .arg(format!("docker://{}/demo/web:v1", cluster.nodes[0].host())),
        COMMAND_LIMIT,
    );
    assert!(!without_ca.ok, "a certificate of an unknown CA must not be trusted");

    // containerd's ctr with the CA in a hosts.toml, as the CRI plugin (kubelet) reads it from
    // /etc/containerd/certs.d.
    let containerd = Containerd::start(&tmp.path().join("containerd"));
    let hosts_dir = tmp.path().join("containerd-certs.d");
    fs::create_dir_all(hosts_dir.join(&lb.addr)).unwrap();
    fs::write(
        hosts_dir.join(&lb.addr).join("hosts.toml"),
        format!(
            "server = \"https://{0}\"\n\n[host.\"https://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{1}\"\n",
            lb.addr,
            ca.display()
        ),
    )
    .unwrap();
    run(
        &cluster,
        containerd
            .ctr()
            .args([
                "images",
                "pull",
                "--snapshotter",
                "native",
                "--user",
                &creds,
                "--hosts-dir",
            ])
            .arg(&hosts_dir)
            .arg(&image),
    );

    // Renewal: a connection opened before it keeps working; every node serves the new
    // certificate on new connections, without a restart.
    let manifest = {
        let mut c = Conn::new(wire::tls_connect(lb.addr.parse().unwrap(), &ca).unwrap(), &lb.addr);
        let accept = "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json\r\n";
        let m = c
            .request("GET", "/v2/demo/web/manifests/v1", &format!("{basic}{accept}"), b"")
            .unwrap();
        assert_eq!(m.status, 200);
        serde_json::from_slice::<serde_json::Value>(&m.body).unwrap()
    };
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let layer_size = manifest["layers"][0]["size"].as_u64().unwrap() as usize;
    let mut pulling = Conn::new(wire::tls_connect(lb.addr.parse().unwrap(), &ca).unwrap(), &lb.addr);
    pulling
        .send("GET", &format!("/v2/demo/web/blobs/{layer}"), &basic, b"")
        .unwrap();
    let (status, _) = pulling.head().unwrap();
    assert_eq!(status, 200);
    let mut layer_bytes = pulling.body(1).unwrap();
    let before: Vec<Vec<u8>> = cluster
        .nodes
        .iter()
        .map(|n| wire::served_certificate(n.api, &ca).unwrap())
        .collect();
    certs(&certs_dir, &api_specs);
    for (node, old) in cluster.nodes.iter().zip(&before) {
        wait_until(
            &format!("node {} serves the renewed certificate", node.id),
            Duration::from_secs(30),
            || match wire::served_certificate(node.api, &ca) {
                Ok(now) if now != *old => Ok(()),
                other => Err(format!("{:?}", other.map(|c| c.len()))),
            },
        );
    }
    while layer_bytes.len() < layer_size {
        let rest = pulling.body(layer_size - layer_bytes.len()).unwrap();
        layer_bytes.extend_from_slice(&rest);
    }
    assert_eq!(format!("sha256:{}", sha256_hex(&layer_bytes)), layer);
    let again = pulling
        .request("HEAD", &format!("/v2/demo/web/blobs/{layer}"), &basic, b"")
        .unwrap();
    assert_eq!(
        again.status, 200,
        "the connection opened before the renewal still serves"
    );
    for n in &cluster.nodes {
        assert!(n.log().matches("API certificate reloaded").count() >= 1);
    }
    run(&cluster, docker.cmd().args(["rmi", &image]));
    run(&cluster, docker.cmd().args(["pull", &image]));
}

/// What a node refuses to start with: plain HTTP on an address other hosts can reach (unless
/// asked for explicitly), half a TLS configuration, a key that is not the certificate's.
#[test]
fn a_node_refuses_unsafe_or_broken_tls_settings() {
    need("openssl");
    let tmp = tempfile::tempdir().unwrap();
    let certs_dir = tmp.path().join("certs");
    certs(&certs_dir, &["a=127.0.0.1", "b=127.0.0.1"]);
    let serve = |args: &[&str]| {
        let data = tempfile::tempdir_in(tmp.path()).unwrap();
        let out = exec(
            Command::new(env!("CARGO_BIN_EXE_keelson"))
                .arg("serve")
                .arg("--data-dir")
                .arg(data.path())
                .args(args)
                .env_remove("KEELSON_TLS_CERT")
                .env_remove("KEELSON_TLS_KEY"),
            Duration::from_secs(60),
        );
        assert!(!out.ok, "keelson serve {args:?} must refuse to start");
        out.stderr
    };
    let said = serve(&["--listen", "0.0.0.0:0"]);
    assert!(said.contains("refusing to serve plain HTTP on 0.0.0.0:0"), "{said}");
    let cert = certs_dir.join("a.pem").display().to_string();
    let key_b = certs_dir.join("b.key").display().to_string();
    let said = serve(&["--listen", "0.0.0.0:0", "--tls-cert", &cert]);
    assert!(said.contains("missing tls-key"), "{said}");
    let said = serve(&["--listen", "127.0.0.1:0", "--tls-cert", &cert, "--tls-key", &key_b]);
    assert!(said.contains("API TLS"), "{said}");
    let not_pem = tmp.path().join("not.pem");
    fs::write(&not_pem, "hello").unwrap();
    let said = serve(&["--tls-cert", &not_pem.display().to_string(), "--tls-key", &key_b]);
    assert!(said.contains("no usable PEM certificate"), "{said}");
}
