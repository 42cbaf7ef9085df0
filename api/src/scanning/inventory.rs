//! An image's installed packages, read from its layers in order as a container would see the
//! files: the dpkg status database (and distroless `status.d`), Alpine's apk database, Python
//! `*.dist-info/METADATA` and `*.egg-info/PKG-INFO`, npm `package-lock.json` and
//! `node_modules/*/package.json`, the build information of Go programs (`binaries`), and
//! `os-release` for the distribution. Later layers replace
//! earlier files; whiteouts (`.wh.<name>`, `.wh..wh..opq`) remove them. Only files that name
//! packages are kept, each at most [`MAX_FILE`] bytes and [`MAX_KEPT`] in all.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// Largest package database file read.
pub const MAX_FILE: u64 = 32 << 20;
/// Bytes of package database files kept at once.
pub const MAX_KEPT: usize = 256 << 20;
/// Packages one image may list.
pub const MAX_PACKAGES: usize = 50_000;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    /// OSV's ecosystem: `Debian:12`, `Alpine:v3.20`, `PyPI`, `npm`.
    pub ecosystem: String,
    /// The name advisories use (a Debian binary package's source package).
    pub name: String,
    /// The version advisories compare (a Debian package's source version).
    pub version: String,
    /// The package as installed, when it differs from what advisories name (a Debian binary).
    pub installed_name: String,
    pub installed_version: String,
    /// Where it was found.
    pub location: String,
    pub purl: String,
}

/// What an image's layers hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// `ID` and `VERSION_ID` of `os-release`.
    pub os: Option<(String, String)>,
    pub packages: Vec<Package>,
}

/// Whether a path (without a leading `/` or `./`) names a package database file.
fn wanted(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    path == "var/lib/dpkg/status"
        || path.starts_with("var/lib/dpkg/status.d/")
        || path == "lib/apk/db/installed"
        || path == "etc/os-release"
        || path == "usr/lib/os-release"
        || (name == "METADATA" && parent(path).ends_with(".dist-info"))
        || (name == "PKG-INFO" && parent(path).ends_with(".egg-info"))
        || (name == "package-lock.json" && !path.contains("node_modules/"))
        || (name == "package.json" && is_node_module(parent(path)))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// `…/node_modules/<name>` or `…/node_modules/@scope/<name>`.
fn is_node_module(dir: &str) -> bool {
    match dir.rsplit_once("node_modules/") {
        Some((_, rest)) => {
            let parts: Vec<&str> = rest.split('/').collect();
            matches!(parts.as_slice(), [n] if !n.starts_with('@'))
                || matches!(parts.as_slice(), [s, _] if s.starts_with('@'))
        }
        None => false,
    }
}

/// The files of interest as the last layer leaves them.
#[derive(Default)]
pub struct Layers {
    files: BTreeMap<String, Vec<u8>>,
    kept: usize,
}

impl Layers {
    /// Applies one layer (a tar stream, gzip-compressed or not) over the ones before it.
    pub fn apply(&mut self, layer: impl Read) -> io::Result<()> {
        let mut layer = io::BufReader::with_capacity(256 * 1024, layer);
        let head = io::BufRead::fill_buf(&mut layer)?;
        let gzip = head.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(layer))
        } else {
            Box::new(layer)
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.to_string_lossy().into_owned();
            let path = raw.trim_start_matches("./").trim_start_matches('/').to_string();
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                self.remove_under(&dir);
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = format!("{dir}{hidden}");
                self.remove(&gone);
                self.remove_under(&format!("{gone}/"));
                continue;
            }
            if !entry.header().entry_type().is_file() {
                if entry.header().entry_type().is_dir() {
                    continue;
                }
                // A link or special file replaces whatever was there.
                self.remove(&path);
                continue;
            }
            if !wanted(&path) {
                self.remove(&path);
                let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
                if executable && self.kept < MAX_KEPT {
                    if let Some(info) = super::binaries::sniff(&mut entry)? {
                        self.kept += info.len();
                        self.files.insert(path, info);
                    }
                }
                continue;
            }
            let size = entry.header().size()?;
            if size > MAX_FILE || self.kept + size as usize > MAX_KEPT {
                tracing::warn!(path, size, "package database file skipped: too large");
                self.remove(&path);
                continue;
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.by_ref().take(size).read_to_end(&mut bytes)?;
            self.remove(&path);
            self.kept += bytes.len();
            self.files.insert(path, bytes);
        }
        Ok(())
    }

    fn remove(&mut self, path: &str) {
        if let Some(old) = self.files.remove(path) {
            self.kept -= old.len();
        }
    }

    fn remove_under(&mut self, dir: &str) {
        let gone: Vec<String> = self
            .files
            .range(dir.to_string()..)
            .map(|(k, _)| k.clone())
            .take_while(|k| k.starts_with(dir))
            .collect();
        for path in gone {
            self.remove(&path);
        }
    }

    /// The packages the files name.
    pub fn inventory(&self) -> Inventory {
        let os = self
            .files
            .get("etc/os-release")
            .or_else(|| self.files.get("usr/lib/os-release"))
            .map(|b| os_release(&String::from_utf8_lossy(b)));
        let (os_id, os_version) = os.clone().unwrap_or_default();
        let mut seen = BTreeSet::new();
        let mut packages = Vec::new();
        let mut add = |p: Package| {
            if packages.len() < MAX_PACKAGES
                && seen.insert((
                    p.ecosystem.clone(),
                    p.installed_name.clone(),
                    p.installed_version.clone(),
                    p.location.clone(),
                ))
            {
                packages.push(p);
            }
        };
        for (path, bytes) in &self.files {
            if bytes.starts_with(super::binaries::GO_TAG) {
                for p in super::binaries::go_packages(bytes, path) {
                    add(p);
                }
                continue;
            }
            let text = String::from_utf8_lossy(bytes);
            let name = path.rsplit('/').next().unwrap_or(path);
            if path == "var/lib/dpkg/status" || path.starts_with("var/lib/dpkg/status.d/") {
                let ecosystem = distro_ecosystem("Debian", &os_id, &os_version);
                for p in dpkg(&text, &ecosystem, path, &os_id, &os_version) {
                    add(p);
                }
            } else if path == "lib/apk/db/installed" {
                let ecosystem = distro_ecosystem("Alpine", &os_id, &os_version);
                for p in apk(&text, &ecosystem, path) {
                    add(p);
                }
            } else if name == "METADATA" || name == "PKG-INFO" {
                if let Some(p) = python(&text, path) {
                    add(p);
                }
            } else if name == "package-lock.json" {
                for p in npm_lock(bytes, path) {
                    add(p);
                }
            } else if name == "package.json" {
                if let Some(p) = npm_module(bytes, path) {
                    add(p);
                }
            }
        }
        packages.sort();
        Inventory { os, packages }
    }
}

