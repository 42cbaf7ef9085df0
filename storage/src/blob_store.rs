//! The local content-addressed store: `blobs/sha256/<2 hex>/<64 hex>`.
//!
//! A blob enters only by [`BlobStore::ingest`]: a fully written, fsynced temp file renamed into
//! place, then the directory fsynced. A reader therefore never sees a partial blob, and a crash
//! leaves either nothing or the whole blob (an orphan at worst, reclaimed by garbage collection).
//!
//! Reads that cover a whole blob are verified against its digest: a small blob before it is
//! served, a streamed one before its last chunk leaves. A file found corrupt is moved to
//! `quarantine/` and queued for the healer, which fetches a good copy from another holder.
//!
//! With a key ring every file written is sealed (`<64 hex>.sealed`, see [`crate::at_rest`]);
//! files of either format are read, so a store part-way through its conversion serves both.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Notify};

use crate::at_rest::decrypted::{DecryptedWindows, WINDOW};
use crate::at_rest::{Format, KeyRing, MasterKeys, StoredReader, StoredWriter};
use crate::cache::SmallBlobCache;
use crate::digest::Algorithm;
use crate::digest::Digest;
use crate::error::StorageError;
use crate::pins::Pins;

/// Frame size when serving a mapped blob.
const MAP_FRAME: usize = 4 << 20;

/// Read chunk size for streaming a blob out (a decrypted window: reads are aligned to them).
const READ_CHUNK: usize = WINDOW as usize;

/// Memory for decrypted windows of sealed blobs unless configured otherwise.
pub const DEFAULT_DECRYPTED_CACHE_BYTES: u64 = 256 << 20;

#[derive(Clone)]
pub struct BlobStore {
    root: PathBuf,
    cache: Arc<SmallBlobCache>,
    pins: Arc<Pins>,
    heal: Arc<HealQueue>,
    /// Master keys when encryption at rest is on: every new file is sealed.
    keys: Option<Arc<KeyRing>>,
    /// Plaintext of the sealed blobs read most (only with a key ring, unless turned off).
    decrypted: Option<Arc<DecryptedWindows>>,
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

/// Where plain files are sealed before they are renamed into place.
const CONVERT_DIR: &str = "tmp";

/// Memory the small-blob cache may use, and the largest blob it keeps.
const CACHE_BYTES: usize = 64 << 20;
const CACHE_ENTRY: usize = 256 << 10;

impl BlobStore {
    /// The directory holding this store's files (the node's data directory for blobs).
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn open(root: PathBuf) -> io::Result<BlobStore> {
        for algorithm in Algorithm::ALL {
            std::fs::create_dir_all(root.join(algorithm.name()))?;
        }
        // Leftovers of conversions a crash interrupted (the plain file is still in place).
        let _ = std::fs::remove_dir_all(root.join(CONVERT_DIR));
        Ok(BlobStore {
            root,
            cache: Arc::new(SmallBlobCache::new(CACHE_BYTES, CACHE_ENTRY)),
            pins: Arc::default(),
            heal: Arc::default(),
            keys: None,
            decrypted: None,
        })
    }

    /// Seals every file written from now on with keys from `ring`, keeping up to
    /// [`DEFAULT_DECRYPTED_CACHE_BYTES`] of decrypted windows.
    pub fn with_key_ring(mut self, ring: Arc<KeyRing>) -> BlobStore {
        self.keys = Some(ring);
        self.with_decrypted_cache(DEFAULT_DECRYPTED_CACHE_BYTES)
    }

    /// Keeps up to `max_bytes` of decrypted windows of sealed blobs in memory (0: none).
    pub fn with_decrypted_cache(mut self, max_bytes: u64) -> BlobStore {
        self.decrypted = (max_bytes > 0).then(|| Arc::new(DecryptedWindows::new(max_bytes)));
        self
    }

    /// The decrypted-window cache's counters (hits, misses, bytes held), when it exists.
    pub fn decrypted_counters(&self) -> Vec<(&'static str, u64)> {
        self.decrypted.iter().flat_map(|cache| cache.counters()).collect()
    }

    /// The key ring, when encryption at rest is on.
    pub fn key_ring(&self) -> Option<&Arc<KeyRing>> {
        self.keys.as_ref()
    }

    /// The master keys in force, when encryption at rest is on.
    pub fn master_keys(&self) -> Option<Arc<MasterKeys>> {
        self.keys.as_ref().map(|ring| ring.current())
    }

