//! The cluster master keys and what they protect directly: data keys and catalog secrets.
//!
//! Master keys never enter the catalog: they come from a key file (or the environment) that
//! every node is given. The file lists one key per line as 64 hex digits; the first line is the
//! *active* key, which wraps every new data key and secret, and the lines after it are retired
//! keys still accepted for unwrapping until the rotation job has re-wrapped everything they
//! protect (see [`crate::at_rest::rotation`]). A key is named by its *id*, the first 8 bytes of
//! a SHA-256 over it, which is stored next to everything it wraps so the right key is tried
//! first and a missing one is reported by name.
//!
//! Both wrappings are AES-256-GCM with a random 96-bit nonce and a fixed purpose string as
//! associated data, so a wrapped data key can never be passed off as a secret or the reverse.

use std::path::Path;

use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest as _, Sha256};

/// Bytes of a master or data key (AES-256).
pub const KEY_LEN: usize = 32;
/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 8;
/// Bytes of an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// A wrapped data key: master key id, nonce, encrypted key, tag.
pub const WRAPPED_LEN: usize = KEY_ID_LEN + NONCE_LEN + KEY_LEN + TAG_LEN;

/// Marks a sealed catalog secret. A PKCS#8 document (what secrets are today) starts with a DER
/// SEQUENCE (0x30), so a sealed secret and a plain one can never be confused.
const SECRET_MAGIC: &[u8; 6] = b"KSEAL1";
/// What the key-id hash is bound to, so an id reveals nothing reusable about the key.
const KEY_ID_CONTEXT: &[u8] = b"keelson master key id\0";
const DATA_KEY_AAD: &[u8] = b"keelson data key";
const SECRET_AAD: &[u8] = b"keelson catalog secret";

/// The id naming a master key.
pub type KeyId = [u8; KEY_ID_LEN];

/// Why a key ring could not be loaded, or something it protects could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("master key on line {line}: {why}")]
    Malformed { line: usize, why: &'static str },
    #[error("no master key given (the key file names none)")]
    Empty,
    #[error("the same master key is listed twice (id {0})")]
    Duplicate(String),
    #[error("sealed with master key {0}, which is not in the key file")]
    UnknownKey(String),
    #[error("a wrapped key or sealed secret failed authentication (damaged or forged)")]
    Damaged,
}

struct MasterKey {
    id: KeyId,
    key: LessSafeKey,
}

/// The master keys a node was given: the active one first, retired ones after it.
pub struct MasterKeys {
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| hex::encode(k.id)).collect();
        f.debug_struct("MasterKeys").field("ids", &ids).finish()
    }
}

/// The id of a raw master key.
fn key_id(raw: &[u8; KEY_LEN]) -> KeyId {
    let mut hasher = Sha256::new();
    hasher.update(KEY_ID_CONTEXT);
    hasher.update(raw);
    let digest = hasher.finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

/// An AES-256-GCM key from raw bytes (the length is fixed, so this cannot fail).
pub(crate) fn aead_key(raw: &[u8; KEY_LEN]) -> LessSafeKey {
    match UnboundKey::new(&AES_256_GCM, raw) {
        Ok(key) => LessSafeKey::new(key),
        Err(_) => unreachable!("AES-256-GCM takes any 32-byte key"),
    }
}

/// A fresh random nonce. `ThreadRng` is a CSPRNG seeded from the OS; a nonce only has to be
/// unique under its key, and 96 random bits are (each key seals far fewer than 2^32 records).
pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut nonce);
    nonce
}

/// A fresh random data key from the operating system's generator.
pub(crate) fn random_key() -> [u8; KEY_LEN] {
    use ring::rand::SecureRandom;
    let mut key = [0u8; KEY_LEN];
    if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
        // The OS generator does not fail on Linux once booted; fall back to the CSPRNG anyway.
        rand::thread_rng().fill_bytes(&mut key);
    }
    key
}

