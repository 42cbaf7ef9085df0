//! A `BlobPeer` endpoint on loopback fed the fields a hostile or broken peer could send. Each
//! request below once reached arithmetic or an allocation unchecked (a zero `k` divided by zero,
//! a 4 GiB chunk was allocated, an index past the layout was used); each is now refused with
//! INVALID_ARGUMENT, and the endpoint keeps serving.

use std::sync::Arc;

use keelson_raft::network::PeerChannels;
use keelson_storage::transfer::proto::blob_peer_client::BlobPeerClient;
use keelson_storage::transfer::proto::{GetRequest, GetShardRequest, PingRequest, RebuildRequest, ShardChunk};
use keelson_storage::{BlobPeers, BlobService, BlobStore, Uploads};

const DIGEST: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

async fn endpoint(dir: &std::path::Path) -> BlobPeerClient<tonic::transport::Channel> {
    let store = BlobStore::open(dir.join("blobs")).unwrap();
    let uploads = Arc::new(Uploads::open(dir.join("uploads"), store.clone(), "n7".into()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = BlobService::new(store, uploads)
        .with_peers(BlobPeers::new(PeerChannels::default()))
        .into_server();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    BlobPeerClient::connect(format!("http://{addr}")).await.unwrap()
}

fn rebuild(k: u32, m: u32, chunk: u32, size: u64, index: u32, sources: usize) -> RebuildRequest {
    RebuildRequest {
        digest: DIGEST.into(),
        size,
        k,
        m,
        chunk,
        index,
        sources: vec![String::new(); sources],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_layouts_and_indexes_are_refused_before_use() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = endpoint(dir.path()).await;
    let chunk = keelson_storage::erasure::CHUNK as u32;
    let refused = [
        ("k = 0 (divided by zero)", rebuild(0, 2, chunk, 1 << 20, 0, 2)),
        ("m = 0", rebuild(4, 0, chunk, 1 << 20, 0, 4)),
        ("k + m over 64", rebuild(60, 10, chunk, 1 << 20, 0, 70)),
        ("a zero chunk (divided by zero)", rebuild(4, 2, 0, 1 << 20, 0, 6)),
        ("a 4 GiB chunk", rebuild(4, 2, !63u32, 1 << 20, 0, 6)),
        (
            "a size of 2^64 - 1 (stripe count overflow)",
            rebuild(4, 2, chunk, u64::MAX, 0, 6),
        ),
        ("an index past k + m", rebuild(4, 2, chunk, 1 << 20, 6, 6)),
        ("more sources than shards", rebuild(4, 2, chunk, 1 << 20, 0, 1000)),
    ];
    for (what, request) in refused {
        let status = client.rebuild_shard(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
    }
    for (what, request) in [
        (
            "a 4 GiB chunk (allocated per record)",
            GetShardRequest {
                digest: DIGEST.into(),
                index: 0,
                first_stripe: 0,
                stripes: 1,
                chunk: u32::MAX,
            },
        ),
        (
            "shard index 4000",
            GetShardRequest {
                digest: DIGEST.into(),
                index: 4000,
                first_stripe: 0,
                stripes: 1,
                chunk,
            },
        ),
    ] {
        let status = client.get_shard(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
    }
    let put = futures_util::stream::iter([ShardChunk {
        digest: DIGEST.into(),
        index: 64,
        length: 10,
        data: vec![0; 10],
    }]);
    let status = client.put_shard(put).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "put of shard 64: {status:?}"
    );
    // A range past any blob, with an end that overflows, is simply not found here.
    let status = client
        .get(GetRequest {
            digest: DIGEST.into(),
            offset: u64::MAX,
            length: u64::MAX,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    // Still serving.
    client.ping(PingRequest {}).await.unwrap();
}
