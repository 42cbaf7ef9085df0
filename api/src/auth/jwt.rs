//! Docker registry tokens: short-lived EdDSA-signed JWTs whose `access` claim lists exactly what
//! the policies granted, and long-lived refresh tokens. Signing keys live in the replicated
//! catalog, so every node verifies what any node issued; the newest key signs, older kept keys
//! still verify, which makes rotation seamless. With encryption at rest a key's private half is
//! stored sealed by the cluster master key and opened only to sign.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keelson_raft::identity::{IdentityState, SigningKey};
use keelson_storage::at_rest::{keys::open_secret, KeyError, MasterKeys};
use serde::{Deserialize, Serialize};

/// The `service` the registry names itself in challenges and tokens.
pub const SERVICE: &str = "keelson";
const ISSUER: &str = "keelson";
/// Lifetime of an access token.
pub const ACCESS_TTL_SECS: u64 = 300;
/// Lifetime of a refresh token.
pub const REFRESH_TTL_SECS: u64 = 30 * 24 * 3600;

/// One granted resource in the `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// `<namespace>/<user>`, or empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    /// `access` or `refresh`.
    pub typ: String,
    /// The auth token a refresh token was issued from (revoking it revokes the refresh token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no signing key yet")]
    NoKey,
    #[error("the signing key cannot be opened: {0}")]
    Sealed(#[from] KeyError),
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Signs `claims` with the newest key (its private half opened with `keys` when sealed).
pub fn sign(state: &IdentityState, claims: &Claims, keys: Option<&MasterKeys>) -> Result<String, TokenError> {
    let key = state.signing_keys.last().ok_or(TokenError::NoKey)?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    let private = open_secret(keys, &key.private_pkcs8)?;
    Ok(jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ed_der(&private),
    )?)
}

/// Whether `token` names a signing key `state` does not hold (yet): a key made a moment ago on
/// another node that this one has not applied.
pub fn names_unknown_key(state: &IdentityState, token: &str) -> bool {
    jsonwebtoken::decode_header(token)
        .ok()
        .and_then(|h| h.kid)
        .is_some_and(|kid| !state.signing_keys.iter().any(|k| k.kid == kid))
}

/// Verifies a token's signature, expiry and audience; returns its claims.
pub fn verify(state: &IdentityState, token: &str) -> Result<Claims, TokenError> {
    let header = jsonwebtoken::decode_header(token)?;
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    let key = state
        .signing_keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(TokenError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[SERVICE]);
    validation.set_issuer(&[ISSUER]);
    validation.leeway = 30;
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_ed_der(&key.public), &validation)?;
    Ok(data.claims)
}

/// Builds claims for `sub` valid from `now_secs` for `ttl`.
pub fn claims(sub: &str, access: Vec<Access>, typ: &str, tid: Option<String>, now_secs: u64, ttl: u64) -> Claims {
    Claims {
        iss: ISSUER.into(),
        sub: sub.into(),
        aud: SERVICE.into(),
        exp: now_secs + ttl,
        nbf: now_secs.saturating_sub(1),
        iat: now_secs,
        jti: crate::auth::random_id(12),
        access,
        typ: typ.into(),
        tid,
    }
}

/// A fresh Ed25519 key pair, its private half sealed with `keys` when given.
pub fn generate_key(now_ms: u64, keys: Option<&MasterKeys>) -> Result<SigningKey, ring::error::Unspecified> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| ring::error::Unspecified)?;
    Ok(SigningKey {
        kid: crate::auth::random_id(8),
        private_pkcs8: match keys {
            Some(keys) => keys.seal_secret(pkcs8.as_ref()),
            None => pkcs8.as_ref().to_vec(),
        },
        public: pair.public_key().as_ref().to_vec(),
        created_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_rotate() {
        let mut state = IdentityState::default();
        state.signing_keys.push(generate_key(1, None).unwrap());
        let c = claims("acme/ann", vec![], "access", None, 1_000_000_000_000, 300);
        let old = sign(&state, &claims("acme/ann", vec![], "access", None, now(), 300), None).unwrap();
        assert_eq!(verify(&state, &old).unwrap().sub, "acme/ann");
        // Expired
        let expired = sign(&state, &claims("acme/ann", vec![], "access", None, 1000, 300), None).unwrap();
        assert!(verify(&state, &expired).is_err());
        // Rotation: old tokens still verify, new ones use the new key.
        state.signing_keys.push(generate_key(2, None).unwrap());
        assert!(verify(&state, &old).is_ok());
        let fresh = sign(&state, &claims("acme/bob", vec![], "access", None, now(), 300), None).unwrap();
        assert_eq!(verify(&state, &fresh).unwrap().sub, "acme/bob");
        // A key the cluster does not know is refused.
        let mut other = IdentityState::default();
        other.signing_keys.push(generate_key(3, None).unwrap());
        assert!(verify(&other, &fresh).is_err());
        let _ = c;
    }

    #[test]
    fn a_sealed_key_signs_only_with_the_master_key() {
        let keys = MasterKeys::parse("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap();
        let mut state = IdentityState::default();
        let key = generate_key(1, Some(&keys)).unwrap();
        // The stored private half is not a PKCS#8 document (which starts with a SEQUENCE).
        assert_ne!(key.private_pkcs8[0], 0x30);
        state.signing_keys.push(key);
        let token = sign(
            &state,
            &claims("acme/ann", vec![], "access", None, now(), 300),
            Some(&keys),
        )
        .unwrap();
        assert_eq!(verify(&state, &token).unwrap().sub, "acme/ann");
        assert!(matches!(
            sign(&state, &claims("acme/ann", vec![], "access", None, now(), 300), None),
            Err(TokenError::Sealed(_))
        ));
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}
