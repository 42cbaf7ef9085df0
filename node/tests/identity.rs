//! Identity and access over HTTP against a real node with identity enforced: the policy table
//! (verb × scope × action), anonymous and public access, cross-tenancy answers that leak nothing,
//! Docker's token flow with refresh tokens, revocation, and secrets kept out of logs and the
//! catalog.

mod support;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::Keelson;

const ADMIN_TOKEN: &str = "bootstrap-admin-secret-for-tests-0123456789";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

struct Api {
    client: Client,
    url: String,
}

impl Api {
    fn new(node: &Keelson) -> Api {
        Api {
            client: Client::new(),
            url: node.url(),
        }
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .client
            .request(method.clone(), format!("{}/api/v1/{path}", self.url))
            .basic_auth("keelson/admin", Some(ADMIN_TOKEN))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path} -> {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates a user with a token; returns the token.
    async fn user(&self, ns: &str, user: &str, groups: &[&str]) -> String {
        self.admin(
            reqwest::Method::POST,
            &format!("tenancies/{ns}/users"),
            json!({ "name": user }),
        )
        .await;
        for g in groups {
            self.admin(
                reqwest::Method::PUT,
                &format!("tenancies/{ns}/groups/{g}/members/{user}"),
                json!({}),
            )
            .await;
        }
        let t = self
            .admin(
                reqwest::Method::POST,
                &format!("tenancies/{ns}/users/{user}/tokens"),
                json!({}),
            )
            .await;
        t["token"].as_str().unwrap().to_string()
    }

    /// Pushes a one-layer image as `user` (Basic auth) and returns the final status.
    async fn push(&self, creds: Option<(&str, &str)>, repo: &str, tag: &str) -> StatusCode {
        let layer = format!("layer of {repo}:{tag}").into_bytes();
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        for blob in [&layer, &config] {
            let mut req = self
                .client
                .post(format!("{}/v2/{repo}/blobs/uploads/?digest={}", self.url, digest(blob)))
                .body(blob.clone());
            if let Some((u, p)) = creds {
                req = req.basic_auth(u, Some(p));
            }
            let status = req.send().await.unwrap().status();
            if status != StatusCode::CREATED {
                return status;
            }
        }
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}]
        });
        let mut req = self
            .client
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.url))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.to_string());
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        req.send().await.unwrap().status()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        creds: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> (StatusCode, String) {
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.text().await.unwrap())
    }
}

/// One row of the table: verb, scope, then the expected answers for
/// catalog, pull, push-existing, push-new-repo, delete, make-public.
struct Row {
    verb: &'static str,
    scope: &'static str,
    expect: [bool; 6],
}

