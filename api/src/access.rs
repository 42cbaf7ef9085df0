//! The single place where every request is authorised.
//!
//! Each route states the [`Action`] it performs on which repository; [`authorize`] decides from
//! the caller's [`Principal`], the repository's compartment and visibility, and the tenancy's
//! policies. Denials never reveal whether a private repository exists: an anonymous caller is
//! challenged (401) and an authenticated one refused (403) the same way for a repository that
//! exists as for one that does not.

use std::ops::Deref;

use http::StatusCode;
use keelson_raft::identity::{IdentityState, Verb, ADMINISTRATORS};
use keelson_raft::CatalogReader;

use crate::auth::jwt::SERVICE;
use crate::auth::policy::allows;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::registry::Registry;

/// What a request does to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// List tags, referrers.
    Inspect,
    /// Pull manifests and blobs.
    Pull,
    /// Push to the repository (creates it when missing, which needs `manage`).
    Push,
    /// Delete manifests, tags, blobs or the repository.
    Delete,
    /// Change visibility, compartment or retention.
    Administer,
}

impl Action {
    /// The action name of Docker's token scopes.
    pub fn token_action(self) -> &'static str {
        match self {
            Action::Inspect | Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Administer => "*",
        }
    }

    /// The scope to ask for in a challenge.
    fn challenge_actions(self) -> &'static str {
        match self {
            Action::Inspect | Action::Pull => "pull",
            Action::Push => "pull,push",
            Action::Delete => "delete",
            Action::Administer => "*",
        }
    }
}

/// Whether credentials are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Identity and policies enforced on every route (the default).
    Enforce,
    /// Every request allowed (local development and benchmarks only).
    Off,
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// Scheme and `Host` the client used (`https://registry.example.com`), for the token realm.
    pub origin: String,
    /// The address the connection comes from (the balancer's, behind `keelson lb`).
    pub remote: Option<std::net::IpAddr>,
}

/// A request's context: the registry and who is calling. Handlers take this instead of the bare
/// registry so no handler can forget whose request it serves.
pub struct Cx<'a> {
    pub reg: &'a Registry,
    pub caller: Caller,
}

impl<'a> Cx<'a> {
    /// The node itself acting (a cache fill, replication, the first signing key): the cluster
    /// administrator's rights, no client address.
    pub fn internal(reg: &'a Registry) -> Cx<'a> {
        Cx {
            reg,
            caller: Caller {
                principal: crate::auth::Principal::Admin,
                origin: String::new(),
                remote: None,
            },
        }
    }
}

impl Deref for Cx<'_> {
    type Target = Registry;

    fn deref(&self) -> &Registry {
        self.reg
    }
}

/// 401 with Docker's Bearer challenge for `scope`.
pub fn challenge(origin: &str, scope: Option<String>) -> ApiError {
    let mut value = format!("Bearer realm=\"{origin}/token\",service=\"{SERVICE}\"");
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    ApiError::new(ErrorCode::Unauthorized, "authentication required").with_header("WWW-Authenticate", value)
}

fn denied() -> ApiError {
    ApiError::new(ErrorCode::Denied, "requested access to the resource is denied")
}

/// Whether a tenancy user may perform `action` on `repo` under the policies.
pub fn user_may(
    state: &IdentityState,
    reader: &CatalogReader,
    ns: &str,
    user: &str,
    action: Action,
    repo: &str,
) -> bool {
    let Some((repo_ns, path)) = repo.split_once('/') else {
        return false;
    };
    if repo_ns != ns {
        return false;
    }
    let record = match reader.repo(repo) {
        Ok(r) => r,
        Err(_) => return false,
    };
    let verb = match action {
        Action::Inspect => Verb::Inspect,
        Action::Pull => Verb::Read,
        Action::Push if record.is_some() => Verb::Use,
        Action::Push | Action::Delete | Action::Administer => Verb::Manage,
    };
    let compartment = record.as_ref().and_then(|r| r.compartment.as_deref());
    allows(state, ns, user, verb, compartment, path)
}

/// Whether anyone may perform `action` on `repo` without credentials.
fn public_allows(reader: &CatalogReader, action: Action, repo: &str) -> bool {
    matches!(action, Action::Inspect | Action::Pull) && matches!(reader.repo(repo), Ok(Some(r)) if r.public)
}

