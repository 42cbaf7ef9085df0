//! Vulnerability scanning end to end on a real node: an image built here from this machine's
//! own package databases (its dpkg status and os-release, a Python environment's dist-info, an
//! npm lock file) is inventoried in the background after its push; the SBOM attached to it
//! validates with an independent validator (cyclonedx-python-lib); matched against a small OSV
//! fixture written for the versions the image holds, the findings are exactly the expected ones
//! (a version exactly at a fix is not vulnerable; another release's advisory does not apply);
//! importing a newer fixture changes the findings without reading a layer again; and a policy
//! refuses pulls of the image at a severity it has. A Go program (this machine's own `ctr`,
//! from Debian's containerd) is inventoried from the build information in its binary: its Go
//! standard library is matched against Go advisories.

mod support;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::images::{http, push_image, Image};
use support::tools::{api_json as api, api_json_ok as api_ok, exec_ok, need, tool, wait_until};
use support::Keelson;

const LIMIT: Duration = Duration::from_secs(300);

/// A gzip-compressed tar layer of `files` (path, bytes).
fn layer(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    layer_with_modes(
        &files
            .iter()
            .map(|(p, d)| (p.clone(), d.clone(), 0o644))
            .collect::<Vec<_>>(),
    )
}

/// [`layer`] with each file's mode.
fn layer_with_modes(files: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        builder.append_data(&mut header, path, &data[..]).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// A dpkg status paragraph's field, when the package has it.
fn dpkg_field(status: &str, package: &str, field: &str) -> Option<String> {
    let paragraph = status
        .split("\n\n")
        .find(|p| p.lines().next() == Some(&format!("Package: {package}")))
        .unwrap_or_else(|| panic!("{package} is not installed on this machine"));
    paragraph
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .map(str::to_string)
}

fn osv(id: &str, ecosystem: &str, package: &str, events: Value, extra: Value) -> Value {
    let mut doc = json!({
        "schema_version": "1.6.0",
        "id": id,
        "modified": "2026-12-01T00:00:00Z",
        "summary": format!("test advisory {id}"),
        "affected": [{
            "package": { "ecosystem": ecosystem, "name": package },
            "ranges": [{ "type": "ECOSYSTEM", "events": events }],
        }],
    });
    if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if k == "ecosystem_specific" {
                d["affected"][0]["ecosystem_specific"] = v.clone();
            } else {
                d.insert(k.clone(), v.clone());
            }
        }
    }
    doc
}

fn write_fixture(dir: &Path, docs: &[Value]) {
    std::fs::create_dir_all(dir).unwrap();
    for doc in docs {
        let id = doc["id"].as_str().unwrap();
        std::fs::write(dir.join(format!("{id}.json")), doc.to_string()).unwrap();
    }
}

fn import(host: &str, dir: &Path) {
    exec_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .args(["vulndb", "import"])
            .arg(dir)
            .env("KEELSON_NODE", host)
            .env_remove("KEELSON_USER")
            .env_remove("KEELSON_TOKEN"),
        LIMIT,
        String::new,
    );
}

