//! The catalog state machine through real openraft on real rocksdb: commands apply as specified,
//! rejections change nothing, and everything committed is there after the node is reopened.

use std::time::Duration;

use keelson_raft::{Catalog, CatalogCommand, CatalogConfig, CatalogResponse, ManifestRecord, NodeInfo, Rejection};

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

async fn open(dir: &std::path::Path) -> Catalog {
    let config = CatalogConfig {
        node_id: 1,
        node: NodeInfo::default(),
        dir: dir.to_path_buf(),
        bootstrap_single: true,
    };
    // A just-closed node may still be releasing the rocksdb lock in its last tasks.
    let mut attempts = 0;
    let catalog = loop {
        match Catalog::open(config.clone()).await {
            Ok(c) => break c,
            Err(e) if attempts < 100 => {
                attempts += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("open failed: {e}"),
        }
    };
    catalog.wait_for_leader(Duration::from_secs(10)).await.expect("leader");
    catalog
}

fn manifest(blobs: Vec<String>, subject: Option<String>) -> ManifestRecord {
    ManifestRecord {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: b"{}".to_vec(),
        blobs,
        manifests: vec![],
        subject,
        artifact_type: Some("application/x-test".into()),
        annotations: None,
        created_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_apply_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let repo = "acme/app".to_string();

    // A manifest whose blob is not in the repo is rejected and leaves no trace.
    let missing = catalog
        .propose(CatalogCommand::PutManifest {
            repo: repo.clone(),
            digest: digest('m'),
            manifest: manifest(vec![digest('a')], None),
            tag: Some("v1".into()),
            now_ms: 5,
        })
        .await
        .unwrap();
    assert_eq!(missing, CatalogResponse::Rejected(Rejection::BlobUnknown(digest('a'))));
    assert!(catalog.reader().repo(&repo).unwrap().is_none());

    let linked = catalog
        .propose(CatalogCommand::LinkBlob {
            repo: repo.clone(),
            digest: digest('a'),
            size: 42,
            holders: vec![1],
            now_ms: 5,
        })
        .await
        .unwrap();
    assert_eq!(linked, CatalogResponse::Applied);
    for (d, tag, subject) in [(digest('m'), "v1", None), (digest('n'), "v2", Some(digest('m')))] {
        let r = catalog
            .propose(CatalogCommand::PutManifest {
                repo: repo.clone(),
                digest: d,
                manifest: manifest(vec![digest('a')], subject),
                tag: Some(tag.into()),
                now_ms: 6,
            })
            .await
            .unwrap();
        assert_eq!(r, CatalogResponse::Applied);
    }
    catalog
        .propose(CatalogCommand::PutManifest {
            repo: repo.clone(),
            digest: digest('m'),
            manifest: manifest(vec![digest('a')], None),
            tag: Some("latest".into()),
            now_ms: 7,
        })
        .await
        .unwrap();

    let reader = catalog.reader();
    assert_eq!(
        reader.blob_in_repo(&repo, &digest('a')).unwrap().map(|b| b.size),
        Some(42)
    );
    assert!(reader.blob_in_repo("acme/other", &digest('a')).unwrap().is_none());
    assert_eq!(reader.tag(&repo, "v1").unwrap(), Some(digest('m')));
    let page = reader.tags(&repo, None, 2).unwrap();
    assert_eq!(
        (page.items.clone(), page.more),
        (vec!["latest".to_string(), "v1".to_string()], true)
    );
    let page = reader.tags(&repo, Some("v1"), 2).unwrap();
    assert_eq!((page.items, page.more), (vec!["v2".to_string()], false));
    assert_eq!(reader.referrers(&repo, &digest('m')).unwrap().len(), 1);

    // Deleting a manifest removes every tag pointing at it; its referrer entry goes with the
    // referring manifest.
    catalog
        .propose(CatalogCommand::DeleteManifest {
            repo: repo.clone(),
            digest: digest('m'),
        })
        .await
        .unwrap();
    assert_eq!(reader.tag(&repo, "v1").unwrap(), None);
    assert_eq!(reader.tag(&repo, "latest").unwrap(), None);
    assert_eq!(reader.tag(&repo, "v2").unwrap(), Some(digest('n')));
    catalog
        .propose(CatalogCommand::DeleteManifest {
            repo: repo.clone(),
            digest: digest('n'),
        })
        .await
        .unwrap();
    assert!(reader.referrers(&repo, &digest('m')).unwrap().is_empty());
    let again = catalog
        .propose(CatalogCommand::DeleteTag {
            repo: repo.clone(),
            tag: "v2".into(),
        })
        .await
        .unwrap();
    assert_eq!(again, CatalogResponse::Rejected(Rejection::TagUnknown("v2".into())));

    catalog
        .propose(CatalogCommand::PutManifest {
            repo: repo.clone(),
            digest: digest('q'),
            manifest: manifest(vec![digest('a')], None),
            tag: Some("kept".into()),
            now_ms: 8,
        })
        .await
        .unwrap();
    catalog.shutdown().await;
    drop(catalog);

    let reopened = open(dir.path()).await;
    reopened.linearizable().await.unwrap();
    let reader = reopened.reader();
    assert_eq!(reader.tag(&repo, "kept").unwrap(), Some(digest('q')));
    assert_eq!(reader.blob(&digest('a')).unwrap().map(|b| b.holders), Some(vec![1]));
    assert_eq!(reader.repos(None, 10).unwrap().items, vec![repo.clone()]);
    reopened.shutdown().await;
}
