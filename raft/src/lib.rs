//! Keelson's replicated catalog.
//!
//! Every piece of registry metadata — repositories, manifests, tags, blob records and where the
//! blob bytes live — is a command in one openraft log, applied to a state machine kept in rocksdb.
//! This crate owns that log and that state machine and nothing else: it knows no HTTP and opens no
//! sockets of its own (the network is a trait the node wires in).

// openraft's error types (StorageError, RPCError, RaftError) are large by design and travel in
// every storage and network result; boxing them would fight openraft's trait signatures.
#![allow(clippy::result_large_err)]

mod apply;
mod apply_audit;
mod apply_lifecycle;
mod apply_regions;
mod apply_scanning;
mod apply_signing;
mod apply_webhooks;
pub mod audit;
pub mod catalog;
pub mod command;
mod db;
pub mod identity;
mod keys;
pub mod lifecycle;
mod log_store;
pub mod network;
pub mod node;
pub mod peer;
mod read_cache;
mod read_index;
pub mod redundancy;
pub mod regions;
pub mod removal;
pub mod request_id;
pub mod retention;
pub mod scanning;
pub mod signing;
mod snapshot;
mod state_machine;
pub mod synthetic;
pub mod timings;
pub mod tls;
mod txn;
pub mod types;
pub mod webhooks;
mod write_batch;

pub use catalog::CatalogReader;
pub use command::{
    BlobRecord, CatalogCommand, CatalogResponse, CodedLayout, GcState, ManifestRecord, ReferrerRecord, Rejection,
    RepoRecord, SweptBlob,
};
pub use node::{Catalog, CatalogConfig, CatalogError, ClusterStatus, MemberStatus};
pub use redundancy::{NodeCapacity, RedundancyPolicy};

/// Generated gRPC types of the peer protocol.
pub mod proto {
    tonic::include_proto!("keelson.raft");
}
pub use types::{NodeId, NodeInfo, TypeConfig};
