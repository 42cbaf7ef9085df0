//! The management REST API (`/api/v1/…`, JSON): tenancies, compartments, users, groups, policies,
//! auth tokens, repositories and signing-key rotation. Each route checks who may manage what
//! (cluster administrator, tenancy administrators, a user for their own tokens); `keelson admin`
//! is a thin client of these routes.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use keelson_raft::identity::{AuthToken, IdentityCommand, Policy};
use keelson_raft::{CatalogCommand, RedundancyPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

use super::lifecycle::{self, RepoLifecycleBody};
use super::{bad_request, commit, json_reply, ok, read_json};
use crate::access::{self, Action, Cx};
use crate::auth::{self, policy, SYSTEM_NAMESPACE};
use crate::body::Body;
use crate::error::{ApiError, ErrorCode};
use crate::names;

/// Names of users, groups, compartments and policies.
fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.chars().all(|c| c.is_ascii_alphanumeric() || " ._-@".contains(c))
        && !name.starts_with(' ')
        && !name.ends_with(' ');
    ok.then_some(())
        .ok_or_else(|| bad_request(format!("invalid name {name:?}")))
}

fn valid_namespace(ns: &str) -> Result<(), ApiError> {
    names::validate_repo(&format!("{ns}/x")).map_err(|_| bad_request(format!("invalid namespace {ns:?}")))?;
    if ns.contains('/') || ns == SYSTEM_NAMESPACE {
        return Err(bad_request(format!("namespace {ns:?} is reserved or invalid")));
    }
    Ok(())
}

/// A new compartment, user or group of a tenancy.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NameBody {
    /// Letters, digits, space, `.`, `_`, `-` and `@`; at most 100 characters.
    name: String,
    /// The parent compartment (compartments only; absent: the tenancy's root).
    #[serde(default)]
    parent: Option<String>,
}

/// A new tenancy.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct NamespaceBody {
    /// The tenancy's namespace: the first component of its repository names.
    namespace: String,
}

/// A new auth token.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct TokenBody {
    #[serde(default)]
    description: String,
}

/// A policy: statements such as `allow group G to manage repos in compartment C`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct PolicyBody {
    /// The compartment the policy is attached to (absent: the tenancy's root).
    #[serde(default)]
    compartment: Option<String>,
    statements: Vec<String>,
}

/// A repository to create (`name` required) or the settings to change (every field optional).
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct RepoBody {
    /// The repository, `<namespace>/<path>` (creation only; a change names it in the path).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    public: Option<bool>,
    /// `""` moves the repository back to the root compartment.
    #[serde(default)]
    compartment: Option<String>,
    /// `replicas=N` or `rs=k+m`; `"default"` (or `""`) makes the repository use the cluster's.
    #[serde(default)]
    redundancy: Option<String>,
    /// Description, readme, retention policy and immutable tags.
    #[serde(flatten)]
    lifecycle: RepoLifecycleBody,
}

/// The policy change a repository body asks for: `None` no change, `Some(None)` back to the
/// cluster default.
fn requested_policy(text: Option<&str>) -> Result<Option<Option<RedundancyPolicy>>, ApiError> {
    match text.map(str::trim) {
        None => Ok(None),
        Some("" | "default") => Ok(Some(None)),
        Some(text) => text
            .parse()
            .map(|p| Some(Some(p)))
            .map_err(|e: keelson_raft::redundancy::PolicyParseError| bad_request(e.to_string())),
    }
}

/// The repository's redundancy as its JSON shows it: the policy pushes use and where it comes
/// from (`repo` or `cluster`).
fn redundancy_json(cx: &Cx<'_>, name: &str) -> Result<Value, ApiError> {
    let own = cx.catalog.reader().repo_redundancy(name)?;
    let (policy, source) = match own {
        Some(p) => (p, "repo"),
        None => (cx.cluster_policy()?, "cluster"),
    };
    Ok(json!({ "redundancy": policy.to_string(), "redundancy_source": source }))
}

async fn identity(cx: &Cx<'_>, cmd: IdentityCommand) -> Result<(), ApiError> {
    commit(cx, CatalogCommand::Identity(cmd)).await
}

