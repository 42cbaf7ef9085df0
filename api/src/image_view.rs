//! How the management API shows images: the list entry (digest, tags, sizes, times, pull
//! count, platforms, referrers) and the detail (layers, config, children, referrers), built from
//! the catalog's image records and the manifests' own descriptors.

use keelson_raft::lifecycle::ImageRecord;
use keelson_raft::retention::ImageFacts;
use keelson_raft::CatalogReader;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::manifest::{DOCKER_LIST, OCI_INDEX};

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// `os/architecture[/variant]` of a descriptor's platform.
fn platform(descriptor: &Value) -> Option<String> {
    let p = descriptor.get("platform")?;
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(Value::as_str) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

/// The manifest's JSON, when the catalog still has it.
fn manifest_json(reader: &CatalogReader, repo: &str, digest: &str) -> Result<Option<Value>, ApiError> {
    Ok(reader
        .manifest(repo, digest)?
        .and_then(|m| serde_json::from_slice(&m.body).ok()))
}

/// The platforms a manifest lists (empty unless it is an index).
fn platforms_of(record: &ImageRecord, doc: Option<&Value>) -> Vec<String> {
    if !is_index(&record.media_type) {
        return Vec::new();
    }
    doc.and_then(|d| d.get("manifests"))
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(platform).collect())
        .unwrap_or_default()
}

/// One image as the list shows it (only an index's manifest is read, for its platforms).
pub fn entry(reader: &CatalogReader, repo: &str, image: &ImageFacts) -> Result<Value, ApiError> {
    let doc = match is_index(&image.record.media_type) {
        true => manifest_json(reader, repo, &image.digest)?,
        false => None,
    };
    entry_with(reader, repo, image, platforms_of(&image.record, doc.as_ref()))
}

fn entry_with(
    reader: &CatalogReader,
    repo: &str,
    image: &ImageFacts,
    platforms: Vec<String>,
) -> Result<Value, ApiError> {
    let r = &image.record;
    Ok(json!({
        "digest": image.digest,
        "media_type": r.media_type,
        "artifact_type": r.artifact_type,
        "subject": r.subject,
        "tags": image.tags,
        "size": r.size,
        "pushed_ms": r.pushed_ms,
        "last_pushed_ms": r.last_pushed_ms,
        "last_tagged_ms": r.last_tagged_ms,
        "last_untagged_ms": r.last_untagged_ms,
        "untagged_since_ms": r.untagged_since_ms,
        "last_pulled_ms": r.last_pulled_ms,
        "pulls": r.pulls,
        "platforms": platforms,
        "referrers": reader.referrer_count(repo, &image.digest)?,
    }))
}

fn descriptor(d: &Value) -> Value {
    json!({
        "digest": d.get("digest"),
        "media_type": d.get("mediaType"),
        "size": d.get("size"),
    })
}

/// One image with its layers, config, children and referrers.
pub fn detail(reader: &CatalogReader, repo: &str, image: &ImageFacts) -> Result<Value, ApiError> {
    let doc = manifest_json(reader, repo, &image.digest)?.unwrap_or(Value::Null);
    let mut out = entry_with(reader, repo, image, platforms_of(&image.record, Some(&doc)))?;
    out["manifest_bytes"] = json!(image.record.manifest_bytes);
    out["config"] = doc.get("config").map(descriptor).unwrap_or(Value::Null);
    out["layers"] = json!(doc
        .get("layers")
        .and_then(Value::as_array)
        .map(|l| l.iter().map(descriptor).collect::<Vec<_>>())
        .unwrap_or_default());
    out["children"] = json!(doc
        .get("manifests")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|d| {
                    let mut child = descriptor(d);
                    child["platform"] = json!(platform(d));
                    child
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default());
    out["referrers"] = json!(reader
        .referrers(repo, &image.digest)?
        .into_iter()
        .map(|r| json!({
            "digest": r.digest,
            "media_type": r.media_type,
            "artifact_type": r.artifact_type,
            "size": r.size,
            "annotations": r.annotations,
        }))
        .collect::<Vec<_>>());
    Ok(out)
}
