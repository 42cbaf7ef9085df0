//! The Raft network: openraft's RPCs carried over the `RaftPeer` gRPC service.
//!
//! Messages are openraft's own types, bincode-encoded into a `Payload`; gRPC gives framing,
//! multiplexing and HTTP/2 flow control. Connections are made through [`PeerChannels`], the one
//! place that dials peers (the simulation swaps the dialer, not this code).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::proto::raft_peer_client::RaftPeerClient;
use crate::proto::Payload;
use crate::types::{NodeId, NodeInfo, TypeConfig};

/// Lazily connected, cached gRPC channels to peers, keyed by peer address.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// A peer address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[error("bad peer address {0}")]
pub struct BadPeerAddr(pub String);

impl PeerChannels {
    pub fn channel(&self, addr: &str) -> Result<Channel, BadPeerAddr> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = map.get(addr) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| BadPeerAddr(addr.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20));
        let channel = endpoint.connect_lazy();
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn raft_client(&self, addr: &str) -> Result<RaftPeerClient<Channel>, BadPeerAddr> {
        Ok(RaftPeerClient::new(self.channel(addr)?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20))
    }
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
