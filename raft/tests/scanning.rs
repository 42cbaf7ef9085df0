//! The scan queue and the vulnerability database through real openraft on real rocksdb: a new
//! image manifest is queued with its push (an index, an artifact about an image or a repeated
//! push is not); `Done` and the image's deletion dequeue it; database batches stay invisible
//! until their generation is activated, an older generation cannot be activated or written,
//! and pruning removes only generations older than the active one.

mod support;

use keelson_raft::scanning::*;
use keelson_raft::{CatalogCommand, CatalogResponse, ManifestRecord};
use support::open;

fn manifest(media_type: &str, subject: Option<&str>) -> ManifestRecord {
    ManifestRecord {
        media_type: media_type.into(),
        body: b"{}".to_vec(),
        blobs: vec![],
        manifests: vec![],
        subject: subject.map(str::to_string),
        artifact_type: None,
        annotations: None,
        created_ms: 0,
    }
}

fn put(digest: &str, m: ManifestRecord) -> CatalogCommand {
    CatalogCommand::PutManifest {
        repo: "acme/app".into(),
        digest: digest.into(),
        manifest: m,
        tag: None,
        now_ms: 1,
    }
}

fn package(name: &str, id: &str) -> VulnPackage {
    VulnPackage {
        ecosystem: "npm".into(),
        name: name.into(),
        advisories: vec![Advisory {
            id: id.into(),
            summary: String::new(),
            severity: Severity::High,
            ranges: vec![],
            versions: vec!["1.0.0".into()],
        }],
    }
}

#[tokio::test]
async fn queue_and_database() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let image = "application/vnd.oci.image.manifest.v1+json";
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    for cmd in [
        put(&d('a'), manifest(image, None)),
        put(&d('b'), manifest(image, Some(&d('a')))),
        put(&d('c'), manifest("application/vnd.oci.image.index.v1+json", None)),
        put(&d('e'), manifest(image, None)),
        put(&d('a'), manifest(image, None)),
    ] {
        assert_eq!(catalog.propose(cmd).await.unwrap(), CatalogResponse::Applied);
    }
    let queued = catalog.reader().scan_queue(None, 10).unwrap();
    assert_eq!(
        queued,
        vec![("acme/app".to_string(), d('a')), ("acme/app".to_string(), d('e'))]
    );
    // Read as a cursor: a page after an image starts at the next one, and ends at the queue's end
    // (keys of other kinds beyond it are not queue entries).
    let first = catalog.reader().scan_queue(None, 1).unwrap();
    assert_eq!(first, vec![("acme/app".to_string(), d('a'))]);
    let next = catalog.reader().scan_queue(Some(("acme/app", &d('a'))), 1).unwrap();
    assert_eq!(next, vec![("acme/app".to_string(), d('e'))]);
    assert!(catalog
        .reader()
        .scan_queue(Some(("acme/app", &d('e'))), 10)
        .unwrap()
        .is_empty());
    let done = CatalogCommand::Scanning(ScanCommand::Done {
        repo: "acme/app".into(),
        digest: d('a'),
    });
    catalog.propose(done).await.unwrap();
    catalog
        .propose(CatalogCommand::DeleteManifest {
            repo: "acme/app".into(),
            digest: d('e'),
        })
        .await
        .unwrap();
    assert!(catalog.reader().scan_queue(None, 10).unwrap().is_empty());

    // The database: invisible until activated, generations only move forward.
    let batch = |generation, name: &str, id: &str| {
        CatalogCommand::Scanning(ScanCommand::DbPut {
            generation,
            packages: vec![package(name, id)],
        })
    };
    let activate = |generation| {
        CatalogCommand::Scanning(ScanCommand::DbActivate {
            info: VulnDbInfo {
                generation,
                advisories: 1,
                packages: 1,
                imported_ms: generation,
            },
        })
    };
    catalog.propose(batch(10, "lodash", "A-1")).await.unwrap();
    catalog.propose(batch(10, "lodash", "A-2")).await.unwrap();
    assert_eq!(catalog.reader().vulndb().unwrap().generation, 0);
    assert_eq!(catalog.propose(activate(10)).await.unwrap(), CatalogResponse::Applied);
    let ids: Vec<String> = catalog
        .reader()
        .advisories(10, "npm", "lodash")
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, vec!["A-1", "A-2"], "batches of one package add up");
    assert!(matches!(
        catalog.propose(activate(9)).await.unwrap(),
        CatalogResponse::Rejected(_)
    ));
    assert!(matches!(
        catalog.propose(batch(10, "x", "late")).await.unwrap(),
        CatalogResponse::Rejected(_)
    ));
    let huge = CatalogCommand::Scanning(ScanCommand::DbPut {
        generation: 20,
        packages: (0..=MAX_PACKAGES_PER_ENTRY)
            .map(|i| package(&format!("p{i}"), "X"))
            .collect(),
    });
    assert!(matches!(
        catalog.propose(huge).await.unwrap(),
        CatalogResponse::Rejected(_)
    ));
    catalog.propose(batch(20, "minimist", "B-1")).await.unwrap();
    catalog.propose(batch(30, "in-progress", "C-1")).await.unwrap();
    catalog.propose(activate(20)).await.unwrap();
    catalog
        .propose(CatalogCommand::Scanning(ScanCommand::DbPrune))
        .await
        .unwrap();
    assert!(catalog.reader().advisories(10, "npm", "lodash").unwrap().is_empty());
    assert_eq!(catalog.reader().advisories(20, "npm", "minimist").unwrap().len(), 1);
    assert_eq!(
        catalog.reader().advisories(30, "npm", "in-progress").unwrap().len(),
        1,
        "a newer generation being imported is not pruned"
    );
    catalog.shutdown().await;
}
