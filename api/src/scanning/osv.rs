//! OSV advisories (ossf/osv-schema): read from the JSON files of an offline export into the
//! catalog's per-package form, and matched against an inventory with each ecosystem's own
//! version order.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use keelson_raft::scanning::{Advisory, AffectedRange, Severity, VulnPackage, MAX_TEXT};
use serde_json::Value;

use super::inventory::Package;
use super::versions;

fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// An advisory's severity: `database_specific.severity` (GitHub's), an ecosystem's urgency
/// (Debian's), or a CVSS v3 vector's base score.
fn severity(osv: &Value, affected: &Value) -> Severity {
    if let Some(s) = osv["database_specific"]["severity"].as_str().and_then(Severity::parse) {
        return s;
    }
    if let Some(s) = affected["ecosystem_specific"]["severity"]
        .as_str()
        .and_then(Severity::parse)
    {
        return s;
    }
    if let Some(urgency) = affected["ecosystem_specific"]["urgency"].as_str() {
        let s = match urgency.trim_end_matches('*') {
            "low" | "unimportant" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            _ => Severity::Unknown,
        };
        if s != Severity::Unknown {
            return s;
        }
    }
    for s in osv["severity"].as_array().into_iter().flatten() {
        if let Some(score) = s["score"].as_str().and_then(cvss3_base) {
            return match score {
                x if x >= 9.0 => Severity::Critical,
                x if x >= 7.0 => Severity::High,
                x if x >= 4.0 => Severity::Medium,
                x if x > 0.0 => Severity::Low,
                _ => Severity::Unknown,
            };
        }
    }
    Severity::Unknown
}

/// The base score of a CVSS v3.x vector (FIRST's specification, section 7.1).
pub fn cvss3_base(vector: &str) -> Option<f64> {
    let rest = vector
        .strip_prefix("CVSS:3.1/")
        .or_else(|| vector.strip_prefix("CVSS:3.0/"))?;
    let metrics: BTreeMap<&str, &str> = rest.split('/').filter_map(|m| m.split_once(':')).collect();
    let changed = *metrics.get("S")? == "C";
    let av = match *metrics.get("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match *metrics.get("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (*metrics.get("PR")?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match *metrics.get("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let cia = |k: &str| -> Option<f64> {
        Some(match *metrics.get(k)? {
            "H" => 0.56,
            "L" => 0.22,
            "N" => 0.0,
            _ => return None,
        })
    };
    let iss = 1.0 - (1.0 - cia("C")?) * (1.0 - cia("I")?) * (1.0 - cia("A")?);
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15)
    } else {
        6.42 * iss
    };
    if impact <= 0.0 {
        return Some(0.0);
    }
    let exploitability = 8.22 * av * ac * pr * ui;
    let raw = if changed {
        (1.08 * (impact + exploitability)).min(10.0)
    } else {
        (impact + exploitability).min(10.0)
    };
    // Round up to one decimal as the specification's Roundup does.
    let int = (raw * 100_000.0).round() as i64;
    Some(if int % 10_000 == 0 {
        int as f64 / 100_000.0
    } else {
        ((int / 10_000) + 1) as f64 / 10.0
    })
}

