//! Image signing in the catalog: the keys a tenancy trusts (public keys and certificates,
//! optionally with a private key the cluster holds for server-side signing) and its
//! verification policies ("pulls of images in this scope require a valid signature by one of
//! these keys").
//!
//! The catalog holds only what was registered; parsing keys and checking signatures is the
//! API's (`keelson_api::signatures`), which validates key material before proposing it. Each
//! tenancy's keys and policies are one record each, so a manifest GET reads at most the small
//! policies record, and both are bounded.
//!
//! Keys (`lifecycle` family): `sgk\0<ns>` → [`TenancyKeys`], `sgp\0<ns>` → [`TenancyPolicies`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Keys one tenancy may register.
pub const MAX_KEYS_PER_TENANCY: usize = 50;
/// Verification policies one tenancy may have.
pub const MAX_POLICIES_PER_TENANCY: usize = 50;
/// Keys one policy may name.
pub const MAX_KEYS_PER_POLICY: usize = 10;
/// Longest PEM text of a key or certificate.
pub const MAX_PEM_LEN: usize = 16 * 1024;
/// Longest sealed private key.
pub const MAX_PRIVATE_LEN: usize = 4 * 1024;

/// Where a key is trusted, or a policy applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustScope {
    /// Every repository of the tenancy.
    Tenancy,
    /// The repositories of a compartment and of its sub-compartments.
    Compartment(String),
    /// One repository.
    Repository(String),
}

impl TrustScope {
    /// Reads `tenancy`, `compartment:<name>` or `repository:<name>`.
    pub fn parse(text: &str) -> Option<TrustScope> {
        match text.split_once(':') {
            None if text == "tenancy" => Some(TrustScope::Tenancy),
            Some(("compartment", name)) if !name.is_empty() => Some(TrustScope::Compartment(name.to_string())),
            Some(("repository", name)) if !name.is_empty() => Some(TrustScope::Repository(name.to_string())),
            _ => None,
        }
    }

    /// Whether it covers `repo`, whose compartment chain (itself first, up to the root) is
    /// `ancestry`.
    pub fn covers(&self, repo: &str, ancestry: &[String]) -> bool {
        match self {
            TrustScope::Tenancy => true,
            TrustScope::Compartment(c) => ancestry.iter().any(|a| a == c),
            TrustScope::Repository(r) => r == repo,
        }
    }
}

impl std::fmt::Display for TrustScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustScope::Tenancy => write!(f, "tenancy"),
            TrustScope::Compartment(c) => write!(f, "compartment:{c}"),
            TrustScope::Repository(r) => write!(f, "repository:{r}"),
        }
    }
}

/// What a registered key's PEM holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyMaterial {
    /// A public key (SubjectPublicKeyInfo), as `cosign generate-key-pair` writes.
    PublicKey,
    /// A trust anchor certificate: signatures whose certificate chains to it verify (notation).
    Certificate,
}

/// A key a tenancy trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKey {
    pub scope: TrustScope,
    pub material: KeyMaterial,
    pub pem: String,
    /// The private key (PKCS#8), sealed under the master key when encryption at rest is on,
    /// when the cluster made the key and signs with it.
    pub private: Option<Vec<u8>>,
    pub created_ms: u64,
}

/// Pulls of images in `scope` require a valid signature by one of `keys` (when any are named)
/// and no vulnerability finding at or above `refuse_severity` (when set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationPolicy {
    pub scope: TrustScope,
    pub keys: Vec<String>,
    pub refuse_severity: Option<crate::scanning::Severity>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenancyKeys {
    pub keys: BTreeMap<String, TrustedKey>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenancyPolicies {
    pub policies: BTreeMap<String, VerificationPolicy>,
}

impl TenancyPolicies {
    /// The policies that apply to `repo`, by name.
    pub fn applying<'a>(
        &'a self,
        repo: &'a str,
        ancestry: &'a [String],
    ) -> impl Iterator<Item = (&'a String, &'a VerificationPolicy)> + 'a {
        self.policies
            .iter()
            .filter(move |(_, p)| p.scope.covers(repo, ancestry))
    }
}

/// A change to a tenancy's keys or policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningCommand {
    /// Registers or replaces a key.
    PutKey {
        ns: String,
        name: String,
        key: TrustedKey,
    },
    /// Removes a key no policy names.
    DeleteKey {
        ns: String,
        name: String,
    },
    /// Creates or replaces a policy; every key it names must be registered.
    PutPolicy {
        ns: String,
        name: String,
        policy: VerificationPolicy,
    },
    DeletePolicy {
        ns: String,
        name: String,
    },
    /// Private keys sealed anew under the active master key; each replaces the stored bytes
    /// only while they still hash to `was_sha256`.
    ResealKeys {
        keys: Vec<ResealedImageKey>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealedImageKey {
    pub ns: String,
    pub name: String,
    pub was_sha256: [u8; 32],
    pub sealed: Vec<u8>,
}

pub(crate) const KEYS_PREFIX: &[u8] = b"sgk\0";
pub(crate) const POLICIES_PREFIX: &[u8] = b"sgp\0";

pub(crate) fn keys_key(ns: &str) -> Vec<u8> {
    [KEYS_PREFIX, ns.as_bytes()].concat()
}

pub(crate) fn policies_key(ns: &str) -> Vec<u8> {
    [POLICIES_PREFIX, ns.as_bytes()].concat()
}

/// A valid key or policy name: 1 to 64 of `a-z 0-9 - _ .`.
pub fn valid_name(name: &str) -> bool {
    crate::webhooks::valid_name(name)
}

/// Why a key cannot be registered, when it cannot.
pub fn invalid_key(key: &TrustedKey) -> Option<String> {
    if key.pem.is_empty() || key.pem.len() > MAX_PEM_LEN {
        return Some(format!("a key's PEM text has 1 to {MAX_PEM_LEN} bytes"));
    }
    if key
        .private
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > MAX_PRIVATE_LEN)
    {
        return Some("a held private key is 1 to 4096 bytes".into());
    }
    if key.private.is_some() && key.material != KeyMaterial::PublicKey {
        return Some("only a public key can be held with its private key".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_cover() {
        let chain = vec!["team".to_string(), "acme".to_string()];
        assert_eq!(TrustScope::parse("tenancy"), Some(TrustScope::Tenancy));
        let c = TrustScope::parse("compartment:team").unwrap();
        assert!(c.covers("acme/app", &chain));
        assert!(!TrustScope::Compartment("other".into()).covers("acme/app", &chain));
        let r = TrustScope::parse("repository:acme/app").unwrap();
        assert!(r.covers("acme/app", &chain));
        assert!(!r.covers("acme/web", &chain));
        assert_eq!(r.to_string(), "repository:acme/app");
        for bad in ["", "compartment:", "repo:x", "tenancy:x", "everything"] {
            assert_eq!(TrustScope::parse(bad), None, "{bad}");
        }
    }
}
