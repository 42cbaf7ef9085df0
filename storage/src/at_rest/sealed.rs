//! The sealed file format: a plaintext byte stream stored as independently authenticated
//! AES-256-GCM records, so any range is read by decrypting only the records it touches.
//!
//! ```text
//! header (256 bytes):  "KLSNSEAL" | version 1 | log2(chunk) | 6 zero | file id (16)
//!                      | key slot A (68) | key slot B (68) | zero padding
//! record i:            nonce (12) | AES-GCM(data key, chunk i) | tag (16)
//!                      at 256 + i × (12 + CHUNK + 16); every record holds CHUNK plaintext
//!                      bytes except the last, which holds 1..=CHUNK
//! ```
//!
//! Each file has its own random data key, wrapped by the cluster master key into a key slot.
//! A record's associated data is the file id and the record's index, so records cannot be
//! swapped within or between files unnoticed. Nonces are random per record write.
//!
//! Two key slots make re-wrapping safe in place: the new wrapping goes into the slot not in use
//! and is made durable before the old one is cleared, so a crash or a reader at any moment finds
//! at least one slot that opens (a torn slot simply fails authentication).
//!
//! An upload appends: full records are written once; the partial last record is rewritten
//! (with a fresh nonce) as it grows. A crash during that rewrite leaves a last record that fails
//! authentication, and [`SealedAppender::resume`] cuts the file back to the records that open —
//! the upload resumes at the offset the disk holds, as a plain one does.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};
use ring::aead::{Aad, LessSafeKey, Nonce, NONCE_LEN};

use super::keys::{aead_key, random_key, random_nonce, KeyError, KeyId, MasterKeys, KEY_LEN, TAG_LEN, WRAPPED_LEN};

const MAGIC: &[u8; 8] = b"KLSNSEAL";
const VERSION: u8 = 1;
const CHUNK_LOG2: u8 = 16;
/// Plaintext bytes per record.
pub const CHUNK: usize = 1 << CHUNK_LOG2;
/// Bytes before the first record.
pub const HEADER_LEN: u64 = 256;
const FILE_ID: std::ops::Range<usize> = 16..32;
const SLOT_A: usize = 32;
const SLOT_B: usize = SLOT_A + WRAPPED_LEN;
/// Bytes a record adds to its plaintext.
pub const RECORD_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of a full record.
pub const RECORD_LEN: u64 = (CHUNK + RECORD_OVERHEAD) as u64;

/// The plaintext length of a sealed file of `file_len` bytes; `None` when the length cannot be
/// one (a header cut short, or a last record too short to hold a byte).
pub fn plain_len(file_len: u64) -> Option<u64> {
    let body = file_len.checked_sub(HEADER_LEN)?;
    let full = body / RECORD_LEN;
    let rest = body % RECORD_LEN;
    let tail = match rest {
        0 => 0,
        r if r > RECORD_OVERHEAD as u64 => r - RECORD_OVERHEAD as u64,
        _ => return None,
    };
    full.checked_mul(CHUNK as u64)?.checked_add(tail)
}

/// The file offset of record `index`.
fn record_offset(index: u64) -> u64 {
    HEADER_LEN + index * RECORD_LEN
}

fn aad(file_id: &[u8; 16], index: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..16].copy_from_slice(file_id);
    out[16..].copy_from_slice(&index.to_be_bytes());
    out
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl From<KeyError> for io::Error {
    fn from(e: KeyError) -> io::Error {
        match e {
            KeyError::Damaged => invalid("the sealed file's key slots fail authentication"),
            other => io::Error::new(io::ErrorKind::PermissionDenied, other.to_string()),
        }
    }
}

/// A parsed header: the file's data key and which slot and master key it came from.
struct Header {
    file_id: [u8; 16],
    key: LessSafeKey,
    raw_key: [u8; KEY_LEN],
    slot: usize,
    master: KeyId,
}

