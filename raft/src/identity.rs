//! The identity part of the catalog: tenancies, compartments, users, groups, auth-token hashes,
//! policies and the cluster's token-signing keys.
//!
//! Identity is small and read on every request, so each node keeps the whole state in memory
//! (rebuilt from rocksdb at start and on snapshot install) and applies [`IdentityCommand`]s to it
//! deterministically; the state machine persists the new state in the same write batch as the
//! log position. Secrets never enter the log: auth tokens arrive already hashed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The policy verbs, cumulative in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Verb {
    Inspect,
    Read,
    Use,
    Manage,
}

/// Where a policy statement applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    Tenancy,
    /// A compartment (by name) and its subtree.
    Compartment(String),
}

/// One parsed `allow group G to VERB repos in SCOPE [where target.repo.name = 'R']`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub group: String,
    pub verb: Verb,
    pub scope: Scope,
    pub repo_name: Option<String>,
    /// The statement as written.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compartment {
    pub name: String,
    /// `None` for the tenancy's root compartment.
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthToken {
    pub id: String,
    /// SHA-256 of the token, hex.
    pub hash: String,
    pub description: String,
    pub created_ms: u64,
    pub last_used_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub tokens: Vec<AuthToken>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub compartment: Option<String>,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenancy {
    /// Compartments by name (the root compartment is implicit and named after the namespace).
    pub compartments: BTreeMap<String, Compartment>,
    pub users: BTreeMap<String, User>,
    /// Group name → member user names. `Administrators` always exists.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    pub policies: BTreeMap<String, Policy>,
    pub created_ms: u64,
}

/// A token-signing key pair (Ed25519, PKCS#8 DER for the private half).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    pub private_pkcs8: Vec<u8>,
    pub public: Vec<u8>,
    pub created_ms: u64,
}

/// The whole identity state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityState {
    pub tenancies: BTreeMap<String, Tenancy>,
    /// Hashes of tokens of the cluster administrator (`keelson/admin`), created at bootstrap.
    pub admin_tokens: Vec<AuthToken>,
    /// Newest last; the newest signs, all verify.
    pub signing_keys: Vec<SigningKey>,
}

/// The group every tenancy has, whose members may do anything in it.
pub const ADMINISTRATORS: &str = "Administrators";
/// How many signing keys are kept for verification after rotations.
pub const KEPT_SIGNING_KEYS: usize = 3;

/// A change to identity state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentityCommand {
    BootstrapAdmin {
        token: AuthToken,
    },
    CreateTenancy {
        namespace: String,
        now_ms: u64,
    },
    CreateCompartment {
        namespace: String,
        name: String,
        parent: Option<String>,
    },
    CreateUser {
        namespace: String,
        user: String,
        now_ms: u64,
    },
    DeleteUser {
        namespace: String,
        user: String,
    },
    CreateGroup {
        namespace: String,
        group: String,
    },
    AddToGroup {
        namespace: String,
        group: String,
        user: String,
    },
    RemoveFromGroup {
        namespace: String,
        group: String,
        user: String,
    },
    PutPolicy {
        namespace: String,
        name: String,
        policy: Policy,
    },
    DeletePolicy {
        namespace: String,
        name: String,
    },
    AddToken {
        namespace: String,
        user: String,
        token: AuthToken,
        max_tokens: usize,
    },
    RevokeToken {
        namespace: String,
        user: String,
        token_id: String,
    },
    TouchTokens {
        uses: Vec<(String, String, String, u64)>,
    },
    AddSigningKey {
        key: SigningKey,
    },
    /// Replaces the stored private halves of signing keys (by kid) with the same keys sealed
    /// under the active master key: encryption at rest turned on, or a master-key rotation.
    /// Each entry names the stored bytes it replaces, so a stale re-seal changes nothing.
    ResealSigningKeys {
        sealed: Vec<ResealedKey>,
    },
    /// The whole state as the home region has it (private signing keys sealed by this
    /// cluster's proposer when it encrypts): replaces everything here, keeping the later of the
    /// two last-use times of each token. Only a region whose home is elsewhere accepts it.
    ReplaceFromHome {
        state: Box<IdentityState>,
    },
}

