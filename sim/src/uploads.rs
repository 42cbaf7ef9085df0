//! Upload-session expiry under faults. Clients sometimes abandon a chunked upload after its first
//! chunk; every node expires sessions unused for [`UPLOAD_IDLE_MS`] (sweeping every
//! [`UPLOAD_SWEEP_MS`]) on its own skewed clock, through crashes and restarts (a restarted node
//! counts the sessions it finds on disk as used at its start).
//!
//! After the run the verifier lets the idle limit pass and checks that no member still holds a
//! client's session on disk: an abandoned upload leaves nothing behind. Uploads that are used
//! (every chunked push of the workload) go on through the same nodes, and the durability checks
//! of `invariants` still find every acknowledged blob, so expiry never takes a session in use.

use std::time::Duration;

use crate::cluster::NodeSpec;
use crate::history::{now_ms, Shared};
use crate::skew::MAX_SKEW_MS;

/// How long a session may stay unused in the simulation.
pub const UPLOAD_IDLE_MS: u64 = 8_000;
/// How often nodes sweep for expired sessions in the simulation.
pub const UPLOAD_SWEEP_MS: u64 = 1_000;

/// The client sessions (not peers' replica streams) in a node's uploads folder.
fn client_sessions(node: &NodeSpec) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(node.data_dir.join("uploads")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            let meta = std::fs::read_to_string(e.path().join("repo")).unwrap_or_default();
            !meta.starts_with("_replica")
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits out the idle limit (with both skews and a few sweeps), then checks that every member's
/// abandoned sessions are gone with their files.
pub async fn check(shared: &Shared, nodes: &[NodeSpec]) {
    let wait = UPLOAD_IDLE_MS + 2 * MAX_SKEW_MS.unsigned_abs() + 3 * UPLOAD_SWEEP_MS;
    shared.trace(
        now_ms(),
        format!("verify: waiting {wait} ms for idle uploads to expire"),
    );
    tokio::time::sleep(Duration::from_millis(wait)).await;
    for node in nodes {
        let left = client_sessions(node);
        if !left.is_empty() {
            shared.fail(
                "abandoned uploads expire",
                format!(
                    "{} still holds {} client upload sessions: {:?}",
                    node.name,
                    left.len(),
                    left
                ),
            );
        }
    }
}
