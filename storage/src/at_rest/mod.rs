//! Encryption at rest: every byte a node keeps of a blob — whole copies, erasure-coded shards,
//! upload sessions — is stored in the sealed format ([`sealed`]) when the node is given master
//! keys, and the catalog's secrets (token-signing keys) are sealed before they are proposed, so
//! neither the Raft log nor a snapshot holds them in the clear ([`keys`]).
//!
//! A file's format shows in its name (`.sealed`), never only in its content: a client can push
//! any bytes, including a plain blob that starts like a sealed header, and the store must never
//! mistake one for the other. Both formats are read side by side, so turning encryption on
//! for an existing cluster needs no downtime: new files are sealed and the conversion job
//! (`jobs::at_rest`) seals the old ones in the background, throttled.
//!
//! The key ring reloads its file when it changes, so a rotation is: put a new key on the first
//! line and keep the old one below it on every node; the job re-wraps every data key (headers
//! only, bodies untouched) and the leader re-seals the catalog secrets; once the node status
//! shows no file left on a retired key, the old line can go.

pub mod decrypted;
pub mod keys;
pub mod sealed;
pub mod stored;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

pub use keys::{KeyError, KeyId, MasterKeys};
pub use stored::{Format, StoredReader, StoredWriter};

/// The master keys a node holds, reloaded from their file when it changes.
pub struct KeyRing {
    path: Option<PathBuf>,
    current: RwLock<Arc<MasterKeys>>,
    stamp: Mutex<Option<(SystemTime, u64)>>,
    /// Counts reloads that changed the keys.
    generation: AtomicU64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("path", &self.path)
            .field("keys", &*self.current())
            .finish()
    }
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl KeyRing {
    /// Keys from a key file, reloaded by [`KeyRing::reload_if_changed`].
    pub fn from_file(path: &Path) -> Result<KeyRing, KeyError> {
        let stamp = stamp_of(path);
        let keys = MasterKeys::load(path)?;
        Ok(KeyRing {
            path: Some(path.to_path_buf()),
            current: RwLock::new(Arc::new(keys)),
            stamp: Mutex::new(stamp),
            generation: AtomicU64::new(0),
        })
    }

    /// Keys given once (from the environment): never reloaded.
    pub fn fixed(keys: MasterKeys) -> KeyRing {
        KeyRing {
            path: None,
            current: RwLock::new(Arc::new(keys)),
            stamp: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// Changes with every reload that brought new keys.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<MasterKeys> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads the key file when its modification time or length changed. A file that does not
    /// parse keeps the keys in force (and is reported); `Ok(true)` when new keys took over.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let stamp = stamp_of(path);
        {
            let last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if *last == stamp {
                return Ok(false);
            }
        }
        let keys = MasterKeys::load(path)?;
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        let active = hex::encode(keys.active_id());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        self.generation.fetch_add(1, Ordering::AcqRel);
        tracing::info!(path = %path.display(), %active, "master keys reloaded");
        Ok(true)
    }
}
