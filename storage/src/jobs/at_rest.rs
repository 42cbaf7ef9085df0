//! Encryption-at-rest upkeep (every node; the catalog part on the leader only). One pass:
//!
//! - seals plain files (blobs, shards) left from before encryption was turned on: each is read,
//!   checked (a blob against its digest), written sealed beside it, synced, renamed into place
//!   and only then is the plain file removed — a crash at any point leaves one readable copy;
//! - re-wraps the data key of every sealed file still wrapped by a retired master key (headers
//!   only, see [`crate::at_rest::sealed::rewrap`]);
//! - on the leader, re-seals catalog secrets (token-signing keys, the credentials of peer regions
//!   and of pull-through upstreams, webhook secrets, held image-signing keys) that are plain or sealed by a retired key, through Raft — but
//!   only once every member has reported holding the active key (capacity reports carry key
//!   ids), so a member still without it is never handed a secret it cannot open.
//!
//! It reports what is left (`at_rest.*` in `cluster status`), so an operator knows when a
//! retired key can leave the key file. Reads are throttled like the scrub's.

use std::io;
use std::sync::Arc;

use keelson_raft::identity::{IdentityCommand, ResealedKey};
use keelson_raft::regions::{RegionCommand, ResealedSecret};
use keelson_raft::signing::{ResealedImageKey, SigningCommand};
use keelson_raft::webhooks::{ResealedWebhookSecret, WebhookCommand};
use keelson_raft::CatalogCommand;

use super::throttle::Throttle;
use super::{BlobJobs, JobError};
use crate::at_rest::{sealed, Format, MasterKeys};
use crate::digest::Digest;

/// What one pass did and what it left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealOutcome {
    /// Plain files sealed by this pass.
    pub converted: usize,
    /// Sealed files whose data key this pass re-wrapped.
    pub rewrapped: usize,
    /// Files still plain or on a retired key after the pass (they failed; retried next pass).
    pub left: usize,
    /// Catalog secrets this pass proposed to re-seal.
    pub secrets_resealed: usize,
}

/// One stored file the pass looks at.
enum Target {
    Blob(Digest),
    Shard(Digest, usize),
    /// An upload session's data file (always sealed when the ring exists; re-wrapped only).
    Upload(std::path::PathBuf),
}

impl BlobJobs {
    pub async fn seal_pass(&self) -> Result<SealOutcome, JobError> {
        let mut outcome = SealOutcome::default();
        let Some(ring) = self.store.key_ring() else {
            return Ok(outcome);
        };
        let generation = ring.generation();
        let keys = ring.current();
        let was_settled = *self.sealed_generation.lock().unwrap_or_else(|p| p.into_inner()) == Some(generation);
        if !was_settled {
            self.seal_files(&keys, &mut outcome).await?;
            if outcome.left == 0 {
                *self.sealed_generation.lock().unwrap_or_else(|p| p.into_inner()) = Some(generation);
            }
        }
        let settled = was_settled || outcome.left == 0;
        if self.is_leader() {
            outcome.secrets_resealed = self.reseal_secrets(&keys).await?;
        }
        self.health.count("at_rest.converted", outcome.converted as u64);
        self.health.count("at_rest.rewrapped", outcome.rewrapped as u64);
        self.health.set("at_rest.files_left", outcome.left as u64);
        self.health
            .set("at_rest.secrets_left", self.stale_secrets(&keys).len() as u64);
        self.health.set("at_rest.generation", generation);
        self.health.set("at_rest.settled", u64::from(settled));
        if outcome != SealOutcome::default() {
            tracing::info!(?outcome, "encryption-at-rest pass");
        }
        Ok(outcome)
    }

