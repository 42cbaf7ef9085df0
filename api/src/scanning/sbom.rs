//! An inventory as a CycloneDX 1.5 JSON SBOM, attached to its image as a referrer
//! (artifactType `application/vnd.cyclonedx+json`). Each component carries what matching needs
//! (`keelson:ecosystem`, `keelson:match-name`, `keelson:match-version` properties), so findings
//! are worked out again from the SBOM when the database changes, without reading layers.

use serde_json::{json, Value};
use sha2::Digest as _;

use super::inventory::{Inventory, Package};

pub const MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";
/// The annotation naming who made the SBOM (Keelson's scanner).
pub const MADE_BY: &str = "dev.keelson.scanner";

/// The SBOM of image `digest` of `repo`, made at `now_ms`.
pub fn document(repo: &str, digest: &str, inventory: &Inventory, now_ms: u64) -> Vec<u8> {
    // Unique per image and moment, and reproducible (a simulation replays to the same bytes).
    let h = hex::encode(sha2::Sha256::digest(format!("{repo}@{digest}@{now_ms}").as_bytes()));
    // RFC 4122's layout (version 4, variant 10), as CycloneDX's schema requires.
    let variant = ["8", "9", "a", "b"][usize::from(h.as_bytes()[16]) % 4];
    let serial = format!(
        "urn:uuid:{}-{}-4{}-{variant}{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    );
    let timestamp = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms));
    let components: Vec<Value> = inventory
        .packages
        .iter()
        .map(|p| {
            json!({
                "type": "library",
                "bom-ref": format!("{}#{}", p.purl, p.location),
                "name": p.installed_name,
                "version": p.installed_version,
                "purl": p.purl,
                "properties": [
                    { "name": "keelson:ecosystem", "value": p.ecosystem },
                    { "name": "keelson:match-name", "value": p.name },
                    { "name": "keelson:match-version", "value": p.version },
                    { "name": "keelson:location", "value": p.location },
                ],
            })
        })
        .collect();
    let mut properties = Vec::new();
    if let Some((id, version)) = &inventory.os {
        properties.push(json!({ "name": "keelson:os", "value": format!("{id} {version}") }));
    }
    let doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {
            "timestamp": timestamp.to_string(),
            "tools": { "components": [{ "type": "application", "name": "keelson", "version": env!("CARGO_PKG_VERSION") }] },
            "component": { "type": "container", "bom-ref": digest, "name": repo, "version": digest },
            "properties": properties,
        },
        "components": components,
    });
    doc.to_string().into_bytes()
}

/// The packages an SBOM made by [`document`] lists.
pub fn packages(sbom: &[u8]) -> Result<Vec<Package>, String> {
    let doc: Value = serde_json::from_slice(sbom).map_err(|e| format!("SBOM is not JSON: {e}"))?;
    let mut out = Vec::new();
    for c in doc["components"].as_array().into_iter().flatten() {
        let property = |name: &str| {
            c["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == json!(name))
                .and_then(|p| p["value"].as_str())
                .map(str::to_string)
        };
        let (Some(ecosystem), Some(name), Some(version)) = (
            property("keelson:ecosystem"),
            property("keelson:match-name"),
            property("keelson:match-version"),
        ) else {
            continue;
        };
        out.push(Package {
            ecosystem,
            name,
            version,
            installed_name: c["name"].as_str().unwrap_or_default().to_string(),
            installed_version: c["version"].as_str().unwrap_or_default().to_string(),
            location: property("keelson:location").unwrap_or_default(),
            purl: c["purl"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(out)
}
