//! Replicas streamed while their upload arrives.
//!
//! A push to a replicated repository is acknowledged only once its copies on other nodes are
//! durable. Sending them after the local copy is complete makes the client wait for two full
//! transfers and two disk writes one after the other. A tee opens one replica stream per target
//! when an upload's first bytes arrive and hands every batch the session writes to its disk to
//! those streams as well, so the copies are written while the upload is still arriving. The
//! client names the digest only at the end; it then travels as the streams' last message, and
//! each receiver verifies and fsyncs its copy exactly as it does for any replica.
//!
//! A tee is a head start, never the only path: a target whose stream fails, or a whole tee
//! dropped because a request failed, the upload was cancelled or it sat idle, gets the blob
//! pushed from the local copy after completion, as without a tee. A dropped stream ends without
//! its digest, and its receiver discards what it had.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

use keelson_raft::NodeId;

use crate::digest::Digest;
use crate::error::StorageError;
use crate::transfer::{BlobPeers, ReplicaStream};

/// An upload's replica streams, one per target other than this node.
pub struct ReplicaTee {
    /// Every holder placement chose when the upload started, this node included when it keeps
    /// a copy.
    targets: Vec<NodeId>,
    streams: Vec<(NodeId, ReplicaStream)>,
    /// Targets whose stream could not be opened or failed on the way.
    failed: Vec<(NodeId, StorageError)>,
    /// Bytes handed to the streams: the session's offset, between two requests.
    offset: u64,
}

impl ReplicaTee {
    /// Opens a stream to each of `remote` (id and peer address); `targets` are all holders
    /// placement chose, `remote` those among them that are not this node.
    pub fn open(peers: &BlobPeers, targets: Vec<NodeId>, remote: &[(NodeId, String)]) -> ReplicaTee {
        let mut tee = ReplicaTee {
            targets,
            streams: Vec::new(),
            failed: Vec::new(),
            offset: 0,
        };
        for (id, addr) in remote {
            match peers.open_replica(addr) {
                Ok(stream) => tee.streams.push((*id, stream)),
                Err(e) => tee.failed.push((*id, e)),
            }
        }
        tee
    }

    /// The holders placement chose for this upload.
    pub fn targets(&self) -> &[NodeId] {
        &self.targets
    }

    /// Bytes sent so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Sends the next batch to every live stream; a stream that fails or stalls is set aside
    /// (a stalled peer must not hold the client's upload).
    pub async fn send(&mut self, batch: &Bytes) {
        self.offset += batch.len() as u64;
        let mut i = 0;
        while i < self.streams.len() {
            match tokio::time::timeout(STALL, self.streams[i].1.send(batch.clone())).await {
                Ok(true) => i += 1,
                Ok(false) => {
                    let (id, stream) = self.streams.swap_remove(i);
                    let why = match stream.close().await {
                        Err(e) => e,
                        Ok(()) => StorageError::Peer("replica stream closed early".into()),
                    };
                    self.failed.push((id, why));
                }
                Err(_) => {
                    let (id, _) = self.streams.swap_remove(i);
                    let why = format!("replica stream stalled for {} s", STALL.as_secs());
                    self.failed.push((id, StorageError::Peer(why)));
                }
            }
        }
    }

    /// Names the blob to every stream and waits for each target's answer: `Ok` where the copy
    /// is durable there.
    pub async fn finish(self, digest: &Digest, size: u64) -> Vec<(NodeId, Result<(), StorageError>)> {
        let answers = self
            .streams
            .into_iter()
            .map(|(id, stream)| async move { (id, stream.finish(digest, size).await) });
        let mut results = futures_util::future::join_all(answers).await;
        results.extend(self.failed.into_iter().map(|(id, e)| (id, Err(e))));
        results
    }
}

/// Longest wait for a replica stream to take the next batch.
const STALL: Duration = Duration::from_secs(30);

/// Tees left idle this long (an abandoned upload) are dropped.
pub const IDLE: Duration = Duration::from_secs(300);

/// The tees of the upload sessions this node owns, between one request and the next.
#[derive(Default)]
pub struct ReplicaTees {
    open: Mutex<HashMap<String, (ReplicaTee, Instant)>>,
}

impl ReplicaTees {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (ReplicaTee, Instant)>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the tee of upload `id`, if it has one.
    pub fn take(&self, id: &str) -> Option<ReplicaTee> {
        self.lock().remove(id).map(|(tee, _)| tee)
    }

    /// Keeps `tee` for the next request of upload `id`.
    pub fn keep(&self, id: &str, tee: ReplicaTee) {
        self.lock().insert(id.to_string(), (tee, Instant::now()));
    }

    /// Drops the tees that saw no request for `idle` (abandoned uploads): their streams end
    /// unfinished and the receivers discard what they had. The node calls it every minute with
    /// [`IDLE`].
    pub fn sweep(&self, idle: Duration) {
        let now = Instant::now();
        self.lock().retain(|_, (_, since)| now.duration_since(*since) < idle);
    }
}
