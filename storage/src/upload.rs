//! Resumable upload sessions.
//!
//! A session is a directory `uploads/<id>/` holding the bytes received so far (`data`) and the
//! repository it belongs to (`repo`). While the node runs, the running SHA-256 state is kept in
//! memory so each chunk is hashed exactly once as it streams through; after a restart the state
//! is rebuilt by hashing the bytes on disk the first time the session is touched, so an upload
//! survives a crash and resumes at the offset the disk holds.
//!
//! A session that stays idle longer than the node's limit expires with its files
//! ([`Uploads::expire_idle`]); sessions found on disk at start count as used at start. The number
//! of open sessions is bounded per owner (the user who opened it) and per node, so nobody fills a
//! disk or a map with abandoned uploads.
//!
//! Network frames are gathered into 1 MiB batches; each batch is written and hashed by one short
//! blocking call started as soon as it is full, while the network delivers the next ones. A
//! blocking call only ever works on bytes it already has — none waits for the network — so the
//! disk overlaps the transfer, memory stays at a few batches, and a runtime whose clock must not
//! move while blocking work is pending (the simulation's) is never held up by a slow client.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rand::RngCore;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::task::JoinHandle;

use crate::at_rest::{Format, StoredWriter};
use crate::blob_store::{sync_dir, BlobStore};
use crate::digest::{Algorithm, ContentHasher, Digest};
use crate::error::StorageError;
use crate::tee::ReplicaTee;

const QUEUE_CHUNKS: usize = 16;
const WRITE_BUFFER: usize = 1 << 20;

/// Session state while it is open in this process.
struct Session {
    repo: String,
    /// Open file and hash state; `None` until first touched after a restart.
    live: Option<Live>,
    /// Set (under the lock) when the session expired; a request that waited for the lock then
    /// finds it gone.
    expired: bool,
}

/// What the node tracks of a session between requests.
struct Entry {
    handle: Arc<AsyncMutex<Session>>,
    /// Who opened it (`None`: a replica stream from a peer, bounded only per node).
    owner: Option<String>,
    last_used_ms: u64,
}

/// The open sessions and how many each owner holds.
#[derive(Default)]
struct Sessions {
    by_id: HashMap<String, Entry>,
    per_owner: HashMap<String, usize>,
}

impl Sessions {
    fn insert(&mut self, id: String, entry: Entry) {
        if let Some(owner) = &entry.owner {
            *self.per_owner.entry(owner.clone()).or_default() += 1;
        }
        self.by_id.insert(id, entry);
    }

    fn remove(&mut self, id: &str) {
        let Some(entry) = self.by_id.remove(id) else {
            return;
        };
        if let Some(owner) = entry.owner {
            if let Some(count) = self.per_owner.get_mut(&owner) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.per_owner.remove(&owner);
                }
            }
        }
    }
}

/// Bounds on open sessions.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Sessions one owner may hold open on this node.
    pub per_owner: usize,
    /// Sessions this node holds open in all.
    pub total: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        // A docker push opens a few sessions at once, a CI runner pushing many images a few
        // dozen; 256 leaves room for both and stops a script that never finishes its uploads.
        UploadLimits {
            per_owner: 256,
            total: 100_000,
        }
    }
}

/// The time in milliseconds, from the node's (injectable) clock.
pub type NowMs = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The file naming a session's repository (first line) and owner (second line, when any).
const META_FILE: &str = "repo";

/// The file of a session's bytes: `data`, or `data.sealed` with encryption at rest.
const DATA_FILE: &str = "data";

struct Live {
    writer: StoredWriter,
    /// The data file (its name says its format).
    path: PathBuf,
    /// sha256 of the bytes so far: the algorithm every client uses, hashed as bytes arrive.
    /// A session finished under another algorithm is hashed again from its file.
    hasher: ContentHasher,
    offset: u64,
}

impl Live {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.writer.append(bytes)?;
        self.hasher.update(bytes);
        let before = self.offset;
        self.offset += bytes.len() as u64;
        if before / WRITEBACK_STEP != self.offset / WRITEBACK_STEP {
            start_writeback(self.writer.file(), self.offset);
        }
        Ok(())
    }
}

/// How often (in bytes written) the kernel is asked to start writing an upload to disk.
const WRITEBACK_STEP: u64 = 8 << 20;

