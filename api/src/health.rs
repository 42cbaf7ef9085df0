//! Liveness and readiness, for Kubernetes probes, load balancers (HAProxy, `keelson lb`) and
//! operators. `/healthz` answers 200 while the process serves requests. `/readyz` answers 200
//! only when this node should get new clients: it is a member (not removed), a leader is
//! known, it has applied what it knows to be committed (within a small margin), and its data
//! directory takes a synced write. Otherwise 503, with one line per check saying which failed.
//! Both are open to anyone: they carry no tenant data.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};

use crate::body::{self, Body};
use crate::handlers::Reply;
use crate::registry::Registry;

/// Entries a node may still have to apply and count as caught up.
const APPLY_MARGIN: u64 = 64;
/// How long a storage probe's result is reused (a probe is a synced write).
const STORAGE_PROBE_TTL: Duration = Duration::from_secs(2);

/// The last storage probe of this node.
#[derive(Default)]
pub struct StorageProbe {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl StorageProbe {
    /// Writes and syncs a small file under `dir`, at most once per [`STORAGE_PROBE_TTL`].
    fn check(&self, dir: PathBuf) -> Result<(), String> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < STORAGE_PROBE_TTL {
                return result.clone();
            }
        }
        let result = write_probe(dir).map_err(|e| e.to_string());
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

fn write_probe(dir: PathBuf) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".readyz-probe");
    let mut f = std::fs::File::create(&path)?;
    f.write_all(b"ready\n")?;
    f.sync_all()?;
    std::fs::remove_file(path)
}

pub fn healthz() -> Response<Body> {
    text(StatusCode::OK, "ok\n".to_string())
}

/// Runs the readiness checks (the storage probe on a blocking thread).
pub async fn readyz(reg: &Registry) -> Response<Body> {
    let status = reg.catalog.status();
    let mut failed = Vec::new();
    if reg.catalog.is_removed() {
        failed.push("member: this node was removed from the cluster".to_string());
    }
    if status.leader.is_none() {
        failed.push("leader: no leader known".to_string());
    }
    let applied = status.applied_index.unwrap_or(0);
    let committed = status.committed_index.unwrap_or(0);
    if applied.saturating_add(APPLY_MARGIN) < committed {
        failed.push(format!("caught up: applied {applied} of {committed} committed entries"));
    }
    let probe = reg
        .handle()
        .map(|r| tokio::task::spawn_blocking(move || r.storage_probe.check(r.store.root().to_path_buf())));
    match probe {
        Some(task) => match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("storage: a synced write failed: {e}")),
            Err(e) => failed.push(format!("storage: the probe did not finish: {e}")),
        },
        None => failed.push("storage: the node is shutting down".to_string()),
    }
    if failed.is_empty() {
        text(StatusCode::OK, "ready\n".to_string())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", failed.join("\n")),
        )
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    Reply::new(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store")
        .body(body::full(body))
}
