//! The lifecycle routes of the management API: a repository's images (list, detail, delete,
//! untag), its summary and settings (description, readme, retention policy, immutable tags),
//! retention previews and runs, and per tenancy its summary, limits, retention policies,
//! immutable-tag default and deletion log.
//!
//! Repository routes are recognised by their suffix, as the distribution routes are, since
//! repository names contain slashes: `…/images`, `…/images/<digest>`, `…/tags/<tag>`,
//! `…/retention/preview`, `…/retention/run`.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use keelson_raft::lifecycle::*;
use keelson_raft::retention::{self, ImageFacts, Preview};
use keelson_raft::CatalogCommand;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bad_request, commit, ok, read_json, Reply};
use crate::access::{self, Action, Cx};
use crate::auth::Principal;
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::image_view;
use crate::names::{self, Reference};
use crate::routes::{query_get, query_pairs};

/// A request under `/api/v1/repos/<repo>/…` that names a lifecycle resource.
pub enum RepoResource<'a> {
    Images,
    Image(&'a str),
    /// `POST …/images/<digest>/sign`: a server-side signature by a key the cluster holds.
    Sign(&'a str),
    /// `GET …/images/<digest>/vulnerabilities`: the image's findings.
    Vulnerabilities(&'a str),
    Tag(&'a str),
    RetentionPreview,
    RetentionRun,
}

/// Splits `repos/<name…>/<resource>` into the repository and the resource, when the path ends in
/// one that `method` applies to (so `GET …/acme/tags/x` still reads repository `acme/tags/x`).
pub fn repo_resource<'a>(method: &Method, parts: &[&'a str]) -> Option<(String, RepoResource<'a>)> {
    let n = parts.len();
    let (take, resource) = match (method, parts) {
        (&Method::GET, [.., "images"]) => (1, RepoResource::Images),
        (&Method::GET | &Method::DELETE, [.., "images", d]) if d.contains(':') => (2, RepoResource::Image(d)),
        (&Method::POST, [.., "images", d, "sign"]) if d.contains(':') => (3, RepoResource::Sign(d)),
        (&Method::GET, [.., "images", d, "vulnerabilities"]) if d.contains(':') => {
            (3, RepoResource::Vulnerabilities(d))
        }
        (&Method::DELETE, [.., "tags", t]) => (2, RepoResource::Tag(t)),
        (&Method::GET, [.., "retention", "preview"]) => (2, RepoResource::RetentionPreview),
        (&Method::POST, [.., "retention", "run"]) => (2, RepoResource::RetentionRun),
        _ => return None,
    };
    (n > take + 1).then(|| (parts[1..n - take].join("/"), resource))
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::ManifestUnknown, "image unknown to registry").with_status(StatusCode::NOT_FOUND)
}