/// Starts (without waiting for) writeback of everything written so far, so the disk works while
/// the network delivers the rest and the final fsync finds little left to do. Only a hint: a
/// failure here changes nothing, the fsync at the end is what makes the bytes durable.
fn start_writeback(file: &File, upto: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is owned by `file`, alive for the call; sync_file_range only reads
    // its arguments and touches no memory of ours.
    let from = upto.saturating_sub(2 * WRITEBACK_STEP);
    let _ = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (upto - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// All upload sessions of this node.
pub struct Uploads {
    dir: PathBuf,
    store: BlobStore,
    owner_tag: String,
    open: Mutex<Sessions>,
    limits: UploadLimits,
    now_ms: NowMs,
}

impl Uploads {
    /// `owner_tag` names this node inside every session id, so peers can route to the owner.
    /// Sessions already on disk (from before a restart) are registered as used now; leftovers
    /// of a crash between creating a session's directory and naming its repository are removed.
    pub fn open(dir: PathBuf, store: BlobStore, owner_tag: String) -> io::Result<Uploads> {
        Uploads::open_with(dir, store, owner_tag, UploadLimits::default(), Arc::new(system_now_ms))
    }

    /// [`Uploads::open`] with explicit bounds and clock.
    pub fn open_with(
        dir: PathBuf,
        store: BlobStore,
        owner_tag: String,
        limits: UploadLimits,
        now_ms: NowMs,
    ) -> io::Result<Uploads> {
        std::fs::create_dir_all(&dir)?;
        let now = now_ms();
        let mut sessions = Sessions::default();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_dir() || !Self::valid_id(&id) {
                continue;
            }
            match std::fs::read_to_string(entry.path().join(META_FILE)) {
                Ok(meta) => {
                    let (repo, owner) = match meta.split_once('\n') {
                        Some((repo, owner)) => (repo.to_string(), Some(owner.to_string())),
                        None => (meta, None),
                    };
                    let session = Session {
                        repo,
                        live: None,
                        expired: false,
                    };
                    sessions.insert(
                        id,
                        Entry {
                            handle: Arc::new(AsyncMutex::new(session)),
                            owner,
                            last_used_ms: now,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::remove_dir_all(entry.path())?,
                Err(e) => return Err(e),
            }
        }
        Ok(Uploads {
            dir,
            store,
            owner_tag,
            open: Mutex::new(sessions),
            limits,
            now_ms,
        })
    }

    /// The sealed data files of the sessions on disk (re-wrapped after a master-key rotation
    /// like every other sealed file).
    pub fn sealed_files(&self) -> io::Result<Vec<PathBuf>> {
        let sealed = Format::Sealed.name(Path::new(DATA_FILE));
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path().join(&sealed);
            if path.is_file() {
                out.push(path);
            }
        }
        Ok(out)
    }

    /// Sessions open on this node.
    pub fn open_count(&self) -> usize {
        self.lock_map().by_id.len()
    }

    /// Removes every session unused for `idle_ms` or longer, with its files; a session in use
    /// right now is left alone. Returns how many expired.
    pub async fn expire_idle(&self, idle_ms: u64) -> usize {
        let now = (self.now_ms)();
        let stale: Vec<(String, Arc<AsyncMutex<Session>>)> = self
            .lock_map()
            .by_id
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.last_used_ms) >= idle_ms)
            .map(|(id, e)| (id.clone(), e.handle.clone()))
            .collect();
        let mut expired = 0;
        for (id, handle) in stale {
            let Ok(mut guard) = handle.try_lock_owned() else {
                continue;
            };
            {
                let mut map = self.lock_map();
                // Used again since the scan: no longer idle.
                if map
                    .by_id
                    .get(&id)
                    .is_none_or(|e| now.saturating_sub(e.last_used_ms) < idle_ms)
                {
                    continue;
                }
                map.remove(&id);
            }
            guard.expired = true;
            guard.live = None;
            let dir = self.dir.join(&id);
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            if !matches!(removed, Ok(Ok(()))) {
                tracing::warn!(upload = %id, "could not remove an expired upload session's files");
            }
            expired += 1;
        }
        if expired > 0 {
            let _ = sync_dir(&self.dir);
        }
        expired
    }

    /// The owner tag embedded in an upload id (`<owner>-<random>`).
    pub fn owner_of(id: &str) -> Option<&str> {
        id.split_once('-').map(|(owner, _)| owner)
    }

    fn valid_id(id: &str) -> bool {
        !id.is_empty() && id.len() <= 80 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    /// Starts a session for `repo` opened by `owner` (`None` for a peer's replica stream);
    /// returns its id. Refused when the owner or the node holds as many sessions as allowed.
    pub fn create(&self, repo: &str, owner: Option<&str>) -> Result<String, StorageError> {
        {
            let map = self.lock_map();
            if map.by_id.len() >= self.limits.total {
                return Err(StorageError::TooManyUploads(format!(
                    "this node holds {} open upload sessions, its limit",
                    map.by_id.len()
                )));
            }
            if let Some(owner) = owner {
                let held = map.per_owner.get(owner).copied().unwrap_or(0);
                if held >= self.limits.per_owner {
                    return Err(StorageError::TooManyUploads(format!(
                        "{held} upload sessions are open for this user, the limit; finish or cancel some, \
                         or wait until idle ones expire"
                    )));
                }
            }
        }
        let mut random = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut random);
        let id = format!("{}-{}", self.owner_tag, hex::encode(random));
        let dir = self.dir.join(&id);
        std::fs::create_dir(&dir)?;
        let meta = match owner {
            Some(owner) => format!("{repo}\n{owner}"),
            None => repo.to_string(),
        };
        std::fs::write(dir.join(META_FILE), meta)?;
        let (path, writer) = self.store.create_file(&dir.join(DATA_FILE))?;
        let session = Session {
            repo: repo.to_string(),
            live: Some(Live {
                writer,
                path,
                hasher: ContentHasher::new(Algorithm::Sha256),
                offset: 0,
            }),
            expired: false,
        };
        let entry = Entry {
            handle: Arc::new(AsyncMutex::new(session)),
            owner: owner.map(str::to_string),
            last_used_ms: (self.now_ms)(),
        };
        self.lock_map().insert(id.clone(), entry);
        Ok(id)
    }

    fn lock_map(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Finds a session, marks it used now and checks it belongs to `repo`.
    async fn session(&self, id: &str, repo: &str) -> Result<OwnedMutexGuard<Session>, StorageError> {
        if !Self::valid_id(id) {
            return Err(StorageError::UploadUnknown);
        }
        let now = (self.now_ms)();
        let handle = {
            let mut map = self.lock_map();
            let entry = map.by_id.get_mut(id).ok_or(StorageError::UploadUnknown)?;
            entry.last_used_ms = entry.last_used_ms.max(now);
            entry.handle.clone()
        };
        let mut guard = handle.lock_owned().await;
        if guard.expired {
            return Err(StorageError::UploadUnknown);
        }
        if guard.repo != repo {
            return Err(StorageError::UploadOtherRepo(guard.repo.clone()));
        }
        if guard.live.is_none() {
            let dir = self.dir.join(id);
            let store = self.store.clone();
            let live = tokio::task::spawn_blocking(move || rehash(&store, &dir))
                .await
                .map_err(|e| StorageError::Io(io::Error::other(e)))??;
            guard.live = Some(live);
        }
        Ok(guard)
    }

    /// Bytes received so far.
    pub async fn offset(&self, id: &str, repo: &str) -> Result<u64, StorageError> {
        let guard = self.session(id, repo).await?;
        Ok(guard.live.as_ref().map_or(0, |l| l.offset))
    }

    /// Opens the session for appending. `start`, when given, must equal the current offset.
    pub async fn writer(&self, id: &str, repo: &str, start: Option<u64>) -> Result<UploadWriter, StorageError> {
        let guard = self.session(id, repo).await?;
        let offset = guard.live.as_ref().ok_or(StorageError::UploadUnknown)?.offset;
        if let Some(start) = start {
            if start != offset {
                return Err(StorageError::OutOfOrder { start, offset });
            }
        }
        Ok(UploadWriter {
            disk: Disk::Idle(guard),
            queued: Vec::new(),
            staging: BytesMut::with_capacity(WRITE_BUFFER),
            start: offset,
            tee: None,
        })
    }

    /// Verifies the session's digest, makes the bytes durable and moves them into the blob store.
    /// Returns the blob size. On a digest mismatch the session is discarded.
    pub async fn finish(&self, id: &str, repo: &str, expected: &Digest) -> Result<u64, StorageError> {
        let mut guard = self.session(id, repo).await?;
        let live = guard.live.take().ok_or(StorageError::UploadUnknown)?;
        let hashed_live = live.hasher.algorithm() == expected.algorithm();
        if hashed_live {
            let actual = live.hasher.clone().finish();
            if actual != *expected {
                drop(guard);
                return Err(self.mismatch(id, repo, expected, actual).await);
            }
        }
        let size = live.offset;
        let dir = self.dir.join(id);
        let store = self.store.clone();
        let digest = expected.clone();
        // `Some(actual)` when the bytes, hashed again under the expected algorithm, differ.
        let mismatch = tokio::task::spawn_blocking(move || -> io::Result<Option<Digest>> {
            let mut live = live;
            live.writer.sync_all()?;
            let path = live.path.clone();
            drop(live);
            if !hashed_live {
                let actual = store.hash_file(&path, digest.algorithm())?;
                if actual != digest {
                    return Ok(Some(actual));
                }
            }
            store.ingest(&path, &digest)?;
            std::fs::remove_dir_all(&dir)?;
            Ok(None)
        })
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))??;
        if let Some(actual) = mismatch {
            drop(guard);
            return Err(self.mismatch(id, repo, expected, actual).await);
        }
        guard.expired = true;
        self.lock_map().remove(id);
        drop(guard);
        Ok(size)
    }

    /// Discards a session whose bytes are not `expected`'s and says so.
    async fn mismatch(&self, id: &str, repo: &str, expected: &Digest, actual: Digest) -> StorageError {
        if let Err(e) = self.cancel(id, repo).await {
            return e;
        }
        StorageError::DigestMismatch {
            expected: expected.clone(),
            actual,
        }
    }

    /// Drops a session and its bytes.
    pub async fn cancel(&self, id: &str, repo: &str) -> Result<(), StorageError> {
        let mut guard = self.session(id, repo).await?;
        guard.expired = true;
        guard.live = None;
        let dir = self.dir.join(id);
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir))
            .await
            .map_err(|e| StorageError::Io(io::Error::other(e)))??;
        self.lock_map().remove(id);
        drop(guard);
        let _ = sync_dir(&self.dir);
        Ok(())
    }
}

