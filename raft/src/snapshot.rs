//! Catalog snapshots as files on disk: built from a rocksdb checkpoint, shipped to followers in
//! chunks straight from the file, and installed into rocksdb in bounded batches.
//!
//! Nothing here holds the catalog in memory. Building takes a rocksdb checkpoint (hard links to
//! the live SST files, consistent to one point in time, taken in milliseconds), opens it
//! read-only and streams its catalog column families into a snapshot file. Openraft then reads
//! that file in chunks to send it; the receiver writes the chunks into a file of its own.
//!
//! The file format (all integers little-endian):
//!
//! ```text
//! "KSNAP001" | u32 header length | bincode(Header)            header: meta + column family names
//! { u8 cf index | u32 key length | key | u32 value length | value }*
//! 0xFF | u64 record count | 32-byte SHA-256 of every byte before it
//! ```
//!
//! Installing is crash-safe without an all-in-one write batch: the verified file is published as
//! the current snapshot first, an "installing" marker is written (synced), the catalog is
//! replaced in batches, and the final batch sets the applied position and clears the marker
//! (synced). A node that restarts with the marker still set installs the current snapshot again
//! before it serves anything (see [`resume_interrupted_install`]).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openraft::{LogId, SnapshotMeta, StoredMembership};
use rocksdb::{IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::*;
use crate::types::{NodeId, NodeInfo};

const MAGIC: &[u8; 8] = b"KSNAP001";
const END_OF_RECORDS: u8 = 0xFF;
/// Bytes of records gathered into one rocksdb write while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;
/// Upper bound of a header, key or value length read from a file (a corrupt length must not
/// make us allocate gigabytes).
const MAX_FIELD_BYTES: u32 = 64 << 20;

/// Everything that can go wrong with a snapshot file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("snapshot encoding: {0}")]
    Encoding(#[from] bincode::Error),
    #[error("snapshot file is corrupt: {0}")]
    Corrupt(String),
}

type Meta = SnapshotMeta<NodeId, NodeInfo>;

/// What precedes the records: the snapshot's metadata and the column families the records'
/// indexes refer to.
#[derive(Serialize, Deserialize)]
struct Header {
    meta: Meta,
    column_families: Vec<String>,
}

/// The node's snapshot directory: the current snapshot, the one being received, scratch space
/// for checkpoints. One lock orders checkpoints against installs, so a checkpoint never sees a
/// half-installed catalog, and publishing never replaces a newer snapshot with an older one.
pub struct SnapshotFiles {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl SnapshotFiles {
    pub fn new(dir: PathBuf) -> std::io::Result<SnapshotFiles> {
        std::fs::create_dir_all(&dir)?;
        // Leftovers of a build or a transfer cut short by a crash.
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("checkpoint-") {
                std::fs::remove_dir_all(&path)?;
            } else if name.starts_with("building-") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(SnapshotFiles {
            dir,
            lock: Mutex::new(()),
        })
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn current_path(&self) -> PathBuf {
        self.dir.join("current.snap")
    }

    /// Where a snapshot being received from the leader is written.
    pub fn receiving_path(&self) -> PathBuf {
        self.dir.join("receiving.snap")
    }

    /// The current snapshot's metadata and the file positioned at its start, if there is one.
    pub fn open_current(&self) -> Result<Option<(Meta, File)>, SnapshotError> {
        let mut file = match File::open(self.current_path()) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let header = read_header(&mut BufReader::new(&mut file))?;
        file.seek(SeekFrom::Start(0))?;
        Ok(Some((header.meta, file)))
    }

    /// Builds a snapshot of `db`'s catalog: checkpoint, stream into a file, publish it as the
    /// current snapshot (unless a newer one was published meanwhile). Returns the metadata of
    /// the current snapshot afterwards and its file.
    pub fn build(&self, db: &DB, snapshot_id_suffix: u64) -> Result<(Meta, File), SnapshotError> {
        let checkpoint = self.dir.join(format!("checkpoint-{snapshot_id_suffix}"));
        {
            let _installs_excluded = self.guard();
            rocksdb::checkpoint::Checkpoint::new(db)?.create_checkpoint(&checkpoint)?;
        }
        let built = self.write_from_checkpoint(&checkpoint, snapshot_id_suffix);
        std::fs::remove_dir_all(&checkpoint)?;
        let (meta, path) = built?;
        self.publish(&path, &meta)?;
        match self.open_current()? {
            Some(current) => Ok(current),
            None => Err(SnapshotError::Corrupt(
                "current snapshot vanished after publishing".into(),
            )),
        }
    }

    fn write_from_checkpoint(&self, checkpoint: &Path, suffix: u64) -> Result<(Meta, PathBuf), SnapshotError> {
        let names = DB::list_cf(&Options::default(), checkpoint)?;
        let view = DB::open_cf_for_read_only(&Options::default(), checkpoint, &names, false)?;
        let cf = |name: &str| {
            view.cf_handle(name)
                .ok_or_else(|| SnapshotError::Corrupt(format!("checkpoint lacks column family {name}")))
        };
        let meta_value = |key: &[u8]| view.get_cf(cf(CF_SM_META)?, key).map_err(SnapshotError::from);
        let last_log_id: Option<LogId<NodeId>> = match meta_value(KEY_LAST_APPLIED)? {
            Some(b) => bincode::deserialize(&b)?,
            None => None,
        };
        let last_membership: StoredMembership<NodeId, NodeInfo> = match meta_value(KEY_MEMBERSHIP)? {
            Some(b) => bincode::deserialize(&b)?,
            None => StoredMembership::default(),
        };
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{suffix}", id.leader_id, id.index),
            None => format!("none-{suffix}"),
        };
        let header = Header {
            meta: SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id,
            },
            column_families: CATALOG_CFS.iter().map(|s| s.to_string()).collect(),
        };
        let path = self.dir.join(format!("building-{suffix}.snap"));
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(&path)?));
        let header_bytes = bincode::serialize(&header)?;
        out.write_all(MAGIC)?;
        write_len(&mut out, header_bytes.len())?;
        out.write_all(&header_bytes)?;
        let mut count = 0u64;
        for (index, name) in CATALOG_CFS.iter().enumerate() {
            for item in view.iterator_cf(cf(name)?, IteratorMode::Start) {
                let (key, value) = item?;
                out.write_all(&[index as u8])?;
                write_len(&mut out, key.len())?;
                out.write_all(&key)?;
                write_len(&mut out, value.len())?;
                out.write_all(&value)?;
                count += 1;
            }
        }
        out.write_all(&[END_OF_RECORDS])?;
        out.write_all(&count.to_le_bytes())?;
        let digest = out.hasher.finalize();
        let mut file = out.inner;
        file.write_all(&digest)?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((header.meta, path))
    }

    /// Makes `path` the current snapshot unless the current one is newer; durable on return.
    fn publish(&self, path: &Path, meta: &Meta) -> Result<(), SnapshotError> {
        let _one_publisher = self.guard();
        if let Some((current, _)) = self.open_current()? {
            if current.last_log_id > meta.last_log_id {
                std::fs::remove_file(path)?;
                return Ok(());
            }
        }
        std::fs::rename(path, self.current_path())?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Installs the snapshot received at [`receiving_path`](Self::receiving_path) into `db`:
    /// verify, publish, then replace the catalog (see the module docs for the crash story).
    pub fn install_received(&self, db: &DB, meta: &Meta) -> Result<(), SnapshotError> {
        let received = self.receiving_path();
        File::open(&received)?.sync_all()?;
        let header = verify(&received)?;
        if header.meta.snapshot_id != meta.snapshot_id {
            return Err(SnapshotError::Corrupt(format!(
                "received snapshot {} but was told {}",
                header.meta.snapshot_id, meta.snapshot_id
            )));
        }
        {
            let _one_publisher = self.guard();
            std::fs::rename(&received, self.current_path())?;
            File::open(&self.dir)?.sync_all()?;
        }
        self.install_current(db)
    }

    /// Replaces the catalog in `db` with the current snapshot's contents.
    fn install_current(&self, db: &DB) -> Result<(), SnapshotError> {
        let _no_checkpoint_meanwhile = self.guard();
        let path = self.current_path();
        let header = verify(&path)?;
        let handle = |name: &str| {
            db.cf_handle(name)
                .ok_or_else(|| SnapshotError::Corrupt(format!("column family {name} missing")))
        };
        let mut sync = WriteOptions::default();
        sync.set_sync(true);

        let mut start = WriteBatch::default();
        start.put_cf(handle(CF_SM_META)?, KEY_INSTALLING, header.meta.snapshot_id.as_bytes());
        for name in CATALOG_CFS {
            // Every catalog key is shorter than 64 KiB of 0xff.
            start.delete_range_cf(handle(name)?, Vec::<u8>::new(), vec![0xffu8; 65536]);
        }
        db.write_opt(start, &sync)?;

        let mut reader = BufReader::with_capacity(1 << 20, File::open(&path)?);
        read_header(&mut reader)?;
        let targets = header
            .column_families
            .iter()
            .map(|name| handle(name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut batch = WriteBatch::default();
        while let Some((index, key, value)) = read_record(&mut reader)? {
            let target = targets
                .get(index as usize)
                .ok_or_else(|| SnapshotError::Corrupt(format!("record names column family #{index}")))?;
            batch.put_cf(*target, key, value);
            if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        let meta_cf = handle(CF_SM_META)?;
        batch.put_cf(meta_cf, KEY_LAST_APPLIED, bincode::serialize(&header.meta.last_log_id)?);
        batch.put_cf(
            meta_cf,
            KEY_MEMBERSHIP,
            bincode::serialize(&header.meta.last_membership)?,
        );
        batch.delete_cf(meta_cf, KEY_INSTALLING);
        db.write_opt(batch, &sync)?;
        Ok(())
    }

    /// If the node crashed in the middle of installing a snapshot, installs it again. Returns
    /// whether it did.
    pub fn resume_interrupted_install(&self, db: &DB) -> Result<bool, SnapshotError> {
        let meta_cf = db
            .cf_handle(CF_SM_META)
            .ok_or_else(|| SnapshotError::Corrupt("column family sm_meta missing".into()))?;
        if db.get_pinned_cf(meta_cf, KEY_INSTALLING)?.is_none() {
            return Ok(false);
        }
        self.install_current(db)?;
        Ok(true)
    }
}

/// Reads the whole file once, checking its structure and its SHA-256, and returns its header.
fn verify(path: &Path) -> Result<Header, SnapshotError> {
    let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, File::open(path)?));
    let header = read_header(&mut reader)?;
    let mut count = 0u64;
    while read_record(&mut reader)?.is_some() {
        count += 1;
    }
    let mut recorded_count = [0u8; 8];
    reader.read_exact(&mut recorded_count)?;
    let computed = reader.hasher.clone().finalize();
    let mut recorded = [0u8; 32];
    reader.inner.read_exact(&mut recorded)?;
    if u64::from_le_bytes(recorded_count) != count {
        return Err(SnapshotError::Corrupt(format!(
            "{count} records, trailer says {}",
            u64::from_le_bytes(recorded_count)
        )));
    }
    if computed.as_slice() != recorded {
        return Err(SnapshotError::Corrupt("checksum mismatch".into()));
    }
    if reader.inner.read(&mut [0u8; 1])? != 0 {
        return Err(SnapshotError::Corrupt("bytes after the trailer".into()));
    }
    Ok(header)
}

fn read_header(reader: &mut impl Read) -> Result<Header, SnapshotError> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(SnapshotError::Corrupt("not a Keelson snapshot".into()));
    }
    let bytes = read_field(reader)?;
    Ok(bincode::deserialize(&bytes)?)
}