/// Dispatches a repository's lifecycle resource.
pub async fn repo_route(
    cx: &Cx<'_>,
    repo: &str,
    resource: RepoResource<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    names::validate_repo(repo)?;
    let method = req.method().clone();
    match (method, resource) {
        (Method::GET, RepoResource::Images) => {
            access::authorize(cx, Action::Inspect, repo)?;
            list_images(cx, repo, &req).await
        }
        (Method::GET, RepoResource::Image(digest)) => {
            access::authorize(cx, Action::Inspect, repo)?;
            let image = find_image(cx, repo, digest)?;
            let mut detail = image_view::detail(cx.catalog.reader(), repo, &image)?;
            let verification = crate::signatures::verify(cx, repo, &image.digest).await?;
            detail["signature"] = json!(verification.status);
            detail["signatures"] = json!(verification.signatures);
            let report = crate::scanning::report(cx, repo, &image.digest).await?;
            detail["vulnerabilities"] = json!({ "state": report.state, "counts": report.counts });
            ok(detail)
        }
        (Method::GET, RepoResource::Vulnerabilities(digest)) => {
            access::authorize(cx, Action::Inspect, repo)?;
            let image = find_image(cx, repo, digest)?;
            let report = crate::scanning::report(cx, repo, &image.digest).await?;
            ok(json!(*report))
        }
        (Method::POST, RepoResource::Sign(digest)) => {
            access::authorize(cx, Action::Push, repo)?;
            let image = find_image(cx, repo, digest)?;
            super::signing::sign(cx, repo, &image.digest, req).await
        }
        (Method::DELETE, RepoResource::Image(digest)) => {
            access::authorize(cx, Action::Delete, repo)?;
            let image = find_image(cx, repo, digest)?;
            let cmd = CatalogCommand::DeleteManifest {
                repo: repo.to_string(),
                digest: image.digest.clone(),
            };
            commit(cx, crate::webhooks::attributed(cx, &req, cmd)).await?;
            ok(json!({ "deleted": image.digest, "tags": image.tags }))
        }
        (Method::DELETE, RepoResource::Tag(tag)) => {
            access::authorize(cx, Action::Delete, repo)?;
            let Reference::Tag(tag) = Reference::parse(tag)? else {
                return Err(bad_request("a tag, not a digest, is expected"));
            };
            let cmd = CatalogCommand::DeleteTag {
                repo: repo.to_string(),
                tag: tag.clone(),
                now_ms: cx.clock.now_ms(),
            };
            commit(cx, crate::webhooks::attributed(cx, &req, cmd)).await?;
            ok(json!({ "untagged": tag }))
        }
        (Method::GET, RepoResource::RetentionPreview) => {
            access::authorize(cx, Action::Inspect, repo)?;
            cx.catalog.linearizable().await?;
            known_repo(cx, repo)?;
            let preview = retention::preview(cx.catalog.reader(), repo, cx.clock.now_ms())?;
            ok(preview_json(&[preview]))
        }
        (Method::POST, RepoResource::RetentionRun) => {
            access::authorize(cx, Action::Administer, repo)?;
            cx.catalog.linearizable().await?;
            known_repo(cx, repo)?;
            let (plan, outcome) = retention::run(&cx.catalog, repo, cx.clock.now_ms())
                .await
                .map_err(|e| match e {
                    retention::RunError::Read(e) => ApiError::from(e),
                    retention::RunError::Catalog(e) => ApiError::from(e),
                })?;
            let reader = cx.catalog.reader();
            let mut deleted = Vec::new();
            let mut kept = Vec::new();
            for unit in &plan.units {
                let gone = reader.image(repo, &unit.image.digest)?.is_none();
                if gone { &mut deleted } else { &mut kept }.push(unit.image.digest.clone());
            }
            let mut answer = preview_json(&[plan]);
            answer["deleted"] = json!(deleted);
            answer["kept_changed_meanwhile"] = json!(kept);
            answer["entries"] = json!(outcome.entries);
            ok(answer)
        }
        _ => Err(ApiError::new(ErrorCode::Unsupported, "method not supported")),
    }
}

/// `NAME_UNKNOWN` for a repository the catalog does not have.
fn known_repo(cx: &Cx<'_>, repo: &str) -> Result<(), ApiError> {
    match cx.catalog.reader().repo(repo)? {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        )),
    }
}

/// An image of `repo` by digest.
fn find_image(cx: &Cx<'_>, repo: &str, digest: &str) -> Result<ImageFacts, ApiError> {
    let Reference::Digest(digest) = Reference::parse(digest)? else {
        return Err(bad_request("an image is named by its digest"));
    };
    let reader = cx.catalog.reader();
    let digest = digest.to_string();
    let record = reader.image(repo, &digest)?.ok_or_else(not_found)?;
    let tags = reader.image_tags(repo, &digest)?;
    Ok(ImageFacts { digest, record, tags })
}

