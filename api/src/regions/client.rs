//! How this region reaches another: the peer's registry and management API over HTTPS (trusting
//! the CA the peer record names) or plain HTTP, as the user the peer record names (Basic
//! credentials; identity is the same in every region). Replication and the identity copy use
//! only the calls here, so what crosses between regions is the public API and nothing else.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use keelson_raft::network::Dialer;
use keelson_raft::regions::{PullThroughCache, RegionPeer};
use keelson_storage::at_rest::MasterKeys;
use std::time::Duration;

use crate::body::{self, Body};
use crate::outbound::Transport;

/// Largest manifest or JSON answer read from a peer.
const MAX_ANSWER: usize = 16 << 20;
/// Accept header for manifests: every kind Keelson stores.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json, */*;q=0.1";

/// A failed call to another region.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot reach region {peer}: {cause}")]
    Connect { peer: String, cause: String },
    #[error("region {peer} answered {status} to {what}: {body}")]
    Status {
        peer: String,
        status: u16,
        what: String,
        body: String,
    },
    #[error("reading {what} from region {peer}: {message}")]
    Body {
        peer: String,
        what: String,
        message: String,
    },
    #[error("region {peer}: {0}", peer = .1)]
    Tls(#[source] crate::tls::TlsError, String),
    #[error("the credential for region {0} cannot be opened (is the master key missing?)")]
    Secret(String),
    #[error("region {peer} sent a malformed {what}")]
    Malformed { peer: String, what: String },
}

/// Whether a conditional tag change happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    Done,
    /// The tag was not what the precondition said (HTTP 412).
    PreconditionFailed,
}

/// A client of one peer region (or of a pull-through cache's upstream registry).
#[derive(Clone)]
pub struct PeerClient {
    pub name: String,
    base: String,
    /// Basic credentials, when there are any.
    authorization: Option<String>,
    /// `user:secret` for a token endpoint's Basic login (an upstream's Bearer challenge).
    login: Option<String>,
    /// Bearer tokens an upstream's token endpoint gave, by scope.
    bearer: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    client: Transport,
}

/// Longest wait for an answer's head; a PATCH of one chunk may take longer on a slow link.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
const PATCH_WITHIN: Duration = Duration::from_secs(300);

fn http_client(ca_pem: Option<&str>, name: &str, dialer: Option<&Dialer>) -> Result<Transport, PeerError> {
    Transport::new(ca_pem, dialer).map_err(|e| PeerError::Tls(e, name.to_string()))
}

fn basic(user: &str, secret: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{user}:{secret}"))
}

impl PeerClient {
    /// A client for `peer`, opening its sealed credential with `keys`.
    pub fn new(peer: &RegionPeer, keys: Option<&MasterKeys>, dialer: Option<&Dialer>) -> Result<PeerClient, PeerError> {
        let secret = keelson_storage::at_rest::keys::open_secret(keys, &peer.secret)
            .map_err(|_| PeerError::Secret(peer.name.clone()))?;
        let token = String::from_utf8(secret).map_err(|_| PeerError::Secret(peer.name.clone()))?;
        Ok(PeerClient {
            name: peer.name.clone(),
            base: peer.url.trim_end_matches('/').to_string(),
            authorization: Some(format!("Basic {}", basic(&peer.username, &token))),
            login: None,
            bearer: Default::default(),
            client: http_client(peer.ca_pem.as_deref(), &peer.name, dialer)?,
        })
    }

