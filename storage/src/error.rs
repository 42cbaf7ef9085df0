//! Storage failures, typed so the API can map each to the right OCI error.

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("upload session not found")]
    UploadUnknown,
    #[error("upload belongs to repository {0}")]
    UploadOtherRepo(String),
    #[error("too many open uploads: {0}")]
    TooManyUploads(String),
    #[error("chunk starts at {start} but the upload is at {offset}")]
    OutOfOrder { start: u64, offset: u64 },
    #[error("content digest {actual} does not match {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("upload body failed: {0}")]
    Body(String),
    #[error("blob {0} is not stored on this node")]
    BlobMissing(Digest),
    #[error("the local copy of blob {0} is corrupt")]
    Corrupt(Digest),
    #[error("peer transfer failed: {0}")]
    Peer(String),
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
}
