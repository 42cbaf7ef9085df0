//! Distinct random blobs of a given size, made cheaply enough that the client does not
//! become the bottleneck on a 2-core machine.
//!
//! One random buffer of `size - 16` bytes is generated once, and the SHA-256 state over
//! its whole 64-byte blocks is computed once. Each blob is that buffer followed by a
//! 16-byte tail (a per-run nonce and a sequence number): its digest costs one clone of
//! the hash state plus at most two blocks, and its body is shared slices of the buffer.
//! Every blob therefore has its own digest, so a content-addressed registry cannot
//! dedupe them, while the server still has to receive, hash and store every byte.

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::body::ReqBody;

const TAIL: usize = 16;

/// Why blobs of the asked size cannot be made.
#[derive(Debug, thiserror::Error)]
#[error("blob size {0} is below the {TAIL}-byte minimum")]
pub struct BlobSizeError(pub u64);

pub struct BlobSource {
    base: Bytes,
    /// Hash state over `base[..hashed]`, `hashed` a multiple of 64.
    prefix_state: Sha256,
    hashed: usize,
    nonce: u64,
}

/// One blob: its digest (`sha256:<hex>`) and the pieces of its body.
#[derive(Clone)]
pub struct Blob {
    pub digest: String,
    pub base: Bytes,
    pub tail: Bytes,
}

impl Blob {
    /// A blob holding exactly `data` (configs, small documents).
    pub fn from_bytes(data: Bytes) -> Blob {
        Blob {
            digest: digest_of(&data),
            base: data,
            tail: Bytes::new(),
        }
    }

    pub fn len(&self) -> u64 {
        (self.base.len() + self.tail.len()) as u64
    }

    pub fn body(&self) -> ReqBody {
        ReqBody::from_parts([self.base.clone(), self.tail.clone()])
    }

    /// The bytes in `[start, end)` of the blob, as a body (for chunked uploads).
    pub fn range(&self, start: u64, end: u64) -> ReqBody {
        let (start, end) = (start as usize, end as usize);
        let b = self.base.len();
        let mut body = ReqBody::empty();
        if start < b {
            body.push(self.base.slice(start..end.min(b)));
        }
        if end > b {
            body.push(self.tail.slice(start.max(b) - b..end - b));
        }
        body
    }
}

impl BlobSource {
    pub fn new(size: u64) -> Result<Self, BlobSizeError> {
        Self::from_rng(size, rand::thread_rng())
    }

    /// The same blobs for the same `seed` and size in every run (a script can push a blob in
    /// one run, find where a cluster placed it, and pull it in the next).
    pub fn seeded(size: u64, seed: u64) -> Result<Self, BlobSizeError> {
        Self::from_rng(size, rand::rngs::StdRng::seed_from_u64(seed))
    }

    fn from_rng(size: u64, mut rng: impl RngCore) -> Result<Self, BlobSizeError> {
        if size < TAIL as u64 {
            return Err(BlobSizeError(size));
        }
        let mut buf = vec![0u8; size as usize - TAIL];
        rng.fill_bytes(&mut buf);
        let hashed = buf.len() / 64 * 64;
        let mut prefix_state = Sha256::new();
        prefix_state.update(&buf[..hashed]);
        Ok(Self {
            base: Bytes::from(buf),
            prefix_state,
            hashed,
            nonce: rng.next_u64(),
        })
    }

    /// The `seq`-th distinct blob of this source.
    pub fn blob(&self, seq: u64) -> Blob {
        let mut tail = [0u8; TAIL];
        tail[..8].copy_from_slice(&self.nonce.to_be_bytes());
        tail[8..].copy_from_slice(&seq.to_be_bytes());
        let mut h = self.prefix_state.clone();
        h.update(&self.base[self.hashed..]);
        h.update(tail);
        Blob {
            digest: format!("sha256:{}", hex::encode(h.finalize())),
            base: self.base.clone(),
            tail: Bytes::copy_from_slice(&tail),
        }
    }
}

/// `sha256:<hex>` of a byte string.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn bytes_of(body: ReqBody) -> Vec<u8> {
        match body.collect().await {
            Ok(c) => c.to_bytes().to_vec(),
            Err(e) => match e {},
        }
    }

    #[tokio::test]
    async fn digest_matches_body_and_blobs_differ() {
        for size in [16u64, 17, 64, 80, 1000, 4096] {
            let src = BlobSource::new(size).expect("size is valid");
            let a = src.blob(1);
            let b = src.blob(2);
            assert_ne!(a.digest, b.digest);
            let data = bytes_of(a.body()).await;
            assert_eq!(data.len() as u64, size);
            assert_eq!(digest_of(&data), a.digest);
            // Ranges put back together give the same bytes.
            let mut joined = Vec::new();
            let step = 7;
            let mut off = 0;
            while off < size {
                let end = (off + step).min(size);
                joined.extend(bytes_of(a.range(off, end)).await);
                off = end;
            }
            assert_eq!(joined, data);
        }
        assert!(BlobSource::new(3).is_err());
    }
}