impl IdentityCommand {
    /// Whether the command is one of the identity writes that only the home region makes
    /// (token-use times and re-sealing are local bookkeeping of every region).
    pub fn is_home_write(&self) -> bool {
        !matches!(
            self,
            IdentityCommand::TouchTokens { .. }
                | IdentityCommand::ResealSigningKeys { .. }
                | IdentityCommand::ReplaceFromHome { .. }
        )
    }
}

/// The SHA-256 of a stored private half (what [`ResealedKey`] compares).
pub fn stored_sha256(stored: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(stored).into()
}

/// One signing key's private half, sealed anew (see `IdentityCommand::ResealSigningKeys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealedKey {
    pub kid: String,
    /// SHA-256 of the bytes stored now (compare-and-set): never the bytes, which may be a
    /// private key in the clear that must not enter the log again.
    pub was_sha256: [u8; 32],
    pub private_sealed: Vec<u8>,
}

/// Why an identity command changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum IdentityRejection {
    #[error("tenancy {0} does not exist")]
    NoTenancy(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} does not exist")]
    Missing(String),
    #[error("user already has the maximum of {0} auth tokens")]
    TooManyTokens(usize),
    #[error("cluster administrator already bootstrapped")]
    AlreadyBootstrapped,
    #[error("{0}")]
    OutOfScope(String),
}

impl IdentityState {
    fn tenancy(&mut self, ns: &str) -> Result<&mut Tenancy, IdentityRejection> {
        self.tenancies
            .get_mut(ns)
            .ok_or_else(|| IdentityRejection::NoTenancy(ns.to_string()))
    }