    /// A client for a pull-through cache's upstream: anonymous or with its credentials, which
    /// are sent only to the upstream's token endpoint when it challenges for a Bearer token
    /// (Docker Hub and most registries), else as Basic credentials.
    pub fn upstream(
        cache: &PullThroughCache,
        keys: Option<&MasterKeys>,
        dialer: Option<&Dialer>,
    ) -> Result<PeerClient, PeerError> {
        let name = cache.upstream.clone();
        let login = match (&cache.username, &cache.secret) {
            (Some(user), Some(secret)) => {
                let opened = keelson_storage::at_rest::keys::open_secret(keys, secret)
                    .map_err(|_| PeerError::Secret(name.clone()))?;
                let secret = String::from_utf8(opened).map_err(|_| PeerError::Secret(name.clone()))?;
                Some(basic(user, &secret))
            }
            _ => None,
        };
        Ok(PeerClient {
            base: cache.upstream.trim_end_matches('/').to_string(),
            authorization: login.as_ref().map(|b| format!("Basic {b}")),
            login,
            bearer: Default::default(),
            client: http_client(cache.ca_pem.as_deref(), &name, dialer)?,
            name,
        })
    }

    fn url(&self, path_or_location: &str) -> String {
        if path_or_location.starts_with("http://") || path_or_location.starts_with("https://") {
            path_or_location.to_string()
        } else {
            format!("{}{path_or_location}", self.base)
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Response<Incoming>, PeerError> {
        self.send_as(method, path, headers, body, self.authorization.as_deref())
            .await
    }

    async fn send_as(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
        authorization: Option<&str>,
    ) -> Result<Response<Incoming>, PeerError> {
        let mut builder = Request::builder().method(method).uri(self.url(path));
        if let Some(authorization) = authorization {
            builder = builder.header("authorization", authorization);
        }
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let request = builder.body(body).map_err(|_| PeerError::Malformed {
            peer: self.name.clone(),
            what: format!("URL {path}"),
        })?;
        let within = if request.method() == Method::PATCH {
            PATCH_WITHIN
        } else {
            ANSWER_WITHIN
        };
        self.client
            .send(request, within)
            .await
            .map_err(|cause| PeerError::Connect {
                peer: self.name.clone(),
                cause,
            })
    }

    /// A bodiless request (GET, HEAD) that answers an upstream's Bearer challenge: the token
    /// is fetched from the realm it names (with the credentials, if any) and kept per scope.
    async fn send_bodiless(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>, PeerError> {
        let scope_key = path
            .split("/manifests/")
            .next()
            .and_then(|p| p.split("/blobs/").next())
            .unwrap_or(path)
            .to_string();
        let cached = self
            .bearer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&scope_key)
            .cloned();
        let authorization = cached.map(|t| format!("Bearer {t}")).or(self.authorization.clone());
        let response = self
            .send_as(method.clone(), path, headers, body::empty(), authorization.as_deref())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(challenge) = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(BearerChallenge::parse)
        else {
            return Ok(response);
        };
        let token = self.fetch_token(&challenge).await?;
        self.bearer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(scope_key, token.clone());
        self.send_as(method, path, headers, body::empty(), Some(&format!("Bearer {token}")))
            .await
    }

    async fn fetch_token(&self, challenge: &BearerChallenge) -> Result<String, PeerError> {
        let mut url = challenge.realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for (key, value) in [("service", &challenge.service), ("scope", &challenge.scope)] {
            if let Some(value) = value {
                url.push(sep);
                url.push_str(key);
                url.push('=');
                url.push_str(&crate::routes::percent_encode(value));
                sep = '&';
            }
        }
        let authorization = self.login.as_ref().map(|b| format!("Basic {b}"));
        let response = self
            .send_as(Method::GET, &url, &[], body::empty(), authorization.as_deref())
            .await?;
        let (status, _, bytes) = self.read(response, "the token endpoint").await?;
        if status != StatusCode::OK {
            return Err(self.refused(status, "GET token", &bytes));
        }
        let answer: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| PeerError::Malformed {
            peer: self.name.clone(),
            what: "token answer".into(),
        })?;
        answer["token"]
            .as_str()
            .or(answer["access_token"].as_str())
            .map(str::to_string)
            .ok_or_else(|| PeerError::Malformed {
                peer: self.name.clone(),
                what: "token answer (no token)".into(),
            })
    }

    /// GETs `path` and hands back the response as it arrives (a blob to stream), answering a
    /// Bearer challenge first when there is one.
    pub async fn get_streaming(&self, path: &str, headers: &[(&str, String)]) -> Result<Response<Incoming>, PeerError> {
        self.send_bodiless(Method::GET, path, headers).await
    }

    async fn read(
        &self,
        response: Response<Incoming>,
        what: &str,
    ) -> Result<(StatusCode, HeaderMap, Bytes), PeerError> {
        let (parts, incoming) = response.into_parts();
        let body_error = |message: String| PeerError::Body {
            peer: self.name.clone(),
            what: what.to_string(),
            message,
        };
        let bytes = tokio::time::timeout(ANSWER_WITHIN, Limited::new(incoming, MAX_ANSWER).collect())
            .await
            .map_err(|_| body_error(format!("not complete within {} s", ANSWER_WITHIN.as_secs())))?
            .map_err(|e| body_error(e.to_string()))?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }

    fn refused(&self, status: StatusCode, what: &str, body: &[u8]) -> PeerError {
        PeerError::Status {
            peer: self.name.clone(),
            status: status.as_u16(),
            what: what.to_string(),
            body: String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned(),
        }
    }

    /// GET `path` with `headers`; the status, headers and body (at most 16 MiB).
    pub async fn get(
        &self,
        path: &str,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, HeaderMap, Bytes), PeerError> {
        let response = self.send(Method::GET, path, headers, body::empty()).await?;
        self.read(response, path).await
    }

    /// The digest `repo:reference` has in the peer (`None`: it has none).
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<String>, PeerError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let response = self
            .send(
                Method::HEAD,
                &path,
                &[("accept", MANIFEST_ACCEPT.into())],
                body::empty(),
            )
            .await?;
        let (status, headers, bytes) = self.read(response, &path).await?;
        match status {
            StatusCode::OK => Ok(headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.refused(s, &format!("HEAD {path}"), &bytes)),
        }
    }

