//! A synthetic catalog written straight into a node's store, for the benchmark tool: a million
//! images cannot be pushed in a benchmark's time, but the retention pass must be measured over
//! that many. The records are exactly those the state machine writes for pushed images
//! (repositories, manifests, image records, tags both ways, blob records and links, usage), so
//! a [`crate::Catalog`] opened on the directory afterwards reads them as its own. Never used by
//! a node.

use std::path::Path;

use rocksdb::WriteBatch;

use crate::command::{BlobRecord, ManifestRecord, RepoRecord};
use crate::keys::*;
use crate::lifecycle::*;

/// The shape of the synthetic catalog.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Repositories `bench/r<i>` in tenancy `bench`.
    pub repos: usize,
    pub images_per_repo: usize,
    /// "Now": images were pushed over the 100 days before it.
    pub now_ms: u64,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    pub images: u64,
    pub tags: u64,
    pub blobs: u64,
}

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn put<T: serde::Serialize>(
    db: &rocksdb::DB,
    batch: &mut WriteBatch,
    cf: &str,
    key: &[u8],
    value: &T,
) -> std::io::Result<()> {
    let handle = db.cf_handle(cf).ok_or_else(|| err(format!("no column family {cf}")))?;
    batch.put_cf(handle, key, bincode::serialize(value).map_err(err)?);
    Ok(())
}

fn put_raw(db: &rocksdb::DB, batch: &mut WriteBatch, cf: &str, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    let handle = db.cf_handle(cf).ok_or_else(|| err(format!("no column family {cf}")))?;
    batch.put_cf(handle, key, value);
    Ok(())
}

fn fake_digest(kind: &str, a: usize, b: usize) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("{kind}/{a}/{b}").as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Writes the catalog into the store under `dir` (a node's `raft/` directory, created when
/// missing). Image `j` of a repository was pushed `j mod 100` days before `now`, every third
/// one pulled since, every other one tagged; all share one base layer and config per repository.
pub fn seed(dir: &Path, shape: &Shape) -> std::io::Result<Seeded> {
    std::fs::create_dir_all(dir)?;
    let db = crate::db::open(&dir.join("catalog")).map_err(err)?;
    let mut out = Seeded::default();
    let mut tenancy = TenancyUsage::default();
    for r in 0..shape.repos {
        let repo = format!("bench/r{r}");
        let mut batch = WriteBatch::default();
        let record = RepoRecord {
            created_ms: shape.now_ms.saturating_sub(200 * DAY_MS),
            public: false,
            compartment: None,
        };
        put(&db, &mut batch, CF_REPOS, repo.as_bytes(), &record)?;
        let (base, config) = (fake_digest("base", r, 0), fake_digest("config", r, 0));
        let mut usage = RepoUsage::default();
        for (digest, size) in [(&base, 20 << 20), (&config, 1_500u64)] {
            let blob = BlobRecord {
                size,
                holders: vec![1],
                created_ms: record.created_ms,
            };
            put(&db, &mut batch, CF_BLOBS, digest.as_bytes(), &blob)?;
            put_raw(&db, &mut batch, CF_REPO_BLOBS, &join(&[&repo, digest]), &[])?;
            usage.stored_bytes += size;
            out.blobs += 1;
        }
        for j in 0..shape.images_per_repo {
            let layer = fake_digest("layer", r, j);
            let layer_size = 1_000_000 + (j as u64 % 1000);
            let pushed = shape.now_ms.saturating_sub((j as u64 % 100) * DAY_MS + 1);
            let blob = BlobRecord {
                size: layer_size,
                holders: vec![1],
                created_ms: pushed,
            };
            put(&db, &mut batch, CF_BLOBS, layer.as_bytes(), &blob)?;
            put_raw(&db, &mut batch, CF_REPO_BLOBS, &join(&[&repo, &layer]), &[])?;
            let body = format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"digest\":\"{config}\",\"size\":1500}},\"layers\":[{{\"digest\":\"{base}\",\"size\":20971520}},{{\"digest\":\"{layer}\",\"size\":{layer_size}}}]}}"
            );
            let digest = fake_digest("manifest", r, j);
            let manifest = ManifestRecord {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body: body.clone().into_bytes(),
                blobs: vec![config.clone(), base.clone(), layer.clone()],
                manifests: vec![],
                subject: None,
                artifact_type: None,
                annotations: None,
                created_ms: pushed,
            };
            put(&db, &mut batch, CF_MANIFESTS, &join(&[&repo, &digest]), &manifest)?;
            let tagged = j % 2 == 0;
            let image = ImageRecord {
                media_type: manifest.media_type.clone(),
                blobs: vec![
                    (config.clone(), 1_500),
                    (base.clone(), 20 << 20),
                    (layer.clone(), layer_size),
                ],
                manifest_bytes: body.len() as u64,
                size: body.len() as u64 + 1_500 + (20 << 20) + layer_size,
                pushed_ms: pushed,
                last_pushed_ms: pushed,
                last_tagged_ms: tagged.then_some(pushed),
                untagged_since_ms: (!tagged).then_some(pushed),
                last_pulled_ms: (j % 3 == 0).then_some(pushed.saturating_add(DAY_MS).min(shape.now_ms)),
                pulls: (j % 3 == 0) as u64 * 5,
                generation: 1,
                ..Default::default()
            };
            put(&db, &mut batch, CF_IMAGES, &join(&[&repo, &digest]), &image)?;
            if tagged {
                let tag = format!("build-{j}");
                put_raw(&db, &mut batch, CF_TAGS, &join(&[&repo, &tag]), digest.as_bytes())?;
                put_raw(
                    &db,
                    &mut batch,
                    CF_IMAGE_TAGS,
                    &image_tag_key(&repo, &digest, &tag),
                    &[],
                )?;
                usage.tags += 1;
                out.tags += 1;
            }
            usage.images += 1;
            usage.stored_bytes += layer_size + body.len() as u64;
            out.images += 1;
            out.blobs += 1;
            if batch.len() >= 20_000 {
                db.write(std::mem::take(&mut batch)).map_err(err)?;
            }
        }
        put(&db, &mut batch, CF_LIFECYCLE, &repo_usage_key(&repo), &usage)?;
        db.write(batch).map_err(err)?;
        tenancy.repos += 1;
        tenancy.stored_bytes += usage.stored_bytes;
    }
    let mut batch = WriteBatch::default();
    put(&db, &mut batch, CF_LIFECYCLE, &tenancy_usage_key("bench"), &tenancy)?;
    db.write(batch).map_err(err)?;
    db.flush().map_err(err)?;
    // A store that has been running is compacted; a freshly bulk-written one is a pile of level-0
    // files that every read would have to search.
    for cf in CATALOG_CFS {
        if let Some(handle) = db.cf_handle(cf) {
            db.compact_range_cf(handle, None::<&[u8]>, None::<&[u8]>);
        }
    }
    Ok(out)
}