fn read_header(file: &File, keys: &MasterKeys) -> io::Result<Header> {
    let mut bytes = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut bytes, 0)?;
    if &bytes[..8] != MAGIC || bytes[8] != VERSION || bytes[9] != CHUNK_LOG2 {
        return Err(invalid("not a sealed file of a version this node reads"));
    }
    let mut file_id = [0u8; 16];
    file_id.copy_from_slice(&bytes[FILE_ID]);
    // Prefer a slot wrapped by the active key; a torn or cleared slot fails and the other opens.
    let mut failure = KeyError::Damaged;
    let mut opened = None;
    for slot in [SLOT_A, SLOT_B] {
        let wrapped = &bytes[slot..slot + WRAPPED_LEN];
        if wrapped.iter().all(|b| *b == 0) {
            continue;
        }
        match keys.unwrap(wrapped) {
            Ok((raw, master)) => {
                let active = master == keys.active_id();
                opened = Some((raw, slot, master));
                if active {
                    break;
                }
            }
            Err(e) => failure = e,
        }
    }
    let (raw_key, slot, master) = opened.ok_or(failure)?;
    Ok(Header {
        file_id,
        key: aead_key(&raw_key),
        raw_key,
        slot,
        master,
    })
}

/// Random-access reads of a sealed file's plaintext.
pub struct SealedReader {
    file: File,
    key: LessSafeKey,
    file_id: [u8; 16],
    len: u64,
}

impl SealedReader {
    pub fn open(file: File, keys: &MasterKeys) -> io::Result<SealedReader> {
        let header = read_header(&file, keys)?;
        let len = plain_len(file.metadata()?.len()).ok_or_else(|| invalid("sealed file cut short"))?;
        Ok(SealedReader {
            file,
            key: header.key,
            file_id: header.file_id,
            len,
        })
    }

    /// Plaintext bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `out` with the plaintext at `offset`, decrypting every record it touches; a record
    /// that fails authentication is an `InvalidData` error.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut written = 0;
        for piece in self.read_pieces(offset, out.len() as u64)? {
            out[written..written + piece.len()].copy_from_slice(&piece);
            written += piece.len();
        }
        Ok(())
    }

    /// The plaintext at `offset` as pieces of one buffer, decrypted in place: each record's
    /// ciphertext is read once and its plaintext handed out where it lies, with no copy (what
    /// streaming a large range wants). Damage is `InvalidData`, as for [`SealedReader::read_at`].
    pub fn read_pieces(&self, offset: u64, len: u64) -> io::Result<Vec<Bytes>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= self.len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read beyond the end of a sealed file"))?;
        let first = offset / CHUNK as u64;
        let last = (end - 1) / CHUNK as u64;
        let from = record_offset(first);
        let to = record_offset(last) + RECORD_OVERHEAD as u64 + self.record_plain_len(last);
        let mut buf = BytesMut::zeroed((to - from) as usize);
        self.file.read_exact_at(&mut buf, from)?;
        let mut spans = Vec::with_capacity((last - first + 1) as usize);
        for index in first..=last {
            let at = ((index - first) * RECORD_LEN) as usize;
            let plain_len = self.record_plain_len(index) as usize;
            open_record(
                &self.key,
                &self.file_id,
                index,
                &mut buf[at..at + RECORD_OVERHEAD + plain_len],
            )?;
            let record_start = index * CHUNK as u64;
            let skip = offset.saturating_sub(record_start) as usize;
            let stop = (end.min(record_start + plain_len as u64) - record_start) as usize;
            spans.push(at + NONCE_LEN + skip..at + NONCE_LEN + stop);
        }
        let whole = buf.freeze();
        Ok(spans.into_iter().map(|span| whole.slice(span)).collect())
    }

    fn record_plain_len(&self, index: u64) -> u64 {
        (self.len - index * CHUNK as u64).min(CHUNK as u64)
    }
}

