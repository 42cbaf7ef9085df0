//! Manifest GET/HEAD (tag reads are linearizable), PUT (validated, size-limited, committed through
//! Raft) and DELETE (by digest removes the manifest, by tag only the tag).

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use keelson_raft::CatalogCommand;

use super::{authorize_repo, commit, header, Reply};
use crate::access::Action;
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::manifest;
use crate::names::Reference;
use crate::registry::Registry;

fn unknown() -> ApiError {
    ApiError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
}

fn too_big(limit: usize) -> ApiError {
    ApiError::new(ErrorCode::SizeInvalid, format!("manifest larger than {limit} bytes"))
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

pub async fn get<B>(
    reg: &Registry,
    name: &str,
    reference: &str,
    req: &Request<B>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Read)?;
    let reference = Reference::parse(reference)?;
    let reader = reg.catalog.reader();
    let (digest, record) = match reference {
        Reference::Tag(tag) => {
            reg.catalog.linearizable().await?;
            let digest = reader.tag(name, &tag)?.ok_or_else(unknown)?;
            let record = reader.manifest(name, &digest)?.ok_or_else(unknown)?;
            (digest, record)
        }
        Reference::Digest(d) => {
            let digest = d.to_string();
            let record = match reader.manifest(name, &digest)? {
                Some(r) => r,
                None => {
                    // Content is immutable, so only a miss needs the linearizable re-check.
                    reg.catalog.linearizable().await?;
                    reader.manifest(name, &digest)?.ok_or_else(unknown)?
                }
            };
            (digest, record)
        }
    };
    let accept: Vec<&str> = req
        .headers()
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !manifest::accepts(&accept, &record.media_type) {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest is {}, which the request does not accept", record.media_type),
        ));
    }
    let reply = Reply::new(StatusCode::OK)
        .header("Content-Type", &record.media_type)
        .header("Content-Length", record.body.len())
        .header("Docker-Content-Digest", &digest)
        .header("ETag", format!("\"{digest}\""));
    Ok(reply.body(if head { body::empty() } else { body::full(record.body) }))
}

pub async fn put(
    reg: &Registry,
    name: &str,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Write)?;
    let reference = Reference::parse(reference)?;
    let limit = reg.limits.max_manifest_bytes;
    if let Some(len) = header(&req, "content-length").and_then(|l| l.parse::<u64>().ok()) {
        if len > limit as u64 {
            return Err(too_big(limit));
        }
    }
    let content_type = header(&req, "content-type").map(str::to_string);
    let bytes = Limited::new(req.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                too_big(limit)
            } else {
                ApiError::new(ErrorCode::ManifestInvalid, format!("reading the manifest failed: {e}"))
            }
        })?
        .to_bytes();
    let valid = manifest::validate(&bytes, content_type.as_deref(), reg.clock.now_ms())?;
    let tag = match reference {
        Reference::Digest(d) if d != valid.digest => {
            return Err(ApiError::new(
                ErrorCode::DigestInvalid,
                format!("manifest digest is {}, not {d}", valid.digest),
            ));
        }
        Reference::Digest(_) => None,
        Reference::Tag(t) => Some(t),
    };
    let subject = valid.record.subject.clone();
    let digest = valid.digest;
    commit(
        reg,
        CatalogCommand::PutManifest {
            repo: name.to_string(),
            digest: digest.to_string(),
            manifest: valid.record,
            tag,
            now_ms: reg.clock.now_ms(),
        },
    )
    .await
    .map_err(|e| match e.code {
        // A missing child manifest of an index is a missing referenced blob from the
        // pusher's point of view.
        ErrorCode::ManifestUnknown | ErrorCode::ManifestBlobUnknown => ApiError {
            code: ErrorCode::ManifestBlobUnknown,
            status: StatusCode::BAD_REQUEST,
            ..e
        },
        _ => e,
    })?;
    let mut reply = Reply::new(StatusCode::CREATED)
        .header("Location", format!("/v2/{name}/manifests/{digest}"))
        .header("Docker-Content-Digest", &digest);
    if let Some(subject) = subject {
        reply = reply.header("OCI-Subject", subject);
    }
    Ok(reply.empty())
}

pub async fn delete(reg: &Registry, name: &str, reference: &str) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Manage)?;
    let cmd = match Reference::parse(reference)? {
        Reference::Digest(d) => CatalogCommand::DeleteManifest {
            repo: name.to_string(),
            digest: d.to_string(),
        },
        Reference::Tag(tag) => CatalogCommand::DeleteTag {
            repo: name.to_string(),
            tag,
        },
    };
    commit(reg, cmd).await.map_err(|e| {
        if e.code == ErrorCode::ManifestUnknown {
            unknown()
        } else {
            e
        }
    })?;
    Ok(Reply::new(StatusCode::ACCEPTED).empty())
}
