//! Keelson's blob storage on one node.
//!
//! Blob bytes never pass through Raft: they are streamed into upload sessions, hashed as they
//! arrive, fsynced and renamed into a content-addressed store. Only the blob record (digest, size,
//! holders) is then committed to the catalog by the caller.

// tonic's `Status` (the peer services' error type) is large by design; the transfer code returns
// it as tonic's own generated service signatures do.
#![allow(clippy::result_large_err)]

pub mod at_rest;
pub mod blob_store;
pub mod cache;
pub mod capacity;
pub mod digest;
pub mod erasure;
pub mod error;
pub mod jobs;
pub mod pins;
pub mod placement;
pub mod tee;
pub mod transfer;
pub mod upload;

pub use blob_store::BlobStore;
pub use digest::{Algorithm, ContentHasher, Digest, DigestError};
pub use error::StorageError;
pub use transfer::{BlobPeers, BlobService};
pub use upload::{UploadWriter, Uploads};
