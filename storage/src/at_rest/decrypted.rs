//! Decrypted windows of sealed blobs, kept in memory: the sealed store's page cache.
//!
//! A plain blob that many clients pull (a base image's layer) is served from the kernel's page
//! cache, memory-mapped, untouched. Its sealed copy is in the page cache too, but as ciphertext:
//! every pull decrypts every byte again, on the core that also drives the socket, which made a
//! sealed pull a third slower than a plain one on two cores. This cache keeps the plaintext of
//! aligned 1 MiB windows of the sealed blobs read most, bounded by bytes, so a hot blob is
//! served from memory as cheaply as a plain one and decrypted once.
//!
//! Plaintext in the process's memory is not "at rest": it is what every request being served
//! holds anyway, it never reaches a disk (the process should run without swap, as any process
//! holding keys should), and it dies with the process. A window enters only after every record
//! in it passed its authentication tag, so the cache never serves bytes the disk did not prove;
//! blobs are immutable and content-addressed, so a window never goes stale, and the store still
//! finds a blob's file before it looks here, so a deleted blob is never served. Deletion and
//! quarantine evict a blob's windows to return their memory early.
//!
//! Admission and eviction are `quick_cache`'s (CLOCK-Pro with ghost entries): a blob read once
//! (a scan, a replica sent to a peer) does not push out the blobs read again and again.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::digest::Digest;

/// Bytes of plaintext per window (a window is the unit cached, aligned to multiples of it).
pub const WINDOW: u64 = 1 << 20;

/// A window's plaintext, as the pieces its records were decrypted into (slices of one buffer).
type Window = std::sync::Arc<[Bytes]>;

#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<(Digest, u64), Window> for ByBytes {
    fn weight(&self, _key: &(Digest, u64), window: &Window) -> u64 {
        window.iter().map(|piece| piece.len() as u64).sum::<u64>().max(1)
    }
}

