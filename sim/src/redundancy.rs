//! "Redundancy restored after healing": once the faults are healed and the clients are done, the
//! leader's real repair job (on its timer, [`REPAIR_INTERVAL_MS`] in the simulation) must bring
//! every blob back to full redundancy. The verifier waits for a repair survey that started after
//! convergence and found nothing short of copies, then looks at the disks themselves: every
//! acknowledged blob that GC must keep (referenced by a kept manifest) must be in `min(replicas, nodes)` nodes' stores, spread over as many fault
//! domains as the members offer (up to that number), with bytes matching its digest. The catalog's holder lists alone could claim copies that are
//! not there; the files cannot.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::cluster::{self, NodeSpec};
use crate::history::{now_ms, Shared};
use crate::workload::short;

/// The nodes' repair period in the simulation.
pub const REPAIR_INTERVAL_MS: u64 = 2_000;
/// Copies every blob must have (the nodes run with `replicas = 3`).
pub const REPLICAS: usize = 3;
/// How long repair may take after convergence.
const REPAIR_WITHIN: Duration = Duration::from_secs(60);

/// The leader's repair view: `(under_replicated, unavailable)`, when its last pass left one, and
/// its job counters.
async fn leader_view(nodes: &[NodeSpec]) -> Option<((u64, u64), std::collections::BTreeMap<String, u64>)> {
    for node in nodes {
        let Ok(s) = cluster::status(&node.name, Duration::from_secs(1)).await else {
            continue;
        };
        let leader = nodes.iter().find(|n| Some(n.id) == s.leader)?;
        let l = cluster::status(&leader.name, Duration::from_secs(1)).await.ok()?;
        if l.state != "leader" {
            return None;
        }
        let unavailable = l.blob_jobs.get("repair.unavailable").copied().unwrap_or(0);
        return l.under_replicated.map(|u| ((u, unavailable), l.blob_jobs));
    }
    None
}

/// Waits for a clean repair survey, then checks every acknowledged blob's copies on disk.
pub async fn check(shared: &Shared, nodes: &[NodeSpec]) {
    let deadline = now_ms() + REPAIR_WITHIN.as_millis() as u64;
    // A survey taken after this point sees every record the clients and faults left behind.
    tokio::time::sleep(Duration::from_millis(2 * REPAIR_INTERVAL_MS + 500)).await;
    let mut clean = false;
    let mut last = None;
    while now_ms() < deadline {
        let view = leader_view(nodes).await;
        last = view.as_ref().map(|(v, _)| *v);
        if let Some(((0, 0), jobs)) = view {
            for key in ["repair.copies", "gc.marked", "gc.swept", "gc.files_deleted"] {
                shared.count(format!("jobs.{key}"), jobs.get(key).copied().unwrap_or(0));
            }
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(REPAIR_INTERVAL_MS)).await;
    }
    if !clean {
        shared.fail(
            "repair_not_done",
            format!("{REPAIR_WITHIN:?} after convergence the leader's repair view is {last:?} (under-replicated, unavailable)"),
        );
        return;
    }
    shared.trace(now_ms(), "verify: repair survey clean");
    shared.count("inv.repair_clean", 1);
    let want = REPLICAS.min(nodes.len());
    let all_domains: BTreeSet<&str> = nodes.iter().map(|n| n.fault_domain.as_str()).collect();
    let want_domains = want.min(all_domains.len());
    let mut seen = BTreeSet::new();
    let blobs = shared.acked_blobs.borrow().clone();
    let protected = shared.protected_blobs();
    for blob in blobs {
        if !protected.contains(&blob.digest) || !seen.insert(blob.digest.clone()) {
            continue;
        }
        shared.count("inv.redundancy_blobs", 1);
        let mut holders = Vec::new();
        let mut domains = BTreeSet::new();
        for node in nodes {
            match copy_state(&node.data_dir, &blob.digest) {
                Copy::Good(format) => {
                    if crate::cluster::encrypts(node.id) {
                        shared.count("inv.sealed_copies", 1);
                    }
                    if crate::cluster::encrypts(node.id) && format != keelson_storage::at_rest::Format::Sealed {
                        shared.fail(
                            "plain_copy_on_encrypting_node",
                            format!("{} on {} is stored in the clear", short(&blob.digest), node.name),
                        );
                    }
                    holders.push(node.name.clone());
                    domains.insert(node.fault_domain.clone());
                }
                Copy::Absent => {}
                Copy::Corrupt => shared.fail(
                    "stored_copy_corrupt",
                    format!("{} on {} does not hash to its digest", short(&blob.digest), node.name),
                ),
            }
        }
        shared.count("inv.redundancy_copies", holders.len() as u64);
        if holders.len() < want || domains.len() < want_domains {
            shared.fail(
                "redundancy_not_restored",
                format!(
                    "{}@{} after repair: copies on {:?} ({} fault domains), {want} in {want_domains} required",
                    blob.repo,
                    short(&blob.digest),
                    holders,
                    domains.len()
                ),
            );
        }
    }
}

enum Copy {
    /// Intact, in this format.
    Good(keelson_storage::at_rest::Format),
    Absent,
    Corrupt,
}

/// Whether a node's store holds `digest` (`sha256:<hex>`) with the right bytes.
fn copy_state(data_dir: &Path, digest: &str) -> Copy {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Copy::Absent;
    };
    if hex.len() < 2 {
        return Copy::Absent;
    }
    use keelson_storage::at_rest::{Format, MasterKeys, StoredReader};
    let base = data_dir.join("blobs").join("sha256").join(&hex[..2]).join(hex);
    let Some(path) = [Format::Plain, Format::Sealed]
        .into_iter()
        .map(|format| format.name(&base))
        .find(|path| path.is_file())
    else {
        return Copy::Absent;
    };
    let keys = MasterKeys::parse(crate::cluster::SIM_MASTER_KEY).ok();
    let reader = match StoredReader::open(&path, keys.as_ref()) {
        Ok(reader) => reader,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Copy::Absent,
        Err(_) => return Copy::Corrupt,
    };
    let mut hasher = Sha256::new();
    match keelson_storage::blob_store::read_through(&reader, |bytes| {
        hasher.update(bytes);
        Ok(())
    }) {
        Ok(()) if hex::encode(hasher.finalize()) == hex => Copy::Good(Format::of_path(&path)),
        Ok(()) => Copy::Corrupt,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Copy::Absent,
        Err(_) => Copy::Corrupt,
    }
}
