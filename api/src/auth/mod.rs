//! Who is asking: credentials on a request (Basic with an auth token, or a Bearer JWT from the
//! token endpoint) resolved against the replicated identity state into a [`Principal`].
//!
//! Auth tokens are random (192 bits), shown once, and stored only as their SHA-256; they never
//! reach a log line. A login names the user as `<namespace>/<user>` (or the federated alias
//! `<namespace>/oracleidentitycloudservice/<user>`); the cluster administrator is `keelson/admin`.

pub mod jwt;
pub mod policy;
pub mod session;

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use keelson_raft::identity::IdentityState;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

/// The reserved namespace of the cluster administrator.
pub const SYSTEM_NAMESPACE: &str = "keelson";
/// The cluster administrator's user name.
pub const ADMIN_USER: &str = "admin";

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    /// The cluster administrator (bootstrap token).
    Admin,
    /// A tenancy user who presented an auth token.
    User {
        namespace: String,
        user: String,
        token_id: String,
    },
    /// A caller holding a registry token; what it may do is exactly its `access` claim.
    Bearer {
        sub: String,
        access: Vec<jwt::Access>,
        /// Expiry (seconds since the epoch).
        exp: u64,
    },
}

impl Principal {
    /// Who this is, as one name (`<namespace>/<user>`, `keelson/admin`, a token's subject, or
    /// `anonymous`): what per-user bounds and limits count by.
    pub fn subject(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::Admin => "keelson/admin".into(),
            Principal::User { namespace, user, .. } => format!("{namespace}/{user}"),
            Principal::Bearer { sub, .. } => sub.clone(),
        }
    }
}

/// Why credentials were refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed Authorization header")]
    Malformed,
    #[error("invalid username or auth token")]
    BadCredentials,
    #[error("the auth token behind this session or refresh token was revoked")]
    Revoked,
    #[error("the session expired; sign in again")]
    SessionExpired,
    #[error(transparent)]
    Token(#[from] jwt::TokenError),
}

/// A random identifier of `bytes` random bytes, hex.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A new auth token (the secret shown once to its owner).
pub fn new_auth_token() -> String {
    let mut buf = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// What the catalog stores of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Splits a login name into (namespace, user), accepting the federated alias form.
pub fn split_username(username: &str) -> Option<(&str, &str)> {
    let mut parts = username.split('/');
    let ns = parts.next().filter(|s| !s.is_empty())?;
    let second = parts.next().filter(|s| !s.is_empty())?;
    match (parts.next(), parts.next()) {
        (None, _) => Some((ns, second)),
        (Some(user), None) if second == "oracleidentitycloudservice" && !user.is_empty() => Some((ns, user)),
        _ => None,
    }
}

/// Checks a username and auth token.
pub fn login(state: &IdentityState, username: &str, password: &str) -> Result<Principal, AuthError> {
    let (ns, user) = split_username(username).ok_or(AuthError::BadCredentials)?;
    let hash = hash_token(password);
    if ns == SYSTEM_NAMESPACE && user == ADMIN_USER {
        return if state.admin_tokens.iter().any(|t| constant_eq(&t.hash, &hash)) {
            Ok(Principal::Admin)
        } else {
            Err(AuthError::BadCredentials)
        };
    }
    let account = state
        .tenancies
        .get(ns)
        .and_then(|t| t.users.get(user))
        .ok_or(AuthError::BadCredentials)?;
    let token = account
        .tokens
        .iter()
        .find(|t| constant_eq(&t.hash, &hash))
        .ok_or(AuthError::BadCredentials)?;
    Ok(Principal::User {
        namespace: ns.to_string(),
        user: user.to_string(),
        token_id: token.id.clone(),
    })
}

/// The caller a signed token (a refresh token or a console session) stands for: its subject,
/// as long as the auth token it was issued against (`tid`) still exists, so revoking that token
/// ends every session and refresh token made with it.
pub fn resume(state: &IdentityState, claims: &jwt::Claims) -> Result<Principal, AuthError> {
    let (ns, user) = split_username(&claims.sub).ok_or(AuthError::BadCredentials)?;
    let tid = claims.tid.clone().unwrap_or_default();
    if ns == SYSTEM_NAMESPACE && user == ADMIN_USER {
        return if state.admin_tokens.iter().any(|t| t.id == tid) {
            Ok(Principal::Admin)
        } else {
            Err(AuthError::Revoked)
        };
    }
    let still_valid = state
        .tenancies
        .get(ns)
        .and_then(|t| t.users.get(user))
        .is_some_and(|u| u.tokens.iter().any(|t| t.id == tid));
    if !still_valid {
        return Err(AuthError::Revoked);
    }
    Ok(Principal::User {
        namespace: ns.into(),
        user: user.into(),
        token_id: tid,
    })
}

/// The id of the auth token a login presented: the user's token, or the administrator token
/// whose hash matches `password`.
pub fn token_id_of(state: &IdentityState, principal: &Principal, password: &str) -> Option<String> {
    match principal {
        Principal::User { token_id, .. } => Some(token_id.clone()),
        Principal::Admin => {
            let hash = hash_token(password);
            state
                .admin_tokens
                .iter()
                .find(|t| constant_eq(&t.hash, &hash))
                .map(|t| t.id.clone())
        }
        _ => None,
    }
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes `Basic base64(user:password)`.
pub fn basic_credentials(value: &str) -> Result<(String, String), AuthError> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or(AuthError::Malformed)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthError::Malformed)?;
    let text = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
    let (user, password) = text.split_once(':').ok_or(AuthError::Malformed)?;
    Ok((user.to_string(), password.to_string()))
}