    /// Applies a command; on rejection the state is unchanged.
    pub fn apply(&mut self, cmd: IdentityCommand) -> Result<(), IdentityRejection> {
        use IdentityRejection::*;
        match cmd {
            IdentityCommand::BootstrapAdmin { token } => {
                if !self.admin_tokens.is_empty() {
                    return Err(AlreadyBootstrapped);
                }
                self.admin_tokens.push(token);
            }
            IdentityCommand::CreateTenancy { namespace, now_ms } => {
                if self.tenancies.contains_key(&namespace) {
                    return Err(Exists(format!("tenancy {namespace}")));
                }
                let mut t = Tenancy {
                    created_ms: now_ms,
                    ..Default::default()
                };
                t.groups.insert(ADMINISTRATORS.to_string(), BTreeSet::new());
                self.tenancies.insert(namespace, t);
            }
            IdentityCommand::CreateCompartment {
                namespace,
                name,
                parent,
            } => {
                let t = self.tenancy(&namespace)?;
                if name == namespace || t.compartments.contains_key(&name) {
                    return Err(Exists(format!("compartment {name}")));
                }
                if let Some(p) = &parent {
                    if p != &namespace && !t.compartments.contains_key(p) {
                        return Err(Missing(format!("compartment {p}")));
                    }
                }
                let parent = parent.filter(|p| p != &namespace);
                t.compartments.insert(name.clone(), Compartment { name, parent });
            }
            IdentityCommand::CreateUser {
                namespace,
                user,
                now_ms,
            } => {
                let t = self.tenancy(&namespace)?;
                if t.users.contains_key(&user) {
                    return Err(Exists(format!("user {user}")));
                }
                t.users.insert(
                    user,
                    User {
                        tokens: Vec::new(),
                        created_ms: now_ms,
                    },
                );
            }
            IdentityCommand::DeleteUser { namespace, user } => {
                let t = self.tenancy(&namespace)?;
                t.users.remove(&user).ok_or_else(|| Missing(format!("user {user}")))?;
                for members in t.groups.values_mut() {
                    members.remove(&user);
                }
            }
            IdentityCommand::CreateGroup { namespace, group } => {
                let t = self.tenancy(&namespace)?;
                if t.groups.contains_key(&group) {
                    return Err(Exists(format!("group {group}")));
                }
                t.groups.insert(group, BTreeSet::new());
            }
            IdentityCommand::AddToGroup { namespace, group, user } => {
                let t = self.tenancy(&namespace)?;
                if !t.users.contains_key(&user) {
                    return Err(Missing(format!("user {user}")));
                }
                t.groups
                    .get_mut(&group)
                    .ok_or_else(|| Missing(format!("group {group}")))?
                    .insert(user);
            }
            IdentityCommand::RemoveFromGroup { namespace, group, user } => {
                let t = self.tenancy(&namespace)?;
                let members = t
                    .groups
                    .get_mut(&group)
                    .ok_or_else(|| Missing(format!("group {group}")))?;
                if !members.remove(&user) {
                    return Err(Missing(format!("user {user} in group {group}")));
                }
            }
            IdentityCommand::PutPolicy {
                namespace,
                name,
                policy,
            } => {
                {
                    let t = self.tenancy(&namespace)?;
                    if let Some(c) = &policy.compartment {
                        if c != &namespace && !t.compartments.contains_key(c) {
                            return Err(Missing(format!("compartment {c}")));
                        }
                    }
                }
                // A policy attached to a compartment grants nothing outside its subtree (OCI's
                // rule): a statement reaching further is refused, not silently widened.
                if let Some(attached) = policy.compartment.as_deref().filter(|c| *c != namespace) {
                    for st in &policy.statements {
                        let inside = match &st.scope {
                            Scope::Tenancy => false,
                            Scope::Compartment(c) => {
                                c != &namespace && self.ancestry(&namespace, Some(c)).iter().any(|a| a == attached)
                            }
                        };
                        if !inside {
                            return Err(IdentityRejection::OutOfScope(format!(
                                "a policy attached to compartment {attached} can only grant access in {attached} \
                                 or its sub-compartments"
                            )));
                        }
                    }
                }
                self.tenancy(&namespace)?.policies.insert(name, policy);
            }
            IdentityCommand::DeletePolicy { namespace, name } => {
                let t = self.tenancy(&namespace)?;
                t.policies
                    .remove(&name)
                    .ok_or_else(|| Missing(format!("policy {name}")))?;
            }
            IdentityCommand::AddToken {
                namespace,
                user,
                token,
                max_tokens,
            } => {
                let t = self.tenancy(&namespace)?;
                let u = t.users.get_mut(&user).ok_or_else(|| Missing(format!("user {user}")))?;
                if u.tokens.len() >= max_tokens {
                    return Err(TooManyTokens(max_tokens));
                }
                u.tokens.push(token);
            }
            IdentityCommand::RevokeToken {
                namespace,
                user,
                token_id,
            } => {
                let t = self.tenancy(&namespace)?;
                let u = t.users.get_mut(&user).ok_or_else(|| Missing(format!("user {user}")))?;
                let before = u.tokens.len();
                u.tokens.retain(|tok| tok.id != token_id);
                if u.tokens.len() == before {
                    return Err(Missing(format!("token {token_id}")));
                }
            }
            IdentityCommand::TouchTokens { uses } => {
                for (ns, user, token_id, at) in uses {
                    let token = self
                        .tenancies
                        .get_mut(&ns)
                        .and_then(|t| t.users.get_mut(&user))
                        .and_then(|u| u.tokens.iter_mut().find(|t| t.id == token_id));
                    if let Some(token) = token {
                        token.last_used_ms = Some(token.last_used_ms.unwrap_or(0).max(at));
                    }
                }
            }
            IdentityCommand::AddSigningKey { key } => {
                self.signing_keys.push(key);
                let excess = self.signing_keys.len().saturating_sub(KEPT_SIGNING_KEYS);
                self.signing_keys.drain(..excess);
            }
            IdentityCommand::ReplaceFromHome { state } => {
                let mut state = *state;
                for (ns, tenancy) in state.tenancies.iter_mut() {
                    for (name, user) in tenancy.users.iter_mut() {
                        for token in user.tokens.iter_mut() {
                            let here = self
                                .tenancies
                                .get(ns)
                                .and_then(|t| t.users.get(name))
                                .and_then(|u| u.tokens.iter().find(|t| t.id == token.id))
                                .and_then(|t| t.last_used_ms);
                            token.last_used_ms = token.last_used_ms.max(here);
                        }
                    }
                }
                *self = state;
            }
            IdentityCommand::ResealSigningKeys { sealed } => {
                for entry in sealed {
                    if let Some(key) = self
                        .signing_keys
                        .iter_mut()
                        .find(|k| k.kid == entry.kid && stored_sha256(&k.private_pkcs8) == entry.was_sha256)
                    {
                        key.private_pkcs8 = entry.private_sealed;
                    }
                }
            }
        }
        Ok(())
    }

