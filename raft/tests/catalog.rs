//! The catalog state machine through real openraft on real rocksdb: commands apply as specified,
//! rejections change nothing, and everything committed is there after the node is reopened.

mod support;

use keelson_raft::{Catalog, CatalogCommand, CatalogResponse, ManifestRecord, Rejection};
use support::open;

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// Records blobs `names` held by `holders` and links them into `repo`.
async fn link_blobs(catalog: &Catalog, repo: &str, names: &[char], holders: &[u64]) {
    for c in names {
        let r = catalog
            .propose(CatalogCommand::LinkBlob {
                repo: repo.to_string(),
                digest: digest(*c),
                size: 1,
                holders: holders.to_vec(),
                now_ms: 1,
            })
            .await
            .unwrap();
        assert_eq!(r, CatalogResponse::Applied);
    }
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
    for (d, tag, subject) in [
        (digest('m'), "v1", None),
        (digest('n'), "v2", Some(digest('m'))),
        (digest('o'), "v3", Some(digest('n'))),
    ] {
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
    assert_eq!(
        (page.items, page.more),
        (vec!["v2".to_string(), "v3".to_string()], false)
    );
    assert_eq!(reader.referrers(&repo, &digest('m')).unwrap().len(), 1);

    // A cosign signature stored under the tag scheme (`sha256-<hex>.sig`, no subject).
    let sig_tag = format!("{}.sig", digest('m').replacen(':', "-", 1));
    catalog
        .propose(CatalogCommand::PutManifest {
            repo: repo.clone(),
            digest: digest('s'),
            manifest: manifest(vec![digest('a')], None),
            tag: Some(sig_tag.clone()),
            now_ms: 8,
        })
        .await
        .unwrap();

    // Deleting a manifest removes every tag pointing at it, and what is about it: its referrer
    // and that referrer's own referrer, and its `.sig` tag's signature, with their tags, in
    // the same entry.
    catalog
        .propose(CatalogCommand::DeleteManifest {
            repo: repo.clone(),
            digest: digest('m'),
        })
        .await
        .unwrap();
    for tag in ["v1", "latest", "v2", "v3", sig_tag.as_str()] {
        assert_eq!(reader.tag(&repo, tag).unwrap(), None, "{tag}");
    }
    assert!(reader.referrers(&repo, &digest('m')).unwrap().is_empty());
    assert!(reader.referrers(&repo, &digest('n')).unwrap().is_empty());
    assert!(reader.images(&repo).unwrap().is_empty());
    assert_eq!(reader.repo_usage(&repo).unwrap().images, 0);
    let again = catalog
        .propose(CatalogCommand::DeleteTag {
            repo: repo.clone(),
            tag: "v2".into(),
            now_ms: 9,
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

/// A mark and a sweep split into parts (each Raft entry stays small) act as one; a part that
/// names no open epoch changes nothing, and an oversized command is refused before Raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_marks_and_sweeps_in_parts_and_commands_have_a_byte_bound() {
    use keelson_raft::SweptBlob;
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let repo = "acme/app".to_string();
    let propose = |cmd| {
        let catalog = catalog.clone();
        async move { catalog.propose(cmd).await.unwrap() }
    };
    link_blobs(&catalog, &repo, &['a', 'b', 'c', 'd'], &[1]).await;
    let reader = catalog.reader();
    let epoch = reader.gc_state().unwrap().epoch;
    let more = CatalogCommand::GcMarkMore {
        epoch,
        candidates: vec![digest('c')],
        now_ms: 20,
    };
    assert!(matches!(
        propose(more.clone()).await,
        CatalogResponse::Rejected(Rejection::Stale(_))
    ));
    let mark = CatalogCommand::GcMark {
        epoch,
        candidates: vec![digest('a'), digest('b')],
        now_ms: 10,
    };
    assert_eq!(propose(mark).await, CatalogResponse::Applied);
    assert_eq!(propose(more).await, CatalogResponse::Applied);
    // The grace period runs from the latest part.
    assert_eq!(reader.gc_state().unwrap().marked_ms, Some(20));
    assert_eq!(
        reader.gc_candidates().unwrap(),
        vec![digest('a'), digest('b'), digest('c')]
    );
    let swept = |d: char| SweptBlob {
        digest: digest(d),
        repos: vec![repo.clone()],
    };
    let r = propose(CatalogCommand::GcSweepPart {
        epoch,
        blobs: vec![swept('a')],
    })
    .await;
    assert_eq!(r, CatalogResponse::Applied);
    assert!(reader.blob(&digest('a')).unwrap().is_none());
    assert_eq!(reader.gc_state().unwrap().epoch, epoch, "a part keeps the epoch open");
    assert_eq!(reader.gc_candidates().unwrap(), vec![digest('b'), digest('c')]);
    let r = propose(CatalogCommand::GcSweep {
        epoch,
        blobs: vec![swept('b')],
    })
    .await;
    assert_eq!(r, CatalogResponse::Applied);
    assert!(reader.blob(&digest('b')).unwrap().is_none());
    assert!(reader.blob(&digest('c')).unwrap().is_some(), "unswept candidates stay");
    assert!(reader.blob(&digest('d')).unwrap().is_some());
    assert!(reader.gc_candidates().unwrap().is_empty());
    assert_eq!(reader.gc_state().unwrap().epoch, epoch + 1);

    // Over the bound of one entry: refused with its size, nothing proposed.
    let huge = CatalogCommand::GcMark {
        epoch: epoch + 1,
        candidates: vec!["x".repeat(9 << 20)],
        now_ms: 30,
    };
    match catalog.propose(huge).await {
        Err(keelson_raft::CatalogError::TooLarge { bytes, limit }) => assert!(bytes > limit),
        other => panic!("an oversized command was not refused: {other:?}"),
    }
    assert_eq!(reader.gc_state().unwrap().marked_ms, None);
    catalog.shutdown().await;
}

/// GC's two phases and their fence, and repair's compare-and-set, applied through Raft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_epochs_fence_references_and_holders_change_by_compare_and_set() {
    use keelson_raft::SweptBlob;
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let repo = "acme/app".to_string();
    let propose = |cmd| {
        let catalog = catalog.clone();
        async move { catalog.propose(cmd).await.unwrap() }
    };
    link_blobs(&catalog, &repo, &['a', 'b', 'c'], &[1, 2]).await;
    let reader = catalog.reader();
    let state = reader.gc_state().unwrap();
    assert_eq!(state.marked_ms, None);

    // Mark a, b, c (and a digest that does not exist, which is ignored).
    let mark = CatalogCommand::GcMark {
        epoch: state.epoch,
        candidates: vec![digest('a'), digest('b'), digest('c'), digest('z')],
        now_ms: 10,
    };
    assert_eq!(propose(mark.clone()).await, CatalogResponse::Applied);
    assert!(matches!(
        propose(mark).await,
        CatalogResponse::Rejected(Rejection::Stale(_))
    ));
    assert_eq!(
        reader.gc_candidates().unwrap(),
        vec![digest('a'), digest('b'), digest('c')]
    );

    // A manifest referencing a, and a re-link of b, fence them out of the sweep.
    let r = propose(CatalogCommand::PutManifest {
        repo: repo.clone(),
        digest: digest('m'),
        manifest: manifest(vec![digest('a')], None),
        tag: None,
        now_ms: 11,
    })
    .await;
    assert_eq!(r, CatalogResponse::Applied);
    let r = propose(CatalogCommand::MountBlob {
        repo: "acme/other".into(),
        digest: digest('b'),
        now_ms: 12,
    })
    .await;
    assert_eq!(r, CatalogResponse::Applied);
    assert!(reader.is_gc_candidate(&digest('c')).unwrap());
    assert!(!reader.is_gc_candidate(&digest('b')).unwrap());

    let swept = |d: char, repos: &[&str]| SweptBlob {
        digest: digest(d),
        repos: repos.iter().map(|r| r.to_string()).collect(),
    };
    let r = propose(CatalogCommand::GcSweep {
        epoch: state.epoch,
        blobs: vec![
            swept('a', &["acme/app"]),
            swept('b', &["acme/app"]),
            swept('c', &["acme/app"]),
        ],
    })
    .await;
    assert_eq!(r, CatalogResponse::Applied);
    assert!(reader.blob(&digest('a')).unwrap().is_some());
    assert!(reader.blob_in_repo(&repo, &digest('b')).unwrap().is_some());
    assert!(reader.blob(&digest('c')).unwrap().is_none());
    assert!(reader.blob_in_repo(&repo, &digest('c')).unwrap().is_none());
    assert!(reader.gc_candidates().unwrap().is_empty());
    let next = reader.gc_state().unwrap();
    assert_eq!((next.epoch, next.marked_ms), (state.epoch + 1, None));

    // A collected blob can be neither mounted nor referenced.
    let r = propose(CatalogCommand::MountBlob {
        repo: repo.clone(),
        digest: digest('c'),
        now_ms: 13,
    })
    .await;
    assert_eq!(r, CatalogResponse::Rejected(Rejection::BlobUnknown(digest('c'))));
    let r = propose(CatalogCommand::PutManifest {
        repo: repo.clone(),
        digest: digest('n'),
        manifest: manifest(vec![digest('c')], None),
        tag: None,
        now_ms: 14,
    })
    .await;
    assert_eq!(r, CatalogResponse::Rejected(Rejection::BlobUnknown(digest('c'))));

    // Repair's holder change applies only over the holders it read.
    let stale = propose(CatalogCommand::SetHolders {
        digest: digest('a'),
        expected: vec![1],
        holders: vec![1, 3],
    })
    .await;
    assert!(matches!(stale, CatalogResponse::Rejected(Rejection::Stale(_))));
    let ok = propose(CatalogCommand::SetHolders {
        digest: digest('a'),
        expected: vec![1, 2],
        holders: vec![1, 3],
    })
    .await;
    assert_eq!(ok, CatalogResponse::Applied);
    assert_eq!(reader.blob(&digest('a')).unwrap().map(|b| b.holders), Some(vec![1, 3]));
    catalog.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundancy_policies_copy_counts_and_capacities() {
    use keelson_raft::{CodedLayout, NodeCapacity, RedundancyPolicy, SweptBlob};
    let dir = tempfile::tempdir().unwrap();
    let catalog = open(dir.path()).await;
    let applied = |r: CatalogResponse| assert_eq!(r, CatalogResponse::Applied);
    let rs = RedundancyPolicy::Erasure { k: 4, m: 2 };

    // A repository must exist before it gets a policy of its own; the default needs none.
    let unknown = CatalogCommand::SetRedundancy {
        repo: Some("acme/big".into()),
        policy: Some(rs),
    };
    assert_eq!(
        catalog.propose(unknown.clone()).await.unwrap(),
        CatalogResponse::Rejected(Rejection::RepoUnknown)
    );
    applied(
        catalog
            .propose(CatalogCommand::SetRedundancy {
                repo: None,
                policy: Some(RedundancyPolicy::Replicas(3)),
            })
            .await
            .unwrap(),
    );
    applied(
        catalog
            .propose(CatalogCommand::CreateRepo {
                repo: "acme/big".into(),
                compartment: None,
                public: false,
                now_ms: 1,
            })
            .await
            .unwrap(),
    );
    applied(catalog.propose(unknown).await.unwrap());

    // The first durable layout wins: coded first, a later replicated push only links it.
    let layout = CodedLayout {
        k: 4,
        m: 2,
        chunk: 1024,
        shards: (1..=6).map(Some).collect(),
    };
    applied(
        catalog
            .propose(CatalogCommand::LinkCoded {
                repo: "acme/big".into(),
                digest: digest('c'),
                size: 10_000,
                layout: layout.clone(),
                now_ms: 2,
            })
            .await
            .unwrap(),
    );
    let replicated = |d: char, holders: Vec<u64>| CatalogCommand::LinkReplicas {
        repo: "acme/small".into(),
        digest: digest(d),
        size: 10_000,
        holders,
        copies: 2,
        now_ms: 3,
    };
    applied(catalog.propose(replicated('c', vec![7, 8])).await.unwrap());
    applied(catalog.propose(replicated('r', vec![1, 2])).await.unwrap());
    applied(
        catalog
            .propose(CatalogCommand::ReportCapacity {
                node: 2,
                capacity: NodeCapacity {
                    total: 100,
                    free: 40,
                    reported_ms: 4,
                    key_ids: vec![],
                },
            })
            .await
            .unwrap(),
    );
    let check = |catalog: &Catalog| {
        let r = catalog.reader();
        assert_eq!(r.cluster_redundancy().unwrap(), Some(RedundancyPolicy::Replicas(3)));
        assert_eq!(r.repo_redundancy("acme/big").unwrap(), Some(rs));
        assert_eq!(r.repo_redundancy("acme/small").unwrap(), None);
        assert_eq!(r.coded(&digest('c')).unwrap(), Some(layout.clone()));
        assert_eq!(
            r.blob_in_repo("acme/small", &digest('c')).unwrap().unwrap().holders,
            (1..=6).collect::<Vec<_>>()
        );
        assert_eq!(r.blob_copies(&digest('c')).unwrap(), None);
        assert_eq!(r.blob_copies(&digest('r')).unwrap(), Some(2));
        assert_eq!(r.capacities().unwrap().get(&2).map(|c| c.free), Some(40));
    };
    check(&catalog);
    drop(catalog);
    let catalog = open(dir.path()).await;
    check(&catalog);

    // Deleting the repository drops its policy; sweeping a blob drops its copy count.
    applied(
        catalog
            .propose(CatalogCommand::DeleteRepo {
                repo: "acme/big".into(),
            })
            .await
            .unwrap(),
    );
    assert_eq!(catalog.reader().repo_redundancy("acme/big").unwrap(), None);
    applied(
        catalog
            .propose(CatalogCommand::UnlinkBlob {
                repo: "acme/small".into(),
                digest: digest('r'),
            })
            .await
            .unwrap(),
    );
    let epoch = catalog.reader().gc_state().unwrap().epoch;
    applied(
        catalog
            .propose(CatalogCommand::GcMark {
                epoch,
                candidates: vec![digest('r')],
                now_ms: 5,
            })
            .await
            .unwrap(),
    );
    applied(
        catalog
            .propose(CatalogCommand::GcSweep {
                epoch,
                blobs: vec![SweptBlob {
                    digest: digest('r'),
                    repos: vec![],
                }],
            })
            .await
            .unwrap(),
    );
    assert_eq!(catalog.reader().blob(&digest('r')).unwrap(), None);
    assert_eq!(catalog.reader().blob_copies(&digest('r')).unwrap(), None);
}
