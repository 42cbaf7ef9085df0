//! Encryption-at-rest upkeep (every node; the catalog part on the leader only). One pass:
//!
//! - seals plain files (blobs, shards) left from before encryption was turned on: each is read,
//!   checked (a blob against its digest), written sealed beside it, synced, renamed into place
//!   and only then is the plain file removed — a crash at any point leaves one readable copy;
//! - re-wraps the data key of every sealed file still wrapped by a retired master key (headers
//!   only, see [`crate::at_rest::sealed::rewrap`]);
//! - on the leader, re-seals catalog secrets (signing keys, the credentials of peer regions and
//!   of pull-through upstreams) that are plain or sealed by a retired key, through Raft — but
//!   only once every member has reported holding the active key (capacity reports carry key
//!   ids), so a member still without it is never handed a secret it cannot open.
//!
//! It reports what is left (`at_rest.*` in `cluster status`), so an operator knows when a
//! retired key can leave the key file. Reads are throttled like the scrub's.

use std::io;
use std::sync::Arc;

use keelson_raft::identity::{IdentityCommand, ResealedKey};
use keelson_raft::regions::{RegionCommand, ResealedSecret};
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
        let stale_secrets = self.catalog.reader().with_identity(|s| {
            s.signing_keys
                .iter()
                .filter(|k| keys.secret_needs_sealing(&k.private_pkcs8))
                .count()
        }) + self.stale_region_secrets(&keys).len();
        self.health.set("at_rest.secrets_left", stale_secrets as u64);
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

    /// Region secrets (peers by name, caches by key) that are plain or sealed by a retired key.
    fn stale_region_secrets(&self, keys: &MasterKeys) -> Vec<(SecretOwner, Vec<u8>)> {
        let Ok(regions) = self.catalog.reader().regions() else {
            return Vec::new();
        };
        let peers = regions
            .peers
            .values()
            .filter(|p| keys.secret_needs_sealing(&p.secret))
            .map(|p| (SecretOwner::Peer(p.name.clone()), p.secret.clone()));
        let caches = regions.caches.iter().filter_map(|(key, c)| {
            c.secret
                .as_ref()
                .filter(|s| keys.secret_needs_sealing(s))
                .map(|s| (SecretOwner::Cache(key.clone()), s.clone()))
        });
        peers.chain(caches).collect()
    }

    /// Proposes sealing every catalog secret that is plain or sealed by a retired key.
    async fn reseal_secrets(&self, keys: &Arc<MasterKeys>) -> Result<usize, JobError> {
        if !self.all_members_hold(keys) {
            return Ok(0);
        }
        let stale: Vec<(String, Vec<u8>)> = self.catalog.reader().with_identity(|s| {
            s.signing_keys
                .iter()
                .filter(|k| keys.secret_needs_sealing(&k.private_pkcs8))
                .map(|k| (k.kid.clone(), k.private_pkcs8.clone()))
                .collect()
        });
        let mut sealed = Vec::with_capacity(stale.len());
        for (kid, was) in stale {
            match keys.open_secret(&was) {
                Ok(plain) => sealed.push(ResealedKey {
                    kid,
                    private_sealed: keys.seal_secret(&plain),
                    was_sha256: keelson_raft::identity::stored_sha256(&was),
                }),
                Err(e) => tracing::warn!(%kid, error = %e, "a signing key cannot be opened with this node's keys"),
            }
        }
        let mut n = sealed.len();
        if !sealed.is_empty() {
            self.catalog
                .propose(CatalogCommand::Identity(IdentityCommand::ResealSigningKeys { sealed }))
                .await?;
        }
        let mut resealed = Vec::new();
        for (owner, was) in self.stale_region_secrets(keys) {
            match keys.open_secret(&was) {
                Ok(plain) => resealed.push(ResealedSecret {
                    peer: matches!(owner, SecretOwner::Peer(_)),
                    name: owner.name().to_string(),
                    was_sha256: keelson_raft::identity::stored_sha256(&was),
                    sealed: keys.seal_secret(&plain),
                }),
                Err(e) => {
                    tracing::warn!(owner = owner.name(), error = %e, "a credential cannot be opened with this node's keys")
                }
            }
        }
        if !resealed.is_empty() {
            n += resealed.len();
            self.catalog
                .propose(CatalogCommand::Regions(RegionCommand::ResealSecrets {
                    secrets: resealed,
                }))
                .await?;
        }
        let webhooks = self.catalog.reader().all_webhooks().unwrap_or_default();
        let mut hooks = Vec::new();
        for view in webhooks
            .into_iter()
            .filter(|v| keys.secret_needs_sealing(&v.endpoint.secret))
        {
            match keys.open_secret(&view.endpoint.secret) {
                Ok(plain) => hooks.push(keelson_raft::webhooks::ResealedWebhookSecret {
                    was_sha256: keelson_raft::identity::stored_sha256(&view.endpoint.secret),
                    sealed: keys.seal_secret(&plain),
                    ns: view.ns,
                    name: view.name,
                }),
                Err(e) => {
                    tracing::warn!(webhook = %view.name, error = %e, "a webhook secret cannot be opened with this node's keys")
                }
            }
        }
        if !hooks.is_empty() {
            n += hooks.len();
            self.catalog
                .propose(CatalogCommand::Webhooks(
                    keelson_raft::webhooks::WebhookCommand::ResealSecrets { secrets: hooks },
                ))
                .await?;
        }
        Ok(n)
    }
}

/// Whose credential a region secret is.
enum SecretOwner {
    Peer(String),
    Cache(String),
}

impl SecretOwner {
    fn name(&self) -> &str {
        match self {
            SecretOwner::Peer(n) | SecretOwner::Cache(n) => n,
        }
    }
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
