//! Applying the region commands: settings, peers and rules (one value), replication marks,
//! the home-region rule for identity writes and conditional tag changes (`TagIf`).

use crate::apply::{rejected, Applied, Applier, Done};
use crate::command::*;
use crate::identity::{IdentityCommand, IdentityState};
use crate::keys::*;
use crate::regions::{MarkRecord, RegionCommand, RegionRejection, Regions};
use crate::txn::TxnError;

impl Applier<'_> {
    fn regions(&self) -> Result<Regions, TxnError> {
        Ok(self.tx.get(CF_IDENTITY, KEY_REGIONS)?.unwrap_or_default())
    }

    /// Queues `repo` for cross-region replication when a rule covers it: the queue is catalog
    /// state, so a leader change or a crash loses no change (`changed\0<repo>` → the number of
    /// the change, which [`RegionCommand::Processed`] compares before it dequeues).
    pub(crate) fn note_change(&mut self, repo: &str) -> Result<(), TxnError> {
        if self.regions()?.rules_for(repo).next().is_none() {
            return Ok(());
        }
        let seq: u64 = self.tx.get::<u64>(CF_LIFECYCLE, CHANGE_SEQ_KEY)?.unwrap_or(0) + 1;
        self.tx.put(CF_LIFECYCLE, CHANGE_SEQ_KEY, &seq)?;
        self.tx.put(CF_LIFECYCLE, &change_key(repo), &seq)
    }

    pub(crate) fn region_command(&mut self, cmd: RegionCommand) -> Applied {
        if let RegionCommand::CacheValidated { repo, tag, at_ms } = &cmd {
            self.tx.put(CF_LIFECYCLE, &cache_validated_key(repo, tag), at_ms)?;
            return Ok(Done);
        }
        if let RegionCommand::Processed { repo, seq } = &cmd {
            let key = change_key(repo);
            if self.tx.get::<u64>(CF_LIFECYCLE, &key)? == Some(*seq) {
                self.tx.delete(CF_LIFECYCLE, &key)?;
            }
            return Ok(Done);
        }
        let mut regions = self.regions()?;
        if let Err(r) = regions.apply(&cmd) {
            return rejected(r.into());
        }
        if let RegionCommand::Replicated { marks } = cmd {
            for mark in marks {
                let key = replication_mark_key(&mark.rule, &mark.target, &mark.repo, &mark.key);
                match mark.digest {
                    Some(digest) => self.tx.put(
                        CF_LIFECYCLE,
                        &key,
                        &MarkRecord {
                            digest,
                            at_ms: mark.at_ms,
                        },
                    )?,
                    None => self.tx.delete(CF_LIFECYCLE, &key)?,
                }
            }
            return Ok(Done);
        }
        self.tx.put(CF_IDENTITY, KEY_REGIONS, &regions)?;
        Ok(Done)
    }

    /// Applies an identity command where this region's role allows it: the home region (or a
    /// cluster with no regions set) makes every identity write; another region only takes the
    /// home's state whole, plus its own bookkeeping.
    pub(crate) fn identity_command(&mut self, cmd: IdentityCommand) -> Applied {
        let regions = self.regions()?;
        match (regions.remote_home(), &cmd) {
            (Some(home), cmd) if cmd.is_home_write() => {
                return rejected(Rejection::NotHome { home: home.to_string() });
            }
            (None, IdentityCommand::ReplaceFromHome { .. }) => {
                return rejected(RegionRejection::Invalid("this region is the home region".into()).into());
            }
            _ => {}
        }
        let mut identity = self.identity.write().unwrap_or_else(|p| p.into_inner());
        // Applied to a copy, so a rejected command leaves memory as it leaves rocksdb.
        let mut next = identity.clone();
        match next.apply(cmd) {
            Ok(()) => {
                let state: &IdentityState = &next;
                self.tx.put(CF_IDENTITY, KEY_IDENTITY, state)?;
                *identity = next;
                Ok(Done)
            }
            Err(r) => rejected(Rejection::Identity(r)),
        }
    }

    /// `TagIf`: the inner command runs only while the tag is what the caller last saw.
    pub(crate) fn tag_if(
        &mut self,
        repo: String,
        tag: String,
        expected: Option<String>,
        then: CatalogCommand,
    ) -> Applied {
        let names_tag = match &then {
            CatalogCommand::PutManifest {
                repo: r, tag: Some(t), ..
            } => *r == repo && *t == tag,
            CatalogCommand::DeleteTag { repo: r, tag: t, .. } => *r == repo && *t == tag,
            _ => false,
        };
        if !names_tag {
            return rejected(Rejection::Invalid(
                "a conditional tag change must put or delete that tag".into(),
            ));
        }
        let actual = self
            .tx
            .get_raw(CF_TAGS, &join(&[&repo, &tag]))?
            .map(|d| String::from_utf8_lossy(&d).into_owned());
        if actual != expected {
            let show = |d: &Option<String>| d.clone().unwrap_or_else(|| "absent".into());
            return rejected(Rejection::PreconditionFailed {
                tag,
                expected: show(&expected),
                actual: show(&actual),
            });
        }
        self.apply(then)
    }
}
