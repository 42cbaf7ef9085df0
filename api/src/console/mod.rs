//! The web console: a page application served by every node at `/console/` on the API's port
//! (over TLS when the API has it), its assets compiled into the binary. It holds no data and no
//! rights of its own: every page reads and changes the registry through the same `/api/v1` and
//! `/v2` routes as the CLI, authenticated by the session cookie this module issues, so it can
//! never show or do more than the API allows the signed-in user.
//!
//! Routes: `POST /console/api/session` signs in (`{"username","token"}`, what `docker login`
//! takes), `GET` tells who is signed in and the CSRF token, `DELETE` signs out; `assets/*` are
//! the script and style sheet; any other path is the application's shell, which routes on the
//! client. Every answer carries a strict Content-Security-Policy (scripts and styles from this
//! origin only, no inline script), so text a tenant controls can never run as code even if a
//! page mishandled it; the application builds pages from text nodes, never from HTML strings,
//! except the readme, which the server renders from markdown with raw HTML escaped.

use std::net::IpAddr;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{jwt, session, Principal};
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::handlers::{read_json, Reply};
use crate::registry::Registry;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The policy every console answer carries.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Dispatches `/console/<rest>`.
pub async fn route(
    reg: &Registry,
    remote: Option<IpAddr>,
    rest: &str,
    req: Request<Incoming>,
    note: &mut crate::audit::Note,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    match (&method, rest) {
        (&Method::POST, "api/session") => sign_in(reg, remote, req, note).await,
        (&Method::GET, "api/session") => who(reg, &req),
        (&Method::DELETE, "api/session") => sign_out(reg, &req),
        (_, "api/session") => Err(unsupported()),
        (&Method::GET | &Method::HEAD, "assets/app.js") => Ok(asset(APP_JS, "text/javascript; charset=utf-8")),
        (&Method::GET | &Method::HEAD, "assets/app.css") => Ok(asset(APP_CSS, "text/css; charset=utf-8")),
        (&Method::GET | &Method::HEAD, rest) if rest.starts_with("assets/") || rest.starts_with("api/") => {
            Err(ApiError::not_found("no such console resource"))
        }
        (&Method::GET | &Method::HEAD, _) => Ok(asset(INDEX_HTML, "text/html; charset=utf-8")),
        _ => Err(unsupported()),
    }
}

fn unsupported() -> ApiError {
    ApiError::new(ErrorCode::Unsupported, "method not supported on this console route")
}

/// A compiled-in file with the console's security headers. Not cached: a node upgraded in a
/// rolling restart must not leave browsers holding the previous script.
fn asset(text: &'static str, content_type: &str) -> Response<Body> {
    secured(Reply::new(StatusCode::OK).header("Content-Type", content_type))
        .header("Content-Length", text.len())
        .body(body::full(text))
}

fn secured(reply: Reply) -> Reply {
    reply
        .header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Frame-Options", "DENY")
        .header("Referrer-Policy", "no-referrer")
        .header("Cache-Control", "no-store")
}

#[derive(Deserialize)]
struct SignIn {
    username: String,
    token: String,
}

/// Checks the login like `docker login` does and answers with a session cookie. Only a JSON
/// body from the console's own origin is taken: a form on another site cannot send one, so it
/// cannot sign a victim's browser in as someone else.
async fn sign_in(
    reg: &Registry,
    remote: Option<IpAddr>,
    req: Request<Incoming>,
    note: &mut crate::audit::Note,
) -> Result<Response<Body>, ApiError> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if !header("content-type").is_some_and(|t| t.starts_with("application/json")) {
        return Err(ApiError::new(ErrorCode::BadRequest, "signing in takes a JSON body"));
    }
    if header("sec-fetch-site").is_some_and(|s| s == "cross-site") {
        return Err(ApiError::new(
            ErrorCode::Denied,
            "signing in from another site is refused",
        ));
    }
    let body: SignIn = read_json(req).await?;
    note.refused_user = Some(body.username.clone());
    let (principal, tid) = match crate::logins::check(reg, remote, &body.username, &body.token).await {
        Ok(login) => (login.principal, login.token_id),
        Err(crate::logins::Refused::Throttled(e)) => return Err(e),
        Err(crate::logins::Refused::Credentials(_)) => {
            return Err(ApiError::new(ErrorCode::Unauthorized, "invalid username or auth token"))
        }
    };
    note.refused_user = None;
    note.actor = Some(principal.subject());
    crate::handlers::token::ensure_signing_key(reg).await?;
    reg.token_uses.record(&principal, reg.clock.now_ms());
    let now = reg.clock.now_ms() / 1000;
    let ttl = reg.console_session_secs;
    let keys = reg.store.master_keys();
    let sub = principal.subject();
    let token = reg
        .catalog
        .reader()
        .with_identity(|state| {
            jwt::sign(
                state,
                &jwt::claims(&sub, Vec::new(), session::TYPE, tid, now, ttl),
                keys.as_deref(),
            )
        })
        .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
    let answer = session_json(reg, &principal, &token, now + ttl);
    let bytes = answer.to_string();
    Ok(secured(Reply::new(StatusCode::OK))
        .header("Set-Cookie", session::set_cookie(&token, ttl, reg.tls))
        .header("Content-Type", "application/json")
        .header("Content-Length", bytes.len())
        .body(body::full(bytes)))
}

/// Who the session cookie stands for, with the CSRF token the page sends on every change.
fn who(reg: &Registry, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let token = cookie(req).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "not signed in"))?;
    let now = reg.clock.now_ms() / 1000;
    let (principal, claims) = reg
        .catalog
        .reader()
        .with_identity(|state| session::principal(state, token, now))
        .map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()))?;
    let answer = session_json(reg, &principal, token, claims.exp);
    crate::handlers::ok(answer)
}

/// Ends the session in this browser (the cookie is removed; the change needs the CSRF token).
fn sign_out(reg: &Registry, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if let Some(token) = cookie(req) {
        let presented = req.headers().get(session::CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !session::csrf_matches(token, presented) {
            return Err(ApiError::new(
                ErrorCode::Denied,
                "signing out needs the session's CSRF token",
            ));
        }
    }
    Ok(secured(Reply::new(StatusCode::NO_CONTENT))
        .header("Set-Cookie", session::clear_cookie(reg.tls))
        .empty())
}

fn cookie(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::from_cookie_header)
}

fn session_json(reg: &Registry, principal: &Principal, token: &str, exp: u64) -> serde_json::Value {
    let (namespace, user) = match principal {
        Principal::User { namespace, user, .. } => (Some(namespace.clone()), user.clone()),
        _ => (None, principal.subject()),
    };
    let region = reg.catalog.reader().regions().ok().and_then(|r| r.name);
    json!({
        "username": principal.subject(),
        "namespace": namespace,
        "user": user,
        "cluster_admin": *principal == Principal::Admin,
        "csrf": session::csrf_token(token),
        "expires_secs": exp,
        "region": region,
    })
}
