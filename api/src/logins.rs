//! A login (`<namespace>/<user>` and an auth token) checked the same way wherever it arrives:
//! the Basic header of a registry call, the token endpoint, the console's sign-in.
//!
//! Why it exists: identity is replicated, so a token created a moment ago through another node
//! may not be applied on this one yet. A login this node does not recognise is checked again
//! after catching up with the log (a read index), so a fresh token works on every node at once;
//! the failure is counted against the user and address only when the second check fails too.

use std::net::IpAddr;

use crate::auth::{self, AuthError, Principal};
use crate::error::ApiError;
use crate::registry::Registry;

/// A login that passed: who it is and the id of the token it presented.
pub struct Login {
    pub principal: Principal,
    pub token_id: Option<String>,
}

/// Why a login was refused.
pub enum Refused {
    /// The user or address is backing off after failures.
    Throttled(ApiError),
    /// Unknown user or token, after catching up with the log.
    Credentials(AuthError),
}

/// Checks `user`'s `password`, catching up with the log before refusing it.
pub async fn check(reg: &Registry, remote: Option<IpAddr>, user: &str, password: &str) -> Result<Login, Refused> {
    reg.rate_limits.admit_login(user, remote).map_err(Refused::Throttled)?;
    let mut result = attempt(reg, user, password);
    if result.is_err() && reg.catalog.linearizable().await.is_ok() {
        result = attempt(reg, user, password);
    }
    reg.rate_limits.login_result(user, remote, result.is_ok());
    result.map_err(Refused::Credentials)
}

fn attempt(reg: &Registry, user: &str, password: &str) -> Result<Login, AuthError> {
    reg.catalog.reader().with_identity(|state| {
        let principal = auth::login(state, user, password)?;
        let token_id = auth::token_id_of(state, &principal, password);
        Ok(Login { principal, token_id })
    })
}
