//! [`Catalog`]: one node's handle on the replicated catalog — open the stores, start openraft,
//! bootstrap a single voter when asked, propose commands and wait for linearizable reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Config;

use crate::catalog::CatalogReader;
use crate::command::{CatalogCommand, CatalogResponse};
use crate::log_store::LogStore;
use crate::network::NoPeers;
use crate::state_machine::StateMachineStore;
use crate::types::{KeelsonRaft, NodeId, NodeInfo};

/// How to open a node's catalog.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    pub node_id: NodeId,
    pub node: NodeInfo,
    /// Directory for the rocksdb and snapshots.
    pub dir: PathBuf,
    /// Make this node the single voter of a new cluster if it has never been initialised.
    pub bootstrap_single: bool,
}

/// Failures of catalog operations, as the API must tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("opening the catalog store failed: {0}")]
    Open(String),
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("the raft group is unavailable: {0}")]
    Unavailable(String),
    #[error("catalog read failed: {0}")]
    Read(#[from] crate::catalog::ReadError),
}

/// One node's catalog: openraft plus a reader of the applied state.
#[derive(Clone)]
pub struct Catalog {
    raft: KeelsonRaft,
    reader: CatalogReader,
    node_id: NodeId,
}

impl Catalog {
    pub async fn open(config: CatalogConfig) -> Result<Catalog, CatalogError> {
        let open_err = |e: &dyn std::fmt::Display| CatalogError::Open(e.to_string());
        std::fs::create_dir_all(&config.dir).map_err(|e| open_err(&e))?;
        let db = crate::db::open(&config.dir.join("catalog")).map_err(|e| open_err(&e))?;
        let log_store = LogStore::new(db.clone());
        let state_machine = StateMachineStore::new(db.clone(), config.dir.join("snapshots"))
            .map_err(|e| open_err(&e))?;
        let raft_config = Config {
            cluster_name: "keelson".into(),
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            max_payload_entries: 256,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| open_err(&e))?;
        let raft = KeelsonRaft::new(
            config.node_id,
            Arc::new(raft_config),
            NoPeers,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| open_err(&e))?;
        if config.bootstrap_single && !raft.is_initialized().await.map_err(|e| open_err(&e))? {
            let members = BTreeMap::from([(config.node_id, config.node.clone())]);
            raft.initialize(members).await.map_err(|e| open_err(&e))?;
        }
        Ok(Catalog {
            raft,
            reader: CatalogReader::new(db),
            node_id: config.node_id,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Reads of the locally applied state.
    pub fn reader(&self) -> &CatalogReader {
        &self.reader
    }

    pub fn raft(&self) -> &KeelsonRaft {
        &self.raft
    }

    /// Commits `cmd` through Raft and returns its applied answer. Returns only after the entry is
    /// durable on a quorum and applied on this node.
    pub async fn propose(&self, cmd: CatalogCommand) -> Result<CatalogResponse, CatalogError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(CatalogError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(CatalogError::Unavailable(e.to_string())),
        }
    }

    /// Waits until this node has applied every entry committed before the call (read-index).
    pub async fn linearizable(&self) -> Result<(), CatalogError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(CatalogError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(CatalogError::Unavailable(e.to_string())),
        }
    }

    /// Waits until this node is the leader or knows one (bounded by `timeout`).
    pub async fn wait_for_leader(
        &self,
        timeout: std::time::Duration,
    ) -> Result<NodeId, CatalogError> {
        let wait = self.raft.wait(Some(timeout));
        match wait
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
        {
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