    /// The format new files are written in.
    pub fn write_format(&self) -> Format {
        if self.keys.is_some() {
            Format::Sealed
        } else {
            Format::Plain
        }
    }

    /// Creates a new file at `base` (renamed for the write format) for writing.
    pub fn create_file(&self, base: &Path) -> io::Result<(PathBuf, StoredWriter)> {
        let path = self.write_format().name(base);
        let writer = StoredWriter::create(&path, self.master_keys().as_deref())?;
        Ok((path, writer))
    }

    /// Opens `path` (either format) for reading.
    pub fn open_file(&self, path: &Path) -> io::Result<StoredReader> {
        StoredReader::open(path, self.master_keys().as_deref())
    }

    /// The file holding `base` in either format, the write format tried first. The first name
    /// is tried again last: a conversion renames the sealed file in before it removes the plain
    /// one, so a lookup that ran between the two never misses both.
    fn locate(&self, base: &Path) -> Option<PathBuf> {
        let first = self.write_format();
        [first, first.other(), first]
            .into_iter()
            .map(|format| format.name(base))
            .find(|path| path.is_file())
    }

    /// Seals the plain file `plain` (a blob when `digest` is given, checked against it; else a
    /// shard): written sealed in a temp file, synced, renamed beside the plain file, which is
    /// removed only then. `Ok(false)` when the plain file is gone (deleted or converted) or, for
    /// a blob, found corrupt (quarantined for the healer instead).
    pub fn seal_plain_file(&self, plain: &Path, digest: Option<&Digest>) -> io::Result<bool> {
        let keys = self
            .master_keys()
            .ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no master key"))?;
        let reader = match self.open_file(plain) {
            Ok(reader) => reader,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let dir = self.root.join(CONVERT_DIR);
        std::fs::create_dir_all(&dir)?;
        let temp = Format::Sealed.name(&dir.join(hex::encode(rand::random::<[u8; 12]>())));
        let written = (|| -> io::Result<bool> {
            let mut writer = StoredWriter::create(&temp, Some(&keys))?;
            let mut hasher = digest.map(Digest::hasher);
            read_through(&reader, |bytes| {
                if let Some(h) = hasher.as_mut() {
                    h.update(bytes);
                }
                writer.append(bytes)
            })?;
            if let (Some(h), Some(digest)) = (hasher, digest) {
                if h.finish() != *digest {
                    return Ok(false);
                }
            }
            writer.sync_all()?;
            Ok(true)
        })();
        match written {
            Ok(true) => {}
            Ok(false) => {
                let _ = std::fs::remove_file(&temp);
                if let Some(digest) = digest {
                    self.quarantine(digest)?;
                }
                return Ok(false);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        }
        let parent = plain
            .parent()
            .ok_or_else(|| io::Error::other("stored file has no parent"))?;
        // Never bring back a file deleted meanwhile (garbage collection, quarantine), and never
        // replace a sealed file written meanwhile (a repair, a rebuilt shard): that one stands
        // and the plain one goes.
        if !plain.is_file() {
            let _ = std::fs::remove_file(&temp);
            return Ok(false);
        }
        if !rename_noreplace(&temp, &Format::Sealed.name(plain))? {
            let _ = std::fs::remove_file(&temp);
        }
        sync_dir(parent)?;
        match std::fs::remove_file(plain) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(parent)?;
        Ok(true)
    }

    /// Removes `base` in both formats; whether anything was removed.
    fn remove_both(base: &Path) -> io::Result<bool> {
        let mut removed = false;
        for format in [Format::Plain, Format::Sealed] {
            match std::fs::remove_file(format.name(base)) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
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
        if !digest.matches(&whole) {
            self.quarantine(digest)?;
            return Err(StorageError::Corrupt(digest.clone()));
        }
        self.cache.insert(digest, whole.clone());
        Ok(whole.slice(offset as usize..(offset + len) as usize))
    }

    /// Where the blob's file is named (a sealed one adds `.sealed`).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join(digest.algorithm().name())
            .join(&digest.hex()[..2])
            .join(digest.hex())
    }

    /// The blob's file, in whichever format it is stored.
    pub fn located(&self, digest: &Digest) -> Option<PathBuf> {
        self.locate(&self.path(digest))
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.located(digest).is_some()
    }

    /// Moves a complete, already fsynced file into the store under `digest`, in the format its
    /// name says. If the blob is already present the temp file is simply removed.
    pub fn ingest(&self, temp: &Path, digest: &Digest) -> io::Result<()> {
        if self.contains(digest) {
            std::fs::remove_file(temp)?;
            return Ok(());
        }
        let dest = Format::of_path(temp).name(&self.path(digest));
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

    /// Opens a stored blob (either format) for reading its plaintext.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<StoredReader> {
        let path = self
            .located(digest)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("blob {digest} is not stored here")))?;
        self.open_file(&path)
    }

