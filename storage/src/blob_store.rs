//! The local content-addressed store: `blobs/sha256/<2 hex>/<64 hex>`.
//!
//! A blob enters only by [`BlobStore::ingest`]: a fully written, fsynced temp file renamed into
//! place, then the directory fsynced. A reader therefore never sees a partial blob, and a crash
//! leaves either nothing or the whole blob (an orphan at worst, reclaimed by garbage collection).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::cache::SmallBlobCache;
use crate::digest::Digest;

/// Read chunk size for streaming a blob out.
const READ_CHUNK: usize = 1 << 20;

#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    cache: Arc<SmallBlobCache>,
}

/// Memory the small-blob cache may use, and the largest blob it keeps.
const CACHE_BYTES: usize = 64 << 20;
const CACHE_ENTRY: usize = 256 << 10;

impl BlobStore {
    pub fn open(root: PathBuf) -> io::Result<BlobStore> {
        std::fs::create_dir_all(root.join("sha256"))?;
        Ok(BlobStore {
            root,
            cache: Arc::new(SmallBlobCache::new(CACHE_BYTES, CACHE_ENTRY)),
        })
    }

    /// A range of a small blob from memory, when cached.
    pub fn cached_range(&self, digest: &Digest, offset: u64, len: u64) -> Option<Bytes> {
        let whole = self.cache.get(digest)?;
        let end = offset.checked_add(len)?;
        (end <= whole.len() as u64).then(|| whole.slice(offset as usize..end as usize))
    }

    /// Reads a small blob whole (caching it) and returns the requested range.
    pub fn read_small(&self, digest: &Digest, size: u64, offset: u64, len: u64) -> io::Result<Bytes> {
        if size as usize > self.cache.max_entry() {
            return self.read_range(digest, offset, len);
        }
        let whole = self.read_range(digest, 0, size)?;
        self.cache.insert(digest, whole.clone());
        Ok(whole.slice(offset as usize..(offset + len) as usize))
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(&digest.hex()[..2]).join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Moves a complete, already fsynced file into the store under `digest`. If the blob is
    /// already present the temp file is simply removed.
    pub fn ingest(&self, temp: &Path, digest: &Digest) -> io::Result<()> {
        let dest = self.path(digest);
        if dest.is_file() {
            std::fs::remove_file(temp)?;
            return Ok(());
        }
        let dir = dest
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            sync_dir(dir.parent().unwrap_or(dir))?;
        }
        std::fs::rename(temp, &dest)?;
        sync_dir(dir)
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<File> {
        File::open(self.path(digest))
    }

    /// Reads `len` bytes at `offset` of a small blob in one call.
    pub fn read_range(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<Bytes> {
        let mut file = self.open_blob(digest)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = BytesMut::zeroed(len as usize);
        file.read_exact(&mut buf)?;
        Ok(buf.freeze())
    }

    /// Streams `len` bytes at `offset` of a blob: a blocking reader thread fills a small bounded
    /// queue, so memory stays at a few chunks whatever the blob size.
    pub fn stream_range(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> io::Result<mpsc::Receiver<io::Result<Bytes>>> {
        let mut file = self.open_blob(digest)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(want);
                match file.read_exact(&mut buf) {
                    Ok(()) => {
                        left -= want as u64;
                        if tx.blocking_send(Ok(buf.freeze())).is_err() {
                            return; // client went away
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// fsyncs a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
