//! A stored file in either format, so the blob store reads and writes without caring which.
//!
//! The format is named by the file name: `<name>.sealed` is sealed, anything else is plain.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::keys::MasterKeys;
use super::sealed::{SealedAppender, SealedReader};

/// The name suffix of a sealed file.
pub const SEALED_SUFFIX: &str = ".sealed";

/// How a file's bytes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Sealed,
}

impl Format {
    /// The format a file's name says it has.
    pub fn of_path(path: &Path) -> Format {
        if path.to_string_lossy().ends_with(SEALED_SUFFIX) {
            Format::Sealed
        } else {
            Format::Plain
        }
    }

    /// `base` named for this format.
    pub fn name(self, base: &Path) -> PathBuf {
        match self {
            Format::Plain => base.to_path_buf(),
            Format::Sealed => {
                let mut name = base.as_os_str().to_owned();
                name.push(SEALED_SUFFIX);
                PathBuf::from(name)
            }
        }
    }

    /// The other format.
    pub fn other(self) -> Format {
        match self {
            Format::Plain => Format::Sealed,
            Format::Sealed => Format::Plain,
        }
    }
}

/// Reads a stored file's plaintext at any offset.
pub enum StoredReader {
    Plain { file: File, len: u64 },
    Sealed(Box<SealedReader>),
}

impl StoredReader {
    /// Opens `path` in the format its name says; a sealed file needs `keys`.
    pub fn open(path: &Path, keys: Option<&MasterKeys>) -> io::Result<StoredReader> {
        let file = File::open(path)?;
        match Format::of_path(path) {
            Format::Plain => {
                let len = file.metadata()?.len();
                Ok(StoredReader::Plain { file, len })
            }
            Format::Sealed => {
                let keys = keys.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("{} is sealed and this node was given no master key", path.display()),
                    )
                })?;
                Ok(StoredReader::Sealed(Box::new(SealedReader::open(file, keys)?)))
            }
        }
    }

    /// Plaintext bytes.
    pub fn len(&self) -> u64 {
        match self {
            StoredReader::Plain { len, .. } => *len,
            StoredReader::Sealed(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn format(&self) -> Format {
        match self {
            StoredReader::Plain { .. } => Format::Plain,
            StoredReader::Sealed(_) => Format::Sealed,
        }
    }

    /// `len` plaintext bytes at `offset` as one or more pieces (a sealed file's decrypted in
    /// place, record by record). Damage in a sealed file is `InvalidData`.
    pub fn read_pieces(&self, offset: u64, len: u64) -> io::Result<Vec<bytes::Bytes>> {
        match self {
            StoredReader::Plain { file, .. } => {
                let mut buf = bytes::BytesMut::zeroed(len as usize);
                file.read_exact_at(&mut buf, offset)?;
                Ok(vec![buf.freeze()])
            }
            StoredReader::Sealed(r) => r.read_pieces(offset, len),
        }
    }

    /// Fills `out` with the plaintext at `offset`. Damage in a sealed file is `InvalidData`.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        match self {
            StoredReader::Plain { file, .. } => file.read_exact_at(out, offset),
            StoredReader::Sealed(r) => r.read_at(offset, out),
        }
    }
}

/// Writes a new stored file (or appends to an upload's) in either format.
pub enum StoredWriter {
    Plain(BufWriter<File>),
    Sealed(Box<SealedAppender>),
}

/// Buffer of a plain writer: large writes pass straight through, small ones are gathered.
const PLAIN_BUFFER: usize = 256 << 10;

impl StoredWriter {
    /// Creates `path` (which must not exist) in the format its name says.
    pub fn create(path: &Path, keys: Option<&MasterKeys>) -> io::Result<StoredWriter> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        StoredWriter::start(file, Format::of_path(path), keys)
    }

    fn start(file: File, format: Format, keys: Option<&MasterKeys>) -> io::Result<StoredWriter> {
        match format {
            Format::Plain => Ok(StoredWriter::Plain(BufWriter::with_capacity(PLAIN_BUFFER, file))),
            Format::Sealed => {
                let keys = keys.ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no master key"))?;
                Ok(StoredWriter::Sealed(Box::new(SealedAppender::create(file, keys)?)))
            }
        }
    }

    /// Reopens an existing file at its end, handing every plaintext byte already in it to `seen`.
    pub fn resume(path: &Path, keys: Option<&MasterKeys>, mut seen: impl FnMut(&[u8])) -> io::Result<StoredWriter> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        match Format::of_path(path) {
            Format::Plain => {
                let len = file.metadata()?.len();
                let mut buf = vec![0u8; 1 << 20];
                let mut at = 0u64;
                while at < len {
                    let n = (len - at).min(buf.len() as u64) as usize;
                    file.read_exact_at(&mut buf[..n], at)?;
                    seen(&buf[..n]);
                    at += n as u64;
                }
                let mut file = file;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))?;
                Ok(StoredWriter::Plain(BufWriter::with_capacity(PLAIN_BUFFER, file)))
            }
            Format::Sealed => {
                let keys = keys.ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no master key"))?;
                Ok(StoredWriter::Sealed(Box::new(SealedAppender::resume(
                    file, keys, seen,
                )?)))
            }
        }
    }

    /// Appends plaintext.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            StoredWriter::Plain(w) => w.write_all(bytes),
            StoredWriter::Sealed(w) => w.append(bytes),
        }
    }

    /// Hands everything appended to the file (not yet durable).
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            StoredWriter::Plain(w) => w.flush(),
            StoredWriter::Sealed(w) => w.flush(),
        }
    }

    /// Flushes and fsyncs.
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file().sync_all()
    }

    /// The underlying file (for writeback hints).
    pub fn file(&self) -> &File {
        match self {
            StoredWriter::Plain(w) => w.get_ref(),
            StoredWriter::Sealed(w) => w.file(),
        }
    }
}
