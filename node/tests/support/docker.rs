//! docker for tests: a private dockerd (sockets, data and state under the test's temp dir, no
//! network setup), a minimal busybox image to push, and the digest `docker push` reports.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::daemon::Daemon;
use super::tools::{exec, need, tool, INSTALL_HINT};

/// A private dockerd whose sockets, data and state all live under `dir`; stopped on drop.
pub struct Docker {
    sock: String,
    config_dir: PathBuf,
    _daemon: Daemon,
}

impl Docker {
    /// Starts dockerd (vfs storage, no iptables, no bridge) and waits until `docker info` answers.
    pub fn start(dir: &Path) -> Docker {
        need("dockerd");
        need("docker");
        need("containerd");
        need("runc");
        let data_root = dir.join("data");
        let exec_root = dir.join("exec");
        let config_dir = dir.join("client-config");
        fs::create_dir_all(&config_dir).unwrap();
        fs::write(dir.join("daemon.json"), b"{}").unwrap();
        let sock = format!("unix://{}", dir.join("docker.sock").display());
        let mut cmd = tool("dockerd");
        cmd.args([
            "--storage-driver=vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ])
        .arg("--config-file")
        .arg(dir.join("daemon.json"))
        .arg("--data-root")
        .arg(&data_root)
        .arg("--exec-root")
        .arg(&exec_root)
        .arg("--pidfile")
        .arg(dir.join("docker.pid"))
        .arg("-H")
        .arg(&sock);
        let mut daemon = Daemon::spawn("dockerd", &mut cmd, dir.join("dockerd.log"));
        daemon.child_pid_files.push(exec_root.join("containerd/containerd.pid"));
        daemon.mounts.push(data_root);
        daemon.wait_ready(Duration::from_secs(90), || {
            let mut c = tool("docker");
            c.env("DOCKER_CONFIG", &config_dir).arg("-H").arg(&sock).arg("info");
            c
        });
        Docker {
            sock,
            config_dir,
            _daemon: daemon,
        }
    }

    /// The daemon's address as `DOCKER_HOST` takes it, for tools other than the docker CLI.
    pub fn host(&self) -> &str {
        &self.sock
    }

    /// A `docker` command talking to this daemon, with its own client configuration.
    pub fn cmd(&self) -> Command {
        let mut c = tool("docker");
        c.env("DOCKER_CONFIG", &self.config_dir).arg("-H").arg(&self.sock);
        c
    }
}

/// A rootfs tarball for `docker import`: static busybox as /bin/busybox with sh/echo/cat links,
/// and `/etc/keelson-marker` holding `marker`. `limit` bounds the `tar` run.
pub fn busybox_rootfs_tar(dir: &Path, marker: &str, limit: Duration) -> PathBuf {
    busybox_rootfs_tar_with(dir, marker, &[], limit)
}

/// [`busybox_rootfs_tar`] with `extra` files (path in the root filesystem, contents) added.
pub fn busybox_rootfs_tar_with(dir: &Path, marker: &str, extra: &[(&str, &[u8])], limit: Duration) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox is missing (Debian package busybox-static): {INSTALL_HINT}"
    );
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(rootfs.join("etc/keelson-marker"), marker).unwrap();
    for (path, contents) in extra {
        let at = rootfs.join(path);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        fs::write(at, contents).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let out = exec(tool("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."), limit);
    assert!(out.ok, "tar failed: {}{}", out.stdout, out.stderr);
    tar
}

/// The manifest digest from `docker push` output (`TAG: digest: sha256:... size: N`).
pub fn pushed_digest(push_output: &str) -> String {
    push_output
        .lines()
        .find_map(|l| {
            l.split_once("digest: ")
                .map(|(_, rest)| rest.split_whitespace().next().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{push_output}"))
}