/// Milliseconds since the epoch by the system clock.
fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Rebuilds a session's live state from its bytes on disk (in whichever format they are).
fn rehash(store: &BlobStore, dir: &Path) -> io::Result<Live> {
    let base = dir.join(DATA_FILE);
    let path = [Format::Sealed, Format::Plain]
        .into_iter()
        .map(|format| format.name(&base))
        .find(|path| path.is_file())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "upload session has no data file"))?;
    let mut hasher = ContentHasher::new(Algorithm::Sha256);
    let mut offset = 0u64;
    let writer = StoredWriter::resume(&path, store.master_keys().as_deref(), |bytes| {
        hasher.update(bytes);
        offset += bytes.len() as u64;
    })?;
    Ok(Live {
        writer,
        path,
        hasher,
        offset,
    })
}

/// An open append to one session. The session stays locked until the writer is closed or
/// dropped and its last batch is on disk, so even a request cancelled halfway leaves the session
/// consistent (at the offset the disk holds) for the next one.
pub struct UploadWriter {
    disk: Disk,
    /// Full batches waiting for the disk (at most `QUEUE_CHUNKS`).
    queued: Vec<Bytes>,
    /// Small network frames gathered into a batch, so the disk is touched once per
    /// `WRITE_BUFFER` bytes rather than once per frame.
    staging: BytesMut,
    /// The session's offset when this writer opened it.
    start: u64,
    /// Replica streams that get every batch as it is queued for the disk.
    tee: Option<ReplicaTee>,
}

