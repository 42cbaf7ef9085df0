//! Group commit through real openraft on real rocksdb: many concurrent pushes share Raft
//! entries (fewer entries than writes), each caller gets its own answer, a rejected write in a
//! batch changes nothing while the others apply, and everything batched is there after the
//! node is reopened (the batched entries replay as they applied).

mod support;

use futures_util::future::join_all;
use keelson_raft::lifecycle::TenancyLimits;
use keelson_raft::{CatalogCommand, CatalogResponse, ManifestRecord, Rejection};
use support::open;

fn digest(n: u64) -> String {
    format!("sha256:{n:064x}")
}

fn manifest(blob: &str, n: u64) -> ManifestRecord {
    ManifestRecord {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: format!("{{\"n\":{n}}}").into_bytes(),
        blobs: vec![blob.to_string()],
        manifests: vec![],
        subject: None,
        artifact_type: None,
        annotations: None,
        created_ms: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_entries_and_each_gets_its_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let blob = digest(1);
    for repo in ["acme/app", "small/app"] {
        let linked = catalog
            .propose(CatalogCommand::LinkBlob {
                repo: repo.into(),
                digest: blob.clone(),
                size: 1,
                holders: vec![1],
                now_ms: 1,
            })
            .await
            .unwrap();
        assert_eq!(linked, CatalogResponse::Applied);
    }
    // A tenancy allowed one image per repository: its second push is refused inside a batch.
    let limited = catalog
        .propose(CatalogCommand::SetLimits {
            namespace: "small".into(),
            limits: Some(TenancyLimits {
                max_images_per_repo: 1,
                ..TenancyLimits::default()
            }),
        })
        .await
        .unwrap();
    assert_eq!(limited, CatalogResponse::Applied);

    let before = catalog.raft().metrics().borrow().last_log_index.unwrap_or(0);
    let pushes = (0..64u64).map(|n| {
        let (repo, tag_blob) = match n {
            // Manifests naming a blob the repository lacks: rejected.
            60..=61 => ("acme/app", digest(999)),
            // Two pushes into the limited tenancy: one fits, one is over the limit.
            62..=63 => ("small/app", blob.clone()),
            _ => ("acme/app", blob.clone()),
        };
        let catalog = catalog.clone();
        async move {
            let answer = catalog
                .propose(CatalogCommand::PutManifest {
                    repo: repo.into(),
                    digest: digest(1000 + n),
                    manifest: manifest(&tag_blob, n),
                    tag: Some(format!("t{n}")),
                    now_ms: 2,
                })
                .await
                .unwrap();
            (n, answer)
        }
    });
    let answers = join_all(pushes).await;
    let after = catalog.raft().metrics().borrow().last_log_index.unwrap_or(0);
    assert!(
        after - before < 64,
        "64 concurrent pushes took {} entries: nothing was batched",
        after - before
    );

    let mut small_applied = 0;
    for (n, answer) in &answers {
        match n {
            60..=61 => assert_eq!(*answer, CatalogResponse::Rejected(Rejection::BlobUnknown(digest(999)))),
            62..=63 => {
                if *answer == CatalogResponse::Applied {
                    small_applied += 1;
                } else {
                    assert!(
                        matches!(answer, CatalogResponse::Rejected(Rejection::LimitExceeded(_))),
                        "push {n}: {answer:?}"
                    );
                }
            }
            _ => assert_eq!(*answer, CatalogResponse::Applied, "push {n}"),
        }
    }
    assert_eq!(small_applied, 1, "exactly one push fits the limited repository");

    let check = |catalog: &keelson_raft::Catalog| {
        let reader = catalog.reader();
        for n in 0..60u64 {
            assert_eq!(
                reader.tag("acme/app", &format!("t{n}")).unwrap(),
                Some(digest(1000 + n))
            );
        }
        for n in 60..62u64 {
            assert_eq!(reader.tag("acme/app", &format!("t{n}")).unwrap(), None);
        }
        // The refused push left neither its tag nor an image behind.
        let small_tags = (62..64u64)
            .filter(|n| reader.tag("small/app", &format!("t{n}")).unwrap().is_some())
            .count();
        assert_eq!(small_tags, 1);
        assert_eq!(reader.repo_usage("small/app").unwrap().images, 1);
        assert_eq!(reader.repo_usage("acme/app").unwrap().images, 60);
    };
    check(&catalog);

    catalog.shutdown().await;
    drop(catalog);
    let reopened = open(dir.path()).await;
    check(&reopened);
}