#[tokio::test]
async fn policy_table() {
    let dir = tempfile::tempdir().unwrap();
    let node = Keelson::start_secured(dir.path(), ADMIN_TOKEN);
    let api = Api::new(&node);
    use reqwest::Method as M;
    for ns in ["acme", "other"] {
        api.admin(M::POST, "tenancies", json!({ "namespace": ns })).await;
    }
    api.admin(M::POST, "tenancies/acme/compartments", json!({ "name": "team" }))
        .await;
    api.admin(
        M::POST,
        "tenancies/acme/compartments",
        json!({ "name": "web", "parent": "team" }),
    )
    .await;

    // Scopes: where the policy points, and where the target repository lives.
    // tenancy:     policy in tenancy,          repo in acme root
    // compartment: policy in compartment team, repo in team
    // subtree:     policy in compartment team, repo in web (child of team)
    // other:       policy in tenancy (acme),   repo in tenancy other
    let rows = [
        Row {
            verb: "inspect",
            scope: "tenancy",
            expect: [true, false, false, false, false, false],
        },
        Row {
            verb: "read",
            scope: "tenancy",
            expect: [true, true, false, false, false, false],
        },
        Row {
            verb: "use",
            scope: "tenancy",
            expect: [true, true, true, false, false, false],
        },
        Row {
            verb: "manage",
            scope: "tenancy",
            expect: [true, true, true, true, true, true],
        },
        Row {
            verb: "inspect",
            scope: "compartment",
            expect: [true, false, false, false, false, false],
        },
        Row {
            verb: "read",
            scope: "compartment",
            expect: [true, true, false, false, false, false],
        },
        Row {
            verb: "use",
            scope: "compartment",
            expect: [true, true, true, false, false, false],
        },
        // New repositories are created in the root compartment, outside `team`.
        Row {
            verb: "manage",
            scope: "compartment",
            expect: [true, true, true, false, true, true],
        },
        Row {
            verb: "inspect",
            scope: "subtree",
            expect: [true, false, false, false, false, false],
        },
        Row {
            verb: "read",
            scope: "subtree",
            expect: [true, true, false, false, false, false],
        },
        Row {
            verb: "use",
            scope: "subtree",
            expect: [true, true, true, false, false, false],
        },
        Row {
            verb: "manage",
            scope: "subtree",
            expect: [true, true, true, false, true, true],
        },
        Row {
            verb: "inspect",
            scope: "other",
            expect: [false; 6],
        },
        Row {
            verb: "read",
            scope: "other",
            expect: [false; 6],
        },
        Row {
            verb: "use",
            scope: "other",
            expect: [false; 6],
        },
        Row {
            verb: "manage",
            scope: "other",
            expect: [false; 6],
        },
    ];
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let group = format!("g{i}");
        let user = format!("u{i}");
        let ns_of_repo = if row.scope == "other" { "other" } else { "acme" };
        let (policy_scope, repo_compartment) = match row.scope {
            "tenancy" | "other" => ("tenancy".to_string(), None),
            "compartment" => ("compartment team".to_string(), Some("team")),
            _ => ("compartment team".to_string(), Some("web")),
        };
        api.admin(M::POST, "tenancies/acme/groups", json!({ "name": group }))
            .await;
        let statement = format!("allow group {group} to {} repos in {policy_scope}", row.verb);
        api.admin(
            M::PUT,
            &format!("tenancies/acme/policies/p{i}"),
            json!({ "statements": [statement] }),
        )
        .await;
        let token = api.user("acme", &user, &[&group]).await;
        let login = format!("acme/{user}");
        let creds = Some((login.as_str(), token.as_str()));

        // The target repository, with one image, made by the administrator.
        let repo = format!("{ns_of_repo}/target{i}");
        api.admin(
            M::POST,
            "repos",
            json!({ "name": repo, "compartment": repo_compartment }),
        )
        .await;
        assert_eq!(
            api.push(Some(("keelson/admin", ADMIN_TOKEN)), &repo, "v1").await,
            StatusCode::CREATED
        );

        let (status, body) = api.call(M::GET, "/v2/_catalog", creds, None).await;
        let catalog = status == StatusCode::OK && body.contains(&format!("\"{repo}\""));
        let (status, _) = api.call(M::GET, &format!("/v2/{repo}/manifests/v1"), creds, None).await;
        let pull = status == StatusCode::OK;
        let push_existing = api.push(creds, &repo, "v2").await == StatusCode::CREATED;
        let push_new = api.push(creds, &format!("{ns_of_repo}/fresh{i}"), "v1").await == StatusCode::CREATED;
        let (status, _) = api
            .call(M::DELETE, &format!("/v2/{repo}/manifests/v1"), creds, None)
            .await;
        let delete = status == StatusCode::ACCEPTED;
        let (status, _) = api
            .call(
                M::PATCH,
                &format!("/api/v1/repos/{repo}"),
                creds,
                Some(json!({ "public": true })),
            )
            .await;
        let make_public = status == StatusCode::OK;
        let got = [catalog, pull, push_existing, push_new, delete, make_public];
        if got != row.expect {
            failures.push(format!(
                "{} in {}: expected {:?}, got {:?}",
                row.verb, row.scope, row.expect, got
            ));
        }
    }
    assert!(failures.is_empty(), "policy table mismatches:\n{}", failures.join("\n"));
}

