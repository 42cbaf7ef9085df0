//! containerd for tests: a private daemon (root, state and sockets under the test's temp dir) and
//! `ctr` commands talking to it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::daemon::Daemon;
use super::tools::{need, tool};

/// A private containerd whose root, state and sockets live under `dir`.
pub struct Containerd {
    sock: PathBuf,
    _daemon: Daemon,
}

impl Containerd {
    pub fn start(dir: &Path) -> Containerd {
        need("containerd");
        need("ctr");
        fs::create_dir_all(dir).unwrap();
        let sock = dir.join("containerd.sock");
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
# The CRI plugin (kubelet API) needs CNI and more privileges than a pull needs; the other
# snapshotters need special file systems.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = sock.display(),
            opt = dir.join("opt").display(),
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let mut cmd = tool("containerd");
        cmd.arg("--config").arg(dir.join("config.toml"));
        let mut daemon = Daemon::spawn("containerd", &mut cmd, dir.join("containerd.log"));
        let probe_sock = sock.clone();
        daemon.wait_ready(Duration::from_secs(60), || {
            let mut c = tool("ctr");
            c.arg("--address").arg(&probe_sock).arg("version");
            c
        });
        Containerd { sock, _daemon: daemon }
    }

    pub fn ctr(&self) -> Command {
        let mut c = tool("ctr");
        c.arg("--address").arg(&self.sock);
        c
    }
}