/// The packages one OSV document names, with the advisory as it applies to each.
pub fn packages_of(osv: &Value) -> Vec<VulnPackage> {
    let Some(id) = osv["id"].as_str() else {
        return Vec::new();
    };
    if osv["withdrawn"].is_string() {
        return Vec::new();
    }
    let summary = osv["summary"]
        .as_str()
        .or_else(|| osv["details"].as_str())
        .unwrap_or_default();
    let mut out = Vec::new();
    for affected in osv["affected"].as_array().into_iter().flatten() {
        let (Some(ecosystem), Some(name)) = (
            affected["package"]["ecosystem"].as_str(),
            affected["package"]["name"].as_str(),
        ) else {
            continue;
        };
        let ranges = affected["ranges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| matches!(r["type"].as_str(), Some("ECOSYSTEM" | "SEMVER")))
            .flat_map(ranges_of)
            .collect();
        let versions = affected["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .take(10_000)
            .collect();
        out.push(VulnPackage {
            ecosystem: ecosystem.to_string(),
            name: name.to_string(),
            advisories: vec![Advisory {
                id: cut(id),
                summary: cut(summary),
                severity: severity(osv, affected),
                ranges,
                versions,
            }],
        });
    }
    out
}

/// A range's events in order as half-open intervals.
fn ranges_of(range: &Value) -> Vec<AffectedRange> {
    let kind = range["type"].as_str().unwrap_or("ECOSYSTEM").to_string();
    let mut out = Vec::new();
    let mut open: Option<AffectedRange> = None;
    for event in range["events"].as_array().into_iter().flatten() {
        if let Some(v) = event["introduced"].as_str() {
            if let Some(r) = open.take() {
                out.push(r);
            }
            open = Some(AffectedRange {
                kind: kind.clone(),
                introduced: (v != "0").then(|| v.to_string()),
                fixed: None,
                last_affected: None,
            });
        } else if let Some(v) = event["fixed"].as_str() {
            if let Some(mut r) = open.take() {
                r.fixed = Some(v.to_string());
                out.push(r);
            }
        } else if let Some(v) = event["last_affected"].as_str() {
            if let Some(mut r) = open.take() {
                r.last_affected = Some(v.to_string());
                out.push(r);
            }
        }
    }
    out.extend(open);
    out
}

/// Whether `version` of a package in `ecosystem` is affected by `advisory`.
pub fn affects(advisory: &Advisory, ecosystem: &str, version: &str) -> bool {
    if advisory.versions.iter().any(|v| v == version) {
        return true;
    }
    advisory.ranges.iter().any(|r| {
        let order = |a: &str, b: &str| match r.kind.as_str() {
            "SEMVER" => versions::semver(a, b),
            _ => versions::compare(ecosystem, a, b),
        };
        let after_start = match &r.introduced {
            None => true,
            Some(i) => matches!(order(version, i), Some(Ordering::Greater | Ordering::Equal)),
        };
        let before_end = match (&r.fixed, &r.last_affected) {
            (Some(f), _) => order(version, f) == Some(Ordering::Less),
            (None, Some(l)) => matches!(order(version, l), Some(Ordering::Less | Ordering::Equal)),
            (None, None) => true,
        };
        after_start && before_end
    })
}

/// The version an advisory's ranges name as fixing `version`, when one does.
pub fn fixed_in(advisory: &Advisory, ecosystem: &str, version: &str) -> Option<String> {
    advisory.ranges.iter().find_map(|r| {
        let fixed = r.fixed.as_ref()?;
        let order = match r.kind.as_str() {
            "SEMVER" => versions::semver(version, fixed),
            _ => versions::compare(ecosystem, version, fixed),
        };
        (order == Some(Ordering::Less)).then(|| fixed.clone())
    })
}

/// The OSV ecosystems a package's advisories may be filed under: its own, and for a
/// distribution release the distribution without a release.
pub fn ecosystems_for(package: &Package) -> Vec<String> {
    let mut out = vec![package.ecosystem.clone()];
    if let Some((base, _)) = package.ecosystem.split_once(':') {
        out.push(base.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ranges_include_introduced_and_exclude_fixed() {
        let osv = json!({
            "id": "TEST-1", "summary": "s",
            "database_specific": { "severity": "HIGH" },
            "affected": [{
                "package": { "ecosystem": "npm", "name": "lodash" },
                "ranges": [{ "type": "SEMVER", "events": [{ "introduced": "0" }, { "fixed": "4.17.21" }] }],
            }],
        });
        let p = packages_of(&osv);
        let a = &p[0].advisories[0];
        assert_eq!(a.severity, Severity::High);
        assert!(affects(a, "npm", "4.17.20"));
        assert!(!affects(a, "npm", "4.17.21"), "the fixed version is not vulnerable");
        assert!(!affects(a, "npm", "5.0.0"));
        assert_eq!(fixed_in(a, "npm", "4.17.20").as_deref(), Some("4.17.21"));
        let last = json!({"id":"T2","affected":[{"package":{"ecosystem":"PyPI","name":"x"},
            "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"1.0"},{"last_affected":"1.2"}]}]}]});
        let a = &packages_of(&last)[0].advisories[0];
        assert!(affects(a, "PyPI", "1.2"));
        assert!(!affects(a, "PyPI", "1.2.post1"));
        assert!(!affects(a, "PyPI", "0.9"));
    }

    #[test]
    fn cvss_scores_match_first_examples() {
        // CVE-2021-44228 (log4shell): 10.0; a local, high-complexity one: 4.7.
        assert_eq!(cvss3_base("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"), Some(10.0));
        assert_eq!(cvss3_base("CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:H/I:N/A:N"), Some(4.7));
        assert_eq!(cvss3_base("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"), Some(9.8));
        assert_eq!(cvss3_base("nonsense"), None);
    }
}
