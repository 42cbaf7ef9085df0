//! Manifest GET/HEAD (tag reads are linearizable), PUT (validated, size-limited, committed through
//! Raft) and DELETE (by digest removes the manifest, by tag only the tag).

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use keelson_raft::CatalogCommand;
use keelson_storage::Digest;

use super::{authorize_repo, commit, header, Reply};
use crate::access::{Action, Cx};
use crate::body::{self, Body};
use crate::error::{ApiError, ErrorCode};
use crate::manifest;
use crate::names::Reference;
use crate::routes::query_pairs;

fn unknown() -> ApiError {
    ApiError::new(ErrorCode::ManifestUnknown, "manifest unknown to registry")
}

/// A body over `limit` is drained (up to this much more) before the 413 is sent, so a client
/// still writing its body sees the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 16 << 20;

/// Reads a body of at most `limit` bytes.
async fn read_limited(mut body: Incoming, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    let mut drained = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::new(ErrorCode::ManifestInvalid, format!("reading the manifest failed: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() <= limit {
            buf.extend_from_slice(&data);
        } else {
            drained += data.len();
            if drained > DRAIN_LIMIT {
                break;
            }
        }
    }
    if drained > 0 {
        return Err(too_big(limit));
    }
    Ok(buf.freeze())
}

fn too_big(limit: usize) -> ApiError {
    ApiError::new(ErrorCode::SizeInvalid, format!("manifest larger than {limit} bytes"))
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

pub async fn get<B>(
    reg: &Cx<'_>,
    name: &str,
    reference: &str,
    req: &Request<B>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Pull)?;
    let accept: Vec<&str> = req
        .headers()
        .get_all("accept")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Some(cached) = crate::regions::pull_through::cache_for(reg, name)? {
        if let Some(reply) =
            crate::regions::pull_through::manifest(reg, &cached, name, reference, &accept, head).await?
        {
            return Ok(reply);
        }
    }
    let reference = Reference::parse(reference)?;
    let reader = reg.catalog.reader();
    let by_tag = match &reference {
        Reference::Tag(tag) => Some(tag.clone()),
        Reference::Digest(_) => None,
    };
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
    if !manifest::accepts(&accept, &record.media_type) {
        return Err(ApiError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest is {}, which the request does not accept", record.media_type),
        ));
    }
    if !head {
        // A verification policy may require a valid signature before the image is pulled.
        crate::signatures::enforce(reg, name, &digest, &record).await?;
    }
    let reply = Reply::new(StatusCode::OK)
        .header("Content-Type", &record.media_type)
        .header("Content-Length", record.body.len())
        .header("Docker-Content-Digest", &digest)
        .header("ETag", format!("\"{digest}\""));
    if head {
        return Ok(reply.body(body::empty()));
    }
    // A GET is a pull of this image (a HEAD only asks whether it exists).
    reg.pulls.record(name, &digest, reg.clock.now_ms());
    reg.webhooks
        .note_pull(reg, req, name, by_tag.as_deref(), &digest, &record);
    Ok(reply.body(body::full(record.body)))
}

