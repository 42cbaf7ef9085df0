//! Applying scan-queue and vulnerability-database commands.

use crate::apply::{rejected, Applied, Applier, Done};
use crate::command::Rejection;
use crate::keys::CF_LIFECYCLE;
use crate::scanning::*;
use crate::txn::TxnError;

impl Applier<'_> {
    pub(crate) fn scan_command(&mut self, cmd: ScanCommand) -> Applied {
        match cmd {
            ScanCommand::Done { repo, digest } => {
                self.tx.delete(CF_LIFECYCLE, &queue_key(&repo, &digest))?;
                Ok(Done)
            }
            ScanCommand::DbPut { generation, packages } => {
                if let Some(why) = invalid_batch(&packages) {
                    return rejected(Rejection::Invalid(why));
                }
                let active = self.active_db()?;
                if generation <= active.generation {
                    return rejected(Rejection::Invalid(format!(
                        "database generation {generation} is not newer than the active {}",
                        active.generation
                    )));
                }
                for package in packages {
                    let key = package_key(generation, &package.ecosystem, &package.name);
                    let mut advisories: Vec<Advisory> = self.tx.get(CF_LIFECYCLE, &key)?.unwrap_or_default();
                    advisories.extend(package.advisories);
                    advisories.truncate(MAX_ADVISORIES_PER_PACKAGE);
                    self.tx.put(CF_LIFECYCLE, &key, &advisories)?;
                }
                Ok(Done)
            }
            ScanCommand::DbActivate { info } => {
                let active = self.active_db()?;
                if info.generation <= active.generation {
                    return rejected(Rejection::Invalid(format!(
                        "database generation {} is not newer than the active {}",
                        info.generation, active.generation
                    )));
                }
                self.tx.put(CF_LIFECYCLE, ACTIVE_KEY, &info)?;
                Ok(Done)
            }
            ScanCommand::DbPrune => {
                let active = self.active_db()?.generation;
                let mut deleted = 0;
                for key in self.tx.scan_keys(CF_LIFECYCLE, DB_PREFIX)? {
                    if deleted >= MAX_PRUNE_PER_ENTRY {
                        break;
                    }
                    let generation = key
                        .get(DB_PREFIX.len()..DB_PREFIX.len() + 8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_be_bytes);
                    // Older generations only: a newer one may be an import in progress.
                    if generation.is_some_and(|g| g < active) {
                        self.tx.delete(CF_LIFECYCLE, &key)?;
                        deleted += 1;
                    }
                }
                Ok(Done)
            }
        }
    }

    fn active_db(&self) -> Result<VulnDbInfo, TxnError> {
        Ok(self.tx.get(CF_LIFECYCLE, ACTIVE_KEY)?.unwrap_or_default())
    }

    /// Queues a newly pushed image manifest for its inventory.
    pub(crate) fn queue_scan(&mut self, repo: &str, digest: &str, now_ms: u64) -> Result<(), TxnError> {
        self.tx.put(CF_LIFECYCLE, &queue_key(repo, digest), &now_ms)
    }
}