/// Appends plaintext to a sealed file.
pub struct SealedAppender {
    file: File,
    key: LessSafeKey,
    file_id: [u8; 16],
    /// Full records on disk.
    full: u64,
    /// Plaintext of the partial last record (also on disk once [`SealedAppender::flush`] ran).
    tail: Vec<u8>,
    /// Sealed records waiting for one write.
    pending: Vec<u8>,
}

impl SealedAppender {
    /// Starts a sealed file in `file` (empty, opened for writing) with a fresh data key.
    pub fn create(file: File, keys: &MasterKeys) -> io::Result<SealedAppender> {
        let raw_key = random_key();
        let mut file_id = [0u8; 16];
        file_id.copy_from_slice(&random_key()[..16]);
        let mut header = [0u8; HEADER_LEN as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8] = VERSION;
        header[9] = CHUNK_LOG2;
        header[FILE_ID].copy_from_slice(&file_id);
        header[SLOT_A..SLOT_A + WRAPPED_LEN].copy_from_slice(&keys.wrap(&raw_key));
        file.write_all_at(&header, 0)?;
        Ok(SealedAppender {
            file,
            key: aead_key(&raw_key),
            file_id,
            full: 0,
            tail: Vec::with_capacity(CHUNK),
            pending: Vec::new(),
        })
    }

    /// Reopens a sealed file for appending after a restart, handing every plaintext byte to
    /// `seen` in order. The file is cut back after the last record that opens.
    pub fn resume(file: File, keys: &MasterKeys, mut seen: impl FnMut(&[u8])) -> io::Result<SealedAppender> {
        if file.metadata()?.len() < HEADER_LEN {
            // The header was never made durable (power lost right after the session began):
            // no byte of the upload was either, so it starts again, empty, with a fresh key.
            file.set_len(0)?;
            return SealedAppender::create(file, keys);
        }
        let header = read_header(&file, keys)?;
        let file_len = file.metadata()?.len();
        let mut appender = SealedAppender {
            file,
            key: header.key,
            file_id: header.file_id,
            full: 0,
            tail: Vec::with_capacity(CHUNK),
            pending: Vec::new(),
        };
        let mut record = vec![0u8; RECORD_LEN as usize];
        let mut at = HEADER_LEN;
        while at < file_len {
            let len = (file_len - at).min(RECORD_LEN) as usize;
            if len <= RECORD_OVERHEAD {
                break;
            }
            let buf = &mut record[..len];
            appender.file.read_exact_at(buf, at)?;
            let Ok(plain) = open_record(&appender.key, &appender.file_id, appender.full, buf) else {
                break;
            };
            seen(plain);
            if plain.len() == CHUNK {
                appender.full += 1;
                at += RECORD_LEN;
            } else {
                appender.tail.extend_from_slice(plain);
                at += len as u64;
                break;
            }
        }
        if at != file_len {
            tracing::warn!(
                kept = at,
                found = file_len,
                "a sealed upload's torn last record was cut off"
            );
            appender.file.set_len(at)?;
        }
        Ok(appender)
    }

    /// Plaintext bytes appended so far.
    pub fn len(&self) -> u64 {
        self.full * CHUNK as u64 + self.tail.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file being written (for writeback hints).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Appends plaintext; full records are written, the partial last one waits for
    /// [`SealedAppender::flush`].
    pub fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let write_from = record_offset(self.full);
        while !bytes.is_empty() {
            let take = (CHUNK - self.tail.len()).min(bytes.len());
            self.tail.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.tail.len() == CHUNK {
                let index = self.full + (self.pending.len() as u64 / RECORD_LEN);
                seal_record(&self.key, &self.file_id, index, &self.tail, &mut self.pending);
                self.tail.clear();
            }
        }
        if !self.pending.is_empty() {
            self.file.write_all_at(&self.pending, write_from)?;
            self.full += self.pending.len() as u64 / RECORD_LEN;
            self.pending.clear();
        }
        Ok(())
    }