fn os_release(text: &str) -> (String, String) {
    let mut id = String::new();
    let mut version = String::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "ID" => id = v,
                "VERSION_ID" => version = v,
                _ => {}
            }
        }
    }
    (id, version)
}

/// OSV's ecosystem for a distribution: `Debian:12`, `Alpine:v3.20` (major.minor).
fn distro_ecosystem(base: &str, id: &str, version: &str) -> String {
    match (base, id) {
        ("Debian", "debian") if !version.is_empty() => {
            format!("Debian:{}", version.split('.').next().unwrap_or(version))
        }
        ("Debian", "ubuntu") if !version.is_empty() => format!("Ubuntu:{version}"),
        ("Alpine", "alpine") if !version.is_empty() => {
            let mm: Vec<&str> = version.split('.').take(2).collect();
            format!("Alpine:v{}", mm.join("."))
        }
        _ => base.to_string(),
    }
}

/// RFC 822-style paragraphs: `Field: value` lines, continuation lines indented.
fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut current = BTreeMap::new();
    let mut last_key = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = current.get_mut(&last_key) {
                let v: &mut String = v;
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            last_key = k.trim().to_string();
            current.insert(last_key.clone(), v.trim().to_string());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn dpkg(text: &str, ecosystem: &str, path: &str, os_id: &str, os_version: &str) -> Vec<Package> {
    let distro = if os_id.is_empty() {
        "debian".to_string()
    } else {
        os_id.to_string()
    };
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let (Some(name), Some(version)) = (p.get("Package"), p.get("Version")) else {
            continue;
        };
        // Distroless status.d files carry no Status field.
        if p.get("Status").is_some_and(|s| !s.ends_with(" installed")) {
            continue;
        }
        let (source, source_version) = match p.get("Source") {
            Some(s) => match s.split_once(' ') {
                Some((n, v)) => (
                    n.to_string(),
                    v.trim().trim_matches(|c| c == '(' || c == ')').to_string(),
                ),
                None => (s.clone(), version.clone()),
            },
            None => (name.clone(), version.clone()),
        };
        let arch = p.get("Architecture").cloned().unwrap_or_default();
        let mut purl = format!(
            "pkg:deb/{distro}/{}@{}?arch={arch}",
            purl_part(name),
            purl_part(version)
        );
        if !os_version.is_empty() {
            purl.push_str(&format!("&distro={distro}-{os_version}"));
        }
        out.push(Package {
            ecosystem: ecosystem.to_string(),
            name: source,
            version: source_version,
            installed_name: name.clone(),
            installed_version: version.clone(),
            location: path.to_string(),
            purl,
        });
    }
    out
}

fn apk(text: &str, ecosystem: &str, path: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let field = |k: &str| block.lines().find_map(|l| l.strip_prefix(k)).map(str::to_string);
        let (Some(name), Some(version)) = (field("P:"), field("V:")) else {
            continue;
        };
        let origin = field("o:").unwrap_or_else(|| name.clone());
        out.push(Package {
            ecosystem: ecosystem.to_string(),
            name: origin,
            version: version.clone(),
            purl: format!("pkg:apk/alpine/{}@{}", purl_part(&name), purl_part(&version)),
            installed_name: name,
            installed_version: version,
            location: path.to_string(),
        });
    }
    out
}