    /// Seals plain files and re-wraps sealed ones not on the active key.
    async fn seal_files(&self, keys: &Arc<MasterKeys>, outcome: &mut SealOutcome) -> Result<(), JobError> {
        let store = self.store.clone();
        let uploads = self.uploads.clone();
        let files = tokio::task::spawn_blocking(move || -> io::Result<Vec<(Target, Format, u64)>> {
            let mut files: Vec<(Target, Format, u64)> = store
                .list()?
                .into_iter()
                .map(|b| (Target::Blob(b.digest), b.format, b.size))
                .collect();
            files.extend(
                store
                    .list_shards()?
                    .into_iter()
                    .map(|s| (Target::Shard(s.digest, s.index), s.format, s.size)),
            );
            files.extend(
                uploads
                    .sealed_files()?
                    .into_iter()
                    .map(|path| (Target::Upload(path), Format::Sealed, 0)),
            );
            Ok(files)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        let mut throttle = Throttle::new(self.settings.scrub_rate);
        for (target, format, size) in files {
            let store = self.store.clone();
            let keys = keys.clone();
            if format == Format::Plain {
                throttle.pace(size).await;
            }
            let done = tokio::task::spawn_blocking(move || -> io::Result<Step> {
                let (path, digest) = match &target {
                    Target::Blob(d) => (store.path(d), Some(d)),
                    Target::Shard(d, i) => (store.shard_path(d, *i), None),
                    Target::Upload(sealed) => return rewrap_file(sealed, &keys),
                };
                match format {
                    Format::Plain if store.seal_plain_file(&path, digest)? => Ok(Step::Converted),
                    Format::Plain => Ok(Step::Gone),
                    Format::Sealed => rewrap_file(&Format::Sealed.name(&path), &keys),
                }
            })
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
            match done {
                Ok(Step::Converted) => outcome.converted += 1,
                Ok(Step::Rewrapped) => outcome.rewrapped += 1,
                Ok(Step::Current | Step::Gone) => {}
                Err(e) => {
                    outcome.left += 1;
                    tracing::warn!(error = %e, "could not seal or re-wrap a stored file");
                }
            }
        }
        Ok(())
    }

    /// Whether every member has reported holding the active key (see the module doc).
    fn all_members_hold(&self, keys: &MasterKeys) -> bool {
        let Ok(capacities) = self.catalog.reader().capacities() else {
            return false;
        };
        let members = self.catalog.members().into_keys();
        keelson_raft::redundancy::all_hold_key(&capacities, members, &hex::encode(keys.active_id()))
    }

    /// The catalog secrets that are plain or sealed by a retired key.
    fn stale_secrets(&self, keys: &MasterKeys) -> StaleSecrets {
        let reader = self.catalog.reader();
        let stale = |stored: &Vec<u8>| keys.secret_needs_sealing(stored);
        let token_keys = reader.with_identity(|s| {
            s.signing_keys
                .iter()
                .filter(|k| stale(&k.private_pkcs8))
                .map(|k| (k.kid.clone(), k.private_pkcs8.clone()))
                .collect()
        });
        let mut regions = Vec::new();
        if let Ok(r) = reader.regions() {
            regions.extend(
                r.peers
                    .values()
                    .filter(|p| stale(&p.secret))
                    .map(|p| ((true, p.name.clone()), p.secret.clone())),
            );
            regions.extend(r.caches.iter().filter_map(|(key, c)| {
                c.secret
                    .as_ref()
                    .filter(|s| stale(s))
                    .map(|s| ((false, key.clone()), s.clone()))
            }));
        }
        let webhooks = reader
            .all_webhooks()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| stale(&v.endpoint.secret))
            .map(|v| ((v.ns, v.name), v.endpoint.secret))
            .collect();
        let image_keys = reader
            .all_signing_keys()
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(ns, t)| {
                t.keys.into_iter().filter_map(move |(name, k)| {
                    let private = k.private.filter(|p| stale(p))?;
                    Some(((ns.clone(), name), private))
                })
            })
            .collect();
        StaleSecrets {
            token_keys,
            regions,
            webhooks,
            image_keys,
        }
    }