    /// Writes the partial last record (sealed afresh), so the file holds every byte appended.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.tail.is_empty() {
            return Ok(());
        }
        seal_record(&self.key, &self.file_id, self.full, &self.tail, &mut self.pending);
        let result = self.file.write_all_at(&self.pending, record_offset(self.full));
        self.pending.clear();
        result
    }

    /// Flushes and fsyncs.
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_all()
    }
}

/// Opens record `index` (nonce, ciphertext, tag) in place; its plaintext, or `InvalidData`.
fn open_record<'a>(
    key: &LessSafeKey,
    file_id: &[u8; 16],
    index: u64,
    record: &'a mut [u8],
) -> io::Result<&'a mut [u8]> {
    if record.len() < RECORD_OVERHEAD {
        return Err(invalid(format!("sealed record {index} is cut short")));
    }
    let (nonce, body) = record.split_at_mut(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    key.open_in_place(Nonce::assume_unique_for_key(n), Aad::from(aad(file_id, index)), body)
        .map_err(|_| invalid(format!("sealed record {index} fails authentication")))
}

/// Seals `plain` as record `index` and appends it to `out`.
fn seal_record(key: &LessSafeKey, file_id: &[u8; 16], index: u64, plain: &[u8], out: &mut Vec<u8>) {
    let nonce = random_nonce();
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plain);
    match key.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(file_id, index)),
        &mut out[start..],
    ) {
        Ok(tag) => out.extend_from_slice(tag.as_ref()),
        Err(_) => unreachable!("a record is far below AES-GCM's length limit"),
    }
}

/// What [`rewrap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrap {
    /// Already wrapped by the active key.
    Current,
    /// Re-wrapped by the active key; the old slot was cleared.
    Rewrapped,
}

/// Re-wraps a sealed file's data key with the active master key, in place and without touching
/// its records: the new wrapping goes into the free slot and is synced before the old slot is
/// cleared and synced.
pub fn rewrap(file: &File, keys: &MasterKeys) -> io::Result<Rewrap> {
    let header = read_header(file, keys)?;
    if header.master == keys.active_id() {
        // A slot left over from an interrupted rewrap is cleared now.
        let other = if header.slot == SLOT_A { SLOT_B } else { SLOT_A };
        let mut bytes = [0u8; WRAPPED_LEN];
        file.read_exact_at(&mut bytes, other as u64)?;
        if bytes.iter().any(|b| *b != 0) {
            file.write_all_at(&[0u8; WRAPPED_LEN], other as u64)?;
            file.sync_data()?;
        }
        return Ok(Rewrap::Current);
    }
    let free = if header.slot == SLOT_A { SLOT_B } else { SLOT_A };
    file.write_all_at(&keys.wrap(&header.raw_key), free as u64)?;
    file.sync_data()?;
    file.write_all_at(&[0u8; WRAPPED_LEN], header.slot as u64)?;
    file.sync_data()?;
    Ok(Rewrap::Rewrapped)
}