/// Where the session is: here, or with the blocking call that is writing batches into it.
enum Disk {
    Idle(OwnedMutexGuard<Session>),
    Busy(JoinHandle<(OwnedMutexGuard<Session>, io::Result<()>)>),
    /// The blocking call died (a panic); the session was released when it did.
    Lost,
}

/// Appends `batches` to the session, in order. After a failed write the file and the hash state
/// may disagree: the live state is dropped so the next access rebuilds it from the disk.
fn write_batches(
    mut guard: OwnedMutexGuard<Session>,
    batches: Vec<Bytes>,
) -> (OwnedMutexGuard<Session>, io::Result<()>) {
    let Some(live) = guard.live.as_mut() else {
        return (
            guard,
            Err(io::Error::other("upload session lost its state after a failed write")),
        );
    };
    let mut result = Ok(());
    for batch in &batches {
        result = live.append(batch);
        if result.is_err() {
            break;
        }
    }
    // Whatever a request delivered is in the file when it ends (a sealed tail record included).
    if result.is_ok() {
        result = live.writer.flush();
    }
    if result.is_err() {
        guard.live = None;
    }
    (guard, result)
}

impl UploadWriter {
    /// The session's offset when this writer opened it.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Sends every batch from here on to `tee` too. It must have sent exactly the bytes the
    /// session holds (else it is dropped, and its streams end unfinished).
    pub fn attach_tee(&mut self, tee: ReplicaTee) {
        if tee.offset() == self.start {
            self.tee = Some(tee);
        }
    }