/// `GET …/images`: `sort=pushed|pulled|size|pulls` (newest, latest or largest first;
/// `order=asc` reverses), `tagged=true|false`, `n` and `last` (a digest) for pages.
async fn list_images<B>(cx: &Cx<'_>, repo: &str, req: &Request<B>) -> Result<Response<Body>, ApiError> {
    let pairs = query_pairs(req.uri().query());
    let reader = cx.catalog.reader();
    if reader.repo(repo)?.is_none() {
        return Err(ApiError::new(
            ErrorCode::NameUnknown,
            "repository name not known to registry",
        ));
    }
    let mut images = reader.images(repo)?;
    match query_get(&pairs, "tagged") {
        None | Some("") => {}
        Some("true") => images.retain(|i| !i.tags.is_empty()),
        Some("false") => images.retain(|i| i.tags.is_empty()),
        Some(other) => return Err(bad_request(format!("tagged must be true or false, not {other:?}"))),
    }
    let sort = query_get(&pairs, "sort").unwrap_or("pushed");
    let key: fn(&ImageFacts) -> u64 = match sort {
        "pushed" => |i| i.record.last_pushed_ms,
        "pulled" => |i| i.record.last_pulled_ms.unwrap_or(0),
        "size" => |i| i.record.size,
        "pulls" => |i| i.record.pulls,
        other => {
            return Err(bad_request(format!(
                "sort must be pushed, pulled, size or pulls, not {other:?}"
            )))
        }
    };
    let ascending = match query_get(&pairs, "order") {
        None | Some("" | "desc") => false,
        Some("asc") => true,
        Some(other) => return Err(bad_request(format!("order must be asc or desc, not {other:?}"))),
    };
    images.sort_by(|a, b| {
        let by_key = key(a).cmp(&key(b));
        let by_key = if ascending { by_key } else { by_key.reverse() };
        by_key.then_with(|| a.digest.cmp(&b.digest))
    });
    let total = images.len();
    let n = match query_get(&pairs, "n") {
        None | Some("") => 100,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| bad_request("n must be a non-negative integer"))?,
    }
    .min(cx.limits.max_page);
    let start = match query_get(&pairs, "last").filter(|l| !l.is_empty()) {
        None => 0,
        Some(last) => images
            .iter()
            .position(|i| i.digest == last)
            .map(|p| p + 1)
            .ok_or_else(|| bad_request(format!("last={last} is not an image of this listing")))?,
    };
    let page: Vec<&ImageFacts> = images.iter().skip(start).take(n).collect();
    let more = start + page.len() < total;
    let mut entries: Vec<Value> = page
        .iter()
        .map(|i| image_view::entry(reader, repo, i))
        .collect::<Result<_, _>>()?;
    let digests: Vec<String> = page.iter().map(|i| i.digest.clone()).collect();
    let statuses = crate::signatures::statuses(cx, repo, &digests).await?;
    for (entry, status) in entries.iter_mut().zip(statuses) {
        entry["signature"] = json!(status);
    }
    let doc = json!({ "repo": repo, "total": total, "images": entries });
    let bytes = doc.to_string();
    let mut reply = Reply::new(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Content-Length", bytes.len());
    if let (true, Some(last)) = (more, page.last()) {
        let mut query = format!("n={n}&last={}&sort={sort}", last.digest);
        for k in ["order", "tagged"] {
            if let Some(v) = query_get(&pairs, k) {
                query.push_str(&format!("&{k}={v}"));
            }
        }
        reply = reply.header("Link", format!("</api/v1/repos/{repo}/images?{query}>; rel=\"next\""));
    }
    Ok(reply.body(body::full(bytes)))
}

fn preview_json(previews: &[Preview]) -> Value {
    let mut total = 0u64;
    let mut images = Vec::new();
    for p in previews {
        for u in &p.units {
            total = total.saturating_add(u.bytes_freed);
            images.push(json!({
                "repo": p.repo,
                "policy": p.policy,
                "digest": u.image.digest,
                "tags": u.tags,
                "rule": u.rule.as_str(),
                "bytes_freed": u.bytes_freed,
                "with": u.with.iter().map(|m| m.digest.clone()).collect::<Vec<_>>(),
            }));
        }
    }
    let policy = previews.first().map(|p| p.policy.clone());
    let repo = (previews.len() == 1).then(|| previews[0].repo.clone());
    json!({ "repo": repo, "policy": policy, "images": images, "bytes_freed": total })
}