    /// Proposes sealing every catalog secret that is plain or sealed by a retired key.
    async fn reseal_secrets(&self, keys: &Arc<MasterKeys>) -> Result<usize, JobError> {
        if !self.all_members_hold(keys) {
            return Ok(0);
        }
        let stale = self.stale_secrets(keys);
        let sealed = resealed(keys, "token-signing key", stale.token_keys, |kid, was, sealed| {
            ResealedKey {
                kid,
                private_sealed: sealed,
                was_sha256: was,
            }
        });
        let secrets = resealed(keys, "region credential", stale.regions, |(peer, name), was, sealed| {
            ResealedSecret {
                peer,
                name,
                was_sha256: was,
                sealed,
            }
        });
        let hooks = resealed(keys, "webhook secret", stale.webhooks, |(ns, name), was, sealed| {
            ResealedWebhookSecret {
                ns,
                name,
                was_sha256: was,
                sealed,
            }
        });
        let image_keys = resealed(
            keys,
            "image-signing key",
            stale.image_keys,
            |(ns, name), was, sealed| ResealedImageKey {
                ns,
                name,
                was_sha256: was,
                sealed,
            },
        );
        let n = sealed.len() + secrets.len() + hooks.len() + image_keys.len();
        let commands = [
            (!sealed.is_empty()).then_some(CatalogCommand::Identity(IdentityCommand::ResealSigningKeys { sealed })),
            (!secrets.is_empty()).then_some(CatalogCommand::Regions(RegionCommand::ResealSecrets { secrets })),
            (!hooks.is_empty()).then_some(CatalogCommand::Webhooks(WebhookCommand::ResealSecrets {
                secrets: hooks,
            })),
            (!image_keys.is_empty())
                .then_some(CatalogCommand::Signing(SigningCommand::ResealKeys { keys: image_keys })),
        ];
        for command in commands.into_iter().flatten() {
            self.catalog.propose(command).await?;
        }
        Ok(n)
    }
}

/// Catalog secrets that are plain or sealed by a retired key, by kind, with what owns each.
struct StaleSecrets {
    /// Token-signing keys by kid.
    token_keys: Vec<(String, Vec<u8>)>,
    /// Region credentials: (whether a peer's, else a cache's; its name or key).
    regions: Vec<((bool, String), Vec<u8>)>,
    /// Webhook secrets by (namespace, endpoint).
    webhooks: Vec<((String, String), Vec<u8>)>,
    /// Held image-signing keys by (namespace, key).
    image_keys: Vec<((String, String), Vec<u8>)>,
}

impl StaleSecrets {
    fn len(&self) -> usize {
        self.token_keys.len() + self.regions.len() + self.webhooks.len() + self.image_keys.len()
    }
}

/// Each stale secret opened with `keys` and sealed anew, as `make(owner, sha256 of what was
/// stored, newly sealed)`; a secret this node cannot open is logged and left.
fn resealed<O: std::fmt::Debug, T>(
    keys: &MasterKeys,
    what: &str,
    stale: impl IntoIterator<Item = (O, Vec<u8>)>,
    make: impl Fn(O, [u8; 32], Vec<u8>) -> T,
) -> Vec<T> {
    let mut out = Vec::new();
    for (owner, was) in stale {
        match keys.open_secret(&was) {
            Ok(plain) => out.push(make(
                owner,
                keelson_raft::identity::stored_sha256(&was),
                keys.seal_secret(&plain),
            )),
            Err(e) => tracing::warn!(?owner, error = %e, "a {what} cannot be opened with this node's keys"),
        }
    }
    out
}

enum Step {
    Converted,
    Rewrapped,
    Current,
    /// Deleted or converted meanwhile.
    Gone,
}

fn rewrap_file(path: &std::path::Path, keys: &MasterKeys) -> io::Result<Step> {
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Step::Gone),
        Err(e) => return Err(e),
    };
    Ok(match sealed::rewrap(&file, keys)? {
        sealed::Rewrap::Current => Step::Current,
        sealed::Rewrap::Rewrapped => Step::Rewrapped,
    })
}
