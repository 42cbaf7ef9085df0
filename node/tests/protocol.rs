//! HTTP-level protocol tests for Keelson, written from the OCI Distribution Spec v1.1 and the
//! Docker Registry HTTP API V2 text (not from the implementation).
//!
//! Each test starts its own node (the real `keelson` binary, see `support/`) in a temporary
//! directory. Set `PROTOCOL_REFERENCE_REGISTRY=/usr/bin/docker-registry` to run the same tests
//! against the CNCF distribution reference registry instead (which lacks referrers and the
//! two-segment name rule, and has some known deviations).
//!
//! Layout (submodules under `tests/protocol/`):
//! - `base`       — `/v2/` and the "garbage never gets a 5xx" table
//! - `uploads`    — blob upload sessions (POST/PATCH/PUT/GET/DELETE, resume across restart)
//! - `blobs`      — blob GET/HEAD/Range/DELETE, per-repository visibility, cross-repo mount
//! - `digests`    — sha512 across blobs, mounts, manifests and referrers; Range edge cases
//! - `manifests`  — manifest PUT/GET/HEAD/DELETE, media types, validation, names
//! - `listing`    — tags list and `_catalog` pagination
//! - `referrers`  — OCI 1.1 referrers API
//! - `durability` — kill -9 durability and a crash-under-concurrent-load test

mod support;

#[path = "protocol/common.rs"]
mod common;

#[path = "protocol/base.rs"]
mod base;
#[path = "protocol/blobs.rs"]
mod blobs;
#[path = "protocol/digests.rs"]
mod digests;
#[path = "protocol/durability.rs"]
mod durability;
#[path = "protocol/listing.rs"]
mod listing;
#[path = "protocol/manifests.rs"]
mod manifests;
#[path = "protocol/referrers.rs"]
mod referrers;
#[path = "protocol/uploads.rs"]
mod uploads;
