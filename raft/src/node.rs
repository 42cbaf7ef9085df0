//! [`Catalog`]: one node's handle on the replicated catalog — open the stores, start openraft,
//! propose commands and serve linearizable reads from any member (forwarding to the leader when
//! this node is a follower), change membership and report cluster status.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{ChangeMembers, Config, ServerState};
use serde::{Deserialize, Serialize};

use crate::catalog::CatalogReader;
use crate::command::{CatalogCommand, CatalogResponse};
use crate::log_store::LogStore;
use crate::network::{decode, encode, GrpcNetwork, PeerChannels};
use crate::peer::{ForwardError, ForwardReply, ForwardResult, Forwarded};
use crate::read_index::ReadBatcher;
use crate::removal::{LeaveNotice, Removal};
use crate::state_machine::StateMachineStore;
use crate::types::{KeelsonRaft, NodeId, NodeInfo};
use crate::write_batch::WriteBatcher;

/// How long a request waits for a leader or for this node to catch up before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How to open a node's catalog.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    pub node_id: NodeId,
    pub node: NodeInfo,
    /// Directory for the rocksdb and snapshots.
    pub dir: PathBuf,
    /// Make this node the single voter of a new cluster if it has never been initialised.
    pub bootstrap_single: bool,
    /// Log entries applied between two snapshots (the log before a snapshot is then purged,
    /// keeping [`LOG_KEPT_AFTER_SNAPSHOT`] entries at most for members that are just behind).
    pub snapshot_every_logs: u64,
}

/// Entries kept below the last snapshot, so a briefly lagging member catches up from the log
/// rather than by a whole snapshot.
pub const LOG_KEPT_AFTER_SNAPSHOT: u64 = 1000;

/// Failures of catalog operations, as the API must tell them apart.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    #[error("opening the catalog store failed: {0}")]
    Open(String),
    #[error("no leader is reachable: {0}")]
    NoLeader(String),
    #[error("the raft group is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid membership change: {0}")]
    Membership(String),
    #[error("catalog read failed: {0}")]
    Read(#[from] crate::catalog::ReadError),
    #[error("node {0} was removed from its cluster; delete its data directory to add it again as a new member")]
    Removed(NodeId),
    #[error("a catalog change of {bytes} bytes is over the {limit}-byte bound of one Raft entry")]
    TooLarge { bytes: u64, limit: u64 },
}

/// The largest encoded command one Raft entry may carry: a 4 MiB manifest, the parts of it the
/// record keeps parsed (annotations, digests: substrings of the body, so at most as much again)
/// and the push's origin, with 256 KiB to spare. Every entry must also fit an AppendEntries
/// message (see `network::MAX_APPEND_BYTES`).
pub const MAX_COMMAND_BYTES: u64 = (8 << 20) + (256 << 10);

/// One node's catalog: openraft plus a reader of the applied state.
#[derive(Clone)]
pub struct Catalog {
    raft: KeelsonRaft,
    reader: CatalogReader,
    node_id: NodeId,
    channels: PeerChannels,
    reads: Arc<ReadBatcher>,
    /// Group commit of the writes this node serves as leader.
    writes: Arc<WriteBatcher>,
    removal: Removal,
    timings: crate::timings::RaftTimings,
}

/// Refuses a command over [`MAX_COMMAND_BYTES`] (checked where it is proposed and again by the
/// leader, whatever version the proposing member runs).
fn check_command_size(cmd: &CatalogCommand) -> Result<(), CatalogError> {
    command_size(cmd).map(|_| ())
}

/// The encoded size of `cmd`, when within [`MAX_COMMAND_BYTES`].
fn command_size(cmd: &CatalogCommand) -> Result<u64, CatalogError> {
    let bytes = bincode::serialized_size(cmd).map_err(|e| CatalogError::Unavailable(e.to_string()))?;
    if bytes > MAX_COMMAND_BYTES {
        return Err(CatalogError::TooLarge {
            bytes,
            limit: MAX_COMMAND_BYTES,
        });
    }
    Ok(bytes)
}