/// What a repository summary shows beyond its record: counts, bytes, times, settings.
pub fn repo_summary(cx: &Cx<'_>, repo: &str) -> Result<Value, ApiError> {
    let reader = cx.catalog.reader();
    let usage = reader.repo_usage(repo)?;
    let info = reader.repo_info(repo)?;
    let (policy, _) = reader.effective_retention(repo)?;
    let (own, tenancy_default) = reader.immutability(repo)?;
    Ok(json!({
        "images": usage.images,
        "tags": usage.tags,
        "stored_bytes": usage.stored_bytes,
        "last_push_ms": usage.last_push_ms,
        "pulls": usage.pulls,
        "last_pull_ms": usage.last_pull_ms,
        "description": info.description,
        "readme_html": crate::markdown::to_safe_html(&info.readme),
        "readme": info.readme,
        "retention_policy": policy,
        "immutable_tags": immutable_json(own.as_ref().or(tenancy_default.as_ref()), if own.is_some() { "repo" } else { "tenancy" }),
    }))
}

fn immutable_json(setting: Option<&ImmutableTags>, source: &str) -> Value {
    match setting {
        Some(s) => json!({ "enabled": s.enabled, "exempt": s.exempt, "source": source }),
        None => json!({ "enabled": false, "exempt": [], "source": "default" }),
    }
}

/// The immutable-tag part of a repository or tenancy body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ImmutableBody {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub exempt: Vec<String>,
    /// Drop the repository's own setting and follow the tenancy default.
    #[serde(default)]
    pub inherit: bool,
}

impl ImmutableBody {
    fn setting(self) -> Result<Option<ImmutableTags>, ApiError> {
        if self.inherit {
            return Ok(None);
        }
        valid_patterns(&self.exempt).map_err(bad_request)?;
        Ok(Some(ImmutableTags {
            enabled: self.enabled,
            exempt: self.exempt,
        }))
    }
}

/// The lifecycle fields of `PATCH /api/v1/repos/<repo>`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RepoLifecycleBody {
    #[serde(default)]
    pub description: Option<String>,
    /// Markdown, shown by the console (raw HTML is shown as text).
    #[serde(default)]
    pub readme: Option<String>,
    /// A policy of the tenancy; `"global"` or `""` returns to the global policy.
    #[serde(default)]
    pub retention_policy: Option<String>,
    #[serde(default)]
    pub immutable_tags: Option<ImmutableBody>,
}

impl RepoLifecycleBody {
    pub fn is_empty(&self) -> bool {
        self.description.is_none()
            && self.readme.is_none()
            && self.retention_policy.is_none()
            && self.immutable_tags.is_none()
    }

    /// Commits the changes asked for (the caller has authorised `manage`).
    pub async fn apply(self, cx: &Cx<'_>, repo: &str) -> Result<(), ApiError> {
        if self.description.is_some() || self.readme.is_some() {
            let cmd = CatalogCommand::SetRepoInfo {
                repo: repo.to_string(),
                description: self.description,
                readme: self.readme,
            };
            commit(cx, cmd).await?;
        }
        if let Some(policy) = self.retention_policy {
            let policy = Some(policy).filter(|p| !p.is_empty() && p != GLOBAL_POLICY);
            commit(
                cx,
                CatalogCommand::AssignRetention {
                    repo: repo.to_string(),
                    policy,
                },
            )
            .await?;
        }
        if let Some(body) = self.immutable_tags {
            let cmd = CatalogCommand::SetImmutableTags {
                scope: Scope::Repo(repo.to_string()),
                setting: body.setting()?,
            };
            commit(cx, cmd).await?;
        }
        Ok(())
    }
}

/// A retention policy as the API takes and shows it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = RetentionPolicyBody)]
pub(crate) struct PolicyBody {
    #[serde(default)]
    not_pulled_days: Option<u32>,
    #[serde(default)]
    untagged_days: Option<u32>,
    #[serde(default)]
    keep_newest: Option<u32>,
    #[serde(default)]
    exempt_tags: Vec<String>,
    /// Hours (default 24).
    #[serde(default)]
    cooling_hours: Option<u32>,
    /// The same in milliseconds, for periods shorter than an hour (tests, simulations).
    #[serde(default)]
    cooling_ms: Option<u64>,
}