    /// Reads `len` bytes at `offset` of a small blob in one call.
    pub fn read_range(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<Bytes> {
        let reader = self.open_blob(digest)?;
        let mut buf = BytesMut::zeroed(len as usize);
        reader.read_at(offset, &mut buf)?;
        Ok(buf.freeze())
    }

    /// `len` bytes at `offset` of a stored blob as zero-copy memory-mapped pieces of
    /// `MAP_FRAME` bytes. Serving a large blob this way costs one copy (page cache →
    /// socket) instead of two (page cache → buffer → socket) and needs no reader thread.
    /// A sealed copy's range comes from its decrypted windows when they are all in memory;
    /// `None` when it is not: its bytes must be decrypted ([`BlobStore::stream_range`]).
    pub fn map_range(&self, digest: &Digest, offset: u64, len: u64) -> io::Result<Option<Vec<Bytes>>> {
        let path = self
            .located(digest)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("blob {digest} is not stored here")))?;
        if Format::of_path(&path) == Format::Sealed {
            let Some(cache) = &self.decrypted else { return Ok(None) };
            let Some(blob_len) = crate::at_rest::sealed::plain_len(std::fs::metadata(&path)?.len()) else {
                return Ok(None);
            };
            return Ok(cache.range(digest, blob_len, offset, len));
        }
        let file = File::open(&path)?;
        let file_len = file.metadata()?.len();
        if offset.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(io::Error::other("range beyond blob"));
        }
        if len == 0 {
            return Ok(Some(Vec::new()));
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
        Ok(Some(pieces))
    }

