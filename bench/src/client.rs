//! The HTTP side of talking to one registry: a keep-alive hyper client pool, URL building,
//! authentication round trips (Basic, and Docker's Bearer token flow on 401), redirects,
//! and reading responses without buffering large bodies.

use std::sync::RwLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use sha2::{Digest, Sha256};

use crate::auth::{bearer_from_response, token_url, AuthError, Challenge, Credentials};
use crate::body::ReqBody;

/// Why one HTTP exchange with the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid URL {0:?} (only http:// is supported)")]
    BadUrl(String),
    #[error("{0} is not a loopback address; pass --allow-remote to load a remote host")]
    NotLoopback(String),
    #[error("{method} {url}: {detail}")]
    Transport {
        method: Method,
        url: String,
        detail: String,
    },
    #[error("{method} {url}: reading response body: {detail}")]
    Body {
        method: Method,
        url: String,
        detail: String,
    },
    #[error("{method} {url}: expected {expected}, got {status}: {body}")]
    Status {
        method: Method,
        url: String,
        expected: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url}: response lacks a usable {header} header")]
    MissingHeader {
        method: Method,
        url: String,
        header: &'static str,
    },
    #[error("{method} {url}: {what}")]
    Verify { method: Method, url: String, what: String },
    #[error("{method} {url}: more than {MAX_REDIRECTS} redirects")]
    Redirects { method: Method, url: String },
    #[error("building request for {url}: {source}")]
    Build {
        url: String,
        #[source]
        source: http::Error,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

const MAX_REDIRECTS: usize = 5;
/// How much of an unexpected response body an error message quotes.
const ERROR_EXCERPT: usize = 600;

/// An error and its chain of causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A request that can be sent more than once (after authenticating): bodies are shared
/// `Bytes`, so cloning one is cheap.
#[derive(Clone)]
pub struct Req {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: ReqBody,
}

impl Req {
    pub fn new(method: Method, url: String) -> Self {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: ReqBody::empty(),
        }
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn body(mut self, body: ReqBody) -> Self {
        self.body = body;
        self
    }
}

pub struct Options {
    pub http2: bool,
    pub credentials: Option<Credentials>,
    /// Allow targets other than 127.0.0.0/8, localhost and [::1].
    pub allow_remote: bool,
}

/// The host part of an `http://host[:port]/...` URL.
fn host_of(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    uri.host().map(str::to_string)
}

/// True for 127.0.0.0/8, ::1 and localhost.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// One registry endpoint, shared by all workers.
pub struct Registry {
    http: Client<HttpConnector, ReqBody>,
    /// `http://host:port`, no trailing slash.
    base: String,
    creds: Option<Credentials>,
    auth: RwLock<Option<HeaderValue>>,
    allow_remote: bool,
    /// Serialises token fetches so that 32 workers hitting 401 fetch one token.
    token_lock: tokio::sync::Mutex<()>,
    /// Scope asked for when a challenge names none.
    default_scope: String,
}

impl Registry {
    pub fn new(url: &str, repo: &str, opts: Options) -> Result<Self, HttpError> {
        let base = url.trim_end_matches('/').trim_end_matches("/v2").to_string();
        let ok = base
            .strip_prefix("http://")
            .map(|rest| !rest.is_empty() && !rest.contains('/'))
            .unwrap_or(false);
        if !ok || base.parse::<http::Uri>().is_err() {
            return Err(HttpError::BadUrl(url.to_string()));
        }
        check_target(&base, opts.allow_remote)?;
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.enforce_http(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .http2_only(opts.http2)
            .build(conn);
        Ok(Registry {
            http,
            base,
            creds: opts.credentials,
            auth: RwLock::new(None),
            allow_remote: opts.allow_remote,
            token_lock: tokio::sync::Mutex::new(()),
            default_scope: format!("repository:{repo}:pull,push"),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `base` + `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A `Location` header value made absolute against the registry.
    pub fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            self.url(location)
        } else {
            format!("{}/{}", self.base, location)
        }
    }

    fn auth_header(&self) -> Option<HeaderValue> {
        match self.auth.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_auth(&self, v: HeaderValue) {
        match self.auth.write() {
            Ok(mut g) => *g = Some(v),
            Err(poisoned) => *poisoned.into_inner() = Some(v),
        }
    }

    async fn send_once(&self, req: &Req, auth: Option<&HeaderValue>) -> Result<Response<Incoming>, HttpError> {
        let mut b = Request::builder().method(req.method.clone()).uri(req.url.as_str());
        for (k, v) in &req.headers {
            b = b.header(k, v);
        }
        if let Some(a) = auth {
            if req.url.starts_with(&self.base) {
                b = b.header(AUTHORIZATION, a);
            }
        }
        let request = b.body(req.body.clone()).map_err(|source| HttpError::Build {
            url: req.url.clone(),
            source,
        })?;
        self.http.request(request).await.map_err(|e| HttpError::Transport {
            method: req.method.clone(),
            url: req.url.clone(),
            detail: chain(&e),
        })
    }

    /// Sends `req`; on a 401 it authenticates as the challenge asks and sends it again.
    pub async fn send(&self, req: &Req) -> Result<Response<Incoming>, HttpError> {
        let sent = self.auth_header();
        let resp = self.send_once(req, sent.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        self.answer_challenge(req, resp, sent).await?;
        let resp = self.send_once(req, self.auth_header().as_ref()).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let body = excerpt(resp).await;
            return Err(AuthError::Rejected {
                request: format!("{} {}: {body}", req.method, req.url),
                anonymous: self.creds.is_none(),
            }
            .into());
        }
        Ok(resp)
    }

    /// Sends a GET, following redirects (auth is only sent to the registry itself).
    pub async fn get_following(&self, req: &Req) -> Result<Response<Incoming>, HttpError> {
        let mut req = req.clone();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.send(&req).await?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let loc = header_str(&resp, LOCATION).map(|l| self.resolve(l));
            let Some(loc) = loc else {
                return Err(HttpError::MissingHeader {
                    method: req.method,
                    url: req.url,
                    header: "Location",
                });
            };
            let _ = drain(resp).await;
            check_target(&loc, self.allow_remote)?;
            req.url = loc;
        }
        Err(HttpError::Redirects {
            method: req.method,
            url: req.url,
        })
    }

    async fn answer_challenge(
        &self,
        req: &Req,
        resp: Response<Incoming>,
        sent: Option<HeaderValue>,
    ) -> Result<(), HttpError> {
        let challenges: Vec<String> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let body = excerpt(resp).await;
        let _guard = self.token_lock.lock().await;
        if self.auth_header() != sent {
            // Another worker authenticated while we waited.
            return Ok(());
        }
        let first = challenges.first().ok_or_else(|| HttpError::Status {
            method: req.method.clone(),
            url: req.url.clone(),
            expected: "a WWW-Authenticate header with the 401".into(),
            status: StatusCode::UNAUTHORIZED,
            body: body.clone(),
        })?;
        let challenge = challenges
            .iter()
            .find_map(|c| Challenge::parse(c).ok())
            .ok_or_else(|| AuthError::BadChallenge(first.clone()))?;
        match challenge {
            Challenge::Basic => {
                let creds = self
                    .creds
                    .as_ref()
                    .ok_or_else(|| AuthError::NeedCredentials(first.clone()))?;
                self.set_auth(creds.basic_header()?);
            }
            Challenge::Bearer { realm, service, scope } => {
                let scope = scope
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| self.default_scope.clone());
                let url = token_url(&realm, service.as_deref(), &scope);
                if !url.starts_with("http://") {
                    return Err(HttpError::BadUrl(url));
                }
                check_target(&url, self.allow_remote)?;
                let mut treq = Req::new(Method::GET, url);
                if let Some(c) = &self.creds {
                    treq = treq.header(AUTHORIZATION, c.basic_header()?);
                }
                // The token endpoint is usually another host: send without registry auth.
                let tresp = self.send_once(&treq, None).await?;
                let tresp = expect(tresp, &[StatusCode::OK], &treq).await?;
                let bytes = read_all(tresp, &treq).await?;
                self.set_auth(bearer_from_response(&bytes)?);
            }
        }
        Ok(())
    }

    /// Authenticates up front (GET /v2/) so the measured run does not pay for it.
    pub async fn authenticate(&self) -> Result<(), HttpError> {
        let req = Req::new(Method::GET, self.url("/v2/"));
        let resp = self.send(&req).await?;
        let resp = expect(resp, &[StatusCode::OK], &req).await?;
        drain(resp).await.map(|_| ()).map_err(|detail| HttpError::Body {
            method: req.method,
            url: req.url,
            detail,
        })
    }
}

/// Refuses URLs whose host is not loopback unless remote targets are allowed.
fn check_target(url: &str, allow_remote: bool) -> Result<(), HttpError> {
    if allow_remote {
        return Ok(());
    }
    match host_of(url) {
        Some(h) if is_loopback_host(&h) => Ok(()),
        Some(h) => Err(HttpError::NotLoopback(h)),
        None => Err(HttpError::BadUrl(url.to_string())),
    }
}

pub fn header_str<B>(resp: &Response<B>, name: HeaderName) -> Option<&str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Reads the whole body and throws it away, returning its length.
pub async fn drain(resp: Response<Incoming>) -> Result<u64, String> {
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| chain(&e))?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// The first bytes of a body, as text, for error messages.
pub async fn excerpt(resp: Response<Incoming>) -> String {
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            buf.extend_from_slice(&d[..d.len().min(ERROR_EXCERPT - buf.len())]);
            if buf.len() >= ERROR_EXCERPT {
                break;
            }
        }
    }
    // A cut at the excerpt limit may split a UTF-8 sequence: keep the whole part.
    let text = match std::str::from_utf8(&buf) {
        Ok(t) => Some(t),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&buf[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    let text = text.filter(|t| !t.chars().any(|c| c.is_control() && !c.is_whitespace()));
    let Some(text) = text else {
        let n = buf.len().min(32);
        return format!("(binary body, starts {})", hex::encode(&buf[..n]));
    };
    let s = text.trim().to_string();
    if s.is_empty() {
        "(empty body)".to_string()
    } else {
        s
    }
}

/// Passes the response on if its status is one of `ok`, else turns it into an error that
/// quotes the start of the body.
pub async fn expect(resp: Response<Incoming>, ok: &[StatusCode], req: &Req) -> Result<Response<Incoming>, HttpError> {
    if ok.contains(&resp.status()) {
        return Ok(resp);
    }
    let status = resp.status();
    let body = excerpt(resp).await;
    Err(HttpError::Status {
        method: req.method.clone(),
        url: req.url.clone(),
        expected: ok
            .iter()
            .map(|s| s.as_u16().to_string())
            .collect::<Vec<_>>()
            .join(" or "),
        status,
        body,
    })
}

/// Reads a (small) body into memory.
pub async fn read_all(resp: Response<Incoming>, req: &Req) -> Result<Bytes, HttpError> {
    resp.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| HttpError::Body {
            method: req.method.clone(),
            url: req.url.clone(),
            detail: chain(&e),
        })
}

/// Streams a body, counting bytes and, if asked, hashing them; returns the length and
/// the `sha256:<hex>` digest when hashed.
pub async fn read_counting(
    resp: Response<Incoming>,
    req: &Req,
    hash: bool,
) -> Result<(u64, Option<String>), HttpError> {
    let mut body = resp.into_body();
    let mut n = 0u64;
    let mut h = hash.then(Sha256::new);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| HttpError::Body {
            method: req.method.clone(),
            url: req.url.clone(),
            detail: chain(&e),
        })?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
            if let Some(h) = h.as_mut() {
                h.update(d);
            }
        }
    }
    Ok((n, h.map(|h| format!("sha256:{}", hex::encode(h.finalize())))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn reg() -> Registry {
        Registry::new(
            "http://127.0.0.1:5000/",
            "a/b",
            Options {
                http2: false,
                credentials: None,
                allow_remote: false,
            },
        )
        .expect("valid url")
    }

    /// A server that wants `Bearer tok` (token from /token for Basic u:p), or with
    /// `basic` set, wants Basic u:p directly. Counts token requests.
    async fn auth_server(basic: bool) -> (String, Arc<AtomicUsize>) {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tokens = Arc::new(AtomicUsize::new(0));
        let t = tokens.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let t = t.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let auth = req
                        .headers()
                        .get(AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let path = req.uri().path().to_string();
                    let t = t.clone();
                    async move {
                        let resp = |code: u16, body: &str, chal: Option<String>| {
                            let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
                            *r.status_mut() = StatusCode::from_u16(code).unwrap_or_default();
                            if let Some(c) = chal {
                                if let Ok(v) = HeaderValue::from_str(&c) {
                                    r.headers_mut().insert(WWW_AUTHENTICATE, v);
                                }
                            }
                            r
                        };
                        let r = if path == "/token" {
                            t.fetch_add(1, Ordering::SeqCst);
                            if auth == "Basic dTpw" {
                                resp(200, r#"{"token":"tok"}"#, None)
                            } else {
                                resp(401, "bad creds", None)
                            }
                        } else if basic {
                            if auth == "Basic dTpw" {
                                resp(200, "{}", None)
                            } else {
                                resp(401, "", Some(r#"Basic realm="fake""#.into()))
                            }
                        } else if auth == "Bearer tok" {
                            resp(200, "{}", None)
                        } else {
                            let c = format!(
                                r#"Bearer realm="http://{addr}/token",service="fake",scope="repository:a/b:pull""#
                            );
                            resp(401, "", Some(c))
                        };
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), tokens)
    }

    fn creds(password: &str) -> Option<Credentials> {
        Some(Credentials {
            user: "u".into(),
            password: password.into(),
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bearer_flow_fetches_one_token() {
        let (url, tokens) = auth_server(false).await;
        let reg = Arc::new(
            Registry::new(
                &url,
                "a/b",
                Options {
                    http2: false,
                    credentials: creds("p"),
                    allow_remote: false,
                },
            )
            .expect("registry"),
        );
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let reg = reg.clone();
                tokio::spawn(async move {
                    let req = Req::new(Method::GET, reg.url("/v2/a/b/tags/list"));
                    reg.send(&req).await.map(|r| r.status())
                })
            })
            .collect();
        for t in tasks {
            let status = t.await.expect("task").expect("request");
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(tokens.load(Ordering::SeqCst), 1);

        let bad = Registry::new(
            &url,
            "a/b",
            Options {
                http2: false,
                credentials: creds("x"),
                allow_remote: false,
            },
        )
        .expect("registry");
        assert!(bad.authenticate().await.is_err());
    }

    #[tokio::test]
    async fn basic_flow() {
        let (url, _) = auth_server(true).await;
        let reg = Registry::new(
            &url,
            "a/b",
            Options {
                http2: false,
                credentials: creds("p"),
                allow_remote: false,
            },
        )
        .expect("registry");
        reg.authenticate().await.expect("authenticated");
        let anon = Registry::new(
            &url,
            "a/b",
            Options {
                http2: false,
                credentials: None,
                allow_remote: false,
            },
        )
        .expect("registry");
        match anon.authenticate().await {
            Err(HttpError::Auth(AuthError::NeedCredentials(_))) => {}
            other => panic!("expected NeedCredentials, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn urls() {
        let r = reg();
        assert_eq!(r.base(), "http://127.0.0.1:5000");
        assert_eq!(r.url("/v2/"), "http://127.0.0.1:5000/v2/");
        assert_eq!(r.resolve("/v2/x"), "http://127.0.0.1:5000/v2/x");
        assert_eq!(r.resolve("http://o/v2/x"), "http://o/v2/x");
        assert!(Registry::new(
            "https://x",
            "a/b",
            Options {
                http2: false,
                credentials: None,
                allow_remote: false,
            }
        )
        .is_err());
        for (url, ok) in [
            ("http://127.0.0.1:5000", true),
            ("http://127.3.4.5", true),
            ("http://localhost:80", true),
            ("http://[::1]:5000", true),
            ("http://10.0.0.1:80", false),
            ("http://example.com", false),
        ] {
            assert_eq!(check_target(url, false).is_ok(), ok, "{url}");
            assert!(check_target(url, true).is_ok());
        }
    }
}
