//! Docker registry tokens: short-lived EdDSA-signed JWTs whose `access` claim lists exactly what
//! the policies granted, and long-lived refresh tokens. Signing keys live in the replicated
//! catalog, so every node verifies what any node issued; the newest key signs, older kept keys
//! still verify, which makes rotation seamless.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keelson_raft::identity::{IdentityState, SigningKey};
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
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Signs `claims` with the newest key.
pub fn sign(state: &IdentityState, claims: &Claims) -> Result<String, TokenError> {
    let key = state.signing_keys.last().ok_or(TokenError::NoKey)?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    Ok(jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_ed_der(&key.private_pkcs8),
    )?)
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

/// A fresh Ed25519 key pair.
pub fn generate_key(now_ms: u64) -> Result<SigningKey, ring::error::Unspecified> {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| ring::error::Unspecified)?;
    Ok(SigningKey {
        kid: crate::auth::random_id(8),
        private_pkcs8: pkcs8.as_ref().to_vec(),
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
        state.signing_keys.push(generate_key(1).unwrap());
        let c = claims("acme/ann", vec![], "access", None, 1_000_000_000_000, 300);
        let old = sign(&state, &claims("acme/ann", vec![], "access", None, now(), 300)).unwrap();
        assert_eq!(verify(&state, &old).unwrap().sub, "acme/ann");
        // Expired
        let expired = sign(&state, &claims("acme/ann", vec![], "access", None, 1000, 300)).unwrap();
        assert!(verify(&state, &expired).is_err());
        // Rotation: old tokens still verify, new ones use the new key.
        state.signing_keys.push(generate_key(2).unwrap());
        assert!(verify(&state, &old).is_ok());
        let fresh = sign(&state, &claims("acme/bob", vec![], "access", None, now(), 300)).unwrap();
        assert_eq!(verify(&state, &fresh).unwrap().sub, "acme/bob");
        // A key the cluster does not know is refused.
        let mut other = IdentityState::default();
        other.signing_keys.push(generate_key(3).unwrap());
        assert!(verify(&other, &fresh).is_err());
        let _ = c;
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}
