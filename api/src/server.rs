//! Serves HTTP/1.1 and HTTP/2 (h2c) connections handed in by the node, routes each request and
//! turns every failure into the OCI error JSON. Nothing here panics on input.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access::{self, AuthMode, Caller, Cx};
use crate::audit;
use crate::auth::{self, session, Principal};
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::handlers;
use crate::logins;
use crate::metrics::{self, AuthResult};
use crate::registry::Registry;
use crate::routes::{self, Route};

/// Longest wait for a request head.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The address an accepted connection comes from: rate limits count per source address, and an
/// uninitialised node takes `cluster init` without a bootstrap secret only from loopback.
pub trait RemoteAddr {
    fn remote_ip(&self) -> Option<IpAddr>;
}

impl RemoteAddr for tokio::net::TcpStream {
    fn remote_ip(&self) -> Option<IpAddr> {
        self.peer_addr().ok().map(|a| a.ip())
    }
}

/// Serves one accepted connection from `remote` until the peer closes it.
pub async fn serve<IO>(io: IO, remote: Option<IpAddr>, registry: Arc<Registry>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let registry = registry.clone();
        async move { Ok::<_, Infallible>(handle(registry, remote, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client must send its request head within HEADER_TIMEOUT (no slow-loris on headers).
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(1 << 20)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .max_concurrent_streams(256)
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// One request under its id (the client's `X-Request-Id`, or a new one): every log line it
/// causes, here and on the nodes it is relayed or forwarded to, carries the id, and the answer
/// names it.
async fn handle(registry: Arc<Registry>, remote: Option<IpAddr>, mut req: Request<Incoming>) -> Response<Body> {
    use keelson_raft::request_id;
    let id = request_id::accept_or_make(req.headers().get(request_id::HEADER).and_then(|v| v.to_str().ok()));
    let value = HeaderValue::from_str(&id).ok();
    if let Some(v) = &value {
        req.headers_mut().insert(request_id::HEADER, v.clone());
    }
    let span = tracing::info_span!("request", id = %id);
    let mut response =
        tracing::Instrument::instrument(request_id::scope(id, answer(registry, remote, req)), span).await;
    if let Some(v) = value {
        response.headers_mut().insert(request_id::HEADER, v);
    }
    response
}

async fn answer(registry: Arc<Registry>, remote: Option<IpAddr>, req: Request<Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let head = method == Method::HEAD;
    let path = req.uri().path().to_string();
    let parsed = routes::parse(&path);
    let route_label = metrics::route_label(&parsed);
    let bytes_in = content_length(req.headers());
    let mut note = audit::Note::default();
    let mut response = match route(&registry, remote, req, &mut note).await {
        Ok(r) => r,
        Err(e) => error_response(&e, head),
    };
    let status = response.status().as_u16();
    registry.metrics.record(
        route_label,
        &method,
        status,
        started.elapsed(),
        bytes_in,
        if head { 0 } else { content_length(response.headers()) },
    );
    registry.audit.note(
        registry.catalog.node_id(),
        registry.clock.now_ms(),
        &method,
        &path,
        &parsed,
        status,
        &note,
        remote,
    );
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

fn content_length(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Renders an error; HEAD answers carry no body.
pub fn error_response(e: &ApiError, head: bool) -> Response<Body> {
    if e.status.is_server_error() {
        tracing::warn!(code = e.code.as_str(), message = %e.message, "request failed");
    }
    let bytes = e.body();
    let len = bytes.len();
    let mut builder = Response::builder()
        .status(e.status)
        .header("Content-Type", "application/json")
        .header("Content-Length", len);
    for (name, value) in &e.headers {
        builder = builder.header(*name, value);
    }
    let body = if head { body::empty() } else { body::full(bytes) };
    builder
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR))
}

/// A bodiless response with only a status (the fallback when a builder is given a bad header).
pub fn plain(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = status;
    r
}

fn unsupported(method: &Method) -> ApiError {
    ApiError::new(
        ErrorCode::Unsupported,
        format!("method {method} is not supported on this route"),
    )
}

/// The user and password of a request's Basic credentials, when identity is checked (with
/// identity off credentials are ignored, so there is no login to check).
fn basic_login(reg: &Registry, req: &Request<Incoming>) -> Option<(String, String)> {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|a| a.starts_with("Basic ") && reg.auth_mode != AuthMode::Off)
        .and_then(|a| auth::basic_credentials(a).ok())
}

/// Resolves the caller of a request; bad credentials are a 401 (with the challenge) when
/// identity is enforced. `login` is the already checked Basic login, if the request made one.
fn caller(
    reg: &Registry,
    remote: Option<IpAddr>,
    req: &Request<Incoming>,
    note: &mut audit::Note,
    login: Option<(String, Result<logins::Login, logins::Refused>)>,
) -> Result<Caller, ApiError> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| reg.self_node.api_addr.clone());
    let origin = format!("{}://{host}", if reg.tls { "https" } else { "http" });
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let now_secs = reg.clock.now_ms() / 1000;
    if authorization.is_none() {
        if let Some(session) = console_session(req) {
            return session_caller(reg, req, session, now_secs, origin, remote);
        }
    }
    let (principal, refused_user) = match login {
        Some((user, Ok(login))) => (Ok(login.principal), user),
        Some((_, Err(logins::Refused::Throttled(e)))) => return Err(e),
        Some((user, Err(logins::Refused::Credentials(e)))) => (Err(e), user),
        None => {
            let cached = authorization.and_then(|a| reg.verified.get(a, now_secs));
            if authorization.is_some_and(|a| a.starts_with("Bearer ") || a.starts_with("bearer ")) {
                reg.metrics.token_cache(cached.is_some());
            }
            let principal = cached.map(Ok).unwrap_or_else(|| {
                let p = reg
                    .catalog
                    .reader()
                    .with_identity(|state| auth::authenticate(state, authorization))?;
                if let (Some(a), Principal::Bearer { exp, .. }) = (authorization, &p) {
                    reg.verified.insert(a, p.clone(), *exp);
                }
                Ok::<_, auth::AuthError>(p)
            });
            (principal, "bearer".to_string())
        }
    };
    let principal = match principal {
        Ok(p) => p,
        Err(_) if reg.auth_mode == AuthMode::Off => Principal::Anonymous,
        Err(e) => {
            reg.metrics.auth(AuthResult::Failed);
            note.refused_user = Some(refused_user);
            return Err(access::challenge(&origin, None).with_message(e.to_string()));
        }
    };
    reg.metrics.auth(match &principal {
        Principal::Anonymous => AuthResult::Anonymous,
        Principal::Bearer { .. } => AuthResult::Bearer,
        _ => AuthResult::Basic,
    });
    reg.token_uses.record(&principal, reg.clock.now_ms());
    Ok(Caller {
        principal,
        origin,
        remote,
    })
}

/// Whether the request's registry token or console session names a signing key this node does
/// not hold yet.
fn signed_with_unknown_key(reg: &Registry, req: &Request<Incoming>) -> bool {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")));
    let Some(token) = bearer.or_else(|| console_session(req)) else {
        return false;
    };
    reg.catalog
        .reader()
        .with_identity(|state| auth::jwt::names_unknown_key(state, token.trim()))
}

/// The console session cookie of a request, if it has one.
fn console_session(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::from_cookie_header)
}

