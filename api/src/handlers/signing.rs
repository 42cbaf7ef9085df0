//! `/api/v1/tenancies/<ns>/signing-keys…` and `…/verification-policies…`: the keys a tenancy
//! trusts for image signatures (a public key, a notation trust-anchor certificate, or a key the
//! cluster makes and holds for server-side signing) and the policies that refuse pulls of
//! images without a valid signature; and `POST /api/v1/repos/<repo>/images/<digest>/sign`,
//! which signs an image (and the manifests of an index) in cosign's format with a held key.
//! Key material is parsed and checked here, where it enters.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use keelson_raft::scanning::Severity;
use keelson_raft::signing::{self as signing, KeyMaterial, SigningCommand, TrustScope, TrustedKey, VerificationPolicy};
use keelson_raft::webhooks::EventOrigin;
use keelson_raft::{CatalogCommand, Rejection};
use keelson_storage::Algorithm;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{bad_request, commit, json_reply, ok, read_json};
use crate::access::{self, Cx};
use crate::body::Body;
use crate::error::{ApiError, ErrorCode};
use crate::signatures::cosign::{self, Blob};
use crate::signatures::keys::{self, Material};

/// What `PUT …/signing-keys/<name>` takes: exactly one of `public_key`, `certificate` (PEM)
/// or `generate: true`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// `tenancy`, `compartment:<name>` or `repository:<name>`.
    pub scope: String,
    pub public_key: Option<String>,
    pub certificate: Option<String>,
    #[serde(default)]
    pub generate: bool,
}

/// What `PUT …/verification-policies/<name>` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    pub scope: String,
    /// Keys one of which must verify a signature of the image.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Refuse images with a vulnerability finding at or above this severity (LOW, MEDIUM,
    /// HIGH, CRITICAL).
    pub refuse_severity: Option<String>,
}

/// What `POST …/images/<digest>/sign` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    pub key: String,
}

/// Manifests one signing request signs (an index and its children).
const MAX_SIGNED_PER_REQUEST: usize = 64;
/// Attempts at adding a signature while others change the same `.sig` tag.
const SIGN_ATTEMPTS: usize = 5;

