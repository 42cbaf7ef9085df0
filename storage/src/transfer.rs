//! Node-to-node blob transfer over the `BlobPeer` gRPC service: pushing replicas to their holders
//! and streaming a blob from a holder to a node that lacks it.
//!
//! A replica arrives through the same upload-session machinery as a client push (hashed while
//! written, verified, fsynced, renamed into the store), so a holder acknowledges only bytes that
//! are durable and match their digest.

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use keelson_raft::network::PeerChannels;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::blob_store::BlobStore;
use crate::digest::Digest;
use crate::error::StorageError;
use crate::upload::Uploads;

/// Generated gRPC types of the blob transfer protocol.
pub mod proto {
    tonic::include_proto!("keelson.blobs");
}

use proto::blob_peer_client::BlobPeerClient;
use proto::blob_peer_server::{BlobPeer, BlobPeerServer};
use proto::{BlobChunk, GetRequest, PutReply};

/// Replica sessions are upload sessions under this pseudo-repository.
const REPLICA_REPO: &str = "_replica";

/// The server side: accepts replicas, serves ranges.
pub struct BlobService {
    store: BlobStore,
    uploads: std::sync::Arc<Uploads>,
}

impl BlobService {
    pub fn new(store: BlobStore, uploads: std::sync::Arc<Uploads>) -> Self {
        BlobService { store, uploads }
    }

    pub fn into_server(self) -> BlobPeerServer<Self> {
        BlobPeerServer::new(self)
    }

    async fn receive(&self, first: BlobChunk, mut rest: Streaming<BlobChunk>) -> Result<u64, StorageError> {
        let digest = Digest::parse(&first.digest).map_err(|e| StorageError::Peer(e.to_string()))?;
        if self.store.contains(&digest) {
            return Ok(first.size);
        }
        let id = self.uploads.create(REPLICA_REPO)?;
        let result = async {
            let mut writer = self.uploads.writer(&id, REPLICA_REPO, Some(0)).await?;
            let mut failure = None;
            if !first.data.is_empty() {
                writer.write(Bytes::from(first.data)).await?;
            }
            while let Some(chunk) = rest.next().await {
                match chunk {
                    Ok(chunk) => writer.write(Bytes::from(chunk.data)).await?,
                    Err(status) => {
                        failure = Some(StorageError::Peer(status.message().to_string()));
                        break;
                    }
                }
            }
            let received = writer.close().await?;
            if let Some(e) = failure {
                return Err(e);
            }
            if received != first.size {
                return Err(StorageError::Peer(format!(
                    "replica has {received} bytes, expected {}",
                    first.size
                )));
            }
            self.uploads.finish(&id, REPLICA_REPO, &digest).await
        }
        .await;
        if result.is_err() {
            let _ = self.uploads.cancel(&id, REPLICA_REPO).await;
        }
        result
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<BlobChunk, Status>> + Send>>;

#[tonic::async_trait]
impl BlobPeer for BlobService {
    async fn put(&self, request: Request<Streaming<BlobChunk>>) -> Result<Response<PutReply>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty replica stream"))?;
        match self.receive(first, stream).await {
            Ok(size) => Ok(Response::new(PutReply { size })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    type GetStream = ChunkStream;

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        let req = request.into_inner();
        let digest = Digest::parse(&req.digest).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let rx = match self.store.stream_range(&digest, req.offset, req.length) {
            Ok(rx) => rx,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Status::not_found("blob not held here")),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| match item {
            Ok(data) => Ok(BlobChunk {
                digest: String::new(),
                size: 0,
                data: data.to_vec(),
            }),
            Err(e) => Err(Status::unavailable(e.to_string())),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The client side.
#[derive(Clone)]
pub struct BlobPeers {
    channels: PeerChannels,
}

impl BlobPeers {
    pub fn new(channels: PeerChannels) -> Self {
        BlobPeers { channels }
    }

    fn client(&self, addr: &str) -> Result<BlobPeerClient<tonic::transport::Channel>, StorageError> {
        Ok(BlobPeerClient::new(
            self.channels
                .channel(addr)
                .map_err(|e| StorageError::Peer(e.to_string()))?,
        ))
    }

    /// Streams a locally stored blob to the node at `addr`; returns once it holds it durably.
    pub async fn push(&self, addr: &str, store: &BlobStore, digest: &Digest, size: u64) -> Result<(), StorageError> {
        let mut client = self.client(addr)?;
        let rx = store.stream_range(digest, 0, size)?;
        let header = futures_util::stream::once(futures_util::future::ready(BlobChunk {
            digest: digest.to_string(),
            size,
            data: Vec::new(),
        }));
        // A read error ends the stream early; the receiver then sees a short replica and refuses it.
        let body = tokio_stream::wrappers::ReceiverStream::new(rx)
            .take_while(|item| futures_util::future::ready(item.is_ok()))
            .filter_map(|item| futures_util::future::ready(item.ok()))
            .map(|data| BlobChunk {
                digest: String::new(),
                size: 0,
                data: data.to_vec(),
            });
        client
            .put(header.chain(body))
            .await
            .map_err(|s| StorageError::Peer(s.message().to_string()))?;
        Ok(())
    }

    /// Streams `len` bytes at `offset` of a blob held by the node at `addr`.
    pub async fn fetch(
        &self,
        addr: &str,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<mpsc::Receiver<io::Result<Bytes>>, StorageError> {
        let mut client = self.client(addr)?;
        let req = GetRequest {
            digest: digest.to_string(),
            offset,
            length: len,
        };
        let mut stream = client
            .get(req)
            .await
            .map_err(|s| StorageError::Peer(s.message().to_string()))?
            .into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut sent = 0u64;
            while let Some(item) = stream.next().await {
                let item = item
                    .map(|c| Bytes::from(c.data))
                    .map_err(|s| io::Error::other(s.message().to_string()));
                let failed = item.is_err();
                if let Ok(data) = &item {
                    sent += data.len() as u64;
                }
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
            if sent != len {
                let _ = tx
                    .send(Err(io::Error::other(format!("holder sent {sent} of {len} bytes"))))
                    .await;
            }
        });
        Ok(rx)
    }
}
