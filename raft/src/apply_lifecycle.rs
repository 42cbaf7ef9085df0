//! Applying the lifecycle commands: pull counts, retention policies and their deletions,
//! immutable-tag settings and repository descriptions. Limits and usage are enforced where
//! repositories, images and blob links are created (`apply.rs`).

use crate::apply::{rejected, Applied, Applier, Done};
use crate::command::*;
use crate::keys::*;
use crate::lifecycle::*;
use crate::txn::TxnError;
use crate::types::NodeId;

impl Applier<'_> {
    pub(crate) fn record_pulls(&mut self, node: NodeId, seq: u64, pulls: Vec<PullCount>) -> Applied {
        if pulls.len() > MAX_PULLS_PER_ENTRY {
            return rejected(Rejection::Invalid(format!(
                "{} pull counts in one entry, at most {MAX_PULLS_PER_ENTRY}",
                pulls.len()
            )));
        }
        let seq_key = pull_seq_key(node);
        let last: u64 = self.tx.get(CF_LIFECYCLE, &seq_key)?.unwrap_or(0);
        if seq <= last {
            return Ok(Done); // a retry of a batch already counted
        }
        self.tx.put(CF_LIFECYCLE, &seq_key, &seq)?;
        for pull in pulls {
            let Some(mut image) = self.image(&pull.repo, &pull.digest)? else {
                continue; // deleted meanwhile
            };
            image.pulls = image.pulls.saturating_add(pull.count);
            image.last_pulled_ms = Some(image.last_pulled_ms.unwrap_or(0).max(pull.last_ms));
            image.generation += 1;
            self.tx.put(CF_IMAGES, &join(&[&pull.repo, &pull.digest]), &image)?;
            self.count(&pull.repo, |u| {
                u.pulls = u.pulls.saturating_add(pull.count);
                u.last_pull_ms = Some(u.last_pull_ms.unwrap_or(0).max(pull.last_ms));
            })?;
        }
        Ok(Done)
    }

    pub(crate) fn set_retention_policy(&mut self, ns: &str, name: &str, policy: Option<RetentionPolicy>) -> Applied {
        let key = retention_policy_key(ns, name);
        match policy {
            Some(policy) => {
                if let Err(e) = valid_patterns(&policy.exempt_tags) {
                    return rejected(Rejection::Invalid(e));
                }
                self.tx.put(CF_LIFECYCLE, &key, &policy)?;
            }
            None => {
                if name != GLOBAL_POLICY && !self.tx.exists(CF_LIFECYCLE, &key)? {
                    return rejected(Rejection::Invalid(format!("retention policy {name} does not exist")));
                }
                self.tx.delete(CF_LIFECYCLE, &key)?;
                // Its repositories fall back to the global policy.
                let prefix = retention_assign_prefix(ns);
                for (key, value) in self.tx.scan_committed(CF_LIFECYCLE, &prefix)? {
                    if bincode::deserialize::<String>(&value).is_ok_and(|p| p == name) {
                        self.tx.delete(CF_LIFECYCLE, &key)?;
                    }
                }
            }
        }
        Ok(Done)
    }

    pub(crate) fn assign_retention(&mut self, repo: &str, policy: Option<String>) -> Applied {
        if !self.tx.exists(CF_REPOS, repo.as_bytes())? {
            return rejected(Rejection::RepoUnknown);
        }
        let key = retention_assign_key(repo);
        match policy.filter(|p| p != GLOBAL_POLICY) {
            Some(name) => {
                if !self
                    .tx
                    .exists(CF_LIFECYCLE, &retention_policy_key(tenancy_of(repo), &name))?
                {
                    return rejected(Rejection::Invalid(format!("retention policy {name} does not exist")));
                }
                self.tx.put(CF_LIFECYCLE, &key, &name)?;
            }
            None => self.tx.delete(CF_LIFECYCLE, &key)?,
        }
        Ok(Done)
    }

    pub(crate) fn set_immutable_tags(&mut self, scope: Scope, setting: Option<ImmutableTags>) -> Applied {
        let key = match &scope {
            Scope::Repo(repo) => {
                if !self.tx.exists(CF_REPOS, repo.as_bytes())? {
                    return rejected(Rejection::RepoUnknown);
                }
                immutable_repo_key(repo)
            }
            Scope::Tenancy(ns) => immutable_tenancy_key(ns),
        };
        match setting {
            Some(setting) => {
                if let Err(e) = valid_patterns(&setting.exempt) {
                    return rejected(Rejection::Invalid(e));
                }
                self.tx.put(CF_LIFECYCLE, &key, &setting)?;
            }
            None => self.tx.delete(CF_LIFECYCLE, &key)?,
        }
        Ok(Done)
    }

    pub(crate) fn set_repo_info(&mut self, repo: &str, description: Option<String>, readme: Option<String>) -> Applied {
        if !self.tx.exists(CF_REPOS, repo.as_bytes())? {
            return rejected(Rejection::RepoUnknown);
        }
        let key = repo_info_key(repo);
        let mut info: RepoInfo = self.tx.get(CF_LIFECYCLE, &key)?.unwrap_or_default();
        if let Some(d) = description {
            if d.len() > MAX_DESCRIPTION_BYTES {
                return rejected(Rejection::Invalid(format!(
                    "description longer than {MAX_DESCRIPTION_BYTES} bytes"
                )));
            }
            info.description = d;
        }
        if let Some(r) = readme {
            if r.len() > MAX_README_BYTES {
                return rejected(Rejection::Invalid(format!(
                    "readme longer than {MAX_README_BYTES} bytes"
                )));
            }
            info.readme = r;
        }
        self.tx.put(CF_LIFECYCLE, &key, &info)?;
        Ok(Done)
    }

    /// The policy that governs `repo` now, with its name.
    pub(crate) fn effective_policy(&self, repo: &str) -> Result<(String, RetentionPolicy), TxnError> {
        let ns = tenancy_of(repo);
        let assigned = self.tx.get(CF_LIFECYCLE, &retention_assign_key(repo))?;
        resolve_policy(assigned, |name| {
            self.tx.get(CF_LIFECYCLE, &retention_policy_key(ns, name))
        })
    }

    /// Whether a unit still stands as judged: every member exists at its judged generation, and
    /// none carries a tag the current policy exempts or the repository freezes.
    fn unit_stands(
        &self,
        repo: &str,
        unit: &DeletionUnit,
        policy: &RetentionPolicy,
        immutable: Option<&ImmutableTags>,
    ) -> Result<bool, TxnError> {
        for member in std::iter::once(&unit.image).chain(unit.with.iter()) {
            match self.image(repo, &member.digest)? {
                Some(image) if image.generation == member.generation => {}
                _ => return Ok(false),
            }
            for tag in self.image_tags(repo, &member.digest)? {
                if matches_any(&policy.exempt_tags, &tag) || immutable.is_some_and(|s| s.freezes(&tag)) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    pub(crate) fn retention_delete(
        &mut self,
        repo: &str,
        (policy_name, judged): (&str, &RetentionPolicy),
        units: Vec<DeletionUnit>,
        now_ms: u64,
    ) -> Applied {
        if units.len() > MAX_UNITS_PER_ENTRY || units.iter().any(|u| u.with.len() >= MAX_UNIT_MEMBERS) {
            return rejected(Rejection::Invalid(format!(
                "at most {MAX_UNITS_PER_ENTRY} deletion units of at most {MAX_UNIT_MEMBERS} images in one entry"
            )));
        }
        let (current, policy) = self.effective_policy(repo)?;
        if current != policy_name || &policy != judged {
            return rejected(Rejection::Stale(format!(
                "{repo} is governed by policy {current} now, not by the rules of {policy_name} it was judged under"
            )));
        }
        let ns = tenancy_of(repo).to_string();
        let immutable = self.immutability(repo)?;
        for unit in units {
            if !self.unit_stands(repo, &unit, &policy, immutable.as_ref())? {
                continue;
            }
            let (media_type, size) = self.manifest_facts(repo, &unit.image.digest)?;
            for member in std::iter::once(&unit.image).chain(unit.with.iter()) {
                self.remove_image(repo, &member.digest)?;
            }
            self.emit(crate::webhooks::WebhookEvent {
                id: 0,
                kind: crate::webhooks::EventKind::Retention,
                repository: repo.to_string(),
                digest: unit.image.digest.clone(),
                media_type,
                size,
                tag: unit.tags.first().cloned(),
                origin: crate::webhooks::EventOrigin {
                    actor: format!("retention/{policy_name}"),
                    time_ms: now_ms,
                    ..Default::default()
                },
            })?;
            let record = DeletionRecord {
                repo: repo.to_string(),
                policy: policy_name.to_string(),
                rule: unit.rule,
                digest: unit.image.digest.clone(),
                tags: unit.tags,
                with: unit.with.into_iter().map(|m| m.digest).collect(),
                bytes_freed: unit.bytes_freed,
                deleted_ms: now_ms,
            };
            let key = deletion_log_key(&ns, now_ms, repo, &record.digest);
            self.tx.put(CF_LIFECYCLE, &key, &record)?;
        }
        Ok(Done)
    }
}
