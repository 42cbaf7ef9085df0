//! Identity from the home region: the home serves its identity state to the other regions'
//! leaders, which copy it whole into their own catalogs through Raft.
//!
//! The copy is pulled (every `--identity-sync-ms`, 2 s by default) with the version of the last
//! copy in `If-None-Match`, so an unchanged state costs one small request. Private signing keys
//! leave the home opened (the link is TLS and the caller is the cluster administrator) and are
//! sealed again under the receiving region's own master key before they are proposed. A region
//! cut off from home keeps what it copied last, so it keeps authenticating; a token revoked at
//! home stops working elsewhere within one sync interval (plus the time to commit the copy).

use bytes::Bytes;
use keelson_raft::identity::{IdentityCommand, IdentityState};
use keelson_raft::regions::RegionCommand;
use keelson_raft::CatalogCommand;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::client::{PeerClient, PeerError};
use crate::registry::Registry;

/// What `GET /api/v1/regions/identity` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct IdentityExport {
    pub version: String,
    pub region: Option<String>,
    pub state: IdentityState,
}

/// The version of an identity state: a hash of it as stored.
pub fn version_of(state: &IdentityState) -> String {
    let bytes = serde_json::to_vec(state).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

/// The home's export: the state with private signing keys opened (`None` when one cannot be
/// opened here: this node lacks the master key it is sealed under).
pub fn export(reg: &Registry) -> Result<IdentityExport, String> {
    let mut state = reg.catalog.reader().with_identity(|s| s.clone());
    let version = version_of(&state);
    let keys = reg.store.master_keys();
    for key in state.signing_keys.iter_mut() {
        key.private_pkcs8 = keelson_storage::at_rest::keys::open_secret(keys.as_deref(), &key.private_pkcs8)
            .map_err(|e| format!("signing key {} cannot be opened here: {e}", key.kid))?;
    }
    let region = reg.catalog.reader().regions().ok().and_then(|r| r.name);
    Ok(IdentityExport { version, region, state })
}

/// Why a copy from home failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("home region {0} is not a known peer")]
    NoPeer(String),
    #[error("the home's answer does not parse: {0}")]
    Decode(String),
    #[error("committing the copy: {0}")]
    Commit(String),
}

/// One copy from home, on the leader of a region whose home is elsewhere. `Ok(true)` when the
/// state changed.
pub async fn sync_from_home(reg: &Registry) -> Result<bool, SyncError> {
    if !reg.catalog.is_leader() {
        return Ok(false);
    }
    let regions = reg
        .catalog
        .reader()
        .regions()
        .map_err(|e| SyncError::Commit(e.to_string()))?;
    let Some(home) = regions.remote_home() else {
        return Ok(false);
    };
    let peer = regions
        .peers
        .get(home)
        .ok_or_else(|| SyncError::NoPeer(home.to_string()))?;
    let keys = reg.store.master_keys();
    let client = PeerClient::new(peer, keys.as_deref(), reg.dialer.as_ref())?;
    let mut headers = Vec::new();
    if let Some(version) = &regions.identity_version {
        headers.push(("if-none-match", format!("\"{version}\"")));
    }
    let (status, _, body): (_, _, Bytes) = client.get("/api/v1/regions/identity", &headers).await?;
    if status == http::StatusCode::NOT_MODIFIED {
        return Ok(false);
    }
    if status != http::StatusCode::OK {
        return Err(SyncError::Peer(PeerError::Status {
            peer: home.to_string(),
            status: status.as_u16(),
            what: "GET /api/v1/regions/identity".into(),
            body: String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned(),
        }));
    }
    let export: IdentityExport = serde_json::from_slice(&body).map_err(|e| SyncError::Decode(e.to_string()))?;
    let mut state = export.state;
    if let Some(keys) = reg.sealing_keys() {
        for key in state.signing_keys.iter_mut() {
            key.private_pkcs8 = keys.seal_secret(&key.private_pkcs8);
        }
    }
    let commit = |e: keelson_raft::CatalogError| SyncError::Commit(e.to_string());
    let answer = reg
        .catalog
        .propose(CatalogCommand::Identity(IdentityCommand::ReplaceFromHome {
            state: Box::new(state),
        }))
        .await
        .map_err(commit)?;
    if let keelson_raft::CatalogResponse::Rejected(r) = answer {
        return Err(SyncError::Commit(r.to_string()));
    }
    reg.catalog
        .propose(CatalogCommand::Regions(RegionCommand::IdentityCopied {
            version: export.version,
        }))
        .await
        .map_err(commit)?;
    Ok(true)
}
