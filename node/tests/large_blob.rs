//! A multi-GiB push streams: the server hashes and writes as bytes arrive, and its memory stays
//! flat (peak RSS far below the blob size), whether the blob comes monolithic or in chunks.

mod support;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use support::Keelson;

const CHUNK: usize = 1 << 20;

/// A deterministic body of `chunks` MiB and its digest.
fn pattern(chunks: usize) -> (Vec<Bytes>, String) {
    let mut hasher = Sha256::new();
    let mut out = Vec::with_capacity(chunks);
    for i in 0..chunks {
        let byte = (i % 251) as u8;
        let chunk = Bytes::from(vec![byte; CHUNK]);
        hasher.update(&chunk);
        out.push(chunk);
    }
    (out, format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[tokio::test]
async fn gib_push_keeps_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let node = Keelson::start(dir.path());
    let client = reqwest::Client::new();
    let chunks = 1024; // 1 GiB
    let (body, digest) = pattern(chunks);
    let before = node.peak_rss_kib();

    let stream = futures_util::stream::iter(body.into_iter().map(Ok::<_, std::io::Error>));
    let resp = client
        .post(format!("{}/v2/big/blob/blobs/uploads/?digest={digest}", node.url()))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());

    let peak = node.peak_rss_kib();
    assert!(
        peak < before + 256 * 1024,
        "server peak RSS grew from {before} KiB to {peak} KiB during a 1 GiB push"
    );

    // The blob reads back whole and correct, streamed.
    let resp = client
        .get(format!("{}/v2/big/blob/blobs/{digest}", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some((chunks * CHUNK) as u64));
    let mut hasher = Sha256::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        hasher.update(chunk.unwrap());
    }
    assert_eq!(format!("sha256:{}", hex::encode(hasher.finalize())), digest);
    let peak = node.peak_rss_kib();
    assert!(
        peak < before + 256 * 1024,
        "server peak RSS grew from {before} KiB to {peak} KiB during a 1 GiB pull"
    );
}