/// Longest cooling period accepted: ten years.
const MAX_COOLING_HOURS: u32 = 24 * 366 * 10;

impl PolicyBody {
    fn policy(self) -> Result<RetentionPolicy, ApiError> {
        valid_patterns(&self.exempt_tags).map_err(bad_request)?;
        let max_ms = u64::from(MAX_COOLING_HOURS) * 3_600_000;
        let cooling_ms = match (self.cooling_hours, self.cooling_ms) {
            (Some(_), Some(_)) => return Err(bad_request("give cooling_hours or cooling_ms, not both")),
            (None, None) => DEFAULT_COOLING_MS,
            (Some(h), None) if h <= MAX_COOLING_HOURS => u64::from(h) * 3_600_000,
            (None, Some(ms)) if ms <= max_ms => ms,
            _ => {
                return Err(bad_request(format!(
                    "the cooling period must be at most {MAX_COOLING_HOURS} hours"
                )))
            }
        };
        Ok(RetentionPolicy {
            not_pulled_days: self.not_pulled_days,
            untagged_days: self.untagged_days,
            keep_newest: self.keep_newest,
            exempt_tags: self.exempt_tags,
            cooling_ms,
        })
    }
}

fn policy_json(name: &str, p: &RetentionPolicy, repos: Vec<String>) -> Value {
    json!({
        "name": name,
        "not_pulled_days": p.not_pulled_days,
        "untagged_days": p.untagged_days,
        "keep_newest": p.keep_newest,
        "exempt_tags": p.exempt_tags,
        "cooling_hours": p.cooling_ms / 3_600_000,
        "cooling_ms": p.cooling_ms,
        "repos": repos,
    })
}

/// Whether the caller belongs to tenancy `ns` (or is the cluster administrator).
fn member_of(cx: &Cx<'_>, ns: &str) -> Result<(), ApiError> {
    match &cx.caller.principal {
        _ if cx.auth_mode == access::AuthMode::Off => Ok(()),
        Principal::Admin => Ok(()),
        Principal::User { namespace, .. } if namespace == ns => Ok(()),
        Principal::Anonymous => Err(access::challenge(&cx.caller.origin, None)),
        _ => Err(ApiError::new(
            ErrorCode::Denied,
            "requested access to the resource is denied",
        )),
    }
}

/// Whether `/api/v1/tenancies/<ns>/<rest…>` is one of the lifecycle resources.
pub fn is_tenancy_resource(rest: &[&str]) -> bool {
    matches!(
        rest,
        [
            "summary" | "limits" | "retention-policies" | "retention-deletions" | "immutable-tags",
            ..
        ]
    )
}

