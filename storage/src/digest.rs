//! Content digests (`sha256:<64 hex>`), parsed strictly so nothing else reaches a file path.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// A validated sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
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
        match algorithm {
            "sha256" => {
                if encoded.len() != 64
                    || !encoded
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(DigestError::Malformed);
                }
                Ok(Digest {
                    hex: encoded.to_string(),
                })
            }
            "sha512" | "sha384" | "blake3" => Err(DigestError::UnsupportedAlgorithm(algorithm.to_string())),
            _ => Err(DigestError::Malformed),
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
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
        assert!(matches!(
            Digest::parse(&format!("sha512:{}", "a".repeat(128))),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }
}
