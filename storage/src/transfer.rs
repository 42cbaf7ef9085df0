//! Node-to-node blob transfer over the `BlobPeer` gRPC service: pushing replicas to their holders,
//! streaming a blob from a holder to a node that lacks it, and the background jobs' requests
//! (repair asks a node to `Fetch` a copy, GC asks a holder to `Delete` one, liveness `Ping`s).
//!
//! A replica arrives through the same upload-session machinery as a client push (hashed while
//! written, verified, fsynced, renamed into the store), so a holder acknowledges only bytes that
//! are durable and match their digest. Receiving pins the digest (see [`crate::pins`]).

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use keelson_raft::network::PeerChannels;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::blob_store::{BlobStore, Deletion};
use crate::digest::Digest;
use crate::error::StorageError;
use crate::upload::Uploads;

/// Generated gRPC types of the blob transfer protocol.
pub mod proto {
    tonic::include_proto!("keelson.blobs");
}

use proto::blob_peer_client::BlobPeerClient;
use proto::blob_peer_server::{BlobPeer, BlobPeerServer};
use proto::{
    BlobChunk, DeleteReply, DeleteRequest, FetchRequest, GetRequest, GetShardRequest, PingReply, PingRequest, PutReply,
    RebuildRequest, ShardChunk,
};

/// Replica sessions are upload sessions under this pseudo-repository.
const REPLICA_REPO: &str = "_replica";

/// Ranges of at least this many bytes are sent to peers from memory maps of the blob file:
/// no reader thread, one copy less, and no SHA-256 pass per send (the same as large blobs
/// served to clients; a replica's receiver verifies its digest, and the scrub finds rot).
/// Smaller ranges go through the verifying reader, like small blobs served to clients.
const MAPPED_MIN: u64 = 1 << 20;

/// Data bytes per message (under tonic's 4 MiB default message limit).
const MESSAGE_BYTES: usize = 1 << 20;

/// `len` bytes at `offset` of a stored blob as zero-copy slices of its memory maps, at most
/// [`MESSAGE_BYTES`] each; `None` when the copy is sealed (and must be decrypted as it streams).
fn mapped_messages(store: &BlobStore, digest: &Digest, offset: u64, len: u64) -> io::Result<Option<Vec<Bytes>>> {
    let Some(pieces) = store.map_range(digest, offset, len)? else {
        return Ok(None);
    };
    let mut messages = Vec::new();
    for piece in pieces {
        let mut at = 0;
        while at < piece.len() {
            let end = (at + MESSAGE_BYTES).min(piece.len());
            messages.push(piece.slice(at..end));
            at = end;
        }
    }
    Ok(Some(messages))
}

/// A whole stored blob as data messages: memory-mapped slices of a plain copy, or the
/// verifying reader's chunks of a sealed one. A read that fails (a sealed copy found damaged)
/// ends the stream short, so the receiver sees fewer bytes than named and refuses the copy.
fn local_messages(
    store: &BlobStore,
    digest: &Digest,
    size: u64,
) -> io::Result<impl Stream<Item = BlobChunk> + Send + 'static> {
    fn data(data: Bytes) -> BlobChunk {
        BlobChunk {
            digest: String::new(),
            size: 0,
            data,
        }
    }
    fn read(item: io::Result<Bytes>) -> Option<BlobChunk> {
        item.ok().map(data)
    }
    if let Some(messages) = mapped_messages(store, digest, 0, size)? {
        return Ok(futures_util::stream::iter(messages).map(data).left_stream());
    }
    let rx = store.stream_range_once(digest, 0, size)?;
    Ok(tokio_stream::StreamExt::map_while(tokio_stream::wrappers::ReceiverStream::new(rx), read).right_stream())
}

/// The server side: accepts replicas, serves ranges, fetches and deletes copies on request.
pub struct BlobService {
    store: BlobStore,
    uploads: std::sync::Arc<Uploads>,
    /// For `Fetch` (copying from another holder); without it `Fetch` is refused.
    peers: Option<BlobPeers>,
}

impl BlobService {
    /// The client this node uses to pull from peers (repair, rebuild), or UNIMPLEMENTED.
    fn fetching_peers(&self) -> Result<&BlobPeers, Status> {
        self.peers
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this node cannot fetch from peers"))
    }

    pub fn new(store: BlobStore, uploads: std::sync::Arc<Uploads>) -> Self {
        BlobService {
            store,
            uploads,
            peers: None,
        }
    }

