//! `/api/v1/vulndb…`: the vulnerability database, imported offline from OSV files by
//! `keelson vulndb import` in bounded batches under a new generation, then activated in one
//! step (findings are worked out again from each image's SBOM against it), and older
//! generations pruned. Cluster administrators only.

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use keelson_raft::scanning::{ScanCommand, VulnDbInfo, VulnPackage};
use keelson_raft::CatalogCommand;
use serde::Deserialize;
use serde_json::json;

use super::{commit, json_reply, ok, read_json};
use crate::access::{self, Cx};
use crate::body::Body;
use crate::error::ApiError;

/// What `POST /api/v1/vulndb/imports/<generation>` takes: packages with their advisories.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub packages: Vec<VulnPackage>,
}

/// What `POST /api/v1/vulndb/imports/<generation>/activate` takes: what the import held.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    pub advisories: u64,
    pub packages: u64,
}

fn info_json(info: &VulnDbInfo) -> serde_json::Value {
    json!({
        "generation": info.generation,
        "advisories": info.advisories,
        "packages": info.packages,
        "imported_ms": info.imported_ms,
    })
}

fn generation(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| super::bad_request(format!("{text:?} is not a database generation")))
}

/// Dispatches `/api/v1/vulndb/<rest…>`.
pub async fn route(cx: &Cx<'_>, rest: &[&str], req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    access::administer_cluster(cx)?;
    let method = req.method().clone();
    match (&method, rest) {
        (&Method::GET, []) => ok(info_json(&cx.catalog.reader().vulndb()?)),
        (&Method::POST, ["imports"]) => {
            let active = cx.catalog.reader().vulndb()?.generation;
            let generation = cx.clock.now_ms().max(active.saturating_add(1));
            Ok(json_reply(StatusCode::CREATED, &json!({ "generation": generation })))
        }
        (&Method::POST, ["imports", g]) => {
            let generation = generation(g)?;
            let body: BatchBody = read_json(req).await?;
            let n = body.packages.len();
            commit(
                cx,
                CatalogCommand::Scanning(ScanCommand::DbPut {
                    generation,
                    packages: body.packages,
                }),
            )
            .await?;
            ok(json!({ "generation": generation, "packages": n }))
        }
        (&Method::POST, ["imports", g, "activate"]) => {
            let body: ActivateBody = read_json(req).await?;
            let info = VulnDbInfo {
                generation: generation(g)?,
                advisories: body.advisories,
                packages: body.packages,
                imported_ms: cx.clock.now_ms(),
            };
            commit(
                cx,
                CatalogCommand::Scanning(ScanCommand::DbActivate { info: info.clone() }),
            )
            .await?;
            ok(info_json(&info))
        }
        (&Method::POST, ["prune"]) => {
            commit(cx, CatalogCommand::Scanning(ScanCommand::DbPrune)).await?;
            ok(json!({ "pruned": true }))
        }
        _ => Err(ApiError::no_route()),
    }
}