/// Decides whether the caller may perform `action` on `repo`.
pub fn authorize(cx: &Cx<'_>, action: Action, repo: &str) -> Result<(), ApiError> {
    if cx.auth_mode == AuthMode::Off {
        return Ok(());
    }
    let reader = cx.catalog.reader();
    let scope = || Some(format!("repository:{repo}:{}", action.challenge_actions()));
    match &cx.caller.principal {
        Principal::Admin => Ok(()),
        Principal::Bearer { access, .. } => {
            let wanted = action.token_action();
            let granted = access
                .iter()
                .any(|a| a.kind == "repository" && a.name == repo && a.actions.iter().any(|x| x == wanted || x == "*"));
            if granted || public_allows(reader, action, repo) {
                Ok(())
            } else {
                Err(challenge(&cx.caller.origin, scope()))
            }
        }
        Principal::User { namespace, user, .. } => {
            let ok = reader.with_identity(|state| user_may(state, reader, namespace, user, action, repo));
            if ok || public_allows(reader, action, repo) {
                Ok(())
            } else {
                Err(denied())
            }
        }
        Principal::Anonymous => {
            if public_allows(reader, action, repo) {
                Ok(())
            } else {
                Err(challenge(&cx.caller.origin, scope()))
            }
        }
    }
}

/// Whether the caller may see `repo` in the catalog listing.
pub fn may_list(cx: &Cx<'_>, repo: &str) -> bool {
    let reader = cx.catalog.reader();
    match &cx.caller.principal {
        _ if cx.auth_mode == AuthMode::Off => true,
        Principal::Admin => true,
        Principal::User { namespace, user, .. } => {
            reader.with_identity(|s| user_may(s, reader, namespace, user, Action::Inspect, repo))
                || public_allows(reader, Action::Inspect, repo)
        }
        Principal::Bearer { sub, .. } => {
            let by_policy = match crate::auth::split_username(sub) {
                Some((ns, user)) => reader.with_identity(|s| user_may(s, reader, ns, user, Action::Inspect, repo)),
                None => false,
            };
            by_policy || public_allows(reader, Action::Inspect, repo)
        }
        Principal::Anonymous => public_allows(reader, Action::Inspect, repo),
    }
}

/// Requires some identity for registry-wide routes (the catalog); anonymous callers are challenged.
pub fn require_identity(cx: &Cx<'_>, scope: Option<&str>) -> Result<(), ApiError> {
    if cx.auth_mode == AuthMode::Off || cx.caller.principal != Principal::Anonymous {
        Ok(())
    } else {
        Err(challenge(&cx.caller.origin, scope.map(str::to_string)))
    }
}

/// Management of tenancy `ns` (users, groups, policies, repositories): the cluster administrator
/// or a member of the tenancy's Administrators group.
pub fn administer_tenancy(cx: &Cx<'_>, ns: &str) -> Result<(), ApiError> {
    if cx.auth_mode == AuthMode::Off {
        return Ok(());
    }
    match &cx.caller.principal {
        Principal::Admin => Ok(()),
        Principal::User { namespace, user, .. } if namespace == ns => {
            let is_admin = cx.catalog.reader().with_identity(|s| {
                s.tenancies
                    .get(ns)
                    .and_then(|t| t.groups.get(ADMINISTRATORS))
                    .is_some_and(|m| m.contains(user))
            });
            if is_admin {
                Ok(())
            } else {
                Err(denied())
            }
        }
        Principal::Anonymous => Err(challenge(&cx.caller.origin, None)),
        _ => Err(denied()),
    }
}

/// Cluster-wide management (tenancies, membership, signing keys): the cluster administrator.
pub fn administer_cluster(cx: &Cx<'_>) -> Result<(), ApiError> {
    match &cx.caller.principal {
        _ if cx.auth_mode == AuthMode::Off => Ok(()),
        Principal::Admin => Ok(()),
        Principal::Anonymous => Err(challenge(&cx.caller.origin, None)),
        _ => Err(denied()),
    }
}

/// A user's own account (their auth tokens): the user, their tenancy's administrators, or the
/// cluster administrator.
pub fn administer_user(cx: &Cx<'_>, ns: &str, user: &str) -> Result<(), ApiError> {
    match &cx.caller.principal {
        Principal::User {
            namespace, user: me, ..
        } if namespace == ns && me == user => Ok(()),
        _ => administer_tenancy(cx, ns),
    }
}

impl ApiError {
    /// For a management route: 404 with a message.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message).with_status(StatusCode::NOT_FOUND)
    }
}