/// (id, package) of every finding.
fn findings(host: &str, repo: &str, digest: &str) -> Vec<(String, String, String)> {
    let report = api_ok(
        "GET",
        host,
        &format!("/api/v1/repos/{repo}/images/{digest}/vulnerabilities"),
        None,
    );
    assert_eq!(report["state"], json!("scanned"), "{report}");
    let mut out: Vec<(String, String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_string(),
                f["package"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn scanned_counter(host: &str) -> u64 {
    let text = exec_ok(
        tool("curl").args(["-sf", &format!("http://{host}/metrics")]),
        LIMIT,
        String::new,
    );
    text.lines()
        .find_map(|l| l.strip_prefix("keelson_images_scanned_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_inventoried_and_matched_against_osv() {
    need("python3");
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start_with_env(tmp.path(), &[("KEELSON_AUTH", "off"), ("KEELSON_SCANNER", "true")]);
    let host = node.host();
    let repo = "demo/scanned";

    // This machine's own package databases.
    let status = std::fs::read_to_string("/var/lib/dpkg/status").unwrap();
    let os_release = std::fs::read("/etc/os-release").unwrap();
    let os_text = String::from_utf8_lossy(&os_release).to_string();
    let release = os_text
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .unwrap()
        .trim_matches('"')
        .split('.')
        .next()
        .unwrap()
        .to_string();
    // Debian's advisories name source packages and their versions: bash's binary may be a
    // binNMU (`5.2.15-2+b8`) of source version `5.2.15-2`.
    let bash_version = dpkg_field(&status, "bash", "Source")
        .and_then(|s| Some(s.split_once(" (")?.1.trim_end_matches(')').to_string()))
        .or_else(|| dpkg_field(&status, "bash", "Version"))
        .expect("bash has a version");
    let dist_info = exec_ok(
        tool("python3").args([
            "-c",
            "import importlib.metadata as m; d = m.distribution('cryptography'); print(d._path); print(d.version)",
        ]),
        LIMIT,
        String::new,
    );
    let mut lines = dist_info.lines();
    let (dist_path, crypto_version) = (lines.next().unwrap().to_string(), lines.next().unwrap().to_string());
    let metadata = std::fs::read(Path::new(&dist_path).join("METADATA")).unwrap();
    let lock = json!({
        "name": "web", "lockfileVersion": 3,
        "packages": {
            "": { "name": "web", "dependencies": { "lodash": "^4.17.0", "minimist": "^1.2.0" } },
            "node_modules/lodash": { "version": "4.17.20" },
            "node_modules/minimist": { "version": "1.2.6" },
        },
    });
    let layers = vec![
        Arc::new(layer(&[
            ("etc/os-release".into(), os_release.clone()),
            ("var/lib/dpkg/status".into(), status.clone().into_bytes()),
        ])),
        Arc::new(layer(&[(
            format!("usr/lib/python3/site-packages/cryptography-{crypto_version}.dist-info/METADATA"),
            metadata,
        )])),
        Arc::new(layer(&[(
            "srv/web/package-lock.json".into(),
            lock.to_string().into_bytes(),
        )])),
    ];
    let mut image = Image::new(repo, "v1", &layers);
    // Real layer media types: gzip-compressed tars.
    let mut manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    for l in manifest["layers"].as_array_mut().unwrap() {
        l["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
    }
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    push_image(&http(), &host, &image, &Default::default()).await.unwrap();
    let digest = image.digest();

    // The background scan attaches the SBOM.
    let path = format!("/api/v1/repos/{repo}/images/{digest}/vulnerabilities");
    wait_until("the image's inventory", LIMIT, || {
        let (_, report) = api("GET", &host, &path, None);
        (report["state"] == json!("scanned"))
            .then_some(())
            .ok_or(report.to_string())
    });
    let report = api_ok("GET", &host, &path, None);
    let dpkg_installed = status
        .split("\n\n")
        .filter(|p| p.contains("Status: install ok installed"))
        .count();
    assert!(
        report["packages"].as_u64().unwrap() as usize >= dpkg_installed + 3,
        "{dpkg_installed} dpkg packages + cryptography + 2 npm: {}",
        report["packages"]
    );
    assert_eq!(report["database_generation"], json!(0));
    assert_eq!(report["findings"], json!([]));
    let scans = scanned_counter(&host);
    assert_eq!(scans, 1);

    // The SBOM, as a referrer, validates with cyclonedx-python-lib.
    let referrers: Value = http()
        .get(format!(
            "http://{host}/v2/{repo}/referrers/{digest}?artifactType=application/vnd.cyclonedx%2Bjson"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sboms = referrers["manifests"].as_array().unwrap();
    assert_eq!(sboms.len(), 1, "{referrers}");
    let sbom_manifest: Value = http()
        .get(format!(
            "http://{host}/v2/{repo}/manifests/{}",
            sboms[0]["digest"].as_str().unwrap()
        ))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sbom = http()
        .get(format!(
            "http://{host}/v2/{repo}/blobs/{}",
            sbom_manifest["layers"][0]["digest"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let sbom_path = tmp.path().join("sbom.json");
    std::fs::write(&sbom_path, &sbom).unwrap();
    let validated = exec_ok(
        tool("python3").args([
            "-c",
            "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\n\
             e = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\nprint('valid' if e is None else e)\nsys.exit(0 if e is None else 1)",
            sbom_path.to_str().unwrap(),
        ]),
        LIMIT,
        String::new,
    );
    assert!(validated.contains("valid"), "{validated}");
    let sbom: Value = serde_json::from_slice(&sbom).unwrap();
    let purls: Vec<&str> = sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str())
        .collect();
    assert!(purls.contains(&"pkg:npm/lodash@4.17.20"), "{purls:?}");
    assert!(
        purls.contains(&format!("pkg:pypi/cryptography@{crypto_version}").as_str()),
        "{purls:?}"
    );
    assert!(purls.iter().any(|p| p.starts_with("pkg:deb/debian/bash@")), "{purls:?}");

    // An OSV fixture for exactly these versions.
    let debian = format!("Debian:{release}");
    let fixture = |npm_fixed: &str| {
        vec![
            osv(
                "DEB-VULN",
                &debian,
                "bash",
                json!([{ "introduced": "0" }, { "fixed": format!("{bash_version}+keelson1") }]),
                json!({ "ecosystem_specific": { "urgency": "high" } }),
            ),
            osv(
                "DEB-AT-FIX",
                &debian,
                "bash",
                json!([{ "introduced": "0" }, { "fixed": bash_version }]),
                json!({}),
            ),
            osv(
                "DEB-OTHER-RELEASE",
                "Debian:7",
                "bash",
                json!([{ "introduced": "0" }, { "fixed": "99:0" }]),
                json!({}),
            ),
            osv(
                "PY-VULN",
                "PyPI",
                "cryptography",
                json!([{ "introduced": "0" }, { "fixed": "9999.0" }]),
                json!({ "severity": [{ "type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H" }] }),
            ),
            osv(
                "PY-AT-FIX",
                "PyPI",
                "cryptography",
                json!([{ "introduced": "0" }, { "fixed": crypto_version }]),
                json!({}),
            ),
            osv(
                "NPM-VULN",
                "npm",
                "lodash",
                json!([{ "introduced": "0" }, { "fixed": npm_fixed }]),
                json!({ "database_specific": { "severity": "MODERATE" } }),
            ),
            osv(
                "NPM-AT-FIX",
                "npm",
                "minimist",
                json!([{ "introduced": "0" }, { "fixed": "1.2.6" }]),
                json!({ "database_specific": { "severity": "LOW" } }),
            ),
        ]
    };
    write_fixture(&tmp.path().join("osv1"), &fixture("4.17.21"));
    import(&host, &tmp.path().join("osv1"));
    let expected = vec![
        ("DEB-VULN".to_string(), "bash".to_string(), "HIGH".to_string()),
        ("NPM-VULN".to_string(), "lodash".to_string(), "MEDIUM".to_string()),
        (
            "PY-VULN".to_string(),
            "cryptography".to_string(),
            "CRITICAL".to_string(),
        ),
    ];
    assert_eq!(findings(&host, repo, &digest), expected);
    let report = api_ok("GET", &host, &path, None);
    let lodash = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["package"] == json!("lodash"))
        .unwrap()
        .clone();
    assert_eq!(lodash["fixed"], json!("4.17.21"));
    assert_eq!(lodash["installed"], json!("lodash@4.17.20"));

    // A newer database: lodash's fix is now 4.17.20 itself. Findings change; no layer is read.
    write_fixture(&tmp.path().join("osv2"), &fixture("4.17.20"));
    import(&host, &tmp.path().join("osv2"));
    assert_eq!(
        findings(&host, repo, &digest),
        expected.into_iter().filter(|f| f.1 != "lodash").collect::<Vec<_>>()
    );
    assert_eq!(scanned_counter(&host), scans, "re-matching must not scan again");
    let info = api_ok("GET", &host, "/api/v1/vulndb", None);
    assert_eq!(info["advisories"], json!(7), "{info}");

    // A policy refusing HIGH and above refuses the image; one refusing only CRITICAL for
    // another repository does not touch it.
    api_ok(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/verification-policies/no-high",
        Some(json!({ "scope": "repository:demo/scanned", "refuse_severity": "HIGH" })),
    );
    let pull = http()
        .get(format!("http://{host}/v2/{repo}/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(pull.status(), 403);
    let said = pull.text().await.unwrap();
    assert!(said.contains("no-high") && said.contains("PY-VULN"), "{said}");
    api_ok(
        "DELETE",
        &host,
        "/api/v1/tenancies/demo/verification-policies/no-high",
        None,
    );
    let (status, answer) = api(
        "PUT",
        &host,
        "/api/v1/tenancies/demo/verification-policies/bad",
        Some(json!({ "scope": "tenancy", "refuse_severity": "SEVERE" })),
    );
    assert_eq!(status, 400, "{answer}");
    let pull = http()
        .get(format!("http://{host}/v2/{repo}/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(pull.status(), 200);
}

/// A Go program copied into an image is seen through its build information: the standard
/// library it was built with (the version Debian's package metadata names, read independently
/// here) is matched against Go advisories, one fixed after it (a finding) and one fixed at it
/// (none); a non-executable copy of the same bytes is not read as a program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_programs_are_inventoried_from_their_build_information() {
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start_with_env(tmp.path(), &[("KEELSON_AUTH", "off"), ("KEELSON_SCANNER", "true")]);
    let host = node.host();
    let repo = "demo/go";
    let ctr = std::fs::read("/usr/bin/ctr").expect("/usr/bin/ctr (Debian's containerd) is installed");
    let dpkg = exec_ok(tool("dpkg").args(["-s", "containerd"]), LIMIT, String::new);
    // `Built-Using: …, golang-1.19 (= 1.19.8-2), …`: the Go release, without Debian's revision.
    let go = dpkg
        .split([',', '\n'])
        .find_map(|f| f.trim().strip_prefix("golang-1.").map(str::to_string))
        .and_then(|rest| Some(rest.split_once("(= ")?.1.trim_end_matches(')').to_string()))
        .map(|v| v.rsplit_once('-').map_or(v.clone(), |(up, _)| up.to_string()))
        .expect("containerd names the Go it was built with");
    let mut parts: Vec<u64> = go.split('.').map(|p| p.parse().unwrap()).collect();
    while parts.len() < 3 {
        parts.push(0);
    }
    let next = format!("{}.{}.{}", parts[0], parts[1], parts[2] + 1);

    let layers = vec![Arc::new(layer_with_modes(&[
        ("usr/local/bin/ctr".into(), ctr.clone(), 0o755),
        ("srv/data/ctr.copy".into(), ctr, 0o644),
    ]))];
    let mut image = Image::new(repo, "v1", &layers);
    let mut manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["layers"][0]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
    image.manifest = serde_json::to_vec(&manifest).unwrap();
    push_image(&http(), &host, &image, &Default::default()).await.unwrap();
    let digest = image.digest();

    let fixture = tmp.path().join("osv-go");
    write_fixture(
        &fixture,
        &[
            osv(
                "GO-TEST-0001",
                "Go",
                "stdlib",
                json!([{ "introduced": "0" }, { "fixed": next }]),
                json!({ "database_specific": { "severity": "HIGH" } }),
            ),
            osv(
                "GO-TEST-0002",
                "Go",
                "stdlib",
                json!([{ "introduced": "0" }, { "fixed": go }]),
                json!({}),
            ),
        ],
    );
    import(&host, &fixture);
    let path = format!("/api/v1/repos/{repo}/images/{digest}/vulnerabilities");
    wait_until("the image's inventory", LIMIT, || {
        let (_, report) = api("GET", &host, &path, None);
        (report["state"] == json!("scanned"))
            .then_some(())
            .ok_or(report.to_string())
    });
    assert_eq!(
        findings(&host, repo, &digest),
        vec![("GO-TEST-0001".to_string(), "stdlib".to_string(), "HIGH".to_string())],
        "Go {go}: fixed in {next} applies, fixed in {go} does not"
    );
    let report = api_ok("GET", &host, &path, None);
    let finding = &report["findings"][0];
    assert_eq!(finding["installed"], json!(format!("stdlib@{go}")));
    assert_eq!(finding["location"], json!("usr/local/bin/ctr"), "{report}");
    assert_eq!(
        report["packages"],
        json!(1),
        "only the executable is read as a program: {report}"
    );
}