/// Dispatches `/api/v1/tenancies/<ns>/signing-keys/<rest…>`.
pub async fn keys_route(
    cx: &Cx<'_>,
    ns: &str,
    rest: &[&str],
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    access::administer_tenancy(cx, ns)?;
    let method = req.method().clone();
    let reader = cx.catalog.reader();
    match (&method, rest) {
        (&Method::GET, []) => {
            let keys = reader.signing_keys(ns)?;
            let list: Vec<Value> = keys.keys.iter().map(|(n, k)| key_json(n, k)).collect();
            ok(json!({ "keys": list }))
        }
        (&Method::GET, [name]) => match reader.signing_keys(ns)?.keys.get(*name) {
            Some(key) => ok(key_json(name, key)),
            None => Err(unknown("signing key", name)),
        },
        (&Method::PUT, [name]) => {
            valid_name(name)?;
            let body: KeyBody = read_json(req).await?;
            let existed = reader.signing_keys(ns)?.keys.contains_key(*name);
            let key = key_of(cx, ns, body)?;
            let answer = key_json(name, &key);
            let (ns, name) = (ns.to_string(), name.to_string());
            put_named(cx, existed, SigningCommand::PutKey { ns, name, key }, answer).await
        }
        (&Method::DELETE, [name]) => {
            let exists = reader.signing_keys(ns)?.keys.contains_key(*name);
            let cmd = SigningCommand::DeleteKey {
                ns: ns.to_string(),
                name: name.to_string(),
            };
            delete_named(cx, exists, "signing key", name, cmd).await
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Dispatches `/api/v1/tenancies/<ns>/verification-policies/<rest…>`.
pub async fn policies_route(
    cx: &Cx<'_>,
    ns: &str,
    rest: &[&str],
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    access::administer_tenancy(cx, ns)?;
    let method = req.method().clone();
    let reader = cx.catalog.reader();
    match (&method, rest) {
        (&Method::GET, []) => {
            let policies = reader.verification_policies(ns)?;
            let list: Vec<Value> = policies.policies.iter().map(|(n, p)| policy_json(n, p)).collect();
            ok(json!({ "policies": list }))
        }
        (&Method::GET, [name]) => match reader.verification_policies(ns)?.policies.get(*name) {
            Some(policy) => ok(policy_json(name, policy)),
            None => Err(unknown("verification policy", name)),
        },
        (&Method::PUT, [name]) => {
            valid_name(name)?;
            let body: PolicyBody = read_json(req).await?;
            let existed = reader.verification_policies(ns)?.policies.contains_key(*name);
            let refuse_severity = match body.refuse_severity.as_deref() {
                None => None,
                Some(text) => Some(
                    Severity::parse(text)
                        .filter(|s| *s != Severity::Unknown)
                        .ok_or_else(|| bad_request(format!("{text:?} is not LOW, MEDIUM, HIGH or CRITICAL")))?,
                ),
            };
            let policy = VerificationPolicy {
                scope: scope_of(cx, ns, &body.scope)?,
                keys: body.keys,
                refuse_severity,
                created_ms: cx.clock.now_ms(),
            };
            let answer = policy_json(name, &policy);
            let (ns, name) = (ns.to_string(), name.to_string());
            put_named(cx, existed, SigningCommand::PutPolicy { ns, name, policy }, answer).await
        }
        (&Method::DELETE, [name]) => {
            let exists = reader.verification_policies(ns)?.policies.contains_key(*name);
            let cmd = SigningCommand::DeletePolicy {
                ns: ns.to_string(),
                name: name.to_string(),
            };
            delete_named(cx, exists, "verification policy", name, cmd).await
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Commits a key's or policy's creation or replacement and answers it: 201 for a new one.
async fn put_named(cx: &Cx<'_>, existed: bool, cmd: SigningCommand, answer: Value) -> Result<Response<Body>, ApiError> {
    commit(cx, CatalogCommand::Signing(cmd)).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok(json_reply(status, &answer))
}

/// Commits the deletion of a key or policy that exists; 404 naming `what` when it does not.
async fn delete_named(
    cx: &Cx<'_>,
    exists: bool,
    what: &str,
    name: &str,
    cmd: SigningCommand,
) -> Result<Response<Body>, ApiError> {
    if !exists {
        return Err(unknown(what, name));
    }
    commit(cx, CatalogCommand::Signing(cmd)).await?;
    ok(json!({ "deleted": name }))
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    if signing::valid_name(name) {
        Ok(())
    } else {
        Err(bad_request(format!(
            "{name:?} is not a name (1 to 64 of a-z 0-9 - _ .)"
        )))
    }
}

fn unknown(what: &str, name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no {what} {name}"))
}

/// A scope named in a request, checked against the tenancy.
fn scope_of(cx: &Cx<'_>, ns: &str, text: &str) -> Result<TrustScope, ApiError> {
    let scope = TrustScope::parse(text).ok_or_else(|| {
        bad_request(format!(
            "scope {text:?} is not tenancy, compartment:<name> or repository:<name>"
        ))
    })?;
    match &scope {
        TrustScope::Tenancy => {}
        TrustScope::Compartment(c) => {
            let known = cx.catalog.reader().with_identity(|s| {
                s.tenancies
                    .get(ns)
                    .is_some_and(|t| c == ns || t.compartments.contains_key(c))
            });
            if !known {
                return Err(bad_request(format!("tenancy {ns} has no compartment {c}")));
            }
        }
        TrustScope::Repository(r) => {
            crate::names::validate_repo(r)?;
            if keelson_raft::lifecycle::tenancy_of(r) != ns {
                return Err(bad_request(format!("repository {r} is not in tenancy {ns}")));
            }
        }
    }
    Ok(scope)
}

/// The key a PUT asks for, its material checked (and made, for `generate`).
fn key_of(cx: &Cx<'_>, ns: &str, body: KeyBody) -> Result<TrustedKey, ApiError> {
    let scope = scope_of(cx, ns, &body.scope)?;
    let (material, pem, private) = match (body.public_key, body.certificate, body.generate) {
        (Some(pem), None, false) => (KeyMaterial::PublicKey, pem, None),
        (None, Some(pem), false) => (KeyMaterial::Certificate, pem, None),
        (None, None, true) => {
            let made = keys::make_key().map_err(|e| ApiError::new(ErrorCode::Unavailable, e))?;
            (
                KeyMaterial::PublicKey,
                made.public_pem,
                Some(cx.keep_secret(&made.pkcs8)),
            )
        }
        _ => {
            return Err(bad_request(
                "give exactly one of public_key (PEM), certificate (PEM) or generate: true",
            ))
        }
    };
    if pem.len() > signing::MAX_PEM_LEN {
        return Err(bad_request(format!("key PEM text over {} bytes", signing::MAX_PEM_LEN)));
    }
    Material::parse(material, &pem).map_err(bad_request)?;
    Ok(TrustedKey {
        scope,
        material,
        pem,
        private,
        created_ms: cx.clock.now_ms(),
    })
}

/// A key as the API shows it (never its private part).
fn key_json(name: &str, key: &TrustedKey) -> Value {
    let fingerprint = Material::parse(key.material, &key.pem)
        .map(|m| m.fingerprint())
        .unwrap_or_default();
    json!({
        "name": name,
        "scope": key.scope.to_string(),
        "kind": match key.material {
            KeyMaterial::PublicKey => "public_key",
            KeyMaterial::Certificate => "certificate",
        },
        "pem": key.pem,
        "fingerprint_sha256": fingerprint,
        "held_by_cluster": key.private.is_some(),
        "created_ms": key.created_ms,
    })
}

fn policy_json(name: &str, policy: &VerificationPolicy) -> Value {
    json!({
        "name": name,
        "scope": policy.scope.to_string(),
        "keys": policy.keys,
        "refuse_severity": policy.refuse_severity.map(|s| s.name()),
        "created_ms": policy.created_ms,
    })
}

/// Signs image `digest` of `repo` (and, for an index, each of its manifests) with the held key
/// the body names: cosign's simple-signing payload, kept under the `.sig` tag beside any
/// signatures already there, so `cosign verify --key` accepts it.
pub async fn sign(cx: &Cx<'_>, repo: &str, digest: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let origin = crate::webhooks::origin(cx, &req);
    let body: SignBody = read_json(req).await?;
    let ns = keelson_raft::lifecycle::tenancy_of(repo);
    let key = cx
        .catalog
        .reader()
        .signing_keys(ns)?
        .keys
        .get(&body.key)
        .cloned()
        .ok_or_else(|| unknown("signing key", &body.key))?;
    let compartment = cx.catalog.reader().repo(repo)?.and_then(|r| r.compartment);
    let ancestry = cx
        .catalog
        .reader()
        .with_identity(|s| s.ancestry(ns, compartment.as_deref()));
    if !key.scope.covers(repo, &ancestry) {
        return Err(bad_request(format!(
            "key {} is trusted for {}, which does not include {repo}",
            body.key, key.scope
        )));
    }
    let pkcs8 = crate::signatures::open_private(cx, &body.key, &key)?;
    let mut targets = vec![digest.to_string()];
    if let Some(record) = cx.catalog.reader().manifest(repo, digest)? {
        targets.extend(record.manifests.iter().take(MAX_SIGNED_PER_REQUEST - 1).cloned());
    }
    let mut signed = Vec::with_capacity(targets.len());
    for target in targets {
        let (manifest, tag) = sign_one(cx, repo, &target, &host, &pkcs8, &origin).await?;
        signed.push(json!({ "digest": target, "signature_manifest": manifest, "tag": tag }));
    }
    Ok(json_reply(
        StatusCode::CREATED,
        &json!({ "key": body.key, "signed": signed }),
    ))
}

/// Adds one signature of `digest` to its `.sig` manifest; returns that manifest's digest and tag.
async fn sign_one(
    cx: &Cx<'_>,
    repo: &str,
    digest: &str,
    host: &str,
    pkcs8: &[u8],
    origin: &EventOrigin,
) -> Result<(String, String), ApiError> {
    let payload = cosign::payload(&format!("{host}/{repo}"), digest);
    let signature = keys::sign(pkcs8, &payload).map_err(|e| ApiError::new(ErrorCode::Unavailable, e))?;
    let payload_blob = Blob {
        size: payload.len() as u64,
        digest: crate::handlers::uploads::store_bytes(cx, repo, "keelson/signing", Bytes::from(payload))
            .await?
            .to_string(),
    };
    let tag = cosign::signature_tag(digest);
    for _ in 0..SIGN_ATTEMPTS {
        let reader = cx.catalog.reader();
        let current = reader.tag(repo, &tag)?;
        let mut layers = match &current {
            Some(d) => reader
                .manifest(repo, d)?
                .map(|m| cosign::existing_layers(&m.body))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        layers.push(cosign::layer(&payload_blob, &signature));
        let config = cosign::config(&cosign::blobs_of(&layers));
        let config_blob = Blob {
            size: config.len() as u64,
            digest: crate::handlers::uploads::store_bytes(cx, repo, "keelson/signing", Bytes::from(config))
                .await?
                .to_string(),
        };
        let body = cosign::manifest(&config_blob, layers);
        let valid = crate::manifest::validate(
            &body,
            Some(crate::manifest::OCI_MANIFEST),
            cx.clock.now_ms(),
            Algorithm::Sha256,
        )?;
        let manifest_digest = valid.digest.to_string();
        let put = CatalogCommand::PutManifest {
            repo: repo.to_string(),
            digest: manifest_digest.clone(),
            manifest: valid.record,
            tag: Some(tag.clone()),
            now_ms: cx.clock.now_ms(),
        };
        let guarded = CatalogCommand::TagIf {
            repo: repo.to_string(),
            tag: tag.clone(),
            expected: current,
            then: Box::new(put),
        };
        let attributed = CatalogCommand::Attributed {
            origin: origin.clone(),
            then: Box::new(guarded),
        };
        match cx.catalog.propose(attributed).await? {
            keelson_raft::CatalogResponse::Applied => return Ok((manifest_digest, tag)),
            // Another signature landed meanwhile: add to the manifest it made.
            keelson_raft::CatalogResponse::Rejected(Rejection::PreconditionFailed { .. }) => continue,
            keelson_raft::CatalogResponse::Rejected(r) => return Err(r.into()),
        }
    }
    Err(ApiError::new(
        ErrorCode::Unavailable,
        format!("{tag} kept changing while signing; retry"),
    ))
}
