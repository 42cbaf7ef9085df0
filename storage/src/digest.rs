//! Content digests (`sha256:<64 hex>` or `sha512:<128 hex>`), parsed strictly so nothing else
//! reaches a file path, and the incremental hasher that checks content against one.
//!
//! The distribution spec registers sha256 (the default every client uses) and sha512; content is
//! stored and deduplicated per digest, so the same bytes pushed under both are two blobs.

use std::fmt;

use sha2::{Digest as _, Sha256, Sha512};

/// A registered digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Algorithm {
    #[default]
    Sha256,
    Sha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

    /// The name in a digest string, which is also the blob store's directory for it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn of_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The algorithm whose hex encoding is `len` long (file names in the store carry only hex).
    pub fn of_hex_len(len: usize) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.hex_len() == len)
    }
}

/// A validated digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest must be algorithm:encoded")]
    Malformed,
    #[error("digest algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
}

impl Digest {
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let (algorithm, encoded) = text.split_once(':').ok_or(DigestError::Malformed)?;
        // The spec's grammar: algorithm-component ([a-z0-9]+) joined by [+._-], encoded [a-zA-Z0-9=_-]+.
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let encoded_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
        if !algorithm_ok || !encoded_ok {
            return Err(DigestError::Malformed);
        }
        let algorithm =
            Algorithm::of_name(algorithm).ok_or_else(|| DigestError::UnsupportedAlgorithm(algorithm.to_string()))?;
        Digest::from_hex(algorithm, encoded).ok_or(DigestError::Malformed)
    }

    /// A digest from its algorithm and lowercase hex, when the hex is well formed.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Option<Digest> {
        let ok =
            hex.len() == algorithm.hex_len() && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::of_with(Algorithm::Sha256, bytes)
    }

    /// The digest of `bytes` by `algorithm`.
    pub fn of_with(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut hasher = ContentHasher::new(algorithm);
        hasher.update(bytes);
        hasher.finish()
    }

    /// A hasher of this digest's algorithm, to check content against it.
    pub fn hasher(&self) -> ContentHasher {
        ContentHasher::new(self.algorithm)
    }

    /// Whether `bytes` are this digest's content.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        Digest::of_with(self.algorithm, bytes) == *self
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// Incremental hashing by one algorithm.
#[derive(Clone)]
pub enum ContentHasher {
    Sha256(Sha256),
    Sha512(Box<Sha512>),
}

impl ContentHasher {
    pub fn new(algorithm: Algorithm) -> ContentHasher {
        match algorithm {
            Algorithm::Sha256 => ContentHasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => ContentHasher::Sha512(Box::new(Sha512::new())),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ContentHasher::Sha256(h) => h.update(bytes),
            ContentHasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            ContentHasher::Sha256(_) => Algorithm::Sha256,
            ContentHasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            ContentHasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            ContentHasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()), Ok(d));
        assert_eq!(Digest::parse("sha256:abc"), Err(DigestError::Malformed));
        assert_eq!(Digest::parse("sha256"), Err(DigestError::Malformed));
        assert_eq!(
            Digest::parse(&format!("sha256:{}", "A".repeat(64))),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            Digest::parse(&format!("sha256:../{}", "a".repeat(61))),
            Err(DigestError::Malformed)
        );
        assert_eq!(
            Digest::parse(&format!("sha512:{}", "a".repeat(64))),
            Err(DigestError::Malformed)
        );
        assert!(matches!(
            Digest::parse(&format!("sha384:{}", "a".repeat(96))),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse(&format!("blake3:{}", "a".repeat(64))),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn sha512_is_a_digest_of_its_own() {
        // FIPS 180-2's sha512 of the empty string.
        let empty = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce\
                     47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
        let d = Digest::of_with(Algorithm::Sha512, b"");
        assert_eq!(d.to_string(), format!("sha512:{empty}"));
        assert_eq!(Digest::parse(&d.to_string()), Ok(d.clone()));
        assert!(d.matches(b""));
        assert!(!d.matches(b"x"));
        assert_ne!(d, Digest::of(b""));
        let mut h = d.hasher();
        h.update(b"");
        assert_eq!(h.finish(), d);
        assert_eq!(Algorithm::of_hex_len(128), Some(Algorithm::Sha512));
        assert_eq!(Algorithm::of_hex_len(64), Some(Algorithm::Sha256));
    }
}