/// Dispatches `/api/v1/tenancies/<ns>/<rest…>` for the lifecycle resources.
pub async fn tenancy_route(
    cx: &Cx<'_>,
    ns: &str,
    rest: &[&str],
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let reader = cx.catalog.reader();
    match (&method, rest) {
        (&Method::GET, ["summary"]) => {
            member_of(cx, ns)?;
            let limits = reader.limits(ns)?;
            let usage = reader.tenancy_usage(ns)?;
            let mut repos = Vec::new();
            for name in reader.tenancy_repos(ns)? {
                if !access::may_list(cx, &name) {
                    continue;
                }
                let record = reader.repo(&name)?.unwrap_or_default();
                let u = reader.repo_usage(&name)?;
                repos.push(json!({
                    "name": name, "public": record.public, "compartment": record.compartment,
                    "images": u.images, "tags": u.tags, "stored_bytes": u.stored_bytes,
                    "last_push_ms": u.last_push_ms, "pulls": u.pulls,
                }));
            }
            ok(json!({
                "namespace": ns,
                "administrator": access::administer_tenancy(cx, ns).is_ok(),
                // Whether the caller may create repositories in the tenancy's root compartment.
                "may_create_repos": access::authorize(cx, access::Action::Administer, &format!("{ns}/new")).is_ok(),
                "repositories": repos,
                "usage": { "repos": usage.repos, "stored_bytes": usage.stored_bytes },
                "limits": limits_json(&limits),
            }))
        }
        (&Method::GET, ["limits"]) => {
            member_of(cx, ns)?;
            let usage = reader.tenancy_usage(ns)?;
            let mut answer = limits_json(&reader.limits(ns)?);
            answer["usage"] = json!({ "repos": usage.repos, "stored_bytes": usage.stored_bytes });
            ok(answer)
        }
        (&Method::PUT, ["limits"]) => {
            access::administer_cluster(cx)?;
            let body: LimitsBody = read_json(req).await?;
            let current = reader.limits(ns)?;
            let limits = TenancyLimits {
                max_repos: body.max_repos.unwrap_or(current.max_repos),
                max_images_per_repo: body.max_images_per_repo.unwrap_or(current.max_images_per_repo),
                max_stored_bytes: match body.max_stored_bytes {
                    None => current.max_stored_bytes,
                    Some(v) => v,
                },
                requests_per_second: match body.requests_per_second {
                    None => current.requests_per_second,
                    Some(v) => v,
                },
            };
            if let Some(why) = limits.invalid() {
                return Err(bad_request(why));
            }
            let cmd = CatalogCommand::SetLimits {
                namespace: ns.to_string(),
                limits: Some(limits),
            };
            commit(cx, cmd).await?;
            ok(limits_json(&limits))
        }
        (&Method::DELETE, ["limits"]) => {
            access::administer_cluster(cx)?;
            let cmd = CatalogCommand::SetLimits {
                namespace: ns.to_string(),
                limits: None,
            };
            commit(cx, cmd).await?;
            ok(limits_json(&TenancyLimits::default()))
        }
        (&Method::GET, ["retention-policies"]) => {
            access::administer_tenancy(cx, ns)?;
            let assignments = reader.retention_assignments(ns)?;
            let mut policies = reader.retention_policies(ns)?;
            if !policies.iter().any(|(n, _)| n == GLOBAL_POLICY) {
                policies.insert(0, (GLOBAL_POLICY.to_string(), RetentionPolicy::default()));
            }
            let list: Vec<Value> = policies
                .iter()
                .map(|(name, p)| policy_json(name, p, repos_using(&assignments, name)))
                .collect();
            ok(json!({ "policies": list }))
        }
        (_, ["retention-policies", name, rest @ ..]) => {
            access::administer_tenancy(cx, ns)?;
            policy_route(cx, ns, name, rest, req).await
        }
        (&Method::GET, ["retention-deletions"]) => {
            access::administer_tenancy(cx, ns)?;
            let pairs = query_pairs(req.uri().query());
            let number = |k: &str, default: usize| -> Result<usize, ApiError> {
                match query_get(&pairs, k) {
                    None | Some("") => Ok(default),
                    Some(t) => t.parse().map_err(|_| bad_request(format!("{k} must be a number"))),
                }
            };
            let (skip, n) = (number("skip", 0)?, number("n", 100)?.min(cx.limits.max_page));
            let (records, more) = reader.deletions(ns, skip, n)?;
            let list: Vec<Value> = records
                .iter()
                .map(|d| {
                    json!({
                        "repo": d.repo, "policy": d.policy, "rule": d.rule.as_str(), "digest": d.digest,
                        "tags": d.tags, "with": d.with, "bytes_freed": d.bytes_freed, "deleted_ms": d.deleted_ms,
                    })
                })
                .collect();
            ok(json!({ "deletions": list, "more": more }))
        }
        (&Method::GET, ["immutable-tags"]) => {
            member_of(cx, ns)?;
            ok(immutable_json(reader.tenancy_immutability(ns)?.as_ref(), "tenancy"))
        }
        (&Method::PUT, ["immutable-tags"]) => {
            access::administer_tenancy(cx, ns)?;
            let body: ImmutableBody = read_json(req).await?;
            let setting = body.setting()?;
            let cmd = CatalogCommand::SetImmutableTags {
                scope: Scope::Tenancy(ns.to_string()),
                setting: setting.clone(),
            };
            commit(cx, cmd).await?;
            ok(immutable_json(setting.as_ref(), "tenancy"))
        }
        _ => Err(ApiError::no_route()),
    }
}

