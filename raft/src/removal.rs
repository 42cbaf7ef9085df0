//! A member removed from the cluster learns that it was: the node that carried out the removal
//! tells it over the `Leave` peer RPC. A removed node writes a marker next to its catalog, stops
//! its Raft, answers client requests with 503, and refuses to start again on the same data —
//! its catalog no longer follows the cluster, and its old membership would have it campaign.
//! To come back, an operator wipes its data directory and adds it as a new member.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// What the `Leave` RPC carries: the id the sender removed (the receiver checks it is its own).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaveNotice {
    pub id: NodeId,
}

/// Whether this node has been removed, kept in memory and in a marker file.
#[derive(Clone)]
pub struct Removal {
    marker: PathBuf,
    removed: Arc<AtomicBool>,
}

impl Removal {
    /// The removal state of the catalog in `dir`.
    pub fn at(dir: &Path) -> Removal {
        let marker = dir.join("removed");
        let removed = marker.exists();
        Removal {
            marker,
            removed: Arc::new(AtomicBool::new(removed)),
        }
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// Records the removal durably (marker file and its directory synced).
    pub fn mark(&self) -> std::io::Result<()> {
        self.removed.store(true, Ordering::SeqCst);
        let file = std::fs::File::create(&self.marker)?;
        file.sync_all()?;
        if let Some(dir) = self.marker.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}
