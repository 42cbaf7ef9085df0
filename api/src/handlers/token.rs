//! Docker's token endpoint (`/token`): `GET` with Basic credentials (what `docker login` and
//! most pullers send, with `offline_token=true` asking for a refresh token) and `POST` forms with
//! `grant_type=password` or `grant_type=refresh_token` (containerd, docker after login). The
//! answer grants, per requested scope, exactly the actions the policies allow.

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use keelson_raft::identity::IdentityCommand;
use keelson_raft::CatalogCommand;
use serde_json::json;

use super::{commit, header, Reply};
use crate::access::{self, Action, Caller, Cx};
use crate::auth::jwt::{self, Access, ACCESS_TTL_SECS, REFRESH_TTL_SECS};
use crate::auth::{self, Principal, ADMIN_USER, SYSTEM_NAMESPACE};
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::logins;
use crate::registry::Registry;
use crate::routes::query_pairs;

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized, message)
}

/// The parameters of a token request, from the query string or the form body.
struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    scopes: Vec<String>,
    offline: bool,
}

async fn parse_request(req: Request<Incoming>) -> Result<TokenRequest, ApiError> {
    let mut pairs = query_pairs(req.uri().query());
    let basic = header(&req, "authorization").and_then(|h| auth::basic_credentials(h).ok());
    let is_post = req.method() == http::Method::POST;
    if is_post {
        let body = Limited::new(req.into_body(), 64 << 10)
            .collect()
            .await
            .map_err(|_| ApiError::new(ErrorCode::BadRequest, "token request body too large or unreadable"))?
            .to_bytes();
        pairs.extend(query_pairs(Some(&String::from_utf8_lossy(&body))));
    }
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let mut scopes = Vec::new();
    for (k, v) in &pairs {
        if k == "scope" {
            scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_string));
        }
    }
    let (mut username, mut password) = (get("username"), get("password"));
    if let Some((u, p)) = basic {
        username.get_or_insert(u);
        password.get_or_insert(p);
    }
    Ok(TokenRequest {
        grant_type: get("grant_type"),
        username,
        password,
        refresh_token: get("refresh_token"),
        scopes,
        offline: get("offline_token").as_deref() == Some("true")
            || get("access_type").as_deref() == Some("offline")
            || is_post,
    })
}

/// Seconds since the epoch as RFC 3339 (UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Makes sure the cluster has a signing key (the first token request creates it).
pub(crate) async fn ensure_signing_key(reg: &Registry) -> Result<(), ApiError> {
    if reg.catalog.reader().with_identity(|s| !s.signing_keys.is_empty()) {
        return Ok(());
    }
    let keys = reg.sealing_keys();
    let key = jwt::generate_key(reg.clock.now_ms(), keys.as_deref())
        .map_err(|_| ApiError::new(ErrorCode::Unavailable, "cannot generate a signing key"))?;
    drop(keys);
    commit(
        &Cx::internal(reg),
        CatalogCommand::Identity(IdentityCommand::AddSigningKey { key }),
    )
    .await
}

/// Resolves who is asking.
async fn principal_of(
    reg: &Registry,
    remote: Option<std::net::IpAddr>,
    tr: &TokenRequest,
) -> Result<(Principal, String), ApiError> {
    let reader = reg.catalog.reader();
    if tr.grant_type.as_deref() == Some("refresh_token") {
        let token = tr
            .refresh_token
            .as_deref()
            .ok_or_else(|| unauthorized("refresh_token missing"))?;
        return reader.with_identity(|state| {
            let claims = jwt::verify(state, token).map_err(|_| unauthorized("invalid refresh token"))?;
            if claims.typ != "refresh" {
                return Err(unauthorized("not a refresh token"));
            }
            let principal = auth::resume(state, &claims).map_err(|e| unauthorized(&e.to_string()))?;
            Ok((principal, claims.sub.clone()))
        });
    }
    match (&tr.username, &tr.password) {
        (Some(u), Some(p)) => {
            let principal = match logins::check(reg, remote, u, p).await {
                Ok(login) => login.principal,
                Err(logins::Refused::Throttled(e)) => return Err(e),
                Err(logins::Refused::Credentials(_)) => return Err(unauthorized("invalid username or auth token")),
            };
            let sub = match &principal {
                Principal::User { namespace, user, .. } => format!("{namespace}/{user}"),
                _ => format!("{SYSTEM_NAMESPACE}/{ADMIN_USER}"),
            };
            Ok((principal, sub))
        }
        _ => Ok((Principal::Anonymous, String::new())),
    }
}

/// The actions of `scope` the principal may have.
fn grant(cx: &Cx<'_>, scope: &str) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    match kind {
        "registry" if name == "catalog" => {
            let allowed = cx.caller.principal != Principal::Anonymous;
            allowed.then(|| Access {
                kind: kind.into(),
                name: name.into(),
                actions: vec!["*".into()],
            })
        }
        "repository" => {
            crate::names::validate_repo(name).ok()?;
            let mut granted = Vec::new();
            for action in actions.split(',') {
                let checks: &[Action] = match action {
                    "pull" => &[Action::Pull],
                    "push" => &[Action::Push],
                    "delete" => &[Action::Delete],
                    "*" => &[Action::Pull, Action::Push, Action::Delete, Action::Administer],
                    _ => &[],
                };
                if !checks.is_empty() && checks.iter().all(|a| access::authorize(cx, *a, name).is_ok()) {
                    granted.push(action.to_string());
                }
            }
            Some(Access {
                kind: kind.into(),
                name: name.into(),
                actions: granted,
            })
        }
        _ => None,
    }
}

pub async fn issue(
    reg: &Registry,
    remote: Option<std::net::IpAddr>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let tr = parse_request(req).await?;
    ensure_signing_key(reg).await?;
    let (principal, sub) = principal_of(reg, remote, &tr).await?;
    reg.token_uses.record(&principal, reg.clock.now_ms());
    let tid = match &principal {
        Principal::User { token_id, .. } => Some(token_id.clone()),
        Principal::Admin => reg
            .catalog
            .reader()
            .with_identity(|s| s.admin_tokens.first().map(|t| t.id.clone())),
        _ => None,
    };
    let cx = Cx {
        reg,
        caller: Caller {
            principal: principal.clone(),
            origin: String::new(),
            remote: None,
        },
    };
    let access: Vec<Access> = tr.scopes.iter().filter_map(|s| grant(&cx, s)).collect();
    let now = reg.clock.now_ms() / 1000;
    let keys = reg.store.master_keys();
    let (token, refresh) = reg
        .catalog
        .reader()
        .with_identity(|state| {
            let token = jwt::sign(
                state,
                &jwt::claims(&sub, access, "access", None, now, ACCESS_TTL_SECS),
                keys.as_deref(),
            )?;
            let refresh = if tr.offline && principal != Principal::Anonymous {
                Some(jwt::sign(
                    state,
                    &jwt::claims(&sub, Vec::new(), "refresh", tid, now, REFRESH_TTL_SECS),
                    keys.as_deref(),
                )?)
            } else {
                None
            };
            Ok::<_, jwt::TokenError>((token, refresh))
        })
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
    let mut doc = json!({
        "token": token,
        "access_token": token,
        "expires_in": ACCESS_TTL_SECS,
        "issued_at": rfc3339(now),
    });
    if let Some(r) = refresh {
        doc["refresh_token"] = json!(r);
    }
    let bytes = doc.to_string();
    Ok(Reply::new(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Content-Length", bytes.len())
        .header("Cache-Control", "no-store")
        .body(body::full(bytes)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_600_000), "2026-11-25T09:46:40Z");
    }
}