/// One catalog entry in a snapshot file: column family index, key, value.
type Record = (u8, Vec<u8>, Vec<u8>);

/// The next record, or `None` at the end-of-records marker.
fn read_record(reader: &mut impl Read) -> Result<Option<Record>, SnapshotError> {
    let mut index = [0u8; 1];
    reader.read_exact(&mut index)?;
    if index[0] == END_OF_RECORDS {
        return Ok(None);
    }
    let key = read_field(reader)?;
    let value = read_field(reader)?;
    Ok(Some((index[0], key, value)))
}

fn read_field(reader: &mut impl Read) -> Result<Vec<u8>, SnapshotError> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FIELD_BYTES {
        return Err(SnapshotError::Corrupt(format!("field of {len} bytes")));
    }
    let mut field = vec![0u8; len as usize];
    reader.read_exact(&mut field)?;
    Ok(field)
}

fn write_len(out: &mut impl Write, len: usize) -> Result<(), SnapshotError> {
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= MAX_FIELD_BYTES)
        .ok_or_else(|| SnapshotError::Corrupt(format!("field of {len} bytes")))?;
    out.write_all(&len.to_le_bytes())?;
    Ok(())
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(db: &DB, cf: &str, key: &[u8], value: &[u8]) {
        db.put_cf(db.cf_handle(cf).unwrap(), key, value).unwrap();
    }

    fn catalog_contents(db: &DB) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        for name in CATALOG_CFS {
            for item in db.iterator_cf(db.cf_handle(name).unwrap(), IteratorMode::Start) {
                let (k, v) = item.unwrap();
                all.push((name.to_string(), k.to_vec(), v.to_vec()));
            }
        }
        all
    }

    /// A catalog with `n` tags and blob records, applied up to log index `n`.
    fn filled(dir: &Path, n: u64) -> crate::db::Db {
        let db = crate::db::open(&dir.join("db")).unwrap();
        for i in 0..n {
            put(
                &db,
                CF_TAGS,
                format!("repo\0tag{i}").as_bytes(),
                format!("sha256:{i:064}").as_bytes(),
            );
            put(&db, CF_BLOBS, format!("sha256:{i:064}").as_bytes(), &vec![i as u8; 300]);
        }
        let applied: Option<LogId<NodeId>> = Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), n));
        put(
            &db,
            CF_SM_META,
            KEY_LAST_APPLIED,
            &bincode::serialize(&applied).unwrap(),
        );
        db
    }

    #[test]
    fn built_snapshot_installs_the_same_catalog_elsewhere() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = filled(a.path(), 5000);
        let source_files = SnapshotFiles::new(a.path().join("snapshots")).unwrap();
        let (meta, mut file) = source_files.build(&source, 1).unwrap();
        assert_eq!(meta.last_log_id.map(|l| l.index), Some(5000));
        // Checkpoints are scratch space: none is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(a.path().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(leftovers, vec!["current.snap".to_string()]);

        // The receiver has stale data of its own, which the install must replace entirely.
        let target = filled(b.path(), 7);
        put(&target, CF_REPOS, b"stale", b"x");
        let target_files = SnapshotFiles::new(b.path().join("snapshots")).unwrap();
        std::io::copy(&mut file, &mut File::create(target_files.receiving_path()).unwrap()).unwrap();
        target_files.install_received(&target, &meta).unwrap();
        assert_eq!(catalog_contents(&target), catalog_contents(&source));
        let applied: Option<LogId<NodeId>> = bincode::deserialize(
            &target
                .get_cf(target.cf_handle(CF_SM_META).unwrap(), KEY_LAST_APPLIED)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(applied, meta.last_log_id);
        assert_eq!(
            target_files.open_current().unwrap().unwrap().0.snapshot_id,
            meta.snapshot_id
        );
    }

    #[test]
    fn a_corrupt_snapshot_is_refused_and_changes_nothing() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = filled(a.path(), 100);
        let (meta, _) = SnapshotFiles::new(a.path().join("snapshots"))
            .unwrap()
            .build(&source, 1)
            .unwrap();
        let mut bytes = std::fs::read(a.path().join("snapshots/current.snap")).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        let target = filled(b.path(), 3);
        let before = catalog_contents(&target);
        let files = SnapshotFiles::new(b.path().join("snapshots")).unwrap();
        std::fs::write(files.receiving_path(), &bytes).unwrap();
        assert!(files.install_received(&target, &meta).is_err());
        assert_eq!(catalog_contents(&target), before);
        assert!(files.open_current().unwrap().is_none());
    }

    #[test]
    fn an_install_cut_short_is_finished_on_restart() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = filled(a.path(), 300);
        let (_, mut file) = SnapshotFiles::new(a.path().join("snapshots"))
            .unwrap()
            .build(&source, 1)
            .unwrap();
        // The state a crash leaves: the snapshot published, the marker set, the catalog half
        // replaced.
        let target = filled(b.path(), 10);
        let files = SnapshotFiles::new(b.path().join("snapshots")).unwrap();
        std::io::copy(&mut file, &mut File::create(files.current_path()).unwrap()).unwrap();
        put(&target, CF_SM_META, KEY_INSTALLING, b"whatever");
        target
            .delete_cf(target.cf_handle(CF_TAGS).unwrap(), b"repo\0tag3")
            .unwrap();
        assert!(files.resume_interrupted_install(&target).unwrap());
        assert_eq!(catalog_contents(&target), catalog_contents(&source));
        assert!(!files.resume_interrupted_install(&target).unwrap());
    }

    #[test]
    fn an_older_build_never_replaces_a_newer_snapshot() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let newer = filled(a.path(), 50);
        let older = filled(b.path(), 20);
        let files = SnapshotFiles::new(a.path().join("snapshots")).unwrap();
        files.build(&newer, 1).unwrap();
        let (meta, _) = files.build(&older, 2).unwrap();
        assert_eq!(meta.last_log_id.map(|l| l.index), Some(50));
    }
}
