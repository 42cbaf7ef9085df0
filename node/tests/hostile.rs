//! Hostile callers against real nodes: who may initialise a pristine node, and the settings a
//! node refuses at the door.

mod support;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::wire::Conn;

/// A `keelson serve` in cluster mode (not yet initialised) with identity enforced, its API bound
/// to `listen`; killed on drop.
struct Pristine {
    api_port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Pristine {
    fn start(dir: &Path, listen: &str, extra: &[&str], env: &[(&str, &str)]) -> Pristine {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join("keelson.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", listen, "--peer-listen", "127.0.0.1:0", "--auth", "enforce"])
            .args(extra)
            .env_remove("KEELSON_BOOTSTRAP_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn keelson");
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr_file = dir.join("keelson.addr");
        let api_port = loop {
            if let Some(addr) = std::fs::read_to_string(&addr_file)
                .ok()
                .and_then(|t| t.trim().parse::<SocketAddr>().ok())
            {
                break addr.port();
            }
            assert!(Instant::now() < deadline, "node did not bind");
            std::thread::sleep(Duration::from_millis(20));
        };
        Pristine {
            api_port,
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// `POST /api/v1/cluster/init` from `ip` (the connection's source is that address).
    fn init_from(&self, ip: IpAddr, authorization: &str) -> (u16, serde_json::Value) {
        let stream = TcpStream::connect((ip, self.api_port)).expect("connect");
        let mut conn = Conn::new(stream, &format!("{ip}:{}", self.api_port));
        let answer = conn
            .request("POST", "/api/v1/cluster/init", authorization, b"")
            .expect("init answered");
        let body = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
        (answer.status, body)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("keelson.log")).unwrap_or_default()
    }
}

impl Drop for Pristine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This host's first non-loopback IPv4 address: a caller that is not on the node's own host as
/// far as the node can tell.
fn outside_address() -> IpAddr {
    let out = Command::new("hostname").arg("-I").output().expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .expect("this test needs a non-loopback IPv4 address on the host (hostname -I)")
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn a_pristine_node_cannot_be_initialised_by_a_stranger() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = outside_address();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();

    // No bootstrap token: a caller from another address is refused and learns no token; the
    // node's own host may initialise it and is shown the generated token once.
    let open = Pristine::start(&tmp.path().join("a"), "0.0.0.0:0", &["--insecure-http", "true"], &[]);
    assert!(
        open.log().contains("--insecure-http"),
        "the clear-text warning is logged"
    );
    let (status, body) = open.init_from(outside, "");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert!(body.get("admin_token").is_none());
    let (status, body) = open.init_from(outside, &basic("keelson/admin", "guessed"));
    assert_eq!(status, 403, "{body}");
    let (status, body) = open.init_from(loopback, "");
    assert_eq!(status, 200, "{body}");
    assert!(body["admin_token"].as_str().is_some_and(|t| t.len() >= 16), "{body}");
    // Initialised: init is now the administrator's alone, from anywhere.
    let (status, _) = open.init_from(loopback, "");
    assert_eq!(status, 401);

    // With a bootstrap token: init must present it, even from loopback, and the answer never
    // carries it.
    const SECRET: &str = "bootstrap-secret-0123456789abcdef";
    let guarded = Pristine::start(
        &tmp.path().join("b"),
        "127.0.0.1:0",
        &[],
        &[("KEELSON_BOOTSTRAP_TOKEN", SECRET)],
    );
    for authorization in ["".to_string(), basic("keelson/admin", "wrong")] {
        let (status, body) = guarded.init_from(loopback, &authorization);
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    }
    let (status, body) = guarded.init_from(loopback, &basic("keelson/admin", SECRET));
    assert_eq!(status, 200, "{body}");
    assert!(body.get("admin_token").is_none(), "{body}");
}

/// Sessions in a node's uploads directory.
fn sessions_on_disk(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("uploads")).map_or(0, |d| d.count())
}

