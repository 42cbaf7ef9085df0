//! Test harness shared by the integration tests: runs the real `keelson` binary as a child
//! process on a loopback port with its own data directory, and tears it down (kill -9) on drop.
//!
//! Readiness is observed, never slept for: `keelson serve` writes `<data-dir>/keelson.addr` once
//! its listener is bound, and the harness then polls `GET /v2/` until it answers.
//!
//! The submodules hold what several test binaries need besides the node itself: `tools`
//! (installed clients, time-limited runs, polling), `cluster` (nodes formed into a cluster with
//! the CLI), `content` (test bytes and digests), `daemon` and `docker` (private daemons with
//! Drop guards), `images` (images pushed and pulled over raw HTTP), `oci` (skopeo/umoci layouts) and `status` (a node's cluster status over raw
//! HTTP).
#![allow(dead_code)]

pub mod cluster;
pub mod containerd;
pub mod content;
pub mod daemon;
pub mod distribution;
pub mod docker;
pub mod images;
pub mod lb;
pub mod oci;
pub mod status;
pub mod tools;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Keelson node (a child process).
pub struct Keelson {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl Keelson {
    /// Starts a node on a fresh port with data under `data_dir` (created when missing), with
    /// identity switched off (`--auth off`): the protocol and client tests exercise the
    /// distribution API itself; identity has its own tests (`start_secured`).
    pub fn start(data_dir: &Path) -> Keelson {
        Keelson::start_with_env(data_dir, &[("KEELSON_AUTH", "off")])
    }

    /// Starts a node with identity enforced and the cluster administrator's token preset.
    pub fn start_secured(data_dir: &Path, admin_token: &str) -> Keelson {
        Keelson::start_with_env(
            data_dir,
            &[("KEELSON_AUTH", "enforce"), ("KEELSON_BOOTSTRAP_TOKEN", admin_token)],
        )
    }

    /// Starts a node with extra environment variables.
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Keelson {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let addr_file = data_dir.join("keelson.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("keelson.log"))
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            // The background scanner adds SBOM referrers to pushed images; only the tests of
            // scanning turn it on, so the others see exactly what they pushed.
            .env("KEELSON_SCANNER", "false")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn keelson");
        let mut node = Keelson {
            addr: "127.0.0.1:1".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            child: Some(child),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        node.addr = node.wait_for_addr(&addr_file);
        node.wait_ready();
        node
    }

    fn wait_for_addr(&mut self, addr_file: &Path) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(addr_file) {
                if let Ok(addr) = text.trim().parse() {
                    return addr;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("keelson exited before listening: {status}; log: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "keelson did not bind in 60 s; log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(self.addr) {
                use std::io::{Read, Write};
                let req = format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut buf = String::new();
                    let _ = s.read_to_string(&mut buf);
                    if buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.1 401") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "keelson not ready in 60 s; log: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Peak resident memory of the server so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// `host:port`, as registry clients want it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://host:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The node's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("keelson.log")).unwrap_or_default()
    }

    /// kill -9, wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// kill -9 and start again on the same data directory (the port may change).
    pub fn restart(&mut self) {
        self.kill();
        let env: Vec<(String, String)> = std::mem::take(&mut self.env);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let fresh = Keelson::start_with_env(&self.data_dir, &pairs);
        *self = fresh;
    }
}

impl Drop for Keelson {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command, panicking with its output when it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns (success, stdout+stderr) without panicking.
pub fn try_run(cmd: &mut Command) -> (bool, String) {
    match cmd.output() {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run {cmd:?}: {e}")),
    }
}

/// A node started in cluster mode (`--peer-listen`, `--node-id`, `--fault-domain`): it does not
/// bootstrap itself; `keelson cluster init/add` makes it a member. The first start binds port 0
/// for both endpoints and reads the chosen addresses from `keelson.addr` / `keelson.peer`; a
/// restart binds the same two addresses again, because the membership records them.
pub struct ClusterNode {
    pub id: u64,
    pub fault_domain: String,
    pub api: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
    /// Extra environment (e.g. background job intervals), kept for restarts.
    env: Vec<(String, String)>,
    /// The CA of the API's certificate when the node serves TLS (its `KEELSON_TLS_CA`).
    pub ca: Option<PathBuf>,
}

impl ClusterNode {
    /// Starts node `id` in `fault_domain` with data under `data_dir` (created when missing).
    pub fn start(data_dir: &Path, id: u64, fault_domain: &str) -> ClusterNode {
        ClusterNode::start_with_env(data_dir, id, fault_domain, &[])
    }

    /// [`ClusterNode::start`] with extra environment variables.
    pub fn start_with_env(data_dir: &Path, id: u64, fault_domain: &str, env: &[(&str, &str)]) -> ClusterNode {
        let mut node = ClusterNode {
            id,
            fault_domain: fault_domain.to_string(),
            api: "127.0.0.1:0".parse().unwrap(),
            peer: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            child: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ca: env
                .iter()
                .find(|(k, _)| *k == "KEELSON_TLS_CA")
                .map(|(_, v)| PathBuf::from(v)),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.data_dir).expect("create data dir");
        let addr_file = self.data_dir.join("keelson.addr");
        let peer_file = self.data_dir.join("keelson.peer");
        let _ = std::fs::remove_file(&addr_file);
        let _ = std::fs::remove_file(&peer_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.join("keelson.log"))
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.api.to_string())
            .arg("--peer-listen")
            .arg(self.peer.to_string())
            .arg("--node-id")
            .arg(self.id.to_string())
            .arg("--fault-domain")
            .arg(&self.fault_domain)
            .env("KEELSON_AUTH", "off")
            .env("KEELSON_SCANNER", "false")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            // The test's own settings win (a log level included).
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn keelson");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let read = |f: &Path| -> Option<SocketAddr> { std::fs::read_to_string(f).ok()?.trim().parse().ok() };
            if let (Some(api), Some(peer)) = (read(&addr_file), read(&peer_file)) {
                self.api = api;
                self.peer = peer;
                break;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "node {} exited before listening: {status}; log: {}",
                    self.id,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not bind in 60 s; log: {}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The API answers as soon as it is bound (before the node is a member).
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_ok(self.api, self.ca.as_deref(), "/v2/") {
            assert!(
                Instant::now() < deadline,
                "node {} API not ready in 60 s; log: {}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9, wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sets (or replaces) an environment variable for the node's next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Starts the (killed) node again on the same data directory and the same addresses.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `host:port` of the API.
    pub fn host(&self) -> String {
        self.api.to_string()
    }

    /// The API as `keelson --node` takes it: `host:port`, or `https://host:port` under TLS.
    pub fn cli_addr(&self) -> String {
        match self.ca {
            Some(_) => self.url(),
            None => self.host(),
        }
    }

    /// `http://host:port` of the API (`https://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.api)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("keelson.log")).unwrap_or_default()
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when `GET path` on `addr` (over TLS when `ca` is given) answers 200 or 401.
fn http_ok(addr: SocketAddr, ca: Option<&Path>, path: &str) -> bool {
    matches!(wire::get(addr, ca, path, ""), Ok((200 | 401, _)))
}

/// A free loopback port (bound once and released; for processes that need a fixed port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
