//! The management API's OpenAPI document against a real node with identity enforced:
//!
//! - `GET /api/v1/openapi.json` answers anyone, without credentials, as `application/json`;
//! - the document validates as OpenAPI (`openapi-spec-validator` from PyPI);
//! - every documented operation, called as the cluster administrator with placeholder
//!   parameters (and `{}` for a body), reaches a route: none answers the "no such management
//!   route" error that every `/api/v1` dispatcher gives a path or method it does not have,
//!   while paths that exist nowhere do answer it, from each dispatcher.
//!
//! Deletions run last; the node is thrown away after.

mod support;

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use support::tools::{exec, need, tool, INSTALL_HINT};
use support::Keelson;

const ADMIN: &str = "openapi-admin-token-0123456789abcdef";
const LIMIT: Duration = Duration::from_secs(120);
/// The message of `ApiError::no_route()` (api/src/error.rs).
const NO_ROUTE: &str = "no such management route";

/// A value for a path parameter, by the name the document gives it.
fn placeholder(name: &str) -> &'static str {
    match name {
        "namespace" => "acme",
        "user" => "alice",
        "token_id" => "t0k3n",
        "group" => "devs",
        "policy" => "readers",
        // Several segments, as repository names have.
        "repository" => "acme/team/app",
        "digest" => "sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "tag" => "v1",
        "retention_policy" => "short",
        "region" => "eu-west",
        "rule_id" => "0123456789ab",
        "node_id" => "99",
        "webhook" => "builds",
        "key" => "ci",
        "verification_policy" => "signed-only",
        "generation" => "7",
        other => panic!("no placeholder for the path parameter {{{other}}}: add one to node/tests/openapi.rs"),
    }
}

/// `template` with every `{param}` replaced by its placeholder.
fn fill(template: &str) -> String {
    template
        .split('/')
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => placeholder(name).to_string(),
            None => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether an answer is the unknown-route error.
fn is_no_route(status: StatusCode, body: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    status == StatusCode::NOT_FOUND
        && doc["errors"][0]["code"] == "NOT_FOUND"
        && doc["errors"][0]["message"] == NO_ROUTE
}

async fn call(
    client: &Client,
    node: &Keelson,
    method: Method,
    path_and_query: &str,
    body: bool,
) -> (StatusCode, String) {
    let mut req = client
        .request(method, format!("{}{path_and_query}", node.url()))
        .basic_auth("keelson/admin", Some(ADMIN));
    if body {
        req = req.header("Content-Type", "application/json").body("{}");
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path_and_query}: {e}"));
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_document_validates_and_every_operation_it_describes_is_routed() {
    need("python3");
    let probe = exec(tool("python3").args(["-c", "import openapi_spec_validator"]), LIMIT);
    assert!(
        probe.ok,
        "the openapi-spec-validator Python package is missing ({INSTALL_HINT}): {}",
        probe.stderr
    );
    let tmp = tempfile::tempdir().unwrap();
    let node = Keelson::start_secured(&tmp.path().join("node"), ADMIN);
    let client = Client::new();

    // --- Served to anyone, as JSON ----------------------------------------------------------------
    let resp = client
        .get(format!("{}/api/v1/openapi.json", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "anonymous GET /api/v1/openapi.json");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let text = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");

    // --- Valid OpenAPI ----------------------------------------------------------------------------
    let file = tmp.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let checked = exec(tool("python3").args(["-m", "openapi_spec_validator"]).arg(&file), LIMIT);
    assert!(
        checked.ok,
        "openapi-spec-validator refuses the document ({}):\n{}\n{}",
        checked.status, checked.stdout, checked.stderr
    );

    // --- Every operation reaches a route ----------------------------------------------------------
    let mut operations = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        assert!(template.starts_with("/api/v1/"), "{template} is outside /api/v1");
        for (method, op) in item.as_object().expect("path item") {
            let method = match method.as_str() {
                "get" => Method::GET,
                "put" => Method::PUT,
                "post" => Method::POST,
                "delete" => Method::DELETE,
                "patch" => Method::PATCH,
                other => panic!("{template}: {other} is not a method this test calls"),
            };
            let mut query = Vec::new();
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "query" && param["required"] == true {
                    let name = param["name"].as_str().unwrap();
                    query.push(format!("{name}={}", if name == "namespace" { "acme" } else { "cache" }));
                }
            }
            let mut path = fill(template);
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            operations.push((method, path, op.get("requestBody").is_some()));
        }
    }
    assert!(
        operations.len() >= 60,
        "only {} operations documented",
        operations.len()
    );
    // Deletions last, so the other calls find what there is to find.
    operations.sort_by_key(|(method, _, _)| *method == Method::DELETE);
    let mut unrouted = Vec::new();
    for (method, path, body) in &operations {
        let (status, answer) = call(&client, &node, method.clone(), path, *body).await;
        assert_ne!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "{method} {path} was rate limited, not routed"
        );
        if is_no_route(status, &answer) {
            unrouted.push(format!("{method} {path}: {answer}"));
        }
    }
    assert!(
        unrouted.is_empty(),
        "documented operations the node has no route for:\n  {}\n--- node log (tail):\n{}",
        unrouted.join("\n  "),
        support::tools::tail(&node.log(), 4000)
    );

    // --- What is not a route answers the one unknown-route error, from every dispatcher -----------
    for (method, path) in [
        (Method::GET, "/api/v1/no-such-thing"),
        (Method::POST, "/api/v1/tenancies/acme"),
        (Method::GET, "/api/v1/cluster/nothing"),
        (Method::PUT, "/api/v1/regions"),
        (Method::GET, "/api/v1/audit/more"),
        (Method::POST, "/api/v1/tenancies/acme/summary"),
        (Method::GET, "/api/v1/tenancies/acme/retention-policies/short/other"),
        (Method::GET, "/api/v1/tenancies/acme/webhooks/builds/ping"),
        (Method::GET, "/api/v1/tenancies/acme/signing-keys/ci/more"),
        (Method::POST, "/api/v1/tenancies/acme/verification-policies"),
        (Method::GET, "/api/v1/vulndb/imports"),
    ] {
        let (status, answer) = call(&client, &node, method.clone(), path, false).await;
        assert!(is_no_route(status, &answer), "{method} {path}: {status} {answer}");
    }
}