    /// PUTs a manifest under `reference` (a digest, or a tag with `precondition`: the digest
    /// the tag must have now, `None` for absent).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        manifest: Bytes,
        precondition: Option<Option<&str>>,
    ) -> Result<Conditional, PeerError> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let mut headers = vec![("content-type", media_type.to_string())];
        match precondition {
            Some(Some(digest)) => headers.push(("if-match", format!("\"{digest}\""))),
            Some(None) => headers.push(("if-none-match", "*".into())),
            None => {}
        }
        let response = self.send(Method::PUT, &path, &headers, body::full(manifest)).await?;
        let (status, _, bytes) = self.read(response, &path).await?;
        match status {
            StatusCode::CREATED => Ok(Conditional::Done),
            StatusCode::PRECONDITION_FAILED => Ok(Conditional::PreconditionFailed),
            s => Err(self.refused(s, &format!("PUT {path}"), &bytes)),
        }
    }

    /// Deletes `tag` while it points at `digest`.
    pub async fn delete_tag(&self, repo: &str, tag: &str, digest: &str) -> Result<Conditional, PeerError> {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let response = self
            .send(
                Method::DELETE,
                &path,
                &[("if-match", format!("\"{digest}\""))],
                body::empty(),
            )
            .await?;
        let (status, _, bytes) = self.read(response, &path).await?;
        match status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NOT_FOUND => Ok(Conditional::Done),
            StatusCode::PRECONDITION_FAILED => Ok(Conditional::PreconditionFailed),
            s => Err(self.refused(s, &format!("DELETE {path}"), &bytes)),
        }
    }

    /// Whether `repo` in the peer has blob `digest`.
    pub async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool, PeerError> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let response = self.send(Method::HEAD, &path, &[], body::empty()).await?;
        let (status, _, bytes) = self.read(response, &path).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.refused(s, &format!("HEAD {path}"), &bytes)),
        }
    }

    /// Opens an upload session in `repo`; its location.
    pub async fn start_upload(&self, repo: &str) -> Result<String, PeerError> {
        let path = format!("/v2/{repo}/blobs/uploads/");
        let response = self.send(Method::POST, &path, &[], body::empty()).await?;
        let (status, headers, bytes) = self.read(response, &path).await?;
        if status != StatusCode::ACCEPTED {
            return Err(self.refused(status, &format!("POST {path}"), &bytes));
        }
        self.location(&headers, &path)
    }

    fn location(&self, headers: &HeaderMap, what: &str) -> Result<String, PeerError> {
        headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| PeerError::Malformed {
                peer: self.name.clone(),
                what: format!("answer to {what} (no Location)"),
            })
    }

    /// How many bytes the session at `location` holds (`None`: the session is gone).
    pub async fn upload_offset(&self, location: &str) -> Result<Option<u64>, PeerError> {
        let response = self.send(Method::GET, location, &[], body::empty()).await?;
        let (status, headers, bytes) = self.read(response, location).await?;
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK => {
                let range = headers.get("range").and_then(|v| v.to_str().ok()).unwrap_or("0-0");
                let end = range
                    .rsplit('-')
                    .next()
                    .and_then(|e| e.parse::<u64>().ok())
                    .ok_or_else(|| PeerError::Malformed {
                        peer: self.name.clone(),
                        what: format!("upload Range {range:?}"),
                    })?;
                // "0-0" is both "nothing yet" (Keelson, distribution) and "one byte": a session
                // always asks for what it lacks, so resending one byte is harmless but
                // skipping one is not; treat it as empty.
                Ok(Some(if end == 0 { 0 } else { end + 1 }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.refused(s, &format!("GET {location}"), &bytes)),
        }
    }

    /// Appends `len` bytes at `start` to the session; the session's next location.
    pub async fn patch(&self, location: &str, start: u64, len: u64, data: Body) -> Result<String, PeerError> {
        let headers = [
            ("content-type", "application/octet-stream".to_string()),
            ("content-length", len.to_string()),
            ("content-range", format!("{start}-{}", start + len - 1)),
        ];
        let response = self.send(Method::PATCH, location, &headers, data).await?;
        let (status, headers, bytes) = self.read(response, location).await?;
        if status != StatusCode::ACCEPTED {
            return Err(self.refused(status, &format!("PATCH {location}"), &bytes));
        }
        self.location(&headers, location)
    }

    /// Completes the session at `location` as `digest`.
    pub async fn finish(&self, location: &str, digest: &str) -> Result<(), PeerError> {
        let separator = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{separator}digest={digest}");
        let response = self
            .send(Method::PUT, &target, &[("content-length", "0".into())], body::empty())
            .await?;
        let (status, _, bytes) = self.read(response, location).await?;
        if status != StatusCode::CREATED {
            return Err(self.refused(status, &format!("PUT {location}"), &bytes));
        }
        Ok(())
    }
}

/// `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
#[derive(Debug, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

impl BearerChallenge {
    fn parse(header: &str) -> Option<BearerChallenge> {
        let rest = header
            .trim()
            .strip_prefix("Bearer ")
            .or_else(|| header.trim().strip_prefix("bearer "))?;
        let mut fields = std::collections::HashMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.is_empty() {
                break;
            }
            let value: String = if chars.peek() == Some(&'"') {
                chars.next();
                chars.by_ref().take_while(|c| *c != '"').collect()
            } else {
                chars.by_ref().take_while(|c| *c != ',').collect()
            };
            fields.insert(key.trim().to_ascii_lowercase(), value);
        }
        let realm = fields
            .remove("realm")
            .filter(|r| r.starts_with("http://") || r.starts_with("https://"))?;
        Some(BearerChallenge {
            realm,
            service: fields.remove("service"),
            scope: fields.remove("scope"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let c = BearerChallenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/busybox:pull"));
        assert_eq!(BearerChallenge::parse("Basic realm=\"x\""), None);
        assert_eq!(BearerChallenge::parse(r#"Bearer realm="file:///etc/passwd""#), None);
    }
}
