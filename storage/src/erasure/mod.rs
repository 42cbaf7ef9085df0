//! Reed-Solomon erasure coding of large blobs (`rs = k+m`).
//!
//! A blob is cut into stripes of `k × chunk` bytes (the last one zero-padded); each stripe is
//! encoded into `k` data chunks and `m` parity chunks with `reed-solomon-simd`. Shard `i` of a
//! blob is the file of chunk `i` of every stripe, each chunk *sealed* with its SHA-256, so a
//! reader detects a damaged chunk and uses another shard for that stripe instead. Any `k` of the
//! `k + m` shards rebuild the blob; a byte range needs only the stripes it covers.

pub mod read;
pub mod write;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Bytes of one chunk (one shard's part of one stripe).
pub const CHUNK: usize = 256 << 10;
/// Bytes of the checksum sealed after every chunk.
pub const SUM: usize = 32;
/// Most shards a scheme may have (data + parity).
pub const MAX_SHARDS: usize = 64;
/// The largest chunk a peer may name (16 MiB; Keelson writes [`CHUNK`]).
pub const MAX_CHUNK: usize = 16 << 20;
/// The largest coded blob a peer may name (1 PiB).
pub const MAX_CODED_SIZE: u64 = 1 << 50;

/// A coding scheme: `k` data shards, `m` parity shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub k: usize,
    pub m: usize,
}

/// Why a scheme or a stripe could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    #[error("erasure scheme must look like 4+2 (k data + m parity shards, k, m >= 1, k + m <= 64): {0}")]
    Scheme(String),
    #[error("fewer than k intact shards for stripe {0}")]
    TooFewShards(u64),
    #[error("a shard chunk failed its checksum")]
    Corrupt,
    #[error("reed-solomon: {0}")]
    Codec(String),
    #[error("a peer named an impossible layout: {0}")]
    Layout(String),
}

impl FromStr for Scheme {
    type Err = ErasureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ErasureError::Scheme(s.to_string());
        let (k, m) = s.trim().split_once('+').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let m: usize = m.trim().parse().map_err(|_| bad())?;
        if k == 0 || m == 0 || k + m > MAX_SHARDS {
            return Err(bad());
        }
        Ok(Scheme { k, m })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

/// The stripe arithmetic of one coded blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub k: usize,
    pub m: usize,
    pub chunk: usize,
    pub size: u64,
}

impl Geometry {
    pub fn new(k: usize, m: usize, chunk: usize, size: u64) -> Geometry {
        Geometry { k, m, chunk, size }
    }

    /// A geometry a peer named, checked before any arithmetic uses it: `k, m >= 1`,
    /// `k + m <= MAX_SHARDS`, a chunk of 64..=`MAX_CHUNK` bytes in steps of 64 (what the codec
    /// takes) and a size up to `MAX_CODED_SIZE`.
    pub fn from_peer(k: u32, m: u32, chunk: u32, size: u64) -> Result<Geometry, ErasureError> {
        let (k, m, chunk) = (k as usize, m as usize, chunk as usize);
        let bad = |why: &str| {
            Err(ErasureError::Layout(format!(
                "k={k} m={m} chunk={chunk} size={size}: {why}"
            )))
        };
        if k == 0 || m == 0 || k + m > MAX_SHARDS {
            return bad("k and m must be at least 1 and k + m at most 64");
        }
        if chunk == 0 || chunk > MAX_CHUNK || chunk % 64 != 0 {
            return bad("the chunk must be a multiple of 64 bytes up to 16 MiB");
        }
        if size > MAX_CODED_SIZE {
            return bad("the blob is larger than a coded blob can be");
        }
        Ok(Geometry { k, m, chunk, size })
    }

    /// Blob bytes per stripe.
    pub fn stripe_bytes(&self) -> u64 {
        (self.k * self.chunk) as u64
    }

    /// Stripes in the blob.
    pub fn stripes(&self) -> u64 {
        self.size.div_ceil(self.stripe_bytes()).max(1)
    }

    /// Bytes of one sealed chunk in a shard file.
    pub fn record_bytes(&self) -> u64 {
        (self.chunk + SUM) as u64
    }

    /// Bytes of one shard file.
    pub fn shard_bytes(&self) -> u64 {
        self.stripes() * self.record_bytes()
    }

    /// The first and last stripe holding bytes `start .. start + len` (`len > 0`).
    pub fn stripes_for(&self, start: u64, len: u64) -> (u64, u64) {
        let sb = self.stripe_bytes();
        (start / sb, (start + len - 1) / sb)
    }
}

/// Checks a shard index and chunk size a peer named for a shard read or write.
pub fn check_shard(index: u32, chunk: Option<u32>) -> Result<(usize, Option<usize>), ErasureError> {
    if index as usize >= MAX_SHARDS {
        return Err(ErasureError::Layout(format!(
            "shard index {index} is not below {MAX_SHARDS}"
        )));
    }
    let chunk = match chunk {
        None => None,
        Some(c) if c > 0 && c as usize <= MAX_CHUNK => Some(c as usize),
        Some(c) => return Err(ErasureError::Layout(format!("chunk of {c} bytes"))),
    };
    Ok((index as usize, chunk))
}

/// A chunk followed by its SHA-256.
pub fn seal(chunk: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + SUM);
    out.extend_from_slice(chunk);
    out.extend_from_slice(&Sha256::digest(chunk));
    out
}

/// The chunk of a sealed record, when its checksum holds.
pub fn unseal(record: &[u8]) -> Result<&[u8], ErasureError> {
    if record.len() < SUM {
        return Err(ErasureError::Corrupt);
    }
    let (chunk, sum) = record.split_at(record.len() - SUM);
    if Sha256::digest(chunk).as_slice() == sum {
        Ok(chunk)
    } else {
        Err(ErasureError::Corrupt)
    }
}