impl MasterKeys {
    /// Parses a key file's text: one key per line as 64 hex digits, `#` comments and blank lines
    /// ignored, the active key first.
    pub fn parse(text: &str) -> Result<MasterKeys, KeyError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut raw = [0u8; KEY_LEN];
            hex::decode_to_slice(line, &mut raw).map_err(|_| KeyError::Malformed {
                line: n + 1,
                why: "expected 64 hex digits (32 random bytes, e.g. from `openssl rand -hex 32`)",
            })?;
            if raw.iter().all(|b| *b == 0) {
                return Err(KeyError::Malformed {
                    line: n + 1,
                    why: "a key of all zeros is not a key",
                });
            }
            let id = key_id(&raw);
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyError::Duplicate(hex::encode(id)));
            }
            keys.push(MasterKey {
                id,
                key: aead_key(&raw),
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(MasterKeys { keys })
    }

    /// Reads and parses a key file.
    pub fn load(path: &Path) -> Result<MasterKeys, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        MasterKeys::parse(&text)
    }

    /// The id of the key that wraps everything new.
    pub fn active_id(&self) -> KeyId {
        self.keys[0].id
    }

    /// Every key id, the active one first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }

    fn find(&self, id: &[u8]) -> Result<&MasterKey, KeyError> {
        self.keys
            .iter()
            .find(|k| k.id[..] == *id)
            .ok_or_else(|| KeyError::UnknownKey(hex::encode(id)))
    }

    /// Wraps a data key with the active master key.
    pub fn wrap(&self, data_key: &[u8; KEY_LEN]) -> [u8; WRAPPED_LEN] {
        let master = &self.keys[0];
        let nonce = random_nonce();
        let mut out = [0u8; WRAPPED_LEN];
        out[..KEY_ID_LEN].copy_from_slice(&master.id);
        out[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN].copy_from_slice(&nonce);
        let body = &mut out[KEY_ID_LEN + NONCE_LEN..];
        let (key_part, tag_part) = body.split_at_mut(KEY_LEN);
        key_part.copy_from_slice(data_key);
        match master.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(DATA_KEY_AAD),
            key_part,
        ) {
            Ok(tag) => tag_part.copy_from_slice(tag.as_ref()),
            Err(_) => unreachable!("sealing 32 bytes cannot exceed AES-GCM's length limit"),
        }
        out
    }

    /// Unwraps a data key; also returns the id of the master key that wrapped it.
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<([u8; KEY_LEN], KeyId), KeyError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(KeyError::Damaged);
        }
        let master = self.find(&wrapped[..KEY_ID_LEN])?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN]);
        let mut body = [0u8; KEY_LEN + TAG_LEN];
        body.copy_from_slice(&wrapped[KEY_ID_LEN + NONCE_LEN..]);
        let plain = master
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(DATA_KEY_AAD), &mut body)
            .map_err(|_| KeyError::Damaged)?;
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(plain);
        Ok((key, master.id))
    }

    /// Seals a catalog secret with the active master key.
    pub fn seal_secret(&self, plain: &[u8]) -> Vec<u8> {
        let master = &self.keys[0];
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(SECRET_MAGIC.len() + KEY_ID_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(SECRET_MAGIC);
        out.extend_from_slice(&master.id);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        match master.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(SECRET_AAD),
            &mut out[start..],
        ) {
            Ok(tag) => out.extend_from_slice(tag.as_ref()),
            Err(_) => unreachable!("catalog secrets are far below AES-GCM's length limit"),
        }
        out
    }

    /// Opens a sealed catalog secret; a plain one (from before encryption was turned on) is
    /// returned as it is.
    pub fn open_secret(&self, stored: &[u8]) -> Result<Vec<u8>, KeyError> {
        let Some(rest) = stored.strip_prefix(SECRET_MAGIC) else {
            return Ok(stored.to_vec());
        };
        if rest.len() < KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return Err(KeyError::Damaged);
        }
        let master = self.find(&rest[..KEY_ID_LEN])?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&rest[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN]);
        let mut body = rest[KEY_ID_LEN + NONCE_LEN..].to_vec();
        let plain = master
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(SECRET_AAD), &mut body)
            .map_err(|_| KeyError::Damaged)?;
        Ok(plain.to_vec())
    }

    /// Whether a stored secret should be sealed again: it is plain, or sealed under a key that
    /// is no longer the active one.
    pub fn secret_needs_sealing(&self, stored: &[u8]) -> bool {
        match stored.strip_prefix(SECRET_MAGIC) {
            Some(rest) => rest.get(..KEY_ID_LEN).is_none_or(|id| *id != self.active_id()[..]),
            None => true,
        }
    }
}