/// The id of the master key that wraps a sealed file's data key.
pub fn wrapping_key(file: &File, keys: &MasterKeys) -> io::Result<KeyId> {
    Ok(read_header(file, keys)?.master)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    fn rw(path: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn lengths() {
        assert_eq!(plain_len(HEADER_LEN), Some(0));
        assert_eq!(plain_len(HEADER_LEN - 1), None);
        assert_eq!(plain_len(HEADER_LEN + RECORD_LEN), Some(CHUNK as u64));
        assert_eq!(plain_len(HEADER_LEN + RECORD_LEN + 29), Some(CHUNK as u64 + 1));
        assert_eq!(plain_len(HEADER_LEN + RECORD_LEN + 28), None);
        // Any length a file system reports is judged without overflowing.
        let _ = plain_len(u64::MAX);
    }

    #[test]
    fn appends_in_odd_pieces_read_back_at_any_range() {
        let dir = tempfile::tempdir().unwrap();
        let keys = MasterKeys::parse(A).unwrap();
        let data = content(3 * CHUNK + 1234);
        let path = dir.path().join("f");
        let mut w = SealedAppender::create(rw(&path), &keys).unwrap();
        for piece in data.chunks(40_000) {
            w.append(piece).unwrap();
            w.flush().unwrap(); // each request ends with its tail on disk
        }
        w.sync_all().unwrap();
        assert_eq!(w.len(), data.len() as u64);
        let r = SealedReader::open(File::open(&path).unwrap(), &keys).unwrap();
        assert_eq!(r.len(), data.len() as u64);
        for (offset, len) in [
            (0, data.len()),
            (1, 10),
            (CHUNK - 5, 10),
            (2 * CHUNK, CHUNK + 1234),
            (data.len() - 1, 1),
        ] {
            let mut out = vec![0u8; len];
            r.read_at(offset as u64, &mut out).unwrap();
            assert_eq!(out, data[offset..offset + len]);
        }
        for (offset, len) in [
            (0, data.len()),
            (5, 3),
            (CHUNK - 1, 2),
            (CHUNK, CHUNK),
            (CHUNK + 9, 2 * CHUNK),
        ] {
            let pieces = r.read_pieces(offset as u64, len as u64).unwrap();
            assert_eq!(pieces.concat(), data[offset..offset + len], "pieces at {offset}+{len}");
        }
        let mut beyond = [0u8; 2];
        assert!(r.read_at(data.len() as u64 - 1, &mut beyond).is_err());
        // No plaintext run of the content is in the file.
        let raw = std::fs::read(&path).unwrap();
        assert!(!raw.windows(32).any(|w| w == &data[1000..1032]));
    }

    #[test]
    fn a_flipped_bit_fails_only_its_record() {
        let dir = tempfile::tempdir().unwrap();
        let keys = MasterKeys::parse(A).unwrap();
        let data = content(2 * CHUNK);
        let path = dir.path().join("f");
        let mut w = SealedAppender::create(rw(&path), &keys).unwrap();
        w.append(&data).unwrap();
        w.sync_all().unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        raw[(HEADER_LEN + RECORD_LEN + 100) as usize] ^= 4;
        std::fs::write(&path, &raw).unwrap();
        let r = SealedReader::open(File::open(&path).unwrap(), &keys).unwrap();
        let mut first = vec![0u8; CHUNK];
        r.read_at(0, &mut first).unwrap();
        assert_eq!(first, data[..CHUNK]);
        let err = r.read_at(CHUNK as u64, &mut first).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn records_cannot_be_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let keys = MasterKeys::parse(A).unwrap();
        let path = dir.path().join("f");
        let mut w = SealedAppender::create(rw(&path), &keys).unwrap();
        w.append(&content(2 * CHUNK)).unwrap();
        w.sync_all().unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        let (h, r) = (HEADER_LEN as usize, RECORD_LEN as usize);
        let first: Vec<u8> = raw[h..h + r].to_vec();
        let second: Vec<u8> = raw[h + r..h + 2 * r].to_vec();
        raw[h..h + r].copy_from_slice(&second);
        raw[h + r..h + 2 * r].copy_from_slice(&first);
        std::fs::write(&path, &raw).unwrap();
        let reader = SealedReader::open(File::open(&path).unwrap(), &keys).unwrap();
        assert!(reader.read_at(0, &mut [0u8; 1]).is_err());
    }

    #[test]
    fn resume_cuts_a_torn_tail_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let keys = MasterKeys::parse(A).unwrap();
        let data = content(CHUNK + 5000);
        let path = dir.path().join("f");
        let mut w = SealedAppender::create(rw(&path), &keys).unwrap();
        w.append(&data).unwrap();
        w.sync_all().unwrap();
        drop(w);
        // Tear the partial last record, as a crash during its rewrite would.
        let len = std::fs::metadata(&path).unwrap().len();
        let f = rw(&path);
        f.write_all_at(&[0xff; 8], len - 8).unwrap();
        let mut seen = Vec::new();
        let mut w = SealedAppender::resume(rw(&path), &keys, |b| seen.extend_from_slice(b)).unwrap();
        assert_eq!(seen, data[..CHUNK]);
        assert_eq!(w.len(), CHUNK as u64);
        w.append(&data[CHUNK..]).unwrap();
        w.sync_all().unwrap();
        drop(w);
        let mut seen = Vec::new();
        let w = SealedAppender::resume(rw(&path), &keys, |b| seen.extend_from_slice(b)).unwrap();
        assert_eq!(seen, data);
        assert_eq!(w.len(), data.len() as u64);
    }

    #[test]
    fn a_header_lost_to_power_loss_starts_the_upload_again() {
        let dir = tempfile::tempdir().unwrap();
        let keys = MasterKeys::parse(A).unwrap();
        let path = dir.path().join("f");
        // Only part of the header reached the disk.
        std::fs::write(&path, &MAGIC[..5]).unwrap();
        let mut w = SealedAppender::resume(rw(&path), &keys, |_| panic!("no byte was durable")).unwrap();
        assert_eq!(w.len(), 0);
        w.append(b"again").unwrap();
        w.sync_all().unwrap();
        let r = SealedReader::open(File::open(&path).unwrap(), &keys).unwrap();
        let mut out = [0u8; 5];
        r.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"again");
    }

    #[test]
    fn rewrap_keeps_records_and_drops_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let old = MasterKeys::parse(A).unwrap();
        let rotated = MasterKeys::parse(&format!("{B}\n{A}")).unwrap();
        let only_new = MasterKeys::parse(B).unwrap();
        let data = content(CHUNK + 10);
        let path = dir.path().join("f");
        let mut w = SealedAppender::create(rw(&path), &old).unwrap();
        w.append(&data).unwrap();
        w.sync_all().unwrap();
        let before = std::fs::read(&path).unwrap();
        assert_eq!(rewrap(&rw(&path), &rotated).unwrap(), Rewrap::Rewrapped);
        assert_eq!(rewrap(&rw(&path), &rotated).unwrap(), Rewrap::Current);
        let after = std::fs::read(&path).unwrap();
        assert_eq!(
            before[HEADER_LEN as usize..],
            after[HEADER_LEN as usize..],
            "records untouched"
        );
        assert!(SealedReader::open(File::open(&path).unwrap(), &old).is_err());
        let r = SealedReader::open(File::open(&path).unwrap(), &only_new).unwrap();
        let mut out = vec![0u8; data.len()];
        r.read_at(0, &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(
            wrapping_key(&File::open(&path).unwrap(), &only_new).unwrap(),
            only_new.active_id()
        );
    }

    #[test]
    fn a_torn_slot_during_rewrap_leaves_the_other_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = MasterKeys::parse(A).unwrap();
        let rotated = MasterKeys::parse(&format!("{B}\n{A}")).unwrap();
        let path = dir.path().join("f");
        let mut w = SealedAppender::create(rw(&path), &old).unwrap();
        w.append(b"hello").unwrap();
        w.sync_all().unwrap();
        // Half of a new wrapping landed in slot B before a crash.
        let f = rw(&path);
        f.write_all_at(&rotated.wrap(&[9u8; 32])[..30], SLOT_B as u64).unwrap();
        let r = SealedReader::open(File::open(&path).unwrap(), &rotated).unwrap();
        let mut out = [0u8; 5];
        r.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        assert_eq!(rewrap(&f, &rotated).unwrap(), Rewrap::Rewrapped);
        let r = SealedReader::open(File::open(&path).unwrap(), &rotated).unwrap();
        r.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"hello");
    }
}