/// Dispatches `/api/v1/<rest>`.
pub async fn route(cx: &Cx<'_>, rest: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let now = cx.clock.now_ms();
    if matches!(
        parts.first(),
        Some(&"regions") | Some(&"replication") | Some(&"pull-through")
    ) {
        return super::regions::route(cx, &parts, req).await;
    }
    if parts.first() == Some(&"audit") {
        return super::audit::route(cx, &parts[1..], &req);
    }
    if parts.first() == Some(&"vulndb") {
        return super::vulndb::route(cx, &parts[1..], req).await;
    }
    if let ["tenancies", ns, "webhooks", rest @ ..] = parts.as_slice() {
        return super::webhooks::route(cx, ns, rest, req).await;
    }
    if let ["tenancies", ns, "signing-keys", rest @ ..] = parts.as_slice() {
        return super::signing::keys_route(cx, ns, rest, req).await;
    }
    if let ["tenancies", ns, "verification-policies", rest @ ..] = parts.as_slice() {
        return super::signing::policies_route(cx, ns, rest, req).await;
    }
    if let Some((repo, resource)) = parts
        .first()
        .filter(|p| **p == "repos")
        .and(lifecycle::repo_resource(&method, &parts))
    {
        return lifecycle::repo_route(cx, &repo, resource, req).await;
    }
    if let ["tenancies", ns, rest @ ..] = parts.as_slice() {
        if lifecycle::is_tenancy_resource(rest) {
            return lifecycle::tenancy_route(cx, ns, rest, req).await;
        }
    }
    match (&method, parts.as_slice()) {
        // The API's own description, for anyone (`crate::openapi`).
        (&Method::GET, ["openapi.json"]) => Ok(crate::openapi::response()),
        (&Method::POST, ["tenancies"]) => {
            access::administer_cluster(cx)?;
            let body: NamespaceBody = read_json(req).await?;
            valid_namespace(&body.namespace)?;
            identity(
                cx,
                IdentityCommand::CreateTenancy {
                    namespace: body.namespace.clone(),
                    now_ms: now,
                },
            )
            .await?;
            Ok(json_reply(StatusCode::CREATED, &json!({ "namespace": body.namespace })))
        }
        (&Method::GET, ["tenancies", ns]) => {
            access::administer_tenancy(cx, ns)?;
            let view = cx.catalog.reader().with_identity(|s| {
                s.tenancies.get(*ns).map(|t| {
                    json!({
                        "namespace": ns,
                        "compartments": t.compartments.values().map(|c| json!({"name": c.name, "parent": c.parent})).collect::<Vec<_>>(),
                        "users": t.users.keys().collect::<Vec<_>>(),
                        "groups": t.groups,
                        "policies": t.policies.iter().map(|(n, p)| json!({
                            "name": n, "compartment": p.compartment,
                            "statements": p.statements.iter().map(|s| s.text.clone()).collect::<Vec<_>>()
                        })).collect::<Vec<_>>(),
                    })
                })
            });
            ok(view.ok_or_else(|| ApiError::not_found(format!("tenancy {ns} does not exist")))?)
        }
        (&Method::POST, ["tenancies", ns, "compartments"]) => {
            access::administer_tenancy(cx, ns)?;
            let body: NameBody = read_json(req).await?;
            valid_name(&body.name)?;
            let cmd = IdentityCommand::CreateCompartment {
                namespace: ns.to_string(),
                name: body.name.clone(),
                parent: body.parent,
            };
            identity(cx, cmd).await?;
            Ok(json_reply(StatusCode::CREATED, &json!({ "compartment": body.name })))
        }
        (&Method::POST, ["tenancies", ns, "users"]) => {
            access::administer_tenancy(cx, ns)?;
            let body: NameBody = read_json(req).await?;
            valid_name(&body.name)?;
            identity(
                cx,
                IdentityCommand::CreateUser {
                    namespace: ns.to_string(),
                    user: body.name.clone(),
                    now_ms: now,
                },
            )
            .await?;
            Ok(json_reply(
                StatusCode::CREATED,
                &json!({ "user": format!("{ns}/{}", body.name) }),
            ))
        }
        (&Method::DELETE, ["tenancies", ns, "users", user]) => {
            access::administer_tenancy(cx, ns)?;
            identity(
                cx,
                IdentityCommand::DeleteUser {
                    namespace: ns.to_string(),
                    user: user.to_string(),
                },
            )
            .await?;
            ok(json!({ "deleted": format!("{ns}/{user}") }))
        }
        (&Method::POST, ["tenancies", ns, "users", user, "tokens"]) => {
            access::administer_user(cx, ns, user)?;
            let body: TokenBody = read_json(req).await?;
            let secret = auth::new_auth_token();
            let token = AuthToken {
                id: auth::random_id(8),
                hash: auth::hash_token(&secret),
                description: body.description,
                created_ms: now,
                last_used_ms: None,
            };
            let id = token.id.clone();
            let cmd = IdentityCommand::AddToken {
                namespace: ns.to_string(),
                user: user.to_string(),
                token,
                max_tokens: cx.max_tokens_per_user,
            };
            identity(cx, cmd).await?;
            // The only time the secret is ever shown.
            Ok(json_reply(
                StatusCode::CREATED,
                &json!({ "id": id, "token": secret, "username": format!("{ns}/{user}") }),
            ))
        }
        (&Method::GET, ["tenancies", ns, "users", user, "tokens"]) => {
            access::administer_user(cx, ns, user)?;
            let tokens = cx.catalog.reader().with_identity(|s| {
                s.tenancies.get(*ns).and_then(|t| t.users.get(*user)).map(|u| {
                    u.tokens
                        .iter()
                        .map(|t| json!({"id": t.id, "description": t.description, "created_ms": t.created_ms, "last_used_ms": t.last_used_ms}))
                        .collect::<Vec<_>>()
                })
            });
            ok(
                json!({ "tokens": tokens.ok_or_else(|| ApiError::not_found(format!("user {ns}/{user} does not exist")))? }),
            )
        }
        (&Method::DELETE, ["tenancies", ns, "users", user, "tokens", id]) => {
            access::administer_user(cx, ns, user)?;
            let cmd = IdentityCommand::RevokeToken {
                namespace: ns.to_string(),
                user: user.to_string(),
                token_id: id.to_string(),
            };
            identity(cx, cmd).await?;
            ok(json!({ "revoked": id }))
        }
        (&Method::POST, ["tenancies", ns, "groups"]) => {
            access::administer_tenancy(cx, ns)?;
            let body: NameBody = read_json(req).await?;
            valid_name(&body.name)?;
            identity(
                cx,
                IdentityCommand::CreateGroup {
                    namespace: ns.to_string(),
                    group: body.name.clone(),
                },
            )
            .await?;
            Ok(json_reply(StatusCode::CREATED, &json!({ "group": body.name })))
        }
        (&Method::PUT, ["tenancies", ns, "groups", group, "members", user]) => {
            access::administer_tenancy(cx, ns)?;
            let cmd = IdentityCommand::AddToGroup {
                namespace: ns.to_string(),
                group: group.to_string(),
                user: user.to_string(),
            };
            identity(cx, cmd).await?;
            ok(json!({ "group": group, "added": user }))
        }
        (&Method::DELETE, ["tenancies", ns, "groups", group, "members", user]) => {
            access::administer_tenancy(cx, ns)?;
            let cmd = IdentityCommand::RemoveFromGroup {
                namespace: ns.to_string(),
                group: group.to_string(),
                user: user.to_string(),
            };
            identity(cx, cmd).await?;
            ok(json!({ "group": group, "removed": user }))
        }
        (&Method::PUT, ["tenancies", ns, "policies", name]) => {
            access::administer_tenancy(cx, ns)?;
            valid_name(name)?;
            let body: PolicyBody = read_json(req).await?;
            let statements = policy::parse_policy(&body.statements).map_err(|e| {
                bad_request(format!("policy does not parse: {e}"))
                    .with_detail(serde_json::to_value(&e).unwrap_or(Value::Null))
            })?;
            let cmd = IdentityCommand::PutPolicy {
                namespace: ns.to_string(),
                name: name.to_string(),
                policy: Policy {
                    compartment: body.compartment,
                    statements,
                },
            };
            identity(cx, cmd).await?;
            ok(json!({ "policy": name }))
        }
        // Checks statements without saving them (the console's editor, before Save).
        (&Method::POST, ["tenancies", ns, "policy-check"]) => {
            access::administer_tenancy(cx, ns)?;
            let body: PolicyBody = read_json(req).await?;
            let statements = policy::parse_policy(&body.statements).map_err(|e| {
                bad_request(format!("policy does not parse: {e}"))
                    .with_detail(serde_json::to_value(&e).unwrap_or(Value::Null))
            })?;
            ok(json!({ "statements": statements.len() }))
        }
        (&Method::DELETE, ["tenancies", ns, "policies", name]) => {
            access::administer_tenancy(cx, ns)?;
            identity(
                cx,
                IdentityCommand::DeletePolicy {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                },
            )
            .await?;
            ok(json!({ "deleted": name }))
        }
        (&Method::POST, ["signing-keys", "rotate"]) => {
            access::administer_cluster(cx)?;
            let keys = cx.reg.sealing_keys();
            let key = crate::auth::jwt::generate_key(now, keys.as_deref())
                .map_err(|_| ApiError::new(ErrorCode::Unavailable, "key generation failed"))?;
            drop(keys);
            let kid = key.kid.clone();
            identity(cx, IdentityCommand::AddSigningKey { key }).await?;
            ok(json!({ "kid": kid }))
        }
        (&Method::POST, ["repos"]) => {
            let body: RepoBody = read_json(req).await?;
            let name = body.name.ok_or_else(|| bad_request("name required"))?;
            names::validate_repo(&name)?;
            access::authorize(cx, Action::Administer, &name)?;
            let compartment = body.compartment.filter(|c| !c.is_empty());
            let policy = requested_policy(body.redundancy.as_deref())?;
            if let Some(Some(p)) = policy {
                super::admin::satisfiable(cx, p)?;
            }
            let cmd = CatalogCommand::CreateRepo {
                repo: name.clone(),
                compartment,
                public: body.public.unwrap_or(false),
                now_ms: now,
            };
            commit(cx, cmd).await?;
            if let Some(policy) = policy {
                let repo = Some(name.clone());
                commit(cx, CatalogCommand::SetRedundancy { repo, policy }).await?;
            }
            let mut answer = json!({ "repo": name });
            answer["redundancy"] = redundancy_json(cx, &name)?["redundancy"].clone();
            Ok(json_reply(StatusCode::CREATED, &answer))
        }
        (_, ["repos", ..]) => {
            let name = parts[1..].join("/");
            names::validate_repo(&name)?;
            match method {
                Method::GET => {
                    access::authorize(cx, Action::Inspect, &name)?;
                    let record = cx
                        .catalog
                        .reader()
                        .repo(&name)?
                        .ok_or_else(|| ApiError::not_found("repository not found"))?;
                    let mut answer = json!({ "name": name, "public": record.public, "compartment": record.compartment, "created_ms": record.created_ms });
                    for extra in [redundancy_json(cx, &name)?, lifecycle::repo_summary(cx, &name)?] {
                        if let (Some(out), Value::Object(extra)) = (answer.as_object_mut(), extra) {
                            out.extend(extra);
                        }
                    }
                    answer["may"] = caller_may(cx, &name);
                    ok(answer)
                }
                Method::PATCH => {
                    access::authorize(cx, Action::Administer, &name)?;
                    let body: RepoBody = read_json(req).await?;
                    let compartment = body.compartment.map(|c| Some(c).filter(|c| !c.is_empty()));
                    let policy = requested_policy(body.redundancy.as_deref())?;
                    if let Some(Some(p)) = policy {
                        super::admin::satisfiable(cx, p)?;
                    }
                    let untouched = policy.is_none() && body.lifecycle.is_empty();
                    if untouched || body.public.is_some() || compartment.is_some() {
                        commit(
                            cx,
                            CatalogCommand::UpdateRepo {
                                repo: name.clone(),
                                public: body.public,
                                compartment,
                            },
                        )
                        .await?;
                    }
                    if let Some(policy) = policy {
                        let repo = Some(name.clone());
                        commit(cx, CatalogCommand::SetRedundancy { repo, policy }).await?;
                    }
                    body.lifecycle.apply(cx, &name).await?;
                    let mut answer = json!({ "repo": name });
                    answer["redundancy"] = redundancy_json(cx, &name)?["redundancy"].clone();
                    ok(answer)
                }
                Method::DELETE => {
                    access::authorize(cx, Action::Delete, &name)?;
                    commit(cx, CatalogCommand::DeleteRepo { repo: name.clone() }).await?;
                    ok(json!({ "deleted": name }))
                }
                _ => Err(ApiError::new(ErrorCode::Unsupported, "method not supported")),
            }
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Creates the cluster administrator's token on a fresh cluster: `supplied` when given (e.g. from
/// the environment), else a random one. Returns the secret only when it was generated here, so
/// the caller shows it exactly once; `None` when the cluster already has its administrator.
pub async fn bootstrap_admin(
    reg: &crate::registry::Registry,
    supplied: Option<String>,
) -> Result<Option<String>, ApiError> {
    if reg.catalog.reader().with_identity(|s| !s.admin_tokens.is_empty()) {
        return Ok(None);
    }
    let generated = supplied.is_none();
    let secret = supplied.unwrap_or_else(auth::new_auth_token);
    let token = AuthToken {
        id: auth::random_id(8),
        hash: auth::hash_token(&secret),
        description: "bootstrap".into(),
        created_ms: reg.clock.now_ms(),
        last_used_ms: None,
    };
    let cx = Cx {
        reg,
        caller: access::Caller {
            principal: auth::Principal::Admin,
            origin: String::new(),
            remote: None,
        },
    };
    match commit(&cx, CatalogCommand::Identity(IdentityCommand::BootstrapAdmin { token })).await {
        Ok(()) => Ok(generated.then_some(secret)),
        // Another node bootstrapped first.
        Err(e) if e.code == ErrorCode::Conflict => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the caller may do with a repository, so a page shows only the actions the API would
/// accept (the API still checks each one).
pub(crate) fn caller_may(cx: &Cx<'_>, repo: &str) -> Value {
    let may = |action| access::authorize(cx, action, repo).is_ok();
    json!({
        "pull": may(Action::Pull),
        "push": may(Action::Push),
        "delete": may(Action::Delete),
        "administer": may(Action::Administer),
    })
}