#[test]
fn abandoned_uploads_expire_with_their_files_and_are_bounded() {
    const SESSIONS: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let node = support::Keelson::start_with_env(
        tmp.path(),
        &[
            ("KEELSON_AUTH", "off"),
            ("KEELSON_TEST_CLOCK", "true"),
            ("KEELSON_MAX_UPLOADS_PER_USER", "10001"),
            ("KEELSON_UPLOAD_SWEEP_MS", "100"),
        ],
    );
    let mut conn = Conn::new(TcpStream::connect(node.addr).unwrap(), &node.host());
    let open = |conn: &mut Conn<TcpStream>| {
        let a = conn
            .request("POST", "/v2/demo/abandoned/blobs/uploads/", "", b"")
            .unwrap();
        assert_eq!(a.status, 202);
        a.header("location").unwrap().to_string()
    };
    // 10,000 abandoned sessions, every hundredth with some bytes in it; one that stays in use.
    let mut abandoned = Vec::new();
    for i in 0..SESSIONS {
        let location = open(&mut conn);
        if i % 100 == 0 {
            let patched = conn.request("PATCH", &location, "", &[7u8; 4096]).unwrap();
            assert_eq!(patched.status, 202);
        }
        abandoned.push(location);
    }
    let active = open(&mut conn);
    assert_eq!(sessions_on_disk(&node.data_dir), SESSIONS + 1);
    // The bound: one more is refused with 429 and Retry-After, and nothing is left behind.
    let refused = conn
        .request("POST", "/v2/demo/abandoned/blobs/uploads/", "", b"")
        .unwrap();
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
    assert!(String::from_utf8_lossy(&refused.body).contains("TOOMANYREQUESTS"));
    assert_eq!(sessions_on_disk(&node.data_dir), SESSIONS + 1);

    // 40 minutes on, the active session is used; 21 more, and everything else has been idle
    // for over an hour.
    let set_clock = |conn: &mut Conn<TcpStream>, minutes: u64| {
        let body = format!("{{\"offset_ms\": {}}}", minutes * 60_000);
        let a = conn
            .request("PUT", "/api/v1/cluster/clock", "", body.as_bytes())
            .unwrap();
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    };
    set_clock(&mut conn, 40);
    let blob = [9u8; 1000];
    let patched = conn.request("PATCH", &active, "", &blob).unwrap();
    assert_eq!(patched.status, 202);
    set_clock(&mut conn, 61);
    support::tools::wait_until(
        "idle sessions expire",
        Duration::from_secs(60),
        || match sessions_on_disk(&node.data_dir) {
            1 => Ok(()),
            n => Err(format!("{n} sessions on disk")),
        },
    );
    let gone = conn.request("GET", &abandoned[0], "", b"").unwrap();
    assert_eq!(gone.status, 404);
    assert!(String::from_utf8_lossy(&gone.body).contains("BLOB_UPLOAD_UNKNOWN"));
    let digest = support::content::digest_of(&blob);
    let sep = if active.contains('?') { '&' } else { '?' };
    let done = conn
        .request("PUT", &format!("{active}{sep}digest={digest}"), "", b"")
        .unwrap();
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
    assert_eq!(sessions_on_disk(&node.data_dir), 0);
}

/// The `Retry-After` seconds of a 429 answer.
fn retry_after(a: &support::wire::Answer) -> u64 {
    assert_eq!(a.status, 429, "{}", String::from_utf8_lossy(&a.body));
    assert!(String::from_utf8_lossy(&a.body).contains("TOOMANYREQUESTS"));
    a.header("retry-after")
        .and_then(|v| v.parse().ok())
        .filter(|s| *s >= 1)
        .expect("Retry-After in seconds")
}

