//! `keelson lb` as a child process in front of a test cluster, killed on drop.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running balancer.
pub struct Lb {
    pub addr: String,
    child: Child,
}

impl Lb {
    /// Balances over `backends` (API addresses) and waits until a request through it is
    /// answered by a node (over TLS, trusting `ca`, when the nodes serve TLS).
    pub fn start(dir: &Path, backends: &[String], ca: Option<&Path>) -> Lb {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = fs::File::create(dir.join("lb.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keelson"));
        cmd.args(["lb", "--listen", &addr]);
        for b in backends {
            cmd.args(["--backend", b]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn keelson lb");
        let mut lb = Lb { addr, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            super::wire::get(lb.addr.parse().unwrap(), ca, "/v2/", ""),
            Ok((200 | 401, _))
        ) {
            if let Ok(Some(status)) = lb.child.try_wait() {
                panic!(
                    "keelson lb exited: {status}: {}",
                    fs::read_to_string(dir.join("lb.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "keelson lb not answering in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        lb
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