#[tokio::test]
async fn anonymous_public_private_and_cross_tenancy() {
    let dir = tempfile::tempdir().unwrap();
    let node = Keelson::start_secured(dir.path(), ADMIN_TOKEN);
    let api = Api::new(&node);
    use reqwest::Method as M;
    let admin = Some(("keelson/admin", ADMIN_TOKEN));
    for ns in ["acme", "other"] {
        api.admin(M::POST, "tenancies", json!({ "namespace": ns })).await;
    }
    api.admin(M::POST, "tenancies/other/groups", json!({ "name": "devs" }))
        .await;
    api.admin(
        M::PUT,
        "tenancies/other/policies/all",
        json!({ "statements": ["allow group devs to manage repos in tenancy"] }),
    )
    .await;
    let outsider = api.user("other", "eve", &["devs"]).await;
    assert_eq!(api.push(admin, "acme/private", "v1").await, StatusCode::CREATED);
    assert_eq!(api.push(admin, "acme/shared", "v1").await, StatusCode::CREATED);
    api.admin(M::PATCH, "repos/acme/shared", json!({ "public": true }))
        .await;

    // /v2/ challenges anonymous callers with Docker's Bearer challenge.
    let (status, _) = api.call(M::GET, "/v2/", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = api
        .client
        .get(format!("{}/v2/acme/private/manifests/v1", api.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(
        challenge.starts_with("Bearer realm=\"http://") && challenge.contains("/token\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:acme/private:pull\""),
        "{challenge}"
    );
    assert!(resp.text().await.unwrap().contains("UNAUTHORIZED"));

    // Public: anonymous pull works; anonymous push does not.
    let (status, _) = api.call(M::GET, "/v2/acme/shared/manifests/v1", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(api.push(None, "acme/shared", "v2").await, StatusCode::UNAUTHORIZED);

    // A private repository and a missing one look the same to an anonymous caller…
    let (s1, b1) = api.call(M::GET, "/v2/acme/private/tags/list", None, None).await;
    let (s2, b2) = api.call(M::GET, "/v2/acme/missing/tags/list", None, None).await;
    assert_eq!((s1, s1), (s2, StatusCode::UNAUTHORIZED));
    assert_eq!(b1, b2);
    // …and to a user of another tenancy.
    let creds = Some(("other/eve", outsider.as_str()));
    let (s1, b1) = api.call(M::GET, "/v2/acme/private/manifests/v1", creds, None).await;
    let (s2, b2) = api.call(M::GET, "/v2/acme/missing/manifests/v1", creds, None).await;
    assert_eq!((s1, s1), (s2, StatusCode::FORBIDDEN));
    assert_eq!(b1, b2);
    assert!(b1.contains("DENIED"));
    // The outsider's catalog shows only their tenancy's repositories (and public ones).
    assert_eq!(api.push(creds, "other/mine", "v1").await, StatusCode::CREATED);
    let (_, catalog) = api.call(M::GET, "/v2/_catalog", creds, None).await;
    let repos: Value = serde_json::from_str(&catalog).unwrap();
    assert_eq!(repos["repositories"], json!(["acme/shared", "other/mine"]));

    // Wrong tokens are refused.
    let (status, _) = api
        .call(M::GET, "/v2/", Some(("other/eve", "not-the-token")), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_flow_refresh_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let node = Keelson::start_secured(dir.path(), ADMIN_TOKEN);
    let api = Api::new(&node);
    use reqwest::Method as M;
    api.admin(M::POST, "tenancies", json!({ "namespace": "acme" })).await;
    api.admin(M::POST, "tenancies/acme/groups", json!({ "name": "devs" }))
        .await;
    api.admin(
        M::PUT,
        "tenancies/acme/policies/p",
        json!({ "statements": ["allow group devs to use repos in tenancy"] }),
    )
    .await;
    let token = api.user("acme", "ann", &["devs"]).await;
    assert_eq!(
        api.push(Some(("keelson/admin", ADMIN_TOKEN)), "acme/app", "v1").await,
        StatusCode::CREATED
    );

    // Policy parse errors name the line, the column and what was expected.
    let resp = api
        .client
        .put(format!("{}/api/v1/tenancies/acme/policies/bad", api.url))
        .basic_auth("keelson/admin", Some(ADMIN_TOKEN))
        .json(&json!({ "statements": ["allow group devs to use repos in tenancy", "allow group devs to fly repos in tenancy"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["errors"][0]["detail"]["line"], 2);
    assert_eq!(err["errors"][0]["detail"]["column"], 21);
    assert!(err["errors"][0]["detail"]["expected"]
        .as_str()
        .unwrap()
        .contains("'manage'"));

    // docker login's request: GET with Basic, offline_token=true → access and refresh tokens.
    let resp = api
        .client
        .get(format!("{}/token?account=acme/ann&client_id=docker&offline_token=true&service=keelson&scope=repository:acme/app:pull,push,delete", api.url))
        .basic_auth("acme/ann", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let access = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    // The access claim holds exactly what the policy grants: use = pull + push, no delete.
    let claims = decode_claims(&access);
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}])
    );

    // Mounting from another repository with tokens (distribution spec, "Mounting a blob from
    // another repository"): the challenge asks for the source's pull scope as well, so one
    // token covers both and the blob is mounted (201), not uploaded again (202).
    // (Ann may push to repositories that exist; creating one takes `manage`.)
    for repo in ["acme/app2", "acme/app3"] {
        assert_eq!(
            api.push(Some(("keelson/admin", ADMIN_TOKEN)), repo, "v0").await,
            StatusCode::CREATED
        );
    }
    let layer = digest(b"layer of acme/app:v1");
    let mount_url = format!("{}/v2/acme/app2/blobs/uploads/?mount={layer}&from=acme/app", api.url);
    let resp = api.client.post(&mount_url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_string();
    let scope = challenge
        .split("scope=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        scope, "repository:acme/app2:pull,push repository:acme/app:pull",
        "{challenge}"
    );
    let token_for = |scopes: Vec<&str>| {
        let query: String = scopes.iter().map(|s| format!("&scope={s}")).collect();
        let url = format!("{}/token?service=keelson{query}", api.url);
        let client = api.client.clone();
        let token = token.clone();
        async move {
            let body: Value = client
                .get(url)
                .basic_auth("acme/ann", Some(&token))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["token"].as_str().unwrap().to_string()
        }
    };
    let both = token_for(scope.split(' ').collect()).await;
    let resp = api.client.post(&mount_url).bearer_auth(&both).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "mounted");
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("/v2/acme/app2/blobs/{layer}")
    );
    // A token without the source's scope uploads instead, as distribution does.
    let only_target = token_for(vec!["repository:acme/app3:pull,push"]).await;
    let resp = api
        .client
        .post(format!(
            "{}/v2/acme/app3/blobs/uploads/?mount={layer}&from=acme/app",
            api.url
        ))
        .bearer_auth(&only_target)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "an upload session instead");

    let bearer = |t: &str| format!("Bearer {t}");
    let get = |t: String| {
        api.client
            .get(format!("{}/v2/acme/app/manifests/v1", api.url))
            .header("Authorization", t)
            .send()
    };
    assert_eq!(get(bearer(&access)).await.unwrap().status(), StatusCode::OK);
    // A token for another repository does not open this one (401 asks for a new token).
    let resp = api
        .client
        .get(format!(
            "{}/token?service=keelson&scope=repository:acme/else:pull",
            api.url
        ))
        .basic_auth("acme/ann", Some(&token))
        .send()
        .await
        .unwrap();
    let other: Value = resp.json().await.unwrap();
    assert_eq!(
        get(bearer(other["token"].as_str().unwrap())).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // A forged token is refused.
    let forged = format!("{}x", &access[..access.len() - 1]);
    assert_eq!(get(bearer(&forged)).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // containerd's request: POST form with grant_type=password; docker's later refresh.
    let resp = api
        .client
        .post(format!("{}/token", api.url))
        .form(&[
            ("grant_type", "password"),
            ("username", "acme/ann"),
            ("password", &token),
            ("service", "keelson"),
            ("scope", "repository:acme/app:pull"),
            ("client_id", "containerd"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = api
        .client
        .post(format!("{}/token", api.url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "keelson"),
            ("scope", "repository:acme/app:pull"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let refreshed: Value = resp.json().await.unwrap();
    assert_eq!(
        get(bearer(refreshed["token"].as_str().unwrap()))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Two tokens at most; revoking one kills its logins and its refresh tokens.
    let second = api.admin(M::POST, "tenancies/acme/users/ann/tokens", json!({})).await;
    let third = api
        .client
        .post(format!("{}/api/v1/tenancies/acme/users/ann/tokens", api.url))
        .basic_auth("keelson/admin", Some(ADMIN_TOKEN))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::CONFLICT);
    let list = api.admin(M::GET, "tenancies/acme/users/ann/tokens", json!({})).await;
    let first_id = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] != second["id"])
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.admin(
        M::DELETE,
        &format!("tenancies/acme/users/ann/tokens/{first_id}"),
        json!({}),
    )
    .await;
    let (status, _) = api
        .call(M::GET, "/v2/acme/app/manifests/v1", Some(("acme/ann", &token)), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = api
        .client
        .post(format!("{}/token", api.url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "keelson"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .call(
            M::GET,
            "/v2/acme/app/manifests/v1",
            Some(("acme/oracleidentitycloudservice/ann", second["token"].as_str().unwrap())),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Signing keys rotate without invalidating tokens already issued.
    api.admin(M::POST, "signing-keys/rotate", json!({})).await;
    assert_eq!(
        get(bearer(refreshed["token"].as_str().unwrap()))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Secrets never reach the log or the catalog's files in clear.
    drop(node);
    let mut haystack = Vec::new();
    collect_files(dir.path(), &mut haystack);
    for secret in [ADMIN_TOKEN, token.as_str(), second["token"].as_str().unwrap()] {
        assert!(
            !haystack.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret was found in the data directory"
        );
    }
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend_from_slice(&bytes);
        }
    }
}

fn decode_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The `keelson admin` commands drive the same management API end to end.
#[tokio::test]
async fn admin_cli_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let node = Keelson::start_secured(dir.path(), ADMIN_TOKEN);
    let admin = |args: &[&str]| -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_keelson"))
            .arg("admin")
            .args(args)
            .env("KEELSON_NODE", node.host())
            .env("KEELSON_USER", "keelson/admin")
            .env("KEELSON_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keelson admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    admin(&["tenancy-create", "acme"]);
    admin(&["compartment-create", "acme", "team"]);
    admin(&["group-create", "acme", "devs"]);
    admin(&[
        "policy-set",
        "acme",
        "devs",
        "allow group devs to manage repos in tenancy",
    ]);
    admin(&["user-create", "acme", "ann"]);
    admin(&["group-add", "acme", "devs", "ann"]);
    let created = admin(&["token-create", "acme", "ann", "--description", "ci"]);
    let token = created["token"].as_str().unwrap().to_string();
    let listed = admin(&["token-list", "acme", "ann"]);
    assert_eq!(listed["tokens"][0]["description"], "ci");
    assert!(
        !listed.to_string().contains(&token),
        "listing must never show the secret"
    );
    let shown = admin(&["tenancy-show", "acme"]);
    assert_eq!(shown["groups"]["devs"], json!(["ann"]));

    let api = Api::new(&node);
    assert_eq!(
        api.push(Some(("acme/ann", &token)), "acme/app", "v1").await,
        StatusCode::CREATED
    );
    admin(&["repo-move", "acme/app", "team"]);
    admin(&["repo-visibility", "acme/app", "public"]);
    let repo = admin(&["repo-show", "acme/app"]);
    assert_eq!(
        (repo["public"].clone(), repo["compartment"].clone()),
        (json!(true), json!("team"))
    );
    let (status, _) = api
        .call(reqwest::Method::GET, "/v2/acme/app/manifests/v1", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "a public repository pulls anonymously");
    admin(&["token-revoke", "acme", "ann", created["id"].as_str().unwrap()]);
    assert_eq!(
        api.push(Some(("acme/ann", &token)), "acme/app", "v2").await,
        StatusCode::UNAUTHORIZED
    );
}

/// `where target.repo.name = '…'` narrows a statement to one repository, and token use is
/// recorded (last-used time) without one Raft write per request.
#[tokio::test]
async fn repo_condition_and_last_used() {
    let dir = tempfile::tempdir().unwrap();
    let node = Keelson::start_with_env(
        dir.path(),
        &[
            ("KEELSON_AUTH", "enforce"),
            ("KEELSON_BOOTSTRAP_TOKEN", ADMIN_TOKEN),
            ("KEELSON_TOKEN_USE_FLUSH_MS", "100"),
        ],
    );
    let api = Api::new(&node);
    use reqwest::Method as M;
    api.admin(M::POST, "tenancies", json!({ "namespace": "acme" })).await;
    api.admin(M::POST, "tenancies/acme/groups", json!({ "name": "web" }))
        .await;
    api.admin(
        M::PUT,
        "tenancies/acme/policies/web-only",
        json!({ "statements": ["allow group web to manage repos in tenancy where target.repo.name = 'team/web'"] }),
    )
    .await;
    let token = api.user("acme", "wes", &["web"]).await;
    let creds = Some(("acme/wes", token.as_str()));
    assert_eq!(api.push(creds, "acme/team/web", "v1").await, StatusCode::CREATED);
    assert_eq!(api.push(creds, "acme/team/api", "v1").await, StatusCode::FORBIDDEN);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let list = api.admin(M::GET, "tenancies/acme/users/wes/tokens", json!({})).await;
        if list["tokens"][0]["last_used_ms"].as_u64().is_some_and(|t| t > 0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "last use never recorded: {list}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