/// The caller behind a console session cookie. A change (any method but GET and HEAD) must also
/// carry the session's CSRF token; an expired or revoked session is a 401 without a challenge,
/// so the browser shows the console's sign-in page instead of its own password dialog.
fn session_caller(
    reg: &Registry,
    req: &Request<Incoming>,
    session: &str,
    now_secs: u64,
    origin: String,
    remote: Option<IpAddr>,
) -> Result<Caller, ApiError> {
    let resolved = reg
        .catalog
        .reader()
        .with_identity(|state| session::principal(state, session, now_secs));
    let principal = match resolved {
        Ok((principal, _)) => principal,
        Err(_) if reg.auth_mode == AuthMode::Off => Principal::Anonymous,
        Err(e) => {
            reg.metrics.auth(AuthResult::Failed);
            return Err(ApiError::new(ErrorCode::Unauthorized, e.to_string()));
        }
    };
    reg.metrics.auth(AuthResult::Session);
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let presented = req.headers().get(session::CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !session::csrf_matches(session, presented) {
            return Err(ApiError::new(
                ErrorCode::Denied,
                "a change made with a console session must carry its CSRF token (X-Keelson-CSRF)",
            ));
        }
    }
    reg.token_uses.record(&principal, reg.clock.now_ms());
    Ok(Caller {
        principal,
        origin,
        remote,
    })
}

