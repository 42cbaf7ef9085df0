//! Replica tees against a real `BlobPeer` endpoint on loopback: a copy streamed while its upload
//! arrives is stored, verified, only once its digest is named; a stream that ends without its
//! digest, names the wrong one or the wrong size leaves nothing behind; and a tee whose target
//! cannot be reached reports that target as failed while the others get their copies.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use keelson_raft::network::PeerChannels;
use keelson_storage::tee::ReplicaTee;
use keelson_storage::{BlobPeers, BlobService, BlobStore, Digest, Uploads};
use sha2::{Digest as _, Sha256};

/// One receiving node: its store, its upload sessions and its peer address.
struct Receiver {
    store: BlobStore,
    uploads_dir: std::path::PathBuf,
    addr: String,
}

async fn receiver(dir: &Path) -> Receiver {
    let store = BlobStore::open(dir.join("blobs")).unwrap();
    let uploads_dir = dir.join("uploads");
    let uploads = Arc::new(Uploads::open(uploads_dir.clone(), store.clone(), "n9".into()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = BlobService::new(store.clone(), uploads).into_server();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Receiver {
        store,
        uploads_dir,
        addr,
    }
}

fn blob(len: usize, seed: u8) -> (Vec<Bytes>, Digest, u64) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let digest = Digest::parse(&format!("sha256:{}", hex::encode(Sha256::digest(&data)))).unwrap();
    let batches = data.chunks(1 << 20).map(Bytes::copy_from_slice).collect();
    (batches, digest, len as u64)
}

/// Upload sessions still open on a receiver (a failed replica must not leave one behind).
fn open_sessions(r: &Receiver) -> usize {
    std::fs::read_dir(&r.uploads_dir).map_or(0, |d| d.filter_map(Result::ok).filter(|e| e.path().is_dir()).count())
}

async fn stream(peers: &BlobPeers, targets: &[(u64, String)], batches: &[Bytes]) -> ReplicaTee {
    let ids = targets.iter().map(|(id, _)| *id).collect();
    let mut tee = ReplicaTee::open(peers, ids, targets);
    for b in batches {
        tee.send(b).await;
    }
    tee
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_replica_is_stored_once_its_digest_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        receiver(&dir.path().join("a")).await,
        receiver(&dir.path().join("b")).await,
    );
    let peers = BlobPeers::new(PeerChannels::default());
    let (batches, digest, size) = blob((5 << 20) + 321, 1);
    let targets = [(1, a.addr.clone()), (2, b.addr.clone())];
    let tee = stream(&peers, &targets, &batches).await;
    assert_eq!(tee.offset(), size);
    assert!(
        !a.store.contains(&digest),
        "nothing is stored before the digest is named"
    );
    let results = tee.finish(&digest, size).await;
    assert_eq!(results.len(), 2);
    for (id, result) in results {
        assert!(result.is_ok(), "target {id}: {result:?}");
    }
    for r in [&a, &b] {
        assert!(r.store.contains(&digest));
        let mut stored = Vec::new();
        let reader = r.store.open_blob(&digest).unwrap();
        keelson_storage::blob_store::read_through(&reader, |b| {
            stored.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(stored, batches.concat());
        assert_eq!(open_sessions(r), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_digest_a_wrong_size_or_no_digest_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = receiver(dir.path()).await;
    let peers = BlobPeers::new(PeerChannels::default());
    let (batches, digest, size) = blob(3 << 20, 2);
    let (_, other, _) = blob(3 << 20, 3);
    let targets = [(1, r.addr.clone())];

    let results = stream(&peers, &targets, &batches).await.finish(&other, size).await;
    assert!(results[0].1.is_err(), "the bytes are not the named blob");
    let results = stream(&peers, &targets, &batches).await.finish(&digest, size + 1).await;
    assert!(results[0].1.is_err(), "the named size is not what arrived");
    // Dropped unfinished (the upload failed or was abandoned): the receiver discards it.
    drop(stream(&peers, &targets, &batches).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open_sessions(&r) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a dropped stream left its session open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!r.store.contains(&digest) && !r.store.contains(&other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let r = receiver(dir.path()).await;
    // A port that was free a moment ago: nothing listens there.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let peers = BlobPeers::new(PeerChannels::default());
    let (batches, digest, size) = blob((2 << 20) + 5, 4);
    let tee = stream(&peers, &[(1, r.addr.clone()), (2, dead_addr)], &batches).await;
    let mut results = tee.finish(&digest, size).await;
    results.sort_by_key(|(id, _)| *id);
    assert!(results[0].1.is_ok(), "{:?}", results[0]);
    assert!(results[1].1.is_err(), "nothing listens on target 2");
    assert!(r.store.contains(&digest));
}

#[tokio::test]
async fn a_sweep_drops_only_the_tees_idle_for_longer_than_asked() {
    use keelson_storage::tee::{ReplicaTees, IDLE};
    let peers = BlobPeers::new(PeerChannels::default());
    let tees = ReplicaTees::default();
    tees.keep("a", ReplicaTee::open(&peers, vec![1], &[]));
    tees.keep("b", ReplicaTee::open(&peers, vec![1], &[]));
    tees.sweep(IDLE);
    assert!(tees.take("a").is_some(), "kept a moment ago");
    tees.sweep(std::time::Duration::ZERO);
    assert!(tees.take("b").is_none(), "swept as idle");
}