fn repos_using(assignments: &[(String, String)], name: &str) -> Vec<String> {
    assignments
        .iter()
        .filter(|(_, p)| p == name)
        .map(|(r, _)| r.clone())
        .collect()
}

async fn policy_route(
    cx: &Cx<'_>,
    ns: &str,
    name: &str,
    rest: &[&str],
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let reader = cx.catalog.reader();
    let valid =
        !name.is_empty() && name.len() <= 100 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(bad_request(format!("invalid policy name {name:?}")));
    }
    match (req.method().clone(), rest) {
        (Method::GET, []) => {
            let policy = match reader.retention_policy(ns, name)? {
                Some(p) => p,
                None if name == GLOBAL_POLICY => RetentionPolicy::default(),
                None => return Err(ApiError::not_found(format!("retention policy {name} does not exist"))),
            };
            ok(policy_json(
                name,
                &policy,
                repos_using(&reader.retention_assignments(ns)?, name),
            ))
        }
        (Method::PUT, []) => {
            let policy = read_json::<PolicyBody>(req).await?.policy()?;
            let cmd = CatalogCommand::SetRetentionPolicy {
                namespace: ns.to_string(),
                name: name.to_string(),
                policy: Some(policy.clone()),
            };
            commit(cx, cmd).await?;
            ok(policy_json(
                name,
                &policy,
                repos_using(&reader.retention_assignments(ns)?, name),
            ))
        }
        (Method::DELETE, []) => {
            let cmd = CatalogCommand::SetRetentionPolicy {
                namespace: ns.to_string(),
                name: name.to_string(),
                policy: None,
            };
            commit(cx, cmd).await?;
            ok(json!({ "deleted": name }))
        }
        (Method::GET, ["preview"]) => {
            cx.catalog.linearizable().await?;
            let now = cx.clock.now_ms();
            let mut previews = Vec::new();
            for repo in reader.tenancy_repos(ns)? {
                if reader.effective_retention(&repo)?.0 == name {
                    previews.push(retention::preview(reader, &repo, now)?);
                }
            }
            let mut answer = preview_json(&previews);
            answer["policy"] = json!(name);
            ok(answer)
        }
        _ => Err(ApiError::no_route()),
    }
}

/// A tenancy's limits; an absent field keeps its current value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct LimitsBody {
    #[serde(default)]
    max_repos: Option<u64>,
    #[serde(default)]
    max_images_per_repo: Option<u64>,
    /// `null` makes stored bytes unlimited; absent keeps the current value.
    #[serde(default, deserialize_with = "explicit_null")]
    max_stored_bytes: Option<Option<u64>>,
    /// `null` returns to the node's default rate; absent keeps the current value.
    #[serde(default, deserialize_with = "explicit_null")]
    requests_per_second: Option<Option<u32>>,
}

/// Tells `"field": null` (Some(None)) from an absent field (None).
fn explicit_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn limits_json(l: &TenancyLimits) -> Value {
    json!({
        "max_repos": l.max_repos,
        "max_images_per_repo": l.max_images_per_repo,
        "max_stored_bytes": l.max_stored_bytes,
        "requests_per_second": l.requests_per_second,
    })
}

/// Refuses an upload into a repository that its tenancy has no room for, before any byte is
/// sent (the state machine decides for good when the blob is linked).
pub fn admits_upload(cx: &Cx<'_>, repo: &str) -> Result<(), ApiError> {
    let reader = cx.catalog.reader();
    let ns = tenancy_of(repo);
    let limits = reader.limits(ns)?;
    let usage = reader.tenancy_usage(ns)?;
    let new_repo = reader.repo(repo)?.is_none();
    // A tenancy already at its quota has no room for even one more byte.
    let refused = new_repo
        .then(|| limits.refuses_repo(ns, &usage))
        .flatten()
        .or_else(|| limits.refuses_bytes(ns, &usage, 1));
    if let Some(why) = refused {
        return Err(ApiError::new(ErrorCode::Denied, why));
    }
    Ok(())
}