/// Whether a failed RPC never left this node: tonic wraps every failure to open the connection
/// (refused, unreachable, timed out, TLS handshake) in a `ConnectError` kept in the status's
/// source chain, and a request is only sent on an open connection. Decided by the error's type,
/// never by the words of its message.
pub(crate) fn never_connected(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Why a forwarded request got no answer.
enum Forward {
    /// It never reached the leader.
    NotDelivered(String),
    /// It may have reached the leader; its fate is unknown.
    Lost(String),
}

/// A member as `cluster status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub api_addr: String,
    pub peer_addr: String,
    pub fault_domain: String,
    pub voter: bool,
    /// Log entries the leader has not yet seen replicated to this member (leader's view only).
    pub lag: Option<u64>,
    /// The member's last capacity report: bytes its blobs may use, and bytes still free.
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    #[serde(default)]
    pub free_bytes: Option<u64>,
}

/// What `cluster status` reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Last log index covered by this node's newest snapshot (built or installed).
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    /// Log entries up to this index are purged from this node's log.
    #[serde(default)]
    pub purged_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// Blobs with fewer live copies than the cluster keeps, as of the leader's last repair pass
    /// (`None` when the reporting node is not the leader or has not finished a pass yet).
    #[serde(default)]
    pub under_replicated: Option<u64>,
    /// Bytes repair still has to copy to bring every blob back to full redundancy (same source).
    #[serde(default)]
    pub bytes_to_move: Option<u64>,
    /// Counters of the reporting node's background blob jobs since it started (`repair.copies`,
    /// `scrub.verified`, `scrub.repaired`, `gc.swept`, `gc.files_deleted`, …).
    #[serde(default)]
    pub blob_jobs: BTreeMap<String, u64>,
    /// This cluster's region and the region identity is managed in (`None` until set).
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub home_region: Option<String>,
}

impl Catalog {
    pub async fn open(config: CatalogConfig) -> Result<Catalog, CatalogError> {
        Catalog::open_with(config, PeerChannels::default()).await
    }

    /// [`Catalog::open`] with the peer connections made through `channels` (e.g. channels with
    /// a [`Dialer`](crate::network::Dialer) other than plain TCP).
    pub async fn open_with(config: CatalogConfig, channels: PeerChannels) -> Result<Catalog, CatalogError> {
        let open_err = |e: &dyn std::fmt::Display| CatalogError::Open(e.to_string());
        std::fs::create_dir_all(&config.dir).map_err(|e| open_err(&e))?;
        let removal = Removal::at(&config.dir);
        if removal.is_removed() {
            return Err(CatalogError::Removed(config.node_id));
        }
        let db = crate::db::open(&config.dir.join("catalog")).map_err(|e| open_err(&e))?;
        let timings = crate::timings::RaftTimings::default();
        let log_store = LogStore::new(db.clone(), timings.clone());
        let state_machine = StateMachineStore::new(db.clone(), config.dir.join("snapshots"), timings.clone())
            .map_err(|e| open_err(&e))?;
        let identity = state_machine.identity();
        let read_cache = state_machine.read_cache();
        let raft_config = Config {
            cluster_name: "keelson".into(),
            heartbeat_interval: 200,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            max_payload_entries: 256,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every_logs),
            max_in_snapshot_log_to_keep: LOG_KEPT_AFTER_SNAPSHOT.min(config.snapshot_every_logs / 2),
            ..Default::default()
        }
        .validate()
        .map_err(|e| open_err(&e))?;
        let network = GrpcNetwork {
            channels: channels.clone(),
        };
        let raft = KeelsonRaft::new(config.node_id, Arc::new(raft_config), network, log_store, state_machine)
            .await
            .map_err(|e| open_err(&e))?;
        let catalog = Catalog {
            raft,
            reader: CatalogReader::new(db, identity, read_cache),
            node_id: config.node_id,
            channels,
            reads: Arc::new(ReadBatcher::default()),
            writes: Arc::new(WriteBatcher::default()),
            removal,
            timings,
        };
        if config.bootstrap_single && !catalog.is_initialized().await? {
            catalog
                .initialize(BTreeMap::from([(config.node_id, config.node.clone())]))
                .await?;
        }
        Ok(catalog)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Reads of the locally applied state.
    pub fn reader(&self) -> &CatalogReader {
        &self.reader
    }

