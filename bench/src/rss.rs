//! Samples a server's resident memory (VmRSS in /proc/PID/status, summed over its
//! processes, e.g. the nodes of a local cluster) on its own thread while a run goes on,
//! so the report can say how much memory the server needed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why the server's memory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RssError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} has no VmRSS line (is it a kernel thread or a zombie?)")]
    NoRss(PathBuf),
}

/// VmRSS of `pid`, in KiB.
pub fn read_rss_kib(pid: u32) -> Result<u64, RssError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = std::fs::read_to_string(&path).map_err(|source| RssError::Read {
        path: path.clone(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or(RssError::NoRss(path))
}

/// Summed VmRSS of `pids`, in KiB.
pub fn read_total_kib(pids: &[u32]) -> Result<u64, RssError> {
    pids.iter().map(|&p| read_rss_kib(p)).sum()
}

/// The server's memory over a run, in KiB.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RssStats {
    pub start_kib: u64,
    pub max_kib: u64,
    pub end_kib: u64,
}

pub struct RssSampler {
    pids: Vec<u32>,
    start: u64,
    max: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Reads once (so a wrong PID fails now), then samples every `every`.
    pub fn start(pids: Vec<u32>, every: Duration) -> Result<Self, RssError> {
        let start = read_total_kib(&pids)?;
        let max = Arc::new(AtomicU64::new(start));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s, p) = (max.clone(), stop.clone(), pids.clone());
        let thread = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Ok(kib) = read_total_kib(&p) {
                        m.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(every);
                }
            })
            .ok();
        Ok(RssSampler {
            pids,
            start,
            max,
            stop,
            thread,
        })
    }

    pub fn finish(mut self) -> RssStats {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let end = read_total_kib(&self.pids).unwrap_or(0);
        let max = self.max.load(Ordering::Relaxed).max(end);
        RssStats {
            start_kib: self.start,
            max_kib: max,
            end_kib: end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        let pid = std::process::id();
        assert!(read_rss_kib(pid).expect("own status") > 0);
        let s = RssSampler::start(vec![pid, pid], Duration::from_millis(5)).expect("start");
        std::thread::sleep(Duration::from_millis(20));
        let st = s.finish();
        assert!(st.max_kib >= st.start_kib);
        assert!(st.start_kib > 0 && st.end_kib > 0);
        assert!(read_rss_kib(u32::MAX).is_err());
    }
}
