//! The server side of the peer protocol, and the requests followers forward to the leader.
//!
//! Any node accepts writes and linearizable reads; a follower hands them to the leader with
//! [`Forwarded`] over the `Forward` RPC and answers its client only once it has itself applied the
//! leader's result, so a client reads its own writes on whichever node it lands.

use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::command::{CatalogCommand, CatalogResponse};
use crate::network::{decode, encode};
use crate::node::Catalog;
use crate::proto::raft_peer_server::RaftPeer;
use crate::proto::Payload;
use crate::removal::{LeaveNotice, Removal};
use crate::types::{KeelsonRaft, NodeId, NodeInfo};

/// A request a follower forwards to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded {
    Write(CatalogCommand),
    ReadIndex,
    AddMember { id: NodeId, node: NodeInfo },
    RemoveMember { id: NodeId },
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardReply {
    /// Committed at `index` with this answer.
    Written { index: u64, response: CatalogResponse },
    /// Reads are linearizable once the asker has applied up to `index`.
    ReadIndex { index: u64 },
    /// A membership change committed at `index`.
    MembershipChanged { index: u64 },
}

/// Why a forwarded request failed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        leader: Option<NodeId>,
        node: Option<NodeInfo>,
    },
    #[error("{0}")]
    Failed(String),
}

pub type ForwardResult = Result<ForwardReply, ForwardError>;

/// The gRPC service a node exposes to its peers.
pub struct PeerService {
    raft: KeelsonRaft,
    /// The node's write batcher: forwarded writes share entries with its own.
    writes: std::sync::Arc<crate::write_batch::WriteBatcher>,
    node_id: NodeId,
    removal: Removal,
}

impl PeerService {
    pub fn new(catalog: &Catalog) -> Self {
        PeerService {
            raft: catalog.raft().clone(),
            writes: catalog.writes().clone(),
            node_id: catalog.node_id(),
            removal: catalog.removal().clone(),
        }
    }

    pub fn into_server(self) -> crate::proto::raft_peer_server::RaftPeerServer<Self> {
        crate::proto::raft_peer_server::RaftPeerServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

fn bad_request(e: bincode::Error) -> Status {
    Status::invalid_argument(format!("undecodable payload: {e}"))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    encode(value)
        .map(Response::new)
        .map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref()).map_err(bad_request)?;
        reply(&self.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref()).map_err(bad_request)?;
        reply(&self.raft.vote(req).await)
    }

    async fn install_snapshot(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req = decode(request.get_ref()).map_err(bad_request)?;
        reply(&self.raft.install_snapshot(req).await)
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: Forwarded = decode(request.get_ref()).map_err(bad_request)?;
        let serve = async {
            tracing::debug!("serving a request forwarded by another member");
            crate::node::serve_forwarded(&self.raft, &self.writes, req).await
        };
        // The forwarding node's request: its id follows into the leader's log lines.
        let id = request
            .metadata()
            .get(crate::request_id::HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let answer = match id {
            Some(id) => {
                let span = tracing::info_span!("request", id = %id);
                tracing::Instrument::instrument(crate::request_id::scope(id, serve), span).await
            }
            None => serve.await,
        };
        reply(&answer)
    }

    async fn leave(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let notice: LeaveNotice = decode(request.get_ref()).map_err(bad_request)?;
        if notice.id != self.node_id {
            return Err(Status::invalid_argument(format!(
                "this is node {}, not node {}",
                self.node_id, notice.id
            )));
        }
        leave(&self.raft, &self.removal).map_err(|e| Status::internal(e.to_string()))?;
        reply(&())
    }
}

/// Marks this node removed and stops its Raft (in the background, so the answer still goes out).
pub(crate) fn leave(raft: &KeelsonRaft, removal: &Removal) -> std::io::Result<()> {
    if removal.is_removed() {
        return Ok(());
    }
    removal.mark()?;
    tracing::warn!("this node was removed from the cluster; its Raft stops and it answers 503 from now on");
    let raft = raft.clone();
    tokio::spawn(async move {
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(error = %e, "stopping raft after removal");
        }
    });
    Ok(())
}