/// Encodes one stripe (`data` at most `k × chunk` bytes, zero-padded) into its `k + m` chunks.
pub fn encode_stripe(k: usize, m: usize, chunk: usize, data: &[u8]) -> Result<Vec<Vec<u8>>, ErasureError> {
    let mut originals: Vec<Vec<u8>> = (0..k)
        .map(|i| {
            let from = (i * chunk).min(data.len());
            let to = ((i + 1) * chunk).min(data.len());
            let mut c = data[from..to].to_vec();
            c.resize(chunk, 0);
            c
        })
        .collect();
    let recovery = reed_solomon_simd::encode(k, m, originals.iter()).map_err(|e| ErasureError::Codec(e.to_string()))?;
    originals.extend(recovery);
    Ok(originals)
}

/// Rebuilds the `k` data chunks of a stripe from any `k` of its chunks (`chunks[i]` is shard
/// `i`'s chunk, when it was read intact).
pub fn decode_stripe(
    k: usize,
    m: usize,
    stripe: u64,
    chunks: &[Option<Vec<u8>>],
) -> Result<Vec<Vec<u8>>, ErasureError> {
    if chunks.iter().take(k).all(Option::is_some) {
        return Ok(chunks.iter().take(k).flatten().cloned().collect());
    }
    if chunks.iter().flatten().count() < k {
        return Err(ErasureError::TooFewShards(stripe));
    }
    let originals = chunks
        .iter()
        .take(k)
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)));
    let recovery = chunks
        .iter()
        .skip(k)
        .enumerate()
        .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)));
    let mut restored =
        reed_solomon_simd::decode(k, m, originals, recovery).map_err(|e| ErasureError::Codec(e.to_string()))?;
    (0..k)
        .map(|i| match &chunks[i] {
            Some(c) => Ok(c.clone()),
            None => restored.remove(&i).ok_or(ErasureError::TooFewShards(stripe)),
        })
        .collect()
}

/// Rebuilds every chunk (data and parity) of a stripe from any `k` of them.
pub fn rebuild_stripe(
    k: usize,
    m: usize,
    chunk: usize,
    stripe: u64,
    chunks: &[Option<Vec<u8>>],
) -> Result<Vec<Vec<u8>>, ErasureError> {
    let data = decode_stripe(k, m, stripe, chunks)?.concat();
    encode_stripe(k, m, chunk, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_from_peers_are_checked_before_use() {
        // Each of these would divide by zero, overflow or allocate without bound.
        assert!(Geometry::from_peer(0, 2, CHUNK as u32, 10).is_err());
        assert!(Geometry::from_peer(4, 0, CHUNK as u32, 10).is_err());
        assert!(Geometry::from_peer(60, 5, CHUNK as u32, 10).is_err());
        assert!(Geometry::from_peer(4, 2, 0, 10).is_err());
        assert!(Geometry::from_peer(4, 2, 100, 10).is_err());
        assert!(Geometry::from_peer(4, 2, !63u32, 10).is_err());
        assert!(Geometry::from_peer(4, 2, CHUNK as u32, u64::MAX).is_err());
        let g = Geometry::from_peer(4, 2, CHUNK as u32, 5 << 20).unwrap();
        assert_eq!(g.stripes(), 5);
        assert!(check_shard(64, None).is_err());
        assert!(check_shard(3, Some(0)).is_err());
        assert!(check_shard(3, Some(u32::MAX)).is_err());
        assert_eq!(check_shard(3, Some(CHUNK as u32)).unwrap(), (3, Some(CHUNK)));
    }

    #[test]
    fn schemes_parse() {
        assert_eq!("4+2".parse(), Ok(Scheme { k: 4, m: 2 }));
        assert!("4".parse::<Scheme>().is_err());
        assert!("0+2".parse::<Scheme>().is_err());
        assert_eq!(Scheme { k: 6, m: 3 }.to_string(), "6+3");
    }

    #[test]
    fn any_k_chunks_rebuild_a_stripe() {
        let (k, m, chunk) = (4, 2, 64);
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
        let all = encode_stripe(k, m, chunk, &data).unwrap();
        assert_eq!(all.len(), 6);
        for lost in [[0, 1], [2, 5], [4, 5], [0, 3]] {
            let chunks: Vec<Option<Vec<u8>>> = (0..6).map(|i| (!lost.contains(&i)).then(|| all[i].clone())).collect();
            let back = decode_stripe(k, m, 0, &chunks).unwrap().concat();
            assert_eq!(&back[..200], &data[..]);
            assert!(back[200..].iter().all(|b| *b == 0));
            assert_eq!(rebuild_stripe(k, m, chunk, 0, &chunks).unwrap(), all);
        }
        let three: Vec<Option<Vec<u8>>> = (0..6).map(|i| (i < 3).then(|| all[i].clone())).collect();
        assert_eq!(decode_stripe(k, m, 7, &three), Err(ErasureError::TooFewShards(7)));
    }

    #[test]
    fn seals_detect_damage_and_geometry_counts_stripes() {
        let mut r = seal(b"hello");
        assert_eq!(unseal(&r), Ok(&b"hello"[..]));
        r[1] ^= 1;
        assert_eq!(unseal(&r), Err(ErasureError::Corrupt));
        let g = Geometry::new(4, 2, CHUNK, 3 * (1 << 20) + 1);
        assert_eq!(g.stripes(), 4);
        assert_eq!(g.shard_bytes(), 4 * (CHUNK + SUM) as u64);
        assert_eq!(g.stripes_for(0, 1), (0, 0));
        assert_eq!(g.stripes_for((1 << 20) - 1, 2), (0, 1));
    }
}
