//! Test harness shared by the integration tests: runs the real `keelson` binary as a child
//! process on a loopback port with its own data directory, and tears it down (kill -9) on drop.
//!
//! Readiness is observed, never slept for: `keelson serve` writes `<data-dir>/keelson.addr` once
//! its listener is bound, and the harness then polls `GET /v2/` until it answers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Keelson node (a child process).
pub struct Keelson {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl Keelson {
    /// Starts a node on a fresh port with data under `data_dir` (created when missing).
    pub fn start(data_dir: &Path) -> Keelson {
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn keelson");
        let mut node = Keelson {
            addr: "127.0.0.1:1".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            child: Some(child),
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
        let fresh = Keelson::start(&self.data_dir);
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