    /// How long appends, applies and snapshots take on this node (for its metrics).
    pub fn timings(&self) -> &crate::timings::RaftTimings {
        &self.timings
    }

    pub fn raft(&self) -> &KeelsonRaft {
        &self.raft
    }

    pub(crate) fn writes(&self) -> &Arc<WriteBatcher> {
        &self.writes
    }

    pub fn channels(&self) -> &PeerChannels {
        &self.channels
    }

    pub async fn is_initialized(&self) -> Result<bool, CatalogError> {
        self.raft
            .is_initialized()
            .await
            .map_err(|e| CatalogError::Unavailable(e.to_string()))
    }

    /// Makes `members` the first voters of a new cluster (`cluster init`).
    pub async fn initialize(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<(), CatalogError> {
        self.raft
            .initialize(members)
            .await
            .map_err(|e| CatalogError::Membership(e.to_string()))
    }

    /// The members known to this node, with their addresses and fault domains.
    pub fn members(&self) -> BTreeMap<NodeId, (NodeInfo, bool)> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, (node.clone(), voters.contains(id))))
            .collect()
    }

    /// Commits `cmd` through Raft (via the leader) and returns its applied answer, once this node
    /// has applied it too.
    pub async fn propose(&self, cmd: CatalogCommand) -> Result<CatalogResponse, CatalogError> {
        check_command_size(&cmd)?;
        match self.on_leader(Forwarded::Write(cmd)).await? {
            ForwardReply::Written { index, response } => {
                self.wait_applied(index).await?;
                Ok(response)
            }
            other => Err(CatalogError::Unavailable(format!("unexpected leader reply {other:?}"))),
        }
    }

    /// Waits until this node has applied every entry committed before the call (read-index).
    pub async fn linearizable(&self) -> Result<(), CatalogError> {
        if self.sole_voter_caught_up() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.reads.join(tx) {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(batch) = this.reads.next_batch() {
                    let result = this.linearizable_now().await;
                    for waiter in batch {
                        let _ = waiter.send(result.clone());
                    }
                }
            });
        }
        rx.await
            .map_err(|_| CatalogError::Unavailable("read batch dropped".into()))?
    }

    /// A leader that is the only voter, with every log entry applied, already holds every
    /// acknowledged write and cannot be deposed by anyone: its local state is linearizable.
    fn sole_voter_caught_up(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let mut voters = m.membership_config.membership().voter_ids();
        m.state == ServerState::Leader
            && voters.next() == Some(self.node_id)
            && voters.next().is_none()
            && m.last_log_index.is_some()
            && m.last_applied.map(|l| l.index) == m.last_log_index
    }

    /// One read-index round, not shared with other readers.
    async fn linearizable_now(&self) -> Result<(), CatalogError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {}
            Err(e) => return Err(CatalogError::Unavailable(e.to_string())),
        }
        match self.on_leader(Forwarded::ReadIndex).await? {
            ForwardReply::ReadIndex { index } => self.wait_applied(index).await,
            other => Err(CatalogError::Unavailable(format!("unexpected leader reply {other:?}"))),
        }
    }

    /// Adds a node: as a learner first (caught up), then as a voter.
    pub async fn add_member(&self, id: NodeId, node: NodeInfo) -> Result<(), CatalogError> {
        self.on_leader(Forwarded::AddMember { id, node }).await.map(|_| ())
    }

    /// Removes a node from the voters and the learners, then tells it so. Returns whether the
    /// removed node got the message (when not, it must be stopped by hand).
    pub async fn remove_member(&self, id: NodeId) -> Result<bool, CatalogError> {
        let peer_addr = self.members().get(&id).map(|(node, _)| node.peer_addr.clone());
        self.on_leader(Forwarded::RemoveMember { id }).await?;
        if id == self.node_id {
            return Ok(crate::peer::leave(&self.raft, &self.removal)
                .inspect_err(|e| tracing::warn!(error = %e, "recording this node's removal"))
                .is_ok());
        }
        let Some(addr) = peer_addr else {
            return Ok(false);
        };
        let notice = encode(&LeaveNotice { id }).map_err(|e| CatalogError::Unavailable(e.to_string()))?;
        for attempt in 1..=3 {
            let told = async {
                let mut client = self.channels.raft_client(&addr).map_err(|e| e.to_string())?;
                tokio::time::timeout(Duration::from_secs(2), client.leave(notice.clone()))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.message().to_string())
            };
            match told.await {
                Ok(_) => return Ok(true),
                Err(e) => tracing::warn!(node = id, attempt, error = %e, "telling a removed node it was removed"),
            }
        }
        Ok(false)
    }

    /// True once this node has been removed from the cluster (see [`crate::removal`]).
    pub fn is_removed(&self) -> bool {
        self.removal.is_removed()
    }

    pub(crate) fn removal(&self) -> &Removal {
        &self.removal
    }

    async fn wait_applied(&self, index: u64) -> Result<(), CatalogError> {
        if self.raft.metrics().borrow().last_applied.map(|l| l.index) >= Some(index) {
            return Ok(());
        }
        self.raft
            .wait(Some(LEADER_WAIT))
            .applied_index_at_least(Some(index), "catch up with the leader")
            .await
            .map(|_| ())
            .map_err(|e| CatalogError::Unavailable(e.to_string()))
    }

    /// The current leader and its address, waiting (bounded) while an election runs.
    async fn leader(&self) -> Result<(NodeId, NodeInfo), CatalogError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut metrics = self.raft.metrics();
        loop {
            let found = {
                let m = metrics.borrow_and_update();
                m.current_leader
                    .and_then(|id| m.membership_config.membership().get_node(&id).map(|n| (id, n.clone())))
            };
            if let Some(found) = found {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(CatalogError::Unavailable("raft stopped".into())),
                Err(_) => return Err(CatalogError::NoLeader("no leader elected in time".into())),
            }
        }
    }

    /// Runs `req` on the leader: locally when this node leads, else over the `Forward` RPC.
    async fn on_leader(&self, req: Forwarded) -> Result<ForwardReply, CatalogError> {
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut metrics = self.raft.metrics();
        loop {
            let (leader, node) = self.leader().await?;
            let result = if leader == self.node_id {
                Ok(serve_forwarded(&self.raft, &self.writes, req.clone()).await)
            } else {
                self.forward_to(&node, &req).await
            };
            let retry_reason = match result {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(ForwardError::Failed(e))) => return Err(CatalogError::Unavailable(e)),
                // Leadership moved while we asked.
                Ok(Err(ForwardError::NotLeader { .. })) => "leader changed".to_string(),
                // The presumed leader is gone (crashed, partitioned): the request never reached
                // it, so waiting for the next election and asking again is safe.
                Err(Forward::NotDelivered(e)) => e,
                // It may or may not have been applied: only a read may simply be asked again.
                Err(Forward::Lost(e)) if matches!(req, Forwarded::ReadIndex) => e,
                Err(Forward::Lost(e)) => return Err(CatalogError::Unavailable(e)),
            };
            metrics.borrow_and_update();
            let wait = tokio::time::timeout_at(deadline, metrics.changed()).await;
            if wait.is_err() || tokio::time::Instant::now() >= deadline {
                return Err(CatalogError::NoLeader(retry_reason));
            }
            if wait.is_ok_and(|changed| changed.is_err()) {
                return Err(CatalogError::Unavailable("raft stopped".into()));
            }
        }
    }

    async fn forward_to(&self, leader: &NodeInfo, req: &Forwarded) -> Result<ForwardResult, Forward> {
        let mut client = self
            .channels
            .raft_client(&leader.peer_addr)
            .map_err(|e| Forward::NotDelivered(e.to_string()))?;
        let payload = encode(req).map_err(|e| Forward::NotDelivered(e.to_string()))?;
        let mut request = tonic::Request::new(payload);
        if let Some(id) = crate::request_id::current().and_then(|id| id.parse().ok()) {
            request.metadata_mut().insert(crate::request_id::HEADER, id);
        }
        let reply = client.forward(request).await.map_err(|status| {
            let text = status.message().to_string();
            if never_connected(&status) {
                Forward::NotDelivered(text)
            } else {
                Forward::Lost(text)
            }
        })?;
        decode(reply.get_ref()).map_err(|e| Forward::Lost(e.to_string()))
    }

    /// What `cluster status` shows, from this node's point of view.
    pub fn status(&self) -> ClusterStatus {
        let capacities = self.reader.capacities().unwrap_or_default();
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index;
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .map(|l| l.map_or(0, |l| l.index));
                MemberStatus {
                    id: *id,
                    api_addr: node.api_addr.clone(),
                    peer_addr: node.peer_addr.clone(),
                    fault_domain: node.fault_domain.clone(),
                    voter: voters.contains(id),
                    lag: matched.map(|matched| last.unwrap_or(0).saturating_sub(matched)),
                    capacity_bytes: capacities.get(id).map(|c| c.total),
                    free_bytes: capacities.get(id).map(|c| c.free),
                }
            })
            .collect();
        ClusterStatus {
            node_id: self.node_id,
            state: match m.state {
                _ if self.removal.is_removed() => "removed",
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed_index: m.last_applied.map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            under_replicated: None,
            bytes_to_move: None,
            blob_jobs: BTreeMap::new(),
            region: None,
            home_region: None,
        }
    }

    /// True while this node is the leader.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id)
    }

    /// The leader's view of how far each member's log is replicated (matched log index per
    /// member); `None` when this node is not the leader.
    pub fn replication_matched(&self) -> Option<BTreeMap<NodeId, Option<u64>>> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
    }

    /// Waits until this node is the leader or knows one (bounded by `timeout`).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, CatalogError> {
        let wait = self.raft.wait(Some(timeout));
        match wait.metrics(|m| m.current_leader.is_some(), "leader known").await {
            Ok(m) => m
                .current_leader
                .ok_or_else(|| CatalogError::Unavailable("no leader".into())),
            Err(e) => Err(CatalogError::Unavailable(e.to_string())),
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

/// Why `raft` refused a request: not the leader (and who is, when known), or another failure.
pub(crate) fn forward_error<E>(e: &RaftError<NodeId, E>) -> ForwardError
where
    E: std::error::Error + openraft::TryAsRef<openraft::error::ForwardToLeader<NodeId, NodeInfo>>,
{
    match e.forward_to_leader() {
        Some(f) => ForwardError::NotLeader {
            leader: f.leader_id,
            node: f.leader_node.clone(),
        },
        None => ForwardError::Failed(e.to_string()),
    }
}

/// Executes a forwarded request on this node, which believes it is the leader; writes go
/// through `writes` (group commit).
pub(crate) async fn serve_forwarded(raft: &KeelsonRaft, writes: &Arc<WriteBatcher>, req: Forwarded) -> ForwardResult {
    match req {
        Forwarded::Write(cmd) => match command_size(&cmd) {
            Ok(bytes) => writes.write(raft, cmd, bytes).await,
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        },
        Forwarded::ReadIndex => match raft.get_read_log_id().await {
            Ok((read, _applied)) => Ok(ForwardReply::ReadIndex {
                index: read.map_or(0, |l| l.index),
            }),
            Err(e) => Err(forward_error(&e)),
        },
        Forwarded::AddMember { id, node } => {
            if let Err(e) = raft.add_learner(id, node, true).await {
                return Err(forward_error(&e));
            }
            match raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
            {
                Ok(resp) => Ok(ForwardReply::MembershipChanged {
                    index: resp.log_id.index,
                }),
                Err(e) => Err(forward_error(&e)),
            }
        }
        Forwarded::RemoveMember { id } => {
            let is_voter = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id);
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            match raft.change_membership(change, false).await {
                Ok(resp) => Ok(ForwardReply::MembershipChanged {
                    index: resp.log_id.index,
                }),
                Err(e) => Err(forward_error(&e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_told_apart_by_the_errors_type_not_its_words() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut client = PeerChannels::default().raft_client(&addr).unwrap();
        let status = client
            .forward(crate::proto::Payload { data: vec![1, 2, 3] })
            .await
            .unwrap_err();
        assert!(never_connected(&status), "refused dial not recognised: {status:?}");
        // A status that merely says so (a peer's answer, or an error after the request left)
        // is no proof that the request never arrived.
        assert!(!never_connected(&tonic::Status::unavailable(
            "tcp connect error: Connection refused"
        )));
    }
}
