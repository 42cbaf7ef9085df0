//! Debian's `docker-registry` (CNCF distribution 2.8.2) as a child process: the upstream a
//! pull-through cache mirrors. Stopped on drop; `stop` and `start` cut and restore it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;
use super::tools::need;

pub struct Distribution {
    pub addr: String,
    root: PathBuf,
    child: Option<Child>,
}

impl Distribution {
    /// Starts a registry storing under `root` on a free loopback port.
    pub fn start(root: &Path) -> Distribution {
        need("docker-registry");
        std::fs::create_dir_all(root).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            root.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: keelson-tests\n",
                root.join("store").display()
            ),
        )
        .unwrap();
        let mut d = Distribution {
            addr,
            root: root.to_path_buf(),
            child: None,
        };
        d.restart();
        d
    }

    /// Starts it again on the same address and storage.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("registry.log"))
            .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.root.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            super::wire::get(self.addr.parse().unwrap(), None, "/v2/", ""),
            Ok((200, _))
        ) {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills it and waits until its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}