/// The cache, with its hit and miss counts for the node's status and metrics.
pub struct DecryptedWindows {
    windows: quick_cache::sync::Cache<(Digest, u64), Window, ByBytes>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl DecryptedWindows {
    /// A cache of at most `max_bytes` of plaintext.
    pub fn new(max_bytes: u64) -> DecryptedWindows {
        // quick_cache sizes its tables for this many entries up front: a budget given by an
        // operator must not become a huge allocation before anything is cached.
        let windows = (max_bytes / WINDOW).clamp(1, 1 << 16) as usize;
        DecryptedWindows {
            windows: quick_cache::sync::Cache::with_weighter(windows, max_bytes, ByBytes),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Window `index` of `digest`, when cached.
    pub fn window(&self, digest: &Digest, index: u64) -> Option<Window> {
        let found = self.windows.get(&(digest.clone(), index));
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps window `index` of `digest`: `pieces` must be the whole window's plaintext (up to
    /// the blob's end for its last window), every record of it authenticated.
    pub fn keep(&self, digest: &Digest, index: u64, pieces: Vec<Bytes>) {
        self.windows.insert((digest.clone(), index), pieces.into());
    }

    /// `len` bytes at `offset` of `digest` (a blob of `blob_len` bytes) as pieces, when every
    /// window they fall in is cached; `None` as soon as one is missing.
    pub fn range(&self, digest: &Digest, blob_len: u64, offset: u64, len: u64) -> Option<Vec<Bytes>> {
        let end = offset.checked_add(len).filter(|end| *end <= blob_len)?;
        let mut pieces = Vec::new();
        let mut at = offset;
        while at < end {
            let index = at / WINDOW;
            let window = self.window(digest, index)?;
            let window_end = ((index + 1) * WINDOW).min(blob_len);
            pieces.extend(slice_window(&window, index * WINDOW, at, end.min(window_end))?);
            at = window_end;
        }
        Some(pieces)
    }

    /// Forgets every window of `digest` (deleted or quarantined).
    pub fn evict(&self, digest: &Digest) {
        self.windows.retain(|(cached, _), _| cached != digest);
    }

    /// Hits, misses and cached bytes, for the node's status.
    pub fn counters(&self) -> [(&'static str, u64); 3] {
        [
            ("decrypted_cache.hits", self.hits.load(Ordering::Relaxed)),
            ("decrypted_cache.misses", self.misses.load(Ordering::Relaxed)),
            ("decrypted_cache.bytes", self.windows.weight()),
        ]
    }
}

/// The bytes `from..to` (blob offsets) of a window starting at `start`, as slices of its
/// pieces; `None` if the window is shorter than `to` needs.
fn slice_window(window: &[Bytes], start: u64, from: u64, to: u64) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut piece_start = start;
    for piece in window {
        let piece_end = piece_start + piece.len() as u64;
        if piece_end > from && piece_start < to {
            let a = (from.max(piece_start) - piece_start) as usize;
            let b = (to.min(piece_end) - piece_start) as usize;
            out.push(piece.slice(a..b));
        }
        piece_start = piece_end;
    }
    (piece_start >= to).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    /// A window of `len` bytes whose byte at blob offset `o` is `o % 251`, cut in 64 KiB pieces.
    fn window(index: u64, len: u64) -> Vec<Bytes> {
        let bytes: Vec<u8> = (index * WINDOW..index * WINDOW + len)
            .map(|o| (o % 251) as u8)
            .collect();
        bytes.chunks(64 << 10).map(Bytes::copy_from_slice).collect()
    }

    fn flat(pieces: &[Bytes]) -> Vec<u8> {
        pieces.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn ranges_across_windows_come_back_byte_exact_only_when_every_window_is_cached() {
        let cache = DecryptedWindows::new(8 * WINDOW);
        let d = digest(1);
        let blob_len = 2 * WINDOW + 1000;
        cache.keep(&d, 0, window(0, WINDOW));
        cache.keep(&d, 2, window(2, 1000));
        // Window 1 is missing: a range through it is not served from memory.
        assert!(cache.range(&d, blob_len, WINDOW - 10, 20).is_none());
        cache.keep(&d, 1, window(1, WINDOW));
        for (offset, len) in [
            (0, blob_len),
            (WINDOW - 10, 20),
            (70_000, 1),
            (2 * WINDOW + 999, 1),
            (5, 0),
        ] {
            let got = flat(&cache.range(&d, blob_len, offset, len).unwrap());
            let want: Vec<u8> = (offset..offset + len).map(|o| (o % 251) as u8).collect();
            assert_eq!(got, want, "range {offset}+{len}");
        }
        // Past the end, or overflowing: refused, not truncated.
        assert!(cache.range(&d, blob_len, 2 * WINDOW + 999, 2).is_none());
        assert!(cache.range(&d, blob_len, u64::MAX, 2).is_none());
        // Another blob's windows are not this one's.
        assert!(cache.range(&digest(2), blob_len, 0, 1).is_none());
        let [hits, misses, bytes] = cache.counters();
        assert!(hits.1 > 0 && misses.1 > 0);
        assert_eq!(bytes.1, blob_len);
        cache.evict(&d);
        assert!(cache.range(&d, blob_len, 0, 1).is_none());
        assert_eq!(cache.counters()[2].1, 0);
    }

    #[test]
    fn a_window_shorter_than_its_place_says_is_not_served() {
        let cache = DecryptedWindows::new(8 * WINDOW);
        let d = digest(3);
        cache.keep(&d, 0, window(0, 100));
        assert!(cache.range(&d, WINDOW, 0, 200).is_none());
    }

    #[test]
    fn memory_stays_within_the_budget() {
        let cache = DecryptedWindows::new(4 * WINDOW);
        for n in 0..20 {
            cache.keep(&digest(n), 0, window(0, WINDOW));
        }
        assert!(cache.counters()[2].1 <= 4 * WINDOW);
    }
}