/// Opens a stored catalog secret with `keys` when given; without keys a plain secret is
/// returned as it is and a sealed one is an error.
pub fn open_secret(keys: Option<&MasterKeys>, stored: &[u8]) -> Result<Vec<u8>, KeyError> {
    match keys {
        Some(keys) => keys.open_secret(stored),
        None if stored.starts_with(SECRET_MAGIC) => Err(KeyError::UnknownKey(
            stored
                .get(SECRET_MAGIC.len()..SECRET_MAGIC.len() + KEY_ID_LEN)
                .map(hex::encode)
                .unwrap_or_default(),
        )),
        None => Ok(stored.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn key_file_parsing() {
        let keys = MasterKeys::parse(&format!("# active\n{B}\n\n{A}\n")).unwrap();
        assert_eq!(keys.ids().len(), 2);
        assert!(matches!(MasterKeys::parse(""), Err(KeyError::Empty)));
        assert!(matches!(
            MasterKeys::parse("abc"),
            Err(KeyError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            MasterKeys::parse(&"0".repeat(64)),
            Err(KeyError::Malformed { .. })
        ));
        assert!(matches!(
            MasterKeys::parse(&format!("{A}\n{A}")),
            Err(KeyError::Duplicate(_))
        ));
    }

    #[test]
    fn wrapping_survives_rotation_and_detects_damage() {
        let old = MasterKeys::parse(A).unwrap();
        let rotated = MasterKeys::parse(&format!("{B}\n{A}")).unwrap();
        let only_new = MasterKeys::parse(B).unwrap();
        let data_key = random_key();
        let wrapped = old.wrap(&data_key);
        assert_eq!(rotated.unwrap(&wrapped).unwrap(), (data_key, old.active_id()));
        assert!(matches!(only_new.unwrap(&wrapped), Err(KeyError::UnknownKey(_))));
        let mut damaged = wrapped;
        damaged[KEY_ID_LEN + NONCE_LEN + 3] ^= 1;
        assert!(matches!(rotated.unwrap(&damaged), Err(KeyError::Damaged)));
        // Two wraps of one key differ (fresh nonce each time).
        assert_ne!(old.wrap(&data_key), wrapped);
    }

    #[test]
    fn secrets_round_trip_and_plain_ones_pass() {
        let keys = MasterKeys::parse(A).unwrap();
        let secret = b"\x30\x53 a pkcs8 private key".to_vec();
        let sealed = keys.seal_secret(&secret);
        assert!(!sealed.windows(secret.len()).any(|w| w == secret));
        assert_eq!(keys.open_secret(&sealed).unwrap(), secret);
        assert!(!keys.secret_needs_sealing(&sealed));
        assert!(keys.secret_needs_sealing(&secret));
        assert_eq!(keys.open_secret(&secret).unwrap(), secret);
        assert!(open_secret(None, &sealed).is_err());
        let rotated = MasterKeys::parse(&format!("{B}\n{A}")).unwrap();
        assert!(rotated.secret_needs_sealing(&sealed));
        assert_eq!(rotated.open_secret(&sealed).unwrap(), secret);
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x80;
        assert!(matches!(keys.open_secret(&damaged), Err(KeyError::Damaged)));
    }
}
