//! The local content-addressed store: `blobs/sha256/<2 hex>/<64 hex>`.
//!
//! A blob enters only by [`BlobStore::ingest`]: a fully written, fsynced temp file renamed into
//! place, then the directory fsynced. A reader therefore never sees a partial blob, and a crash
//! leaves either nothing or the whole blob (an orphan at worst, reclaimed by garbage collection).
//!
//! Reads that cover a whole blob are verified against its digest: a small blob before it is
//! served, a streamed one before its last chunk leaves. A file found corrupt is moved to
//! `quarantine/` and queued for the healer, which fetches a good copy from another holder.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, Notify};

use crate::cache::SmallBlobCache;
use crate::digest::Digest;
use crate::error::StorageError;
use crate::pins::Pins;

/// Frame size when serving a mapped blob.
const MAP_FRAME: usize = 4 << 20;

/// Read chunk size for streaming a blob out.
const READ_CHUNK: usize = 1 << 20;

#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    cache: Arc<SmallBlobCache>,
    pins: Arc<Pins>,
    heal: Arc<HealQueue>,
}

/// Digests whose local copy is missing or was quarantined, waiting for the healer.
#[derive(Default)]
pub struct HealQueue {
    queue: Mutex<BTreeSet<Digest>>,
    notify: Notify,
}

impl HealQueue {
    /// Queues `digest` and wakes the healer.
    pub fn push(&self, digest: Digest) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).insert(digest);
        self.notify.notify_one();
    }

    /// Queues `digest` again without waking the healer (a retry for its next pass).
    pub fn push_quiet(&self, digest: Digest) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).insert(digest);
    }

    /// Takes everything queued.
    pub fn take(&self) -> Vec<Digest> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    /// Resolves when something was queued since the last call.
    pub async fn wait(&self) {
        self.notify.notified().await
    }
}