/// Takes one request from the caller's bucket (anonymous callers are limited by address only).
fn admit_caller(cx: &Cx<'_>) -> Result<(), ApiError> {
    let principal = &cx.caller.principal;
    let subject = match principal {
        Principal::Anonymous => return Ok(()),
        p => p.subject(),
    };
    let tenancy = match principal {
        Principal::User { namespace, .. } => Some(namespace.as_str()),
        Principal::Bearer { sub, .. } => auth::split_username(sub)
            .map(|(ns, _)| ns)
            .filter(|ns| *ns != auth::SYSTEM_NAMESPACE),
        _ => None,
    };
    cx.reg.rate_limits.admit_user(&subject, tenancy, || {
        let ns = tenancy?;
        cx.reg.catalog.reader().limits(ns).ok()?.requests_per_second
    })
}

/// Whether `remote` is the address of a member's API (a relay from another node).
fn from_member(reg: &Registry, remote: Option<IpAddr>) -> bool {
    let Some(ip) = remote else {
        return false;
    };
    reg.catalog.members().values().any(|(info, _)| {
        info.api_addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip() == ip)
    })
}

async fn route(
    reg: &Registry,
    remote: Option<IpAddr>,
    req: Request<Incoming>,
    note: &mut audit::Note,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let route = routes::parse(&path);
    // Probes and scrapes: answered before the removal check and the rate limits.
    match route {
        Route::Healthz => return Ok(crate::health::healthz()),
        Route::Readyz => return Ok(crate::health::readyz(reg).await),
        Route::Metrics => {
            let reg_for_scrape = reg.handle();
            let text = match reg_for_scrape {
                Some(r) => tokio::task::spawn_blocking(move || r.metrics.scrape(|| metrics::snapshot(&r)))
                    .await
                    .unwrap_or_default(),
                None => String::new(),
            };
            return Ok(handlers::Reply::new(StatusCode::OK)
                .header(
                    "Content-Type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .header("Content-Length", text.len())
                .body(body::full(text)));
        }
        _ => {}
    }
    if reg.catalog.is_removed() && !matches!(&route, Route::Cluster { rest } if *rest == "status") {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "this node was removed from the cluster; use another member",
        ));
    }
    // A request relayed by another member was counted where it arrived.
    let relayed = crate::proxy::is_forwarded(req.headers()) && from_member(reg, remote);
    if !relayed {
        reg.rate_limits.admit_address(remote)?;
    }
    if let Route::Console { rest } = route {
        return crate::console::route(reg, remote, rest, req, note).await;
    }
    if route == Route::Token {
        // A refused login on the token endpoint (how docker login checks a password) is audited
        // under the user it named.
        let named = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|a| auth::basic_credentials(a).ok())
            .map(|(user, _)| user);
        let answer = match method {
            Method::GET | Method::POST => handlers::token::issue(reg, remote, req).await,
            _ => Err(unsupported(&method)),
        };
        if matches!(&answer, Err(e) if e.status == StatusCode::UNAUTHORIZED) {
            note.refused_user = Some(named.unwrap_or_else(|| "anonymous".to_string()));
        } else if let Some(user) = named {
            note.actor = Some(user);
        }
        return answer;
    }
    // A token or session signed with a key this node has not applied yet (it was made a moment
    // ago on another node) verifies once this node has caught up with the log: catch up, retry.
    // A Basic login is checked (and caught up on) by `logins`.
    let login = match basic_login(reg, &req) {
        Some((user, password)) => {
            let checked = logins::check(reg, remote, &user, &password).await;
            Some((user, checked))
        }
        None => None,
    };
    let mut resolved = caller(reg, remote, &req, note, login);
    if matches!(&resolved, Err(e) if e.status == StatusCode::UNAUTHORIZED)
        && signed_with_unknown_key(reg, &req)
        && reg.catalog.linearizable().await.is_ok()
    {
        *note = audit::Note::default();
        resolved = caller(reg, remote, &req, note, None);
    }
    let cx = Cx {
        reg,
        caller: match resolved {
            Ok(c) => c,
            // `cluster init` checks its own credential (the bootstrap secret): an uninitialised
            // node has no identity to check the header against.
            Err(_) if route == (Route::Cluster { rest: "init" }) => Caller {
                principal: Principal::Anonymous,
                origin: String::new(),
                remote,
            },
            Err(e) => return Err(e),
        },
    };
    if cx.caller.principal != Principal::Anonymous {
        note.actor = Some(cx.caller.principal.subject());
    }
    if !relayed {
        admit_caller(&cx)?;
    }
    let reg = &cx;
    match route {
        Route::Base => match method {
            Method::GET | Method::HEAD => {
                access::require_identity(reg, None)?;
                let mut reply = handlers::listing::base();
                // Which region answered (clusters of one deployment serve one region each).
                if let Some(region) = reg.catalog.reader().regions()?.name {
                    if let Ok(value) = http::HeaderValue::from_str(&region) {
                        reply.headers_mut().insert("keelson-region", value);
                    }
                }
                Ok(reply)
            }
            _ => Err(unsupported(&method)),
        },
        Route::Catalog => match method {
            Method::GET => handlers::listing::catalog(reg, &req).await,
            _ => Err(unsupported(&method)),
        },
        Route::Tags { name } => match method {
            Method::GET => handlers::listing::tags(reg, name, &req).await,
            _ => Err(unsupported(&method)),
        },
        Route::Referrers { name, digest } => match method {
            Method::GET => handlers::listing::referrers(reg, name, digest, &req).await,
            _ => Err(unsupported(&method)),
        },
        Route::Manifest { name, reference } => match method {
            Method::GET => handlers::manifests::get(reg, name, reference, &req, false).await,
            Method::HEAD => handlers::manifests::get(reg, name, reference, &req, true).await,
            Method::PUT => handlers::manifests::put(reg, name, reference, req).await,
            Method::DELETE => handlers::manifests::delete(reg, name, reference, &req).await,
            _ => Err(unsupported(&method)),
        },
        Route::Blob { name, digest } => match method {
            Method::GET => handlers::blobs::get(reg, name, digest, &req, false).await,
            Method::HEAD => handlers::blobs::get(reg, name, digest, &req, true).await,
            Method::DELETE => handlers::blobs::delete(reg, name, digest).await,
            _ => Err(unsupported(&method)),
        },
        Route::Uploads { name } => match method {
            Method::POST => handlers::uploads::start(reg, name, req).await,
            _ => Err(unsupported(&method)),
        },
        Route::Upload { name, id } => match method {
            Method::GET | Method::PATCH | Method::PUT | Method::DELETE => {
                handlers::uploads::route(reg, name, id, req).await
            }
            _ => Err(unsupported(&method)),
        },
        Route::Cluster { rest } => handlers::admin::cluster(reg, rest, req).await,
        Route::Manage { rest } => {
            // Management reads see every change acknowledged before them, on any node (a
            // setting changed through one node and shown through another behind a balancer).
            if method == Method::GET {
                reg.catalog.linearizable().await?;
            }
            handlers::identity::route(reg, rest, req).await
        }
        Route::Token | Route::Console { .. } | Route::Metrics | Route::Healthz | Route::Readyz => {
            Err(unsupported(&method))
        }
        Route::NotFound => {
            Err(ApiError::new(ErrorCode::Unsupported, "no such route").with_status(StatusCode::NOT_FOUND))
        }
    }
}
