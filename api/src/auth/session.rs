//! Console sessions. Signing in to the web console with `<namespace>/<user>` and an auth token
//! yields a registry-signed JWT of type `session`, carried in an HttpOnly, SameSite=Strict
//! cookie (Secure under TLS). Every node verifies it with the replicated signing keys, so a
//! session works behind any balancer; it names the auth token it was made with, so revoking
//! that token ends it; it expires on the registry's clock (injectable in tests).
//!
//! A cookie is sent by the browser on its own, so a change made with one must also carry the
//! session's CSRF token in the `X-Keelson-CSRF` header: a digest of the session that only a
//! page able to read the session answer knows (a forged cross-site form can set no header).

use sha2::{Digest as _, Sha256};

use super::jwt::{self, Claims};
use super::{AuthError, Principal};
use keelson_raft::identity::IdentityState;

/// The cookie's name.
pub const COOKIE: &str = "keelson_session";
/// The header a change authenticated by the cookie must carry.
pub const CSRF_HEADER: &str = "x-keelson-csrf";
/// The JWT type of a session.
pub const TYPE: &str = "session";

/// The session token in a `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then_some(value)
    })
}

/// The CSRF token bound to a session.
pub fn csrf_token(session: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"keelson console csrf\0");
    h.update(session.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Whether `presented` is the CSRF token of `session` (compared in constant time).
pub fn csrf_matches(session: &str, presented: Option<&str>) -> bool {
    let want = csrf_token(session);
    presented.is_some_and(|p| super::constant_eq(p, &want))
}

/// The caller a session stands for, checked against the identity state and the registry clock.
pub fn principal(state: &IdentityState, session: &str, now_secs: u64) -> Result<(Principal, Claims), AuthError> {
    let claims = jwt::verify(state, session).map_err(|_| AuthError::SessionExpired)?;
    if claims.typ != TYPE {
        return Err(AuthError::BadCredentials);
    }
    if claims.exp <= now_secs {
        return Err(AuthError::SessionExpired);
    }
    let principal = super::resume(state, &claims)?;
    Ok((principal, claims))
}

/// `Set-Cookie` for a new session lasting `ttl_secs`.
pub fn set_cookie(session: &str, ttl_secs: u64, secure: bool) -> String {
    format!(
        "{COOKIE}={session}; Path=/; Max-Age={ttl_secs}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        assert_eq!(from_cookie_header("a=1; keelson_session=xyz; b=2"), Some("xyz"));
        assert_eq!(from_cookie_header("keelson_session="), None);
        assert_eq!(from_cookie_header("other=1"), None);
    }

    #[test]
    fn csrf_tokens_bind_to_their_session() {
        let t = csrf_token("s1");
        assert!(csrf_matches("s1", Some(&t)));
        assert!(!csrf_matches("s2", Some(&t)));
        assert!(!csrf_matches("s1", None));
    }

    #[test]
    fn cookies_are_http_only_and_strict() {
        let c = set_cookie("tok", 60, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie("tok", 60, false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
