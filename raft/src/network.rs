//! The Raft network: openraft's RPCs carried over the `RaftPeer` gRPC service.
//!
//! Messages are openraft's own types, bincode-encoded into a `Payload`; gRPC gives framing,
//! multiplexing and HTTP/2 flow control. Connections are made through [`PeerChannels`], the one
//! place that dials peers: plain TCP by default, or a [`Dialer`] the caller supplies (the
//! simulation dials over its simulated network; the code above the dialer stays the same).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::proto::raft_peer_client::RaftPeerClient;
use crate::proto::Payload;
use crate::tls::PeerTls;
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// A connected byte stream to another node (a TCP socket in the binary, a simulated one in the
/// simulation).
pub trait DialedStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> DialedStream for T {}

/// What a [`Dialer`] hands back: a connected stream, or why there is none.
pub type DialFuture = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn DialedStream>>> + Send>>;

/// Opens a connection to `host:port`. Everything in a node that dials another node (Raft RPCs,
/// blob transfer, upload proxying) goes through one of these when one is given.
#[derive(Clone)]
pub struct Dialer(Arc<dyn Fn(String) -> DialFuture + Send + Sync>);

impl Dialer {
    pub fn new<F, Fut, S>(dial: F) -> Dialer
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<S>> + Send + 'static,
        S: DialedStream,
    {
        Dialer(Arc::new(move |addr| {
            let connecting = dial(addr);
            Box::pin(async move { Ok(Box::new(connecting.await?) as Box<dyn DialedStream>) })
        }))
    }

    /// Connects to `addr` (`host:port`).
    pub fn dial(&self, addr: String) -> DialFuture {
        (self.0)(addr)
    }

    /// Connects to the authority (`host:port`) of `uri`.
    pub fn dial_uri(&self, uri: &Uri) -> DialFuture {
        match uri.authority() {
            Some(authority) => self.dial(authority.as_str().to_string()),
            None => {
                let uri = uri.to_string();
                Box::pin(async move {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("no host:port in {uri}"),
                    ))
                })
            }
        }
    }
}

impl Dialer {
    /// This dialer as a tower connector (what tonic's channels and hyper's client take).
    pub fn connector(&self) -> DialerConnector {
        DialerConnector(self.clone())
    }
}

/// A [`Dialer`] as a `tower::Service<Uri>` connector.
#[derive(Clone, Debug)]
pub struct DialerConnector(Dialer);

impl tower::Service<Uri> for DialerConnector {
    type Response = TokioIo<DialerStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.dial_uri(&uri);
        Box::pin(async move { Ok(TokioIo::new(DialerStream(connecting.await?))) })
    }
}

/// A stream opened by a [`Dialer`].
pub struct DialerStream(Box<dyn DialedStream>);

impl Connection for DialerStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for DialerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for DialerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialer")
    }
}

/// Lazily connected, cached gRPC channels to peers, keyed by peer address.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// `None`: plain TCP through tonic's own connector.
    dialer: Option<Dialer>,
    /// `Some`: every connection is mutual TLS with these credentials.
    tls: Option<PeerTls>,
}

/// A peer address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("bad peer address {0}")]
pub struct BadPeerAddr(pub String);

impl PeerChannels {
    /// Channels whose connections are opened by `dialer` instead of plain TCP.
    pub fn with_dialer(dialer: Dialer) -> PeerChannels {
        PeerChannels {
            channels: Default::default(),
            dialer: Some(dialer),
            tls: None,
        }
    }

    /// These channels, speaking mutual TLS with `tls` on every connection.
    pub fn with_tls(self, tls: PeerTls) -> PeerChannels {
        PeerChannels {
            channels: Default::default(),
            tls: Some(tls),
            ..self
        }
    }

    pub fn channel(&self, addr: &str) -> Result<Channel, BadPeerAddr> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|_| BadPeerAddr(addr.to_string()))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.client_config())
                .map_err(|e| BadPeerAddr(format!("{addr}: {e}")))?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20));
        let channel = match &self.dialer {
            None => endpoint.connect_lazy(),
            Some(dialer) => endpoint.connect_with_connector_lazy(dialer.connector()),
        };
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn raft_client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, BadPeerAddr> {
        Ok(RaftPeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }
}

