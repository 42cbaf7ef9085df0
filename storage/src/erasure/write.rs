//! Writing coded blobs: [`store_coded`] encodes a locally stored blob stripe by stripe and
//! streams shard `i` to its node, all shards in parallel with bounded buffers;
//! [`rebuild_shard`] recreates one lost shard on this node from any `k` others.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{encode_stripe, rebuild_stripe, seal, Geometry};
use crate::blob_store::BlobStore;
use crate::digest::Digest;
use crate::error::StorageError;
use crate::transfer::{write_shard, BlobPeers};

/// Encodes the local blob `digest` with `geometry` and stores shard `i` at `targets[i]` (a peer
/// address). Returns, per shard, whether its node acknowledged it durable.
pub async fn store_coded(
    peers: &BlobPeers,
    store: &BlobStore,
    digest: &Digest,
    geometry: Geometry,
    targets: &[String],
) -> Result<Vec<Result<(), StorageError>>, StorageError> {
    let n = geometry.k + geometry.m;
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        senders.push(Some(tx));
        receivers.push(rx);
    }
    let file = store.open_blob(digest)?;
    let encoder = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let sb = geometry.stripe_bytes() as usize;
        let mut left = geometry.size;
        let mut buf = vec![0u8; sb];
        for _ in 0..geometry.stripes() {
            let want = (left as usize).min(sb);
            file.read_at(geometry.size - left, &mut buf[..want])?;
            left -= want as u64;
            let chunks = encode_stripe(geometry.k, geometry.m, geometry.chunk, &buf[..want])
                .map_err(|e| io::Error::other(e.to_string()))?;
            for (i, c) in chunks.iter().enumerate() {
                if let Some(tx) = &senders[i] {
                    // A shard whose upload failed stops listening; the others go on.
                    if tx.blocking_send(Bytes::from(seal(c))).is_err() {
                        senders[i] = None;
                    }
                }
            }
        }
        Ok(())
    });
    let puts = receivers
        .into_iter()
        .zip(targets.iter())
        .enumerate()
        .map(|(i, (rx, addr))| {
            let length = geometry.shard_bytes();
            async move { peers.put_shard(addr, digest, i, length, rx).await }
        });
    let (encoded, results) = tokio::join!(encoder, futures_util::future::join_all(puts));
    encoded.map_err(|e| StorageError::Io(io::Error::other(e)))??;
    Ok(results)
}

/// Rebuilds shard `index` of a coded blob on this node from the shards at `sources`.
pub async fn rebuild_shard(
    peers: &BlobPeers,
    store: &BlobStore,
    digest: &Digest,
    geometry: Geometry,
    sources: &[Option<String>],
    index: usize,
) -> Result<u64, StorageError> {
    let last = geometry.stripes() - 1;
    let mut reader = super::read::StripeReader::new(
        peers.clone(),
        digest.clone(),
        geometry,
        sources.to_vec(),
        last,
        Some(index),
    );
    let (tx, rx) = mpsc::channel::<Result<Bytes, StorageError>>(4);
    let produce = async move {
        for stripe in 0..=last {
            let result = reader.next(stripe).await.and_then(|chunks| {
                rebuild_stripe(geometry.k, geometry.m, geometry.chunk, stripe, &chunks)
                    .map_err(|e| StorageError::Peer(e.to_string()))
            });
            let item = result.map(|all| Bytes::from(seal(&all[index])));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    };
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let (_, written) = tokio::join!(
        produce,
        write_shard(store, digest, index, geometry.shard_bytes(), stream)
    );
    written
}
