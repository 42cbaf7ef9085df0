//! A daemon (dockerd, containerd, …) started by a test and private to it: its output goes to a
//! log file, readiness is polled with a client command, and the Drop guard stops it (SIGTERM,
//! bounded wait, SIGKILL) together with the processes and mounts it leaves behind.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tools::{exec, tail, wait_until};

/// A daemon child process; on drop: SIGTERM, wait (bounded), then SIGKILL; then the cleanup of
/// `child_pid_files` and `mounts`. Prints the tail of its log when the test is failing.
pub struct Daemon {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
    /// Processes the daemon started that must not outlive the test (pid files).
    pub child_pid_files: Vec<PathBuf>,
    /// Mount points to unmount if the daemon left them behind.
    pub mounts: Vec<PathBuf>,
}

impl Daemon {
    /// Starts `cmd` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Daemon {
        let log_file = fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Daemon {
            name,
            child: Some(child),
            log,
            child_pid_files: Vec::new(),
            mounts: Vec::new(),
        }
    }

    /// The tail of the daemon's log.
    pub fn log(&self) -> String {
        tail(&fs::read_to_string(&self.log).unwrap_or_default(), 6000).to_string()
    }

    /// Polls `probe` (a client command) until it succeeds; fails early if the daemon died.
    pub fn wait_ready(&mut self, limit: Duration, mut probe: impl FnMut() -> Command) {
        let name = self.name;
        let log = self.log.clone();
        let child = self.child.as_mut().unwrap();
        wait_until(&format!("{name} readiness"), limit, || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{name} exited during startup ({status}); log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let out = exec(&mut probe(), Duration::from_secs(30));
            if out.ok {
                Ok(())
            } else {
                Err(format!("{}{}", out.stdout, out.stderr))
            }
        });
    }

    fn signal(pid: u32, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log (tail):\n{}", self.name, self.log());
        }
        if let Some(mut child) = self.child.take() {
            Daemon::signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid_file in &self.child_pid_files {
            if let Some(pid) = fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    Daemon::signal(pid, "KILL");
                }
            }
        }
        for mount in &self.mounts {
            let mounted = fs::read_to_string("/proc/self/mounts")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(mount.to_str().unwrap()));
            if mounted {
                let _ = Command::new("umount").arg("-l").arg(mount).status();
            }
        }
    }
}
