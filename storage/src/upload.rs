//! Resumable upload sessions.
//!
//! A session is a directory `uploads/<id>/` holding the bytes received so far (`data`) and the
//! repository it belongs to (`repo`). While the node runs, the running SHA-256 state is kept in
//! memory so each chunk is hashed exactly once as it streams through; after a restart the state
//! is rebuilt by hashing the bytes on disk the first time the session is touched, so an upload
//! survives a crash and resumes at the offset the disk holds.
//!
//! Network frames are gathered into 1 MiB batches; each batch is written and hashed by one short
//! blocking call started as soon as it is full, while the network delivers the next ones. A
//! blocking call only ever works on bytes it already has — none waits for the network — so the
//! disk overlaps the transfer, memory stays at a few batches, and a runtime whose clock must not
//! move while blocking work is pending (the simulation's) is never held up by a slow client.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rand::RngCore;
use sha2::{Digest as _, Sha256};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::task::JoinHandle;

use crate::blob_store::{sync_dir, BlobStore};
use crate::digest::Digest;
use crate::error::StorageError;
use crate::tee::ReplicaTee;

const QUEUE_CHUNKS: usize = 16;
const WRITE_BUFFER: usize = 1 << 20;

/// Session state while it is open in this process.
struct Session {
    repo: String,
    /// Open file and hash state; `None` until first touched after a restart.
    live: Option<Live>,
}

struct Live {
    file: File,
    hasher: Sha256,
    offset: u64,
}

impl Live {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        let before = self.offset;
        self.offset += bytes.len() as u64;
        if before / WRITEBACK_STEP != self.offset / WRITEBACK_STEP {
            start_writeback(&self.file, self.offset);
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
    open: Mutex<HashMap<String, Arc<AsyncMutex<Session>>>>,
}

impl Uploads {
    /// `owner_tag` names this node inside every session id, so peers can route to the owner.
    pub fn open(dir: PathBuf, store: BlobStore, owner_tag: String) -> io::Result<Uploads> {
        std::fs::create_dir_all(&dir)?;
        Ok(Uploads {
            dir,
            store,
            owner_tag,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The owner tag embedded in an upload id (`<owner>-<random>`).
    pub fn owner_of(id: &str) -> Option<&str> {
        id.split_once('-').map(|(owner, _)| owner)
    }

    fn valid_id(id: &str) -> bool {
        !id.is_empty() && id.len() <= 80 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    /// Starts a session for `repo`; returns its id.
    pub fn create(&self, repo: &str) -> Result<String, StorageError> {
        let mut random = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut random);
        let id = format!("{}-{}", self.owner_tag, hex::encode(random));
        let dir = self.dir.join(&id);
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join("repo"), repo)?;
        let file = OpenOptions::new().create(true).append(true).open(dir.join("data"))?;
        let session = Session {
            repo: repo.to_string(),
            live: Some(Live {
                file,
                hasher: Sha256::new(),
                offset: 0,
            }),
        };
        self.lock_map().insert(id.clone(), Arc::new(AsyncMutex::new(session)));
        Ok(id)
    }

    fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AsyncMutex<Session>>>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Finds a session, in memory or (after a restart) on disk, and checks it belongs to `repo`.
    async fn session(&self, id: &str, repo: &str) -> Result<OwnedMutexGuard<Session>, StorageError> {
        if !Self::valid_id(id) {
            return Err(StorageError::UploadUnknown);
        }
        let found = self.lock_map().get(id).cloned();
        let handle = match found {
            Some(h) => h,
            None => {
                let stored_repo = match std::fs::read_to_string(self.dir.join(id).join("repo")) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::UploadUnknown),
                    Err(e) => return Err(e.into()),
                };
                let handle = Arc::new(AsyncMutex::new(Session {
                    repo: stored_repo,
                    live: None,
                }));
                self.lock_map().entry(id.to_string()).or_insert(handle).clone()
            }
        };
        let mut guard = handle.lock_owned().await;
        if guard.repo != repo {
            return Err(StorageError::UploadOtherRepo(guard.repo.clone()));
        }
        if guard.live.is_none() {
            let path = self.dir.join(id).join("data");
            let live = tokio::task::spawn_blocking(move || rehash(path))
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
        let actual = Digest::from_hasher(live.hasher.clone());
        if actual != *expected {
            drop(guard);
            self.cancel(id, repo).await?;
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let size = live.offset;
        let dir = self.dir.join(id);
        let store = self.store.clone();
        let digest = expected.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            live.file.sync_all()?;
            drop(live);
            store.ingest(&dir.join("data"), &digest)?;
            std::fs::remove_dir_all(&dir)
        })
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))??;
        self.lock_map().remove(id);
        drop(guard);
        Ok(size)
    }

    /// Drops a session and its bytes.
    pub async fn cancel(&self, id: &str, repo: &str) -> Result<(), StorageError> {
        let guard = self.session(id, repo).await?;
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

/// Rebuilds a session's live state from its bytes on disk.
fn rehash(path: PathBuf) -> io::Result<Live> {
    let mut file = OpenOptions::new().read(true).append(true).open(&path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(Live { file, hasher, offset })
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
            guard.live = None;
            break;
        }
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