/// The largest AppendEntries message sent (the peers accept 64 MiB): 256 entries of large
/// manifests would exceed it, and a message the receiver refuses would stall replication.
pub const MAX_APPEND_BYTES: u64 = 32 << 20;

/// `None` when `rpc` encodes within `limit`; else how many of its entries to send instead
/// (at least one: a single entry is bounded by `node::MAX_COMMAND_BYTES`, well below).
pub fn entries_over_bound(rpc: &AppendEntriesRequest<TypeConfig>, limit: u64) -> Option<u64> {
    let bytes = bincode::serialized_size(rpc).ok()?;
    if bytes <= limit || rpc.entries.len() <= 1 {
        return None;
    }
    let n = rpc.entries.len() as u64;
    // Entries in proportion to the bound, rounded down, and always fewer than now.
    Some((n.saturating_mul(limit) / bytes).clamp(1, n - 1))
}

/// openraft's network factory over [`PeerChannels`].
#[derive(Clone)]
pub struct GrpcNetwork {
    pub channels: PeerChannels,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        GrpcPeer {
            target,
            client: self.channels.raft_client(&node.peer_addr).map_err(|e| e.to_string()),
        }
    }
}

/// One peer as openraft sees it.
pub struct GrpcPeer {
    target: NodeId,
    client: Result<RaftPeerClient<Channel>, String>,
}

pub fn encode<T: Serialize>(value: &T) -> Result<Payload, bincode::Error> {
    Ok(Payload {
        data: bincode::serialize(value)?,
    })
}

pub fn decode<T: DeserializeOwned>(payload: &Payload) -> Result<T, bincode::Error> {
    bincode::deserialize(&payload.data)
}

fn net_err<E: std::error::Error>(e: &(impl std::error::Error + 'static)) -> RPCError<NodeId, NodeInfo, E> {
    RPCError::Network(NetworkError::new(e))
}

impl GrpcPeer {
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        rpc: impl AsyncFnOnce(RaftPeerClient<Channel>, Payload) -> Result<tonic::Response<Payload>, tonic::Status>,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                    e.clone(),
                ))))
            }
        };
        let payload = encode(req).map_err(|e| net_err(&e))?;
        let reply = match tokio::time::timeout(option.hard_ttl(), rpc(client, payload)).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                    "rpc timed out",
                ))))
            }
            Ok(Err(status)) => {
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                    status.message().to_string(),
                ))))
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, RaftError<NodeId, E>> = decode(&reply).map_err(|e| net_err(&e))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        if let Some(fits) = entries_over_bound(&rpc, MAX_APPEND_BYTES) {
            // openraft sends the next request with at most this many entries.
            return Err(RPCError::PayloadTooLarge(
                openraft::error::PayloadTooLarge::new_entries_hint(fits),
            ));
        }
        self.call(&rpc, &option, async |mut c, p| c.append_entries(p).await)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.call(&rpc, &option, async |mut c, p| c.install_snapshot(p).await)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(&rpc, &option, async |mut c, p| c.vote(p).await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CatalogCommand;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    fn request(entries: usize, each: usize) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: (0..entries)
                .map(|i| Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
                    payload: EntryPayload::Normal(CatalogCommand::GcMark {
                        epoch: 1,
                        candidates: vec!["x".repeat(each)],
                        now_ms: 0,
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn an_append_over_the_bound_asks_for_fewer_entries() {
        assert_eq!(entries_over_bound(&request(10, 1000), 1 << 20), None);
        // 256 entries of 1 MiB are about 256 MiB: about 32 fit in 32 MiB.
        let hint = entries_over_bound(&request(256, 1 << 20), MAX_APPEND_BYTES).unwrap();
        assert!((30..32).contains(&hint), "hint {hint}");
        assert!(entries_over_bound(&request(hint as usize, 1 << 20), MAX_APPEND_BYTES).is_none());
        // Two entries over the bound: one at a time; one entry is never split.
        assert_eq!(entries_over_bound(&request(2, 40 << 20), MAX_APPEND_BYTES), Some(1));
        assert_eq!(entries_over_bound(&request(1, 40 << 20), MAX_APPEND_BYTES), None);
    }
}
