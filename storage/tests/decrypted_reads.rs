//! A sealed blob on disk (real files, real AES-GCM) read through the store: the first pull
//! decrypts and keeps whole 1 MiB windows, later ones are served from memory without a reader
//! thread (`map_range` answers), byte-identical, for the whole blob and for ranges across
//! window edges; reads made once (a scan, a replica for a peer) and partial windows are not
//! kept; a deleted blob is never served from what was cached; and without a key ring or with
//! the cache off nothing is kept.

use std::sync::Arc;

use bytes::Bytes;
use keelson_storage::at_rest::{KeyRing, MasterKeys};
use keelson_storage::{BlobStore, Digest};

const MIB: usize = 1 << 20;

fn sealed_store(dir: &std::path::Path) -> BlobStore {
    let keys = MasterKeys::parse(&"5a".repeat(32)).unwrap();
    BlobStore::open(dir.join("blobs"))
        .unwrap()
        .with_key_ring(Arc::new(KeyRing::fixed(keys)))
}

/// Stores `bytes` as a blob, the way an upload does (written, synced, ingested).
fn put(store: &BlobStore, dir: &std::path::Path, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    let (temp, mut writer) = store
        .create_file(&dir.join(format!("upload-{}", digest.hex())))
        .unwrap();
    writer.append(bytes).unwrap();
    writer.sync_all().unwrap();
    store.ingest(&temp, &digest).unwrap();
    digest
}

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn streamed(store: &BlobStore, digest: &Digest, offset: u64, len: u64, once: bool) -> Vec<u8> {
    let mut rx = if once {
        store.stream_range_once(digest, offset, len).unwrap()
    } else {
        store.stream_range(digest, offset, len).unwrap()
    };
    let mut out = Vec::new();
    while let Some(piece) = rx.recv().await {
        out.extend_from_slice(&piece.unwrap());
    }
    out
}

fn mapped(store: &BlobStore, digest: &Digest, offset: u64, len: u64) -> Option<Vec<u8>> {
    store
        .map_range(digest, offset, len)
        .unwrap()
        .map(|pieces: Vec<Bytes>| pieces.iter().flat_map(|p| p.iter().copied()).collect())
}

fn counter(store: &BlobStore, name: &str) -> u64 {
    store
        .decrypted_counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or(0)
}

#[tokio::test]
async fn a_sealed_blob_is_decrypted_once_and_then_served_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed_store(dir.path());
    let bytes = content(3 * MIB + 12_345, 7);
    let digest = put(&store, dir.path(), &bytes);
    let path = store.located(&digest).unwrap();
    assert!(
        path.to_string_lossy().ends_with(".sealed"),
        "stored sealed: {}",
        path.display()
    );
    let len = bytes.len() as u64;

    // Nothing decrypted yet: the caller must stream (and decrypt).
    assert!(mapped(&store, &digest, 0, len).is_none());
    // A partial window read is decrypted for its caller only.
    assert_eq!(streamed(&store, &digest, 100, 5000, false).await, bytes[100..5100]);
    assert!(mapped(&store, &digest, 100, 5000).is_none());
    assert_eq!(counter(&store, "decrypted_cache.bytes"), 0);

    // The first whole pull decrypts every window and keeps them.
    assert_eq!(streamed(&store, &digest, 0, len, false).await, bytes);
    assert_eq!(counter(&store, "decrypted_cache.bytes"), len);
    let hits_before = counter(&store, "decrypted_cache.hits");

    // Later pulls come from memory: the whole blob, and ranges across window edges.
    assert_eq!(mapped(&store, &digest, 0, len).unwrap(), bytes);
    for (offset, n) in [(MIB - 1, 2), (MIB - 10, 2 * MIB + 20), (3 * MIB, 12_345), (0, 1)] {
        let got = mapped(&store, &digest, offset as u64, n as u64).unwrap();
        assert_eq!(got, bytes[offset..offset + n], "range {offset}+{n}");
        assert_eq!(streamed(&store, &digest, offset as u64, n as u64, false).await, got);
    }
    assert!(counter(&store, "decrypted_cache.hits") > hits_before);
    // A range past the end is not served from memory (the store's own read refuses it).
    assert!(mapped(&store, &digest, len - 1, 2).is_none());

    // A read made once uses nothing it did not find and keeps nothing.
    let other = content(2 * MIB, 9);
    let other_digest = put(&store, dir.path(), &other);
    assert_eq!(
        streamed(&store, &other_digest, 0, other.len() as u64, true).await,
        other
    );
    assert!(mapped(&store, &other_digest, 0, other.len() as u64).is_none());
    assert_eq!(counter(&store, "decrypted_cache.bytes"), len);

    // Deleted: its windows go, and the blob is not found rather than served from memory.
    store.delete_unpinned(&digest).unwrap();
    assert_eq!(counter(&store, "decrypted_cache.bytes"), 0);
    let gone = store.map_range(&digest, 0, len).unwrap_err();
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn with_the_cache_off_every_pull_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let store = sealed_store(dir.path()).with_decrypted_cache(0);
    let bytes = content(MIB + 1, 3);
    let digest = put(&store, dir.path(), &bytes);
    for _ in 0..2 {
        assert_eq!(streamed(&store, &digest, 0, bytes.len() as u64, false).await, bytes);
        assert!(mapped(&store, &digest, 0, bytes.len() as u64).is_none());
    }
    assert!(store.decrypted_counters().is_empty());
}
