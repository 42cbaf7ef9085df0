//! The load run: many clients pulling and pushing at once (through a balancer), to show that
//! overload is answered with 429 and nothing else, that memory stays bounded, and that every
//! push the registry acknowledged can be read back afterwards.
//!
//! Even operations pull one blob pushed during setup; odd ones push a new blob of --size. A 429
//! is counted (it is the answer overload should get) and not an error; anything else failing is
//! an error of the run. After the timed phase every acknowledged push is read back with its
//! digest checked, 32 at a time; one that does not read back fails the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;

use crate::blob::{Blob, BlobSource};
use crate::client::{HttpError, Registry};
use crate::ops;
use crate::runner::Op;

pub struct Load {
    pub reg: Arc<Registry>,
    pub repo: String,
    /// The blob pulled by even operations.
    pub pulled: Blob,
    /// Where pushed blobs come from (a distinct blob per operation).
    pub src: BlobSource,
    /// (digest, length) of every push answered 201.
    pub acked: Mutex<Vec<(String, u64)>>,
    /// Operations answered 429.
    pub throttled: AtomicU64,
}

impl Op for Load {
    async fn run(&self, seq: u64) -> Result<u64, HttpError> {
        let result = if seq.is_multiple_of(2) {
            ops::get_blob(&self.reg, &self.repo, &self.pulled.digest, self.pulled.len(), false).await
        } else {
            let blob = self.src.blob(seq + 1);
            ops::push_monolithic(&self.reg, &self.repo, &blob).await.map(|()| {
                self.acked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((blob.digest.clone(), blob.len()));
                blob.len()
            })
        };
        match result {
            Err(HttpError::Status { status, .. }) if status == StatusCode::TOO_MANY_REQUESTS => {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                Ok(0)
            }
            other => other,
        }
    }
}

impl Load {
    /// Reads back every acknowledged push (digest checked); the failures, at most 10 shown.
    pub async fn read_back(self: &Arc<Self>) -> (usize, Vec<String>) {
        let acked = self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let total = acked.len();
        let acked = Arc::new(acked);
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (load, acked, next) = (self.clone(), acked.clone(), next.clone());
            tasks.spawn(async move {
                let mut failed = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some((digest, len)) = acked.get(i) else {
                        return failed;
                    };
                    // A read may be throttled too: it is retried, not judged.
                    let mut tries = 0;
                    loop {
                        match ops::get_blob(&load.reg, &load.repo, digest, *len, true).await {
                            Ok(_) => break,
                            Err(HttpError::Status { status, .. })
                                if status == StatusCode::TOO_MANY_REQUESTS && tries < 100 =>
                            {
                                tries += 1;
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            }
                            Err(e) => {
                                failed.push(format!("{digest}: {e}"));
                                break;
                            }
                        }
                    }
                }
            });
        }
        let mut failed = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(f) => failed.extend(f),
                Err(e) => failed.push(format!("read-back task failed: {e}")),
            }
        }
        failed.truncate(10);
        (total, failed)
    }
}