    /// The compartment chain of `compartment` up to the root (itself first; the root is `None`).
    pub fn ancestry(&self, ns: &str, compartment: Option<&str>) -> Vec<String> {
        let mut chain = Vec::new();
        let Some(t) = self.tenancies.get(ns) else { return chain };
        let mut current = compartment.filter(|c| *c != ns).map(str::to_string);
        while let Some(c) = current {
            if chain.contains(&c) {
                break; // defensive: a cycle cannot be created, but never loop
            }
            current = t.compartments.get(&c).and_then(|x| x.parent.clone());
            chain.push(c);
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_apply_and_reject() {
        let mut s = IdentityState::default();
        s.apply(IdentityCommand::CreateTenancy {
            namespace: "acme".into(),
            now_ms: 1,
        })
        .unwrap();
        assert!(s.tenancies["acme"].groups.contains_key(ADMINISTRATORS));
        s.apply(IdentityCommand::CreateCompartment {
            namespace: "acme".into(),
            name: "dev".into(),
            parent: None,
        })
        .unwrap();
        s.apply(IdentityCommand::CreateCompartment {
            namespace: "acme".into(),
            name: "web".into(),
            parent: Some("dev".into()),
        })
        .unwrap();
        assert_eq!(
            s.ancestry("acme", Some("web")),
            vec!["web".to_string(), "dev".to_string()]
        );
        assert!(s
            .apply(IdentityCommand::CreateCompartment {
                namespace: "acme".into(),
                name: "x".into(),
                parent: Some("nope".into())
            })
            .is_err());
        s.apply(IdentityCommand::CreateUser {
            namespace: "acme".into(),
            user: "ann".into(),
            now_ms: 2,
        })
        .unwrap();
        let token = |id: &str| AuthToken {
            id: id.into(),
            hash: "h".into(),
            description: String::new(),
            created_ms: 3,
            last_used_ms: None,
        };
        for id in ["a", "b"] {
            s.apply(IdentityCommand::AddToken {
                namespace: "acme".into(),
                user: "ann".into(),
                token: token(id),
                max_tokens: 2,
            })
            .unwrap();
        }
        let before = s.clone();
        assert_eq!(
            s.apply(IdentityCommand::AddToken {
                namespace: "acme".into(),
                user: "ann".into(),
                token: token("c"),
                max_tokens: 2
            }),
            Err(IdentityRejection::TooManyTokens(2))
        );
        assert_eq!(s, before);
        s.apply(IdentityCommand::RevokeToken {
            namespace: "acme".into(),
            user: "ann".into(),
            token_id: "a".into(),
        })
        .unwrap();
        assert_eq!(s.tenancies["acme"].users["ann"].tokens.len(), 1);
    }
}