    /// Lets the service copy blobs from other nodes (the repair job's `Fetch`).
    pub fn with_peers(mut self, peers: BlobPeers) -> Self {
        self.peers = Some(peers);
        self
    }

    pub fn into_server(self) -> BlobPeerServer<Self> {
        BlobPeerServer::new(self)
    }
}

/// Stores the bytes of `stream` as blob `digest` of `size` bytes through a replica upload
/// session: verified, fsynced, renamed into the store. The digest is pinned first, so a GC
/// deletion cannot remove a copy this call relies on.
pub async fn receive_blob<S>(
    uploads: &Uploads,
    store: &BlobStore,
    digest: &Digest,
    size: u64,
    stream: S,
) -> Result<u64, StorageError>
where
    S: Stream<Item = Result<Bytes, StorageError>> + Unpin,
{
    store.pins().pin(digest);
    if store.contains(digest) {
        return Ok(size);
    }
    let pieces = stream.map(|item| item.map(Piece::Data));
    store_replica(uploads, store, pieces, Some((digest.clone(), size))).await
}

/// Writes a replica stream into a replica session and moves it into the store once it checks
/// out: as the `known` blob when the digest and size came first, else as the stream's last
/// message names it (a replica streamed while its upload arrived, see [`crate::tee`]). Bytes of
/// a blob the store already holds are dropped; on any failure the session is discarded.
async fn store_replica<S>(
    uploads: &Uploads,
    store: &BlobStore,
    stream: S,
    known: Option<(Digest, u64)>,
) -> Result<u64, StorageError>
where
    S: Stream<Item = Result<Piece, StorageError>> + Unpin,
{
    let id = uploads.create(REPLICA_REPO, None)?;
    let result = async {
        let (received, trailer) = fill_replica(uploads, &id, stream).await?;
        let (digest, size) = known
            .or(trailer)
            .ok_or_else(|| StorageError::Peer("replica stream ended before naming its digest".into()))?;
        store.pins().pin(&digest);
        if store.contains(&digest) {
            uploads.cancel(&id, REPLICA_REPO).await?;
            return Ok(size);
        }
        if received != size {
            return Err(StorageError::Peer(format!(
                "replica has {received} bytes, expected {size}"
            )));
        }
        uploads.finish(&id, REPLICA_REPO, &digest).await
    }
    .await;
    if result.is_err() {
        let _ = uploads.cancel(&id, REPLICA_REPO).await;
    }
    result
}

/// One message of a replica stream: bytes, or the trailer that names what they were.
enum Piece {
    Data(Bytes),
    Trailer(Digest, u64),
}

/// Writes the data of `stream` into replica session `id` until it ends or names its digest;
/// returns the bytes written and the trailer, if one came.
async fn fill_replica<S>(
    uploads: &Uploads,
    id: &str,
    mut stream: S,
) -> Result<(u64, Option<(Digest, u64)>), StorageError>
where
    S: Stream<Item = Result<Piece, StorageError>> + Unpin,
{
    let mut writer = uploads.writer(id, REPLICA_REPO, Some(0)).await?;
    let mut failure = None;
    let mut trailer = None;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(Piece::Data(data)) => writer.write(data).await?,
            Ok(Piece::Trailer(digest, size)) => {
                trailer = Some((digest, size));
                break;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let received = writer.close().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok((received, trailer)),
    }
}