#[test]
fn rate_limits_and_failed_logins_answer_429_with_retry_after() {
    const ADMIN: &str = "hostile-admin-token-0123456789abcdef";
    let tmp = tempfile::tempdir().unwrap();
    let node = support::Keelson::start_with_env(
        tmp.path(),
        &[
            ("KEELSON_AUTH", "enforce"),
            ("KEELSON_BOOTSTRAP_TOKEN", ADMIN),
            ("KEELSON_TEST_CLOCK", "true"),
        ],
    );
    let mut conn = Conn::new(TcpStream::connect(node.addr).unwrap(), &node.host());
    let admin = basic("keelson/admin", ADMIN);
    let call = |conn: &mut Conn<TcpStream>, method: &str, path: &str, body: &str| {
        let a = conn.request(method, path, &admin, body.as_bytes()).unwrap();
        (
            a.status,
            serde_json::from_slice::<serde_json::Value>(&a.body).unwrap_or_default(),
        )
    };
    assert_eq!(
        call(&mut conn, "POST", "/api/v1/tenancies", r#"{"namespace":"demo"}"#).0,
        201
    );
    assert_eq!(
        call(&mut conn, "POST", "/api/v1/tenancies/demo/users", r#"{"name":"ann"}"#).0,
        201
    );
    let (_, created) = call(&mut conn, "POST", "/api/v1/tenancies/demo/users/ann/tokens", "{}");
    let token = created["token"].as_str().expect("token").to_string();
    let ann = basic("demo/ann", &token);

    // Limits are validated where they enter: zeros are refused with a message, and nothing
    // changes.
    for bad in [
        r#"{"requests_per_second":0}"#,
        r#"{"max_repos":0}"#,
        r#"{"max_stored_bytes":0}"#,
    ] {
        let (status, body) = call(&mut conn, "PUT", "/api/v1/tenancies/demo/limits", bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.to_string().contains("at least 1"), "{body}");
    }
    let (status, body) = call(
        &mut conn,
        "PUT",
        "/api/v1/tenancies/demo/limits",
        r#"{"requests_per_second":3}"#,
    );
    assert_eq!((status, body["requests_per_second"].as_u64()), (200, Some(3)), "{body}");

    // A burst over the tenancy's rate: 429 with Retry-After, and the next request after that
    // long succeeds. The clock is moved, not waited for.
    let mut offset_ms = 0;
    let mut set_clock = |conn: &mut Conn<TcpStream>, plus_ms: u64| {
        offset_ms += plus_ms;
        let body = format!("{{\"offset_ms\": {offset_ms}}}");
        assert_eq!(call(conn, "PUT", "/api/v1/cluster/clock", &body).0, 200);
    };
    let answers: Vec<_> = (0..40)
        .map(|_| conn.request("GET", "/v2/", &ann, b"").unwrap())
        .collect();
    let ok = answers.iter().take_while(|a| a.status == 200).count();
    assert!(
        (6..40).contains(&ok),
        "a burst of twice the rate passes, then refusals: {ok} passed"
    );
    let wait = retry_after(&answers[ok]);
    set_clock(&mut conn, wait * 1000);
    assert_eq!(conn.request("GET", "/v2/", &ann, b"").unwrap().status, 200);

    // Guessing the token: five wrong passwords are answered 401, then every attempt waits
    // (even with the right password) until the back-off has passed; it doubles.
    let wrong = basic("demo/ann", "guess");
    for path in ["/token?service=keelson", "/v2/"] {
        for _ in 0..keelson_api::rate_limit::FREE_FAILURES {
            assert_eq!(conn.request("GET", path, &wrong, b"").unwrap().status, 401, "{path}");
        }
        let first = retry_after(&conn.request("GET", path, &wrong, b"").unwrap());
        assert_eq!(first, 1);
        retry_after(&conn.request("GET", path, &ann, b"").unwrap());
        set_clock(&mut conn, 1000);
        assert_eq!(conn.request("GET", path, &wrong, b"").unwrap().status, 401);
        assert_eq!(retry_after(&conn.request("GET", path, &ann, b"").unwrap()), 2);
        set_clock(&mut conn, 2000);
        // The right password, once allowed to try, succeeds and clears the count.
        assert_eq!(conn.request("GET", path, &ann, b"").unwrap().status, 200, "{path}");
    }
}