pub async fn put(
    reg: &Cx<'_>,
    name: &str,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Push)?;
    let reference = Reference::parse(reference)?;
    let limit = reg.limits.max_manifest_bytes;
    let content_type = header(&req, "content-type").map(str::to_string);
    let headers = req.headers().clone();
    let query = req.uri().query().map(str::to_string);
    let origin = crate::webhooks::origin(reg, &req);
    let bytes = read_limited(req.into_body(), limit).await?;
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm(),
        Reference::Tag(_) => Default::default(),
    };
    let valid = manifest::validate(&bytes, content_type.as_deref(), reg.clock.now_ms(), algorithm)?;
    let reference_is_digest = matches!(reference, Reference::Digest(_));
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
    let precondition = tag_precondition(&headers)?;
    // `?tag=` parameters (distribution spec 1.1, "Pushing Manifests with tags"): every tag or
    // none, each named back in an `OCI-Tag` header.
    let mut tags: Vec<String> = tag.iter().cloned().collect();
    for (key, value) in query_pairs(query.as_deref()) {
        if key != "tag" {
            continue;
        }
        let Reference::Tag(t) = Reference::parse(&value)? else {
            return Err(ApiError::new(ErrorCode::TagInvalid, format!("{value:?} is not a tag")));
        };
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    if tags.len() > keelson_raft::command::MAX_TAGS_PER_PUT {
        return Err(ApiError::new(
            ErrorCode::TagInvalid,
            format!(
                "at most {} tags in one manifest PUT",
                keelson_raft::command::MAX_TAGS_PER_PUT
            ),
        ));
    }
    let now_ms = reg.clock.now_ms();
    let cmd = match (precondition, tags.as_slice()) {
        (Some(expected), [tag]) => CatalogCommand::TagIf {
            repo: name.to_string(),
            tag: tag.clone(),
            expected,
            then: Box::new(CatalogCommand::PutManifest {
                repo: name.to_string(),
                digest: digest.to_string(),
                manifest: valid.record,
                tag: Some(tag.clone()),
                now_ms,
            }),
        },
        (Some(_), _) => {
            return Err(ApiError::new(
                ErrorCode::Unsupported,
                "a conditional manifest PUT names exactly one tag",
            )
            .with_status(StatusCode::BAD_REQUEST))
        }
        (None, [] | [_]) => CatalogCommand::PutManifest {
            repo: name.to_string(),
            digest: digest.to_string(),
            manifest: valid.record,
            tag: tags.first().cloned(),
            now_ms,
        },
        (None, _) => CatalogCommand::PutManifestTags {
            repo: name.to_string(),
            digest: digest.to_string(),
            manifest: valid.record,
            tags: tags.clone(),
            now_ms,
        },
    };
    let cmd = CatalogCommand::Attributed {
        origin,
        then: Box::new(cmd),
    };
    commit(reg, cmd).await.map_err(|e| match e.code {
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
    if reference_is_digest {
        for tag in &tags {
            reply = reply.header("OCI-Tag", tag);
        }
    }
    Ok(reply.empty())
}

pub async fn delete<B>(
    reg: &Cx<'_>,
    name: &str,
    reference: &str,
    req: &Request<B>,
) -> Result<Response<Body>, ApiError> {
    authorize_repo(reg, name, Action::Delete)?;
    let cmd = match Reference::parse(reference)? {
        Reference::Digest(d) => CatalogCommand::DeleteManifest {
            repo: name.to_string(),
            digest: d.to_string(),
        },
        Reference::Tag(tag) => {
            let delete = CatalogCommand::DeleteTag {
                repo: name.to_string(),
                tag: tag.clone(),
                now_ms: reg.clock.now_ms(),
            };
            match tag_precondition(req.headers())? {
                Some(expected) => CatalogCommand::TagIf {
                    repo: name.to_string(),
                    tag,
                    expected,
                    then: Box::new(delete),
                },
                None => delete,
            }
        }
    };
    commit(reg, crate::webhooks::attributed(reg, req, cmd))
        .await
        .map_err(|e| {
            if e.code == ErrorCode::ManifestUnknown {
                unknown()
            } else {
                e
            }
        })?;
    Ok(Reply::new(StatusCode::ACCEPTED).empty())
}

/// A conditional tag change (RFC 9110 §13.1): `If-Match: "<digest>"` (the tag must point at
/// that manifest) or `If-None-Match: *` (the tag must not exist). `Some(expected)` when one is
/// given; cross-region replication sends them so a tag never moves backwards in a target.
fn tag_precondition(headers: &http::HeaderMap) -> Result<Option<Option<String>>, ApiError> {
    if let Some(value) = headers.get("if-none-match") {
        return match value.to_str().map(str::trim) {
            Ok("*") => Ok(Some(None)),
            _ => Err(
                ApiError::new(ErrorCode::Unsupported, "If-None-Match on a tag takes only *")
                    .with_status(http::StatusCode::BAD_REQUEST),
            ),
        };
    }
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .map(|v| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty() && !v.contains(['"', ',']));
    match text.map(Digest::parse) {
        Some(Ok(digest)) => Ok(Some(Some(digest.to_string()))),
        _ => Err(ApiError::new(
            ErrorCode::DigestInvalid,
            "If-Match names one manifest digest",
        )),
    }
}