    /// Streams `len` bytes at `offset` of a blob: a blocking reader thread fills a small bounded
    /// queue, so memory stays at a few chunks whatever the blob size. When the range is the whole
    /// file the bytes are hashed on the way and the last chunk is held back until the digest
    /// matches: a corrupt copy ends the stream with an error (and is quarantined) instead of
    /// delivering wrong bytes. A sealed copy is checked record by record instead (every record's
    /// tag), for any range: a damaged record ends the stream before its bytes leave.
    ///
    /// Whole windows of a sealed copy are kept decrypted in memory for the next reader; a read
    /// made once (a scan, a replica for a peer) uses [`BlobStore::stream_range_once`] instead.
    pub fn stream_range(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> io::Result<mpsc::Receiver<io::Result<Bytes>>> {
        self.stream(digest, offset, len, self.decrypted.clone())
    }

    /// [`BlobStore::stream_range`] for a read made once: it decrypts what it reads and neither
    /// uses nor fills the decrypted windows, so a pass over many blobs does not displace the
    /// ones served most.
    pub fn stream_range_once(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> io::Result<mpsc::Receiver<io::Result<Bytes>>> {
        self.stream(digest, offset, len, None)
    }

    fn stream(
        &self,
        digest: &Digest,
        offset: u64,
        len: u64,
        windows: Option<Arc<DecryptedWindows>>,
    ) -> io::Result<mpsc::Receiver<io::Result<Bytes>>> {
        let file = self.open_blob(digest)?;
        let whole = offset == 0 && file.len() == len;
        // About four read chunks in flight: whole chunks of a plain file, a sealed file's
        // records (pieces of 64 KiB).
        let sealed = file.format() == Format::Sealed;
        let depth = match file.format() {
            Format::Plain => 4,
            Format::Sealed => 4 * READ_CHUNK / crate::at_rest::sealed::CHUNK,
        };
        let (tx, rx) = mpsc::channel(depth);
        let store = self.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            // A sealed file needs no hash pass: every record's tag already proves its bytes, its
            // place in the file and the file it belongs to, and its length is the blob's.
            let mut hasher = (whole && !sealed).then(|| digest.hasher());
            let mut held: Option<Bytes> = None;
            let mut left = len;
            let mut at = offset;
            let windows = windows.filter(|_| sealed);
            while left > 0 {
                // Up to the end of the window `at` is in, so whole reads are whole windows.
                let want = left.min(READ_CHUNK as u64 - at % READ_CHUNK as u64);
                let read = match &windows {
                    Some(cache) => read_window(cache, &file, &digest, at, want),
                    None => file.read_pieces(at, want),
                };
                match read {
                    Ok(pieces) => {
                        left -= want;
                        at += want;
                        for piece in pieces {
                            if let Some(h) = hasher.as_mut() {
                                h.update(&piece);
                            }
                            if let Some(previous) = held.replace(piece) {
                                if tx.blocking_send(Ok(previous)).is_err() {
                                    return; // client went away
                                }
                            }
                        }
                    }
                    Err(e) => {
                        if e.kind() == io::ErrorKind::InvalidData {
                            // A sealed record failed authentication: rot or tampering.
                            let _ = store.quarantine(&digest);
                        }
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if let Some(h) = hasher {
                if h.finish() != digest {
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
        if let Some(windows) = &self.decrypted {
            windows.evict(digest);
        }
        for format in [Format::Plain, Format::Sealed] {
            match std::fs::rename(format.name(&self.path(digest)), format.name(&aside)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
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
        if let Some(windows) = &self.decrypted {
            windows.evict(digest);
        }
        let mut deleted = if Self::remove_both(&self.path(digest))? {
            Deletion::Deleted
        } else {
            Deletion::Absent
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
        for algorithm in Algorithm::ALL {
            self.list_algorithm(algorithm, &mut out)?;
        }
        Ok(out)
    }

    /// The blobs of one algorithm's directory, appended to `out`.
    fn list_algorithm(&self, algorithm: Algorithm, out: &mut Vec<LocalBlob>) -> io::Result<()> {
        let fans = match std::fs::read_dir(self.root.join(algorithm.name())) {
            Ok(fans) => fans,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for fan in fans {
            let fan = fan?;
            if !fan.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(fan.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let format = Format::of_path(Path::new(&name));
                let hex = name
                    .strip_suffix(crate::at_rest::stored::SEALED_SUFFIX)
                    .unwrap_or(&name);
                let Some(digest) = Digest::from_hex(algorithm, hex) else {
                    continue; // not a blob (never written by the store)
                };
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    // Converted or deleted since the listing: nothing to report.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                out.push(LocalBlob {
                    digest,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    format,
                });
            }
        }
        Ok(())
    }

    /// The digest by `algorithm` of a stored file's content (read through its format).
    pub fn hash_file(&self, path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
        let reader = self.open_file(path)?;
        let mut hasher = crate::digest::ContentHasher::new(algorithm);
        read_through(&reader, |bytes| {
            hasher.update(bytes);
            Ok(())
        })?;
        Ok(hasher.finish())
    }

    /// Hashes a stored blob; `Ok(false)` when its bytes do not match its name (or, sealed, a
    /// record or its key slots fail authentication).
    pub fn verify(&self, digest: &Digest) -> io::Result<bool> {
        let reader = match self.open_blob(digest) {
            Ok(reader) => reader,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut hasher = digest.hasher();
        match read_through(&reader, |bytes| {
            hasher.update(bytes);
            Ok(())
        }) {
            Ok(()) => Ok(hasher.finish() == *digest),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Shard files of erasure-coded blobs: `shards/<2 hex>/<64 hex>.<index>`.
impl BlobStore {
    /// Where a shard's file is named (a sealed one adds `.sealed`).
    pub fn shard_path(&self, digest: &Digest, index: usize) -> PathBuf {
        self.root
            .join("shards")
            .join(&digest.hex()[..2])
            .join(format!("{}.{index}", digest.hex()))
    }

    /// The shard's file, in whichever format it is stored.
    pub fn located_shard(&self, digest: &Digest, index: usize) -> Option<PathBuf> {
        self.locate(&self.shard_path(digest, index))
    }

    pub fn has_shard(&self, digest: &Digest, index: usize) -> bool {
        self.located_shard(digest, index).is_some()
    }

    fn open_shard(&self, digest: &Digest, index: usize) -> io::Result<StoredReader> {
        let path = self.located_shard(digest, index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("shard {index} of {digest} is not stored here"),
            )
        })?;
        self.open_file(&path)
    }

    /// A fresh temp file for an incoming shard (moved in by [`BlobStore::ingest_shard`]).
    pub fn shard_temp(&self) -> io::Result<(PathBuf, StoredWriter)> {
        use rand::RngCore;
        let dir = self.root.join("shards").join("tmp");
        std::fs::create_dir_all(&dir)?;
        let mut random = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut random);
        self.create_file(&dir.join(hex::encode(random)))
    }

    /// Moves a complete, fsynced shard file into place, in the format its name says.
    pub fn ingest_shard(&self, temp: &Path, digest: &Digest, index: usize) -> io::Result<()> {
        let dest = Format::of_path(temp).name(&self.shard_path(digest, index));
        let dir = dest
            .parent()
            .ok_or_else(|| io::Error::other("shard path has no parent"))?;
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)?;
            sync_dir(dir.parent().unwrap_or(dir))?;
        }
        std::fs::rename(temp, &dest)?;
        // A shard rebuilt in the other format replaces the old file.
        let stale = Format::of_path(temp).other().name(&self.shard_path(digest, index));
        let _ = std::fs::remove_file(stale);
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
        let file = self.open_shard(digest, index)?;
        let record = (chunk + crate::erasure::SUM) as u64;
        let (tx, rx) = mpsc::channel(4);
        let store = self.clone();
        let digest = digest.clone();
        tokio::task::spawn_blocking(move || {
            let Some(mut at) = first.checked_mul(record) else {
                let _ = tx.blocking_send(Err(io::Error::new(io::ErrorKind::InvalidInput, "stripe out of range")));
                return;
            };
            for _ in 0..count {
                let mut buf = vec![0u8; record as usize];
                let read = file.read_at(at, &mut buf);
                at += record;
                let checked = match read {
                    Ok(()) => crate::erasure::unseal(&buf).map_err(|_| ()),
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(()),
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                match checked {
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
        let file = match self.open_shard(digest, index) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(false),
            Err(e) => return Err(e),
        };
        let record = chunk + crate::erasure::SUM;
        let len = file.len();
        if len % record as u64 != 0 {
            return Ok(false);
        }
        let mut buf = vec![0u8; record];
        for i in 0..len / record as u64 {
            match file.read_at(i * record as u64, &mut buf) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(false),
                Err(e) => return Err(e),
            }
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
        for format in [Format::Plain, Format::Sealed] {
            match std::fs::rename(format.name(&self.shard_path(digest, index)), format.name(&aside)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
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
                let format = Format::of_path(Path::new(&name));
                let bare = name
                    .strip_suffix(crate::at_rest::stored::SEALED_SUFFIX)
                    .unwrap_or(&name);
                let Some((hex, index)) = bare.split_once('.') else {
                    continue;
                };
                let digest = Algorithm::of_hex_len(hex.len()).and_then(|algorithm| Digest::from_hex(algorithm, hex));
                let (Some(digest), Ok(index)) = (digest, index.parse::<usize>()) else {
                    continue;
                };
                let meta = match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                out.push(LocalShard {
                    digest,
                    index,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                    format,
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
            let i = i.strip_suffix(crate::at_rest::stored::SEALED_SUFFIX).unwrap_or(i);
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
    pub format: Format,
}

/// A blob file found by [`BlobStore::list`].
#[derive(Debug, Clone)]
pub struct LocalBlob {
    pub digest: Digest,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
    pub format: Format,
}

/// `want` bytes at `at` of a sealed blob, all in one window: from `cache`, or decrypted (and
/// kept when they are the whole window).
fn read_window(
    cache: &DecryptedWindows,
    file: &StoredReader,
    digest: &Digest,
    at: u64,
    want: u64,
) -> io::Result<Vec<Bytes>> {
    if let Some(pieces) = cache.range(digest, file.len(), at, want) {
        return Ok(pieces);
    }
    let start = at - at % WINDOW;
    let end = (start + WINDOW).min(file.len());
    if at != start || at + want != end {
        return file.read_pieces(at, want);
    }
    let pieces = file.read_pieces(start, end - start)?;
    cache.keep(digest, at / WINDOW, pieces.clone());
    Ok(pieces)
}

/// Hands every plaintext byte of `reader` to `each`, in order, a chunk at a time; stops at the
/// first error of either.
pub fn read_through(reader: &StoredReader, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let len = reader.len();
    let mut buf = vec![0u8; READ_CHUNK.min(len as usize)];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(READ_CHUNK as u64) as usize;
        reader.read_at(at, &mut buf[..n])?;
        each(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Renames `from` to `to` unless `to` exists (then `Ok(false)`, nothing moved).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::AlreadyExists {
        Ok(false)
    } else {
        Err(e)
    }
}

/// fsyncs a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
