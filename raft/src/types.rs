//! The openraft type configuration: what a node is, what a log entry carries, what it answers.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::command::{CatalogCommand, EntryAnswer};

/// A node's stable identity inside one cluster.
pub type NodeId = u64;

/// What the cluster knows about a member: where to reach it and which fault domain it is in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// Address of the node's registry API (`host:port`).
    pub api_addr: String,
    /// Address of the node's peer (Raft and blob transfer) endpoint.
    pub peer_addr: String,
    /// Failure-domain label used by blob placement.
    pub fault_domain: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "api={} peer={} fd={}",
            self.api_addr, self.peer_addr, self.fault_domain
        )
    }
}

openraft::declare_raft_types!(
    /// Keelson's Raft types.
    pub TypeConfig:
        D = CatalogCommand,
        R = EntryAnswer,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = tokio::fs::File,
);

/// The openraft instance type.
pub type KeelsonRaft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Storage error as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;