/// Resolves an `Authorization` header (absent = anonymous).
pub fn authenticate(state: &IdentityState, authorization: Option<&str>) -> Result<Principal, AuthError> {
    let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Principal::Anonymous);
    };
    if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) {
        let claims = jwt::verify(state, token.trim())?;
        if claims.typ != "access" {
            return Err(AuthError::BadCredentials);
        }
        return Ok(Principal::Bearer {
            sub: claims.sub,
            access: claims.access,
            exp: claims.exp,
        });
    }
    let (user, password) = basic_credentials(value)?;
    login(state, &user, &password)
}

/// Registry tokens this node has already verified, so a client reusing its token for many
/// requests pays for one signature check, not one per request. Entries die with the token.
#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<HashMap<String, (Principal, u64)>>,
}

/// Tokens remembered at most (the map is emptied when full; it refills on demand).
const VERIFIED_MAX: usize = 10_000;

impl VerifiedTokens {
    pub fn get(&self, authorization: &str, now_secs: u64) -> Option<Principal> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(authorization)
            .filter(|(_, exp)| *exp > now_secs)
            .map(|(p, _)| p.clone())
    }

    pub fn insert(&self, authorization: &str, principal: Principal, exp: u64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= VERIFIED_MAX {
            map.clear();
        }
        map.insert(authorization.to_string(), (principal, exp));
    }
}

/// Last use of each auth token seen by this node, flushed to the catalog in batches.
#[derive(Default)]
pub struct TokenUses {
    seen: Mutex<HashMap<(String, String, String), u64>>,
}

impl TokenUses {
    pub fn record(&self, principal: &Principal, now_ms: u64) {
        if let Principal::User {
            namespace,
            user,
            token_id,
        } = principal
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.insert((namespace.clone(), user.clone(), token_id.clone()), now_ms);
        }
    }

    /// Takes everything recorded since the last call.
    pub fn take(&self) -> Vec<(String, String, String, u64)> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.drain().map(|((n, u, t), at)| (n, u, t, at)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_raft::identity::{AuthToken, IdentityCommand};

    #[test]
    fn login_forms() {
        assert_eq!(split_username("acme/ann"), Some(("acme", "ann")));
        assert_eq!(
            split_username("acme/oracleidentitycloudservice/ann"),
            Some(("acme", "ann"))
        );
        assert_eq!(split_username("acme"), None);
        assert_eq!(split_username("acme/x/ann"), None);
        let mut s = IdentityState::default();
        s.apply(IdentityCommand::CreateTenancy {
            namespace: "acme".into(),
            now_ms: 0,
        })
        .unwrap();
        s.apply(IdentityCommand::CreateUser {
            namespace: "acme".into(),
            user: "ann".into(),
            now_ms: 0,
        })
        .unwrap();
        let secret = new_auth_token();
        assert!(secret.len() >= 32);
        let token = AuthToken {
            id: "t1".into(),
            hash: hash_token(&secret),
            description: String::new(),
            created_ms: 0,
            last_used_ms: None,
        };
        s.apply(IdentityCommand::AddToken {
            namespace: "acme".into(),
            user: "ann".into(),
            token,
            max_tokens: 2,
        })
        .unwrap();
        assert!(matches!(login(&s, "acme/ann", &secret), Ok(Principal::User { .. })));
        assert!(matches!(
            login(&s, "acme/oracleidentitycloudservice/ann", &secret),
            Ok(Principal::User { .. })
        ));
        assert!(login(&s, "acme/ann", "wrong").is_err());
        assert!(login(&s, "other/ann", &secret).is_err());
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("acme/ann:{secret}"))
        );
        assert!(matches!(authenticate(&s, Some(&header)), Ok(Principal::User { .. })));
        assert_eq!(authenticate(&s, None).unwrap(), Principal::Anonymous);
        assert!(authenticate(&s, Some("Basic !!!")).is_err());
    }
}