/// The digest an RPC names, or INVALID_ARGUMENT.
fn requested_digest(text: &str) -> Result<Digest, Status> {
    Digest::parse(text).map_err(|e| Status::invalid_argument(e.to_string()))
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
        if first.digest.is_empty() {
            // Streamed while its upload arrived: the digest comes in the last message.
            let head = futures_util::stream::iter([Ok(Piece::Data(first.data))]);
            let rest = stream.map(|chunk| match chunk {
                Ok(c) if c.digest.is_empty() => Ok(Piece::Data(c.data)),
                Ok(c) => Digest::parse(&c.digest)
                    .map(|d| Piece::Trailer(d, c.size))
                    .map_err(|e| StorageError::Peer(e.to_string())),
                Err(status) => Err(StorageError::Peer(status.message().to_string())),
            });
            return match store_replica(&self.uploads, &self.store, head.chain(rest), None).await {
                Ok(size) => Ok(Response::new(PutReply { size })),
                Err(e) => Err(Status::unavailable(e.to_string())),
            };
        }
        let digest = Digest::parse(&first.digest).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let head = futures_util::stream::iter((!first.data.is_empty()).then(|| Ok(first.data)));
        let rest = stream.map(|chunk| {
            chunk
                .map(|c| c.data)
                .map_err(|status| StorageError::Peer(status.message().to_string()))
        });
        match receive_blob(&self.uploads, &self.store, &digest, first.size, head.chain(rest)).await {
            Ok(size) => Ok(Response::new(PutReply { size })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    type GetStream = ChunkStream;

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        let req = request.into_inner();
        let digest = requested_digest(&req.digest)?;
        let not_found = |e: io::Error| {
            if e.kind() == io::ErrorKind::NotFound {
                Status::not_found("blob not held here")
            } else {
                Status::unavailable(e.to_string())
            }
        };
        if req.length >= MAPPED_MIN {
            if let Some(messages) = mapped_messages(&self.store, &digest, req.offset, req.length).map_err(not_found)? {
                let chunks = messages.into_iter().map(|data| BlobChunk {
                    digest: String::new(),
                    size: 0,
                    data,
                });
                let stream = futures_util::stream::iter(chunks.map(Ok));
                return Ok(Response::new(Box::pin(stream)));
            }
        }
        let rx = match self.store.stream_range(&digest, req.offset, req.length) {
            Ok(rx) => rx,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Status::not_found("blob not held here")),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| match item {
            Ok(data) => Ok(BlobChunk {
                digest: String::new(),
                size: 0,
                data,
            }),
            Err(e) => Err(Status::unavailable(e.to_string())),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<PutReply>, Status> {
        let req = request.into_inner();
        let digest = requested_digest(&req.digest)?;
        let peers = self.fetching_peers()?;
        match peers
            .copy_from(&req.sources, &self.uploads, &self.store, &digest, req.size)
            .await
        {
            Ok(size) => Ok(Response::new(PutReply { size })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<DeleteReply>, Status> {
        let digest =
            Digest::parse(&request.into_inner().digest).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || store.delete_unpinned(&digest))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(DeleteReply {
            deleted: done == Deletion::Deleted,
            pinned: done == Deletion::Pinned,
        }))
    }

    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        Ok(Response::new(PingReply {}))
    }

    async fn put_shard(&self, request: Request<Streaming<ShardChunk>>) -> Result<Response<PutReply>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty shard stream"))?;
        let digest = Digest::parse(&first.digest).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let head = futures_util::stream::iter((!first.data.is_empty()).then(|| Ok(Bytes::from(first.data))));
        let rest = stream.map(|chunk| {
            chunk
                .map(|c| Bytes::from(c.data))
                .map_err(|status| StorageError::Peer(status.message().to_string()))
        });
        let (index, _) =
            crate::erasure::check_shard(first.index, None).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match write_shard(&self.store, &digest, index, first.length, head.chain(rest)).await {
            Ok(size) => Ok(Response::new(PutReply { size })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    type GetShardStream = Pin<Box<dyn Stream<Item = Result<ShardChunk, Status>> + Send>>;

    async fn get_shard(&self, request: Request<GetShardRequest>) -> Result<Response<Self::GetShardStream>, Status> {
        let req = request.into_inner();
        let digest = requested_digest(&req.digest)?;
        let (index, chunk) = crate::erasure::check_shard(req.index, Some(req.chunk))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let chunk = chunk.unwrap_or(crate::erasure::CHUNK);
        let rx = match self
            .store
            .stream_shard(&digest, index, req.first_stripe, req.stripes, chunk)
        {
            Ok(rx) => rx,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Status::not_found("shard not held here")),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|item| match item {
            Ok(data) => Ok(ShardChunk {
                digest: String::new(),
                index: 0,
                length: 0,
                data: data.to_vec(),
            }),
            Err(e) => Err(Status::data_loss(e.to_string())),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn rebuild_shard(&self, request: Request<RebuildRequest>) -> Result<Response<PutReply>, Status> {
        let req = request.into_inner();
        let digest = requested_digest(&req.digest)?;
        let peers = self.fetching_peers()?;
        let geometry = crate::erasure::Geometry::from_peer(req.k, req.m, req.chunk, req.size)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.index as usize >= geometry.k + geometry.m || req.sources.len() > geometry.k + geometry.m {
            return Err(Status::invalid_argument(format!(
                "shard index {} with {} sources in a {}+{} layout",
                req.index,
                req.sources.len(),
                geometry.k,
                geometry.m
            )));
        }
        let sources: Vec<Option<String>> = req.sources.into_iter().map(|s| (!s.is_empty()).then_some(s)).collect();
        match crate::erasure::write::rebuild_shard(peers, &self.store, &digest, geometry, &sources, req.index as usize)
            .await
        {
            Ok(size) => Ok(Response::new(PutReply { size })),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}

/// Writes a shard file of `length` bytes from `stream`: temp file, fsync, rename into place.
/// The blob is pinned first (a GC deletion never removes a shard being written).
pub async fn write_shard<S>(
    store: &BlobStore,
    digest: &Digest,
    index: usize,
    length: u64,
    mut stream: S,
) -> Result<u64, StorageError>
where
    S: Stream<Item = Result<Bytes, StorageError>> + Unpin,
{
    store.pins().pin(digest);
    let (temp, mut file) = store.shard_temp()?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<u64> {
        let mut written = 0u64;
        while let Some(data) = rx.blocking_recv() {
            file.append(&data)?;
            written += data.len() as u64;
        }
        file.sync_all()?;
        Ok(written)
    });
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(data) => {
                if tx.send(data).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| StorageError::Io(io::Error::other(e)))?;
    let outcome = match (failure, written) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(StorageError::Io(e)),
        (None, Ok(n)) if n != length => Err(StorageError::Peer(format!("shard has {n} bytes, expected {length}"))),
        (None, Ok(n)) => {
            let store2 = store.clone();
            let (t, d) = (temp.clone(), digest.clone());
            tokio::task::spawn_blocking(move || store2.ingest_shard(&t, &d, index))
                .await
                .map_err(|e| StorageError::Io(io::Error::other(e)))??;
            Ok(n)
        }
    };
    if outcome.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    outcome
}

/// Batches a replica stream may run ahead of its receiver.
const REPLICA_STREAM_DEPTH: usize = 8;

/// A replica on its way to one peer while its upload arrives; see [`BlobPeers::open_replica`].
pub struct ReplicaStream {
    tx: mpsc::Sender<BlobChunk>,
    reply: tokio::task::JoinHandle<Result<(), StorageError>>,
}

impl ReplicaStream {
    /// Sends the next bytes; false once the stream has failed (the peer answered early).
    pub async fn send(&self, data: Bytes) -> bool {
        let chunk = BlobChunk {
            digest: String::new(),
            size: 0,
            data,
        };
        self.tx.send(chunk).await.is_ok()
    }

    /// Names the blob and waits until the peer holds it durably (or says why not).
    pub async fn finish(self, digest: &Digest, size: u64) -> Result<(), StorageError> {
        let trailer = BlobChunk {
            digest: digest.to_string(),
            size,
            data: Bytes::new(),
        };
        let _ = self.tx.send(trailer).await;
        self.close().await
    }

    /// Ends the stream here and waits for the peer's answer (without a digest, a failure).
    pub async fn close(self) -> Result<(), StorageError> {
        drop(self.tx);
        self.reply
            .await
            .map_err(|e| StorageError::Peer(format!("replica stream task: {e}")))?
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
        let body = local_messages(store, digest, size)?;
        let header = futures_util::stream::once(futures_util::future::ready(BlobChunk {
            digest: digest.to_string(),
            size,
            data: Bytes::new(),
        }));
        client
            .put(header.chain(body))
            .await
            .map_err(|s| StorageError::Peer(s.message().to_string()))?;
        Ok(())
    }

    /// Opens a replica stream to the node at `addr` whose digest is named at its end (see
    /// [`crate::tee`]). The call runs in its own task, fed through the returned stream.
    pub fn open_replica(&self, addr: &str) -> Result<ReplicaStream, StorageError> {
        let mut client = self.client(addr)?;
        let (tx, rx) = mpsc::channel(REPLICA_STREAM_DEPTH);
        let reply = tokio::spawn(async move {
            client
                .put(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .map(|_| ())
                .map_err(|s| StorageError::Peer(s.message().to_string()))
        });
        Ok(ReplicaStream { tx, reply })
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
                    .map(|c| c.data)
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

    /// Copies a blob from the first of `sources` (peer addresses) that serves it whole into the
    /// local store; returns its size.
    pub async fn copy_from(
        &self,
        sources: &[String],
        uploads: &Uploads,
        store: &BlobStore,
        digest: &Digest,
        size: u64,
    ) -> Result<u64, StorageError> {
        let mut last = StorageError::BlobMissing(digest.clone());
        for source in sources {
            let rx = match self.fetch(source, digest, 0, size).await {
                Ok(rx) => rx,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(|item| item.map_err(|e| StorageError::Peer(e.to_string())));
            match receive_blob(uploads, store, digest, size, stream).await {
                Ok(size) => return Ok(size),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Asks the node at `addr` to copy `digest` from one of `sources`.
    pub async fn ask_fetch(
        &self,
        addr: &str,
        digest: &Digest,
        size: u64,
        sources: Vec<String>,
    ) -> Result<(), StorageError> {
        let mut client = self.client(addr)?;
        client
            .fetch(FetchRequest {
                digest: digest.to_string(),
                size,
                sources,
            })
            .await
            .map_err(|s| StorageError::Peer(s.message().to_string()))?;
        Ok(())
    }

    /// Asks the node at `addr` to delete its copy of `digest`; `Ok(true)` when it is gone there.
    pub async fn ask_delete(&self, addr: &str, digest: &Digest) -> Result<bool, StorageError> {
        let mut client = self.client(addr)?;
        let reply = client
            .delete(DeleteRequest {
                digest: digest.to_string(),
            })
            .await
            .map_err(|s| StorageError::Peer(s.message().to_string()))?
            .into_inner();
        Ok(!reply.pinned)
    }

    /// True when the node at `addr` answers within `timeout`.
    pub async fn ping(&self, addr: &str, timeout: std::time::Duration) -> bool {
        let Ok(mut client) = self.client(addr) else {
            return false;
        };
        matches!(
            tokio::time::timeout(timeout, client.ping(PingRequest {})).await,
            Ok(Ok(_))
        )
    }

    /// Streams a shard to the node at `addr` from `records` (sealed chunks); returns once the
    /// node holds it durably.
    pub async fn put_shard(
        &self,
        addr: &str,
        digest: &Digest,
        index: usize,
        length: u64,
        records: mpsc::Receiver<Bytes>,
    ) -> Result<(), StorageError> {
        let mut client = self.client(addr)?;
        let header = futures_util::stream::once(futures_util::future::ready(ShardChunk {
            digest: digest.to_string(),
            index: index as u32,
            length,
            data: Vec::new(),
        }));
        let body = tokio_stream::wrappers::ReceiverStream::new(records).map(|data| ShardChunk {
            digest: String::new(),
            index: 0,
            length: 0,
            data: data.to_vec(),
        });
        client
            .put_shard(header.chain(body))
            .await
            .map_err(|s| StorageError::Peer(s.message().to_string()))?;
        Ok(())
    }

    /// Streams the chunks of stripes `first .. first + count` of shard `index` held at `addr`.
    pub async fn get_shard(
        &self,
        addr: &str,
        digest: &Digest,
        index: usize,
        first: u64,
        count: u64,
        chunk: usize,
    ) -> Result<Streaming<ShardChunk>, StorageError> {
        let mut client = self.client(addr)?;
        let req = GetShardRequest {
            digest: digest.to_string(),
            index: index as u32,
            first_stripe: first,
            stripes: count,
            chunk: chunk as u32,
        };
        Ok(client
            .get_shard(req)
            .await
            .map_err(|s| StorageError::Peer(s.message().to_string()))?
            .into_inner())
    }

    /// Asks the node at `addr` to rebuild shard `index` from the shards at `sources`.
    pub async fn ask_rebuild(
        &self,
        addr: &str,
        digest: &Digest,
        geometry: crate::erasure::Geometry,
        index: usize,
        sources: &[Option<String>],
    ) -> Result<(), StorageError> {
        let mut client = self.client(addr)?;
        client
            .rebuild_shard(RebuildRequest {
                digest: digest.to_string(),
                size: geometry.size,
                k: geometry.k as u32,
                m: geometry.m as u32,
                chunk: geometry.chunk as u32,
                index: index as u32,
                sources: sources.iter().map(|s| s.clone().unwrap_or_default()).collect(),
            })
            .await
            .map_err(|s| StorageError::Peer(s.message().to_string()))?;
        Ok(())
    }
}