    /// Queues a full batch for the disk, handing it to the tee first.
    async fn queue(&mut self, batch: Bytes) {
        if let Some(tee) = &mut self.tee {
            tee.send(&batch).await;
        }
        self.queued.push(batch);
    }

    /// Takes bytes for writing and hashing; waits only when `QUEUE_CHUNKS` batches are queued.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        if self.staging.is_empty() && chunk.len() >= WRITE_BUFFER {
            self.queue(chunk).await;
        } else {
            self.staging.extend_from_slice(&chunk);
            if self.staging.len() >= WRITE_BUFFER {
                let batch = self.staging.split().freeze();
                self.queue(batch).await;
                self.staging.reserve(WRITE_BUFFER);
            }
        }
        if self.queued.is_empty() {
            return Ok(());
        }
        let full = self.queued.len() >= QUEUE_CHUNKS;
        self.pump(full).await
    }

    /// Collects a finished (or, with `wait`, the running) blocking call, then starts the next one
    /// on everything queued.
    async fn pump(&mut self, wait: bool) -> Result<(), StorageError> {
        if let Disk::Busy(handle) = &mut self.disk {
            if !wait && !handle.is_finished() {
                return Ok(());
            }
            let joined = handle.await;
            self.disk = Disk::Lost;
            let (guard, result) = joined.map_err(|e| StorageError::Io(io::Error::other(e)))?;
            self.disk = Disk::Idle(guard);
            result?;
        }
        if self.queued.is_empty() {
            return Ok(());
        }
        match std::mem::replace(&mut self.disk, Disk::Lost) {
            Disk::Idle(guard) => {
                let batches = std::mem::take(&mut self.queued);
                self.disk = Disk::Busy(tokio::task::spawn_blocking(move || write_batches(guard, batches)));
                Ok(())
            }
            Disk::Busy(_) | Disk::Lost => Err(StorageError::Io(io::Error::other("upload writer stopped"))),
        }
    }

    /// Writes everything taken so far; returns the new offset.
    pub async fn close(self) -> Result<u64, StorageError> {
        self.close_with_tee().await.0
    }

    /// [`UploadWriter::close`], handing back the attached tee (its offset is the new offset
    /// when the close succeeded).
    pub async fn close_with_tee(mut self) -> (Result<u64, StorageError>, Option<ReplicaTee>) {
        if !self.staging.is_empty() {
            let batch = self.staging.split().freeze();
            self.queue(batch).await;
        }
        let tee = self.tee.take();
        (self.flush().await, tee)
    }

    async fn flush(&mut self) -> Result<u64, StorageError> {
        self.pump(true).await?;
        self.pump(true).await?;
        match &self.disk {
            Disk::Idle(guard) => guard.live.as_ref().map(|l| l.offset).ok_or(StorageError::UploadUnknown),
            Disk::Busy(_) | Disk::Lost => Err(StorageError::Io(io::Error::other("upload writer stopped"))),
        }
    }
}
