//! Reading coded blobs: a [`StripeReader`] pulls one chunk per shard per stripe from the shard
//! holders, preferring the `k` data shards (no decoding needed) and switching to other shards
//! when a holder is unreachable or a chunk fails its seal; [`stream_range`] turns the stripes
//! covering a byte range into a byte stream, decoding where data shards are missing.

use std::io;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tonic::Streaming;

use super::{decode_stripe, Geometry};
use crate::digest::Digest;
use crate::error::StorageError;
use crate::transfer::proto::ShardChunk;
use crate::transfer::BlobPeers;

/// Reads stripes `first ..= last` of a coded blob, `k` chunks at a time.
pub struct StripeReader {
    peers: BlobPeers,
    digest: Digest,
    geometry: Geometry,
    /// Peer address of each shard's holder (`None`: lost).
    sources: Vec<Option<String>>,
    last: u64,
    /// Open shard streams, by shard index.
    active: Vec<(usize, Streaming<ShardChunk>)>,
    /// Shards already opened (or failed, or excluded).
    tried: Vec<bool>,
}

impl StripeReader {
    /// Prepares to read stripes `first ..= last`, never using shard `exclude`.
    pub fn new(
        peers: BlobPeers,
        digest: Digest,
        geometry: Geometry,
        sources: Vec<Option<String>>,
        last: u64,
        exclude: Option<usize>,
    ) -> StripeReader {
        let mut tried = vec![false; geometry.k + geometry.m];
        if let Some(x) = exclude {
            if let Some(t) = tried.get_mut(x) {
                *t = true;
            }
        }
        StripeReader {
            peers,
            digest,
            geometry,
            sources,
            last,
            active: Vec::new(),
            tried,
        }
    }

    /// Opens the next untried shard at `stripe`; false when none is left.
    async fn open_one(&mut self, stripe: u64) -> bool {
        while let Some(index) = self.tried.iter().position(|t| !t) {
            self.tried[index] = true;
            let Some(Some(addr)) = self.sources.get(index) else {
                continue;
            };
            let count = self.last - stripe + 1;
            match self
                .peers
                .get_shard(addr, &self.digest, index, stripe, count, self.geometry.chunk)
                .await
            {
                Ok(stream) => {
                    self.active.push((index, stream));
                    return true;
                }
                Err(e) => tracing::info!(digest = %self.digest, index, error = %e, "shard unavailable"),
            }
        }
        false
    }

    /// The chunks of `stripe` (called for consecutive stripes): at least `k` of the `k + m`
    /// slots are filled.
    pub async fn next(&mut self, stripe: u64) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let (k, m, chunk) = (self.geometry.k, self.geometry.m, self.geometry.chunk);
        let mut chunks: Vec<Option<Vec<u8>>> = vec![None; k + m];
        let mut filled = 0;
        let mut i = 0;
        loop {
            while i < self.active.len() {
                let (index, stream) = &mut self.active[i];
                match stream.next().await {
                    Some(Ok(c)) if c.data.len() == chunk => {
                        chunks[*index] = Some(c.data);
                        filled += 1;
                        i += 1;
                    }
                    other => {
                        let why = match other {
                            Some(Err(s)) => s.message().to_string(),
                            Some(Ok(_)) => "short chunk".to_string(),
                            None => "stream ended early".to_string(),
                        };
                        tracing::info!(digest = %self.digest, index = *index, stripe, error = %why, "shard read failed");
                        self.active.remove(i);
                    }
                }
            }
            if filled >= k {
                return Ok(chunks);
            }
            if !self.open_one(stripe).await {
                return Err(StorageError::Peer(format!(
                    "only {filled} of {k} shards of {} readable at stripe {stripe}",
                    self.digest
                )));
            }
        }
    }
}

/// Streams bytes `start .. start + len` of a coded blob, rebuilt from its shards.
pub fn stream_range(
    peers: BlobPeers,
    digest: Digest,
    geometry: Geometry,
    sources: Vec<Option<String>>,
    start: u64,
    len: u64,
) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(2);
    if len == 0 {
        return rx;
    }
    tokio::spawn(async move {
        let (first, last) = geometry.stripes_for(start, len);
        let end = start + len;
        // Data shards first: a healthy read needs no decoding.
        let mut reader = StripeReader::new(peers, digest, geometry, sources, last, None);
        let sb = geometry.stripe_bytes();
        for stripe in first..=last {
            let chunks = match reader.next(stripe).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let data = match decode_stripe(geometry.k, geometry.m, stripe, &chunks) {
                Ok(d) => d.concat(),
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let base = stripe * sb;
            let from = start.max(base) - base;
            let to = end.min(base + sb) - base;
            if tx
                .send(Ok(Bytes::from(data).slice(from as usize..to as usize)))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    rx
}