/// PEP 503's normalised name.
fn pep503(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
            continue;
        }
        if dash && !out.is_empty() {
            out.push('-');
        }
        dash = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn python(text: &str, path: &str) -> Option<Package> {
    let header = text.split("\n\n").next().unwrap_or_default();
    let field = |k: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
    };
    let name = field("Name:")?;
    let version = field("Version:")?;
    let normal = pep503(&name);
    Some(Package {
        ecosystem: "PyPI".into(),
        purl: format!("pkg:pypi/{}@{}", purl_part(&normal), purl_part(&version)),
        name: normal.clone(),
        version: version.clone(),
        installed_name: name,
        installed_version: version,
        location: path.to_string(),
    })
}

fn npm_package(name: &str, version: &str, path: &str) -> Package {
    let purl_name = match name.split_once('/') {
        Some((scope, n)) => format!("{}/{}", purl_part(scope), purl_part(n)),
        None => purl_part(name),
    };
    Package {
        ecosystem: "npm".into(),
        name: name.to_string(),
        version: version.to_string(),
        installed_name: name.to_string(),
        installed_version: version.to_string(),
        location: path.to_string(),
        purl: format!("pkg:npm/{purl_name}@{}", purl_part(version)),
    }
}

fn npm_lock(bytes: &[u8], path: &str) -> Vec<Package> {
    let Ok(lock) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(packages) = lock["packages"].as_object() {
        for (key, entry) in packages {
            let Some((_, name)) = key.rsplit_once("node_modules/") else {
                continue; // the root project
            };
            if let Some(version) = entry["version"].as_str() {
                out.push(npm_package(name, version, path));
            }
        }
    } else if let Some(deps) = lock["dependencies"].as_object() {
        // lockfileVersion 1: nested `dependencies`.
        let mut stack: Vec<&serde_json::Map<String, serde_json::Value>> = vec![deps];
        while let Some(deps) = stack.pop() {
            for (name, entry) in deps {
                if let Some(version) = entry["version"].as_str() {
                    out.push(npm_package(name, version, path));
                }
                if let Some(nested) = entry["dependencies"].as_object() {
                    stack.push(nested);
                }
            }
        }
    }
    out
}

fn npm_module(bytes: &[u8], path: &str) -> Option<Package> {
    let manifest: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some(npm_package(
        manifest["name"].as_str()?,
        manifest["version"].as_str()?,
        path,
    ))
}

/// Percent-encodes what a purl component may not hold as is.
fn purl_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_replace_and_whiteout_files() {
        let status = b"Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\nSource: bash (5.2.15-2)\nArchitecture: amd64\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        let mut layers = Layers::default();
        layers
            .apply(
                &tar(&[
                    ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
                    ("var/lib/dpkg/status", status),
                    (
                        "usr/lib/python3/dist-packages/Six-1.16.0.dist-info/METADATA",
                        b"Metadata-Version: 2.1\nName: Six\nVersion: 1.16.0\n\nbody",
                    ),
                    (
                        "app/node_modules/@scope/x/package.json",
                        br#"{"name":"@scope/x","version":"1.0.0"}"#,
                    ),
                ])[..],
            )
            .unwrap();
        let inv = layers.inventory();
        assert_eq!(inv.os, Some(("debian".into(), "12".into())));
        let names: Vec<(&str, &str, &str)> = inv
            .packages
            .iter()
            .map(|p| (p.ecosystem.as_str(), p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("Debian:12", "bash", "5.2.15-2"),
                ("PyPI", "six", "1.16.0"),
                ("npm", "@scope/x", "1.0.0")
            ]
        );
        assert_eq!(
            inv.packages[0].purl,
            "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12"
        );
        // A later layer removes the Python package and replaces the node module.
        layers
            .apply(
                &tar(&[
                    ("usr/lib/python3/dist-packages/.wh.Six-1.16.0.dist-info", b""),
                    ("app/node_modules/@scope/.wh..wh..opq", b""),
                ])[..],
            )
            .unwrap();
        let inv = layers.inventory();
        assert_eq!(inv.packages.len(), 1, "{:?}", inv.packages);
    }

    #[test]
    fn lock_files_of_every_version() {
        let v3 = br#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/lodash":{"version":"4.17.20"},"node_modules/a/node_modules/@s/b":{"version":"2.0.0"}}}"#;
        let names: Vec<String> = npm_lock(v3, "package-lock.json")
            .into_iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        assert_eq!(names, vec!["@s/b@2.0.0", "lodash@4.17.20"]);
        let v1 = br#"{"lockfileVersion":1,"dependencies":{"a":{"version":"1.0.0","dependencies":{"b":{"version":"2.0.0"}}}}}"#;
        assert_eq!(npm_lock(v1, "package-lock.json").len(), 2);
        assert_eq!(pep503("Foo_Bar.baz"), "foo-bar-baz");
        let apk_db = "C:Q1\nP:musl\nV:1.2.4-r2\no:musl\n\nP:busybox\nV:1.36.1-r5\n";
        assert_eq!(apk(apk_db, "Alpine:v3.19", "lib/apk/db/installed").len(), 2);
    }
}