/// What [`BlobStore::delete_unpinned`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// A push or repair of the same content is in flight: kept.
    Pinned,
    Absent,
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
            pins: Arc::default(),
            heal: Arc::default(),
        })
    }

    /// Blobs being pushed or repaired here, protected from garbage collection.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// Local copies waiting to be re-fetched from another holder.
    pub fn heal_queue(&self) -> &HealQueue {
        &self.heal
    }

    /// A range of a small blob from memory, when cached.
    pub fn cached_range(&self, digest: &Digest, offset: u64, len: u64) -> Option<Bytes> {
        let whole = self.cache.get(digest)?;
        let end = offset.checked_add(len)?;
        (end <= whole.len() as u64).then(|| whole.slice(offset as usize..end as usize))
    }

    /// Reads a small blob whole, verifies it against its digest (a corrupt file is quarantined
    /// and [`StorageError::Corrupt`] returned), caches it and returns the requested range.
    /// Blobs too large for the cache are read in part, unverified.
    pub fn read_small(&self, digest: &Digest, size: u64, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        if size as usize > self.cache.max_entry() {
            return Ok(self.read_range(digest, offset, len)?);
        }
        let whole = self.read_range(digest, 0, size)?;
        if Digest::of(&whole) != *digest {
            self.quarantine(digest)?;
            return Err(StorageError::Corrupt(digest.clone()));
        }
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

    /// `len` bytes at `offset` of a stored blob as zero-copy memory-mapped pieces of
    /// `MAP_FRAME` bytes. Serving a large blob this way costs one copy (page cache →
    /// socket) instead of two (page cache → buffer → socket) and needs no reader thread.
    pub fn map_range(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<Vec<Bytes>> {
        let file = self.open_blob(digest)?;
        let file_len = file.metadata()?.len();
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(io::Error::other("range beyond blob"));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        // Each frame is its own mapping, unmapped once the frame is sent, so resident memory
        // stays at the frames in flight however large the blob.
        let mut pieces = Vec::with_capacity(len.div_ceil(MAP_FRAME as u64) as usize);
        let mut at = offset;
        while at < offset + len {
            let piece = (offset + len - at).min(MAP_FRAME as u64) as usize;
            // SAFETY: blob files are immutable once renamed into the store (written to a temp
            // file, fsynced, renamed, never written again) and are only removed whole, which
            // leaves an existing mapping valid: the mapped bytes cannot change under us.
            let map = unsafe { memmap2::MmapOptions::new().offset(at).len(piece).map(&file)? };
            let _ = map.advise(memmap2::Advice::Sequential);
            pieces.push(Bytes::from_owner(map));
            at += piece as u64;
        }
        Ok(pieces)
    }

    /// Streams `len` bytes at `offset` of a blob: a blocking reader thread fills a small bounded
    /// queue, so memory stays at a few chunks whatever the blob size. When the range is the whole
    /// file the bytes are hashed on the way and the last chunk is held back until the digest
    /// matches: a corrupt copy ends the stream with an error (and is quarantined) instead of
    /// delivering wrong bytes.
    pub fn stream_range(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> io::Result<mpsc::Receiver<io::Result<Bytes>>> {
        let mut file = self.open_blob(digest)?;
        let whole = offset == 0 && file.metadata()?.len() == len;
        let (tx, rx) = mpsc::channel(4);
        let store = self.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut hasher = whole.then(Sha256::new);
            let mut held: Option<Bytes> = None;
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(want);
                match file.read_exact(&mut buf) {
                    Ok(()) => {
                        left -= want as u64;
                        let chunk = buf.freeze();
                        if let Some(h) = hasher.as_mut() {
                            h.update(&chunk);
                        }
                        if let Some(previous) = held.replace(chunk) {
                            if tx.blocking_send(Ok(previous)).is_err() {
                                return; // client went away
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if let Some(h) = hasher {
                if Digest::from_hasher(h) != digest {
                    let _ = store.quarantine(&digest);
                    let _ = tx.blocking_send(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("stored copy of {digest} is corrupt"),
                    )));
                    return;
                }
            }
            if let Some(last) = held {
                let _ = tx.blocking_send(Ok(last));
            }
        });
        Ok(rx)
    }

    /// Moves a (corrupt) local copy aside into `quarantine/`, forgets it in the cache and queues
    /// it for the healer.
    pub fn quarantine(&self, digest: &Digest) -> io::Result<PathBuf> {
        let dir = self.root.join("quarantine");
        std::fs::create_dir_all(&dir)?;
        let mut aside = dir.join(digest.hex());
        let mut n = 0;
        while aside.exists() {
            n += 1;
            aside = dir.join(format!("{}.{n}", digest.hex()));
        }
        self.cache.remove(digest);
        match std::fs::rename(self.path(digest), &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tracing::warn!(%digest, aside = %aside.display(), "corrupt blob copy quarantined");
        self.heal.push(digest.clone());
        Ok(aside)
    }

    /// Removes a blob's local copy and shards unless it is pinned (a push or repair of it is in
    /// flight): garbage collection.
    pub fn delete_unpinned(&self, digest: &Digest) -> io::Result<Deletion> {
        self.delete_guarded(digest, true)
    }

    /// Removes only the whole-blob file (not the shards) unless it is pinned.
    pub fn delete_file_unpinned(&self, digest: &Digest) -> io::Result<Deletion> {
        self.delete_guarded(digest, false)
    }

    fn delete_guarded(&self, digest: &Digest, with_shards: bool) -> io::Result<Deletion> {
        let guard = self.pins.guard();
        if guard.is_pinned(digest) {
            return Ok(Deletion::Pinned);
        }
        self.cache.remove(digest);
        let mut deleted = match std::fs::remove_file(self.path(digest)) {
            Ok(()) => Deletion::Deleted,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Deletion::Absent,
            Err(e) => return Err(e),
        };
        if with_shards && self.remove_shards(digest, None)? > 0 {
            deleted = Deletion::Deleted;
        }
        drop(guard);
        Ok(deleted)
    }

    /// Every blob stored here, with its file size and modification time.
    pub fn list(&self) -> io::Result<Vec<LocalBlob>> {
        let mut out = Vec::new();
        for fan in std::fs::read_dir(self.root.join("sha256"))? {
            let fan = fan?;
            if !fan.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(fan.path())? {
                let entry = entry?;
                let name = entry.file_name();
                let Ok(digest) = Digest::parse(&format!("sha256:{}", name.to_string_lossy())) else {
                    continue; // not a blob (never written by the store)
                };
                let meta = entry.metadata()?;
                out.push(LocalBlob {
                    digest,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
        Ok(out)
    }

    /// Hashes a stored blob; `Ok(false)` when its bytes do not match its name.
    pub fn verify(&self, digest: &Digest) -> io::Result<bool> {
        let mut file = self.open_blob(digest)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Digest::from_hasher(hasher) == *digest)
    }
}

/// Shard files of erasure-coded blobs: `shards/<2 hex>/<64 hex>.<index>`.
impl BlobStore {
    pub fn shard_path(&self, digest: &Digest, index: usize) -> PathBuf {
        self.root
            .join("shards")
            .join(&digest.hex()[..2])
            .join(format!("{}.{index}", digest.hex()))
    }

    pub fn has_shard(&self, digest: &Digest, index: usize) -> bool {
        self.shard_path(digest, index).is_file()
    }

    /// A fresh temp file for an incoming shard (moved in by [`BlobStore::ingest_shard`]).
    pub fn shard_temp(&self) -> io::Result<(PathBuf, File)> {
        use rand::RngCore;
        let dir = self.root.join("shards").join("tmp");
        std::fs::create_dir_all(&dir)?;
        let mut random = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut random);
        let path = dir.join(hex::encode(random));
        let file = File::create(&path)?;
        Ok((path, file))
    }

    /// Moves a complete, fsynced shard file into place.
    pub fn ingest_shard(&self, temp: &Path, digest: &Digest, index: usize) -> io::Result<()> {
        let dest = self.shard_path(digest, index);
        let dir = dest
            .parent()
            .ok_or_else(|| io::Error::other("shard path has no parent"))?;
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            sync_dir(dir.parent().unwrap_or(dir))?;
        }
        std::fs::rename(temp, &dest)?;
        sync_dir(dir)
    }

    /// Streams the chunks of stripes `first .. first + count` of a shard, each checked against
    /// its seal; a damaged chunk quarantines the shard and ends the stream with an error.
    pub fn stream_shard(
        &self,
        digest: &Digest,
        index: usize,
        first: u64,
        count: u64,
        chunk: usize,
    ) -> io::Result<mpsc::Receiver<io::Result<Bytes>>> {
        let mut file = File::open(self.shard_path(digest, index))?;
        let record = (chunk + crate::erasure::SUM) as u64;
        let (tx, rx) = mpsc::channel(4);
        let store = self.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(first * record)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            for _ in 0..count {
                let mut buf = vec![0u8; record as usize];
                if let Err(e) = file.read_exact(&mut buf) {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
                match crate::erasure::unseal(&buf) {
                    Ok(data) => {
                        let data = Bytes::copy_from_slice(data);
                        if tx.blocking_send(Ok(data)).is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = store.quarantine_shard(&digest, index);
                        let _ = tx.blocking_send(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("shard {index} of {digest} is corrupt"),
                        )));
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// Checks every seal of a shard file; `Ok(false)` when one fails.
    pub fn verify_shard(&self, digest: &Digest, index: usize, chunk: usize) -> io::Result<bool> {
        let mut file = File::open(self.shard_path(digest, index))?;
        let record = chunk + crate::erasure::SUM;
        let len = file.metadata()?.len();
        if len % record as u64 != 0 {
            return Ok(false);
        }
        let mut buf = vec![0u8; record];
        for _ in 0..len / record as u64 {
            file.read_exact(&mut buf)?;
            if crate::erasure::unseal(&buf).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves a damaged shard aside and queues its blob for the healer.
    pub fn quarantine_shard(&self, digest: &Digest, index: usize) -> io::Result<()> {
        let dir = self.root.join("quarantine");
        std::fs::create_dir_all(&dir)?;
        let aside = dir.join(format!("{}.shard{index}.{}", digest.hex(), rand::random::<u32>()));
        match std::fs::rename(self.shard_path(digest, index), &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        tracing::warn!(%digest, index, aside = %aside.display(), "corrupt shard quarantined");
        self.heal.push(digest.clone());
        Ok(())
    }

    /// Every shard file stored here.
    pub fn list_shards(&self) -> io::Result<Vec<LocalShard>> {
        let mut out = Vec::new();
        let root = self.root.join("shards");
        let fans = match std::fs::read_dir(&root) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for fan in fans {
            let fan = fan?;
            if !fan.file_type()?.is_dir() || fan.file_name() == "tmp" {
                continue;
            }
            for entry in std::fs::read_dir(fan.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((hex, index)) = name.split_once('.') else {
                    continue;
                };
                let (Ok(digest), Ok(index)) = (Digest::parse(&format!("sha256:{hex}")), index.parse::<usize>()) else {
                    continue;
                };
                let meta = entry.metadata()?;
                out.push(LocalShard {
                    digest,
                    index,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
        Ok(out)
    }

    /// Removes shard files of `digest` (all of them, or only `index`); returns how many.
    fn remove_shards(&self, digest: &Digest, index: Option<usize>) -> io::Result<usize> {
        let dir = self.root.join("shards").join(&digest.hex()[..2]);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let prefix = format!("{}.", digest.hex());
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(i) = name.strip_prefix(&prefix) else { continue };
            if index.is_some_and(|want| i != want.to_string()) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Removes one shard file unless the blob is pinned.
    pub fn delete_shard_unpinned(&self, digest: &Digest, index: usize) -> io::Result<Deletion> {
        let guard = self.pins.guard();
        if guard.is_pinned(digest) {
            return Ok(Deletion::Pinned);
        }
        let n = self.remove_shards(digest, Some(index))?;
        drop(guard);
        Ok(if n > 0 { Deletion::Deleted } else { Deletion::Absent })
    }
}

/// A shard file found by [`BlobStore::list_shards`].
#[derive(Debug, Clone)]
pub struct LocalShard {
    pub digest: Digest,
    pub index: usize,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// A blob file found by [`BlobStore::list`].
#[derive(Debug, Clone)]
pub struct LocalBlob {
    pub digest: Digest,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// fsyncs a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
