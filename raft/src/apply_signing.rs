//! Applying changes to a tenancy's trusted signing keys and verification policies. Every bound
//! and cross-reference is checked here too, so a command from any proposer leaves a consistent
//! record: a policy names only registered keys, and a key a policy names cannot be removed.

use crate::apply::{rejected, Applied, Applier, Done};
use crate::command::Rejection;
use crate::keys::CF_LIFECYCLE;
use crate::signing::*;

impl Applier<'_> {
    pub(crate) fn signing_command(&mut self, cmd: SigningCommand) -> Applied {
        match cmd {
            SigningCommand::PutKey { ns, name, key } => {
                if !valid_name(&name) {
                    return rejected(Rejection::Invalid(format!("{name:?} is not a key name")));
                }
                if let Some(why) = invalid_key(&key) {
                    return rejected(Rejection::Invalid(why));
                }
                let mut keys = self.tenancy_keys(&ns)?;
                if !keys.keys.contains_key(&name) && keys.keys.len() >= MAX_KEYS_PER_TENANCY {
                    return rejected(Rejection::LimitExceeded(format!(
                        "tenancy {ns} has {MAX_KEYS_PER_TENANCY} signing keys, the most it may have"
                    )));
                }
                keys.keys.insert(name, key);
                self.tx.put(CF_LIFECYCLE, &keys_key(&ns), &keys)?;
                Ok(Done)
            }
            SigningCommand::DeleteKey { ns, name } => {
                let mut keys = self.tenancy_keys(&ns)?;
                if !keys.keys.contains_key(&name) {
                    return rejected(Rejection::Invalid(format!("no signing key {name} in {ns}")));
                }
                let policies = self.tenancy_policies(&ns)?;
                if let Some((policy, _)) = policies.policies.iter().find(|(_, p)| p.keys.contains(&name)) {
                    return rejected(Rejection::Invalid(format!(
                        "verification policy {policy} requires key {name}; change or delete the policy first"
                    )));
                }
                keys.keys.remove(&name);
                self.tx.put(CF_LIFECYCLE, &keys_key(&ns), &keys)?;
                Ok(Done)
            }
            SigningCommand::PutPolicy { ns, name, policy } => {
                if !valid_name(&name) {
                    return rejected(Rejection::Invalid(format!("{name:?} is not a policy name")));
                }
                if policy.keys.len() > MAX_KEYS_PER_POLICY {
                    return rejected(Rejection::Invalid(format!(
                        "a verification policy names at most {MAX_KEYS_PER_POLICY} keys"
                    )));
                }
                if policy.keys.is_empty() && policy.refuse_severity.is_none() {
                    return rejected(Rejection::Invalid(
                        "a verification policy names keys, a severity to refuse, or both".into(),
                    ));
                }
                let keys = self.tenancy_keys(&ns)?;
                if let Some(missing) = policy.keys.iter().find(|k| !keys.keys.contains_key(*k)) {
                    return rejected(Rejection::Invalid(format!("no signing key {missing} in {ns}")));
                }
                let mut policies = self.tenancy_policies(&ns)?;
                if !policies.policies.contains_key(&name) && policies.policies.len() >= MAX_POLICIES_PER_TENANCY {
                    return rejected(Rejection::LimitExceeded(format!(
                        "tenancy {ns} has {MAX_POLICIES_PER_TENANCY} verification policies, the most it may have"
                    )));
                }
                policies.policies.insert(name, policy);
                self.tx.put(CF_LIFECYCLE, &policies_key(&ns), &policies)?;
                Ok(Done)
            }
            SigningCommand::DeletePolicy { ns, name } => {
                let mut policies = self.tenancy_policies(&ns)?;
                if policies.policies.remove(&name).is_none() {
                    return rejected(Rejection::Invalid(format!("no verification policy {name} in {ns}")));
                }
                self.tx.put(CF_LIFECYCLE, &policies_key(&ns), &policies)?;
                Ok(Done)
            }
            SigningCommand::ResealKeys { keys: resealed } => {
                for r in resealed {
                    let mut keys = self.tenancy_keys(&r.ns)?;
                    let Some(key) = keys.keys.get_mut(&r.name) else {
                        continue;
                    };
                    if key
                        .private
                        .as_ref()
                        .is_some_and(|p| crate::identity::stored_sha256(p) == r.was_sha256)
                    {
                        key.private = Some(r.sealed);
                        self.tx.put(CF_LIFECYCLE, &keys_key(&r.ns), &keys)?;
                    }
                }
                Ok(Done)
            }
        }
    }

    fn tenancy_keys(&self, ns: &str) -> Result<TenancyKeys, crate::txn::TxnError> {
        Ok(self.tx.get(CF_LIFECYCLE, &keys_key(ns))?.unwrap_or_default())
    }

    fn tenancy_policies(&self, ns: &str) -> Result<TenancyPolicies, crate::txn::TxnError> {
        Ok(self.tx.get(CF_LIFECYCLE, &policies_key(ns))?.unwrap_or_default())
    }
}
